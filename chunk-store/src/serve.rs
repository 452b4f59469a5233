//! A read-only HTTP server for any store (feature `serve`): its chunks in the casync layout
//! (`/XXXX/<id>.cacnk`, what `casync --store=http://…` and desync read) and in the PBS layout
//! (`/.chunks/XXXX/<id>`, what an HTTP store of cairn reads), whatever the store keeps.
//!
//! A chunk kept in the other encoding is re-encoded on the way out (a DataBlob becomes a zstd
//! casync chunk, and back); its digest stays the store's. One that does not decode goes out as
//! it is, for the client to find corrupt. `GET` and `HEAD` work, with single
//! byte ranges; other methods are 405 and paths outside both layouts 404.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;

use crate::blob::MAX_BLOB_SIZE;
use crate::cpu::CpuLimit;
use crate::digest::{Digest, Hex, from_hex};
use crate::error::StoreError;
use crate::source::{decode_chunk, encode_chunk};
use crate::store::{ChunkEncoding, ChunkStore};

/// What a request path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Chunk `digest`, encoded as the layout keeps it: [`ChunkEncoding::PbsBlob`] in the PBS
    /// layout, [`ChunkEncoding::CasyncCompressed`] in the casync one.
    Chunk(ChunkEncoding, Digest),
    /// Nothing this server has.
    NotFound,
}

/// The chunk a request path names, in either layout (a query is ignored).
#[must_use]
pub fn route(path: &str) -> Route {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (layout, prefix, name) = match parts.as_slice() {
        [".chunks", prefix, name] => (ChunkEncoding::PbsBlob, *prefix, *name),
        [prefix, name] => match name.strip_suffix(".cacnk") {
            Some(name) => (ChunkEncoding::CasyncCompressed, *prefix, name),
            None => return Route::NotFound,
        },
        _ => return Route::NotFound,
    };
    let lower = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match from_hex(name) {
        Some(digest) if lower(name) && prefix.len() == 4 && name.starts_with(prefix) => {
            Route::Chunk(layout, digest)
        }
        _ => Route::NotFound,
    }
}

/// The part of a `len`-byte body a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// All of it: no range, or one this server does not take (several ranges, other units).
    Whole,
    /// Bytes `start..end`.
    Part(u64, u64),
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// Parses a `Range` header value for a body of `len` bytes (RFC 9110 §14: one byte range).
#[must_use]
pub fn span(range: Option<&str>, len: u64) -> Span {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Span::Whole;
    };
    if spec.contains(',') {
        return Span::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Span::Whole;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // bytes=-N: the last N bytes.
        return match number(last) {
            None => Span::Whole,
            Some(0) => Span::Unsatisfiable,
            Some(_) if len == 0 => Span::Whole,
            Some(suffix) => Span::Part(len.saturating_sub(suffix), len),
        };
    }
    let Some(start) = number(first) else {
        return Span::Whole;
    };
    let end = if last.is_empty() {
        len
    } else {
        match number(last) {
            Some(last) if last >= start => last.saturating_add(1).min(len),
            _ => return Span::Whole,
        }
    };
    if start >= len {
        Span::Unsatisfiable
    } else {
        Span::Part(start, end)
    }
}

/// Limits of the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Connections served at once; more wait to be accepted. Default 256.
    pub max_connections: usize,
    /// How long a client may take to send a request's head. Default 30 s.
    pub header_timeout: Duration,
    /// How long a response may make no progress being written before its connection is
    /// closed (the client stopped reading). Default 30 s.
    pub write_timeout: Duration,
    /// Bytes of chunk bodies held for responses at once, across connections, from when a
    /// chunk is read until its response is written or abandoned; a response waits for its
    /// share. Default 256 MiB (a chunk larger than all of it takes all of it).
    pub bytes_in_flight: u64,
    /// Chunks being read (and re-encoded) at once. Default 32.
    pub reads_in_flight: usize,
    /// The limit re-encoding runs under: by default one thread per core; give a
    /// [`ChunkSource`](crate::ChunkSource)'s (`cpu_limit`) to share one.
    pub cpu: CpuLimit,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            bytes_in_flight: 256 << 20,
            reads_in_flight: 32,
            cpu: CpuLimit::per_core(),
        }
    }
}

