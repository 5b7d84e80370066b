//! IP families and networks in CIDR notation.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// An IP family: the rules are rendered and applied once per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`iptables`).
    Ipv4,
    /// IPv6 (`ip6tables`).
    Ipv6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The loopback network of the family.
    pub fn loopback(self) -> Cidr {
        match self {
            Family::Ipv4 => Cidr {
                network: Ipv4Addr::new(127, 0, 0, 0).into(),
                prefix: 8,
            },
            Family::Ipv6 => Cidr {
                network: Ipv6Addr::LOCALHOST.into(),
                prefix: 128,
            },
        }
    }

    /// The family's name in messages: `IPv4` or `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }

    /// The prefix of the family's iptables commands: `iptables` or `ip6tables`.
    pub fn command_prefix(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A network in CIDR notation, IPv4 or IPv6, with the host bits cleared (`10.1.2.3/8` is
/// `10.0.0.0/8`, as iptables itself would store it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network's family.
    pub fn family(&self) -> Family {
        match self.network {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `ADDRESS/PREFIX`; the error says what is wrong, for a message that names the
    /// field.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or("no prefix length: write an address and a prefix, e.g. 10.0.0.0/8")?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length from 0 to {max}"))?;
        let network = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn host_bits_are_cleared_in_both_families() {
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("192.168.7.9/32").to_string(), "192.168.7.9/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("fd00::1:2/64").to_string(), "fd00::/64");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(cidr("fd00::1/128").to_string(), "fd00::1/128");
    }

    #[test]
    fn the_family_follows_the_address() {
        assert_eq!(cidr("10.0.0.0/8").family(), Family::Ipv4);
        assert_eq!(cidr("fd00::/8").family(), Family::Ipv6);
        assert_eq!(Family::Ipv4.loopback().to_string(), "127.0.0.0/8");
        assert_eq!(Family::Ipv6.loopback().to_string(), "::1/128");
    }

    #[test]
    fn malformed_networks_say_what_is_wrong() {
        for (bad, says) in [
            ("10.0.0.0", "no prefix length"),
            ("10.0.0.0/33", "from 0 to 32"),
            ("fd00::/129", "from 0 to 128"),
            ("cluster/8", "not an IPv4 or IPv6 address"),
            ("10.0.0.0/x", "not a prefix length"),
            ("10.0.0.0/-1", "not a prefix length"),
        ] {
            let err = bad.parse::<Cidr>().expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
