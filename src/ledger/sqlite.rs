//! The embedded ledger: one SQLite file in WAL mode with `synchronous=FULL`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rand::Rng;
use rusqlite::types::Type;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior,
    params,
};

mod identity;
pub use identity::RenameRecord;

use super::rules::{self, NotificationEffect, Placed, Refusal, refused, view};
mod batch;
mod extras;
mod scoped;

pub use extras::{
    CallPromise, CreateEnd, CreateRecorded, CreateStep, WAITING_PREFIX, requeue_backoff,
};

use super::{
    Attempt, AttemptResult, CallState, CallStateRecord, CallStateUpdate, Disposition, Finish,
    Inserted, Ledger, LedgerError, NewRun, Notified, Outcome, Result, ResultInfo, Run, RunKey,
    RunProgress, RunRecord, RunState, Slot, StateChange, StateNotice,
};

/// The file name of the ledger inside the state directory.
pub const LEDGER_FILE: &str = "ledger.db";

/// How long a writer waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The reason recorded on runs found `requesting` when the store opens.
pub(crate) const CRASH_REASON: &str = "daemon stopped while the request was in flight";

/// Ordered schema migrations: entry `i` takes the schema from version `i` to
/// `i + 1` (`PRAGMA user_version`). Append only; never edit a shipped entry.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE runs (
    seq             INTEGER PRIMARY KEY,      -- internal row id, insertion order
    id              TEXT NOT NULL UNIQUE,     -- public run id (calldRun=)
    spec            TEXT NOT NULL,
    slot            TEXT NOT NULL,            -- 'at:<RFC 3339>' or 'rev:<hash>'
    revision        TEXT NOT NULL,
    scheduled_at    INTEGER NOT NULL,         -- all times: microseconds since the Unix epoch, UTC
    due_at          INTEGER NOT NULL,
    state           TEXT NOT NULL,
    outcome         TEXT,
    reason          TEXT,
    call_id         TEXT,
    tenant_id       TEXT,
    result_code     INTEGER,
    result_subcode  INTEGER,
    result_message  TEXT,
    established_at  INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (spec, slot),
    CHECK ((state = 'finished') = (outcome IS NOT NULL))
);
CREATE INDEX runs_by_spec ON runs (spec, scheduled_at, seq);
CREATE INDEX runs_by_call_id ON runs (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX runs_open ON runs (due_at, seq) WHERE state <> 'finished';
CREATE INDEX runs_finished ON runs (updated_at) WHERE state = 'finished';

CREATE TABLE attempts (
    run_seq           INTEGER NOT NULL REFERENCES runs (seq) ON DELETE CASCADE,
    number            INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    disposition       TEXT,                   -- NULL while in flight
    http_status       INTEGER,
    error_code        TEXT,
    error_message     TEXT,
    request_id        TEXT,
    client_request_id TEXT,
    call_id           TEXT,
    PRIMARY KEY (run_seq, number)
) WITHOUT ROWID;
CREATE INDEX attempts_by_call_id ON attempts (call_id) WHERE call_id IS NOT NULL;

CREATE TABLE call_states (
    run_seq         INTEGER NOT NULL REFERENCES runs (seq) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,         -- order of arrival within the run
    at              INTEGER NOT NULL,
    state           TEXT NOT NULL,
    call_id         TEXT,
    result_code     INTEGER,
    result_subcode  INTEGER,
    result_message  TEXT,
    PRIMARY KEY (run_seq, seq)
) WITHOUT ROWID;
"#,
    // 2: how many times each run was marked requesting (the spec's `retry`
    // attempts are counted against it). Older rows count one try per
    // attempt, the closest guess.
    r#"
ALTER TABLE runs ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET tries = (SELECT COUNT(*) FROM attempts a WHERE a.run_seq = runs.seq);
"#,
    // 3 (issue 10, "failures"; renumber freely at merge, it only adds a
    // table): what a run carries beyond its row. `not_before`: the earliest
    // next try after a transient failure (a 429's Retry-After, a token
    // outage), durable before the wait; `transient_failures`: how many in a
    // row (backoff). The call's promises as placed: `hangup_after_ms` (the
    // spec's hangupAfter when the request left), and when the last keepAlive
    // and hang-up were sent, so they survive a restart and the spec's removal.
    r#"
CREATE TABLE run_extras (
    run_seq             INTEGER PRIMARY KEY REFERENCES runs (seq) ON DELETE CASCADE,
    not_before          INTEGER,
    transient_failures  INTEGER NOT NULL DEFAULT 0,
    hangup_after_ms     INTEGER,
    last_keep_alive     INTEGER,
    hangup_requested_at INTEGER
) WITHOUT ROWID;
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const RUN_COLUMNS: &str = "seq, id, spec, slot, revision, scheduled_at, due_at, state, outcome, \
     reason, call_id, tenant_id, result_code, result_subcode, result_message, established_at, \
     created_at, updated_at";

const ATTEMPT_COLUMNS: &str = "number, started_at, finished_at, disposition, http_status, \
     error_code, error_message, request_id, client_request_id, call_id";

const ID_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const ID_LEN: usize = 16;

/// A new random run id: 16 characters of `[a-z2-7]` (80 bits), URL-safe.
fn new_run_id() -> String {
    let mut rng = rand::rng();
    (0..ID_LEN)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

/// The SQLite ledger. `Send`; one instance per thread (the daemon keeps one
/// on a dedicated thread; readers open their own).
pub struct SqliteLedger {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
    /// Ids of the runs recovery turned from `requesting` into `unknown`.
    recovered: Vec<String>,
    /// The daemon's writer: checkpoints the WAL in the background.
    _checkpointer: Option<Checkpointer>,
    /// The exclusive lock on `<db>.lock`, held while this writer lives, so
    /// that a second daemon cannot "recover" the first one's requests.
    _lock: Option<std::fs::File>,
}

/// Copies the WAL into the database file from its own connection and
/// thread, so that no commit of the daemon's pays for it: with SQLite's
/// automatic checkpoint, the first commit after a plan of 100,000 runs
/// copied the whole WAL and took half a second. It looks every
/// [`CHECKPOINT_EVERY`] and checkpoints (`PASSIVE`: neither waits for nor
/// blocks the writer) once the WAL holds [`CHECKPOINT_AT`] bytes, SQLite's
/// own automatic threshold; `journal_size_limit` makes the WAL file shrink
/// back to 1 MB when it restarts, so its size tells (to within that) what
/// it holds.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// 1,000 pages of 4 KiB (SQLite's `wal_autocheckpoint` default).
const CHECKPOINT_AT: u64 = 4_096_000;

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("calld-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    if size < CHECKPOINT_AT {
                        continue;
                    }
                    // (busy, frames in the WAL, frames copied); a failure
                    // is tried again at the next tick
                    if let Err(e) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                    {
                        tracing::debug!(error = %e, "WAL checkpoint failed; trying again");
                    }
                }
            })
            .map_err(|source| LedgerError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

impl SqliteLedger {
    /// Opens (creating it and the directory if needed) `<state_dir>/ledger.db`
    /// for writing. See [`SqliteLedger::open`].
    pub fn open_in(state_dir: &Path, now: Timestamp) -> Result<SqliteLedger> {
        std::fs::create_dir_all(state_dir).map_err(|source| LedgerError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        SqliteLedger::open(&state_dir.join(LEDGER_FILE), now)
    }

    /// Opens or creates the ledger file for writing: takes an exclusive
    /// advisory lock on `<path>.lock` ([`LedgerError::Locked`] if another
    /// process holds it; the OS drops it when the process dies), sets WAL,
    /// `synchronous=FULL`, foreign keys and a busy timeout, checks integrity
    /// (`PRAGMA quick_check`), applies pending migrations, then recovers: runs
    /// left `requesting` become `unknown` (their in-flight attempts too); see
    /// [`SqliteLedger::recovered`].
    pub fn open(path: &Path, now: Timestamp) -> Result<SqliteLedger> {
        let lock_path = lock_path(path);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| LedgerError::Io {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(LedgerError::Io {
                    path: lock_path,
                    source,
                });
            }
        }
        let mut ledger = SqliteLedger::open_without_lock(path, now)?;
        ledger._lock = Some(lock);
        // the daemon's writer: its commits leave checkpoints to a thread
        // of their own (automatic ones stay on if it cannot start)
        match Checkpointer::start(path) {
            Ok(c) => {
                ledger.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                // a restarted WAL shrinks back to (at most) this
                ledger
                    .conn
                    .pragma_update(None, "journal_size_limit", CHECKPOINT_AT as i64 / 4)?;
                ledger._checkpointer = Some(c);
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoints stay in the writer's commits"),
        }
        Ok(ledger)
    }

    /// The writer connection's `wal_autocheckpoint` (0: checkpoints are
    /// the [`Checkpointer`]'s).
    #[cfg(test)]
    pub(crate) fn wal_autocheckpoint(&self) -> i64 {
        self.conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .expect("pragma")
    }

    /// [`SqliteLedger::open`] without the single-writer lock. Only for tests
    /// and tools that guarantee no daemon uses the file: recovery would turn
    /// a running daemon's in-flight requests into `unknown`.
    pub fn open_without_lock(path: &Path, now: Timestamp) -> Result<SqliteLedger> {
        let corrupt = |e: rusqlite::Error| -> LedgerError {
            if is_corruption(&e) {
                LedgerError::Corrupt {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }
            } else {
                LedgerError::Sqlite(e)
            }
        };
        let conn = Connection::open(path).map_err(corrupt)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(corrupt)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::BadData {
                detail: format!("could not switch the journal to WAL (got {mode:?})"),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // every statement of a batch's writes stays prepared
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "foreign_keys", "ON")?;
        quick_check(&conn, path).map_err(|e| match e {
            LedgerError::Sqlite(e) => corrupt(e),
            other => other,
        })?;
        let mut ledger = SqliteLedger {
            conn,
            path: path.to_path_buf(),
            read_only: false,
            recovered: Vec::new(),
            _checkpointer: None,
            _lock: None,
        };
        ledger.migrate()?;
        ledger.recover(now)?;
        Ok(ledger)
    }

    /// Opens an existing ledger read-only (for `calld status` / `history`
    /// while the daemon runs). Checks integrity and the schema version; does
    /// not migrate or recover. Writes return [`LedgerError::ReadOnly`].
    pub fn open_read_only(path: &Path) -> Result<SqliteLedger> {
        if !path.exists() {
            return Err(LedgerError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let corrupt = |e: rusqlite::Error| -> LedgerError {
            if is_corruption(&e) {
                LedgerError::Corrupt {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }
            } else {
                LedgerError::Sqlite(e)
            }
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(corrupt)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        quick_check(&conn, path).map_err(|e| match e {
            LedgerError::Sqlite(e) => corrupt(e),
            other => other,
        })?;
        let version = user_version(&conn)?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            return Err(LedgerError::SchemaOutdated {
                path: path.to_path_buf(),
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(SqliteLedger {
            conn,
            path: path.to_path_buf(),
            read_only: true,
            recovered: Vec::new(),
            _checkpointer: None,
            _lock: None,
        })
    }

    /// An in-memory ledger (no durability), for tests of other modules.
    pub fn open_in_memory() -> Result<SqliteLedger> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut ledger = SqliteLedger {
            conn,
            path: PathBuf::from(":memory:"),
            read_only: false,
            recovered: Vec::new(),
            _checkpointer: None,
            _lock: None,
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this handle was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The runs that recovery at open turned from `requesting` into
    /// `unknown` (the daemon logs them).
    pub fn recovered(&self) -> &[String] {
        &self.recovered
    }

    /// Runs `PRAGMA quick_check` again (for a periodic health check).
    pub fn check_integrity(&self) -> Result<()> {
        quick_check(&self.conn, &self.path)
    }

    /// Per spec, its newest run with outcome `completed` (newest by
    /// scheduled time), ordered by spec name: `calld status`'s LAST SUCCESS
    /// and the per-spec metrics.
    pub fn last_successes(&self) -> Result<Vec<Run>> {
        query_runs(
            &self.conn,
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE seq IN ( \
                   SELECT (SELECT n.seq FROM runs n WHERE n.spec = s.spec \
                           AND n.outcome = 'completed' \
                           ORDER BY n.scheduled_at DESC, n.seq DESC LIMIT 1) \
                   FROM (SELECT DISTINCT spec FROM runs WHERE outcome = 'completed') s) \
                 ORDER BY spec"
            ),
            [],
        )
    }

    /// Per spec, its newest finished run that was not `canceled` (newest
    /// by scheduled time), ordered by spec name: the per-spec metrics.
    pub fn latest_finished_runs(&self) -> Result<Vec<Run>> {
        query_runs(
            &self.conn,
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE seq IN ( \
                   SELECT (SELECT n.seq FROM runs n WHERE n.spec = s.spec \
                           AND n.state = 'finished' AND n.outcome <> 'canceled' \
                           ORDER BY n.scheduled_at DESC, n.seq DESC LIMIT 1) \
                   FROM (SELECT DISTINCT spec FROM runs WHERE state = 'finished') s) \
                 ORDER BY spec"
            ),
            [],
        )
    }

    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    fn migrate(&mut self) -> Result<()> {
        let version = user_version(&self.conn)?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another process may have migrated while we waited for the lock.
            if user_version(&tx)? > i as i64 {
                continue;
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn recover(&mut self, now: Timestamp) -> Result<()> {
        let recovered = self.write(|tx| {
            let ids: Vec<String> = tx
                .prepare("SELECT id FROM runs WHERE state = 'requesting' ORDER BY seq")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            exec(
                tx,
                "UPDATE attempts SET disposition = 'unknown', \
                 error_message = COALESCE(error_message, ?1) \
                 WHERE disposition IS NULL",
                params![CRASH_REASON],
            )?;
            exec(
                tx,
                "UPDATE runs SET state = 'finished', outcome = 'unknown', reason = ?1, \
                 updated_at = ?2 WHERE state = 'requesting'",
                params![CRASH_REASON, us(now)],
            )?;
            Ok(ids)
        })?;
        self.recovered = recovered;
        Ok(())
    }

    /// Runs `f` in an IMMEDIATE transaction (the write lock is taken up
    /// front, so two writers serialise instead of failing on upgrade) and
    /// commits: durable when this returns `Ok`. On error nothing is written.
    fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        if self.read_only {
            return Err(LedgerError::ReadOnly);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }
}

/// `<db>.lock` next to the database.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

fn user_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        Err(LedgerError::Corrupt {
            path: path.to_path_buf(),
            detail: problems.join("; "),
        })
    }
}

/// A time as stored: microseconds since the Unix epoch.
fn us(t: Timestamp) -> i64 {
    t.as_microsecond()
}

fn conversion_error(idx: usize, ty: Type, detail: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, ty, detail.into())
}

fn get_ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    let v: i64 = row.get(idx)?;
    Timestamp::from_microsecond(v).map_err(|e| conversion_error(idx, Type::Integer, e.to_string()))
}

fn get_opt_ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    let v: Option<i64> = row.get(idx)?;
    v.map(|v| {
        Timestamp::from_microsecond(v)
            .map_err(|e| conversion_error(idx, Type::Integer, e.to_string()))
    })
    .transpose()
}

fn get_parsed<T: std::str::FromStr>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    let s: String = row.get(idx)?;
    s.parse()
        .map_err(|e: T::Err| conversion_error(idx, Type::Text, e.to_string()))
}

fn get_opt_parsed<T: std::str::FromStr>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    let s: Option<String> = row.get(idx)?;
    s.map(|s| {
        s.parse()
            .map_err(|e: T::Err| conversion_error(idx, Type::Text, e.to_string()))
    })
    .transpose()
}

fn get_result_info(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<ResultInfo>> {
    let code: Option<i64> = row.get(idx)?;
    let subcode: Option<i64> = row.get(idx + 1)?;
    let message: Option<String> = row.get(idx + 2)?;
    if code.is_none() && subcode.is_none() && message.is_none() {
        Ok(None)
    } else {
        Ok(Some(ResultInfo {
            code,
            subcode,
            message,
        }))
    }
}

/// Maps a row selected with [`RUN_COLUMNS`] to (seq, run).
fn run_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, Run)> {
    let slot_text: String = row.get(3)?;
    let slot = Slot::from_key_text(&slot_text)
        .ok_or_else(|| conversion_error(3, Type::Text, format!("bad slot {slot_text:?}")))?;
    Ok((
        row.get(0)?,
        Run {
            id: row.get(1)?,
            spec: row.get(2)?,
            slot,
            revision: row.get(4)?,
            scheduled_at: get_ts(row, 5)?,
            due_at: get_ts(row, 6)?,
            state: get_parsed(row, 7)?,
            outcome: get_opt_parsed(row, 8)?,
            reason: row.get(9)?,
            call_id: row.get(10)?,
            tenant_id: row.get(11)?,
            result_info: get_result_info(row, 12)?,
            established_at: get_opt_ts(row, 15)?,
            created_at: get_ts(row, 16)?,
            updated_at: get_ts(row, 17)?,
        },
    ))
}

fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        number: row.get(0)?,
        started_at: get_ts(row, 1)?,
        finished_at: get_opt_ts(row, 2)?,
        disposition: get_opt_parsed(row, 3)?,
        http_status: row.get(4)?,
        error_code: row.get(5)?,
        error_message: row.get(6)?,
        request_id: row.get(7)?,
        client_request_id: row.get(8)?,
        call_id: row.get(9)?,
    })
}

