//! A simulator around `calld::reconcile`: a real (in-memory) ledger, a
//! scripted Graph that answers, rings, fails and loses calls, a clock that
//! jumps to each `wake_at` or event, downtime windows, and spec edits. Every
//! invariant is checked at every step.

mod reconcile_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use calld::ledger::{Disposition, Ledger, Outcome, RunKey, RunState, Slot};
use calld::reconcile::{Action, Decision};
use calld::schedule::{Concurrency, Schedule};
use jiff::Timestamp;
use proptest::prelude::*;
use reconcile_support::*;

/// What the scripted Graph does with one create request.
#[derive(Debug, Clone)]
enum Event {
    Answer {
        id: String,
        disposition: Disposition,
        call: String,
    },
    Notify {
        id: String,
        call: String,
        state: &'static str,
    },
}

/// A spec edit at a point in time.
#[derive(Debug, Clone)]
enum Edit {
    Suspend(usize, bool),
    Hold(usize, bool),
    Remove(usize),
    Restore(usize),
    Reschedule(usize, &'static str),
}

struct Sim {
    w: World,
    now: Timestamp,
    events: BTreeMap<(Timestamp, u64), Event>,
    seq: u64,
    rng: u64,
    /// Keys that may be placed again (a retry was decided since).
    retried: HashSet<RunKey>,
    placed_ever: HashMap<RunKey, u32>,
    /// Per spec, the latest slot placed as a first try.
    last_first_try: BTreeMap<String, Timestamp>,
    /// Specs as written, to restore after a removal or hold.
    originals: Vec<calld::spec::Spec>,
    steps: u64,
    placements: u64,
}

impl Sim {
    fn new(specs: Vec<calld::spec::Spec>, start: Timestamp, seed: u64) -> Sim {
        Sim {
            w: World::new(specs.clone()),
            now: start,
            events: BTreeMap::new(),
            seq: 0,
            rng: seed | 1,
            retried: HashSet::new(),
            placed_ever: HashMap::new(),
            last_first_try: BTreeMap::new(),
            originals: specs,
            steps: 0,
            placements: 0,
        }
    }

    fn rand(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
    }

    fn at(&mut self, after: Duration, event: Event) {
        self.seq += 1;
        self.events.insert((plus(self.now, after), self.seq), event);
    }

    fn script_call(&mut self, id: &str) {
        let call = format!("call-{}", self.seq);
        let secs = Duration::from_secs;
        let roll = self.rand(100);
        let len = secs(60 * (1 + self.rand(50)));
        let answer = |disposition| Event::Answer {
            id: id.to_string(),
            disposition,
            call: call.clone(),
        };
        let notify = |state| Event::Notify {
            id: id.to_string(),
            call: call.clone(),
            state,
        };
        match roll {
            0..55 => {
                self.at(secs(1), answer(Disposition::Placed));
                self.at(secs(2), notify("establishing"));
                self.at(secs(5), notify("established"));
                self.at(secs(5) + len, notify("terminated"));
            }
            55..65 => {
                self.at(secs(1), answer(Disposition::Placed));
                self.at(secs(2), notify("establishing"));
                self.at(secs(32), notify("terminated"));
            }
            65..77 => self.at(secs(1), answer(Disposition::Failed)),
            77..82 => self.at(secs(1), answer(Disposition::Rejected)),
            82..87 => self.at(secs(1), answer(Disposition::Placed)),
            87..90 => self.at(secs(1), answer(Disposition::Unknown)),
            _ => {
                self.at(secs(1), answer(Disposition::Placed));
                self.at(secs(5), notify("established"));
                self.at(len, notify("terminating"));
            }
        }
    }

    fn deliver(&mut self, event: Event) {
        let now = self.now;
        // A real daemon ignores what no longer fits the run (the ledger
        // refuses it); so does the simulator.
        match event {
            Event::Answer {
                id,
                disposition,
                call,
            } => {
                let Ok(Some(run)) = self.w.ledger.run(&id) else {
                    return;
                };
                if run.state != RunState::Requesting {
                    return;
                }
                if disposition == Disposition::Placed {
                    self.w.answer_placed(&id, &call, now);
                } else {
                    self.w.answer(&id, disposition, now);
                }
            }
            Event::Notify { id, call, state } => {
                let Ok(Some(run)) = self.w.ledger.run(&id) else {
                    return;
                };
                if run.state == RunState::Finished && run.outcome != Some(Outcome::Unknown) {
                    return;
                }
                self.w.notify(&id, &call, state, now);
            }
        }
    }

