//! One `Certify` call to the control plane: a new key and CSR, over TLS that verifies the
//! control plane against the trust bundle, proved by the pod's token or by the current
//! certificate. A call gets a connection of its own: calls are a day apart, and each may
//! present a different certificate.

use std::{
    io,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use remora_ca::pb::{CertifyRequest, identity_client::IdentityClient};
use remora_identity::{
    CertifiedIdentity, CurrentCert, Issued, PkiError, SpiffeId, TrustBundle, WorkloadKey, dial, tls,
};
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::{Request, Status, metadata::MetadataValue, transport::Channel};

/// How long a call may take, token review included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How the agent proves which pod it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// The pod's projected ServiceAccount token, as `authorization: Bearer`.
    Token,
    /// The certificate the CA issued it last, as the TLS client certificate.
    Certificate,
}

/// Why a call did not give a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// No key or CSR could be made.
    #[error("cannot make a key and CSR: {0}")]
    Key(#[source] PkiError),
    /// The token file could not be read.
    #[error(
        "cannot read the token {path}: {source}; the pod needs a projected ServiceAccount \
         token with audience remora there"
    )]
    Token {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The token file holds no token, or one that cannot be sent as a header.
    #[error("the token in {0} is empty or not printable ASCII; it must be a ServiceAccount token")]
    TokenText(PathBuf),
    /// The TLS config could not be built.
    #[error("cannot build the TLS config: {0}")]
    Tls(#[source] PkiError),
    /// The control plane could not be reached.
    #[error("cannot connect to the control plane at {address}: {reason}")]
    Connect {
        /// `host:port`.
        address: String,
        /// What failed, with its causes (tonic's own error says only "transport error").
        reason: String,
    },
    /// The control plane answered with an error.
    #[error("the control plane refused the certificate request: {}: {}", .0.code(), .0.message())]
    Refused(Status),
    /// The control plane's answer cannot be used.
    #[error("the control plane's answer is unusable: {0}")]
    Answer(String),
}

/// A certificate the control plane issued, with the key it is for.
#[derive(Debug)]
pub struct Certified {
    /// For TLS to the control plane.
    pub identity: CertifiedIdentity,
    /// The key (it never leaves the pod: only Envoy gets it, over the pod's socket).
    pub key: WorkloadKey,
    /// The certificate, leaf first.
    pub chain_pem: String,
    /// The trust bundle the CA sent.
    pub bundle: TrustBundle,
    /// The same, as PEM.
    pub bundle_pem: String,
    /// When it arrived.
    pub received: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

/// The control plane's certificate service, as this pod reaches it.
pub struct CaClient {
    address: String,
    server_name: ServerName<'static>,
    /// The bundle the pod started with.
    configured: TrustBundle,
    /// The bundle the CA sent last: during a root rotation the control plane's certificate
    /// may come from a root the pod did not start with.
    latest: Option<TrustBundle>,
    token_file: PathBuf,
    current: CurrentCert,
}

impl CaClient {
    /// A client of the control plane at `address` (`host:port`), whose certificate must be
    /// valid for `server_name` under `trust`, with the pod's token in `token_file`.
    pub fn new(
        address: String,
        server_name: ServerName<'static>,
        trust: TrustBundle,
        token_file: PathBuf,
    ) -> CaClient {
        CaClient {
            address,
            server_name,
            configured: trust,
            latest: None,
            token_file,
            current: CurrentCert::default(),
        }
    }

    /// Presents `certified` as the client certificate from now on, and trusts the bundle
    /// that came with it too.
    pub fn install(&mut self, certified: &Certified) {
        self.current.set(&certified.identity);
        self.latest = Some(certified.bundle.clone());
    }

    /// A certificate for `id` (a new key), proved by `proof`.
    pub async fn certify(&self, id: &SpiffeId, proof: Proof) -> Result<Certified, CertifyError> {
        let key = WorkloadKey::generate().map_err(CertifyError::Key)?;
        let csr = key.csr_pem(id).map_err(CertifyError::Key)?;
        let mut request = Request::new(CertifyRequest { csr });
        let presented = match proof {
            Proof::Token => {
                let header = self.bearer().await?;
                request.metadata_mut().insert("authorization", header);
                None
            }
            Proof::Certificate => Some(self.current.clone()),
        };
        let channel = self.connect(presented).await?;
        let answer = IdentityClient::new(channel)
            .certify(request)
            .await
            .map_err(CertifyError::Refused)?
            .into_inner();
        let received = SystemTime::now();
        let not_after = u64::try_from(answer.not_after_unix)
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| CertifyError::Answer(format!("not_after {}", answer.not_after_unix)))?;
        let unusable = |e: PkiError| CertifyError::Answer(e.to_string());
        let bundle = TrustBundle::from_pem(&answer.trust_bundle).map_err(unusable)?;
        let issued = Issued {
            chain_pem: answer.chain,
            not_before: received,
            not_after,
        };
        let identity = CertifiedIdentity::new(&issued, &key).map_err(unusable)?;
        Ok(Certified {
            identity,
            key,
            chain_pem: issued.chain_pem,
            bundle,
            bundle_pem: answer.trust_bundle,
            received,
            not_after,
        })
    }

    /// `Bearer <token>`, the token read now: the kubelet replaces it before it expires.
    async fn bearer(&self) -> Result<MetadataValue<tonic::metadata::Ascii>, CertifyError> {
        let text = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| CertifyError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let token = text.trim();
        let bad = || CertifyError::TokenText(self.token_file.clone());
        if token.is_empty() {
            return Err(bad());
        }
        // The error would quote the value: never the token.
        MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| bad())
    }

    async fn connect(&self, presented: Option<CurrentCert>) -> Result<Channel, CertifyError> {
        let trust = match &self.latest {
            Some(latest) => self.configured.merged(latest),
            None => self.configured.clone(),
        };
        let config = tls::client_config(&trust, presented).map_err(CertifyError::Tls)?;
        let name = self.server_name.to_str();
        dial(&self.address, &name, config, CALL_TIMEOUT)
            .await
            .map_err(|e| CertifyError::Connect {
                address: self.address.clone(),
                reason: e.to_string(),
            })
    }
}
