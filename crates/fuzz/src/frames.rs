//! The ADS request framer over a byte stream cut at arbitrary points, and what it frames
//! decoded and taken in by both state machines, as a stream's requests are.

use std::sync::LazyLock;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;
use remora_xds::{
    Snapshot,
    delta::DeltaStream,
    grpc::{Checked as _, Framer, MAX_REQUEST},
    sotw::{SotwRequest, SotwStream},
};
use tonic::Code;

/// The first byte seeds where the rest, a request stream, is cut into chunks. The framer
/// must give the messages and the error a whole-buffer reading gives, however it is cut.
pub fn grpc_frames(data: &[u8]) {
    let Some((&seed, wire)) = data.split_first() else {
        return;
    };
    let expected = read_whole(wire, MAX_REQUEST);
    let mut framer = Framer::new(MAX_REQUEST);
    let mut got = Vec::new();
    let mut failed = None;
    let mut cuts = Cuts(u32::from(seed) | 0x100);
    let mut rest = wire;
    'chunks: while !rest.is_empty() {
        let (chunk, after) = rest.split_at(cuts.next(rest.len()));
        rest = after;
        let mut input = Bytes::copy_from_slice(chunk);
        loop {
            match framer.next(&mut input) {
                Ok(Some(message)) => got.push(message),
                Ok(None) => {
                    assert!(input.is_empty(), "the framer left bytes of a chunk unread");
                    break;
                }
                Err(status) => {
                    failed = Some(status.code());
                    break 'chunks;
                }
            }
        }
    }
    assert_eq!(got, expected.messages, "the messages depend on the cuts");
    assert_eq!(failed, expected.error, "the error depends on the cuts");
    if failed.is_none() {
        assert_eq!(framer.is_idle(), expected.ends_between_messages);
    }
    let snapshot = &*SNAPSHOT;
    let (mut sotw, mut delta) = (SotwStream::default(), DeltaStream::default());
    for message in got {
        // As the server reads them: a request with a name that is not UTF-8 is refused.
        if let Ok(request) = SotwRequest::decode(message.clone())
            && request.check().is_ok()
            && sotw.take_request(&request, snapshot)
        {
            sotw.respond(snapshot);
        }
        if let Ok(request) = DeltaDiscoveryRequest::decode(message)
            && delta.take_request(&request, snapshot)
        {
            delta.respond(snapshot);
        }
    }
}

/// A small snapshot of every type, names `a` and `b`, for the decoded requests to meet.
static SNAPSHOT: LazyLock<Snapshot> = LazyLock::new(|| crate::xds::fixed_snapshot(&["a", "b"]));

/// What reading the whole stream at once gives: the gRPC length-prefixed framing, read the
/// plain way.
struct Whole {
    messages: Vec<Bytes>,
    error: Option<Code>,
    ends_between_messages: bool,
}

fn read_whole(mut wire: &[u8], max: usize) -> Whole {
    let mut messages = Vec::new();
    loop {
        if wire.len() < 5 {
            return Whole {
                messages,
                error: None,
                ends_between_messages: wire.is_empty(),
            };
        }
        let error = |code| Whole {
            messages: messages.clone(),
            error: Some(code),
            ends_between_messages: false,
        };
        if wire[0] != 0 {
            return error(Code::Unimplemented);
        }
        let len = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize;
        if len > max {
            return error(Code::OutOfRange);
        }
        let Some(message) = wire.get(5..5 + len) else {
            return Whole {
                messages,
                error: None,
                ends_between_messages: false,
            };
        };
        messages.push(Bytes::copy_from_slice(message));
        wire = &wire[5 + len..];
    }
}

/// Chunk lengths from a small generator: mostly short, sometimes long, never zero.
struct Cuts(u32);

impl Cuts {
    fn next(&mut self, left: usize) -> usize {
        // xorshift32
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        let len = match self.0 % 4 {
            0 => 1 + (self.0 >> 8) as usize % 4,
            1 => 1 + (self.0 >> 8) as usize % 16,
            2 => 1 + (self.0 >> 8) as usize % 256,
            _ => left,
        };
        len.min(left)
    }
}
