//! Issue 13, must-show 3: a replica cut off from the database (its
//! connection through a proxy that drops every connection and refuses new
//! ones) stops placing and its `/readyz` is not 200; once the database is
//! back it resumes; nothing is placed twice.

use std::time::Duration;

use crate::replicas_support::*;
use jiff::SignedDuration;

#[test]
fn a_replica_cut_off_from_the_database_stops_placing_and_resumes() {
    let Some(mut c) = Cluster::new(
        "a_replica_cut_off_from_the_database_stops_placing_and_resumes",
        Opts {
            replicas: 2,
            ..Opts::default()
        },
    ) else {
        return;
    };

    // Phase 1, r0 alone: cut, then a spec falls due. Nothing may be placed
    // while r0 cannot claim; /readyz says so.
    c.start(0);
    c.wait_ready(0);
    c.cut_db(0);
    c.wait_until("r0's /readyz not 200 while the database is cut", || {
        matches!(c.r(0).readyz(), Some(s) if s != 200).then_some(())
    });
    let at = at_in(1_500);
    c.write_spec_same("cut-alone", &spec_yaml("cut-alone", Some(at)));
    sleep_until(at + SignedDuration::from_secs(3));
    assert!(
        c.creates_for("cut-alone").is_empty(),
        "placed without the database:\n{}",
        c.r(0).log_tail(60)
    );
    assert_ne!(c.r(0).readyz(), Some(200));
    assert_eq!(
        c.r(0).metric("calld_ledger_up", ""),
        Some(0.0),
        "calld_ledger_up while cut"
    );
    assert!(c.replicas[0].running(), "r0 must ride out the outage");

    c.restore_db(0);
    c.wait_ready(0);
    let run = c.wait_finished("cut-alone", 1);
    assert_eq!(run.len(), 1);
    assert_eq!(c.creates_for("cut-alone").len(), 1);
    assert_eq!(c.r(0).metric("calld_ledger_up", ""), Some(1.0));

    // Phase 2, two replicas: r0 is cut while runs fall due (some may have
    // been claimed or be in flight on r0 at the cut); r1 places the rest;
    // r0 is restored. Every run is placed at most once, and every run that
    // did not end `unknown` exactly once.
    c.start(1);
    c.wait_ready(1);
    let first = at_in(2_000);
    let names: Vec<String> = (0..8).map(|k| format!("cut-{k}")).collect();
    let specs: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(k, n)| {
            let at = first + SignedDuration::from_millis(400 * k as i64);
            (n.clone(), spec_yaml(n, Some(at)))
        })
        .collect();
    c.write_specs_same(&specs);
    sleep_until(first + SignedDuration::from_millis(1_000));
    c.cut_db(0);
    std::thread::sleep(Duration::from_secs(4));
    c.restore_db(0);
    c.wait_ready(0);
    for n in &names {
        c.wait_finished(n, 1);
    }
    std::thread::sleep(Duration::from_secs(2));
    for n in &names {
        let runs = c.runs_of(n);
        assert_eq!(runs.len(), 1, "{n}: {runs:?}");
        let sent = c.creates_for(n).len();
        assert!(sent <= 1, "{n} sent {sent} times");
        if runs[0].outcome.as_deref() != Some("unknown") {
            assert_eq!(sent, 1, "{n}: {:?} but sent {sent} times", runs[0].outcome);
        }
        eprintln!("{n}: {:?} sent {sent}", runs[0].outcome);
    }
}
