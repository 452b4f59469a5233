//! The cache against the reference model: random operation sequences, compared after each step
//! by [`model::check_ops`](crate::model::check_ops) — the same check the fuzz target runs.

use proptest::prelude::*;

use crate::model::{INJECTED_PANIC, Op, check_ops};
use crate::{Cache, CacheBuilder};

fn op() -> impl Strategy<Value = Op> {
    let key = any::<u8>();
    prop_oneof![
        4 => (key, any::<u32>(), any::<u8>()).prop_map(|(k, v, w)| Op::Insert(k, v, w)),
        4 => key.prop_map(Op::Get),
        1 => key.prop_map(Op::Peek),
        1 => key.prop_map(Op::Remove),
        1 => Just(Op::Clear),
        1 => any::<u8>().prop_map(Op::SetCapacity),
        4 => (key, any::<u32>(), any::<u8>()).prop_map(|(k, v, w)| Op::Fetch(k, v, w)),
        1 => key.prop_map(Op::FailedFetch),
        1 => key.prop_map(Op::PanickingFetch),
        2 => (key, any::<u32>(), any::<u8>()).prop_map(|(k, v, w)| Op::CancelledFetch(k, v, w)),
    ]
}

/// Keeps the injected panics out of the test output; other panics still print.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.contains(INJECTED_PANIC));
            if !injected {
                previous(info);
            }
        }));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_shard_cache_matches_the_model(
        capacity: u8,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        quiet_injected_panics();
        check_ops(capacity, &ops);
    }
}

/// With several shards the order across shards is approximate, but the budget is not.
#[test]
fn many_shards_never_exceed_the_capacity() {
    let cache: Cache<u32, u64, _> = CacheBuilder::new(100)
        .shards(16)
        .weighter(|_: &u32, v: &u64| *v)
        .build();
    for i in 0..10_000u32 {
        cache.insert(i % 300, u64::from(i % 17));
        assert!(cache.weight() <= 100);
        if i % 7 == 0 {
            let _ = cache.get(&(i % 50));
        }
    }
    let stats = cache.stats();
    assert_eq!(stats.weight, cache.weight());
    assert!(stats.evictions > 0);
    // The recency list and the counters agree.
    assert_eq!(cache.keys_by_recency().len(), cache.len());
}
