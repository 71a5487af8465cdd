//! A create Graph did not process is not an outcome (issue 10), with the
//! real `calld` binary against the emulator's scripted faults:
//!
//! - 429 with `Retry-After: 30`, then SIGTERM during the wait, then a
//!   restart: the run is placed once, no earlier than the `Retry-After`;
//! - kill -9 between a 201 and its ledger write (a test hook): the call id
//!   is not lost (the call's notifications bring it back), nothing is sent twice.

mod daemon_support;
mod failures_support;

use std::time::Duration;

use calld::emulator::ScriptedFault;
use daemon_support::*;

#[test]
fn a_429_then_sigterm_then_restart_places_once_after_retry_after() {
    let emu = Emu::start(&format!(
        "{FAST_CALLS}faults: {{ retryAfter: 30s, script: [throttle] }}\n"
    ));
    let env = Env::new(&emu);
    let mut d = env.start();
    env.drop_spec("slow.yaml", &call_spec("Slow"));
    let first = wait_until("the throttled create", || {
        emu.creates().into_iter().find(|c| c.status == Some(429))
    });
    let id = run_id(&first).unwrap();
    // Durably back to `scheduled`, with its earliest retry, before the wait.
    let run = wait_until("the run to wait, scheduled", || {
        let runs = env.history("slow");
        let r = runs.first()?.clone();
        (r["state"] == "scheduled" && r["reason"].as_str()?.starts_with("waiting: ")).then_some(r)
    });
    println!("after the 429: {}", run["reason"]);
    assert!(run["reason"].as_str().unwrap().contains("429"), "{run:#}");
    assert_eq!(d.stop().code(), Some(0), "SIGTERM during the wait");
    let runs = env.history("slow");
    assert_eq!(runs[0]["state"], "scheduled", "a stop leaves it scheduled");
    assert!(runs[0]["outcome"].is_null());

    let d2 = env.start();
    let run = wait_until("the run to complete", || {
        let runs = env.history("slow");
        let r = runs.first()?.clone();
        (r["outcome"] == "completed").then_some(r)
    });
    assert_eq!(run["id"], id.as_str(), "the same run");
    let creates = emu.creates_for(&id);
    let placed: Vec<_> = creates.iter().filter(|c| c.status == Some(201)).collect();
    assert_eq!(placed.len(), 1, "placed once: {creates:#?}");
    assert_eq!(creates.len(), 2, "one 429, one 201");
    let waited = received_at(placed[0]).duration_since(received_at(&first));
    println!("second create {waited:?} after the 429");
    assert!(
        waited >= jiff::SignedDuration::from_secs(30),
        "placed no earlier than Retry-After ({waited:?})"
    );
    // Both requests are in the run's history; the 429 spent no `retry` try.
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run:#}");
    assert_eq!(attempts[0]["httpStatus"], 429);
    assert_eq!(attempts[1]["httpStatus"], 201);
    drop(d2);
}

#[test]
fn kill_9_between_the_201_and_its_record_does_not_lose_the_call() {
    // Answered 3 s after the create (after the kill, mostly), notifications
    // retried long enough to reach the restarted daemon.
    let emu = Emu::start(
        "calls: { answerAfter: 3s, length: 300ms }\n\
         notifications: { attempts: 14, retryDelay: 200ms }\n",
    );
    let env = Env::new(&emu);
    let mut d = env.start_with(
        &[],
        &[
            ("CALLD_TEST_HOOKS", "1"),
            ("CALLD_TEST_STALL_AFTER_CREATE", "30000"),
        ],
    );
    d.wait_log("calls directory loaded");
    env.drop_spec("crash.yaml", &call_spec("Crash"));
    d.wait_log("test hook: stalling");
    let create = wait_until("the 201", || {
        emu.creates().into_iter().find(|c| c.status == Some(201))
    });
    let call_id = create.call_id.clone().unwrap();
    d.kill9();

    let d2 = env.start();
    let run = wait_until("the run to complete", || {
        let runs = env.history("crash");
        let r = runs.first()?.clone();
        (r["outcome"] == "completed").then_some(r)
    });
    assert_eq!(
        run["callId"],
        call_id.as_str(),
        "the call id is not lost: {run:#}"
    );
    assert_eq!(emu.creates().len(), 1, "never sent twice");
    std::thread::sleep(Duration::from_millis(200));
    drop(d2);
}

#[test]
fn a_503_without_retry_after_is_still_unknown_never_resent() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let d = env.start();
    emu.set_fault_script(vec![ScriptedFault::UnavailableNoRetryAfter]);
    env.drop_spec("five.yaml", &call_spec("Five"));
    let run = wait_until("the run to finish", || {
        let runs = env.history("five");
        let r = runs.first()?.clone();
        (r["state"] == "finished").then_some(r)
    });
    // A 503 without Retry-After may have been processed: unknown, not re-sent.
    assert_eq!(run["outcome"], "unknown", "{run:#}");
    assert_eq!(emu.creates().len(), 1);
    drop(d);
}
