//! Graph's create-call rules per scenario, as `calld check` findings with
//! `file:line:column` (issue 11, items 1 and 3): the source where Graph
//! needs one and where it does not, `meeting.asGuest` as the source, PSTN
//! calls from a resource account in a tenant, explicit nulls, and the body
//! after the `graph:` merge patch.

use std::path::Path;

use assert_cmd::Command;
use serde_json::{Value as Json, json};

const APP: &str = "8a34a46b-3d17-4adc-8dce-dc4e7d572698";
const CB: &str = "callbackUri: https://bot.contoso.com/api/calls\n";

/// `calld check` (or render) of one spec file with the given configuration.
fn run(cmd: &str, config: &str, spec: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("calld.yaml"), config).unwrap();
    std::fs::write(tmp.path().join("s.yaml"), spec).unwrap();
    let out = Command::cargo_bin("calld")
        .unwrap()
        .current_dir(tmp.path())
        .env_remove("CALLD_CONFIG")
        .env("NO_COLOR", "1")
        .args([cmd, "s.yaml", "--config", "calld.yaml"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().expect("exited"), text)
}

/// The finding lines (without the summary line).
fn findings(config: &str, spec: &str) -> (i32, Vec<String>) {
    let (code, text) = run("check", config, spec);
    let lines = text
        .lines()
        .filter(|l| l.starts_with("s.yaml:"))
        .map(str::to_string)
        .collect();
    (code, lines)
}

fn render(config: &str, spec: &str) -> Json {
    let (code, text) = run("render", config, spec);
    assert_eq!(code, 0, "{text}");
    let req: Json = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    req["body"].clone()
}

#[test]
fn no_source_is_fine_for_peer_to_peer_voip_and_meeting_joins_and_is_not_sent() {
    for spec in [
        format!("{CB}targets:\n  - user: {{ id: 112f7296-5fa4-42ca-bae8-6a692b15d4b8 }}\n"),
        format!("{CB}meeting:\n  joinMeetingId: \"1234567\"\n"),
    ] {
        let (code, lines) = findings("", &spec);
        assert_eq!((code, lines.clone()), (0, vec![]), "{spec}");
        let body = render("", &spec);
        assert!(body.get("source").is_none(), "{body}");
    }
}

#[test]
fn a_group_call_without_a_source_is_a_warning() {
    let spec = format!(
        "{CB}targets:\n  - user: {{ id: 98da8a1a-1b87-452c-a713-65d3f10b5555 }}\n  - user: {{ id: bf5aae9a-d11d-47a8-93b1-782504c95555 }}\n"
    );
    let (code, lines) = findings("", &spec);
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("s.yaml:3:3: warning: source: a group call without a source"),
        "{lines:?}"
    );
}

#[test]
fn as_guest_alone_is_a_complete_source() {
    let spec = format!(
        "{CB}meeting:\n  joinMeetingId: \"1234567\"\n  asGuest: {{ displayName: Reminder bot, id: guest-1 }}\n"
    );
    let (code, lines) = findings("", &spec);
    assert_eq!((code, lines), (0, vec![]));
    let body = render("", &spec);
    assert_eq!(
        body["source"],
        json!({"identity": {"guest": {"displayName": "Reminder bot", "id": "guest-1"}}})
    );
    // and the configuration's default source does not get in the way
    let config =
        format!("defaults:\n  source: {{ identity: {{ application: {{ id: {APP} }} }} }}\n");
    let body = render(&config, &spec);
    assert_eq!(
        body["source"]["identity"],
        json!({"guest": {"displayName": "Reminder bot", "id": "guest-1"}})
    );
}

#[test]
fn a_pstn_call_needs_an_application_instance_and_a_tenant() {
    // an application source: the error points at it
    let spec = format!(
        "{CB}source:\n  identity:\n    application: {{ id: {APP} }}\ntargets:\n  - phone: \"+12345678901\"\n"
    );
    let (code, lines) = findings("", &spec);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 2, "{lines:?}");
    // (in file order)
    assert!(
        lines[0].starts_with(
            "s.yaml:1:1: error: tenantId: a call to a phone number (PSTN) needs `tenantId:`"
        ),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(
            "s.yaml:4:5: error: source.identity.application: `application` cannot be the source of a call to a phone number (PSTN)"
        ),
        "{lines:?}"
    );
    assert!(lines[1].contains("applicationInstance: { id: <object id of the resource account>"));
    assert!(lines[1].contains("7507"));

    // no source at all
    let spec = format!(
        "{CB}tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47\ntargets:\n  - phone: \"+12345678901\"\n"
    );
    let (code, lines) = findings("", &spec);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("s.yaml:1:1: error: source: a call to a phone number (PSTN) needs the resource account as its source: write `source: { identity: { applicationInstance:"),
        "{lines:?}"
    );

    // from the configuration's defaults: said so
    let config = format!(
        "defaults:\n  source: {{ identity: {{ application: {{ id: {APP} }} }} }}\n  tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47\n"
    );
    let (code, lines) = findings(
        &config,
        &format!("{CB}targets:\n  - phone: \"+12345678901\"\n"),
    );
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "s.yaml:1:1: error: defaults.source.identity.application: `application` cannot"
        ) && lines[0].ends_with("(from the configuration's defaults.source)"),
        "{lines:?}"
    );

    // right: an applicationInstance (spec or defaults) and a tenant
    let config = "defaults:\n  source: { identity: { applicationInstance: { id: 3d913abb-aec0-4964-8fa6-3c6850c4f278 } } }\n  tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47\n";
    let (code, lines) = findings(
        config,
        &format!("{CB}targets:\n  - phone: \"+12345678901\"\n"),
    );
    assert_eq!((code, lines), (0, vec![]));
}

