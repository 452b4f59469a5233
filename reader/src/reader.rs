//! The cached chunk reader.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cairn_cache::{Cache, CacheBuilder, CacheStats, Weighter};
use cairn_chunk_store::format::MAX_BLOB_SIZE;
use cairn_chunk_store::{ChunkSource, ChunkStore, Hex};
use cairn_index::{ChunkIndex, ChunkInfo, Digest};
use futures_util::{StreamExt as _, stream};

use crate::error::{ChunkFailure, ReaderError, SharedStoreError};
use crate::zero::zero_digests;

/// A decoded chunk as the cache holds it.
pub type ChunkData = Arc<Vec<u8>>;

/// The chunk cache: decoded chunks by digest, weighed in bytes. Share one between readers (all
/// disks of a VM, all NBD connections) by passing clones of it to [`ChunkReader::with_cache`].
pub type ChunkCache = Cache<Digest, ChunkData, ChunkSizeWeigher>;

/// Weighs a decoded chunk by its size in bytes, so a chunk cache's capacity counts bytes of
/// plaintext.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkSizeWeigher;

impl Weighter<Digest, ChunkData> for ChunkSizeWeigher {
    fn weight(&self, _: &Digest, chunk: &ChunkData) -> u64 {
        chunk.len() as u64
    }
}

/// A chunk cache of at most `capacity_bytes` of decoded chunks.
#[must_use]
pub fn chunk_cache(capacity_bytes: u64) -> ChunkCache {
    CacheBuilder::new(capacity_bytes)
        .weighter(ChunkSizeWeigher)
        .build()
}

/// The most chunks one read fetches at once; larger settings are clamped to it.
pub const MAX_CONCURRENCY: usize = 1024;

/// The most chunks fetched ahead of a sequential stream; larger settings are clamped to it.
pub const MAX_READAHEAD_CHUNKS: usize = 1024;

/// How a reader fetches.
///
/// Out-of-range values are clamped, by the setters and again when a reader is made from the
/// options (the fields are public): concurrency to `1..=`[`MAX_CONCURRENCY`], readahead to
/// at most [`MAX_READAHEAD_CHUNKS`] chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderOptions {
    /// Chunks one read fetches at the same time (1 to [`MAX_CONCURRENCY`]). Default 8: enough
    /// to keep a local store and both cores busy; remote stores want more.
    pub concurrency: usize,
    /// Chunks fetched ahead of sequential reads (0 turns readahead off; at most
    /// [`MAX_READAHEAD_CHUNKS`]). Default 4.
    pub readahead_chunks: usize,
    /// At most this many bytes fetched ahead, and never more than half the cache. Default 64 MiB.
    pub readahead_bytes: u64,
    /// The capacity of the reader's own cache, when it makes one. Default 256 MiB.
    pub cache_bytes: u64,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            readahead_chunks: 4,
            readahead_bytes: 64 << 20,
            cache_bytes: 256 << 20,
        }
    }
}

impl ReaderOptions {
    /// Sets [`concurrency`](ReaderOptions::concurrency).
    #[must_use]
    pub fn concurrency(mut self, chunks: usize) -> Self {
        self.concurrency = chunks;
        self.clamped()
    }

    /// Sets [`readahead_chunks`](ReaderOptions::readahead_chunks).
    #[must_use]
    pub fn readahead_chunks(mut self, chunks: usize) -> Self {
        self.readahead_chunks = chunks;
        self.clamped()
    }

    /// The options with every value within its documented range.
    #[must_use]
    fn clamped(self) -> Self {
        Self {
            concurrency: self.concurrency.clamp(1, MAX_CONCURRENCY),
            readahead_chunks: self.readahead_chunks.min(MAX_READAHEAD_CHUNKS),
            ..self
        }
    }

    /// Sets [`readahead_bytes`](ReaderOptions::readahead_bytes).
    #[must_use]
    pub fn readahead_bytes(mut self, bytes: u64) -> Self {
        self.readahead_bytes = bytes;
        self
    }

    /// Sets [`cache_bytes`](ReaderOptions::cache_bytes).
    #[must_use]
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }
}

/// Part of the image as the cache holds it, from [`ChunkReader::read_slices`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageSlice {
    /// `chunk[range]`: bytes of a cached (verified) chunk, shared, not copied.
    Data {
        /// The decoded chunk.
        chunk: ChunkData,
        /// The part of it inside the read.
        range: Range<usize>,
    },
    /// This many zero bytes (zero chunks, served without a fetch).
    Zeros(u64),
}

