//! One conformance suite every store runs (feature `testing`): the behaviour a `ChunkStore`
//! promises, checked the same way for each implementation.

#![allow(clippy::panic, clippy::unwrap_used)] // a test suite: a failure is a panic

use std::collections::HashSet;
use std::sync::Arc;

use crate::digest::{Digest, DigestAlgorithm};
use crate::error::StoreError;
use crate::source::{ChunkSource, encode_chunk};
use crate::store::{ChunkStore, PutOutcome};

/// A store under test, with a way to damage one of its chunks.
pub trait ConformanceTarget: Send + Sync {
    /// The store.
    fn store(&self) -> Arc<dyn ChunkStore>;

    /// The digest algorithm of the chunks (SHA-256 unless overridden).
    fn algorithm(&self) -> DigestAlgorithm {
        DigestAlgorithm::Sha256
    }

    /// Overwrites the stored bytes of `digest` with bytes that do not decode to its plaintext.
    fn damage(&self, digest: &Digest);

    /// Replaces the stored chunk `digest` with what a crash mid-write leaves, the first
    /// `keep` bytes of it (an empty file for 0), if the store can hold such a thing; returns
    /// whether it did. Disk stores can; the memory store cannot.
    fn tear(&self, digest: &Digest, keep: usize) -> bool {
        let _ = (digest, keep);
        false
    }
}

/// Deterministic test data: half compressible text, half noise.
#[must_use]
pub fn sample_chunk(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                b"cairn keeps chunks "[i % 19]
            } else {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            }
        })
        .collect()
}

/// Runs every check against `target`. Needs a multi-threaded tokio runtime.
///
/// # Panics
/// On the first failed check, with a message naming it: this is a test suite.
pub async fn check_store(target: &dyn ConformanceTarget) {
    let source = ChunkSource::new(target.store(), target.algorithm());
    check_round_trips(target, &source).await;
    check_touch_and_sync(target, &source).await;
    check_torn_chunks(target, &source).await;
    check_write_new(&source).await;
    check_missing(target, &source).await;
    check_corrupt(target, &source).await;
    check_wrong_length(&source).await;
    check_wrong_digest(target, &source).await;
    check_concurrent_puts(&source).await;
}

/// Round trips of empty, tiny and 4 MiB chunks.
async fn check_round_trips(target: &dyn ConformanceTarget, source: &ChunkSource) {
    let store = source.store();
    for (seed, len) in [(1u64, 0usize), (2, 1), (3, 100), (4, 4 << 20)] {
        let plaintext = sample_chunk(seed, len);
        let (digest, outcome) = source.write(plaintext.clone()).await.unwrap();
        assert_eq!(
            outcome,
            PutOutcome::Inserted,
            "round trip {len}: first put inserts"
        );
        assert_eq!(digest, target.algorithm().digest(&plaintext));
        assert!(
            store.contains(&digest).await.unwrap(),
            "round trip {len}: contains"
        );
        let read = source.read(&digest, len).await.unwrap();
        assert!(read == plaintext, "round trip {len}: same bytes back");
        check_stat(store.as_ref(), &digest).await;
        // Duplicate puts.
        let (_, again) = source.write(plaintext).await.unwrap();
        assert_eq!(
            again,
            PutOutcome::AlreadyPresent,
            "duplicate put of {len} bytes"
        );
    }
}

/// `touch` tells presence (and marks the chunk used); `sync` succeeds.
async fn check_touch_and_sync(target: &dyn ConformanceTarget, source: &ChunkSource) {
    let store = source.store();
    let absent = target.algorithm().digest(b"not stored yet");
    assert!(
        !store.touch(&absent).await.unwrap(),
        "touch of an absent chunk"
    );
    let (stored, _) = source.write(sample_chunk(9, 3000)).await.unwrap();
    assert!(
        store.touch(&stored).await.unwrap(),
        "touch of a stored chunk"
    );
    store.sync().await.unwrap();
}

/// `write_new` encodes and stores only what is absent.
async fn check_write_new(source: &ChunkSource) {
    let fresh = sample_chunk(8, 7000);
    let (digest, outcome) = source.write_new(fresh.clone()).await.unwrap();
    assert_eq!(outcome, PutOutcome::Inserted, "write_new of a new chunk");
    assert!(source.read(&digest, fresh.len()).await.unwrap() == fresh);
    let (again, outcome) = source.write_new(fresh).await.unwrap();
    assert_eq!(
        (again, outcome),
        (digest, PutOutcome::AlreadyPresent),
        "write_new of a stored chunk"
    );
}

