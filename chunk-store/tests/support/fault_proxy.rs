//! A small HTTP/1.1 proxy for tests that puts faults between a client and a real server: some
//! requests are answered with an error status, stalled, or have their response cut short; the
//! rest pass through unchanged. Every request is counted by method and path.
//!
//! Each request gets its own upstream connection and `Connection: close`, so one request is one
//! connection and the proxy never has to frame a body: it pipes bytes both ways until the
//! upstream closes.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of it

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Forward it unchanged.
    Pass,
    /// Answer with this status and an S3-style error body, without asking the server.
    Status(u16),
    /// Hold it this long, then forward it.
    Stall(Duration),
    /// Forward it, but pass only this many bytes of the response, then close.
    Truncate(usize),
    /// Read the request head only, answer this status at once and close, as a server that
    /// refuses a put before reading its body does.
    RefuseEarly(u16),
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) fault: Fault,
}

type Rule = dyn Fn(&str, &str, usize) -> Fault + Send + Sync;

/// A running proxy; it stops when the test's runtime does.
pub(crate) struct FaultProxy {
    pub(crate) endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`). `rule(method, path, n)` decides each request;
    /// `n` counts earlier requests with the same method and path.
    pub(crate) async fn start(
        upstream: &str,
        rule: impl Fn(&str, &str, usize) -> Fault + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Rule> = Arc::new(rule);
        let upstream = upstream.to_owned();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (rule, log, upstream) = (Arc::clone(&rule), Arc::clone(&log), upstream.clone());
                tokio::spawn(async move {
                    let _ = handle(client, &upstream, &*rule, &log).await;
                });
            }
        });
        Self { endpoint, seen }
    }

    /// Every request so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests had `method` and a path ending in `suffix`.
    pub(crate) fn count(&self, method: &str, suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.ends_with(suffix))
            .count()
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: &str,
    rule: &Rule,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut parts = text.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let path = path.split('?').next().unwrap_or_default().to_owned();
    let fault = {
        let mut log = log.lock().unwrap();
        let n = log
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count();
        let fault = rule(&method, &path, n);
        log.push(Seen {
            method: method.clone(),
            path: path.clone(),
            fault,
        });
        fault
    };
    match fault {
        Fault::Status(status) | Fault::RefuseEarly(status) => {
            if let Fault::Status(_) = fault {
                drain_body(&mut client, &text, rest.len()).await?;
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code>\
                 <Message>injected by the test</Message></Error>",
                code(status)
            );
            let reply = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                code(status),
                body.len()
            );
            client.write_all(reply.as_bytes()).await?;
            client.shutdown().await?;
            return Ok(());
        }
        Fault::Stall(time) => tokio::time::sleep(time).await,
        Fault::Pass | Fault::Truncate(_) => {}
    }
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&close_connection(&text)).await?;
    server.write_all(&rest).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upload = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let limit = match fault {
        Fault::Truncate(limit) => limit,
        _ => usize::MAX,
    };
    let mut sent = 0;
    let mut buffer = vec![0; 64 << 10];
    while sent < limit {
        let n = server_read.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        let n = n.min(limit - sent);
        client_write.write_all(&buffer[..n]).await?;
        sent += n;
    }
    upload.abort();
    client_write.shutdown().await?;
    Ok(())
}

/// The request head (through the blank line) and whatever of the body came with it.
async fn read_head(client: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut buffer = [0; 8192];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = bytes.split_off(end + 4);
            return Ok((bytes, rest));
        }
        let n = client.read(&mut buffer).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&buffer[..n]);
    }
}

/// Reads the rest of a request body of known length, so an answer is not a broken pipe.
async fn drain_body(client: &mut TcpStream, head: &str, have: usize) -> std::io::Result<()> {
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut left = length.saturating_sub(have);
    let mut buffer = vec![0; 64 << 10];
    while left > 0 {
        let n = client.read(&mut buffer[..left.min(64 << 10)]).await?;
        if n == 0 {
            break;
        }
        left -= n;
    }
    Ok(())
}

/// The head with its `Connection` header replaced by `close`.
fn close_connection(head: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if line
            .split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn code(status: u16) -> &'static str {
    match status {
        403 => "AccessDenied",
        404 => "NoSuchKey",
        412 => "PreconditionFailed",
        500 => "InternalError",
        503 => "SlowDown",
        _ => "Injected",
    }
}
