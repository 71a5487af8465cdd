//! The [`Ledger`] methods on PostgreSQL: the SQLite ledger's statements
//! (src/ledger/sqlite.rs, sqlite/extras.rs, sqlite/identity.rs) in
//! PostgreSQL's dialect, with the same rules ([`rules`]) deciding. Every
//! write locks the run's row first (`SELECT ... FOR UPDATE`): two replicas
//! changing one run serialise on it as two SQLite writers do on the file.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use postgres::types::ToSql;
use postgres::{IsolationLevel, Row};

use super::cache::{Conn, Cx, Q};
use rand::Rng;

use super::{PgLedger, notify};
use crate::identity::Known;
use crate::ledger::batch::{BatchResult, OpenState, Write, Written};
use crate::ledger::rules::{self, NotificationEffect, Placed, Refusal, refused, view};
use crate::ledger::{
    Attempt, AttemptResult, CallPromise, CallState, CallStateRecord, CallStateUpdate, Claim,
    CreateEnd, CreateRecorded, CreateStep, Disposition, FencingToken, Finish, Inserted, Ledger,
    LedgerError, NewRun, Notified, Outcome, RenameRecord, Result, ResultInfo, Run, RunKey,
    RunProgress, RunRecord, RunState, Slot, SpecView, StateChange, StateNotice, WAITING_PREFIX,
    requeue_backoff,
};

const RUN_COLUMNS: &str = "seq, id, spec, slot, revision, scheduled_at, due_at, state, outcome, \
     reason, call_id, tenant_id, result_code, result_subcode, result_message, established_at, \
     created_at, updated_at";

const ATTEMPT_COLUMNS: &str = "number, started_at, finished_at, disposition, http_status, \
     error_code, error_message, request_id, client_request_id, call_id";

const ID_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A new random run id: 16 characters of `[a-z2-7]` (80 bits), URL-safe.
fn new_run_id() -> String {
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

pub(super) fn us(t: Timestamp) -> i64 {
    t.as_microsecond()
}

fn bad(detail: impl Into<String>) -> LedgerError {
    LedgerError::BadData {
        detail: detail.into(),
    }
}

fn ts(v: i64) -> Result<Timestamp> {
    Timestamp::from_microsecond(v).map_err(|e| bad(format!("bad time {v}: {e}")))
}

fn opt_ts(v: Option<i64>) -> Result<Option<Timestamp>> {
    v.map(ts).transpose()
}

fn get<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| bad(format!("column {idx}: {e}")))
}

fn parsed<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| bad(e.to_string()))
}

fn result_info(row: &Row, idx: usize) -> Result<Option<ResultInfo>> {
    let code: Option<i64> = get(row, idx)?;
    let subcode: Option<i64> = get(row, idx + 1)?;
    let message: Option<String> = get(row, idx + 2)?;
    Ok(
        (code.is_some() || subcode.is_some() || message.is_some()).then_some(ResultInfo {
            code,
            subcode,
            message,
        }),
    )
}

/// Maps a row selected with [`RUN_COLUMNS`] to (seq, run).
pub(super) fn run_from_row(row: &Row) -> Result<(i64, Run)> {
    let slot_text: String = get(row, 3)?;
    let slot =
        Slot::from_key_text(&slot_text).ok_or_else(|| bad(format!("bad slot {slot_text:?}")))?;
    let state: String = get(row, 7)?;
    let outcome: Option<String> = get(row, 8)?;
    Ok((
        get(row, 0)?,
        Run {
            id: get(row, 1)?,
            spec: get(row, 2)?,
            slot,
            revision: get(row, 4)?,
            scheduled_at: ts(get(row, 5)?)?,
            due_at: ts(get(row, 6)?)?,
            state: parsed(&state)?,
            outcome: outcome.as_deref().map(parsed).transpose()?,
            reason: get(row, 9)?,
            call_id: get(row, 10)?,
            tenant_id: get(row, 11)?,
            result_info: result_info(row, 12)?,
            established_at: opt_ts(get(row, 15)?)?,
            created_at: ts(get(row, 16)?)?,
            updated_at: ts(get(row, 17)?)?,
        },
    ))
}

fn attempt_from_row(row: &Row) -> Result<Attempt> {
    let disposition: Option<String> = get(row, 3)?;
    let status: Option<i64> = get(row, 4)?;
    Ok(Attempt {
        number: u32::try_from(get::<i64>(row, 0)?).map_err(|e| bad(e.to_string()))?,
        started_at: ts(get(row, 1)?)?,
        finished_at: opt_ts(get(row, 2)?)?,
        disposition: disposition.as_deref().map(parsed).transpose()?,
        http_status: status.map(|s| u16::try_from(s).unwrap_or(0)),
        error_code: get(row, 5)?,
        error_message: get(row, 6)?,
        request_id: get(row, 7)?,
        client_request_id: get(row, 8)?,
        call_id: get(row, 9)?,
    })
}

fn call_state_from_row(row: &Row) -> Result<CallStateRecord> {
    let state: String = get(row, 2)?;
    Ok(CallStateRecord {
        seq: u32::try_from(get::<i64>(row, 0)?).map_err(|e| bad(e.to_string()))?,
        at: ts(get(row, 1)?)?,
        state: CallState::from(state),
        call_id: get(row, 3)?,
        result_info: result_info(row, 4)?,
    })
}