fn call_state_from_row(row: &Row<'_>) -> rusqlite::Result<CallStateRecord> {
    let state: String = row.get(2)?;
    Ok(CallStateRecord {
        seq: row.get(0)?,
        at: get_ts(row, 1)?,
        state: CallState::from(state),
        call_id: row.get(3)?,
        result_info: get_result_info(row, 4)?,
    })
}

/// Maps row-conversion failures to [`LedgerError::BadData`].
fn data(e: rusqlite::Error) -> LedgerError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(idx, _, err) => LedgerError::BadData {
            detail: format!("column {idx}: {err}"),
        },
        other => LedgerError::Sqlite(other),
    }
}

fn query_runs(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Run>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, run_from_row)?;
    rows.map(|r| r.map(|(_, run)| run).map_err(data)).collect()
}

fn load(conn: &Connection, id: &str) -> Result<Option<(i64, Run)>> {
    conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
        .query_row(params![id], run_from_row)
        .optional()
        .map_err(data)
}

fn load_required(conn: &Connection, id: &str) -> Result<(i64, Run)> {
    load(conn, id)?.ok_or_else(|| LedgerError::UnknownRun { id: id.to_string() })
}

fn next_attempt(
    tx: &Connection,
    seq: i64,
    client_request_id: Option<&str>,
    now: Timestamp,
) -> Result<u32> {
    let number: u32 = tx.query_row(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE run_seq = ?1",
        params![seq],
        |r| r.get(0),
    )?;
    exec(
        tx,
        "INSERT INTO attempts (run_seq, number, started_at, client_request_id) \
         VALUES (?1, ?2, ?3, ?4)",
        params![seq, number, us(now), client_request_id],
    )?;
    Ok(number)
}

