//! What a pod's proxy intercepts, validated.

use std::collections::BTreeSet;

use remora_api::sidecar_policy::{
    ADMIN_PORT, INBOUND_CAPTURE_PORT, Interception, OUTBOUND_CAPTURE_PORT, READINESS_PORT,
    STATS_PORT,
};

use crate::{Cidr, Family};

/// The proxy's user and group: a connection whose socket belongs to both is the proxy's own
/// and never redirected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyUser {
    /// The UID the proxy runs as.
    pub uid: u32,
    /// The GID the proxy runs as (the pod spec must set it, `runAsGroup`).
    pub gid: u32,
}

/// The ports the proxy's capture listeners accept redirected connections on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapturePorts {
    /// Outbound: connections the pod's applications open.
    pub outbound: u16,
    /// Inbound: connections arriving at the pod.
    pub inbound: u16,
}

impl Default for CapturePorts {
    /// [`OUTBOUND_CAPTURE_PORT`] and [`INBOUND_CAPTURE_PORT`].
    fn default() -> Self {
        CapturePorts {
            outbound: OUTBOUND_CAPTURE_PORT,
            inbound: INBOUND_CAPTURE_PORT,
        }
    }
}

impl CapturePorts {
    /// Two distinct ports, neither 0 nor one the proxy already uses.
    fn check(self) -> Result<(), CaptureError> {
        let taken = |p: u16| p == 0 || SERVING_PORTS.contains(&p);
        if self.outbound == self.inbound || taken(self.outbound) || taken(self.inbound) {
            return Err(CaptureError::CapturePorts {
                outbound: self.outbound,
                inbound: self.inbound,
            });
        }
        Ok(())
    }

    /// Which of the proxy's own ports `port` is, if any.
    fn role(self, port: u16) -> Option<&'static str> {
        match port {
            p if p == ADMIN_PORT => Some("admin"),
            p if p == READINESS_PORT => Some("readiness"),
            p if p == STATS_PORT => Some("stats"),
            p if p == self.outbound => Some("outbound capture"),
            p if p == self.inbound => Some("inbound capture"),
            _ => None,
        }
    }
}

/// The ports the proxy itself serves on (admin, readiness, stats): never redirected inbound,
/// never capture ports.
const SERVING_PORTS: [u16; 3] = [ADMIN_PORT, READINESS_PORT, STATS_PORT];

/// Which inbound destination ports are redirected to the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundPorts {
    /// Every port but the excluded ones (the policy lists none).
    All,
    /// Only these ports (the policy's `inboundPorts`), and always the two capture ports.
    Only(BTreeSet<u16>),
}

/// What a pod's proxy intercepts: built by [`Capture::new`], rendered by
/// [`rules::render`](crate::rules::render).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    proxy: ProxyUser,
    ports: CapturePorts,
    inbound: InboundPorts,
    exclude_inbound_ports: BTreeSet<u16>,
    exclude_outbound_ports: BTreeSet<u16>,
    exclude_outbound_cidrs: BTreeSet<Cidr>,
}

/// Why an interception cannot be programmed; each names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// A port outside 1-65535.
    #[error("{field}: {value} is not a port (1-65535)")]
    Port {
        /// The field's path, e.g. `spec.proxy.interception.inboundPorts[0]`.
        field: String,
        /// The value given.
        value: i32,
    },
    /// A destination network that does not parse.
    #[error("{field}: {value:?} is not a CIDR: {reason}")]
    Cidr {
        /// The field's path.
        field: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A port the proxy needs for itself, used where it must not be.
    #[error("{field}: {port} is the proxy's {role} port; {why}")]
    ProxyPort {
        /// The field's path.
        field: String,
        /// The port.
        port: u16,
        /// Which of the proxy's ports it is.
        role: &'static str,
        /// Why it may not be used here.
        why: &'static str,
    },
    /// Capture ports that are not two distinct ports of their own.
    #[error(
        "capture ports: outbound {outbound} and inbound {inbound} must be two different \
         ports, neither 0 nor the proxy's admin ({ADMIN_PORT}), readiness ({READINESS_PORT}) or \
         stats ({STATS_PORT}) port"
    )]
    CapturePorts {
        /// The outbound capture port.
        outbound: u16,
        /// The inbound capture port.
        inbound: u16,
    },
    /// A proxy running as root: every root process's traffic would bypass it.
    #[error("proxy uid 0: the proxy must not run as root, or every root process would bypass it")]
    RootProxy,
}

