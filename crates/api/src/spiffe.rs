//! Workload identities as SPIFFE IDs: `spiffe://<trust domain>/ns/<namespace>/sa/<service
//! account>`, the form Istio and Linkerd use too, so a certificate names the Kubernetes
//! service account a workload runs as.

use std::{fmt, str::FromStr};

/// The trust domain when none is configured: the cluster's DNS suffix, as other meshes use.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The audience of the projected ServiceAccount token a pod's agent proves its pod with: the
/// certificate service accepts no token meant for anyone else (the API server, say).
pub const TOKEN_AUDIENCE: &str = "remora";

const SCHEME: &str = "spiffe://";

/// A workload's identity: the service account it runs as, in a trust domain.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    /// Who vouches for the identity; one per mesh (`cluster.local` by default).
    pub trust_domain: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's service account.
    pub service_account: String,
}

/// Why a text is not a SPIFFE ID of the form this mesh issues.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// It does not start with `spiffe://`.
    #[error("{0:?} is not a SPIFFE ID: it must start with spiffe://")]
    Scheme(String),
    /// The path is not `/ns/<namespace>/sa/<service account>`.
    #[error("{0:?} is not a workload ID: its path must be /ns/<namespace>/sa/<service account>")]
    Path(String),
    /// The trust domain has characters SPIFFE does not allow.
    #[error(
        "trust domain {0:?} is not valid: use lowercase letters, digits, '.', '-' and '_', e.g. cluster.local"
    )]
    TrustDomain(String),
}

impl SpiffeId {
    /// The identity of `service_account` in `namespace`.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    /// `spiffe://<trust domain>/`: what every identity of the trust domain starts with.
    pub fn trust_domain_prefix(trust_domain: &str) -> String {
        format!("{SCHEME}{trust_domain}/")
    }
}

/// Checks a trust domain as SPIFFE defines one: lowercase letters, digits, `.`, `-`, `_`.
pub fn check_trust_domain(trust_domain: &str) -> Result<(), SpiffeError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
    if trust_domain.is_empty() || !trust_domain.chars().all(allowed) {
        return Err(SpiffeError::TrustDomain(trust_domain.to_owned()));
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<SpiffeId, SpiffeError> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeError::Scheme(s.to_owned()))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| SpiffeError::Path(s.to_owned()))?;
        check_trust_domain(trust_domain)?;
        match path.split('/').collect::<Vec<_>>()[..] {
            ["ns", namespace, "sa", service_account]
                if !namespace.is_empty() && !service_account.is_empty() =>
            {
                Ok(SpiffeId::new(trust_domain, namespace, service_account))
            }
            _ => Err(SpiffeError::Path(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_what_it_writes() {
        let id = SpiffeId::new("cluster.local", "shop", "reviews");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/reviews");
        assert_eq!(id.to_string().parse::<SpiffeId>(), Ok(id));
        assert!(
            "spiffe://cluster.local/ns/shop/sa/reviews"
                .starts_with(&SpiffeId::trust_domain_prefix("cluster.local"))
        );
    }

    #[test]
    fn other_forms_are_refused_with_the_reason() {
        let err = |s: &str| s.parse::<SpiffeId>().expect_err("refused");
        assert!(matches!(
            err("https://cluster.local/ns/a/sa/b"),
            SpiffeError::Scheme(_)
        ));
        assert!(matches!(
            err("spiffe://cluster.local"),
            SpiffeError::Path(_)
        ));
        assert!(matches!(
            err("spiffe://cluster.local/ns/a"),
            SpiffeError::Path(_)
        ));
        assert!(matches!(
            err("spiffe://cluster.local/ns//sa/b"),
            SpiffeError::Path(_)
        ));
        assert!(matches!(
            err("spiffe://cluster.local/ns/a/sa/b/c"),
            SpiffeError::Path(_)
        ));
        assert!(matches!(
            err("spiffe://Cluster.Local/ns/a/sa/b"),
            SpiffeError::TrustDomain(_)
        ));
        assert!(check_trust_domain("").is_err());
        assert!(check_trust_domain("example.org").is_ok());
    }
}