fn reload(tx: &Connection, id: &str) -> Result<Run> {
    load_required(tx, id).map(|(_, run)| run)
}

/// Records one notification state (see [`Ledger::record_call_state`])
/// inside the caller's transaction or savepoint.
fn record_state_in(
    tx: &Connection,
    id: &str,
    update: &CallStateUpdate,
    now: Timestamp,
) -> Result<Notified> {
    record_state_for(tx, id, update, None, now)
}

/// [`record_state_in`] for the notification of attempt `attempt` (the
/// `calldAttempt` of its callbackUri), when known. A notification about an
/// earlier attempt's call (by its marker or its call id) is that attempt's
/// history only; an exact duplicate changes nothing. The outcome follows
/// the set of states a call reached, not their order: an `established`
/// arriving after `terminated` still makes the call answered, reopening a
/// run finished `notEstablished` or taking back a pending retry.
/// Appends the notification to the run's call states (the next `seq`).
fn insert_call_state(
    tx: &Connection,
    seq: i64,
    update: &CallStateUpdate,
    now: Timestamp,
) -> Result<()> {
    let info = update.result_info.as_ref();
    exec(
        tx,
        "INSERT INTO call_states (run_seq, seq, at, state, call_id, result_code, \
             result_subcode, result_message) \
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_states WHERE run_seq = ?1), \
             ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            seq,
            us(now),
            update.state.as_str(),
            update.call_id,
            info.and_then(|i| i.code),
            info.and_then(|i| i.subcode),
            info.and_then(|i| i.message.as_deref())
        ],
    )?;
    Ok(())
}

