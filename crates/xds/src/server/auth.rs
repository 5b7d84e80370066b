//! Which streams a server admits: with [`Admission::Certificate`], a stream must come over a
//! connection whose client certificate the mesh CA issued to the very pod its node names, so a
//! pod can neither read another pod's config nor speak (ACK, NACK) in its name.

use remora_identity::Peer;
use remora_model::input::ObjectKey;
use tonic::Status;

/// What a stream must show before it is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Admission {
    /// Nothing: local mode on a laptop (`--insecure`) and benchmarks.
    #[default]
    Open,
    /// A client certificate for the pod the node names.
    Certificate,
}

impl Admission {
    /// `Ok` when a stream from `peer` may be served as `proxy`.
    pub fn admit(self, peer: Option<&Peer>, proxy: &ObjectKey) -> Result<(), Status> {
        if self == Admission::Open {
            return Ok(());
        }
        let identity = peer.and_then(|p| p.identity.as_ref()).ok_or_else(|| {
            Status::unauthenticated(
                "xDS needs a client certificate from the mesh CA: the pod's remora-agent \
                 serves it to the proxy over SDS",
            )
        })?;
        let pod = proxy.to_string();
        if identity.subject.as_deref() != Some(pod.as_str())
            || identity.id.namespace != proxy.namespace
        {
            return Err(Status::permission_denied(format!(
                "node {pod} is not the pod the client certificate was issued to ({}, pod {})",
                identity.id,
                identity.subject.as_deref().unwrap_or("none"),
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use remora_identity::{PeerIdentity, SpiffeId};
    use tonic::Code;

    use super::*;

    fn peer(namespace: &str, subject: Option<&str>) -> Peer {
        Peer {
            remote: None,
            identity: Some(PeerIdentity {
                id: SpiffeId::new("cluster.local", namespace, "api"),
                subject: subject.map(str::to_owned),
            }),
        }
    }

    #[test]
    fn an_open_server_admits_anyone() {
        let proxy = ObjectKey::new("payments", "api-0");
        assert!(Admission::Open.admit(None, &proxy).is_ok());
    }

    #[test]
    fn a_certificate_admits_only_the_pod_it_was_issued_to() {
        let proxy = ObjectKey::new("payments", "api-0");
        let check = |p: Option<&Peer>| Admission::Certificate.admit(p, &proxy);
        assert!(check(Some(&peer("payments", Some("payments/api-0")))).is_ok());
        let code = |r: Result<(), Status>| r.expect_err("refused").code();
        assert_eq!(code(check(None)), Code::Unauthenticated);
        let anonymous = Peer {
            remote: None,
            identity: None,
        };
        assert_eq!(code(check(Some(&anonymous))), Code::Unauthenticated);
        // Another pod, even of the same service account, in the same namespace.
        assert_eq!(
            code(check(Some(&peer("payments", Some("payments/api-1"))))),
            Code::PermissionDenied
        );
        assert_eq!(
            code(check(Some(&peer("other", Some("payments/api-0"))))),
            Code::PermissionDenied
        );
        assert_eq!(
            code(check(Some(&peer("payments", None)))),
            Code::PermissionDenied
        );
    }
}
