//! Issue 12, item 2: deciding only the specs that changed (a dirty set and
//! one deadline queue, `calld::reconcile::scoped`) makes the same decisions
//! as deciding every spec every time.
//!
//! Two worlds live the same random history (spec edits, Graph answers and
//! notifications, restarts): world A decides every spec at every step, as
//! the daemon used to; world B decides only the specs of its scope (the
//! specs marked dirty and those whose queued time came), reading only
//! their runs from its ledger (`Ledger::open_state_of`), and sleeps until its own
//! queue's first time. At every step where B decides, both decide the same
//! actions; where B sleeps, A decides nothing.

mod reconcile_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use calld::ledger::{Disposition, Ledger, Outcome, RunKey, RunState, scoped};
use calld::reconcile::scoped::{DirtySet, Scope, specs_in};
use calld::reconcile::{Action, Decision, Input, reconcile_with_wakes};
use calld::schedule::{Concurrency, Schedule};
use jiff::Timestamp;
use proptest::prelude::*;
use reconcile_support::*;

#[derive(Debug, Clone)]
enum Ev {
    Answer(RunKey, Disposition, String),
    Notify(RunKey, String, &'static str),
    Edit(Edit),
    Restart,
}

#[derive(Debug, Clone, Copy)]
enum Edit {
    Suspend(usize, bool),
    Hold(usize, bool),
    Remove(usize),
    Restore(usize),
    Reschedule(usize),
}

fn specs() -> Vec<calld::spec::Spec> {
    let mut quarter = spec("quarter", Some(cron("*/15 * * * *")));
    quarter.retry.attempts = 1;
    quarter.retry.interval = mins(2);
    let mut replace = cron("*/20 * * * *");
    replace.concurrency = Concurrency::Replace;
    replace.jitter = Some(mins(2));
    let mut standup = spec("standup", Some(replace));
    standup.hangup_after = Some(mins(30));
    let forbid = spec(
        "forbid",
        Some(with_concurrency(
            cron("5-55/25 * * * *"),
            Concurrency::Forbid,
        )),
    );
    let mut once: Schedule = at("2026-03-23T01:30:00Z");
    once.deadline = Some(mins(5));
    let once = spec("once", Some(once));
    let plain = spec("plain", None);
    vec![quarter, standup, forbid, once, plain]
}

struct Dual {
    a: World,
    b: World,
    dirty: DirtySet,
    now: Timestamp,
    events: BTreeMap<(Timestamp, u64), Ev>,
    seq: u64,
    rng: u64,
    originals: Vec<calld::spec::Spec>,
    b_decisions: u64,
    a_only: u64,
    scoped_specs: u64,
}

fn norm(w: &World, d: &Decision) -> String {
    // run ids are random per ledger: name runs by their slot
    let slot_of = |id: &str| {
        w.ledger
            .run(id)
            .unwrap()
            .map_or_else(|| id.to_string(), |r| r.slot.key_text())
    };
    let mut actions = d.actions.clone();
    for a in &mut actions {
        match a {
            Action::Finish { id, reason, .. } => {
                if let Some(rest) = reason.split("(run ").nth(1)
                    && let Some(other) = rest.split(')').next()
                {
                    *reason = reason.replace(other, &slot_of(other));
                }
                *id = slot_of(id);
            }
            Action::Retry { id, .. } | Action::HangUp { id, .. } | Action::KeepAlive { id, .. } => {
                *id = slot_of(id)
            }
            Action::Place { id: Some(id), .. } => *id = slot_of(id),
            _ => {}
        }
    }
    format!("{actions:?}")
}

fn action_spec(a: &Action) -> &str {
    match a {
        Action::Insert { run } | Action::Record { run, .. } => &run.key.spec,
        Action::Finish { key, .. }
        | Action::Retry { key, .. }
        | Action::HangUp { key, .. }
        | Action::KeepAlive { key, .. }
        | Action::Place { key, .. } => &key.spec,
    }
}

impl Dual {
    fn new(seed: u64, start: Timestamp) -> Dual {
        let specs = specs();
        Dual {
            a: World::new(specs.clone()),
            b: World::new(specs.clone()),
            dirty: DirtySet::new(),
            now: start,
            events: BTreeMap::new(),
            seq: 0,
            rng: seed | 1,
            originals: specs,
            b_decisions: 0,
            a_only: 0,
            scoped_specs: 0,
        }
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
    }

    fn at(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.events.insert((plus(self.now, after), self.seq), ev);
    }

