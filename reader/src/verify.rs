//! Verify: every chunk an index names is in its store, decodes, and has the digest and length
//! the index gives it; a report of every bad chunk and the image bytes it covers.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use cairn_chunk_store::{ChunkSource, ChunkStore, Digest, StoreError};
use cairn_index::ChunkIndex;
use futures_util::StreamExt as _;
use futures_util::stream;
use tokio_util::sync::CancellationToken;

use crate::error::ReaderError;
use crate::restore::Progress;

/// How a verify runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Chunks checked at once (at least 1). Default 8: decoding and hashing run on blocking
    /// threads bounded by the cores; more only helps a slow store.
    pub concurrency: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { concurrency: 8 }
    }
}

impl VerifyOptions {
    /// Sets [`concurrency`](VerifyOptions::concurrency) (at least 1, at most 1024).
    #[must_use]
    pub fn concurrency(mut self, chunks: usize) -> Self {
        self.concurrency = chunks.clamp(1, 1024);
        self
    }
}

/// A chunk that failed verification.
#[derive(Debug)]
#[non_exhaustive]
pub struct BadChunk {
    /// Its digest.
    pub digest: Digest,
    /// The length the index gives it (an index may give one digest several lengths; each
    /// pair is checked on its own).
    pub len: u64,
    /// The image bytes it covers.
    pub ranges: Vec<Range<u64>>,
    /// What is wrong: missing, unreadable, corrupt, or of the wrong digest or length.
    pub error: StoreError,
}

/// What a verify found.
#[derive(Debug)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Chunks in the index.
    pub chunks: usize,
    /// Distinct (digest, length) pairs checked.
    pub unique_chunks: usize,
    /// The bad ones, by the first image byte they cover.
    pub bad: Vec<BadChunk>,
}

impl VerifyReport {
    /// Whether every chunk is good.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.bad.is_empty()
    }
}

/// Checks every chunk `index` names against `store`: present, decodable, of the digest (with
/// the index's algorithm) and length the index gives. Each (digest, length) pair is checked
/// once, in parallel; `progress` hears of the image bytes each check covers.
///
/// # Errors
/// Bad chunks are not errors: they are the report. [`ReaderError::Cancelled`] on `cancel`
/// (checks under way finish first).
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use cairn_chunk_store::{ChunkEncoding, ChunkSource, DigestAlgorithm, MemoryStore};
/// use cairn_index::{FixedIndex, FixedIndexWriter, OpenOptions, Origin};
/// use cairn_reader::{VerifyOptions, verify};
/// use tokio_util::sync::CancellationToken;
///
/// let store = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
/// let source = ChunkSource::new(store.clone(), DigestAlgorithm::Sha256);
/// let mut writer = FixedIndexWriter::new(std::io::Cursor::new(Vec::new()), 4096)?;
/// for chunk in [[1u8; 4096], [2u8; 4096]] {
///     writer.push(&source.write(chunk.to_vec()).await?.0)?;
/// }
/// let bytes = writer.finish(8192)?.into_inner();
/// let index = FixedIndex::from_bytes(bytes, Origin::memory(), &OpenOptions::default())?;
/// store.remove(&DigestAlgorithm::Sha256.digest(&[2u8; 4096]));
///
/// let report =
///     verify(&index, store, VerifyOptions::default(), &|_| {}, &CancellationToken::new()).await?;
/// assert_eq!(report.bad.len(), 1);
/// assert!(report.bad[0].error.is_missing());
/// assert_eq!(report.bad[0].ranges, [4096..8192]);
/// # Ok(())
/// # }
/// ```
pub async fn verify(
    index: &dyn ChunkIndex,
    store: Arc<dyn ChunkStore>,
    options: VerifyOptions,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<VerifyReport, ReaderError> {
    let source = ChunkSource::new(store, index.digest_algorithm());
    verify_source(index, &source, options, progress, cancel).await
}

/// Like [`verify`], over chunks from `source` (one made with a key, for an encrypted backup).
///
/// # Errors
/// As [`verify`].
pub async fn verify_source(
    index: &dyn ChunkIndex,
    source: &ChunkSource,
    options: VerifyOptions,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<VerifyReport, ReaderError> {
    let source = source.clone();
    let mut unique: HashMap<(Digest, u64), Vec<Range<u64>>> = HashMap::new();
    for chunk in index.chunks() {
        unique
            .entry((chunk.digest, chunk.len()))
            .or_default()
            .push(chunk.start..chunk.end);
    }
    let checks = unique.iter().map(|(&(digest, len), ranges)| {
        let source = source.clone();
        async move {
            if cancel.is_cancelled() {
                return None;
            }
            let expected = usize::try_from(len).unwrap_or(usize::MAX);
            let error = tokio::select! {
                read = source.read(&digest, expected) => read.err(),
                () = cancel.cancelled() => return None,
            };
            Some((digest, len, ranges, error))
        }
    });
    let mut results = stream::iter(checks).buffer_unordered(options.concurrency.max(1));
    let mut bad = Vec::new();
    while let Some(result) = results.next().await {
        let Some((digest, len, ranges, error)) = result else {
            continue;
        };
        progress(ranges.iter().map(|r| r.end - r.start).sum());
        if let Some(error) = error {
            bad.push(BadChunk {
                digest,
                len,
                ranges: ranges.clone(),
                error,
            });
        }
    }
    if cancel.is_cancelled() {
        return Err(ReaderError::Cancelled {
            left: "verification stopped before it checked every chunk".to_owned(),
        });
    }
    bad.sort_by_key(|b| b.ranges.first().map(|r| r.start));
    Ok(VerifyReport {
        chunks: index.chunk_count(),
        unique_chunks: unique.len(),
        bad,
    })
}
