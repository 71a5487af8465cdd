//! Run identity with the real daemon and the emulator (docs/runs.md, "Run
//! identity"): configuration edits, restarts, renames and moves, half-written
//! and broken files, a missing calls directory and a mass disappearance never
//! place a call twice or cancel a planned run.

mod daemon_support;

use std::io::Write;
use std::time::Duration;

use daemon_support::*;
use serde_json::Value as Json;

fn subjects(emu: &Emu, subject: &str) -> usize {
    emu.creates()
        .iter()
        .filter(|c| c.body["subject"] == subject)
        .count()
}

/// Drops a marker spec and waits for its create: every change made before
/// it has been acted on by then (the daemon decides in order).
fn marker(env: &Env, emu: &Emu, n: u32) {
    let subject = format!("Marker {n}");
    env.drop_spec(&format!("marker-{n}.yaml"), &call_spec(&subject));
    wait_until(&subject, || (subjects(emu, &subject) == 1).then_some(()));
}

fn completed(env: &Env, name: &str, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let h = env.history(name);
        if h.len() == n && h.iter().all(|r| r["outcome"] == "completed") {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("{n} completed runs of {name}: {h:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn rewrite_config(env: &Env, from: &str, to: &str) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&env.config, text.replace(from, to)).unwrap();
}

fn spec_status<'a>(status: &'a Json, name: &str) -> &'a Json {
    status["specs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in status: {status}"))
}

#[test]
fn config_edits_and_restarts_place_nothing_an_edit_of_the_call_places_once() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let daemon = env.start();
    env.drop_spec("ring.yaml", &call_spec("Hello"));
    completed(&env, "ring", 1);

    // SIGHUP after editing defaults.source and defaults.tenantId
    rewrite_config(&env, APP_ID, "0b9b1f52-2e8a-4b6c-9d63-1a2b3c4d5e6f");
    rewrite_config(
        &env,
        &format!("defaults:\n  tenantId: {TENANT}"),
        "defaults:\n  tenantId: 11111111-2222-3333-4444-555555555555",
    );
    daemon.signal("HUP");
    daemon.wait_log("SIGHUP: configuration reloaded");
    marker(&env, &emu, 1);
    assert_eq!(
        subjects(&emu, "Hello"),
        1,
        "a defaults edit placed the call again"
    );

    // a restart with another callback.publicUrl
    drop(daemon);
    let url = env.public_url.clone();
    let other = url.replace("127.0.0.1", "localhost");
    rewrite_config(
        &env,
        &format!("publicUrl: {url}"),
        &format!("publicUrl: {other}"),
    );
    let daemon = env.start();
    marker(&env, &emu, 2);
    assert_eq!(
        subjects(&emu, "Hello"),
        1,
        "a new publicUrl placed the call again"
    );

    // the plan, the admin report and the ledger agree on the revision
    let plan = env.calld(&["plan", env.calls.join("ring.yaml").to_str().unwrap()]);
    let plan = String::from_utf8_lossy(&plan.stdout).to_string();
    let rev = env.history("ring")[0]["revision"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(plan.contains(&rev[..12]), "plan {plan} vs ledger {rev}");
    // (a file written less than daemon.settle before the start is held
    // until it settles, so wait for the report to carry it)
    wait_until("status to give ring's revision", || {
        let status = env.status();
        let r = spec_status(&status, "ring")["revision"].clone();
        (!r.is_null()).then_some(())
    });
    let status = env.status();
    assert_eq!(
        spec_status(&status, "ring")["revision"],
        rev.as_str(),
        "{status}"
    );

    // an edit of the subject: exactly one more create (sent with the new
    // defaults; the emulator refuses the foreign tenant, which is fine here)
    env.drop_spec("ring.yaml", &call_spec("Hello again"));
    wait_until("the second run to finish", || {
        let h = env.history("ring");
        (h.len() == 2 && h.iter().all(|r| r["state"] == "finished")).then_some(())
    });
    marker(&env, &emu, 3);
    assert_eq!(subjects(&emu, "Hello") + subjects(&emu, "Hello again"), 2);
    drop(daemon);
}

