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
    last_conflict_at TEXT,
    header_time TEXT,
    requeues INTEGER NOT NULL DEFAULT 0
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
/// `temp_store=MEMORY` keeps each operation's savepoint journal in memory: past 64 KiB (16
/// pages; an operation's rows, index entries and tallies can touch more) SQLite spilled it to a
/// temporary file, and writing there was a sixth of the writer thread's time under load
/// (docs/benchmarks.md). That journal only undoes a failed operation within its group's
/// transaction; recovery after a crash is the WAL's, so nothing durable moves to memory.
pub(super) fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    migrate(conn)
}

/// Columns added after a database may have been created; each step is idempotent.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    if !has_column(conn, "entities", "changed_key")? {
        conn.execute_batch("ALTER TABLE entities ADD COLUMN changed_key TEXT")?;
    }
    if !has_column(conn, "events", "header_time")? {
        conn.execute_batch("ALTER TABLE events ADD COLUMN header_time TEXT")?;
    }
    if !has_column(conn, "events", "requeues")? {
        conn.execute_batch("ALTER TABLE events ADD COLUMN requeues INTEGER NOT NULL DEFAULT 0")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS entities_changed ON entities (kind, changed_key) WHERE changed_key IS NOT NULL",
    )?;
    tallies(conn)?;
    conn.execute_batch(FIRST_OUTCOME_TALLIES)
}

/// A first attempt held by the entity's write has no in-flight row: its outcome is inserted,
/// not updated, and counts in its minute all the same.
const FIRST_OUTCOME_TALLIES: &str = r"
CREATE TRIGGER IF NOT EXISTS tally_delivered_first AFTER INSERT ON deliveries
    WHEN NEW.state = 'delivered' BEGIN
    INSERT INTO minute_tallies VALUES ('delivered', NEW.updated_ms / 60000, 1)
        ON CONFLICT (name, minute) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS tally_failed_first AFTER INSERT ON deliveries
    WHEN NEW.state IN ('failed', 'retrying') BEGIN
    INSERT INTO minute_tallies VALUES ('failed', NEW.updated_ms / 60000, 1)
        ON CONFLICT (name, minute) DO UPDATE SET n = n + 1;
END;
";

