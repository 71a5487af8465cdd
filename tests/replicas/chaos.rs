//! Issue 13, must-show 1: three replicas on one PostgreSQL ledger, each
//! watching its own copy of a calls directory with 60 `at` runs spread over
//! 30 s, Graph's notifications through a round-robin balancer. During those
//! 30 s a replica is killed -9 and restarted, or SIGSTOPped for longer than
//! its lease and resumed, every few seconds. Every run is placed exactly
//! once: only a run whose request was on the wire when its replica died or
//! stalled may end `unknown`, and that one is never sent again. Every run
//! ends with a recorded outcome. Lateness (create received − due) is
//! printed, not asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::replicas_support::*;
use jiff::{SignedDuration, Timestamp};

const RUNS: usize = 60;
const SPREAD_MS: i64 = 30_000;

#[test]
fn three_replicas_place_every_run_once_through_kills_and_stalls() {
    let Some(mut c) = Cluster::new(
        "three_replicas_place_every_run_once_through_kills_and_stalls",
        Opts::default(),
    ) else {
        return;
    };
    c.start_all();
    c.wait_all_ready();

    // 60 specs, one `at` each, 0.5 s apart, the first 4 s from now: every
    // copy gets the same files with the same mtime (one commit everywhere).
    let first = at_in(4_000);
    let step = SPREAD_MS / RUNS as i64;
    let mut due = BTreeMap::new();
    let specs: Vec<(String, String)> = (0..RUNS)
        .map(|k| {
            let name = format!("chaos-{k:02}");
            let at = first + SignedDuration::from_millis(step * k as i64);
            due.insert(name.clone(), at);
            (name.clone(), spec_yaml(&name, Some(at)))
        })
        .collect();
    c.write_specs_same(&specs);

    // Chaos: one replica disrupted at a time, in turn, every ~3 s, until
    // the last run is due: kill -9 then restart a second later, or SIGSTOP
    // for lease + 1.5 s (3.5 s > the 2 s lease) then SIGCONT.
    let end = first + SignedDuration::from_millis(SPREAD_MS);
    let mut disrupted: BTreeSet<String> = BTreeSet::new();
    let mut events = Vec::new();
    let mut k = 0usize;
    sleep_until(first + SignedDuration::from_millis(500));
    while Timestamp::now() < end {
        let i = k % c.replicas.len();
        disrupted.insert(c.r(i).id.clone());
        if k.is_multiple_of(2) {
            events.push(format!("{} kill -9 at {}", c.r(i).id, Timestamp::now()));
            c.kill9(i);
            std::thread::sleep(Duration::from_millis(1_000));
            c.start(i);
        } else {
            events.push(format!("{} SIGSTOP at {}", c.r(i).id, Timestamp::now()));
            c.sigstop(i);
            std::thread::sleep(Duration::from_millis(3_500));
            c.sigcont(i);
        }
        k += 1;
        std::thread::sleep(Duration::from_millis(1_500));
    }
    eprintln!("disruptions:\n  {}", events.join("\n  "));

    // Every run ends with a recorded outcome (a run reaped `unknown`
    // included).
    let runs = c.wait_until("every run finished in the shared ledger", || {
        let runs = c.runs();
        (runs.len() >= RUNS && runs.iter().all(|r| r.state == "finished")).then_some(runs)
    });
    // Let late duplicates (if any) arrive before counting.
    std::thread::sleep(Duration::from_secs(3));

    let per_run = c.creates_per_run();
    let per_subject = c.creates_per_subject();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut unknown = Vec::new();
    assert_eq!(runs.len(), RUNS, "one run per `at`: {runs:#?}");
    for r in &runs {
        let outcome = r.outcome.clone().unwrap_or_default();
        *outcomes.entry(outcome.clone()).or_default() += 1;
        let sent = per_run.get(&r.id).copied().unwrap_or(0);
        assert!(sent <= 1, "{} ({}) sent {sent} times", r.spec, r.id);
        if outcome == "unknown" {
            // Only a run in flight at a kill or a stall; never re-sent.
            let reason = r.reason.clone().unwrap_or_default();
            // "replica r1 stopped while the request was in flight" (reaped
            // by another replica), or the restarted replica's own recovery.
            assert!(
                disrupted.iter().any(|id| reason.contains(id.as_str()))
                    || reason.contains("in flight"),
                "{}: unknown, but not for a disrupted replica: {reason}",
                r.spec
            );
            unknown.push(r.spec.clone());
        } else {
            assert_eq!(
                sent, 1,
                "{} ({}) ended {outcome} sent {sent} times",
                r.spec, r.id
            );
            assert_ne!(outcome, "missed", "{}: missed", r.spec);
        }
    }
    for (subj, n) in &per_subject {
        assert_eq!(*n, 1, "{subj}: {n} creates");
    }
    assert!(
        unknown.len() <= events.len(),
        "more unknown runs ({unknown:?}) than disruptions ({events:?})"
    );

    // Lateness: first create received − due.
    let mut late: Vec<f64> = c
        .creates()
        .iter()
        .filter_map(|r| {
            let d = due.get(&subject(r)?)?;
            Some(received_at(r).duration_since(*d).as_secs_f64() * 1e3)
        })
        .collect();
    let n = late.len();
    let p50 = percentile(&mut late, 50.0);
    let p99 = percentile(&mut late, 99.0);
    let max = percentile(&mut late, 100.0);
    eprintln!(
        "chaos: {RUNS} runs, {n} placed, outcomes {outcomes:?}, unknown {unknown:?}; \
         lateness ms p50 {p50:.0} p99 {p99:.0} max {max:.0}; balancer served {:?}",
        c.lb.served()
    );
}
