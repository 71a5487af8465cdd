//! The pure decision function of the daemon: desired specs + the ledger's
//! open runs + now → the actions to take, and when to look again.
//!
//! [`reconcile`] does no I/O, reads no clock and draws no random number (the
//! jitter seed is an input). The daemon builds an [`Input`] from the ledger
//! and its own memory, calls [`reconcile`], applies the [`Action`]s in order,
//! and sleeps until [`Decision::wake_at`] or until something changes (a spec,
//! a notification, a request result), whichever comes first.
//!
//! The user-facing rules are in `docs/runs.md`.
//!
//! # Applying the actions
//!
//! Apply them in the order given; each maps onto one or two ledger calls:
//!
//! | action | ledger / Graph |
//! |---|---|
//! | [`Action::Insert`] | `insert_run` |
//! | [`Action::Record`] | `insert_run`, then `finish` (only if `created`) |
//! | [`Action::Finish`] | `finish` |
//! | [`Action::Retry`] | `retry_later` |
//! | [`Action::HangUp`] | Graph `DELETE` of the call (remember it in [`CallMemo::hangup_requested_at`]) |
//! | [`Action::KeepAlive`] | Graph `keepAlive` (remember it in [`CallMemo::last_keep_alive`]) |
//! | [`Action::Place`] | `mark_requesting` (by id, or by key after the `Insert` just before it), then the create request |
//!
//! A refused ledger call (the run moved meanwhile) is not an error of the
//! decision: skip that action and reconcile again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use jiff::SignedDuration;

use crate::duration::format_duration;
use crate::ledger::{
    CallState, Disposition, NewRun, Outcome, Run, RunKey, RunProgress, RunState, Slot,
    WAITING_PREFIX,
};
use crate::schedule::{Concurrency, Schedule, Trigger};
use crate::spec::model::{Spec, role_granted};

pub mod scoped;

/// Tunables; [`Settings::default`] is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A placed call with no notification for this long becomes `unknown`
    /// (default 10 minutes). Also how long a hang-up may go unanswered
    /// before it is sent again, and how long a request may stay in flight.
    pub notification_timeout: Duration,
    /// keepAlive interval for established calls (default 15 minutes; Graph
    /// ends a call that gets none for 45).
    pub keep_alive_interval: Duration,
    /// How long a call may stay `terminating` without the final `terminated`
    /// notification before its outcome is recorded anyway (default 30 s).
    pub terminating_grace: Duration,
    /// After downtime, at most this many skipped-over slots per spec are
    /// recorded as `missed` (the most recent ones); the rest are counted in
    /// [`Decision::dropped`] (default 100).
    pub max_missed_records: usize,
    /// How far back a cron spec seen for the first time looks for a slot
    /// still within its deadline (default 5 minutes; never more than the
    /// deadline), so a file written just before its time is not missed.
    pub first_sight_lookback: Duration,
    /// Nothing can be placed now (no access token: the token endpoint is
    /// down or refuses the app). Due runs stay `scheduled` until their
    /// deadline; the daemon notes why on each.
    pub placement_blocked: bool,
    /// A run without a deadline that is waiting out a transient failure is
    /// recorded `missed` this long after its due time (default 1 h).
    pub transient_retry_window: Duration,
    /// keepAlive stops after a call has been established this long
    /// (default 4 h): Graph ends it within 45 minutes after that.
    pub max_call_duration: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            notification_timeout: Duration::from_secs(10 * 60),
            keep_alive_interval: Duration::from_secs(15 * 60),
            terminating_grace: Duration::from_secs(30),
            max_missed_records: 100,
            first_sight_lookback: Duration::from_secs(5 * 60),
            placement_blocked: false,
            transient_retry_window: Duration::from_secs(3600),
            max_call_duration: Duration::from_secs(4 * 3600),
        }
    }
}

/// What the daemon remembers about a call it follows (kept in the ledger
/// with the run, so it survives a restart and the spec's removal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallMemo {
    /// When the last keepAlive was sent (None: none since the daemon started;
    /// the interval then counts from `established_at`).
    pub last_keep_alive: Option<Timestamp>,
    /// When a hang-up (DELETE) was last sent for the call.
    pub hangup_requested_at: Option<Timestamp>,
    /// The spec's `hangupAfter` when the call was placed (`Some(None)`: it
    /// had none). `None`: not known (placed by an older calld); the spec's
    /// current value applies then.
    pub placed_hangup_after: Option<Option<Duration>>,
}

