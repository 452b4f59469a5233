//! Every store runs the one conformance suite, plus the checks of its own layout.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::PathBuf;
use std::sync::Arc;

use cairn_chunk_store::conformance::{ConformanceTarget, check_store, sample_chunk};
use cairn_chunk_store::format::*;
use cairn_chunk_store::*;

struct Memory(Arc<MemoryStore>);

impl ConformanceTarget for Memory {
    fn store(&self) -> Arc<dyn ChunkStore> {
        self.0.clone()
    }
    fn damage(&self, digest: &Digest) {
        self.0.set_raw(*digest, b"garbage".to_vec());
    }
}

/// The store and the folder it lives in (kept alive as long as the store).
struct Pbs(PbsDatastore, #[allow(dead_code)] tempfile::TempDir);

impl ConformanceTarget for Pbs {
    fn store(&self) -> Arc<dyn ChunkStore> {
        Arc::new(self.0.clone())
    }
    fn damage(&self, digest: &Digest) {
        let path = self.0.chunk_path(digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    }
    fn tear(&self, digest: &Digest, keep: usize) -> bool {
        tear_file(&self.0.chunk_path(digest), keep)
    }
}

/// Cuts the file at `path` to its first `keep` bytes, in place.
fn tear_file(path: &std::path::Path, keep: usize) -> bool {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..keep.min(bytes.len())]).unwrap();
    true
}