    fn edit(&mut self, edit: &Edit) {
        let name = |i: usize| self.originals[i].name.clone();
        match *edit {
            Edit::Suspend(i, on) => {
                if let Some(s) = self.w.specs.get_mut(&name(i)).map(std::sync::Arc::make_mut) {
                    s.suspend = on;
                }
            }
            Edit::Hold(i, on) => {
                if on {
                    if self.w.specs.remove(&name(i)).is_some() {
                        self.w.held.insert(name(i));
                    }
                } else if self.w.held.remove(&name(i)) {
                    self.w
                        .specs
                        .insert(name(i), std::sync::Arc::new(self.originals[i].clone()));
                }
            }
            Edit::Remove(i) => {
                self.w.specs.remove(&name(i));
                self.w.held.remove(&name(i));
            }
            Edit::Restore(i) => {
                if !self.w.held.contains(&name(i)) {
                    self.w
                        .specs
                        .insert(name(i), std::sync::Arc::new(self.originals[i].clone()));
                }
            }
            Edit::Reschedule(i, expr) => {
                if let Some(s) = self.w.specs.get_mut(&name(i)).map(std::sync::Arc::make_mut)
                    && let Some(old) = &s.schedule
                {
                    let mut sched = cron(expr);
                    sched.concurrency = old.concurrency;
                    sched.jitter = old.jitter;
                    s.schedule = Some(sched);
                    s.revision = format!("rev-{}-{expr}", s.name);
                }
            }
        }
    }

    /// One decision at `self.now`, checked, applied, checked again.
    fn step(&mut self, after_restart: bool) -> Decision {
        self.steps += 1;
        let now = self.now;
        let snap = self.w.snapshot();
        let d = self.w.decide_on(&snap, now);
        check_decision(&self.w, &snap, &d, now);

        if after_restart {
            // After downtime at most one first try per spec is placed.
            let mut per_spec: BTreeMap<&str, u32> = BTreeMap::new();
            for key in places(&d) {
                let first_try = snap
                    .runs
                    .iter()
                    .find(|r| r.key() == *key)
                    .is_none_or(|r| snap.progress.get(&r.id).is_none_or(|p| p.tries == 0));
                if first_try {
                    *per_spec.entry(&key.spec).or_default() += 1;
                }
            }
            assert!(
                per_spec.values().all(|n| *n <= 1),
                "after downtime: {per_spec:?}"
            );
        }

        let applied = self.w.apply(&d, now);
        for key in &applied.retried {
            self.retried.insert(key.clone());
        }
        for (key, id) in &applied.placed {
            let n = self.placed_ever.entry(key.clone()).or_default();
            assert!(
                *n == 0 || self.retried.remove(key),
                "{key:?} placed twice without a retry in between"
            );
            let first = *n == 0;
            *n += 1;
            if let (true, Slot::At(t)) = (first, &key.slot)
                && let Some(prev) = self.last_first_try.insert(key.spec.clone(), *t)
            {
                assert!(*t > prev, "{}: {t} placed after {prev}", key.spec);
            }
            self.placements += 1;
            self.script_call(id);
        }
        for id in &applied.hung_up {
            if let Ok(Some(run)) = self.w.ledger.run(id)
                && let Some(call) = run.call_id
            {
                self.at(
                    Duration::from_secs(2),
                    Event::Notify {
                        id: id.clone(),
                        call,
                        state: "terminated",
                    },
                );
            }
        }

        // Applied, the decision is a fixpoint.
        let after = self.w.snapshot();
        let again = self.w.decide_on(&after, now);
        assert!(
            again.actions.is_empty(),
            "at {now}, after {:#?}\nagain: {:#?}",
            d.actions,
            again.actions
        );

        // Nothing due is left waiting, and the wake-up is not after any due time.
        for run in after.runs.iter().filter(|r| r.state == RunState::Scheduled) {
            let Some(spec) = self.w.specs.get(&run.spec) else {
                continue;
            };
            if self.w.held.contains(&run.spec) {
                continue;
            }
            let replace = spec
                .schedule
                .as_ref()
                .is_some_and(|s| s.concurrency == Concurrency::Replace);
            if run.due_at <= now {
                assert!(
                    replace,
                    "{:?} is due at {} and still waits at {now}",
                    run.key(),
                    run.due_at
                );
            } else {
                assert!(
                    d.wake_at.is_some_and(|w| w <= run.due_at),
                    "wake_at {:?} is after {:?} due at {}",
                    d.wake_at,
                    run.key(),
                    run.due_at
                );
            }
        }
        d
    }