/// A snapshot of everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub now: Timestamp,
    /// Valid specs by name.
    pub specs: &'a BTreeMap<String, Arc<Spec>>,
    /// Names of specs that exist but are invalid now: their scheduled runs
    /// are held (neither placed nor canceled) until they are valid again.
    pub held: &'a BTreeSet<String>,
    /// The ledger's open (non-finished) runs: [`crate::ledger::Ledger::open_runs`].
    pub runs: &'a [Run],
    /// Per open run id: [`crate::ledger::Ledger::open_run_progress`]. A run
    /// missing here counts as never tried.
    pub progress: &'a BTreeMap<String, RunProgress>,
    /// Per spec, its latest run that left `scheduled` (finished ones too):
    /// [`crate::ledger::Ledger::latest_runs`], keyed by spec name.
    pub latest: &'a BTreeMap<String, Run>,
    /// Per spec, the latest time slot ever inserted:
    /// [`crate::ledger::Ledger::last_slots`].
    pub last_slots: &'a BTreeMap<String, Timestamp>,
    /// Per run id: what the daemon remembers about the call.
    pub calls: &'a BTreeMap<String, CallMemo>,
    /// The access token's roles; `None` while unknown (or in sandbox mode,
    /// which grants all): nothing is rejected then.
    pub granted_roles: Option<&'a [String]>,
    /// Seed of the deterministic jitter (stable across restarts).
    pub jitter_seed: u64,
    pub settings: Settings,
}

/// What to do. Actions referring to an existing run carry its id and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Insert a `scheduled` run (the next slot of a scheduled spec, a slot
    /// caught up after downtime, or the run of an unscheduled spec's
    /// revision). A [`Action::Place`] for the same key may follow.
    Insert { run: NewRun },
    /// Insert a run that is finished at once: a slot that passed while the
    /// daemon was down (`missed`), or a slot of a suspended spec that came
    /// and went (`skipped`). Finish it only if the insert created it.
    Record {
        run: NewRun,
        outcome: Outcome,
        reason: String,
    },
    /// Finish an open run: `missed`, `skipped`, `canceled`, `rejected`
    /// (missing permission), `completed`, `notEstablished`, `failed`,
    /// `unknown` (no notification in time).
    Finish {
        id: String,
        key: RunKey,
        outcome: Outcome,
        reason: String,
    },
    /// Put the run back to `scheduled`, due at `due` (`retry_later`).
    Retry {
        id: String,
        key: RunKey,
        due: Timestamp,
        reason: String,
    },
    /// DELETE the call (hangupAfter elapsed, or `concurrency: replace`).
    HangUp {
        id: String,
        key: RunKey,
        call_id: String,
        reason: String,
    },
    /// POST keepAlive for an established call.
    KeepAlive {
        id: String,
        key: RunKey,
        call_id: String,
    },
    /// Mark the run `requesting` and send the create request. `id` is `None`
    /// when the run is inserted by an [`Action::Insert`] of this decision.
    Place { id: Option<String>, key: RunKey },
}

/// Slots skipped over after downtime that were not recorded (beyond
/// [`Settings::max_missed_records`]): log and count them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dropped {
    pub spec: String,
    /// How many slots were neither placed nor recorded.
    pub count: u64,
    /// The earliest and latest of them.
    pub first: Timestamp,
    pub last: Timestamp,
    /// True when counting stopped early (`count` is then a lower bound).
    pub more: bool,
}

/// The result of [`reconcile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// In the order to apply them.
    pub actions: Vec<Action>,
    /// When to call [`reconcile`] again if nothing else happens first;
    /// `None`: only a change will need a decision.
    pub wake_at: Option<Timestamp>,
    /// Slots not recorded after downtime (see [`Dropped`]).
    pub dropped: Vec<Dropped>,
}

/// The reason of runs canceled because their spec was removed.
pub const REMOVED: &str = "the spec was removed";

/// How many skipped-over slots are counted at most after downtime (beyond
/// it, [`Dropped::more`] is set).
const COUNT_CAP: u64 = 100_000;

/// Decides what to do now. Pure: the same input gives the same decision.
pub fn reconcile(input: &Input<'_>) -> Decision {
    reconcile_with_wakes(input).0
}

