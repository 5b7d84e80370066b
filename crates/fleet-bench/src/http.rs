//! A plain HTTP/1.1 GET on loopback: enough to read a replica's `/readyz` and `/metrics`,
//! without an HTTP client crate for two URLs.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("GET http://{addr}{path}: {source}")]
    Io {
        /// The server.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("GET http://{addr}{path}: no answer within {TIMEOUT:?}")]
    Timeout {
        /// The server.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
    },
    /// The answer is not HTTP this reads.
    #[error("GET http://{addr}{path}: not an HTTP/1.1 response this client reads: {why}")]
    Response {
        /// The server.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

/// The status code and body of `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), HttpError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            addr,
            path: path.to_owned(),
        })?
        .map_err(|source| HttpError::Io {
            addr,
            path: path.to_owned(),
            source,
        })?;
    parse(&response).map_err(|why| HttpError::Response {
        addr,
        path: path.to_owned(),
        why,
    })
}

/// The status code and body of a whole response, with a length or chunked body.
fn parse(response: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of the headers")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("no status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("a chunk without its size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("a chunk size that is not hex: {size:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("a chunk shorter than its size")?;
        out.push_str(chunk);
        body = rest
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or("a chunk without its end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_with_a_length_gives_its_status_and_body() {
        let r = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nwait\n";
        assert_eq!(parse(r), Ok((503, "wait\n".into())));
    }

    #[test]
    fn a_chunked_response_is_put_together() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nremo\r\n2\r\nra\r\n0\r\n\r\n";
        assert_eq!(parse(r), Ok((200, "remora".into())));
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nremo";
        assert!(parse(cut).is_err());
        assert!(parse(b"garbage").is_err());
    }
}
