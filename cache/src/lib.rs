//! A generic async LRU cache that fetches each missing key once.
//!
//! [`Cache::get_or_fetch`] returns a cached value, or waits for the one fetch of that key in
//! flight, or starts it. The fetch runs as a task of its own, so callers may be cancelled, time
//! out or stall without affecting it or each other; its value, error or panic reaches every
//! waiter, and failures are never cached. Entries are weighed (by count, or by bytes with a
//! [`Weighter`]) against a capacity that the cached weight never exceeds; the least recently used
//! entries leave first. Lookups lock only one of several shards and allocate nothing; a hit of a
//! recent entry takes that lock for reading only and moves nothing (see [`Cache`] on promotion).
//!
//! ```
//! use std::sync::Arc;
//! use cairn_cache::{Cache, CacheError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), CacheError> {
//! // Up to 1 MiB of byte buffers, weighed by their length.
//! let cache = Cache::with_weighter(1 << 20, |_: &u64, v: &Arc<[u8]>| v.len() as u64);
//! let chunk = cache
//!     .get_or_fetch_with(7, |key| async move {
//!         Ok::<_, std::io::Error>(Arc::from(vec![key as u8; 4096]))
//!     })
//!     .await?;
//! assert_eq!(chunk.len(), 4096);
//! assert_eq!(cache.weight(), 4096);
//! assert_eq!(cache.stats().misses, 1);
//! # Ok(())
//! # }
//! ```
//!
//! See [`Cache`] for the guarantees in detail: coalescing, cancellation, errors, panics,
//! capacity, and what "least recently used" means across shards.

mod cache;
mod error;
mod fetch;
mod lru;
#[cfg(any(test, feature = "testing"))]
pub mod model;
mod stats;
mod sync;
mod weighter;

#[cfg(test)]
mod proptests;

pub use crate::cache::{Cache, CacheBuilder};
pub use crate::error::{CacheError, SharedError};
pub use crate::fetch::Fetch;
pub use crate::stats::CacheStats;
pub use crate::weighter::{UnitWeighter, Weighter};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
