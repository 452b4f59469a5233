//! A local disk tier in front of any store: chunks read from the origin are kept in a local
//! PBS datastore or casync store folder, bounded in bytes, and served from there next time.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::castr::CastrStore;
use crate::digest::Digest;
use crate::error::{Location, Result, StoreError};
use crate::pbs::{PbsDatastore, blocking};
use crate::store::{ChunkEncoding, ChunkStore, EncodedChunk, PutOutcome, SyncLevel};
use crate::turns::Turns;

/// A bounded local copy of a store's chunks, itself a [`ChunkStore`].
///
/// - **Reads** come from the folder when the chunk is there, else from the origin; what the
///   origin gives is written into the folder (atomically: a temporary file, then a link) and
///   kept. Concurrent reads of one chunk wait for each other, so a miss is fetched once and the
///   others find it on disk.
/// - **Bounded**: the folder holds at most the byte budget, counting chunks being written;
///   the least recently used chunks are deleted to make room. Chunks already in the folder
///   when the tier opens count, oldest access first.
/// - **Never blamed**: a chunk from the folder that fails verification is
///   [rejected](ChunkStore::reject), deleted and fetched again from the origin; the reader
///   never sees the error. Bad bytes from the origin are deleted too, and the error names the
///   origin.
/// - **Degrades**: a chunk the folder cannot hold (full or failing disk) is served from the
///   origin, and after a failed write the tier stops filling and reads through.
/// - **Writes** (`put`, `contains`, `touch`, `sync`) go to the origin: a backup through the
///   tier stores its chunks where they belong.
///
/// The folder is a PBS datastore or a casync store: the one it holds, or for an empty folder
/// the layout of the first chunk kept. Chunks of the other encoding are served, not kept.
#[derive(Debug, Clone)]
pub struct DiskTier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    origin: Arc<dyn ChunkStore>,
    folder: PathBuf,
    local: OnceLock<Local>,
    budget: u64,
    lru: Mutex<Lru>,
    turns: Turns,
    filling: AtomicBool,
    counters: Counters,
}

/// What the tier has done since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// Reads served from the folder.
    pub hits: u64,
    /// Reads that went to the origin.
    pub misses: u64,
    /// Chunks written into the folder.
    pub fills: u64,
    /// Chunks deleted to stay within the budget.
    pub evictions: u64,
    /// Chunks deleted because they failed verification.
    pub rejected: u64,
    /// Chunks that could not be written (full or failing disk).
    pub fill_failures: u64,
    /// Bytes of chunks in the folder now.
    pub bytes: u64,
    /// Chunks in the folder now.
    pub chunks: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    evictions: AtomicU64,
    rejected: AtomicU64,
    fill_failures: AtomicU64,
}

/// The folder's store.
#[derive(Debug)]
enum Local {
    Pbs(PbsDatastore),
    Castr(CastrStore),
}

impl Local {
    fn store(&self) -> &dyn ChunkStore {
        match self {
            Self::Pbs(store) => store,
            Self::Castr(store) => store,
        }
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        match self {
            Self::Pbs(store) => store.chunk_path(digest),
            Self::Castr(store) => store.chunk_path(digest),
        }
    }

    fn keeps(&self, encoding: ChunkEncoding) -> bool {
        self.store().encoding() == encoding
    }

    fn digests(&self) -> Result<Vec<Digest>> {
        match self {
            Self::Pbs(store) => store.digests(),
            Self::Castr(store) => store.digests(),
        }
    }

    fn create(folder: &Path, encoding: ChunkEncoding) -> Result<Self> {
        Ok(match encoding {
            ChunkEncoding::PbsBlob => {
                Self::Pbs(PbsDatastore::create(folder)?.with_sync(SyncLevel::None))
            }
            _ => Self::Castr(CastrStore::create(folder)?.with_sync(SyncLevel::None)),
        })
    }
}

/// Least-recently-used order of the chunks in the folder.
#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<Digest, (u64, u64)>,
    order: BTreeMap<u64, Digest>,
    /// Bytes of the chunks in `entries`.
    used: u64,
    /// Bytes of chunks being written.
    reserved: u64,
    clock: u64,
}

impl Lru {
    fn contains(&self, digest: &Digest) -> bool {
        self.entries.contains_key(digest)
    }

    fn insert(&mut self, digest: Digest, size: u64) {
        self.remove(&digest);
        self.clock += 1;
        self.entries.insert(digest, (size, self.clock));
        self.order.insert(self.clock, digest);
        self.used += size;
    }

    fn touch(&mut self, digest: &Digest) {
        if let Some((size, _)) = self.entries.get(digest).copied() {
            self.insert(*digest, size);
        }
    }

    fn remove(&mut self, digest: &Digest) -> bool {
        let Some((size, tick)) = self.entries.remove(digest) else {
            return false;
        };
        self.order.remove(&tick);
        self.used -= size;
        true
    }

