//! A stream's responses on their way to the wire: the queue between the stream's task and
//! the HTTP/2 response body that hyper polls.
//!
//! hyper takes the next piece of a body only when the peer's flow-control window has room,
//! and h2 keeps all of that piece until the peer grants more. A proxy that stops reading
//! would so hold whatever hyper last took, and everything queued behind it, for as long as
//! its connection lives: a keepalive does not end a connection whose peer still answers
//! pings. So the body hands hyper at most [`CHUNK`] bytes at a time (a frame longer than
//! that goes out in copies of its pieces), and the queue is shared with the stream's task,
//! which drops everything still in it when it cuts a stalled stream off ([`Outbox::cut`]):
//! those bytes, and their share of the response budget, come back at once. What a cut
//! stream still pins is the one piece h2 holds, until its connection ends.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header::CONTENT_TYPE};
use tokio::sync::mpsc;
use tonic::{Status, body::Body};

use crate::budget::Ledger;

/// The most bytes of a stream handed to hyper at once: a few HTTP/2 frames, far less than
/// the windows Envoy grants, so a reading proxy never waits on it.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The sending end, held by the stream's task.
#[derive(Debug)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Result<Bytes, Status>>,
    queue: Arc<Mutex<Queue>>,
}

/// What waits for hyper: the frames and the status queued, and the rest of the frame being
/// handed out in pieces.
#[derive(Debug)]
struct Queue {
    rx: mpsc::Receiver<Result<Bytes, Status>>,
    rest: Bytes,
    cut: bool,
}

