//! Backs a file up into a chunk store: [`backup`] cuts it with the chunker its [`Layout`]
//! names, stores the chunks the store lacks (a few writes in flight at once), syncs the store,
//! and only then commits the index (`.fidx`, `.didx` or `.caibx`).
//!
//! This crate composes `cairn-index` and `cairn-chunk-store`, beside `cairn-reader`.
//!
//! ```
//! use std::sync::Arc;
//! use cairn_backup::{BackupOptions, Layout, backup};
//! use cairn_chunk_store::{CastrStore, DigestAlgorithm};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(CastrStore::create(dir.path().join("default.castr"))?);
//! let image: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
//! let layout = Layout::Caibx { average: None, digest: DigestAlgorithm::Sha512_256 };
//! let summary = backup(
//!     store,
//!     std::io::Cursor::new(image),
//!     &dir.path().join("image.caibx"),
//!     layout,
//!     BackupOptions::default(),
//!     &|_| {},
//!     &CancellationToken::new(),
//! )
//! .await?;
//! assert_eq!(summary.size, 1_000_000);
//! assert_eq!(summary.new_chunks, summary.unique_chunks);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cairn_chunk_store::{ChunkSource, ChunkStore, Digest, DigestAlgorithm, PutOutcome, StoreError};
use cairn_index::{
    AtomicFile, CasyncChunker, CasyncIndexWriter, CasyncParams, Chunker, DynamicIndexWriter,
    FixedChunker, FixedIndexWriter, IndexError, PbsChunker, ReadChunks,
};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use tokio_util::sync::CancellationToken;

/// How to cut the input and which index to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// A PBS fixed index (`.fidx`): chunks of `chunk_size` bytes (a power of two up to
    /// 128 MiB; PBS uses 4 MiB), SHA-256.
    Fidx {
        /// The chunk size.
        chunk_size: u64,
    },
    /// A PBS dynamic index (`.didx`): PBS's chunker of `average` size (a power of two up to
    /// 32 MiB; PBS uses 4 MiB), SHA-256.
    Didx {
        /// The average chunk size.
        average: u64,
    },
    /// A casync blob index (`.caibx`): casync's chunker (min avg/4, max 4·avg; casync's
    /// defaults 16/64/256 KiB when `average` is `None`), with `digest`.
    Caibx {
        /// The average chunk size, or casync's default.
        average: Option<u64>,
        /// SHA-512/256 (casync's default) or SHA-256.
        digest: DigestAlgorithm,
    },
}

impl Layout {
    /// Checks that a chunker can cut with these sizes, before anything is created.
    ///
    /// # Errors
    /// [`BackupError::Layout`], naming the limit.
    pub fn check(&self) -> Result<(), BackupError> {
        chunker_of(*self).map(drop)
    }

    /// The digest algorithm the chunks are named by.
    #[must_use]
    pub fn digest_algorithm(&self) -> DigestAlgorithm {
        match self {
            Self::Fidx { .. } | Self::Didx { .. } => DigestAlgorithm::Sha256,
            Self::Caibx { digest, .. } => *digest,
        }
    }
}

/// How a backup runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupOptions {
    /// Chunk writes under way at once (1 to 1024). Default 16: enough to keep both cores
    /// hashing and compressing while the input is read.
    pub in_flight: usize,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self { in_flight: 16 }
    }
}

impl BackupOptions {
    /// Sets [`in_flight`](BackupOptions::in_flight), clamped to 1..=1024.
    #[must_use]
    pub fn in_flight(mut self, writes: usize) -> Self {
        self.in_flight = writes.clamp(1, 1024);
        self
    }
}

/// What a backup did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// The input's size.
    pub size: u64,
    /// Chunks in the index.
    pub chunks: u64,
    /// Distinct chunks.
    pub unique_chunks: u64,
    /// Their bytes.
    pub unique_bytes: u64,
    /// Chunks the store did not have.
    pub new_chunks: u64,
    /// How long it took.
    pub seconds: f64,
}

impl Summary {
    /// The input's size over the distinct chunks' bytes (1 for an empty input).
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn dedup_ratio(&self) -> f64 {
        if self.unique_bytes == 0 {
            1.0
        } else {
            self.size as f64 / self.unique_bytes as f64
        }
    }
}