/// [`reconcile`], and per spec name the earliest time its own runs need
/// another decision (the decision's `wake_at` is the earliest of them).
/// The decision of one spec depends only on that spec and its runs, so the
/// daemon can decide the specs that changed and keep these times in one
/// deadline queue ([`scoped`]).
pub fn reconcile_with_wakes(input: &Input<'_>) -> (Decision, BTreeMap<String, Timestamp>) {
    let mut d = Decider {
        cur: None,
        wakes: BTreeMap::new(),
        input,
        open_keys: input
            .runs
            .iter()
            .map(|r| (r.spec.as_str(), &r.slot))
            .collect(),
        now: input.now,
        early: Vec::new(),
        hangups: Vec::new(),
        keep_alives: Vec::new(),
        places: Vec::new(),
        wake: None,
        dropped: Vec::new(),
    };

    // Calls in progress first: what ends, retries or times out here changes
    // what the scheduled runs of the same spec may do.
    let mut up: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    let mut pending: BTreeMap<&str, Vec<Pending>> = BTreeMap::new();
    // (a spec has one pending run as a rule: a vector of exactly one, where
    // a first push reserved four, ~1 KB a run in a full decision)
    fn add<'r>(pending: &mut BTreeMap<&'r str, Vec<Pending>>, spec: &'r str, p: Pending) {
        match pending.entry(spec) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(vec![p]);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().push(p),
        }
    }
    for run in input.runs {
        d.cur = Some(run.spec.as_str());
        match run.state {
            RunState::Scheduled => add(
                &mut pending,
                run.spec.as_str(),
                Pending::existing(run, input.progress.get(&run.id)),
            ),
            RunState::Finished => {}
            _ => {
                if let Some(p) = d.follow_call(run, &mut up) {
                    add(&mut pending, run.spec.as_str(), p);
                }
            }
        }
    }

    let names: BTreeSet<&str> = input
        .specs
        .keys()
        .map(String::as_str)
        .chain(pending.keys().copied())
        .collect();
    for name in names {
        d.cur = Some(name);
        let runs = pending.remove(name).unwrap_or_default();
        if input.held.contains(name) {
            // Invalid now: keep its runs as they are until it is valid again.
            continue;
        }
        match input.specs.get(name) {
            None => {
                for p in runs {
                    d.finish_pending(&p, Outcome::Canceled, REMOVED.to_string());
                }
            }
            Some(spec) => {
                let up = up.remove(name).unwrap_or_default();
                d.plan_spec(spec, runs, up);
            }
        }
    }

    let mut places = std::mem::take(&mut d.places);
    places.sort_by(|a, b| {
        (a.0, &a.1.spec, a.1.slot.key_text()).cmp(&(b.0, &b.1.spec, b.1.slot.key_text()))
    });
    let mut actions = d.early;
    actions.extend(d.hangups);
    actions.extend(d.keep_alives);
    actions.extend(
        places
            .into_iter()
            .map(|(_, key, id)| Action::Place { id, key }),
    );
    let wakes = d
        .wakes
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    (
        Decision {
            actions,
            wake_at: d.wake,
            dropped: d.dropped,
        },
        wakes,
    )
}

/// A run waiting in `scheduled` (or about to be, after this decision).
#[derive(Debug, Clone)]
struct Pending {
    /// `None`: not in the ledger yet (inserted by this decision).
    id: Option<String>,
    key: RunKey,
    due: Timestamp,
    /// False for a run waiting for a `retry` attempt.
    first_try: bool,
    /// The row to insert when `id` is `None`.
    new: Option<NewRun>,
    /// Waiting out a transient failure: not placed before this.
    not_before: Option<Timestamp>,
    /// Why it is waiting (the last error), when it is.
    note: Option<String>,
}

impl Pending {
    fn existing(run: &Run, progress: Option<&RunProgress>) -> Pending {
        Pending {
            id: Some(run.id.clone()),
            key: run.key(),
            due: run.due_at,
            // A run put back by `retry_later` was requested before (and
            // carries the retry's reason).
            // A triggered run is not a slot: "only the most recent slot
            // after downtime" does not apply to it. A run waiting out a
            // transient failure has not been tried yet.
            first_try: progress.is_none_or(|p| p.tries == 0)
                && run
                    .reason
                    .as_deref()
                    .is_none_or(|r| r.starts_with(WAITING_PREFIX))
                && !matches!(run.slot, Slot::Trigger(_)),
            new: None,
            not_before: progress.and_then(|p| p.not_before),
            note: run
                .reason
                .as_deref()
                .and_then(|r| r.strip_prefix(WAITING_PREFIX))
                .map(str::to_string),
        }
    }

    fn slot_time(&self) -> Option<Timestamp> {
        match self.key.slot {
            Slot::At(t) => Some(t),
            Slot::Revision(_) | Slot::Trigger(_) => None,
        }
    }
}

