//! The PostgreSQL schema of the shared ledger and its migration.
//!
//! The tables mirror the SQLite ledger's (src/ledger/sqlite.rs): the same
//! names and columns, times as BIGINT microseconds since the Unix epoch,
//! every integer BIGINT. What PostgreSQL adds: the claim of a run by one
//! replica (`claim_owner`, `claim_token` from the `claim_tokens` sequence,
//! `lease_until` on the database clock), the shared `spec_views`, and the
//! identity memory keyed by replica.
//!
//! Migration runs in one transaction under `pg_advisory_xact_lock`, so that
//! several replicas starting at once serialise: the first creates the
//! schema, the others find it at the current version and change nothing.

use postgres::GenericClient;

use crate::ledger::{LedgerError, Result};

/// Ordered migrations: entry `i` takes `schema_version.version` from `i`
/// to `i + 1`. Append only; never edit a shipped entry.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the SQLite ledger's tables at its version 3, plus claims and views.
    r#"
CREATE TABLE runs (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    spec            TEXT COLLATE "C" NOT NULL,
    slot            TEXT COLLATE "C" NOT NULL,
    revision        TEXT NOT NULL,
    scheduled_at    BIGINT NOT NULL,
    due_at          BIGINT NOT NULL,
    state           TEXT NOT NULL,
    outcome         TEXT,
    reason          TEXT,
    call_id         TEXT,
    tenant_id       TEXT,
    result_code     BIGINT,
    result_subcode  BIGINT,
    result_message  TEXT,
    established_at  BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    tries           BIGINT NOT NULL DEFAULT 0,
    claim_owner     TEXT,
    claim_token     BIGINT,
    lease_until     TIMESTAMPTZ,
    UNIQUE (spec, slot),
    CHECK ((state = 'finished') = (outcome IS NOT NULL))
);
CREATE INDEX runs_by_spec ON runs (spec, scheduled_at, seq);
CREATE INDEX runs_by_call_id ON runs (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX runs_open ON runs (due_at, seq) WHERE state <> 'finished';
CREATE INDEX runs_finished ON runs (updated_at) WHERE state = 'finished';
CREATE INDEX runs_requesting ON runs (lease_until) WHERE state = 'requesting';

CREATE TABLE attempts (
    run_seq           BIGINT NOT NULL REFERENCES runs (seq) ON DELETE CASCADE,
    number            BIGINT NOT NULL,
    started_at        BIGINT NOT NULL,
    finished_at       BIGINT,
    disposition       TEXT,
    http_status       BIGINT,
    error_code        TEXT,
    error_message     TEXT,
    request_id        TEXT,
    client_request_id TEXT,
    call_id           TEXT,
    PRIMARY KEY (run_seq, number)
);
CREATE INDEX attempts_by_call_id ON attempts (call_id) WHERE call_id IS NOT NULL;

CREATE TABLE call_states (
    run_seq         BIGINT NOT NULL REFERENCES runs (seq) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    state           TEXT NOT NULL,
    call_id         TEXT,
    result_code     BIGINT,
    result_subcode  BIGINT,
    result_message  TEXT,
    PRIMARY KEY (run_seq, seq)
);

CREATE TABLE run_extras (
    run_seq             BIGINT PRIMARY KEY REFERENCES runs (seq) ON DELETE CASCADE,
    not_before          BIGINT,
    transient_failures  BIGINT NOT NULL DEFAULT 0,
    hangup_after_ms     BIGINT,
    last_keep_alive     BIGINT,
    hangup_requested_at BIGINT
);

CREATE TABLE spec_renames (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_name TEXT NOT NULL,
    to_name   TEXT NOT NULL,
    revision  TEXT NOT NULL,
    runs      BIGINT NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX spec_renames_to ON spec_renames (to_name, seq);

CREATE TABLE spec_known (
    replica   TEXT NOT NULL,
    name      TEXT NOT NULL,
    revision  TEXT NOT NULL,
    file      TEXT NOT NULL,
    PRIMARY KEY (replica, name)
);

CREATE TABLE spec_views (
    spec      TEXT COLLATE "C" PRIMARY KEY,
    revision  TEXT COLLATE "C",
    mtime     BIGINT NOT NULL,
    replica   TEXT NOT NULL,
    updated   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE SEQUENCE claim_tokens;
"#,
];

/// The schema version this build writes.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Whether `name` is usable as a schema name without quoting surprises:
/// `[a-z_][a-z0-9_]*`, at most 63 bytes.
pub(super) fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Creates the schema or migrates it to [`PG_SCHEMA_VERSION`], in one
/// transaction holding an advisory lock keyed by the schema name.
pub(super) fn migrate(client: &mut postgres::Client, where_: &str, schema: &str) -> Result<()> {
    let mut tx = client.transaction()?;
    // Class 0x63616c6c ("call"), object: the schema name's hash.
    tx.execute(
        "SELECT pg_advisory_xact_lock(1667329132, hashtext($1::text))",
        &[&schema],
    )?;
    // The name is validated ([`valid_schema_name`]): safe to splice.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}; \
         CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);"
    ))?;
    let version: i64 = tx
        .query_opt("SELECT version FROM schema_version", &[])?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if version > PG_SCHEMA_VERSION {
        return Err(LedgerError::TooNew {
            path: std::path::PathBuf::from(format!("{where_} schema {schema}")),
            found: version,
            supported: PG_SCHEMA_VERSION,
        });
    }
    for sql in MIGRATIONS.iter().skip(version as usize) {
        tx.batch_execute(sql)?;
    }
    if version < PG_SCHEMA_VERSION {
        tx.execute("DELETE FROM schema_version", &[])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&PG_SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The version stored in `schema` (0 when it has none).
pub(super) fn stored_version(c: &mut impl GenericClient) -> Result<i64> {
    Ok(c.query_opt("SELECT version FROM schema_version", &[])?
        .map(|r| r.get(0))
        .unwrap_or(0))
}
