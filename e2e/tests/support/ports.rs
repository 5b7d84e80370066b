//! Ports for servers a test must name before they bind (a webhook registered with the API
//! server first, an Envoy bootstrap written before Envoy starts).
//!
//! A port the kernel hands out for `127.0.0.1:0` lies in its ephemeral range, and once the
//! probing socket is closed any outgoing connection (the kube client's, Envoy's) may take it
//! as its local port before the server binds it: "Address already in use", now and then.
//! These ports come from just below that range, which the kernel never picks by itself; a
//! counter keeps the threads of one test binary apart and a bind shows no one holds it.

use std::{
    net::TcpListener,
    sync::atomic::{AtomicU32, Ordering},
};

/// How many ports below the ephemeral range are handed out.
const SPAN: u32 = 10_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback port no one holds now and the kernel will not give to another socket.
pub fn free_port() -> u16 {
    let below = ephemeral_start();
    let first = below.saturating_sub(SPAN).max(1024);
    let span = below - first;
    assert!(
        span > 0,
        "no ports below the ephemeral range, which starts at {below}"
    );
    // Test binaries run one at a time, but start each where another is unlikely to be.
    let start = std::process::id() % span;
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(first + (start + offset) % span).expect("a port");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("every port in {first}..{below} is held");
}

/// The first port of `net.ipv4.ip_local_port_range`.
fn ephemeral_start() -> u32 {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let range = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    range
        .split_whitespace()
        .next()
        .and_then(|low| low.parse().ok())
        .unwrap_or_else(|| panic!("{path} holds {range:?}, not two ports"))
}
