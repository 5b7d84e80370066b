//! When a stream is told to end while its proxy is still there: the server stops, or the
//! stream reaches its age.

use std::{pin::Pin, time::Duration};

use tokio::sync::watch;

/// Why a stream is told to end while its proxy is still there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Told {
    /// The server stops.
    Stop,
    /// The stream reached its age.
    Aged,
}

/// Waits for either end over the stream's whole life. One future, registered with the
/// shutdown signal and the timer once: built anew at every turn of the stream's loop, it
/// registered and withdrew a waiter twice per response and per request, on every stream.
pub(super) struct Ends {
    waiting: Pin<Box<dyn Future<Output = Told> + Send>>,
    told: Option<Told>,
}

impl Ends {
    /// Ends when `shutdown` turns true (or its sender goes), or after `lifetime`.
    pub(super) fn new(mut shutdown: watch::Receiver<bool>, lifetime: Duration) -> Ends {
        let waiting = async move {
            tokio::select! {
                // A dropped sender is a stop too.
                _ = shutdown.wait_for(|stop| *stop) => Told::Stop,
                () = tokio::time::sleep(lifetime) => Told::Aged,
            }
        };
        Ends {
            waiting: Box::pin(waiting),
            told: None,
        }
    }

    /// Completes once the stream is told to end, and at once on every call after that.
    /// Cancel-safe.
    pub(super) async fn told(&mut self) -> Told {
        if let Some(told) = self.told {
            return told;
        }
        let told = self.waiting.as_mut().await;
        self.told = Some(told);
        told
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `told` completes with without waiting, if it does.
    async fn now(ends: &mut Ends) -> Option<Told> {
        // A timeout polls the future before it looks at its deadline.
        tokio::time::timeout(Duration::ZERO, ends.told()).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn the_age_ends_a_stream_and_stays_told() {
        let (_stop, shutdown) = watch::channel(false);
        let mut ends = Ends::new(shutdown, Duration::from_secs(60));
        assert_eq!(now(&mut ends).await, None);
        assert_eq!(ends.told().await, Told::Aged);
        assert_eq!(now(&mut ends).await, Some(Told::Aged));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_or_a_dropped_sender_ends_a_stream() {
        let (stop, shutdown) = watch::channel(false);
        let mut ends = Ends::new(shutdown, Duration::from_secs(60));
        assert_eq!(now(&mut ends).await, None);
        stop.send_replace(true);
        assert_eq!(now(&mut ends).await, Some(Told::Stop));
        assert_eq!(now(&mut ends).await, Some(Told::Stop));

        let (stop, shutdown) = watch::channel(false);
        let mut ends = Ends::new(shutdown, Duration::from_secs(60));
        assert_eq!(now(&mut ends).await, None);
        drop(stop);
        assert_eq!(now(&mut ends).await, Some(Told::Stop));
    }
}
