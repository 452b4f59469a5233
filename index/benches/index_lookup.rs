//! Offset lookup and open time of fixed and dynamic indexes of 262,144 entries (1 TiB of 4 MiB
//! chunks; a dynamic index with chunk ends spread between 1 and 7 MiB apart).
//!
//! `cargo bench -p cairn-index --bench index_lookup`

// criterion's macros generate undocumented items.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::io::Cursor;

use cairn_index::{
    ChunkIndex, DynamicIndex, DynamicIndexWriter, FixedIndex, FixedIndexWriter, OpenOptions, Origin,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const ENTRIES: u64 = 262_144;
const CHUNK: u64 = 4 << 20;

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn digest(&mut self) -> [u8; 32] {
        let mut digest = [0u8; 32];
        for part in digest.chunks_mut(8) {
            part.copy_from_slice(&self.next().to_le_bytes());
        }
        digest
    }
}

fn fixed_bytes() -> Vec<u8> {
    let mut random = Xorshift(or_one(0x1d));
    let mut writer = FixedIndexWriter::new(Cursor::new(Vec::new()), CHUNK).unwrap();
    for _ in 0..ENTRIES {
        writer.push(&random.digest()).unwrap();
    }
    writer.finish(ENTRIES * CHUNK).unwrap().into_inner()
}

fn dynamic_bytes() -> (Vec<u8>, u64) {
    let mut random = Xorshift(or_one(0x2d));
    let mut writer = DynamicIndexWriter::new(Cursor::new(Vec::new())).unwrap();
    let mut end = 0u64;
    for _ in 0..ENTRIES {
        end += (1 << 20) + random.next() % (6 << 20);
        writer.push(end, &random.digest()).unwrap();
    }
    (writer.finish().unwrap().into_inner(), end)
}

/// Seeds that are never zero (xorshift's one fixed point).
const fn or_one(seed: u64) -> u64 {
    if seed == 0 { 1 } else { seed }
}

fn lookups(c: &mut Criterion) {
    let fixed =
        FixedIndex::from_bytes(fixed_bytes(), Origin::memory(), &OpenOptions::default()).unwrap();
    let (dynamic_raw, size) = dynamic_bytes();
    let dynamic =
        DynamicIndex::from_bytes(dynamic_raw, Origin::memory(), &OpenOptions::default()).unwrap();
    let mut group = c.benchmark_group("locate");
    group.throughput(Throughput::Elements(1024));
    for (name, index, size) in [
        ("fidx_262144", &fixed as &dyn ChunkIndex, ENTRIES * CHUNK),
        ("didx_262144", &dynamic as &dyn ChunkIndex, size),
    ] {
        let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
        let offsets: Vec<u64> = (0..1024).map(|_| random.next() % size).collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                for &offset in &offsets {
                    black_box(index.locate(black_box(offset)));
                }
            });
        });
    }
    group.finish();
}

fn opens(c: &mut Criterion) {
    let fixed = fixed_bytes();
    let (dynamic, _) = dynamic_bytes();
    let mut group = c.benchmark_group("open");
    group.sample_size(20);
    for (checksum, options) in [
        ("checked", OpenOptions::default()),
        ("unchecked", OpenOptions::default().verify_checksum(false)),
    ] {
        group.bench_function(format!("fidx_262144_{checksum}"), |b| {
            b.iter_batched(
                || fixed.clone(),
                |bytes| FixedIndex::from_bytes(bytes, Origin::memory(), &options).unwrap(),
                BatchSize::LargeInput,
            );
        });
        group.bench_function(format!("didx_262144_{checksum}"), |b| {
            b.iter_batched(
                || dynamic.clone(),
                |bytes| DynamicIndex::from_bytes(bytes, Origin::memory(), &options).unwrap(),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, lookups, opens);
criterion_main!(benches);
