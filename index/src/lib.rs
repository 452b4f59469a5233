//! Chunk indexes of deduplicated backups: PBS fixed (`.fidx`) and dynamic (`.didx`) indexes and
//! casync indexes (`.caibx`, `.caidx`) — read, validated, written — and the content-defined
//! chunkers that make them.
//!
//! Every index implements [`ChunkIndex`]: chunk count, image size, chunk `i` → byte range and
//! digest, offset → chunk in O(log n) (O(1) for fixed), and iteration. [`Index::open`] detects
//! the format by its magic. Opening validates everything a reader relies on, and no input makes
//! it panic: a bad file is an [`IndexError`] naming the file and the facts.
//!
//! ```
//! use cairn_index::{ChunkIndex, DynamicIndexWriter, Index, OpenOptions, Origin};
//! use std::io::Cursor;
//!
//! # fn main() -> Result<(), cairn_index::IndexError> {
//! // Write a dynamic index of three chunks in memory...
//! let mut writer = DynamicIndexWriter::new(Cursor::new(Vec::new()))?;
//! writer.push(100, &[1; 32])?;
//! writer.push(250, &[2; 32])?;
//! writer.push(300, &[1; 32])?;
//! let bytes = writer.finish()?.into_inner();
//!
//! // ...and read it back.
//! let index = Index::from_bytes(bytes, Origin::memory(), &OpenOptions::default())?;
//! assert_eq!(index.image_size(), 300);
//! assert_eq!(index.locate(120), Some((1, 20)));
//! assert_eq!(index.chunk(2).map(|c| c.range()), Some(250..300));
//! assert_eq!(index.locate(300), None);
//! # Ok(())
//! # }
//! ```

mod atomic;
mod bytes;
mod casync;
mod chunker;
mod dynamic;
mod error;
mod fixed;
mod index;
mod open;
mod pbs;
mod table;
#[cfg(feature = "testing")]
pub mod testing;

pub use crate::atomic::AtomicFile;
pub use crate::bytes::{IndexBytes, MAX_INDEX_SIZE};
pub use crate::casync::{CasyncIndex, CasyncIndexWriter, CasyncParams};
pub use crate::chunker::{
    CasyncChunker, Chunker, FixedChunker, PbsChunker, ReadChunks, SliceChunks,
};
pub use crate::dynamic::{DynamicIndex, DynamicIndexWriter};
pub use crate::error::{Hex, IndexError, Origin, Result};
pub use crate::fixed::{FixedIndex, FixedIndexWriter};
pub use crate::index::{ChunkIndex, ChunkInfo, Chunks, Digest, DigestAlgorithm, IndexFormat};
pub use crate::open::{Index, OpenOptions};
pub use crate::pbs::{ChecksumCheck, PbsHeader};

/// The formats' numbers: magics, header sizes, type markers, feature flags, chunker windows and
/// limits, for code that inspects files itself.
pub mod format {
    pub use crate::casync::{
        CA_FORMAT_INDEX, CA_FORMAT_SHA512_256, CA_FORMAT_TABLE, CA_FORMAT_TABLE_TAIL_MARKER,
        CASYNC_CHUNK_SIZE_LIMIT, CASYNC_DEFAULT_FLAGS, CASYNC_HEADER_SIZE, CASYNC_SHA256_FLAGS,
    };
    pub use crate::chunker::{CASYNC_WINDOW, MAX_CHUNK_SIZE, PBS_WINDOW};
    pub use crate::pbs::{DYNAMIC_INDEX_MAGIC, FIXED_INDEX_MAGIC, PBS_HEADER_SIZE};
}

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
