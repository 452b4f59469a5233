//! Opening an index of any format, told apart by its magic.

use std::path::Path;

use crate::bytes::{MAX_INDEX_SIZE, magic_of, read_index_file};
use crate::casync::{CasyncIndex, looks_like_casync};
use crate::dynamic::DynamicIndex;
use crate::error::{Hex, IndexError, Origin, Result};
use crate::fixed::FixedIndex;
use crate::index::{ChunkIndex, ChunkInfo, Chunks, DigestAlgorithm, IndexFormat};
use crate::pbs::{DYNAMIC_INDEX_MAGIC, FIXED_INDEX_MAGIC};

/// How to open an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Check the PBS index checksum (SHA-256 over the table) at open; a mismatch is an error.
    /// On by default. Turning it off saves one pass over the table; the index then reports
    /// [`ChecksumCheck::Skipped`](crate::ChecksumCheck::Skipped). casync indexes have no checksum.
    pub verify_checksum: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            verify_checksum: true,
        }
    }
}

impl OpenOptions {
    /// The defaults: checksum verified.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets whether the PBS checksum is verified at open.
    #[must_use]
    pub fn verify_checksum(mut self, verify: bool) -> Self {
        self.verify_checksum = verify;
        self
    }
}

/// An index of any supported format.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Index {
    /// A PBS fixed index.
    Fixed(FixedIndex),
    /// A PBS dynamic index.
    Dynamic(DynamicIndex),
    /// A casync index (`.caibx` or `.caidx`).
    Casync(CasyncIndex),
}

impl Index {
    /// Opens the index at `path`, detecting its format by its magic, with default options.
    /// The file is read in pieces, checked as they come ([`IndexBytes`](crate::IndexBytes)):
    /// something that is no index is refused from its first bytes, and no more is read than the
    /// header allows, nor than [`MAX_INDEX_SIZE`]. A FIFO or pipe may block the calling thread
    /// until its writer writes.
    ///
    /// # Errors
    /// Any [`IndexError`] for an unreadable, unknown or invalid file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// Opens the index at `path` with `options`.
    ///
    /// # Errors
    /// Any [`IndexError`] for an unreadable, unknown or invalid file.
    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Self> {
        let (data, file) = read_index_file(path.as_ref())?;
        Self::from_bytes(data, file, options)
    }

    /// Detects the format of `data` and validates it.
    ///
    /// # Errors
    /// [`IndexError::BadMagic`] for unknown data, [`IndexError::TooLarge`] over
    /// [`MAX_INDEX_SIZE`], or the format's own validation errors.
    pub fn from_bytes(data: Vec<u8>, file: Origin, options: &OpenOptions) -> Result<Self> {
        if data.len() as u64 > MAX_INDEX_SIZE {
            return Err(IndexError::TooLarge {
                file,
                size: data.len() as u64,
                limit: MAX_INDEX_SIZE,
                reason: "the largest index cairn reads",
            });
        }
        let magic = magic_of(&data);
        if data.len() >= 8 && magic == FIXED_INDEX_MAGIC {
            FixedIndex::from_bytes(data, file, options).map(Self::Fixed)
        } else if data.len() >= 8 && magic == DYNAMIC_INDEX_MAGIC {
            DynamicIndex::from_bytes(data, file, options).map(Self::Dynamic)
        } else if looks_like_casync(&data) {
            CasyncIndex::from_bytes(data, file).map(Self::Casync)
        } else if data.len() < 16 {
            Err(IndexError::truncated(&file, "magic", data.len(), 16))
        } else {
            Err(IndexError::BadMagic {
                file,
                found: Hex(magic),
            })
        }
    }

    /// The index as a trait object.
    #[must_use]
    pub fn as_dyn(&self) -> &dyn ChunkIndex {
        match self {
            Self::Fixed(index) => index,
            Self::Dynamic(index) => index,
            Self::Casync(index) => index,
        }
    }

    /// Where the index was read from (its file, or memory).
    #[must_use]
    pub fn origin(&self) -> &Origin {
        match self {
            Self::Fixed(index) => index.origin(),
            Self::Dynamic(index) => index.origin(),
            Self::Casync(index) => index.origin(),
        }
    }

    /// Whether the PBS checksum matches (computing it if it was not checked at open); `None`
    /// for casync indexes, which have none.
    #[must_use]
    pub fn checksum_matches(&self) -> Option<bool> {
        match self {
            Self::Fixed(index) => Some(index.checksum_matches()),
            Self::Dynamic(index) => Some(index.checksum_matches()),
            Self::Casync(_) => None,
        }
    }
}

impl ChunkIndex for Index {
    fn format(&self) -> IndexFormat {
        self.as_dyn().format()
    }

    fn digest_algorithm(&self) -> DigestAlgorithm {
        self.as_dyn().digest_algorithm()
    }

    fn chunk_count(&self) -> usize {
        self.as_dyn().chunk_count()
    }

    fn image_size(&self) -> u64 {
        self.as_dyn().image_size()
    }

    fn chunk(&self, index: usize) -> Option<ChunkInfo> {
        self.as_dyn().chunk(index)
    }

    fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        self.as_dyn().locate(offset)
    }

    fn chunks(&self) -> Chunks<'_> {
        self.as_dyn().chunks()
    }
}
