//! The trait every chunk store implements, over encoded chunks.

use std::fmt;
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Location, Result};

/// How a chunk is encoded: what a store's [`put`](ChunkStore::put) expects (its
/// [`encoding`](ChunkStore::encoding)), and what each chunk [`get`](ChunkStore::get) hands out
/// is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChunkEncoding {
    /// A PBS DataBlob (CRC-32, raw or zstd).
    PbsBlob,
    /// A compressed casync chunk file (`.cacnk`: zstd, xz or gzip); cairn writes zstd.
    CasyncCompressed,
    /// An uncompressed casync chunk: the plaintext itself.
    CasyncUncompressed,
}

/// An encoded chunk as a store hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedChunk {
    /// How `bytes` are encoded.
    pub encoding: ChunkEncoding,
    /// The bytes as stored.
    pub bytes: Vec<u8>,
    /// Where they came from, for error messages.
    pub location: Location,
}

/// How a chunk is stored: its encoding and its length, as [`ChunkStore::stat`] tells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ChunkStat {
    /// How the stored bytes are encoded.
    pub encoding: ChunkEncoding,
    /// How many bytes are stored.
    pub len: u64,
}

impl ChunkStat {
    /// A chunk of `len` bytes stored in `encoding`.
    #[must_use]
    pub fn new(encoding: ChunkEncoding, len: u64) -> Self {
        Self { encoding, len }
    }
}

/// What a `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PutOutcome {
    /// The chunk is new.
    Inserted,
    /// The store already had it; nothing was written.
    AlreadyPresent,
}

/// How durable a disk store makes the chunks it writes, before a backup commits an index that
/// names them. The levels are PBS's `sync-level`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SyncLevel {
    /// No syncs. Fastest; after a crash of the machine (not just of the process) an index may
    /// name chunks that never reached the disk.
    None,
    /// Nothing per chunk; [`ChunkStore::sync`] makes one `syncfs(2)` of the store's filesystem,
    /// which a backup calls after its last chunk and before it commits its index. The default.
    #[default]
    Filesystem,
    /// Every new chunk file is fsynced before it appears, and its folder (and the parent of a
    /// new prefix folder) after: each chunk is durable when `put` returns.
    File,
}

impl SyncLevel {
    /// The level's name as PBS and the `cairn` command spell it: `none`, `filesystem`, `file`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Filesystem => "filesystem",
            Self::File => "file",
        }
    }
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

    /// [`get`](ChunkStore::get), by a caller that knows the most bytes a sound encoding of the
    /// chunk can take (from its plaintext length: [`max_encoded_len`](crate::max_encoded_len)).
    /// A remote store refuses a larger body from its announced length, before reading any of
    /// it; a wrapper passes the limit on; the default ignores it (a store's own cap still
    /// holds: no store hands out more than [`MAX_ENCODED_CHUNK`](crate::MAX_ENCODED_CHUNK)).
    ///
    /// # Errors
    /// As [`get`](ChunkStore::get); [`StoreError::Oversized`](crate::StoreError::Oversized)
    /// for a body over `limit`.
    async fn get_within(&self, digest: &Digest, limit: u64) -> Result<EncodedChunk> {
        let _ = limit;
        self.get(digest).await
    }

    /// How chunk `digest` is stored, without reading it where the store can tell otherwise (a
    /// file's length, an object's `HEAD`): what a server answers a `HEAD` request with. The
    /// default reads the chunk.
    ///
    /// # Errors
    /// As [`get`](ChunkStore::get).
    async fn stat(&self, digest: &Digest) -> Result<ChunkStat> {
        let chunk = self.get(digest).await?;
        Ok(ChunkStat::new(chunk.encoding, chunk.bytes.len() as u64))
    }

    /// The store's blocking read path, if its chunks are local files or memory:
    /// [`ChunkSource`](crate::ChunkSource) then reads, decodes and verifies a chunk on one
    /// blocking thread instead of handing it from thread to thread, and a restore reads, checks
    /// and writes chunks on threads of its own. `None` (the default) for remote stores and
    /// wrappers. A store with this path keeps one copy of each chunk: a bad chunk read through
    /// it is reported as found, without [`reject`](ChunkStore::reject).
    fn local(&self) -> Option<&dyn LocalChunks> {
        None
    }

    /// Stores `encoded` (in [`encoding`](ChunkStore::encoding)) under `digest`, unless it is
    /// there already, in which case the chunk is [touched](ChunkStore::touch). Atomic: a
    /// concurrent reader sees the whole chunk or none.
    ///
    /// # Errors
    /// [`StoreError::Write`](crate::StoreError::Write) if it cannot be written (or synced, at
    /// [`SyncLevel::File`]); [`StoreError::Touch`](crate::StoreError::Touch) if a chunk already
    /// there cannot be touched.
    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome>;

    /// Whether the store has `digest`. Disk stores count a torn chunk file (empty, or shorter
    /// than the shortest complete chunk) as absent.
    ///
    /// # Errors
    /// [`StoreError::Read`](crate::StoreError::Read) if that cannot be told.
    async fn contains(&self, digest: &Digest) -> Result<bool>;

    /// Marks chunk `digest` as used now, if the store has it, and tells whether it has it: what
    /// a backup does for each chunk it finds already stored. A PBS datastore's garbage
    /// collection removes chunks whose access time is older than its cutoff, so disk stores set
    /// the chunk file's access time; stores without such a collector only check presence.
    ///
    /// # Errors
    /// [`StoreError::Read`](crate::StoreError::Read) if presence cannot be told;
    /// [`StoreError::Touch`](crate::StoreError::Touch) if a present chunk cannot be touched.
    async fn touch(&self, digest: &Digest) -> Result<bool>;

    /// Makes every chunk this store has put so far durable, as its [`SyncLevel`] says: called
    /// once after the last chunk of a backup and before its index is committed, so that a crash
    /// never leaves an index naming chunks that are not on stable storage.
    ///
    /// # Errors
    /// [`StoreError::Sync`](crate::StoreError::Sync) if the sync fails.
    async fn sync(&self) -> Result<()>;

    /// A chunk this store served failed verification; `error` says how and where
    /// ([`StoreError::location`](crate::StoreError::location)). A store that keeps copies (a
    /// [`DiskTier`](crate::DiskTier)) or has others to ask (a [`StoreChain`](crate::StoreChain))
    /// drops the bad copy or moves on and returns `true`: another [`get`](ChunkStore::get) of
    /// the chunk may give other bytes, and [`ChunkSource`](crate::ChunkSource) asks again. A
    /// plain store has nothing else to give and returns `false`, the default.
    async fn reject(&self, digest: &Digest, error: &crate::StoreError) -> bool {
        let _ = (digest, error);
        false
    }
}

/// The blocking read path of a store whose chunks are local files or memory (see
/// [`ChunkStore::local`]).
pub trait LocalChunks: Send + Sync {
    /// [`get`](ChunkStore::get) on the calling thread, which may block on file reads: call it
    /// off the async workers.
    ///
    /// # Errors
    /// As [`get`](ChunkStore::get).
    fn get_blocking(&self, digest: &Digest) -> Result<EncodedChunk>;
}
