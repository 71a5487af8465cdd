//! `calld status` as a timers table and `calld history`, through the real
//! binary against a real daemon (live mode, the emulator on loopback):
//! every state (active, waiting, suspended, held, removed), the next run in
//! the spec's zone with its jitter, the last run and last success, the
//! reason cut to the terminal's width, JSON, the admin endpoint
//! (`--admin URL`, and the fallback when no ledger is found), and the
//! CLI's exit codes.

mod daemon_support;

use std::process::Command;

use daemon_support::*;
use serde_json::Value as Json;

fn spec_of<'a>(status: &'a Json, name: &str) -> Option<&'a Json> {
    status["specs"]
        .as_array()?
        .iter()
        .find(|s| s["name"].as_str() == Some(name))
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_shows_every_state_with_next_last_and_reason() {
    let emu = Emu::start(FAST_CALLS);
    let admin = free_port();
    let env = Env::with_config(&emu, &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"));
    // placed at once, then waiting for a change
    env.drop_spec("once.yaml", &call_spec("Once"));
    // a weekday cron in Berlin with jitter: active, next in CET/CEST
    env.drop_spec(
        "standup.yaml",
        &format!(
            "{}schedule:\n  cron: \"0 9 * * Mon-Fri\"\n  timezone: Europe/Berlin\n  jitter: 30s\n",
            call_spec("Standup")
        ),
    );
    env.drop_spec(
        "paused.yaml",
        &format!(
            "{}suspend: true\nschedule:\n  cron: \"0 10 * * *\"\n",
            call_spec("Paused")
        ),
    );
    // an `at` run a few seconds ahead that becomes invalid before its time
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(6);
    let at_spec = format!(
        "{}schedule:\n  at: {at}\n  deadline: 1h\n",
        call_spec("Later")
    );
    env.drop_spec("later.yaml", &at_spec);
    let _daemon = env.start();

    wait_until("the once run completed", || {
        let s = env.status();
        (spec_of(&s, "once")?["lastRun"]["outcome"] == "completed").then_some(())
    });
    let s = wait_until("later's run planned", || {
        let s = env.status();
        (!spec_of(&s, "later")?["nextRun"].is_null()).then_some(s)
    });

    let once = spec_of(&s, "once").unwrap();
    assert_eq!(once["state"], "waiting", "{once}");
    assert!(
        once["stateReason"]
            .as_str()
            .unwrap()
            .contains("placed once for this revision"),
        "{once}"
    );
    assert_eq!(once["lastSuccess"]["id"], once["lastRun"]["id"], "{once}");
    assert!(once["nextRun"].is_null());

    let standup = spec_of(&s, "standup").unwrap();
    assert_eq!(standup["state"], "active", "{standup}");
    assert_eq!(standup["timezone"], "Europe/Berlin");
    assert_eq!(standup["schedule"], "cron 0 9 * * Mon-Fri");
    let next = &standup["nextRun"];
    let scheduled: jiff::Timestamp = next["scheduledAt"].as_str().unwrap().parse().unwrap();
    let due: jiff::Timestamp = next["dueAt"].as_str().unwrap().parse().unwrap();
    let local = scheduled.to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
    assert_eq!((local.hour(), local.minute()), (9, 0), "09:00 Berlin time");
    let zone = local.strftime("%Z").to_string();
    let shown = standup["nextLocal"].as_str().unwrap();
    assert!(
        shown.contains("09:00") && shown.ends_with(&zone),
        "{shown} in {zone}"
    );
    assert!(due >= scheduled);
    if due > scheduled {
        assert!(!standup["nextJitter"].is_null(), "jitter shown: {standup}");
    }
    assert!(standup["lastSuccess"].is_null());

    let paused = spec_of(&s, "paused").unwrap();
    assert_eq!(paused["state"], "suspended", "{paused}");

    // later becomes invalid before its time: held, and once its time has
    // passed its held run is not shown as next
    std::fs::write(
        env.calls.join("later.yaml"),
        format!("{at_spec}subjcet: typo\n"),
    )
    .unwrap();
    let s = wait_until("later held and past its time", || {
        let s = env.status();
        let later = spec_of(&s, "later")?;
        (later["state"] == "held"
            && jiff::Timestamp::now() > at + jiff::SignedDuration::from_secs(1))
        .then_some(())?;
        Some(env.status())
    });
    let later = spec_of(&s, "later").unwrap();
    assert_eq!(later["state"], "held", "{later}");
    assert!(
        later["nextRun"].is_null(),
        "a past held run is not next: {later}"
    );
    let why = later["stateReason"].as_str().unwrap();
    assert!(why.contains("held") && why.contains("subjcet"), "{why}");
    assert!(emu.creates().iter().all(|c| c.body["subject"] != "Later"));

    // the text table: one row per spec, the columns, the reason cut
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&env.config)
        .env("COLUMNS", "100")
        .env_remove("CALLD_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = text(&out);
    let head = table.lines().next().unwrap();
    for col in [
        "SPEC",
        "STATE",
        "SCHEDULE",
        "NEXT",
        "LAST",
        "LAST SUCCESS",
        "REASON",
    ] {
        assert!(head.contains(col), "{head}");
    }
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in\n{table}"))
            .to_string()
    };
    assert!(
        row("standup").contains(&format!("09:00 {zone} (")),
        "{table}"
    );
    assert!(
        row("standup").contains("(in ") || row("standup").contains(", in "),
        "{table}"
    );
    assert!(
        row("once").contains("completed") && row("once").contains(" ago"),
        "{table}"
    );
    assert!(row("paused").contains("suspended"), "{table}");
    let held_row = row("later");
    assert!(held_row.contains("held"), "{table}");
    assert!(held_row.ends_with('…'), "the reason is cut: {held_row}");
    let wide = env.calld(&["status", "--wide"]);
    let wide_text = text(&wide);
    let wide_row = wide_text.lines().find(|l| l.starts_with("later ")).unwrap();
    assert!(
        wide_row.contains("subjcet"),
        "--wide keeps it whole: {wide_row}"
    );

    // remotely: the same document through the admin endpoint
    let remote = env.calld(&[
        "status",
        "--admin",
        &format!("http://127.0.0.1:{admin}"),
        "--format",
        "json",
    ]);
    assert!(remote.status.success(), "{remote:?}");
    let remote: Json = serde_json::from_slice(&remote.stdout).unwrap();
    for name in ["once", "standup", "paused", "later"] {
        assert_eq!(
            spec_of(&remote, name).unwrap()["state"],
            spec_of(&s, name).unwrap()["state"],
            "{name}"
        );
    }

    // no state directory named anywhere and no ./.calld: the
    // configuration's admin endpoint answers
    let bare = env.dir.path().join("bare.yaml");
    std::fs::write(&bare, format!("admin: {{ listen: 127.0.0.1:{admin} }}\n")).unwrap();
    let out = Command::new(BIN)
        .args(["status", "--format", "json", "--config"])
        .arg(&bare)
        .current_dir(env.dir.path())
        .env_remove("CALLD_CONFIG")
        .env_remove("CALLD_STATE_DIR")
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let via: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec_of(&via, "standup").unwrap()["state"], "active");

    // removed: the file goes, its history stays
    env.remove_spec("once.yaml");
    wait_until("once removed", || {
        let s = env.status();
        (spec_of(&s, "once")?["state"] == "removed").then_some(())
    });
}

