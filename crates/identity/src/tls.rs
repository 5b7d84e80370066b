//! rustls configs for both ends of a connection to the control plane: certificates verified
//! against the mesh's trust bundle, ALPN h2 (gRPC), the *ring* provider.
//!
//! Neither end resumes sessions: a resumed session carries the certificates of the handshake
//! it came from, so a renewed certificate (or one that expired since) would go unnoticed.
//! Every connection does a full handshake; gRPC connections are long-lived, so that is cheap.

use std::sync::Arc;

use tokio_rustls::rustls::{
    ClientConfig, ServerConfig,
    client::Resumption,
    server::{NoServerSessionStorage, WebPkiClientVerifier},
};

use crate::{CurrentCert, PkiError, TrustBundle, cert};

/// The ALPN protocol of gRPC.
const H2: &[u8] = b"h2";

/// Whether a server requires a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client may connect without one (it proves who it is otherwise, e.g. with a token);
    /// one it presents must still verify.
    Optional,
    /// A client must present a certificate that verifies against the bundle.
    Required,
}

/// A server presenting `cert`, verifying client certificates against `trust` (webpki),
/// ALPN h2.
pub fn server_config(
    cert: CurrentCert,
    trust: &TrustBundle,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = Arc::new(cert::provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(trust.root_store()), provider.clone());
    let verifier = match client_auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required => verifier,
    }
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| PkiError::Rustls {
            what: "the TLS versions of the server config",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client verifying the server's certificate against `trust` by DNS name (normal webpki),
/// presenting `cert` when given, ALPN h2.
pub fn client_config(
    trust: &TrustBundle,
    cert: Option<CurrentCert>,
) -> Result<Arc<ClientConfig>, PkiError> {
    let builder = ClientConfig::builder_with_provider(Arc::new(cert::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|source| PkiError::Rustls {
            what: "the TLS versions of the client config",
            source,
        })?
        .with_root_certificates(trust.root_store());
    let mut config = match cert {
        Some(cert) => builder.with_client_cert_resolver(Arc::new(cert)),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
    use tokio_rustls::{
        TlsAcceptor, TlsConnector,
        rustls::pki_types::{CertificateDer, ServerName},
    };

    use super::*;
    use crate::{
        CertifiedIdentity, Issued, MeshCa, PeerIdentity, SpiffeId, WorkloadKey,
        testing::{self, TD, byo_intermediate, grant, now, workload},
    };

    const SERVER_NAME: &str = "remora.remora-system.svc";

    /// What each end saw of one handshake: the server, who the client is; the client, the
    /// server's leaf and the greeting the server sends once it accepted.
    struct Outcome {
        server: Result<Option<PeerIdentity>, String>,
        client: Result<CertificateDer<'static>, String>,
    }

    async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
        let (client_io, server_io) = duplex(64 * 1024);
        let name = ServerName::try_from(SERVER_NAME).expect("a DNS name");
        let serve = async {
            let mut tls = TlsAcceptor::from(server)
                .accept(server_io)
                .await
                .map_err(|e| e.to_string())?;
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned());
            tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())?;
            leaf.map(|der| PeerIdentity::from_leaf(&der).map_err(|e| e.to_string()))
                .transpose()
        };
        let connect = async {
            let mut tls = TlsConnector::from(client)
                .connect(name, client_io)
                .await
                .map_err(|e| e.to_string())?;
            let mut greeting = Vec::new();
            // TLS 1.3 lets the client finish before the server has judged its certificate:
            // the greeting shows the server accepted it.
            tls.read_to_end(&mut greeting)
                .await
                .map_err(|e| e.to_string())?;
            if greeting != b"ok" {
                return Err(format!("no greeting: {greeting:?}"));
            }
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned());
            leaf.ok_or_else(|| "no server certificate".to_owned())
        };
        let (server, client) = tokio::join!(serve, connect);
        Outcome { server, client }
    }

    /// The control plane's serving certificate from `ca`.
    fn serving_issued(ca: &MeshCa) -> (Issued, WorkloadKey) {
        ca.issue_serving(
            &grant("remora-system", "remora", "remora-0"),
            &[SERVER_NAME.to_owned()],
            now(),
        )
        .expect("a serving certificate")
    }

    fn serving(ca: &MeshCa) -> CurrentCert {
        let (issued, key) = serving_issued(ca);
        current(&issued, &key)
    }

    fn current(issued: &Issued, key: &WorkloadKey) -> CurrentCert {
        let cert = CurrentCert::default();
        cert.set(&CertifiedIdentity::new(issued, key).expect("an identity"));
        cert
    }

    fn client_of(ca: &MeshCa, pod: &str) -> CurrentCert {
        let (issued, key) = workload(ca, &grant("shop", "web", pod));
        current(&issued, &key)
    }

    fn web(pod: &str) -> PeerIdentity {
        PeerIdentity {
            id: SpiffeId::new(TD, "shop", "web"),
            subject: Some(format!("shop/{pod}")),
        }
    }

    #[tokio::test]
    async fn a_client_with_a_certificate_of_the_bundle_is_accepted_and_known() {
        let ca = testing::ca();
        let server =
            server_config(serving(&ca), ca.bundle(), ClientAuth::Required).expect("a config");
        let client = client_config(ca.bundle(), Some(client_of(&ca, "web-0"))).expect("a config");
        assert_eq!(server.alpn_protocols, [b"h2".to_vec()]);
        assert_eq!(client.alpn_protocols, [b"h2".to_vec()]);
        let outcome = handshake(server, client).await;
        assert_eq!(outcome.server, Ok(Some(web("web-0"))));
        assert!(outcome.client.is_ok(), "{:?}", outcome.client);
    }

    #[tokio::test]
    async fn a_client_with_a_certificate_of_another_ca_is_refused() {
        let (ca, other) = (testing::ca(), testing::ca());
        let server =
            server_config(serving(&ca), ca.bundle(), ClientAuth::Required).expect("a config");
        let client =
            client_config(ca.bundle(), Some(client_of(&other, "web-0"))).expect("a config");
        let outcome = handshake(server, client).await;
        let refused = outcome.server.expect_err("refused");
        assert!(refused.contains("UnknownIssuer"), "{refused}");
        assert!(outcome.client.is_err());
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused_when_one_is_required() {
        let ca = testing::ca();
        let server =
            server_config(serving(&ca), ca.bundle(), ClientAuth::Required).expect("a config");
        let client = client_config(ca.bundle(), None).expect("a config");
        let outcome = handshake(server, client).await;
        assert!(outcome.server.is_err());
        assert!(outcome.client.is_err());
        // A CurrentCert not yet set presents nothing either.
        let server =
            server_config(serving(&ca), ca.bundle(), ClientAuth::Required).expect("a config");
        let client = client_config(ca.bundle(), Some(CurrentCert::default())).expect("a config");
        assert!(handshake(server, client).await.server.is_err());
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_is_served_anonymously_when_optional() {
        let ca = testing::ca();
        let server =
            server_config(serving(&ca), ca.bundle(), ClientAuth::Optional).expect("a config");
        let anonymous = client_config(ca.bundle(), None).expect("a config");
        let outcome = handshake(server.clone(), anonymous).await;
        assert_eq!(outcome.server, Ok(None));
        assert!(outcome.client.is_ok(), "{:?}", outcome.client);
        // A certificate given is still verified and read.
        let known = client_config(ca.bundle(), Some(client_of(&ca, "web-0"))).expect("a config");
        assert_eq!(
            handshake(server.clone(), known).await.server,
            Ok(Some(web("web-0")))
        );
        let stranger =
            client_config(ca.bundle(), Some(client_of(&testing::ca(), "web-0"))).expect("a config");
        assert!(handshake(server, stranger).await.server.is_err());
    }

    #[tokio::test]
    async fn the_server_is_verified_by_its_name_and_bundle() {
        let (ca, other) = (testing::ca(), testing::ca());
        let server =
            server_config(serving(&ca), ca.bundle(), ClientAuth::Optional).expect("a config");
        let distrusting = client_config(other.bundle(), None).expect("a config");
        let refused = handshake(server, distrusting)
            .await
            .client
            .expect_err("untrusted");
        assert!(refused.contains("UnknownIssuer"), "{refused}");
        let (issued, key) = ca
            .issue_serving(
                &grant("remora-system", "remora", "remora-0"),
                &["elsewhere".to_owned()],
                now(),
            )
            .expect("a serving certificate");
        let misnamed = server_config(current(&issued, &key), ca.bundle(), ClientAuth::Optional)
            .expect("a config");
        let client = client_config(ca.bundle(), None).expect("a config");
        let refused = handshake(misnamed, client)
            .await
            .client
            .expect_err("wrong name");
        assert!(refused.contains("not valid for name"), "{refused}");
    }

    #[tokio::test]
    async fn a_server_without_a_certificate_yet_completes_no_handshake() {
        let ca = testing::ca();
        let server = server_config(CurrentCert::default(), ca.bundle(), ClientAuth::Optional)
            .expect("a config");
        let client = client_config(ca.bundle(), None).expect("a config");
        let outcome = handshake(server, client).await;
        assert!(outcome.server.is_err() && outcome.client.is_err());
    }

    #[tokio::test]
    async fn a_new_certificate_is_presented_from_the_next_handshake() {
        let ca = testing::ca();
        let identity = |(issued, key): &(Issued, WorkloadKey)| {
            CertifiedIdentity::new(issued, key).expect("an identity")
        };
        let (served, presented) = (CurrentCert::default(), CurrentCert::default());
        let server_before = serving_issued(&ca);
        served.set(&identity(&server_before));
        presented.set(&identity(&workload(&ca, &grant("shop", "web", "web-0"))));
        let server =
            server_config(served.clone(), ca.bundle(), ClientAuth::Required).expect("a config");
        let client = client_config(ca.bundle(), Some(presented.clone())).expect("a config");
        let first = handshake(server.clone(), client.clone()).await;
        assert_eq!(first.server, Ok(Some(web("web-0"))));
        assert_eq!(
            first.client,
            Ok(testing::chain(&server_before.0)[0].clone())
        );

        // Both ends renew; the configs stay as they are.
        let server_after = serving_issued(&ca);
        served.set(&identity(&server_after));
        presented.set(&identity(&workload(&ca, &grant("shop", "web", "web-1"))));
        let second = handshake(server, client).await;
        assert_eq!(second.server, Ok(Some(web("web-1"))));
        assert_eq!(
            second.client,
            Ok(testing::chain(&server_after.0)[0].clone())
        );
    }

    #[tokio::test]
    async fn a_bundle_of_two_roots_accepts_peers_of_both() {
        let (old, new) = (testing::ca(), testing::ca());
        let both = old.bundle().merged(new.bundle());
        let server = server_config(serving(&old), &both, ClientAuth::Required).expect("a config");
        for ca in [&old, &new] {
            let client = client_config(&both, Some(client_of(ca, "web-0"))).expect("a config");
            let outcome = handshake(server.clone(), client).await;
            assert_eq!(outcome.server, Ok(Some(web("web-0"))));
            assert!(outcome.client.is_ok(), "{:?}", outcome.client);
        }
        // The new root's server, to clients that trust both, during the overlap.
        let server = server_config(serving(&new), &both, ClientAuth::Required).expect("a config");
        let client = client_config(&both, Some(client_of(&old, "web-0"))).expect("a config");
        assert_eq!(
            handshake(server, client).await.server,
            Ok(Some(web("web-0")))
        );
    }

    #[tokio::test]
    async fn a_client_of_an_intermediate_is_accepted_by_a_server_that_trusts_only_the_root() {
        let stored = byo_intermediate(false);
        let ca = MeshCa::from_pem(&stored, TD).expect("a usable intermediate");
        let root = TrustBundle::from_pem(&stored.bundle).expect("the root");
        let server = server_config(serving(&ca), &root, ClientAuth::Required).expect("a config");
        let client = client_config(&root, Some(client_of(&ca, "web-0"))).expect("a config");
        let outcome = handshake(server, client).await;
        assert_eq!(outcome.server, Ok(Some(web("web-0"))));
        assert!(outcome.client.is_ok(), "{:?}", outcome.client);
    }
}
