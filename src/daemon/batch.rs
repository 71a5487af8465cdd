//! Group commit (issue 12, item 3): the actions of one decision are applied
//! in as few ledger transactions as their order allows.
//!
//! The ledger writes of a decision (inserts, finishes, retries, the record
//! of a keepAlive or hang-up about to leave) go in ONE batch
//! ([`crate::ledger::Ledger::write_batch`]: one transaction, one fsync).
//! The due runs of a decision are marked `requesting` in ONE batch, and
//! their create requests leave only once that batch is committed: no
//! request leaves before its `requesting` row is on disk. A write the
//! ledger refuses (the run moved meanwhile) skips that action only; the
//! next decision sees the new state.
//!
//! The create answers that arrived since the last batch are recorded in the
//! decision's first batch (one fsync for all of them): with the `requesting`
//! marks of the runs that take their request slots, or with the decision's
//! other writes, or on their own when the decision writes nothing. A run
//! stays in flight until its answer is committed.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ledger::{self, CallPromise, Finish, Ledger, Run, RunKey, Write, Written};
use crate::reconcile::Action;
use crate::spec::Spec;

use super::{Controller, CreateDone, log_outcome, with_attempt_error, with_ledger};

/// The most ledger writes in one batch. The first decision at 100,000
/// specs inserts 100,000 runs: in one batch, its writes, their answers and
/// the WAL of one huge transaction were all held at once (slices of this
/// size cost a commit each, a few milliseconds against seconds of inserts).
const MAX_BATCH_WRITES: usize = 4096;

impl Controller {
    /// Applies a decision's actions in their order, in as few batches as
    /// that order allows ([`MAX_BATCH_WRITES`] writes at most): a run of
    /// ledger actions and the placements that follow it are ONE batch (the
    /// writes first, then the `requesting` marks; the requests leave once
    /// it is committed), unless a placement
    /// is of a run that those writes insert (its id comes from that
    /// insert: it goes in the next batch). Returns the runs this decision
    /// inserted, by key.
    pub(super) async fn apply_all(&mut self, actions: Vec<Action>) -> HashMap<RunKey, Run> {
        let mut inserted = HashMap::new();
        let mut writes: Vec<Action> = Vec::new();
        let mut places: Vec<(Option<String>, RunKey)> = Vec::new();
        for action in actions {
            match action {
                Action::Place { id, key } => {
                    if id.is_none() && !writes.is_empty() {
                        let (w, p) = (std::mem::take(&mut writes), std::mem::take(&mut places));
                        self.flush(w, p, &mut inserted).await;
                    }
                    places.push((id, key));
                }
                other => {
                    if !places.is_empty() || writes.len() >= MAX_BATCH_WRITES {
                        let (w, p) = (std::mem::take(&mut writes), std::mem::take(&mut places));
                        self.flush(w, p, &mut inserted).await;
                    }
                    writes.push(other);
                }
            }
        }
        if !writes.is_empty() || !places.is_empty() {
            self.flush(writes, places, &mut inserted).await;
        }
        if !self.created.is_empty() {
            self.flush_created().await;
        }
        self.save_pending_known().await;
        inserted
    }

    /// Writes the identity step's save of the known specs in a commit of
    /// its own, when no batch took it.
    pub(crate) async fn save_pending_known(&mut self) {
        let Some(known) = self.pending_known.take() else {
            return;
        };
        let now = crate::clock::now();
        let res = with_ledger(&self.rt.ledger, move |l| {
            l.write_batch(std::slice::from_ref(&known), now)
        })
        .await;
        if let Some(e) = match res {
            Ok(mut r) => r.pop().and_then(Result::err),
            Err(e) => Some(e),
        } {
            tracing::warn!(error = %e, "cannot save the known specs");
        }
    }

