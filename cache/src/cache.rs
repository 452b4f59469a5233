//! The cache: sharded recency lists, one global weight budget, and fetches that run as tasks.
//!
//! Locking, in one place:
//! - Each shard has a read-write lock over its list and its in-flight fetches. A lookup takes
//!   only its key's shard lock, so lookups of keys in different shards never wait on each other;
//!   a hit that does not move its entry (see [`Cache`] on promotion) takes it for reading only,
//!   so hits in one shard do not wait on each other either. Hits are counted in an atomic of
//!   the shard, everything else that changes under the write lock.
//! - Weight only grows under `insert_lock`, which the storing side (insert, a fetch finishing,
//!   a capacity change) takes before any shard lock. Whoever holds it evicts until the new entry
//!   fits, then adds it, so the cached weight never exceeds the capacity. A thread holds two shard
//!   locks never; one shard lock inside `insert_lock` at most.
//! - No lock is held across an `.await`, and no user code (weighers, fetchers, drops of values)
//!   runs under a lock, so a panic there cannot poison the cache.

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::error::{CacheError, SharedError};
use crate::fetch::Fetch;
use crate::lru::{EMPTY_TICK, Lru, Node};
use crate::stats::CacheStats;
use crate::sync::{AtomicU64, Mutex, Ordering, Outcome, RwLock, Spawner, lock, read, write};
use crate::weighter::{UnitWeighter, Weighter, effective_weight};

/// An async LRU cache that fetches each missing key once, shared by cheap clones.
///
/// - [`get_or_fetch`](Cache::get_or_fetch) returns the cached value, or joins the fetch of the key
///   already in flight, or starts one. The fetch runs as its own tokio task: a caller that is
///   dropped, times out or is never polled again does not stop it, and every waiter (and every
///   later caller, from the cache) gets its outcome. A failed or panicking fetch gives every
///   waiter the same [`CacheError`]; nothing of a failure is cached.
/// - Entries are weighed by a [`Weighter`]; the total weight of cached entries never exceeds the
///   capacity. Eviction takes the least recently used entry first. A value heavier than the whole
///   capacity is handed to its callers but not kept; capacity 0 keeps nothing but still
///   coalesces fetches. Every new entry is admitted (no admission filter), so a one-pass scan,
///   such as a restore, is cached.
///
/// # Promotion: what a hit moves
/// Entries are kept in order of their last *move*: an insertion puts an entry at the front, and
/// a hit moves it to the front only if it is no longer recent, that is when more insertions
/// happened since its last move than a quarter of the number of cached entries. A hit of a
/// recent entry changes nothing but the hit counter, so it takes its shard's lock for reading
/// and writes nothing shared. The price is bounded: an entry used while it was recent is kept
/// through at most a quarter of the entry count fewer insertions than an exact LRU would keep it.
///
/// # What "least recently used" means with several shards
/// Keys are spread over shards by hash; a lookup locks only its shard. Within a shard, the order
/// is exactly the one above. Across shards, eviction takes the shard tail with the oldest move
/// on a cache-wide clock that advances on every insertion: two moves in different shards between
/// the same pair of insertions count as simultaneous. With one shard ([`CacheBuilder::shards`])
/// the order is exact; the property tests check it against a reference model
/// (`LruModel`, feature `testing`) that way.
///
/// # What bounds the fetches in flight
/// In-flight fetches are not part of the weight. There is at most one per key, and one is
/// started only by a `get_or_fetch` call that finds the key neither cached nor in flight; so
/// they are bounded by the number of distinct keys callers are waiting on, plus fetches whose
/// callers all went away (they run to completion and store their value). Callers that need a
/// tighter memory bound limit their own concurrency (the reader does, per read).
/// [`CacheStats::in_flight`] tells how many there are.
///
/// # If every caller goes away
/// The fetch is not cancelled: it runs to completion, stores its value (subject to the capacity)
/// and removes its in-flight entry. Nothing leaks. If the runtime running it shuts down first,
/// the task is dropped, its in-flight entry removed, and any waiter gets
/// [`CacheError::Abandoned`].
pub struct Cache<K, V, W = UnitWeighter> {
    inner: Arc<Inner<K, V, W>>,
}

