//! Coalescing, cancellation, errors and panics of `get_or_fetch`.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use cairn_cache::{Cache, CacheError, Fetch};
use common::{Behaviour, Counting, Unavailable, callers, settle, value_of};
use futures_util::FutureExt as _;

type ChunkCache = Cache<u64, Arc<Vec<u8>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_callers_cause_one_fetch() {
    let cache = ChunkCache::new(16);
    let fetcher = Counting::new(Duration::from_millis(50), Behaviour::Succeed);
    let results = callers(&cache, &fetcher, 7, 64).await;
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(results.len(), 64);
    for result in results {
        assert_eq!(result.unwrap(), value_of(7));
    }
    let stats = cache.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.coalesced + stats.hits, 63);
    assert_eq!(stats.in_flight, 0);
    // The value is cached: one more call is a hit without a fetch.
    assert_eq!(cache.get_or_fetch(7, &fetcher).await.unwrap(), value_of(7));
    assert_eq!(fetcher.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_first_caller_does_not_cancel_the_fetch() {
    let cache = ChunkCache::new(16);
    let fetcher = Counting::new(Duration::from_millis(150), Behaviour::Succeed);
    // The first caller starts the fetch, then times out long before it finishes.
    let first = tokio::time::timeout(Duration::from_millis(20), cache.get_or_fetch(1, &fetcher));
    assert!(
        first.await.is_err(),
        "the first caller should have timed out"
    );
    assert_eq!(cache.stats().in_flight, 1);
    // The others join the fetch still in flight.
    let results = callers(&cache, &fetcher, 1, 63).await;
    assert!(results.into_iter().all(|r| r.unwrap() == value_of(1)));
    assert_eq!(fetcher.calls(), 1);
    settle(&cache).await;
    // A later caller is served from the cache.
    assert_eq!(cache.get_or_fetch(1, &fetcher).await.unwrap(), value_of(1));
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(cache.stats().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_first_caller_does_not_cancel_the_fetch() {
    let cache = ChunkCache::new(16);
    let fetcher = Counting::new(Duration::from_millis(100), Behaviour::Succeed);
    let first = {
        let (cache, fetcher) = (cache.clone(), Arc::clone(&fetcher));
        tokio::spawn(async move { cache.get_or_fetch(2, &fetcher).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let second = cache.get_or_fetch(2, &fetcher).await.unwrap();
    assert_eq!(second, value_of(2));
    assert_eq!(fetcher.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_caller_goes_away_the_fetch_finishes_and_is_cached() {
    let cache = ChunkCache::new(16);
    let fetcher = Counting::new(Duration::from_millis(60), Behaviour::Succeed);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (cache, fetcher) = (cache.clone(), Arc::clone(&fetcher));
            tokio::spawn(async move { cache.get_or_fetch(3, &fetcher).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    for handle in &handles {
        handle.abort();
    }
    settle(&cache).await;
    assert_eq!(cache.peek(&3), Some(value_of(3)));
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(cache.stats().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_first_caller_does_not_block_the_others() {
    let cache = ChunkCache::new(16);
    let fetcher = Counting::new(Duration::from_millis(30), Behaviour::Succeed);
    // Polled once (so it starts the fetch), then neither polled nor dropped.
    let mut stalled = Box::pin(cache.get_or_fetch(4, &fetcher));
    assert!((&mut stalled).now_or_never().is_none());
    assert_eq!(cache.stats().in_flight, 1);
    let others = tokio::time::timeout(Duration::from_secs(5), callers(&cache, &fetcher, 4, 63));
    let results = others.await.expect("the other callers were blocked");
    assert!(results.into_iter().all(|r| r.unwrap() == value_of(4)));
    assert_eq!(fetcher.calls(), 1);
    // The stalled caller still gets its value when finally polled.
    assert_eq!(stalled.await.unwrap(), value_of(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_waiter_gets_the_same_typed_error_and_errors_are_not_cached() {
    let cache = ChunkCache::new(16);
    let failing = Counting::new(Duration::from_millis(50), Behaviour::Fail);
    let results = callers(&cache, &failing, 5, 64).await;
    assert_eq!(
        failing.calls(),
        1,
        "a failed fetch must not be retried per waiter"
    );
    let errors: Vec<CacheError> = results.into_iter().map(Result::unwrap_err).collect();
    let first = errors[0]
        .shared_fetch_error()
        .expect("a fetch error")
        .clone();
    for error in &errors {
        let shared = error.shared_fetch_error().expect("a fetch error");
        assert!(Arc::ptr_eq(shared, &first), "waiters must share one error");
        // Typed: the fetcher's own error, with its own source chain.
        let typed: &Unavailable = error.fetch_error().expect("the fetcher's error type");
        assert_eq!(typed.key, 5);
        let source = error.source().expect("the fetch error is the source");
        let cause = source.source().expect("the fetcher's cause is kept");
        assert_eq!(cause.to_string(), "no such chunk file");
    }
    assert_eq!(cache.stats().fetch_errors, 1);
    assert!(cache.peek(&5).is_none());
    assert_eq!(cache.stats().in_flight, 0);
    // Not cached: the next call fetches again, and a working fetcher succeeds.
    let working = Counting::new(Duration::ZERO, Behaviour::Succeed);
    assert_eq!(cache.get_or_fetch(5, &working).await.unwrap(), value_of(5));
    assert_eq!(working.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_fetch_gives_every_waiter_an_error_and_no_one_hangs() {
    let cache = ChunkCache::new(16);
    let panicking = Counting::new(Duration::from_millis(50), Behaviour::Panic);
    let results = tokio::time::timeout(Duration::from_secs(5), callers(&cache, &panicking, 6, 64))
        .await
        .expect("waiters of a panicked fetch must not hang");
    assert_eq!(panicking.calls(), 1);
    for result in results {
        match result.unwrap_err() {
            CacheError::Panicked { message } => assert!(message.contains("fetcher exploded on 6")),
            other => panic!("expected a panic error, got {other:?}"),
        }
    }
    assert_eq!(cache.stats().panics, 1);
    assert_eq!(cache.stats().in_flight, 0);
    let working = Counting::new(Duration::ZERO, Behaviour::Succeed);
    assert_eq!(cache.get_or_fetch(6, &working).await.unwrap(), value_of(6));
}

#[tokio::test]
async fn a_fetcher_that_panics_while_starting_leaves_nothing_in_flight() {
    let cache = ChunkCache::new(16);
    let caller = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_fetch_with(
                    8,
                    |_| -> std::future::Ready<Result<Arc<Vec<u8>>, Unavailable>> {
                        panic!("could not even start")
                    },
                )
                .await
        })
    };
    assert!(caller.await.unwrap_err().is_panic());
    assert_eq!(cache.stats().in_flight, 0);
    assert_eq!(cache.stats().panics, 1);
    let working = Counting::new(Duration::ZERO, Behaviour::Succeed);
    assert_eq!(cache.get_or_fetch(8, &working).await.unwrap(), value_of(8));
}

#[test]
fn a_runtime_shutting_down_abandons_its_fetch_and_frees_its_waiters() {
    let cache = ChunkCache::new(16);
    let hanging = Counting::new(Duration::ZERO, Behaviour::Hang);
    let starter = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Start the fetch on one runtime and leave it hanging there.
    let started = starter.block_on(async {
        tokio::time::timeout(Duration::from_millis(20), cache.get_or_fetch(9, &hanging)).await
    });
    assert!(started.is_err());
    assert_eq!(cache.stats().in_flight, 1);
    // A waiter on another runtime joins it.
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let waiter = {
        let (cache, hanging) = (cache.clone(), Arc::clone(&hanging));
        other.spawn(async move { cache.get_or_fetch(9, &hanging).await })
    };
    std::thread::sleep(Duration::from_millis(50));
    drop(starter);
    let result =
        other.block_on(async { tokio::time::timeout(Duration::from_secs(5), waiter).await });
    let error = result.expect("the waiter hung").unwrap().unwrap_err();
    assert!(matches!(error, CacheError::Abandoned), "{error:?}");
    assert_eq!(cache.stats().in_flight, 0);
    assert_eq!(cache.stats().abandoned, 1);
}

#[test]
fn a_fetch_outside_a_runtime_is_an_error_not_a_panic() {
    let cache = ChunkCache::new(16);
    let fetcher = Counting::new(Duration::ZERO, Behaviour::Succeed);
    let result = cache.get_or_fetch(1, &fetcher).now_or_never();
    assert!(matches!(result, Some(Err(CacheError::NoRuntime))));
    assert_eq!(cache.stats().in_flight, 0);
    // A hit needs no runtime.
    cache.insert(1, value_of(1));
    let hit = cache.get_or_fetch(1, &fetcher).now_or_never();
    assert_eq!(hit.unwrap().unwrap(), value_of(1));
}

#[tokio::test]
async fn a_trait_object_fetcher_works() {
    let cache = ChunkCache::new(16);
    let fetcher: Arc<dyn Fetch<u64, Arc<Vec<u8>>, Error = Unavailable>> =
        Counting::new(Duration::ZERO, Behaviour::Succeed);
    assert_eq!(cache.get_or_fetch(3, &fetcher).await.unwrap(), value_of(3));
}

#[test]
fn cache_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let cache = ChunkCache::new(1);
    let fetcher = Counting::new(Duration::ZERO, Behaviour::Succeed);
    assert_send(&cache.get_or_fetch(1, &fetcher));
    assert_send(&cache.get_or_fetch_with(1, |k| async move { Ok::<_, Unavailable>(value_of(k)) }));
}

/// Waiters of `key`, each with a 5 s limit so that a lost outcome fails instead of hanging.
async fn waiters_of<V, W>(
    cache: &Cache<u64, V, W>,
    key: u64,
    value: V,
    n: usize,
) -> Vec<Result<V, CacheError>>
where
    V: Clone + Send + Sync + 'static,
    W: cairn_cache::Weighter<u64, V>,
{
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (cache, value) = (cache.clone(), value.clone());
            tokio::spawn(async move {
                let fetch = cache.get_or_fetch_with(key, move |_| async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    Ok::<_, Unavailable>(value)
                });
                tokio::time::timeout(Duration::from_secs(5), fetch)
                    .await
                    .expect("a waiter hung: the fetch never published its outcome")
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_weighter_still_frees_every_waiter_and_the_key() {
    let cache: Cache<u64, Arc<Vec<u8>>, _> = cairn_cache::CacheBuilder::new(1 << 20)
        .weighter(|key: &u64, value: &Arc<Vec<u8>>| {
            assert!(*key != 13, "the weighter refuses key 13");
            value.len() as u64
        })
        .build();
    let results = waiters_of(&cache, 13, value_of(13), 16).await;
    for result in results {
        match result {
            Err(CacheError::Panicked { message }) => {
                assert!(message.contains("the weighter refuses key 13"), "{message}");
            }
            other => panic!("expected a panic error, got {other:?}"),
        }
    }
    assert_eq!(
        cache.stats().in_flight,
        0,
        "the in-flight entry must be gone"
    );
    assert_eq!(cache.stats().panics, 1);
    assert!(!cache.contains(&13));
    // The key is usable again: a new fetch starts (and is refused the same way, without a hang).
    let again = waiters_of(&cache, 13, value_of(13), 2).await;
    assert!(
        again
            .iter()
            .all(|r| matches!(r, Err(CacheError::Panicked { .. })))
    );
    assert_eq!(cache.stats().panics, 2);
    // Other keys are unaffected.
    assert_eq!(
        waiters_of(&cache, 14, value_of(14), 2).await[0]
            .as_ref()
            .unwrap(),
        &value_of(14)
    );
}

/// A value whose drop panics while it is armed.
#[derive(Debug, Clone)]
struct Bomb {
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Bomb {
    #[allow(clippy::panic)] // panicking is what this value is for
    fn drop(&mut self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("an evicted value's drop panicked");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_whose_drop_panics_on_eviction_does_not_lose_the_fetched_value() {
    let cache: Cache<u64, Bomb> = Cache::new(1);
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    cache.insert(
        1,
        Bomb {
            armed: Arc::clone(&armed),
        },
    );
    let calm = Bomb {
        armed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    // Storing key 2 evicts key 1, whose drop panics.
    let results = waiters_of(&cache, 2, calm, 8).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        !armed.load(std::sync::atomic::Ordering::SeqCst),
        "the bomb went off"
    );
    assert_eq!(cache.stats().in_flight, 0);
    assert!(cache.contains(&2), "the fetched value is cached");
    assert!(!cache.contains(&1));
}

#[tokio::test]
async fn a_fetch_error_says_its_own_part_and_leaves_the_cause_to_source() {
    let cache = ChunkCache::new(8);
    let failing = Counting::new(Duration::ZERO, Behaviour::Fail);
    let error = cache.get_or_fetch(4, &failing).await.unwrap_err();
    let cause = error
        .source()
        .expect("the fetcher's error is the source")
        .to_string();
    assert_eq!(cause, "chunk 4 is unavailable");
    assert_eq!(error.to_string(), "the fetch failed");
}
