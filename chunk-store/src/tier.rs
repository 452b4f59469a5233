//! A local disk tier in front of any store: chunks read from the origin are kept in a local
//! PBS datastore or casync store folder, bounded in bytes, and served from there next time.
//!
//! The folder is the tier's own: it is marked by [`DISK_CACHE_MARKER`] when the tier creates
//! it, and a folder that holds anything without that marker is refused before anything in it is
//! touched, so eviction can never delete a store's chunks.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::castr::CastrStore;
use crate::digest::Digest;
use crate::error::{Location, Result, StoreError};
use crate::pbs::{PbsDatastore, blocking};
use crate::source::MAX_ENCODED_CHUNK;
use crate::store::{ChunkEncoding, ChunkStat, ChunkStore, EncodedChunk, PutOutcome, SyncLevel};
use crate::turns::Turns;

/// The file that marks a folder as a disk tier of cairn's. [`DiskTier::open`] writes it into the
/// empty (or new) folder it is given and refuses any other folder that lacks it, so the tier's
/// evictions only ever delete chunk files in a folder cairn made for them. An open tier holds an
/// exclusive lock (`flock`) on it for as long as it lives.
pub const DISK_CACHE_MARKER: &str = ".cairn-disk-cache";

/// What the marker file says to whoever finds it.
const MARKER_TEXT: &str = "This folder is a disk cache of cairn: copies of chunks kept to be read \
again, deleted when the cache needs room. The whole folder may be deleted when no cairn runs.\n";

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
///
/// - **Its own folder only**: [`open`](DiskTier::open) takes an empty or new folder (and marks
///   it with [`DISK_CACHE_MARKER`]) or one it marked before; a folder holding a datastore, a
///   casync store or anything else is refused with [`StoreError::ForeignFolder`], untouched.
/// - **One owner, any number of readers**: the first tier to open a folder locks it and is its
///   owner, the only one that fills and evicts. A tier that opens a folder another process (or
///   another tier of this one) owns is [shared](DiskTier::is_shared): it serves the chunks it
///   finds there and reads everything else from the origin without keeping it, so two
///   processes never overrun the budget or fight over the order. The lock goes with the owner
///   (also when it crashes); the next tier to open the folder owns it.
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
    /// The marker file, locked while this tier owns the folder; `None` for a shared tier.
    owner_lock: Option<File>,
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
    /// Bytes reserved by chunks being written now.
    pub reserved: u64,
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
    /// make room; `None`, reserving and evicting nothing, if the chunks being written leave no
    /// room for it even with every kept chunk gone.
    fn reserve(&mut self, size: u64, budget: u64) -> Option<Vec<Digest>> {
        if self.reserved.saturating_add(size) > budget {
            return None;
        }
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
        Some(victims)
    }
}

/// Bytes reserved for a chunk being written: given back when dropped, whether the write
/// finished, failed or was abandoned with its future (a cancelled read), unless it became the
/// kept chunk's own bytes.
struct Reservation<'a> {
    inner: &'a Inner,
    size: u64,
}

impl Reservation<'_> {
    /// Turns the reservation into chunk `digest`, kept: both in one critical section, so the
    /// bytes are counted throughout.
    fn keep(mut self, digest: Digest) {
        let mut lru = self.inner.lock();
        lru.reserved -= self.size;
        lru.insert(digest, self.size);
        self.size = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.size > 0 {
            self.inner.lock().reserved -= self.size;
        }
    }
}

