//! `read_at` against the image it reads, under faults, concurrency, zero chunks and readahead.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_chunk_store::fault::{Fault, Target};
use cairn_reader::{ChunkReader, ReaderError, ReaderOptions, chunk_cache};
use common::{Fixture, dynamic, fixed, image, noise};
use proptest::prelude::*;

fn reader(fixture: &Fixture, options: ReaderOptions) -> ChunkReader {
    ChunkReader::new(fixture.index.clone(), fixture.store(), options)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn read_at_equals_the_slice(
        seed: u64,
        len in 0usize..60_000,
        shift in 8u32..14,
        pattern in proptest::collection::vec(1usize..9000, 1..6),
        is_fixed: bool,
        cache in prop_oneof![Just(0u64), 1u64..20_000, Just(1u64 << 30)],
        reads in proptest::collection::vec((any::<u64>(), 0usize..20_000), 1..12),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let data = image(seed, len);
            let fixture = if is_fixed { fixed(data, 1 << shift).await } else { dynamic(data, &pattern).await };
            let reader = reader(&fixture, ReaderOptions::default().cache_bytes(cache).concurrency(3));
            for (raw_offset, want) in reads {
                let offset = raw_offset % (len as u64 + 10);
                let mut buf = vec![0xee; want];
                let read = reader.read_at(&mut buf, offset).await.unwrap();
                let start = (offset as usize).min(len);
                let expected = &fixture.image[start..(start + want).min(len)];
                prop_assert_eq!(read, expected.len());
                prop_assert_eq!(&buf[..read], expected);
            }
            prop_assert!(reader.cache().weight() <= cache);
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spanning_chunks_and_the_end() {
    let fixture = fixed(image(1, 100_000), 4096).await;
    let reader = reader(&fixture, ReaderOptions::default());
    let mut buf = vec![0; 50_000];
    assert_eq!(reader.read_at(&mut buf, 70_000).await.unwrap(), 30_000);
    assert_eq!(buf[..30_000], fixture.image[70_000..]);
    assert_eq!(reader.read_at(&mut buf, 100_000).await.unwrap(), 0);
    assert_eq!(reader.read_at(&mut buf, u64::MAX).await.unwrap(), 0);
    let error = reader.read_exact_at(&mut buf, 90_000).await.unwrap_err();
    assert!(
        matches!(error, ReaderError::UnexpectedEnd { .. }),
        "{error}"
    );
    reader
        .read_exact_at(&mut buf[..1000], 99_000)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_fail_exactly_the_reads_that_touch_them_and_nothing_is_poisoned() {
    let fixture = fixed(noise(2, 64 * 1024), 4096).await;
    let chunk = |i: usize| fixture.index.chunk(i).unwrap();
    // Chunks 3, 5, 7, 9: error, panic, corruption, missing; 11 slow but fine.
    let faults = [
        (3, Fault::Error),
        (5, Fault::Panic),
        (7, Fault::Corrupt),
        (9, Fault::Missing),
    ];
    for (i, fault) in faults {
        fixture.faults.add(Target::Digest(chunk(i).digest), fault);
    }
    fixture.faults.add(
        Target::Digest(chunk(11).digest),
        Fault::Delay(Duration::from_millis(50)),
    );
    let bad: Vec<usize> = faults.iter().map(|f| f.0).collect();
    let reader = reader(&fixture, ReaderOptions::default().readahead_chunks(0));
    for i in 0..16usize {
        let info = chunk(i);
        let mut buf = vec![0; 100];
        let result = reader.read_at(&mut buf, info.start + 10).await;
        if bad.contains(&i) {
            let error = result.unwrap_err();
            let text = error.to_string();
            assert!(text.contains(&format!("chunk {i} ")), "{text}");
            assert!(
                text.contains(&format!("offset {}", info.start + 10)),
                "{text}"
            );
        } else {
            assert_eq!(result.unwrap(), 100, "chunk {i}");
            assert_eq!(
                buf,
                fixture.image[info.start as usize + 10..info.start as usize + 110]
            );
        }
    }
    // A read across a bad chunk fails; reads beside it still work.
    let mut buf = vec![0; 3 * 4096];
    let across = reader.read_at(&mut buf, 2 * 4096).await.unwrap_err();
    assert!(matches!(across, ReaderError::Chunk { .. }), "{across:?}");
    assert_eq!(reader.read_at(&mut buf, 12 * 4096).await.unwrap(), 3 * 4096);
    assert_eq!(buf, fixture.image[12 * 4096..15 * 4096]);
    // Healed, every once-failed chunk is served: no failure was cached.
    fixture.faults.heal();
    let mut all = vec![0; fixture.image.len()];
    assert_eq!(
        reader.read_at(&mut all, 0).await.unwrap(),
        fixture.image.len()
    );
    assert_eq!(all, fixture.image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_readers_fetch_each_chunk_once() {
    let fixture = fixed(image(3, 256 * 1024), 8192).await;
    fixture.faults.add(
        cairn_chunk_store::fault::Target::All,
        Fault::Delay(Duration::from_millis(20)),
    );
    let reader = reader(&fixture, ReaderOptions::default().readahead_chunks(0));
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let reader = reader.clone();
            let image = fixture.image.clone();
            tokio::spawn(async move {
                let offset = (t * 3001) % 200_000;
                let mut buf = vec![0; 40_000];
                let read = reader.read_at(&mut buf, offset).await.unwrap();
                assert_eq!(buf[..read], image[offset as usize..offset as usize + read]);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut fetched_once = 0;
    for chunk in fixture.index.chunks() {
        let gets = fixture.faults.gets_of(&chunk.digest);
        assert!(gets <= 1, "chunk {} fetched {gets} times", chunk.index);
        fetched_once += gets;
    }
    assert!(fetched_once > 10);
    assert_eq!(reader.stats().chunks_fetched, fetched_once);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_chunks_are_served_without_a_fetch_or_cache_space() {
    let mut data = vec![0u8; 10 * 4096 + 100];
    data[4096 * 3..4096 * 3 + 10].copy_from_slice(b"not zeros!");
    let fixture = fixed(data, 4096).await;
    let reader = reader(&fixture, ReaderOptions::default());
    let mut buf = vec![1; fixture.image.len()];
    reader.read_exact_at(&mut buf, 0).await.unwrap();
    assert_eq!(buf, fixture.image);
    let zero = fixture.index.chunk(0).unwrap().digest;
    assert_eq!(
        fixture.faults.gets_of(&zero),
        0,
        "the zero chunk was fetched"
    );
    assert_eq!(
        fixture.faults.total_gets(),
        1,
        "only the one non-zero chunk"
    );
    let stats = reader.stats();
    assert_eq!(
        stats.zero_chunks, 10,
        "9 full zero chunks and the short zero tail"
    );
    assert_eq!(stats.cache.entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_runs_of_dynamic_indexes_are_found_too() {
    let mut data = image(4, 30_000);
    data.extend(std::iter::repeat_n(0u8, 50_000));
    let fixture = dynamic(data, &[10_000]).await;
    let reader = reader(&fixture, ReaderOptions::default());
    let mut buf = vec![1; fixture.image.len()];
    reader.read_exact_at(&mut buf, 0).await.unwrap();
    assert_eq!(buf, fixture.image);
    assert_eq!(reader.stats().zero_chunks, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_fetch_ahead_and_random_reads_do_not() {
    let fixture = fixed(image(5, 64 * 4096), 4096).await;
    let reader = reader(&fixture, ReaderOptions::default().readahead_chunks(4));
    let mut buf = vec![0; 4096];
    for i in 0..8u64 {
        reader.read_exact_at(&mut buf, i * 4096).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sequential = reader.stats();
    assert!(sequential.readahead_issued >= 4, "{sequential:?}");
    assert!(sequential.readahead_hits >= 3, "{sequential:?}");
    // Random reads issue nothing more.
    for offset in [40u64, 7, 55, 20, 33, 61] {
        reader
            .read_exact_at(&mut buf, offset * 4096 + 17)
            .await
            .unwrap();
    }
    assert_eq!(reader.stats().readahead_issued, sequential.readahead_issued);
    // Never past the end: read the last chunk sequentially.
    let reader2 = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    for i in 60..64u64 {
        reader2.read_exact_at(&mut buf, i * 4096).await.unwrap();
    }
    assert!(reader2.stats().readahead_issued <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readahead_never_exceeds_half_the_cache() {
    let fixture = fixed(image(6, 64 * 4096), 4096).await;
    let options = ReaderOptions::default()
        .readahead_chunks(32)
        .cache_bytes(4 * 4096);
    let reader = reader(&fixture, options);
    let mut buf = vec![0; 4096];
    reader.read_exact_at(&mut buf, 0).await.unwrap();
    reader.read_exact_at(&mut buf, 4096).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Half the cache is two chunks: after reading chunk 0, chunks 1-2 are fetched ahead; after
    // chunk 1, only chunk 3 joins them. Nothing was pushed out of the cache to make room.
    let stats = reader.stats();
    assert_eq!(stats.readahead_issued, 3, "{stats:?}");
    assert_eq!(stats.cache.evictions, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_whose_length_disagrees_with_the_index_is_an_error() {
    // Two images share a cache; the second's index claims a different length for a digest.
    let first = fixed(image(7, 8192), 4096).await;
    let cache = chunk_cache(1 << 20);
    let a = ChunkReader::with_cache(
        first.index.clone(),
        first.store(),
        cache.clone(),
        ReaderOptions::default(),
    );
    let mut buf = vec![0; 8192];
    a.read_exact_at(&mut buf, 0).await.unwrap();
    let digest = first.index.chunk(0).unwrap().digest;
    let mut writer =
        cairn_index::DynamicIndexWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    writer.push(1000, &digest).unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    let lying =
        cairn_index::Index::from_bytes(bytes, cairn_index::Origin::memory(), &Default::default())
            .unwrap();
    let b = ChunkReader::with_cache(
        Arc::new(lying),
        first.store(),
        cache.clone(),
        ReaderOptions::default(),
    );
    let error = b.read_at(&mut buf, 0).await.unwrap_err();
    assert!(
        matches!(
            error,
            ReaderError::ChunkLength {
                expected: 1000,
                actual: 4096,
                ..
            }
        ),
        "{error}"
    );
    // Uncached, the store's verified read catches it.
    cache.clear();
    let error = b.read_at(&mut buf, 0).await.unwrap_err();
    assert!(error.store_error().is_some(), "{error}");
    // The cache stays usable.
    a.read_exact_at(&mut buf, 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_issued_in_order_count_as_sequential_however_they_complete() {
    let fixture = fixed(noise(14, 32 * 4096), 4096).await;
    // Even chunks are slow, so each pair of reads completes second-first.
    for chunk in fixture.index.chunks().filter(|c| c.index % 2 == 0) {
        fixture.faults.add(
            cairn_chunk_store::fault::Target::Digest(chunk.digest),
            Fault::Delay(Duration::from_millis(30)),
        );
    }
    let reader = reader(&fixture, ReaderOptions::default().readahead_chunks(2));
    for pair in 0..4u64 {
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        let (ra, rb) = tokio::join!(
            reader.read_exact_at(&mut a, 2 * pair * 4096),
            reader.read_exact_at(&mut b, (2 * pair + 1) * 4096),
        );
        ra.unwrap();
        rb.unwrap();
    }
    let stats = reader.stats();
    assert!(stats.readahead_issued >= 6, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_option_values_are_clamped_not_overflowed() {
    use cairn_reader::{MAX_CONCURRENCY, MAX_READAHEAD_CHUNKS};
    let fixture = fixed(image(15, 16 * 4096), 4096).await;
    let options = ReaderOptions::default()
        .readahead_chunks(usize::MAX)
        .concurrency(usize::MAX);
    assert_eq!(options.readahead_chunks, MAX_READAHEAD_CHUNKS);
    assert_eq!(options.concurrency, MAX_CONCURRENCY);
    assert_eq!(ReaderOptions::default().concurrency(0).concurrency, 1);
    // The fields are public: a reader clamps them again.
    let mut raw = ReaderOptions::default();
    raw.readahead_chunks = usize::MAX;
    raw.concurrency = 0;
    let reader = reader(&fixture, raw);
    assert_eq!(reader.options().readahead_chunks, MAX_READAHEAD_CHUNKS);
    assert_eq!(reader.options().concurrency, 1);
    let mut buf = vec![0u8; 4096];
    for i in 0..16u64 {
        reader.read_exact_at(&mut buf, i * 4096).await.unwrap();
        assert_eq!(
            buf,
            fixture.image[i as usize * 4096..(i as usize + 1) * 4096]
        );
    }
}
