//! The notification listener over real HTTP on loopback: what is accepted,
//! what is refused (and that nothing refused reaches the daemon's queue),
//! the key cache's refresh rules, and a 10,000-body fuzz run.

mod callback_support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callback_support::*;
use calld::callback::{CallEvent, CallState, ChangeType, Inbound, ResultInfo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::error::TryRecvError;

const ESTABLISHED: &str = include_str!("fixtures/graph/seed/01-notification-established.json");
const ESTABLISHING: &str = include_str!("fixtures/graph/seed/01-notification-establishing.json");

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn post(
    h: &Harness,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    post_to(h, "/api/calls?calldRun=run-1", token, body).await
}

async fn post_to(
    h: &Harness,
    path: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = client()
        .post(h.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.unwrap()
}

fn nothing_queued(h: &mut Harness) {
    assert!(
        matches!(h.rx.try_recv(), Err(TryRecvError::Empty)),
        "something was queued"
    );
}

#[tokio::test]
async fn seed_notifications_are_accepted_and_queued() {
    let mut h = Harness::start().await;
    let token = good_token();
    for (body, state) in [
        (ESTABLISHING, CallState::Establishing),
        (ESTABLISHED, CallState::Established),
    ] {
        let r = post_to(&h, "/api/calls?calldRun=run-42&x=y", Some(&token), body).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let got = h.rx.try_recv().expect("queued before the 202");
        assert_eq!(
            got,
            Inbound {
                run_id: Some("run-42".into()),
                attempt: None,
                tenant_id: Some(TENANT.into()),
                events: vec![CallEvent {
                    call_id: Some("57DAB8B1894C409AB240BD8BEAE78896".into()),
                    change_type: ChangeType::Updated,
                    state: Some(state),
                    result_info: None,
                }],
                ack: Default::default(),
            }
        );
    }
    nothing_queued(&mut h);
    let s = h.stats.snapshot();
    assert_eq!((s.accepted, s.events, s.unauthorized), (2, 2, 0));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn terminated_notification_without_run_id() {
    let mut h = Harness::start().await;
    let body = json!({"value": [{
        "changeType": "deleted",
        "resourceUrl": "/communications/calls/c-9",
        "resourceData": {"state": "terminated",
                         "resultInfo": {"code": "486", "subcode": 0, "message": "busy"}}}]});
    let r = post_to(&h, "/api/calls", Some(&good_token()), body.to_string()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let got = h.rx.try_recv().unwrap();
    assert_eq!(got.run_id, None);
    assert_eq!(
        got.events,
        vec![CallEvent {
            call_id: Some("c-9".into()),
            change_type: ChangeType::Deleted,
            state: Some(CallState::Terminated),
            result_info: Some(ResultInfo {
                code: 486,
                subcode: 0,
                message: Some("busy".into())
            }),
        }]
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_and_nothing_is_queued() {
    let mut h = Harness::start().await;
    let a = key("a");
    let other = key("other");
    let body = notification("c1", "established").to_string();
    let now = now();
    let with = |k: &str, v: Value| {
        let mut c = good_claims();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    // alg none: an unsigned token that claims everything.
    let none_token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": "a"}).to_string()),
        URL_SAFE_NO_PAD.encode(good_claims().to_string())
    );
    // HS256 keyed with the public key: the classic key-confusion attack.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("a".into());
    let hs_token = jsonwebtoken::encode(
        &hs,
        &good_claims(),
        &EncodingKey::from_secret(a.public_pem().as_bytes()),
    )
    .unwrap();
    // A good token with its payload swapped: signature no longer matches.
    let good = good_token();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(with("tid", json!("another-tenant")).to_string()),
        parts[2]
    );

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("empty bearer", Some(String::new())),
        ("garbage", Some("not-a-jwt".into())),
        ("expired", Some(mint(a, &with("exp", json!(now - 3600))))),
        (
            "not yet valid",
            Some(mint(a, &with("nbf", json!(now + 3600)))),
        ),
        ("no exp", Some(mint(a, &without("exp")))),
        (
            "signed by another key, same kid",
            Some(mint_with(
                other,
                Some("a"),
                Algorithm::RS256,
                &good_claims(),
            )),
        ),
        (
            "signed by another key, no kid",
            Some(mint_with(other, None, Algorithm::RS256, &good_claims())),
        ),
        (
            "wrong audience",
            Some(mint(a, &with("aud", json!("someone-else")))),
        ),
        (
            "wrong issuer",
            Some(mint(a, &with("iss", json!("https://evil.example")))),
        ),
        ("missing tid", Some(mint(a, &without("tid")))),
        ("alg none", Some(none_token)),
        ("HS256 with the public key", Some(hs_token)),
        ("tampered payload", Some(tampered)),
        (
            "PS256",
            Some(mint_with(a, Some("a"), Algorithm::PS256, &good_claims())),
        ),
    ];
    let n = cases.len() as u64;
    for (name, token) in cases {
        let r = match &token {
            None => post(&h, None, body.clone()).await,
            Some(t) => {
                // send the raw header so even an empty token goes out
                client()
                    .post(h.url("/api/calls?calldRun=run-1"))
                    .header("authorization", format!("Bearer {t}"))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{name}"
        );
        let text = r.text().await.unwrap();
        assert!(text.len() < 100, "{name}: reason too long: {text}");
        nothing_queued(&mut h);
    }
    let s = h.stats.snapshot();
    assert_eq!(s.unauthorized, n);
    assert_eq!(s.accepted, 0);

    // and the listener still takes a good one
    let r = post(&h, Some(&good_token()), body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(h.rx.try_recv().is_ok());
}

#[tokio::test]
async fn rs512_and_second_issuer_are_accepted() {
    let mut h = Harness::start().await;
    let mut claims = good_claims();
    claims["iss"] = json!("https://graph.microsoft.com");
    claims["aud"] = json!(["other", CLIENT_ID]);
    let t = mint_with(key("a"), Some("a"), Algorithm::RS512, &claims);
    let r = post(&h, Some(&t), notification("c2", "established").to_string()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(h.rx.try_recv().is_ok());
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let mut h = Harness::start().await;
    let token = good_token();
    // exactly 1 MiB: accepted (a valid notification padded with a long field)
    let mut body = notification("c1", "established");
    let base = body.to_string().len();
    body["pad"] = json!("");
    let pad = 1024 * 1024 - base - r#","pad":"""#.len();
    body["pad"] = json!("x".repeat(pad));
    let exact = body.to_string();
    assert_eq!(exact.len(), 1024 * 1024);
    let r = post(&h, Some(&token), exact).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(h.rx.try_recv().is_ok());

    // one byte more, announced by Content-Length: refused before reading it
    // (raw HTTP: the body is never sent, so the answer cannot race a reset)
    let head = |len: usize, token: &str| {
        format!(
            "POST /api/calls HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             content-length: {len}\r\nconnection: close\r\n\r\n"
        )
    };
    let answer = raw(h.addr, head(1024 * 1024 + 1, &token).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // even without a valid token (the size is checked first)
    let answer = raw(h.addr, head(64 * 1024 * 1024, "x").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    nothing_queued(&mut h);
    assert_eq!(h.stats.snapshot().too_large, 2);
}

#[tokio::test]
async fn chunked_body_over_the_limit_gets_413() {
    // No Content-Length: the limit is enforced while reading. A small limit
    // keeps the whole request in one write, read by the server at once.
    let mut h = Harness::start_with(|o| o.max_body_bytes = 1000, 8).await;
    let token = good_token();
    let mut req = format!(
        "POST /api/calls HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        req.extend_from_slice(format!("{:x}\r\n", 400).as_bytes());
        req.extend_from_slice(&[b' '; 400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(h.addr, &req).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // and under the limit, chunked is fine
    let body = notification("c1", "established").to_string();
    let mut req = format!(
        "POST /api/calls HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
    .into_bytes();
    let answer = raw(h.addr, &req).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    req.clear();
    assert!(h.rx.try_recv().is_ok());
    nothing_queued(&mut h);
    assert_eq!(h.stats.snapshot().too_large, 1);
}

/// Send raw bytes, read the whole answer (the request says `connection: close`).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn malformed_bodies_get_400() {
    let mut h = Harness::start().await;
    let token = good_token();
    for body in [
        "",
        "{",
        "not json",
        "[]",
        "{}",
        r#"{"value": 5}"#,
        r#"{"value": ["x"]}"#,
        r##"{"@odata.type": "#microsoft.graph.changeNotificationCollection", "value": []}"##,
    ] {
        let r = post(&h, Some(&token), body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body:?}");
    }
    nothing_queued(&mut h);
    assert_eq!(h.stats.snapshot().malformed, 8);
}

#[tokio::test]
async fn paths_methods_and_health() {
    let mut h = Harness::start().await;
    let token = good_token();
    let body = notification("c1", "established").to_string();
    let r = post_to(&h, "/elsewhere", Some(&token), body.clone()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = client().get(h.url("/api/calls")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let r = client().get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    nothing_queued(&mut h);

    // without a configured path, any path is the notification path
    let mut any = Harness::start_with(|o| o.path = None, 8).await;
    let r = post_to(&any, "/whatever/x?calldRun=r9", Some(&token), body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(any.rx.try_recv().unwrap().run_id.as_deref(), Some("r9"));
}

#[tokio::test]
async fn full_queue_answers_503_with_retry_after() {
    let mut h = Harness::start_with(|_| {}, 1).await;
    let token = good_token();
    let body = notification("c1", "established").to_string();
    assert_eq!(
        post(&h, Some(&token), body.clone()).await.status(),
        StatusCode::ACCEPTED
    );
    let r = post(&h, Some(&token), body.clone()).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(h.stats.snapshot().overloaded, 1);
    // drained: accepted again
    h.rx.try_recv().unwrap();
    assert_eq!(
        post(&h, Some(&token), body).await.status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn validation_off_accepts_without_token() {
    let mut h = Harness::start_with(|o| o.validate_tokens = false, 8).await;
    assert!(h.keys.is_none());
    let r = post(&h, None, ESTABLISHED).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let got = h.rx.try_recv().unwrap();
    assert_eq!(got.tenant_id, None);
    assert_eq!(got.run_id.as_deref(), Some("run-1"));
    assert_eq!(h.jwks.hits(), 0, "no key fetch when validation is off");
}

#[tokio::test]
async fn unknown_kid_triggers_one_refresh_then_validates() {
    let mut h = Harness::start().await;
    assert_eq!(h.jwks.hits(), 1, "keys are loaded at start");
    let body = notification("c1", "established").to_string();

    // Microsoft rotates: the JWKS now also holds "rotated".
    let rotated = key("rotated");
    h.jwks.set_keys(&[key("a"), rotated]);
    let t = mint(rotated, &good_claims());
    let r = post(&h, Some(&t), body.clone()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(h.rx.try_recv().is_ok());
    assert_eq!(h.jwks.hits(), 2, "exactly one refresh");

    // the new key is cached: no further fetch
    let r = post(&h, Some(&t), body.clone()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(h.jwks.hits(), 2);

    // made-up kids: refused, and rate-limited (no fetch per token)
    for i in 0..5 {
        let t = mint_with(
            key("other"),
            Some(&format!("bogus-{i}")),
            Algorithm::RS256,
            &good_claims(),
        );
        let r = post(&h, Some(&t), body.clone()).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        h.jwks.hits(),
        2,
        "unknown kids within a minute fetch nothing"
    );
    assert_eq!(h.keys.as_ref().unwrap().stats().keys, 2);
}

#[tokio::test]
async fn unknown_kid_refresh_is_allowed_again_after_the_interval() {
    // interval zero: every unknown kid may refresh (shows the limiter is
    // what stops the fetches in the test above)
    let h = Harness::start_with(|o| o.unknown_kid_min_interval = Duration::ZERO, 8).await;
    let body = notification("c1", "established").to_string();
    for i in 0..3 {
        let t = mint_with(
            key("other"),
            Some(&format!("bogus-{i}")),
            Algorithm::RS256,
            &good_claims(),
        );
        assert_eq!(
            post(&h, Some(&t), body.clone()).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(h.jwks.hits(), 4);
}

#[tokio::test]
async fn fetch_failure_keeps_the_old_keys() {
    let mut h = Harness::start().await;
    let cache = h.keys.clone().unwrap();
    let body = notification("c1", "established").to_string();

    h.jwks.set_failing(true);
    assert!(cache.refresh().await.is_err());
    // a JWKS without a usable key must not replace good keys either
    h.jwks.set_failing(false);
    h.jwks
        .set_document(Some(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})));
    assert!(cache.refresh().await.is_err());
    h.jwks.set_document(Some(json!({"nope": 1})));
    assert!(cache.refresh().await.is_err());

    let stats = cache.stats();
    assert_eq!((stats.keys, stats.fetch_failures), (1, 3));
    let r = post(&h, Some(&good_token()), body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(h.rx.try_recv().is_ok());
}

#[tokio::test]
async fn unreachable_openid_endpoint_at_start_then_recovers() {
    // the JWKS is down when the listener starts: it still serves (401s),
    // and the first token after the endpoint comes back loads the keys
    let jwks = JwksServer::start(&[key("a")]).await;
    jwks.set_failing(true);
    let mut h = Harness::start_on(
        jwks,
        |o| o.unknown_kid_min_interval = Duration::ZERO,
        8,
        None,
    )
    .await;
    let body = notification("c1", "established").to_string();
    let r = post(&h, Some(&good_token()), body.clone()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    h.jwks.set_failing(false);
    let r = post(&h, Some(&good_token()), body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(h.rx.try_recv().is_ok());
}

/// Random JSON of bounded depth, biased towards notification-ish keys.
fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    const KEYS: &[&str] = &[
        "value",
        "changeType",
        "resourceUrl",
        "resource",
        "resourceData",
        "state",
        "resultInfo",
        "code",
        "subcode",
        "message",
        "@odata.type",
        "@odata.id",
        "id",
    ];
    let pick = if depth == 0 {
        rng.random_range(0..5)
    } else {
        rng.random_range(0..7)
    };
    match pick {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => match rng.random_range(0..4) {
            0 => json!(rng.random::<i64>()),
            1 => json!(rng.random::<f64>() * 1e12),
            2 => json!(u64::MAX),
            _ => json!(rng.random_range(-5..700)),
        },
        3 => {
            let len = rng.random_range(0..20);
            json!((0..len).map(|_| rng.random::<char>()).collect::<String>())
        }
        4 => json!(KEYS[rng.random_range(0..KEYS.len())]),
        5 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..6) {
                let k = if rng.random_bool(0.8) {
                    KEYS[rng.random_range(0..KEYS.len())].to_string()
                } else {
                    format!("k{}", rng.random::<u16>())
                };
                m.insert(k, random_json(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// Replace a random node of `v` with random JSON.
fn mutate(rng: &mut StdRng, v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.random_bool(0.7) => {
            let i = rng.random_range(0..m.len());
            let k = m.keys().nth(i).unwrap().clone();
            mutate(rng, m.get_mut(&k).unwrap());
        }
        Value::Array(a) if !a.is_empty() && rng.random_bool(0.7) => {
            let i = rng.random_range(0..a.len());
            mutate(rng, &mut a[i]);
        }
        _ => *v = random_json(rng, 3),
    }
}

fn random_body(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..4) {
        0 => {
            let len = rng.random_range(0..512);
            (0..len).map(|_| rng.random::<u8>()).collect()
        }
        1 => random_json(rng, 4).to_string().into_bytes(),
        2 => {
            let mut v = notification("fuzz", "established");
            for _ in 0..rng.random_range(1..4) {
                mutate(rng, &mut v);
            }
            v.to_string().into_bytes()
        }
        _ => {
            // a valid-looking body, truncated or with a byte flipped
            let mut b = notification("fuzz", "terminated").to_string().into_bytes();
            let i = rng.random_range(0..b.len());
            if rng.random_bool(0.5) {
                b.truncate(i);
            } else {
                b[i] = rng.random();
            }
            b
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_bodies_never_break_it() {
    let mut h = Harness::start().await;
    // drain the queue as the daemon would
    let mut rx = std::mem::replace(&mut h.rx, tokio::sync::mpsc::channel(1).1);
    let drained = tokio::spawn(async move {
        let mut n = 0u64;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let token = good_token();
    let url = h.url("/api/calls?calldRun=fuzz");
    let client = client();
    let mut rng = StdRng::seed_from_u64(0x00ca_11d0);
    let bodies: Vec<Vec<u8>> = (0..10_000).map(|_| random_body(&mut rng)).collect();

    let (mut ok, mut bad) = (0u64, 0u64);
    // 8 requests in flight, over keep-alive connections
    for batch in bodies.chunks(8) {
        let futs = batch.iter().map(|b| {
            client
                .post(&url)
                .header("authorization", format!("Bearer {token}"))
                .body(b.clone())
                .send()
        });
        for r in futures_join(futs).await {
            let status = r.expect("the listener answered").status();
            match status {
                StatusCode::ACCEPTED => ok += 1,
                StatusCode::BAD_REQUEST => bad += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert_eq!(ok + bad, 10_000);
    assert!(ok > 0 && bad > 0, "the generator covers both ({ok}/{bad})");
    let s = h.stats.snapshot();
    assert_eq!((s.accepted, s.malformed), (ok, bad));

    // still answering
    let r = client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post(&h, Some(&token), ESTABLISHED).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    drop(client);
    h.shutdown().await.unwrap();
    let queued = drained.await.unwrap();
    assert!(queued <= ok + 1, "{queued} queued, {ok} accepted");
}

/// Await every future (all run concurrently), in order.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn graceful_shutdown_returns() {
    let h = Harness::start().await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_stops_validating_after_refresh() {
    // Tokens verified once are remembered; new keys must forget them.
    let mut h = Harness::start().await;
    let body = notification("c1", "established").to_string();
    let t = good_token();
    assert_eq!(
        post(&h, Some(&t), body.clone()).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post(&h, Some(&t), body.clone()).await.status(),
        StatusCode::ACCEPTED
    );
    h.jwks.set_keys(&[key("rotated")]);
    h.keys.as_ref().unwrap().refresh().await.unwrap();
    assert_eq!(
        post(&h, Some(&t), body.clone()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let t2 = mint(key("rotated"), &good_claims());
    assert_eq!(
        post(&h, Some(&t2), body).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(h.stats.snapshot().accepted, 3);
    while h.rx.try_recv().is_ok() {}
}