    /// Runs until `end`; `down` are downtime windows, `edits` spec changes.
    fn run(
        &mut self,
        end: Timestamp,
        down: &[(Timestamp, Timestamp)],
        edits: &[(Timestamp, Edit)],
    ) {
        let mut edits: Vec<(Timestamp, Edit)> = edits.to_vec();
        edits.sort_by_key(|e| e.0);
        let mut edits = edits.into_iter().peekable();
        let mut restarted = false;
        let mut wake = None;
        while self.now < end {
            while let Some((_, e)) = edits.next_if(|(t, _)| *t <= self.now) {
                self.edit(&e);
            }
            let d = self.step(restarted);
            restarted = false;
            wake = d.wake_at.or(wake.filter(|w: &Timestamp| *w > self.now));
            let next_event = self.events.keys().next().map(|k| k.0);
            let next_edit = edits.peek().map(|e| e.0);
            let next = [wake, next_event, next_edit, Some(end)]
                .into_iter()
                .flatten()
                .filter(|t| *t > self.now)
                .min()
                .unwrap();
            self.now = next;
            if let Some(&(from, to)) = down.iter().find(|(from, to)| *from <= next && next < *to) {
                // Down: everything Graph sent meanwhile is lost; edits still
                // happen to the directory.
                let _ = from;
                self.now = to;
                self.events = self.events.split_off(&(to, 0));
                while let Some((_, e)) = edits.next_if(|(t, _)| *t <= to) {
                    self.edit(&e);
                }
                self.w.restart(to);
                restarted = true;
                wake = None;
                continue;
            }
            while let Some(entry) = self.events.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let event = entry.remove();
                self.deliver(event);
            }
        }
    }
}

/// Invariants of one decision against the state it was made on.
fn check_decision(w: &World, snap: &Snapshot, d: &Decision, now: Timestamp) {
    if let Some(wake) = d.wake_at {
        assert!(wake > now, "wake_at {wake} not after now {now}");
    }
    let mut inserted: HashMap<&RunKey, Timestamp> = HashMap::new();
    let mut seen = HashSet::new();
    let mut last_due = Timestamp::MIN;
    for a in &d.actions {
        match a {
            Action::Insert { run } => {
                assert!(
                    !snap.runs.iter().any(|r| r.key() == run.key),
                    "re-insert of {:?}",
                    run.key
                );
                inserted.insert(&run.key, run.due);
            }
            Action::Place { id, key } => {
                assert!(seen.insert(key), "{key:?} placed twice in one decision");
                let due = match id {
                    Some(id) => {
                        let run = snap
                            .runs
                            .iter()
                            .find(|r| &r.id == id)
                            .expect("placed run is open");
                        assert_eq!(
                            run.state,
                            RunState::Scheduled,
                            "{key:?} placed while {}",
                            run.state
                        );
                        run.due_at
                    }
                    None => *inserted.get(key).expect("placed run inserted first"),
                };
                assert!(due <= now, "{key:?} placed before it is due");
                assert!(due >= last_due, "places not in time order");
                last_due = due;
                let spec = w.specs.get(&key.spec).expect("placed spec exists");
                assert!(!spec.suspend, "{key:?} placed while suspended");
                assert!(!w.held.contains(&key.spec), "{key:?} placed while held");
            }
            Action::Finish { key, outcome, .. } if w.held.contains(&key.spec) => {
                let run = snap.runs.iter().find(|r| &r.key() == key).unwrap();
                assert_ne!(
                    run.state,
                    RunState::Scheduled,
                    "held {key:?} finished {outcome}"
                );
            }
            _ => {}
        }
    }
}

fn three_specs() -> Vec<calld::spec::Spec> {
    let mut quarter = spec("quarter", Some(cron("*/15 * * * *")));
    quarter.retry.attempts = 1;
    quarter.retry.interval = mins(2);
    let mut morning = cron("0 9 * * Mon-Fri");
    morning = Schedule {
        timezone: jiff::tz::TimeZone::get("Europe/Berlin").unwrap(),
        timezone_name: "Europe/Berlin".into(),
        ..morning
    };
    morning.jitter = Some(mins(2));
    morning.concurrency = Concurrency::Replace;
    let mut standup = spec("standup", Some(morning));
    standup.hangup_after = Some(mins(30));
    let five = spec(
        "five",
        Some(with_concurrency(
            cron("5-55/25 * * * *"),
            Concurrency::Allow,
        )),
    );
    vec![quarter, standup, five]
}