    fn script_call(&mut self, key: &RunKey) {
        let call = format!("call-{}", self.seq);
        let secs = Duration::from_secs;
        let len = secs(60 * (1 + self.rand(40)));
        let k = key.clone();
        match self.rand(100) {
            0..55 => {
                self.at(
                    secs(1),
                    Ev::Answer(k.clone(), Disposition::Placed, call.clone()),
                );
                self.at(secs(5), Ev::Notify(k.clone(), call.clone(), "established"));
                self.at(secs(5) + len, Ev::Notify(k, call, "terminated"));
            }
            55..65 => {
                self.at(
                    secs(1),
                    Ev::Answer(k.clone(), Disposition::Placed, call.clone()),
                );
                self.at(secs(32), Ev::Notify(k, call, "terminated"));
            }
            65..77 => self.at(secs(1), Ev::Answer(k, Disposition::Failed, call)),
            77..82 => self.at(secs(1), Ev::Answer(k, Disposition::Rejected, call)),
            82..87 => self.at(secs(1), Ev::Answer(k, Disposition::Placed, call)),
            87..90 => self.at(secs(1), Ev::Answer(k, Disposition::Unknown, call)),
            _ => {
                self.at(
                    secs(1),
                    Ev::Answer(k.clone(), Disposition::Placed, call.clone()),
                );
                self.at(secs(5), Ev::Notify(k.clone(), call.clone(), "established"));
                self.at(len, Ev::Notify(k, call, "terminating"));
            }
        }
    }

    /// Delivers an event to both worlds; B marks what it touched.
    fn deliver(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Answer(key, disposition, call) => {
                for w in [&mut self.a, &mut self.b] {
                    let Ok(Some(run)) = w.ledger.run_by_key(&key) else {
                        continue;
                    };
                    if run.state != RunState::Requesting {
                        continue;
                    }
                    if disposition == Disposition::Placed {
                        w.answer_placed(&run.id, &call, now);
                    } else {
                        w.answer(&run.id, disposition, now);
                    }
                }
                self.dirty.mark(&key.spec);
            }
            Ev::Notify(key, call, state) => {
                for w in [&mut self.a, &mut self.b] {
                    let Ok(Some(run)) = w.ledger.run_by_key(&key) else {
                        continue;
                    };
                    if run.state == RunState::Finished && run.outcome != Some(Outcome::Unknown) {
                        continue;
                    }
                    w.notify(&run.id, &call, state, now);
                }
                self.dirty.mark(&key.spec);
            }
            Ev::Edit(e) => {
                let i = match e {
                    Edit::Suspend(i, _)
                    | Edit::Hold(i, _)
                    | Edit::Remove(i)
                    | Edit::Restore(i)
                    | Edit::Reschedule(i) => i,
                };
                let orig = self.originals[i].clone();
                let name = orig.name.clone();
                for w in [&mut self.a, &mut self.b] {
                    match e {
                        Edit::Suspend(_, on) => {
                            if let Some(s) = w.specs.get_mut(&name).map(Arc::make_mut) {
                                s.suspend = on;
                            }
                        }
                        Edit::Hold(_, on) => {
                            if on {
                                if w.specs.remove(&name).is_some() {
                                    w.held.insert(name.clone());
                                }
                            } else if w.held.remove(&name) {
                                w.specs.insert(name.clone(), Arc::new(orig.clone()));
                            }
                        }
                        Edit::Remove(_) => {
                            w.specs.remove(&name);
                            w.held.remove(&name);
                        }
                        Edit::Restore(_) => {
                            if !w.held.contains(&name) {
                                w.specs.insert(name.clone(), Arc::new(orig.clone()));
                            }
                        }
                        Edit::Reschedule(_) => {
                            if let Some(s) = w.specs.get_mut(&name).map(Arc::make_mut)
                                && let Some(old) = &s.schedule
                                && matches!(old.trigger, calld::schedule::Trigger::Cron(_))
                            {
                                let mut sched = cron("*/10 * * * *");
                                sched.concurrency = old.concurrency;
                                s.schedule = Some(sched);
                                s.revision = format!("rev-{name}-ten");
                            }
                        }
                    }
                }
                self.dirty.mark(&name);
            }
            Ev::Restart => {
                self.a.restart(now);
                self.b.restart(now);
                // a new process: its first decision is a full one
                self.dirty = DirtySet::new();
            }
        }
    }

