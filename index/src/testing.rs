//! Checks for arbitrary bytes taken as an index (feature `testing`): the bodies of the fuzz
//! targets, and of the tests that replay what fuzzing found.

#![allow(clippy::panic)] // a check: a broken invariant is a panic

use crate::{
    CasyncIndex, ChunkIndex, DynamicIndex, FixedIndex, Index, IndexBytes, OpenOptions, Origin,
};

/// Which parser a check drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    /// [`FixedIndex::from_bytes`].
    Fixed,
    /// [`DynamicIndex::from_bytes`].
    Dynamic,
    /// [`CasyncIndex::from_bytes`].
    Casync,
}

/// Parses `data` with `parser` (checksum skipped, to reach the table; then verified too) and,
/// if it opens, checks every invariant a reader relies on. Never panics for a correct parser.
///
/// # Panics
/// If an opened index breaks an invariant: chunks must tile the image, `locate` must agree
/// with the chunks, out-of-range lookups must be `None`, and detection by magic must agree.
pub fn check_index_bytes(parser: Parser, data: &[u8]) {
    let skip = OpenOptions::new().verify_checksum(false);
    let opened: Option<Box<dyn ChunkIndex>> = match parser {
        Parser::Fixed => FixedIndex::from_bytes(data.to_vec(), Origin::memory(), &skip)
            .ok()
            .map(|i| Box::new(i) as Box<dyn ChunkIndex>),
        Parser::Dynamic => DynamicIndex::from_bytes(data.to_vec(), Origin::memory(), &skip)
            .ok()
            .map(|i| Box::new(i) as Box<dyn ChunkIndex>),
        Parser::Casync => CasyncIndex::from_bytes(data.to_vec(), Origin::memory())
            .ok()
            .map(|i| Box::new(i) as Box<dyn ChunkIndex>),
    };
    // The checksummed open and the detecting open must never panic either.
    let verified = Index::from_bytes(data.to_vec(), Origin::memory(), &OpenOptions::default());
    check_pieces(data);
    let Some(index) = opened else { return };
    if let Ok(detected) = &verified {
        assert_eq!(
            detected.chunk_count(),
            index.chunk_count(),
            "detection disagrees"
        );
    }
    check_invariants(index.as_ref(), data);
}

/// The same bytes in pieces through [`IndexBytes`] (whose early refusals must never refuse an
/// index) open as the same index [`Index::from_bytes`] makes, or fail as it does.
///
/// # Panics
/// If the two disagree.
pub fn check_pieces(data: &[u8]) {
    let skip = OpenOptions::new().verify_checksum(false);
    let piece = 1 + data.first().map_or(0, |b| usize::from(*b) % 97);
    let mut loader = IndexBytes::new(Origin::memory());
    let fed = data
        .chunks(piece)
        .try_for_each(|part| loader.push(part))
        .and_then(|()| loader.finish(&skip));
    let whole = Index::from_bytes(data.to_vec(), Origin::memory(), &skip);
    let shape = |index: &Index| (index.chunk_count(), index.image_size(), index.format());
    assert_eq!(
        fed.as_ref().ok().map(shape),
        whole.as_ref().ok().map(shape),
        "in pieces: {fed:?}, whole: {whole:?}"
    );
}

/// The invariants of any opened index.
///
/// # Panics
/// As [`check_index_bytes`].
pub fn check_invariants(index: &dyn ChunkIndex, probes: &[u8]) {
    let size = index.image_size();
    let mut expected_start = 0;
    let mut count = 0;
    for (i, chunk) in index.chunks().enumerate() {
        assert_eq!(chunk.index, i);
        assert_eq!(
            chunk.start,
            expected_start,
            "chunk {i} does not start where {} ended",
            i.saturating_sub(1)
        );
        assert!(chunk.end > chunk.start, "chunk {i} is empty");
        assert_eq!(
            index.locate(chunk.start),
            Some((i, 0)),
            "locate of chunk {i}'s start"
        );
        assert_eq!(
            index.locate(chunk.end - 1),
            Some((i, chunk.len() - 1)),
            "locate of chunk {i}'s end"
        );
        expected_start = chunk.end;
        count += 1;
        if count > 100_000 {
            break;
        }
    }
    if count <= 100_000 {
        assert_eq!(count, index.chunk_count());
        assert_eq!(
            expected_start, size,
            "the chunks do not end at the image size"
        );
    }
    assert_eq!(index.locate(size), None);
    assert_eq!(index.locate(u64::MAX), None);
    assert!(index.chunk(index.chunk_count()).is_none());
    assert!(index.chunk(usize::MAX).is_none());
    for window in probes.chunks(8).take(16) {
        let mut bytes = [0u8; 8];
        bytes[..window.len()].copy_from_slice(window);
        let offset = u64::from_le_bytes(bytes) % size.saturating_add(2).max(1);
        match index.locate(offset) {
            Some((i, inside)) => {
                let chunk = index
                    .chunk(i)
                    .unwrap_or_else(|| panic!("locate gave chunk {i}, which does not exist"));
                assert_eq!(chunk.start + inside, offset);
                assert!(offset < chunk.end);
            }
            None => assert!(
                offset >= size,
                "locate({offset}) is None inside an image of {size}"
            ),
        }
    }
}