const FIELD: &str = "spec.proxy.interception";

impl Capture {
    /// The capture for a proxy running as `proxy`, listening on `ports`, under a policy's
    /// `interception`. The proxy's admin, readiness and stats ports are always excluded inbound.
    /// Errors name the field: a port out of range, a malformed CIDR, a proxy port listed
    /// among `inboundPorts`, a capture port among `excludeInboundPorts`.
    pub fn new(
        proxy: ProxyUser,
        ports: CapturePorts,
        interception: &Interception,
    ) -> Result<Capture, CaptureError> {
        if proxy.uid == 0 {
            return Err(CaptureError::RootProxy);
        }
        ports.check()?;
        let listed = port_set(
            "inboundPorts",
            &interception.inbound_ports,
            |field, port| match ports.role(port) {
                Some(role) => Err(CaptureError::ProxyPort {
                    field,
                    port,
                    role,
                    why: "the proxy's own ports are never redirected",
                }),
                None => Ok(()),
            },
        )?;
        let mut exclude_inbound_ports = port_set(
            "excludeInboundPorts",
            &interception.exclude_inbound_ports,
            |field, port| match ports.role(port) {
                Some(role) if port == ports.outbound || port == ports.inbound => {
                    Err(CaptureError::ProxyPort {
                        field,
                        port,
                        role,
                        why: "connections to the capture ports always go to the inbound listener, which refuses them",
                    })
                }
                _ => Ok(()),
            },
        )?;
        exclude_inbound_ports.extend(SERVING_PORTS);
        let exclude_outbound_ports = port_set(
            "excludeOutboundPorts",
            &interception.exclude_outbound_ports,
            |_, _| Ok(()),
        )?;
        Ok(Capture {
            proxy,
            ports,
            inbound: if listed.is_empty() {
                InboundPorts::All
            } else {
                InboundPorts::Only(listed)
            },
            exclude_inbound_ports,
            exclude_outbound_ports,
            exclude_outbound_cidrs: cidrs(&interception.exclude_outbound_cidrs)?,
        })
    }

    /// The proxy's user and group.
    pub fn proxy(&self) -> ProxyUser {
        self.proxy
    }

    /// The capture listeners' ports.
    pub fn ports(&self) -> CapturePorts {
        self.ports
    }

    /// Which inbound ports are redirected (before exclusions).
    pub fn inbound(&self) -> &InboundPorts {
        &self.inbound
    }

    /// Inbound ports never redirected: the policy's and the proxy's admin and readiness ports.
    pub fn exclude_inbound_ports(&self) -> &BTreeSet<u16> {
        &self.exclude_inbound_ports
    }

    /// Outbound destination ports never redirected.
    pub fn exclude_outbound_ports(&self) -> &BTreeSet<u16> {
        &self.exclude_outbound_ports
    }

    /// Outbound destination networks of one family never redirected.
    pub fn exclude_outbound_cidrs(&self, family: Family) -> impl Iterator<Item = &Cidr> {
        self.exclude_outbound_cidrs
            .iter()
            .filter(move |c| c.family() == family)
    }
}

/// The ports of one field as a set, each checked by `check` with its field path.
fn port_set(
    name: &str,
    values: &[i32],
    check: impl Fn(String, u16) -> Result<(), CaptureError>,
) -> Result<BTreeSet<u16>, CaptureError> {
    values
        .iter()
        .enumerate()
        .map(|(n, &value)| {
            let field = format!("{FIELD}.{name}[{n}]");
            let port = u16::try_from(value)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| CaptureError::Port {
                    field: field.clone(),
                    value,
                })?;
            check(field, port)?;
            Ok(port)
        })
        .collect()
}

