//! The limit on CPU-heavy work (decoding, hashing, encoding): blocking threads, at most so many
//! at once, so the async workers stay free and the cores are shared, not oversubscribed.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// At most `threads` pieces of CPU-heavy work at once, each on a blocking thread. Cheap to
/// clone; clones share the limit, so everything one process decodes and encodes (a
/// [`ChunkSource`](crate::ChunkSource)'s reads and writes, a chunk server's re-encoding) can
/// take turns on the same cores.
#[derive(Debug, Clone)]
pub struct CpuLimit {
    threads: Arc<Semaphore>,
}

/// Why work given to a [`CpuLimit`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuTaskFailure {
    /// The work panicked.
    Panicked,
    /// Its thread was cancelled (the runtime is shutting down).
    Cancelled,
}

impl CpuTaskFailure {
    /// What happened, in words.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::Panicked => "the work panicked",
            Self::Cancelled => "the work was cancelled",
        }
    }
}

impl CpuLimit {
    /// One thread per core.
    #[must_use]
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::threads(cores)
    }

    /// `threads` at once (at least 1).
    #[must_use]
    pub fn threads(threads: usize) -> Self {
        Self {
            threads: Arc::new(Semaphore::new(threads.max(1))),
        }
    }

    /// Runs `work` on a blocking thread once one of the limit's turns is free; in place when
    /// not inside a runtime.
    ///
    /// # Errors
    /// If `work` panicked or its thread was cancelled.
    pub async fn run<T, F>(&self, work: F) -> Result<T, CpuTaskFailure>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(work());
        }
        let permit = Arc::clone(&self.threads).acquire_owned().await.ok();
        // The permit goes with the work and is released where it ends, not once this task is
        // polled again: the next piece of work starts at once.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|join| {
            if join.is_panic() {
                CpuTaskFailure::Panicked
            } else {
                CpuTaskFailure::Cancelled
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_limit_run_at_once_and_panics_are_reported() {
        let limit = CpuLimit::threads(2);
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (limit, inside, most) = (limit.clone(), Arc::clone(&inside), Arc::clone(&most));
                tokio::spawn(async move {
                    limit
                        .run(move || {
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            inside.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        #[allow(clippy::panic)]
        let failed = limit.run(|| panic!("on purpose")).await;
        assert_eq!(failed, Err(CpuTaskFailure::Panicked));
        // The panicking work gave its turn back.
        assert_eq!(limit.run(|| 7).await, Ok(7));
    }
}
