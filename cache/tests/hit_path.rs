//! The hit path allocates nothing (measured with a counting allocator) and two threads hitting
//! different keys do not serialise on one lock.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::sync::Arc;

use cairn_cache::{Cache, CacheBuilder};
use futures_util::FutureExt as _;

#[test]
fn a_hit_allocates_nothing() {
    let cache: Cache<[u8; 32], Arc<Vec<u8>>> = CacheBuilder::new(1024).build();
    let keys: Vec<[u8; 32]> = (0..256u32)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k
        })
        .collect();
    for k in &keys {
        cache.insert(*k, Arc::new(vec![1; 64]));
    }
    let info = allocation_counter::measure(|| {
        for k in &keys {
            assert!(cache.get(k).is_some());
            assert!(cache.peek(k).is_some());
            let hit = cache
                .get_or_fetch_with(*k, |_| async {
                    Ok::<_, std::io::Error>(Arc::new(Vec::new()))
                })
                .now_or_never();
            assert!(matches!(hit, Some(Ok(_))));
        }
    });
    assert_eq!(info.count_total, 0, "the hit path allocated: {info:?}");
    assert_eq!(cache.stats().hits, 512);
}

#[test]
fn keys_spread_over_the_shards() {
    let cache: Cache<u64, u64> = CacheBuilder::new(100_000).shards(16).build();
    assert_eq!(cache.shard_count(), 16);
    for k in 0..16_000u64 {
        cache.insert(k, k);
    }
    // With one lock per shard, lookups of different keys contend only when they share a shard;
    // check that the hash spreads keys evenly enough for that to be rare.
    let per_shard = cache.keys_by_recency_per_shard();
    assert_eq!(per_shard.len(), 16);
    for keys in &per_shard {
        assert!(
            (700..1300).contains(&keys.len()),
            "uneven shards: {:?}",
            per_shard.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}
