//! The backup engine as a library user calls it: every layout into a real store on disk,
//! dedup, progress, cancellation and refused sizes.

#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap: a failure is the test failing

use std::sync::{Arc, Mutex};

use cairn_backup::{BackupError, BackupOptions, Layout, backup};
use cairn_chunk_store::conformance::sample_chunk;
use cairn_chunk_store::{CastrStore, ChunkSource, ChunkStore, DigestAlgorithm, PbsDatastore};
use cairn_index::{ChunkIndex as _, Index};
use tokio_util::sync::CancellationToken;

/// Text and noise, zeros and a repeated block: about 3 MiB.
fn sample() -> Vec<u8> {
    let block = sample_chunk(1, 200_000);
    let mut data = sample_chunk(2, 1_000_000);
    data.extend(std::iter::repeat_n(0u8, 1 << 20));
    data.extend(&block);
    data.extend(sample_chunk(3, 500_000));
    data.extend(&block);
    data
}

async fn run(
    store: Arc<dyn ChunkStore>,
    data: &[u8],
    index: &std::path::Path,
    layout: Layout,
) -> Result<cairn_backup::Summary, BackupError> {
    backup(
        store,
        std::io::Cursor::new(data.to_vec()),
        index,
        layout,
        BackupOptions::default().in_flight(4),
        &|_| {},
        &CancellationToken::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_round_trips_and_a_second_run_stores_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample();
    let pbs: Arc<dyn ChunkStore> = Arc::new(PbsDatastore::create(dir.path().join("ds")).unwrap());
    let castr: Arc<dyn ChunkStore> =
        Arc::new(CastrStore::create(dir.path().join("s.castr")).unwrap());
    let layouts = [
        (
            "a.fidx",
            Layout::Fidx { chunk_size: 65536 },
            Arc::clone(&pbs),
        ),
        ("a.didx", Layout::Didx { average: 65536 }, Arc::clone(&pbs)),
        (
            "a.caibx",
            Layout::Caibx {
                average: Some(16384),
                digest: DigestAlgorithm::Sha256,
            },
            Arc::clone(&castr),
        ),
    ];
    for (name, layout, store) in layouts {
        let index_path = dir.path().join(name);
        let first = run(Arc::clone(&store), &data, &index_path, layout)
            .await
            .unwrap();
        assert_eq!(first.size, data.len() as u64, "{name}");
        assert!(
            first.unique_chunks < first.chunks,
            "{name}: the repeats dedup"
        );
        assert!(first.dedup_ratio() > 1.0, "{name}");
        // Every chunk the index names decodes to its bytes of the input.
        let index = Index::open(&index_path).unwrap();
        assert_eq!(index.image_size(), data.len() as u64);
        let source = ChunkSource::new(Arc::clone(&store), layout.digest_algorithm());
        for chunk in index.chunks() {
            let bytes = source
                .read(&chunk.digest, chunk.len() as usize)
                .await
                .unwrap();
            assert!(
                bytes == data[chunk.start as usize..chunk.end as usize],
                "{name}"
            );
        }
        let again = run(
            store,
            &data,
            &dir.path().join(format!("again-{name}")),
            layout,
        )
        .await
        .unwrap();
        assert_eq!(again.new_chunks, 0, "{name}");
        assert_eq!(again.chunks, first.chunks, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_adds_up_to_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample();
    let store = Arc::new(PbsDatastore::create(dir.path().join("ds")).unwrap());
    let done = Mutex::new(0u64);
    let progress = |bytes| *done.lock().unwrap() += bytes;
    backup(
        store,
        std::io::Cursor::new(data.clone()),
        &dir.path().join("a.fidx"),
        Layout::Fidx {
            chunk_size: 1 << 20,
        },
        BackupOptions::default(),
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(*done.lock().unwrap(), data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_backup_writes_no_index_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PbsDatastore::create(dir.path().join("ds")).unwrap());
    let index = dir.path().join("a.fidx");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let error = backup(
        store,
        std::io::Cursor::new(sample()),
        &index,
        Layout::Fidx { chunk_size: 65536 },
        BackupOptions::default(),
        &|_| {},
        &cancel,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, BackupError::Cancelled { chunks_stored: 0 }),
        "{error:?}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["ds"], "no index and no index temporary");
}

#[tokio::test]
async fn sizes_no_chunker_can_use_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PbsDatastore::create(dir.path().join("ds")).unwrap());
    for layout in [
        Layout::Didx { average: 64 << 20 },
        Layout::Fidx { chunk_size: 3000 },
        Layout::Caibx {
            average: Some(1 << 30),
            digest: DigestAlgorithm::Sha512_256,
        },
    ] {
        assert!(
            matches!(layout.check(), Err(BackupError::Layout(_))),
            "{layout:?}"
        );
        let index = dir.path().join("x.idx");
        let error = run(store.clone(), b"data", &index, layout)
            .await
            .unwrap_err();
        match error {
            BackupError::Layout(cause) => {
                assert!(cause.to_string().contains("chunker"), "{cause}");
            }
            other => panic!("expected a layout error, got {other:?}"),
        }
        assert!(!index.exists());
    }
}
