//! Property tests: write-then-read round trips of all three formats, lookups against a linear
//! scan, and damaged files (truncated, one byte changed) that must give an error or an index
//! whose content only differs where the changed byte is allowed to make a difference.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::Cursor;

use cairn_index::*;
use proptest::prelude::*;

/// What an index says, for comparisons.
#[derive(Debug, PartialEq, Eq)]
struct Content {
    format: IndexFormat,
    digest: DigestAlgorithm,
    size: u64,
    chunks: Vec<ChunkInfo>,
}

fn content(index: &dyn ChunkIndex) -> Content {
    Content {
        format: index.format(),
        digest: index.digest_algorithm(),
        size: index.image_size(),
        chunks: index.chunks().collect(),
    }
}

fn open(bytes: Vec<u8>) -> Result<Index> {
    Index::from_bytes(bytes, Origin::memory(), &OpenOptions::default())
}

/// The linear model of `locate`.
fn locate_by_scan(index: &dyn ChunkIndex, offset: u64) -> Option<(usize, u64)> {
    index
        .chunks()
        .find(|c| c.start <= offset && offset < c.end)
        .map(|c| (c.index, offset - c.start))
}

fn check_lookups(
    index: &dyn ChunkIndex,
    offsets: &[u64],
) -> std::result::Result<(), TestCaseError> {
    let size = index.image_size();
    for &raw in offsets {
        let offset = if size == 0 { raw % 4 } else { raw % (size + 3) };
        prop_assert_eq!(
            index.locate(offset),
            locate_by_scan(index, offset),
            "offset {}",
            offset
        );
    }
    prop_assert_eq!(index.locate(size), None);
    prop_assert_eq!(index.locate(u64::MAX), None);
    prop_assert_eq!(index.chunk(index.chunk_count()), None);
    Ok(())
}

fn digests(n: usize, seed: u8) -> Vec<Digest> {
    (0..n)
        .map(|i| [(i as u8).wrapping_mul(31) ^ seed; 32])
        .collect()
}

fn fixed_bytes(chunk_shift: u32, size: u64, seed: u8) -> Vec<u8> {
    let chunk_size = 1u64 << chunk_shift;
    let n = size.div_ceil(chunk_size) as usize;
    let mut writer = FixedIndexWriter::new(Cursor::new(Vec::new()), chunk_size).unwrap();
    for d in digests(n, seed) {
        writer.push(&d).unwrap();
    }
    writer.finish(size).unwrap().into_inner()
}

fn ends(lengths: &[u64]) -> Vec<u64> {
    lengths
        .iter()
        .scan(0u64, |end, len| {
            *end += len;
            Some(*end)
        })
        .collect()
}

