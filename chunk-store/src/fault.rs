//! A store wrapper that injects faults, for tests (feature `testing`).

#![allow(clippy::panic)] // injecting panics is this module's job

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::digest::Digest;
use crate::digest::Hex;
use crate::error::{Result, StoreError};
use crate::store::{ChunkEncoding, ChunkStat, ChunkStore, EncodedChunk, PutOutcome};

/// What to do to a `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Fail with [`StoreError::Injected`].
    Error,
    /// Fail with [`StoreError::Missing`].
    Missing,
    /// Wait, then serve normally.
    Delay(Duration),
    /// Panic inside the store.
    Panic,
    /// Serve the chunk with one byte flipped.
    Corrupt,
}

/// Which `get`s a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Target {
    /// Every get of this digest.
    Digest(Digest),
    /// Each get with this probability (0 to 1), drawn from a seeded generator.
    Rate(f64),
    /// Every get.
    All,
}

/// Wraps a store and applies faults to its `get`s; counts gets per digest.
///
/// `put`, `contains`, `touch` and `sync` pass through. [`heal`](FaultStore::heal) removes every fault.
#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ChunkStore>,
    name: Arc<str>,
    faults: Mutex<Vec<(Target, Fault)>>,
    gets: Mutex<HashMap<Digest, u64>>,
    random: AtomicU64,
}

impl FaultStore {
    /// Wraps `inner` with no faults yet.
    #[must_use]
    pub fn new(inner: Arc<dyn ChunkStore>) -> Self {
        Self {
            name: Arc::from(format!("faulty({})", inner.name())),
            inner,
            faults: Mutex::new(Vec::new()),
            gets: Mutex::new(HashMap::new()),
            random: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Applies `fault` to the gets `target` selects (the first matching rule wins).
    pub fn add(&self, target: Target, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((target, fault));
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// How many times `digest` was fetched.
    #[must_use]
    pub fn gets_of(&self, digest: &Digest) -> u64 {
        self.gets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .copied()
            .unwrap_or(0)
    }

    /// How many gets there were in all.
    #[must_use]
    pub fn total_gets(&self) -> u64 {
        self.gets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    fn chance(&self) -> f64 {
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }

    fn fault_for(&self, digest: &Digest) -> Option<Fault> {
        let faults = self
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        faults.into_iter().find_map(|(target, fault)| {
            let hit = match target {
                Target::Digest(d) => d == *digest,
                Target::Rate(p) => self.chance() < p,
                Target::All => true,
            };
            hit.then_some(fault)
        })
    }
}

impl FaultStore {
    /// Chunk `digest` from the inner store (with `limit` passed on), or the fault.
    async fn get_or_fault(&self, digest: &Digest, limit: u64) -> Result<EncodedChunk> {
        *self
            .gets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(*digest)
            .or_default() += 1;
        match self.fault_for(digest) {
            None => self.inner.get_within(digest, limit).await,
            Some(Fault::Error) => Err(StoreError::Injected {
                store: Arc::clone(&self.name),
                digest: Hex(*digest),
            }),
            Some(Fault::Missing) => Err(StoreError::missing(
                &self.name,
                digest,
                crate::error::Location::Memory,
            )),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                self.inner.get_within(digest, limit).await
            }
            Some(Fault::Panic) => panic!("injected panic while fetching a chunk"),
            Some(Fault::Corrupt) => {
                let mut chunk = self.inner.get_within(digest, limit).await?;
                let middle = chunk.bytes.len() / 2;
                if let Some(byte) = chunk.bytes.get_mut(middle) {
                    *byte ^= 0x5a;
                } else {
                    chunk.bytes.push(0x5a);
                }
                Ok(chunk)
            }
        }
    }
}

#[async_trait::async_trait]
impl ChunkStore for FaultStore {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn encoding(&self) -> ChunkEncoding {
        self.inner.encoding()
    }

    async fn get(&self, digest: &Digest) -> Result<EncodedChunk> {
        self.get_or_fault(digest, crate::source::MAX_ENCODED_CHUNK)
            .await
    }

    async fn get_within(&self, digest: &Digest, limit: u64) -> Result<EncodedChunk> {
        self.get_or_fault(digest, limit).await
    }

    async fn stat(&self, digest: &Digest) -> Result<ChunkStat> {
        self.inner.stat(digest).await
    }

    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        self.inner.put(digest, encoded).await
    }

    async fn contains(&self, digest: &Digest) -> Result<bool> {
        self.inner.contains(digest).await
    }

    async fn touch(&self, digest: &Digest) -> Result<bool> {
        self.inner.touch(digest).await
    }

    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }

    async fn reject(&self, digest: &Digest, error: &crate::StoreError) -> bool {
        self.inner.reject(digest, error).await
    }
}