pub(super) fn query_runs(
    c: &mut impl Q,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Run>> {
    c.query(sql, params)?
        .iter()
        .map(|r| run_from_row(r).map(|(_, run)| run))
        .collect()
}

fn load(c: &mut impl Q, id: &str) -> Result<Option<(i64, Run)>> {
    c.query_opt(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(run_from_row)
    .transpose()
}

/// The run, its row locked until the transaction ends.
pub(super) fn load_required(c: &mut impl Q, id: &str) -> Result<(i64, Run)> {
    c.query_opt(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE"),
        &[&id],
    )?
    .as_ref()
    .map(run_from_row)
    .transpose()?
    .ok_or_else(|| LedgerError::UnknownRun { id: id.to_string() })
}

fn load_required_unlocked(c: &mut impl Q, id: &str) -> Result<(i64, Run)> {
    load(c, id)?.ok_or_else(|| LedgerError::UnknownRun { id: id.to_string() })
}

pub(super) fn reload(c: &mut impl Q, id: &str) -> Result<Run> {
    load_required_unlocked(c, id).map(|(_, r)| r)
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

fn find_by_call_id(c: &mut impl Q, call_id: &str) -> Result<Option<Run>> {
    Ok(query_runs(
        c,
        &format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE call_id = $1 \
             OR seq IN (SELECT run_seq FROM attempts WHERE call_id = $1) \
             ORDER BY (call_id IS NOT DISTINCT FROM $1) DESC, seq DESC LIMIT 1"
        ),
        &[&call_id],
    )?
    .pop())
}

fn next_attempt(
    c: &mut impl Q,
    seq: i64,
    client_request_id: Option<&str>,
    now: Timestamp,
) -> Result<u32> {
    let number: i64 = c
        .query_one(
            "INSERT INTO attempts (run_seq, number, started_at, client_request_id) \
             VALUES ($1, (SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE run_seq = $1), \
             $2, $3) RETURNING number",
            &[&seq, &us(now), &client_request_id],
        )?
        .get(0);
    u32::try_from(number).map_err(|e| bad(e.to_string()))
}

// ---------------------------------------------------------------- writes

/// [`PgLedger::save_known`] inside a transaction (also a
/// [`Write::Known`] of a batch): this replica's known specs, only what
/// changed from `before`.
pub(super) fn save_known_in(
    c: &mut impl Q,
    me: &str,
    before: &BTreeMap<String, Known>,
    after: &BTreeMap<String, Known>,
) -> Result<()> {
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        c.execute(
            "DELETE FROM spec_known WHERE replica = $1 AND name = $2",
            &[&me, name],
        )?;
    }
    for (name, k) in after {
        if before.get(name) != Some(k) {
            c.execute(
                "INSERT INTO spec_known (replica, name, revision, file) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (replica, name) \
                 DO UPDATE SET revision = excluded.revision, file = excluded.file",
                &[&me, name, &k.revision, &k.file],
            )?;
        }
    }
    Ok(())
}

pub(super) fn insert_run_in(c: &mut impl Q, new: &NewRun, now: Timestamp) -> Result<Inserted> {
    let slot = new.key.slot.normalized();
    let slot_text = slot.key_text();
    let scheduled = match &slot {
        Slot::At(t) => *t,
        Slot::Revision(_) | Slot::Trigger(_) => now,
    };
    // The (spec, slot) UNIQUE constraint decides, also between replicas.
    // (A collision of two random 80-bit ids fails the write.)
    let id = new_run_id();
    let n = c.execute(
        "INSERT INTO runs (id, spec, slot, revision, scheduled_at, due_at, state, \
         tenant_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8, $8) \
         ON CONFLICT (spec, slot) DO UPDATE SET state = 'scheduled', \
           outcome = NULL, reason = NULL, revision = excluded.revision, \
           due_at = excluded.due_at, tenant_id = excluded.tenant_id, \
           updated_at = excluded.updated_at \
         WHERE runs.state = 'finished' AND runs.outcome = 'canceled'",
        &[
            &id,
            &new.key.spec,
            &slot_text,
            &new.revision,
            &us(scheduled),
            &us(new.due),
            &new.tenant_id,
            &us(now),
        ],
    )?;
    let run = query_runs(
        c,
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE spec = $1 AND slot = $2"),
        &[&new.key.spec, &slot_text],
    )?
    .pop()
    .ok_or_else(|| bad("an inserted run is missing"))?;
    Ok(Inserted {
        run,
        created: n == 1,
    })
}

/// `scheduled` → `requesting`. With `claim`, the run must be claimed by
/// this replica with that token and a lease not yet expired (fencing: a
/// replica that stalled past its lease cannot send); without, it must not
/// be claimed by another replica whose lease runs. Either way the run's
/// lease is this replica's from now on (renewed while the request is in
/// flight, reaped when it expires).
pub(super) fn mark_requesting_in(
    c: &mut impl Q,
    me: &PgCtx<'_>,
    id: &str,
    client_request_id: Option<&str>,
    claim: Option<u64>,
    now: Timestamp,
) -> Result<u32> {
    let (seq, run) = load_required(c, id)?;
    rules::check_requesting(view(&run)).map_err(|r| refused(&run, r))?;
    let token = claim.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let changed = c.execute(
        "UPDATE runs SET state = 'requesting', tries = tries + 1, updated_at = $2, \
             reason = CASE WHEN reason LIKE 'waiting: %' THEN NULL ELSE reason END, \
             claim_owner = $3, lease_until = now() + ($4::bigint * interval '1 microsecond') \
         WHERE seq = $1 AND state = 'scheduled' AND CASE WHEN $5::bigint IS NULL \
             THEN (lease_until IS NULL OR lease_until <= now() OR claim_owner = $3) \
             ELSE (claim_token = $5 AND claim_owner = $3 AND lease_until > now()) END",
        &[&seq, &us(now), &me.replica, &me.lease_us(), &token],
    )?;
    if changed != 1 {
        return Err(refused(
            &run,
            Refusal {
                action: "mark requesting",
                why: if claim.is_some() {
                    "this replica's claim on the run was lost (lease expired or taken over)"
                } else {
                    "another replica holds the claim on the run"
                },
            },
        ));
    }
    next_attempt(c, seq, client_request_id, now)
}

pub(super) fn begin_attempt_in(
    c: &mut impl Q,
    id: &str,
    client_request_id: Option<&str>,
    now: Timestamp,
) -> Result<u32> {
    let (seq, run) = load_required(c, id)?;
    rules::check_begin_attempt(view(&run)).map_err(|r| refused(&run, r))?;
    c.execute(
        "UPDATE runs SET updated_at = $2 WHERE seq = $1",
        &[&seq, &us(now)],
    )?;
    next_attempt(c, seq, client_request_id, now)
}

pub(super) fn finish_attempt_in(
    c: &mut impl Q,
    id: &str,
    number: u32,
    result: &AttemptResult,
    now: Timestamp,
) -> Result<()> {
    let (seq, run) = load_required(c, id)?;
    let in_flight: Option<bool> = c
        .query_opt(
            "SELECT disposition IS NULL FROM attempts WHERE run_seq = $1 AND number = $2",
            &[&seq, &i64::from(number)],
        )?
        .map(|r| r.get(0));
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
    c.execute(
        "UPDATE attempts SET finished_at = $3, disposition = $4, http_status = $5, \
                 error_code = $6, error_message = $7, request_id = $8, \
                 client_request_id = COALESCE($9, client_request_id) \
                 WHERE run_seq = $1 AND number = $2",
        &[
            &seq,
            &i64::from(number),
            &us(now),
            // NULL means "in flight": no disposition is stored as unknown.
            &result.disposition.unwrap_or(Disposition::Unknown).as_str(),
            &result.http_status.map(i64::from),
            &result.error_code,
            &result.error_message,
            &result.request_id,
            &result.client_request_id,
        ],
    )?;
    c.execute(
        "UPDATE runs SET updated_at = $2 WHERE seq = $1",
        &[&seq, &us(now)],
    )?;
    Ok(())
}

pub(super) fn mark_placed_in(
    c: &mut impl Q,
    id: &str,
    call_id: &str,
    now: Timestamp,
) -> Result<Run> {
    let (seq, run) = load_required(c, id)?;
    let placed = rules::check_placed(view(&run), call_id).map_err(|r| refused(&run, r))?;
    let state = match placed {
        Placed::ToPlaced => RunState::Placed,
        Placed::KeepState => run.state,
    };
    c.execute(
        "UPDATE runs SET state = $2, call_id = $3, updated_at = $4 WHERE seq = $1",
        &[&seq, &state.as_str(), &call_id, &us(now)],
    )?;
    c.execute(
        "UPDATE attempts SET call_id = $2 WHERE run_seq = $1 AND call_id IS NULL \
                 AND number = (SELECT MAX(number) FROM attempts WHERE run_seq = $1)",
        &[&seq, &call_id],
    )?;
    reload(c, id)
}

fn insert_call_state(
    c: &mut impl Q,
    seq: i64,
    update: &CallStateUpdate,
    now: Timestamp,
) -> Result<()> {
    let info = update.result_info.as_ref();
    c.execute(
        "INSERT INTO call_states (run_seq, seq, at, state, call_id, result_code, \
             result_subcode, result_message) \
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_states WHERE run_seq = $1), \
             $2, $3, $4, $5, $6, $7)",
        &[
            &seq,
            &us(now),
            &update.state.as_str(),
            &update.call_id,
            &info.and_then(|i| i.code),
            &info.and_then(|i| i.subcode),
            &info.and_then(|i| i.message.as_deref()),
        ],
    )?;
    Ok(())
}

/// The SQLite ledger's `record_state_for`, statement by statement.
pub(super) fn record_state_for(
    c: &mut impl Q,
    id: &str,
    update: &CallStateUpdate,
    attempt: Option<u32>,
    now: Timestamp,
) -> Result<Notified> {
    let (seq, run) = load_required(c, id)?;
    let info = update.result_info.as_ref();
    let duplicate: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM call_states WHERE run_seq = $1 AND state = $2 \
             AND call_id IS NOT DISTINCT FROM $3::text \
             AND result_code IS NOT DISTINCT FROM $4::bigint \
             AND result_subcode IS NOT DISTINCT FROM $5::bigint)",
            &[
                &seq,
                &update.state.as_str(),
                &update.call_id,
                &info.and_then(|i| i.code),
                &info.and_then(|i| i.subcode),
            ],
        )?
        .get(0);
    if duplicate {
        return Ok(Notified {
            run,
            change: StateChange::Recorded,
        });
    }
    let latest: Option<(u32, Option<String>)> = c
        .query_opt(
            "SELECT number, call_id FROM attempts WHERE run_seq = $1 ORDER BY number DESC LIMIT 1",
            &[&seq],
        )?
        .map(|r| (r.get::<_, i64>(0) as u32, r.get(1)));
    let about: Option<u32> = match (attempt, &update.call_id) {
        (Some(n), _) => Some(n),
        (None, Some(call)) => c
            .query_opt(
                "SELECT number FROM attempts WHERE run_seq = $1 AND call_id = $2 \
                 ORDER BY number DESC LIMIT 1",
                &[&seq, call],
            )?
            .map(|r| r.get::<_, i64>(0) as u32),
        (None, None) => None,
    };
    let earlier = matches!((about, &latest), (Some(a), Some((n, _))) if a < *n);
    if earlier {
        insert_call_state(c, seq, update, now)?;
        if let (Some(a), Some(call)) = (about, &update.call_id) {
            c.execute(
                "UPDATE attempts SET call_id = COALESCE(call_id, $3) WHERE run_seq = $1 AND number = $2",
                &[&seq, &i64::from(a), call],
            )?;
        }
        return Ok(Notified {
            run: reload(c, id)?,
            change: StateChange::Recorded,
        });
    }
    let latest_call = latest.as_ref().and_then(|(_, c)| c.clone());
    let this_call = update.call_id.clone().or_else(|| latest_call.clone());
    let same_call = match (&this_call, run.call_id.as_ref().or(latest_call.as_ref())) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if update.state == CallState::Established && same_call && run.established_at.is_none() {
        let late_retry = run.state == RunState::Scheduled && latest.is_some();
        let late_final =
            run.state == RunState::Finished && run.outcome == Some(Outcome::NotEstablished);
        if late_retry || late_final {
            let ended: bool = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM call_states WHERE run_seq = $1 \
                     AND call_id IS NOT DISTINCT FROM $2::text AND state = 'terminated')",
                    &[&seq, &this_call],
                )?
                .get(0);
            let state = if ended {
                RunState::Terminating
            } else {
                RunState::Established
            };
            insert_call_state(c, seq, update, now)?;
            c.execute(
                "UPDATE runs SET state = $2, outcome = NULL, reason = NULL, call_id = $3, \
                 established_at = $4, updated_at = $4 WHERE seq = $1",
                &[&seq, &state.as_str(), &this_call, &us(now)],
            )?;
            return Ok(Notified {
                run: reload(c, id)?,
                change: StateChange::Reopened,
            });
        }
    }
    insert_call_state(c, seq, update, now)?;
    let effect = rules::on_notification(view(&run), &update.state, update.call_id.as_deref());
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
            c.execute(
                "UPDATE runs SET state = $2 WHERE seq = $1",
                &[&seq, &state.as_str()],
            )?;
        }
        NotificationEffect::Reopen(state) => {
            c.execute(
                "UPDATE runs SET state = $2, outcome = NULL, reason = NULL WHERE seq = $1",
                &[&seq, &state.as_str()],
            )?;
        }
        NotificationEffect::Record => {}
    }
    if current_call {
        c.execute(
            "UPDATE runs SET call_id = COALESCE(call_id, $2), updated_at = $3 WHERE seq = $1",
            &[&seq, &update.call_id, &us(now)],
        )?;
        if update.state == CallState::Established {
            c.execute(
                "UPDATE runs SET established_at = COALESCE(established_at, $2) WHERE seq = $1",
                &[&seq, &us(now)],
            )?;
        }
        if let Some(info) = info {
            c.execute(
                "UPDATE runs SET result_code = $2, result_subcode = $3, result_message = $4 \
                     WHERE seq = $1",
                &[&seq, &info.code, &info.subcode, &info.message],
            )?;
        }
    }
    Ok(Notified {
        run: reload(c, id)?,
        change,
    })
}