impl<K, V, W> Clone for Cache<K, V, W> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, W> fmt::Debug for Cache<K, V, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("shards", &self.inner.shards.len())
            .field("capacity", &self.inner.capacity.load(Ordering::Relaxed))
            .field("weight", &self.inner.weight.load(Ordering::Relaxed))
            .field("entries", &self.inner.entries.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Configures a [`Cache`]: capacity, shard count and weighter.
#[derive(Debug, Clone)]
pub struct CacheBuilder<W = UnitWeighter> {
    capacity: u64,
    shards: Option<usize>,
    weighter: W,
}

impl CacheBuilder<UnitWeighter> {
    /// A builder for a cache of `capacity`, in units of the weighter (entries by default).
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            shards: None,
            weighter: UnitWeighter,
        }
    }
}

impl<W> CacheBuilder<W> {
    /// The number of shards, rounded up to a power of two (at least 1, at most 1024).
    ///
    /// The default is eight per available core (at least 16, at most 128). One shard makes the
    /// order exact across all keys at the price of one lock for all lookups.
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Weighs entries with `weighter` instead of counting them.
    #[must_use]
    pub fn weighter<W2>(self, weighter: W2) -> CacheBuilder<W2> {
        CacheBuilder {
            capacity: self.capacity,
            shards: self.shards,
            weighter,
        }
    }

    /// Builds the cache.
    #[must_use]
    pub fn build<K, V>(self) -> Cache<K, V, W>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        W: Weighter<K, V>,
    {
        let shards = self
            .shards
            .unwrap_or_else(default_shards)
            .clamp(1, 1024)
            .next_power_of_two();
        Cache {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Shard::default()).collect(),
                shard_mask: shards as u64 - 1,
                hasher: DefaultHashBuilder::default(),
                weighter: self.weighter,
                capacity: AtomicU64::new(self.capacity),
                weight: AtomicU64::new(0),
                entries: AtomicU64::new(0),
                clock: AtomicU64::new(0),
                insert_lock: Mutex::new(()),
                next_fetch_id: AtomicU64::new(0),
                fetch_errors: AtomicU64::new(0),
                panics: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                oversized: AtomicU64::new(0),
            }),
        }
    }
}

fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    (cores * 8).clamp(16, 128)
}

struct Inner<K, V, W> {
    shards: Box<[Shard<K, V>]>,
    shard_mask: u64,
    hasher: DefaultHashBuilder,
    weighter: W,
    capacity: AtomicU64,
    /// Total weight of cached entries; grows only under `insert_lock`.
    weight: AtomicU64,
    entries: AtomicU64,
    /// Cache-wide recency clock: insertions advance it by 2 (even ticks), uses read it and add 1
    /// (odd ticks), so a use after an insertion counts as later than it without writing to it.
    clock: AtomicU64,
    insert_lock: Mutex<()>,
    next_fetch_id: AtomicU64,
    fetch_errors: AtomicU64,
    panics: AtomicU64,
    abandoned: AtomicU64,
    evictions: AtomicU64,
    oversized: AtomicU64,
}

/// One shard, on cache lines of its own so two cores using two shards do not share memory.
#[repr(align(128))]
struct Shard<K, V> {
    state: RwLock<ShardState<K, V>>,
    /// Hits, counted outside the lock so a read-locked hit can count itself.
    hits: AtomicU64,
    /// The tick of this shard's least recently used entry ([`EMPTY_TICK`] when empty), published
    /// under the shard lock so eviction can choose a shard without locking them all.
    tail_tick: AtomicU64,
}

