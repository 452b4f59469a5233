//! Counters a cache keeps about itself.

/// A snapshot of a cache's counters, from [`Cache::stats`](crate::Cache::stats).
///
/// Counters run from the cache's creation and are never reset; subtract two snapshots to get the
/// figures of an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups that found their key cached (`get` and `get_or_fetch`).
    pub hits: u64,
    /// Fetches started: `get_or_fetch` calls that found neither a cached value nor a fetch in
    /// flight.
    pub misses: u64,
    /// `get_or_fetch` calls that joined a fetch already in flight instead of starting one.
    pub coalesced: u64,
    /// Fetches that returned an error.
    pub fetch_errors: u64,
    /// Fetches that panicked.
    pub panics: u64,
    /// Fetches dropped unfinished because their runtime shut down.
    pub abandoned: u64,
    /// Entries removed to make room (inserts and capacity changes), not by `remove` or `clear`.
    pub evictions: u64,
    /// Values handed to their callers but not kept, because they weigh more than the capacity.
    pub oversized: u64,
    /// Entries cached now.
    pub entries: u64,
    /// Total weight of the entries cached now.
    pub weight: u64,
    /// The capacity now.
    pub capacity: u64,
    /// Fetches in flight now.
    pub in_flight: u64,
}

impl CacheStats {
    /// Hits divided by lookups that either hit or started a fetch or joined one; 0 with no lookups.
    #[must_use]
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses + self.coalesced;
        if lookups == 0 {
            0.0
        } else {
            #[allow(clippy::cast_precision_loss)]
            let ratio = self.hits as f64 / lookups as f64;
            ratio
        }
    }
}