struct Decider<'i, 'a> {
    input: &'i Input<'a>,
    /// The keys of every open run.
    open_keys: HashSet<(&'a str, &'a Slot)>,
    now: Timestamp,
    /// Finishes, retries, records and inserts, in the order decided.
    early: Vec<Action>,
    hangups: Vec<Action>,
    keep_alives: Vec<Action>,
    /// (due, key, id): sorted by due time at the end.
    places: Vec<(Timestamp, RunKey, Option<String>)>,
    wake: Option<Timestamp>,
    dropped: Vec<Dropped>,
    /// The spec whose runs are being decided (for `wakes`).
    cur: Option<&'a str>,
    /// Per spec, its earliest wake-up.
    wakes: BTreeMap<&'a str, Timestamp>,
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

/// The slot as the ledger stores it (microseconds).
fn slot_at(t: Timestamp) -> Slot {
    Slot::At(t).normalized()
}

impl Decider<'_, '_> {
    /// Wake at `t` if that is later than now and earlier than any other
    /// wake-up so far.
    fn wake_at(&mut self, t: Timestamp) {
        if t <= self.now {
            return;
        }
        if self.wake.is_none_or(|w| t < w) {
            self.wake = Some(t);
        }
        if let Some(name) = self.cur {
            let w = self.wakes.entry(name).or_insert(t);
            *w = (*w).min(t);
        }
    }

    fn finish(&mut self, run: &Run, outcome: Outcome, reason: String) {
        self.early.push(Action::Finish {
            id: run.id.clone(),
            key: run.key(),
            outcome,
            reason,
        });
    }

    fn finish_pending(&mut self, p: &Pending, outcome: Outcome, reason: String) {
        match (&p.id, &p.new) {
            (Some(id), _) => self.early.push(Action::Finish {
                id: id.clone(),
                key: p.key.clone(),
                outcome,
                reason,
            }),
            (None, Some(new)) => self.early.push(Action::Record {
                run: new.clone(),
                outcome,
                reason,
            }),
            (None, None) => {}
        }
    }

    /// A run past `scheduled`: outcomes, retries, timeouts, keepAlive and
    /// hang-ups. Returns the run as pending again when it is retried; adds it
    /// to `up` while its call (or request) is up.
    fn follow_call<'r>(
        &mut self,
        run: &'r Run,
        up: &mut BTreeMap<&'r str, Vec<&'r Run>>,
    ) -> Option<Pending> {
        let input = self.input;
        let now = self.now;
        let settings = input.settings;
        let progress = input.progress.get(&run.id).cloned().unwrap_or_default();
        // Retries and hang-ups follow the spec as it is now; a removed or
        // invalid spec places nothing new, so it is never retried.
        let spec = input
            .specs
            .get(&run.spec)
            .filter(|_| !input.held.contains(&run.spec));
        let memo = input.calls.get(&run.id).copied().unwrap_or_default();
        match run.state {
            RunState::Requesting => {
                if progress.in_flight || progress.attempts == 0 {
                    // The request task owns it; its result triggers a decision.
                    up.entry(&run.spec).or_default().push(run);
                    return None;
                }
                match progress.last_disposition {
                    Some(Disposition::Failed) => {
                        return self.retry_or_finish(
                            run,
                            spec.map(|s| &**s),
                            &progress,
                            Outcome::Failed,
                        );
                    }
                    Some(Disposition::Rejected) => self.finish(
                        run,
                        Outcome::Rejected,
                        "Graph refused the request".to_string(),
                    ),
                    Some(Disposition::Unknown) => self.finish(
                        run,
                        Outcome::Unknown,
                        "the answer to the create request was lost".to_string(),
                    ),
                    // 201 recorded; `mark_placed` is on its way.
                    Some(Disposition::Placed) | None => {
                        up.entry(&run.spec).or_default().push(run);
                    }
                }
                None
            }
            RunState::Placed | RunState::Establishing => {
                let deadline = add(run.updated_at, settings.notification_timeout);
                if deadline <= now {
                    self.finish(
                        run,
                        Outcome::Unknown,
                        format!(
                            "no notification from Graph within {} of the last one",
                            format_duration(settings.notification_timeout)
                        ),
                    );
                } else {
                    self.wake_at(deadline);
                    up.entry(&run.spec).or_default().push(run);
                }
                None
            }
            RunState::Established => {
                up.entry(&run.spec).or_default().push(run);
                let call_id = run.call_id.clone()?;
                let since = run.established_at.unwrap_or(run.updated_at);
                let base = memo.last_keep_alive.map_or(since, |k| k.max(since));
                let next = add(base, settings.keep_alive_interval);
                if next > add(since, settings.max_call_duration) {
                    // Past `daemon.maxCallDuration`: no keepAlive; Graph
                    // ends the call, whose notification ends the run.
                } else if next <= now {
                    self.keep_alives.push(Action::KeepAlive {
                        id: run.id.clone(),
                        key: run.key(),
                        call_id: call_id.clone(),
                    });
                    self.wake_at(add(now, settings.keep_alive_interval));
                } else {
                    self.wake_at(next);
                }
                // The promise made when the call was placed, whatever
                // became of the spec since (removed, renamed, held).
                let hangup_after = match memo.placed_hangup_after {
                    Some(placed) => placed,
                    None => spec.and_then(|s| s.hangup_after),
                };
                if let Some(after) = hangup_after {
                    let at = add(since, after);
                    let reason = format!("hangupAfter: established for {}", format_duration(after));
                    self.hang_up_when(run, &call_id, at, memo, reason);
                }
                None
            }
            RunState::Terminating => {
                let ended = progress.last_call_state == Some(CallState::Terminated)
                    || add(run.updated_at, settings.terminating_grace) <= now;
                if !ended {
                    self.wake_at(add(run.updated_at, settings.terminating_grace));
                    // The call is going down: it does not block a new one.
                    return None;
                }
                if run.established_at.is_some() {
                    self.finish(run, Outcome::Completed, "the call ended".to_string());
                    None
                } else {
                    self.retry_or_finish(
                        run,
                        spec.map(|s| &**s),
                        &progress,
                        Outcome::NotEstablished,
                    )
                }
            }
            RunState::Scheduled | RunState::Finished => None,
        }
    }

