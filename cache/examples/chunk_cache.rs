//! A chunk-like cache: byte buffers weighed by their length, fetched once however many readers
//! ask at the same time.
//!
//! Run with `cargo run -p cairn-cache --example chunk_cache`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn_cache::{Cache, CacheBuilder, CacheError, Fetch};

/// Pretends to read and decode a 1 MiB chunk from slow storage.
struct SlowStore {
    reads: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error("chunk {0} is missing")]
struct MissingChunk(u64);

#[async_trait::async_trait]
impl Fetch<u64, Arc<[u8]>> for SlowStore {
    type Error = MissingChunk;

    async fn fetch(&self, id: u64) -> Result<Arc<[u8]>, MissingChunk> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if id == 13 {
            return Err(MissingChunk(id));
        }
        Ok(Arc::from(vec![id as u8; 1 << 20]))
    }
}

#[tokio::main]
async fn main() -> Result<(), CacheError> {
    // 8 MiB of chunks, weighed in bytes.
    let cache: Cache<u64, Arc<[u8]>, _> = CacheBuilder::new(8 << 20)
        .weighter(|_: &u64, chunk: &Arc<[u8]>| chunk.len() as u64)
        .build();
    let store = Arc::new(SlowStore {
        reads: AtomicUsize::new(0),
    });

    // 32 readers of 4 chunks each, all at once: each chunk is read from the store once.
    let readers: Vec<_> = (0..32u64)
        .map(|reader| {
            let (cache, store) = (cache.clone(), Arc::clone(&store));
            tokio::spawn(async move { cache.get_or_fetch(reader % 4, &store).await })
        })
        .collect();
    for reader in readers {
        let chunk = reader.await.expect("reader task")?;
        assert_eq!(chunk.len(), 1 << 20);
    }

    // A failure reaches the caller typed, and is not cached.
    let error = cache
        .get_or_fetch(13, &store)
        .await
        .expect_err("chunk 13 is missing");
    assert!(error.fetch_error::<MissingChunk>().is_some());

    let stats = cache.stats();
    println!(
        "store reads: {}, hits: {}, misses: {}, coalesced waits: {}, cached: {} chunks, {} bytes",
        store.reads.load(Ordering::Relaxed),
        stats.hits,
        stats.misses,
        stats.coalesced,
        stats.entries,
        stats.weight,
    );
    assert_eq!(store.reads.load(Ordering::Relaxed), 5);
    Ok(())
}