pub(super) fn retry_later_in(
    c: &mut impl Q,
    id: &str,
    due: Timestamp,
    reason: &str,
    now: Timestamp,
) -> Result<Run> {
    let (seq, run) = load_required(c, id)?;
    rules::check_retry(view(&run)).map_err(|r| refused(&run, r))?;
    // Back to scheduled: the claim is released (any replica may place the
    // retry when it is due).
    c.execute(
        "UPDATE runs SET state = 'scheduled', due_at = $2, reason = $3, call_id = NULL, \
             established_at = NULL, result_code = NULL, result_subcode = NULL, \
             result_message = NULL, updated_at = $4, \
             claim_owner = NULL, claim_token = NULL, lease_until = NULL WHERE seq = $1",
        &[&seq, &us(due), &reason, &us(now)],
    )?;
    reload(c, id)
}

pub(super) fn finish_in(c: &mut impl Q, id: &str, finish: &Finish, now: Timestamp) -> Result<Run> {
    let (seq, run) = load_required(c, id)?;
    rules::check_finish(view(&run), finish.outcome).map_err(|r| refused(&run, r))?;
    c.execute(
        "UPDATE runs SET state = 'finished', outcome = $2, reason = $3, updated_at = $4 \
             WHERE seq = $1",
        &[&seq, &finish.outcome.as_str(), &finish.reason, &us(now)],
    )?;
    if let Some(info) = &finish.result_info {
        c.execute(
            "UPDATE runs SET result_code = $2, result_subcode = $3, result_message = $4 \
                 WHERE seq = $1",
            &[&seq, &info.code, &info.subcode, &info.message],
        )?;
    }
    reload(c, id)
}

