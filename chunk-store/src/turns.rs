//! One turn at a time per digest: work on a chunk waits for other work on the same chunk, so
//! concurrent requests for one chunk are served one after another (the second finds what the
//! first left) instead of side by side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::digest::Digest;

/// The turns under way, by digest; an entry lives while someone holds or waits for it.
#[derive(Debug, Default)]
pub(crate) struct Turns(Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// Runs `work` when no other work of this set on `digest` runs.
    pub(crate) async fn run<T>(&self, digest: &Digest, work: impl Future<Output = T>) -> T {
        let turn = Arc::clone(self.map().entry(*digest).or_default());
        // Leaves the map when this future ends or is dropped (a cancelled read) at any await.
        let entry = Entry {
            turns: self,
            digest: *digest,
            turn,
        };
        let _turn = entry.turn.lock().await;
        work.await
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<tokio::sync::Mutex<()>>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many digests have work under way or waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// One holder's (or waiter's) handle on a turn; removes the turn from the map when it is the
/// last.
struct Entry<'a> {
    turns: &'a Turns,
    digest: Digest,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let mut map = self.turns.map();
        // The map's handle and this one: nobody else waits, the entry can go. (Handles are
        // only cloned under the map's lock, so the count cannot grow behind our back.)
        if Arc::strong_count(&self.turn) == 2 {
            map.remove(&self.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_on_one_digest_never_overlaps_and_the_map_empties() {
        let turns = Arc::new(Turns::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (turns, inside, most) =
                    (Arc::clone(&turns), Arc::clone(&inside), Arc::clone(&most));
                tokio::spawn(async move {
                    let digest = [u8::from(i % 2 == 0); 32];
                    turns
                        .run(&digest, async {
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                            inside.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await;
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // Two digests: at most two pieces of work at once, one per digest.
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert_eq!(turns.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_dropped_while_waiting_or_working_leaves_no_entry() {
        let turns = Arc::new(Turns::default());
        let digest = [7; 32];
        let (started, start) = tokio::sync::oneshot::channel::<()>();
        let holder = {
            let turns = Arc::clone(&turns);
            tokio::spawn(async move {
                turns
                    .run(&digest, async {
                        let _ = started.send(());
                        std::future::pending::<()>().await;
                    })
                    .await;
            })
        };
        start.await.unwrap();
        // A second one waits for its turn and is given up on; then the holder is too.
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            turns.run(&digest, async {}),
        )
        .await;
        assert!(waited.is_err());
        assert_eq!(turns.len(), 1);
        holder.abort();
        assert!(holder.await.unwrap_err().is_cancelled());
        assert_eq!(turns.len(), 0);
        // And the digest takes turns again.
        turns.run(&digest, async {}).await;
        assert_eq!(turns.len(), 0);
    }
}
