//! What both state machines keep alike for each type, and work out from it the same way:
//! the part of the snapshot the proxy wants, how the proxy answered what it was sent, and
//! whether removals must wait.

use std::collections::BTreeSet;

use envoy_types::pb::google::rpc::Status as RpcStatus;

use crate::{
    by_type::ByType,
    snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources, Snapshot},
    sync::{Nack, TypeSync},
};

/// A state machine's state of one type, as the shared logic reads it.
pub(crate) trait PerType {
    /// Brings the part wanted up to `set`, the snapshot's set of this type.
    fn refresh(&mut self, set: &Resources);
    fn wanted(&self) -> &Wanted;
    fn answers(&self) -> &Answers;
    /// The version last sent (or, after a reconnect, the one the proxy said it holds).
    fn sent(&self) -> Option<String>;
    /// How many resource names the proxy subscribed to (none for a wildcard).
    fn subscribed(&self) -> usize;
}

/// The snapshot's set of a type and the part of it wanted, kept until either the set or the
/// subscription changes, so an ACK costs no recomputation.
#[derive(Debug, Default)]
pub(crate) struct Wanted(Option<(Resources, Resources)>);

impl Wanted {
    /// Picks the part of `set` wanted, unless `set` is the one it was picked from.
    /// Taken by reference and cloned only when it differs: a clone touches reference
    /// counts that every stream of a class shares.
    pub(crate) fn refresh(&mut self, set: &Resources, pick: impl FnOnce(&Resources) -> Resources) {
        if self.0.as_ref().is_none_or(|(from, _)| from != set) {
            let wanted = pick(set);
            self.0 = Some((set.clone(), wanted));
        }
    }

    /// The part wanted of the set last looked at; `None` since the subscription changed.
    pub(crate) fn get(&self) -> Option<&Resources> {
        self.0.as_ref().map(|(_, w)| w)
    }

    /// The snapshot's set the part wanted was picked from.
    pub(crate) fn answered_from(&self) -> Option<&Resources> {
        self.0.as_ref().map(|(from, _)| from)
    }

    /// Forgets the part wanted, as the subscription changed.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}

/// The resources a response carried, kept only until the proxy answers it.
#[derive(Debug)]
pub(crate) enum Carried {
    /// The whole set of its version.
    All,
    /// These, the others of the set unchanged since the response before.
    Names(Vec<String>),
}

/// What the proxy made of the responses of one type.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    pub(crate) acked: Option<String>,
    pub(crate) nack: Option<Nack>,
    /// Resources sent on this stream so far.
    pub(crate) resources_sent: u64,
    /// Resources of a refused response not taken since: the proxy still runs what it had
    /// of them. A later response that leaves them out (they did not change again) is ACKed
    /// all the same, so an ACKed version does not say the proxy runs all of its set.
    refused: BTreeSet<String>,
}

impl Answers {
    /// Takes in the proxy's answer to the response that brought version `sent`, carrying
    /// `carried`: a NACK when it carries `error`, else an ACK of version `acked`. `set` is
    /// what the proxy was last sent. A NACK stays in force over later ACKs while a resource
    /// it refused is still in the set and not taken since, with the version the proxy then
    /// runs in part.
    pub(crate) fn answer(
        &mut self,
        error: Option<&RpcStatus>,
        sent: &str,
        carried: Carried,
        set: &Resources,
        acked: &str,
    ) {
        match error {
            Some(error) => {
                self.nack = Some(Nack {
                    version: sent.to_owned(),
                    message: error.message.clone(),
                });
                match carried {
                    Carried::All => self.refused.extend(set.iter().map(|(n, _)| n.clone())),
                    Carried::Names(names) => self.refused.extend(names),
                }
            }
            None => {
                self.acked = Some(acked.to_owned());
                match carried {
                    Carried::All => self.refused.clear(),
                    Carried::Names(names) => {
                        for name in &names {
                            self.refused.remove(name);
                        }
                    }
                }
                self.refused.retain(|n| set.contains(n));
                self.nack = match self.nack.take() {
                    Some(nack) if !self.refused.is_empty() => Some(Nack {
                        version: acked.to_owned(),
                        ..nack
                    }),
                    _ => None,
                };
            }
        }
    }

    /// Whether the proxy runs all of the version it last ACKed.
    fn runs_all_acked(&self) -> bool {
        self.refused.is_empty()
    }

    /// The status of the type, with the version last sent.
    pub(crate) fn status(&self, sent: Option<String>) -> TypeSync {
        TypeSync {
            sent,
            acked: self.acked.clone(),
            nack: self.nack.clone(),
            resources_sent: self.resources_sent,
        }
    }
}

/// Brings every type's part wanted up to `snapshot`, and tells whether removals wait.
pub(crate) fn refresh<S: PerType>(types: &mut ByType<S>, snapshot: &Snapshot) -> Removals {
    for (type_url, state) in types.iter_mut() {
        state.refresh(snapshot.set(type_url));
    }
    Removals {
        routes_settled: [LISTENER, ROUTE].iter().all(|t| {
            types.get(t).is_none_or(|s| {
                let answers = s.answers();
                answers.runs_all_acked()
                    && s.wanted()
                        .get()
                        .is_none_or(|w| answers.acked.as_deref() == Some(w.version()))
            })
        }),
    }
}

/// Whether a cluster (and its endpoints) that left the snapshot is kept for now: until the
/// proxy has ACKed the listeners and routes of that snapshot, its old routes may still send
/// traffic there, and removing it first would turn that traffic into errors. A listener or
/// route config it refused keeps its old routes for as long, however later ACKs went.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Removals {
    routes_settled: bool,
}

impl Removals {
    /// True when what left the snapshot of `type_url` is kept for now.
    pub(crate) fn wait(self, type_url: &str) -> bool {
        !self.routes_settled && (type_url == CLUSTER || type_url == ENDPOINT)
    }
}
