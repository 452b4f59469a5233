//! The synchronisation the cache is built from, in one place: std's locks and atomics and tokio's
//! tasks normally; shuttle's under `cfg(shuttle)`, so the model checker in `tests/shuttle.rs`
//! controls every interleaving of the in-flight protocol.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::task::{Poll, Waker};

#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{AtomicU64, Ordering};
#[cfg(shuttle)]
pub(crate) use shuttle::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(shuttle))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(shuttle))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::CacheError;

/// Locks `mutex`. No user code runs under the cache's locks, so a poisoned lock still guards a
/// consistent state.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `rwlock` for reading (poisoning ignored, as for [`lock`]).
pub(crate) fn read<T>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `rwlock` for writing (poisoning ignored, as for [`lock`]).
pub(crate) fn write<T>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Where fetch tasks run.
#[derive(Debug, Clone)]
pub(crate) struct Spawner {
    #[cfg(not(shuttle))]
    handle: tokio::runtime::Handle,
}

impl Spawner {
    /// The caller's runtime, if it is inside one.
    pub(crate) fn current() -> Option<Self> {
        #[cfg(not(shuttle))]
        {
            tokio::runtime::Handle::try_current()
                .ok()
                .map(|handle| Self { handle })
        }
        #[cfg(shuttle)]
        {
            Some(Self {})
        }
    }

    /// Runs `task` on its own; nobody waits for its handle.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        #[cfg(not(shuttle))]
        drop(self.handle.spawn(task));
        #[cfg(shuttle)]
        drop(shuttle::future::spawn(task));
    }
}

/// A fetch's outcome, published once to any number of waiters.
#[derive(Debug)]
pub(crate) struct Outcome<V> {
    state: Mutex<OutcomeState<V>>,
}

#[derive(Debug)]
struct OutcomeState<V> {
    result: Option<Result<V, CacheError>>,
    waiters: Vec<Waker>,
}

impl<V: Clone> Outcome<V> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(OutcomeState {
                result: None,
                waiters: Vec::new(),
            }),
        })
    }

    /// Publishes the result and wakes every waiter; a second publish is ignored.
    pub(crate) fn publish(&self, result: Result<V, CacheError>) {
        let waiters = {
            let mut state = lock(&self.state);
            if state.result.is_some() {
                return;
            }
            state.result = Some(result);
            std::mem::take(&mut state.waiters)
        };
        for waker in waiters {
            waker.wake();
        }
    }

    /// Waits for the result.
    pub(crate) async fn wait(self: Arc<Self>) -> Result<V, CacheError> {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            if let Some(result) = &state.result {
                return Poll::Ready(result.clone());
            }
            if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
