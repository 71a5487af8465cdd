//! Crash safety: a writer process is killed with SIGKILL at random moments;
//! after each kill the ledger reopens cleanly, passes its integrity check,
//! holds every step the writer reported as committed, and has turned every
//! run left `requesting` into `unknown`.
//!
//! The writer is this test binary re-run with `CALLD_LEDGER_CRASH_DB` set
//! (see `crash_writer_child`); it prints `STEP ...` after each committed
//! write. Set `CALLD_LEDGER_CRASH_SEED` to replay a failing seed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use calld::ledger::{
    AttemptResult, CallState, CallStateUpdate, Disposition, Finish, LEDGER_FILE, Ledger, NewRun,
    Outcome, RunKey, RunState, SqliteLedger,
};
use jiff::Timestamp;
use rand::{Rng, SeedableRng};

const DB_ENV: &str = "CALLD_LEDGER_CRASH_DB";
const ROUND_ENV: &str = "CALLD_LEDGER_CRASH_ROUND";
const SEED_ENV: &str = "CALLD_LEDGER_CRASH_SEED";
const ROUNDS: usize = 6;
/// The writer stops by itself after this many runs, should the parent die.
const CHILD_MAX_RUNS: i64 = 20_000;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// Writer mode. A no-op in a normal test run; the crash test runs the test
/// binary again with only this test selected and `CALLD_LEDGER_CRASH_DB` set.
#[test]
fn crash_writer_child() {
    let Some(db) = std::env::var_os(DB_ENV) else {
        return;
    };
    let round: i64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let mut ledger = SqliteLedger::open(&PathBuf::from(db), t(0)).unwrap();
    let out = std::io::stdout();
    let step = |line: String| {
        // Printed only after the write returned, i.e. committed and synced.
        let mut out = out.lock();
        writeln!(out, "STEP {line}").unwrap();
        out.flush().unwrap();
    };
    let spec = format!("round-{round}");
    for i in 0..CHILD_MAX_RUNS {
        let now = t(i);
        let new = NewRun {
            key: RunKey::at(&spec, t(i * 60)),
            revision: "rev".into(),
            due: t(i * 60),
            tenant_id: None,
        };
        let id = ledger.insert_run(&new, now).unwrap().run.id;
        step(format!("inserted {id} {i}"));
        let n = ledger.mark_requesting(&id, Some("crid"), now).unwrap();
        step(format!("requesting {id} {i}"));
        match i % 4 {
            0 => {
                ledger
                    .finish_attempt(&id, n, &AttemptResult::new(Disposition::Placed), now)
                    .unwrap();
                let call = format!("call-{round}-{i}");
                ledger.mark_placed(&id, &call, now).unwrap();
                step(format!("placed {id} {i} {call}"));
                for state in [CallState::Established, CallState::Terminated] {
                    let update = CallStateUpdate {
                        state,
                        call_id: Some(call.clone()),
                        result_info: None,
                    };
                    ledger.record_call_state(&id, &update, now).unwrap();
                }
                step(format!("notified {id} {i}"));
                ledger
                    .finish(&id, &Finish::new(Outcome::Completed), now)
                    .unwrap();
                step(format!("finished {id} {i} completed"));
            }
            1 => {
                ledger
                    .finish_attempt(&id, n, &AttemptResult::new(Disposition::Failed), now)
                    .unwrap();
                ledger
                    .finish(&id, &Finish::new(Outcome::Failed), now)
                    .unwrap();
                step(format!("finished {id} {i} failed"));
            }
            2 => {
                // Left requesting on purpose: the request "is in flight".
            }
            _ => {
                ledger
                    .finish_attempt(&id, n, &AttemptResult::new(Disposition::Rejected), now)
                    .unwrap();
                ledger
                    .finish(&id, &Finish::new(Outcome::Rejected), now)
                    .unwrap();
                step(format!("finished {id} {i} rejected"));
            }
        }
    }
}

