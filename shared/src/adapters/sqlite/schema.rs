//! The local database's tables: the DynamoDB item types as rows, and the two queues.

use rusqlite::Connection;

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    source_event_id TEXT NOT NULL,
    source_type TEXT NOT NULL,
    status TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    event_type TEXT,
    envelope TEXT,
    raw TEXT,
    reason TEXT,
    pending_since TEXT,
    status_detail TEXT,
    status_at TEXT,
    conflicts INTEGER NOT NULL DEFAULT 0,
    last_conflict_hash TEXT,
    last_conflict_at TEXT
);
CREATE INDEX IF NOT EXISTS events_pending ON events (pending_since) WHERE pending_since IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_received ON events (received_ms);
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_until_ms INTEGER,
    updated_at TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    delivered_at TEXT,
    PRIMARY KEY (key, target)
);
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
        entity TEXT NOT NULL,
    changed_key TEXT,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS aliases (
    kind TEXT NOT NULL,
    alias TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (kind, alias)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at_ms);
-- Only over-received messages match a redrive; without it each receive scans the whole visible backlog.
CREATE INDEX IF NOT EXISTS messages_redrive ON messages (queue, receive_count);
CREATE UNIQUE INDEX IF NOT EXISTS messages_receipt ON messages (receipt) WHERE receipt IS NOT NULL;
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS replays (
    minute TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS watermarks (
    source TEXT PRIMARY KEY,
    watermark TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    body TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    UNIQUE (target, idempotency_key)
);
";

/// WAL for concurrent readers; `synchronous=FULL` so a commit survives power loss.
pub(super) fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    migrate(conn)
}

/// Columns added after a database may have been created; each step is idempotent.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_changed_key: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('entities') WHERE name = 'changed_key'",
        [],
        |r| r.get(0),
    )?;
    if !has_changed_key {
        conn.execute_batch("ALTER TABLE entities ADD COLUMN changed_key TEXT")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS entities_changed ON entities (kind, changed_key) WHERE changed_key IS NOT NULL",
    )
}
