//! `calld diff PATH` against a real running daemon (live mode, the
//! emulator on loopback): what a proposed calls directory would place at
//! once (and how many it rings), schedule, cancel and hold, from the
//! ledger or through the admin endpoint; exit 0 when nothing would change,
//! 1 when something would; and it never writes (no call placed, the
//! daemon's runs untouched).

mod daemon_support;

use std::path::Path;

use daemon_support::*;
use serde_json::Value as Json;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn names(doc: &Json, key: &str) -> Vec<String> {
    doc[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["spec"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn diff_shows_what_a_change_would_do() {
    let emu = Emu::start(FAST_CALLS);
    let admin = free_port();
    let env = Env::with_config(&emu, &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"));
    let daily = |hour: u32| {
        format!(
            "{}schedule: {{ cron: \"0 {hour} * * *\", timezone: Europe/Berlin }}\n",
            call_spec("Daily")
        )
    };
    env.drop_spec("hello.yaml", &call_spec("Hello"));
    env.drop_spec("daily.yaml", &daily(9));
    env.drop_spec("old.yaml", &daily(7));
    env.drop_spec("same.yaml", &daily(8));
    let _daemon = env.start();
    wait_until("hello completed and three runs planned", || {
        let s = env.status();
        let specs = s["specs"].as_array()?;
        let planned = specs.iter().filter(|s| !s["nextRun"].is_null()).count();
        (env.history("hello").first()?["outcome"] == "completed" && planned == 3).then_some(())
    });

    // the same directory: nothing would change
    let out = env.calld(&["diff", env.calls.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["unchanged"], 4, "{doc}");

    // the proposal: hello unchanged, daily at 10 instead of 9, old removed,
    // a new unscheduled spec ringing two people, a broken one
    let proposed = env.dir.path().join("proposed");
    write(&proposed, "hello.yaml", &call_spec("Hello"));
    write(&proposed, "daily.yaml", &daily(10));
    write(&proposed, "same.yaml", &daily(8));
    write(
        &proposed,
        "page.yaml",
        "subject: Page\ntargets:\n  - phone: \"+14255550100\"\n  - phone: \"+14255550101\"\n",
    );
    write(
        &proposed,
        "broken.yaml",
        &format!("{}subjcet: typo\n", call_spec("Broken")),
    );
    let creates_before = emu.creates().len();
    let out = env.calld(&["diff", proposed.to_str().unwrap(), "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "something would change: {out:?}"
    );
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(names(&doc, "placeNow"), ["page"], "{doc}");
    assert_eq!(doc["placeNow"][0]["targets"], 2);
    assert_eq!(doc["ringsNow"], 2);
    assert_eq!(names(&doc, "schedule"), ["daily"], "{doc}");
    assert!(
        doc["schedule"][0]["nextLocal"]
            .as_str()
            .unwrap()
            .contains("10:00"),
        "{doc}"
    );
    let mut canceled = names(&doc, "cancel");
    canceled.sort();
    assert_eq!(canceled, ["daily", "old"], "{doc}");
    assert!(
        doc["cancel"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c["run"].is_null())
    );
    assert_eq!(names(&doc, "held"), ["broken"], "{doc}");
    assert!(
        doc["held"][0]["error"]
            .as_str()
            .unwrap()
            .contains("subjcet")
    );
    assert_eq!(doc["unchanged"], 2, "hello and same: {doc}");

    // the text, as the GitOps job posts it
    let out = env.calld(&["diff", proposed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    assert!(
        text.contains("place now: 1 run(s), ringing 2 target(s) at once"),
        "{text}"
    );
    assert!(
        text.contains("+ page") && text.contains("~ daily") && text.contains("- old"),
        "{text}"
    );
    assert!(text.contains("! broken"), "{text}");

    // through the admin endpoint: the same answer
    let out = env.calld(&[
        "diff",
        proposed.to_str().unwrap(),
        "--admin",
        &format!("http://127.0.0.1:{admin}"),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let remote: Json = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["placeNow", "schedule", "held"] {
        assert_eq!(names(&remote, key), names(&doc, key), "{key}");
    }
    assert_eq!(remote["unchanged"], doc["unchanged"]);

    // it wrote nothing: no call placed, the daemon's plan as it was
    assert_eq!(emu.creates().len(), creates_before);
    let s = env.status();
    let old = s["specs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "old")
        .unwrap();
    assert_eq!(old["state"], "active", "{old}");

    // a bad path: exit 2
    let out = env.calld(&["diff", "/nonexistent/calls.d"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_gitops_workflow_posts_the_diff() {
    let wf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/gitops/config-repo/.github/workflows/calld.yml"),
    )
    .unwrap();
    let docs: Vec<Json> = serde_saphyr::from_multiple(&wf).unwrap();
    let steps = docs[0]["jobs"]["check"]["steps"].as_array().unwrap();
    let diff = steps
        .iter()
        .find(|s| s["name"] == "calld diff")
        .expect("a calld diff step");
    let run = diff["run"].as_str().unwrap();
    assert!(
        run.contains("calld diff calls.d --config calld.yaml --admin"),
        "{run}"
    );
    assert!(run.contains("GITHUB_STEP_SUMMARY"), "{run}");
}