impl<K, V> Default for Shard<K, V> {
    fn default() -> Self {
        Self {
            state: RwLock::new(ShardState {
                lru: Lru::default(),
                in_flight: HashTable::new(),
                misses: 0,
                coalesced: 0,
            }),
            hits: AtomicU64::new(0),
            tail_tick: AtomicU64::new(EMPTY_TICK),
        }
    }
}

struct ShardState<K, V> {
    lru: Lru<K, V>,
    in_flight: HashTable<InFlight<K, V>>,
    misses: u64,
    coalesced: u64,
}

/// A fetch in flight: waiters subscribe to its outcome.
struct InFlight<K, V> {
    hash: u64,
    key: K,
    /// Tells this fetch from a later one of the same key.
    id: u64,
    outcome: Arc<Outcome<V>>,
}

/// What a read-locked lookup found.
enum ReadHit<V> {
    /// A hit of a recent entry: nothing to move.
    Recent(V),
    /// A hit that must move the entry, under the write lock.
    Stale,
    Absent,
}

/// What a lookup found.
enum Lookup<V> {
    Hit(V),
    Wait(Arc<Outcome<V>>),
}

impl<K, V> Cache<K, V, UnitWeighter>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        CacheBuilder::new(capacity).build()
    }
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weighter<K, V>,
{
    /// A cache of total weight at most `capacity`, weighed by `weighter`.
    #[must_use]
    pub fn with_weighter(capacity: u64, weighter: W) -> Self {
        CacheBuilder::new(capacity).weighter(weighter).build()
    }

    /// The cached value of `key`, or the outcome of the one fetch of it, started here by
    /// `fetcher` if none is cached or in flight.
    ///
    /// # Errors
    /// The fetch's error, panic or abandonment, shared with every waiter of that fetch; or
    /// [`CacheError::NoRuntime`] when a fetch must start outside a tokio runtime.
    pub async fn get_or_fetch<F>(&self, key: K, fetcher: &Arc<F>) -> Result<V, CacheError>
    where
        F: Fetch<K, V> + ?Sized,
    {
        self.get_or_fetch_with(key, |key| {
            let fetcher = Arc::clone(fetcher);
            async move { fetcher.fetch(key).await }
        })
        .await
    }

    /// Like [`get_or_fetch`](Cache::get_or_fetch) with a closure: `start` is called (outside any
    /// lock) only when this call starts the fetch, and its future runs as a task of its own.
    ///
    /// # Errors
    /// As for [`get_or_fetch`](Cache::get_or_fetch).
    pub async fn get_or_fetch_with<S, Fut, E>(&self, key: K, start: S) -> Result<V, CacheError>
    where
        S: FnOnce(K) -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        match self.lookup_or_start(key, start)? {
            Lookup::Hit(value) => Ok(value),
            Lookup::Wait(outcome) => outcome.wait().await,
        }
    }

    /// The synchronous part of a `get_or_fetch`: a hit, or a subscription to a fetch (joined or
    /// started here).
    fn lookup_or_start<S, Fut, E>(&self, key: K, start: S) -> Result<Lookup<V>, CacheError>
    where
        S: FnOnce(K) -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(&key);
        let shard = inner.shard(hash);
        if let Some(value) = inner.recent_hit(shard, hash, &key) {
            return Ok(Lookup::Hit(value));
        }
        let (fetch_id, sender, outcome, runtime) = {
            let mut state = write(&shard.state);
            if let Some(value) = inner.touch(shard, &mut state, hash, &key) {
                return Ok(Lookup::Hit(value));
            }
            if let Some(fetch) = state.in_flight.find(hash, |f| f.key == key) {
                let outcome = Arc::clone(&fetch.outcome);
                state.coalesced += 1;
                return Ok(Lookup::Wait(outcome));
            }
            // A miss: register the fetch before unlocking, so concurrent callers join it.
            let runtime = Spawner::current().ok_or(CacheError::NoRuntime)?;
            let outcome = Outcome::new();
            let fetch_id = inner.next_fetch_id.fetch_add(1, Ordering::Relaxed);
            state.in_flight.insert_unique(
                hash,
                InFlight {
                    hash,
                    key: key.clone(),
                    id: fetch_id,
                    outcome: Arc::clone(&outcome),
                },
                |f| f.hash,
            );
            state.misses += 1;
            (fetch_id, Arc::clone(&outcome), outcome, runtime)
        };
        // The guard exists before any user code runs: if `start` panics, dropping it removes
        // the in-flight entry and tells the waiters.
        let mut task = FetchTask {
            cache: self.clone(),
            key: Some(key.clone()),
            hash,
            fetch_id,
            sender,
        };
        let fetch = start(key);
        runtime.spawn(async move {
            let result = AssertUnwindSafe(fetch).catch_unwind().await;
            let outcome = match result {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(CacheError::Fetch(Arc::new(error) as SharedError)),
                Err(payload) => Err(CacheError::Panicked {
                    message: panic_message(payload.as_ref()),
                }),
            };
            task.finish(outcome);
        });
        Ok(Lookup::Wait(outcome))
    }

    /// The cached value of `key`, moved to the front if it was no longer recent (see
    /// [`Cache`] on promotion). Never fetches.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let shard = inner.shard(hash);
        match inner.read_hit(shard, hash, key) {
            ReadHit::Recent(value) => Some(value),
            ReadHit::Absent => None,
            ReadHit::Stale => {
                let mut state = write(&shard.state);
                inner.touch(shard, &mut state, hash, key)
            }
        }
    }

    /// The cached value of `key`, leaving recency and counters as they are.
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let state = read(&inner.shard(hash).state);
        state.lru.peek(hash, key).cloned()
    }

    /// Whether `key` is cached, leaving recency as it is.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        read(&inner.shard(hash).state).lru.peek(hash, key).is_some()
    }

    /// Caches `value` under `key` as the most recently used entry, replacing any value there,
    /// and evicts least recently used entries until it fits. A value heavier than the capacity
    /// is not kept (and the key's old value is removed). A fetch of `key` in flight is not
    /// affected: when it finishes, its value replaces this one.
    pub fn insert(&self, key: K, value: V) {
        let hash = self.inner.hasher.hash_one(&key);
        self.inner.store(hash, key, value, None);
    }

    /// Removes `key` and returns its value. A fetch of `key` in flight is not affected.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let shard = inner.shard(hash);
        let node = {
            let mut state = write(&shard.state);
            let node = state.lru.remove(hash, key)?;
            inner.forget(shard, &state, &node);
            node
        };
        Some(node.value)
    }

    /// Removes every cached entry. Fetches in flight are not affected.
    pub fn clear(&self) {
        let inner = &*self.inner;
        for shard in &inner.shards {
            let taken = {
                let mut state = write(&shard.state);
                let taken = std::mem::take(&mut state.lru);
                inner
                    .weight
                    .fetch_sub(taken.total_weight(), Ordering::AcqRel);
                inner
                    .entries
                    .fetch_sub(taken.len() as u64, Ordering::Relaxed);
                shard.tail_tick.store(EMPTY_TICK, Ordering::Relaxed);
                taken
            };
            // Values drop here, outside the lock.
            drop(taken);
        }
    }

    /// The number of cached entries.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::try_from(self.inner.entries.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Whether no entry is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The total weight of cached entries; never more than [`capacity`](Cache::capacity).
    #[must_use]
    pub fn weight(&self) -> u64 {
        self.inner.weight.load(Ordering::Acquire)
    }

    /// The capacity, in units of the weighter.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.inner.capacity.load(Ordering::Relaxed)
    }

    /// Changes the capacity; shrinking evicts least recently used entries until the weight fits.
    pub fn set_capacity(&self, capacity: u64) {
        let inner = &*self.inner;
        let mut evicted = Vec::new();
        {
            let _storing = lock(&inner.insert_lock);
            inner.capacity.store(capacity, Ordering::Relaxed);
            inner.evict_until_fits(0, capacity, &mut evicted);
        }
        drop(evicted);
    }

    /// The number of shards.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// A snapshot of the counters. Locks each shard briefly; not for hot paths.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let inner = &*self.inner;
        let mut stats = CacheStats::default();
        for shard in &inner.shards {
            let state = read(&shard.state);
            stats.hits += shard.hits.load(Ordering::Relaxed);
            stats.misses += state.misses;
            stats.coalesced += state.coalesced;
            stats.in_flight += state.in_flight.len() as u64;
        }
        stats.fetch_errors = inner.fetch_errors.load(Ordering::Relaxed);
        stats.panics = inner.panics.load(Ordering::Relaxed);
        stats.abandoned = inner.abandoned.load(Ordering::Relaxed);
        stats.evictions = inner.evictions.load(Ordering::Relaxed);
        stats.oversized = inner.oversized.load(Ordering::Relaxed);
        stats.entries = inner.entries.load(Ordering::Relaxed);
        stats.weight = inner.weight.load(Ordering::Acquire);
        stats.capacity = inner.capacity.load(Ordering::Relaxed);
        stats
    }

    /// Keys from most to least recently used, shard by shard; exact recency with one shard.
    #[cfg(any(test, feature = "testing"))]
    #[must_use]
    pub fn keys_by_recency(&self) -> Vec<K> {
        self.keys_by_recency_per_shard().concat()
    }

    /// Each shard's keys, from most to least recently used.
    #[cfg(any(test, feature = "testing"))]
    #[must_use]
    pub fn keys_by_recency_per_shard(&self) -> Vec<Vec<K>> {
        self.inner
            .shards
            .iter()
            .map(|shard| {
                let state = read(&shard.state);
                state.lru.keys_by_recency().into_iter().cloned().collect()
            })
            .collect()
    }
}