fn ensure_extras(c: &mut impl Q, seq: i64) -> Result<()> {
    c.execute(
        "INSERT INTO run_extras (run_seq) VALUES ($1) ON CONFLICT (run_seq) DO NOTHING",
        &[&seq],
    )?;
    Ok(())
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The body of [`PgLedger::record_create`], inside the caller's
/// transaction (also [`crate::ledger::Write::Create`] of a batch).
pub(super) fn record_create_in(
    tx: &mut impl Q,
    id: &str,
    first: u32,
    steps: &[CreateStep],
    end: &CreateEnd,
    now: Timestamp,
) -> Result<CreateRecorded> {
    if steps.is_empty() {
        let r = AttemptResult {
            disposition: Some(Disposition::Failed),
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
            tx.execute(
                "UPDATE run_extras SET transient_failures = 0, not_before = NULL \
                 WHERE run_seq = $1",
                &[&seq],
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
            let failures: i64 = tx
                .query_one(
                    "UPDATE run_extras SET transient_failures = transient_failures + 1 \
                     WHERE run_seq = $1 RETURNING transient_failures",
                    &[&seq],
                )?
                .get(0);
            let failures = u32::try_from(failures).unwrap_or(u32::MAX);
            let wait = retry_after.unwrap_or_else(|| requeue_backoff(failures));
            let not_before = add(now, wait);
            tx.execute(
                "UPDATE run_extras SET not_before = $2 WHERE run_seq = $1",
                &[&seq, &us(not_before)],
            )?;
            let reason = format!(
                "{WAITING_PREFIX}{error}; next try at {}",
                not_before.round(jiff::Unit::Second).unwrap_or(not_before)
            );
            tx.execute(
                "UPDATE runs SET state = 'scheduled', tries = GREATEST(tries - 1, 0), \
                 reason = $2, call_id = NULL, updated_at = $3, \
                 claim_owner = NULL, claim_token = NULL, lease_until = NULL \
                 WHERE seq = $1",
                &[&seq, &reason, &us(now)],
            )?;
            Ok(CreateRecorded {
                run: reload(tx, id)?,
                not_before: Some(not_before),
            })
        }
    }
}

pub(super) fn mark_requesting_with_in(
    c: &mut impl Q,
    me: &PgCtx<'_>,
    id: &str,
    hangup_after: Option<Duration>,
    claim: Option<u64>,
    now: Timestamp,
) -> Result<u32> {
    let number = mark_requesting_in(c, me, id, None, claim, now)?;
    let (seq, _) = load_required(c, id)?;
    ensure_extras(c, seq)?;
    c.execute(
        "UPDATE run_extras SET hangup_after_ms = $2, last_keep_alive = NULL, \
         hangup_requested_at = NULL WHERE run_seq = $1",
        &[
            &seq,
            &hangup_after.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        ],
    )?;
    Ok(number)
}

/// A keepAlive (`hang_up: false`) or hang-up is sent at `at`. With
/// `expected: Some(previous)`, a compare-and-set: refused unless the stored
/// time of the last one is `previous` (another replica sent it already).
pub(super) fn record_call_op_in(
    c: &mut impl Q,
    id: &str,
    hang_up: bool,
    expected: Option<Option<Timestamp>>,
    at: Timestamp,
) -> Result<()> {
    let (seq, run) = load_required(c, id)?;
    rules::check_call_op(view(&run)).map_err(|r| refused(&run, r))?;
    ensure_extras(c, seq)?;
    let column = rules::call_op_column(hang_up);
    if let Some(expected) = expected {
        let stored: Option<i64> = c
            .query_one(
                &format!("SELECT {column} FROM run_extras WHERE run_seq = $1"),
                &[&seq],
            )?
            .get(0);
        rules::check_call_op_unchanged(
            stored.and_then(|v| Timestamp::from_microsecond(v).ok()),
            expected,
        )
        .map_err(|r| refused(&run, r))?;
    }
    c.execute(
        &format!("UPDATE run_extras SET {column} = $2 WHERE run_seq = $1"),
        &[&seq, &us(at)],
    )?;
    Ok(())
}

// ---------------------------------------------------------------- reads

fn attempts_of(c: &mut impl Q, seq: i64) -> Result<Vec<Attempt>> {
    c.query(
        &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_seq = $1 ORDER BY number"),
        &[&seq],
    )?
    .iter()
    .map(attempt_from_row)
    .collect()
}

fn call_states_of(c: &mut impl Q, seq: i64) -> Result<Vec<CallStateRecord>> {
    c.query(
        "SELECT seq, at, state, call_id, result_code, result_subcode, result_message \
         FROM call_states WHERE run_seq = $1 ORDER BY seq",
        &[&seq],
    )?
    .iter()
    .map(call_state_from_row)
    .collect()
}

fn open_runs_in(c: &mut impl Q) -> Result<Vec<Run>> {
    query_runs(
        c,
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE state <> 'finished' ORDER BY due_at, seq"),
        &[],
    )
}

/// Per spec, the newest run matching `cond` (on `n`), ordered by spec.
fn newest_per_spec(c: &mut impl Q, cond: &str) -> Result<Vec<Run>> {
    query_runs(
        c,
        &format!(
            "SELECT DISTINCT ON (n.spec) {cols} FROM runs n WHERE {cond} \
             ORDER BY n.spec, n.scheduled_at DESC, n.seq DESC",
            cols = RUN_COLUMNS
                .split(", ")
                .map(|c| format!("n.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &[],
    )
}

fn latest_runs_in(c: &mut impl Q) -> Result<Vec<Run>> {
    newest_per_spec(c, "n.state <> 'scheduled'")
}

fn last_slots_in(c: &mut impl Q) -> Result<BTreeMap<String, Timestamp>> {
    c.query(
        "SELECT spec, MAX(scheduled_at) FROM runs WHERE slot LIKE 'at:%' \
         AND (outcome IS NULL OR outcome <> 'canceled') GROUP BY spec",
        &[],
    )?
    .iter()
    .map(|r| Ok((get::<String>(r, 0)?, ts(get(r, 1)?)?)))
    .collect()
}

fn open_run_progress_in(c: &mut impl Q) -> Result<BTreeMap<String, RunProgress>> {
    c.query(
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
        &[],
    )?
    .iter()
    .map(|r| {
        let number: Option<i64> = get(r, 3)?;
        let disposition: Option<String> = get(r, 4)?;
        let disposition: Option<Disposition> = disposition.as_deref().map(parsed).transpose()?;
        let state: Option<String> = get(r, 5)?;
        Ok((
            get::<String>(r, 0)?,
            RunProgress {
                tries: u32::try_from(get::<i64>(r, 1)?).unwrap_or(u32::MAX),
                attempts: u32::try_from(get::<i64>(r, 2)?).unwrap_or(u32::MAX),
                in_flight: number.is_some() && disposition.is_none(),
                last_disposition: disposition,
                last_call_state: state.map(CallState::from),
                not_before: None,
            },
        ))
    })
    .collect()
}

fn not_before_times_in(c: &mut impl Q) -> Result<BTreeMap<String, Timestamp>> {
    c.query(
        "SELECT r.id, x.not_before FROM runs r JOIN run_extras x ON x.run_seq = r.seq \
         WHERE r.state = 'scheduled' AND x.not_before IS NOT NULL",
        &[],
    )?
    .iter()
    .map(|r| Ok((get::<String>(r, 0)?, ts(get(r, 1)?)?)))
    .collect()
}

fn promise(after: Option<i64>, keep: Option<i64>, hang: Option<i64>) -> Result<CallPromise> {
    Ok(CallPromise {
        hangup_after: after.map(|ms| Duration::from_millis(ms.max(0) as u64)),
        last_keep_alive: opt_ts(keep)?,
        hangup_requested_at: opt_ts(hang)?,
    })
}

fn call_promises_in(c: &mut impl Q) -> Result<BTreeMap<String, CallPromise>> {
    c.query(
        "SELECT r.id, x.hangup_after_ms, x.last_keep_alive, x.hangup_requested_at \
         FROM runs r JOIN run_extras x ON x.run_seq = r.seq WHERE r.state <> 'finished'",
        &[],
    )?
    .iter()
    .map(|r| Ok((get(r, 0)?, promise(get(r, 1)?, get(r, 2)?, get(r, 3)?)?)))
    .collect()
}

/// Who this ledger is, for the bodies that need it.
pub(super) struct PgCtx<'a> {
    pub replica: &'a str,
    pub lease: Duration,
}

impl PgCtx<'_> {
    pub fn lease_us(&self) -> i64 {
        i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX)
    }
}

impl PgLedger {
    pub(super) fn ctx(&self) -> PgCtx<'_> {
        PgCtx {
            replica: &self.replica_id,
            lease: self.lease,
        }
    }

    /// `scheduled` → `requesting` with the call's promise (the spec's
    /// `hangupAfter` as the request leaves), as
    /// [`SqliteLedger::mark_requesting_with`](crate::ledger::SqliteLedger::mark_requesting_with).
    pub fn mark_requesting_with(
        &mut self,
        id: &str,
        hangup_after: Option<Duration>,
        now: Timestamp,
    ) -> Result<u32> {
        self.mark_requesting_fenced(id, hangup_after, None, now)
    }

    /// [`PgLedger::mark_requesting_with`] fenced by a claim token
    /// ([`PgLedger::claim`]): refused unless this replica still holds the
    /// run's claim with that token and its lease has not expired.
    pub fn mark_requesting_fenced(
        &mut self,
        id: &str,
        hangup_after: Option<Duration>,
        claim: Option<u64>,
        now: Timestamp,
    ) -> Result<u32> {
        let me = self.ctx();
        self.write(|tx| mark_requesting_with_in(tx, &me, id, hangup_after, claim, now))
    }

    /// As [`SqliteLedger::record_create`](crate::ledger::SqliteLedger::record_create).
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

    /// As [`SqliteLedger::note_waiting`](crate::ledger::SqliteLedger::note_waiting).
    pub fn note_waiting(&mut self, id: &str, why: &str, now: Timestamp) -> Result<bool> {
        let reason = format!("{WAITING_PREFIX}{why}");
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE runs SET reason = $2, updated_at = $3 WHERE id = $1 \
                 AND state = 'scheduled' AND (reason IS NULL OR reason LIKE 'waiting: %') \
                 AND reason IS DISTINCT FROM $2",
                &[&id, &reason, &us(now)],
            )?;
            Ok(n == 1)
        })
    }

    /// The earliest next try of each open run waiting out a transient failure.
    pub fn not_before_times(&self) -> Result<BTreeMap<String, Timestamp>> {
        not_before_times_in(&mut *self.conn()?)
    }

    /// The promises of every open run's call, by run id.
    pub fn call_promises(&self) -> Result<BTreeMap<String, CallPromise>> {
        call_promises_in(&mut *self.conn()?)
    }

    /// The promise of one run (None: none recorded).
    pub fn call_promise(&self, id: &str) -> Result<Option<CallPromise>> {
        let mut c = self.conn()?;
        let (seq, _) = load_required_unlocked(&mut *c, id)?;
        c.query_opt(
            "SELECT hangup_after_ms, last_keep_alive, hangup_requested_at FROM run_extras \
             WHERE run_seq = $1",
            &[&seq],
        )?
        .map(|r| promise(get(&r, 0)?, get(&r, 1)?, get(&r, 2)?))
        .transpose()
    }

    /// A keepAlive (`hang_up: false`) or hang-up was sent for the run's call.
    pub fn record_call_op(&mut self, id: &str, hang_up: bool, at: Timestamp) -> Result<()> {
        self.write(|tx| record_call_op_in(tx, id, hang_up, None, at))
    }

    /// [`PgLedger::record_call_op`] as a compare-and-set on the stored time
    /// of the previous one (`expected`; `None`: none was sent yet).
    pub fn record_call_op_if(
        &mut self,
        id: &str,
        hang_up: bool,
        expected: Option<Timestamp>,
        at: Timestamp,
    ) -> Result<()> {
        self.write(|tx| record_call_op_in(tx, id, hang_up, Some(expected), at))
    }

    /// Per spec, its newest `completed` run, ordered by spec name.
    pub fn last_successes(&self) -> Result<Vec<Run>> {
        newest_per_spec(&mut *self.conn()?, "n.outcome = 'completed'")
    }

    /// Per spec, its newest finished run that was not `canceled`.
    pub fn latest_finished_runs(&self) -> Result<Vec<Run>> {
        // SQLite's query picks, per spec with a finished run, the newest
        // finished non-canceled one (specs whose finished runs are all
        // canceled drop out): the same set.
        newest_per_spec(
            &mut *self.conn()?,
            "n.state = 'finished' AND n.outcome <> 'canceled'",
        )
    }

    /// Moves every run of `from` to `to` and records the rename; `None`
    /// when `to` already has runs. Returns how many runs moved.
    pub fn rename_spec(
        &mut self,
        from: &str,
        to: &str,
        revision: &str,
        now: Timestamp,
    ) -> Result<Option<usize>> {
        self.write(|tx| {
            let taken: i64 = tx
                .query_one("SELECT COUNT(*) FROM runs WHERE spec = $1", &[&to])?
                .get(0);
            if taken > 0 {
                return Ok(None);
            }
            let moved = tx.execute("UPDATE runs SET spec = $2 WHERE spec = $1", &[&from, &to])?;
            tx.execute(
                "INSERT INTO spec_renames (from_name, to_name, revision, runs, at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[&from, &to, &revision, &(moved as i64), &us(now)],
            )?;
            Ok(Some(moved as usize))
        })
    }

    /// Re-keys an unscheduled spec's run recorded under revision `from` to `to`.
    pub fn adopt_revision(&mut self, spec: &str, from: &str, to: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE runs SET slot = 'rev:' || $3::text, revision = $3::text \
                 WHERE spec = $1 AND slot = 'rev:' || $2::text \
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE spec = $1 AND slot = 'rev:' || $3::text)",
                &[&spec, &from, &to],
            )?;
            Ok(n > 0)
        })
    }

    /// The renames that led to `name`, newest first.
    pub fn renames_to(&self, name: &str) -> Result<Vec<RenameRecord>> {
        let mut c = self.conn()?;
        let mut out: Vec<RenameRecord> = Vec::new();
        let mut target = name.to_string();
        let mut before = i64::MAX;
        while out.len() < 100 {
            let Some(r) = c.query_opt(
                "SELECT seq, from_name, to_name, revision, runs, at FROM spec_renames \
                 WHERE to_name = $1 AND seq < $2 ORDER BY seq DESC LIMIT 1",
                &[&target, &before],
            )?
            else {
                break;
            };
            let rec = RenameRecord {
                from: get(&r, 1)?,
                to: get(&r, 2)?,
                revision: get(&r, 3)?,
                runs: get::<i64>(&r, 4)? as u64,
                at: ts(get(&r, 5)?)?,
            };
            target = rec.from.clone();
            before = get(&r, 0)?;
            out.push(rec);
        }
        Ok(out)
    }

    /// The specs this replica knew at its last step.
    pub fn known_specs(&self) -> Result<BTreeMap<String, Known>> {
        self.conn()?
            .query(
                "SELECT name, revision, file FROM spec_known WHERE replica = $1",
                &[&self.replica_id],
            )?
            .iter()
            .map(|r| {
                Ok((
                    get(r, 0)?,
                    Known {
                        revision: get(r, 1)?,
                        file: get(r, 2)?,
                    },
                ))
            })
            .collect()
    }

    /// Replaces this replica's known specs: writes only what changed.
    pub fn save_known(
        &mut self,
        before: &BTreeMap<String, Known>,
        after: &BTreeMap<String, Known>,
    ) -> Result<()> {
        let me = self.replica_id.clone();
        self.write(|tx| save_known_in(tx, &me, before, after))
    }

    pub(super) fn write_batch_impl(&mut self, batch: &[Write], now: Timestamp) -> BatchResult {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let me = self.ctx();
        let mut guard = self.conn()?;
        let Conn { client, cache } = &mut *guard;
        let mut tx = client.transaction()?;
        let mut out = Vec::with_capacity(batch.len());
        let mut inserted = false;
        for write in batch {
            let mut savepoint = tx.savepoint("w")?;
            let mut sp = Cx {
                c: &mut savepoint,
                cache,
            };
            let result = (|| -> Result<Written> {
                Ok(match write {
                    Write::Insert(new) => Written::Inserted(insert_run_in(&mut sp, new, now)?),
                    Write::Record { run, finish } => {
                        let ins = insert_run_in(&mut sp, run, now)?;
                        Written::Recorded(if ins.created {
                            Some(finish_in(&mut sp, &ins.run.id, finish, now)?)
                        } else {
                            None
                        })
                    }
                    Write::Finish { id, finish } => {
                        Written::Finished(finish_in(&mut sp, id, finish, now)?)
                    }
                    Write::Retry { id, due, reason } => {
                        Written::Retried(retry_later_in(&mut sp, id, *due, reason, now)?)
                    }
                    Write::Requesting {
                        id,
                        hangup_after,
                        claim,
                    } => Written::Requesting(mark_requesting_with_in(
                        &mut sp,
                        &me,
                        id,
                        *hangup_after,
                        *claim,
                        now,
                    )?),
                    Write::CallOp {
                        id,
                        hang_up,
                        expected,
                    } => {
                        record_call_op_in(&mut sp, id, *hang_up, Some(*expected), now)?;
                        Written::CallOp
                    }
                    Write::Create {
                        id,
                        first,
                        steps,
                        end,
                    } => Written::Created(record_create_in(&mut sp, id, *first, steps, end, now)?),
                    Write::Known { before, after } => {
                        save_known_in(&mut sp, me.replica, before, after)?;
                        Written::Known
                    }
                })
            })();
            match &result {
                Ok(w) => {
                    savepoint.commit()?;
                    if matches!(
                        w,
                        Written::Inserted(Inserted { created: true, .. })
                            | Written::Requesting(_)
                            | Written::Retried(_)
                    ) {
                        inserted = true;
                    }
                }
                Err(_) => savepoint.rollback()?,
            }
            out.push(result);
        }
        if inserted {
            notify(&mut Cx { c: &mut tx, cache }, me.replica, "runs")?;
        }
        tx.commit()?;
        Ok(out)
    }

    pub(super) fn open_state_impl(&self) -> Result<OpenState> {
        let mut guard = self.conn()?;
        let Conn { client, cache } = &mut *guard;
        // One REPEATABLE READ snapshot: every part from the same state.
        let mut snapshot = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let mut tx = Cx {
            c: &mut snapshot,
            cache,
        };
        let runs = open_runs_in(&mut tx)?;
        let mut progress = open_run_progress_in(&mut tx)?;
        let latest = latest_runs_in(&mut tx)?
            .into_iter()
            .map(|r| (r.spec.clone(), r))
            .collect();
        let last_slots = last_slots_in(&mut tx)?;
        let promises = call_promises_in(&mut tx)?;
        for (id, t) in not_before_times_in(&mut tx)? {
            progress.entry(id).or_default().not_before = Some(t);
        }
        snapshot.commit()?;
        Ok(OpenState {
            runs,
            progress,
            latest,
            last_slots,
            promises,
        })
    }
}

