//! `calld run` end to end: the real binary in live mode against a real Graph
//! emulator on loopback, in a temporary directory. Nothing here asserts a
//! duration: every wait is a poll with a generous timeout.

mod daemon_support;

use daemon_support::*;
use serde_json::Value as Json;

/// The body the daemon sent equals `calld render` of the same file, except
/// the callbackUri, which carries `calldRun=<run id>`.
fn assert_rendered(env: &Env, rel: &str, create: &calld::emulator::ReceivedRequest) {
    let rendered = env.render(rel);
    assert_eq!(rendered.len(), 1);
    let mut expected = rendered[0]["body"].clone();
    let mut sent = create.body.clone();
    let run = run_id(create).expect("calldRun");
    assert_eq!(
        sent["callbackUri"],
        Json::String(format!("{}?calldRun={run}&calldAttempt=1", env.public_url)),
    );
    sent.as_object_mut().unwrap().remove("callbackUri");
    expected.as_object_mut().unwrap().remove("callbackUri");
    assert_eq!(sent, expected, "the daemon sent what `calld render` prints");
    assert_eq!(
        rendered[0]["url"]
            .as_str()
            .unwrap()
            .trim_start_matches(env_base(env).as_str()),
        create.path
    );
}

fn env_base(env: &Env) -> String {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("baseUrl:"))
        .unwrap();
    line.split_once(':').unwrap().1.trim().to_string()
}

#[test]
fn dropped_spec_is_placed_once_and_edits_count_only_when_they_change_the_call() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let daemon = env.start();

    // Drop: exactly one create, with the rendered body.
    env.drop_spec(
        "ring.yaml",
        &format!("# first version\n{}", call_spec("Hello")),
    );
    let first = wait_until("the first create", || {
        let c = emu.creates();
        (!c.is_empty()).then_some(c)
    });
    assert_eq!(first.len(), 1);
    assert_rendered(&env, "ring.yaml", &first[0]);
    let run1 = run_id(&first[0]).unwrap();
    // ... and it runs to completion.
    wait_until("the first run to complete", || {
        let h = env.history("ring");
        (h.first()?["outcome"] == "completed").then_some(())
    });

    // A comment edit: the daemon rescans (a second load) but places nothing.
    env.drop_spec(
        "ring.yaml",
        &format!("# second version, same call\n{}", call_spec("Hello")),
    );
    daemon.wait_log_count("calls directory loaded", 3);
    // A later, unrelated drop proves the daemon has acted on the comment
    // edit before we count: its decisions are taken in order.
    env.drop_spec("marker.yaml", &call_spec("Marker"));
    wait_until("the marker's create", || {
        emu.creates()
            .iter()
            .any(|c| c.body["subject"] == "Marker")
            .then_some(())
    });
    let ring: Vec<_> = emu
        .creates()
        .into_iter()
        .filter(|c| c.body["subject"] != "Marker")
        .collect();
    assert_eq!(ring.len(), 1, "a comment edit placed nothing new");
    assert_eq!(env.history("ring").len(), 1);

    // A subject edit: exactly one more create, a new run.
    env.drop_spec("ring.yaml", &call_spec("Hello again"));
    let second = wait_until("the second create", || {
        emu.creates()
            .into_iter()
            .find(|c| c.body["subject"] == "Hello again")
    });
    assert_rendered(&env, "ring.yaml", &second);
    let run2 = run_id(&second).unwrap();
    assert_ne!(run1, run2);
    wait_until("the second run to complete", || {
        let h = env.history("ring");
        (h.len() == 2 && h.iter().all(|r| r["outcome"] == "completed")).then_some(())
    });
    // Once more, a marker after the edit settles.
    env.drop_spec("marker2.yaml", &call_spec("Marker 2"));
    wait_until("the second marker's create", || {
        emu.creates()
            .iter()
            .any(|c| c.body["subject"] == "Marker 2")
            .then_some(())
    });
    let per_run = creates_per_run(&emu.creates());
    assert_eq!(per_run.len(), 4, "ring twice, two markers: {per_run:?}");
    assert!(per_run.values().all(|&n| n == 1), "{per_run:?}");
}

#[test]
fn deleting_a_scheduled_spec_cancels_its_future_run() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let daemon = env.start();
    env.drop_spec(
        "yearly.yaml",
        &format!(
            "{}schedule: {{ cron: \"0 9 1 1 *\", timezone: Europe/Berlin }}\n",
            call_spec("New year")
        ),
    );
    let scheduled = wait_until("the next run to be planned", || {
        let h = env.history("yearly");
        (h.len() == 1 && h[0]["state"] == "scheduled").then(|| h[0].clone())
    });
    let due: jiff::Timestamp = scheduled["dueAt"].as_str().unwrap().parse().unwrap();
    assert!(due > jiff::Timestamp::now(), "the run is in the future");

    env.remove_spec("yearly.yaml");
    let canceled = wait_until("the run to be canceled", || {
        let h = env.history("yearly");
        (h.len() == 1 && h[0]["outcome"] == "canceled").then(|| h[0].clone())
    });
    assert_eq!(canceled["id"], scheduled["id"], "the same run was canceled");
    assert!(
        canceled["reason"]
            .as_str()
            .unwrap_or("")
            .contains("removed"),
        "{canceled}"
    );
    assert!(emu.creates().is_empty(), "nothing was placed");
    drop(daemon);
}

