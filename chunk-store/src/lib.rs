//! Chunk codecs and chunk stores of deduplicated backups.
//!
//! - Codecs: PBS DataBlobs ([`encode_blob`], [`decode_blob`]) and casync chunk files
//!   ([`encode_casync_chunk`], [`decode_casync_chunk`]: zstd, xz, gzip). Sizes are bounded before
//!   anything is allocated; encrypted blobs are recognised and refused with a clear error.
//! - Stores, behind one trait, [`ChunkStore`]: a PBS datastore ([`PbsDatastore`]), a casync
//!   store ([`CastrStore`]) and memory ([`MemoryStore`]); with the `s3` and `http` features,
//!   object storage. Inserts are atomic.
//! - In front of any store: a bounded local disk tier ([`DiskTier`]) and a chain of stores read
//!   in order ([`StoreChain`]).
//! - [`ChunkSource`]: verified plaintext of digest D and length L, decoded off the async
//!   workers; the only way data leaves the crate.
//!
//! ```
//! use std::sync::Arc;
//! use cairn_chunk_store::{ChunkEncoding, ChunkSource, DigestAlgorithm, MemoryStore, PutOutcome};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cairn_chunk_store::StoreError> {
//! let store = Arc::new(MemoryStore::new(ChunkEncoding::PbsBlob));
//! let source = ChunkSource::new(store, DigestAlgorithm::Sha256);
//! let (digest, outcome) = source.write(b"hello proxmox".to_vec()).await?;
//! assert_eq!(outcome, PutOutcome::Inserted);
//! assert_eq!(source.read(&digest, 13).await?, b"hello proxmox");
//! # Ok(())
//! # }
//! ```
//!
//! With the `testing` feature: [`fault::FaultStore`], which injects errors, delays, panics and
//! corruption, and [`conformance::check_store`], the suite every store passes.

mod blob;
mod castr;
mod casync_chunk;
mod chain;
#[cfg(feature = "testing")]
pub mod codec_checks;
#[cfg(feature = "testing")]
pub mod conformance;
mod cpu;
#[cfg(feature = "crypto")]
mod crypt;
mod digest;
mod error;
#[cfg(feature = "testing")]
pub mod fault;
mod fs;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "crypto")]
mod keyfile;
mod memory;
#[cfg(feature = "remote")]
mod object;
mod pbs;
#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "serve")]
pub mod serve;
mod source;
mod store;
mod tier;
mod turns;

pub use crate::blob::{decode_blob, encode_blob, encode_blob_uncompressed};
pub use crate::castr::CastrStore;
pub use crate::casync_chunk::{decode_casync_chunk, encode_casync_chunk};
pub use crate::chain::{RejectReport, StoreChain};
pub use crate::cpu::{CpuLimit, CpuTaskFailure};
#[cfg(feature = "crypto")]
pub use crate::crypt::{CryptKey, Fingerprint};
pub use crate::digest::{Digest, DigestAlgorithm, Hex, from_hex, to_hex};
pub use crate::error::{CodecError, Location, RemoteError, Result, StoreError};
#[cfg(feature = "http")]
pub use crate::http::{HttpOptions, HttpStore};
#[cfg(feature = "crypto")]
pub use crate::keyfile::{Kdf, KeyError, KeyFile, MIN_PASSPHRASE, rfc3339_utc};
pub use crate::memory::MemoryStore;
#[cfg(feature = "remote")]
pub use crate::object::{ObjectBody, ObjectLayout};
pub use crate::pbs::PbsDatastore;
#[cfg(feature = "s3")]
pub use crate::s3::{S3Options, S3Store};
pub use crate::source::{
    ChunkSource, MAX_ENCODED_CHUNK, decode_chunk, encode_chunk, max_encoded_len,
};
pub use crate::store::{
    ChunkEncoding, ChunkStat, ChunkStore, EncodedChunk, LocalChunks, PutOutcome, SyncLevel,
};
pub use crate::tier::{DISK_CACHE_MARKER, DiskTier, TierStats};

/// The formats' numbers and kinds: blob magics and header sizes, the 128 MiB blob cap, the
/// magics of casync's compressions, and what kind of blob or casync chunk some bytes are.
pub mod format {
    pub use crate::blob::{
        BLOB_HEADER_SIZE, BlobKind, COMPRESSED_BLOB_MAGIC, ENCRYPTED_BLOB_HEADER_SIZE,
        ENCRYPTED_BLOB_MAGIC, ENCRYPTED_COMPRESSED_BLOB_MAGIC, MAX_BLOB_SIZE,
        UNCOMPRESSED_BLOB_MAGIC,
    };
    pub use crate::casync_chunk::{CasyncCompression, GZIP_MAGIC, XZ_MAGIC, ZSTD_MAGIC};
}

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
