//! How a cache obtains a missing value.

use std::error::Error as StdError;

/// Produces the value of a key the cache does not hold.
///
/// The cache runs [`fetch`](Fetch::fetch) as a task of its own, so the fetcher must be `'static`
/// and is passed to the cache inside an [`Arc`](std::sync::Arc). At most one fetch per key runs
/// at a time; every concurrent caller of that key waits for its outcome.
///
/// ```
/// use cairn_cache::Fetch;
///
/// struct Square;
///
/// #[async_trait::async_trait]
/// impl Fetch<u64, u64> for Square {
///     type Error = std::io::Error;
///     async fn fetch(&self, key: u64) -> Result<u64, Self::Error> {
///         Ok(key * key)
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Fetch<K, V>: Send + Sync + 'static {
    /// What a failed fetch reports. Every waiter receives it, shared, inside
    /// [`CacheError::Fetch`](crate::CacheError::Fetch).
    type Error: StdError + Send + Sync + 'static;

    /// Produces the value of `key`.
    ///
    /// # Errors
    /// Whatever the fetcher cannot produce; the error is shared with every waiter and not cached.
    async fn fetch(&self, key: K) -> Result<V, Self::Error>;
}
