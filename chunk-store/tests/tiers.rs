//! The disk tier and store chains: the conformance suite, and what each promises beyond it
//! (fetched once, bounded, bad copies refetched, full disks read through, chains fall through).

#![allow(clippy::unwrap_used, clippy::panic)] // tests unwrap and panic: a failure is the test failing

use std::sync::{Arc, Mutex};

use cairn_chunk_store::conformance::{ConformanceTarget, check_store, sample_chunk};
use cairn_chunk_store::fault::{Fault, FaultStore, Target};
use cairn_chunk_store::*;

/// A tier over a PBS datastore, both in temporary folders.
struct Tiered {
    origin: PbsDatastore,
    tier: DiskTier,
    _folders: (tempfile::TempDir, tempfile::TempDir),
}

impl Tiered {
    fn new(budget: u64) -> Self {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let origin = PbsDatastore::create(a.path()).unwrap();
        let tier = DiskTier::open(b.path(), budget, Arc::new(origin.clone())).unwrap();
        Self {
            origin,
            tier,
            _folders: (a, b),
        }
    }

    fn tier_file(&self, digest: &Digest) -> std::path::PathBuf {
        let hex = to_hex(digest);
        self.tier.folder().join(".chunks").join(&hex[..4]).join(hex)
    }
}

fn flip_last_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

fn tear(path: &std::path::Path, keep: usize) {
    if let Ok(bytes) = std::fs::read(path) {
        std::fs::write(path, &bytes[..keep.min(bytes.len())]).unwrap();
    }
}

