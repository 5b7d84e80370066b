//! A tiny test application for pods that run for real: it says who it is.
//!
//! `remora-echo --listen 0.0.0.0:8080 --name v1` answers every HTTP/1.1 request with the body
//! `<name> <path>` (as the e2e upstreams do, so `support::tally` counts it by name), an
//! `x-served-by: <name>` header, an `x-request-line` header holding the request line and an
//! `x-peer` header with the address the connection came from (the proxy's, when it passed
//! through one), and an `x-client-cert` header echoing the request's
//! `x-forwarded-client-cert` (the caller's identity, when its proxy and the server's spoke
//! mutual TLS; `-` without one). A path under `/flaky/` fails with 503 the first time it is asked for, and
//! succeeds after, so a retry shows. With `--tcp` it is a raw TCP echo instead: it sends
//! `<name>\n` on accept, then echoes back every byte it reads. `--listen` may be given more
//! than once.
//!
//! `remora-echo fetch` is the client side, an app that knows nothing of the mesh (see
//! `fetch.rs`).

mod fetch;

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

struct Args {
    listen: Vec<SocketAddr>,
    name: String,
    tcp: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut listen, mut name, mut tcp) = (Vec::new(), None, false);
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs an address")?;
                listen.push(
                    value
                        .parse()
                        .map_err(|e| format!("--listen {value}: {e}"))?,
                );
            }
            "--name" => name = Some(args.next().ok_or("--name needs a value")?),
            "--tcp" => tcp = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if listen.is_empty() {
        return Err("--listen is required".into());
    }
    Ok(Args {
        listen,
        name: name.unwrap_or_else(|| "echo".into()),
        tcp,
    })
}

/// Paths under `/flaky/` that failed once already.
type Seen = Arc<Mutex<HashSet<String>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("fetch") {
        argv.next();
        return fetch::run(argv).await;
    }
    let args = parse(argv)?;
    let seen = Seen::default();
    let mut servers = tokio::task::JoinSet::new();
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        eprintln!("{} listening on {addr} (tcp: {})", args.name, args.tcp);
        servers.spawn(serve(listener, args.name.clone(), args.tcp, seen.clone()));
    }
    match servers.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(format!("a listener's task failed: {e}")),
        None => Ok(()),
    }
}

async fn serve(listener: TcpListener, name: String, tcp: bool, seen: Seen) -> Result<(), String> {
    loop {
        let (conn, peer) = listener
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        let name = name.clone();
        if tcp {
            tokio::spawn(echo(conn, name));
        } else {
            tokio::spawn(http(conn, name, peer, seen.clone()));
        }
    }
}

async fn echo(mut conn: TcpStream, name: String) {
    if conn
        .write_all(format!("{name}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let (mut read, mut write) = conn.split();
    let _ = tokio::io::copy(&mut read, &mut write).await;
}

async fn http(mut conn: TcpStream, name: String, peer: SocketAddr, seen: Seen) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = head_end(&mut conn, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length = head
            .lines()
            .skip(1)
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < end + length {
            if !read_more(&mut conn, &mut buf).await {
                return;
            }
        }
        buf.drain(..end + length);
        let line = head.lines().next().unwrap_or_default().to_owned();
        let client_cert = head
            .lines()
            .skip(1)
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("x-forwarded-client-cert")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "-".into());
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let body = format!("{name} {path}");
        let first_time = path.starts_with("/flaky/")
            && seen
                .lock()
                .map(|mut s| s.insert(path.to_owned()))
                .unwrap_or(false);
        let status = if first_time {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-served-by: {name}\r\n\
             x-peer: {peer}\r\nx-request-line: {line}\r\nx-client-cert: {client_cert}\r\n\r\n{body}",
            body.len()
        );
        let close = head.lines().skip(1).any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
            })
        });
        if conn.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Reads until the end of a request head; returns its length, `None` once the peer is gone.
async fn head_end(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    // A head larger than 64 KiB is not one this app will ever be sent.
    while buf.len() < 64 * 1024 {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if !read_more(conn, buf).await {
            return None;
        }
    }
    None
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match conn.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
