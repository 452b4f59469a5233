//! The trait every index implements, and what it hands out.

use std::fmt;
use std::ops::Range;

pub use cairn_digest::{Digest, DigestAlgorithm};

/// Which index format a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IndexFormat {
    /// PBS fixed index (`.fidx`): disk images in equal chunks.
    Fidx,
    /// PBS dynamic index (`.didx`): archives in content-defined chunks.
    Didx,
    /// casync index of a blob (`.caibx`).
    Caibx,
    /// casync index of a directory archive (`.caidx`); same layout as `.caibx`.
    Caidx,
}

impl IndexFormat {
    /// The short name: `fidx`, `didx`, `caibx` or `caidx` (also the usual file extension).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Fidx => "fidx",
            Self::Didx => "didx",
            Self::Caibx => "caibx",
            Self::Caidx => "caidx",
        }
    }
}

impl fmt::Display for IndexFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One chunk of an index: its number, the bytes of the image it covers, and its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkInfo {
    /// The chunk's number, from 0.
    pub index: usize,
    /// The first byte of the image it covers.
    pub start: u64,
    /// One past the last byte it covers.
    pub end: u64,
    /// Its digest.
    pub digest: Digest,
}

impl ChunkInfo {
    /// The bytes of the image it covers.
    #[must_use]
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    /// Its length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it covers no bytes (no valid index has such a chunk).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// An ordered list of chunks that together make an image: what the reader needs from any index.
///
/// Object-safe, so a reader can hold a `Box<dyn ChunkIndex>` of whatever format it opened.
/// Lookups never panic: a chunk number or offset past the end gives `None`.
pub trait ChunkIndex: Send + Sync + fmt::Debug {
    /// The file format.
    fn format(&self) -> IndexFormat;

    /// The hash of the chunk digests.
    fn digest_algorithm(&self) -> DigestAlgorithm;

    /// How many chunks there are.
    fn chunk_count(&self) -> usize;

    /// The length of the image in bytes.
    fn image_size(&self) -> u64;

    /// Chunk `index`, or `None` past the end.
    fn chunk(&self, index: usize) -> Option<ChunkInfo>;

    /// The chunk holding byte `offset` of the image, and the offset inside that chunk; `None` at
    /// or past the end of the image (so always `None` for an empty image).
    fn locate(&self, offset: u64) -> Option<(usize, u64)>;

    /// The chunks in order.
    fn chunks(&self) -> Chunks<'_>;
}

/// Iterates over the chunks of any [`ChunkIndex`], in order.
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    index: &'a dyn ChunkIndex,
    next: usize,
    end: usize,
}

impl<'a> Chunks<'a> {
    /// All chunks of `index`.
    #[must_use]
    pub fn new(index: &'a dyn ChunkIndex) -> Self {
        Self {
            index,
            next: 0,
            end: index.chunk_count(),
        }
    }
}

impl Iterator for Chunks<'_> {
    type Item = ChunkInfo;

    fn next(&mut self) -> Option<ChunkInfo> {
        if self.next >= self.end {
            return None;
        }
        let chunk = self.index.chunk(self.next);
        self.next += 1;
        chunk
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl DoubleEndedIterator for Chunks<'_> {
    fn next_back(&mut self) -> Option<ChunkInfo> {
        if self.next >= self.end {
            return None;
        }
        self.end -= 1;
        self.index.chunk(self.end)
    }
}

impl ExactSizeIterator for Chunks<'_> {}
