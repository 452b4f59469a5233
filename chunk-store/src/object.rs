//! What the object-storage stores share (features `s3`, `http`): chunk layouts under a prefix,
//! requests bounded in number, create-only puts, and one mapping of the client's errors.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, RetryConfig,
};
use tokio::sync::Semaphore;

use crate::digest::{Digest, Hex, to_hex};
use crate::error::{Location, Result, StoreError};
use crate::source::MAX_ENCODED_CHUNK;
use crate::store::{ChunkEncoding, ChunkStat, EncodedChunk, PutOutcome};
use crate::turns::Turns;

/// Where chunks live under a store's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ObjectLayout {
    /// PBS's datastore (and PBS 4's S3 datastore): `.chunks/XXXX/<64 hex>`, the object a
    /// DataBlob.
    #[default]
    Pbs,
    /// A casync store: `XXXX/<64 hex>.cacnk`, the object a compressed casync chunk.
    Castr,
}

impl ObjectLayout {
    /// The key of `digest` below the store's prefix.
    #[must_use]
    pub fn key(self, digest: &Digest) -> String {
        let hex = to_hex(digest);
        match self {
            Self::Pbs => format!(".chunks/{}/{hex}", &hex[..4]),
            Self::Castr => format!("{}/{hex}.cacnk", &hex[..4]),
        }
    }

    /// How chunks are encoded in this layout.
    #[must_use]
    pub fn encoding(self) -> ChunkEncoding {
        match self {
            Self::Pbs => ChunkEncoding::PbsBlob,
            Self::Castr => ChunkEncoding::CasyncCompressed,
        }
    }

    /// `pbs` or `castr`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pbs => "pbs",
            Self::Castr => "castr",
        }
    }
}

/// The retry policy of every remote store: throttling, server errors and timeouts are retried
/// with exponential backoff; not-found and denials never are (the client's rule).
pub(crate) fn retry_config(retries: usize) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: retries,
        retry_timeout: Duration::from_secs(180),
    }
}

/// rustls needs one process-wide crypto provider; cairn's is ring (no C toolchain beyond
/// ring's own build).
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The layout a store was given, or the one found by its first chunk.
const UNKNOWN: u8 = 0;

fn layout_code(layout: ObjectLayout) -> u8 {
    match layout {
        ObjectLayout::Pbs => 1,
        ObjectLayout::Castr => 2,
    }
}

/// Chunks as objects of a client, below a prefix.
#[derive(Debug)]
pub(crate) struct ObjectChunks {
    pub(crate) name: Arc<str>,
    /// What locations start with: `s3://BUCKET` or the base URL.
    base: String,
    prefix: String,
    /// A layout code, [`UNKNOWN`] until the first chunk found tells.
    layout: AtomicU8,
    client: Arc<dyn ObjectStore>,
    in_flight: Arc<Semaphore>,
    /// Why puts are refused (`None`: they are not).
    read_only: Option<&'static str>,
    /// Puts under way, by digest: a second put of one chunk waits for the first, so that
    /// within a process exactly one inserts it even where the service's create-only put is
    /// not atomic (across processes, the service's conditional put decides).
    puts: Turns,
}

impl ObjectChunks {
    pub(crate) fn new(
        name: Arc<str>,
        base: String,
        prefix: &str,
        layout: Option<ObjectLayout>,
        client: Arc<dyn ObjectStore>,
        max_in_flight: usize,
        read_only: Option<&'static str>,
    ) -> Self {
        Self {
            read_only,
            name,
            base,
            prefix: prefix.trim_matches('/').to_owned(),
            layout: AtomicU8::new(layout.map_or(UNKNOWN, layout_code)),
            client,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            puts: Turns::default(),
        }
    }

    /// The layout, if known (given, or found).
    pub(crate) fn layout(&self) -> Option<ObjectLayout> {
        match self.layout.load(Ordering::Relaxed) {
            1 => Some(ObjectLayout::Pbs),
            2 => Some(ObjectLayout::Castr),
            _ => None,
        }
    }

    /// The layouts to try for a chunk: the known one, or both.
    fn layouts(&self) -> Vec<ObjectLayout> {
        match self.layout() {
            Some(layout) => vec![layout],
            None => vec![ObjectLayout::Pbs, ObjectLayout::Castr],
        }
    }

