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
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::blob::MAX_BLOB_SIZE;
use crate::digest::{Digest, Hex, from_hex};
use crate::error::StoreError;
use crate::source::{decode_chunk, encode_chunk};
use crate::store::{ChunkEncoding, ChunkStore, EncodedChunk};

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
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a client may take to send a request's head.
    pub header_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `store` read-only on `listener` until `shutdown` completes.
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
        let store = Arc::clone(&store);
        let timeout = options.header_timeout;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let store = Arc::clone(&store);
                async move { Ok::<_, Infallible>(answer(&*store, &request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The response to one request.
async fn answer(store: &dyn ChunkStore, request: &Request<Incoming>) -> Response<Full<Bytes>> {
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
    let body = match chunk_in(store, &digest, encoding).await {
        Ok(body) => body,
        Err(error) if error.is_missing() => {
            return plain(StatusCode::NOT_FOUND, "no such chunk".to_owned());
        }
        Err(error @ StoreError::Unavailable { .. }) => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
        }
        Err(error) => return plain(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    let len = body.len() as u64;
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let part = span(range, len);
    let (status, body) = match part {
        Span::Whole => (StatusCode::OK, body),
        Span::Part(start, end) => (
            StatusCode::PARTIAL_CONTENT,
            body.slice(usize::try_from(start).unwrap_or(0)..usize::try_from(end).unwrap_or(0)),
        ),
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
    let mut response = Response::new(Full::new(if head { Bytes::new() } else { body.clone() }));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&body.len().to_string()) {
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

/// Chunk `digest` encoded as `wanted`.
async fn chunk_in(
    store: &dyn ChunkStore,
    digest: &Digest,
    wanted: ChunkEncoding,
) -> Result<Bytes, StoreError> {
    let chunk = store.get(digest).await?;
    if chunk.encoding == wanted {
        return Ok(Bytes::from(chunk.bytes));
    }
    let name = Arc::clone(store.name());
    let digest = *digest;
    // A chunk that does not decode is passed on as it is: the client's decoder then reports
    // it corrupt, which it is, instead of the server failing as if it were down.
    let recode = move |chunk: EncodedChunk| match decode_chunk(&chunk, MAX_BLOB_SIZE) {
        Ok(plaintext) => encode_chunk(&plaintext, wanted).map_err(|source| StoreError::Encode {
            store: name,
            digest: Hex(digest),
            source,
        }),
        Err(_) => Ok(chunk.bytes),
    };
    let encoded = match tokio::task::spawn_blocking(move || recode(chunk)).await {
        Ok(result) => result?,
        Err(join) => {
            return Err(StoreError::DecodeTask {
                store: Arc::clone(store.name()),
                digest: Hex(digest),
                message: join.to_string(),
            });
        }
    };
    Ok(Bytes::from(encoded))
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
