//! A server-wide budget of response bytes built or encoded and not yet written.
//!
//! During a mass initial sync every stream builds its proxy's whole config at once, and a
//! proxy that reads slower than the server writes leaves its responses in memory: with
//! 10,000 large configs that passed 3 GiB (BENCHMARKS.md §3). A stream therefore reserves
//! bytes from one semaphore before it builds its responses, and each encoded frame carries
//! its share of the reservation until the last reference to its bytes is dropped, which is
//! when hyper has written it. Streams waiting for the budget read no snapshot meanwhile, so
//! they go on to build from the newest one.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::grpc;

/// 256 MiB: at most a few hundred large configs on their way at once, a fraction of what
/// 10,000 connected proxies hold anyway, and enough that a sync of modest configs never
/// waits for it.
pub const DEFAULT_RESPONSE_BUDGET: usize = 256 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ResponseBudget {
    semaphore: Arc<Semaphore>,
    limit: u32,
}

impl ResponseBudget {
    /// A budget of `bytes`, at least one byte and at most what one reservation can count.
    pub fn new(bytes: usize) -> ResponseBudget {
        let limit = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        ResponseBudget {
            semaphore: Arc::new(Semaphore::new(limit as usize)),
            limit,
        }
    }

    /// The bytes a reservation of `bytes` takes: all of them, or the whole budget for more
    /// than it holds, so an oversized response still goes out, alone.
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes).unwrap_or(u32::MAX).min(self.limit)
    }

    /// Waits until `bytes` (capped at the budget) are free. Waiters are served in order, so
    /// a large reservation is not starved by small ones.
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation, Status> {
        let permit = self
            .semaphore
            .clone()
            .acquire_many_owned(self.permits(bytes))
            .await
            .map_err(|_| Status::unavailable("the response budget is closed"))?;
        Ok(Reservation { permit })
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

impl Default for ResponseBudget {
    fn default() -> ResponseBudget {
        ResponseBudget::new(DEFAULT_RESPONSE_BUDGET)
    }
}

/// Bytes taken from a [`ResponseBudget`], returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.permit.num_permits()
    }

    /// True when these bytes cover `bytes`, or the whole budget does not.
    pub fn covers(&self, budget: &ResponseBudget, bytes: usize) -> bool {
        self.bytes() >= budget.permits(bytes) as usize
    }

    /// Frames `message`, moving its size (or what is left of this reservation) into the
    /// frame: those bytes come back once the frame's last reference is dropped.
    pub fn frame(&mut self, message: &impl Message) -> Result<Bytes, Status> {
        let frame = grpc::frame(message)?;
        let share = frame.len().min(self.bytes());
        let permit = self.permit.split(share);
        Ok(match permit {
            Some(permit) => Bytes::from_owner(Budgeted {
                frame,
                _permit: permit,
            }),
            None => Bytes::from(frame),
        })
    }
}

/// A frame with the budget its bytes hold.
struct Budgeted {
    frame: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;

    use super::*;

    fn response(bytes: usize) -> DiscoveryResponse {
        DiscoveryResponse {
            resources: vec![Any {
                type_url: String::new(),
                value: vec![7; bytes],
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_frame_holds_its_bytes_until_its_last_reference_is_dropped() {
        let budget = ResponseBudget::new(10_000);
        let mut reservation = budget.reserve(4_000).await.expect("open");
        assert_eq!(budget.available(), 6_000);
        let frame = reservation.frame(&response(1_000)).expect("frames");
        let held = frame.len();
        assert!(held > 1_000);
        drop(reservation);
        assert_eq!(
            budget.available(),
            10_000 - held,
            "the unused rest came back"
        );
        let slice = frame.slice(10..20);
        drop(frame);
        assert_eq!(budget.available(), 10_000 - held, "a slice keeps the frame");
        drop(slice);
        assert_eq!(budget.available(), 10_000);
    }

    #[tokio::test]
    async fn a_response_larger_than_the_budget_takes_all_of_it_and_goes_alone() {
        let budget = ResponseBudget::new(1_000);
        let mut reservation = budget.reserve(50_000).await.expect("open");
        assert_eq!(reservation.bytes(), 1_000);
        assert!(reservation.covers(&budget, 50_000));
        assert_eq!(budget.available(), 0);
        assert!(
            budget.semaphore.clone().try_acquire_owned().is_err(),
            "nothing else meanwhile"
        );
        let frame = reservation.frame(&response(5_000)).expect("frames");
        assert!(frame.len() > 5_000);
        assert_eq!(reservation.bytes(), 0);
        let unbudgeted = reservation.frame(&response(10)).expect("frames");
        assert!(!unbudgeted.is_empty());
        drop(frame);
        assert_eq!(budget.available(), 1_000);
    }

    #[tokio::test]
    async fn a_reservation_too_small_for_what_was_built_says_so() {
        let budget = ResponseBudget::new(1_000);
        let reservation = budget.reserve(100).await.expect("open");
        assert!(reservation.covers(&budget, 100));
        assert!(!reservation.covers(&budget, 101));
        assert!(!reservation.covers(&budget, 5_000));
    }

    #[test]
    fn a_budget_is_at_least_a_byte_and_at_most_what_a_permit_counts() {
        assert_eq!(ResponseBudget::new(0).available(), 1);
        assert_eq!(
            ResponseBudget::new(usize::MAX).available(),
            u32::MAX as usize
        );
    }
}
