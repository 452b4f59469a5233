//! Chunk digests: the shared vocabulary of `cairn-digest`, re-exported.

pub use cairn_digest::{Digest, DigestAlgorithm, Hex, from_hex, to_hex};
