//! One test for each known bug of the peers listed in the project's anchors (PBS's
//! `AsyncLruCache`, quick_cache, moka): cairn's cache must not have any of them.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_cache::{Cache, CacheBuilder};
use common::{Behaviour, Counting, Unavailable, callers, settle, value_of};
use futures_util::FutureExt as _;

type ChunkCache = Cache<u64, Arc<Vec<u8>>>;

/// PBS: a first caller dropped mid-fetch left its pending entry behind forever, so its error (or
/// a stale value) was served to every later caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbs_dropped_first_caller_leaves_no_stale_pending_entry() {
    let cache = ChunkCache::new(8);
    let failing = Counting::new(Duration::from_millis(40), Behaviour::Fail);
    let dropped = tokio::time::timeout(Duration::from_millis(5), cache.get_or_fetch(1, &failing));
    assert!(dropped.await.is_err());
    settle(&cache).await;
    assert_eq!(cache.stats().in_flight, 0, "the pending entry must be gone");
    let working = Counting::new(Duration::ZERO, Behaviour::Succeed);
    assert_eq!(cache.get_or_fetch(1, &working).await.unwrap(), value_of(1));
    assert_eq!(working.calls(), 1, "the old error must not be served");
}

/// PBS: a panic inside a fetch left every waiter waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbs_panicking_fetch_does_not_hang_waiters() {
    let cache = ChunkCache::new(8);
    let panicking = Counting::new(Duration::from_millis(10), Behaviour::Panic);
    let results = tokio::time::timeout(Duration::from_secs(5), callers(&cache, &panicking, 2, 16))
        .await
        .expect("waiters hung after a panic");
    assert!(results.iter().all(|r| matches!(r, Err(e) if e.is_panic())));
}

/// PBS: capacity 0 crashed.
#[tokio::test]
async fn pbs_capacity_zero_does_not_crash() {
    let cache = ChunkCache::new(0);
    let fetcher = Counting::new(Duration::ZERO, Behaviour::Succeed);
    assert_eq!(cache.get_or_fetch(1, &fetcher).await.unwrap(), value_of(1));
    cache.insert(2, value_of(2));
    assert!(cache.get(&2).is_none());
    cache.set_capacity(0);
    assert!(cache.is_empty());
}

/// PBS: errors reached waiters only as strings.
#[tokio::test]
async fn pbs_errors_reach_waiters_typed_not_as_strings() {
    let cache = ChunkCache::new(8);
    let failing = Counting::new(Duration::ZERO, Behaviour::Fail);
    let error = cache.get_or_fetch(3, &failing).await.unwrap_err();
    let typed: &Unavailable = error.fetch_error().expect("typed error");
    assert_eq!(typed.cause.kind(), std::io::ErrorKind::NotFound);
}

/// PBS: errors stuck in the pending map; the pending map was unbounded. Every kind of ending
/// (value, error, panic, cancelled caller) must remove its in-flight entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbs_every_fetch_ending_removes_its_in_flight_entry() {
    let cache = ChunkCache::new(1000);
    let behaviours = [Behaviour::Succeed, Behaviour::Fail, Behaviour::Panic];
    for key in 0..300u64 {
        let fetcher = Counting::new(Duration::from_millis(1), behaviours[(key % 3) as usize]);
        if key % 2 == 0 {
            let _ = cache.get_or_fetch(key, &fetcher).await;
        } else {
            let _ = tokio::time::timeout(Duration::ZERO, cache.get_or_fetch(key, &fetcher)).await;
        }
    }
    settle(&cache).await;
    let stats = cache.stats();
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.misses, 300);
    assert_eq!(stats.entries, 100, "only the successful fetches are cached");
}

/// PBS: the LRU list leaked its values (no `Drop`). Evicted, removed, cleared and finally
/// dropped values must all be released.
#[test]
fn pbs_values_are_released() {
    let tracked = Arc::new(());
    {
        let cache: Cache<u64, Arc<()>> = CacheBuilder::new(4).shards(2).build();
        for k in 0..10 {
            cache.insert(k, Arc::clone(&tracked));
        }
        assert_eq!(
            Arc::strong_count(&tracked),
            1 + 4,
            "evicted values are dropped"
        );
        cache.remove(&9);
        assert_eq!(Arc::strong_count(&tracked), 1 + 3);
        cache.clear();
        assert_eq!(Arc::strong_count(&tracked), 1);
        for k in 0..4 {
            cache.insert(k, Arc::clone(&tracked));
        }
    }
    assert_eq!(
        Arc::strong_count(&tracked),
        1,
        "dropping the cache drops its values"
    );
}

