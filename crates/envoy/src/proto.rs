//! Small protobuf building blocks every kind of resource uses.

use std::net::IpAddr;

use envoy_types::pb::{
    envoy::{
        config::core::v3::{
            AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
            config_source::ConfigSourceSpecifier, socket_address,
        },
        r#type::v3::{FractionalPercent, fractional_percent::DenominatorType},
    },
    google::protobuf::{Any, Duration, UInt32Value},
};
use prost::{Message, Name, encoding};
use xxhash_rust::xxh3::xxh3_64;

use crate::EnvoyResource;

/// Encodes a resource once and derives its `Any` and version from the same bytes.
pub(crate) fn packed<M: Message>(name: &str, type_url: &'static str, msg: &M) -> EnvoyResource {
    packed_bytes(name, type_url, msg.encode_to_vec())
}

/// A resource already encoded, with its `Any` and version.
pub(crate) fn packed_bytes(name: &str, type_url: &'static str, value: Vec<u8>) -> EnvoyResource {
    EnvoyResource {
        name: name.to_owned(),
        type_url,
        version: format!("{:016x}", xxh3_64(&value)),
        any: Any {
            type_url: type_url.to_owned(),
            value,
        },
    }
}

/// The encoded size of a message field of `tag` whose message is `len` bytes long.
pub(crate) fn field_len(tag: u32, len: usize) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(len as u64) + len
}

/// Writes an encoded message as a message field of `tag`: what encoding the message in place
/// would write.
pub(crate) fn put_field(tag: u32, message: &[u8], out: &mut Vec<u8>) {
    encoding::encode_key(tag, encoding::WireType::LengthDelimited, out);
    encoding::encode_varint(message.len() as u64, out);
    out.extend_from_slice(message);
}

/// Packs a message nested in a resource (a filter config, protocol options).
pub(crate) fn any<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// The largest duration protobuf allows (10,000 years); Envoy rejects anything longer.
const MAX_SECONDS: u64 = 315_576_000_000;

pub(crate) fn duration(d: std::time::Duration) -> Duration {
    let (seconds, nanos) = if d.as_secs() >= MAX_SECONDS {
        (MAX_SECONDS, 0)
    } else {
        (d.as_secs(), d.subsec_nanos())
    };
    Duration {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos).unwrap_or(0),
    }
}

pub(crate) fn u32_value(value: u32) -> UInt32Value {
    UInt32Value { value }
}

/// A share of requests out of 100, as fault injection and mirroring express it.
pub(crate) fn percent(numerator: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: numerator.min(100),
        denominator: DenominatorType::Hundred as i32,
    }
}

/// A TCP socket address, as listeners and endpoints carry it.
pub(crate) fn socket_address(
    ip: IpAddr,
    port: u16,
) -> envoy_types::pb::envoy::config::core::v3::Address {
    envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// Everything a proxy learns, it learns over the one ADS stream its bootstrap opens.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// A stat prefix from a resource name: the model's names carry `|` and `:`, which would make
/// stat names awkward to query, so anything but letters, digits, `.`, `-` and `_` becomes `_`.
pub(crate) fn stat_prefix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_nanos_and_saturate_at_the_protobuf_limit() {
        let d = duration(std::time::Duration::from_millis(1_500));
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
        let d = duration(std::time::Duration::from_secs(u64::MAX));
        assert_eq!((d.seconds, d.nanos), (315_576_000_000, 0));
    }

    #[test]
    fn stat_prefixes_lose_separators() {
        assert_eq!(
            stat_prefix("outbound|9080||reviews.bookinfo.svc.cluster.local"),
            "outbound_9080__reviews.bookinfo.svc.cluster.local"
        );
    }

    #[test]
    fn percentages_are_capped_at_one_hundred() {
        assert_eq!(percent(250).numerator, 100);
        assert_eq!(percent(7).numerator, 7);
    }
}
