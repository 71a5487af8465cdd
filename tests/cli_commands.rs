//! `calld check`, `render`, `plan` and `schema` through the real binary:
//! exit codes (0 fine, 1 a problem found, 2 usage or environment), text,
//! JSON and GitHub-annotation output, and planned run times across the 2026
//! daylight-saving changes of New York and Berlin.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{Value as Json, json};

const HEAD: &str = "callbackUri: https://bot.contoso.com/api/calls\nsource:\n  identity:\n    applicationInstance: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 }\n";
const TARGET: &str = "targets:\n  - phone: \"+14255550100\"\n";

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        // a PSTN call needs a tenant (Graph's create-call rules)
        std::fs::write(
            tmp.path().join("calld.yaml"),
            "callsDir: calls\ndefaults:\n  tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47\n",
        )
        .unwrap();
        std::fs::create_dir(tmp.path().join("calls")).unwrap();
        Env { tmp }
    }
    fn dir(&self) -> &Path {
        self.tmp.path()
    }
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir().join("calls").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
    /// `calld <args> --config calld.yaml`, run in the temp dir.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::cargo_bin("calld")
            .unwrap()
            .current_dir(self.dir())
            .env_remove("CALLD_CONFIG")
            .env("NO_COLOR", "1")
            .args(args)
            .args(["--config", "calld.yaml"])
            .output()
            .unwrap();
        (
            out.status.code().expect("exited, not killed"),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

fn calld() -> Command {
    let mut c = Command::cargo_bin("calld").unwrap();
    c.env_remove("CALLD_CONFIG");
    c
}

#[test]
fn exit_codes() {
    let env = Env::new();
    env.write("good.yaml", &format!("{HEAD}{TARGET}"));
    assert_eq!(env.run(&["check"]).0, 0, "the calls dir from the config");
    assert_eq!(env.run(&["check", "calls/good.yaml"]).0, 0);
    assert_eq!(env.run(&["render", "calls/good.yaml"]).0, 0);
    assert_eq!(env.run(&["plan"]).0, 0);

    env.write("bad.yaml", &format!("{HEAD}{TARGET}subjet: x\n"));
    assert_eq!(env.run(&["check"]).0, 1);
    assert_eq!(env.run(&["check", "calls/bad.yaml"]).0, 1);
    assert_eq!(env.run(&["render", "calls"]).0, 1);
    assert_eq!(env.run(&["plan", "calls"]).0, 1);
    assert_eq!(
        env.run(&["render", "calls/good.yaml", "--name", "nope"]).0,
        1,
        "no spec of that name"
    );

    // 2: usage and environment
    let (code, _, err) = env.run(&["render", "calls/good.yaml", "--api", "v2"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown API version `v2`"), "{err}");
    let (code, _, err) = env.run(&["check", "calls/missing.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("calls/missing.yaml"), "{err}");
    assert_eq!(env.run(&["render", "nowhere"]).0, 2);
    assert_eq!(env.run(&["plan", "nowhere"]).0, 2);
    let (code, _, err) = env.run(&["plan", "calls", "--from", "yesterday"]);
    assert_eq!(code, 2);
    assert!(err.contains("--from"), "{err}");
    std::fs::write(env.dir().join("broken.yaml"), "callsDirr: calls\n").unwrap();
    for cmd in ["check", "plan"] {
        let out = calld()
            .current_dir(env.dir())
            .args([cmd, "--config", "broken.yaml"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("configuration") && err.contains("callsDirr"),
            "{err}"
        );
    }
    let out = calld()
        .current_dir(env.dir())
        .args([
            "render",
            "calls/good.yaml",
            "--config",
            "no-such-config.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = calld().args(["check", "--format", "xml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let out = calld().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_text_and_json() {
    let env = Env::new();
    env.write("good.yaml", &format!("{HEAD}{TARGET}"));
    env.write(
        "team/warn.yaml",
        &format!("{HEAD}{TARGET}schedule:\n  at: 2020-01-01T00:00:00Z\n"),
    );
    env.write("bad.yaml", &format!("{HEAD}targets:\n  - phone: \"555\"\n"));
    let (code, out, _) = env.run(&["check"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "calls/bad.yaml:6:12: error: targets[0].phone.id: `555` is not an E.164 phone number: write + and 7 to 15 digits, such as \"+12345678890\" (in quotes)",
            "calls/team/warn.yaml:8:7: warning: schedule.at: 2020-01-01T00:00:00Z is in the past: this run will not be placed (it is recorded as missed once past its deadline)",
            "3 files, 2 valid specs: 1 errors, 1 warnings",
        ]
    );

    let (code, out, _) = env.run(&["check", "--format", "json"]);
    assert_eq!(code, 1);
    let doc: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc,
        json!({
            "files": 3,
            "specs": ["good", "team/warn"],
            "invalidFiles": ["calls/bad.yaml"],
            "errors": 1,
            "warnings": 1,
            "diagnostics": [
                {"file": "calls/bad.yaml", "line": 6, "column": 12, "severity": "error",
                 "path": "targets[0].phone.id", "spec": "bad",
                 "message": "`555` is not an E.164 phone number: write + and 7 to 15 digits, such as \"+12345678890\" (in quotes)"},
                {"file": "calls/team/warn.yaml", "line": 8, "column": 7, "severity": "warning",
                 "path": "schedule.at", "spec": "team/warn",
                 "message": "2020-01-01T00:00:00Z is in the past: this run will not be placed (it is recorded as missed once past its deadline)"},
            ]
        })
    );
    assert_eq!(out.lines().count(), 1, "one JSON document, one line");

    // a folder inside the calls directory names specs as the daemon does
    let (_, out, _) = env.run(&["check", "calls/team", "--format", "json"]);
    let doc: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["specs"], json!(["team/warn"]));
}

#[test]
fn github_annotations_one_per_finding() {
    let env = Env::new();
    env.write(
        "a,b.yaml",
        &format!("{HEAD}{TARGET}subjet: x\nschedule:\n  cron: \"0 9 * *\"\n"),
    );
    env.write(
        "w.yaml",
        &format!("{HEAD}{TARGET}schedule:\n  at: 2020-01-01T00:00:00Z\n"),
    );
    let (code, out, _) = env.run(&["check", "--format", "github"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    // properties escape `,` and `:`; the message keeps them
    assert_eq!(
        lines[0],
        "::error file=calls/a%2Cb.yaml,line=7,col=1::subjet: unknown key `subjet`: did you mean `subject`?"
    );
    assert!(
        lines[1].starts_with(
            "::error file=calls/a%2Cb.yaml,line=9,col=9::schedule.cron: cron expression `0 9 * *` has 4 fields"
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(
            "::warning file=calls/w.yaml,line=8,col=7::schedule.at: 2020-01-01T00:00:00Z is in the past"
        ),
        "{}",
        lines[2]
    );
    // and plan gives the same annotations
    let (code, plan_out, _) = env.run(&["plan", "--format", "github"]);
    assert_eq!(code, 1);
    assert_eq!(plan_out, out);
}

#[test]
fn render_prints_one_request_per_spec() {
    let env = Env::new();
    env.write(
        "multi.yaml",
        &format!("name: one\n{HEAD}{TARGET}---\nname: two\n{HEAD}{TARGET}modalities: [video]\n"),
    );
    let (code, out, err) = env.run(&["render", "calls/multi.yaml"]);
    assert_eq!(code, 0, "{err}");
    let reqs: Vec<Json> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0]["name"], "one");
    assert_eq!(reqs[1]["name"], "two");
    for r in &reqs {
        assert_eq!(r["method"], "POST");
        assert_eq!(
            r["url"],
            "https://graph.microsoft.com/v1.0/communications/calls"
        );
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "method", "url", "body"]);
        assert_eq!(
            r["body"]["callbackUri"], "https://bot.contoso.com/api/calls",
            "no calldRun"
        );
    }
    assert_eq!(reqs[1]["body"]["requestedModalities"], json!(["video"]));
    let (code, out, _) = env.run(&[
        "render",
        "calls/multi.yaml",
        "--name",
        "two",
        "--api",
        "beta",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);
    let r: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        r["url"],
        "https://graph.microsoft.com/beta/communications/calls"
    );

    // an invalid spec beside valid ones: the valid are printed, the error
    // goes to stderr, exit 1
    env.write("bad.yaml", &format!("{HEAD}targets: []\n"));
    let (code, out, err) = env.run(&["render", "calls"]);
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 2);
    assert!(
        err.contains("calls/bad.yaml:5:10: error: targets: `targets` is empty"),
        "{err}"
    );
}

#[test]
fn schema_is_json_schema_of_the_spec_keys() {
    let out = calld().arg("schema").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let schema: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
    let mut keys: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    let mut expected = calld::spec::validate::SPEC_KEYS.to_vec();
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(
        schema["properties"]["modalities"]["items"]["enum"],
        json!(["audio", "video", "videoBasedScreenSharing", "data"])
    );
}

#[test]
fn plan_text_and_json() {
    let env = Env::new();
    env.write(
        "standup.yaml",
        &format!(
            "{HEAD}{TARGET}schedule:\n  cron: \"0 9 * * Mon-Fri\"\n  timezone: Europe/Berlin\n  jitter: 30s\n"
        ),
    );
    env.write(
        "now.yaml",
        &format!("{HEAD}{TARGET}suspend: true\nmedia:\n  appHosted: {{ blob: b }}\n"),
    );
    let (code, out, err) = env.run(&["plan", "--from", "2026-06-05T00:00:00Z", "--count", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("now  (calls/now.yaml:1)  [suspended: nothing new is placed]"),
        "{out}"
    );
    assert!(
        out.contains("  permissions: Calls.Initiate.All, Calls.AccessMedia.All"),
        "{out}"
    );
    assert!(
        out.contains("  schedule:    once, as soon as it is seen (again after each change)"),
        "{out}"
    );
    assert!(out.contains("standup  (calls/standup.yaml:1)"), "{out}");
    assert!(
        out.contains("  schedule:    cron \"0 9 * * Mon-Fri\" in Europe/Berlin, deadline 5m, jitter up to 30s, concurrency forbid"),
        "{out}"
    );
    assert!(
        out.contains("    2026-06-05T09:00:00+02:00[Europe/Berlin] 2026-06-05T07:00:00Z"),
        "{out}"
    );
    assert!(
        out.contains("    2026-06-08T09:00:00+02:00[Europe/Berlin] 2026-06-08T07:00:00Z"),
        "{out}"
    );

    let (code, out, _) = env.run(&[
        "plan",
        "--from",
        "2026-06-05T00:00:00Z",
        "--count",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let doc: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["from"], "2026-06-05T00:00:00Z");
    assert_eq!(doc["errors"], 0);
    assert_eq!(doc["diagnostics"], json!([]));
    let specs = doc["specs"].as_array().unwrap();
    assert_eq!(specs.len(), 2);
    let now = &specs[0];
    assert_eq!(now["name"], "now");
    assert_eq!(now["file"], "calls/now.yaml");
    assert_eq!(now["line"], 1);
    assert_eq!(now["suspended"], true);
    assert_eq!(now["kind"], "once");
    assert_eq!(now["timezone"], Json::Null);
    assert_eq!(now["runs"], json!([]));
    assert_eq!(
        now["permissions"],
        json!(["Calls.Initiate.All", "Calls.AccessMedia.All"])
    );
    assert_eq!(now["revision"].as_str().unwrap().len(), 12);
    assert_eq!(now["warnings"], json!([]));
    let standup = &specs[1];
    assert_eq!(standup["kind"], "cron");
    assert_eq!(standup["timezone"], "Europe/Berlin");
    assert_eq!(
        standup["runs"],
        json!([
            {"utc": "2026-06-05T07:00:00Z", "local": "2026-06-05T09:00:00+02:00[Europe/Berlin]"},
            {"utc": "2026-06-08T07:00:00Z", "local": "2026-06-08T09:00:00+02:00[Europe/Berlin]"},
        ])
    );
    let keys: Vec<&String> = standup.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "name",
            "file",
            "line",
            "suspended",
            "kind",
            "schedule",
            "timezone",
            "runs",
            "permissions",
            "revision",
            "warnings"
        ]
    );
}

/// `calld plan --format json` for one spec from a given instant: its runs
/// as (utc, local).
fn planned(env: &Env, file: &str, schedule: &str, from: &str) -> Vec<(String, String)> {
    env.write(file, &format!("{HEAD}{TARGET}schedule:\n{schedule}"));
    let (code, out, err) = env.run(&[
        "plan",
        &format!("calls/{file}"),
        "--from",
        from,
        "--count",
        "3",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}{out}");
    let doc: Json = serde_json::from_str(&out).unwrap();
    doc["specs"][0]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["utc"].as_str().unwrap().to_string(),
                r["local"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn runs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(u, l)| (u.to_string(), l.to_string()))
        .collect()
}

#[test]
fn plan_across_new_york_dst_2026() {
    let env = Env::new();
    let ny = "  timezone: America/New_York\n";
    // spring forward, Sun 8 Mar 2026 02:00 EST -> 03:00 EDT: 02:30 does not
    // exist, the fixed-time job runs at the first instant after the gap
    assert_eq!(
        planned(
            &env,
            "ny-spring.yaml",
            &format!("  cron: \"30 2 * * *\"\n{ny}"),
            "2026-03-07T00:00:00Z"
        ),
        runs(&[
            (
                "2026-03-07T07:30:00Z",
                "2026-03-07T02:30:00-05:00[America/New_York]"
            ),
            (
                "2026-03-08T07:00:00Z",
                "2026-03-08T03:00:00-04:00[America/New_York]"
            ),
            (
                "2026-03-09T06:30:00Z",
                "2026-03-09T02:30:00-04:00[America/New_York]"
            ),
        ])
    );
    // an hourly job skips the hour that does not exist
    assert_eq!(
        planned(
            &env,
            "ny-spring-hourly.yaml",
            &format!("  cron: \"0 * * * *\"\n{ny}"),
            "2026-03-08T05:30:00Z"
        ),
        runs(&[
            (
                "2026-03-08T06:00:00Z",
                "2026-03-08T01:00:00-05:00[America/New_York]"
            ),
            (
                "2026-03-08T07:00:00Z",
                "2026-03-08T03:00:00-04:00[America/New_York]"
            ),
            (
                "2026-03-08T08:00:00Z",
                "2026-03-08T04:00:00-04:00[America/New_York]"
            ),
        ])
    );
    // fall back, Sun 1 Nov 2026 02:00 EDT -> 01:00 EST: 01:30 happens twice,
    // the fixed-time job runs at the first only
    assert_eq!(
        planned(
            &env,
            "ny-fall.yaml",
            &format!("  cron: \"30 1 * * *\"\n{ny}"),
            "2026-10-31T00:00:00Z"
        ),
        runs(&[
            (
                "2026-10-31T05:30:00Z",
                "2026-10-31T01:30:00-04:00[America/New_York]"
            ),
            (
                "2026-11-01T05:30:00Z",
                "2026-11-01T01:30:00-04:00[America/New_York]"
            ),
            (
                "2026-11-02T06:30:00Z",
                "2026-11-02T01:30:00-05:00[America/New_York]"
            ),
        ])
    );
    // the hourly job runs at both 01:00s, an hour apart in real time
    assert_eq!(
        planned(
            &env,
            "ny-fall-hourly.yaml",
            &format!("  cron: \"0 * * * *\"\n{ny}"),
            "2026-11-01T04:30:00Z"
        ),
        runs(&[
            (
                "2026-11-01T05:00:00Z",
                "2026-11-01T01:00:00-04:00[America/New_York]"
            ),
            (
                "2026-11-01T06:00:00Z",
                "2026-11-01T01:00:00-05:00[America/New_York]"
            ),
            (
                "2026-11-01T07:00:00Z",
                "2026-11-01T02:00:00-05:00[America/New_York]"
            ),
        ])
    );
}

#[test]
fn plan_across_berlin_dst_2026() {
    let env = Env::new();
    let berlin = "  timezone: Europe/Berlin\n";
    // spring forward, Sun 29 Mar 2026 02:00 CET -> 03:00 CEST
    assert_eq!(
        planned(
            &env,
            "be-spring.yaml",
            &format!("  cron: \"30 2 * * *\"\n{berlin}"),
            "2026-03-28T00:00:00Z"
        ),
        runs(&[
            (
                "2026-03-28T01:30:00Z",
                "2026-03-28T02:30:00+01:00[Europe/Berlin]"
            ),
            (
                "2026-03-29T01:00:00Z",
                "2026-03-29T03:00:00+02:00[Europe/Berlin]"
            ),
            (
                "2026-03-30T00:30:00Z",
                "2026-03-30T02:30:00+02:00[Europe/Berlin]"
            ),
        ])
    );
    // fall back, Sun 25 Oct 2026 03:00 CEST -> 02:00 CET
    assert_eq!(
        planned(
            &env,
            "be-fall.yaml",
            &format!("  cron: \"30 2 * * *\"\n{berlin}"),
            "2026-10-24T00:00:00Z"
        ),
        runs(&[
            (
                "2026-10-24T00:30:00Z",
                "2026-10-24T02:30:00+02:00[Europe/Berlin]"
            ),
            (
                "2026-10-25T00:30:00Z",
                "2026-10-25T02:30:00+02:00[Europe/Berlin]"
            ),
            (
                "2026-10-26T01:30:00Z",
                "2026-10-26T02:30:00+01:00[Europe/Berlin]"
            ),
        ])
    );
    // a one-shot local time inside the gap: the first instant after it
    assert_eq!(
        planned(
            &env,
            "be-at-gap.yaml",
            &format!("  at: 2026-03-29T02:30:00\n{berlin}"),
            "2026-03-01T00:00:00Z"
        ),
        runs(&[(
            "2026-03-29T01:00:00Z",
            "2026-03-29T03:00:00+02:00[Europe/Berlin]"
        )])
    );
    // and one inside the fold: its first occurrence
    assert_eq!(
        planned(
            &env,
            "be-at-fold.yaml",
            &format!("  at: 2026-10-25T02:30:00\n{berlin}"),
            "2026-10-01T00:00:00Z"
        ),
        runs(&[(
            "2026-10-25T00:30:00Z",
            "2026-10-25T02:30:00+02:00[Europe/Berlin]"
        )])
    );
}