/// What the writer reported about one run, strongest step last.
#[derive(Debug, Default, Clone)]
struct Reported {
    index: i64,
    requesting: bool,
    call_id: Option<String>,
    notified: bool,
    outcome: Option<Outcome>,
}

#[test]
fn killed_writers_lose_nothing_they_reported() {
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("seed {seed} (set {SEED_ENV} to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(LEDGER_FILE);
    let exe = std::env::current_exe().unwrap();
    let mut reported: HashMap<String, Reported> = HashMap::new();

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_ENV, &db)
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a random number of reported steps (so at a random point
        // of the write sequence), sometimes after a short random pause too.
        let kill_after = rng.random_range(1..=150);
        let mut seen = 0;
        let parse = |line: &str, reported: &mut HashMap<String, Reported>| -> bool {
            let Some(rest) = line.strip_prefix("STEP ") else {
                return false;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            let entry = reported.entry(f[1].to_string()).or_default();
            entry.index = f[2].parse().unwrap();
            match f[0] {
                "inserted" => {}
                "requesting" => entry.requesting = true,
                "placed" => entry.call_id = Some(f[3].to_string()),
                "notified" => entry.notified = true,
                "finished" => entry.outcome = Some(f[3].parse().unwrap()),
                other => panic!("unknown step {other}"),
            }
            true
        };
        for line in lines.by_ref() {
            if parse(&line.unwrap(), &mut reported) {
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        if rng.random_bool(0.5) {
            std::thread::sleep(std::time::Duration::from_micros(rng.random_range(0..3000)));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the writer was not killed"
        );
        // Steps printed before the kill are still in the pipe.
        for line in lines {
            parse(&line.unwrap(), &mut reported);
        }

        // Reopen as the restarted daemon would: integrity check, recovery.
        let ledger = SqliteLedger::open(&db, t(1_000_000)).unwrap();
        ledger.check_integrity().unwrap();
        let recovered: std::collections::HashSet<&str> =
            ledger.recovered().iter().map(String::as_str).collect();
        assert!(
            ledger
                .open_runs()
                .unwrap()
                .iter()
                .all(|r| r.state != RunState::Requesting),
            "round {round}: a run is still requesting after recovery"
        );
        for (id, rep) in &reported {
            let run = ledger
                .run(id)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: reported run {id} is missing"));
            assert_eq!(run.scheduled_at, t(rep.index * 60));
            if rep.requesting {
                assert_ne!(run.state, RunState::Scheduled, "{id}: requesting lost");
                assert!(
                    !ledger.attempts(id).unwrap().is_empty(),
                    "{id}: attempt lost"
                );
            }
            if let Some(call) = &rep.call_id {
                assert_eq!(run.call_id.as_deref(), Some(call.as_str()), "{id}");
            }
            if rep.notified {
                assert_eq!(ledger.call_states(id).unwrap().len(), 2, "{id}");
                assert!(run.established_at.is_some(), "{id}");
            }
            if let Some(outcome) = rep.outcome {
                assert_eq!(run.outcome, Some(outcome), "{id}: reported outcome lost");
            } else if rep.requesting && rep.index % 4 == 2 {
                // Left requesting by the writer: the crash made it unknown.
                assert_eq!(run.outcome, Some(Outcome::Unknown), "{id}");
                assert_eq!(
                    run.reason.as_deref(),
                    Some("daemon stopped while the request was in flight")
                );
            }
            // Whatever was requesting at the kill was recovered, nothing else.
            if recovered.contains(id.as_str()) {
                assert_eq!(run.outcome, Some(Outcome::Unknown), "{id}");
                assert!(rep.outcome.is_none(), "{id}: a finished run was recovered");
            }
        }
        let this_round = reported
            .values()
            .filter(|r| r.requesting && r.index % 4 == 2 && r.outcome.is_none())
            .count();
        println!(
            "round {round}: killed after {seen} steps; {} runs reported in all; \
             {} recovered to unknown ({this_round} left requesting by design so far)",
            reported.len(),
            recovered.len()
        );
        // Released here, so the next writer can take the lock.
        drop(ledger);
    }
    assert!(!reported.is_empty());
}
