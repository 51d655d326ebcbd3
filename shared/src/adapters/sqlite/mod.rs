//! The local store and queue on one SQLite database (WAL, `synchronous=FULL`), with the same
//! semantics as DynamoDB + SQS: conditional claims, versioned entities, leased deliveries, and a
//! queue with visibility timeouts, receive counts and a dead-letter queue.
//!
//! Every operation runs on one writer thread. It takes whatever operations are waiting, runs
//! each in its own savepoint of one transaction, commits once, and only then answers them all:
//! concurrent requests share one fsync (group commit), and nothing is answered before it is
//! durable.

mod deliveries;
mod events;
mod inbox;
mod ledger;
mod query;
mod queue;
mod runs;
mod schema;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use rusqlite::{Connection, Params, Row, TransactionBehavior};
use tokio::sync::{Notify, mpsc, oneshot};

pub use crate::inspect::{EventRow, LedgerEffect, Timeline};
pub use inbox::{InboxEntry, InboxTarget};
pub use query::{EventFilter, Minute, TargetStats};
pub use queue::{LocalMessage, MAX_RECEIVES_DEFAULT};
pub use runs::LocalDeadLetters;

use crate::ports::StoreError;

/// The most operations one transaction groups.
const GROUP_LIMIT: usize = 512;

/// Enough for every statement the store runs, so none is ever parsed twice.
const STATEMENT_CACHE: usize = 96;

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// An operation: run on the group's connection, or (`None`) told that no transaction could be had.
type Op = Box<dyn FnOnce(Option<&Connection>) -> (bool, Completion) + Send>;

/// The local store, queue and dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    ops: mpsc::UnboundedSender<Op>,
    /// Woken when a message is enqueued, so the worker need not poll.
    pub(crate) enqueued: Arc<Notify>,
    max_receives: u32,
    /// Holds on first attempts (`HistoryEntry::held_until`) that end before this (Unix ms)
    /// were taken by a process that died: `recover_in_flight` sets it.
    pub(crate) void_holds_before_ms: Arc<AtomicI64>,
}

fn sql_error(e: &rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Throttled(Box::new(std::io::Error::other(e.to_string())))
        }
        _ => StoreError::Unavailable(Box::new(std::io::Error::other(e.to_string()))),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/plumbline.db`. `max_receives` plays SQS's
    /// `maxReceiveCount`: a message handed out that many times goes to the dead-letter queue.
    pub fn open(dir: &Path, max_receives: u32) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let mut conn = Connection::open(dir.join("plumbline.db")).map_err(|e| sql_error(&e))?;
        schema::prepare(&conn).map_err(|e| sql_error(&e))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (tx, mut rx) = mpsc::unbounded_channel::<Op>();
        std::thread::Builder::new()
            .name("plumbline-sqlite".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut ops = vec![first];
                    while ops.len() < GROUP_LIMIT {
                        match rx.try_recv() {
                            Ok(op) => ops.push(op),
                            Err(_) => break,
                        }
                    }
                    run_group(&mut conn, ops);
                }
            })
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Ok(Self {
            ops: tx,
            enqueued: Arc::new(Notify::new()),
            max_receives,
            void_holds_before_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Whether `other` is a handle on the same database (so one transaction can span both).
    pub(crate) fn shares_database_with(&self, other: &Self) -> bool {
        self.ops.same_channel(&other.ops)
    }

    /// Runs `f` in the next group transaction; answers once that transaction is committed.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(StoreError::Unavailable(
                    "no transaction could be started".into(),
                )),
            };
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let answer = match commit {
                    Ok(()) => result,
                    Err(why) => Err(StoreError::Unavailable(Box::new(std::io::Error::other(
                        why,
                    )))),
                };
                let _ = tx.send(answer);
            });
            (ok, completion)
        });
        self.ops
            .send(op)
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?
    }
}

/// One transaction for a group of operations; each in a savepoint, so one failing operation
/// rolls back alone.
fn run_group(conn: &mut Connection, ops: Vec<Op>) {
    let txn = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(txn) => txn,
        Err(e) => {
            let why = e.to_string();
            for op in ops {
                // Without a transaction nothing may run; every caller hears why.
                let (_, completion) = op(None);
                completion(Err(why.clone()));
            }
            return;
        }
    };
    let mut completions = Vec::with_capacity(ops.len());
    for op in ops {
        match txn.exec("SAVEPOINT op", []) {
            Ok(_) => {
                let (ok, completion) = op(Some(&txn));
                if !ok {
                    let _ = txn.exec("ROLLBACK TO op", []);
                }
                let _ = txn.exec("RELEASE op", []);
                completions.push(completion);
            }
            Err(e) => {
                let why = e.to_string();
                let (_, completion) = op(None);
                completion(Err(why));
            }
        }
    }
    let commit = txn.commit().map_err(|e| e.to_string());
    for completion in completions {
        completion(commit.clone());
    }
}

/// Statements through the connection's cache: the writer runs the same few thousands of times a
/// second, and parsing one (with the triggers it fires) costs more than running it.
pub(super) trait Cached {
    fn exec<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(i64::MAX)
}
