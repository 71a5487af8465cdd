//! Issue 13 benchmark: three replicas on one PostgreSQL ledger. Prints
//! figures, asserts only that every run was placed once. Run with
//!
//!   cargo test --release --test replicas_bench -- --ignored --nocapture --test-threads 1
//!
//! - placements per second across the replicas: 1,000 `at` runs due in the
//!   same second, then 1,000 spread over 10 s;
//! - lateness after a replica is killed -9: p99 for the runs it had not
//!   claimed, and for the runs it had claimed but not sent (those wait for
//!   its lease to expire);
//! - the database load of three idle replicas: transactions per second
//!   (`pg_stat_database.xact_commit` deltas of the test database over
//!   30 s; statements per second from `pg_stat_statements` when that
//!   extension is installed). Other clients of the same database count too:
//!   run it alone.

mod replicas_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use replicas_support::*;

fn opts() -> Opts {
    Opts {
        replicas: 3,
        lease: "2s".into(),
        poll: "200ms".into(),
        // answered at once, short calls: the bench measures placing
        emulator: "calls: { answerAfter: 10ms, length: 50ms }\n".into(),
        db_proxies: false,
        rust_log: "calld=warn".into(),
        // CALLD_BENCH_CONCURRENCY=N: graph.maxConcurrentRequests per replica
        graph_extra: std::env::var("CALLD_BENCH_CONCURRENCY")
            .map(|n| format!("  maxConcurrentRequests: {n}\n"))
            .unwrap_or_default(),
        ..Opts::default()
    }
}

/// Writes `n` specs named `<prefix>-NNNN` due at `at(k)`; their due times.
fn write_batch(
    c: &Cluster,
    prefix: &str,
    n: usize,
    at: impl Fn(usize) -> Timestamp,
) -> BTreeMap<String, Timestamp> {
    let mut due = BTreeMap::new();
    let specs: Vec<(String, String)> = (0..n)
        .map(|k| {
            let name = format!("{prefix}-{k:04}");
            due.insert(name.clone(), at(k));
            (name.clone(), spec_yaml(&name, Some(at(k))))
        })
        .collect();
    c.write_specs_same(&specs);
    due
}

/// Waits until every spec of `due` has a finished run; the lateness (ms)
/// of each create, by spec.
fn settle(c: &Cluster, due: &BTreeMap<String, Timestamp>) -> BTreeMap<String, f64> {
    c.wait_until("every run finished", || {
        let runs = c.runs();
        let done = runs
            .iter()
            .filter(|r| due.contains_key(&r.spec) && r.state == "finished")
            .count();
        (done >= due.len()).then_some(())
    });
    let mut late = BTreeMap::new();
    let mut dup = 0;
    for r in c.creates() {
        let Some(s) = subject(&r) else { continue };
        let Some(d) = due.get(&s) else { continue };
        let ms = received_at(&r).duration_since(*d).as_secs_f64() * 1e3;
        if late.insert(s, ms).is_some() {
            dup += 1;
        }
    }
    assert_eq!(dup, 0, "runs placed twice");
    late
}

fn print_lateness(what: &str, mut xs: Vec<f64>) {
    let n = xs.len();
    eprintln!(
        "{what}: n {n}, lateness ms p50 {:.0} p99 {:.0} max {:.0}",
        percentile(&mut xs, 50.0),
        percentile(&mut xs, 99.0),
        percentile(&mut xs, 100.0)
    );
}

#[test]
#[ignore]
fn placements_per_second_across_three_replicas() {
    let Some(mut c) = Cluster::new("placements_per_second_across_three_replicas", opts()) else {
        return;
    };
    c.start_all();
    c.wait_all_ready();

    // 1,000 due in one second, 15 s from now (time to load 3 x 1,000 files).
    let t = at_in(15_000);
    let due = write_batch(&c, "burst", 1000, |_| t);
    let late = settle(&c, &due);
    let times: Vec<Timestamp> = c
        .creates()
        .iter()
        .filter(|r| subject(r).is_some_and(|s| s.starts_with("burst-")))
        .map(received_at)
        .collect();
    let first = times.iter().min().unwrap();
    let last = times.iter().max().unwrap();
    let span = last.duration_since(*first).as_secs_f64().max(1e-3);
    eprintln!(
        "burst: {} placed in {span:.2} s from the first to the last create: {:.0} placements/s",
        times.len(),
        times.len() as f64 / span
    );
    print_lateness("burst", late.into_values().collect());

    // 1,000 spread over 10 s.
    let t0 = at_in(10_000);
    let due = write_batch(&c, "spread", 1000, |k| {
        t0 + SignedDuration::from_millis(10 * k as i64)
    });
    let late = settle(&c, &due);
    print_lateness("spread (100/s)", late.into_values().collect());
}