fn record_state_for(
    tx: &Connection,
    id: &str,
    update: &CallStateUpdate,
    attempt: Option<u32>,
    now: Timestamp,
) -> Result<Notified> {
    let (seq, run) = load_required(tx, id)?;
    let info = update.result_info.as_ref();
    let duplicate: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM call_states WHERE run_seq = ?1 AND state = ?2 \
         AND call_id IS ?3 AND result_code IS ?4 AND result_subcode IS ?5)",
        params![
            seq,
            update.state.as_str(),
            update.call_id,
            info.and_then(|i| i.code),
            info.and_then(|i| i.subcode)
        ],
        |r| r.get(0),
    )?;
    if duplicate {
        return Ok(Notified {
            run,
            change: StateChange::Recorded,
        });
    }
    // Which attempt the notification is about, and whether it is the latest.
    let latest: Option<(u32, Option<String>)> = tx
        .query_row(
            "SELECT number, call_id FROM attempts WHERE run_seq = ?1 ORDER BY number DESC LIMIT 1",
            params![seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let about: Option<u32> = match (attempt, &update.call_id) {
        (Some(n), _) => Some(n),
        (None, Some(c)) => tx
            .query_row(
                "SELECT number FROM attempts WHERE run_seq = ?1 AND call_id = ?2 \
                 ORDER BY number DESC LIMIT 1",
                params![seq, c],
                |r| r.get(0),
            )
            .optional()?,
        (None, None) => None,
    };
    let earlier = matches!((about, &latest), (Some(a), Some((n, _))) if a < *n);
    if earlier {
        insert_call_state(tx, seq, update, now)?;
        if let (Some(a), Some(c)) = (about, &update.call_id) {
            exec(
                tx,
                "UPDATE attempts SET call_id = COALESCE(call_id, ?3) WHERE run_seq = ?1 AND number = ?2",
                params![seq, a, c],
            )?;
        }
        return Ok(Notified {
            run: reload(tx, id)?,
            change: StateChange::Recorded,
        });
    }
    // `established` reached late by the latest attempt's call.
    let latest_call = latest.as_ref().and_then(|(_, c)| c.clone());
    let this_call = update.call_id.clone().or_else(|| latest_call.clone());
    let same_call = match (&this_call, run.call_id.as_ref().or(latest_call.as_ref())) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if update.state == CallState::Established && same_call && run.established_at.is_none() {
        let late_retry = run.state == RunState::Scheduled && latest.is_some();
        let late_final =
            run.state == RunState::Finished && run.outcome == Some(super::Outcome::NotEstablished);
        if late_retry || late_final {
            let ended: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM call_states WHERE run_seq = ?1 AND call_id IS ?2 \
                 AND state = 'terminated')",
                params![seq, this_call],
                |r| r.get(0),
            )?;
            let state = if ended {
                RunState::Terminating
            } else {
                RunState::Established
            };
            insert_call_state(tx, seq, update, now)?;
            exec(
                tx,
                "UPDATE runs SET state = ?2, outcome = NULL, reason = NULL, call_id = ?3, \
                 established_at = ?4, updated_at = ?4 WHERE seq = ?1",
                params![seq, state.as_str(), this_call, us(now)],
            )?;
            return Ok(Notified {
                run: reload(tx, id)?,
                change: StateChange::Reopened,
            });
        }
    }
    insert_call_state(tx, seq, update, now)?;
    let effect = rules::on_notification(view(&run), &update.state, update.call_id.as_deref());
    // Whether this notification is about the run's current call
    // (and so may update its fields).
    let current_call = match effect {
        NotificationEffect::Record => {
            !matches!(run.state, RunState::Scheduled | RunState::Finished)
                && !matches!((run.call_id.as_deref(), update.call_id.as_deref()),
                        (Some(a), Some(b)) if a != b)
        }
        NotificationEffect::Advance(_) | NotificationEffect::Reopen(_) => true,
    };
    let change = match effect {
        NotificationEffect::Record => StateChange::Recorded,
        NotificationEffect::Advance(_) => StateChange::Advanced { from: run.state },
        NotificationEffect::Reopen(_) => StateChange::Reopened,
    };
    match effect {
        NotificationEffect::Advance(state) => {
            exec(
                tx,
                "UPDATE runs SET state = ?2 WHERE seq = ?1",
                params![seq, state.as_str()],
            )?;
        }
        NotificationEffect::Reopen(state) => {
            exec(
                tx,
                "UPDATE runs SET state = ?2, outcome = NULL, reason = NULL WHERE seq = ?1",
                params![seq, state.as_str()],
            )?;
        }
        NotificationEffect::Record => {}
    }
    if current_call {
        exec(
            tx,
            "UPDATE runs SET call_id = COALESCE(call_id, ?2), updated_at = ?3 WHERE seq = ?1",
            params![seq, update.call_id, us(now)],
        )?;
        if update.state == CallState::Established {
            exec(
                tx,
                "UPDATE runs SET established_at = COALESCE(established_at, ?2) WHERE seq = ?1",
                params![seq, us(now)],
            )?;
        }
        if let Some(info) = info {
            exec(
                tx,
                "UPDATE runs SET result_code = ?2, result_subcode = ?3, result_message = ?4 \
                     WHERE seq = ?1",
                params![seq, info.code, info.subcode, info.message],
            )?;
        }
    }
    Ok(Notified {
        run: reload(tx, id)?,
        change,
    })
}