/// Running counts behind the status page, kept by triggers in the same transaction as the rows
/// they count: reading them costs the same at ten events as at ten million. Counting the rows on
/// each look scanned whole tables on the one writer thread, so the page grew slower and held up
/// ingestion as the database grew (docs/reliability.md, "Soak").
const TALLIES: &str = r"
CREATE TABLE IF NOT EXISTS tallies (
    name TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (name, a, b)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_tallies (
    name TEXT NOT NULL,
    minute INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (name, minute)
) WITHOUT ROWID;
DELETE FROM tallies;
DELETE FROM minute_tallies;
INSERT INTO tallies SELECT 'event_status', status, '', COUNT(*) FROM events GROUP BY status;
INSERT INTO tallies SELECT 'delivery_state', target, state, COUNT(*) FROM deliveries GROUP BY target, state;
INSERT INTO tallies SELECT 'ownership_conflicts', '', '', COALESCE(SUM(conflict_entries), 0) FROM entities;
INSERT INTO minute_tallies SELECT 'accepted', received_ms / 60000, COUNT(*) FROM events GROUP BY 2;
INSERT INTO minute_tallies SELECT 'delivered', updated_ms / 60000, COUNT(*) FROM deliveries WHERE state = 'delivered' GROUP BY 2;
INSERT INTO minute_tallies SELECT 'failed', updated_ms / 60000, COUNT(*) FROM deliveries WHERE state IN ('failed', 'retrying') GROUP BY 2;

CREATE TRIGGER tally_event_insert AFTER INSERT ON events BEGIN
    INSERT INTO tallies VALUES ('event_status', NEW.status, '', 1)
        ON CONFLICT (name, a, b) DO UPDATE SET n = n + 1;
    INSERT INTO minute_tallies VALUES ('accepted', NEW.received_ms / 60000, 1)
        ON CONFLICT (name, minute) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tally_event_status AFTER UPDATE OF status ON events WHEN OLD.status IS NOT NEW.status BEGIN
    UPDATE tallies SET n = n - 1 WHERE name = 'event_status' AND a = OLD.status AND b = '';
    INSERT INTO tallies VALUES ('event_status', NEW.status, '', 1)
        ON CONFLICT (name, a, b) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tally_event_delete AFTER DELETE ON events BEGIN
    UPDATE tallies SET n = n - 1 WHERE name = 'event_status' AND a = OLD.status AND b = '';
    UPDATE minute_tallies SET n = n - 1 WHERE name = 'accepted' AND minute = OLD.received_ms / 60000;
END;

CREATE TRIGGER tally_delivery_insert AFTER INSERT ON deliveries BEGIN
    INSERT INTO tallies VALUES ('delivery_state', NEW.target, NEW.state, 1)
        ON CONFLICT (name, a, b) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tally_delivery_state AFTER UPDATE OF state ON deliveries WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE tallies SET n = n - 1 WHERE name = 'delivery_state' AND a = OLD.target AND b = OLD.state;
    INSERT INTO tallies VALUES ('delivery_state', NEW.target, NEW.state, 1)
        ON CONFLICT (name, a, b) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tally_delivered AFTER UPDATE OF state ON deliveries
    WHEN NEW.state = 'delivered' AND OLD.state IS NOT 'delivered' BEGIN
    INSERT INTO minute_tallies VALUES ('delivered', NEW.updated_ms / 60000, 1)
        ON CONFLICT (name, minute) DO UPDATE SET n = n + 1;
END;
-- Only recording a failure sets last_error: one count per failed attempt, in its minute.
CREATE TRIGGER tally_failed AFTER UPDATE OF last_error ON deliveries
    WHEN NEW.state IN ('failed', 'retrying') BEGIN
    INSERT INTO minute_tallies VALUES ('failed', NEW.updated_ms / 60000, 1)
        ON CONFLICT (name, minute) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tally_delivery_delete AFTER DELETE ON deliveries BEGIN
    UPDATE tallies SET n = n - 1 WHERE name = 'delivery_state' AND a = OLD.target AND b = OLD.state;
END;

CREATE TRIGGER tally_entity_insert AFTER INSERT ON entities BEGIN
    INSERT INTO tallies VALUES ('ownership_conflicts', '', '', NEW.conflict_entries)
        ON CONFLICT (name, a, b) DO UPDATE SET n = n + NEW.conflict_entries;
END;
CREATE TRIGGER tally_entity_update AFTER UPDATE OF conflict_entries ON entities
    WHEN OLD.conflict_entries IS NOT NEW.conflict_entries BEGIN
    UPDATE tallies SET n = n - OLD.conflict_entries + NEW.conflict_entries
        WHERE name = 'ownership_conflicts' AND a = '' AND b = '';
END;
";

/// Creates the tallies from the rows already there (once, in one transaction) and the triggers
/// that keep them from then on.
fn tallies(conn: &Connection) -> rusqlite::Result<()> {
    let has_conflict_entries = has_column(conn, "entities", "conflict_entries")?;
    let has_triggers: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'trigger' AND name = 'tally_event_insert'",
        [],
        |r| r.get(0),
    )?;
    if has_conflict_entries && has_triggers {
        return Ok(());
    }
    let mut batch = String::from("BEGIN IMMEDIATE;\n");
    if !has_conflict_entries {
        // History entries with ownership conflicts, per entity: written with each save.
        batch.push_str(
            "ALTER TABLE entities ADD COLUMN conflict_entries INTEGER NOT NULL DEFAULT 0;\n\
             UPDATE entities SET conflict_entries = (SELECT COUNT(*) FROM json_each(entity, '$.history') h \
             WHERE json_array_length(COALESCE(json_extract(h.value, '$.ownership_conflicts'), '[]')) > 0);\n",
        );
    }
    batch.push_str(TALLIES);
    batch.push_str("COMMIT;");
    conn.execute_batch(&batch)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )
}
