//! What the webhook reads and writes in the cluster: the CA Secret (created by the first
//! replica that finds none), a user-provided TLS Secret, and the `caBundle` of its
//! Validating- and MutatingWebhookConfiguration.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
        },
        core::v1::Secret,
    },
};
use kube::{
    Api, Resource,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;

use crate::{
    Error,
    certs::{Ca, TlsIdentity},
};

/// The CA certificate's key in the CA Secret (also in a TLS Secret, when cert-manager adds it).
pub const CA_CERT: &str = "ca.crt";
/// The CA private key's key in the CA Secret.
pub const CA_KEY: &str = "ca.key";
/// The certificate chain's key in a `kubernetes.io/tls` Secret.
pub const TLS_CERT: &str = "tls.crt";
/// The private key's key in a `kubernetes.io/tls` Secret.
pub const TLS_KEY: &str = "tls.key";

/// The CA in the Secret `name`, created when there is none. Replicas racing to create it
/// all end with the one that got in: a conflict means another replica won, so its CA is read.
pub async fn ensure_ca(secrets: &Api<Secret>, name: &str) -> Result<Ca, Error> {
    if let Some(secret) = get(secrets, name).await? {
        return ca_from(&secret, name);
    }
    let ca = Ca::generate()?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "remora".to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                CA_CERT.to_owned(),
                ByteString(ca.cert_pem().as_bytes().to_vec()),
            ),
            (CA_KEY.to_owned(), ByteString(ca.key_pem().into_bytes())),
        ])),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = name, "created the webhook CA");
            Ok(ca)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(
                secret = name,
                "another replica created the webhook CA first"
            );
            let secret = get(secrets, name).await?.ok_or_else(|| Error::Kube {
                what: format!("read Secret {name} after a create conflict"),
                source: kube::Error::Api(e),
            })?;
            ca_from(&secret, name)
        }
        Err(source) => Err(Error::Kube {
            what: format!("create Secret {name}"),
            source,
        }),
    }
}

/// The serving identity in a user-provided TLS Secret, and its CA when the Secret has one.
pub async fn read_tls_secret(
    secrets: &Api<Secret>,
    name: &str,
) -> Result<(TlsIdentity, Option<String>), Error> {
    let secret = get(secrets, name)
        .await?
        .ok_or_else(|| Error::MissingSecret(name.to_owned()))?;
    let identity = TlsIdentity {
        cert_chain_pem: text(&secret, name, TLS_CERT)?,
        key_pem: text(&secret, name, TLS_KEY)?,
    };
    let ca = text(&secret, name, CA_CERT).ok();
    Ok((identity, ca))
}

/// A webhook configuration whose webhooks carry a `caBundle`: the validating and the
/// mutating kind have the same shape but no common type.
pub trait WebhookConfiguration:
    Resource<DynamicType = ()> + k8s_openapi::Resource + Clone + DeserializeOwned + std::fmt::Debug
{
    /// Each webhook's name and the `caBundle` it has now.
    fn ca_bundles(&self) -> Vec<(&str, Option<&[u8]>)>;
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    fn ca_bundles(&self) -> Vec<(&str, Option<&[u8]>)> {
        let webhooks = self.webhooks.iter().flatten();
        bundles(webhooks.map(|w| (w.name.as_str(), &w.client_config)))
    }
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    fn ca_bundles(&self) -> Vec<(&str, Option<&[u8]>)> {
        let webhooks = self.webhooks.iter().flatten();
        bundles(webhooks.map(|w| (w.name.as_str(), &w.client_config)))
    }
}

/// Both kinds keep each webhook's CA in the same `clientConfig`.
fn bundles<'a>(
    webhooks: impl Iterator<Item = (&'a str, &'a WebhookClientConfig)>,
) -> Vec<(&'a str, Option<&'a [u8]>)> {
    webhooks
        .map(|(name, client)| (name, client.ca_bundle.as_ref().map(|b| b.0.as_slice())))
        .collect()
}

/// Sets the `caBundle` of every webhook in the configuration `name` that lacks this CA,
/// patching only that field. Returns whether anything changed.
pub async fn ensure_ca_bundle<K: WebhookConfiguration>(
    configs: &Api<K>,
    name: &str,
    ca_pem: &str,
) -> Result<bool, Error> {
    let kind = <K as k8s_openapi::Resource>::KIND;
    let config = configs.get_opt(name).await.map_err(|source| Error::Kube {
        what: format!("read {kind} {name}"),
        source,
    })?;
    let config = config.ok_or_else(|| Error::MissingWebhookConfiguration {
        kind,
        name: name.to_owned(),
    })?;
    let stale: Vec<&str> = config
        .ca_bundles()
        .into_iter()
        .filter(|(_, bundle)| *bundle != Some(ca_pem.as_bytes()))
        .map(|(name, _)| name)
        .collect();
    if stale.is_empty() {
        return Ok(false);
    }
    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    // A strategic merge patch addresses webhooks by name, so it touches nothing else and
    // cannot land on the wrong entry if the list was reordered meanwhile.
    let webhooks: Vec<_> = stale
        .iter()
        .map(|n| serde_json::json!({"name": n, "clientConfig": {"caBundle": bundle}}))
        .collect();
    let patch = serde_json::json!({"webhooks": webhooks});
    configs
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|source| Error::Kube {
            what: format!("patch the caBundle of {kind} {name}"),
            source,
        })?;
    tracing::info!(%kind, configuration = name, webhooks = ?stale, "set the webhook caBundle");
    Ok(true)
}

async fn get(secrets: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    secrets.get_opt(name).await.map_err(|source| Error::Kube {
        what: format!("read Secret {name}"),
        source,
    })
}

fn ca_from(secret: &Secret, name: &str) -> Result<Ca, Error> {
    Ok(Ca::from_pem(
        &text(secret, name, CA_CERT)?,
        &text(secret, name, CA_KEY)?,
    )?)
}

fn text(secret: &Secret, name: &str, key: &'static str) -> Result<String, Error> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| Error::SecretKey {
            secret: name.to_owned(),
            key,
        })?;
    String::from_utf8(bytes.0.clone()).map_err(|_| Error::SecretKey {
        secret: name.to_owned(),
        key,
    })
}