    /// Sends a hang-up at `at` (again after the notification timeout if the
    /// call is still up).
    fn hang_up_when(
        &mut self,
        run: &Run,
        call_id: &str,
        at: Timestamp,
        memo: CallMemo,
        reason: String,
    ) {
        let timeout = self.input.settings.notification_timeout;
        let at = match memo.hangup_requested_at {
            Some(sent) => at.max(add(sent, timeout)),
            None => at,
        };
        if at <= self.now {
            self.hangups.push(Action::HangUp {
                id: run.id.clone(),
                key: run.key(),
                call_id: call_id.to_string(),
                reason,
            });
            self.wake_at(add(self.now, timeout));
        } else {
            self.wake_at(at);
        }
    }

    /// A try that failed or was never established: another attempt after
    /// `retry.interval` if the spec allows one, else the final outcome.
    fn retry_or_finish(
        &mut self,
        run: &Run,
        spec: Option<&Spec>,
        progress: &RunProgress,
        outcome: Outcome,
    ) -> Option<Pending> {
        let what = match outcome {
            Outcome::Failed => "the request failed",
            _ => "the call was not established",
        };
        let tries = progress.tries.max(1);
        match spec {
            Some(spec) if tries <= spec.retry.attempts => {
                let due = add(self.now, spec.retry.interval);
                let reason = format!(
                    "{what}; retry {tries} of {} in {}",
                    spec.retry.attempts,
                    format_duration(spec.retry.interval)
                );
                self.early.push(Action::Retry {
                    id: run.id.clone(),
                    key: run.key(),
                    due,
                    reason,
                });
                self.wake_at(due);
                Some(Pending {
                    id: Some(run.id.clone()),
                    key: run.key(),
                    due,
                    first_try: false,
                    new: None,
                    not_before: None,
                    note: None,
                })
            }
            _ => {
                let reason = match spec {
                    Some(spec) if spec.retry.attempts > 0 => {
                        format!("{what}; no retry left ({} made)", spec.retry.attempts)
                    }
                    Some(_) => what.to_string(),
                    None => format!("{what}; the spec is gone or invalid, so no retry"),
                };
                self.finish(run, outcome, reason);
                None
            }
        }
    }

    fn new_run(&self, spec: &Spec, slot: Slot, due: Timestamp) -> NewRun {
        NewRun {
            key: RunKey {
                spec: spec.name.clone(),
                slot,
            },
            revision: spec.revision.clone(),
            due,
            tenant_id: spec.call.tenant_id.clone(),
        }
    }

