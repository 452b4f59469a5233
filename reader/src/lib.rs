//! Random access to the image a chunk index describes, with every chunk fetched through a
//! shared async LRU cache, so concurrent readers of one chunk cause exactly one fetch.
//!
//! This crate is where the three layer-0 crates meet: an index from `cairn-index`, a store
//! from `cairn-chunk-store`, a cache from `cairn-cache`.
//!
//! ```
//! use std::sync::Arc;
//! use cairn_chunk_store::{ChunkEncoding, ChunkSource, DigestAlgorithm, MemoryStore};
//! use cairn_index::{FixedIndexWriter, FixedIndex, OpenOptions, Origin};
//! use cairn_reader::{ChunkReader, ReaderOptions};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A 10 000-byte image in chunks of 4096, stored in memory.
//! let image: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
//! let store = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
//! let source = ChunkSource::new(store.clone(), DigestAlgorithm::Sha256);
//! let mut writer = FixedIndexWriter::new(std::io::Cursor::new(Vec::new()), 4096)?;
//! for chunk in image.chunks(4096) {
//!     let (digest, _) = source.write(chunk.to_vec()).await?;
//!     writer.push(&digest)?;
//! }
//! let bytes = writer.finish(image.len() as u64)?.into_inner();
//! let index = FixedIndex::from_bytes(bytes, Origin::memory(), &OpenOptions::default())?;
//!
//! let reader = ChunkReader::new(Arc::new(index), store, ReaderOptions::default());
//! let mut buf = vec![0; 5000];
//! let read = reader.read_at(&mut buf, 3000).await?; // spans three chunks, fetched at once
//! assert_eq!(read, 5000);
//! assert_eq!(buf, image[3000..8000]);
//! assert_eq!(reader.read_at(&mut buf, 10_000).await?, 0);
//! # Ok(())
//! # }
//! ```

mod async_io;
mod blocking;
mod error;
#[cfg(feature = "nbd")]
pub mod nbd;
mod output;
mod reader;
mod restore;
#[cfg(feature = "testing")]
pub mod testing;
mod verify;
mod zero;

pub use crate::async_io::AsyncChunkReader;
pub use crate::blocking::BlockingChunkReader;
pub use crate::error::{ChunkFailure, ReaderError};
pub use crate::reader::{
    ChunkCache, ChunkData, ChunkReader, ChunkSizeWeigher, ImageSlice, MAX_CONCURRENCY,
    MAX_READAHEAD_CHUNKS, ReaderOptions, ReaderStats, SlicedRead, chunk_cache,
};
pub use crate::restore::{
    OutputKind, Progress, RestoreOptions, Restored, restore_to_path, restore_to_writer,
};
pub use crate::verify::{BadChunk, VerifyOptions, VerifyReport, verify, verify_source};