    pub(crate) fn encoding(&self) -> ChunkEncoding {
        self.layout().unwrap_or_default().encoding()
    }

    /// The key of `relative` with the prefix.
    pub(crate) fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    pub(crate) fn chunk_key(&self, layout: ObjectLayout, digest: &Digest) -> String {
        self.key(&layout.key(digest))
    }

    fn location(&self, key: &str) -> Location {
        Location::Key(format!("{}/{key}", self.base))
    }

    /// The error for `error` on `key`.
    fn error(&self, digest: Option<&Digest>, key: &str, error: object_store::Error) -> StoreError {
        let location = self.location(key);
        let store = Arc::clone(&self.name);
        match error {
            object_store::Error::NotFound { .. } if digest.is_some() => {
                StoreError::missing(&store, digest.unwrap_or(&[0; 32]), location)
            }
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StoreError::Denied {
                store,
                digest: digest.map(|d| Hex(*d)),
                location,
                source: Box::new(error),
            },
            other => StoreError::Unavailable {
                store,
                digest: digest.map(|d| Hex(*d)),
                location,
                source: Box::new(other),
            },
        }
    }

    /// The object at `key` as it arrives, or `None` if there is none: refused
    /// ([`StoreError::Oversized`]) if its announced length is over `limit`.
    async fn open(
        &self,
        key: &str,
        digest: Option<&Digest>,
        limit: u64,
        what: &'static str,
    ) -> Result<Option<ObjectBody>> {
        let permit = Arc::clone(&self.in_flight).acquire_owned().await.ok();
        let path = ObjectPath::from(key);
        let result = match self.client.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(self.error(digest, key, error)),
        };
        let body = ObjectBody {
            declared: result.range.end.saturating_sub(result.range.start),
            stream: result.into_stream(),
            limit,
            received: 0,
            what,
            store: Arc::clone(&self.name),
            digest: digest.map(|d| Hex(*d)),
            location: self.location(key),
            _permit: permit,
        };
        body.check(body.declared)?;
        Ok(Some(body))
    }

    /// The whole object at `key`, at most `limit` bytes, or `None` if there is none. The body
    /// is read into one buffer the size it announced, and no further.
    async fn fetch(
        &self,
        key: &str,
        digest: Option<&Digest>,
        limit: u64,
        what: &'static str,
    ) -> Result<Option<Vec<u8>>> {
        let Some(mut body) = self.open(key, digest, limit, what).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(body.declared).unwrap_or(0));
        while let Some(piece) = body.next().await? {
            bytes.extend_from_slice(&piece);
        }
        Ok(Some(bytes))
    }

    /// The object at `relative` (below the prefix), at most `limit` bytes, or `None`.
    pub(crate) async fn read_object(&self, relative: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        self.fetch(&self.key(relative), None, limit, "an object")
            .await
    }

    /// The object at `relative` (below the prefix) as it arrives, or `None`; refused if it
    /// announces more than `limit` bytes, and cut off with an error if it sends more.
    pub(crate) async fn open_object(
        &self,
        relative: &str,
        limit: u64,
        what: &'static str,
    ) -> Result<Option<ObjectBody>> {
        self.open(&self.key(relative), None, limit, what).await
    }

    /// Writes the object at `relative` (below the prefix), replacing it.
    pub(crate) async fn write_object(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        let key = self.key(relative);
        let _permit = self.in_flight.acquire().await.ok();
        self.client
            .put(&ObjectPath::from(key.as_str()), PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(|e| self.error(None, &key, e))
    }

    /// Chunk `digest`, refused if its body is over `limit` (and never over
    /// [`MAX_ENCODED_CHUNK`]).
    pub(crate) async fn get(&self, digest: &Digest, limit: u64) -> Result<EncodedChunk> {
        let limit = limit.min(MAX_ENCODED_CHUNK);
        let what = if limit == MAX_ENCODED_CHUNK {
            "any chunk"
        } else {
            "a chunk of its length"
        };
        let layouts = self.layouts();
        for &layout in &layouts {
            let key = self.chunk_key(layout, digest);
            if let Some(bytes) = self.fetch(&key, Some(digest), limit, what).await? {
                self.layout.store(layout_code(layout), Ordering::Relaxed);
                return Ok(EncodedChunk {
                    encoding: layout.encoding(),
                    bytes,
                    location: self.location(&key),
                });
            }
        }
        let key = self.chunk_key(layouts[0], digest);
        Err(StoreError::missing(&self.name, digest, self.location(&key)))
    }

    /// How chunk `digest` is stored, from a `HEAD` of its object.
    pub(crate) async fn stat(&self, digest: &Digest) -> Result<ChunkStat> {
        let layouts = self.layouts();
        for &layout in &layouts {
            let key = self.chunk_key(layout, digest);
            let _permit = self.in_flight.acquire().await.ok();
            match self.client.head(&ObjectPath::from(key.as_str())).await {
                Ok(meta) => {
                    self.layout.store(layout_code(layout), Ordering::Relaxed);
                    return Ok(ChunkStat::new(layout.encoding(), meta.size));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(self.error(Some(digest), &key, error)),
            }
        }
        let key = self.chunk_key(layouts[0], digest);
        Err(StoreError::missing(&self.name, digest, self.location(&key)))
    }

    pub(crate) async fn exists(&self, digest: &Digest) -> Result<bool> {
        match self.stat(digest).await {
            Ok(_) => Ok(true),
            Err(error) if error.is_missing() => Ok(false),
            Err(error) => Err(error),
        }
    }

    pub(crate) async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        if let Some(why) = self.read_only {
            return Err(StoreError::store(&self.name, why, None));
        }
        self.puts.run(digest, self.create(digest, encoded)).await
    }

    /// One create-only put.
    ///
    /// A service may answer a put of an object it has before reading the body, and close the
    /// connection: the client then sees a broken pipe, not the refusal. A put that fails in
    /// transport therefore asks whether the object is there (an object put is atomic, so a
    /// present one is whole) and, if not, tries once more.
    async fn create(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        let key = self.chunk_key(self.layout().unwrap_or_default(), digest);
        let path = ObjectPath::from(key.as_str());
        let payload = PutPayload::from(encoded);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let put = {
                let _permit = self.in_flight.acquire().await.ok();
                let options = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                self.client.put_opts(&path, payload.clone(), options).await
            };
            let error = match put {
                Ok(_) => return Ok(PutOutcome::Inserted),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => return Ok(PutOutcome::AlreadyPresent),
                Err(error @ object_store::Error::Generic { .. }) => error,
                Err(error) => return Err(self.error(Some(digest), &key, error)),
            };
            let present = {
                let _permit = self.in_flight.acquire().await.ok();
                self.client.head(&path).await
            };
            match present {
                Ok(_) => return Ok(PutOutcome::AlreadyPresent),
                Err(object_store::Error::NotFound { .. }) if attempts < 2 => {}
                Err(_) => return Err(self.error(Some(digest), &key, error)),
            }
        }
    }
}

