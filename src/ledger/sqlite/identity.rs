//! What the ledger keeps about spec identity (docs/runs.md, "Run
//! identity"): renames, the last known specs, and the re-keying of runs
//! recorded under an older revision format.
//!
//! The two tables are created on first use (`CREATE TABLE IF NOT EXISTS`)
//! rather than by a numbered migration: they are side tables that no run
//! query reads, and an older calld opening the file ignores them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::{Result, SqliteLedger, exec, get_ts, us};
use crate::identity::Known;

const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS spec_renames (
    seq       INTEGER PRIMARY KEY,
    from_name TEXT NOT NULL,
    to_name   TEXT NOT NULL,
    revision  TEXT NOT NULL,
    runs      INTEGER NOT NULL,          -- how many runs moved
    at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS spec_renames_to ON spec_renames (to_name, seq);
CREATE TABLE IF NOT EXISTS spec_known (
    name      TEXT PRIMARY KEY,
    revision  TEXT NOT NULL,
    file      TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// One rename, as `calld history` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenameRecord {
    pub from: String,
    pub to: String,
    pub revision: String,
    pub runs: u64,
    pub at: Timestamp,
}

impl SqliteLedger {
    pub(super) fn identity_tables(&self) -> Result<()> {
        if !self.read_only {
            self.conn.execute_batch(TABLES)?;
        }
        Ok(())
    }

    fn has_identity_tables(&self) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'spec_renames'",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Moves every run of `from` to `to` and records the rename. Refused
    /// (returns `None`) when `to` already has runs: histories are never
    /// merged. Returns how many runs moved.
    pub fn rename_spec(
        &mut self,
        from: &str,
        to: &str,
        revision: &str,
        now: Timestamp,
    ) -> Result<Option<usize>> {
        self.identity_tables()?;
        self.write(|tx| {
            let taken: i64 =
                tx.query_row("SELECT COUNT(*) FROM runs WHERE spec = ?1", params![to], |r| {
                    r.get(0)
                })?;
            if taken > 0 {
                return Ok(None);
            }
            let moved = exec(tx,
                "UPDATE runs SET spec = ?2 WHERE spec = ?1",
                params![from, to],
            )?;
            exec(tx,
                "INSERT INTO spec_renames (from_name, to_name, revision, runs, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![from, to, revision, moved as i64, us(now)],
            )?;
            Ok(Some(moved))
        })
    }

    /// Re-keys an unscheduled spec's run recorded under revision `from` (an
    /// older calld's revision format) to `to`, unless a run of `to` exists.
    /// Returns whether a run was re-keyed.
    pub fn adopt_revision(&mut self, spec: &str, from: &str, to: &str) -> Result<bool> {
        self.write(|tx| {
            let n = exec(
                tx,
                "UPDATE runs SET slot = 'rev:' || ?3, revision = ?3 \
                 WHERE spec = ?1 AND slot = 'rev:' || ?2 \
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE spec = ?1 AND slot = 'rev:' || ?3)",
                params![spec, from, to],
            )?;
            Ok(n > 0)
        })
    }

    /// The renames that led to `name`, newest first, following the chain
    /// back (`a` → `b` → `name`).
    pub fn renames_to(&self, name: &str) -> Result<Vec<RenameRecord>> {
        if !self.has_identity_tables()? {
            return Ok(Vec::new());
        }
        let mut out: Vec<RenameRecord> = Vec::new();
        let mut target = name.to_string();
        let mut before = i64::MAX;
        while out.len() < 100 {
            let row = self
                .conn
                .query_row(
                    "SELECT seq, from_name, to_name, revision, runs, at FROM spec_renames \
                     WHERE to_name = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT 1",
                    params![target, before],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            RenameRecord {
                                from: r.get(1)?,
                                to: r.get(2)?,
                                revision: r.get(3)?,
                                runs: r.get::<_, i64>(4)? as u64,
                                at: get_ts(r, 5)?,
                            },
                        ))
                    },
                )
                .optional()?;
            let Some((seq, rec)) = row else { break };
            target = rec.from.clone();
            before = seq;
            out.push(rec);
        }
        Ok(out)
    }

    /// The specs known at the daemon's last step.
    pub fn known_specs(&self) -> Result<BTreeMap<String, Known>> {
        if !self.has_identity_tables()? {
            return Ok(BTreeMap::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT name, revision, file FROM spec_known")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Known {
                    revision: r.get(1)?,
                    file: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replaces the known specs: writes only what changed from `before`.
    pub fn save_known(
        &mut self,
        before: &BTreeMap<String, Known>,
        after: &BTreeMap<String, Known>,
    ) -> Result<()> {
        self.identity_tables()?;
        self.write(|tx| save_known_in(tx, before, after))
    }
}

/// [`SqliteLedger::save_known`] inside a transaction (also a
/// [`Write::Known`](crate::ledger::Write::Known) of a batch).
pub(super) fn save_known_in(
    tx: &rusqlite::Connection,
    before: &BTreeMap<String, Known>,
    after: &BTreeMap<String, Known>,
) -> Result<()> {
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        exec(tx, "DELETE FROM spec_known WHERE name = ?1", params![name])?;
    }
    for (name, k) in after {
        if before.get(name) != Some(k) {
            exec(
                tx,
                "INSERT OR REPLACE INTO spec_known (name, revision, file) VALUES (?1, ?2, ?3)",
                params![name, k.revision, k.file],
            )?;
        }
    }
    Ok(())
}
