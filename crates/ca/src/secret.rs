//! The mesh CA's Secret in the control plane's namespace: a `kubernetes.io/tls` Secret (the
//! shape cert-manager writes, so a bring-your-own intermediate is just such a Secret),
//! created with a new root by the first replica that finds none.

use std::{collections::BTreeMap, time::SystemTime};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use remora_identity::{CaPem, MeshCa, PkiError};

/// The signing certificate, then any intermediates above it.
pub const TLS_CERT: &str = "tls.crt";
/// The signing key, PKCS#8 PEM.
pub const TLS_KEY: &str = "tls.key";
/// The trust bundle: the roots.
pub const CA_CERT: &str = "ca.crt";
/// The type of the Secret this module creates.
const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Why the mesh CA could not be read, created or stored.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A call to the API server failed.
    #[error("cannot {what}: {source}")]
    Kube {
        /// What was attempted, e.g. `read Secret remora-system/remora-mesh-ca`.
        what: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// The Secret lacks a key, or its value is not UTF-8 text.
    #[error(
        "Secret {secret} has no usable {key:?} ({why}); a mesh CA Secret holds tls.crt (the \
         signing certificate chain), tls.key (its PKCS#8 key) and ca.crt (the roots), all PEM"
    )]
    Key {
        /// `namespace/name`.
        secret: String,
        /// The key in its `data`.
        key: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The keys are there but do not make a CA.
    #[error("Secret {secret} does not hold a usable mesh CA: {source}")]
    Ca {
        /// `namespace/name`.
        secret: String,
        /// What is wrong, naming the key.
        #[source]
        source: Box<PkiError>,
    },
    /// A new root could not be made.
    #[error("cannot generate the mesh CA: {0}")]
    Generate(#[source] Box<PkiError>),
}

/// The mesh CA in Secret `namespace/name`; when there is none, a new root for `trust_domain`
/// is generated and stored there. Replicas racing to create it all end with the one that
/// got in: on a conflict the winner's is read.
pub async fn load_or_create(
    client: kube::Client,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> Result<MeshCa, SecretError> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let path = format!("{namespace}/{name}");
    if let Some(secret) = get(&secrets, &path, name).await? {
        return mesh_ca_from_secret(&secret, trust_domain);
    }
    let ca = MeshCa::generate(trust_domain, SystemTime::now())
        .map_err(|e| SecretError::Generate(Box::new(e)))?;
    match secrets
        .create(&PostParams::default(), &ca_secret(&ca, name))
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %path, %trust_domain, "created the mesh CA");
            Ok(ca)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(secret = %path, "another replica created the mesh CA first");
            let secret = get(&secrets, &path, name)
                .await?
                .ok_or_else(|| SecretError::Kube {
                    what: format!("read Secret {path} after a create conflict"),
                    source: kube::Error::Api(e),
                })?;
            mesh_ca_from_secret(&secret, trust_domain)
        }
        Err(source) => Err(SecretError::Kube {
            what: format!("create Secret {path}"),
            source,
        }),
    }
}

/// The mesh CA a Secret holds (for a watch that reloads it when it changes).
pub fn mesh_ca_from_secret(secret: &Secret, trust_domain: &str) -> Result<MeshCa, SecretError> {
    let path = format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    let stored = CaPem {
        cert_chain: text(secret, &path, TLS_CERT)?,
        key: text(secret, &path, TLS_KEY)?,
        bundle: text(secret, &path, CA_CERT)?,
    };
    MeshCa::from_pem(&stored, trust_domain).map_err(|source| SecretError::Ca {
        secret: path,
        source: Box::new(source),
    })
}

/// The Secret named `name` that stores `ca`.
pub fn ca_secret(ca: &MeshCa, name: &str) -> Secret {
    let stored = ca.to_pem();
    let entry = |key: &str, pem: String| (key.to_owned(), ByteString(pem.into_bytes()));
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "remora".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(TLS_SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([
            entry(TLS_CERT, stored.cert_chain),
            entry(TLS_KEY, stored.key),
            entry(CA_CERT, stored.bundle),
        ])),
        ..Secret::default()
    }
}

async fn get(secrets: &Api<Secret>, path: &str, name: &str) -> Result<Option<Secret>, SecretError> {
    secrets
        .get_opt(name)
        .await
        .map_err(|source| SecretError::Kube {
            what: format!("read Secret {path}"),
            source,
        })
}

