//! A deliberately simple reference LRU: what [`Cache`](crate::Cache) must do, one operation at a
//! time, with no concern for speed.
//!
//! The property tests and the fuzz target drive the cache and this model with the same
//! operations and compare them after each one. It exists only with the `testing` feature.

use crate::weighter::effective_weight;

/// A reference LRU over a `Vec`, most recently used first.
#[derive(Debug, Clone)]
pub struct LruModel<K, V> {
    entries: Vec<(K, V, u64)>,
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
            capacity,
            evictions: 0,
            oversized: 0,
        }
    }

    fn position(&self, key: &K) -> Option<usize> {
        self.entries.iter().position(|(k, _, _)| k == key)
    }

    /// The value of `key`, made most recent.
    pub fn get(&mut self, key: &K) -> Option<V> {
        let entry = self.entries.remove(self.position(key)?);
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
        self.entries.insert(0, (key, value, weight));
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
        self.entries.iter().map(|(_, _, w)| w).sum()
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
        self.entries.iter().map(|(k, _, _)| k.clone()).collect()
    }
}