    fn decide_b(&mut self) -> Decision {
        let now = self.now;
        let scope = self.dirty.take(now);
        let w = &self.b;
        let (d, wakes) = match &scope {
            Scope::Full => {
                let snap = w.snapshot();
                reconcile_with_wakes(&Input {
                    now,
                    specs: &w.specs,
                    held: &w.held,
                    runs: &snap.runs,
                    progress: &snap.progress,
                    latest: &snap.latest,
                    last_slots: &snap.last_slots,
                    calls: &w.calls,
                    granted_roles: w.roles.as_deref(),
                    jitter_seed: w.seed,
                    settings: w.settings,
                })
            }
            Scope::Specs(names) => {
                self.scoped_specs += names.len() as u64;
                let part = w.ledger.open_state_of(names).unwrap();
                // the scoped read is the full read's part about `names`
                let whole = scoped::restrict(w.ledger.open_state().unwrap(), names);
                assert_eq!(part, whole, "open_state_of({names:?})");
                let specs = specs_in(&w.specs, names);
                reconcile_with_wakes(&Input {
                    now,
                    specs: &specs,
                    held: &w.held,
                    runs: &part.runs,
                    progress: &part.progress,
                    latest: &part.latest,
                    last_slots: &part.last_slots,
                    calls: &w.calls,
                    granted_roles: w.roles.as_deref(),
                    jitter_seed: w.seed,
                    settings: w.settings,
                })
            }
        };
        assert!(
            wakes.values().min().copied() == d.wake_at,
            "per-spec wakes {wakes:?} vs {:?}",
            d.wake_at
        );
        self.dirty.decided(&scope, &wakes);
        for a in &d.actions {
            self.dirty.mark(action_spec(a));
        }
        d
    }

    fn run(&mut self, end: Timestamp, edits: Vec<(Duration, Ev)>) {
        for (after, ev) in edits {
            self.at(after, ev);
        }
        let mut b_due = true;
        while self.now < end {
            let now = self.now;
            let da = self.a.decide(now);
            let db = b_due.then(|| self.decide_b());
            if let Some(db) = &db {
                self.b_decisions += 1;
                assert_eq!(
                    norm(&self.a, &da),
                    norm(&self.b, db),
                    "at {now}: the full and the scoped decisions differ"
                );
            } else {
                // B sleeps: nothing may be due for anyone
                self.a_only += 1;
                assert!(
                    da.actions.is_empty(),
                    "at {now}: B sleeps (queue {:?}) but A decides {:#?}",
                    self.dirty.next_wake(),
                    da.actions
                );
            }
            let pa = self.a.apply(&da, now);
            if let Some(db) = &db {
                let pb = self.b.apply(db, now);
                assert_eq!(pa.placed.len(), pb.placed.len());
            }
            for (key, _) in &pa.placed {
                self.script_call(key);
            }
            for id in &pa.hung_up {
                if let Ok(Some(run)) = self.a.ledger.run(id)
                    && let Some(call) = run.call_id.clone()
                {
                    self.at(
                        Duration::from_secs(2),
                        Ev::Notify(run.key(), call, "terminated"),
                    );
                }
            }
            // the next time: A's wake-up, B's, or an event
            let next_event = self.events.keys().next().map(|k| k.0);
            let next = [da.wake_at, self.dirty.next_wake(), next_event, Some(end)]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .min()
                .unwrap();
            self.now = next;
            let mut delivered = false;
            while let Some(entry) = self.events.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let ev = entry.remove();
                self.deliver(ev);
                delivered = true;
            }
            b_due = delivered || self.dirty.pending(self.now);
        }
    }
}

fn edits(seed: u64) -> Vec<(Duration, Ev)> {
    let mut rng = seed | 1;
    let mut next = |n: u64| {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
    };
    let mut out = Vec::new();
    for _ in 0..12 {
        let at = Duration::from_secs(next(36 * 3600));
        let i = next(5) as usize;
        let ev = match next(7) {
            0 => Ev::Edit(Edit::Suspend(i, true)),
            1 => Ev::Edit(Edit::Suspend(i, false)),
            2 => Ev::Edit(Edit::Hold(i, next(2) == 0)),
            3 => Ev::Edit(Edit::Remove(i)),
            4 => Ev::Edit(Edit::Restore(i)),
            5 => Ev::Edit(Edit::Reschedule(i)),
            _ => Ev::Restart,
        };
        out.push((at, ev));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn scoped_decisions_equal_full_decisions(seed in any::<u64>()) {
        let start = ts("2026-03-23T00:00:00Z");
        let mut sim = Dual::new(seed, start);
        sim.run(plus(start, Duration::from_secs(36 * 3600)), edits(seed));
        prop_assert!(sim.b_decisions > 0);
    }
}

#[test]
fn a_quiet_day_is_decided_spec_by_spec() {
    let start = ts("2026-03-23T00:00:00Z");
    let mut sim = Dual::new(7, start);
    sim.run(plus(start, Duration::from_secs(24 * 3600)), Vec::new());
    // B decided only what was due or touched, one or two specs at a time
    let per = sim.scoped_specs as f64 / sim.b_decisions as f64;
    assert!(per < 5.0, "{per} specs per decision");
}
