//! Notifications as Graph sends them (issue 11, item 4): every call
//! notification Microsoft publishes (`tests/fixtures/graph/published/notifications/`,
//! copied from the Create call, Delete call and participant invite pages,
//! v1.0 and beta, old and new) is posted with a valid token to the real
//! listener on loopback; each is accepted (202), and what reaches the
//! daemon's queue is exactly the call's state changes: roster, content
//! sharing and operation notifications record nothing (they are not call
//! state changes), `resource` and `resourceUrl` both name the call, result
//! codes are read from strings.

mod callback_support;

use std::time::Duration;

use callback_support::*;
use calld::callback::{CallEvent, CallState, ChangeType, ResultInfo};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn corpus(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/graph/published/notifications/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn event(
    call_id: &str,
    change: ChangeType,
    state: CallState,
    result: Option<(i64, i64, Option<&str>)>,
) -> CallEvent {
    CallEvent {
        call_id: Some(call_id.to_string()),
        change_type: change,
        state: Some(state),
        result_info: result.map(|(code, subcode, message)| ResultInfo {
            code,
            subcode,
            message: message.map(str::to_string),
        }),
    }
}

/// Each published body and the events the listener must record from it.
fn expected() -> Vec<(&'static str, Vec<CallEvent>)> {
    use CallState::*;
    use ChangeType::*;
    let c1 = "2e1a0b00-2db4-4022-9570-243709c565ab";
    let c1b = "2e1a0b00-b3c5-4b0f-99b3-c133bc1e6116";
    let c5 = "2f1a1100-b174-40a0-aba7-0b405e01ed92";
    let cd = "57dab8b1-894c-409a-b240-bd8beae78896";
    vec![
        (
            "create-01-establishing",
            vec![event(c1, Updated, Establishing, None)],
        ),
        (
            "create-01-established",
            vec![event(c1b, Updated, Established, None)],
        ),
        ("create-01-content-sharing-started", vec![]),
        ("create-01-content-sharing-updated", vec![]),
        ("create-01-content-sharing-ended", vec![]),
        (
            "create-05-join-establishing",
            vec![event(c5, Updated, Establishing, None)],
        ),
        (
            "create-05-join-established",
            vec![event(c5, Updated, Established, None)],
        ),
        ("create-05-join-roster", vec![]),
        ("beta-create-08-guest-roster-in-lobby", vec![]),
        (
            "delete-terminating",
            vec![event(cd, Updated, Terminating, None)],
        ),
        (
            "delete-terminated",
            vec![event(
                cd,
                Deleted,
                Terminated,
                Some((200, 5001, Some("The conversation has ended."))),
            )],
        ),
        (
            "delete-terminated-older-page",
            vec![event(cd, Deleted, Terminated, Some((0, 0, None)))],
        ),
        (
            "beta-2019-transfer-terminated-original-call",
            vec![event(
                "57DAB8B1894C409AB240BD8BEAE78896",
                Updated,
                Terminated,
                None,
            )],
        ),
        ("invite-02-operation-completed", vec![]),
        ("invite-02-roster-participants-added", vec![]),
    ]
}

async fn post(h: &Harness, body: String) -> reqwest::Response {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(h.url("/api/calls?calldRun=run-7"))
        .bearer_auth(good_token())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_published_notification_is_accepted_and_recorded_as_its_call_events() {
    let mut h = Harness::start().await;
    let cases = expected();
    // the whole corpus directory is covered: no file without an expectation
    let mut files: Vec<String> = std::fs::read_dir(format!(
        "{}/tests/fixtures/graph/published/notifications",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .map(|e| {
        e.unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    })
    .collect();
    files.sort();
    let mut named: Vec<String> = cases.iter().map(|(n, _)| n.to_string()).collect();
    named.sort();
    assert_eq!(files, named);

    for (name, events) in cases {
        let r = post(&h, corpus(name)).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{name}");
        match h.rx.try_recv() {
            Ok(got) => {
                assert_eq!(got.run_id.as_deref(), Some("run-7"), "{name}");
                assert_eq!(got.tenant_id.as_deref(), Some(TENANT), "{name}");
                assert_eq!(got.events, events, "{name}");
            }
            Err(_) => assert!(
                events.is_empty(),
                "{name}: nothing recorded, expected {events:?}"
            ),
        }
    }
    assert!(h.rx.try_recv().is_err(), "nothing more was recorded");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_items_in_one_body_are_recorded_in_order() {
    // Graph batches items in `value`: the published establishing, roster
    // and terminated items of different pages, in one body
    let mut h = Harness::start().await;
    let item = |name: &str| -> Value {
        let v: Value = serde_json::from_str(&corpus(name)).unwrap();
        v["value"][0].clone()
    };
    let body = json!({
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [
            item("create-05-join-establishing"),
            item("create-05-join-roster"),
            item("delete-terminated"),
        ],
    });
    let r = post(&h, body.to_string()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let got = h.rx.try_recv().expect("recorded before the 202");
    let states: Vec<(Option<String>, Option<CallState>)> = got
        .events
        .iter()
        .map(|e| (e.call_id.clone(), e.state.clone()))
        .collect();
    assert_eq!(
        states,
        vec![
            (
                Some("2f1a1100-b174-40a0-aba7-0b405e01ed92".into()),
                Some(CallState::Establishing)
            ),
            (
                Some("57dab8b1-894c-409a-b240-bd8beae78896".into()),
                Some(CallState::Terminated)
            ),
        ]
    );
    h.shutdown().await.unwrap();
}