    /// One batch: the create answers at hand, the ledger actions, then the
    /// `requesting` marks of the placements; once it is committed, the
    /// keepAlives and hang-ups recorded and the create requests leave.
    async fn flush(
        &mut self,
        actions: Vec<Action>,
        places: Vec<(Option<String>, RunKey)>,
        inserted: &mut HashMap<RunKey, Run>,
    ) {
        let (chosen, tokens) = if places.is_empty() {
            (Vec::new(), HashMap::new())
        } else {
            self.choose_places(places, inserted).await
        };
        if actions.is_empty() && chosen.is_empty() {
            return;
        }
        let now = crate::clock::now();
        let acts = actions.clone();
        let stored = self.stored_promises.clone();
        let (done, mut batch) = self.take_created();
        // the identity step's save goes right after the create records
        let known = self.pending_known.take();
        let with_known = known.is_some();
        batch.extend(known);
        let (n_rec, n_act) = (batch.len(), acts.len());
        // The run rows say `requesting` on disk before any request leaves,
        // each with its call's promise (its hangupAfter as placed) and, on a
        // shared ledger, its claim's fencing token.
        let marks: Vec<Write> = chosen
            .iter()
            .map(|(id, spec)| Write::Requesting {
                id: id.clone(),
                hangup_after: spec.hangup_after,
                claim: tokens.get(id).copied(),
            })
            .collect();
        let res = with_ledger(&self.rt.ledger, move |l| {
            batch.extend(acts.iter().map(|a| to_write(l, &stored, a)));
            batch.extend(marks);
            let mut results = l.write_batch(&batch, now)?;
            let marked = results.split_off(n_rec + n_act);
            let own = results.split_off(n_rec);
            let mut writes = batch.split_off(n_rec);
            writes.truncate(n_act);
            Ok((results, writes, own, marked))
        })
        .await;
        match res {
            Ok((mut recorded, writes, own, marked)) => {
                if with_known && let Some(Err(e)) = recorded.pop() {
                    tracing::warn!(error = %e, "cannot save the known specs");
                }
                self.created_recorded(done, Ok(recorded));
                self.writes_done(actions, writes, own, inserted, now);
                self.marks_done(chosen, marked, now);
            }
            Err(e) => {
                if with_known {
                    tracing::warn!(error = %e, "cannot save the known specs");
                }
                self.created_recorded(done, Err(e.to_string()));
                if !actions.is_empty() {
                    tracing::warn!(error = %e, count = actions.len(), "cannot record the decision's ledger writes; the next decision tries again");
                    // keepAlives and hang-ups still leave, as when their record failed
                    for action in actions {
                        self.send_call_op(action, now);
                    }
                }
                if !chosen.is_empty() {
                    tracing::warn!(error = %e, count = chosen.len(), "cannot mark due runs requesting; nothing was sent");
                    if let Some(r) = &self.replica {
                        // their claims lapse: another decision (here or on
                        // another replica) claims them again
                        let mut held = r.claims.lock().unwrap_or_else(|p| p.into_inner());
                        for (id, _) in &chosen {
                            held.remove(id);
                        }
                    }
                }
            }
        }
    }

    /// Records the create answers at hand in one batch of their own.
    pub(crate) async fn flush_created(&mut self) {
        let (done, writes) = self.take_created();
        if done.is_empty() {
            return;
        }
        let now = crate::clock::now();
        let res = with_ledger(&self.rt.ledger, move |l| l.write_batch(&writes, now)).await;
        self.created_recorded(done, res.map_err(|e| e.to_string()));
    }

    /// The create answers at hand, with their writes (to go first in the
    /// batch about to be committed).
    fn take_created(&mut self) -> (Vec<CreateDone>, Vec<Write>) {
        let done = std::mem::take(&mut self.created);
        let writes = done.iter().map(super::create_write).collect();
        (done, writes)
    }