#[test]
fn two_sandbox_runs_on_one_state_directory_place_the_demo_call_once() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("calls.d")).unwrap();
    std::fs::write(
        tmp.path().join("calls.d/demo-call.yaml"),
        "subject: demo\nsource: { identity: { application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 } } }\ntargets: [ { user: { id: 550fae72-d251-43ec-868c-373732c2704f } } ]\n",
    )
    .unwrap();
    let admin = free_port();
    let cfg = tmp.path().join("calld.yaml");
    std::fs::write(
        &cfg,
        format!(
            "callsDir: {0}/calls.d\nstateDir: {0}/state\nadmin: {{ listen: 127.0.0.1:{admin} }}\ncallback: {{ listen: 127.0.0.1:0 }}\n",
            tmp.path().display()
        ),
    )
    .unwrap();
    let run = || {
        std::process::Command::new(BIN)
            .args(["run", "--once", "--timeout", "60s", "--config"])
            .arg(&cfg)
            .env_remove("CALLD_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let second = run();
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("nothing was due"),
        "{second:?}"
    );
    let hist = std::process::Command::new(BIN)
        .args(["history", "demo-call", "--format", "json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let doc: Json = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(doc["runs"].as_array().unwrap().len(), 1, "{doc}");
}

#[test]
fn moving_a_placed_spec_and_an_at_spec_after_its_run_places_nothing() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let daemon = env.start();
    env.drop_spec("a.yaml", &call_spec("Moved"));
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    env.drop_spec(
        "once.yaml",
        &format!(
            "subject: At once\ntargets: [ {{ phone: \"+14255550100\" }} ]\nschedule: {{ at: \"{at}\", deadline: none }}\n"
        ),
    );
    completed(&env, "a", 1);
    completed(&env, "once", 1);

    std::fs::create_dir_all(env.calls.join("sub")).unwrap();
    std::fs::rename(env.calls.join("a.yaml"), env.calls.join("sub/b.yaml")).unwrap();
    std::fs::rename(env.calls.join("once.yaml"), env.calls.join("later.yaml")).unwrap();
    daemon.wait_log_count("spec renamed", 2);
    marker(&env, &emu, 1);
    assert_eq!(subjects(&emu, "Moved"), 1);
    assert_eq!(subjects(&emu, "At once"), 1);
    completed(&env, "sub/b", 1);
    completed(&env, "later", 1);
    assert!(env.history("a").is_empty());
    // the rename is shown
    let out = env.calld(&["history", "sub/b"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("renamed from `a` to `sub/b`"), "{text}");
}

#[test]
fn a_file_written_in_two_chunks_is_read_when_complete() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let daemon = env.start();
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let path = env.calls.join("tomorrow.yaml");
    let mut f = std::fs::File::create(&path).unwrap();
    // the first chunk is a valid spec on its own (placed at once if read)
    f.write_all(call_spec("Tomorrow").as_bytes()).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    f.write_all(format!("schedule: {{ at: \"{at}\" }}\n").as_bytes())
        .unwrap();
    drop(f);
    wait_until("the scheduled run", || {
        let h = env.history("tomorrow");
        h.first().filter(|r| r["state"] == "scheduled").map(|_| ())
    });
    marker(&env, &emu, 1);
    assert_eq!(subjects(&emu, "Tomorrow"), 0, "placed from the first chunk");
    let s = env.status();
    let next = &spec_status(&s, "tomorrow")["nextRun"];
    let scheduled: jiff::Timestamp = next["scheduledAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(scheduled.as_second(), at.as_second());
    drop(daemon);
}

#[test]
fn a_broken_cron_file_holds_its_run_and_fixing_it_resumes() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let daemon = env.start();
    let good = "subject: Yearly\ntargets: [ { phone: \"+14255550100\" } ]\nschedule: { cron: \"0 0 1 1 *\" }\n";
    env.drop_spec("yearly.yaml", good);
    let run = wait_until("the scheduled run", || {
        let h = env.history("yearly");
        h.first()
            .filter(|r| r["state"] == "scheduled")
            .map(|r| r["id"].clone())
    });
    // truncated mid-line, then not UTF-8
    let truncated = &good[..good.len() - 12];
    let mut not_utf8 = good.as_bytes().to_vec();
    not_utf8.insert(5, 0xff);
    for (i, bytes) in [truncated.as_bytes().to_vec(), not_utf8]
        .into_iter()
        .enumerate()
    {
        let staging = env.dir.path().join("staging/yearly.yaml");
        std::fs::write(&staging, bytes).unwrap();
        std::fs::rename(&staging, env.calls.join("yearly.yaml")).unwrap();
        daemon.wait_log_count("invalid spec", i + 1);
        marker(&env, &emu, i as u32 + 1);
        let h = env.history("yearly");
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0]["id"], run);
        assert_eq!(h[0]["state"], "scheduled", "held, not canceled: {h:?}");
        let s = env.status();
        assert_eq!(spec_status(&s, "yearly")["state"], "held", "{s}");
    }
    env.drop_spec("yearly.yaml", good);
    marker(&env, &emu, 3);
    let h = env.history("yearly");
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["id"], run);
    assert_eq!(h[0]["state"], "scheduled");
    let s = env.status();
    assert_ne!(spec_status(&s, "yearly")["state"], "held", "{s}");
}

