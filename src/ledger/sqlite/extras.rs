//! What a run carries beyond its row (table `run_extras`, issue 10):
//! the earliest next try after a transient failure, and the promises of a
//! call in progress (its `hangupAfter` as placed, the last keepAlive and
//! hang-up). Every method is one transaction, durable when it returns.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    SqliteLedger, begin_attempt_in, exec, finish_attempt_in, load_required, mark_placed_in,
    mark_requesting_in, refused, reload, us,
};
use crate::ledger::rules::{self, Refusal, view};
use crate::ledger::{AttemptResult, Result, Run, RunState};

/// The reason of a `scheduled` run that is waiting out a passing trouble
/// (a token outage, a 429): `waiting: <last error>; next try at <time>`.
/// Such a run still counts as never tried (only the most recent of a
/// spec's runs due after an outage is placed).
pub const WAITING_PREFIX: &str = "waiting: ";

/// The promises of a run's call, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallPromise {
    /// The spec's `hangupAfter` when the create request left.
    pub hangup_after: Option<Duration>,
    pub last_keep_alive: Option<Timestamp>,
    pub hangup_requested_at: Option<Timestamp>,
}

/// One HTTP attempt of a create request, for [`SqliteLedger::record_create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateStep {
    pub result: AttemptResult,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub client_request_id: String,
}

/// How a create request ends in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateEnd {
    /// 201 with this call id: the run is `placed`.
    Placed { call_id: String },
    /// Nothing was processed by Graph and the trouble passes (429, 503 with
    /// `Retry-After`, connection refused, no token): back to `scheduled`,
    /// not before `retry_after` (else the backoff), the try not counted.
    Requeue {
        retry_after: Option<Duration>,
        error: String,
    },
    /// Rejected or unknown: the run stays `requesting` with its last
    /// attempt closed; the decision finishes it.
    Closed,
}

/// The wait after the `n`-th transient failure in a row without a
/// `Retry-After`: 1 s, 2 s, 4 s, ... at most 60 s.
pub fn requeue_backoff(n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(60))
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn ensure_extras(tx: &Connection, seq: i64) -> Result<()> {
    exec(
        tx,
        "INSERT INTO run_extras (run_seq) VALUES (?1) ON CONFLICT (run_seq) DO NOTHING",
        params![seq],
    )?;
    Ok(())
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.and_then(|v| Timestamp::from_microsecond(v).ok())
}

/// What [`SqliteLedger::record_create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRecorded {
    pub run: Run,
    /// Set when the run went back to `scheduled`: its earliest next try.
    pub not_before: Option<Timestamp>,
}

impl SqliteLedger {
    /// `scheduled` → `requesting` (as [`crate::ledger::Ledger::mark_requesting`])
    /// and, in the same transaction, the call's promise: the spec's
    /// `hangupAfter` as it is now, kept with the run whatever happens to the
    /// spec later.
    pub fn mark_requesting_with(
        &mut self,
        id: &str,
        hangup_after: Option<Duration>,
        now: Timestamp,
    ) -> Result<u32> {
        self.write(|tx| mark_requesting_with_in(tx, id, hangup_after, now))
    }

    /// Records a create request in **one** transaction: every attempt (the
    /// first is `first`, opened by `mark_requesting`; more are opened here),
    /// then the end: the call id and `placed`, or back to `scheduled` with
    /// the earliest next try, or the last attempt closed. A crash leaves
    /// either nothing of it (the run `requesting`, recovered as `unknown`;
    /// a notification reopens it) or all of it.
    pub fn record_create(
        &mut self,
        id: &str,
        first: u32,
        steps: &[CreateStep],
        end: &CreateEnd,
        now: Timestamp,
    ) -> Result<CreateRecorded> {
        self.write(|tx| record_create_in(tx, id, first, steps, end, now))
    }