    /// The answers of a batch's create records (its first writes): their
    /// runs are no longer in flight, their specs are decided again.
    /// `res`: per record, what it did; or why the whole batch failed.
    fn created_recorded(
        &mut self,
        done: Vec<CreateDone>,
        res: Result<Vec<ledger::Result<Written>>, String>,
    ) {
        let results: Vec<Result<Written, String>> = match res {
            Ok(r) => r
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect(),
            Err(e) => done.iter().map(|_| Err(e.clone())).collect(),
        };
        for (done, result) in done.into_iter().zip(results) {
            match result {
                Ok(Written::Created(rec)) => super::log_created(&done, &rec),
                Ok(other) => {
                    tracing::error!(answer = ?other, "unexpected answer to a ledger write")
                }
                Err(e) => {
                    tracing::error!(run = %done.run, error = %e, "cannot record the create result")
                }
            }
            if let Some(r) = &self.replica {
                r.claims
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&done.run);
            }
            self.in_flight.remove(&done.run);
            match self.cache.spec_of(&done.run) {
                Some(spec) if spec != done.spec => {
                    let spec = spec.to_string();
                    self.dirty.mark(&spec);
                }
                _ => {}
            }
            self.dirty.mark(&done.spec);
            self.recorded = true;
        }
    }

    /// What the ledger actions of a committed batch did.
    fn writes_done(
        &mut self,
        actions: Vec<Action>,
        writes: Vec<Write>,
        results: Vec<ledger::Result<Written>>,
        inserted: &mut HashMap<RunKey, Run>,
        now: jiff::Timestamp,
    ) {
        for ((action, write), result) in actions.into_iter().zip(writes).zip(results) {
            match (&action, result) {
                (Action::HangUp { .. } | Action::KeepAlive { .. }, r) => {
                    match r {
                        Err(e) if ledger::LedgerError::is_already_done(&e) => {
                            // another replica sent it (the compare-and-set)
                            tracing::debug!(error = %e, "call operation left to another replica");
                            continue;
                        }
                        Err(e) => tracing::debug!(error = %e, "call operation not recorded"),
                        Ok(_) => {}
                    }
                    self.send_call_op(action, now);
                }
                (_, Err(e)) => {
                    // A refused ledger call means the run moved meanwhile:
                    // the next decision sees the new state.
                    tracing::debug!(error = %e, "action skipped");
                }
                (Action::Insert { run }, Ok(Written::Inserted(ins))) => {
                    if ins.created {
                        tracing::debug!(run = %ins.run.id, spec = %ins.run.spec, due = %ins.run.due_at, "run scheduled");
                    }
                    inserted.insert(run.key.clone(), ins.run);
                }
                (Action::Record { .. }, Ok(Written::Recorded(None))) => {}
                (
                    Action::Record { .. } | Action::Finish { .. },
                    Ok(Written::Recorded(Some(run)) | Written::Finished(run)),
                ) => {
                    let (Write::Record { finish, .. } | Write::Finish { finish, .. }) = &write
                    else {
                        unreachable!("a finish write")
                    };
                    // `--once` waits for (and reports) a due run refused before
                    // any request, e.g. for a missing permission, like one it sent.
                    if self.rt.once.is_some() && finish.outcome == ledger::Outcome::Rejected {
                        self.watched.insert(run.id.clone());
                    }
                    let reason = finish.reason.clone().unwrap_or_default();
                    log_outcome(&run, finish.outcome, &reason);
                    self.rt.metrics.run_finished(finish.outcome.as_str());
                }
                (Action::Retry { due, reason, .. }, Ok(Written::Retried(run))) => {
                    tracing::info!(run = %run.id, spec = %run.spec, due = %due, reason = %reason, "retry scheduled");
                }
                (_, Ok(other)) => {
                    tracing::error!(answer = ?other, "unexpected answer to a ledger write")
                }
            }
        }
    }

    /// The due runs of a decision's placements that get a request now,
    /// claimed on a shared ledger (with their fencing tokens).
    ///
    /// At most `graph.maxConcurrentRequests` runs are `requesting` at once:
    /// a run marked `requesting` that waited in the Graph client's queue
    /// would become `unknown` in a crash (never re-sent) although Graph
    /// never saw it. Beyond the limit the run stays `scheduled` (its
    /// deadline still applies) until a request finishes.
    async fn choose_places(
        &mut self,
        places: Vec<(Option<String>, RunKey)>,
        inserted: &HashMap<RunKey, Run>,
    ) -> (
        Vec<(String, Arc<Spec>)>,
        HashMap<String, ledger::FencingToken>,
    ) {
        let cap = self.rt.config.graph.max_concurrent_requests.max(1);
        // Answers at hand are recorded in the batch below, before any new
        // request leaves: their slots are free.
        let running = self.in_flight.len().saturating_sub(self.created.len());
        let mut due: Vec<(String, RunKey)> = Vec::with_capacity(places.len());
        for (id, key) in places {
            let id = match id {
                Some(id) => id,
                // inserted by this decision: only a run still scheduled
                // is placed (an old revision's finished run is not)
                None => match inserted.get(&key) {
                    Some(r) if r.state == ledger::RunState::Scheduled => r.id.clone(),
                    Some(_) => continue,
                    None => {
                        tracing::debug!(key = ?key, "action skipped: place: no run for this key");
                        continue;
                    }
                },
            };
            due.push((id, key));
        }
        if let Some(r) = &self.replica {
            // Replicas deciding the same due runs start from different
            // ones (runs due in the same second, in an order of this
            // replica's own), so their claims spread instead of colliding.
            let fresh: HashMap<&str, jiff::Timestamp> = inserted
                .values()
                .map(|x| (x.id.as_str(), x.due_at))
                .collect();
            let second = |id: &str| {
                self.due_of(id)
                    .or_else(|| fresh.get(id).copied())
                    .map_or(0, |t| t.as_second())
            };
            due.sort_by_cached_key(|(id, _)| (second(id), super::replica::spread(&r.id, id)));
        }
        let mut chosen: Vec<(String, Arc<Spec>)> = Vec::new();
        for (id, key) in due {
            if self.in_flight.contains(&id) || chosen.iter().any(|(c, _)| *c == id) {
                continue;
            }
            if running + chosen.len() >= cap {
                self.deferred = true;
                continue;
            }
            let Some(spec) = self.specs.specs.get(&key.spec).cloned() else {
                tracing::debug!(spec = %key.spec, "action skipped: place: the spec is gone");
                continue;
            };
            chosen.push((id, spec));
        }
        if chosen.is_empty() {
            return (chosen, HashMap::new());
        }
        // A shared ledger: only the runs this replica claims are its own.
        let tokens = self.claim_due(&mut chosen, crate::clock::now()).await;
        (chosen, tokens)
    }

    /// The `requesting` marks of a committed batch: each marked run's
    /// create request leaves.
    fn marks_done(
        &mut self,
        chosen: Vec<(String, Arc<Spec>)>,
        results: Vec<ledger::Result<Written>>,
        now: jiff::Timestamp,
    ) {
        for ((id, spec), result) in chosen.into_iter().zip(results) {
            match result {
                Ok(Written::Requesting(attempt)) => self.send_create(id, spec, attempt, now),
                Ok(other) => {
                    tracing::error!(answer = ?other, "unexpected answer to a ledger write")
                }
                Err(e) => {
                    if let Some(r) = &self.replica {
                        // the claim's lease ran out and another replica
                        // took the run (this one stalled): fenced
                        r.claims
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        tracing::warn!(run = %id, error = %e, "not sent: the claim was lost before the run was marked requesting (fenced)");
                        self.rt.metrics.fenced_request();
                    } else {
                        tracing::debug!(error = %e, "action skipped")
                    }
                }
            }
        }
    }

    /// Claims the chosen due runs on a shared ledger and keeps the won ones
    /// (with their fencing tokens); every run is this process's own on a
    /// local ledger. A claim is timed by the store's clock.
    async fn claim_due(
        &mut self,
        chosen: &mut Vec<(String, Arc<Spec>)>,
        now: jiff::Timestamp,
    ) -> HashMap<String, ledger::FencingToken> {
        if self.replica.is_none() {
            return HashMap::new();
        }
        let claims: Vec<ledger::Claim> = chosen
            .iter()
            .map(|(id, spec)| ledger::Claim {
                id: id.clone(),
                revision: spec.revision.clone(),
            })
            .collect();
        // the lease counts from before the claim was asked for
        let since = std::time::Instant::now();
        let res = with_ledger(&self.rt.ledger, move |l| l.claim(&claims, now)).await;
        let tokens = match res {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, count = chosen.len(), "cannot claim due runs; nothing was sent");
                let _ = self.ledger_trouble(e);
                chosen.clear();
                return HashMap::new();
            }
        };
        let asked = chosen.len();
        let mut won = HashMap::new();
        let mut kept = Vec::new();
        for ((id, spec), token) in std::mem::take(chosen).into_iter().zip(tokens) {
            match token {
                Some(t) => {
                    won.insert(id.clone(), t);
                    kept.push((id, spec));
                }
                None => {
                    tracing::debug!(run = %id, "claim lost: another replica holds the run, or it moved")
                }
            }
        }
        let r = self.replica.as_mut().expect("checked above");
        self.rt
            .metrics
            .claims(won.len() as u64, (asked - won.len()) as u64);
        {
            let mut held = r.claims.lock().unwrap_or_else(|p| p.into_inner());
            for (id, token) in &won {
                held.insert(
                    id.clone(),
                    super::replica::Held {
                        token: *token,
                        since,
                    },
                );
            }
        }
        for (_, spec) in &kept {
            r.after_claim(&spec.name);
        }
        *chosen = kept;
        won
    }

    /// Sends the keepAlive or hang-up of an action (its record is written).
    fn send_call_op(&mut self, action: Action, now: jiff::Timestamp) {
        match action {
            Action::HangUp {
                id,
                call_id,
                reason,
                ..
            } => {
                self.calls
                    .entry(id.clone())
                    .or_default()
                    .hangup_requested_at = Some(now);
                self.spawn_call_op(id, call_id, "hangUp", reason);
            }
            Action::KeepAlive { id, call_id, .. } => {
                self.calls.entry(id.clone()).or_default().last_keep_alive = Some(now);
                self.spawn_call_op(id, call_id, "keepAlive", String::new());
            }
            _ => {}
        }
    }
}