impl<K, V, W> Inner<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weighter<K, V>,
{
    fn shard(&self, hash: u64) -> &Shard<K, V> {
        // The low bits pick the bucket inside the shard's table; the high bits pick the shard.
        let index = (hash >> 48) & self.shard_mask;
        &self.shards[usize::try_from(index).unwrap_or(0)]
    }

    /// Whether an entry last moved at `tick` is still recent: at most a quarter of the cached
    /// entries' number of insertions happened since (insertions advance the clock by 2).
    fn is_recent(&self, tick: u64) -> bool {
        let clock = self.clock.load(Ordering::Relaxed);
        let insertions_since = clock.saturating_sub(tick & !1) / 2;
        insertions_since <= self.entries.load(Ordering::Relaxed) / 4
    }

    /// The read-locked part of a lookup: a hit of a recent entry is complete here.
    fn read_hit<Q>(&self, shard: &Shard<K, V>, hash: u64, key: &Q) -> ReadHit<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let state = read(&shard.state);
        match state.lru.peek_with_tick(hash, key) {
            None => ReadHit::Absent,
            Some((value, tick)) if self.is_recent(tick) => {
                let value = value.clone();
                drop(state);
                shard.hits.fetch_add(1, Ordering::Relaxed);
                ReadHit::Recent(value)
            }
            Some(_) => ReadHit::Stale,
        }
    }

    /// A hit of a recent entry, under the read lock; `None` when the write lock is needed.
    fn recent_hit<Q>(&self, shard: &Shard<K, V>, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        match self.read_hit(shard, hash, key) {
            ReadHit::Recent(value) => Some(value),
            ReadHit::Absent | ReadHit::Stale => None,
        }
    }

    /// A hit under the write lock: the value, moved to the front unless still recent. Counts
    /// the hit.
    fn touch<Q>(
        &self,
        shard: &Shard<K, V>,
        state: &mut ShardState<K, V>,
        hash: u64,
        key: &Q,
    ) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let (value, tick) = state.lru.peek_with_tick(hash, key)?;
        if self.is_recent(tick) {
            let value = value.clone();
            shard.hits.fetch_add(1, Ordering::Relaxed);
            return Some(value);
        }
        let tick = self.clock.load(Ordering::Relaxed) | 1;
        let (value, tail_changed) = state.lru.get(hash, key, tick)?;
        let value = value.clone();
        shard.hits.fetch_add(1, Ordering::Relaxed);
        if tail_changed {
            shard
                .tail_tick
                .store(state.lru.tail_tick(), Ordering::Relaxed);
        }
        Some(value)
    }

    /// Accounts for a node taken out of `shard` (under its lock) other than by eviction.
    fn forget(&self, shard: &Shard<K, V>, state: &ShardState<K, V>, node: &Node<K, V>) {
        self.weight.fetch_sub(node.weight, Ordering::AcqRel);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        shard
            .tail_tick
            .store(state.lru.tail_tick(), Ordering::Relaxed);
    }

    /// Stores a value (from `insert`, or from the fetch `fetch_id` finishing, whose in-flight
    /// entry is removed in the same critical section the value appears in).
    fn store(&self, hash: u64, key: K, value: V, fetch_id: Option<u64>) {
        let weight = effective_weight(self.weighter.weight(&key, &value));
        let shard = self.shard(hash);
        // Everything taken out is dropped after the locks are released.
        let mut dropped: Vec<Node<K, V>> = Vec::new();
        let mut rejected = None;
        {
            let _storing = lock(&self.insert_lock);
            let capacity = self.capacity.load(Ordering::Relaxed);
            {
                // The key's old value goes first, so it is not counted against the new one.
                let mut state = write(&shard.state);
                if let Some(old) = state.lru.remove(hash, &key) {
                    self.forget(shard, &state, &old);
                    dropped.push(old);
                }
            }
            let fits = weight <= capacity && self.evict_until_fits(weight, capacity, &mut dropped);
            let mut state = write(&shard.state);
            if let Some(id) = fetch_id {
                remove_in_flight(&mut state, hash, &key, id);
            }
            if fits {
                let tick = self.clock.fetch_add(2, Ordering::Relaxed) + 2;
                state.lru.push_front(hash, key, value, weight, tick);
                self.weight.fetch_add(weight, Ordering::AcqRel);
                self.entries.fetch_add(1, Ordering::Relaxed);
                shard
                    .tail_tick
                    .store(state.lru.tail_tick(), Ordering::Relaxed);
            } else {
                self.oversized.fetch_add(1, Ordering::Relaxed);
                rejected = Some((key, value));
            }
        }
        drop(rejected);
        drop(dropped);
    }

    /// Evicts least recently used entries until `weight + need <= capacity`. The caller holds
    /// `insert_lock`, so the weight cannot grow meanwhile. Returns whether it fits.
    fn evict_until_fits(&self, need: u64, capacity: u64, evicted: &mut Vec<Node<K, V>>) -> bool {
        loop {
            let weight = self.weight.load(Ordering::Acquire);
            if weight.saturating_add(need) <= capacity {
                return true;
            }
            let victim = self
                .shards
                .iter()
                .map(|s| (s.tail_tick.load(Ordering::Relaxed), s))
                .filter(|&(tick, _)| tick != EMPTY_TICK)
                .min_by_key(|&(tick, _)| tick);
            let Some((_, shard)) = victim else {
                // Every shard is empty, so the weight is 0 and `need` alone is over capacity.
                return false;
            };
            let mut state = write(&shard.state);
            if let Some(node) = state.lru.pop_back() {
                self.forget(shard, &state, &node);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                evicted.push(node);
            } else {
                shard.tail_tick.store(EMPTY_TICK, Ordering::Relaxed);
            }
        }
    }

    /// Stores a finished fetch's value (or counts its failure) and removes its in-flight entry.
    /// Returns the outcome the waiters get: the fetch's own, unless storing the value ran into a
    /// panic of user code (the weighter, or `Clone`) before the value was kept.
    fn finish_fetch(
        &self,
        hash: u64,
        key: &K,
        fetch_id: u64,
        outcome: Result<V, CacheError>,
    ) -> Result<V, CacheError> {
        match outcome {
            Ok(value) => {
                let stored = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.store(hash, key.clone(), value.clone(), Some(fetch_id));
                }));
                match stored {
                    Ok(()) => Ok(value),
                    Err(payload) => {
                        self.panics.fetch_add(1, Ordering::Relaxed);
                        let mut state = write(&self.shard(hash).state);
                        remove_in_flight(&mut state, hash, key, fetch_id);
                        drop(state);
                        if self.holds_value_of(hash, key) {
                            // Only dropping something evicted panicked: the value is kept.
                            Ok(value)
                        } else {
                            Err(CacheError::Panicked {
                                message: Arc::from(format!(
                                    "storing the fetched value panicked: {}",
                                    panic_message(payload.as_ref())
                                )),
                            })
                        }
                    }
                }
            }
            Err(error) => {
                let counter = match error {
                    CacheError::Panicked { .. } => &self.panics,
                    CacheError::Abandoned => &self.abandoned,
                    _ => &self.fetch_errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let mut state = write(&self.shard(hash).state);
                remove_in_flight(&mut state, hash, key, fetch_id);
                Err(error)
            }
        }
    }

    /// Whether `key` has a cached value (after a store that may have panicked part-way).
    fn holds_value_of(&self, hash: u64, key: &K) -> bool {
        read(&self.shard(hash).state).lru.peek(hash, key).is_some()
    }
}

