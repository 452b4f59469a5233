//! How much of the capacity an entry uses.

/// Weighs a cached entry against the cache's capacity.
///
/// The default, [`UnitWeighter`], weighs every entry 1, so the capacity counts entries. A cache of
/// byte buffers weighs each by its length, so the capacity counts bytes. Any
/// `Fn(&K, &V) -> u64` closure is a weighter too.
///
/// A weight of 0 counts as 1, so that every entry takes part in eviction and the number of
/// entries stays bounded by the capacity.
pub trait Weighter<K, V>: Send + Sync + 'static {
    /// The weight of one entry. Called once when the entry is stored, never under a lock.
    fn weight(&self, key: &K, value: &V) -> u64;
}

/// Every entry weighs 1: the capacity is a number of entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitWeighter;

impl<K, V> Weighter<K, V> for UnitWeighter {
    fn weight(&self, _key: &K, _value: &V) -> u64 {
        1
    }
}

impl<K, V, F> Weighter<K, V> for F
where
    F: Fn(&K, &V) -> u64 + Send + Sync + 'static,
{
    fn weight(&self, key: &K, value: &V) -> u64 {
        self(key, value)
    }
}

/// The weight the cache accounts for an entry the weighter weighed `raw`.
pub(crate) fn effective_weight(raw: u64) -> u64 {
    raw.max(1)
}