    /// Everything about the scheduled runs of one valid spec.
    fn plan_spec(&mut self, spec: &Spec, runs: Vec<Pending>, up: Vec<&Run>) {
        let now = self.now;
        let input = self.input;
        let name = spec.name.as_str();

        // 1. Cancel what the spec no longer plans.
        let mut pending = Vec::with_capacity(runs.len() + 2);
        let mut canceled: HashSet<Slot> = HashSet::new();
        for p in runs {
            match stale(spec, &p.key.slot) {
                Some(reason) => {
                    canceled.insert(p.key.slot.clone());
                    self.finish_pending(&p, Outcome::Canceled, reason.to_string());
                }
                None => pending.push(p),
            }
        }

        // 2. Plan new runs.
        match &spec.schedule {
            None => {
                let slot = Slot::Revision(spec.revision.clone());
                let known = pending.iter().any(|p| p.key.slot == slot)
                    || self.open_keys.contains(&(name, &slot))
                    // a triggered run of this revision came after its run
                    || input.latest.get(name).is_some_and(|r| {
                        r.slot == slot
                            || (matches!(r.slot, Slot::Trigger(_)) && r.revision == spec.revision)
                    });
                // Suspended: nothing new; the run is planned when it resumes.
                if !known && !spec.suspend {
                    let new = self.new_run(spec, slot, now);
                    pending.push(Pending {
                        id: None,
                        key: new.key.clone(),
                        due: now,
                        first_try: true,
                        new: Some(new),
                        not_before: None,
                        note: None,
                    });
                }
            }
            Some(sched) => self.catch_up(spec, sched, &mut pending, &canceled),
        }

        // 3. Decide the due runs, oldest first.
        pending.sort_by(|a, b| {
            (a.due, a.slot_time(), a.key.slot.key_text()).cmp(&(
                b.due,
                b.slot_time(),
                b.key.slot.key_text(),
            ))
        });
        let place_by = |due: Timestamp| spec.schedule.as_ref().and_then(|s| s.place_by(due));
        let expired = |due: Timestamp| place_by(due).is_some_and(|by| now > by);
        // Without a deadline, a run waiting out a passing trouble gives up
        // after `transient_retry_window`.
        let window = input.settings.transient_retry_window;
        let window_over =
            |p: &Pending| place_by(p.due).is_none() && p.note.is_some() && now > add(p.due, window);
        // After downtime only the most recent first try is placed.
        let newest_first_try = pending
            .iter()
            .filter(|p| p.first_try && p.due <= now && !expired(p.due))
            .map(|p| (p.slot_time(), p.key.slot.key_text()))
            .max();
        let concurrency = spec
            .schedule
            .as_ref()
            .map_or(Concurrency::Allow, |s| s.concurrency);
        let mut up: Vec<&Run> = up;
        let mut placed_now: Vec<RunKey> = Vec::new();
        for p in pending {
            if p.due > now {
                self.wake_at(p.due);
                if let Some(new) = p.new {
                    self.early.push(Action::Insert { run: new });
                }
                continue;
            }
            if expired(p.due) || window_over(&p) {
                let last = p
                    .note
                    .as_deref()
                    .map(|n| format!("; last error: {n}"))
                    .unwrap_or_default();
                let reason = match spec.schedule.as_ref().and_then(|s| s.deadline) {
                    Some(d) => format!(
                        "not placed within the deadline ({}) of its due time{last}",
                        format_duration(d)
                    ),
                    None => format!(
                        "not placed within daemon.transientRetryWindow ({}) of its due time{last}",
                        format_duration(window)
                    ),
                };
                self.finish_pending(&p, Outcome::Missed, reason);
                continue;
            }
            // Waiting out a 429's Retry-After or a backoff (durably).
            if let Some(nb) = p.not_before.filter(|nb| *nb > now) {
                self.wake_at(nb);
                if let Some(by) = place_by(p.due) {
                    self.wake_at(add(by, Duration::from_micros(1)));
                }
                continue;
            }
            if p.first_try && Some((p.slot_time(), p.key.slot.key_text())) != newest_first_try {
                self.finish_pending(
                    &p,
                    Outcome::Missed,
                    "a later run of the spec is due: only the most recent one is placed"
                        .to_string(),
                );
                continue;
            }
            if spec.suspend {
                self.finish_pending(&p, Outcome::Skipped, "the spec is suspended".to_string());
                continue;
            }
            if input.settings.placement_blocked {
                // No token: stays `scheduled`; the token's return (or the
                // deadline) triggers the next decision.
                if let Some(by) = place_by(p.due) {
                    self.wake_at(add(by, Duration::from_micros(1)));
                } else if p.note.is_some() {
                    self.wake_at(add(add(p.due, window), Duration::from_micros(1)));
                }
                if let Some(new) = p.new {
                    self.early.push(Action::Insert { run: new });
                }
                continue;
            }
            if let Some(granted) = input.granted_roles {
                let missing: Vec<&str> = spec
                    .permissions
                    .iter()
                    .copied()
                    .filter(|r| !role_granted(granted, r))
                    .collect();
                if !missing.is_empty() {
                    self.finish_pending(
                        &p,
                        Outcome::Rejected,
                        format!(
                            "the access token lacks the application permission {}: grant it \
                             to the app registration and give admin consent",
                            missing.join(", ")
                        ),
                    );
                    continue;
                }
            }
            let blocking = !up.is_empty() || !placed_now.is_empty();
            match concurrency {
                Concurrency::Forbid if blocking => {
                    let previous = up
                        .first()
                        .map(|r| format!("run {}", r.id))
                        .unwrap_or_else(|| "a run placed just now".to_string());
                    self.finish_pending(
                        &p,
                        Outcome::Skipped,
                        format!("the previous call ({previous}) is still up (concurrency: forbid)"),
                    );
                    continue;
                }
                Concurrency::Replace if blocking => {
                    // A request still in flight has no call id to hang up yet:
                    // wait for its answer (which triggers a new decision).
                    if up.iter().any(|r| r.call_id.is_none()) {
                        if let Some(by) = place_by(p.due) {
                            self.wake_at(add(by, Duration::from_micros(1)));
                        }
                        if let Some(new) = p.new {
                            self.early.push(Action::Insert { run: new });
                        }
                        continue;
                    }
                    for r in up.drain(..) {
                        let memo = input.calls.get(&r.id).copied().unwrap_or_default();
                        let recently = memo
                            .hangup_requested_at
                            .is_some_and(|t| add(t, input.settings.notification_timeout) > now);
                        if !recently {
                            self.hangups.push(Action::HangUp {
                                id: r.id.clone(),
                                key: r.key(),
                                call_id: r.call_id.clone().unwrap_or_default(),
                                reason: format!(
                                    "replaced by the run at {} (concurrency: replace)",
                                    describe_slot(&p.key.slot)
                                ),
                            });
                        }
                    }
                    // Earlier runs placed in this same decision are only
                    // requests yet: they cannot be hung up.
                }
                _ => {}
            }
            if let Some(new) = p.new {
                self.early.push(Action::Insert { run: new });
            }
            placed_now.push(p.key.clone());
            self.places.push((p.due, p.key, p.id));
        }
    }

