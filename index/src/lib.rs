//! Chunk indexes of deduplicated backups: PBS fixed (`.fidx`) and dynamic (`.didx`) indexes and
//! casync indexes (`.caibx`, `.caidx`).
//!
//! **Status: not implemented yet.** This crate is an empty skeleton that reserves its place in
//! the workspace; it exports nothing. Reading, writing and validating the formats described in
//! the project's format notes, and the content-defined chunkers, arrive with the index issue.