#[test]
fn an_at_run_fires_once_not_before_its_time() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let _daemon = env.start();
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(3))
        .unwrap();
    // whole milliseconds, as written in a file
    let at = jiff::Timestamp::from_millisecond(at.as_millisecond()).unwrap();
    env.drop_spec(
        "later.yaml",
        &format!("{}schedule: {{ at: \"{at}\" }}\n", call_spec("Later")),
    );
    let run = wait_until("the at run to complete", || {
        let h = env.history("later");
        (h.len() == 1 && h[0]["outcome"] == "completed").then(|| h[0].clone())
    });
    let creates = emu.creates();
    assert_eq!(creates.len(), 1, "placed once");
    assert_eq!(run_id(&creates[0]).as_deref(), run["id"].as_str());
    let received = received_at(&creates[0]);
    assert!(
        received >= at,
        "received at {received}, before its time {at}"
    );
    assert_eq!(
        run["scheduledAt"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap(),
        at
    );
}

#[test]
fn invalid_files_are_reported_and_the_valid_ones_placed() {
    let emu = Emu::start("calls: { answerAfter: 20ms, length: 50ms }\n");
    let env = Env::new(&emu);
    for i in 0..50 {
        env.drop_spec(
            &format!("ok-{i:02}.yaml"),
            &call_spec(&format!("Valid {i}")),
        );
        // an unknown key, a bad phone number, broken YAML, in turn
        let bad = match i % 3 {
            0 => format!("{}subjcet: typo\n", call_spec("Bad")),
            1 => "subject: Bad\ntargets:\n  - phone: \"12\"\n".to_string(),
            _ => "subject: [unclosed\n".to_string(),
        };
        env.drop_spec(&format!("bad-{i:02}.yaml"), &bad);
    }
    let mut daemon = env.start();
    let per_run = wait_until("50 creates", || {
        let c = emu.creates();
        (c.len() >= 50).then_some(c)
    });
    assert!(daemon.running(), "the daemon keeps running");
    let subjects: std::collections::BTreeSet<String> = per_run
        .iter()
        .map(|c| c.body["subject"].as_str().unwrap().to_string())
        .collect();
    let expected: std::collections::BTreeSet<String> =
        (0..50).map(|i| format!("Valid {i}")).collect();
    assert_eq!(
        subjects, expected,
        "every valid spec placed, no invalid one"
    );

    let status = env.status();
    let invalid: Vec<String> = status["invalidFiles"]
        .as_array()
        .expect("invalidFiles")
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(invalid.len(), 50, "{invalid:?}");
    for i in 0..50 {
        let name = format!("bad-{i:02}.yaml");
        assert!(
            invalid.iter().any(|f| f.ends_with(&name)),
            "{name} listed as invalid"
        );
        let errors: Vec<&Json> = status["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["file"].as_str().unwrap_or("").ends_with(&name) && d["severity"] == "error"
            })
            .collect();
        assert!(!errors.is_empty(), "{name} has its error");
        let message = errors[0]["message"].as_str().unwrap();
        match i % 3 {
            0 => assert!(message.contains("subjcet"), "{name}: {message}"),
            1 => assert!(
                message.contains("12") || message.contains("E.164"),
                "{name}: {message}"
            ),
            _ => assert!(!message.is_empty()),
        }
        assert!(
            errors[0]["line"].as_u64().unwrap_or(0) >= 1,
            "{}",
            errors[0]
        );
    }
    // every valid spec is listed with its run
    let specs = status["specs"].as_array().unwrap();
    let with_runs = specs
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("ok-") && !s["lastRun"].is_null())
        .count();
    assert_eq!(with_runs, 50);
    assert!(daemon.running());
}