/// The body of [`Ledger::mark_requesting`], inside the caller's transaction.
pub(super) fn mark_requesting_in(
    tx: &Connection,
    id: &str,
    client_request_id: Option<&str>,
    now: Timestamp,
) -> Result<u32> {
    let (seq, run) = load_required(tx, id)?;
    rules::check_requesting(view(&run)).map_err(|r| refused(&run, r))?;
    // Conditional on the state we checked: another process holding
    // the same file cannot slip in between (the write lock is held).
    let changed = exec(
        tx,
        "UPDATE runs SET state = 'requesting', tries = tries + 1, updated_at = ?2, \
                 reason = CASE WHEN reason LIKE 'waiting: %' THEN NULL ELSE reason END \
                 WHERE seq = ?1 AND state = 'scheduled'",
        params![seq, us(now)],
    )?;
    if changed != 1 {
        return Err(refused(
            &run,
            Refusal {
                action: "mark requesting",
                why: "the run changed while it was being marked",
            },
        ));
    }
    next_attempt(tx, seq, client_request_id, now)
}

/// The body of [`Ledger::finish_attempt`], inside the caller's transaction.
pub(super) fn finish_attempt_in(
    tx: &Connection,
    id: &str,
    number: u32,
    result: &AttemptResult,
    now: Timestamp,
) -> Result<()> {
    let (seq, run) = load_required(tx, id)?;
    let in_flight: Option<bool> = tx
        .query_row(
            "SELECT disposition IS NULL FROM attempts WHERE run_seq = ?1 AND number = ?2",
            params![seq, number],
            |r| r.get(0),
        )
        .optional()?;
    match in_flight {
        None => {
            return Err(LedgerError::UnknownAttempt {
                id: id.to_string(),
                number,
            });
        }
        Some(false) => {
            return Err(refused(
                &run,
                Refusal {
                    action: "finish an attempt of",
                    why: "that attempt is already finished",
                },
            ));
        }
        Some(true) => {}
    }
    exec(
        tx,
        "UPDATE attempts SET finished_at = ?3, disposition = ?4, http_status = ?5, \
                 error_code = ?6, error_message = ?7, request_id = ?8, \
                 client_request_id = COALESCE(?9, client_request_id) \
                 WHERE run_seq = ?1 AND number = ?2",
        params![
            seq,
            number,
            us(now),
            // An attempt without a disposition is stored as `unknown`:
            // NULL means "in flight".
            result
                .disposition
                .unwrap_or(super::Disposition::Unknown)
                .as_str(),
            result.http_status,
            result.error_code,
            result.error_message,
            result.request_id,
            result.client_request_id
        ],
    )?;
    exec(
        tx,
        "UPDATE runs SET updated_at = ?2 WHERE seq = ?1",
        params![seq, us(now)],
    )?;
    Ok(())
}

/// The body of [`Ledger::mark_placed`], inside the caller's transaction.
pub(super) fn mark_placed_in(
    tx: &Connection,
    id: &str,
    call_id: &str,
    now: Timestamp,
) -> Result<Run> {
    let (seq, run) = load_required(tx, id)?;
    let placed = rules::check_placed(view(&run), call_id).map_err(|r| refused(&run, r))?;
    let state = match placed {
        Placed::ToPlaced => RunState::Placed,
        Placed::KeepState => run.state,
    };
    exec(
        tx,
        "UPDATE runs SET state = ?2, call_id = ?3, updated_at = ?4 WHERE seq = ?1",
        params![seq, state.as_str(), call_id, us(now)],
    )?;
    exec(
        tx,
        "UPDATE attempts SET call_id = ?2 WHERE run_seq = ?1 AND call_id IS NULL \
                 AND number = (SELECT MAX(number) FROM attempts WHERE run_seq = ?1)",
        params![seq, call_id],
    )?;
    reload(tx, id)
}