#[test]
fn a_calls_directory_missing_at_start_cancels_nothing() {
    let emu = Emu::start(FAST_CALLS);
    let admin = free_port();
    let env = Env::with_config(&emu, &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"));
    let d = env.start();
    env.drop_spec(
        "yearly.yaml",
        "subject: Yearly\ntargets: [ { phone: \"+14255550100\" } ]\nschedule: { cron: \"0 0 1 1 *\" }\n",
    );
    let run = wait_until("the scheduled run", || {
        let h = env.history("yearly");
        h.first()
            .filter(|r| r["state"] == "scheduled")
            .map(|r| r["id"].clone())
    });
    drop(d);
    let away = env.dir.path().join("calls.away");
    std::fs::rename(&env.calls, &away).unwrap();
    let d = env.start_with(&[], &[]);
    d.wait_log("the calls directory has never been read");
    // not ready, and it says why
    wait_until("/readyz 503 naming the calls directory", || {
        http_get(admin, "/readyz").filter(|(c, b)| *c == 503 && b.contains("calls directory"))
    });
    std::fs::rename(&away, &env.calls).unwrap();
    wait_until("/readyz 200", || {
        http_get(admin, "/readyz").filter(|(c, _)| *c == 200)
    });
    marker(&env, &emu, 1);
    let h = env.history("yearly");
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["id"], run);
    assert_eq!(h[0]["state"], "scheduled");
    drop(d);
}

#[test]
fn moving_20_of_30_specs_out_holds_them_until_prune_after() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::with_config(&emu, "daemon: { debounce: 20ms, pruneAfter: 4s }\n");
    let d = env.start();
    for i in 0..30 {
        env.drop_spec(
            &format!("y{i:02}.yaml"),
            &format!("subject: Y{i}\ntargets: [ {{ phone: \"+14255550100\" }} ]\nschedule: {{ cron: \"0 0 1 1 *\" }}\n"),
        );
    }
    wait_until("30 scheduled runs", || {
        (0..30)
            .all(|i| env.history(&format!("y{i:02}")).len() == 1)
            .then_some(())
    });
    let out = env.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for i in 0..20 {
        let f = format!("y{i:02}.yaml");
        std::fs::rename(env.calls.join(&f), out.join(&f)).unwrap();
    }
    d.wait_log("MASS DISAPPEARANCE");
    for i in 0..20 {
        let h = env.history(&format!("y{i:02}"));
        assert_eq!(h[0]["state"], "scheduled", "held: {h:?}");
    }
    // after pruneAfter they are removed for real
    wait_until("the held runs canceled", || {
        (0..20)
            .all(|i| env.history(&format!("y{i:02}"))[0]["outcome"] == "canceled")
            .then_some(())
    });
    for i in 20..30 {
        assert_eq!(env.history(&format!("y{i:02}"))[0]["state"], "scheduled");
    }
    drop(d);
}

