//! gRPC framing for the ADS streams, done here instead of by tonic's codec.
//!
//! tonic keeps, for every stream, an encode buffer and a decode buffer that grow to the
//! largest message the stream carried and stay that size until the stream ends. ADS streams
//! live as long as their proxy and their largest message is a whole set of clusters or
//! endpoints, so those two buffers were most of the server's memory per connected proxy
//! (BENCHMARKS.md §3). Here each message gets an allocation of its own, of exactly its size,
//! freed once it is written or decoded: an idle stream holds no message bytes.

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use http_body::Body as _;
use prost::Message;
use tokio::time::Sleep;
use tonic::{Status, body::Body};

/// What precedes every gRPC message: a compression flag and the length, big-endian.
pub(crate) const PREFIX: usize = 5;

/// The largest request accepted; tonic's default. Envoy's largest request names every
/// cluster it holds, a few hundred KiB at most.
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// One message framed for the wire, in an allocation of exactly its size, which the
/// response budget then owns alongside its share ([`crate::budget`]).
pub fn frame(message: &impl Message) -> Result<Vec<u8>, Status> {
    let len = message.encoded_len();
    let prefix_len = u32::try_from(len).map_err(|_| {
        Status::resource_exhausted(format!("a response of {len} bytes is too large for gRPC"))
    })?;
    let mut buf = Vec::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(prefix_len);
    message.encode_raw(&mut buf);
    Ok(buf)
}

/// Splits the bytes of a gRPC stream into messages, whatever the chunks they come in. The
/// server reads requests with it; the load driver (`xds-load`) reads responses.
#[derive(Debug)]
pub struct Framer {
    /// The longest message accepted.
    max: usize,
    prefix: [u8; PREFIX],
    prefix_read: usize,
    /// The length of the message whose prefix has been read.
    len: Option<usize>,
    /// A message that spans chunks, as much of it as has come ([`Framer::grow`]).
    partial: Vec<u8>,
}

impl Framer {
    /// A framer that refuses messages longer than `max` bytes.
    pub fn new(max: usize) -> Framer {
        Framer {
            max,
            prefix: [0; PREFIX],
            prefix_read: 0,
            len: None,
            partial: Vec::new(),
        }
    }

    /// Takes from `input` up to the end of the next message and returns that message, or
    /// `None` when `input` ran out first.
    pub fn next(&mut self, input: &mut Bytes) -> Result<Option<Bytes>, Status> {
        let len = match self.len {
            Some(len) => len,
            None => {
                let take = (PREFIX - self.prefix_read).min(input.len());
                self.prefix[self.prefix_read..self.prefix_read + take]
                    .copy_from_slice(&input[..take]);
                input.advance(take);
                self.prefix_read += take;
                if self.prefix_read < PREFIX {
                    return Ok(None);
                }
                self.prefix_read = 0;
                let [flag, l @ ..] = self.prefix;
                if flag != 0 {
                    return Err(Status::unimplemented(
                        "compressed messages are not supported",
                    ));
                }
                let len = u32::from_be_bytes(l) as usize;
                if len > self.max {
                    return Err(Status::out_of_range(format!(
                        "a message of {len} bytes is over the limit of {}",
                        self.max
                    )));
                }
                self.len = Some(len);
                len
            }
        };
        if self.partial.is_empty() && input.len() >= len {
            // The whole message is in this chunk: decoded from it, not copied.
            self.len = None;
            return Ok(Some(input.split_to(len)));
        }
        let take = (len - self.partial.len()).min(input.len());
        self.grow(take, len);
        self.partial.extend_from_slice(&input[..take]);
        input.advance(take);
        if self.partial.len() < len {
            return Ok(None);
        }
        self.len = None;
        Ok(Some(Bytes::from(std::mem::take(&mut self.partial))))
    }

