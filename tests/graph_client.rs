//! The Graph client against a scripted fake Graph on loopback: create in each
//! URL form, the retry rules end to end (counted at the server), hang up,
//! keepAlive, and no secret anywhere.

mod graph_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use calld::config::{ApiVersion, Secret};
use calld::graph::auth::{Credential, TokenSource, TokenSourceConfig};
use calld::graph::{
    CallOpOutcome, CreateOutcome, Disposition, GraphClient, GraphClientOptions, RetryPolicy,
    http_client,
};
use graph_support::*;

fn options(base: &str) -> GraphClientOptions {
    GraphClientOptions {
        base_url: base.to_string(),
        api_version: ApiVersion::V1,
        legacy_app_endpoint: false,
        max_concurrent_requests: 16,
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_total_wait: Duration::from_secs(5),
        },
    }
}

/// A client whose tokens come from `fake` and whose Graph is at `base`.
fn client_at(fake: &Fake, opts: GraphClientOptions) -> GraphClient {
    let http = http_client(&opts).unwrap();
    let tokens = TokenSource::new(
        http.clone(),
        TokenSourceConfig {
            token_url: fake.token_url(),
            client_id: CLIENT_ID.into(),
            scope: format!("{}/.default", fake.base_url()),
            credential: Credential::Secret(Secret::new(SECRET)),
        },
    );
    GraphClient::new(http, Arc::new(tokens), opts)
}

fn client(fake: &Fake) -> GraphClient {
    client_at(fake, options(&fake.base_url()))
}

fn body() -> serde_json::Value {
    serde_json::from_str(include_str!(
        "fixtures/graph/seed/01-p2p-service-hosted-media.request.json"
    ))
    .unwrap()
}

fn dispositions(r: &[calld::graph::Attempt]) -> Vec<&'static str> {
    r.iter().map(|a| a.disposition.as_str()).collect()
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