#[test]
#[ignore]
fn lateness_after_a_replica_is_killed() {
    let Some(mut c) = Cluster::new("lateness_after_a_replica_is_killed", opts()) else {
        return;
    };
    c.start_all();
    c.wait_all_ready();

    // 300 runs over 15 s; r0 is killed -9 at 7.5 s.
    let t0 = at_in(8_000);
    let due = write_batch(&c, "kill", 300, |k| {
        t0 + SignedDuration::from_millis(50 * k as i64)
    });
    sleep_until(t0 + SignedDuration::from_millis(7_500));
    // The runs r0 holds a claim on right now, not yet sent.
    let held_before: Vec<String> = c
        .sql("SELECT spec FROM runs WHERE claim_owner = 'r0' AND state = 'scheduled'")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let killed_at = Timestamp::now();
    c.kill9(0);
    let late = settle(&c, &due);
    let mut claimed = Vec::new();
    let mut unclaimed_after = Vec::new();
    for (spec, ms) in &late {
        if held_before.contains(spec) {
            claimed.push(*ms);
        } else if due[spec] >= killed_at {
            unclaimed_after.push(*ms);
        }
    }
    let unknown = c
        .runs()
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("unknown"))
        .count();
    eprintln!(
        "kill: r0 killed at {killed_at}, held {} claims; {unknown} runs ended unknown",
        held_before.len()
    );
    print_lateness("after the kill, runs r0 had not claimed", unclaimed_after);
    print_lateness("runs r0 had claimed but not sent", claimed);
}

#[test]
#[ignore]
fn idle_database_load_of_three_replicas() {
    let Some(mut c) = Cluster::new("idle_database_load_of_three_replicas", opts()) else {
        return;
    };
    // Some specs, nothing due for an hour: the replicas only poll, renew
    // nothing, listen.
    let t = at_in(3_600_000);
    write_batch(&c, "idle", 100, |k| t + SignedDuration::from_secs(k as i64));
    c.start_all();
    c.wait_all_ready();
    std::thread::sleep(Duration::from_secs(3));

    let db: String = c.sql("SELECT current_database()")[0].get(0);
    let commits = |c: &Cluster| -> i64 {
        c.sql(&format!(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{db}'"
        ))[0]
            .get(0)
    };
    let statements = |c: &Cluster| -> Option<i64> {
        let rows = c.try_sql("SELECT sum(calls)::bigint FROM pg_stat_statements")?;
        rows.first().and_then(|r| r.get(0))
    };
    // pg_stat_database is updated by each backend at most every ~500 ms
    // (PGSTAT_MIN_INTERVAL) or at idle: measure over 30 s.
    let _ = c.try_sql("SELECT pg_stat_clear_snapshot()");
    let (x0, s0, i0) = (commits(&c), statements(&c), Instant::now());
    std::thread::sleep(Duration::from_secs(30));
    let _ = c.try_sql("SELECT pg_stat_clear_snapshot()");
    let (x1, s1, secs) = (commits(&c), statements(&c), i0.elapsed().as_secs_f64());
    eprintln!(
        "idle: 3 replicas, poll {}: {:.1} transactions/s on database {db} (all clients)",
        c.opts.poll,
        (x1 - x0) as f64 / secs
    );
    match (s0, s1) {
        (Some(a), Some(b)) => eprintln!("idle: {:.1} statements/s", (b - a) as f64 / secs),
        _ => eprintln!("idle: pg_stat_statements not installed; statements not counted"),
    }
}
