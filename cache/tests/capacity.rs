//! Capacity by weight, eviction order, and the plain operations.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_cache::{Cache, CacheBuilder};
use common::{Behaviour, Counting, value_of};

type Bytes = Arc<Vec<u8>>;

fn byte_cache(
    capacity: u64,
    shards: usize,
) -> Cache<u64, Bytes, impl cairn_cache::Weighter<u64, Bytes>> {
    CacheBuilder::new(capacity)
        .shards(shards)
        .weighter(|_: &u64, v: &Bytes| v.len() as u64)
        .build()
}

fn chunk(len: usize) -> Bytes {
    Arc::new(vec![0xab; len])
}

#[test]
fn capacity_counts_bytes_and_evicts_the_least_recently_used() {
    let cache = byte_cache(10 * 1024, 1);
    cache.insert(1, chunk(4096));
    cache.insert(2, chunk(4096));
    assert_eq!(cache.weight(), 8192);
    // A use of 1 makes 2 the least recently used.
    assert!(cache.get(&1).is_some());
    cache.insert(3, chunk(4096));
    assert!(cache.contains(&1) && cache.contains(&3));
    assert!(!cache.contains(&2), "2 was least recently used");
    assert_eq!(cache.weight(), 8192);
    assert_eq!(cache.stats().evictions, 1);
}

#[test]
fn peek_does_not_count_as_a_use() {
    let cache = byte_cache(8192, 1);
    cache.insert(1, chunk(4096));
    cache.insert(2, chunk(4096));
    assert!(cache.peek(&1).is_some());
    cache.insert(3, chunk(4096));
    assert!(!cache.contains(&1), "peek must not have refreshed 1");
    assert!(cache.contains(&2));
    assert_eq!(cache.stats().hits, 0, "peek is not a hit");
}

#[test]
fn an_entry_heavier_than_the_capacity_is_not_kept_and_evicts_nothing() {
    let cache = byte_cache(8192, 4);
    cache.insert(1, chunk(4096));
    cache.insert(2, chunk(9000));
    assert!(!cache.contains(&2));
    assert!(
        cache.contains(&1),
        "an oversized value must not evict others"
    );
    assert_eq!(cache.stats().oversized, 1);
    assert_eq!(cache.stats().evictions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_fetched_value_still_reaches_every_caller() {
    let cache: Cache<u64, Bytes, _> = CacheBuilder::new(4)
        .weighter(|_: &u64, v: &Bytes| v.len() as u64)
        .build();
    let fetcher = Counting::new(Duration::from_millis(30), Behaviour::Succeed);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (cache, fetcher) = (cache.clone(), Arc::clone(&fetcher));
            tokio::spawn(async move { cache.get_or_fetch(1, &fetcher).await })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap().unwrap(), value_of(1));
    }
    assert_eq!(fetcher.calls(), 1);
    assert!(cache.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_zero_keeps_nothing_but_still_coalesces() {
    let cache: Cache<u64, Bytes> = Cache::new(0);
    let fetcher = Counting::new(Duration::from_millis(50), Behaviour::Succeed);
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let (cache, fetcher) = (cache.clone(), Arc::clone(&fetcher));
            tokio::spawn(async move { cache.get_or_fetch(1, &fetcher).await })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap().unwrap(), value_of(1));
    }
    assert_eq!(fetcher.calls(), 1);
    assert!(cache.is_empty());
    assert_eq!(cache.weight(), 0);
    cache.insert(2, value_of(2));
    assert!(cache.is_empty());
    // Nothing kept, so the next call fetches again.
    cache.get_or_fetch(1, &fetcher).await.unwrap();
    assert_eq!(fetcher.calls(), 2);
}

#[test]
fn shrinking_evicts_and_growing_keeps() {
    let cache: Cache<u64, u64> = CacheBuilder::new(10).shards(1).build();
    for k in 0..10 {
        cache.insert(k, k);
    }
    cache.set_capacity(4);
    assert_eq!(cache.len(), 4);
    assert_eq!(cache.capacity(), 4);
    for k in 6..10 {
        assert!(cache.contains(&k), "the 4 most recent stay");
    }
    assert_eq!(cache.stats().evictions, 6);
    cache.set_capacity(100);
    cache.insert(100, 100);
    assert_eq!(cache.len(), 5);
}

