//! Decode + verify of stored chunks, side by side with their parts: raw zstd decompression and
//! each digest alone (`sha2`, and `ring` for comparison), for 4 MiB (PBS) and 64 KiB (casync)
//! chunks of half-compressible data.
//!
//! `cargo bench -p cairn-chunk-store --bench codecs`

// criterion's macros generate undocumented items.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use cairn_chunk_store::{
    DigestAlgorithm, decode_blob, decode_casync_chunk, encode_blob, encode_casync_chunk,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// `len` bytes alternating 4 KiB of noise with 4 KiB of a short repeated pattern (zstd gets
/// about 2:1, as on a filled disk image).
fn plaintext(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            } else {
                (i % 61) as u8
            }
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    for (name, len) in [("4MiB", 4usize << 20), ("64KiB", 64 << 10)] {
        let plain = plaintext(len);
        let blob = encode_blob(&plain).unwrap();
        let casync = encode_casync_chunk(&plain).unwrap();
        let sha256 = DigestAlgorithm::Sha256.digest(&plain);
        let sha512_256 = DigestAlgorithm::Sha512_256.digest(&plain);
        // The zstd frame inside the blob: after the 8-byte magic and 4-byte CRC.
        let frame = &blob[12..];
        let mut group = c.benchmark_group(format!("decode_verify/{name}"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("pbs_blob_sha256", |b| {
            b.iter(|| {
                let decoded = decode_blob(black_box(&blob), len).unwrap();
                assert_eq!(DigestAlgorithm::Sha256.digest(&decoded), sha256);
            });
        });
        group.bench_function("casync_zstd_sha512_256", |b| {
            b.iter(|| {
                let decoded = decode_casync_chunk(black_box(&casync), len).unwrap();
                assert_eq!(DigestAlgorithm::Sha512_256.digest(&decoded), sha512_256);
            });
        });
        group.bench_function("raw_zstd_decompress", |b| {
            b.iter(|| zstd::bulk::decompress(black_box(frame), len).unwrap());
        });
        group.bench_function("sha2_sha256", |b| {
            b.iter(|| DigestAlgorithm::Sha256.digest(black_box(&plain)));
        });
        group.bench_function("ring_sha256", |b| {
            b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(&plain)));
        });
        group.bench_function("sha2_sha512_256", |b| {
            b.iter(|| DigestAlgorithm::Sha512_256.digest(black_box(&plain)));
        });
        group.bench_function("ring_sha512_256", |b| {
            b.iter(|| ring::digest::digest(&ring::digest::SHA512_256, black_box(&plain)));
        });
        group.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