/// What the requests of one server share.
struct Shared {
    store: Arc<dyn ChunkStore>,
    cpu: CpuLimit,
    reads: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// The permits of `bytes`.
    byte_budget: u32,
}

/// Serves `store` read-only on `listener` until `shutdown` completes.
///
/// Errors of the store are logged (with `tracing`) and answered without their details: a 404
/// for a missing chunk, a 503 when the store is unavailable, a 500 otherwise, naming the chunk
/// but never a path or an object key.
///
/// # Errors
/// Never for a client's doing; only if accepting fails for good (the listener is closed).
pub async fn serve_http(
    listener: TcpListener,
    store: Arc<dyn ChunkStore>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let byte_budget =
        u32::try_from(options.bytes_in_flight.clamp(1, u64::from(u32::MAX))).unwrap_or(u32::MAX);
    let shared = Arc::new(Shared {
        store,
        cpu: options.cpu.clone(),
        reads: Arc::new(Semaphore::new(options.reads_in_flight.max(1))),
        bytes: Arc::new(Semaphore::new(byte_budget as usize)),
        byte_budget,
    });
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return Ok(()),
            permit = Arc::clone(&slots).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return Ok(()) };
        let accepted = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        // Out of descriptors and the like: wait a little, keep serving.
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        let timeout = options.header_timeout;
        // A write that makes no progress for the write timeout fails, and ends the connection.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(options.write_timeout));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(answer(&shared, &request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(Box::pin(stream)), service)
                .await;
            drop(permit);
        });
    }
}

/// A response body: its bytes, with their share of the server's budget, which goes with them
/// until they are written (hyper queues a body's data until the socket takes it) or abandoned
/// with their connection.
struct Budgeted {
    data: Option<Held>,
}

/// Bytes that hold their share of the budget.
struct Held {
    bytes: Bytes,
    _share: Option<OwnedSemaphorePermit>,
}

impl bytes::Buf for Held {
    fn remaining(&self) -> usize {
        self.bytes.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.bytes.chunk()
    }

    fn advance(&mut self, count: usize) {
        self.bytes.advance(count);
    }
}

