//! A randomised reading check (feature `testing`): a small image in a memory store, some chunks
//! damaged or missing, and reads that must return the image's bytes or fail exactly when they
//! touch a damaged chunk. The body of the reader's fuzz target and of its regression tests.

#![allow(clippy::panic, clippy::missing_panics_doc)] // a check: a broken invariant is a panic

use std::collections::HashSet;
use std::io::Cursor;
use std::sync::Arc;

use cairn_chunk_store::{ChunkEncoding, ChunkSource, Digest, DigestAlgorithm, MemoryStore};
use cairn_index::{ChunkIndex, DynamicIndexWriter, FixedIndexWriter, Index, OpenOptions, Origin};

use crate::{ChunkReader, ReaderOptions};

/// One generated case.
#[derive(Debug, Clone, arbitrary::Arbitrary)]
pub struct ReadCase {
    /// The image (only the first 32 KiB are used).
    pub image: Vec<u8>,
    /// A fixed index (else dynamic).
    pub fixed: bool,
    /// Fixed chunk size: `2^(6 + shift % 8)`.
    pub shift: u8,
    /// Dynamic chunk lengths, cycled: `length % 4096 + 1`.
    pub lengths: Vec<u16>,
    /// Chunks to damage (number modulo the count) and whether to remove them instead.
    pub bad: Vec<(u8, bool)>,
    /// Cache capacity: `cache * 16` bytes.
    pub cache: u16,
    /// Chunks fetched at once: `concurrency % 8 + 1`.
    pub concurrency: u8,
    /// Reads: offset (modulo the size + 16) and length (modulo 8192).
    pub reads: Vec<(u32, u16)>,
}

/// Runs `case`.
///
/// # Panics
/// If a read returns wrong bytes, fails without touching a damaged chunk, or succeeds over one.
pub fn check_read_case(case: &ReadCase) {
    let image = &case.image[..case.image.len().min(32 * 1024)];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let memory = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
        let source = ChunkSource::new(memory.clone(), DigestAlgorithm::Sha256);
        let pieces = cut(case, image);
        let mut digests = Vec::new();
        for piece in &pieces {
            let (digest, _) = source.write(piece.to_vec()).await.expect("a memory write");
            digests.push(digest);
        }
        let index = index_of(case, image, &pieces, &digests);
        let bad = damage(case, &memory, &digests);
        let options = ReaderOptions::default()
            .cache_bytes(u64::from(case.cache) * 16)
            .concurrency(usize::from(case.concurrency % 8) + 1);
        let reader = ChunkReader::new(Arc::clone(&index), memory, options);
        check_reads(case, &reader, image, &bad).await;
        assert!(reader.cache().weight() <= reader.cache().capacity());
    });
}

/// The case's chunks of `image`: fixed ones of a power-of-two size, or the case's lengths.
fn cut<'a>(case: &ReadCase, image: &'a [u8]) -> Vec<&'a [u8]> {
    if case.fixed {
        return image.chunks(1 << (6 + case.shift % 8)).collect();
    }
    let mut pieces = Vec::new();
    let mut rest = image;
    let pattern: Vec<usize> = if case.lengths.is_empty() {
        vec![1000]
    } else {
        case.lengths
            .iter()
            .map(|l| usize::from(*l) % 4096 + 1)
            .collect()
    };
    for len in pattern.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at((*len).min(rest.len()));
        pieces.push(piece);
        rest = after;
    }
    pieces
}

/// The index of `pieces` (with their `digests`): fixed or dynamic, as the case says.
fn index_of(
    case: &ReadCase,
    image: &[u8],
    pieces: &[&[u8]],
    digests: &[Digest],
) -> Arc<dyn ChunkIndex> {
    let bytes = if case.fixed {
        let mut writer = FixedIndexWriter::new(Cursor::new(Vec::new()), 1 << (6 + case.shift % 8))
            .expect("writer");
        for digest in digests {
            writer.push(digest).expect("push");
        }
        writer
            .finish(image.len() as u64)
            .expect("finish")
            .into_inner()
    } else {
        let mut writer = DynamicIndexWriter::new(Cursor::new(Vec::new())).expect("writer");
        let mut end = 0u64;
        for (piece, digest) in pieces.iter().zip(digests) {
            end += piece.len() as u64;
            writer.push(end, digest).expect("push");
        }
        writer.finish().expect("finish").into_inner()
    };
    Arc::new(
        Index::from_bytes(bytes, Origin::memory(), &OpenOptions::default()).expect("a valid index"),
    )
}

/// Removes or damages the chunks the case names; returns their digests.
fn damage(case: &ReadCase, memory: &MemoryStore, digests: &[Digest]) -> HashSet<Digest> {
    let mut bad = HashSet::new();
    if digests.is_empty() {
        return bad;
    }
    for (n, missing) in &case.bad {
        let digest = digests[usize::from(*n) % digests.len()];
        if *missing {
            memory.remove(&digest);
        } else {
            memory.set_raw(digest, b"damaged".to_vec());
        }
        bad.insert(digest);
    }
    bad
}

/// Each of the case's reads gives the image's bytes, or fails exactly when it touches a bad
/// chunk.
async fn check_reads(case: &ReadCase, reader: &ChunkReader, image: &[u8], bad: &HashSet<Digest>) {
    let size = image.len() as u64;
    for &(raw_offset, raw_len) in case.reads.iter().take(64) {
        let offset = u64::from(raw_offset) % (size + 16);
        let want = usize::from(raw_len) % 8192;
        let end = (offset + want as u64).min(size);
        // An empty range touches no chunk, whatever its offset.
        let touches_bad = offset < end
            && reader
                .index()
                .chunks()
                .filter(|c| c.start < end && c.end > offset)
                .any(|c| bad.contains(&c.digest) && !reader.is_zero_chunk(&c));
        let mut buf = vec![0xa5; want];
        match reader.read_at(&mut buf, offset).await {
            Ok(read) => {
                assert!(
                    !touches_bad,
                    "a read over a damaged chunk succeeded: {offset}+{want}"
                );
                let expected = if offset < size {
                    &image[offset as usize..end as usize]
                } else {
                    &[][..]
                };
                assert_eq!(read, expected.len(), "short read at {offset}+{want}");
                assert!(buf[..read] == *expected, "wrong bytes at {offset}+{want}");
            }
            Err(error) => assert!(
                touches_bad,
                "a read of good chunks failed at {offset}+{want}: {error}"
            ),
        }
    }
}

/// The fuzz target's body: a [`ReadCase`] decoded from `data`.
pub fn fuzz(data: &[u8]) {
    let mut input = arbitrary::Unstructured::new(data);
    if let Ok(case) = input.arbitrary::<ReadCase>() {
        check_read_case(&case);
    }
}
