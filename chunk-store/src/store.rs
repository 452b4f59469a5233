//! The trait every chunk store implements, over encoded chunks.

use std::fmt;
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Location, Result};

/// How a store encodes the chunks it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChunkEncoding {
    /// PBS DataBlobs (CRC-32, raw or zstd).
    PbsBlob,
    /// casync chunk files (zstd, xz or gzip; or uncompressed).
    Casync,
}

/// The encoding of one chunk as fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodedFormat {
    /// A PBS DataBlob.
    PbsBlob,
    /// A compressed casync chunk file (`.cacnk`).
    CasyncCompressed,
    /// An uncompressed casync chunk (the plaintext itself).
    CasyncUncompressed,
}

/// An encoded chunk as a store hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedChunk {
    /// How `bytes` are encoded.
    pub format: EncodedFormat,
    /// The bytes as stored.
    pub bytes: Vec<u8>,
    /// Where they came from, for error messages.
    pub location: Location,
}

/// What a `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PutOutcome {
    /// The chunk is new.
    Inserted,
    /// The store already had it; nothing was written.
    AlreadyPresent,
}

/// A store of encoded chunks addressed by digest.
///
/// It moves bytes only: it neither decodes nor checks digests. [`ChunkSource`](crate::ChunkSource)
/// does that on top, and is how plaintext leaves this crate. Object-safe; implementations are
/// shared as `Arc<dyn ChunkStore>`.
#[async_trait::async_trait]
pub trait ChunkStore: Send + Sync + fmt::Debug {
    /// The store's name for messages, such as `pbs:/srv/datastore`.
    fn name(&self) -> &Arc<str>;

    /// How `put` expects chunks to be encoded.
    fn encoding(&self) -> ChunkEncoding;

    /// The encoded chunk `digest`.
    ///
    /// # Errors
    /// [`StoreError::Missing`](crate::StoreError::Missing) if absent,
    /// [`StoreError::Read`](crate::StoreError::Read) if it cannot be read.
    async fn get(&self, digest: &Digest) -> Result<EncodedChunk>;

    /// Stores `encoded` (in [`encoding`](ChunkStore::encoding)) under `digest`, unless it is
    /// there already. Atomic: a concurrent reader sees the whole chunk or none.
    ///
    /// # Errors
    /// [`StoreError::Write`](crate::StoreError::Write) if it cannot be written.
    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome>;

    /// Whether the store has `digest`.
    ///
    /// # Errors
    /// [`StoreError::Read`](crate::StoreError::Read) if that cannot be told.
    async fn contains(&self, digest: &Digest) -> Result<bool>;
}