#[test]
fn sigterm_exits_0_and_sighup_reloads_and_rescans() {
    let emu = Emu::start(FAST_CALLS);
    // no periodic resync during the test: a rescan is the SIGHUP's
    let env = Env::with_config(&emu, "daemon: { debounce: 20ms, resyncInterval: 1h }\n");
    let mut daemon = env.start_with(&[], &[("RUST_LOG", "calld=debug,warn")]);
    daemon.wait_log("calls directory loaded");
    let before = daemon.log_text().matches("rescan").count();
    daemon.signal("HUP");
    daemon.wait_log("SIGHUP: configuration reloaded; rescanning the calls directory");
    wait_until("a rescan after SIGHUP", || {
        let text = daemon.log_text();
        let after = text
            .lines()
            .filter(|l| l.contains("rescan") && !l.contains("SIGHUP"))
            .count();
        (after > before).then_some(())
    });
    assert!(daemon.running(), "SIGHUP does not stop the daemon");
    // still serving: a drop after the SIGHUP is placed
    env.drop_spec("after-hup.yaml", &call_spec("After HUP"));
    wait_until("the create after SIGHUP", || {
        (!emu.creates().is_empty()).then_some(())
    });

    let status = daemon.stop();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log_text());
    assert!(daemon.log_text().contains("stopped"));
}

/// `calld run --once`: its exit status and the outcome lines on stdout.
fn once(env: &Env) -> (Option<i32>, String, String) {
    let mut d = env.start_with(&["--once", "--timeout", "60s"], &[]);
    let status = d.wait_exit();
    (status.code(), d.stdout_text(), d.log_text())
}

#[test]
fn once_exits_0_after_a_completed_call() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    env.drop_spec("hello.yaml", &call_spec("Hello"));
    let (code, out, log) = once(&env);
    assert_eq!(code, Some(0), "stdout:\n{out}\nlog:\n{log}");
    let line = out.lines().find(|l| l.starts_with("hello\t")).expect(&out);
    assert!(line.contains("\tcompleted"), "{line}");
    assert_eq!(emu.creates().len(), 1);
    // the run was answered and ended, as the ledger says
    let h = env.history("hello");
    assert_eq!(h[0]["outcome"], "completed");
    let states: Vec<&str> = h[0]["callStates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"established"), "{states:?}");
    assert!(states.contains(&"terminated"), "{states:?}");
}

#[test]
fn once_exits_1_when_graph_rejects_the_call() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    // another tenant than the token's: Graph (the emulator) answers 403
    env.drop_spec(
        "elsewhere.yaml",
        &format!(
            "{}tenantId: 11111111-2222-3333-4444-555555555555\n",
            call_spec("Elsewhere")
        ),
    );
    let (code, out, log) = once(&env);
    assert_eq!(code, Some(1), "stdout:\n{out}\nlog:\n{log}");
    let line = out
        .lines()
        .find(|l| l.starts_with("elsewhere\t"))
        .expect(&out);
    assert!(line.contains("\trejected"), "{line}");
    assert!(line.contains("403"), "the reason names the status: {line}");
    let creates = emu.creates();
    assert_eq!(creates.len(), 1, "a rejected request is not re-sent");
    assert_eq!(creates[0].status, Some(403));
}

#[test]
fn once_exits_1_when_the_token_grants_no_calling_role() {
    let emu = Emu::start(&format!(
        "{FAST_CALLS}clients: [{{ id: {CLIENT_ID}, roles: [] }}]\n"
    ));
    let env = Env::new(&emu);
    env.drop_spec("hello.yaml", &call_spec("Hello"));
    let (code, out, log) = once(&env);
    assert_eq!(code, Some(1), "stdout:\n{out}\nlog:\n{log}");
    let line = out.lines().find(|l| l.starts_with("hello\t")).expect(&out);
    assert!(line.contains("\trejected"), "{line}");
    assert!(
        line.contains("Calls.Initiate.All"),
        "names the role: {line}"
    );
    assert!(emu.creates().is_empty(), "nothing sent without the role");
}

#[test]
fn once_places_the_call_once_graph_stops_throttling() {
    let emu = Emu::start(&format!("{FAST_CALLS}faults: {{ retryAfter: 100ms }}\n"));
    // Throttling is a passing trouble (issue 10): the run goes back to
    // `scheduled` after each 429 and is placed once Graph accepts it.
    emu.set_fault_script(vec![calld::emulator::ScriptedFault::Throttle; 10]);
    let env = Env::new(&emu);
    env.drop_spec("hello.yaml", &call_spec("Hello"));
    let (code, out, log) = once(&env);
    assert_eq!(code, Some(0), "stdout:\n{out}\nlog:\n{log}");
    let line = out.lines().find(|l| l.starts_with("hello\t")).expect(&out);
    assert!(line.contains("\tcompleted"), "{line}");
    // the same run, re-sent only because Graph said it did not process it
    let per_run = creates_per_run(&emu.creates());
    assert_eq!(per_run.len(), 1, "{per_run:?}");
    let sent = *per_run.values().next().unwrap();
    assert_eq!(sent, 11, "10 throttled, then placed");
    let h = env.history("hello");
    let attempts = h[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), sent);
    assert!(attempts[..10].iter().all(|a| a["httpStatus"] == 429));
}