/// A stream's outbox of `capacity` frames and the response that drains it; `guard` lives as
/// long as the response body does, which is until hyper is done with the stream.
pub(super) fn outbox<G: Send + Unpin + 'static>(
    capacity: usize,
    ledger: Arc<Ledger>,
    guard: G,
) -> (Outbox, Response<Body>) {
    let (tx, rx) = mpsc::channel(capacity);
    let queue = Arc::new(Mutex::new(Queue {
        rx,
        rest: Bytes::new(),
        cut: false,
    }));
    let body = Responses {
        queue: queue.clone(),
        ledger,
        ended: false,
        _guard: guard,
    };
    let mut response = Response::new(Body::new(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    (Outbox { tx, queue }, response)
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outbox {
    /// Queues a frame, or the status that ends the stream; false once the response is gone.
    pub(super) async fn send(&self, item: Result<Bytes, Status>) -> bool {
        self.tx.send(item).await.is_ok()
    }

    /// Completes once the response is gone: the proxy left or hyper is done with it.
    pub(super) async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Whether [`Outbox::cut`] was called.
    pub(super) fn is_cut(&self) -> bool {
        lock(&self.queue).cut
    }

    /// Drops everything queued that hyper has not taken and marks the stream cut, so the
    /// body, if hyper polls it again, resets the stream rather than ending it well. Returns
    /// the bytes dropped.
    pub(super) fn cut(&self) -> usize {
        let dropped = {
            let mut q = lock(&self.queue);
            q.cut = true;
            q.rx.close();
            let mut dropped = vec![std::mem::take(&mut q.rest)];
            while let Ok(item) = q.rx.try_recv() {
                dropped.extend(item.ok());
            }
            dropped
        };
        // Dropped out of the lock: each frame gives its budget back as it goes.
        dropped.iter().map(Bytes::len).sum()
    }
}

/// The response body: queued frames in pieces of at most [`CHUNK`] bytes, then the status.
struct Responses<G> {
    queue: Arc<Mutex<Queue>>,
    ledger: Arc<Ledger>,
    ended: bool,
    _guard: G,
}

impl<G> Responses<G> {
    /// The next piece of the stream, `None` once the status is to go.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Piece> {
        let mut q = lock(&self.queue);
        if q.cut {
            return Poll::Ready(Piece::Cut);
        }
        if q.rest.is_empty() {
            match ready!(q.rx.poll_recv(cx)) {
                Some(Ok(frame)) => q.rest = frame,
                Some(Err(status)) => return Poll::Ready(Piece::End(status)),
                None => return Poll::Ready(Piece::End(Status::ok(""))),
            }
        }
        let piece = if q.rest.len() <= CHUNK {
            std::mem::take(&mut q.rest)
        } else {
            let piece = Bytes::copy_from_slice(&q.rest[..CHUNK]);
            let rest = q.rest.slice(CHUNK..);
            q.rest = rest;
            piece
        };
        drop(q);
        self.ledger.progressed();
        Poll::Ready(Piece::Data(piece))
    }
}

enum Piece {
    Data(Bytes),
    End(Status),
    Cut,
}

impl<G: Unpin> http_body::Body for Responses<G> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let status = match ready!(this.poll_piece(cx)) {
            Piece::Data(piece) => return Poll::Ready(Some(Ok(http_body::Frame::data(piece)))),
            // An error from the body makes hyper reset the stream, which frees what h2 holds.
            Piece::Cut => {
                this.ended = true;
                return Poll::Ready(Some(Err(Status::deadline_exceeded(
                    "the stream was cut off: its proxy read none of its responses in time",
                ))));
            }
            Piece::End(status) => status,
        };
        this.ended = true;
        lock(&this.queue).rx.close();
        let mut trailers = HeaderMap::new();
        Poll::Ready(Some(
            status
                .add_header(&mut trailers)
                .map(|()| http_body::Frame::trailers(trailers)),
        ))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use http_body::Body as _;

    use super::*;
    use crate::budget::{Reader, ResponseBudget};

    fn response(bytes: usize) -> DiscoveryResponse {
        DiscoveryResponse {
            resources: vec![Any {
                type_url: String::new(),
                value: vec![7; bytes],
            }],
            ..Default::default()
        }
    }

    /// Every frame the body yields until it ends, or the error it fails with.
    async fn drain(body: &mut Body) -> Result<Vec<http_body::Frame<Bytes>>, Status> {
        let mut frames = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        {
            frames.push(frame?);
        }
        Ok(frames)
    }

    fn status_of(frame: &http_body::Frame<Bytes>) -> Option<tonic::Code> {
        Status::from_header_map(frame.trailers_ref()?).map(|s| s.code())
    }

    #[tokio::test]
    async fn the_response_ends_with_the_status_its_sender_left() {
        for (last, code) in [
            (None, tonic::Code::Ok),
            (
                Some(Status::unavailable("going away")),
                tonic::Code::Unavailable,
            ),
        ] {
            let (tx, body) = outbox(4, Arc::default(), ());
            let message = Bytes::from(crate::grpc::frame(&response(1)).expect("frames"));
            assert!(tx.send(Ok(message.clone())).await);
            if let Some(status) = last {
                assert!(tx.send(Err(status)).await);
            }
            drop(tx);
            let frames = drain(&mut body.into_body()).await.expect("no reset");
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[0].data_ref(), Some(&message));
            assert_eq!(status_of(&frames[1]), Some(code));
        }
    }

    #[tokio::test]
    async fn a_frame_longer_than_a_chunk_goes_out_in_pieces_in_order() {
        let budget = ResponseBudget::new(1 << 20);
        let ledger = Arc::new(Ledger::default());
        let (tx, body) = outbox(4, ledger.clone(), ());
        let mut reservation = budget.reserve(300_000, Reader::Proven).await.expect("open");
        let frame = reservation
            .frame(&response(200_000), &ledger)
            .expect("frames");
        let whole = frame.to_vec();
        drop(reservation);
        assert!(tx.send(Ok(frame)).await);
        drop(tx);
        let frames = drain(&mut body.into_body()).await.expect("no reset");
        let pieces: Vec<_> = frames.iter().filter_map(|f| f.data_ref()).collect();
        assert_eq!(pieces.len(), whole.len().div_ceil(CHUNK));
        assert!(pieces.iter().all(|p| p.len() <= CHUNK));
        assert_eq!(
            pieces
                .iter()
                .flat_map(|p| p.iter().copied())
                .collect::<Vec<u8>>(),
            whole
        );
        assert!(
            ledger.unwritten() > 0,
            "the last piece is the frame's own bytes"
        );
        drop(frames);
        assert_eq!(ledger.unwritten(), 0);
        assert_eq!(budget.available(), 1 << 20, "all of it back");
    }

    #[tokio::test]
    async fn cutting_a_stream_drops_what_is_queued_and_the_body_then_resets() {
        let budget = ResponseBudget::new(1 << 20);
        let ledger = Arc::new(Ledger::default());
        let (tx, body) = outbox(4, ledger.clone(), ());
        let mut body = body.into_body();
        let mut reservation = budget.reserve(500_000, Reader::Proven).await.expect("open");
        for _ in 0..3 {
            let frame = reservation
                .frame(&response(100_000), &ledger)
                .expect("frames");
            assert!(tx.send(Ok(frame)).await);
        }
        drop(reservation);
        // hyper took one piece of the first frame, then the proxy stopped reading.
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .expect("a piece")
            .expect("data");
        assert_eq!(first.data_ref().map(Bytes::len), Some(CHUNK));
        let held = budget.available();
        let dropped = tx.cut();
        assert!(dropped > 200_000, "{dropped} bytes dropped");
        assert_eq!(ledger.unwritten(), 0);
        assert_eq!(budget.available(), 1 << 20, "was {held} before the cut");
        assert!(tx.is_cut());
        let reset = drain(&mut body).await.expect_err("the body fails");
        assert_eq!(reset.code(), tonic::Code::DeadlineExceeded);
    }
}
