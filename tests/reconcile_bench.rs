//! Cost of one decision (no assertion on time; prints figures).
//! `cargo test --release --test reconcile_bench -- --ignored --nocapture`

mod reconcile_support;

use std::time::Instant;

use reconcile_support::*;

#[test]
#[ignore = "benchmark: prints figures"]
fn one_decision_over_many_specs() {
    for n in [100usize, 1000, 5000] {
        let specs = (0..n)
            .map(|i| spec(&format!("s{i}"), Some(cron(&format!("{} * * * *", i % 60)))))
            .collect();
        let mut w = World::new(specs);
        let now = ts("2026-03-02T08:00:30Z");
        let d = w.decide(now);
        w.apply(&d, now);
        let snap = w.snapshot();
        let t = Instant::now();
        let snaps = 5;
        for _ in 0..snaps {
            std::hint::black_box(w.snapshot());
        }
        let snap_cost = t.elapsed() / snaps;
        let rounds = 20;
        let t = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(w.decide_on(&snap, now));
        }
        let per = t.elapsed() / rounds;
        // A week of downtime for all of them.
        let later = ts("2026-03-09T08:00:30Z");
        let t = Instant::now();
        let d = w.decide_on(&snap, later);
        let catch_up = t.elapsed();
        println!(
            "{n} specs, {} open runs: decision {per:?}, snapshot from the in-memory ledger \
             {snap_cost:?}; after a week of downtime {catch_up:?} ({} actions)",
            snap.runs.len(),
            d.actions.len()
        );
    }
}
