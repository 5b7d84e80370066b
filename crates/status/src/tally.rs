//! How the proxies a route or policy configures took their config, counted by the caller
//! from the xDS server's view of each proxy.

use crate::message::truncate;

/// The most of Envoy's own words a condition quotes; its messages can be long.
const ENVOY_MESSAGE_LIMIT: usize = 4096;

/// Proxy counts for one route or policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyTally {
    /// Proxies concerned: those a route shapes, or those a policy governs.
    pub affected: i32,
    /// Of those, the ones that ACKed the config published for them now.
    pub acked: i32,
    /// Of those, the ones whose latest response is a NACK.
    pub nacked: i32,
    /// The first proxy that NACKed (`namespace/name`) and Envoy's message, quoted in the
    /// status. Count proxies in a stable order (by name) so the same NACKs give the same status.
    pub first_nack: Option<(String, String)>,
}

impl ProxyTally {
    /// "1 of 3 proxies rejected their config; demo/web-0 said: ..."
    pub(crate) fn rejection(&self) -> String {
        let mut m = format!(
            "{} of {} proxies rejected their config and keep running the previous one",
            self.nacked, self.affected
        );
        if let Some((proxy, message)) = &self.first_nack {
            m.push_str(&format!(
                "; {proxy} said: {}",
                truncate(message, ENVOY_MESSAGE_LIMIT)
            ));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_quotes_envoy_within_bounds() {
        let t = ProxyTally {
            affected: 3,
            acked: 2,
            nacked: 1,
            first_nack: Some(("demo/web-0".into(), "x".repeat(10_000))),
        };
        let m = t.rejection();
        assert!(m.starts_with(
            "1 of 3 proxies rejected their config and keep running the previous one; demo/web-0 said: xxx"
        ));
        assert!(m.len() < ENVOY_MESSAGE_LIMIT + 200 && m.ends_with('…'));
    }
}
