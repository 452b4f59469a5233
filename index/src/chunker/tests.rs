//! The fast chunkers against straightforward byte-at-a-time models that follow the formats'
//! stateful description (a window buffer, a running hash, input fed in arbitrary pieces).

use proptest::prelude::*;

use super::*;

/// casync's chunker as a state machine fed arbitrary pieces: the format's description, not fast.
struct CasyncModel {
    min: usize,
    max: usize,
    discriminator: u32,
    hash: u32,
    window: Vec<u8>,
    chunk_size: usize,
}

impl CasyncModel {
    fn new(chunker: &CasyncChunker) -> Self {
        let (min, _, max) = chunker.sizes();
        Self {
            min,
            max,
            discriminator: chunker.discriminator(),
            hash: 0,
            window: Vec::new(),
            chunk_size: 0,
        }
    }

    fn shall_break(&self) -> bool {
        if self.chunk_size >= self.max {
            return true;
        }
        if self.chunk_size < self.min {
            return false;
        }
        self.hash % self.discriminator == self.discriminator - 1
    }

    /// Feeds one byte; true if the chunk ends after it.
    fn push(&mut self, byte: u8) -> bool {
        self.chunk_size += 1;
        if self.window.len() < CASYNC_WINDOW {
            self.window.push(byte);
            if self.window.len() < CASYNC_WINDOW {
                return false;
            }
            let n = self.window.len() as u32;
            self.hash = 0;
            for (i, &b) in self.window.iter().enumerate() {
                self.hash ^= BUZHASH_TABLE[b as usize].rotate_left(n - 1 - i as u32);
            }
        } else {
            let idx = (self.chunk_size - 1) % CASYNC_WINDOW;
            let leave = self.window[idx];
            self.hash = self.hash.rotate_left(1)
                ^ BUZHASH_TABLE[leave as usize].rotate_left(CASYNC_WINDOW as u32)
                ^ BUZHASH_TABLE[byte as usize];
            self.window[idx] = byte;
        }
        if self.shall_break() {
            self.hash = 0;
            self.window.clear();
            self.chunk_size = 0;
            return true;
        }
        false
    }
}

/// PBS's chunker as a state machine, the same way.
struct PbsModel {
    min: usize,
    max: usize,
    mask: u32,
    hash: u32,
    window: Vec<u8>,
    chunk_size: usize,
}

impl PbsModel {
    fn push(&mut self, byte: u8) -> bool {
        self.chunk_size += 1;
        if self.window.len() < PBS_WINDOW {
            self.window.push(byte);
            self.hash = self.hash.rotate_left(1) ^ BUZHASH_TABLE[byte as usize];
            return false;
        }
        let idx = (self.chunk_size - 1) % PBS_WINDOW;
        let leave = self.window[idx];
        self.hash =
            self.hash.rotate_left(1) ^ BUZHASH_TABLE[leave as usize] ^ BUZHASH_TABLE[byte as usize];
        self.window[idx] = byte;
        let cut = self.chunk_size >= self.max
            || (self.chunk_size >= self.min && self.hash & self.mask >= self.mask - 2);
        if cut {
            self.hash = 0;
            self.window.clear();
            self.chunk_size = 0;
        }
        cut
    }
}

fn model_lengths(data: &[u8], mut push: impl FnMut(u8) -> bool) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut current = 0;
    for &byte in data {
        current += 1;
        if push(byte) {
            lengths.push(current);
            current = 0;
        }
    }
    if current > 0 {
        lengths.push(current);
    }
    lengths
}

fn fast_lengths<C: Chunker>(chunker: C, data: &[u8]) -> Vec<usize> {
    SliceChunks::new(chunker, data).map(<[u8]>::len).collect()
}

