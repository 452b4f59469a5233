//! Fetchers that count their calls, shared by the integration tests.

#![allow(dead_code, unreachable_pub, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn_cache::Fetch;

/// The error our test fetchers fail with; it has a source of its own, to check the chain.
#[derive(Debug, thiserror::Error)]
#[error("chunk {key} is unavailable")]
pub struct Unavailable {
    pub key: u64,
    #[source]
    pub cause: std::io::Error,
}

/// What a [`Counting`] fetch does after its delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Succeed,
    Fail,
    Panic,
    Hang,
}

/// A fetcher that waits `delay`, then behaves as told, counting its fetches.
#[derive(Debug)]
pub struct Counting {
    pub calls: AtomicUsize,
    pub delay: Duration,
    pub behaviour: Behaviour,
}

impl Counting {
    pub fn new(delay: Duration, behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            delay,
            behaviour,
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The value a successful fetch of `key` gives.
pub fn value_of(key: u64) -> Arc<Vec<u8>> {
    Arc::new(vec![key as u8; 16])
}

#[async_trait::async_trait]
impl Fetch<u64, Arc<Vec<u8>>> for Counting {
    type Error = Unavailable;

    async fn fetch(&self, key: u64) -> Result<Arc<Vec<u8>>, Unavailable> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        match self.behaviour {
            Behaviour::Succeed => Ok(value_of(key)),
            Behaviour::Fail => Err(Unavailable {
                key,
                cause: std::io::Error::new(std::io::ErrorKind::NotFound, "no such chunk file"),
            }),
            Behaviour::Panic => panic!("fetcher exploded on {key}"),
            Behaviour::Hang => std::future::pending().await,
        }
    }
}

/// Waits until the cache has no fetch in flight, or fails the test after 5 s.
pub async fn settle<W>(cache: &cairn_cache::Cache<u64, Arc<Vec<u8>>, W>)
where
    W: cairn_cache::Weighter<u64, Arc<Vec<u8>>>,
{
    for _ in 0..500 {
        if cache.stats().in_flight == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fetches still in flight after 5 s: {:?}", cache.stats());
}

/// Starts `n` concurrent callers of `key` and collects their results in order.
pub async fn callers(
    cache: &cairn_cache::Cache<u64, Arc<Vec<u8>>>,
    fetcher: &Arc<Counting>,
    key: u64,
    n: usize,
) -> Vec<Result<Arc<Vec<u8>>, cairn_cache::CacheError>> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let cache = cache.clone();
            let fetcher = Arc::clone(fetcher);
            tokio::spawn(async move { cache.get_or_fetch(key, &fetcher).await })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.expect("a caller task panicked"));
    }
    results
}
