//! A tiny test application for pods that run for real: it says who it is.
//!
//! `remora-echo --listen 0.0.0.0:8080 --name v1` answers every HTTP/1.1 request with the body
//! `<name> <path>` (as the e2e upstreams do, so `support::tally` counts it by name), an
//! `x-served-by: <name>` header and an `x-request-line` header holding the request line.
//! With `--tcp` it is a raw TCP echo instead: it sends `<name>\n` on accept, then echoes back
//! every byte it reads.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

struct Args {
    listen: SocketAddr,
    name: String,
    tcp: bool,
}

fn parse() -> Result<Args, String> {
    let (mut listen, mut name, mut tcp) = (None, None, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs an address")?;
                listen = Some(
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
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        name: name.unwrap_or_else(|| "echo".into()),
        tcp,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = parse()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "{} listening on {} (tcp: {})",
        args.name, args.listen, args.tcp
    );
    loop {
        let (conn, _) = listener
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        let name = args.name.clone();
        if args.tcp {
            tokio::spawn(echo(conn, name));
        } else {
            tokio::spawn(http(conn, name));
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

async fn http(mut conn: TcpStream, name: String) {
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
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let body = format!("{name} {path}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-served-by: {name}\r\n\
             x-request-line: {line}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(response.as_bytes()).await.is_err() {
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