impl hyper::body::Body for Budgeted {
    type Data = Held;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Held>, Infallible>>> {
        std::task::Poll::Ready(
            self.data
                .take()
                .filter(|held| !held.bytes.is_empty())
                .map(|held| Ok(hyper::body::Frame::data(held))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(|held| held.bytes.is_empty())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(
            self.data.as_ref().map_or(0, |held| held.bytes.len() as u64),
        )
    }
}

type Reply = Response<Budgeted>;

fn reply(status: StatusCode, body: Bytes, share: Option<OwnedSemaphorePermit>) -> Reply {
    let mut response = Response::new(Budgeted {
        data: Some(Held {
            bytes: body,
            _share: share,
        }),
    });
    *response.status_mut() = status;
    response
}

fn plain(status: StatusCode, text: String) -> Reply {
    let mut response = reply(status, Bytes::from(text + "\n"), None);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The answer to a store's error: the status and a text that names the chunk and nothing of
/// where it is kept; the whole error goes to the log.
fn failed(digest: &Digest, error: &StoreError) -> Reply {
    if error.is_missing() {
        return plain(StatusCode::NOT_FOUND, "no such chunk".to_owned());
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    tracing::warn!("serving chunk {}: {text}", Hex(*digest));
    match error {
        StoreError::Unavailable { .. } | StoreError::Denied { .. } => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("chunk {}: the store is unavailable", Hex(*digest)),
        ),
        _ => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("chunk {} cannot be read", Hex(*digest)),
        ),
    }
}

/// The response to one request.
async fn answer(shared: &Shared, request: &Request<Incoming>) -> Reply {
    let head = request.method() == Method::HEAD;
    if !head && request.method() != Method::GET {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "this server is read-only: GET and HEAD only".to_owned(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Route::Chunk(encoding, digest) = route(request.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "no such chunk".to_owned());
    };
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let Ok(reading) = shared.reads.acquire().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
    };
    if head {
        // The stored length is the answer when the chunk is kept as asked: nothing is read
        // or decoded.
        match shared.store.stat(&digest).await {
            Ok(stat) if stat.encoding == encoding => {
                return respond(stat.len, range, None, None);
            }
            Ok(_) => {}
            Err(error) => return failed(&digest, &error),
        }
    }
    let body = match chunk_in(shared, &digest, encoding).await {
        Ok(body) => body,
        Err(error) => return failed(&digest, &error),
    };
    drop(reading);
    let len = body.len() as u64;
    if head {
        return respond(len, range, None, None);
    }
    // The body's share of the budget, held until the response is written or abandoned.
    let units = u32::try_from(len.max(1))
        .unwrap_or(u32::MAX)
        .min(shared.byte_budget);
    let Ok(share) = Arc::clone(&shared.bytes).acquire_many_owned(units).await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
    };
    respond(len, range, Some(body), Some(share))
}

/// The response for a chunk of `len` bytes (its `body`, or headers only), with the `Range`
/// asked for.
fn respond(
    len: u64,
    range: Option<&str>,
    body: Option<Bytes>,
    share: Option<OwnedSemaphorePermit>,
) -> Reply {
    let part = span(range, len);
    let (status, sent) = match part {
        Span::Whole => (StatusCode::OK, 0..len),
        Span::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start..end),
        Span::Unsatisfiable => {
            let mut response = plain(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range past the end".to_owned(),
            );
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    let bytes = body.map_or_else(Bytes::new, |body| {
        body.slice(usize::try_from(sent.start).unwrap_or(0)..usize::try_from(sent.end).unwrap_or(0))
    });
    let mut response = reply(status, bytes, share);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&(sent.end - sent.start).to_string()) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    if let Span::Part(start, end) = part
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    // Chunks never change: a digest names one content forever.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

/// Chunk `digest` encoded as `wanted`, re-encoded (under the server's CPU limit) if the store
/// keeps it otherwise.
async fn chunk_in(
    shared: &Shared,
    digest: &Digest,
    wanted: ChunkEncoding,
) -> Result<Bytes, StoreError> {
    let chunk = shared.store.get(digest).await?;
    if chunk.encoding == wanted {
        return Ok(Bytes::from(chunk.bytes));
    }
    let name = Arc::clone(shared.store.name());
    let digest = *digest;
    // A chunk that does not decode is passed on as it is: the client's decoder then reports
    // it corrupt, which it is, instead of the server failing as if it were down.
    let recode = move || match decode_chunk(&chunk, MAX_BLOB_SIZE) {
        Ok(plaintext) => encode_chunk(&plaintext, wanted).map_err(|source| StoreError::Encode {
            store: name,
            digest: Hex(digest),
            source,
        }),
        Err(_) => Ok(chunk.bytes),
    };
    match shared.cpu.run(recode).await {
        Ok(encoded) => Ok(Bytes::from(encoded?)),
        Err(failure) => Err(StoreError::DecodeTask {
            store: Arc::clone(shared.store.name()),
            digest: Hex(digest),
            message: failure.describe().to_owned(),
        }),
    }
}

/// Takes arbitrary bytes as a request (feature `testing`): the first line a path, the second a
/// `Range` value, the first two bytes of the rest a body length. A routed chunk's digest is
/// the one the path spells, and a span stays inside the body.
///
/// # Panics
/// If either parser breaks its promise: this is the body of a fuzz target.
#[cfg(feature = "testing")]
#[allow(clippy::panic)]
pub fn check_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let path = lines.next().unwrap_or_default();
    let range = lines.next();
    let len = lines.next().map_or(0, |rest| {
        rest.bytes()
            .take(2)
            .fold(0u64, |n, b| n * 256 + u64::from(b))
    });
    if let Route::Chunk(_, digest) = route(path) {
        let hex = crate::digest::to_hex(&digest);
        assert!(path.contains(&hex), "{path:?} routed to {hex}");
    }
    match span(range, len) {
        Span::Part(start, end) => assert!(
            start < end && end <= len,
            "{range:?}: {start}..{end} of {len}"
        ),
        Span::Whole | Span::Unsatisfiable => {}
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HEX: &str = "c89ecf3662f839672a1f6830e3f88fcbc3cd29992d5ee8bd616072313d953b2e";

    #[test]
    fn paths_of_both_layouts_and_nothing_else() {
        let digest = from_hex(HEX).unwrap();
        assert_eq!(
            route(&format!("/c89e/{HEX}.cacnk")),
            Route::Chunk(ChunkEncoding::CasyncCompressed, digest)
        );
        assert_eq!(
            route(&format!("/.chunks/c89e/{HEX}?x=1")),
            Route::Chunk(ChunkEncoding::PbsBlob, digest)
        );
        for bad in [
            "/".to_owned(),
            format!("/c89e/{HEX}"),
            format!("/c89f/{HEX}.cacnk"),
            format!("/C89E/{}.cacnk", HEX.to_uppercase()),
            format!("/.chunks/c89e/{HEX}.cacnk"),
            format!("/x/.chunks/c89e/{HEX}"),
            format!("/c89e/{}.cacnk", &HEX[..62]),
            "/c89e/../etc/passwd".to_owned(),
            "/.chunks/c89e/".to_owned(),
        ] {
            assert_eq!(route(&bad), Route::NotFound, "{bad}");
        }
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(span(None, 100), Span::Whole);
        assert_eq!(span(Some("bytes=0-9"), 100), Span::Part(0, 10));
        assert_eq!(span(Some("bytes=90-"), 100), Span::Part(90, 100));
        assert_eq!(span(Some("bytes=90-500"), 100), Span::Part(90, 100));
        assert_eq!(span(Some("bytes=-10"), 100), Span::Part(90, 100));
        assert_eq!(span(Some("bytes=-500"), 100), Span::Part(0, 100));
        assert_eq!(span(Some("bytes=100-"), 100), Span::Unsatisfiable);
        assert_eq!(span(Some("bytes=-0"), 100), Span::Unsatisfiable);
        assert_eq!(span(Some("bytes=0-1,5-6"), 100), Span::Whole);
        assert_eq!(span(Some("items=0-1"), 100), Span::Whole);
        assert_eq!(span(Some("bytes=9-3"), 100), Span::Whole);
        assert_eq!(span(Some("bytes=x-3"), 100), Span::Whole);
        assert_eq!(span(Some("bytes=3-x"), 100), Span::Whole);
        assert_eq!(
            span(Some("bytes=99999999999999999999999-"), 100),
            Span::Whole
        );
    }

    proptest! {
        /// Any header: a span inside the body, never a panic.
        #[test]
        fn spans_stay_inside_the_body(header in "(bytes=)?[0-9 ,-]{0,12}", len in 0u64..1000) {
            if let Span::Part(start, end) = span(Some(&header), len) {
                prop_assert!(start < end && end <= len, "{header} {len}: {start}..{end}");
            }
        }

        /// Well-formed ranges against a model.
        #[test]
        fn ranges_match_a_model(start in 0u64..200, count in 0u64..200, len in 1u64..150) {
            let got = span(Some(&format!("bytes={start}-{}", start + count)), len);
            let want = if start >= len {
                Span::Unsatisfiable
            } else {
                Span::Part(start, (start + count + 1).min(len))
            };
            prop_assert_eq!(got, want);
        }
    }

    #[cfg(feature = "testing")]
    #[test]
    fn the_request_check_holds_on_its_seeds() {
        super::check_request(b"/.chunks/c89e/c89ecf3662f839672a1f6830e3f88fcbc3cd29992d5ee8bd616072313d953b2e\nbytes=10-99\n\x10\x00");
        super::check_request(b"/c89e/x.cacnk\nbytes=-0\n");
        super::check_request(b"");
    }
}
