//! A deliberately simple reference model: what [`Cache`](crate::Cache) must do, one operation at
//! a time, with no concern for speed. It is an LRU whose hits move an entry to the front only
//! when it is no longer recent (the promotion rule of [`Cache`](crate::Cache)).
//!
//! The property tests and the fuzz target drive the cache and this model with the same
//! operations and compare them after each one. It exists only with the `testing` feature.

use std::future::Future as _;

use crate::weighter::effective_weight;

/// A reference LRU over a `Vec`, most recently moved first.
///
/// Each entry remembers the number of insertions made before its last move; a hit moves it to
/// the front only when more insertions happened since than a quarter of the number of entries.
#[derive(Debug, Clone)]
pub struct LruModel<K, V> {
    /// Key, value, weight, insertions counted at the entry's last move.
    entries: Vec<(K, V, u64, u64)>,
    /// Insertions so far (values kept; an oversized one is not counted).
    insertions: u64,
    capacity: u64,
    evictions: u64,
    oversized: u64,
}

impl<K: Eq + Clone, V: Clone> LruModel<K, V> {
    /// An empty model of total weight at most `capacity`.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: Vec::new(),
            insertions: 0,
            capacity,
            evictions: 0,
            oversized: 0,
        }
    }

    fn position(&self, key: &K) -> Option<usize> {
        self.entries.iter().position(|(k, _, _, _)| k == key)
    }

    /// The value of `key`, moved to the front unless it is still recent.
    pub fn get(&mut self, key: &K) -> Option<V> {
        let index = self.position(key)?;
        let recent = self.insertions - self.entries[index].3 <= self.entries.len() as u64 / 4;
        if recent {
            return Some(self.entries[index].1.clone());
        }
        let mut entry = self.entries.remove(index);
        entry.3 = self.insertions;
        let value = entry.1.clone();
        self.entries.insert(0, entry);
        Some(value)
    }

    /// The value of `key`, recency unchanged.
    #[must_use]
    pub fn peek(&self, key: &K) -> Option<V> {
        self.position(key).map(|i| self.entries[i].1.clone())
    }

    /// Stores `value` weighing `weight` (as the weighter reports it) as most recent.
    pub fn insert(&mut self, key: K, value: V, weight: u64) {
        let weight = effective_weight(weight);
        self.remove(&key);
        if weight > self.capacity {
            self.oversized += 1;
            return;
        }
        while self.weight() + weight > self.capacity {
            self.entries.pop();
            self.evictions += 1;
        }
        self.insertions += 1;
        self.entries
            .insert(0, (key, value, weight, self.insertions));
    }

    /// What `get_or_fetch` does when the fetch would give `fetched`: a hit if cached, else the
    /// fetched value stored (or nothing, for a failed fetch).
    pub fn get_or_fetch(&mut self, key: K, fetched: Option<(V, u64)>) -> Option<V> {
        if let Some(value) = self.get(&key) {
            return Some(value);
        }
        let (value, weight) = fetched?;
        self.insert(key, value.clone(), weight);
        Some(value)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let index = self.position(key)?;
        Some(self.entries.remove(index).1)
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Changes the capacity, evicting from the least recent end until the weight fits.
    pub fn set_capacity(&mut self, capacity: u64) {
        self.capacity = capacity;
        while self.weight() > capacity {
            self.entries.pop();
            self.evictions += 1;
        }
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The total weight.
    #[must_use]
    pub fn weight(&self) -> u64 {
        self.entries.iter().map(|(_, _, w, _)| w).sum()
    }

    /// The capacity.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Entries evicted to make room so far.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Values not kept because they weighed more than the capacity.
    #[must_use]
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// Keys, most recently used first.
    #[must_use]
    pub fn keys_by_recency(&self) -> Vec<K> {
        self.entries.iter().map(|(k, _, _, _)| k.clone()).collect()
    }
}

/// One operation of a model-checked sequence, for property tests and fuzzing alike.
///
/// Values are `(u32, u64)`: an id and the weight the weighter reports.
#[derive(Debug, Clone, arbitrary::Arbitrary)]
pub enum Op {
    /// `insert(key, value)`.
    Insert(u8, u32, u8),
    /// `get(key)`.
    Get(u8),
    /// `peek(key)`.
    Peek(u8),
    /// `remove(key)`.
    Remove(u8),
    /// `clear()`.
    Clear,
    /// `set_capacity(capacity)`.
    SetCapacity(u8),
    /// `get_or_fetch` whose fetch succeeds after yielding to the runtime a few times.
    Fetch(u8, u32, u8),
    /// `get_or_fetch` whose fetch fails.
    FailedFetch(u8),
    /// `get_or_fetch` whose fetch panics.
    PanickingFetch(u8),
    /// `get_or_fetch` polled once and dropped while its fetch is in flight; the fetch goes on.
    CancelledFetch(u8, u32, u8),
}

/// The panic message of [`Op::PanickingFetch`], so harnesses can keep it quiet.
pub const INJECTED_PANIC: &str = "injected fetch panic";

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

/// Keys are taken modulo this, so operations meet each other.
const KEYS: u8 = 12;

async fn yield_a_few(times: u8) {
    for _ in 0..times % 4 {
        tokio::task::yield_now().await;
    }
}

/// Runs `ops` on a one-shard cache of `capacity` and on the reference model, on a current-thread
/// runtime, and panics at the first difference in contents, recency, weight or counters.
///
/// # Panics
/// When the cache and the model disagree: that is what it checks.
#[allow(clippy::panic, clippy::too_many_lines)]
pub fn check_ops(capacity: u8, ops: &[Op]) {
    use crate::{CacheBuilder, CacheError};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let cache: crate::Cache<u8, (u32, u64), _> = CacheBuilder::new(u64::from(capacity % 40))
        .shards(1)
        .weighter(|_: &u8, v: &(u32, u64)| v.1)
        .build();
    let mut model: LruModel<u8, (u32, u64)> = LruModel::new(u64::from(capacity % 40));
    for (step, op) in ops.iter().enumerate() {
        match op.clone() {
            Op::Insert(k, id, w) => {
                let v = (id, u64::from(w % 12));
                cache.insert(k % KEYS, v);
                model.insert(k % KEYS, v, v.1);
            }
            Op::Get(k) => assert_eq!(
                cache.get(&(k % KEYS)),
                model.get(&(k % KEYS)),
                "step {step}: get"
            ),
            Op::Peek(k) => assert_eq!(
                cache.peek(&(k % KEYS)),
                model.peek(&(k % KEYS)),
                "step {step}: peek"
            ),
            Op::Remove(k) => assert_eq!(
                cache.remove(&(k % KEYS)),
                model.remove(&(k % KEYS)),
                "step {step}: remove"
            ),
            Op::Clear => {
                cache.clear();
                model.clear();
            }
            Op::SetCapacity(c) => {
                cache.set_capacity(u64::from(c % 40));
                model.set_capacity(u64::from(c % 40));
            }
            Op::Fetch(k, id, w) => {
                let v = (id, u64::from(w % 12));
                let got =
                    runtime.block_on(cache.get_or_fetch_with(k % KEYS, move |_| async move {
                        yield_a_few(w).await;
                        Ok::<_, Refused>(v)
                    }));
                assert_eq!(
                    got.ok(),
                    model.get_or_fetch(k % KEYS, Some((v, v.1))),
                    "step {step}: fetch"
                );
            }
            Op::FailedFetch(k) => {
                let got = runtime.block_on(
                    cache.get_or_fetch_with(k % KEYS, |_| async { Err::<(u32, u64), _>(Refused) }),
                );
                match (got, model.get_or_fetch(k % KEYS, None)) {
                    (Ok(a), Some(b)) => assert_eq!(a, b, "step {step}"),
                    (Err(e), None) => {
                        assert!(e.fetch_error::<Refused>().is_some(), "step {step}: {e}");
                    }
                    (a, b) => panic!("step {step}: failed fetch: cache {a:?}, model {b:?}"),
                }
            }
            Op::PanickingFetch(k) => {
                let got = runtime.block_on(cache.get_or_fetch_with(k % KEYS, |_| async {
                    if KEYS > 0 {
                        panic!("{INJECTED_PANIC}");
                    }
                    Ok::<(u32, u64), Refused>((0, 0))
                }));
                match (got, model.get_or_fetch(k % KEYS, None)) {
                    (Ok(a), Some(b)) => assert_eq!(a, b, "step {step}"),
                    (Err(CacheError::Panicked { message }), None) => {
                        assert!(message.contains(INJECTED_PANIC), "step {step}: {message}");
                    }
                    (a, b) => panic!("step {step}: panicking fetch: cache {a:?}, model {b:?}"),
                }
            }
            Op::CancelledFetch(k, id, w) => {
                let v = (id, u64::from(w % 12));
                runtime.block_on(async {
                    let caller = cache.get_or_fetch_with(k % KEYS, move |_| async move {
                        yield_a_few(w.max(1)).await;
                        Ok::<_, Refused>(v)
                    });
                    // Poll once, then drop the caller; the fetch task finishes on its own.
                    let mut caller = std::pin::pin!(caller);
                    let waker = std::task::Waker::noop();
                    let _ = caller
                        .as_mut()
                        .poll(&mut std::task::Context::from_waker(waker));
                });
                // Run the runtime until the fetch has stored its value.
                runtime.block_on(async {
                    for _ in 0..64 {
                        if cache.stats().in_flight == 0 {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                });
                assert_eq!(
                    cache.stats().in_flight,
                    0,
                    "step {step}: a cancelled fetch never finished"
                );
                model.get_or_fetch(k % KEYS, Some((v, v.1)));
            }
        }
        assert_eq!(
            cache.keys_by_recency(),
            model.keys_by_recency(),
            "step {step}: recency after {op:?}"
        );
        assert_eq!(cache.len(), model.len(), "step {step}: len");
        assert_eq!(cache.weight(), model.weight(), "step {step}: weight");
        assert!(
            cache.weight() <= cache.capacity(),
            "step {step}: over capacity"
        );
        let stats = cache.stats();
        assert_eq!(stats.evictions, model.evictions(), "step {step}: evictions");
        assert_eq!(stats.oversized, model.oversized(), "step {step}: oversized");
        assert_eq!(stats.in_flight, 0, "step {step}: in flight");
    }
}

/// The fuzz target's body: a capacity and operations decoded from `data`, checked by
/// [`check_ops`].
pub fn fuzz(data: &[u8]) {
    let mut input = arbitrary::Unstructured::new(data);
    let Ok(capacity) = input.arbitrary::<u8>() else {
        return;
    };
    let Ok(ops) = input.arbitrary::<Vec<Op>>() else {
        return;
    };
    check_ops(capacity, &ops[..ops.len().min(200)]);
}
