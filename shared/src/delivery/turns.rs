//! Turns per entity: within one process, events about the same entity are applied one at a
//! time. Concurrent workers would otherwise read the same version and all but one would lose
//! the versioned write; a message that loses too often goes back on the queue, and every
//! return costs it a receive towards the dead-letter queue. Across processes the versioned
//! write still decides; this only stops a process from racing itself.

use std::hash::{BuildHasher, RandomState};

use tokio::sync::{Mutex, MutexGuard};

use crate::contract::EntityKind;

/// Locks striped by entity: bounded memory whatever the number of entities, at the price of
/// two entities sometimes sharing a stripe (and so taking turns they did not need to).
#[derive(Debug)]
pub(super) struct Turns {
    stripes: Box<[Mutex<()>]>,
    hasher: RandomState,
}

impl Turns {
    pub(super) fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Waits for the entity's turn; the turn lasts as long as the guard.
    pub(super) async fn take(&self, kind: EntityKind, id: &str) -> MutexGuard<'_, ()> {
        self.stripes[self.stripe(kind, id)].lock().await
    }

    fn stripe(&self, kind: EntityKind, id: &str) -> usize {
        let hash = self.hasher.hash_one((kind, id));
        let len = u64::try_from(self.stripes.len()).unwrap_or(u64::MAX);
        usize::try_from(hash % len).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_entity_is_held_by_one_task_at_a_time() {
        let turns = Arc::new(Turns::new(64));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (turns, inside, most) = (turns.clone(), inside.clone(), most.clone());
            tasks.spawn(async move {
                for _ in 0..50 {
                    let _turn = turns.take(EntityKind::Payment, "pi_1").await;
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn another_entity_is_not_held_up_by_a_turn() {
        let turns = Turns::new(64);
        let held = turns.take(EntityKind::Payment, "pi_1").await;
        // Stripes are shared by design; pick an entity on another one.
        let other = (0..10_000)
            .map(|i| format!("ord_{i}"))
            .find(|id| {
                turns.stripe(EntityKind::Order, id) != turns.stripe(EntityKind::Payment, "pi_1")
            })
            .expect("another stripe");
        let taken = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            turns.take(EntityKind::Order, &other),
        )
        .await;
        assert!(taken.is_ok(), "{other} waited for pi_1's turn");
        drop(held);
    }
}