impl DiskTier {
    /// A tier in `folder` of at most `budget` bytes in front of `origin`. A new or empty folder
    /// is created and marked as the tier's; one the tier marked before is opened with the
    /// chunks in it kept, up to the budget. If another tier owns the folder now, this one is
    /// [shared](DiskTier::is_shared).
    ///
    /// # Errors
    /// [`StoreError::ForeignFolder`] for a folder cairn did not make (a datastore, a casync
    /// store, any other folder that is not empty, or a file), with nothing in it touched;
    /// [`StoreError::Store`] if the folder cannot be created, marked, locked or listed.
    pub fn open(
        folder: impl AsRef<Path>,
        budget: u64,
        origin: Arc<dyn ChunkStore>,
    ) -> Result<Self> {
        let folder = folder.as_ref().to_path_buf();
        let name = Arc::clone(origin.name());
        let problem = |what: &str, e: io::Error| {
            StoreError::store(
                &name,
                &format!("cannot {what} the disk cache {}", folder.display()),
                Some(e),
            )
        };
        let marker = claim(&folder).map_err(|e| match e {
            Claim::Foreign(why) => StoreError::ForeignFolder {
                folder: folder.clone(),
                why,
            },
            Claim::Io(what, e) => problem(what, e),
        })?;
        let owner_lock = match rustix::fs::flock(
            &marker,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => Some(marker),
            Err(rustix::io::Errno::WOULDBLOCK) => None,
            Err(e) => return Err(problem("lock", e.into())),
        };
        let inner = Inner {
            origin,
            local: OnceLock::new(),
            budget,
            lru: Mutex::default(),
            turns: Turns::default(),
            filling: AtomicBool::new(true),
            counters: Counters::default(),
            folder,
            owner_lock,
        };
        if let Some(local) = inner.found_local()? {
            inner.adopt(&local)?;
            let _ = inner.local.set(local);
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Whether another tier owns the folder: this one serves the chunks it finds there and
    /// never writes or evicts any (see [`DiskTier`]).
    #[must_use]
    pub fn is_shared(&self) -> bool {
        self.inner.owner_lock.is_none()
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
            reserved: lru.reserved,
        }
    }
}

/// Why a folder cannot be a tier's.
enum Claim {
    /// It is not the tier's to fill: why, in words.
    Foreign(&'static str),
    /// What could not be done, and why.
    Io(&'static str, io::Error),
}

/// The marker of `folder`, open: the folder created and marked if it is new or empty, or
/// marked before; refused, untouched, if it holds anything else.
fn claim(folder: &Path) -> std::result::Result<File, Claim> {
    match std::fs::metadata(folder) {
        Ok(meta) if !meta.is_dir() => return Err(Claim::Foreign("it is not a folder")),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(folder).map_err(|e| Claim::Io("create", e))?;
        }
        Err(e) => return Err(Claim::Io("examine", e)),
    }
    let marker = folder.join(DISK_CACHE_MARKER);
    let marked = std::fs::symlink_metadata(&marker).is_ok_and(|meta| meta.is_file());
    if !marked {
        let mut entries = std::fs::read_dir(folder).map_err(|e| Claim::Io("list", e))?;
        if entries.next().is_some() {
            return Err(Claim::Foreign(match store_in(folder) {
                Some(ChunkEncoding::PbsBlob) => {
                    "it holds a PBS datastore (or a disk cache of a cairn older than the marker \
                     file), whose chunks the cache would delete to stay within its size; delete \
                     it if it is a cache, or give an empty or new folder"
                }
                Some(_) => {
                    "it holds a casync store, or a disk cache of a cairn older than the marker \
                     file, which cannot be told apart; delete it if it is a cache, or give an \
                     empty or new folder"
                }
                None => "it is not empty and has no marker file; give an empty or new folder",
            }));
        }
        match File::options()
            .write(true)
            .create_new(true)
            .open(&marker)
            .and_then(|mut file| io::Write::write_all(&mut file, MARKER_TEXT.as_bytes()))
        {
            // Another process marked it at the same moment: as good.
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(Claim::Io("mark", e));
            }
            _ => {}
        }
    }
    File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
        .open(&marker)
        .map_err(|e| Claim::Io("open the marker of", e))
}

/// The kind of store `folder` holds: a PBS datastore (`.chunks/`), a casync store (a
/// four-hex-digit subfolder), or none.
fn store_in(folder: &Path) -> Option<ChunkEncoding> {
    if folder.join(".chunks").is_dir() {
        Some(ChunkEncoding::PbsBlob)
    } else if has_prefix_folders(folder) {
        Some(ChunkEncoding::CasyncCompressed)
    } else {
        None
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

    fn shared(&self) -> bool {
        self.owner_lock.is_none()
    }

    /// The store the folder holds already, if it holds one.
    fn found_local(&self) -> Result<Option<Local>> {
        store_in(&self.folder)
            .map(|encoding| Local::create(&self.folder, encoding))
            .transpose()
    }

    /// The folder's store: the one known, or for a shared tier the one its owner may have made
    /// since.
    fn local(&self) -> Option<&Local> {
        if let Some(local) = self.local.get() {
            return Some(local);
        }
        if self.shared()
            && let Ok(Some(local)) = self.found_local()
        {
            return Some(self.local.get_or_init(|| local));
        }
        None
    }

    /// Takes the chunks already in the folder into the order, least recently read first, and
    /// (as its owner) deletes the oldest beyond the budget.
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
        if self.shared() {
            return Ok(());
        }
        let victims = lru.reserve(0, self.budget).unwrap_or_default();
        drop(lru);
        for digest in victims {
            let _ = std::fs::remove_file(local.path(&digest));
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn get(self: &Arc<Self>, digest: &Digest, limit: u64) -> Result<EncodedChunk> {
        // The owner knows what the folder holds; a shared tier looks, since the owner fills it.
        if let Some(local) = self.local()
            && (self.shared() || self.lock().contains(digest))
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
        let chunk = self.origin.get_within(digest, limit).await?;
        if !self.shared() && self.filling.load(Ordering::Relaxed) {
            // The fill runs as a task of its own and ends even if this read is given up (a
            // restore's first failure, a caller's timeout): a chunk file written is a chunk
            // counted, and its reservation is given back either way. Waiting for it here, in
            // the chunk's turn, lets the next reader of the chunk find it on disk.
            let fill = tokio::spawn({
                let inner = Arc::clone(self);
                let (digest, encoding, bytes) = (*digest, chunk.encoding, chunk.bytes.clone());
                async move { inner.fill(&digest, encoding, bytes).await }
            });
            let _ = fill.await;
        }
        Ok(chunk)
    }

    /// Keeps `chunk` in the folder if it fits; a failure only stops filling. Only the owner
    /// fills, and only within the budget: a chunk for which the chunks being written leave no
    /// room is served and not kept.
    async fn fill(&self, digest: &Digest, encoding: ChunkEncoding, bytes: Vec<u8>) {
        if !self.filling.load(Ordering::Relaxed) {
            return;
        }
        let size = bytes.len() as u64;
        if size > self.budget {
            return;
        }
        let local = match self.local.get() {
            Some(local) => local,
            None => match Local::create(&self.folder, encoding) {
                Ok(local) => self.local.get_or_init(|| local),
                Err(_) => return self.fill_failed(),
            },
        };
        if !local.keeps(encoding) {
            return;
        }
        let Some(victims) = self.lock().reserve(size, self.budget) else {
            return;
        };
        let reservation = Reservation { inner: self, size };
        self.delete(local, victims, &self.counters.evictions).await;
        match local.store().put(digest, bytes).await {
            Ok(PutOutcome::Inserted | PutOutcome::AlreadyPresent) => {
                reservation.keep(*digest);
                self.counters.fills.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                drop(reservation);
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
        let ours = match (self.local(), error.location()) {
            (Some(local), Some(Location::Path(path))) => *path == local.path(digest),
            _ => false,
        };
        if let Some(local) = self.local() {
            // Whoever gave the bad bytes, no copy of them stays (a shared tier deletes a bad
            // copy too: chunk files are written whole, so a bad one is bad for everyone).
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
        self.get_within(digest, MAX_ENCODED_CHUNK).await
    }

    async fn get_within(&self, digest: &Digest, limit: u64) -> Result<EncodedChunk> {
        self.inner
            .turns
            .run(digest, self.inner.get(digest, limit))
            .await
    }

    /// The folder's copy if there is one, else the origin's.
    async fn stat(&self, digest: &Digest) -> Result<ChunkStat> {
        if let Some(local) = self.inner.local()
            && let Ok(stat) = local.store().stat(digest).await
        {
            return Ok(stat);
        }
        self.inner.origin.stat(digest).await
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
        Release,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 1u16..500).prop_map(|(d, s)| Op::Insert(d, s)),
            (0u8..12).prop_map(Op::Touch),
            (0u8..12).prop_map(Op::Remove),
            (0u16..800).prop_map(Op::Reserve),
            Just(Op::Release),
        ]
    }

    proptest! {
        /// Against a list in recency order (least recent first) and a list of reservations
        /// held: the same chunks, the same sizes, the same victims, and never a reservation
        /// the chunks being written leave no room for.
        #[test]
        fn lru_order_matches_a_list(ops in prop::collection::vec(op(), 0..200)) {
            let budget = 1500;
            let mut lru = Lru::default();
            let mut model: Vec<(u8, u64)> = Vec::new();
            let mut held: Vec<u64> = Vec::new();
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
                        let reserved: u64 = held.iter().sum();
                        if reserved + size > budget {
                            prop_assert_eq!(victims, None);
                        } else {
                            let mut expected = Vec::new();
                            while model.iter().map(|(_, s)| s).sum::<u64>() + reserved + size
                                > budget
                                && !model.is_empty()
                            {
                                expected.push([model.remove(0).0; 32]);
                            }
                            prop_assert_eq!(victims, Some(expected));
                            held.push(size);
                            prop_assert!(lru.used + lru.reserved <= budget);
                        }
                    }
                    Op::Release => {
                        if let Some(size) = held.pop() {
                            lru.reserved -= size;
                        }
                    }
                }
                prop_assert_eq!(lru.reserved, held.iter().sum::<u64>());
                prop_assert_eq!(lru.used, model.iter().map(|(_, s)| s).sum::<u64>());
                prop_assert_eq!(lru.entries.len(), model.len());
                let order: Vec<Digest> = lru.order.values().copied().collect();
                let expected: Vec<Digest> = model.iter().map(|(d, _)| [*d; 32]).collect();
                prop_assert_eq!(order, expected);
            }
        }
    }
}
