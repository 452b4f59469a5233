//! Finding the digests of all-zero chunks, so they can be served without a fetch.

use std::collections::{HashMap, HashSet};

use cairn_chunk_store::DigestAlgorithm;
use cairn_index::{ChunkIndex, Digest, IndexFormat};

/// Chunks longer than this are not hashed to test for zeros (it would cost more than it saves).
const LONGEST_CHECKED: u64 = 16 * 1024 * 1024;
/// How many of the most repeated digests are tested.
const CANDIDATES: usize = 8;

/// The digests of this index that stand for chunks of zeros, each with its length.
///
/// - A fixed index: the zero chunk of its chunk size and of its short last chunk (as PBS stores
///   holes), whether or not they occur.
/// - Any index: the most repeated digests are tested against zeros of their length (holes and
///   zero runs repeat one digest), which is cheap: one pass over the index and a few hashes.
pub(crate) fn zero_digests(
    index: &dyn ChunkIndex,
    algorithm: DigestAlgorithm,
    fixed_chunk_size: Option<u64>,
) -> HashSet<(Digest, u64)> {
    let mut zeros = HashSet::new();
    let mut test = |len: u64, digest: Option<Digest>| {
        if len == 0 || len > LONGEST_CHECKED {
            return;
        }
        let zero = algorithm.digest(&vec![0u8; usize::try_from(len).unwrap_or(0)]);
        if digest.is_none_or(|d| d == zero) {
            zeros.insert((zero, len));
        }
    };
    if index.format() == IndexFormat::Fidx
        && let Some(chunk_size) = fixed_chunk_size
    {
        test(chunk_size, None);
        let tail = index.image_size() % chunk_size;
        if tail != 0 {
            test(tail, None);
        }
    }
    let mut counts: HashMap<Digest, (u64, u64)> = HashMap::new();
    for chunk in index.chunks() {
        counts.entry(chunk.digest).or_insert((0, chunk.len())).0 += 1;
    }
    let mut repeated: Vec<(Digest, u64, u64)> = counts
        .into_iter()
        .filter(|(_, (count, _))| *count > 1)
        .map(|(digest, (count, len))| (digest, count, len))
        .collect();
    repeated.sort_unstable_by_key(|r| std::cmp::Reverse(r.1));
    for (digest, _, len) in repeated.into_iter().take(CANDIDATES) {
        test(len, Some(digest));
    }
    zeros
}
