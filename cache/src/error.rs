//! The crate's one error type.

use std::error::Error as StdError;
use std::sync::Arc;

/// A shared, type-erased fetch error. Every waiter of one failed fetch holds the same `Arc`.
pub type SharedError = Arc<dyn StdError + Send + Sync + 'static>;

/// Why [`Cache::get_or_fetch`](crate::Cache::get_or_fetch) gave no value.
///
/// The error is cheap to clone: all waiters of one fetch receive clones of one value. Nothing of
/// a failure is cached; the next call for the key starts a new fetch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The fetcher returned an error. The fetcher's own error is the [`source`](StdError::source)
    /// (not repeated in this message) and can be recovered with [`CacheError::fetch_error`].
    #[error("the fetch failed")]
    Fetch(#[source] SharedError),
    /// The fetcher panicked. The panic was contained; no waiter hangs.
    #[error("fetch panicked: {message}")]
    Panicked {
        /// The panic's message, when it carried a string.
        message: Arc<str>,
    },
    /// The fetch task was dropped before it finished, which happens only when the runtime that
    /// ran it shut down.
    #[error("fetch was abandoned before it finished (its runtime shut down)")]
    Abandoned,
    /// A fetch was needed but the caller is not inside a tokio runtime to run it on.
    #[error("a fetch needs a tokio runtime, and the caller is not running inside one")]
    NoRuntime,
}

impl CacheError {
    /// The fetcher's error as its own type, if this is a [`CacheError::Fetch`] of type `E`.
    #[must_use]
    pub fn fetch_error<E: StdError + 'static>(&self) -> Option<&E> {
        match self {
            Self::Fetch(shared) => shared.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// The shared fetch error itself, for comparing identity (`Arc::ptr_eq`) or keeping it.
    #[must_use]
    pub fn shared_fetch_error(&self) -> Option<&SharedError> {
        match self {
            Self::Fetch(shared) => Some(shared),
            _ => None,
        }
    }

    /// Whether the fetch panicked.
    #[must_use]
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panicked { .. })
    }
}