/// The store and the folder it lives in.
struct Castr(CastrStore, #[allow(dead_code)] tempfile::TempDir);

impl ConformanceTarget for Castr {
    fn store(&self) -> Arc<dyn ChunkStore> {
        Arc::new(self.0.clone())
    }
    fn algorithm(&self) -> DigestAlgorithm {
        DigestAlgorithm::Sha512_256
    }
    fn damage(&self, digest: &Digest) {
        std::fs::write(self.0.chunk_path(digest), b"\x28\xb5\x2f\xfd broken frame").unwrap();
    }
    fn tear(&self, digest: &Digest, keep: usize) -> bool {
        tear_file(&self.0.chunk_path(digest), keep)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    check_store(&Memory(Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob)))).await;
    check_store(&Memory(Arc::new(MemoryStore::new(
        ChunkEncoding::CasyncCompressed,
    ))))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbs_datastore_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = PbsDatastore::create(dir.path().join("ds")).unwrap();
    check_store(&Pbs(store, dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn castr_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = CastrStore::create(dir.path().join("s.castr")).unwrap();
    check_store(&Castr(store, dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_conform_at_every_sync_level() {
    for level in [SyncLevel::None, SyncLevel::File] {
        let dir = tempfile::tempdir().unwrap();
        let store = PbsDatastore::create(dir.path().join("ds"))
            .unwrap()
            .with_sync(level);
        assert_eq!(store.sync_level(), level);
        check_store(&Pbs(store, dir)).await;
        let dir = tempfile::tempdir().unwrap();
        let store = CastrStore::create(dir.path().join("s.castr"))
            .unwrap()
            .with_sync(level);
        check_store(&Castr(store, dir)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_an_error_naming_the_store_and_level() {
    let dir = tempfile::tempdir().unwrap();
    let store = PbsDatastore::create(dir.path().join("ds")).unwrap();
    assert_eq!(store.sync_level(), SyncLevel::Filesystem, "the default");
    store.sync().await.unwrap();
    std::fs::remove_dir(dir.path().join("ds/.chunks")).unwrap();
    match store.sync().await {
        Err(StoreError::Sync {
            level,
            location,
            source,
            ..
        }) => {
            assert_eq!(level, "filesystem");
            assert!(location.to_string().ends_with(".chunks"), "{location}");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a sync error, got {other:?}"),
    }
}

/// Sets the access and modification times of `path` to `days` days ago.
fn age(path: &std::path::Path, days: u64) -> std::time::SystemTime {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_times(
        std::fs::FileTimes::new()
            .set_accessed(then)
            .set_modified(then),
    )
    .unwrap();
    then
}

fn times(path: &std::path::Path) -> (std::time::SystemTime, std::time::SystemTime) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.accessed().unwrap(), meta.modified().unwrap())
}

/// A backup that finds a chunk already stored sets its access time to now (its modification
/// time stays), as PBS does: PBS's garbage collection sweeps chunks whose access time is older
/// than its cutoff (a day and 5 minutes), so an untouched old chunk that a new index names would
/// be removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_an_old_chunk_updates_its_access_time() {
    let dir = tempfile::tempdir().unwrap();
    let pbs = PbsDatastore::create(dir.path().join("ds")).unwrap();
    let castr = CastrStore::create(dir.path().join("s.castr")).unwrap();
    let stores: [(Arc<dyn ChunkStore>, PathBuf, DigestAlgorithm); 2] = {
        let plaintext = sample_chunk(70, 9000);
        let pbs_digest = DigestAlgorithm::Sha256.digest(&plaintext);
        let castr_digest = DigestAlgorithm::Sha512_256.digest(&plaintext);
        [
            (
                Arc::new(pbs.clone()),
                pbs.chunk_path(&pbs_digest),
                DigestAlgorithm::Sha256,
            ),
            (
                Arc::new(castr.clone()),
                castr.chunk_path(&castr_digest),
                DigestAlgorithm::Sha512_256,
            ),
        ]
    };
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    for (store, path, algorithm) in stores {
        let source = ChunkSource::new(Arc::clone(&store), algorithm);
        let plaintext = sample_chunk(70, 9000);
        source.write(plaintext.clone()).await.unwrap();
        // Three ways a backup meets a stored chunk: write_new, a plain write (put), touch.
        for way in ["write_new", "write", "touch"] {
            let old = age(&path, 3);
            let outcome = match way {
                "write_new" => source.write_new(plaintext.clone()).await.unwrap().1,
                "write" => source.write(plaintext.clone()).await.unwrap().1,
                _ => {
                    assert!(store.touch(&algorithm.digest(&plaintext)).await.unwrap());
                    PutOutcome::AlreadyPresent
                }
            };
            assert_eq!(outcome, PutOutcome::AlreadyPresent, "{way}");
            let (accessed, modified) = times(&path);
            assert!(
                accessed > day_ago,
                "{}: {way} left the access time {:?} old",
                store.name(),
                std::time::SystemTime::now().duration_since(accessed)
            );
            assert_eq!(
                modified,
                old,
                "{}: {way} changed the modification time",
                store.name()
            );
        }
    }
}

fn hex(d: &Digest) -> String {
    to_hex(d)
}

#[tokio::test]
async fn pbs_layout_and_prefix_folders_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ds");
    let store = PbsDatastore::create(&base).unwrap();
    assert!(base.join(".chunks").is_dir());
    assert_eq!(
        std::fs::read_dir(base.join(".chunks")).unwrap().count(),
        0,
        "no prefix folder up front"
    );
    let source = ChunkSource::new(Arc::new(store.clone()), DigestAlgorithm::Sha256);
    let (digest, _) = source.write(b"hello proxmox".to_vec()).await.unwrap();
    let h = hex(&digest);
    let path: PathBuf = base.join(".chunks").join(&h[..4]).join(&h);
    assert_eq!(store.chunk_path(&digest), path);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        encode_blob(b"hello proxmox").unwrap()
    );
    // Temporary and bad files are never chunks.
    std::fs::write(path.with_file_name(format!("{h}.tmp_0123")), b"x").unwrap();
    std::fs::write(path.with_file_name(format!("{h}.0.bad")), b"x").unwrap();
    assert_eq!(store.digests().unwrap(), vec![digest]);
    // An empty file under the final name (a torn write) is replaced by a put.
    std::fs::write(&path, b"").unwrap();
    assert_eq!(
        source.write(b"hello proxmox".to_vec()).await.unwrap().1,
        PutOutcome::Inserted
    );
    assert_eq!(source.read(&digest, 13).await.unwrap(), b"hello proxmox");
}

#[tokio::test]
async fn castr_layout_reads_uncompressed_and_ignores_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = CastrStore::create(dir.path().join("s.castr")).unwrap();
    let source = ChunkSource::new(Arc::new(store.clone()), DigestAlgorithm::Sha512_256);
    let (digest, _) = source.write(sample_chunk(1, 5000)).await.unwrap();
    let h = hex(&digest);
    assert_eq!(
        store.chunk_path(&digest),
        dir.path()
            .join("s.castr")
            .join(&h[..4])
            .join(format!("{h}.cacnk"))
    );
    assert!(
        std::fs::read(store.chunk_path(&digest))
            .unwrap()
            .starts_with(&ZSTD_MAGIC)
    );
    // An uncompressed chunk is the plaintext under `<id>`.
    let plain = sample_chunk(2, 777);
    let plain_digest = DigestAlgorithm::Sha512_256.digest(&plain);
    let plain_path = store.uncompressed_chunk_path(&plain_digest);
    std::fs::create_dir_all(plain_path.parent().unwrap()).unwrap();
    std::fs::write(&plain_path, &plain).unwrap();
    assert_eq!(source.read(&plain_digest, 777).await.unwrap(), plain);
    // casync's and desync's temporary files.
    let folder = store.chunk_path(&digest).parent().unwrap().to_path_buf();
    std::fs::write(folder.join(format!("{h}.cacnk.a1b2c3.tmp")), b"x").unwrap();
    std::fs::write(folder.join(".tmp-cacnk123456"), b"x").unwrap();
    std::fs::write(folder.join(format!("{h}.a1b2.tmp")), b"x").unwrap();
    let mut expected = vec![digest, plain_digest];
    expected.sort_unstable();
    assert_eq!(store.digests().unwrap(), expected);
}

#[tokio::test]
async fn errors_name_the_store_the_digest_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = PbsDatastore::create(dir.path().join("ds")).unwrap();
    let source = ChunkSource::new(Arc::new(store.clone()), DigestAlgorithm::Sha256);
    let digest = [0xab; 32];
    let path = store.chunk_path(&digest);

    let missing = source.read(&digest, 10).await.unwrap_err();
    assert!(matches!(missing, StoreError::Missing { .. }));
    let text = missing.to_string();
    assert!(
        text.contains("pbs:")
            && text.contains(&hex(&digest))
            && text.contains(&path.display().to_string()),
        "{text}"
    );

    // Unreadable: a folder where the chunk file should be.
    std::fs::create_dir_all(&path).unwrap();
    let unreadable = source.read(&digest, 10).await.unwrap_err();
    assert!(
        matches!(unreadable, StoreError::Read { .. }),
        "{unreadable}"
    );
    std::fs::remove_dir(&path).unwrap();

    // A FIFO where the chunk should be: an error at once, not a wait for a writer.
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = tokio::time::timeout(std::time::Duration::from_secs(5), source.read(&digest, 10))
        .await
        .expect("reading a FIFO chunk hung")
        .unwrap_err();
    assert!(matches!(fifo, StoreError::Read { .. }), "{fifo}");
    let cause = std::error::Error::source(&fifo).unwrap().to_string();
    assert_eq!(cause, "not a regular file", "{fifo}");
    std::fs::remove_file(&path).unwrap();

    // Corrupt.
    std::fs::write(&path, b"not a blob at all").unwrap();
    let corrupt = source.read(&digest, 10).await.unwrap_err();
    assert!(
        matches!(
            corrupt,
            StoreError::Corrupt {
                source: CodecError::UnknownFormat { .. },
                ..
            }
        ),
        "{corrupt}"
    );
    // Each level says its own part: the cause is the source, not repeated in the message.
    let cause = std::error::Error::source(&corrupt).unwrap().to_string();
    assert!(cause.starts_with("unknown chunk format"), "{cause}");
    assert!(!corrupt.to_string().contains(&cause), "{corrupt}");
    let text = corrupt.to_string();
    assert!(
        text.contains(&hex(&digest)) && text.contains(&path.display().to_string()),
        "{text}"
    );

    // A chunk file over the size limit is refused without being read.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(MAX_ENCODED_CHUNK + 1).unwrap();
    assert!(matches!(
        source.read(&digest, 10).await.unwrap_err(),
        StoreError::Read { .. }
    ));
}

#[test]
fn opening_something_that_is_not_a_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = PbsDatastore::open(dir.path()).unwrap_err();
    assert!(error.to_string().contains("no .chunks folder"), "{error}");
    let absent = CastrStore::open(dir.path().join("absent")).unwrap_err();
    assert!(
        matches!(&absent, StoreError::Store { source: Some(e), .. } if e.kind() == std::io::ErrorKind::NotFound),
        "{absent:?}"
    );
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let not_a_folder = CastrStore::open(&file).unwrap_err();
    assert!(
        matches!(&not_a_folder, StoreError::Store { problem, source: None, .. } if problem.contains("not a folder")),
        "{not_a_folder:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_store_injects_and_heals() {
    use cairn_chunk_store::fault::{Fault, FaultStore, Target};
    let inner = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let faulty = Arc::new(FaultStore::new(inner));
    let source = ChunkSource::new(faulty.clone(), DigestAlgorithm::Sha256);
    let (a, _) = source.write(sample_chunk(1, 1000)).await.unwrap();
    let (b, _) = source.write(sample_chunk(2, 9000)).await.unwrap();
    faulty.add(Target::Digest(a), Fault::Error);
    faulty.add(Target::Digest(b), Fault::Corrupt);
    assert!(matches!(
        source.read(&a, 1000).await.unwrap_err(),
        StoreError::Injected { .. }
    ));
    let corrupt = source.read(&b, 9000).await.unwrap_err();
    assert!(
        matches!(
            corrupt,
            StoreError::Corrupt { .. } | StoreError::DigestMismatch { .. }
        ),
        "{corrupt:?}"
    );
    faulty.heal();
    faulty.add(Target::Digest(a), Fault::Panic);
    let panicked = tokio::spawn({
        let source = source.clone();
        async move { source.read(&a, 1000).await }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    faulty.heal();
    assert_eq!(source.read(&a, 1000).await.unwrap(), sample_chunk(1, 1000));
    assert_eq!(source.read(&b, 9000).await.unwrap(), sample_chunk(2, 9000));
    assert_eq!(faulty.gets_of(&a), 3);
    assert_eq!(faulty.total_gets(), 5);
}