#[test]
fn explicit_nulls_are_accepted_and_sent() {
    let spec = format!(
        "{CB}tenantId: aa67bd4c-8475-432d-bd41-39f255720e0a\nsource:\n  identity:\n    applicationInstance: {{ id: 3d913abb-aec0-4964-8fa6-3c6850c4f278 }}\n  countryCode: null\n  endpointType: null\n  region: null\n  languageId: null\ntargets:\n  - phone: \"+12345678901\"\n"
    );
    let body = render("", &spec);
    for k in ["countryCode", "endpointType", "region", "languageId"] {
        assert_eq!(body["source"].get(k), Some(&Json::Null), "{k}: {body}");
    }
    let body = render(
        "",
        &format!("{CB}meeting:\n  joinMeetingId: \"1234567\"\n  passcode: null\n"),
    );
    assert_eq!(body["meetingInfo"]["passcode"], Json::Null);
    assert!(
        body["meetingInfo"]
            .as_object()
            .unwrap()
            .contains_key("passcode")
    );
    // an endpointType that is not one of Graph's
    let (code, lines) = findings(
        "",
        &format!(
            "{CB}source:\n  identity:\n    application: {{ id: {APP} }}\n  endpointType: phone\ntargets:\n  - user: {{ id: {APP} }}\n"
        ),
    );
    assert_eq!(code, 1);
    assert!(
        lines[0]
            .starts_with("s.yaml:5:17: error: source.endpointType: unknown endpointType `phone`"),
        "{lines:?}"
    );
}

#[test]
fn the_body_after_the_graph_patch_is_checked_at_the_key_that_broke_it() {
    let head = format!("{CB}targets:\n  - user: {{ id: 112f7296-5fa4-42ca-bae8-6a692b15d4b8 }}\n");
    let cases: [(&str, &str); 7] = [
        (
            "graph:\n  callbackUri: null\n",
            "s.yaml:5:3: error: graph.callbackUri: after the graph: merge patch: the body has no callbackUri",
        ),
        (
            "graph:\n  callbackUri: ftp://bot.contoso.com/x\n",
            "s.yaml:5:3: error: graph.callbackUri: after the graph: merge patch: `ftp://bot.contoso.com/x` has scheme `ftp`",
        ),
        (
            "graph:\n  targets: []\n",
            "s.yaml:5:3: error: graph.targets: after the graph: merge patch: targets is empty",
        ),
        (
            "graph:\n  mediaConfig: null\n",
            "s.yaml:5:3: error: graph.mediaConfig: after the graph: merge patch: the body has no mediaConfig",
        ),
        (
            "graph:\n  callOptions:\n    \"@odata.type\": \"#microsoft.graph.outgoingCallOptions\"\n    hideBotAfterEscalation: \"yes\"\n",
            "s.yaml:7:5: error: graph.callOptions.hideBotAfterEscalation: after the graph: merge patch: expected true or false, found a string",
        ),
        (
            "graph:\n  subjct: typo\n",
            "s.yaml:5:3: error: graph.subjct: after the graph: merge patch: microsoft.graph.call has no property `subjct`",
        ),
        (
            "graph:\n  targets:\n    - identity: { phone: { id: \"+12345678901\" } }\n",
            "s.yaml:4:1: error: graph: after the graph: merge patch, source: a call to a phone number (PSTN) needs the resource account",
        ),
    ];
    for (patch, want) in cases {
        let (code, lines) = findings("", &format!("{head}{patch}"));
        assert_eq!(code, 1, "{patch}: {lines:?}");
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "{patch}: expected a line starting with\n{want}\ngot\n{}",
            lines.join("\n")
        );
    }
    // a patch that keeps the body valid passes
    let (code, lines) = findings(
        "",
        &format!(
            "{head}graph:\n  callOptions:\n    \"@odata.type\": \"#microsoft.graph.outgoingCallOptions\"\n    isContentSharingNotificationEnabled: true\n"
        ),
    );
    assert_eq!((code, lines), (0, vec![]));
}

#[test]
fn the_demo_specs_and_examples_stay_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("calld.yaml"), "").unwrap();
    for dir in ["calls.d", "examples/v1.0", "examples/beta"] {
        let out = Command::cargo_bin("calld")
            .unwrap()
            .env_remove("CALLD_CONFIG")
            .arg("check")
            .arg(root.join(dir))
            .arg("--config")
            .arg(tmp.path().join("calld.yaml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dir}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
