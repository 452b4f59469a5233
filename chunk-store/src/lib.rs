//! Chunk codecs and chunk stores: PBS DataBlobs and datastores, casync `.castr` stores, a memory
//! store.
//!
//! **Status: not implemented yet.** This crate is an empty skeleton that reserves its place in
//! the workspace; it exports nothing. The codecs, the `ChunkStore` trait, the stores and their
//! conformance suite arrive with the chunk-store issue.
