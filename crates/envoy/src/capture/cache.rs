//! Filter chains of capture listeners, encoded once each.

use envoy_types::pb::envoy::config::listener::v3::Listener;
use prost::{Message, encoding::message};
use remora_api::sidecar_policy::AccessLogFormat;
use remora_model::config::{self, Accepts, Direction};

use crate::{AccessLogSink, Options, encoded::Encoded, listener, proto};

/// `Listener.filter_chains`.
const FILTER_CHAINS: u32 = 3;

/// Filter chains encoded once each, by content. A capture listener has a chain per Service
/// port (thousands in a large mesh), each class of proxies has a listener of its own, and a
/// change to one Service changes one chain of each: the next encoding of a listener costs
/// the changed chain and a concatenation, not a translation of every chain.
pub type FilterChainCache = Encoded<ChainKey>;

/// What a chain's encoding depends on: its content, and the direction and access log of its
/// listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChainKey {
    chain: u64,
    direction: Direction,
    access_log: Option<AccessLogFormat>,
    sink: AccessLogSink,
}

impl FilterChainCache {
    /// The encoding of `l`, the same bytes as encoding the translated listener. Prost writes
    /// fields in tag order, so a listener is its name and address (fields 1 and 2), its
    /// filter chains (3), then every other field; a listener that is not a capture listener
    /// is encoded whole.
    pub(crate) fn listener(&mut self, l: &config::Listener, options: &Options) -> Vec<u8> {
        let Accepts::Captured {
            chains,
            unmatched,
            mtls,
            authz,
        } = &l.accepts
        else {
            return listener::listener(l, options).encode_to_vec();
        };
        let (mut rest, access_log) =
            super::shell(l, unmatched, mtls.as_ref(), authz.as_deref(), options);
        let head = Listener {
            name: std::mem::take(&mut rest.name),
            address: rest.address.take(),
            ..Default::default()
        };
        let guards = std::mem::take(&mut rest.filter_chains);
        let key = |hash| ChainKey {
            chain: hash,
            direction: l.direction,
            access_log: l.access_log,
            sink: options.access_log,
        };
        // Sized exactly first, as the bytes are kept for as long as proxies hold the listener.
        let mut len = head.encoded_len()
            + guards
                .iter()
                .map(|g| message::encoded_len(FILTER_CHAINS, g))
                .sum::<usize>()
            + rest.encoded_len();
        for c in super::served(chains, l.port, !guards.is_empty()) {
            let bytes = self.get_or_encode(key(c.hash), || {
                super::filter_chain(&c.value, &access_log, l.direction).encode_to_vec()
            });
            len += proto::field_len(FILTER_CHAINS, bytes.len());
        }
        let mut out = Vec::with_capacity(len);
        head.encode(&mut out).expect("a vector grows");
        for g in &guards {
            message::encode(FILTER_CHAINS, g, &mut out);
        }
        for c in super::served(chains, l.port, !guards.is_empty()) {
            proto::put_field(FILTER_CHAINS, self.get(&key(c.hash)), &mut out);
        }
        rest.encode(&mut out).expect("a vector grows");
        out
    }
}