    /// Sets the reason of a `scheduled` run that cannot be placed now (no
    /// token): `waiting: <why>`. A run carrying another reason (a retry's)
    /// keeps it. Returns whether the row changed.
    pub fn note_waiting(&mut self, id: &str, why: &str, now: Timestamp) -> Result<bool> {
        let reason = format!("{WAITING_PREFIX}{why}");
        self.write(|tx| {
            let n = exec(
                tx,
                "UPDATE runs SET reason = ?2, updated_at = ?3 WHERE id = ?1 \
                 AND state = 'scheduled' AND (reason IS NULL OR reason LIKE 'waiting: %') \
                 AND reason IS NOT ?2",
                params![id, reason, us(now)],
            )?;
            Ok(n == 1)
        })
    }

    /// The earliest next try of each open run waiting out a transient
    /// failure, by run id.
    pub fn not_before_times(&self) -> Result<BTreeMap<String, Timestamp>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.id, x.not_before FROM runs r JOIN run_extras x ON x.run_seq = r.seq \
             WHERE r.state = 'scheduled' AND x.not_before IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (id, at) = row?;
            if let Some(t) = ts(Some(at)) {
                out.insert(id, t);
            }
        }
        Ok(out)
    }

    /// The promises of every open run's call, by run id.
    pub fn call_promises(&self) -> Result<BTreeMap<String, CallPromise>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.id, x.hangup_after_ms, x.last_keep_alive, x.hangup_requested_at \
             FROM runs r JOIN run_extras x ON x.run_seq = r.seq WHERE r.state <> 'finished'",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (id, after, keep, hang) = row?;
            out.insert(
                id,
                CallPromise {
                    hangup_after: after.map(|ms| Duration::from_millis(ms.max(0) as u64)),
                    last_keep_alive: ts(keep),
                    hangup_requested_at: ts(hang),
                },
            );
        }
        Ok(out)
    }

    /// The promise of one run (None: none recorded).
    pub fn call_promise(&self, id: &str) -> Result<Option<CallPromise>> {
        let (seq, _) = load_required(&self.conn, id)?;
        let row = self
            .conn
            .query_row(
                "SELECT hangup_after_ms, last_keep_alive, hangup_requested_at FROM run_extras \
                 WHERE run_seq = ?1",
                params![seq],
                |r| {
                    Ok((
                        r.get::<_, Option<i64>>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.map(|(after, keep, hang)| CallPromise {
            hangup_after: after.map(|ms| Duration::from_millis(ms.max(0) as u64)),
            last_keep_alive: ts(keep),
            hangup_requested_at: ts(hang),
        }))
    }

    /// A keepAlive (`hang_up: false`) or hang-up was sent for the run's call
    /// at `at`.
    pub fn record_call_op(&mut self, id: &str, hang_up: bool, at: Timestamp) -> Result<()> {
        self.write(|tx| record_call_op_in(tx, id, hang_up, None, at))
    }

    /// [`SqliteLedger::record_call_op`] as a compare-and-set (what
    /// [`crate::ledger::Write::CallOp`] does): refused unless the stored
    /// time of the last such operation is `expected`.
    pub fn record_call_op_if(
        &mut self,
        id: &str,
        hang_up: bool,
        expected: Option<Timestamp>,
        at: Timestamp,
    ) -> Result<()> {
        self.write(|tx| record_call_op_in(tx, id, hang_up, Some(expected), at))
    }
}

/// The body of [`SqliteLedger::record_create`], inside the caller's
/// transaction (also [`crate::ledger::Write::Create`] of a batch).
pub(super) fn record_create_in(
    tx: &Connection,
    id: &str,
    first: u32,
    steps: &[CreateStep],
    end: &CreateEnd,
    now: Timestamp,
) -> Result<CreateRecorded> {
    if steps.is_empty() {
        let r = AttemptResult {
            disposition: Some(crate::ledger::Disposition::Failed),
            ..AttemptResult::default()
        };
        finish_attempt_in(tx, id, first, &r, now)?;
    }
    for (i, s) in steps.iter().enumerate() {
        let number = if i == 0 {
            first
        } else {
            begin_attempt_in(tx, id, Some(&s.client_request_id), s.started_at)?
        };
        finish_attempt_in(tx, id, number, &s.result, s.finished_at)?;
    }
    match end {
        CreateEnd::Placed { call_id } => {
            let run = mark_placed_in(tx, id, call_id, now)?;
            let (seq, _) = load_required(tx, id)?;
            exec(
                tx,
                "UPDATE run_extras SET transient_failures = 0, not_before = NULL \
                 WHERE run_seq = ?1",
                params![seq],
            )?;
            Ok(CreateRecorded {
                run,
                not_before: None,
            })
        }
        CreateEnd::Closed => Ok(CreateRecorded {
            run: reload(tx, id)?,
            not_before: None,
        }),
        CreateEnd::Requeue { retry_after, error } => {
            let (seq, run) = load_required(tx, id)?;
            if run.state != RunState::Requesting {
                return Err(refused(
                    &run,
                    Refusal {
                        action: "requeue",
                        why: "only a requesting run goes back to scheduled",
                    },
                ));
            }
            ensure_extras(tx, seq)?;
            let failures: u32 = tx.query_row(
                "UPDATE run_extras SET transient_failures = transient_failures + 1 \
                 WHERE run_seq = ?1 RETURNING transient_failures",
                params![seq],
                |r| r.get(0),
            )?;
            let wait = retry_after.unwrap_or_else(|| requeue_backoff(failures));
            let not_before = add(now, wait);
            exec(
                tx,
                "UPDATE run_extras SET not_before = ?2 WHERE run_seq = ?1",
                params![seq, us(not_before)],
            )?;
            let reason = format!(
                "{WAITING_PREFIX}{error}; next try at {}",
                not_before.round(jiff::Unit::Second).unwrap_or(not_before)
            );
            // A request Graph did not process is not a try: the
            // spec's `retry` attempts are not spent on it.
            exec(
                tx,
                "UPDATE runs SET state = 'scheduled', tries = MAX(tries - 1, 0), \
                 reason = ?2, call_id = NULL, updated_at = ?3 WHERE seq = ?1",
                params![seq, reason, us(now)],
            )?;
            Ok(CreateRecorded {
                run: reload(tx, id)?,
                not_before: Some(not_before),
            })
        }
    }
}

/// The body of [`SqliteLedger::mark_requesting_with`], inside the caller's
/// transaction.
pub(super) fn mark_requesting_with_in(
    tx: &Connection,
    id: &str,
    hangup_after: Option<Duration>,
    now: Timestamp,
) -> Result<u32> {
    let number = mark_requesting_in(tx, id, None, now)?;
    let (seq, _) = load_required(tx, id)?;
    ensure_extras(tx, seq)?;
    exec(
        tx,
        "UPDATE run_extras SET hangup_after_ms = ?2, last_keep_alive = NULL, \
         hangup_requested_at = NULL WHERE run_seq = ?1",
        params![
            seq,
            hangup_after.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        ],
    )?;
    Ok(number)
}

/// The body of [`SqliteLedger::record_call_op`], inside the caller's
/// transaction; with `expected`, a compare-and-set on the stored time.
pub(super) fn record_call_op_in(
    tx: &Connection,
    id: &str,
    hang_up: bool,
    expected: Option<Option<Timestamp>>,
    at: Timestamp,
) -> Result<()> {
    let (seq, run) = load_required(tx, id)?;
    rules::check_call_op(view(&run)).map_err(|r| refused(&run, r))?;
    ensure_extras(tx, seq)?;
    let column = rules::call_op_column(hang_up);
    if let Some(expected) = expected {
        let stored: Option<i64> = tx.query_row(
            &format!("SELECT {column} FROM run_extras WHERE run_seq = ?1"),
            params![seq],
            |r| r.get(0),
        )?;
        rules::check_call_op_unchanged(ts(stored), expected).map_err(|r| refused(&run, r))?;
    }
    exec(
        tx,
        &format!("UPDATE run_extras SET {column} = ?2 WHERE run_seq = ?1"),
        params![seq, us(at)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::postgres::testing::store_test;
    use crate::ledger::{Disposition, Ledger, NewRun, RunKey};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn new_run(l: &mut dyn Ledger) -> String {
        let new = NewRun {
            key: RunKey::revision("s", "r1"),
            revision: "r1".into(),
            due: t(0),
            tenant_id: None,
        };
        l.insert_run(&new, t(0)).unwrap().run.id
    }

    fn step(d: Disposition, status: u16) -> CreateStep {
        CreateStep {
            result: AttemptResult {
                disposition: Some(d),
                http_status: Some(status),
                ..AttemptResult::default()
            },
            started_at: t(1),
            finished_at: t(1),
            client_request_id: "c".into(),
        }
    }

    store_test! {
    fn placed_and_call_id_in_one_write(mem) {
        let mut l = mem();
        let id = new_run(&mut l);
        let n = l
            .mark_requesting_with(&id, Some(Duration::from_secs(2)), t(1))
            .unwrap();
        let end = CreateEnd::Placed {
            call_id: "call-1".into(),
        };
        let r = l
            .record_create(&id, n, &[step(Disposition::Placed, 201)], &end, t(2))
            .unwrap();
        assert_eq!(r.run.state, RunState::Placed);
        assert_eq!(r.run.call_id.as_deref(), Some("call-1"));
        let a = l.attempts(&id).unwrap();
        assert_eq!(a[0].call_id.as_deref(), Some("call-1"));
        assert_eq!(
            l.call_promise(&id).unwrap().unwrap().hangup_after,
            Some(Duration::from_secs(2))
        );
    }
    }

    store_test! {
    fn a_refused_end_writes_nothing(mem) {
        let mut l = mem();
        let id = new_run(&mut l);
        let n = l.mark_requesting_with(&id, None, t(1)).unwrap();
        // attempt 2 does not exist: the whole record is undone
        let end = CreateEnd::Placed {
            call_id: "c".into(),
        };
        assert!(
            l.record_create(&id, n + 1, &[step(Disposition::Placed, 201)], &end, t(2))
                .is_err()
        );
        let run = l.run(&id).unwrap().unwrap();
        assert_eq!(run.state, RunState::Requesting);
        assert!(l.attempts(&id).unwrap()[0].disposition.is_none());
    }
    }

    store_test! {
    fn requeue_goes_back_to_scheduled_with_its_time_and_no_try_spent(mem) {
        let mut l = mem();
        let id = new_run(&mut l);
        let n = l.mark_requesting_with(&id, None, t(1)).unwrap();
        let end = CreateEnd::Requeue {
            retry_after: Some(Duration::from_secs(30)),
            error: "HTTP 429".into(),
        };
        let r = l
            .record_create(&id, n, &[step(Disposition::Failed, 429)], &end, t(2))
            .unwrap();
        assert_eq!(r.run.state, RunState::Scheduled);
        assert_eq!(r.not_before, Some(t(32)));
        assert!(r.run.reason.as_deref().unwrap().starts_with(WAITING_PREFIX));
        assert_eq!(l.not_before_times().unwrap().get(&id), Some(&t(32)));
        assert_eq!(l.open_run_progress().unwrap()[&id].tries, 0);
        // the next try opens attempt 2; without Retry-After the backoff grows
        let n2 = l.mark_requesting_with(&id, None, t(40)).unwrap();
        assert_eq!(n2, 2);
        let end = CreateEnd::Requeue {
            retry_after: None,
            error: "no token".into(),
        };
        let r = l.record_create(&id, n2, &[], &end, t(41)).unwrap();
        assert_eq!(r.not_before, Some(t(43)));
    }
    }

    store_test! {
    fn waiting_notes_do_not_replace_other_reasons(mem) {
        let mut l = mem();
        let id = new_run(&mut l);
        assert!(l.note_waiting(&id, "token endpoint: down", t(1)).unwrap());
        assert!(!l.note_waiting(&id, "token endpoint: down", t(2)).unwrap());
        assert!(l.note_waiting(&id, "token endpoint: other", t(3)).unwrap());
        let r = l.run(&id).unwrap().unwrap();
        assert_eq!(r.reason.as_deref(), Some("waiting: token endpoint: other"));
    }
    }

    store_test! {
    fn call_ops_are_kept(mem) {
        let mut l = mem();
        let id = new_run(&mut l);
        l.mark_requesting_with(&id, None, t(1)).unwrap();
        l.record_call_op(&id, false, t(5)).unwrap();
        l.record_call_op(&id, true, t(6)).unwrap();
        let p = l.call_promises().unwrap()[&id];
        assert_eq!(p.last_keep_alive, Some(t(5)));
        assert_eq!(p.hangup_requested_at, Some(t(6)));
    }
    }
}
