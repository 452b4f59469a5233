//! Several stores read as one: the first that has a chunk gives it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::source::MAX_ENCODED_CHUNK;
use crate::store::{ChunkEncoding, ChunkStat, ChunkStore, EncodedChunk, PutOutcome};

/// How many chunks' serving store a chain remembers for [`reject`](ChunkStore::reject).
const REMEMBERED: usize = 1 << 16;

/// What a chain calls with the error of each chunk it rejects and reads from a later store.
pub type RejectReport = Arc<dyn Fn(&StoreError) + Send + Sync>;

/// Stores in order, read as one: a chunk comes from the first store that has it, writes go to
/// the first store.
///
/// - A chunk **missing** from one store is looked for in the next; missing everywhere is
///   [`StoreError::Missing`] naming the first.
/// - A chunk one store gives that fails verification is **reported** (to the
///   [report](StoreChain::with_report)) and read from the next store.
/// - Any other error (a store that cannot be read, a service that is down) is returned: a
///   chain does not hide an outage.
/// - `put`, `contains`, `touch` and `sync` are the first store's, so that a backup into a
///   chain stores every chunk its index names in the first store.
#[derive(Clone)]
pub struct StoreChain {
    stores: Vec<Arc<dyn ChunkStore>>,
    name: Arc<str>,
    state: Arc<Mutex<State>>,
    report: Option<RejectReport>,
    fell_through: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct State {
    /// The store that last gave each chunk (bounded; forgotten entries mean the first).
    served: HashMap<Digest, usize>,
    /// Per chunk, the first store still to ask (stores before it gave bad bytes).
    skip: HashMap<Digest, usize>,
}

impl fmt::Debug for StoreChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreChain")
            .field("stores", &self.stores)
            .finish_non_exhaustive()
    }
}

impl StoreChain {
    /// A chain of `stores`, read in this order.
    ///
    /// # Errors
    /// [`StoreError::Store`] if `stores` is empty.
    pub fn new(stores: Vec<Arc<dyn ChunkStore>>) -> Result<Self> {
        let names: Vec<&str> = stores.iter().map(|s| &**s.name()).collect();
        let name: Arc<str> = Arc::from(names.join(" + "));
        if stores.is_empty() {
            return Err(StoreError::store(
                &name,
                "a store chain needs a store",
                None,
            ));
        }
        Ok(Self {
            stores,
            name,
            state: Arc::default(),
            report: None,
            fell_through: Arc::default(),
        })
    }

    /// Calls `report` with the error of every chunk rejected from a store of the chain.
    #[must_use]
    pub fn with_report(mut self, report: impl Fn(&StoreError) + Send + Sync + 'static) -> Self {
        self.report = Some(Arc::new(report));
        self
    }

    /// The stores, in order.
    #[must_use]
    pub fn stores(&self) -> &[Arc<dyn ChunkStore>] {
        &self.stores
    }

    /// How many reads were served by a store after the first.
    #[must_use]
    pub fn fell_through(&self) -> u64 {
        self.fell_through.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StoreChain {
    /// Chunk `digest` from the first store that has it (`limit` passed on to each).
    async fn get_from_first(&self, digest: &Digest, limit: u64) -> Result<EncodedChunk> {
        let start = self.state().skip.get(digest).copied().unwrap_or(0);
        let mut first_missing = None;
        for (index, store) in self.stores.iter().enumerate().skip(start) {
            match store.get_within(digest, limit).await {
                Ok(chunk) => {
                    if index > 0 {
                        self.fell_through.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut state = self.state();
                    if state.served.len() >= REMEMBERED {
                        state.served.clear();
                    }
                    state.served.insert(*digest, index);
                    return Ok(chunk);
                }
                Err(error) if error.is_missing() => {
                    first_missing.get_or_insert(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(match first_missing {
            Some(StoreError::Missing {
                digest, location, ..
            }) => StoreError::Missing {
                store: Arc::clone(&self.name),
                digest,
                location,
            },
            Some(other) => other,
            // Every store was rejected for this chunk: the last rejection said why.
            None => StoreError::missing(
                &self.name,
                digest,
                crate::error::Location::Key(format!("{} (every copy was bad)", self.name)),
            ),
        })
    }
}

#[async_trait::async_trait]
impl ChunkStore for StoreChain {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn encoding(&self) -> ChunkEncoding {
        self.stores[0].encoding()
    }

    async fn get(&self, digest: &Digest) -> Result<EncodedChunk> {
        self.get_from_first(digest, MAX_ENCODED_CHUNK).await
    }

    async fn get_within(&self, digest: &Digest, limit: u64) -> Result<EncodedChunk> {
        self.get_from_first(digest, limit).await
    }

    /// The first store's that has the chunk (missing falls through, other errors stop).
    async fn stat(&self, digest: &Digest) -> Result<ChunkStat> {
        let mut first_missing = None;
        for store in &self.stores {
            match store.stat(digest).await {
                Err(error) if error.is_missing() => {
                    first_missing.get_or_insert(error);
                }
                other => return other,
            }
        }
        Err(first_missing.unwrap_or_else(|| {
            StoreError::missing(&self.name, digest, crate::error::Location::Memory)
        }))
    }

    async fn put(&self, digest: &Digest, encoded: Vec<u8>) -> Result<PutOutcome> {
        self.stores[0].put(digest, encoded).await
    }

    async fn contains(&self, digest: &Digest) -> Result<bool> {
        self.stores[0].contains(digest).await
    }

    async fn touch(&self, digest: &Digest) -> Result<bool> {
        self.stores[0].touch(digest).await
    }

    async fn sync(&self) -> Result<()> {
        self.stores[0].sync().await
    }

    async fn reject(&self, digest: &Digest, error: &StoreError) -> bool {
        let index = {
            let mut state = self.state();
            let start = state.skip.get(digest).copied().unwrap_or(0);
            state.served.remove(digest).unwrap_or(start)
        };
        let Some(store) = self.stores.get(index) else {
            return false;
        };
        // A store with another copy of its own (a disk tier) tries that first.
        if store.reject(digest, error).await {
            return true;
        }
        if let Some(report) = &self.report {
            report(error);
        }
        let next = index + 1;
        self.state().skip.insert(*digest, next);
        next < self.stores.len()
    }
}
