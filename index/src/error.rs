//! The crate's one error type, and the small types its messages are made of.

use std::fmt;

pub use cairn_digest::Hex;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an index came from (or goes to), for error messages: a file, or bytes in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin(Option<Arc<Path>>);

impl Origin {
    /// An index read from or written to `path`.
    #[must_use]
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self(Some(Arc::from(path.into())))
    }

    /// An index in memory.
    #[must_use]
    pub fn memory() -> Self {
        Self(None)
    }

    /// The file, if there is one.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(path) => write!(f, "{}", path.display()),
            None => f.write_str("<index in memory>"),
        }
    }
}

/// Everything that can go wrong reading, validating or writing an index, or setting up a
/// chunker. Each variant names the file and the facts needed to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The file could not be read.
    #[error("{file}: cannot read")]
    Read {
        /// The index.
        file: Origin,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The index could not be written (or moved into place).
    #[error("{file}: cannot write")]
    Write {
        /// The index.
        file: Origin,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// More bytes than the index may have: over what its header allows (a fixed index's
    /// length follows from its sizes), or over [`MAX_INDEX_SIZE`](crate::MAX_INDEX_SIZE). Refused
    /// before the rest is read.
    #[error("{file}: {size} bytes, over {reason} ({limit} bytes)")]
    TooLarge {
        /// The file.
        file: Origin,
        /// Its length (announced, or by its header), or how much of it had come when it passed
        /// the limit.
        size: u64,
        /// The most it may have.
        limit: u64,
        /// Which limit: the header's, or cairn's largest.
        reason: &'static str,
    },
    /// The first 8 bytes are no index magic cairn knows.
    #[error("{file}: not a chunk index: unknown magic {found:?}")]
    BadMagic {
        /// The file.
        file: Origin,
        /// Its first 8 bytes (fewer if the file is shorter).
        found: Hex<[u8; 8]>,
    },
    /// The file ends before a structure it must hold.
    #[error("{file}: truncated: {len} bytes, but the {what} needs {needed}")]
    Truncated {
        /// The file.
        file: Origin,
        /// What was cut off.
        what: &'static str,
        /// The file's length.
        len: u64,
        /// The length needed.
        needed: u64,
    },
    /// A fixed index's chunk size is 0 or not a power of two.
    #[error("{file}: chunk size {chunk_size} is not a power of two")]
    ChunkSize {
        /// The file.
        file: Origin,
        /// The chunk size in the header.
        chunk_size: u64,
    },
    /// The file's length does not fit its header or its entry size.
    #[error("{file}: file is {len} bytes, but {reason}")]
    Length {
        /// The file.
        file: Origin,
        /// The file's length.
        len: u64,
        /// What the length should have been, in words.
        reason: String,
    },
    /// An entry's end offset is not after the previous one (a chunk would be empty or negative).
    #[error(
        "{file}: entry {entry} (at byte {position}) ends at {end}, not after the previous end {previous}"
    )]
    EndsNotIncreasing {
        /// The file.
        file: Origin,
        /// The entry's number, from 0.
        entry: u64,
        /// The entry's byte position in the file.
        position: u64,
        /// The previous entry's end (0 for the first entry).
        previous: u64,
        /// This entry's end.
        end: u64,
    },
    /// A casync header or tail field does not hold the value the format requires.
    #[error("{file}: casync {field} at byte {position} is {found:#x}, expected {expected:#x}")]
    CasyncField {
        /// The file.
        file: Origin,
        /// The field's name.
        field: &'static str,
        /// The field's byte position in the file.
        position: u64,
        /// The value found.
        found: u64,
        /// The value required.
        expected: u64,
    },
    /// Chunk size limits out of order or beyond what casync allows.
    #[error(
        "{file}: chunk sizes min {min}, avg {avg}, max {max} must satisfy 1 <= min <= avg <= max <= {limit}"
    )]
    ChunkSizeLimits {
        /// The file (or the chunker being configured).
        file: Origin,
        /// The minimum.
        min: u64,
        /// The average.
        avg: u64,
        /// The maximum.
        max: u64,
        /// The largest maximum allowed.
        limit: u64,
    },
    /// A chunker was asked for sizes it cannot cut with: a usage error, about no file.
    #[error("{chunker} chunker: {problem}")]
    ChunkerSizes {
        /// Which chunker: `casync`, `PBS` or `fixed`.
        chunker: &'static str,
        /// What is wrong with the sizes, naming the limit.
        problem: String,
    },
    /// A chunk is larger than the index's maximum chunk size.
    #[error("{file}: entry {entry} covers {size} bytes, over the maximum chunk size {max}")]
    ChunkTooLarge {
        /// The file.
        file: Origin,
        /// The entry's number, from 0.
        entry: u64,
        /// The chunk's size.
        size: u64,
        /// The maximum chunk size.
        max: u64,
    },
    /// The PBS index checksum in the header does not match the entries.
    #[error(
        "{file}: index checksum mismatch: the header says {expected}, the entries hash to {computed}"
    )]
    ChecksumMismatch {
        /// The file.
        file: Origin,
        /// The checksum in the header.
        expected: Hex<[u8; 32]>,
        /// The checksum of the entries.
        computed: Hex<[u8; 32]>,
    },
    /// A fixed index writer got a different number of digests than the image size needs.
    #[error(
        "{file}: {pushed} digests written, but an image of {image_size} bytes in chunks of {chunk_size} needs {needed}"
    )]
    ChunkCount {
        /// The file being written.
        file: Origin,
        /// Digests pushed.
        pushed: u64,
        /// Digests needed.
        needed: u64,
        /// The image size given to `finish`.
        image_size: u64,
        /// The chunk size.
        chunk_size: u64,
    },
}

impl IndexError {
    pub(crate) fn truncated(file: &Origin, what: &'static str, len: usize, needed: u64) -> Self {
        Self::Truncated {
            file: file.clone(),
            what,
            len: len as u64,
            needed,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