/// A remote object's body as it arrives (an index being downloaded): its announced length,
/// then its bytes in pieces, never more than its limit. Holds one of the store's request slots
/// until dropped.
pub struct ObjectBody {
    declared: u64,
    stream: futures_util::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    limit: u64,
    received: u64,
    what: &'static str,
    store: Arc<str>,
    /// The chunk, if the object is one.
    digest: Option<Hex<Digest>>,
    location: Location,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody")
            .field("location", &self.location)
            .field("declared", &self.declared)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl ObjectBody {
    /// The length the server announced.
    #[must_use]
    pub fn declared_len(&self) -> u64 {
        self.declared
    }

    /// Where it comes from (`s3://BUCKET/KEY`, the URL).
    #[must_use]
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The next piece, or `None` at the end.
    ///
    /// # Errors
    /// [`StoreError::Oversized`] once more than the limit has come;
    /// [`StoreError::Unavailable`] if the transfer fails.
    pub async fn next(&mut self) -> Result<Option<bytes::Bytes>> {
        use futures_util::StreamExt as _;
        match self.stream.next().await {
            None => Ok(None),
            Some(Err(error)) => Err(StoreError::Unavailable {
                store: Arc::clone(&self.store),
                digest: self.digest,
                location: self.location.clone(),
                source: Box::new(error),
            }),
            Some(Ok(piece)) => {
                self.received += piece.len() as u64;
                self.check(self.received)?;
                Ok(Some(piece))
            }
        }
    }

    fn check(&self, size: u64) -> Result<()> {
        if size > self.limit {
            return Err(StoreError::Oversized {
                store: Arc::clone(&self.store),
                chunk: self.digest.is_some(),
                location: self.location.clone(),
                size,
                limit: self.limit,
                what: self.what,
            });
        }
        Ok(())
    }
}

/// Implements [`ChunkStore`](crate::ChunkStore) for a store whose `chunks` field is an
/// `Arc<ObjectChunks>`, and gives it the reads of other objects: every remote store behaves the
/// same way.
macro_rules! object_chunk_store {
    ($store:ty) => {
        impl $store {
            /// The object at `relative` (below the store's prefix or URL): its bytes, or `None`
            /// if there is none. Refused if it is over `limit` bytes: from its announced length
            /// before any of it is read, or as soon as more arrives; the bytes are read once,
            /// into a buffer of the announced length.
            ///
            /// # Errors
            /// [`StoreError::Oversized`](crate::StoreError::Oversized),
            /// [`StoreError::Denied`](crate::StoreError::Denied) or
            /// [`StoreError::Unavailable`](crate::StoreError::Unavailable), naming the bucket
            /// and key or the URL.
            pub async fn read_object(
                &self,
                relative: &str,
                limit: u64,
            ) -> $crate::error::Result<Option<Vec<u8>>> {
                self.chunks.read_object(relative, limit).await
            }

            /// The object at `relative` as it arrives (for a caller that checks it piece by
            /// piece, as an index is checked), or `None` if there is none; `what` names it in
            /// the error for a body over `limit`.
            ///
            /// # Errors
            /// As [`read_object`](Self::read_object); the body's pieces fail the same way.
            pub async fn open_object(
                &self,
                relative: &str,
                limit: u64,
                what: &'static str,
            ) -> $crate::error::Result<Option<$crate::object::ObjectBody>> {
                self.chunks.open_object(relative, limit, what).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ChunkStore for $store {
            fn name(&self) -> &std::sync::Arc<str> {
                &self.chunks.name
            }

            fn encoding(&self) -> $crate::store::ChunkEncoding {
                self.chunks.encoding()
            }

            async fn get(
                &self,
                digest: &$crate::digest::Digest,
            ) -> $crate::error::Result<$crate::store::EncodedChunk> {
                self.chunks
                    .get(digest, $crate::source::MAX_ENCODED_CHUNK)
                    .await
            }

            async fn get_within(
                &self,
                digest: &$crate::digest::Digest,
                limit: u64,
            ) -> $crate::error::Result<$crate::store::EncodedChunk> {
                self.chunks.get(digest, limit).await
            }

            async fn stat(
                &self,
                digest: &$crate::digest::Digest,
            ) -> $crate::error::Result<$crate::store::ChunkStat> {
                self.chunks.stat(digest).await
            }

            async fn put(
                &self,
                digest: &$crate::digest::Digest,
                encoded: Vec<u8>,
            ) -> $crate::error::Result<$crate::store::PutOutcome> {
                self.chunks.put(digest, encoded).await
            }

            async fn contains(
                &self,
                digest: &$crate::digest::Digest,
            ) -> $crate::error::Result<bool> {
                self.chunks.exists(digest).await
            }

            /// Objects have no access time to set (PBS 4 keeps its garbage collection's marks
            /// outside the bucket): presence only.
            async fn touch(&self, digest: &$crate::digest::Digest) -> $crate::error::Result<bool> {
                self.chunks.exists(digest).await
            }

            /// Nothing to do: a put is durable once the service has acknowledged it.
            async fn sync(&self) -> $crate::error::Result<()> {
                Ok(())
            }
        }
    };
}

pub(crate) use object_chunk_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_put_chunks_where_pbs_and_casync_do() {
        let digest: Digest = std::array::from_fn(|i| i as u8);
        let hex = to_hex(&digest);
        assert_eq!(
            ObjectLayout::Pbs.key(&digest),
            format!(".chunks/0001/{hex}")
        );
        assert_eq!(
            ObjectLayout::Castr.key(&digest),
            format!("0001/{hex}.cacnk")
        );
    }
}
