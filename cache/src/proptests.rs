//! The cache against the reference model: random operation sequences, compared after each step.

use std::convert::Infallible;

use proptest::prelude::*;

use crate::model::LruModel;
use crate::{Cache, CacheBuilder};

/// Values carry their weight, so the weighter is a pure function of the value.
type Value = (u32, u64);

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, Value),
    Get(u8),
    Peek(u8),
    Remove(u8),
    Clear,
    SetCapacity(u64),
    Fetch(u8, Value),
    FailedFetch(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..12;
    let value = (any::<u32>(), 0u64..12);
    prop_oneof![
        4 => (key.clone(), value.clone()).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => key.clone().prop_map(Op::Get),
        1 => key.clone().prop_map(Op::Peek),
        1 => key.clone().prop_map(Op::Remove),
        1 => Just(Op::Clear),
        1 => (0u64..40).prop_map(Op::SetCapacity),
        4 => (key.clone(), value).prop_map(|(k, v)| Op::Fetch(k, v)),
        1 => key.prop_map(Op::FailedFetch),
    ]
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

fn run(capacity: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let cache: Cache<u8, Value, _> = CacheBuilder::new(capacity)
        .shards(1)
        .weighter(|_: &u8, v: &Value| v.1)
        .build();
    let mut model: LruModel<u8, Value> = LruModel::new(capacity);
    for (step, op) in ops.iter().enumerate() {
        match op.clone() {
            Op::Insert(k, v) => {
                cache.insert(k, v);
                model.insert(k, v, v.1);
            }
            Op::Get(k) => prop_assert_eq!(cache.get(&k), model.get(&k), "step {}", step),
            Op::Peek(k) => prop_assert_eq!(cache.peek(&k), model.peek(&k), "step {}", step),
            Op::Remove(k) => prop_assert_eq!(cache.remove(&k), model.remove(&k)),
            Op::Clear => {
                cache.clear();
                model.clear();
            }
            Op::SetCapacity(c) => {
                cache.set_capacity(c);
                model.set_capacity(c);
            }
            Op::Fetch(k, v) => {
                let got = runtime.block_on(
                    cache.get_or_fetch_with(k, move |_| async move { Ok::<_, Infallible>(v) }),
                );
                prop_assert_eq!(got.ok(), model.get_or_fetch(k, Some((v, v.1))));
            }
            Op::FailedFetch(k) => {
                let got = runtime
                    .block_on(cache.get_or_fetch_with(k, |_| async { Err::<Value, _>(Refused) }));
                let expected = model.get_or_fetch(k, None);
                match (got, expected) {
                    (Ok(a), Some(b)) => prop_assert_eq!(a, b),
                    (Err(e), None) => prop_assert!(e.fetch_error::<Refused>().is_some()),
                    (got, expected) => {
                        prop_assert!(false, "step {step}: cache {got:?}, model {expected:?}");
                    }
                }
            }
        }
        prop_assert_eq!(
            cache.keys_by_recency(),
            model.keys_by_recency(),
            "step {}",
            step
        );
        prop_assert_eq!(cache.len(), model.len());
        prop_assert_eq!(cache.weight(), model.weight());
        prop_assert!(cache.weight() <= cache.capacity());
        let stats = cache.stats();
        prop_assert_eq!(stats.evictions, model.evictions(), "step {}", step);
        prop_assert_eq!(stats.oversized, model.oversized(), "step {}", step);
        prop_assert_eq!(stats.in_flight, 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_shard_cache_matches_the_model(
        capacity in 0u64..40,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(capacity, &ops)?;
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