fn cidrs(values: &[String]) -> Result<BTreeSet<Cidr>, CaptureError> {
    values
        .iter()
        .enumerate()
        .map(|(n, value)| {
            value.parse().map_err(|reason| CaptureError::Cidr {
                field: format!("{FIELD}.excludeOutboundCidrs[{n}]"),
                value: value.clone(),
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY: ProxyUser = ProxyUser {
        uid: 1337,
        gid: 1338,
    };

    fn capture(i: Interception) -> Result<Capture, CaptureError> {
        Capture::new(PROXY, CapturePorts::default(), &i)
    }

    #[test]
    fn a_default_policy_captures_every_inbound_port_but_the_proxys_own() {
        let c = capture(Interception::default()).expect("valid");
        assert_eq!(c.inbound(), &InboundPorts::All);
        assert_eq!(
            c.exclude_inbound_ports(),
            &BTreeSet::from([ADMIN_PORT, READINESS_PORT, STATS_PORT])
        );
        assert!(c.exclude_outbound_ports().is_empty());
        assert_eq!(c.exclude_outbound_cidrs(Family::Ipv4).count(), 0);
        assert_eq!(c.ports(), CapturePorts::default());
        assert_eq!(c.proxy(), PROXY);
    }

    #[test]
    fn listed_inbound_ports_and_exclusions_are_kept_as_sets() {
        let c = capture(Interception {
            inbound_ports: vec![9090, 8080, 8080],
            exclude_inbound_ports: vec![22, ADMIN_PORT.into()],
            exclude_outbound_ports: vec![5432, 3306],
            exclude_outbound_cidrs: vec!["10.96.0.0/12".into(), "fd00::/8".into()],
            ..Interception::default()
        })
        .expect("valid");
        assert_eq!(
            c.inbound(),
            &InboundPorts::Only(BTreeSet::from([8080, 9090]))
        );
        assert_eq!(
            c.exclude_inbound_ports(),
            &BTreeSet::from([22, ADMIN_PORT, READINESS_PORT, STATS_PORT])
        );
        assert_eq!(c.exclude_outbound_ports(), &BTreeSet::from([3306, 5432]));
        let v4: Vec<_> = c
            .exclude_outbound_cidrs(Family::Ipv4)
            .map(|c| c.to_string())
            .collect();
        let v6: Vec<_> = c
            .exclude_outbound_cidrs(Family::Ipv6)
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            (v4, v6),
            (vec!["10.96.0.0/12".to_owned()], vec!["fd00::/8".to_owned()])
        );
    }

    #[test]
    fn a_bad_cidr_names_its_field() {
        let err = capture(Interception {
            exclude_outbound_cidrs: vec!["10.0.0.0/8".into(), "cluster/8".into()],
            ..Interception::default()
        })
        .expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "spec.proxy.interception.excludeOutboundCidrs[1]: \"cluster/8\" is not a CIDR: \
             \"cluster\" is not an IPv4 or IPv6 address"
        );
    }

    #[test]
    fn a_port_out_of_range_names_its_field() {
        for (i, field) in [
            (
                Interception {
                    inbound_ports: vec![0],
                    ..Default::default()
                },
                "inboundPorts[0]",
            ),
            (
                Interception {
                    exclude_inbound_ports: vec![80, 70000],
                    ..Default::default()
                },
                "excludeInboundPorts[1]",
            ),
            (
                Interception {
                    exclude_outbound_ports: vec![-1],
                    ..Default::default()
                },
                "excludeOutboundPorts[0]",
            ),
        ] {
            let err = capture(i).expect_err(field).to_string();
            assert!(err.starts_with(&format!("{FIELD}.{field}: ")), "{err}");
            assert!(err.contains("is not a port"), "{err}");
        }
    }

    #[test]
    fn proxy_ports_cannot_be_listed_inbound_nor_capture_ports_excluded() {
        let listed = capture(Interception {
            inbound_ports: vec![8080, READINESS_PORT.into()],
            ..Interception::default()
        })
        .expect_err("readiness listed");
        assert!(
            listed
                .to_string()
                .contains("inboundPorts[1]: 15021 is the proxy's readiness port")
        );
        let excluded = capture(Interception {
            exclude_inbound_ports: vec![INBOUND_CAPTURE_PORT.into()],
            ..Interception::default()
        })
        .expect_err("capture port excluded");
        assert!(
            excluded
                .to_string()
                .contains("15006 is the proxy's inbound capture port")
        );
    }

    #[test]
    fn capture_ports_and_the_proxy_user_are_checked() {
        let clash = CapturePorts {
            outbound: 15001,
            inbound: 15001,
        };
        let admin = CapturePorts {
            outbound: ADMIN_PORT,
            inbound: 15006,
        };
        for ports in [clash, admin] {
            let err = Capture::new(PROXY, ports, &Interception::default());
            assert!(
                matches!(err, Err(CaptureError::CapturePorts { .. })),
                "{ports:?}"
            );
        }
        let root = ProxyUser { uid: 0, gid: 0 };
        let err = Capture::new(root, CapturePorts::default(), &Interception::default());
        assert_eq!(err, Err(CaptureError::RootProxy));
    }
}
