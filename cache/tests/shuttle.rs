//! The in-flight protocol (coalescing, cancellation of the first caller, shared errors, panics)
//! checked over many interleavings with the shuttle model checker.
//!
//! Runs only with `RUSTFLAGS="--cfg shuttle"`, which builds the cache on shuttle's locks,
//! atomics and tasks (`cargo xtask ci` does, in a target folder of its own).

#![cfg(shuttle)]
#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap: a failure is the test failing

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};

use cairn_cache::{Cache, CacheError};
use shuttle::future::{block_on, spawn, yield_now};

/// Interleavings tried per property.
const ITERATIONS: usize = 3000;

#[derive(Debug, thiserror::Error)]
#[error("unavailable")]
struct Unavailable;

#[derive(Clone, Copy)]
enum Ending {
    Value,
    Error,
    Panic,
}

/// `get_or_fetch` of key 1 with a fetch that yields, then ends as told, counting its runs.
async fn call(
    cache: Cache<u32, u32>,
    calls: Arc<AtomicUsize>,
    ending: Ending,
) -> Result<u32, CacheError> {
    cache
        .get_or_fetch_with(1, move |_| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            yield_now().await;
            yield_now().await;
            match ending {
                Ending::Value => Ok(7),
                Ending::Error => Err(Unavailable),
                Ending::Panic => panic!("injected panic in a model-checked fetch"),
            }
        })
        .await
}

fn quiet_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.contains("injected panic"));
        if !injected {
            previous(info);
        }
    }));
}

#[test]
fn concurrent_callers_share_one_fetch() {
    shuttle::check_random(
        || {
            let cache: Cache<u32, u32> = Cache::new(4);
            let calls = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..3)
                .map(|_| spawn(call(cache.clone(), Arc::clone(&calls), Ending::Value)))
                .collect();
            for task in tasks {
                assert_eq!(block_on(task).unwrap().unwrap(), 7);
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(cache.stats().in_flight, 0);
            assert_eq!(cache.peek(&1), Some(7));
        },
        ITERATIONS,
    );
}

#[test]
fn a_cancelled_first_caller_leaves_one_fetch_and_no_stale_entry() {
    shuttle::check_random(
        || {
            let cache: Cache<u32, u32> = Cache::new(4);
            let calls = Arc::new(AtomicUsize::new(0));
            // The first caller starts the fetch, is polled once, and is dropped.
            {
                let mut first = Box::pin(call(cache.clone(), Arc::clone(&calls), Ending::Value));
                let _ = first.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            }
            let others: Vec<_> = (0..2)
                .map(|_| spawn(call(cache.clone(), Arc::clone(&calls), Ending::Value)))
                .collect();
            for task in others {
                assert_eq!(block_on(task).unwrap().unwrap(), 7);
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "the fetch ran again");
            assert_eq!(cache.stats().in_flight, 0, "a stale in-flight entry");
        },
        ITERATIONS,
    );
}

#[test]
fn when_every_caller_goes_the_fetch_still_finishes() {
    shuttle::check_random(
        || {
            let cache: Cache<u32, u32> = Cache::new(4);
            let calls = Arc::new(AtomicUsize::new(0));
            {
                let mut only = Box::pin(call(cache.clone(), Arc::clone(&calls), Ending::Value));
                let _ = only.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            }
            block_on(async {
                while cache.stats().in_flight > 0 {
                    yield_now().await;
                }
            });
            assert_eq!(cache.peek(&1), Some(7));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        },
        ITERATIONS,
    );
}

#[test]
fn every_waiter_of_a_failed_fetch_gets_the_same_error_and_the_next_call_retries() {
    shuttle::check_random(
        || {
            let cache: Cache<u32, u32> = Cache::new(4);
            let calls = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..3)
                .map(|_| spawn(call(cache.clone(), Arc::clone(&calls), Ending::Error)))
                .collect();
            let errors: Vec<CacheError> = tasks
                .into_iter()
                .map(|t| block_on(t).unwrap().unwrap_err())
                .collect();
            // Callers that arrived after a failure started a fetch of their own; those that
            // waited together share one error.
            let fetches = calls.load(Ordering::SeqCst);
            assert!((1..=3).contains(&fetches));
            let mut distinct: Vec<&Arc<dyn std::error::Error + Send + Sync>> = Vec::new();
            for error in &errors {
                let shared = error.shared_fetch_error().expect("a fetch error");
                assert!(error.fetch_error::<Unavailable>().is_some());
                if !distinct.iter().any(|d| Arc::ptr_eq(d, shared)) {
                    distinct.push(shared);
                }
            }
            assert_eq!(distinct.len(), fetches, "one shared error per fetch");
            assert_eq!(cache.stats().in_flight, 0);
            assert!(cache.peek(&1).is_none(), "an error was cached");
            assert_eq!(
                block_on(call(cache.clone(), Arc::clone(&calls), Ending::Value)).unwrap(),
                7
            );
        },
        ITERATIONS,
    );
}

#[test]
fn a_panicking_fetch_frees_every_waiter() {
    quiet_panics();
    shuttle::check_random(
        || {
            let cache: Cache<u32, u32> = Cache::new(4);
            let calls = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..3)
                .map(|_| spawn(call(cache.clone(), Arc::clone(&calls), Ending::Panic)))
                .collect();
            for task in tasks {
                let error = block_on(task).unwrap().unwrap_err();
                assert!(error.is_panic(), "{error}");
            }
            assert_eq!(cache.stats().in_flight, 0);
            assert_eq!(
                block_on(call(cache.clone(), Arc::clone(&calls), Ending::Value)).unwrap(),
                7
            );
        },
        ITERATIONS,
    );
}
