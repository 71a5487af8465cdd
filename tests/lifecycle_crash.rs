//! The daemon is killed (SIGKILL) after its create request left and before
//! the answer came (emulator fault `hang`: the call is placed, the 201 never
//! comes). At restart the run is `unknown` (never re-sent); the call's
//! notifications, matched by `calldRun`, then turn it into its real outcome.
//!
//! The notifications go through a relay the test holds shut until the
//! restarted daemon has been seen recording `unknown` (Graph, like the
//! emulator, retries deliveries that fail), so the order of events is
//! certain rather than raced.

mod lifecycle_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use lifecycle_support::*;

const PHONE: &str = "+14255550120";

struct Relay {
    open: AtomicBool,
    to: String,
    http: reqwest::Client,
}

async fn relay(
    State(r): State<Arc<Relay>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !r.open.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut req = r.http.post(format!("{}{}", r.to, uri)).body(body);
    for name in ["authorization", "content-type"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v.as_bytes());
        }
    }
    match req.send().await {
        Ok(resp) => StatusCode::from_u16(resp.status().as_u16()).unwrap(),
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_request_is_unknown_at_restart_then_resolved_by_its_notifications() {
    let emu = start_emulator(
        r#"
calls: { answerAfter: 300ms, length: 500ms }
notifications: { attempts: 40, retryDelay: 100ms }
faults: { script: [hang] }
"#,
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = listener.local_addr().unwrap().port();
    let mut d = Daemon::new(
        &emu,
        Some(&format!("http://127.0.0.1:{relay_port}/api/calls")),
        "",
    );
    let state = Arc::new(Relay {
        open: AtomicBool::new(false),
        to: format!("http://127.0.0.1:{}", d.port),
        http: http(),
    });
    let app = axum::Router::new()
        .fallback(relay)
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    d.write_spec("crashy", &spec(PHONE, ""));
    d.start().await;
    // The create reached Graph, which placed the call and will never answer.
    let create = wait_for("the hung create request", || {
        creates_for(&emu, PHONE)
            .into_iter()
            .find(|c| c.call_id.is_some())
    })
    .await;
    assert_eq!(create.status, None, "hang: no answer sent");
    let call_id = create.call_id.clone().unwrap();
    let run = d
        .wait_run("crashy", "requesting", |r| r["state"] == "requesting")
        .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    assert!(
        create.body["callbackUri"]
            .as_str()
            .unwrap()
            .contains(&format!("calldRun={run_id}"))
    );

    d.kill();
    // Restart: the run in flight is recorded `unknown`, never re-sent.
    d.start().await;
    let unknown = d
        .wait_run("crashy", "unknown at restart", |r| {
            r["outcome"] == "unknown"
        })
        .await;
    assert_eq!(unknown["id"], run_id.as_str());
    assert!(
        unknown["reason"].as_str().unwrap().contains("in flight"),
        "{unknown:#}"
    );
    assert_eq!(unknown["attempts"][0]["disposition"], "unknown");
    assert!(unknown["callId"].is_null(), "the 201 never came");

    // Graph's (retried) notifications get through now.
    state.open.store(true, Ordering::SeqCst);
    let done = d
        .wait_run("crashy", "resolved by its notifications", |r| {
            r["outcome"] == "completed"
        })
        .await;
    assert_eq!(done["id"], run_id.as_str());
    assert_eq!(done["callId"], call_id.as_str());
    assert_eq!(done["resultInfo"]["code"], 200);
    assert_eq!(done["resultInfo"]["subcode"], 5001);
    let s = states(&done);
    assert_eq!(
        s,
        ["establishing", "established", "terminating", "terminated"]
    );
    // The attempt keeps what the crash left: its answer was lost.
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(done["attempts"][0]["disposition"], "unknown");
    assert_eq!(
        creates_for(&emu, PHONE).len(),
        1,
        "the create was never sent again"
    );
    assert!(d.alive());
}