#[tokio::test]
async fn create_in_v1_beta_and_legacy_form() {
    let fake = Fake::start().await;
    let base = fake.base_url();
    let cases = [
        (ApiVersion::V1, false, "/v1.0/communications/calls"),
        (ApiVersion::Beta, false, "/beta/communications/calls"),
        (ApiVersion::V1, true, "/beta/app/calls"),
    ];
    for (i, (version, legacy, path)) in cases.into_iter().enumerate() {
        let c = client_at(
            &fake,
            GraphClientOptions {
                api_version: version,
                legacy_app_endpoint: legacy,
                ..options(&base)
            },
        );
        assert_eq!(c.create_url(), format!("{base}{path}"));
        let r = c.create_call(&c.create_url(), &body()).await;
        let CreateOutcome::Placed {
            call_id,
            location,
            state,
        } = &r.outcome
        else {
            panic!("{path}: {:?}", r.outcome)
        };
        assert_eq!(call_id, &format!("call-{}", i + 1));
        assert_eq!(
            location.as_deref(),
            Some(format!("{base}{path}/{call_id}").as_str())
        );
        assert_eq!(state.as_deref(), Some("establishing"));
        assert_eq!(r.attempts.len(), 1);
        let a = &r.attempts[0];
        assert_eq!(a.status, Some(201));
        assert_eq!(a.disposition, Disposition::Success);
        assert_eq!(
            a.request_id.as_deref(),
            Some(format!("req-{}", i + 1).as_str())
        );

        let got = &fake.graph_requests()[i];
        assert_eq!(got.method, "POST");
        assert_eq!(got.path, path);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&got.body).unwrap(),
            body()
        );
        assert_eq!(got.headers["content-type"], "application/json");
        assert!(got.headers["authorization"].starts_with("Bearer ey"));
        assert_eq!(got.headers["client-request-id"], a.client_request_id);
        assert!(is_guid(&a.client_request_id));
    }
    // One token for all three clients? No: each client has its own source.
    assert_eq!(fake.token_count(), 3);
    // Every request had its own client-request-id.
    let ids: std::collections::HashSet<_> = fake
        .graph_requests()
        .iter()
        .map(|r| r.headers["client-request-id"].clone())
        .collect();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn throttled_creates_are_retried_then_placed() {
    let fake = Fake::start().await;
    let c = client(&fake);
    fake.script_graph([
        Scripted::graph_error(429, "TooManyRequests", "slow down").header("retry-after", "0.05"),
        Scripted::graph_error(429, "TooManyRequests", "slow down"),
        Scripted::graph_error(503, "ServiceUnavailable", "busy").header("retry-after", "0"),
    ]);
    let r = c.create_call(&c.create_url(), &body()).await;
    assert!(
        matches!(r.outcome, CreateOutcome::Placed { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(fake.graph_count(), 4);
    assert_eq!(
        dispositions(&r.attempts),
        ["retry", "retry", "retry", "success"]
    );
    assert_eq!(
        r.attempts[0].disposition,
        Disposition::Retry {
            after: Duration::from_millis(50)
        }
    );
    assert_eq!(r.attempts[0].status, Some(429));
    assert_eq!(r.attempts[0].error_code.as_deref(), Some("TooManyRequests"));
    assert_eq!(r.attempts[2].status, Some(503));
    // Each attempt is a new request with a new client-request-id.
    let ids: std::collections::HashSet<_> = r
        .attempts
        .iter()
        .map(|a| a.client_request_id.clone())
        .collect();
    assert_eq!(ids.len(), 4);
    // One token served them all.
    assert_eq!(fake.token_count(), 1);
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_fails() {
    let fake = Fake::start().await;
    let c = client(&fake);
    fake.script_graph((0..10).map(|_| Scripted::status(429, "").header("retry-after", "0")));
    let r = c.create_call(&c.create_url(), &body()).await;
    let CreateOutcome::Failed { reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(
        reason.contains("429") && reason.contains("4 attempts"),
        "{reason}"
    );
    assert_eq!(fake.graph_count(), 4);
    assert_eq!(
        dispositions(&r.attempts),
        ["retry", "retry", "retry", "failed"]
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_is_not_waited_for() {
    let fake = Fake::start().await;
    let c = client(&fake);
    fake.script_graph([Scripted::status(429, "").header("retry-after", "3600")]);
    let r = c.create_call(&c.create_url(), &body()).await;
    assert!(
        matches!(r.outcome, CreateOutcome::Failed { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(fake.graph_count(), 1);
}

#[tokio::test]
async fn server_errors_are_unknown_and_never_resent() {
    for (status, ra) in [
        (500, None),
        (502, None),
        (504, None),
        (503, None),
        (500, Some("0")),
    ] {
        let fake = Fake::start().await;
        let c = client(&fake);
        let mut s = Scripted::graph_error(status, "InternalServerError", "oops");
        if let Some(ra) = ra {
            s = s.header("retry-after", ra);
        }
        fake.script_graph([s]);
        let r = c.create_call(&c.create_url(), &body()).await;
        let CreateOutcome::Unknown { reason } = &r.outcome else {
            panic!("{status}: {:?}", r.outcome)
        };
        assert!(reason.contains(&status.to_string()), "{reason}");
        assert!(reason.contains("not sent again"), "{reason}");
        assert_eq!(fake.graph_count(), 1, "{status} was re-sent");
        assert_eq!(dispositions(&r.attempts), ["unknown"]);
        assert_eq!(r.attempts[0].status, Some(status));
    }
}

#[tokio::test]
async fn a_connection_dropped_after_sending_is_unknown_and_not_retried() {
    let fake = Fake::start().await;
    let (addr, count) = start_dropper().await;
    let c = client_at(&fake, options(&format!("http://{addr}")));
    let r = c.create_call(&c.create_url(), &body()).await;
    let CreateOutcome::Unknown { reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(reason.contains("after the request was sent"), "{reason}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "the create was re-sent");
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(r.attempts[0].status, None);
    assert_eq!(r.attempts[0].error_code.as_deref(), Some("connectionLost"));
    // The same server for an idempotent request: retried (harmless).
    let r = c.keep_alive("call-1").await;
    assert!(
        matches!(r.outcome, CallOpOutcome::Failed { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(count.load(Ordering::SeqCst), 1 + 4);
}

#[tokio::test]
async fn a_timeout_is_unknown_and_not_retried() {
    let fake = Fake::start().await;
    let c = client_at(
        &fake,
        GraphClientOptions {
            request_timeout: Duration::from_millis(300),
            ..options(&fake.base_url())
        },
    );
    fake.script_graph([Scripted::status(201, r#"{"id":"late"}"#).delay(Duration::from_secs(30))]);
    let r = c.create_call(&c.create_url(), &body()).await;
    let CreateOutcome::Unknown { reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(reason.contains("not sent again"), "{reason}");
    assert_eq!(fake.graph_count(), 1);
    assert_eq!(r.attempts[0].error_code.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn connect_failures_are_retried_then_failed() {
    let fake = Fake::start().await;
    let addr = closed_port().await;
    let c = client_at(&fake, options(&format!("http://{addr}")));
    let r = c.create_call(&c.create_url(), &body()).await;
    let CreateOutcome::Failed { reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(reason.contains("before the request was sent"), "{reason}");
    assert_eq!(
        dispositions(&r.attempts),
        ["retry", "retry", "retry", "failed"]
    );
    assert!(
        r.attempts
            .iter()
            .all(|a| a.error_code.as_deref() == Some("connect"))
    );
}

#[tokio::test]
async fn client_errors_are_rejected_with_code_message_and_ids() {
    for (status, code, msg) in [
        (400, "BadRequest", "Invalid callbackUri"),
        (403, "7505", "Request authorization tenant mismatch."),
        (404, "NotFound", "no such app"),
    ] {
        let fake = Fake::start().await;
        let c = client(&fake);
        fake.script_graph([Scripted::graph_error(status, code, msg)]);
        let r = c.create_call(&c.create_url(), &body()).await;
        let CreateOutcome::Rejected { status: s, error } = &r.outcome else {
            panic!("{status}: {:?}", r.outcome)
        };
        assert_eq!(*s, status);
        assert_eq!(error.code.as_deref(), Some(code));
        assert_eq!(error.message.as_deref(), Some(msg));
        // The header's request-id wins over the body's.
        assert_eq!(error.request_id.as_deref(), Some("req-1"));
        assert_eq!(
            error.client_request_id.as_deref(),
            Some(r.attempts[0].client_request_id.as_str())
        );
        assert_eq!(error.date.as_deref(), Some("2026-01-01T00:00:00"));
        assert_eq!(fake.graph_count(), 1);
        let a = &r.attempts[0];
        assert_eq!(a.disposition, Disposition::Rejected);
        assert_eq!(a.error_code.as_deref(), Some(code));
        assert!(a.error_message.as_deref().unwrap().contains(msg));
        assert_eq!(a.request_id.as_deref(), Some("req-1"));
    }
}

#[tokio::test]
async fn a_non_json_error_body_is_kept_raw() {
    let fake = Fake::start().await;
    let c = client(&fake);
    fake.script_graph([Scripted::status(400, "<html>nope</html>")]);
    let r = c.create_call(&c.create_url(), &body()).await;
    let CreateOutcome::Rejected { error, .. } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(error.raw.as_deref(), Some("<html>nope</html>"));
    assert_eq!(error.code, None);
}

#[tokio::test]
async fn success_without_a_call_id_is_unknown() {
    let fake = Fake::start().await;
    let c = client(&fake);
    fake.script_graph([Scripted::status(201, "{}")]);
    let r = c.create_call(&c.create_url(), &body()).await;
    assert!(
        matches!(r.outcome, CreateOutcome::Unknown { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(dispositions(&r.attempts), ["unknown"]);
    assert_eq!(fake.graph_count(), 1);
}

#[tokio::test]
async fn a_401_gets_a_fresh_token_and_one_retry() {
    let fake = Fake::start().await;
    let c = client(&fake);
    fake.script_graph([Scripted::graph_error(
        401,
        "InvalidAuthenticationToken",
        "expired",
    )]);
    let r = c.create_call(&c.create_url(), &body()).await;
    assert!(
        matches!(r.outcome, CreateOutcome::Placed { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(dispositions(&r.attempts), ["retryWithNewToken", "success"]);
    assert_eq!(fake.token_count(), 2);
    let reqs = fake.graph_requests();
    assert_eq!(reqs.len(), 2);
    assert_ne!(
        reqs[0].headers["authorization"],
        reqs[1].headers["authorization"]
    );

    // Twice 401: rejected, not retried again.
    fake.script_graph([
        Scripted::graph_error(401, "InvalidAuthenticationToken", "no"),
        Scripted::graph_error(401, "InvalidAuthenticationToken", "still no"),
    ]);
    let r = c.create_call(&c.create_url(), &body()).await;
    let CreateOutcome::Rejected { status, error } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(*status, 401);
    assert_eq!(error.message.as_deref(), Some("still no"));
    assert_eq!(fake.graph_count(), 4);
    assert_eq!(fake.token_count(), 3);
}

#[tokio::test]
async fn no_token_means_failed_and_nothing_sent() {
    let fake = Fake::start().await;
    *fake.state.expected_secret.lock().unwrap() = Some("another".into());
    let c = client(&fake);
    let r = c.create_call(&c.create_url(), &body()).await;
    let CreateOutcome::Failed { reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(reason.contains("AADSTS7000215"), "{reason}");
    assert!(reason.contains("nothing was sent"), "{reason}");
    assert_eq!(fake.graph_count(), 0);
    assert_eq!(r.attempts[0].error_code.as_deref(), Some("token"));
    assert!(!format!("{r:?}").contains(SECRET));
}

#[tokio::test]
async fn hang_up_and_keep_alive() {
    let fake = Fake::start().await;
    let base = fake.base_url();
    let c = client(&fake);
    assert_eq!(
        c.call_url("a/b c"),
        format!("{base}/v1.0/communications/calls/a%2Fb%20c")
    );

    let r = c.hang_up("call-7").await;
    assert_eq!(r.outcome, CallOpOutcome::Done);
    let r = c.keep_alive("call-7").await;
    assert_eq!(r.outcome, CallOpOutcome::Done);
    fake.script_graph([
        Scripted::graph_error(404, "8514", "Call not found"),
        Scripted::graph_error(404, "8514", "Call not found"),
    ]);
    let r = c.keep_alive("gone").await;
    let CallOpOutcome::Gone { error } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(error.code.as_deref(), Some("8514"));
    let r = c.hang_up("gone").await;
    assert!(
        matches!(r.outcome, CallOpOutcome::Gone { .. }),
        "{:?}",
        r.outcome
    );
    // Idempotent: a 500 is retried.
    fake.script_graph([Scripted::status(500, ""), Scripted::status(502, "")]);
    let r = c.keep_alive("call-8").await;
    assert_eq!(r.outcome, CallOpOutcome::Done);
    assert_eq!(dispositions(&r.attempts), ["retry", "retry", "success"]);
    // A 403 is refused.
    fake.script_graph([Scripted::graph_error(403, "Forbidden", "no")]);
    let r = c.hang_up("x").await;
    assert!(matches!(
        r.outcome,
        CallOpOutcome::Rejected { status: 403, .. }
    ));

    let reqs = fake.graph_requests();
    let shape: Vec<_> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        shape[..4],
        [
            ("DELETE", "/v1.0/communications/calls/call-7"),
            ("POST", "/v1.0/communications/calls/call-7/keepAlive"),
            ("POST", "/v1.0/communications/calls/gone/keepAlive"),
            ("DELETE", "/v1.0/communications/calls/gone"),
        ]
    );
    assert_eq!(reqs[1].headers["content-length"], "0");
    assert!(
        reqs.iter()
            .all(|r| is_guid(&r.headers["client-request-id"]))
    );

    // Legacy and beta address calls under beta.
    let legacy = client_at(
        &fake,
        GraphClientOptions {
            legacy_app_endpoint: true,
            ..options(&base)
        },
    );
    assert_eq!(
        legacy.call_url("c"),
        format!("{base}/beta/communications/calls/c")
    );
    let beta = client_at(
        &fake,
        GraphClientOptions {
            api_version: ApiVersion::Beta,
            ..options(&base)
        },
    );
    assert_eq!(
        beta.call_url("c"),
        format!("{base}/beta/communications/calls/c")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_bounded() {
    let fake = Fake::start().await;
    fake.state.graph_delay_us.store(20_000, Ordering::SeqCst);
    let c = Arc::new(client_at(
        &fake,
        GraphClientOptions {
            max_concurrent_requests: 3,
            ..options(&fake.base_url())
        },
    ));
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.create_call(&c.create_url(), &body()).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(matches!(r.outcome, CreateOutcome::Placed { .. }));
    }
    assert_eq!(fake.graph_count(), 12);
    let max = fake.state.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=3).contains(&max), "max in flight {max}");
    assert_eq!(fake.token_count(), 1);
}

#[tokio::test]
async fn nothing_shows_the_secret_or_the_token() {
    let fake = Fake::start().await;
    let c = client(&fake);
    fake.script_graph([
        Scripted::graph_error(429, "TooManyRequests", "x").header("retry-after", "0"),
        Scripted::graph_error(400, "BadRequest", "bad"),
    ]);
    let r = c.create_call(&c.create_url(), &body()).await;
    let token = c.tokens().token().await.unwrap();
    let bearer = token.bearer().to_string();
    let texts = [
        format!("{c:?}"),
        format!("{r:?}"),
        serde_json::to_string(&r).unwrap(),
        format!("{token:?}"),
        format!("{:?}", c.tokens()),
    ];
    for t in texts {
        assert!(!t.contains(SECRET), "{t}");
        assert!(!t.contains(&bearer), "{t}");
    }
}

#[tokio::test]
async fn results_serialise_for_the_ledger() {
    let fake = Fake::start().await;
    let c = client(&fake);
    fake.script_graph([Scripted::status(429, "").header("retry-after", "0.01")]);
    let r = c.create_call(&c.create_url(), &body()).await;
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["outcome"]["outcome"], "placed");
    assert_eq!(v["outcome"]["callId"], "call-1");
    assert_eq!(v["attempts"][0]["disposition"]["kind"], "retry");
    assert_eq!(v["attempts"][0]["disposition"]["afterMs"], 10);
    assert_eq!(v["attempts"][0]["status"], 429);
    assert_eq!(v["attempts"][1]["disposition"]["kind"], "success");
    assert!(v["attempts"][1]["startedAt"].is_string());
}