/// The body of [`Ledger::begin_attempt`], inside the caller's transaction.
pub(super) fn begin_attempt_in(
    tx: &Connection,
    id: &str,
    client_request_id: Option<&str>,
    now: Timestamp,
) -> Result<u32> {
    let (seq, run) = load_required(tx, id)?;
    rules::check_begin_attempt(view(&run)).map_err(|r| refused(&run, r))?;
    exec(
        tx,
        "UPDATE runs SET updated_at = ?2 WHERE seq = ?1",
        params![seq, us(now)],
    )?;
    next_attempt(tx, seq, client_request_id, now)
}

/// `8-4-4-4-12` hex digits.
fn looks_like_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn find_by_call_id(conn: &Connection, call_id: &str) -> Result<Option<Run>> {
    Ok(query_runs(
        conn,
        &format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE call_id = ?1 \
             OR seq IN (SELECT run_seq FROM attempts WHERE call_id = ?1) \
             ORDER BY (call_id IS ?1) DESC, seq DESC LIMIT 1"
        ),
        params![call_id],
    )?
    .pop())
}

/// The body of [`Ledger::insert_run`], inside the caller's transaction.
/// `Connection::execute` through the statement cache: a statement that
/// runs once per row of a batch (100,000 inserts of a first plan) is
/// prepared once, not per row (that was half the cost of an insert).
pub(super) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

pub(super) fn insert_run_in(tx: &Connection, new: &NewRun, now: Timestamp) -> Result<Inserted> {
    let slot = new.key.slot.normalized();
    let slot_text = slot.key_text();
    let scheduled = match &slot {
        Slot::At(t) => *t,
        Slot::Revision(_) | Slot::Trigger(_) => now,
    };
    // The (spec, slot) UNIQUE constraint decides; the id is retried on
    // the (astronomically unlikely) collision of two random ids.
    for _ in 0..4 {
        let id = new_run_id();
        let result = exec(
            tx,
            "INSERT INTO runs (id, spec, slot, revision, scheduled_at, due_at, state, \
             tenant_id, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'scheduled', ?7, ?8, ?8) \
             ON CONFLICT (spec, slot) DO UPDATE SET state = 'scheduled', \
               outcome = NULL, reason = NULL, revision = excluded.revision, \
               due_at = excluded.due_at, tenant_id = excluded.tenant_id, \
               updated_at = excluded.updated_at \
             WHERE runs.state = 'finished' AND runs.outcome = 'canceled'",
            params![
                id,
                new.key.spec,
                slot_text,
                new.revision,
                us(scheduled),
                us(new.due),
                new.tenant_id,
                us(now)
            ],
        );
        let created = match result {
            Ok(n) => n == 1,
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let run = tx
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE spec = ?1 AND slot = ?2"
            ))?
            .query_row(params![new.key.spec, slot_text], run_from_row)
            .map_err(data)?
            .1;
        return Ok(Inserted { run, created });
    }
    Err(LedgerError::BadData {
        detail: "could not draw an unused run id".into(),
    })
}

/// The body of [`Ledger::retry_later`], inside the caller's transaction.
pub(super) fn retry_later_in(
    tx: &Connection,
    id: &str,
    due: Timestamp,
    reason: &str,
    now: Timestamp,
) -> Result<Run> {
    let (seq, run) = load_required(tx, id)?;
    rules::check_retry(view(&run)).map_err(|r| refused(&run, r))?;
    exec(
        tx,
        "UPDATE runs SET state = 'scheduled', due_at = ?2, reason = ?3, call_id = NULL, \
             established_at = NULL, result_code = NULL, result_subcode = NULL, \
             result_message = NULL, updated_at = ?4 WHERE seq = ?1",
        params![seq, us(due), reason, us(now)],
    )?;
    reload(tx, id)
}

/// The body of [`Ledger::finish`], inside the caller's transaction.
pub(super) fn finish_in(tx: &Connection, id: &str, finish: &Finish, now: Timestamp) -> Result<Run> {
    let (seq, run) = load_required(tx, id)?;
    rules::check_finish(view(&run), finish.outcome).map_err(|r| refused(&run, r))?;
    exec(
        tx,
        "UPDATE runs SET state = 'finished', outcome = ?2, reason = ?3, updated_at = ?4 \
             WHERE seq = ?1",
        params![seq, finish.outcome.as_str(), finish.reason, us(now)],
    )?;
    if let Some(info) = &finish.result_info {
        exec(
            tx,
            "UPDATE runs SET result_code = ?2, result_subcode = ?3, result_message = ?4 \
                 WHERE seq = ?1",
            params![seq, info.code, info.subcode, info.message],
        )?;
    }
    reload(tx, id)
}

impl Ledger for SqliteLedger {
    fn mark_requesting_with(
        &mut self,
        id: &str,
        hangup_after: Option<std::time::Duration>,
        now: Timestamp,
    ) -> Result<u32> {
        SqliteLedger::mark_requesting_with(self, id, hangup_after, now)
    }

    fn record_create(
        &mut self,
        id: &str,
        first: u32,
        steps: &[CreateStep],
        end: &CreateEnd,
        now: Timestamp,
    ) -> Result<CreateRecorded> {
        SqliteLedger::record_create(self, id, first, steps, end, now)
    }

    fn note_waiting(&mut self, id: &str, why: &str, now: Timestamp) -> Result<bool> {
        SqliteLedger::note_waiting(self, id, why, now)
    }

    fn not_before_times(&self) -> Result<BTreeMap<String, Timestamp>> {
        SqliteLedger::not_before_times(self)
    }

    fn call_promises(&self) -> Result<BTreeMap<String, CallPromise>> {
        SqliteLedger::call_promises(self)
    }

    fn call_promise(&self, id: &str) -> Result<Option<CallPromise>> {
        SqliteLedger::call_promise(self, id)
    }

    fn record_call_op(&mut self, id: &str, hang_up: bool, at: Timestamp) -> Result<()> {
        SqliteLedger::record_call_op(self, id, hang_up, at)
    }