#[test]
fn history_exit_codes_formats_and_limit() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::with_config(
        &emu,
        &format!("admin: {{ listen: 127.0.0.1:{} }}\n", free_port()),
    );
    env.drop_spec("a.yaml", &call_spec("A"));
    let _daemon = env.start();
    wait_until("a completed", || {
        let runs = env.history("a");
        (runs.first()?["outcome"] == "completed").then_some(())
    });
    // a second revision: two runs
    env.drop_spec("a.yaml", &call_spec("A again"));
    wait_until("a's second run", || {
        let runs = env.history("a");
        (runs.len() == 2 && runs[0]["outcome"] == "completed").then_some(())
    });

    let out = env.calld(&["history", "nope"]);
    assert_eq!(out.status.code(), Some(1), "unknown spec: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    for cmd in ["history", "status"] {
        let mut args = vec![cmd];
        if cmd == "history" {
            args.push("a");
        }
        args.extend(["--format", "github"]);
        let out = env.calld(&args);
        assert_eq!(out.status.code(), Some(2), "{cmd} --format github: {out:?}");
    }
    let one = env.calld(&["history", "a", "--limit", "1", "--format", "json"]);
    let one: Json = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(one["runs"].as_array().unwrap().len(), 1);
    let all = env.calld(&["history", "a", "--limit", "0", "--format", "json"]);
    assert!(all.status.success());
    let all: Json = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(
        all["runs"].as_array().unwrap().len(),
        2,
        "--limit 0: every run"
    );
    let txt = env.calld(&["history", "a"]);
    assert!(txt.status.success());
    let t = text(&txt);
    assert_eq!(
        t.matches("\nrun ").count() + usize::from(t.starts_with("run ")),
        2,
        "{t}"
    );
    assert!(t.contains("established"), "call states listed: {t}");
}