    /// Reserves `size` bytes for a chunk being written and returns the chunks to delete to
    /// make room.
    fn reserve(&mut self, size: u64, budget: u64) -> Vec<Digest> {
        self.reserved += size;
        let mut victims = Vec::new();
        while self.used + self.reserved > budget {
            let Some((_, digest)) = self.order.pop_first() else {
                break;
            };
            if let Some((size, _)) = self.entries.remove(&digest) {
                self.used -= size;
            }
            victims.push(digest);
        }
        victims
    }
}

impl DiskTier {
    /// A tier in `folder` (created if needed) of at most `budget` bytes in front of `origin`.
    /// Chunks already in the folder are kept, up to the budget.
    ///
    /// # Errors
    /// [`StoreError::Store`] if the folder cannot be created or listed.
    pub fn open(
        folder: impl AsRef<Path>,
        budget: u64,
        origin: Arc<dyn ChunkStore>,
    ) -> Result<Self> {
        let folder = folder.as_ref().to_path_buf();
        let name = Arc::clone(origin.name());
        std::fs::create_dir_all(&folder).map_err(|e| {
            StoreError::store(
                &name,
                &format!("cannot create the disk cache {}", folder.display()),
                Some(e),
            )
        })?;
        let inner = Inner {
            origin,
            local: OnceLock::new(),
            budget,
            lru: Mutex::default(),
            turns: Turns::default(),
            filling: AtomicBool::new(true),
            counters: Counters::default(),
            folder,
        };
        let found = if inner.folder.join(".chunks").is_dir() {
            Some(ChunkEncoding::PbsBlob)
        } else if has_prefix_folders(&inner.folder) {
            Some(ChunkEncoding::CasyncCompressed)
        } else {
            None
        };
        if let Some(encoding) = found {
            let local = Local::create(&inner.folder, encoding)?;
            inner.adopt(&local)?;
            let _ = inner.local.set(local);
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The origin.
    #[must_use]
    pub fn origin(&self) -> &Arc<dyn ChunkStore> {
        &self.inner.origin
    }

    /// The folder.
    #[must_use]
    pub fn folder(&self) -> &Path {
        &self.inner.folder
    }

    /// The byte budget.
    #[must_use]
    pub fn budget(&self) -> u64 {
        self.inner.budget
    }

    /// What the tier has done so far.
    #[must_use]
    pub fn stats(&self) -> TierStats {
        let c = &self.inner.counters;
        let lru = self.inner.lock();
        TierStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            fills: c.fills.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            fill_failures: c.fill_failures.load(Ordering::Relaxed),
            bytes: lru.used,
            chunks: lru.entries.len() as u64,
        }
    }
}

/// Whether `folder` has a four-hex-digit subfolder, as a casync store does.
fn has_prefix_folders(folder: &Path) -> bool {
    std::fs::read_dir(folder).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.len() == 4
                && name.bytes().all(|b| b.is_ascii_hexdigit())
                && entry.file_type().is_ok_and(|t| t.is_dir())
        })
    })
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the chunks already in the folder into the order, least recently read first, and
    /// deletes the oldest beyond the budget.
    fn adopt(&self, local: &Local) -> Result<()> {
        let mut found = Vec::new();
        for digest in local.digests()? {
            let Ok(meta) = std::fs::metadata(local.path(&digest)) else {
                continue;
            };
            let used = meta.accessed().or_else(|_| meta.modified()).ok();
            found.push((used, digest, meta.len()));
        }
        found.sort_unstable();
        let mut lru = self.lock();
        for (_, digest, size) in found {
            lru.insert(digest, size);
        }
        let victims = lru.reserve(0, self.budget);
        drop(lru);
        for digest in victims {
            let _ = std::fs::remove_file(local.path(&digest));
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn get(&self, digest: &Digest) -> Result<EncodedChunk> {
        if let Some(local) = self.local.get()
            && self.lock().contains(digest)
        {
            match local.store().get(digest).await {
                Ok(chunk) => {
                    self.lock().touch(digest);
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(chunk);
                }
                // Gone or unreadable: a miss.
                Err(_) => {
                    self.lock().remove(digest);
                }
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let chunk = self.origin.get(digest).await?;
        self.fill(digest, &chunk).await;
        Ok(chunk)
    }

    /// Keeps `chunk` in the folder if it fits; a failure only stops filling.
    async fn fill(&self, digest: &Digest, chunk: &EncodedChunk) {
        if !self.filling.load(Ordering::Relaxed) {
            return;
        }
        let size = chunk.bytes.len() as u64;
        if size > self.budget {
            return;
        }
        let local = match self.local.get() {
            Some(local) => local,
            None => match Local::create(&self.folder, chunk.encoding) {
                Ok(local) => self.local.get_or_init(|| local),
                Err(_) => return self.fill_failed(),
            },
        };
        if !local.keeps(chunk.encoding) {
            return;
        }
        let victims = self.lock().reserve(size, self.budget);
        self.delete(local, victims, &self.counters.evictions).await;
        let put = local.store().put(digest, chunk.bytes.clone()).await;
        let mut lru = self.lock();
        lru.reserved -= size;
        match put {
            Ok(PutOutcome::Inserted | PutOutcome::AlreadyPresent) => {
                lru.insert(*digest, size);
                self.counters.fills.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                drop(lru);
                self.fill_failed();
            }
        }
    }

    fn fill_failed(&self) {
        self.counters.fill_failures.fetch_add(1, Ordering::Relaxed);
        self.filling.store(false, Ordering::Relaxed);
    }

    /// Deletes the files of `digests`, counting each in `counter`.
    async fn delete(&self, local: &Local, digests: Vec<Digest>, counter: &AtomicU64) {
        if digests.is_empty() {
            return;
        }
        counter.fetch_add(digests.len() as u64, Ordering::Relaxed);
        let paths: Vec<PathBuf> = digests.iter().map(|d| local.path(d)).collect();
        let _ = blocking(move || {
            for path in paths {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })
        .await;
    }

    async fn reject(&self, digest: &Digest, error: &StoreError) -> bool {
        let ours = match (self.local.get(), error.location()) {
            (Some(local), Some(Location::Path(path))) => *path == local.path(digest),
            _ => false,
        };
        if let Some(local) = self.local.get() {
            // Whoever gave the bad bytes, no copy of them stays.
            let kept = self.lock().remove(digest);
            if kept || ours {
                self.delete(local, vec![*digest], &self.counters.rejected)
                    .await;
            }
        }
        // A bad copy of ours: the origin's is next. Bad bytes from the origin: its call.
        ours || self.origin.reject(digest, error).await
    }
}

#[async_trait::async_trait]
impl ChunkStore for DiskTier {
    /// The origin's name: errors that reach the reader are about the origin's chunks.
    fn name(&self) -> &Arc<str> {
        self.inner.origin.name()
    }

    fn encoding(&self) -> ChunkEncoding {
        self.inner.origin.encoding()
    }

    async fn get(&self, digest: &Digest) -> Result<EncodedChunk> {
        self.inner.turns.run(digest, self.inner.get(digest)).await
    }

    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        self.inner.origin.put(digest, encoded).await
    }

    async fn contains(&self, digest: &Digest) -> Result<bool> {
        self.inner.origin.contains(digest).await
    }

    async fn touch(&self, digest: &Digest) -> Result<bool> {
        self.inner.origin.touch(digest).await
    }

    async fn sync(&self) -> Result<()> {
        self.inner.origin.sync().await
    }

    async fn reject(&self, digest: &Digest, error: &StoreError) -> bool {
        self.inner.reject(digest, error).await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Touch(u8),
        Remove(u8),
        Reserve(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 1u16..500).prop_map(|(d, s)| Op::Insert(d, s)),
            (0u8..12).prop_map(Op::Touch),
            (0u8..12).prop_map(Op::Remove),
            (0u16..800).prop_map(Op::Reserve),
        ]
    }

    proptest! {
        /// Against a list in recency order (least recent first): the same chunks, the same
        /// sizes, the same victims.
        #[test]
        fn lru_order_matches_a_list(ops in prop::collection::vec(op(), 0..200)) {
            let budget = 1500;
            let mut lru = Lru::default();
            let mut model: Vec<(u8, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(d, size) => {
                        lru.insert([d; 32], u64::from(size));
                        model.retain(|(m, _)| *m != d);
                        model.push((d, u64::from(size)));
                    }
                    Op::Touch(d) => {
                        lru.touch(&[d; 32]);
                        if let Some(at) = model.iter().position(|(m, _)| *m == d) {
                            let entry = model.remove(at);
                            model.push(entry);
                        }
                    }
                    Op::Remove(d) => {
                        let had = model.iter().any(|(m, _)| *m == d);
                        prop_assert_eq!(lru.remove(&[d; 32]), had);
                        model.retain(|(m, _)| *m != d);
                    }
                    Op::Reserve(size) => {
                        let size = u64::from(size);
                        let victims = lru.reserve(size, budget);
                        let mut expected = Vec::new();
                        while model.iter().map(|(_, s)| s).sum::<u64>() + size > budget
                            && !model.is_empty()
                        {
                            expected.push([model.remove(0).0; 32]);
                        }
                        prop_assert_eq!(victims, expected);
                        prop_assert!(lru.used + size <= budget || lru.entries.is_empty());
                        lru.reserved -= size;
                    }
                }
                prop_assert_eq!(lru.used, model.iter().map(|(_, s)| s).sum::<u64>());
                prop_assert_eq!(lru.entries.len(), model.len());
                let order: Vec<Digest> = lru.order.values().copied().collect();
                let expected: Vec<Digest> = model.iter().map(|(d, _)| [*d; 32]).collect();
                prop_assert_eq!(order, expected);
            }
        }
    }
}
