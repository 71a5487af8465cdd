//! Issue 13, must-show 2: a run claimed by a replica that then stalls past
//! its lease (SIGSTOP right after the claim committed, before `requesting`:
//! the daemon's test hook `CALLD_TEST_STOP_AFTER_CLAIM=<spec>`) is placed by
//! another replica; when the stalled one resumes (SIGCONT) it sends nothing
//! for that run: its claim is fenced (the token no longer matches, its
//! lease has expired by its own monotonic clock and by the database's).

use std::time::Duration;

use crate::replicas_support::*;

#[test]
fn a_stalled_claimer_is_fenced_and_another_replica_places_the_run() {
    let Some(mut c) = Cluster::new(
        "a_stalled_claimer_is_fenced_and_another_replica_places_the_run",
        Opts {
            replicas: 2,
            ..Opts::default()
        },
    ) else {
        return;
    };
    // Both copies hold the spec (same mtime); only r0 runs at first, so r0
    // is the one that claims, and stops itself right after the claim.
    let at = at_in(3_000);
    c.write_spec_same("fence", &spec_yaml("fence", Some(at)));
    c.start_with(0, &[("CALLD_TEST_STOP_AFTER_CLAIM", "fence")]);
    c.wait_until("r0 stopped by the hook after its claim", || {
        c.r(0).stopped().then_some(())
    });
    c.lb.set_down(0, true); // a stalled pod fails its readiness probe
    let claimed = c.runs_of("fence");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].claim_owner.as_deref(), Some("r0"), "{claimed:?}");
    assert_eq!(claimed[0].state, "scheduled", "stopped before requesting");
    assert!(c.creates_for("fence").is_empty(), "r0 sent before stopping");

    // r1 starts, waits for r0's lease to expire, claims and places.
    c.start(1);
    let placed = c.wait_until("r1 places the run", || {
        let creates = c.creates_for("fence");
        (!creates.is_empty()).then_some(creates)
    });
    assert_eq!(placed.len(), 1);
    let run = c.wait_finished("fence", 1);
    assert_eq!(run.len(), 1, "one run: {run:?}");
    assert_eq!(run_id(&placed[0]).as_deref(), Some(run[0].id.as_str()));
    // (the store may clear the claim when the run finishes)
    assert_ne!(run[0].claim_owner.as_deref(), Some("r0"), "{run:?}");
    assert_ne!(run[0].outcome.as_deref(), Some("unknown"), "{run:?}");
    let before = run[0].clone();

    // r0 resumes: it must send nothing for that run. Give it three leases
    // and a few polls to do something wrong.
    c.sigcont(0);
    assert!(!c.r(0).stopped());
    std::thread::sleep(Duration::from_secs(7));
    assert!(c.replicas[0].running(), "r0 died:\n{}", c.r(0).log_tail(80));
    assert_eq!(
        c.creates_for("fence").len(),
        1,
        "the resumed replica re-sent a fenced run:\n{}",
        c.r(0).log_tail(80)
    );
    let after = c.runs_of("fence");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].outcome, before.outcome, "the outcome changed");
    assert_eq!(after[0].state, "finished");
    // Printed, not asserted: how r0 noticed (the token refused by the
    // database, or its own lease check first).
    eprintln!(
        "r0 after resuming: calld_fenced_requests_total {:?}, calld_claims_total {:?}",
        c.r(0).metric("calld_fenced_requests_total", ""),
        c.r(0).metric("calld_claims_total", ""),
    );
    assert_eq!(
        c.r(0).readyz(),
        Some(200),
        "r0 serves again after its stall"
    );
}