    fn rename_spec(
        &mut self,
        from: &str,
        to: &str,
        revision: &str,
        now: Timestamp,
    ) -> Result<Option<usize>> {
        SqliteLedger::rename_spec(self, from, to, revision, now)
    }

    fn adopt_revision(&mut self, spec: &str, from: &str, to: &str) -> Result<bool> {
        SqliteLedger::adopt_revision(self, spec, from, to)
    }

    fn renames_to(&self, name: &str) -> Result<Vec<RenameRecord>> {
        SqliteLedger::renames_to(self, name)
    }

    fn known_specs(&self) -> Result<BTreeMap<String, crate::identity::Known>> {
        SqliteLedger::known_specs(self)
    }

    fn save_known(
        &mut self,
        before: &BTreeMap<String, crate::identity::Known>,
        after: &BTreeMap<String, crate::identity::Known>,
    ) -> Result<()> {
        SqliteLedger::save_known(self, before, after)
    }

    fn last_successes(&self) -> Result<Vec<Run>> {
        SqliteLedger::last_successes(self)
    }

    fn latest_finished_runs(&self) -> Result<Vec<Run>> {
        SqliteLedger::latest_finished_runs(self)
    }

    fn check_integrity(&self) -> Result<()> {
        SqliteLedger::check_integrity(self)
    }

    fn recovered(&self) -> &[String] {
        SqliteLedger::recovered(self)
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }

    fn insert_run(&mut self, new: &NewRun, now: Timestamp) -> Result<Inserted> {
        self.write(|tx| insert_run_in(tx, new, now))
    }

    fn run(&self, id: &str) -> Result<Option<Run>> {
        Ok(load(&self.conn, id)?.map(|(_, run)| run))
    }

    fn run_by_key(&self, key: &RunKey) -> Result<Option<Run>> {
        Ok(query_runs(
            &self.conn,
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE spec = ?1 AND slot = ?2"),
            params![key.spec, key.slot.key_text()],
        )?
        .pop())
    }

    fn run_by_call_id(&self, call_id: &str) -> Result<Option<Run>> {
        find_by_call_id(&self.conn, call_id)
    }

    fn mark_requesting(
        &mut self,
        id: &str,
        client_request_id: Option<&str>,
        now: Timestamp,
    ) -> Result<u32> {
        self.write(|tx| mark_requesting_in(tx, id, client_request_id, now))
    }

    fn begin_attempt(
        &mut self,
        id: &str,
        client_request_id: Option<&str>,
        now: Timestamp,
    ) -> Result<u32> {
        self.write(|tx| begin_attempt_in(tx, id, client_request_id, now))
    }

    fn finish_attempt(
        &mut self,
        id: &str,
        number: u32,
        result: &AttemptResult,
        now: Timestamp,
    ) -> Result<()> {
        self.write(|tx| finish_attempt_in(tx, id, number, result, now))
    }

    fn mark_placed(&mut self, id: &str, call_id: &str, now: Timestamp) -> Result<Run> {
        self.write(|tx| mark_placed_in(tx, id, call_id, now))
    }

    fn record_call_state(
        &mut self,
        id: &str,
        update: &CallStateUpdate,
        now: Timestamp,
    ) -> Result<Notified> {
        self.write(|tx| record_state_in(tx, id, update, now))
    }

    fn record_call_states(
        &mut self,
        batch: &[StateNotice],
        now: Timestamp,
    ) -> Result<Vec<Result<Option<Notified>>>> {
        if self.read_only {
            return Err(LedgerError::ReadOnly);
        }
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(batch.len());
        for notice in batch {
            // A savepoint per notice: a failing one is undone alone.
            let sp = tx.savepoint()?;
            let result = (|| {
                let run = match &notice.run_id {
                    Some(id) => load(&sp, id)?.map(|(_, r)| r),
                    None => None,
                };
                let run = match (run, &notice.update.call_id) {
                    (Some(r), _) => Some(r),
                    (None, Some(c)) => find_by_call_id(&sp, c)?,
                    (None, None) => None,
                };
                match run {
                    Some(r) => {
                        // A notification signed for another tenant than the
                        // run's is not about this run (a multi-tenant bot).
                        // (Only a GUID is compared: `tid` always is one; a
                        // tenant written as a domain name cannot be checked.)
                        if let (Some(tid), Some(expected)) = (&notice.tenant_id, &r.tenant_id)
                            && looks_like_guid(expected)
                            && !tid.eq_ignore_ascii_case(expected)
                        {
                            return Err(LedgerError::WrongTenant {
                                id: r.id.clone(),
                                tenant: tid.clone(),
                            });
                        }
                        record_state_for(&sp, &r.id, &notice.update, notice.attempt, now).map(Some)
                    }
                    None => Ok(None),
                }
            })();
            if result.is_ok() {
                sp.commit()?;
            }
            // dropped without commit: rolled back
            out.push(result);
        }
        tx.commit()?;
        Ok(out)
    }

    fn retry_later(
        &mut self,
        id: &str,
        due: Timestamp,
        reason: &str,
        now: Timestamp,
    ) -> Result<Run> {
        self.write(|tx| retry_later_in(tx, id, due, reason, now))
    }

    fn finish(&mut self, id: &str, finish: &Finish, now: Timestamp) -> Result<Run> {
        self.write(|tx| finish_in(tx, id, finish, now))
    }

