//! What the stream loop asks of a protocol flavour's state machine ([`crate::sotw`],
//! [`crate::delta`]): requests and snapshots in, responses out, no I/O. What both flavours
//! work out the same way from their per-type state is defined once here.

use envoy_types::pb::envoy::config::core::v3::Node;

use crate::{
    by_type::ByType,
    grpc::Checked,
    per_type::PerType,
    snapshot::{PUSH_ORDER, Snapshot},
    sync::{Mode, TypeSync},
};

/// The types whose status may have changed since it was last recorded. A type's status
/// changes only when a request of the type is taken in or a response of it is built, so a
/// stream records those alone, not every type after every request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Touched(u8);

impl Touched {
    /// Every served type.
    const ALL: Touched = Touched((1 << PUSH_ORDER.len()) - 1);

    fn bit(type_url: &str) -> u8 {
        PUSH_ORDER
            .iter()
            .position(|t| *t == type_url)
            .map_or(0, |i| 1 << i)
    }

    /// Marks `type_url`; a type not served has no status and is not marked.
    pub(crate) fn add(&mut self, type_url: &str) {
        self.0 |= Self::bit(type_url);
    }

    fn has(self, type_url: &str) -> bool {
        self.0 & Self::bit(type_url) != 0
    }

    /// Whether no type is marked.
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One protocol flavour's state machine, so both share the stream loop.
pub(crate) trait Machine: Default + Send + 'static {
    type Req: Checked + Send + 'static;
    type Resp: prost::Message + Send + 'static;
    /// The flavour's state of one type.
    type State: PerType;
    const MODE: Mode;

    /// The node a request names; the first request of a stream must.
    fn node(req: &Self::Req) -> Option<&Node>;

    /// How many resource names a request carries.
    fn names_in(req: &Self::Req) -> usize;

    /// The type URL a request names.
    fn type_of(req: &Self::Req) -> &str;

    /// The most resource names the proxy subscribed to of any one type.
    fn most_subscribed(&self) -> usize {
        self.types()
            .iter()
            .map(|(_, s)| s.subscribed())
            .max()
            .unwrap_or(0)
    }

    /// Every type's state.
    fn types(&self) -> &ByType<Self::State>;

    /// Takes in one request (an ACK, a NACK, a new or changed subscription); true when it
    /// may need an answer, which [`Machine::respond`] then builds. Apart, so a stream waiting
    /// for room to answer holds this state, not the request.
    fn take_request(&mut self, req: &Self::Req, snapshot: &Snapshot) -> bool;

    /// The responses owed after a new snapshot or a request taken in.
    fn respond(&mut self, snapshot: &Snapshot) -> Vec<Self::Resp>;

    /// A response's type URL, resource count and version, for the log.
    fn describe(resp: &Self::Resp) -> (&str, usize, &str);

    /// About the most bytes [`Machine::respond`] sends for `snapshot`: the whole set of each
    /// type whose set or subscription changed since it was last answered, nothing for the
    /// others. What a stream reserves of the response budget before building.
    fn answer_bytes(&self, snapshot: &Snapshot) -> usize {
        snapshot.changed_bytes(
            self.types()
                .iter()
                .map(|(t, s)| (t, s.wanted().answered_from())),
        )
    }

    /// The status of every type the proxy asked for.
    fn status(&self) -> Vec<(&'static str, TypeSync)> {
        self.status_of(Touched::ALL)
    }

    /// The status of the types `touched` marks, of those the proxy asked for.
    fn status_of(&self, touched: Touched) -> Vec<(&'static str, TypeSync)> {
        self.types()
            .iter()
            .filter(|(t, _)| touched.has(t))
            .map(|(t, s)| (t, s.answers().status(s.sent())))
            .collect()
    }

    /// A request taken in and answered at once, as the state machines' tests drive them.
    /// Checks that no type changed status but the request's and those of the responses,
    /// which is all a stream records ([`Touched`]).
    #[cfg(test)]
    fn on_request(&mut self, req: &Self::Req, snapshot: &Snapshot) -> Vec<Self::Resp> {
        let before = self.status();
        let out = if self.take_request(req, snapshot) {
            self.respond(snapshot)
        } else {
            Vec::new()
        };
        let mut touched = Touched::default();
        touched.add(Self::type_of(req));
        for r in &out {
            touched.add(Self::describe(r).0);
        }
        let untouched = |status: Vec<(&'static str, TypeSync)>| {
            status
                .into_iter()
                .filter(|(t, _)| !touched.has(t))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            untouched(self.status()),
            untouched(before),
            "a type neither asked for nor sent changed status"
        );
        out
    }

    /// Responds to `snapshot`, checking that the response budget estimate made beforehand
    /// covered what was sent; returns the responses and the estimate.
    #[cfg(test)]
    fn respond_within_estimate(&mut self, snapshot: &Snapshot) -> (Vec<Self::Resp>, usize) {
        let estimate = self.answer_bytes(snapshot);
        let out = self.respond(snapshot);
        let sent: usize = out.iter().map(prost::Message::encoded_len).sum();
        assert!(
            sent > 0 && sent <= estimate,
            "{sent} bytes sent, {estimate} estimated"
        );
        (out, estimate)
    }
}

/// The steps of [`Machine`] as inherent methods of a flavour's stream, so code outside this
/// crate (the fuzz targets of `remora-fuzz`) drives a state machine the way the stream loop
/// does; the trait itself stays this crate's.
macro_rules! public_steps {
    ($stream:ty, $req:ty, $resp:ty) => {
        impl $stream {
            /// Takes in one request; true when it may need an answer, which
            /// [`Self::respond`] then builds.
            pub fn take_request(&mut self, req: &$req, snapshot: &Snapshot) -> bool {
                Machine::take_request(self, req, snapshot)
            }

            /// The responses owed after a new snapshot or a request taken in.
            pub fn respond(&mut self, snapshot: &Snapshot) -> Vec<$resp> {
                Machine::respond(self, snapshot)
            }

            /// About the most bytes [`Self::respond`] sends for `snapshot`, which the stream
            /// reserves of the response budget before building.
            pub fn answer_bytes(&self, snapshot: &Snapshot) -> usize {
                Machine::answer_bytes(self, snapshot)
            }

            /// The most resource names subscribed to of any one type, which the stream holds
            /// to its limit.
            pub fn most_subscribed(&self) -> usize {
                Machine::most_subscribed(self)
            }

            /// The status of every type the proxy asked for.
            pub fn status(&self) -> Vec<(&'static str, TypeSync)> {
                Machine::status(self)
            }
        }
    };
}

public_steps!(
    crate::sotw::SotwStream,
    crate::sotw::SotwRequest,
    envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse
);
public_steps!(
    crate::delta::DeltaStream,
    envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest,
    envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse
);