impl ImageSlice {
    /// The slice's length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        match self {
            Self::Data { range, .. } => (range.end - range.start) as u64,
            Self::Zeros(len) => *len,
        }
    }

    /// Whether the slice is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A read answered without copying: the image's bytes as slices of cached chunks, in order,
/// and how the chunks were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlicedRead {
    /// The bytes, in image order; their lengths add up to the bytes read.
    pub slices: Vec<ImageSlice>,
    /// Chunks this read fetched from the store.
    pub chunks_fetched: u64,
    /// Chunks found in the cache, or already being fetched by another reader.
    pub cache_hits: u64,
    /// Chunks found in the cache because this stream's readahead fetched them.
    pub readahead_hits: u64,
    /// Zero chunks, served without a fetch.
    pub zero_chunks: u64,
}

impl SlicedRead {
    /// The bytes read.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.slices.iter().map(ImageSlice::len).sum()
    }

    /// Whether nothing was read (at or past the end of the image).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// Adds the part of chunk `info` (its `data`, `None` for zeros) inside `wanted`.
    fn push(
        &mut self,
        info: &ChunkInfo,
        data: Option<ChunkData>,
        found: Found,
        wanted: Range<u64>,
    ) {
        let from = info.start.max(wanted.start);
        let to = info.end.min(wanted.end);
        if from >= to {
            return;
        }
        match found {
            Found::Zero => self.zero_chunks += 1,
            Found::Cached => self.cache_hits += 1,
            Found::Ahead => self.readahead_hits += 1,
            Found::Fetched => self.chunks_fetched += 1,
        }
        match data {
            Some(chunk) => {
                let inside = (from - info.start) as usize;
                let range = inside..inside + (to - from) as usize;
                self.slices.push(ImageSlice::Data { chunk, range });
            }
            None => match self.slices.last_mut() {
                Some(ImageSlice::Zeros(run)) => *run += to - from,
                _ => self.slices.push(ImageSlice::Zeros(to - from)),
            },
        }
    }

    /// Copies the bytes into `buf`, which must be at least [`len`](SlicedRead::len) long;
    /// returns the bytes copied.
    fn copy_to(&self, buf: &mut [u8]) -> usize {
        let mut at = 0;
        for slice in &self.slices {
            let len = usize::try_from(slice.len()).unwrap_or(usize::MAX);
            let target = &mut buf[at..at + len];
            match slice {
                ImageSlice::Data { chunk, range } => target.copy_from_slice(&chunk[range.clone()]),
                ImageSlice::Zeros(_) => target.fill(0),
            }
            at += len;
        }
        at
    }
}

/// How a chunk of a read was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Zero,
    Cached,
    Ahead,
    Fetched,
}

/// What a reader has done, from [`ChunkReader::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderStats {
    /// Bytes returned by reads.
    pub bytes_served: u64,
    /// Chunks this reader fetched from the store (cache misses it started).
    pub chunks_fetched: u64,
    /// Chunk reads served as zeros without a fetch.
    pub zero_chunks: u64,
    /// Chunks fetched ahead of sequential reads.
    pub readahead_issued: u64,
    /// Reads that found a chunk readahead had fetched.
    pub readahead_hits: u64,
    /// The shared cache's counters.
    pub cache: CacheStats,
}

#[derive(Debug, Default)]
struct Counters {
    bytes_served: AtomicU64,
    chunks_fetched: AtomicU64,
    zero_chunks: AtomicU64,
    readahead_issued: AtomicU64,
    readahead_hits: AtomicU64,
}

/// One stream's sequential-read detection. A random read touches only the atomics (no lock,
/// no shared write beyond `next_offset`), so concurrent random readers of one stream do not
/// queue on each other.
#[derive(Debug, Default)]
struct Stream {
    /// Where a sequential read would start next.
    next_offset: AtomicU64,
    /// Whether `ahead` may hold anything: readahead has run since the stream last moved.
    active: AtomicBool,
    /// What readahead did.
    ahead: Mutex<Ahead>,
}