#[test]
fn a_zero_weight_counts_as_one() {
    let cache: Cache<u64, u64, _> = CacheBuilder::new(3).weighter(|_: &u64, _: &u64| 0).build();
    for k in 0..10 {
        cache.insert(k, k);
    }
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.weight(), 3);
}

#[test]
fn insert_replaces_and_remove_and_clear_release_weight() {
    let cache = byte_cache(10_000, 4);
    cache.insert(1, chunk(1000));
    cache.insert(1, chunk(3000));
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.weight(), 3000);
    assert_eq!(cache.remove(&1).map(|v| v.len()), Some(3000));
    assert_eq!(cache.remove(&1), None);
    assert_eq!(cache.weight(), 0);
    for k in 0..5 {
        cache.insert(k, chunk(100));
    }
    cache.clear();
    assert!(cache.is_empty());
    assert_eq!(cache.weight(), 0);
    cache.insert(9, chunk(100));
    assert_eq!(cache.get(&9).map(|v| v.len()), Some(100));
}

#[test]
fn the_weight_never_exceeds_the_capacity_under_concurrent_inserts() {
    let cache = byte_cache(64 * 1024, 8);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let cache = cache.clone();
            scope.spawn(move || {
                for i in 0..5_000u64 {
                    let key = (i * 7 + t) % 512;
                    cache.insert(key, chunk(((i % 13) * 1000) as usize));
                    assert!(cache.weight() <= 64 * 1024);
                    let _ = cache.get(&((i + t) % 512));
                    if i % 97 == 0 {
                        cache.remove(&key);
                    }
                }
            });
        }
    });
    let stats = cache.stats();
    assert!(stats.weight <= 64 * 1024);
    assert_eq!(stats.entries as usize, cache.len());
}

#[test]
fn stats_count_hits_misses_and_entries() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let cache: Cache<u64, Bytes> = Cache::new(2);
    let fetcher = Counting::new(Duration::ZERO, Behaviour::Succeed);
    runtime.block_on(async {
        for k in [1, 1, 2, 1, 3] {
            cache.get_or_fetch(k, &fetcher).await.unwrap();
        }
    });
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.coalesced), (2, 3, 0));
    assert_eq!((stats.entries, stats.weight, stats.capacity), (2, 2, 2));
    assert_eq!(stats.evictions, 1);
    assert!((stats.hit_ratio() - 0.4).abs() < 1e-9);
}

/// The promotion rule: a hit of a recent entry moves nothing, a hit of an older one moves it to
/// the front, and an entry used while recent outlives three quarters of an exact LRU's window.
#[test]
fn hits_move_only_entries_that_are_no_longer_recent() {
    let cache: Cache<u32, u32> = CacheBuilder::new(100).shards(1).build();
    for k in 0..100 {
        cache.insert(k, k);
    }
    // 99 was inserted last: recent, so a hit leaves the order alone.
    assert!(cache.get(&99).is_some());
    assert_eq!(cache.keys_by_recency()[..3], [99, 98, 97]);
    // 10 was inserted 89 insertions ago, more than a quarter of 100 entries: moved.
    assert!(cache.get(&10).is_some());
    assert_eq!(cache.keys_by_recency()[..2], [10, 99]);
    // 75 is 24 insertions old: still recent, not moved.
    assert!(cache.get(&75).is_some());
    assert_eq!(cache.keys_by_recency()[1..3], [99, 98]);
    assert_eq!(cache.stats().hits, 3);
    // 75 was used, but while recent. An exact LRU would keep it through 98 more insertions
    // (99 entries, one of them 10, would be ahead of it); here 25 more are ahead of it (76..=99
    // and 10), so it is kept through 74, a quarter of the entries fewer, and no fewer.
    for k in 100..174 {
        cache.insert(k, k);
    }
    assert!(
        cache.contains(&75),
        "an entry used while recent left too early"
    );
    assert!(cache.contains(&10));
    cache.insert(174, 174);
    assert!(!cache.contains(&75));
}