impl Ledger for PgLedger {
    fn mark_requesting_with(
        &mut self,
        id: &str,
        hangup_after: Option<Duration>,
        now: Timestamp,
    ) -> Result<u32> {
        PgLedger::mark_requesting_with(self, id, hangup_after, now)
    }

    fn record_create(
        &mut self,
        id: &str,
        first: u32,
        steps: &[CreateStep],
        end: &CreateEnd,
        now: Timestamp,
    ) -> Result<CreateRecorded> {
        PgLedger::record_create(self, id, first, steps, end, now)
    }

    fn note_waiting(&mut self, id: &str, why: &str, now: Timestamp) -> Result<bool> {
        PgLedger::note_waiting(self, id, why, now)
    }

    fn not_before_times(&self) -> Result<BTreeMap<String, Timestamp>> {
        PgLedger::not_before_times(self)
    }

    fn call_promises(&self) -> Result<BTreeMap<String, CallPromise>> {
        PgLedger::call_promises(self)
    }

    fn call_promise(&self, id: &str) -> Result<Option<CallPromise>> {
        PgLedger::call_promise(self, id)
    }

    fn record_call_op(&mut self, id: &str, hang_up: bool, at: Timestamp) -> Result<()> {
        PgLedger::record_call_op(self, id, hang_up, at)
    }