    fn cancel_scheduled(
        &mut self,
        spec: &str,
        keep: Option<&[Slot]>,
        reason: &str,
        now: Timestamp,
    ) -> Result<Vec<Run>> {
        let keep: Option<std::collections::HashSet<String>> =
            keep.map(|slots| slots.iter().map(Slot::key_text).collect());
        self.write(|tx| {
            let candidates = query_runs(
                tx,
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE spec = ?1 AND state = 'scheduled' \
                     ORDER BY scheduled_at, seq"
                ),
                params![spec],
            )?;
            let mut canceled = Vec::new();
            for run in candidates {
                if keep
                    .as_ref()
                    .is_some_and(|k| k.contains(&run.slot.key_text()))
                {
                    continue;
                }
                exec(tx,
                    "UPDATE runs SET state = 'finished', outcome = ?2, reason = ?3, updated_at = ?4 \
                     WHERE id = ?1",
                    params![run.id, Outcome::Canceled.as_str(), reason, us(now)],
                )?;
                canceled.push(reload(tx, &run.id)?);
            }
            Ok(canceled)
        })
    }

    fn open_runs(&self) -> Result<Vec<Run>> {
        query_runs(
            &self.conn,
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE state <> 'finished' ORDER BY due_at, seq"
            ),
            [],
        )
    }

    fn latest_runs(&self) -> Result<Vec<Run>> {
        query_runs(
            &self.conn,
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE seq IN ( \
                   SELECT (SELECT n.seq FROM runs n WHERE n.spec = s.spec \
                           AND n.state <> 'scheduled' \
                           ORDER BY n.scheduled_at DESC, n.seq DESC LIMIT 1) \
                   FROM (SELECT DISTINCT spec FROM runs) s) \
                 ORDER BY spec"
            ),
            [],
        )
    }

    fn history(&self, spec: &str, limit: usize) -> Result<Vec<RunRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE spec = ?1 \
             ORDER BY scheduled_at DESC, seq DESC LIMIT ?2"
        ))?;
        let runs: Vec<(i64, Run)> = stmt
            .query_map(params![spec, limit], run_from_row)?
            .collect::<rusqlite::Result<_>>()
            .map_err(data)?;
        runs.into_iter()
            .map(|(seq, run)| {
                Ok(RunRecord {
                    attempts: attempts_of(&self.conn, seq)?,
                    call_states: call_states_of(&self.conn, seq)?,
                    run,
                })
            })
            .collect()
    }

    fn attempts(&self, id: &str) -> Result<Vec<Attempt>> {
        let (seq, _) = load_required(&self.conn, id)?;
        attempts_of(&self.conn, seq)
    }

    fn call_states(&self, id: &str) -> Result<Vec<CallStateRecord>> {
        let (seq, _) = load_required(&self.conn, id)?;
        call_states_of(&self.conn, seq)
    }

    fn last_slots(&self) -> Result<BTreeMap<String, Timestamp>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT spec, MAX(scheduled_at) FROM runs WHERE slot LIKE 'at:%' \
             AND (outcome IS NULL OR outcome <> 'canceled') GROUP BY spec",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, get_ts(r, 1)?)))?;
        rows.map(|r| r.map_err(data)).collect()
    }

    fn open_run_progress(&self) -> Result<BTreeMap<String, RunProgress>> {
        // The latest attempt, and the latest notification about the current
        // call (or, without a call id in it, one that arrived after the
        // latest attempt started), of every open run.
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.id, r.tries, \
               (SELECT COUNT(*) FROM attempts a WHERE a.run_seq = r.seq), \
               la.number, la.disposition, \
               (SELECT c.state FROM call_states c WHERE c.run_seq = r.seq \
                  AND ((r.call_id IS NOT NULL AND c.call_id = r.call_id) \
                       OR (c.call_id IS NULL AND c.at >= COALESCE(la.started_at, 0))) \
                  ORDER BY (c.state = 'terminated') DESC, c.seq DESC LIMIT 1) \
             FROM runs r \
             LEFT JOIN attempts la ON la.run_seq = r.seq \
               AND la.number = (SELECT MAX(number) FROM attempts m WHERE m.run_seq = r.seq) \
             WHERE r.state <> 'finished'",
        )?;
        let rows = stmt.query_map([], |r| {
            let number: Option<i64> = r.get(3)?;
            let disposition: Option<Disposition> = get_opt_parsed(r, 4)?;
            let state: Option<String> = r.get(5)?;
            Ok((
                r.get::<_, String>(0)?,
                RunProgress {
                    tries: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
                    attempts: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX),
                    in_flight: number.is_some() && disposition.is_none(),
                    last_disposition: disposition,
                    last_call_state: state.map(CallState::from),
                    not_before: None,
                },
            ))
        })?;
        rows.map(|r| r.map_err(data)).collect()
    }

    fn write_batch(
        &mut self,
        batch: &[crate::ledger::Write],
        now: Timestamp,
    ) -> crate::ledger::BatchResult {
        self.write_batch_impl(batch, now)
    }

    fn open_state(&self) -> Result<crate::ledger::OpenState> {
        self.open_state_impl()
    }

    fn open_state_of(
        &self,
        specs: &std::collections::BTreeSet<String>,
    ) -> Result<crate::ledger::OpenState> {
        self.open_state_of_impl(specs)
    }

    fn prune(&mut self, cutoff: Timestamp) -> Result<usize> {
        self.write(|tx| {
            // A run is kept if it is the newest of its spec, or the newest
            // time-slot run of its spec (catch-up after downtime needs it).
            Ok(exec(
                tx,
                "DELETE FROM runs WHERE state = 'finished' AND updated_at < ?1 \
                 AND EXISTS (SELECT 1 FROM runs n WHERE n.spec = runs.spec \
                     AND (n.scheduled_at, n.seq) > (runs.scheduled_at, runs.seq)) \
                 AND (runs.slot NOT LIKE 'at:%' OR EXISTS (SELECT 1 FROM runs n \
                     WHERE n.spec = runs.spec AND n.slot LIKE 'at:%' \
                     AND (n.scheduled_at, n.seq) > (runs.scheduled_at, runs.seq)))",
                params![us(cutoff)],
            )?)
        })
    }
}

fn attempts_of(conn: &Connection, seq: i64) -> Result<Vec<Attempt>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_seq = ?1 ORDER BY number"
    ))?;
    let rows = stmt.query_map(params![seq], attempt_from_row)?;
    rows.map(|r| r.map_err(data)).collect()
}

fn call_states_of(conn: &Connection, seq: i64) -> Result<Vec<CallStateRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, state, call_id, result_code, result_subcode, result_message \
         FROM call_states WHERE run_seq = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![seq], call_state_from_row)?;
    rows.map(|r| r.map_err(data)).collect()
}
