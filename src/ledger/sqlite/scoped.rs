//! [`Ledger::open_state_of`] on SQLite: the queries of [`Ledger::open_state`] with a
//! `spec IN (...)` filter (the names go in as one JSON array), so their cost
//! follows the number of specs asked about (index `runs_by_spec`, named
//! so the planner does not walk every open run instead).

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::params;

use super::extras::CallPromise;
use super::{RUN_COLUMNS, SqliteLedger, data, get_opt_parsed, get_ts, query_runs};
use crate::ledger::{CallState, Disposition, OpenState, Result, RunProgress};

const IN_SPECS: &str = "(SELECT value FROM json_each(?1))";

impl SqliteLedger {
    pub(super) fn open_state_of_impl(&self, specs: &BTreeSet<String>) -> Result<OpenState> {
        if specs.is_empty() {
            return Ok(OpenState::default());
        }
        let names = serde_json::to_string(specs).expect("JSON");
        // One read transaction: every part of the answer from one snapshot.
        let tx = self.conn.unchecked_transaction()?;
        let runs = query_runs(
            &self.conn,
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_by_spec WHERE spec IN {IN_SPECS} \
                 AND state <> 'finished' ORDER BY due_at, seq"
            ),
            params![names],
        )?;
        let mut progress = self.progress_of(&names)?;
        let latest = query_runs(
            &self.conn,
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE seq IN ( \
                   SELECT (SELECT n.seq FROM runs n WHERE n.spec = s.value \
                           AND n.state <> 'scheduled' \
                           ORDER BY n.scheduled_at DESC, n.seq DESC LIMIT 1) \
                   FROM json_each(?1) s) \
                 ORDER BY spec"
            ),
            params![names],
        )?
        .into_iter()
        .map(|r| (r.spec.clone(), r))
        .collect();
        let last_slots = {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT spec, MAX(scheduled_at) FROM runs INDEXED BY runs_by_spec WHERE spec IN {IN_SPECS} \
                 AND slot LIKE 'at:%' \
                 AND (outcome IS NULL OR outcome <> 'canceled') GROUP BY spec"
            ))?;
            let rows = stmt.query_map(params![names], |r| {
                Ok((r.get::<_, String>(0)?, get_ts(r, 1)?))
            })?;
            rows.map(|r| r.map_err(data))
                .collect::<Result<BTreeMap<_, _>>>()?
        };
        let mut promises = BTreeMap::new();
        let mut not_before = Vec::new();
        {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT r.id, r.state, x.hangup_after_ms, x.last_keep_alive, \
                   x.hangup_requested_at, x.not_before \
                 FROM runs r INDEXED BY runs_by_spec JOIN run_extras x ON x.run_seq = r.seq \
                 WHERE r.spec IN {IN_SPECS} AND r.state <> 'finished'"
            ))?;
            let rows = stmt.query_map(params![names], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })?;
            for row in rows {
                let (id, state, after, keep, hang, nb) = row?;
                if state == "scheduled"
                    && let Some(t) = ts(nb)
                {
                    not_before.push((id.clone(), t));
                }
                promises.insert(
                    id,
                    CallPromise {
                        hangup_after: after
                            .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
                        last_keep_alive: ts(keep),
                        hangup_requested_at: ts(hang),
                    },
                );
            }
        }
        for (id, t) in not_before {
            progress.entry(id).or_default().not_before = Some(t);
        }
        tx.finish()?;
        Ok(OpenState {
            runs,
            progress,
            latest,
            last_slots,
            promises,
        })
    }
}

fn ts(v: Option<i64>) -> Option<jiff::Timestamp> {
    v.and_then(|v| jiff::Timestamp::from_microsecond(v).ok())
}

impl SqliteLedger {
    /// [`Ledger::open_run_progress`](crate::ledger::Ledger::open_run_progress)
    /// of the open runs of the specs in `names` (a JSON array).
    fn progress_of(&self, names: &str) -> Result<BTreeMap<String, RunProgress>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT r.id, r.tries, \
               (SELECT COUNT(*) FROM attempts a WHERE a.run_seq = r.seq), \
               la.number, la.disposition, \
               (SELECT c.state FROM call_states c WHERE c.run_seq = r.seq \
                  AND ((r.call_id IS NOT NULL AND c.call_id = r.call_id) \
                       OR (c.call_id IS NULL AND c.at >= COALESCE(la.started_at, 0))) \
                  ORDER BY (c.state = 'terminated') DESC, c.seq DESC LIMIT 1) \
             FROM runs r INDEXED BY runs_by_spec \
             LEFT JOIN attempts la ON la.run_seq = r.seq \
               AND la.number = (SELECT MAX(number) FROM attempts m WHERE m.run_seq = r.seq) \
             WHERE r.spec IN {IN_SPECS} AND r.state <> 'finished'"
        ))?;
        let rows = stmt.query_map(params![names], |r| {
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
}
