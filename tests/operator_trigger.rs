//! `calld trigger` and `calld retry` through a real daemon's admin endpoint
//! (live mode, the emulator on loopback): a run placed now outside the
//! schedule and recorded like any run, the same request id never placing
//! two runs (the emulator's create requests are counted), refusals with
//! exit 1, and a declined call placed again by `retry`.

mod daemon_support;

use std::process::Command;

use daemon_support::*;
use serde_json::Value as Json;

/// The runs placed on request (the cron's planned run aside), newest first.
fn triggered(env: &Env, spec: &str) -> Vec<Json> {
    env.history(spec)
        .into_iter()
        .filter(|r| !r["slot"]["trigger"].is_null())
        .collect()
}

fn calld(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&env.config)
        .env_remove("CALLD_CONFIG")
        .env_remove("CALLD_ADMIN_LISTEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn trigger_places_one_run_per_request_and_retry_places_a_failed_one_again() {
    // +14255550199 declines; everyone else answers
    let emu = Emu::start(&format!(
        "{FAST_CALLS}targets: {{ \"+14255550199\": {{ outcome: decline, after: 100ms }} }}\n"
    ));
    let admin = free_port();
    let env = Env::with_config(&emu, &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"));
    // a yearly cron: nothing is due by itself during the test
    env.drop_spec(
        "yearly.yaml",
        &format!(
            "{}schedule: {{ cron: \"0 3 1 1 *\" }}\n",
            call_spec("Yearly")
        ),
    );
    env.drop_spec(
        "paused.yaml",
        &format!(
            "{}suspend: true\nschedule: {{ cron: \"0 3 1 1 *\" }}\n",
            call_spec("Paused")
        ),
    );
    env.drop_spec(
        "decliner.yaml",
        "subject: Decliner\ntargets:\n  - phone: \"+14255550199\"\nschedule: { cron: \"0 3 1 1 *\" }\n",
    );
    let _daemon = env.start();
    // files written just before the start are held for `daemon.settle`
    // (they may still be being written): wait until all three are loaded
    wait_until("the admin endpoint", || {
        let s = env.status();
        let specs = s["specs"].as_array()?;
        (specs.len() == 3 && specs.iter().all(|x| x["state"] != "held")).then_some(())
    });

    let (code, out, err) = calld(
        &env,
        &[
            "trigger",
            "yearly",
            "--request-id",
            "req-1",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let doc: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["created"], true);
    let run_id = doc["run"]["id"].as_str().unwrap().to_string();
    let runs = wait_until("the triggered run completed", || {
        let runs = triggered(&env, "yearly");
        (runs.first()?["outcome"] == "completed").then_some(runs)
    });
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["id"], run_id.as_str());
    assert_eq!(runs[0]["slot"]["trigger"], "req-1", "recorded as a trigger");
    assert_eq!(emu.creates_for(&run_id).len(), 1);
    let text = env.calld(&["history", "yearly"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("(trigger)"));

    // the same request again: the same run, no second call
    let (code, out, _) = calld(
        &env,
        &[
            "trigger",
            "yearly",
            "--request-id",
            "req-1",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0);
    let again: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(again["created"], false);
    assert_eq!(again["run"]["id"], run_id.as_str());
    // a new request: a new run; --wait prints its outcome line
    let (code, out, err) = calld(&env, &["trigger", "yearly", "--wait", "--timeout", "80s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("placed now"), "{out}");
    let outcome = out.lines().last().unwrap();
    assert!(
        outcome.starts_with("yearly\t") && outcome.contains("\tcompleted"),
        "{out}"
    );
    wait_until("the second trigger completed", || {
        let runs = triggered(&env, "yearly");
        (runs.len() == 2 && runs.iter().all(|r| r["outcome"] == "completed")).then_some(())
    });
    assert_eq!(emu.creates_for(&run_id).len(), 1, "req-1 placed once");
    let yearly = env.status();
    let yearly = yearly["specs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "yearly")
        .unwrap()
        .clone();
    assert_eq!(yearly["state"], "active", "the schedule goes on: {yearly}");
    assert!(!yearly["nextRun"].is_null());

    // refusals: exit 1 with the reason
    let (code, _, err) = calld(&env, &["trigger", "nope"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no spec named `nope`"), "{err}");
    let (code, _, err) = calld(&env, &["trigger", "paused"]);
    assert_eq!(code, 1);
    assert!(err.contains("suspended"), "{err}");
    let (code, _, err) = calld(&env, &["retry", "no-such-run"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = calld(&env, &["retry", &run_id]);
    assert_eq!(code, 1, "a completed run is not retried: {err}");

    // retry: a declined call placed again, once
    let (code, out, err) = calld(&env, &["trigger", "decliner", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let declined: Json = serde_json::from_str(&out).unwrap();
    let declined_id = declined["run"]["id"].as_str().unwrap().to_string();
    wait_until("declined", || {
        let runs = triggered(&env, "decliner");
        (runs.first()?["outcome"] == "notEstablished").then_some(())
    });
    // --wait on a run that does not complete: exit 1 (the previous call
    // is over: concurrency forbid would skip it otherwise)
    let (code, out, err) = calld(&env, &["trigger", "decliner", "--wait", "--timeout", "80s"]);
    assert_eq!(code, 1, "notEstablished: {out}{err}");
    assert!(out.contains("\tnotEstablished"), "{out}");
    let (code, out, err) = calld(&env, &["retry", &declined_id, "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let retried: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(retried["retryOf"], declined_id.as_str());
    let retry_id = retried["run"]["id"].as_str().unwrap().to_string();
    let (_, out, _) = calld(&env, &["retry", &declined_id, "--format", "json"]);
    let twice: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(twice["run"]["id"], retry_id.as_str(), "retried once");
    wait_until("the retry ran", || {
        let runs = triggered(&env, "decliner");
        (runs.len() == 3 && runs.iter().all(|r| r["outcome"] == "notEstablished")).then_some(())
    });
    assert_eq!(emu.creates_for(&retry_id).len(), 1);
    assert_eq!(emu.creates_for(&declined_id).len(), 1);

    // no daemon: exit 2
    let out = Command::new(BIN)
        .args([
            "trigger",
            "yearly",
            "--admin",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// An unscheduled spec whose newest run is a trigger: its revision is not
/// placed again (reconcile knows the revision ran), not even after rescans.
#[test]
fn a_trigger_of_an_unscheduled_spec_does_not_replace_its_revision() {
    let emu = Emu::start(FAST_CALLS);
    let admin = free_port();
    let env = Env::with_config(&emu, &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"));
    env.drop_spec("once.yaml", &call_spec("Once"));
    let daemon = env.start();
    wait_until("the revision's run completed", || {
        (env.history("once").first()?["outcome"] == "completed").then_some(())
    });
    let (code, out, err) = calld(&env, &["trigger", "once"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the trigger completed", || {
        let runs = env.history("once");
        (runs.len() == 2 && runs.iter().all(|r| r["outcome"] == "completed")).then_some(())
    });
    for n in 0..3 {
        daemon.signal("HUP");
        daemon.wait_log_count("SIGHUP: configuration reloaded", n + 1);
    }
    daemon.wait_log_count("calls directory loaded", 4);
    // one more trigger proves the daemon decided after the rescans
    let (code, _, _) = calld(&env, &["trigger", "once"]);
    assert_eq!(code, 0);
    wait_until("the second trigger completed", || {
        let runs = env.history("once");
        (runs.len() == 3 && runs.iter().all(|r| r["outcome"] == "completed")).then_some(())
    });
    assert_eq!(emu.creates().len(), 3, "the revision once, two triggers");
}