fn dynamic_bytes(lengths: &[u64], seed: u8) -> Vec<u8> {
    let mut writer = DynamicIndexWriter::new(Cursor::new(Vec::new())).unwrap();
    for (end, d) in ends(lengths).into_iter().zip(digests(lengths.len(), seed)) {
        writer.push(end, &d).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn casync_bytes(lengths: &[u64], seed: u8, sha256: bool) -> Vec<u8> {
    let max = lengths.iter().copied().max().unwrap_or(1).max(4);
    let digest = if sha256 {
        DigestAlgorithm::Sha256
    } else {
        DigestAlgorithm::Sha512_256
    };
    let params = CasyncParams {
        flags: CasyncParams::flags_for(digest),
        min: 1,
        avg: max / 2,
        max,
    };
    let mut writer = CasyncIndexWriter::new(Vec::new(), params).unwrap();
    for (end, d) in ends(lengths).into_iter().zip(digests(lengths.len(), seed)) {
        writer.push(end, &d).unwrap();
    }
    writer.finish().unwrap()
}

/// A valid file of a random format.
fn any_index() -> impl Strategy<Value = Vec<u8>> {
    let lengths = proptest::collection::vec(1u64..3000, 0..12);
    prop_oneof![
        (0u32..12, 0u64..20_000, any::<u8>())
            .prop_map(|(s, size, seed)| fixed_bytes(s, size, seed)),
        (lengths.clone(), any::<u8>()).prop_map(|(l, seed)| dynamic_bytes(&l, seed)),
        (lengths, any::<u8>(), any::<bool>())
            .prop_map(|(l, seed, sha)| casync_bytes(&l, seed, sha)),
    ]
}

/// Whether a changed byte at `position` may legitimately change the content from `before` to
/// `after` (fields no checksum covers).
fn allowed_change(bytes: &[u8], position: usize, before: &Content, after: &Content) -> bool {
    match before.format {
        // The fixed checksum covers the digests, not the image size: a changed size that keeps
        // the chunk count changes only the end of the last chunk.
        IndexFormat::Fidx => {
            (64..72).contains(&position)
                && before.chunks.len() == after.chunks.len()
                && before
                    .chunks
                    .iter()
                    .zip(&after.chunks)
                    .all(|(a, b)| a.digest == b.digest && a.start == b.start)
        }
        // Entries are covered by the checksum, the rest of the header does not matter.
        IndexFormat::Didx => false,
        // casync has no checksum: a changed flags byte may change the algorithm, and a changed
        // entry byte may change that entry (its end, so the next chunk's start, or its digest)
        // while the index stays valid.
        _ => {
            let in_flags = (0x10..0x18).contains(&position);
            let in_table = position >= 0x40 && position < bytes.len() - 40;
            let entry = position.saturating_sub(0x40) / 40;
            let only_that_entry = before.chunks.len() == after.chunks.len()
                && before
                    .chunks
                    .iter()
                    .zip(&after.chunks)
                    .all(|(a, b)| a == b || a.index == entry || a.index == entry + 1);
            (in_flags && before.chunks == after.chunks) || (in_table && only_that_entry)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn fixed_round_trip(shift in 0u32..16, size in 0u64..200_000, seed: u8, offsets in proptest::collection::vec(any::<u64>(), 20)) {
        let bytes = fixed_bytes(shift, size, seed);
        let index = open(bytes).unwrap();
        prop_assert_eq!(index.format(), IndexFormat::Fidx);
        prop_assert_eq!(index.image_size(), size);
        let chunk_size = 1u64 << shift;
        let expected = digests(size.div_ceil(chunk_size) as usize, seed);
        prop_assert_eq!(index.chunk_count(), expected.len());
        for (chunk, digest) in index.chunks().zip(&expected) {
            prop_assert_eq!(&chunk.digest, digest);
            prop_assert_eq!(chunk.start, chunk.index as u64 * chunk_size);
            prop_assert!(chunk.len() == chunk_size || chunk.end == size);
        }
        check_lookups(index.as_dyn(), &offsets)?;
    }

    #[test]
    fn dynamic_and_casync_round_trip(
        lengths in proptest::collection::vec(1u64..5000, 0..40),
        seed: u8,
        sha: bool,
        offsets in proptest::collection::vec(any::<u64>(), 20),
    ) {
        let expected_ends = ends(&lengths);
        for bytes in [dynamic_bytes(&lengths, seed), casync_bytes(&lengths, seed, sha)] {
            let index = open(bytes).unwrap();
            let found: Vec<u64> = index.chunks().map(|c| c.end).collect();
            prop_assert_eq!(&found, &expected_ends);
            let found_digests: Vec<Digest> = index.chunks().map(|c| c.digest).collect();
            prop_assert_eq!(found_digests, digests(lengths.len(), seed));
            prop_assert_eq!(index.image_size(), expected_ends.last().copied().unwrap_or(0));
            check_lookups(index.as_dyn(), &offsets)?;
        }
    }

    #[test]
    fn truncated_files_are_errors(bytes in any_index(), cut in any::<prop::sample::Index>()) {
        let keep = cut.index(bytes.len());
        match open(bytes[..keep].to_vec()) {
            // Cut inside a header, off the entry grid, or by whole entries (the checksum tells).
            Err(IndexError::Truncated { .. } | IndexError::Length { .. } | IndexError::BadMagic { .. } | IndexError::CasyncField { .. } | IndexError::ChecksumMismatch { .. }) => {}
            other => prop_assert!(false, "a file cut to {} of {} bytes: {:?}", keep, bytes.len(), other.map(|i| i.chunk_count())),
        }
    }

    #[test]
    fn a_changed_byte_is_an_error_or_harmless(bytes in any_index(), at in any::<prop::sample::Index>(), value: u8) {
        let position = at.index(bytes.len());
        let before = content(open(bytes.clone()).unwrap().as_dyn());
        let mut damaged = bytes.clone();
        damaged[position] = value;
        if let Ok(index) = open(damaged) {
            let after = content(index.as_dyn());
            prop_assert!(
                after == before || allowed_change(&bytes, position, &before, &after),
                "byte {} set to {:#x} changed the content: {:?} -> {:?}", position, value, before, after
            );
        }
    }

    /// Whole, cut or changed, an index read in pieces is what reading it whole gives.
    #[test]
    fn pieces_agree_with_the_whole(bytes in any_index(), at in any::<prop::sample::Index>(), value: u8, cut: bool) {
        let position = at.index(bytes.len());
        let mut damaged = bytes.clone();
        if cut {
            damaged.truncate(position);
        } else {
            damaged[position] = value;
        }
        cairn_index::testing::check_pieces(&bytes);
        cairn_index::testing::check_pieces(&damaged);
    }
}