    fn rename_spec(
        &mut self,
        from: &str,
        to: &str,
        revision: &str,
        now: Timestamp,
    ) -> Result<Option<usize>> {
        PgLedger::rename_spec(self, from, to, revision, now)
    }

    fn adopt_revision(&mut self, spec: &str, from: &str, to: &str) -> Result<bool> {
        PgLedger::adopt_revision(self, spec, from, to)
    }

    fn renames_to(&self, name: &str) -> Result<Vec<RenameRecord>> {
        PgLedger::renames_to(self, name)
    }

    fn known_specs(&self) -> Result<BTreeMap<String, Known>> {
        PgLedger::known_specs(self)
    }

    fn save_known(
        &mut self,
        before: &BTreeMap<String, Known>,
        after: &BTreeMap<String, Known>,
    ) -> Result<()> {
        PgLedger::save_known(self, before, after)
    }

    fn last_successes(&self) -> Result<Vec<Run>> {
        PgLedger::last_successes(self)
    }

    fn latest_finished_runs(&self) -> Result<Vec<Run>> {
        PgLedger::latest_finished_runs(self)
    }

    /// A round trip to the server (there is no file to check).
    fn check_integrity(&self) -> Result<()> {
        self.check_connection()
    }

    fn describe(&self) -> String {
        format!(
            "PostgreSQL {} schema {} (replica {})",
            self.server(),
            self.schema,
            self.replica_id
        )
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn claim(&mut self, claims: &[Claim], now: Timestamp) -> Result<Vec<Option<FencingToken>>> {
        PgLedger::claim(self, claims, now)
    }

    fn renew_leases(&mut self, held: &[(String, FencingToken)]) -> Result<Vec<String>> {
        PgLedger::renew_leases(self, held)
    }

    fn reap_expired(&mut self, now: Timestamp) -> Result<Vec<Run>> {
        PgLedger::reap_expired(self, now)
    }

    fn publish_views(&mut self, views: &[SpecView]) -> Result<()> {
        PgLedger::publish_views(self, views)
    }

    fn newest_views(&mut self) -> Result<BTreeMap<String, SpecView>> {
        PgLedger::newest_views(self)
    }

    fn db_now(&mut self) -> Result<Option<Timestamp>> {
        PgLedger::db_now(self)
    }

    fn insert_run(&mut self, new: &NewRun, now: Timestamp) -> Result<Inserted> {
        let me = self.replica_id.clone();
        self.write(|tx| {
            let ins = insert_run_in(tx, new, now)?;
            if ins.created {
                notify(tx, &me, "runs")?;
            }
            Ok(ins)
        })
    }

    fn run(&self, id: &str) -> Result<Option<Run>> {
        Ok(load(&mut *self.conn()?, id)?.map(|(_, r)| r))
    }

    fn run_by_key(&self, key: &RunKey) -> Result<Option<Run>> {
        Ok(query_runs(
            &mut *self.conn()?,
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE spec = $1 AND slot = $2"),
            &[&key.spec, &key.slot.key_text()],
        )?
        .pop())
    }

    fn run_by_call_id(&self, call_id: &str) -> Result<Option<Run>> {
        find_by_call_id(&mut *self.conn()?, call_id)
    }

    fn mark_requesting(
        &mut self,
        id: &str,
        client_request_id: Option<&str>,
        now: Timestamp,
    ) -> Result<u32> {
        let me = self.ctx();
        self.write(|tx| mark_requesting_in(tx, &me, id, client_request_id, None, now))
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
        let me = self.replica_id.clone();
        self.write(|tx| {
            let n = record_state_for(tx, id, update, None, now)?;
            notify(tx, &me, "states")?;
            Ok(n)
        })
    }

    fn record_call_states(
        &mut self,
        batch: &[StateNotice],
        now: Timestamp,
    ) -> Result<Vec<Result<Option<Notified>>>> {
        let me = self.replica_id.clone();
        let mut guard = self.conn()?;
        let Conn { client, cache } = &mut *guard;
        let mut tx = client.transaction()?;
        let mut out = Vec::with_capacity(batch.len());
        let mut any = false;
        for notice in batch {
            // A savepoint per notice: a failing one is undone alone.
            let mut savepoint = tx.savepoint("n")?;
            let mut sp = Cx {
                c: &mut savepoint,
                cache,
            };
            let result = (|| {
                let run = match &notice.run_id {
                    Some(id) => load(&mut sp, id)?.map(|(_, r)| r),
                    None => None,
                };
                let run = match (run, &notice.update.call_id) {
                    (Some(r), _) => Some(r),
                    (None, Some(call)) => find_by_call_id(&mut sp, call)?,
                    (None, None) => None,
                };
                match run {
                    Some(r) => {
                        if let (Some(tid), Some(expected)) = (&notice.tenant_id, &r.tenant_id)
                            && looks_like_guid(expected)
                            && !tid.eq_ignore_ascii_case(expected)
                        {
                            return Err(LedgerError::WrongTenant {
                                id: r.id.clone(),
                                tenant: tid.clone(),
                            });
                        }
                        record_state_for(&mut sp, &r.id, &notice.update, notice.attempt, now)
                            .map(Some)
                    }
                    None => Ok(None),
                }
            })();
            match &result {
                Ok(n) => {
                    savepoint.commit()?;
                    any |= n.is_some();
                }
                Err(_) => savepoint.rollback()?,
            }
            out.push(result);
        }
        if any {
            notify(&mut Cx { c: &mut tx, cache }, &me, "states")?;
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
                    "SELECT {RUN_COLUMNS} FROM runs WHERE spec = $1 AND state = 'scheduled' \
                     ORDER BY scheduled_at, seq FOR UPDATE"
                ),
                &[&spec],
            )?;
            let mut canceled = Vec::new();
            for run in candidates {
                if keep
                    .as_ref()
                    .is_some_and(|k| k.contains(&run.slot.key_text()))
                {
                    continue;
                }
                tx.execute(
                    "UPDATE runs SET state = 'finished', outcome = $2, reason = $3, \
                     updated_at = $4 WHERE id = $1",
                    &[&run.id, &Outcome::Canceled.as_str(), &reason, &us(now)],
                )?;
                canceled.push(reload(tx, &run.id)?);
            }
            Ok(canceled)
        })
    }

    fn open_runs(&self) -> Result<Vec<Run>> {
        open_runs_in(&mut *self.conn()?)
    }

    fn latest_runs(&self) -> Result<Vec<Run>> {
        latest_runs_in(&mut *self.conn()?)
    }

    fn history(&self, spec: &str, limit: usize) -> Result<Vec<RunRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut c = self.conn()?;
        let rows = c.query(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE spec = $1 \
                 ORDER BY scheduled_at DESC, seq DESC LIMIT $2"
            ),
            &[&spec, &limit],
        )?;
        let runs: Vec<(i64, Run)> = rows.iter().map(run_from_row).collect::<Result<_>>()?;
        runs.into_iter()
            .map(|(seq, run)| {
                Ok(RunRecord {
                    attempts: attempts_of(&mut *c, seq)?,
                    call_states: call_states_of(&mut *c, seq)?,
                    run,
                })
            })
            .collect()
    }

    fn attempts(&self, id: &str) -> Result<Vec<Attempt>> {
        let mut c = self.conn()?;
        let (seq, _) = load_required_unlocked(&mut *c, id)?;
        attempts_of(&mut *c, seq)
    }

    fn call_states(&self, id: &str) -> Result<Vec<CallStateRecord>> {
        let mut c = self.conn()?;
        let (seq, _) = load_required_unlocked(&mut *c, id)?;
        call_states_of(&mut *c, seq)
    }

    fn last_slots(&self) -> Result<BTreeMap<String, Timestamp>> {
        last_slots_in(&mut *self.conn()?)
    }

    fn open_run_progress(&self) -> Result<BTreeMap<String, RunProgress>> {
        open_run_progress_in(&mut *self.conn()?)
    }

    fn write_batch(&mut self, batch: &[Write], now: Timestamp) -> BatchResult {
        self.write_batch_impl(batch, now)
    }

    fn open_state(&self) -> Result<OpenState> {
        self.open_state_impl()
    }

    fn prune(&mut self, cutoff: Timestamp) -> Result<usize> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM runs WHERE state = 'finished' AND updated_at < $1 \
                 AND EXISTS (SELECT 1 FROM runs n WHERE n.spec = runs.spec \
                     AND (n.scheduled_at, n.seq) > (runs.scheduled_at, runs.seq)) \
                 AND (runs.slot NOT LIKE 'at:%' OR EXISTS (SELECT 1 FROM runs n \
                     WHERE n.spec = runs.spec AND n.slot LIKE 'at:%' \
                     AND (n.scheduled_at, n.seq) > (runs.scheduled_at, runs.seq)))",
                &[&us(cutoff)],
            )? as usize)
        })
    }
}
