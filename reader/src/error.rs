//! The crate's one error type.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_cache::CacheError;
use cairn_chunk_store::{Digest, Hex, StoreError};

/// Why a read failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// A chunk could not be fetched, decoded or verified. The source is the store's error (or
    /// the cache's, for a panic in the fetch), which names the store, the digest and where the
    /// chunk is; this level adds where in the image.
    #[error("reading image offset {offset}: chunk {chunk} (image bytes {start}..{end})")]
    Chunk {
        /// The image offset the read needed.
        offset: u64,
        /// The chunk's number in the index.
        chunk: usize,
        /// The chunk's digest.
        digest: Hex<Digest>,
        /// The first image byte the chunk covers.
        start: u64,
        /// One past the last.
        end: u64,
        /// What went wrong.
        #[source]
        source: ChunkFailure,
    },
    /// A decoded chunk's length differs from the range the index gives it.
    #[error(
        "chunk {chunk} ({digest}) holds {actual} bytes, but the index gives it {expected} (image bytes {start}..)"
    )]
    ChunkLength {
        /// The chunk's number.
        chunk: usize,
        /// Its digest.
        digest: Hex<Digest>,
        /// Its first image byte.
        start: u64,
        /// The length the index gives.
        expected: u64,
        /// The length it has.
        actual: u64,
    },
    /// The index gives a chunk longer than any store can hold.
    #[error("chunk {chunk} is {len} bytes long, over the 128 MiB chunk limit")]
    ChunkTooLarge {
        /// The chunk's number.
        chunk: usize,
        /// Its length.
        len: u64,
    },
    /// The image ended before the bytes asked for.
    #[error("reading {len} bytes at offset {offset}: the image ends at {size}")]
    UnexpectedEnd {
        /// Where the read started.
        offset: u64,
        /// How many bytes it wanted.
        len: u64,
        /// The image size.
        size: u64,
    },
    /// The blocking adapter was called from inside an async runtime, where it would block a
    /// worker.
    #[error("the blocking reader was used inside an async runtime; use the async reader there")]
    InsideRuntime,
    /// The blocking adapter was handed a runtime that cannot run its fetches while another
    /// thread waits for them.
    #[error(
        "the blocking reader needs a multi_thread tokio runtime, but was given a {flavor} one (its tasks run only inside its own block_on, so reads would never finish)"
    )]
    RuntimeFlavor {
        /// The flavour of the runtime given.
        flavor: &'static str,
    },
    /// The output of a restore failed.
    #[error("{}: cannot {action}", path.display())]
    Output {
        /// The output (or the temporary file beside it).
        path: PathBuf,
        /// What could not be done.
        action: &'static str,
        /// What the operating system said.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A restore's output is nothing an image can be written to.
    #[error("{}: {problem}", path.display())]
    OutputKind {
        /// The output given.
        path: PathBuf,
        /// What it is instead.
        problem: &'static str,
    },
    /// A block device too small for the image; nothing was written.
    #[error(
        "{}: the device holds {size} bytes, less than the {image_size}-byte image; nothing was written",
        path.display()
    )]
    DeviceTooSmall {
        /// The device.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The image's size.
        image_size: u64,
    },
    /// The work was cancelled before it finished; `left` says what it left behind.
    #[error("cancelled: {left}")]
    Cancelled {
        /// What is where: "the unfinished image was removed; … is as it was", or "… holds part
        /// of the image".
        left: String,
    },
    /// A task of the work could not finish (it panicked).
    #[error("a {what} task failed: {message}")]
    Task {
        /// Which kind of task.
        what: &'static str,
        /// What the runtime said.
        message: String,
    },
    /// The blocking adapter could not start its runtime; the source says why.
    #[error("cannot start the blocking reader's runtime")]
    Runtime(#[source] Arc<std::io::Error>),
}

/// The cause of a chunk failure: the store's error, or the cache's for a panic or abandonment.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkFailure {
    /// The store (or the decoding layer) failed; shared with every reader that waited for it.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The fetch panicked or was abandoned.
    #[error("fetching chunk {digest}")]
    Cache {
        /// The chunk.
        digest: Hex<Digest>,
        /// What the cache said.
        #[source]
        source: CacheError,
    },
}

impl ChunkFailure {
    pub(crate) fn from_cache(digest: &Digest, error: CacheError) -> Self {
        match error.fetch_error::<SharedStoreError>() {
            Some(shared) => Self::Store(Arc::clone(&shared.0)),
            None => Self::Cache {
                digest: Hex(*digest),
                source: error,
            },
        }
    }

    /// The store's error, if that is the cause.
    #[must_use]
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::Store(error) => Some(error),
            Self::Cache { .. } => None,
        }
    }
}

/// A store error as the cache carries it from the fetch to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub(crate) struct SharedStoreError(pub(crate) Arc<StoreError>);

impl ReaderError {
    /// The store error behind a chunk failure, if any.
    #[must_use]
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::Chunk { source, .. } => source.store_error(),
            _ => None,
        }
    }
}

impl From<ReaderError> for std::io::Error {
    fn from(error: ReaderError) -> Self {
        let kind = match &error {
            ReaderError::Chunk { source, .. } => match source.store_error() {
                Some(e) if e.is_missing() => std::io::ErrorKind::NotFound,
                _ => std::io::ErrorKind::InvalidData,
            },
            ReaderError::ChunkLength { .. } | ReaderError::ChunkTooLarge { .. } => {
                std::io::ErrorKind::InvalidData
            }
            ReaderError::UnexpectedEnd { .. } => std::io::ErrorKind::UnexpectedEof,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, error)
    }
}