fn text(secret: &Secret, path: &str, key: &'static str) -> Result<String, SecretError> {
    let error = |why| SecretError::Key {
        secret: path.to_owned(),
        key,
        why,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| error("missing"))?;
    let text = String::from_utf8(bytes.0.clone()).map_err(|_| error("not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(error("empty"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::{
        future::Future,
        pin::Pin,
        sync::{Arc, Mutex},
        task::{Context, Poll},
    };

    use kube::client::Body;
    use tonic::codegen::{
        Service,
        http::{Method, Request, Response, StatusCode},
    };

    use super::*;

    /// What the fake API server answers to a read and to a create of the Secret.
    #[derive(Clone)]
    enum Stored {
        /// No Secret; a create succeeds.
        Absent,
        /// No Secret when first read; a create conflicts, and then `Secret` is there.
        CreatedByAnother(Box<Secret>),
        /// This Secret.
        Present(Box<Secret>),
    }

    /// An API server holding at most the one Secret, logging the requests it gets.
    #[derive(Clone)]
    struct FakeApi {
        stored: Stored,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl FakeApi {
        fn answer(&self, method: &Method) -> (StatusCode, String) {
            let secret_json = |s: &Secret| serde_json::to_string(s).expect("JSON");
            let read_before = self.log.lock().expect("log").iter().any(|l| l == "GET");
            match (&self.stored, method) {
                (Stored::Present(s), &Method::GET) => (StatusCode::OK, secret_json(s)),
                (Stored::CreatedByAnother(s), &Method::GET) if read_before => {
                    (StatusCode::OK, secret_json(s))
                }
                (_, &Method::GET) => (StatusCode::NOT_FOUND, status_json(404, "NotFound")),
                (Stored::CreatedByAnother(_), &Method::POST) => {
                    (StatusCode::CONFLICT, status_json(409, "AlreadyExists"))
                }
                _ => (StatusCode::CREATED, "{}".to_owned()),
            }
        }
    }

    fn status_json(code: u16, reason: &str) -> String {
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": reason, "reason": reason, "code": code,
        })
        .to_string()
    }

    impl Service<Request<Body>> for FakeApi {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            let (status, body) = self.answer(request.method());
            self.log
                .lock()
                .expect("log")
                .push(request.method().to_string());
            let mut response = Response::new(Body::from(body.into_bytes()));
            *response.status_mut() = status;
            Box::pin(async move { Ok(response) })
        }
    }

    async fn load(stored: Stored) -> (Result<MeshCa, SecretError>, Vec<String>) {
        let api = FakeApi {
            stored,
            log: Arc::default(),
        };
        let log = api.log.clone();
        let client = kube::Client::new(api, "default");
        let loaded =
            load_or_create(client, "remora-system", "remora-mesh-ca", "cluster.local").await;
        let requests = log.lock().expect("log").clone();
        (loaded, requests)
    }

    #[tokio::test]
    async fn the_first_replica_creates_the_ca() {
        let (loaded, requests) = load(Stored::Absent).await;
        assert!(loaded.is_ok(), "{loaded:?}");
        assert_eq!(requests, ["GET", "POST"]);
    }

    #[tokio::test]
    async fn a_replica_that_loses_the_race_uses_the_winners_ca() {
        let (winner, secret) = stored("remora-mesh-ca");
        let (loaded, requests) = load(Stored::CreatedByAnother(Box::new(secret))).await;
        assert_eq!(requests, ["GET", "POST", "GET"]);
        assert_eq!(loaded.expect("the winner's").bundle(), winner.bundle());
    }

    #[tokio::test]
    async fn an_existing_ca_is_read_and_a_broken_one_is_an_error() {
        let (existing, secret) = stored("remora-mesh-ca");
        let (loaded, requests) = load(Stored::Present(Box::new(secret.clone()))).await;
        assert_eq!(requests, ["GET"]);
        assert_eq!(loaded.expect("read").bundle(), existing.bundle());

        let mut broken = secret;
        broken.data = Some(BTreeMap::new());
        let (loaded, requests) = load(Stored::Present(Box::new(broken))).await;
        assert_eq!(requests, ["GET"], "a broken CA is never replaced");
        let err = loaded.expect_err("broken");
        assert!(err.to_string().contains("remora-mesh-ca"), "{err}");
    }

    fn stored(name: &str) -> (MeshCa, Secret) {
        let ca = MeshCa::generate("cluster.local", SystemTime::now()).expect("a CA");
        let mut secret = ca_secret(&ca, name);
        secret.metadata.namespace = Some("remora-system".into());
        (ca, secret)
    }

    fn set(secret: &mut Secret, key: &str, value: Vec<u8>) {
        if let Some(data) = secret.data.as_mut() {
            data.insert(key.to_owned(), ByteString(value));
        }
    }

    #[test]
    fn a_stored_ca_reads_back_as_the_same_ca() {
        let (ca, secret) = stored("remora-mesh-ca");
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        let keys: Vec<_> = secret.data.iter().flat_map(|d| d.keys()).cloned().collect();
        assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
        let read = mesh_ca_from_secret(&secret, "cluster.local").expect("usable");
        assert_eq!(read.bundle(), ca.bundle());
        assert_eq!(read.not_after(), ca.not_after());
    }

    #[test]
    fn a_missing_or_unreadable_key_is_named_with_the_secret() {
        let (_, mut secret) = stored("remora-mesh-ca");
        if let Some(data) = secret.data.as_mut() {
            data.remove(TLS_KEY);
        }
        let err = mesh_ca_from_secret(&secret, "cluster.local").expect_err("no key");
        assert!(
            matches!(
                err,
                SecretError::Key {
                    key: TLS_KEY,
                    why: "missing",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("remora-system/remora-mesh-ca"),
            "{err}"
        );

        let (_, mut secret) = stored("remora-mesh-ca");
        set(&mut secret, CA_CERT, vec![0xff, 0xfe]);
        let err = mesh_ca_from_secret(&secret, "cluster.local").expect_err("not text");
        assert!(
            matches!(
                err,
                SecretError::Key {
                    key: CA_CERT,
                    why: "not UTF-8",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn keys_that_do_not_belong_together_are_no_ca() {
        let (_, mut secret) = stored("remora-mesh-ca");
        let (other, _) = stored("other");
        set(&mut secret, TLS_KEY, other.to_pem().key.into_bytes());
        let err = mesh_ca_from_secret(&secret, "cluster.local").expect_err("mismatch");
        assert!(matches!(err, SecretError::Ca { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("remora-system/remora-mesh-ca"), "{text}");
        assert!(text.contains("tls.key"), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
}