    /// Makes room for `take` more bytes of a message of `len`: doubling as the bytes come, so
    /// a client that announces 4 MiB and sends one byte holds a few, but never past `len`, so
    /// a message ends in an allocation of its own size (a Vec's doubling left a SotW ACK of
    /// 70 KB in 128 KiB while it waited to be decoded, many of them at once after a
    /// change).
    fn grow(&mut self, take: usize, len: usize) {
        let needed = self.partial.len() + take;
        if needed > self.partial.capacity() {
            let target = needed.max(self.partial.capacity() * 2).min(len);
            self.partial.reserve_exact(target - self.partial.len());
        }
    }

    /// True between messages.
    pub fn is_idle(&self) -> bool {
        self.len.is_none() && self.prefix_read == 0
    }
}

/// Why the next request of a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The proxy sent what is not a request (or a compressed or oversized one); the status
    /// says why, for the proxy.
    #[error("{}", .0.message())]
    Malformed(Status),
    /// A message that began did not arrive in full in time; the status says so.
    #[error("{}", .0.message())]
    Stalled(Status),
    /// The connection under the stream failed: nobody is left to tell.
    #[error("the connection failed: {}", .0.message())]
    Broken(Status),
}

impl From<ReadError> for Status {
    fn from(e: ReadError) -> Status {
        match e {
            ReadError::Malformed(status)
            | ReadError::Stalled(status)
            | ReadError::Broken(status) => status,
        }
    }
}

/// The requests of one stream, decoded one at a time.
pub struct Requests<M> {
    body: Body,
    framer: Framer,
    /// What is left of the last chunk read.
    chunk: Bytes,
    ended: bool,
    /// How long a message may take to arrive in full once its first bytes did.
    deadline: Duration,
    /// Armed while a message is partly read.
    partial: Option<Pin<Box<Sleep>>>,
    message: PhantomData<fn() -> M>,
}

/// A request message, with what decoding it does not check.
pub trait Checked: Message + Default {
    /// Why the request is malformed though it decoded.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Decoding checks every field of an incremental request.
impl Checked for DeltaDiscoveryRequest {}

impl<M: Checked> Requests<M> {
    /// The requests in `body`, a stream's request body; a message must arrive in full
    /// within `deadline` of its first bytes.
    pub fn new(body: Body, deadline: Duration) -> Self {
        Requests {
            body,
            framer: Framer::new(MAX_REQUEST),
            chunk: Bytes::new(),
            ended: false,
            deadline,
            partial: None,
            message: PhantomData,
        }
    }

    /// The next request, or `None` once the proxy has closed its side. Cancel-safe: every
    /// byte read is kept in `self`, so it can race other events in a `select!`.
    pub async fn message(&mut self) -> Result<Option<M>, ReadError> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<M>, ReadError>> {
        loop {
            let next = self
                .framer
                .next(&mut self.chunk)
                .map_err(ReadError::Malformed)?;
            if self.chunk.is_empty() {
                // Even an empty slice of a received frame keeps the connection's read buffer
                // it was cut from alive.
                self.chunk = Bytes::new();
            }
            if self.framer.is_idle() {
                self.partial = None;
            } else if self.partial.is_none() {
                self.partial = Some(Box::pin(tokio::time::sleep(self.deadline)));
            }
            if let Some(bytes) = next {
                let request = M::decode(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.check().map(|()| r));
                return Poll::Ready(request.map(Some).map_err(|e| {
                    ReadError::Malformed(Status::invalid_argument(format!(
                        "malformed request: {e}"
                    )))
                }));
            }
            if self.ended {
                return Poll::Ready(if self.framer.is_idle() {
                    Ok(None)
                } else {
                    Err(ReadError::Malformed(Status::invalid_argument(
                        "the request stream ended inside a message",
                    )))
                });
            }
            if let Some(partial) = &mut self.partial
                && partial.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(ReadError::Stalled(Status::deadline_exceeded(format!(
                    "a request did not arrive in full within {:?} of its first bytes",
                    self.deadline
                )))));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Request trailers carry nothing ADS uses.
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
                Some(Err(status)) => return Poll::Ready(Err(ReadError::Broken(status))),
                None => self.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

    use super::*;

    fn request(names: usize) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: crate::snapshot::ENDPOINT.into(),
            resource_names: (0..names).map(|i| format!("cluster-{i}")).collect(),
            ..Default::default()
        }
    }

