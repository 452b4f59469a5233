//! Chunker throughput, side by side with two baselines on the same data: a plain pass that
//! sums the bytes (memory bandwidth) and SHA-256 (what every chunk costs afterwards).
//!
//! `cargo bench -p cairn-index --bench chunker`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;

use cairn_index::{CasyncChunker, DigestAlgorithm, PbsChunker, SliceChunks};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// 32 MiB of incompressible bytes from a xorshift generator (no zero runs: the chunker's worst
/// case, since every byte up to a cut is hashed).
fn data() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..32 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn chunkers(c: &mut Criterion) {
    let data = data();
    let mut group = c.benchmark_group("chunker");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(20);
    group.bench_function("baseline: sum of bytes", |b| {
        b.iter(|| {
            black_box(&data)
                .iter()
                .fold(0u64, |a, &x| a.wrapping_add(u64::from(x)))
        });
    });
    group.bench_function("baseline: sha256", |b| {
        b.iter(|| DigestAlgorithm::Sha256.digest(black_box(&data)));
    });
    group.bench_function("casync default (64 KiB avg)", |b| {
        b.iter(|| SliceChunks::new(CasyncChunker::default(), black_box(&data)).count());
    });
    group.bench_function("pbs default (4 MiB avg)", |b| {
        b.iter(|| SliceChunks::new(PbsChunker::default(), black_box(&data)).count());
    });
    group.finish();
}

criterion_group!(benches, chunkers);
criterion_main!(benches);