/// What a stream's readahead has done since the stream last moved.
#[derive(Debug, Default)]
struct Ahead {
    /// Chunks before this one have been read or fetched ahead already (0: none yet).
    ahead_until: usize,
    /// Digests fetched ahead and not read yet.
    fetched: HashSet<Digest>,
}

impl Stream {
    fn ahead(&self) -> std::sync::MutexGuard<'_, Ahead> {
        self.ahead.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `digest` was fetched ahead and not read yet; forgets it.
    fn take_fetched(&self, digest: &Digest) -> bool {
        self.active.load(Ordering::Relaxed) && self.ahead().fetched.remove(digest)
    }
}

/// Random access to the image an index describes, every chunk fetched through a shared cache.
///
/// Reads spanning several chunks fetch them concurrently; chunks known to be zeros are served
/// without a fetch or cache space; sequential reads trigger readahead. Every chunk is verified
/// (digest and length) before it is cached.
///
/// # Streams
/// Readahead follows one *stream* of reads: a read that starts where the stream's previous read
/// ended is sequential and fetches the next chunks ahead; any other read moves the stream and
/// fetches nothing ahead. The decision is made when a read starts, so reads that are issued in
/// order but complete out of order still count as sequential. A clone is the same stream; for
/// independent readers of one image (two files open on it, two NBD connections) make one
/// stream each with [`new_stream`](ChunkReader::new_stream), which shares everything else.
/// [`AsyncChunkReader`](crate::AsyncChunkReader) and
/// [`BlockingChunkReader`](crate::BlockingChunkReader) each make their own.
#[derive(Debug, Clone)]
pub struct ChunkReader {
    inner: Arc<Inner>,
    stream: Arc<Stream>,
}

#[derive(Debug)]
struct Inner {
    index: Arc<dyn ChunkIndex>,
    source: ChunkSource,
    cache: ChunkCache,
    /// The zero chunks' digests and lengths: a handful, so a scan beats hashing.
    zeros: Vec<(Digest, u64)>,
    options: ReaderOptions,
    counters: Counters,
}

impl ChunkReader {
    /// A reader of `index` over `store`, with a cache of its own
    /// ([`ReaderOptions::cache_bytes`]).
    #[must_use]
    pub fn new(
        index: Arc<dyn ChunkIndex>,
        store: Arc<dyn ChunkStore>,
        options: ReaderOptions,
    ) -> Self {
        let cache = chunk_cache(options.cache_bytes);
        Self::with_cache(index, store, cache, options)
    }

    /// A reader of `index` over `store` that uses `cache`, which other readers may share.
    #[must_use]
    pub fn with_cache(
        index: Arc<dyn ChunkIndex>,
        store: Arc<dyn ChunkStore>,
        cache: ChunkCache,
        options: ReaderOptions,
    ) -> Self {
        let source = ChunkSource::new(store, index.digest_algorithm());
        Self::with_source(index, source, cache, options)
    }

    /// A reader of `index` over chunks from `source` (one made with a key, for an encrypted
    /// backup: zero chunks are then recognised by the key's digest), using `cache`.
    #[must_use]
    pub fn with_source(
        index: Arc<dyn ChunkIndex>,
        source: ChunkSource,
        cache: ChunkCache,
        options: ReaderOptions,
    ) -> Self {
        let algorithm = source.algorithm();
        let fixed_chunk_size = (index.format() == cairn_index::IndexFormat::Fidx)
            .then(|| index.chunk(0).map(|c| c.len()))
            .flatten();
        let zeros = zero_digests(index.as_ref(), algorithm, fixed_chunk_size)
            .into_iter()
            .collect();
        Self {
            inner: Arc::new(Inner {
                source,
                index,
                cache,
                zeros,
                options: options.clamped(),
                counters: Counters::default(),
            }),
            stream: Arc::default(),
        }
    }