/// The promises of the calls in progress as the decision read them.
pub(super) type Promises = std::sync::Arc<std::collections::BTreeMap<String, CallPromise>>;

/// The ledger write of an action (not a placement). A finish's reason gets
/// the last attempt's error ([`with_attempt_error`]).
fn to_write(l: &dyn Ledger, stored: &Promises, action: &Action) -> Write {
    match action {
        Action::Insert { run } => Write::Insert(run.clone()),
        Action::Record {
            run,
            outcome,
            reason,
        } => Write::Record {
            run: run.clone(),
            finish: Finish::new(*outcome).reason(reason.clone()),
        },
        Action::Finish {
            id,
            outcome,
            reason,
            ..
        } => {
            let reason = with_attempt_error(l, id, *outcome, reason.clone())
                .unwrap_or_else(|_| reason.clone());
            Write::Finish {
                id: id.clone(),
                finish: Finish::new(*outcome).reason(reason),
            }
        }
        Action::Retry {
            id, due, reason, ..
        } => Write::Retry {
            id: id.clone(),
            due: *due,
            reason: reason.clone(),
        },
        Action::HangUp { id, .. } => Write::CallOp {
            id: id.clone(),
            hang_up: true,
            expected: stored.get(id).and_then(|p| p.hangup_requested_at),
        },
        Action::KeepAlive { id, .. } => Write::CallOp {
            id: id.clone(),
            hang_up: false,
            expected: stored.get(id).and_then(|p| p.last_keep_alive),
        },
        Action::Place { .. } => unreachable!("placements are batched apart"),
    }
}