/// A missing chunk.
async fn check_missing(target: &dyn ConformanceTarget, source: &ChunkSource) {
    let store = source.store();
    let absent = target.algorithm().digest(b"never stored");
    let error = source.read(&absent, 12).await.unwrap_err();
    assert!(
        error.is_missing(),
        "missing chunk gives Missing, got: {error}"
    );
    assert!(
        error.to_string().contains(&**store.name()),
        "the error names the store: {error}"
    );
    assert!(!store.contains(&absent).await.unwrap());
    let error = store.stat(&absent).await.unwrap_err();
    assert!(error.is_missing(), "stat of a missing chunk: {error}");
}

/// `stat` tells what `get` hands out: the encoding and the length of the stored bytes.
async fn check_stat(store: &dyn ChunkStore, digest: &Digest) {
    let chunk = store.get(digest).await.unwrap();
    let stat = store.stat(digest).await.unwrap();
    assert_eq!(
        (stat.encoding, stat.len),
        (chunk.encoding, chunk.bytes.len() as u64),
        "stat agrees with get"
    );
}

/// A corrupt chunk.
async fn check_corrupt(target: &dyn ConformanceTarget, source: &ChunkSource) {
    let plaintext = sample_chunk(5, 10_000);
    let (digest, _) = source.write(plaintext.clone()).await.unwrap();
    target.damage(&digest);
    let error = source.read(&digest, plaintext.len()).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Corrupt { .. }
                | StoreError::DigestMismatch { .. }
                | StoreError::LengthMismatch { .. }
        ),
        "a damaged chunk is corrupt, got: {error}"
    );
}

/// The wrong expected length.
async fn check_wrong_length(source: &ChunkSource) {
    let plaintext = sample_chunk(6, 5000);
    let (digest, _) = source.write(plaintext.clone()).await.unwrap();
    let error = source.read(&digest, 4999).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::LengthMismatch { .. } | StoreError::Corrupt { .. }
        ),
        "a shorter expected length is an error, got: {error}"
    );
    let error = source.read(&digest, 5001).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::LengthMismatch {
                expected: 5001,
                actual: 5000,
                ..
            }
        ),
        "{error}"
    );
}

/// Data that does not match its digest.
async fn check_wrong_digest(target: &dyn ConformanceTarget, source: &ChunkSource) {
    let store = source.store();
    let wrong: Digest = target.algorithm().digest(b"another chunk");
    let error = source
        .write_with_digest(&wrong, sample_chunk(7, 300))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(
        !store.contains(&wrong).await.unwrap(),
        "a rejected chunk is not stored"
    );
    let encoded = encode_chunk(&sample_chunk(7, 300), store.encoding()).unwrap();
    store.put(&wrong, encoded).await.unwrap();
    let error = source.read(&wrong, 300).await.unwrap_err();
    assert!(
        matches!(error, StoreError::DigestMismatch { .. }),
        "raw put, verified read: {error}"
    );
}

/// 32 concurrent puts and gets of 8 overlapping chunks: each inserted exactly once.
async fn check_concurrent_puts(source: &ChunkSource) {
    let chunks: Vec<Vec<u8>> = (0..8)
        .map(|i| sample_chunk(100 + i, 20_000 + i as usize))
        .collect();
    let chunks = Arc::new(chunks);
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let (source, chunks) = (source.clone(), Arc::clone(&chunks));
            tokio::spawn(async move {
                let plaintext = chunks[task % 8].clone();
                let len = plaintext.len();
                let (digest, outcome) = source.write(plaintext.clone()).await.unwrap();
                let read = source.read(&digest, len).await.unwrap();
                assert!(read == plaintext, "concurrent round trip");
                (digest, outcome)
            })
        })
        .collect();
    let mut inserted = 0;
    let mut digests = HashSet::new();
    for task in tasks {
        let (digest, outcome) = task.await.unwrap();
        digests.insert(digest);
        if outcome == PutOutcome::Inserted {
            inserted += 1;
        }
    }
    assert_eq!(digests.len(), 8);
    assert_eq!(
        inserted, 8,
        "each of 8 chunks inserted exactly once by 32 concurrent puts"
    );
}