fn remove_in_flight<K: Eq, V>(state: &mut ShardState<K, V>, hash: u64, key: &K, id: u64) {
    if let Ok(entry) = state
        .in_flight
        .find_entry(hash, |f| f.id == id && f.key == *key)
    {
        entry.remove();
    }
}

/// Owns a fetch's in-flight entry: whatever happens to the task (it finishes, its fetch panics,
/// or the runtime drops it), the entry is removed and the waiters are told.
struct FetchTask<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weighter<K, V>,
{
    cache: Cache<K, V, W>,
    /// `None` once finished.
    key: Option<K>,
    hash: u64,
    fetch_id: u64,
    sender: Arc<Outcome<V>>,
}

impl<K, V, W> FetchTask<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weighter<K, V>,
{
    fn finish(&mut self, outcome: Result<V, CacheError>) {
        let Some(key) = self.key.take() else { return };
        // The value is in the cache (or the failure forgotten) before any waiter wakes, so a
        // caller arriving in between finds the value instead of starting a second fetch.
        // Storing runs user code (the weighter, clones and drops of values); whatever it does,
        // the in-flight entry is removed and every waiter hears an outcome.
        let inner = &self.cache.inner;
        let (hash, fetch_id) = (self.hash, self.fetch_id);
        let finished = std::panic::catch_unwind(AssertUnwindSafe(|| {
            inner.finish_fetch(hash, &key, fetch_id, outcome)
        }));
        let outcome = finished.unwrap_or_else(|payload| {
            let mut state = write(&inner.shard(hash).state);
            remove_in_flight(&mut state, hash, &key, fetch_id);
            Err(CacheError::Panicked {
                message: Arc::from(format!(
                    "finishing the fetch panicked: {}",
                    panic_message(payload.as_ref())
                )),
            })
        });
        self.sender.publish(outcome);
    }
}

impl<K, V, W> Drop for FetchTask<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weighter<K, V>,
{
    fn drop(&mut self) {
        if self.key.is_some() {
            let error = if std::thread::panicking() {
                CacheError::Panicked {
                    message: Arc::from("the fetcher panicked while starting the fetch"),
                }
            } else {
                CacheError::Abandoned
            };
            self.finish(Err(error));
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Arc<str> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Arc::from(*s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        Arc::from(s.as_str())
    } else {
        Arc::from("a non-string panic payload")
    }
}