impl ConformanceTarget for Tiered {
    fn store(&self) -> Arc<dyn ChunkStore> {
        Arc::new(self.tier.clone())
    }
    /// The origin's copy and the tier's, if it has one.
    fn damage(&self, digest: &Digest) {
        flip_last_byte(&self.origin.chunk_path(digest));
        if self.tier_file(digest).exists() {
            flip_last_byte(&self.tier_file(digest));
        }
    }
    fn tear(&self, digest: &Digest, keep: usize) -> bool {
        tear(&self.origin.chunk_path(digest), keep);
        tear(&self.tier_file(digest), keep);
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_tier_passes_the_conformance_suite() {
    check_store(&Tiered::new(64 << 20)).await;
    // So small that most chunks are evicted at once or never kept.
    check_store(&Tiered::new(6000)).await;
}

/// A chain of two memory stores; writes land in the first.
struct Chained {
    first: Arc<MemoryStore>,
    chain: StoreChain,
}

impl ConformanceTarget for Chained {
    fn store(&self) -> Arc<dyn ChunkStore> {
        Arc::new(self.chain.clone())
    }
    fn damage(&self, digest: &Digest) {
        self.first.set_raw(*digest, b"garbage".to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_chain_passes_the_conformance_suite() {
    let first = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let second = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let chain = StoreChain::new(vec![first.clone(), second]).unwrap();
    check_store(&Chained { first, chain }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_a_chunk_fetch_it_once_and_later_reads_come_from_disk() {
    let folders = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let origin = Arc::new(FaultStore::new(Arc::new(
        PbsDatastore::create(folders.0.path()).unwrap(),
    )));
    let writer = ChunkSource::new(origin.clone(), DigestAlgorithm::Sha256);
    let mut chunks = Vec::new();
    for seed in 0..4 {
        let data = sample_chunk(seed, 200_000);
        let (digest, _) = writer.write(data.clone()).await.unwrap();
        chunks.push((digest, data));
    }
    // Slow origin, so that the readers overlap.
    origin.add(
        Target::All,
        Fault::Delay(std::time::Duration::from_millis(50)),
    );
    let tier = DiskTier::open(folders.1.path(), 64 << 20, origin.clone()).unwrap();
    let source = ChunkSource::new(Arc::new(tier.clone()), DigestAlgorithm::Sha256);
    let chunks = Arc::new(chunks);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (source, chunks) = (source.clone(), Arc::clone(&chunks));
            tokio::spawn(async move {
                let (digest, data) = &chunks[i % chunks.len()];
                assert!(&source.read(digest, data.len()).await.unwrap() == data);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for (digest, _) in chunks.iter() {
        assert_eq!(origin.gets_of(digest), 1, "each chunk fetched once");
    }
    let stats = tier.stats();
    assert_eq!(
        (stats.misses, stats.fills, stats.hits),
        (4, 4, 28),
        "{stats:?}"
    );
    assert_eq!(stats.chunks, 4);

    // A new tier on the same folder serves them all without the origin.
    let again = DiskTier::open(folders.1.path(), 64 << 20, origin.clone()).unwrap();
    assert_eq!(again.stats().chunks, 4);
    let source = ChunkSource::new(Arc::new(again.clone()), DigestAlgorithm::Sha256);
    for (digest, data) in chunks.iter() {
        assert!(&source.read(digest, data.len()).await.unwrap() == data);
    }
    assert_eq!(origin.total_gets(), 4);
    assert_eq!(again.stats().hits, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_holds_and_the_least_recently_used_chunk_goes_first() {
    let t = Tiered::new(0);
    let writer = ChunkSource::new(Arc::new(t.origin.clone()), DigestAlgorithm::Sha256);
    let mut chunks = Vec::new();
    for seed in 0..6 {
        // Noise-heavy chunks, so each encoded blob is close to 100 kB.
        let data: Vec<u8> = sample_chunk(seed, 100_000);
        let (digest, _) = writer.write(data.clone()).await.unwrap();
        let size = std::fs::metadata(t.origin.chunk_path(&digest))
            .unwrap()
            .len();
        chunks.push((digest, data, size));
    }
    let budget = chunks[0].2 + chunks[1].2 + chunks[2].2 + 10;
    let folder = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(folder.path(), budget, Arc::new(t.origin.clone())).unwrap();
    let source = ChunkSource::new(Arc::new(tier.clone()), DigestAlgorithm::Sha256);
    let read = |i: usize| {
        let (source, (digest, data, _)) = (source.clone(), chunks[i].clone());
        async move { assert!(source.read(&digest, data.len()).await.unwrap() == data) }
    };
    for i in 0..3 {
        read(i).await;
    }
    read(0).await; // 0 is now the most recent; 1 the least.
    assert_eq!(tier.stats().hits, 1);
    read(3).await;
    let on_disk = |i: usize| {
        let hex = to_hex(&chunks[i].0);
        folder
            .path()
            .join(".chunks")
            .join(&hex[..4])
            .join(hex)
            .exists()
    };
    assert!(on_disk(0) && !on_disk(1) && on_disk(2) && on_disk(3));
    for i in 4..6 {
        read(i).await;
    }
    let stats = tier.stats();
    assert!(stats.bytes <= budget, "{stats:?} over {budget}");
    assert_eq!(stats.evictions, 3, "{stats:?}");
    let files = chunk_bytes_on_disk(folder.path());
    assert!(files <= budget, "{files} bytes on disk, budget {budget}");
    // A chunk larger than the whole budget is served and not kept.
    let small = DiskTier::open(
        tempfile::tempdir().unwrap().path(),
        10,
        Arc::new(t.origin.clone()),
    )
    .unwrap();
    let source = ChunkSource::new(Arc::new(small.clone()), DigestAlgorithm::Sha256);
    assert!(source.read(&chunks[0].0, 100_000).await.unwrap() == chunks[0].1);
    assert_eq!(small.stats().chunks, 0);
}

/// Bytes of the chunk files under `folder` (every file but the tier's marker).
fn chunk_bytes_on_disk(folder: &std::path::Path) -> u64 {
    walk(folder)
        .iter()
        .filter(|(path, _)| !path.ends_with(DISK_CACHE_MARKER))
        .map(|(_, len)| len)
        .sum()
}

/// Every file under `folder`, with its size.
fn walk(folder: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut files = Vec::new();
    let mut todo = vec![folder.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                files.push((entry.path(), meta.len()));
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_copy_in_the_tier_is_deleted_and_refetched_never_an_error() {
    let t = Tiered::new(64 << 20);
    let source = ChunkSource::new(Arc::new(t.tier.clone()), DigestAlgorithm::Sha256);
    let data = sample_chunk(3, 50_000);
    let (digest, _) = source.write(data.clone()).await.unwrap();
    assert!(source.read(&digest, data.len()).await.unwrap() == data);
    assert!(t.tier_file(&digest).exists());
    for damage in [0, 1, 2] {
        match damage {
            0 => flip_last_byte(&t.tier_file(&digest)),
            1 => std::fs::write(t.tier_file(&digest), b"not a blob at all").unwrap(),
            _ => {
                // A valid blob of other data under this digest.
                let other = encode_blob(&sample_chunk(4, 50_000)).unwrap();
                std::fs::write(t.tier_file(&digest), other).unwrap();
            }
        }
        assert!(
            source.read(&digest, data.len()).await.unwrap() == data,
            "damage {damage}"
        );
        // The refetched copy replaced the bad one.
        let kept = std::fs::read(t.tier_file(&digest)).unwrap();
        assert_eq!(kept, std::fs::read(t.origin.chunk_path(&digest)).unwrap());
    }
    let stats = t.tier.stats();
    // Each bad copy was served from disk, rejected, and refetched from the origin.
    assert_eq!(
        (stats.rejected, stats.hits, stats.misses),
        (3, 3, 4),
        "{stats:?}"
    );

    // Bad bytes from the origin: the error names the origin, and no copy stays in the tier.
    flip_last_byte(&t.origin.chunk_path(&digest));
    std::fs::remove_file(t.tier_file(&digest)).unwrap();
    let fresh = DiskTier::open(t.tier.folder(), 64 << 20, Arc::new(t.origin.clone())).unwrap();
    let source = ChunkSource::new(Arc::new(fresh), DigestAlgorithm::Sha256);
    let error = source.read(&digest, data.len()).await.unwrap_err();
    assert!(error.is_bad_chunk(), "{error}");
    assert_eq!(
        error.location(),
        Some(&Location::Path(t.origin.chunk_path(&digest))),
        "{error}"
    );
    assert!(!t.tier_file(&digest).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_that_cannot_write_reads_through() {
    let t = Tiered::new(64 << 20);
    let writer = ChunkSource::new(Arc::new(t.origin.clone()), DigestAlgorithm::Sha256);
    let data = sample_chunk(9, 30_000);
    let (digest, _) = writer.write(data.clone()).await.unwrap();
    // A file where the tier's .chunks folder would be: every write fails.
    let folder = tempfile::tempdir().unwrap();
    let blocked = folder.path().join("tier");
    std::fs::create_dir(&blocked).unwrap();
    let tier = DiskTier::open(&blocked, 64 << 20, Arc::new(t.origin.clone())).unwrap();
    std::fs::write(blocked.join(".chunks"), b"in the way").unwrap();
    let source = ChunkSource::new(Arc::new(tier.clone()), DigestAlgorithm::Sha256);
    for _ in 0..3 {
        assert!(source.read(&digest, data.len()).await.unwrap() == data);
    }
    let stats = tier.stats();
    assert_eq!(
        (stats.misses, stats.fill_failures, stats.chunks),
        (3, 1, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_tier_go_to_the_origin() {
    let t = Tiered::new(64 << 20);
    let source = ChunkSource::new(Arc::new(t.tier.clone()), DigestAlgorithm::Sha256);
    let (digest, outcome) = source.write_new(sample_chunk(1, 1000)).await.unwrap();
    assert_eq!(outcome, PutOutcome::Inserted);
    assert!(t.origin.chunk_path(&digest).exists());
    assert!(!t.tier_file(&digest).exists());
    assert!(t.tier.contains(&digest).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_reads_the_first_store_that_has_a_chunk_and_reports_bad_copies() {
    let a = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let b = Arc::new(FaultStore::new(Arc::new(MemoryStore::new(
        ChunkEncoding::PbsBlob,
    ))));
    let c = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let reports = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&reports);
    let chain = StoreChain::new(vec![a.clone(), b.clone(), c.clone()])
        .unwrap()
        .with_report(move |error| log.lock().unwrap().push(error.to_string()));
    assert_eq!(
        &**chain.name(),
        "memory:pbs + faulty(memory:pbs) + memory:pbs"
    );
    let algorithm = DigestAlgorithm::Sha256;
    let (only_c, in_b_and_c, in_a) = (
        sample_chunk(1, 9999),
        sample_chunk(2, 9999),
        sample_chunk(3, 9999),
    );
    let put = |store: Arc<dyn ChunkStore>, data: Vec<u8>| async move {
        ChunkSource::new(store, algorithm)
            .write(data)
            .await
            .unwrap()
            .0
    };
    let d_c = put(c.clone(), only_c.clone()).await;
    let d_bc = put(b.clone(), in_b_and_c.clone()).await;
    put(c.clone(), in_b_and_c.clone()).await;
    let d_a = put(a.clone(), in_a.clone()).await;
    let source = ChunkSource::new(Arc::new(chain.clone()), algorithm);
    assert!(source.read(&d_c, 9999).await.unwrap() == only_c);
    assert!(source.read(&d_a, 9999).await.unwrap() == in_a);
    assert_eq!(chain.fell_through(), 1);
    // Corrupt in b: reported, then read from c.
    b.add(Target::Digest(d_bc), Fault::Corrupt);
    assert!(source.read(&d_bc, 9999).await.unwrap() == in_b_and_c);
    let reports = reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains(&to_hex(&d_bc)), "{reports:?}");
    // Missing everywhere: Missing, named after the chain.
    let absent = algorithm.digest(b"nowhere");
    let error = source.read(&absent, 7).await.unwrap_err();
    assert!(error.is_missing(), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("memory:pbs + faulty(memory:pbs) + memory:pbs"),
        "{error}"
    );
    // Another error stops the chain: an outage is not hidden.
    b.add(Target::Digest(d_c), Fault::Error);
    assert!(!source.read(&d_c, 9999).await.unwrap_err().is_missing());
    // Writes go to the first store only.
    let (new, _) = source.write(sample_chunk(4, 10)).await.unwrap();
    assert!(a.contains(&new).await.unwrap());
    assert!(!c.contains(&new).await.unwrap());
    assert!(StoreChain::new(Vec::new()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_over_a_chain_falls_through_when_the_origin_copy_is_bad() {
    let a = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let b = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let algorithm = DigestAlgorithm::Sha256;
    let data = sample_chunk(7, 40_000);
    let (digest, _) = ChunkSource::new(b.clone(), algorithm)
        .write(data.clone())
        .await
        .unwrap();
    a.set_raw(digest, b"garbage".to_vec());
    let chain = StoreChain::new(vec![a, b]).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(folder.path(), 1 << 20, Arc::new(chain)).unwrap();
    let source = ChunkSource::new(Arc::new(tier.clone()), algorithm);
    assert!(source.read(&digest, data.len()).await.unwrap() == data);
    assert!(source.read(&digest, data.len()).await.unwrap() == data);
    let stats = tier.stats();
    assert_eq!(
        (stats.misses, stats.hits, stats.chunks),
        (2, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_then_hands_over_only_a_sound_chunk_and_only_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let algorithm = DigestAlgorithm::Sha256;
    let data = sample_chunk(5, 20_000);
    let local = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let digest = ChunkSource::new(local.clone(), algorithm)
        .write(data.clone())
        .await
        .unwrap()
        .0;
    let calls = Arc::new(AtomicUsize::new(0));
    let step = |calls: &Arc<AtomicUsize>| {
        let calls = Arc::clone(calls);
        move |plaintext: Vec<u8>| {
            calls.fetch_add(1, Ordering::SeqCst);
            plaintext.len()
        }
    };
    // A local store (read on the verifying thread) and a wrapper without a blocking path.
    let faulty = Arc::new(FaultStore::new(local.clone()));
    for store in [local.clone() as Arc<dyn ChunkStore>, faulty.clone()] {
        let source = ChunkSource::new(store, algorithm);
        let len = source
            .read_then(&digest, 20_000, step(&calls))
            .await
            .unwrap();
        assert_eq!(len, 20_000);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Corrupt, wrong length, missing: an error, and the step never runs.
    faulty.add(Target::Digest(digest), Fault::Corrupt);
    let source = ChunkSource::new(faulty.clone(), algorithm);
    assert!(
        source
            .read_then(&digest, 20_000, step(&calls))
            .await
            .is_err()
    );
    let source = ChunkSource::new(local.clone(), algorithm);
    assert!(
        source
            .read_then(&digest, 19_999, step(&calls))
            .await
            .is_err()
    );
    let absent = algorithm.digest(b"absent");
    let error = source
        .read_then(&absent, 7, step(&calls))
        .await
        .unwrap_err();
    assert!(error.is_missing(), "{error}");
    local.set_raw(digest, vec![0x5a; 64]);
    assert!(
        source
            .read_then(&digest, 20_000, step(&calls))
            .await
            .is_err()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A chain rejects the bad copy and reads the next: the step runs once, on the good one.
    let good = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    ChunkSource::new(good.clone(), algorithm)
        .write(data.clone())
        .await
        .unwrap();
    let chain = StoreChain::new(vec![local.clone(), good]).unwrap();
    let source = ChunkSource::new(Arc::new(chain), algorithm);
    let got = source
        .read_then(&digest, 20_000, {
            let calls = Arc::clone(&calls);
            move |plaintext| {
                calls.fetch_add(1, Ordering::SeqCst);
                plaintext
            }
        })
        .await
        .unwrap();
    assert!(got == data);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// Every file under `folder` with its size and modification time, sorted: what "untouched"
/// compares.
fn snapshot(folder: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut files: Vec<_> = walk(folder)
        .into_iter()
        .map(|(path, len)| {
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            (path, len, modified)
        })
        .collect();
    files.sort();
    files
}

/// `count` chunks of about `len` bytes each, written to `store`.
async fn chunks_in(store: Arc<dyn ChunkStore>, count: u32, len: usize) -> Vec<(Digest, Vec<u8>)> {
    let writer = ChunkSource::new(store, DigestAlgorithm::Sha256);
    let mut chunks = Vec::new();
    for seed in 0..count {
        let data = sample_chunk(u64::from(seed), len);
        let (digest, _) = writer.write(data.clone()).await.unwrap();
        chunks.push((digest, data));
    }
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_cairn_did_not_make_is_refused_and_left_untouched() {
    let origin: Arc<dyn ChunkStore> = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let root = tempfile::tempdir().unwrap();
    // A PBS datastore with chunks (what a tier would have adopted and evicted), a casync store
    // (or an old tier, which looks the same), a folder of other files, and a file.
    let datastore = root.path().join("datastore");
    let pbs: Arc<dyn ChunkStore> = Arc::new(PbsDatastore::create(&datastore).unwrap());
    chunks_in(pbs, 16, 20_000).await;
    let castr = root.path().join("default.castr");
    let casync: Arc<dyn ChunkStore> = Arc::new(CastrStore::create(&castr).unwrap());
    chunks_in(casync, 16, 20_000).await;
    let other = root.path().join("home");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    let file = root.path().join("file");
    std::fs::write(&file, b"a file").unwrap();
    for (folder, words) in [
        (&datastore, "PBS datastore"),
        (&castr, "casync store"),
        (&other, "not empty"),
        (&file, "not a folder"),
    ] {
        let before = if folder.is_dir() {
            snapshot(folder)
        } else {
            Vec::new()
        };
        // A budget of one byte: any chunk adopted would have been evicted at once.
        let error = DiskTier::open(folder, 1, Arc::clone(&origin)).unwrap_err();
        assert!(
            matches!(error, StoreError::ForeignFolder { .. }),
            "{}: {error}",
            folder.display()
        );
        assert!(error.to_string().contains(words), "{error}");
        if folder.is_dir() {
            assert_eq!(snapshot(folder), before, "{}", folder.display());
            assert!(!folder.join(DISK_CACHE_MARKER).exists());
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"a file");

    // A new folder and an empty one become tiers, marked; a marked one opens again with its
    // chunks, and its evictions delete only them.
    for folder in [root.path().join("new/cache"), {
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        empty
    }] {
        let chunks = chunks_in(Arc::clone(&origin), 3, 20_000).await;
        {
            let tier = DiskTier::open(&folder, 64 << 20, Arc::clone(&origin)).unwrap();
            assert!(!tier.is_shared());
            let source = ChunkSource::new(Arc::new(tier.clone()), DigestAlgorithm::Sha256);
            for (digest, data) in &chunks {
                assert!(&source.read(digest, data.len()).await.unwrap() == data);
            }
            assert_eq!(tier.stats().chunks, 3);
        }
        assert!(folder.join(DISK_CACHE_MARKER).is_file());
        let again = DiskTier::open(&folder, 1, Arc::clone(&origin)).unwrap();
        assert_eq!(again.stats().chunks, 0, "evicted down to the budget");
        assert!(folder.join(DISK_CACHE_MARKER).is_file());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tier_on_a_folder_in_use_shares_it_and_never_writes() {
    let origin = Arc::new(FaultStore::new(Arc::new(MemoryStore::new(
        ChunkEncoding::PbsBlob,
    ))));
    let chunks = chunks_in(origin.clone(), 4, 30_000).await;
    let folder = tempfile::tempdir().unwrap();
    let owner = DiskTier::open(folder.path(), 64 << 20, origin.clone()).unwrap();
    let read = |tier: &DiskTier, i: usize| {
        let source = ChunkSource::new(Arc::new(tier.clone()), DigestAlgorithm::Sha256);
        let (digest, data) = chunks[i].clone();
        async move { assert!(source.read(&digest, data.len()).await.unwrap() == data) }
    };
    read(&owner, 0).await;
    // Opened while the owner lives (another process would see the same lock): shared.
    let shared = DiskTier::open(folder.path(), 64 << 20, origin.clone()).unwrap();
    assert!(shared.is_shared());
    assert_eq!(shared.stats().chunks, 1);
    let files = snapshot(folder.path());
    read(&shared, 0).await; // found in the folder
    read(&shared, 1).await; // from the origin, not kept
    read(&shared, 1).await;
    assert_eq!(
        snapshot(folder.path()).len(),
        files.len(),
        "the shared tier wrote nothing"
    );
    let stats = shared.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.fills),
        (1, 2, 0),
        "{stats:?}"
    );
    // What the owner keeps later, the shared tier finds.
    read(&owner, 2).await;
    let gets = origin.total_gets();
    read(&shared, 2).await;
    assert_eq!(origin.total_gets(), gets);
    // A tier that opens the folder once its owner is gone owns it.
    drop(owner);
    let next = DiskTier::open(folder.path(), 64 << 20, origin.clone()).unwrap();
    assert!(!next.is_shared());
    read(&next, 3).await;
    assert_eq!(next.stats().fills, 1);
    drop(shared);
}

/// Polls `future` once and leaves it where it stopped; its output if it finished.
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// Waits until the fills `tier` started have run and none is under way.
async fn settled(tier: &DiskTier) -> TierStats {
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for _ in 0..500 {
        let stats = tier.stats();
        if stats.reserved == 0 {
            return stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("fills still under way: {:?}", tier.stats());
}

// One thread: what runs between the polls below is only what they start.
#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_read_neither_leaks_its_reservation_nor_leaves_an_uncounted_file() {
    let origin: Arc<dyn ChunkStore> = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let chunks = chunks_in(Arc::clone(&origin), 6, 40_000).await;
    let mut sizes = Vec::new();
    for (digest, _) in &chunks {
        sizes.push(origin.get(digest).await.unwrap().bytes.len() as u64);
    }
    let budget = sizes.iter().sum::<u64>() + 10;
    let folder = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(folder.path(), budget, Arc::clone(&origin)).unwrap();
    // Three reads given up while their chunks are being written (a restore's first failure,
    // a caller's timeout).
    for (digest, _) in &chunks[..3] {
        let mut read = tier.get(digest);
        assert!(poll_once(&mut read).await.is_none());
        drop(read);
    }
    // Their writes end on their own: every byte reserved is given back or kept, and every
    // file in the folder is counted.
    let stats = settled(&tier).await;
    assert_eq!(stats.chunks, 3, "{stats:?}");
    assert_eq!(chunk_bytes_on_disk(folder.path()), stats.bytes);
    // So the budget is all there for the other three, which stay with them.
    for (digest, _) in &chunks[3..] {
        tier.get(digest).await.unwrap();
    }
    let stats = tier.stats();
    assert_eq!((stats.chunks, stats.evictions), (6, 0), "{stats:?}");
    assert_eq!(chunk_bytes_on_disk(folder.path()), stats.bytes);
}

// One thread: what runs between the polls below is only what they start.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_fills_never_take_the_tier_over_its_size() {
    let origin: Arc<dyn ChunkStore> = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let chunks = chunks_in(Arc::clone(&origin), 8, 40_000).await;
    let size = origin.get(&chunks[0].0).await.unwrap().bytes.len() as u64;
    let budget = 3 * size + 500;
    let folder = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(folder.path(), budget, Arc::clone(&origin)).unwrap();
    // Eight reads started at once: their fills each reserve bytes, or find no room, before
    // any finishes.
    let mut reads: Vec<_> = chunks.iter().map(|(digest, _)| tier.get(digest)).collect();
    let mut done = Vec::new();
    for read in &mut reads {
        done.push(poll_once(read).await);
    }
    for ((read, done), (_, data)) in reads.into_iter().zip(done).zip(&chunks) {
        let chunk = match done {
            Some(chunk) => chunk,
            None => read.await,
        }
        .unwrap();
        assert_eq!(decode_blob(&chunk.bytes, data.len()).unwrap(), *data);
    }
    let stats = settled(&tier).await;
    assert!(stats.bytes <= budget, "{stats:?}");
    let on_disk = chunk_bytes_on_disk(folder.path());
    assert!(
        on_disk <= budget,
        "{on_disk} bytes on disk, budget {budget}"
    );
    assert_eq!(on_disk, stats.bytes);
}