/// Data with structure: random bytes, zero runs and repeats, from a seed.
fn sample(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        let run = (next() % 50_000) as usize + 1;
        match next() % 3 {
            0 => data.extend((0..run).map(|_| next() as u8)),
            1 => data.extend(std::iter::repeat_n(0u8, run)),
            _ => {
                let pattern: Vec<u8> = (0..(next() % 100 + 1)).map(|_| next() as u8).collect();
                data.extend(pattern.iter().cycle().take(run));
            }
        }
    }
    data.truncate(len);
    data
}

#[test]
fn the_table_is_casyncs() {
    // Spot checks of the first and last entries and a fold over all of them.
    assert_eq!(BUZHASH_TABLE[0], 0x458b_e752);
    assert_eq!(BUZHASH_TABLE[255], 0xd95d_df11);
    let fold = BUZHASH_TABLE
        .iter()
        .fold(0u32, |a, &x| a.rotate_left(5) ^ x);
    assert_eq!(
        fold,
        BUZHASH_TABLE
            .iter()
            .fold(0u32, |a, &x| a.rotate_left(5) ^ x)
    );
    let unique: std::collections::HashSet<_> = BUZHASH_TABLE.iter().collect();
    assert_eq!(unique.len(), 256);
}

#[test]
fn the_fast_cut_test_is_exact_at_the_top_of_the_hash_range() {
    for d in [1usize, 2, 3, 49_535, 1 << 20, (1 << 27) - 1, 1 << 27] {
        let chunker = CasyncChunker::new(1, d.min(1 << 27), 128 << 20).unwrap();
        for hash in (u32::MAX - 100_000..=u32::MAX).chain(0..100_000) {
            assert_eq!(
                chunker.cuts(hash),
                chunker.cuts_by_division(hash),
                "d {}, hash {hash}",
                chunker.discriminator()
            );
        }
    }
}

#[test]
fn casync_default_discriminator() {
    let chunker = CasyncChunker::default();
    assert_eq!(chunker.sizes(), (16 * 1024, 64 * 1024, 256 * 1024));
    // 65536 / (-1.42888852e-7 * 65536 + 1.33237515) = 49535.4...
    assert_eq!(chunker.discriminator(), 49535);
}

#[test]
fn casync_chunker_matches_the_model_on_mixed_data() {
    for (seed, avg) in [
        (1u64, 64 * 1024),
        (2, 16 * 1024),
        (3, 4096),
        (4, 1024 * 1024),
    ] {
        let data = sample(seed, 3 << 20);
        let chunker = CasyncChunker::with_avg(avg).unwrap();
        let mut model = CasyncModel::new(&chunker);
        let expected = model_lengths(&data, |b| model.push(b));
        assert_eq!(fast_lengths(chunker, &data), expected, "avg {avg}");
        assert!(expected.len() > 2);
    }
}

#[test]
fn zero_runs_become_max_size_chunks() {
    let data = vec![0u8; 1 << 20];
    let lengths = fast_lengths(CasyncChunker::default(), &data);
    assert_eq!(lengths, vec![256 * 1024; 4]);
}

#[test]
fn pbs_chunker_matches_the_model() {
    let data = sample(9, 4 << 20);
    let chunker = PbsChunker::new(64 * 1024).unwrap();
    let mut model = PbsModel {
        min: 16 * 1024,
        max: 256 * 1024,
        mask: 128 * 1024 - 1,
        hash: 0,
        window: Vec::new(),
        chunk_size: 0,
    };
    let expected = model_lengths(&data, |b| model.push(b));
    assert_eq!(fast_lengths(chunker, &data), expected);
    assert!(expected.len() > 10);
}

#[test]
fn reader_and_slice_chunks_agree_whatever_the_read_sizes() {
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7919 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let data = sample(5, 2 << 20);
    let chunker = CasyncChunker::with_avg(16 * 1024).unwrap();
    let from_slice: Vec<&[u8]> = SliceChunks::new(chunker, &data).collect();
    let from_reader: Vec<Vec<u8>> = ReadChunks::new(Trickle(&data, 0), chunker)
        .collect::<io::Result<_>>()
        .unwrap();
    assert_eq!(from_reader.len(), from_slice.len());
    assert!(from_reader.iter().zip(&from_slice).all(|(a, b)| a == b));
}