    /// A reader of the same image, store, cache and counters with a stream of its own (see
    /// [Streams](ChunkReader#streams)): its sequential reads are told apart from this one's.
    #[must_use]
    pub fn new_stream(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            stream: Arc::default(),
        }
    }

    /// [`new_stream`](ChunkReader::new_stream), taking this handle.
    pub(crate) fn into_new_stream(self) -> Self {
        Self {
            inner: self.inner,
            stream: Arc::default(),
        }
    }

    /// The options in use (after clamping).
    #[must_use]
    pub fn options(&self) -> ReaderOptions {
        self.inner.options
    }

    /// The image's length in bytes.
    #[must_use]
    pub fn image_size(&self) -> u64 {
        self.inner.index.image_size()
    }

    /// The index.
    #[must_use]
    pub fn index(&self) -> &Arc<dyn ChunkIndex> {
        &self.inner.index
    }

    /// The cache (a handle to the shared one).
    #[must_use]
    pub fn cache(&self) -> &ChunkCache {
        &self.inner.cache
    }

    /// Whether `chunk` is known to be all zeros (served without a fetch).
    #[must_use]
    pub fn is_zero_chunk(&self, chunk: &ChunkInfo) -> bool {
        self.inner.zeros.contains(&(chunk.digest, chunk.len()))
    }

    /// The reader's counters and the cache's.
    #[must_use]
    pub fn stats(&self) -> ReaderStats {
        let c = &self.inner.counters;
        ReaderStats {
            bytes_served: c.bytes_served.load(Ordering::Relaxed),
            chunks_fetched: c.chunks_fetched.load(Ordering::Relaxed),
            zero_chunks: c.zero_chunks.load(Ordering::Relaxed),
            readahead_issued: c.readahead_issued.load(Ordering::Relaxed),
            readahead_hits: c.readahead_hits.load(Ordering::Relaxed),
            cache: self.inner.cache.stats(),
        }
    }

    /// Reads into `buf` from image offset `offset`: returns the bytes read, fewer than
    /// `buf.len()` only at the end of the image, 0 at or past it.
    ///
    /// # Errors
    /// [`ReaderError::Chunk`] naming the offset and the chunk if one cannot be fetched, decoded
    /// or verified; [`ReaderError::ChunkLength`] if a chunk's length disagrees with the index.
    /// The cache stays usable either way.
    pub async fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, ReaderError> {
        let read = self.read_slices(offset, buf.len() as u64).await?;
        Ok(read.copy_to(buf))
    }

    /// Reads `len` bytes from image offset `offset` (fewer at the end of the image, none at or
    /// past it) without copying them: slices of the cached chunks, and zero runs. The chunks
    /// are fetched concurrently, as [`read_at`](ChunkReader::read_at) does.
    ///
    /// The slices keep their chunks alive: hold them briefly (a server answering a request),
    /// or copy what a long-lived holder needs.
    ///
    /// # Errors
    /// As for [`read_at`](ChunkReader::read_at).
    pub async fn read_slices(&self, offset: u64, len: u64) -> Result<SlicedRead, ReaderError> {
        let size = self.image_size();
        if offset >= size || len == 0 {
            return Ok(SlicedRead::default());
        }
        let end = offset.saturating_add(len).min(size);
        let index = &self.inner.index;
        let (Some((first, _)), Some((last, _))) = (index.locate(offset), index.locate(end - 1))
        else {
            return Ok(SlicedRead::default());
        };
        self.read_ahead(offset, end, last);
        let mut read = SlicedRead::default();
        if first == last {
            // One chunk (most small reads): no stream of fetches to set up.
            if let Some(info) = index.chunk(first) {
                let (data, found) = self.chunk_data(&info, offset).await?;
                read.push(&info, data, found, offset..end);
            }
        } else {
            let fetches = (first..=last).map(|i| {
                let reader = self.clone();
                async move {
                    match reader.inner.index.chunk(i) {
                        Some(info) => reader
                            .chunk_data(&info, offset.max(info.start))
                            .await
                            .map(|(data, found)| Some((info, data, found))),
                        None => Ok(None),
                    }
                }
            });
            let mut completed = stream::iter(fetches).buffered(self.inner.options.concurrency);
            while let Some(result) = completed.next().await {
                if let Some((info, data, found)) = result? {
                    read.push(&info, data, found, offset..end);
                }
            }
        }
        self.inner
            .counters
            .bytes_served
            .fetch_add(read.len(), Ordering::Relaxed);
        Ok(read)
    }

    /// Reads exactly `buf.len()` bytes from `offset`.
    ///
    /// # Errors
    /// As [`read_at`](ChunkReader::read_at), and [`ReaderError::UnexpectedEnd`] if the image ends
    /// first.
    pub async fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ReaderError> {
        let read = self.read_at(buf, offset).await?;
        if read < buf.len() {
            return Err(ReaderError::UnexpectedEnd {
                offset,
                len: buf.len() as u64,
                size: self.image_size(),
            });
        }
        Ok(())
    }

    /// The plaintext of chunk `index` (zeros for a zero chunk), through the cache.
    ///
    /// # Errors
    /// As [`read_at`](ChunkReader::read_at); `None` if there is no such chunk.
    pub async fn chunk(&self, index: usize) -> Result<Option<ChunkData>, ReaderError> {
        let Some(info) = self.inner.index.chunk(index) else {
            return Ok(None);
        };
        match self.chunk_data(&info, info.start).await?.0 {
            Some(data) => Ok(Some(data)),
            None => Ok(Some(Arc::new(vec![
                0;
                usize::try_from(info.len()).unwrap_or(0)
            ]))),
        }
    }

    /// Chunk `index` for a reader that needs it once (a restore, for a chunk the image holds
    /// once): from the cache if it is there ([`Once::Cached`]; zeros for a zero chunk), else
    /// fetched, verified and handed to `then` on the verifying thread without being cached
    /// ([`Once::Done`]), so it costs the cache nothing and is freed where it is consumed.
    pub(crate) async fn chunk_once_then<R, F>(
        &self,
        index: usize,
        then: F,
    ) -> Result<Option<Once<R>>, ReaderError>
    where
        F: FnOnce(Vec<u8>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let Some(info) = self.inner.index.chunk(index) else {
            return Ok(None);
        };
        if self.is_zero_chunk(&info) {
            return Ok(self.chunk(index).await?.map(Once::Cached));
        }
        if let Some(data) = self.inner.cache.peek(&info.digest)
            && data.len() as u64 == info.len()
        {
            return Ok(Some(Once::Cached(data)));
        }
        let expected = checked_len(&info)?;
        self.inner
            .counters
            .chunks_fetched
            .fetch_add(1, Ordering::Relaxed);
        self.inner
            .source
            .read_then(&info.digest, expected, then)
            .await
            .map(|done| Some(Once::Done(done)))
            .map_err(|error| chunk_error(&info, info.start, ChunkFailure::Store(Arc::new(error))))
    }

    /// Whether the store is local ([`ChunkStore::local`]): chunks can be read on the caller's
    /// thread ([`chunk_blocking`](ChunkReader::chunk_blocking)).
    pub(crate) fn reads_locally(&self) -> bool {
        self.inner.source.store().local().is_some()
    }

    /// Chunk `info` for a restore thread that needs it once: from the cache if it is there,
    /// else read and verified on this thread from the local store, without being cached.
    /// `None` if the store is not local.
    pub(crate) fn chunk_blocking(
        &self,
        info: &ChunkInfo,
    ) -> Option<Result<ChunkData, ReaderError>> {
        if let Some(data) = self.inner.cache.peek(&info.digest)
            && data.len() as u64 == info.len()
        {
            return Some(Ok(data));
        }
        let expected = match checked_len(info) {
            Ok(expected) => expected,
            Err(error) => return Some(Err(error)),
        };
        let read = self.inner.source.read_blocking(&info.digest, expected)?;
        self.inner
            .counters
            .chunks_fetched
            .fetch_add(1, Ordering::Relaxed);
        Some(
            read.map(Arc::new).map_err(|error| {
                chunk_error(info, info.start, ChunkFailure::Store(Arc::new(error)))
            }),
        )
    }

    /// The chunk's data, or `None` for a zero chunk, and how it was found. `offset` is for
    /// error messages.
    async fn chunk_data(
        &self,
        info: &ChunkInfo,
        offset: u64,
    ) -> Result<(Option<ChunkData>, Found), ReaderError> {
        if self.is_zero_chunk(info) {
            self.inner
                .counters
                .zero_chunks
                .fetch_add(1, Ordering::Relaxed);
            return Ok((None, Found::Zero));
        }
        let (data, fetched) = self.fetch(info, offset).await?;
        let was_ahead = self.stream.take_fetched(&info.digest);
        if was_ahead {
            self.inner
                .counters
                .readahead_hits
                .fetch_add(1, Ordering::Relaxed);
        }
        let found = if fetched {
            Found::Fetched
        } else if was_ahead {
            Found::Ahead
        } else {
            Found::Cached
        };
        Ok((Some(data), found))
    }

    /// Fetches (or finds in the cache) the verified chunk `info`; `true` if this call started
    /// the fetch.
    async fn fetch(&self, info: &ChunkInfo, offset: u64) -> Result<(ChunkData, bool), ReaderError> {
        let len = info.len();
        let expected = checked_len(info)?;
        let mut started = false;
        let data = self
            .inner
            .cache
            .get_or_fetch_with(info.digest, |digest| {
                started = true;
                // Cloned only for a fetch: a hit touches no reference count.
                let inner = Arc::clone(&self.inner);
                async move {
                    inner
                        .counters
                        .chunks_fetched
                        .fetch_add(1, Ordering::Relaxed);
                    inner
                        .source
                        .read(&digest, expected)
                        .await
                        .map(Arc::new)
                        .map_err(|e| SharedStoreError(Arc::new(e)))
                }
            })
            .await
            .map_err(|error| {
                chunk_error(info, offset, ChunkFailure::from_cache(&info.digest, error))
            })?;
        // The cache is shared: a chunk another reader cached under this digest must still fit
        // this index's range.
        if data.len() as u64 != len {
            return Err(ReaderError::ChunkLength {
                chunk: info.index,
                digest: Hex(info.digest),
                start: info.start,
                expected: len,
                actual: data.len() as u64,
            });
        }
        Ok((data, started))
    }

    /// Readahead, as a read of `offset..end` (ending in chunk `last_chunk`) starts: if it
    /// continues this stream's previous read, fetch the next chunks in the background; if it
    /// reads elsewhere, fetch nothing ahead and forget what was.
    fn read_ahead(&self, offset: u64, end: u64, last_chunk: usize) {
        let options = &self.inner.options;
        if options.readahead_chunks == 0 {
            return;
        }
        let stream = &self.stream;
        if stream.next_offset.swap(end, Ordering::Relaxed) != offset {
            // Random access: fetch nothing ahead, forget what was (if anything).
            if stream.active.swap(false, Ordering::Relaxed) {
                let mut readahead = stream.ahead();
                readahead.ahead_until = 0;
                readahead.fetched.clear();
            }
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let window = {
            let mut readahead = stream.ahead();
            stream.active.store(true, Ordering::Relaxed);
            let budget = options.readahead_bytes.min(self.inner.cache.capacity() / 2);
            let until = last_chunk
                .saturating_add(1)
                .saturating_add(options.readahead_chunks)
                .min(self.inner.index.chunk_count());
            let mut window = Vec::new();
            // Bytes ahead of this read: what is already fetched ahead counts against the budget.
            let mut ahead = 0u64;
            for i in last_chunk + 1..until {
                let Some(info) = self.inner.index.chunk(i) else {
                    break;
                };
                if ahead + info.len() > budget {
                    break;
                }
                ahead += info.len();
                if i < readahead.ahead_until {
                    continue;
                }
                readahead.ahead_until = i + 1;
                if !self.is_zero_chunk(&info) && !self.inner.cache.contains(&info.digest) {
                    readahead.fetched.insert(info.digest);
                    window.push(info);
                }
            }
            window
        };
        for info in window {
            self.inner
                .counters
                .readahead_issued
                .fetch_add(1, Ordering::Relaxed);
            let reader = self.clone();
            runtime.spawn(async move {
                // A failure here is reported when the chunk is read for real.
                let _ = reader.fetch(&info, info.start).await;
            });
        }
    }
}

/// What [`ChunkReader::chunk_once_then`] found.
pub(crate) enum Once<R> {
    /// The chunk was in the cache (or is zeros): the caller consumes it.
    Cached(ChunkData),
    /// Fetched and consumed: what the step returned.
    Done(R),
}

/// The length of chunk `info` as a buffer size, refused over the largest chunk.
fn checked_len(info: &ChunkInfo) -> Result<usize, ReaderError> {
    let len = info.len();
    if len > MAX_BLOB_SIZE as u64 {
        return Err(ReaderError::ChunkTooLarge {
            chunk: info.index,
            len,
        });
    }
    Ok(usize::try_from(len).unwrap_or(usize::MAX))
}

/// Chunk `info` could not be had, for a read at `offset`.
fn chunk_error(info: &ChunkInfo, offset: u64, source: ChunkFailure) -> ReaderError {
    ReaderError::Chunk {
        offset,
        chunk: info.index,
        digest: Hex(info.digest),
        start: info.start,
        end: info.end,
        source,
    }
}