/// PBS: the capacity counted chunks, not bytes.
#[test]
fn pbs_capacity_can_count_bytes() {
    let cache: Cache<u64, Arc<Vec<u8>>, _> = CacheBuilder::new(1 << 20)
        .weighter(|_: &u64, v: &Arc<Vec<u8>>| v.len() as u64)
        .build();
    for k in 0..8 {
        cache.insert(k, Arc::new(vec![0; 256 * 1024]));
    }
    assert_eq!(cache.len(), 4);
    assert_eq!(cache.weight(), 1 << 20);
}

/// quick_cache and moka: a cancelled first caller caused a second fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_cache_cancelled_first_caller_causes_no_second_fetch() {
    let cache = ChunkCache::new(8);
    let fetcher = Counting::new(Duration::from_millis(50), Behaviour::Succeed);
    let first = tokio::time::timeout(Duration::from_millis(5), cache.get_or_fetch(1, &fetcher));
    assert!(first.await.is_err());
    let results = callers(&cache, &fetcher, 1, 63).await;
    assert!(results.into_iter().all(|r| r.unwrap() == value_of(1)));
    assert_eq!(fetcher.calls(), 1);
}

/// quick_cache and moka: a first caller that stalled (neither polled nor dropped) blocked all
/// other waiters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_cache_stalled_first_caller_blocks_no_one() {
    let cache = ChunkCache::new(8);
    let fetcher = Counting::new(Duration::from_millis(20), Behaviour::Succeed);
    let mut stalled = Box::pin(cache.get_or_fetch(1, &fetcher));
    assert!((&mut stalled).now_or_never().is_none());
    let results = tokio::time::timeout(Duration::from_secs(5), callers(&cache, &fetcher, 1, 63))
        .await
        .expect("blocked behind a stalled caller");
    assert!(results.into_iter().all(|r| r.unwrap() == value_of(1)));
    drop(stalled);
}

/// quick_cache: a failing fetch was retried by each of 64 waiters, one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_cache_failing_fetch_runs_once_for_all_waiters() {
    let cache = ChunkCache::new(8);
    let failing = Counting::new(Duration::from_millis(50), Behaviour::Fail);
    let started = Instant::now();
    let results = callers(&cache, &failing, 1, 64).await;
    assert!(results.iter().all(Result::is_err));
    assert_eq!(failing.calls(), 1);
    // 64 serial fetches would take 3.2 s; one takes 50 ms. Generous bound for a noisy machine.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// quick_cache and moka: an always-panicking fetch ran (and panicked) once per waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moka_panicking_fetch_runs_once_for_all_waiters() {
    let cache = ChunkCache::new(8);
    let panicking = Counting::new(Duration::from_millis(50), Behaviour::Panic);
    let results = callers(&cache, &panicking, 1, 64).await;
    assert!(results.iter().all(|r| matches!(r, Err(e) if e.is_panic())));
    assert_eq!(panicking.calls(), 1);
    assert_eq!(cache.stats().panics, 1);
}

/// quick_cache: an item heavier than one shard's share was silently not kept. Here the budget
/// is global: any item up to the whole capacity is kept, whatever the shard count.
#[test]
fn quick_cache_item_heavier_than_a_shard_is_kept() {
    let cache: Cache<u64, u64, _> = CacheBuilder::new(1000)
        .shards(64)
        .weighter(|_: &u64, v: &u64| *v)
        .build();
    cache.insert(1, 900);
    assert_eq!(cache.peek(&1), Some(900));
    cache.insert(2, 1000);
    assert_eq!(cache.peek(&2), Some(1000));
    assert!(!cache.contains(&1));
}

/// moka: TinyLFU admission rejected cold entries, so a one-pass restore cached nothing. Plain
/// LRU admission keeps every new entry, evicting the oldest.
#[test]
fn moka_one_pass_of_cold_keys_is_cached() {
    let cache: Cache<u64, u64> = CacheBuilder::new(16).shards(1).build();
    for k in 0..1000 {
        cache.insert(k, k);
        assert!(cache.contains(&k), "cold key {k} was not admitted");
    }
    assert_eq!(cache.len(), 16);
    assert!((984..1000).all(|k| cache.contains(&k)));
}

/// A weigher that counts its calls proves user code runs outside locks: it may re-enter the
/// cache without deadlocking.
#[test]
fn user_code_may_reenter_the_cache() {
    let calls = Arc::new(AtomicUsize::new(0));
    let other: Cache<u64, u64> = Cache::new(4);
    let cache: Cache<u64, u64, _> = {
        let calls = Arc::clone(&calls);
        let other = other.clone();
        CacheBuilder::new(4)
            .weighter(move |k: &u64, _: &u64| {
                calls.fetch_add(1, Ordering::SeqCst);
                other.insert(*k, *k);
                1
            })
            .build()
    };
    cache.insert(1, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(other.contains(&1));
}