    /// Scheduled specs: the slots that came while nobody looked (downtime,
    /// a new spec), and the next slot, so status can show it.
    fn catch_up(
        &mut self,
        spec: &Spec,
        sched: &Schedule,
        pending: &mut Vec<Pending>,
        canceled: &HashSet<Slot>,
    ) {
        let now = self.now;
        let input = self.input;
        let name = spec.name.as_str();
        // The latest slot planned for real (canceled ones do not count).
        let last = input.last_slots.get(name).copied();
        // A spec removed (its next run canceled) and added back later: the
        // time it was gone is not reported as missed.
        let removed_at = input
            .latest
            .get(name)
            .filter(|r| {
                r.outcome == Some(Outcome::Canceled) && r.reason.as_deref() == Some(REMOVED)
            })
            .map(|r| r.updated_at)
            .filter(|at| last.is_none_or(|l| *at > l));
        let cursor = last.filter(|_| removed_at.is_none());
        let from = match cursor {
            Some(c) => c.min(now),
            None => {
                let window = match sched.trigger {
                    // A one-shot time is always accounted for: placed if
                    // still within its deadline, recorded as missed otherwise.
                    Trigger::At(_) => Timestamp::MIN,
                    Trigger::Cron(_) => {
                        let lookback = match sched.deadline {
                            Some(d) => d.min(input.settings.first_sight_lookback),
                            None => input.settings.first_sight_lookback,
                        };
                        sub(now, lookback)
                    }
                };
                window.max(removed_at.unwrap_or(Timestamp::MIN)).min(now)
            }
        };
        let open_keys = std::mem::take(&mut self.open_keys);
        let has = |pending: &Vec<Pending>, slot: &Slot| {
            pending.iter().any(|p| &p.key.slot == slot) || open_keys.contains(&(name, slot))
        };
        if let Some(latest) = sched.last_between(from, now) {
            let slot = slot_at(latest);
            if !has(pending, &slot) && !canceled.contains(&slot) {
                let due = sched.due_at(input.jitter_seed, name, latest);
                let new = self.new_run(spec, slot, due);
                // Deadline, suspension and the rest are decided with the
                // other due runs.
                pending.push(Pending {
                    id: None,
                    key: new.key.clone(),
                    due,
                    first_try: true,
                    new: Some(new),
                    not_before: None,
                    note: None,
                });
            }
            if cursor.is_some() {
                self.record_skipped_over(spec, sched, from, latest);
            }
        }
        // A slot whose time passed but whose jitter delays it is the next
        // run until it is placed: the slot after it is planned then (at its
        // due time, when the decision wakes anyway), so the decision does
        // not change between the slot's time and its due time.
        let delayed = pending
            .iter()
            .any(|p| p.first_try && p.due > now && p.slot_time().is_some_and(|t| t <= now));
        if let Some(next) = sched.next_after(now).filter(|_| !delayed) {
            let slot = slot_at(next);
            if !has(pending, &slot) {
                let due = sched.due_at(input.jitter_seed, name, next);
                let new = self.new_run(spec, slot, due);
                pending.push(Pending {
                    id: None,
                    key: new.key.clone(),
                    due,
                    first_try: true,
                    new: Some(new),
                    not_before: None,
                    note: None,
                });
            }
        }
        self.open_keys = open_keys;
    }