fn refused(result: Result<impl std::fmt::Debug, IndexError>, chunker: &str, words: &str) {
    match result {
        Err(IndexError::ChunkerSizes {
            chunker: name,
            problem,
        }) => {
            assert_eq!(name, chunker);
            assert!(problem.contains(words), "{problem}");
        }
        other => panic!("expected a chunker-sizes error, got {other:?}"),
    }
}

#[test]
fn invalid_sizes_are_errors() {
    refused(CasyncChunker::new(0, 10, 100), "casync", "min 0");
    refused(
        CasyncChunker::new(100, 10, 1000),
        "casync",
        "min 100, avg 10",
    );
    refused(CasyncChunker::new(1, 10, 32), "casync", "max 32"); // below the window
    refused(CasyncChunker::with_avg(256 << 20), "casync", "134217728");
    refused(PbsChunker::new(3 << 20), "PBS", "not a power of two");
    refused(PbsChunker::new(128), "PBS", "not a power of two from 256");
    refused(FixedChunker::new(0), "fixed", "not a power of two");
    refused(FixedChunker::new(1000), "fixed", "not a power of two");
}

#[test]
fn no_chunker_makes_chunks_over_128_mib() {
    // Chunks over 128 MiB cannot be stored, and the reading buffer is twice the largest chunk:
    // such sizes are refused up front, naming the limit.
    refused(PbsChunker::new(64 << 20), "PBS", "134217728 (128 MiB)");
    refused(
        PbsChunker::new(1 << 30),
        "PBS",
        "the largest average is 33554432",
    );
    refused(FixedChunker::new(256 << 20), "fixed", "134217728 (128 MiB)");
    refused(FixedChunker::new(1 << 40), "fixed", "over the limit");
    assert_eq!(
        PbsChunker::new(PbsChunker::MAX_AVG).unwrap().max_size(),
        MAX_CHUNK_SIZE
    );
    assert_eq!(
        FixedChunker::new(MAX_CHUNK_SIZE).unwrap().max_size(),
        MAX_CHUNK_SIZE
    );
    assert_eq!(
        CasyncChunker::new(1, 1 << 20, MAX_CHUNK_SIZE)
            .unwrap()
            .max_size(),
        MAX_CHUNK_SIZE
    );
}

#[test]
fn empty_and_tiny_inputs() {
    assert_eq!(
        fast_lengths(CasyncChunker::default(), &[]),
        Vec::<usize>::new()
    );
    assert_eq!(fast_lengths(CasyncChunker::default(), &[7]), vec![1]);
    assert_eq!(fast_lengths(PbsChunker::default(), &[1, 2, 3]), vec![3]);
    assert_eq!(
        fast_lengths(FixedChunker::new(4).unwrap(), &[1; 10]),
        vec![4, 4, 2]
    );
}

proptest! {
    #[test]
    fn fast_cut_test_equals_the_modulo(hash in any::<u32>(), avg in 1usize..(128 << 20)) {
        let chunker = CasyncChunker::new(1, avg, 128 << 20).unwrap();
        prop_assert_eq!(chunker.cuts(hash), chunker.cuts_by_division(hash));
        prop_assert_eq!(chunker.cuts(u32::MAX), chunker.cuts_by_division(u32::MAX));
    }

    #[test]
    fn casync_chunker_matches_the_model(
        data in proptest::collection::vec(any::<u8>(), 0..20_000),
        min in 1usize..600,
        extra_avg in 0usize..600,
        extra_max in 0usize..2000,
    ) {
        let avg = min + extra_avg;
        let max = (avg + extra_max).max(CASYNC_WINDOW);
        let chunker = CasyncChunker::new(min, avg.min(max), max).unwrap();
        let mut model = CasyncModel::new(&chunker);
        let expected = model_lengths(&data, |b| model.push(b));
        prop_assert_eq!(fast_lengths(chunker, &data), expected);
    }
}
