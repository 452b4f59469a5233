//! The restore engine as a library user calls it: to a file, to a writer, cancelled, refused.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::Mutex;

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
