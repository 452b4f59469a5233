//! Random access (`read_at`, `Read + Seek`, `AsyncRead + AsyncSeek`) to the image a chunk index
//! describes, with every chunk fetched through a shared `cairn-cache` cache.
//!
//! **Status: not implemented yet.** This crate is an empty skeleton that reserves its place in
//! the workspace; it exports nothing. It is the one crate allowed to combine `cairn-index`,
//! `cairn-chunk-store` and `cairn-cache`, and it arrives with the reader issue.
