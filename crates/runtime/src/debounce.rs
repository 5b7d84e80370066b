//! Bursts of cluster events (a rollout touches hundreds of pods) become one model update: a
//! batch closes when no event came for `window`, or `max_delay` after its first event, so a
//! steady stream of events cannot hold config back forever.

use std::time::Duration;

use tokio::{sync::mpsc, time::Instant};

/// How events are grouped into batches.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// A batch closes once no event came for this long (default 100 ms).
    pub window: Duration,
    /// A batch closes at the latest this long after its first event (default 1 s).
    pub max_delay: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            window: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl Debounce {
    /// Waits for the next batch; `None` once the channel is closed and drained.
    pub async fn next_batch<T>(&self, rx: &mut mpsc::Receiver<Vec<T>>) -> Option<Vec<T>> {
        let mut batch = rx.recv().await?;
        let deadline = Instant::now() + self.max_delay;
        loop {
            let quiet = Instant::now() + self.window;
            match tokio::time::timeout_at(quiet.min(deadline), rx.recv()).await {
                Ok(Some(more)) => {
                    batch.extend(more);
                    if Instant::now() >= deadline {
                        return Some(batch);
                    }
                }
                // Closed: deliver what we have; the next call returns None.
                Ok(None) | Err(_) => return Some(batch),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Debounce = Debounce {
        window: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
    };

    #[tokio::test(start_paused = true)]
    async fn a_burst_becomes_one_batch_after_the_quiet_window() {
        let (tx, mut rx) = mpsc::channel(64);
        let start = Instant::now();
        tokio::spawn(async move {
            for i in 0..5 {
                tx.send(vec![i]).await.expect("open");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Keep the channel open past the window.
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let batch = D.next_batch(&mut rx).await.expect("batch");
        assert_eq!(batch, [0, 1, 2, 3, 4]);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(400),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_is_cut_at_the_maximum_delay() {
        let (tx, mut rx) = mpsc::channel(64);
        let start = Instant::now();
        tokio::spawn(async move {
            for i in 0..100 {
                if tx.send(vec![i]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let first = D.next_batch(&mut rx).await.expect("batch");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_millis(1100),
            "{took:?}"
        );
        assert!(first.len() >= 19 && first.len() <= 21, "{}", first.len());
        let second = D.next_batch(&mut rx).await.expect("batch");
        assert_eq!(
            second[0],
            first[first.len() - 1] + 1,
            "nothing lost between batches"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_channel_ends_after_the_last_batch() {
        let (tx, mut rx) = mpsc::channel(4);
        tx.send(vec![1]).await.expect("open");
        drop(tx);
        assert_eq!(D.next_batch(&mut rx).await, Some(vec![1]));
        assert_eq!(D.next_batch(&mut rx).await, None);
    }
}
