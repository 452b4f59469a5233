//! The restore engine as a library user calls it: to a file, to a writer, cancelled, refused.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_chunk_store::{
    ChunkEncoding, ChunkStore, Digest, EncodedChunk, LocalChunks, MemoryStore, PutOutcome,
    Result as StoreResult,
};

use cairn_reader::{
    ChunkReader, OutputKind, ReaderError, ReaderOptions, RestoreOptions, restore_to_path,
    restore_to_writer,
};
use common::{fixed, image};
use tokio_util::sync::CancellationToken;

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_gets_the_image_with_holes_and_progress_adds_up() {
    let mut data = image(21, 200_000);
    data.extend(std::iter::repeat_n(0u8, 3 * 4096));
    let fixture = fixed(data, 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.img");
    let done = Mutex::new(0u64);
    let progress = |bytes| *done.lock().unwrap() += bytes;
    let restored = restore_to_path(
        &reader,
        &output,
        RestoreOptions::default().fsync(true),
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&output).unwrap(), fixture.image);
    assert_eq!(restored.kind, OutputKind::File);
    assert_eq!(restored.size, fixture.image.len() as u64);
    assert!(restored.zero_chunks_skipped >= 3, "{restored:?}");
    assert_eq!(*done.lock().unwrap(), restored.size);
    assert_eq!(names(dir.path()), ["out.img"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_gets_the_image_in_order() {
    let fixture = fixed(image(22, 100_000), 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    let mut out = Vec::new();
    restore_to_writer(
        &reader,
        &mut out,
        "memory",
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(out, fixture.image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_restore_leaves_the_old_file_and_no_temporary() {
    let fixture = fixed(image(23, 100_000), 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("old.img");
    std::fs::write(&output, b"old").unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let error = restore_to_path(
        &reader,
        &output,
        RestoreOptions::default(),
        &|_| {},
        &cancel,
    )
    .await
    .unwrap_err();
    match error {
        ReaderError::Cancelled { left } => assert!(left.contains("is as it was"), "{left}"),
        other => panic!("expected a cancel, got {other:?}"),
    }
    assert_eq!(std::fs::read(&output).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["old.img"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_is_no_output() {
    let fixture = fixed(image(24, 10_000), 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let error = restore_to_path(
        &reader,
        dir.path(),
        RestoreOptions::default(),
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, ReaderError::OutputKind { problem, .. } if problem.starts_with("is a folder")),
        "{error:?}"
    );
}

/// Ten distinct 4 KiB chunks and one chunk the image holds three times.
fn once_and_repeated() -> Vec<u8> {
    let mut data = common::noise(31, 10 * 4096);
    let repeated = common::noise(32, 4096);
    for _ in 0..3 {
        data.extend_from_slice(&repeated);
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_caches_only_the_chunks_it_meets_again() {
    let fixture = fixed(once_and_repeated(), 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.img");
    restore_to_path(
        &reader,
        &output,
        RestoreOptions::default(),
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&output).unwrap(), fixture.image);
    let stats = reader.stats();
    // Every unique chunk fetched once; only the repeated one kept.
    assert_eq!(stats.chunks_fetched, 11, "{stats:?}");
    assert_eq!(stats.cache.entries, 1, "{stats:?}");
    assert_eq!(stats.cache.weight, 4096, "{stats:?}");

    let streamed = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    let mut out = Vec::new();
    restore_to_writer(
        &streamed,
        &mut out,
        "memory",
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(out, fixture.image);
    assert_eq!(streamed.stats().chunks_fetched, 11);
    assert_eq!(streamed.stats().cache.entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_uses_chunks_already_in_a_shared_cache() {
    let fixture = fixed(once_and_repeated(), 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.store(),
        ReaderOptions::default(),
    );
    // Read everything once through the cache: every chunk is cached.
    let mut all = vec![0u8; fixture.image.len()];
    reader.read_exact_at(&mut all, 0).await.unwrap();
    let fetched = reader.stats().chunks_fetched;
    assert_eq!(fetched, 11);
    let mut out = Vec::new();
    restore_to_writer(
        &reader,
        &mut out,
        "memory",
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(out, fixture.image);
    assert_eq!(
        reader.stats().chunks_fetched,
        fetched,
        "nothing fetched again"
    );
}

/// The fixture's stores: the memory store itself, which is local (its chunks are read, checked
/// and written by restore threads), and the fault store over it, which is not (async jobs).
fn both_stores(fixture: &common::Fixture) -> [(&'static str, Arc<dyn ChunkStore>); 2] {
    [
        ("local", fixture.memory.clone()),
        ("async", fixture.store()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_remote_stores_restore_the_same_file() {
    let mut data = once_and_repeated();
    data.extend(std::iter::repeat_n(0u8, 2 * 4096));
    data.extend(common::image(25, 300_000));
    let fixture = fixed(data, 4096).await;
    assert!(fixture.memory.local().is_some() && fixture.store().local().is_none());
    for (name, store) in both_stores(&fixture) {
        let reader = ChunkReader::new(fixture.index.clone(), store, ReaderOptions::default());
        let unique_non_zero: HashSet<_> = fixture
            .index
            .chunks()
            .filter(|c| !reader.is_zero_chunk(c))
            .map(|c| c.digest)
            .collect();
        assert!(unique_non_zero.len() > 20);
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.img");
        let done = Mutex::new(0u64);
        let progress = |bytes| *done.lock().unwrap() += bytes;
        let restored = restore_to_path(
            &reader,
            &output,
            RestoreOptions::default(),
            &progress,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(std::fs::read(&output).unwrap() == fixture.image, "{name}");
        assert_eq!(*done.lock().unwrap(), restored.size, "{name}");
        assert_eq!(
            reader.stats().chunks_fetched,
            unique_non_zero.len() as u64,
            "{name}: every chunk fetched once"
        );
        assert_eq!(names(dir.path()), ["out.img"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_fails_the_restore_on_either_path_and_leaves_the_old_file() {
    let fixture = fixed(once_and_repeated(), 4096).await;
    // Chunk 4 is held once, chunks 10 to 12 are one repeated chunk.
    for (chunk, reported) in [(4, 4..=4), (10, 10..=12)] {
        let digest = fixture.index.chunk(chunk).unwrap().digest;
        let good = fixture.memory.get(&digest).await.unwrap().bytes;
        fixture.memory.set_raw(digest, common::noise(40, 300));
        for (name, store) in both_stores(&fixture) {
            let reader = ChunkReader::new(fixture.index.clone(), store, ReaderOptions::default());
            let dir = tempfile::tempdir().unwrap();
            let output = dir.path().join("old.img");
            std::fs::write(&output, b"old").unwrap();
            let error = restore_to_path(
                &reader,
                &output,
                RestoreOptions::default(),
                &|_| {},
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
            assert!(
                matches!(error, ReaderError::Chunk { chunk: c, .. } if reported.contains(&c)),
                "{name}, chunk {chunk}: {error:?}"
            );
            assert_eq!(std::fs::read(&output).unwrap(), b"old", "{name}");
            assert_eq!(names(dir.path()), ["old.img"], "{name}");
        }
        fixture.memory.set_raw(digest, good);
    }
}

/// A local store that cancels a token (or panics) as its `at`-th chunk is read.
#[derive(Debug)]
struct CancelAt {
    inner: Arc<MemoryStore>,
    reads: AtomicUsize,
    at: usize,
    cancel: CancellationToken,
    panic: bool,
}

#[async_trait::async_trait]
impl ChunkStore for CancelAt {
    fn name(&self) -> &Arc<str> {
        self.inner.name()
    }
    fn encoding(&self) -> ChunkEncoding {
        self.inner.encoding()
    }
    async fn get(&self, digest: &Digest) -> StoreResult<EncodedChunk> {
        self.get_blocking(digest)
    }
    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> StoreResult<PutOutcome> {
        self.inner.put(digest, encoded).await
    }
    async fn contains(&self, digest: &Digest) -> StoreResult<bool> {
        self.inner.contains(digest).await
    }
    async fn touch(&self, digest: &Digest) -> StoreResult<bool> {
        self.inner.touch(digest).await
    }
    async fn sync(&self) -> StoreResult<()> {
        self.inner.sync().await
    }
    fn local(&self) -> Option<&dyn LocalChunks> {
        Some(self)
    }
}

impl LocalChunks for CancelAt {
    fn get_blocking(&self, digest: &Digest) -> StoreResult<EncodedChunk> {
        if self.reads.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            assert!(!self.panic, "a store that panics on its chunk {}", self.at);
            self.cancel.cancel();
        }
        self.inner.local().unwrap().get_blocking(digest)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_cancelled_under_way_stops_on_either_path() {
    let fixture = fixed(common::noise(41, 2 << 20), 4096).await;
    let cancel = CancellationToken::new();
    let local = Arc::new(CancelAt {
        inner: fixture.memory.clone(),
        reads: AtomicUsize::new(0),
        at: 100,
        cancel: cancel.clone(),
        panic: false,
    });
    // The async path: cancelled as the first bytes are reported written.
    let stores: [(&str, Arc<dyn ChunkStore>); 2] = [("local", local), ("async", fixture.store())];
    for (name, store) in stores {
        let reader = ChunkReader::new(fixture.index.clone(), store, ReaderOptions::default());
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("old.img");
        std::fs::write(&output, b"old").unwrap();
        let progress = |_| cancel.cancel();
        let error = restore_to_path(
            &reader,
            &output,
            RestoreOptions::default(),
            &progress,
            &cancel,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, ReaderError::Cancelled { .. }),
            "{name}: {error:?}"
        );
        assert_eq!(std::fs::read(&output).unwrap(), b"old", "{name}");
        assert_eq!(names(dir.path()), ["old.img"], "{name}");
        let fetched = reader.stats().chunks_fetched;
        // Locally, at most one chunk more per restore thread than the 100 read when the cancel
        // came; the async path stops within one batch of fetches.
        let threads = std::thread::available_parallelism().map_or(1, usize::from) as u64;
        let most = if name == "local" { 100 + threads } else { 256 };
        assert!(
            fetched <= most,
            "{name}: {fetched} of 512 chunks fetched after the cancel"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_thread_that_panics_fails_the_restore() {
    let fixture = fixed(common::noise(42, 1 << 20), 4096).await;
    let store = Arc::new(CancelAt {
        inner: fixture.memory.clone(),
        reads: AtomicUsize::new(0),
        at: 50,
        cancel: CancellationToken::new(),
        panic: true,
    });
    let reader = ChunkReader::new(fixture.index.clone(), store, ReaderOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("old.img");
    std::fs::write(&output, b"old").unwrap();
    let error = restore_to_path(
        &reader,
        &output,
        RestoreOptions::default(),
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ReaderError::Task { .. }), "{error:?}");
    assert_eq!(std::fs::read(&output).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["old.img"]);
}

#[tokio::test]
async fn a_local_restore_works_on_a_single_threaded_runtime() {
    // The restore threads fetch repeated chunks through the cache from outside the runtime.
    let fixture = fixed(once_and_repeated(), 4096).await;
    let reader = ChunkReader::new(
        fixture.index.clone(),
        fixture.memory.clone(),
        ReaderOptions::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.img");
    restore_to_path(
        &reader,
        &output,
        RestoreOptions::default(),
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&output).unwrap(), fixture.image);
    assert_eq!(reader.stats().chunks_fetched, 11);
    assert_eq!(reader.stats().cache.entries, 1);
}
