//! Warm `read_at`: 4 KiB at random aligned offsets and 1 MiB sequential, on 1 and 2 threads, over
//! a 256 MiB image of 4 MiB chunks held in memory and all cached before the clock starts; beside
//! it, the same copies straight out of the decoded chunks (`memcpy`), the physical baseline.
//!
//! `cargo bench -p cairn-reader --bench read_at`

// criterion's macros generate undocumented items.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_chunk_store::{ChunkEncoding, ChunkSource, DigestAlgorithm, MemoryStore};
use cairn_index::{FixedIndex, FixedIndexWriter, OpenOptions, Origin};
use cairn_reader::{ChunkReader, ReaderOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const IMAGE: u64 = 256 << 20;
const CHUNK: usize = 4 << 20;

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A warm reader of a 256 MiB image of distinct incompressible 4 MiB chunks.
fn reader(runtime: &tokio::runtime::Runtime) -> (ChunkReader, Vec<Vec<u8>>) {
    runtime.block_on(async {
        let store = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
        let source = ChunkSource::new(store.clone(), DigestAlgorithm::Sha256);
        let mut writer =
            FixedIndexWriter::new(std::io::Cursor::new(Vec::new()), CHUNK as u64).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunks = Vec::new();
        for _ in 0..IMAGE / CHUNK as u64 {
            let chunk: Vec<u8> = (0..CHUNK).map(|_| (next(&mut state) >> 24) as u8).collect();
            let (digest, _) = source.write(chunk.clone()).await.unwrap();
            writer.push(&digest).unwrap();
            chunks.push(chunk);
        }
        let bytes = writer.finish(IMAGE).unwrap().into_inner();
        let index =
            FixedIndex::from_bytes(bytes, Origin::memory(), &OpenOptions::default()).unwrap();
        let reader = ChunkReader::new(
            Arc::new(index),
            store,
            ReaderOptions::default().cache_bytes(IMAGE + (64 << 20)),
        );
        for i in 0..reader.index().chunk_count() {
            reader.chunk(i).await.unwrap();
        }
        (reader, chunks)
    })
}

/// `iters` reads of `len` bytes over `tasks` tasks; random offsets aligned to `len`, or in order.
fn run_reads(
    runtime: &tokio::runtime::Runtime,
    reader: &ChunkReader,
    tasks: u64,
    len: usize,
    random: bool,
    iters: u64,
) -> Duration {
    let started = Instant::now();
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let reader = reader.new_stream();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; len];
                    let slots = IMAGE / len as u64;
                    let mut state = 0x2545_f491_4f6c_dd1d ^ (task + 1);
                    let first = task * (slots / tasks);
                    for at in first..first + iters.div_ceil(tasks) {
                        let slot = if random {
                            next(&mut state) % slots
                        } else {
                            at % slots
                        };
                        let read = reader.read_at(&mut buf, slot * len as u64).await.unwrap();
                        assert_eq!(read, len);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
    });
    started.elapsed()
}

/// The same copies out of the chunks with no reader: the physical baseline.
fn run_memcpy(chunks: &[Vec<u8>], threads: u64, len: usize, random: bool, iters: u64) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                let mut buf = vec![0u8; len];
                let slots = IMAGE / len as u64;
                let mut state = 0x2545_f491_4f6c_dd1d ^ (thread + 1);
                let first = thread * (slots / threads);
                for at in first..first + iters.div_ceil(threads) {
                    let slot = if random {
                        next(&mut state) % slots
                    } else {
                        at % slots
                    };
                    let offset = usize::try_from(slot).unwrap() * len;
                    let chunk = &chunks[offset / CHUNK];
                    buf.copy_from_slice(&chunk[offset % CHUNK..offset % CHUNK + len]);
                    std::hint::black_box(&buf);
                }
            });
        }
    });
    started.elapsed()
}

fn read_at(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (reader, chunks) = reader(&runtime);
    for (name, len, random) in [
        ("4KiB_random", 4096, true),
        ("1MiB_sequential", 1 << 20, false),
    ] {
        let mut group = c.benchmark_group(format!("read_at/{name}"));
        group.throughput(Throughput::Elements(1));
        for threads in [1u64, 2] {
            group.bench_function(format!("cairn/{threads}_tasks"), |b| {
                b.iter_custom(|iters| run_reads(&runtime, &reader, threads, len, random, iters));
            });
            group.bench_function(format!("memcpy/{threads}_threads"), |b| {
                b.iter_custom(|iters| run_memcpy(&chunks, threads, len, random, iters));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, read_at);
criterion_main!(benches);