#[test]
fn three_cron_specs_for_a_simulated_week_with_downtime() {
    let start = ts("2026-03-23T00:00:00Z");
    let end = ts("2026-03-30T00:00:00Z");
    let mut sim = Sim::new(three_specs(), start, 42);
    // Every skipped-over slot recorded, so that every slot can be counted.
    sim.w.settings.max_missed_records = 10_000;
    let down = [
        (ts("2026-03-25T10:07:00Z"), ts("2026-03-26T18:02:30Z")),
        (ts("2026-03-27T08:01:00Z"), ts("2026-03-27T08:13:00Z")),
    ];
    sim.run(end, &down, &[]);

    // Every slot of every spec has exactly one run (all are inside the
    // missed-record bound here), placed at most once per try.
    for s in three_specs() {
        let sched = s.schedule.clone().unwrap();
        let expected: Vec<RunKey> = sched
            .runs_between(
                start
                    .checked_sub(jiff::SignedDuration::from_secs(1))
                    .unwrap(),
                end,
                100_000,
            )
            .into_iter()
            .map(|t| RunKey::at(&s.name, t))
            .collect();
        let got: Vec<RunKey> = sim
            .w
            .outcomes(&s.name)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| matches!(k.slot, Slot::At(t) if t <= end))
            .collect();
        assert_eq!(got.len(), expected.len(), "{}", s.name);
        assert_eq!(got, expected, "{}", s.name);
    }
    let history = sim.w.ledger.history("five", usize::MAX).unwrap();
    let missed = history
        .iter()
        .filter(|r| r.run.outcome == Some(Outcome::Missed))
        .count();
    // The long downtime is 31h55m: 3 slots an hour of `five`, all missed
    // but the last one if it is within its deadline.
    assert!(missed >= 94, "{missed}");
    let completed = history
        .iter()
        .filter(|r| r.run.outcome == Some(Outcome::Completed))
        .count();
    assert!(completed > 150, "{completed}");
    eprintln!("{} steps, {} placements", sim.steps, sim.placements);
}

fn edit_strategy() -> impl Strategy<Value = (u64, Edit)> {
    let spec = 0usize..3;
    (
        0u64..(24 * 60),
        prop_oneof![
            (spec.clone(), any::<bool>()).prop_map(|(i, b)| Edit::Suspend(i, b)),
            (spec.clone(), any::<bool>()).prop_map(|(i, b)| Edit::Hold(i, b)),
            spec.clone().prop_map(Edit::Remove),
            spec.clone().prop_map(Edit::Restore),
            (
                spec,
                prop_oneof![
                    Just("*/10 * * * *"),
                    Just("7 * * * *"),
                    Just("*/15 * * * *")
                ]
            )
                .prop_map(|(i, e)| Edit::Reschedule(i, e)),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    /// Random edits, downtime and Graph behaviour over a day: every
    /// invariant holds at every step.
    #[test]
    fn invariants_hold_under_random_edits_and_downtime(
        seed in any::<u64>(),
        edits in proptest::collection::vec(edit_strategy(), 0..12),
        down in proptest::collection::vec((0u64..(24 * 60), 1u64..600), 0..3),
    ) {
        let start = ts("2026-03-27T00:00:00Z");
        let end = plus(start, mins(24 * 60));
        let mut specs = three_specs();
        specs.push({
            let mut s = spec("once", None);
            s.retry.attempts = 2;
            s
        });
        let mut sim = Sim::new(specs, start, seed);
        let edits: Vec<(Timestamp, Edit)> =
            edits.into_iter().map(|(m, e)| (plus(start, mins(m)), e)).collect();
        let mut down: Vec<(Timestamp, Timestamp)> = down
            .into_iter()
            .map(|(m, len)| (plus(start, mins(m)), plus(start, mins(m + len))))
            .collect();
        down.sort();
        // Overlapping windows merged.
        let mut merged: Vec<(Timestamp, Timestamp)> = Vec::new();
        for (a, b) in down {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        sim.run(end, &merged, &edits);
        prop_assert!(sim.steps > 0);
    }
}
