//! A chunk store in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::digest::Digest;
use crate::error::{Location, Result, StoreError};
use crate::store::{ChunkEncoding, ChunkStore, EncodedChunk, LocalChunks, PutOutcome};

/// Encoded chunks in a hash map: for tests, and for users who want a store with no disk.
#[derive(Debug)]
pub struct MemoryStore {
    name: Arc<str>,
    encoding: ChunkEncoding,
    chunks: Mutex<HashMap<Digest, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store of chunks in `encoding` (PBS blobs, or casync chunk files compressed or
    /// not), which `put` expects and `get` hands out.
    #[must_use]
    pub fn new(encoding: ChunkEncoding) -> Self {
        let kind = match encoding {
            ChunkEncoding::PbsBlob => "pbs",
            ChunkEncoding::CasyncCompressed | ChunkEncoding::CasyncUncompressed => "castr",
        };
        Self {
            name: Arc::from(format!("memory:{kind}")),
            encoding,
            chunks: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Vec<u8>>> {
        self.chunks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the stored bytes of `digest` with `bytes`, whatever they are (to damage a chunk
    /// in a test, or to load one).
    pub fn set_raw(&self, digest: Digest, bytes: Vec<u8>) {
        self.map().insert(digest, bytes);
    }

    /// Removes `digest`; whether it was there.
    pub fn remove(&self, digest: &Digest) -> bool {
        self.map().remove(digest).is_some()
    }

    /// How many chunks are stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no chunk is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MemoryStore {
    fn read_chunk(&self, digest: &Digest) -> Result<EncodedChunk> {
        let bytes = self.map().get(digest).cloned();
        let Some(bytes) = bytes else {
            return Err(StoreError::missing(&self.name, digest, Location::Memory));
        };
        Ok(EncodedChunk {
            encoding: self.encoding,
            bytes,
            location: Location::Memory,
        })
    }
}

#[async_trait::async_trait]
impl ChunkStore for MemoryStore {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn encoding(&self) -> ChunkEncoding {
        self.encoding
    }

    async fn get(&self, digest: &Digest) -> Result<EncodedChunk> {
        self.read_chunk(digest)
    }

    fn local(&self) -> Option<&dyn LocalChunks> {
        Some(self)
    }

    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        let mut map = self.map();
        if map.contains_key(digest) {
            return Ok(PutOutcome::AlreadyPresent);
        }
        map.insert(*digest, encoded);
        Ok(PutOutcome::Inserted)
    }

    async fn contains(&self, digest: &Digest) -> Result<bool> {
        Ok(self.map().contains_key(digest))
    }

    async fn touch(&self, digest: &Digest) -> Result<bool> {
        // Nothing collects garbage here: presence is all there is to tell.
        Ok(self.map().contains_key(digest))
    }

    async fn sync(&self) -> Result<()> {
        Ok(())
    }
}

impl LocalChunks for MemoryStore {
    fn get_blocking(&self, digest: &Digest) -> Result<EncodedChunk> {
        self.read_chunk(digest)
    }
}
