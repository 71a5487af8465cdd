//! Throughput of the callback path end to end (issue 5: validate **and
//! record** ≥ 5,000 signed notifications/s with the ledger durable).
//!
//! ```sh
//! cargo test --release --test lifecycle_bench -- --ignored --nocapture
//! ```
//!
//! `daemon_notifications_per_second`: the real `calld` (live mode, in-process
//! emulator with `notifications: false`) places `CALLD_BENCH_RUNS` calls
//! (default 200); then a client sends `CALLD_BENCH_NOTIFICATIONS` (default
//! 20,000) signed notifications for them, 64 in flight, over keep-alive
//! connections. Prints notifications/s answered 202, notifications/s
//! recorded in the ledger (rows in `call_states`, polled read-only), and
//! the p50/p99 time to 202. A 503 (queue full) is retried after 5 ms, as
//! Graph would, and counted.
//!
//! `ledger_batch_versus_one_transaction_each`: the ledger alone, the same
//! notifications recorded one transaction each and in batches.

mod lifecycle_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use calld::ledger::{
    AttemptResult, CallState, CallStateUpdate, Disposition, Ledger, NewRun, RunKey, SqliteLedger,
    StateNotice,
};
use lifecycle_support::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn count(db: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the ledger read-only");
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn daemon_notifications_per_second() {
    let runs = env_usize("CALLD_BENCH_RUNS", 200);
    let total = env_usize("CALLD_BENCH_NOTIFICATIONS", 20_000);
    let emu = start_emulator("notifications: false\nmaxRecorded: 100000").await;
    let mut d = Daemon::new(&emu, None, "log: { level: warn }");
    // One file, many documents: one unscheduled spec (one run) each.
    let mut specs = String::new();
    for i in 0..runs {
        specs.push_str(&format!(
            "---\nname: bench-{i}\n{}",
            spec(&format!("+1425555{:04}", i % 10_000), "")
        ));
    }
    d.write_spec("bench", &specs);
    let db = d.state_dir().join("ledger.db");
    let t0 = Instant::now();
    d.start().await;
    let placed_sql = "SELECT COUNT(*) FROM runs WHERE state = 'placed'";
    loop {
        if db.exists() && count(&db, placed_sql) as usize == runs {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "runs not placed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{runs} runs placed in {:.2?}", t0.elapsed());
    let targets: Vec<(String, String)> = {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let mut stmt = conn.prepare("SELECT id, call_id FROM runs").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let base_rows = count(&db, "SELECT COUNT(*) FROM call_states");
    // Bodies made up front: the client measures the daemon, not itself.
    let url = d.callback_url();
    let bodies: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..total)
            .map(|i| {
                let (run, call) = &targets[i % targets.len()];
                let state = if (i / targets.len()).is_multiple_of(2) {
                    "establishing"
                } else {
                    "established"
                };
                (
                    format!("{url}?calldRun={run}"),
                    serde_json::to_vec(&notification(call, state, None)).unwrap(),
                )
            })
            .collect(),
    );
    let token = Arc::new(good_token());
    let http = http();
    let next = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    const IN_FLIGHT: usize = 64;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (bodies, token, http, next, retried) = (
            bodies.clone(),
            token.clone(),
            http.clone(),
            next.clone(),
            retried.clone(),
        );
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((url, body)) = bodies.get(i) else {
                    return lat;
                };
                let sent = Instant::now();
                loop {
                    let status = http
                        .post(url)
                        .bearer_auth(token.as_str())
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("the daemon answers")
                        .status()
                        .as_u16();
                    match status {
                        202 => break,
                        503 => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        other => panic!("notification answered {other}"),
                    }
                }
                lat.push(sent.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r.unwrap());
    }
    let accepted_in = start.elapsed();
    let want = base_rows + total as i64;
    let db2 = db.clone();
    let recorded_in = tokio::task::spawn_blocking(move || {
        loop {
            if count(&db2, "SELECT COUNT(*) FROM call_states") >= want {
                return start.elapsed();
            }
            assert!(start.elapsed() < Duration::from_secs(600), "not recorded");
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .unwrap();
    latencies.sort();
    let per_s = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "lifecycle_bench: {total} signed notifications for {runs} runs, {IN_FLIGHT} in flight, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  accepted (202): {:>8.0} /s  ({accepted_in:.2?})",
        per_s(accepted_in)
    );
    println!(
        "  recorded (ledger, durable): {:>8.0} /s  ({recorded_in:.2?} until the last row)",
        per_s(recorded_in)
    );
    println!(
        "  time to 202: p50 {:.2?}, p99 {:.2?}, max {:.2?}; 503 retries: {}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        retried.load(Ordering::Relaxed)
    );
    assert!(d.alive());
    d.stop();
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn ledger_batch_versus_one_transaction_each() {
    let n = env_usize("CALLD_BENCH_LEDGER_NOTIFICATIONS", 2_000);
    let dir = tempfile::tempdir().unwrap();
    let now = jiff::Timestamp::now();
    let mut l = SqliteLedger::open_in(dir.path(), now).unwrap();
    let mut ids = Vec::new();
    for i in 0..100 {
        let run = l
            .insert_run(
                &NewRun {
                    key: RunKey::revision(format!("s{i}"), "r"),
                    revision: "r".into(),
                    due: now,
                    tenant_id: None,
                },
                now,
            )
            .unwrap()
            .run;
        let a = l.mark_requesting(&run.id, None, now).unwrap();
        l.finish_attempt(&run.id, a, &AttemptResult::new(Disposition::Placed), now)
            .unwrap();
        l.mark_placed(&run.id, &format!("call-{i}"), now).unwrap();
        ids.push(run.id);
    }
    let notice = |i: usize| StateNotice {
        run_id: Some(ids[i % ids.len()].clone()),
        attempt: None,
        tenant_id: None,
        update: CallStateUpdate {
            state: if i.is_multiple_of(2) {
                CallState::Establishing
            } else {
                CallState::Established
            },
            call_id: Some(format!("call-{}", i % ids.len())),
            result_info: None,
        },
    };
    let t = Instant::now();
    for i in 0..n {
        let s = notice(i);
        l.record_call_state(s.run_id.as_deref().unwrap(), &s.update, now)
            .unwrap();
    }
    let single = t.elapsed();
    println!(
        "ledger: {n} notifications, one transaction each: {:>8.0} /s",
        n as f64 / single.as_secs_f64()
    );
    for batch in [64, 512, 4096] {
        let all: Vec<StateNotice> = (0..n).map(notice).collect();
        let t = Instant::now();
        for chunk in all.chunks(batch) {
            let out = l.record_call_states(chunk, now).unwrap();
            assert!(out.iter().all(|r| matches!(r, Ok(Some(_)))));
        }
        let e = t.elapsed();
        println!(
            "ledger: {n} notifications, batches of {batch:>4}:     {:>8.0} /s",
            n as f64 / e.as_secs_f64()
        );
    }
}
