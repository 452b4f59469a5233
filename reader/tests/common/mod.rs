//! Builds images, stores and indexes in memory for the reader's tests.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations,
    clippy::unwrap_used,
    clippy::missing_panics_doc
)]

use std::io::Cursor;
use std::sync::Arc;

use cairn_chunk_store::fault::FaultStore;
use cairn_chunk_store::{ChunkEncoding, ChunkSource, ChunkStore, DigestAlgorithm, MemoryStore};
use cairn_index::{ChunkIndex, DynamicIndexWriter, FixedIndexWriter, Index, OpenOptions, Origin};

/// Deterministic bytes: runs of noise, zeros and a repeated block.
pub fn image(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        let run = (next() % 20_000) as usize + 1;
        match next() % 3 {
            0 => data.extend((0..run).map(|_| next() as u8)),
            1 => data.extend(std::iter::repeat_n(0u8, run)),
            _ => data.extend((0..run).map(|i| (i % 97) as u8)),
        }
    }
    data.truncate(len);
    data
}

/// Incompressible bytes with no repeats.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// An image stored in memory (behind a fault store) with its index.
pub struct Fixture {
    pub image: Vec<u8>,
    pub index: Arc<dyn ChunkIndex>,
    pub memory: Arc<MemoryStore>,
    pub faults: Arc<FaultStore>,
}

impl Fixture {
    pub fn store(&self) -> Arc<dyn ChunkStore> {
        self.faults.clone()
    }
}

async fn store_chunks(image: &[u8], lengths: &[usize]) -> (Arc<MemoryStore>, Vec<(u64, [u8; 32])>) {
    let memory = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
    let source = ChunkSource::new(memory.clone(), DigestAlgorithm::Sha256);
    let mut entries = Vec::new();
    let mut at = 0usize;
    for &len in lengths {
        let (digest, _) = source.write(image[at..at + len].to_vec()).await.unwrap();
        at += len;
        entries.push((at as u64, digest));
    }
    (memory, entries)
}

/// A fixed index over `image` in chunks of `chunk_size`.
pub async fn fixed(image: Vec<u8>, chunk_size: usize) -> Fixture {
    let lengths: Vec<usize> = image.chunks(chunk_size).map(<[u8]>::len).collect();
    let (memory, entries) = store_chunks(&image, &lengths).await;
    let mut writer = FixedIndexWriter::new(Cursor::new(Vec::new()), chunk_size as u64).unwrap();
    for (_, digest) in &entries {
        writer.push(digest).unwrap();
    }
    let bytes = writer.finish(image.len() as u64).unwrap().into_inner();
    finish(image, bytes, memory)
}

/// A dynamic index over `image` in chunks of the given lengths (cycled).
pub async fn dynamic(image: Vec<u8>, pattern: &[usize]) -> Fixture {
    let mut lengths = Vec::new();
    let mut left = image.len();
    for &len in pattern.iter().cycle() {
        if left == 0 {
            break;
        }
        let len = len.clamp(1, left);
        lengths.push(len);
        left -= len;
    }
    let (memory, entries) = store_chunks(&image, &lengths).await;
    let mut writer = DynamicIndexWriter::new(Cursor::new(Vec::new())).unwrap();
    for (end, digest) in &entries {
        writer.push(*end, digest).unwrap();
    }
    let bytes = writer.finish().unwrap().into_inner();
    finish(image, bytes, memory)
}

fn finish(image: Vec<u8>, bytes: Vec<u8>, memory: Arc<MemoryStore>) -> Fixture {
    let index = Index::from_bytes(bytes, Origin::memory(), &OpenOptions::default()).unwrap();
    let faults = Arc::new(FaultStore::new(memory.clone()));
    Fixture {
        image,
        index: Arc::new(index),
        memory,
        faults,
    }
}