/// Why a backup gave no index. In every case no index appeared, and no temporary file is left.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The layout's sizes cannot be cut with (a usage error); the source says which limit.
    #[error("the chunk sizes cannot be used")]
    Layout(#[source] IndexError),
    /// The input could not be read.
    #[error("cannot read the input")]
    Input(#[source] std::io::Error),
    /// A chunk could not be stored or the store synced; the error names the store, the chunk
    /// and where it is.
    #[error(transparent)]
    Store(StoreError),
    /// The index could not be written; the error names it.
    #[error(transparent)]
    Index(IndexError),
    /// The backup was cancelled: no index was written; the chunks stored so far are whole and
    /// a later backup reuses them.
    #[error("no index was written; {chunks_stored} chunks stored so far are complete and reusable")]
    Cancelled {
        /// New chunks stored before the cancel.
        chunks_stored: u64,
    },
    /// The thread reading the input failed.
    #[error("the reading thread failed: {message}")]
    Task {
        /// What the runtime said.
        message: String,
    },
}

enum Writer {
    Fixed(FixedIndexWriter<AtomicFile>),
    Dynamic(DynamicIndexWriter<AtomicFile>),
    Casync(CasyncIndexWriter<AtomicFile>),
}

impl Writer {
    fn push(&mut self, end: u64, digest: &Digest) -> Result<(), IndexError> {
        match self {
            Self::Fixed(w) => w.push(digest),
            Self::Dynamic(w) => w.push(end, digest),
            Self::Casync(w) => w.push(end, digest),
        }
    }

    fn commit(self, end: u64) -> Result<(), IndexError> {
        match self {
            Self::Fixed(w) => w.finish(end).and_then(AtomicFile::commit),
            Self::Dynamic(w) => w.finish().and_then(AtomicFile::commit),
            Self::Casync(w) => w.finish().and_then(AtomicFile::commit),
        }
    }
}

fn size(n: u64) -> Result<usize, BackupError> {
    usize::try_from(n).map_err(|_| {
        BackupError::Layout(IndexError::ChunkerSizes {
            chunker: "any",
            problem: format!("chunk size {n} does not fit this machine's memory"),
        })
    })
}

/// The chunker of `layout`; the index writer is made apart, once the chunker is known good.
fn chunker_of(layout: Layout) -> Result<Box<dyn Chunker>, BackupError> {
    Ok(match layout {
        Layout::Fidx { chunk_size } => {
            Box::new(FixedChunker::new(size(chunk_size)?).map_err(BackupError::Layout)?)
        }
        Layout::Didx { average } => {
            Box::new(PbsChunker::new(size(average)?).map_err(BackupError::Layout)?)
        }
        Layout::Caibx { average, .. } => Box::new(casync_chunker(average)?),
    })
}

fn casync_chunker(average: Option<u64>) -> Result<CasyncChunker, BackupError> {
    match average {
        Some(avg) => CasyncChunker::with_avg(size(avg)?).map_err(BackupError::Layout),
        None => Ok(CasyncChunker::default()),
    }
}

fn writer_of(layout: Layout, index: &Path) -> Result<Writer, BackupError> {
    let writer = match layout {
        Layout::Fidx { chunk_size } => {
            FixedIndexWriter::create(index, chunk_size).map(Writer::Fixed)
        }
        Layout::Didx { .. } => DynamicIndexWriter::create(index).map(Writer::Dynamic),
        Layout::Caibx { average, digest } => {
            let (min, avg, max) = casync_chunker(average)?.sizes();
            let params = CasyncParams {
                flags: CasyncParams::flags_for(digest),
                min: min as u64,
                avg: avg as u64,
                max: max as u64,
            };
            CasyncIndexWriter::create(index, params).map(Writer::Casync)
        }
    };
    writer.map_err(BackupError::Index)
}

/// What the chunks stored so far add up to.
#[derive(Default)]
struct Tally {
    summary: Summary,
    unique: HashMap<Digest, u64>,
    /// The end of the last chunk in the index.
    end: u64,
}

/// Stores the chunks the cutter sends, at most `in_flight_limit` writes under way, and pushes
/// each, in order, to the index. Taking chunks and finishing writes go on side by side, so a
/// slow input never holds back the writes of chunks already cut. Whatever ends it (the input,
/// an error, a cancel), it returns only once the writes under way have finished: none is left
/// to be cut off at exit with its temporary file behind.
async fn store_chunks(
    receiver: &mut tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    source: &ChunkSource,
    writer: &mut Writer,
    tally: &mut Tally,
    in_flight_limit: usize,
    progress: &(dyn Fn(u64) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<(), BackupError> {
    let mut in_flight = FuturesOrdered::new();
    let mut input_done = false;
    let outcome = loop {
        let can_take = !input_done && !cancel.is_cancelled() && in_flight.len() < in_flight_limit;
        tokio::select! {
            next = receiver.recv(), if can_take => match next {
                Some(Ok(chunk)) => {
                    let source = source.clone();
                    let len = chunk.len() as u64;
                    in_flight
                        .push_back(async move { source.write_new(chunk).await.map(|r| (len, r)) });
                }
                Some(Err(e)) => break Err(BackupError::Input(e)),
                None => input_done = true,
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let (len, (digest, outcome)) = match done {
                    Ok(done) => done,
                    Err(e) => break Err(BackupError::Store(e)),
                };
                tally.end += len;
                tally.summary.chunks += 1;
                tally.summary.new_chunks += u64::from(outcome == PutOutcome::Inserted);
                tally.unique.entry(digest).or_insert(len);
                progress(len);
                if let Err(e) = writer.push(tally.end, &digest) {
                    break Err(BackupError::Index(e));
                }
            },
            // Wakes the loop so that it stops taking input.
            () = cancel.cancelled(), if can_take => {}
            else => break Ok(()),
        }
    };
    while in_flight.next().await.is_some() {}
    outcome
}

/// Backs `input` up into `store`, writing the index at `index` (replaced atomically):
/// 1. a thread reads and cuts the input, a few chunks ahead;
/// 2. each chunk is hashed and, if the store lacks it, encoded and stored, with at most
///    [`in_flight`](BackupOptions::in_flight) writes under way; a chunk the store has is
///    touched, so PBS's garbage collection keeps it;
/// 3. the store is synced ([`ChunkStore::sync`]), and only then is the index committed.
///
/// `progress` hears of each chunk's bytes as it is stored. On `cancel`, no new chunk is taken,
/// the writes under way finish, and no index appears.
///
/// # Errors
/// [`BackupError::Layout`] before anything is written for sizes no chunker can cut with;
/// otherwise [`BackupError::Input`], [`BackupError::Store`], [`BackupError::Index`],
/// [`BackupError::Cancelled`]. On any of them no index appears.
pub async fn backup(
    store: Arc<dyn ChunkStore>,
    input: impl Read + Send + 'static,
    index: &Path,
    layout: Layout,
    options: BackupOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<Summary, BackupError> {
    let source = ChunkSource::new(store, layout.digest_algorithm());
    backup_source(&source, input, index, layout, options, progress, cancel).await
}

/// Like [`backup`], writing the chunks through `source`: one made with a key
/// ([`ChunkSource::with_key`]) makes an encrypted backup, as PBS's client does with
/// `--keyfile` (keyed digests, AES-256-GCM blobs; a PBS layout only).
///
/// # Errors
/// As [`backup`].
pub async fn backup_source(
    source: &ChunkSource,
    input: impl Read + Send + 'static,
    index: &Path,
    layout: Layout,
    options: BackupOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<Summary, BackupError> {
    let started = Instant::now();
    let chunker = chunker_of(layout)?;
    let mut writer = writer_of(layout, index)?;
    let source = source.clone();
    let store = Arc::clone(source.store());
    // Reading and cutting run on a thread of their own, a few chunks ahead of the writers. It
    // is not waited for on a cancel: it may be blocked reading a pipe, and holds no file.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let cutter = tokio::task::spawn_blocking(move || {
        for chunk in ReadChunks::new(std::io::BufReader::with_capacity(1 << 20, input), chunker) {
            let failed = chunk.is_err();
            if sender.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    let mut tally = Tally::default();
    let outcome = store_chunks(
        &mut receiver,
        &source,
        &mut writer,
        &mut tally,
        options.in_flight.clamp(1, 1024),
        progress,
        cancel,
    )
    .await;
    let mut summary = tally.summary;
    outcome?;
    let cancelled = || BackupError::Cancelled {
        chunks_stored: summary.new_chunks,
    };
    if cancel.is_cancelled() {
        return Err(cancelled());
    }
    cutter.await.map_err(|e| BackupError::Task {
        message: e.to_string(),
    })?;
    // The chunks reach stable storage before the index that names them exists.
    store.sync().await.map_err(BackupError::Store)?;
    if cancel.is_cancelled() {
        return Err(cancelled());
    }
    writer.commit(tally.end).map_err(BackupError::Index)?;
    summary.size = tally.end;
    summary.unique_chunks = tally.unique.len() as u64;
    summary.unique_bytes = tally.unique.values().sum();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
