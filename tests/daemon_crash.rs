//! Crash safety of `calld run`, end to end: 200 due runs, the daemon killed
//! with SIGKILL at random moments while it places them, restarted, again
//! and again. Graph (the emulator) must never see a run twice, every run
//! must end with a recorded outcome (`unknown` only for a run whose request
//! was in flight at a kill), and the ledger must open clean.
//!
//! The kill moments come from a seeded RNG; the seed is printed, and
//! `CALLD_TEST_SEED=<seed>` replays a run.

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use calld::ledger::{LEDGER_FILE, Ledger, RunState, SqliteLedger};
use daemon_support::*;
use rand::{Rng, SeedableRng};

const SPECS: usize = 200;
const KILLS: usize = 8;

#[test]
fn kill_9_while_placing_never_sends_a_run_twice() {
    let seed: u64 = std::env::var("CALLD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("daemon_crash seed: {seed} (CALLD_TEST_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // Slow enough answers that kills land while requests are in flight;
    // notifications retried long enough to reach the restarted daemon.
    let emu = Emu::start(
        "calls: { answerAfter: 50ms, length: 200ms }\n\
         faults: { latency: 150ms }\n\
         notifications: { attempts: 12, retryDelay: 100ms }\n",
    );
    let env = Env::new(&emu);
    for i in 0..SPECS {
        env.drop_spec(&format!("c{i:03}.yaml"), &call_spec(&format!("Crash {i}")));
    }

    let mut logs = Vec::new();
    for round in 0..KILLS {
        let mut d = env.start_with(&[], &[]);
        let after = Duration::from_millis(rng.random_range(100..1500));
        std::thread::sleep(after);
        let placed = emu.creates().len();
        println!("round {round}: SIGKILL after {after:?} ({placed} creates so far)");
        d.kill9();
        logs.push(d.log_text());
    }

    // The last start runs to the end.
    let mut last = env.start_with(&[], &[]);
    let ledger_path = env.state.join(LEDGER_FILE);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let latest = SqliteLedger::open_read_only(&ledger_path)
            .and_then(|l| l.latest_runs())
            .unwrap_or_default();
        let open: Vec<_> = latest
            .iter()
            .filter(|r| r.state != RunState::Finished)
            .collect();
        if latest.len() == SPECS && open.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let ids: Vec<_> = open.iter().map(|r| (&r.id, r.state)).collect();
            panic!(
                "not finished: {} runs of {}: {ids:?}\nlast log:\n{}",
                open.len(),
                latest.len(),
                last.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Notifications of runs recorded `unknown` may still reopen them: let
    // the emulator's deliveries settle before the final count.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(last.stop().code(), Some(0));
    logs.push(last.log_text());
    let all_logs = logs.join("\n");

    // A kill costs at most the requests in flight (graph.maxConcurrentRequests,
    // 16 by default): runs still waiting for a request slot stay `scheduled`
    // and are placed after the restart, not lost as `unknown`.
    for (i, log) in logs.iter().enumerate() {
        let recovered = log.matches("recorded as unknown (never re-sent)").count();
        assert!(
            recovered <= 16,
            "start {i} recovered {recovered} runs as unknown"
        );
    }

    // 1. Graph never saw a run twice.
    let creates = emu.creates();
    let per_run = creates_per_run(&creates);
    let twice: Vec<_> = per_run.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "runs sent more than once: {twice:?}");
    let subjects: BTreeSet<&str> = creates
        .iter()
        .map(|c| c.body["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects.len(), creates.len(), "one create per spec at most");

    // 2. Every run has an outcome; `unknown` only where a kill hit a
    //    request in flight (the restart logs it as recovered).
    let l = SqliteLedger::open_read_only(&ledger_path).unwrap();
    let latest = l.latest_runs().unwrap();
    assert_eq!(latest.len(), SPECS);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for r in &latest {
        assert_eq!(r.state, RunState::Finished, "{r:?}");
        let outcome = r.outcome.expect("a finished run has an outcome");
        *outcomes.entry(outcome.as_str().to_string()).or_default() += 1;
        match outcome.as_str() {
            "completed" => assert!(
                per_run.contains_key(&r.id),
                "completed without a create: {r:?}"
            ),
            "unknown" => assert!(
                all_logs.contains(&format!("run={} outcome=\"unknown\"", r.id))
                    || all_logs.contains(&format!("run={} outcome=unknown", r.id)),
                "run {} is unknown but no restart recovered it from a kill",
                r.id
            ),
            _ => {}
        }
        if outcome.as_str() == "unknown" {
            // Graph accepted none of them: a 201 would have sent
            // notifications, and a notification reopens an `unknown` run
            let c = creates
                .iter()
                .find(|c| run_id(c).as_deref() == Some(r.id.as_str()));
            assert!(
                c.is_none_or(|c| c.status != Some(201)),
                "run {} is unknown although Graph created its call",
                r.id
            );
        }
        match outcome.as_str() {
            "completed" | "unknown" => {}
            other => panic!(
                "unexpected outcome {other}: {:#?}\nlogs:\n{}",
                l.history(&r.spec, 10).unwrap(),
                all_logs
                    .lines()
                    .filter(|line| line.contains(&r.id)
                        || line.contains("SIGKILL")
                        || line.contains("watching"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
        // one run per spec: nothing was re-inserted under another key
        assert_eq!(l.history(&r.spec, 10).unwrap().len(), 1, "{}", r.spec);
    }
    println!("outcomes: {outcomes:?}, creates: {}", creates.len());
    if std::env::var_os("CALLD_TEST_DEBUG").is_some() {
        for r in latest
            .iter()
            .filter(|r| r.outcome.map(|o| o.as_str()) == Some("unknown"))
        {
            let rec = &l.history(&r.spec, 1).unwrap()[0];
            let c = creates
                .iter()
                .find(|c| run_id(c).as_deref() == Some(r.id.as_str()));
            println!(
                "unknown {}: states {:?}, create status {:?} at {:?}, attempts {:?}",
                r.id,
                rec.call_states
                    .iter()
                    .map(|s| s.state.to_string())
                    .collect::<Vec<_>>(),
                c.map(|c| c.status),
                c.map(|c| c.time.clone()),
                rec.attempts
                    .iter()
                    .map(|a| (a.started_at, a.disposition))
                    .collect::<Vec<_>>()
            );
        }
        let deliveries = emu.requests().len();
        println!("requests {deliveries}");
    }
    // every run that was sent once got its answer or was recovered
    for id in per_run.keys() {
        assert!(
            latest.iter().any(|r| &r.id == id),
            "create for unknown run {id}"
        );
    }
    drop(l);

    // 3. The ledger opens clean: integrity, and nothing left in flight by
    //    the graceful stop.
    let conn = rusqlite::Connection::open(&ledger_path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let reopened = SqliteLedger::open_in(&env.state, jiff::Timestamp::now()).unwrap();
    assert!(
        reopened.recovered().is_empty(),
        "{:?}",
        reopened.recovered()
    );
}