#[test]
fn once_exits_1_when_the_answer_is_lost() {
    let emu = Emu::start(FAST_CALLS);
    // a 503 without Retry-After may have been processed: never re-sent
    emu.set_fault_script(vec![
        calld::emulator::ScriptedFault::UnavailableNoRetryAfter,
    ]);
    let env = Env::new(&emu);
    env.drop_spec("hello.yaml", &call_spec("Hello"));
    let (code, out, log) = once(&env);
    assert_eq!(code, Some(1), "stdout:\n{out}\nlog:\n{log}");
    let line = out.lines().find(|l| l.starts_with("hello\t")).expect(&out);
    assert!(line.contains("\tunknown"), "{line}");
    assert!(line.contains("503"), "{line}");
    assert_eq!(emu.creates().len(), 1, "not re-sent");
}

#[test]
fn once_with_nothing_due_exits_0() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    env.drop_spec(
        "yearly.yaml",
        &format!(
            "{}schedule: {{ cron: \"0 9 1 1 *\" }}\n",
            call_spec("New year")
        ),
    );
    let (code, out, log) = once(&env);
    assert_eq!(code, Some(0), "stdout:\n{out}\nlog:\n{log}");
    assert!(out.contains("nothing was due"), "{out}");
    assert!(emu.creates().is_empty());
}

/// A `* * * * *` spec (deadline 90s) whose daemon stopped across three cron
/// times: the restart places only the last and records the two others
/// `missed`. The first daemon runs with its clock shifted back
/// (`CALLD_TEST_CLOCK_OFFSET`) so no test waits three minutes.
#[test]
fn downtime_across_three_cron_times_places_the_last_and_misses_two() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let spec = format!(
        "{}schedule: {{ cron: \"* * * * *\", deadline: 90s }}\n",
        call_spec("Every minute")
    );
    env.drop_spec("minutely.yaml", &spec);

    // s3: the last minute boundary; the restart must come within 90 s of it.
    // Give the test at least 45 s for that: wait for a fresh minute if needed.
    let minute = |t: jiff::Timestamp| t.as_second().div_euclid(60) * 60;
    while jiff::Timestamp::now().as_second() - minute(jiff::Timestamp::now()) > 45 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let now = jiff::Timestamp::now();
    let s3 = minute(now);
    // the first daemon's clock: 150 s before s3, so s3-120, s3-60 and s3
    // pass while it is down
    let offset_ms = now.as_millisecond() - (s3 - 150) * 1000;
    let offset = format!("-{offset_ms}ms");
    let ts = |s: i64| jiff::Timestamp::from_second(s).unwrap().to_string();

    let mut first = env.start_with(&[], &[("CALLD_TEST_CLOCK_OFFSET", offset.as_str())]);
    first.wait_log("calls directory loaded");
    // Its first sight of the spec places s3-180 (within the 90 s deadline
    // of first sight: a file written just before its time still rings);
    // wait for that call to end, and for s3-120 planned.
    wait_until("s3-180 completed and s3-120 planned", || {
        let h = env.history("minutely");
        let at = |s: i64| h.iter().find(|r| r["scheduledAt"] == ts(s).as_str());
        let planned = at(s3 - 120)?["state"] == "scheduled";
        let over = at(s3 - 180)?["outcome"] == "completed";
        (planned && over && h.len() == 2).then_some(())
    });
    assert_eq!(first.stop().code(), Some(0));
    let before: std::collections::BTreeSet<String> =
        creates_per_run(&emu.creates()).into_keys().collect();

    let _second = env.start();
    let placed = wait_until("s3 placed and finished", || {
        let h = env.history("minutely");
        h.iter()
            .find(|r| r["scheduledAt"] == ts(s3).as_str() && r["state"] == "finished")
            .cloned()
    });
    assert_eq!(
        placed["outcome"],
        "completed",
        "{:#?}",
        env.history("minutely")
    );
    let h = env.history("minutely");
    let outcome_of = |s: i64| {
        h.iter()
            .find(|r| r["scheduledAt"] == ts(s).as_str())
            .map(|r| r["outcome"].clone())
    };
    assert_eq!(outcome_of(s3 - 120), Some("missed".into()), "{h:#?}");
    assert_eq!(outcome_of(s3 - 60), Some("missed".into()), "{h:#?}");
    // exactly one create since the restart, for the s3 run
    let after: Vec<String> = creates_per_run(&emu.creates())
        .into_iter()
        .filter(|(id, _)| !before.contains(id))
        .map(|(id, n)| {
            assert_eq!(n, 1, "run {id} sent {n} times");
            id
        })
        .collect();
    assert_eq!(after, vec![placed["id"].as_str().unwrap().to_string()]);
}
