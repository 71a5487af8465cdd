//! Ledger throughput on this disk, with the production settings (WAL,
//! `synchronous=FULL`). Prints figures; asserts nothing about time.
//!
//! `cargo test --test ledger_bench -- --ignored --nocapture`
//! (`CALLD_LEDGER_BENCH_DIR` picks the directory, default: the system temp dir).

use std::time::Instant;

use calld::ledger::{
    AttemptResult, CallState, CallStateUpdate, Disposition, Finish, Ledger, NewRun, Outcome,
    RunKey, SqliteLedger,
};
use jiff::Timestamp;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn new_run(spec: &str, i: i64) -> NewRun {
    NewRun {
        key: RunKey::at(spec, t(i * 60)),
        revision: "rev".into(),
        due: t(i * 60),
        tenant_id: Some("tenant".into()),
    }
}

fn per_second(n: usize, since: Instant) -> f64 {
    n as f64 / since.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn ledger_throughput() {
    let base = std::env::var_os("CALLD_LEDGER_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut l = SqliteLedger::open_in(dir.path(), t(0)).unwrap();
    println!("ledger at {}", l.path().display());

    // What the daemon does before each create request leaves.
    const N: usize = 1000;
    let start = Instant::now();
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        let id = l
            .insert_run(&new_run("bench", i as i64), t(0))
            .unwrap()
            .run
            .id;
        l.mark_requesting(&id, Some("crid"), t(1)).unwrap();
        ids.push(id);
    }
    let rate = per_second(N, start);
    println!(
        "insert + mark_requesting: {rate:.0} runs/s ({:.0} durable commits/s, {:.2} ms per run)",
        rate * 2.0,
        1000.0 / rate
    );

    // The rest of a successful run's life: 201, three notifications, finish.
    let start = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        l.finish_attempt(id, 1, &AttemptResult::new(Disposition::Placed), t(2))
            .unwrap();
        let call = format!("call-{i}");
        l.mark_placed(id, &call, t(2)).unwrap();
        for state in [
            CallState::Establishing,
            CallState::Established,
            CallState::Terminated,
        ] {
            let update = CallStateUpdate {
                state,
                call_id: Some(call.clone()),
                result_info: None,
            };
            l.record_call_state(id, &update, t(3)).unwrap();
        }
        l.finish(id, &Finish::new(Outcome::Completed), t(4))
            .unwrap();
    }
    println!(
        "placed + 3 notifications + finish (6 commits): {:.0} runs/s",
        per_second(N, start)
    );

    // Reads, on a ledger of N runs plus 10,000 scheduled ones in 100 other
    // specs (written in one raw transaction: 10,000 durable commits would
    // take a minute here).
    let path = l.path().to_path_buf();
    drop(l);
    {
        let mut raw = rusqlite::Connection::open(&path).unwrap();
        let tx = raw.transaction().unwrap();
        for i in 0..10_000i64 {
            let at = t(i * 60);
            tx.execute(
                "INSERT INTO runs (id, spec, slot, revision, scheduled_at, due_at, state, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, 'rev', ?4, ?4, 'scheduled', 0, 0)",
                rusqlite::params![
                    format!("filler{i}"),
                    format!("spec-{}", i % 100),
                    format!("at:{at}"),
                    at.as_microsecond()
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let l = SqliteLedger::open(&path, t(5)).unwrap();
    let start = Instant::now();
    let reps = 100;
    for _ in 0..reps {
        assert_eq!(l.history("bench", 50).unwrap().len(), 50);
    }
    println!(
        "history(limit 50) with attempts and states: {:.2} ms",
        start.elapsed().as_secs_f64() * 1000.0 / reps as f64
    );
    let start = Instant::now();
    let open = l.open_runs().unwrap().len();
    println!(
        "open_runs ({open} runs): {:.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let start = Instant::now();
    let latest = l.latest_runs().unwrap().len();
    println!(
        "latest_runs ({latest} specs of 101): {:.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let start = Instant::now();
    l.check_integrity().unwrap();
    println!(
        "quick_check on {} bytes: {:.1} ms",
        std::fs::metadata(l.path()).unwrap().len(),
        start.elapsed().as_secs_f64() * 1000.0
    );
}
