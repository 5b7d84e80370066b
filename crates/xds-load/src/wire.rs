//! The simulated proxies' side of gRPC, framed here rather than by tonic's client codec, for
//! the reason the server frames its own (`remora_xds::grpc`): tonic keeps a decode buffer per
//! stream as large as the largest message the stream carried, and ten thousand proxies each
//! keeping a buffer the size of their cluster set was most of the fleet's memory. Here each
//! response gets an allocation of exactly its size (none at all when one chunk holds it),
//! decoded into a message that keeps only what a proxy acts on, then dropped.

use std::future::poll_fn;

use bytes::Bytes;
use http::{Method, Request, header::CONTENT_TYPE};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use remora_xds::grpc::Framer;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::{Code, Status, body::Body, codegen::Service, transport::Channel};

/// `DiscoveryResponse` with only what a proxy ACKs and subscribes by; prost skips the rest
/// of the encoding without allocating it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SotwResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Packed>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `DeltaDiscoveryResponse`, likewise reduced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaResponse {
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<DeltaResource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// `envoy.service.discovery.v3.Resource`: the stated version and name, and the body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaResource {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<Packed>,
    #[prost(string, tag = "3")]
    pub name: String,
}

/// A `google.protobuf.Any` reduced to its value, which decoding from `Bytes` slices out of
/// the response instead of copying.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Packed {
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// Opens a bidirectional stream of `path`; `requests` are framed messages, written as they
/// come.
pub async fn open(
    channel: &mut Channel,
    path: &'static str,
    requests: mpsc::Receiver<Bytes>,
) -> Result<Inbound, Status> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        // Framed messages as they come, ending when their senders are dropped.
        .body(Body::new(StreamBody::new(
            ReceiverStream::new(requests).map(|m| Ok::<_, Status>(Frame::data(m))),
        )))
        .map_err(|e| Status::internal(e.to_string()))?;
    poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let response = channel
        .call(request)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    // A call refused before any message is a trailers-only response: its status is in the
    // headers.
    if let Some(status) = Status::from_header_map(response.headers())
        && status.code() != Code::Ok
    {
        return Err(status);
    }
    if response.status() != http::StatusCode::OK {
        return Err(Status::internal(format!(
            "the server answered HTTP {}",
            response.status()
        )));
    }
    Ok(Inbound {
        body: response.into_body(),
        // Responses are as large as a proxy's whole config; the server bounds them.
        framer: Framer::new(usize::MAX),
        chunk: Bytes::new(),
    })
}

/// The response stream.
pub struct Inbound {
    body: Body,
    framer: Framer,
    /// What is left of the last chunk received.
    chunk: Bytes,
}

impl Inbound {
    /// The next message, or `None` when the server ended the stream without error.
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            let next = self.framer.next(&mut self.chunk)?;
            if self.chunk.is_empty() {
                // Even an empty slice keeps the whole buffer it was cut from, for as long as
                // the stream stays idle.
                self.chunk = Bytes::new();
            }
            if let Some(message) = next {
                return Ok(Some(message));
            }
            match self.body.frame().await {
                None if self.framer.is_idle() => return Ok(None),
                None => return Err(Status::internal("the stream ended inside a message")),
                Some(frame) => match frame?.into_data() {
                    Ok(data) => self.chunk = data,
                    Err(frame) => {
                        if let Some(status) = frame.trailers_ref().and_then(Status::from_header_map)
                            && status.code() != Code::Ok
                        {
                            return Err(status);
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{
        envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse, Resource},
        google::protobuf::Any,
    };
    use prost::Message;

    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn messages_come_out_whole_whatever_the_chunks() {
        let messages: [&[u8]; 3] = [b"first", b"", &[7; 40]];
        let stream: Vec<u8> = messages.iter().flat_map(|m| framed(m)).collect();
        for size in [1, 3, 5, 6, 17, stream.len()] {
            let mut framer = Framer::new(usize::MAX);
            let mut out = Vec::new();
            for chunk in stream.chunks(size) {
                let mut chunk = Bytes::copy_from_slice(chunk);
                while let Some(m) = framer.next(&mut chunk).expect("uncompressed") {
                    out.push(m);
                }
                assert!(chunk.is_empty(), "chunks of {size}: bytes left over");
            }
            assert_eq!(out, messages, "chunks of {size}");
            assert!(framer.is_idle());
        }
        let mut compressed = Bytes::from(vec![1, 0, 0, 0, 0]);
        assert!(Framer::new(usize::MAX).next(&mut compressed).is_err());
    }

    #[test]
    fn the_reduced_responses_read_what_envoy_would_ack() {
        let any = |value: &[u8]| Any {
            type_url: "type.googleapis.com/x".into(),
            value: value.to_vec(),
        };
        let full = DiscoveryResponse {
            version_info: "v7".into(),
            resources: vec![any(b"one"), any(b"two")],
            type_url: "t".into(),
            nonce: "n3".into(),
            canary: true,
            ..Default::default()
        };
        let light = SotwResponse::decode(Bytes::from(full.encode_to_vec())).expect("decodes");
        assert_eq!(
            (&*light.version_info, &*light.type_url, &*light.nonce),
            ("v7", "t", "n3")
        );
        let values: Vec<&[u8]> = light.resources.iter().map(|r| &*r.value).collect();
        assert_eq!(values, [b"one".as_slice(), b"two"]);

        let full = DeltaDiscoveryResponse {
            system_version_info: "ignored".into(),
            resources: vec![Resource {
                name: "a".into(),
                version: "00ff".into(),
                resource: Some(any(b"body")),
                aliases: vec!["alias".into()],
                ..Default::default()
            }],
            type_url: "t".into(),
            nonce: "n4".into(),
            removed_resources: vec!["gone".into()],
            ..Default::default()
        };
        let light = DeltaResponse::decode(Bytes::from(full.encode_to_vec())).expect("decodes");
        assert_eq!((&*light.type_url, &*light.nonce), ("t", "n4"));
        assert_eq!(light.removed_resources, ["gone"]);
        let r = &light.resources[0];
        assert_eq!((&*r.name, &*r.version), ("a", "00ff"));
        assert_eq!(r.resource.as_ref().map(|p| &*p.value), Some(&b"body"[..]));
    }
}
