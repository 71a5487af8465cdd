//! Microsoft's published create-call examples (issue 11, item 2):
//!
//! - `calld render` (the real binary) on each spec in `examples/v1.0/`
//!   (`--api v1.0`) and `examples/beta/` (`--api beta`) equals the request
//!   body of the same name in `tests/fixtures/graph/published/`, copied from
//!   Microsoft's "Create call" pages (v1.0, and the beta channel-meeting
//!   and guest-join examples). Compared key order aside, ignoring only the
//!   `@odata.type` annotations that name the declared (non-polymorphic)
//!   type of their value, and the server-generated `direction` some
//!   published bodies carry.
//! - Each rendered body walks clean against Graph's v1.0 schema extract:
//!   no errors; the only warnings are the beta-only properties the
//!   published v1.0 examples send, listed here per example.

mod json_support;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use json_support::json_diff;
use serde_json::{Value as Json, json};

use calld::spec::Severity;
use calld::spec::bodycheck::{check_body, path_string};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn specs(dir: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    out
}

/// An empty configuration, so nothing of the machine's leaks in.
fn empty_config(dir: &Path) -> PathBuf {
    let p = dir.join("calld.yaml");
    std::fs::write(&p, "").unwrap();
    p
}

/// The declared type of the value at `path` in a create-call body, for
/// the positions the published examples annotate.
fn declared_type(path: &[String]) -> Option<&'static str> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    Some(match p.as_slice() {
        [] => "call",
        ["source"] => "participantInfo",
        ["targets", "[]"] => "invitationParticipantInfo",
        ["chatInfo"] => "chatInfo",
        [.., "identity"] | ["meetingInfo", "organizer"] => "identitySet",
        [.., "identity", _] | ["meetingInfo", "organizer", _] => "identity",
        _ => return None,
    })
}

/// The published body without annotations that only name the declared
/// type (and without the server-generated `direction`).
fn strip(v: &Json, path: &mut Vec<String>, stripped: &mut Vec<String>) -> Json {
    match v {
        Json::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, val) in m {
                if k == "@odata.type"
                    && let Some(t) = declared_type(path)
                    && val == &json!(format!("#microsoft.graph.{t}"))
                {
                    stripped.push(format!("{}: {val}", path.join(".")));
                    continue;
                }
                if path.is_empty() && k == "direction" {
                    stripped.push("direction".into());
                    continue;
                }
                path.push(k.clone());
                out.insert(k.clone(), strip(val, path, stripped));
                path.pop();
            }
            Json::Object(out)
        }
        Json::Array(a) => {
            path.push("[]".into());
            let out = a.iter().map(|i| strip(i, path, stripped)).collect();
            path.pop();
            Json::Array(out)
        }
        other => other.clone(),
    }
}

/// The warnings the v1.0 walk gives, per example: beta-only properties
/// that Microsoft's v1.0 page sends anyway.
fn expected_warnings(stem: &str) -> Vec<&'static str> {
    match stem {
        s if s.starts_with("03-") || s.starts_with("04-") => {
            vec!["mediaConfig.removeFromDefaultAudioGroup"]
        }
        s if s.starts_with("05-") || s.starts_with("06-") => {
            vec!["meetingInfo.allowConversationWithoutHost"]
        }
        s if s.starts_with("07-join-channel") || s.starts_with("08-join-channel") => {
            vec!["meetingInfo.allowConversationWithoutHost"]
        }
        _ => vec![],
    }
}

fn golden(dir: &str, api: &str, fixtures: &str, count: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let config = empty_config(tmp.path());
    let specs = specs(dir);
    assert_eq!(specs.len(), count, "{dir}: {specs:?}");
    for spec in specs {
        let stem = spec.file_stem().unwrap().to_string_lossy().into_owned();
        let fixture = root().join(fixtures).join(format!("{stem}.request.json"));
        let published: Json = serde_json::from_str(
            &std::fs::read_to_string(&fixture)
                .unwrap_or_else(|e| panic!("{}: {e}", fixture.display())),
        )
        .unwrap();
        let out = Command::cargo_bin("calld")
            .unwrap()
            .env_remove("CALLD_CONFIG")
            .args(["render", "--api", api, "--config"])
            .arg(&config)
            .arg(&spec)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{stem}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{stem}: one request: {stdout}");
        let req: Json = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            req["url"],
            json!(format!(
                "https://graph.microsoft.com/{api}/communications/calls"
            ))
        );
        let body = &req["body"];

        let mut stripped = Vec::new();
        let expected = strip(&published, &mut Vec::new(), &mut stripped);
        assert!(
            stripped.iter().any(|s| s.starts_with(": ")),
            "{stem}: the published body names #microsoft.graph.call at its root"
        );
        let mut diff = Vec::new();
        json_diff("body", body, &expected, "published", &mut diff);
        assert!(
            diff.is_empty(),
            "{stem}: rendered body differs from the published one:\n{}",
            diff.join("\n")
        );

        let findings = check_body(body);
        let errors: Vec<_> = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{stem}: {errors:#?}");
        let warned: Vec<String> = findings.iter().map(|f| path_string(&f.path)).collect();
        let mut want: Vec<String> = expected_warnings(&stem)
            .into_iter()
            .map(str::to_string)
            .collect();
        if stem.starts_with("04-") || stem.starts_with("06-") {
            // app-hosted media without a blob, as published
            want.insert(0, "mediaConfig".into());
        }
        let mut warned_sorted = warned.clone();
        warned_sorted.sort();
        want.sort();
        assert_eq!(warned_sorted, want, "{stem}: {findings:#?}");
    }
}

#[test]
fn every_v1_create_call_example_renders_to_its_published_body() {
    golden(
        "examples/v1.0",
        "v1.0",
        "tests/fixtures/graph/published/v1.0",
        10,
    );
}

#[test]
fn the_beta_channel_meeting_and_guest_examples_render_to_their_published_bodies() {
    golden(
        "examples/beta",
        "beta",
        "tests/fixtures/graph/published/beta",
        2,
    );
}

#[test]
fn stripping_keeps_polymorphic_annotations() {
    let mut stripped = Vec::new();
    let v = strip(
        &json!({
            "@odata.type": "#microsoft.graph.call",
            "direction": "outgoing",
            "mediaConfig": { "@odata.type": "#microsoft.graph.serviceHostedMediaConfig" },
            "source": { "@odata.type": "#microsoft.graph.participantInfo",
                "identity": { "@odata.type": "#microsoft.graph.identitySet",
                    "user": { "@odata.type": "#microsoft.graph.identity", "id": "x" } } },
            "targets": [{ "@odata.type": "#microsoft.graph.participantInfo" }],
        }),
        &mut Vec::new(),
        &mut stripped,
    );
    assert_eq!(
        v,
        json!({
            "mediaConfig": { "@odata.type": "#microsoft.graph.serviceHostedMediaConfig" },
            "source": { "identity": { "user": { "id": "x" } } },
            // not the declared type of a v1.0 target: kept, so it shows
            "targets": [{ "@odata.type": "#microsoft.graph.participantInfo" }],
        })
    );
    assert_eq!(stripped.len(), 5, "{stripped:?}");
}
