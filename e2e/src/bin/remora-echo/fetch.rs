//! `remora-echo fetch <url> [--count N] [--method M] [--header 'name: value']...`: an application that knows
//! nothing of the mesh. It resolves the host through the system resolver (`/etc/hosts` in a
//! test pod) and connects to whatever it resolves to, one connection per attempt. For each
//! attempt it prints one line: for `http://host:port/path`, `<status> <x-served-by> <x-peer>
//! <x-client-cert>`
//! (`-` for a missing header), followed by the body with `--body`; for `tcp://host:port`, the
//! first line the server sends; or `error <why>`. Every attempt is bounded by a 5 s timeout.
//!
//! With `--hold` (TCP only) the one connection stays open after its first line: each line
//! read from standard input is sent on it and the line that comes back is printed, until
//! standard input ends; a connection that breaks prints `error <why>` and ends it.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    time::timeout,
};

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

struct Fetch {
    tcp: bool,
    authority: String,
    path: String,
    count: usize,
    method: String,
    headers: Vec<String>,
    body: bool,
    hold: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Fetch, String> {
    let url = args.next().ok_or("fetch needs a URL")?;
    let (tcp, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("tcp://") {
        (true, rest)
    } else {
        return Err(format!("{url:?}: only http:// and tcp:// URLs"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut fetch = Fetch {
        tcp,
        authority: authority.to_owned(),
        path: path.to_owned(),
        count: 1,
        method: "GET".to_owned(),
        headers: Vec::new(),
        body: false,
        hold: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" => {
                let n = args.next().ok_or("--count needs a number")?;
                fetch.count = n.parse().map_err(|e| format!("--count {n}: {e}"))?;
            }
            "--method" => fetch.method = args.next().ok_or("--method needs a method")?,
            "--header" => fetch
                .headers
                .push(args.next().ok_or("--header needs a value")?),
            "--body" => fetch.body = true,
            "--hold" => fetch.hold = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(fetch)
}

pub async fn run(args: impl Iterator<Item = String>) -> Result<(), String> {
    let fetch = parse(args)?;
    if fetch.hold {
        return hold(&fetch).await;
    }
    for _ in 0..fetch.count {
        let line = match timeout(ATTEMPT_TIMEOUT, attempt(&fetch)).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => format!("error {e}"),
            Err(_) => "error timed out".to_owned(),
        };
        println!("{line}");
    }
    Ok(())
}

async fn attempt(fetch: &Fetch) -> Result<String, String> {
    let mut conn = TcpStream::connect(&fetch.authority)
        .await
        .map_err(|e| format!("connect {}: {e}", fetch.authority))?;
    if fetch.tcp {
        let mut line = String::new();
        let mut reader = BufReader::new(conn);
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if line.is_empty() {
            return Err("closed before a line".into());
        }
        return Ok(line.trim_end().to_owned());
    }
    let mut request = format!(
        "{} {} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: 0\r\n",
        fetch.method, fetch.path, fetch.authority
    );
    for h in &fetch.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    conn.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let summary = summary(&response)?;
    match response.split_once("\r\n\r\n") {
        Some((_, body)) if fetch.body => Ok(format!("{summary}\n{body}")),
        _ => Ok(summary),
    }
}

/// `<status> <x-served-by> <x-peer> <x-client-cert>` of a whole response.
fn summary(response: &str) -> Result<String, String> {
    let mut lines = response.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or("closed without a response")?
        .to_owned();
    let header = |name: &str| {
        response
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "-".into())
    };
    Ok(format!(
        "{status} {} {} {}",
        header("x-served-by"),
        header("x-peer"),
        header("x-client-cert")
    ))
}

/// One TCP connection held open: its first line, then each stdin line echoed through it.
async fn hold(fetch: &Fetch) -> Result<(), String> {
    if !fetch.tcp {
        return Err("--hold needs a tcp:// URL".into());
    }
    let conn = timeout(ATTEMPT_TIMEOUT, TcpStream::connect(&fetch.authority))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect {}: {e}", fetch.authority))?;
    let (read, mut write) = conn.into_split();
    let mut from_server = BufReader::new(read).lines();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let reply = match timeout(ATTEMPT_TIMEOUT, from_server.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => "error closed".to_owned(),
            Ok(Err(e)) => format!("error read: {e}"),
            Err(_) => "error timed out".to_owned(),
        };
        println!("{reply}");
        if reply.starts_with("error") {
            return Ok(());
        }
        let Ok(Some(line)) = stdin.next_line().await else {
            return Ok(());
        };
        if let Err(e) = write.write_all(format!("{line}\n").as_bytes()).await {
            println!("error write: {e}");
            return Ok(());
        }
    }
}