/// A chunk file torn by a crash (empty, or cut inside its header) counts as absent everywhere,
/// and the next write of the chunk replaces it.
async fn check_torn_chunks(target: &dyn ConformanceTarget, source: &ChunkSource) {
    let store = source.store();
    for keep in [0usize, 1, 5] {
        let plaintext = sample_chunk(40 + keep as u64, 2000);
        let (digest, _) = source.write(plaintext.clone()).await.unwrap();
        if !target.tear(&digest, keep) {
            return;
        }
        assert!(
            !store.contains(&digest).await.unwrap(),
            "torn to {keep}: contains"
        );
        assert!(
            !store.touch(&digest).await.unwrap(),
            "torn to {keep}: touch"
        );
        let error = source.read(&digest, plaintext.len()).await.unwrap_err();
        assert!(
            error.is_missing(),
            "torn to {keep}: read gives Missing, got {error}"
        );
        let (_, outcome) = source.write_new(plaintext.clone()).await.unwrap();
        assert_eq!(
            outcome,
            PutOutcome::Inserted,
            "torn to {keep}: write_new rewrites it"
        );
        assert!(source.read(&digest, plaintext.len()).await.unwrap() == plaintext);
        target.tear(&digest, keep);
        let (_, outcome) = source.write(plaintext.clone()).await.unwrap();
        assert_eq!(
            outcome,
            PutOutcome::Inserted,
            "torn to {keep}: put rewrites it"
        );
        assert!(source.read(&digest, plaintext.len()).await.unwrap() == plaintext);
    }
}

/// A read-only store under test (one over HTTP), with the writable store it serves.
pub trait ReadOnlyTarget: Send + Sync {
    /// The read-only store.
    fn store(&self) -> Arc<dyn ChunkStore>;

    /// The store whose chunks it serves (the folder behind the web server).
    fn backing(&self) -> Arc<dyn ChunkStore>;

    /// The digest algorithm of the chunks (SHA-256 unless overridden).
    fn algorithm(&self) -> DigestAlgorithm {
        DigestAlgorithm::Sha256
    }

    /// Overwrites the backing bytes of `digest` with bytes that do not decode to its plaintext.
    fn damage(&self, digest: &Digest);
}

/// Runs the checks a read-only store can pass: every read is verified and right, presence is
/// told, missing, corrupt and mislabelled chunks are the right errors, concurrent reads agree,
/// and writes are refused. Needs a multi-threaded tokio runtime.
///
/// # Panics
/// On the first failed check, with a message naming it.
pub async fn check_read_only_store(target: &dyn ReadOnlyTarget) {
    let algorithm = target.algorithm();
    let writer = ChunkSource::new(target.backing(), algorithm);
    let reader = ChunkSource::new(target.store(), algorithm);
    let store = reader.store();
    let mut stored = Vec::new();
    for (seed, len) in [(1u64, 0usize), (2, 1), (3, 100), (4, 4 << 20), (5, 70_000)] {
        let plaintext = sample_chunk(seed, len);
        let (digest, _) = writer.write(plaintext.clone()).await.unwrap();
        let read = reader.read(&digest, len).await.unwrap();
        assert!(read == plaintext, "read-only round trip of {len} bytes");
        assert!(store.contains(&digest).await.unwrap(), "contains {len}");
        assert!(store.touch(&digest).await.unwrap(), "touch {len}");
        check_stat(store.as_ref(), &digest).await;
        stored.push((digest, plaintext));
    }
    let absent = algorithm.digest(b"never stored");
    let error = reader.read(&absent, 12).await.unwrap_err();
    assert!(
        error.is_missing(),
        "missing chunk gives Missing, got: {error}"
    );
    assert!(
        error.to_string().contains(&**store.name()),
        "the error names the store: {error}"
    );
    assert!(!store.contains(&absent).await.unwrap());
    assert!(!store.touch(&absent).await.unwrap());
    assert!(store.stat(&absent).await.unwrap_err().is_missing());

    let (digest, plaintext) = &stored[4];
    let error = reader.read(digest, plaintext.len() - 1).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::LengthMismatch { .. } | StoreError::Corrupt { .. }
        ),
        "a shorter expected length is an error, got: {error}"
    );
    let wrong = algorithm.digest(b"another chunk");
    let encoded = encode_chunk(&sample_chunk(7, 300), target.backing().encoding()).unwrap();
    target.backing().put(&wrong, encoded).await.unwrap();
    let error = reader.read(&wrong, 300).await.unwrap_err();
    assert!(
        matches!(error, StoreError::DigestMismatch { .. }),
        "mislabelled chunk: {error}"
    );

    let reads: Vec<_> = (0..32)
        .map(|i| {
            let (reader, (digest, plaintext)) = (reader.clone(), stored[i % stored.len()].clone());
            tokio::spawn(async move {
                assert!(reader.read(&digest, plaintext.len()).await.unwrap() == plaintext);
            })
        })
        .collect();
    for read in reads {
        read.await.unwrap();
    }

    let (digest, plaintext) = &stored[2];
    target.damage(digest);
    let error = reader.read(digest, plaintext.len()).await.unwrap_err();
    assert!(
        error.is_bad_chunk(),
        "a damaged chunk is corrupt, got: {error}"
    );

    let refused = store.put(&absent, vec![1, 2, 3]).await;
    assert!(refused.is_err(), "a read-only store refuses puts");
    assert!(!target.backing().contains(&absent).await.unwrap());
}