    fn decode(bytes: Bytes) -> DiscoveryRequest {
        DiscoveryRequest::decode(bytes).expect("decodes")
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_cut() {
        let messages = [request(3), request(0), request(200)];
        let wire: Vec<u8> = messages
            .iter()
            .flat_map(|m| frame(m).expect("frames"))
            .collect();
        for chunk in [1, 2, 5, 7, 64, 1000, wire.len()] {
            let mut framer = Framer::new(MAX_REQUEST);
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                let mut input = Bytes::copy_from_slice(piece);
                while let Some(m) = framer.next(&mut input).expect("valid") {
                    out.push(decode(m));
                }
                assert!(input.is_empty(), "every byte is taken");
            }
            assert_eq!(out, messages, "chunks of {chunk} bytes");
            assert!(framer.is_idle());
        }
    }

    #[test]
    fn a_message_split_across_chunks_holds_what_arrived_not_what_it_announced() {
        let wire = Bytes::from(frame(&request(500)).expect("frames"));
        assert!(wire.len() > 5000, "{} bytes", wire.len());
        let mut framer = Framer::new(MAX_REQUEST);
        let mut first = wire.slice(..PREFIX + 10);
        assert!(framer.next(&mut first).expect("valid").is_none());
        assert!(
            framer.partial.capacity() < 100,
            "{}",
            framer.partial.capacity()
        );
        assert!(!framer.is_idle());
        let mut rest = wire.slice(PREFIX + 10..);
        let m = framer.next(&mut rest).expect("valid").expect("whole");
        assert_eq!(decode(m), request(500));
        assert_eq!(framer.partial.capacity(), 0, "nothing kept after it");
    }

    #[test]
    fn a_message_in_many_chunks_ends_in_an_allocation_of_its_size() {
        let wire = Bytes::from(frame(&request(3000)).expect("frames"));
        let len = wire.len() - PREFIX;
        assert!(len > 40_000 && !len.is_power_of_two(), "{len} bytes");
        let mut framer = Framer::new(MAX_REQUEST);
        // All but the last byte, in chunks of 1,000 as they may come.
        let mut sent = 0;
        for chunk in wire[..wire.len() - 1].chunks(1000) {
            let mut chunk = Bytes::copy_from_slice(chunk);
            sent += chunk.len();
            assert!(framer.next(&mut chunk).expect("valid").is_none());
            let held = framer.partial.capacity();
            assert!(held <= 2 * sent && held <= len, "{held} held, {sent} sent");
        }
        assert_eq!(
            framer.partial.capacity(),
            len,
            "the message's length, not past it"
        );
        let mut last = wire.slice(wire.len() - 1..);
        let m = framer.next(&mut last).expect("valid").expect("whole");
        assert_eq!(decode(m), request(3000));
    }

    #[test]
    fn compressed_and_oversized_requests_are_refused() {
        let mut compressed = Bytes::from_static(&[1, 0, 0, 0, 1, 0]);
        let err = Framer::new(MAX_REQUEST)
            .next(&mut compressed)
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        let too_long = (MAX_REQUEST as u32 + 1).to_be_bytes();
        let mut huge = Bytes::from([&[0u8][..], &too_long].concat());
        let err = Framer::new(MAX_REQUEST)
            .next(&mut huge)
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
    }

    #[test]
    fn a_frame_is_exactly_its_message() {
        let m = request(10);
        let wire = Bytes::from(frame(&m).expect("frames"));
        assert_eq!(wire[0], 0);
        assert_eq!(
            u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize,
            m.encoded_len()
        );
        assert_eq!(wire.len(), PREFIX + m.encoded_len());
        assert_eq!(decode(wire.slice(PREFIX..)), m);
    }
}