#[test]
fn run_once_and_check_exit_codes() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    // an invalid spec: exit 1, saying why
    env.drop_spec("bad.yaml", "subject: [unclosed\n");
    let mut d = env.start_with(&["--once", "--timeout", "30s"], &[]);
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", d.log_text());
    // a missing calls directory: exit 2
    std::fs::remove_dir_all(&env.calls).unwrap();
    let mut d = env.start_with(&["--once", "--timeout", "30s"], &[]);
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(2), "{}", d.log_text());
    // check on a directory with no spec file: a warning and exit 1
    std::fs::create_dir_all(&env.calls).unwrap();
    let out = env.calld(&["check", env.calls.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no spec files"),
        "{out:?}"
    );
}

#[test]
fn names_obey_one_rule_and_compare_after_nfc() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    std::fs::write(env.calls.join("bad\nname.yaml"), call_spec("x")).unwrap();
    let out = env.calld(&["check", env.calls.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text.contains("bad\nname.yaml") && text.contains("refused"),
        "{text}"
    );
    std::fs::remove_file(env.calls.join("bad\nname.yaml")).unwrap();
    // café, precomposed and with a combining accent: one name, a duplicate
    std::fs::write(env.calls.join("caf\u{e9}.yaml"), call_spec("x")).unwrap();
    std::fs::write(env.calls.join("cafe\u{301}.yaml"), call_spec("y")).unwrap();
    let out = env.calld(&["check", env.calls.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text.contains("duplicate name"), "{text}");
}

#[test]
fn a_rename_while_the_daemon_is_stopped_is_still_a_rename() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let d = env.start();
    env.drop_spec("standup.yaml", &call_spec("Standup"));
    completed(&env, "standup", 1);
    drop(d);
    std::fs::create_dir_all(env.calls.join("archive")).unwrap();
    std::fs::rename(
        env.calls.join("standup.yaml"),
        env.calls.join("archive/standup.yaml"),
    )
    .unwrap();
    let d = env.start();
    d.wait_log("spec renamed");
    marker(&env, &emu, 1);
    assert_eq!(subjects(&emu, "Standup"), 1);
    completed(&env, "archive/standup", 1);
}

#[test]
fn a_file_rewritten_just_before_a_start_keeps_its_planned_run() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let d = env.start();
    let text = "subject: Yearly\ntargets: [ { phone: \"+14255550100\" } ]\nschedule: { cron: \"0 0 1 1 *\" }\n";
    env.drop_spec("yearly.yaml", text);
    let run = wait_until("the scheduled run", || {
        let h = env.history("yearly");
        h.first()
            .filter(|r| r["state"] == "scheduled")
            .map(|r| r["id"].clone())
    });
    drop(d);
    // rewritten in place (a comment), then the daemon starts at once
    std::fs::write(env.calls.join("yearly.yaml"), format!("# edited\n{text}")).unwrap();
    let d = env.start();
    marker(&env, &emu, 1);
    wait_until("the file read once settled", || {
        let s = env.status();
        (spec_status(&s, "yearly")["state"] != "held").then_some(())
    });
    let h = env.history("yearly");
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["id"], run);
    assert_eq!(h[0]["state"], "scheduled");
    drop(d);
}

#[test]
fn an_operator_confirms_a_mass_removal_with_prune_after_0s_and_sighup() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::with_config(&emu, "daemon: { debounce: 20ms, pruneAfter: 1h }\n");
    let d = env.start();
    for i in 0..12 {
        env.drop_spec(
            &format!("y{i:02}.yaml"),
            &format!("subject: Y{i}\ntargets: [ {{ phone: \"+14255550100\" }} ]\nschedule: {{ cron: \"0 0 1 1 *\" }}\n"),
        );
    }
    wait_until("12 scheduled runs", || {
        (0..12)
            .all(|i| env.history(&format!("y{i:02}")).len() == 1)
            .then_some(())
    });
    for i in 0..12 {
        env.remove_spec(&format!("y{i:02}.yaml"));
    }
    d.wait_log("MASS DISAPPEARANCE");
    marker(&env, &emu, 1);
    assert_eq!(env.history("y00")[0]["state"], "scheduled", "held");
    rewrite_config(&env, "pruneAfter: 1h", "pruneAfter: 0s");
    d.signal("HUP");
    wait_until("the held runs canceled", || {
        (0..12)
            .all(|i| env.history(&format!("y{i:02}"))[0]["outcome"] == "canceled")
            .then_some(())
    });
}
