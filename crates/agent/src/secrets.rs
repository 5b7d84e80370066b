//! What the agent serves over SDS: the workload certificate with its key
//! ([`WORKLOAD_SECRET`]) and the trust bundle ([`TRUST_BUNDLE_SECRET`]), as Envoy `Secret`
//! resources, in a `watch` channel so that every stream sees the latest and a slow one skips
//! what it missed.

use std::{collections::BTreeMap, fmt, sync::Arc};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{DataSource, data_source::Specifier},
        extensions::transport_sockets::tls::v3::{
            CertificateValidationContext, Secret, TlsCertificate, secret::Type,
        },
    },
    google::protobuf::Any,
};
use prost::{Message, Name};
use remora_envoy::sds::{TRUST_BUNDLE_SECRET, WORKLOAD_SECRET};
use tokio::sync::watch;

/// The type URL of an SDS resource.
pub fn secret_type_url() -> String {
    Secret::type_url()
}

/// One secret, encoded, and the version of [`Secrets`] that last changed it.
#[derive(Clone, PartialEq)]
pub struct Resource {
    /// When it last changed.
    pub version: u64,
    /// The `Secret`, ready for a response (it may hold a private key: never printed).
    pub any: Any,
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("version", &self.version)
            .field("bytes", &self.any.value.len())
            .finish()
    }
}

/// Every secret the agent has now, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Secrets {
    version: u64,
    resources: BTreeMap<String, Resource>,
}

impl Secrets {
    /// Bumped by every change: the `version_info` of responses.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The secret called `name`, if the agent has it yet.
    pub fn get(&self, name: &str) -> Option<&Resource> {
        self.resources.get(name)
    }

    /// Sets `secret`; false when it was already so (nothing to push).
    fn set(&mut self, secret: Secret) -> bool {
        let any = Any {
            type_url: secret_type_url(),
            value: secret.encode_to_vec(),
        };
        if self
            .resources
            .get(&secret.name)
            .is_some_and(|r| r.any == any)
        {
            return false;
        }
        self.version += 1;
        let resource = Resource {
            version: self.version,
            any,
        };
        self.resources.insert(secret.name, resource);
        true
    }
}

/// Publishes new secrets to every SDS stream.
#[derive(Debug)]
pub struct Publisher(watch::Sender<Arc<Secrets>>);

impl Publisher {
    /// A publisher with no secrets yet, and what the SDS server reads.
    pub fn new() -> (Publisher, watch::Receiver<Arc<Secrets>>) {
        let (tx, rx) = watch::channel(Arc::new(Secrets::default()));
        (Publisher(tx), rx)
    }

    /// Another reader of the secrets.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Secrets>> {
        self.0.subscribe()
    }

    /// Serves `chain_pem` (leaf first) with its `key_pem` as [`WORKLOAD_SECRET`].
    pub fn publish_certificate(&self, chain_pem: &str, key_pem: &str) {
        self.publish(workload_secret(chain_pem, key_pem));
    }

    /// Serves `bundle_pem` (the roots) as [`TRUST_BUNDLE_SECRET`].
    pub fn publish_bundle(&self, bundle_pem: &str) {
        self.publish(bundle_secret(bundle_pem));
    }

    fn publish(&self, secret: Secret) {
        self.0.send_if_modified(|current| {
            let mut next = Secrets::clone(current);
            let changed = next.set(secret);
            if changed {
                *current = Arc::new(next);
            }
            changed
        });
    }
}

fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..DataSource::default()
    })
}

/// The workload's certificate and key, as Envoy takes them.
fn workload_secret(chain_pem: &str, key_pem: &str) -> Secret {
    Secret {
        name: WORKLOAD_SECRET.to_owned(),
        r#type: Some(Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain_pem),
            private_key: inline(key_pem),
            ..TlsCertificate::default()
        })),
    }
}

/// The roots a peer's certificate must chain to.
fn bundle_secret(bundle_pem: &str) -> Secret {
    Secret {
        name: TRUST_BUNDLE_SECRET.to_owned(),
        r#type: Some(Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(bundle_pem),
            ..CertificateValidationContext::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(resource: &Resource) -> Secret {
        Secret::decode(resource.any.value.as_slice()).expect("a Secret")
    }

    fn inline_bytes(source: Option<&DataSource>) -> Vec<u8> {
        match source.and_then(|s| s.specifier.clone()) {
            Some(Specifier::InlineBytes(bytes)) => bytes,
            other => panic!("not inline bytes: {other:?}"),
        }
    }

    #[test]
    fn the_certificate_and_bundle_are_served_inline_under_their_names() {
        let (publisher, rx) = Publisher::new();
        publisher.publish_certificate("CHAIN", "KEY");
        publisher.publish_bundle("ROOTS");
        let secrets = rx.borrow().clone();
        let cert = decode(secrets.get(WORKLOAD_SECRET).expect("default"));
        let Some(Type::TlsCertificate(tls)) = cert.r#type else {
            panic!("not a certificate: {cert:?}")
        };
        assert_eq!(inline_bytes(tls.certificate_chain.as_ref()), b"CHAIN");
        assert_eq!(inline_bytes(tls.private_key.as_ref()), b"KEY");
        let bundle = decode(secrets.get(TRUST_BUNDLE_SECRET).expect("ROOTCA"));
        let Some(Type::ValidationContext(validation)) = bundle.r#type else {
            panic!("not a validation context: {bundle:?}")
        };
        assert_eq!(inline_bytes(validation.trusted_ca.as_ref()), b"ROOTS");
        assert_eq!(
            secrets.get(WORKLOAD_SECRET).map(|r| r.any.type_url.clone()),
            Some(secret_type_url())
        );
    }

    #[test]
    fn each_change_gets_a_new_version_and_a_repeat_gets_none() {
        let (publisher, mut rx) = Publisher::new();
        publisher.publish_bundle("ROOTS");
        assert!(rx.has_changed().expect("open"));
        let first = rx.borrow_and_update().clone();
        publisher.publish_bundle("ROOTS");
        assert!(!rx.has_changed().expect("open"), "same bundle: no push");
        publisher.publish_certificate("CHAIN", "KEY");
        let second = rx.borrow_and_update().clone();
        assert!(second.version() > first.version());
        assert_eq!(
            second.get(TRUST_BUNDLE_SECRET).map(|r| r.version),
            first.get(TRUST_BUNDLE_SECRET).map(|r| r.version),
            "the bundle did not change"
        );
        assert_eq!(
            second.get(WORKLOAD_SECRET).map(|r| r.version),
            Some(second.version())
        );
    }

    #[test]
    fn debug_output_holds_no_key() {
        let (publisher, rx) = Publisher::new();
        publisher.publish_certificate("CHAIN", "-----BEGIN PRIVATE KEY-----secret");
        let printed = format!("{:?}", rx.borrow());
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("default"), "{printed}");
    }
}