    /// The slots in `(from, latest)`: the most recent
    /// [`Settings::max_missed_records`] are recorded `missed`, the others
    /// counted in [`Decision::dropped`].
    fn record_skipped_over(
        &mut self,
        spec: &Spec,
        sched: &Schedule,
        from: Timestamp,
        latest: Timestamp,
    ) {
        let n = self.input.settings.max_missed_records;
        // The most recent `n`, looking back in doubling windows so the cost
        // does not grow with the length of the downtime.
        let mut window = SignedDuration::from_mins(1);
        let (recent, lo) = loop {
            let lo = latest
                .checked_sub(window)
                .ok()
                .filter(|lo| *lo > from)
                .unwrap_or(from);
            let mut slots = sched.runs_between(lo, latest, COUNT_CAP as usize);
            slots.retain(|t| *t < latest);
            if slots.len() >= n || lo == from {
                let keep = slots.split_off(slots.len().saturating_sub(n));
                break (keep, lo);
            }
            window = window.checked_mul(2).unwrap_or(SignedDuration::MAX);
        };
        for t in &recent {
            let due = sched.due_at(self.input.jitter_seed, &spec.name, *t);
            self.early.push(Action::Record {
                run: self.new_run(spec, slot_at(*t), due),
                outcome: Outcome::Missed,
                reason: "the daemon was not running at its time; after downtime only the \
                         most recent run is placed"
                    .to_string(),
            });
        }
        // Everything before the recorded ones is only counted.
        let Some(&first_recorded) = recent.first() else {
            return;
        };
        if lo == from && recent.len() < n {
            return;
        }
        let mut count = 0u64;
        let mut first = None;
        let mut last = None;
        let mut cursor = from;
        let mut more = false;
        while let Some(t) = sched.next_after(cursor).filter(|t| *t < first_recorded) {
            if count == COUNT_CAP {
                more = true;
                break;
            }
            count += 1;
            first.get_or_insert(t);
            last = Some(t);
            cursor = t;
        }
        if let (Some(first), Some(last)) = (first, last) {
            self.dropped.push(Dropped {
                spec: spec.name.clone(),
                count,
                first,
                last,
                more,
            });
        }
    }
}

/// Why a scheduled run's slot is no longer planned by the spec, if it is not.
fn stale(spec: &Spec, slot: &Slot) -> Option<&'static str> {
    match (&spec.schedule, slot) {
        // placed on request, whatever the schedule says
        (_, Slot::Trigger(_)) => None,
        (None, Slot::Revision(r)) if *r == spec.revision => None,
        (None, Slot::Revision(_)) => Some("the spec changed before its run was placed"),
        (None, Slot::At(_)) => Some("the spec no longer has a schedule"),
        (Some(_), Slot::Revision(_)) => Some("the spec now has a schedule"),
        (Some(sched), Slot::At(t)) => {
            let just_before = t
                .checked_sub(SignedDuration::from_micros(1))
                .unwrap_or(Timestamp::MIN);
            let planned = sched
                .next_after(just_before)
                .is_some_and(|n| slot_at(n) == *slot);
            if planned {
                None
            } else {
                Some("the schedule changed and no longer has this time")
            }
        }
    }
}

fn describe_slot(slot: &Slot) -> String {
    match slot {
        Slot::At(t) => t.to_string(),
        Slot::Revision(r) => format!("revision {}", r.get(..12).unwrap_or(r)),
        Slot::Trigger(r) => format!("trigger {r}"),
    }
}
