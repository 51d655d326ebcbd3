use std::future::Future;

use super::{EventRecord, QueueError, StoreError};
use crate::contract::Timestamp;
use crate::reconcile::Report;

/// What reconciliation reads and writes in the store.
pub trait ReconcileStore: Send + Sync {
    /// Events still awaiting delivery whose claim is older than `cutoff`, oldest first, found
    /// through the sparse pending index (never a scan).
    fn pending_before(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<EventRecord>, StoreError>> + Send;

    fn save_run(&self, report: &Report) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn last_run(&self) -> impl Future<Output = Result<Option<Report>, StoreError>> + Send;
}

/// A queue's depth, and the age of its oldest message where the queue can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    pub messages: u64,
    pub oldest_age_secs: Option<u64>,
}

pub trait QueueStats: Send + Sync {
    fn depth(&self) -> impl Future<Output = Result<Depth, QueueError>> + Send;
}
