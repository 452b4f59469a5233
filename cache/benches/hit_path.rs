//! The hit path, side by side with the peers in one run: `quick_cache`, `moka` and
//! `Mutex<lru::LruCache>`, on 1 and 2 threads, with uniform and Zipf(0.99) keys over 10,000
//! cached entries; and the miss path, 64 tasks asking for one key at once.
//!
//! `cargo bench -p cairn-cache --bench hit_path`
//!
//! Every cache holds every key (capacity twice the key count), so each lookup is a hit; the
//! warm-up checks that. Keys are `u64`, values `u64`, so a clone costs nothing and what is
//! measured is the cache itself. Throughput is lookups per second over all threads.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cairn_cache::{Cache, CacheBuilder};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const KEYS: usize = 10_000;
/// Lookups per thread per batch; a sample runs whole batches.
const BATCH: usize = 1 << 16;

/// One cache under test, behind one interface.
trait Lookup: Send + Sync {
    fn lookup(&self, key: u64) -> Option<u64>;
}

struct Cairn(Cache<u64, u64>);
impl Lookup for Cairn {
    fn lookup(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
}

struct QuickCache(quick_cache::sync::Cache<u64, u64>);
impl Lookup for QuickCache {
    fn lookup(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
}

struct Moka(moka::sync::Cache<u64, u64>);
impl Lookup for Moka {
    fn lookup(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
}

struct MutexLru(Mutex<lru::LruCache<u64, u64>>);
impl Lookup for MutexLru {
    fn lookup(&self, key: u64) -> Option<u64> {
        self.0.lock().unwrap().get(&key).copied()
    }
}

fn caches() -> Vec<(&'static str, Arc<dyn Lookup>)> {
    let capacity = 2 * KEYS;
    let cairn: Cache<u64, u64> = CacheBuilder::new(capacity as u64).build();
    let quick = quick_cache::sync::Cache::new(capacity);
    let moka = moka::sync::Cache::new(capacity as u64);
    let lru = lru::LruCache::new(std::num::NonZeroUsize::new(capacity).unwrap());
    let lru = Mutex::new(lru);
    for key in 0..KEYS as u64 {
        cairn.insert(key, key);
        quick.insert(key, key);
        moka.insert(key, key);
        lru.lock().unwrap().put(key, key);
    }
    moka.run_pending_tasks();
    vec![
        ("cairn", Arc::new(Cairn(cairn)) as Arc<dyn Lookup>),
        ("quick_cache", Arc::new(QuickCache(quick))),
        ("moka", Arc::new(Moka(moka))),
        ("mutex_lru", Arc::new(MutexLru(lru))),
    ]
}

/// A xorshift generator: the same key sequences on every run.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `BATCH` keys per thread: uniform over the keys, or Zipf(0.99) with ranks scattered over the
/// key space (so the hot keys are not all in one shard).
fn key_sequence(zipf: bool, thread: usize) -> Vec<u64> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (thread as u64 + 1).wrapping_mul(0x2545_f491);
    if !zipf {
        return (0..BATCH)
            .map(|_| xorshift(&mut state) % KEYS as u64)
            .collect();
    }
    let weights: Vec<f64> = (1..=KEYS)
        .map(|rank| 1.0 / (rank as f64).powf(0.99))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(KEYS);
    let mut sum = 0.0;
    for w in &weights {
        sum += w / total;
        cdf.push(sum);
    }
    (0..BATCH)
        .map(|_| {
            let u = (xorshift(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
            let rank = cdf.partition_point(|&c| c < u).min(KEYS - 1) as u64;
            // A fixed odd multiplier modulo the key count scatters the ranks.
            (rank * 7919) % KEYS as u64
        })
        .collect()
}

/// Runs `iters` batches on each of `threads` threads at once; the time of the slowest.
fn run(
    cache: &Arc<dyn Lookup>,
    sequences: &Arc<Vec<Vec<u64>>>,
    threads: usize,
    iters: u64,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let cache = Arc::clone(cache);
            let sequences = Arc::clone(sequences);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let keys = &sequences[t];
                barrier.wait();
                let mut found = 0u64;
                for _ in 0..iters {
                    for &key in keys {
                        found += u64::from(cache.lookup(black_box(key)).is_some());
                    }
                }
                black_box(found)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for handle in handles {
        handle.join().unwrap();
    }
    started.elapsed()
}

fn hits(c: &mut Criterion) {
    let caches = caches();
    for zipf in [false, true] {
        for threads in [1usize, 2] {
            let sequences = Arc::new(
                (0..threads)
                    .map(|t| key_sequence(zipf, t))
                    .collect::<Vec<_>>(),
            );
            let name = format!(
                "hit/{}/{threads}thread{}",
                if zipf { "zipf" } else { "uniform" },
                if threads == 1 { "" } else { "s" }
            );
            let mut group = c.benchmark_group(name);
            group.throughput(Throughput::Elements((BATCH * threads) as u64));
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(2));
            for (peer, cache) in &caches {
                let every_key_hits = sequences[0].iter().all(|&k| cache.lookup(k).is_some());
                assert!(every_key_hits, "{peer} lost keys it should hold");
                group.bench_function(BenchmarkId::from_parameter(peer), |b| {
                    b.iter_custom(|iters| run(cache, &sequences, threads, iters));
                });
            }
            group.finish();
        }
    }
}

/// 64 tasks ask for one missing key at once: one fetch, 63 waiters, then the key is removed.
fn coalesced_miss(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let cache: Cache<u64, u64> = CacheBuilder::new(1024).build();
    let mut group = c.benchmark_group("miss");
    group.throughput(Throughput::Elements(64));
    group.sample_size(20);
    group.bench_function("64_tasks_one_key", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let waiters: Vec<_> = (0..64)
                    .map(|_| {
                        let cache = cache.clone();
                        tokio::spawn(async move {
                            cache
                                .get_or_fetch_with(7, |k| async move {
                                    tokio::task::yield_now().await;
                                    Ok::<_, std::io::Error>(k)
                                })
                                .await
                        })
                    })
                    .collect();
                for waiter in waiters {
                    assert_eq!(waiter.await.unwrap().unwrap(), 7);
                }
                cache.remove(&7);
            });
        });
    });
    group.finish();
}

criterion_group!(benches, hits, coalesced_miss);
criterion_main!(benches);
