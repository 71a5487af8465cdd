//! The Graph emulator over real HTTP on loopback: tokens, creates and their
//! rejections, notifications (checked independently against the JWKS),
//! scripted outcomes, faults, DELETE and keepAlive.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use calld::emulator::{self, EmulatorConfig, EmulatorHandle, ScriptedFault};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SEED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/graph/seed");
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "49bfc225-8482-4ab8-94e7-76b48fdb9849";
/// A safety net against hangs, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

async fn emulator(yaml: &str) -> EmulatorHandle {
    let config = EmulatorConfig::from_yaml(yaml).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    emulator::start(config, listener).await.unwrap()
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

async fn token_response(em: &EmulatorHandle, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", em.base_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn token_for(em: &EmulatorHandle, client: &str, secret: &str) -> String {
    let scope = format!("{}/.default", em.base_url());
    let (status, body) = token_response(
        em,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn token(em: &EmulatorHandle) -> String {
    token_for(em, "app", "secret").await
}

async fn post_call(
    em: &EmulatorHandle,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut req = http()
        .post(format!("{}{path}", em.base_url()))
        .header("client-request-id", "11111111-2222-3333-4444-555555555555")
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn create(em: &EmulatorHandle, token: Option<&str>, body: &Value) -> reqwest::Response {
    post_call(em, "/v1.0/communications/calls", token, body).await
}

fn seed(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{SEED_DIR}/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn p2p(callback: &str, target: Value) -> Value {
    json!({
        "callbackUri": callback,
        "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        "source": {"identity": {"application": {"id": "app"}}},
        "targets": [{"identity": target}],
        "requestedModalities": ["audio"],
        "tenantId": TENANT,
    })
}

fn user(id: &str) -> Value {
    json!({"user": {"id": id, "tenantId": TENANT}})
}

/// Asserts Graph's error format and ids; returns the error code.
async fn graph_error(resp: reqwest::Response, status: u16) -> (String, String) {
    assert_eq!(resp.status().as_u16(), status);
    let h = resp.headers().clone();
    assert!(h.get("request-id").is_some());
    assert_eq!(
        h.get("client-request-id").unwrap(),
        "11111111-2222-3333-4444-555555555555"
    );
    let body: Value = resp.json().await.unwrap();
    let e = &body["error"];
    assert!(e["code"].is_string() && e["message"].is_string(), "{body}");
    assert_eq!(
        e["innerError"]["request-id"],
        h["request-id"].to_str().unwrap()
    );
    assert_eq!(
        e["innerError"]["client-request-id"],
        "11111111-2222-3333-4444-555555555555"
    );
    assert!(e["innerError"]["date"].as_str().unwrap().starts_with("20"));
    (
        e["code"].as_str().unwrap().to_string(),
        e["message"].as_str().unwrap().to_string(),
    )
}

// ---------------------------------------------------------------- creates

#[tokio::test]
async fn all_six_seed_bodies_are_accepted() {
    let em = emulator("notifications: false").await;
    let t = token(&em).await;
    let mut names: Vec<_> = std::fs::read_dir(SEED_DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".request.json"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 6);
    for (i, name) in names.iter().enumerate() {
        let body = seed(name);
        // The seed is a beta page: try both the v1.0 and the seed's own endpoint.
        let path = if i % 2 == 0 {
            "/v1.0/communications/calls"
        } else {
            "/beta/app/calls"
        };
        let resp = post_call(&em, path, Some(&t), &body).await;
        assert_eq!(resp.status(), 201, "{name}: {}", resp.text().await.unwrap());
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let call: Value = resp.json().await.unwrap();
        let id = call["id"].as_str().unwrap();
        assert!(
            location.starts_with(&em.base_url()) && location.ends_with(id),
            "{location}"
        );
        assert_eq!(call["state"], "establishing");
        assert_eq!(call["direction"], "outgoing");
        assert!(call["myParticipantId"].is_string());
        for (k, v) in body.as_object().unwrap() {
            assert_eq!(&call[k], v, "{name}: {k}");
        }
    }
    // The 201 carries every property of the seed's response example.
    let seed_response = seed("01-p2p-service-hosted-media.response.json");
    let resp = create(
        &em,
        Some(&t),
        &seed("01-p2p-service-hosted-media.request.json"),
    )
    .await;
    let call: Value = resp.json().await.unwrap();
    for (k, v) in seed_response.as_object().unwrap() {
        if k != "id" {
            assert_eq!(&call[k], v, "{k}");
        }
    }
    let received = em.received();
    assert_eq!(received.len(), 7);
    assert!(
        received
            .iter()
            .all(|r| r.status == Some(201) && r.call_id.is_some())
    );
    assert_eq!(
        received[0].client_request_id.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(received[0].body, seed(&names[0]));
}

#[tokio::test]
async fn legacy_and_version_paths() {
    let em = emulator("notifications: false").await;
    let t = token(&em).await;
    let body = seed("01-p2p-service-hosted-media.request.json");
    let r = post_call(&em, "/beta/applications/abc/calls", Some(&t), &body).await;
    assert_eq!(r.status(), 201);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/beta/app/calls/")
    );
    let r = post_call(&em, "/beta/communications/calls", Some(&t), &body).await;
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/beta/communications/calls/")
    );
    // v1.0 has no /app.
    graph_error(
        post_call(&em, "/v1.0/app/calls", Some(&t), &body).await,
        404,
    )
    .await;
    graph_error(
        post_call(&em, "/v2.0/communications/calls", Some(&t), &body).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn authentication_failures_are_401() {
    let em = emulator("notifications: false").await;
    let body = seed("01-p2p-service-hosted-media.request.json");

    let (code, msg) = graph_error(create(&em, None, &body).await, 401).await;
    assert_eq!(code, "InvalidAuthenticationToken");
    assert!(msg.contains("empty"), "{msg}");

    let (code, _) = graph_error(create(&em, Some("not-a-token"), &body).await, 401).await;
    assert_eq!(code, "InvalidAuthenticationToken");

    // A valid token with one character of its signature changed.
    let t = token(&em).await;
    let mut tampered = t[..t.len() - 3].to_string();
    tampered.push_str(if t.ends_with("AAA") { "BBB" } else { "AAA" });
    let (code, _) = graph_error(create(&em, Some(&tampered), &body).await, 401).await;
    assert_eq!(code, "InvalidAuthenticationToken");

    // A token of another emulator (another audience).
    let other = emulator("notifications: false").await;
    let foreign = token(&other).await;
    let (_, msg) = graph_error(create(&em, Some(&foreign), &body).await, 401).await;
    assert!(msg.contains("audience"), "{msg}");

    // An expired token (lifetime 0).
    let short = emulator("notifications: false\ntokenLifetime: 0s").await;
    let expired = token(&short).await;
    let (_, msg) = graph_error(create(&short, Some(&expired), &body).await, 401).await;
    assert!(msg.contains("expired"), "{msg}");

    // Nothing was placed.
    assert!(
        em.received()
            .iter()
            .all(|r| r.status == Some(401) && r.call_id.is_none())
    );
}

#[tokio::test]
async fn each_missing_role_is_403() {
    let em = emulator(
        "notifications: false
clients:
  - { id: p2p, secret: s, roles: [Calls.Initiate.All] }
  - { id: group, secret: s, roles: [calls.initiategroupcall.all] }
  - { id: join, secret: s, roles: [Calls.JoinGroupCall.All] }
  - { id: guest, secret: s, roles: [Calls.JoinGroupCallAsGuest.All] }
  - { id: all, secret: s }",
    )
    .await;
    let tok = |c: &'static str| {
        let em = &em;
        async move { token_for(em, c, "s").await }
    };
    let cases = [
        (
            "p2p",
            "03-group-call-service-hosted-media.request.json",
            Some("Calls.InitiateGroupCall.All"),
        ),
        (
            "p2p",
            "04-join-private-meeting.request.json",
            Some("Calls.JoinGroupCall.All"),
        ),
        (
            "p2p",
            "02-p2p-app-hosted-media.request.json",
            Some("Calls.AccessMedia.All"),
        ),
        ("p2p", "01-p2p-service-hosted-media.request.json", None),
        ("group", "01-p2p-service-hosted-media.request.json", None),
        (
            "group",
            "03-group-call-service-hosted-media.request.json",
            None,
        ),
        ("join", "05-join-channel-meeting.request.json", None),
        (
            "join",
            "06-join-channel-meeting-as-guest.request.json",
            Some("Calls.JoinGroupCallAsGuest.All"),
        ),
        (
            "guest",
            "06-join-channel-meeting-as-guest.request.json",
            None,
        ),
        (
            "guest",
            "04-join-private-meeting.request.json",
            Some("Calls.JoinGroupCall.All"),
        ),
        ("all", "02-p2p-app-hosted-media.request.json", None),
    ];
    for (client, file, missing) in cases {
        let t = tok(client).await;
        let resp = create(&em, Some(&t), &seed(file)).await;
        match missing {
            None => assert_eq!(resp.status(), 201, "{client} {file}"),
            Some(role) => {
                let (code, msg) = graph_error(resp, 403).await;
                assert_eq!(code, "7504", "{client} {file}");
                assert!(msg.contains(role), "{client} {file}: {msg}");
            }
        }
    }
}

#[tokio::test]
async fn tenant_mismatch_is_7505_only_between_guids() {
    let em = emulator(&format!("notifications: false\ntenantId: {TENANT}")).await;
    let t = token(&em).await;
    let mut body = p2p("https://bot.contoso.com/cb", user("u1"));
    body["tenantId"] = json!(OTHER_TENANT);
    let (code, _) = graph_error(create(&em, Some(&t), &body).await, 403).await;
    assert_eq!(code, "7505");
    body["tenantId"] = json!(TENANT.to_uppercase());
    assert_eq!(create(&em, Some(&t), &body).await.status(), 201);
    body["tenantId"] = json!("tenantId-value");
    assert_eq!(create(&em, Some(&t), &body).await.status(), 201);
    // The token endpoint serves only the configured tenant.
    let (status, err) =
        token_response(&em, OTHER_TENANT, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 400);
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS90002")
    );
}

#[tokio::test]
async fn invalid_bodies_are_400_in_graph_format() {
    let em = emulator("notifications: false").await;
    let t = token(&em).await;
    let good = p2p("https://bot.contoso.com/cb", user("u1"));
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("callbackUri");
    cases.push((b, "callbackUri is required"));
    let mut b = good.clone();
    b["callbackUri"] = json!("http://bot.contoso.com/cb");
    cases.push((b, "https"));
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("mediaConfig");
    cases.push((b, "mediaConfig is required"));
    let mut b = good.clone();
    b["requestedModalities"] = json!(["hologram"]);
    cases.push((b, "requestedModalities"));
    // (no source at all is fine: Graph takes the caller from the token)
    let mut b = good.clone();
    b["source"] = json!({"languageId": "en-US"});
    cases.push((b, "source.identity is required"));
    let mut b = good.clone();
    b["targets"] = json!([]);
    cases.push((b, "targets"));
    let mut b = good.clone();
    b["state"] = json!("established");
    cases.push((b, "read-only"));
    let mut b = good.clone();
    b["calldRun"] = json!("x");
    cases.push((b, "does not exist"));
    let mut b = good.clone();
    b["targets"] = json!(
        (0..6)
            .map(|i| json!({"identity": user(&format!("u{i}"))}))
            .collect::<Vec<_>>()
    );
    cases.push((b, "at most 5"));
    let mut b = seed("04-join-private-meeting.request.json");
    b.as_object_mut().unwrap().remove("chatInfo");
    cases.push((b, "chatInfo"));
    for (body, needle) in cases {
        let (code, msg) = graph_error(create(&em, Some(&t), &body).await, 400).await;
        assert_eq!(code, "BadRequest");
        assert!(msg.contains(needle), "expected `{needle}` in `{msg}`");
    }
    // Not JSON at all.
    let r = http()
        .post(format!("{}/v1.0/communications/calls", em.base_url()))
        .bearer_auth(&t)
        .header("client-request-id", "11111111-2222-3333-4444-555555555555")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    graph_error(r, 400).await;
    // JSON sent as something else.
    let r = http()
        .post(format!("{}/v1.0/communications/calls", em.base_url()))
        .bearer_auth(&t)
        .header("client-request-id", "11111111-2222-3333-4444-555555555555")
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(graph_error(r, 415).await.0, "UnsupportedMediaType");
    let received = em.received();
    assert!(received.iter().all(|r| r.call_id.is_none()));
    assert!(
        received
            .iter()
            .all(|r| matches!(r.status, Some(400) | Some(415)))
    );
    // A body that is not JSON is kept as text.
    assert_eq!(received[received.len() - 2].body, json!("{not json"));
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn token_endpoint_answers_like_azure_ad() {
    let em = emulator(
        "clients: [{ id: app, secret: right, roles: [Calls.Initiate.All] }]\ntokenLifetime: 10m",
    )
    .await;
    let scope = format!("{}/.default", em.base_url());
    let (status, body) = token_response(
        &em,
        "contoso",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "right"),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["ext_expires_in"], 600);
    // The access token: RS256 with a kid from the JWKS, aud = base URL, roles.
    let claims = validate_with_jwks(
        &em,
        body["access_token"].as_str().unwrap(),
        &em.base_url(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(claims["tid"], "contoso");
    assert_eq!(claims["appid"], "app");
    assert_eq!(claims["roles"], json!(["Calls.Initiate.All"]));

    let (status, body) = token_response(
        &em,
        "contoso",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "wrong-secret"),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.starts_with("AADSTS7000215:"), "{description}");
    assert!(!body.to_string().contains("wrong-secret"));
    // Secrets never reach the request log.
    let log = serde_json::to_string(&em.requests()).unwrap();
    assert!(
        !log.contains("right") && !log.contains("wrong-secret"),
        "{log}"
    );
}

#[tokio::test]
async fn client_assertions_are_verified_with_the_configured_certificate() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.pem");
    std::fs::write(
        &cert,
        key.to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let config = dir.path().join("emulator.yaml");
    std::fs::write(
        &config,
        "notifications: false\nclients: [{ id: certapp, certificate: client.pem }]\n",
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let em = emulator::start(EmulatorConfig::from_file(&config).unwrap(), listener)
        .await
        .unwrap();

    let signer = jsonwebtoken::EncodingKey::from_rsa_pem(
        key.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let aud = format!("{}/{TENANT}/oauth2/v2.0/token", em.base_url());
    let assertion = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::RS256),
            &claims,
            &signer,
        )
        .unwrap()
    };
    let good = assertion(
        json!({"aud": aud, "iss": "certapp", "sub": "certapp", "jti": "1", "nbf": now, "exp": now + 600}),
    );
    let scope = format!("{}/.default", em.base_url());
    let ask = |a: String| {
        let em = &em;
        let scope = scope.clone();
        async move {
            token_response(
                em,
                TENANT,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", "certapp"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &a),
                    ("scope", &scope),
                ],
            )
            .await
        }
    };
    let (status, body) = ask(good.clone()).await;
    assert_eq!(status, 200, "{body}");

    // Claims changed after signing: the signature no longer matches.
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let other_claims = json!({"aud": aud, "iss": "certapp", "sub": "certapp", "exp": now + 7200});
    let payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::to_vec(&other_claims).unwrap(),
    );
    let forged = format!("{head}.{payload}.{sig}");
    let (status, body) = ask(forged).await;
    assert_eq!(status, 401);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700027"),
        "{body}"
    );

    let wrong_aud = assertion(
        json!({"aud": "https://login.microsoftonline.com/x/oauth2/v2.0/token", "iss": "certapp", "sub": "certapp", "exp": now + 600}),
    );
    assert_eq!(ask(wrong_aud).await.0, 401);
    let expired =
        assertion(json!({"aud": aud, "iss": "certapp", "sub": "certapp", "exp": now - 3600}));
    assert_eq!(ask(expired).await.0, 401);
}

// ---------------------------------------------------------------- notifications

#[derive(Debug)]
struct Delivery {
    query: Option<String>,
    authorization: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct Sink {
    tx: mpsc::UnboundedSender<Delivery>,
    /// The first this-many deliveries are refused with 500.
    refuse: Arc<AtomicUsize>,
}

async fn receive(
    State(sink): State<Sink>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> StatusCode {
    let refused = sink
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let _ = sink.tx.send(Delivery {
        query,
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        body: body.0,
    });
    if refused {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::ACCEPTED
    }
}

/// A callback listener on port 0: its URL and what it receives.
async fn callback_server(refuse_first: usize) -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Sink {
        tx,
        refuse: Arc::new(AtomicUsize::new(refuse_first)),
    };
    let app = axum::Router::new()
        .route("/api/calls", axum::routing::post(receive))
        .with_state(sink);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/calls", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a notification")
        .expect("the callback server is running")
}

fn state_of(d: &Delivery) -> (String, String) {
    let item = &d.body["value"][0];
    (
        item["changeType"].as_str().unwrap().to_string(),
        item["resourceData"]["state"].as_str().unwrap().to_string(),
    )
}

/// Validates a token the way the daemon must: keys from the OpenID
/// configuration's `jwks_uri`, fetched over HTTP.
async fn validate_with_jwks(
    em: &EmulatorHandle,
    token: &str,
    audience: &str,
    issuer: Option<&str>,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let client = http();
    let config: Value = client
        .get(em.open_id_config_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks: JwkSet = client
        .get(config["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token)?;
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[audience]);
    if let Some(iss) = issuer {
        assert_eq!(config["issuer"], iss);
        v.set_issuer(&[iss]);
    }
    v.set_required_spec_claims(&["exp", "aud"]);
    jsonwebtoken::decode::<Value>(token, &key, &v).map(|d| d.claims)
}

#[tokio::test]
async fn notifications_arrive_in_order_with_valid_tokens() {
    let em = emulator(
        "tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47
calls: { answerAfter: 20ms, length: 50ms }",
    )
    .await;
    let (url, mut rx) = callback_server(0).await;
    let t = token_for(&em, "my-client-id", "x").await;
    let body = p2p(&format!("{url}?calldRun=run-42&x=1"), user("someone"));
    let resp = create(&em, Some(&t), &body).await;
    assert_eq!(resp.status(), 201);
    let call: Value = resp.json().await.unwrap();
    let id = call["id"].as_str().unwrap().to_string();

    let mut seen = Vec::new();
    for _ in 0..4 {
        let d = next(&mut rx).await;
        assert_eq!(d.query.as_deref(), Some("calldRun=run-42&x=1"));
        assert_eq!(d.body["@odata.type"], "#microsoft.graph.commsNotifications");
        let item = &d.body["value"][0];
        assert_eq!(item["resourceUrl"], format!("/communications/calls/{id}"));
        assert_eq!(item["resourceData"]["@odata.type"], "#microsoft.graph.call");
        let token = d
            .authorization
            .as_deref()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap();
        let claims = validate_with_jwks(
            &em,
            token,
            "my-client-id",
            Some("https://api.botframework.com"),
        )
        .await
        .expect("the notification token validates");
        assert_eq!(claims["tid"], TENANT);
        // A tampered token does not validate.
        let (head, rest) = token.split_once('.').unwrap();
        let (payload, sig) = rest.split_once('.').unwrap();
        let mut claims_changed = claims.clone();
        claims_changed["aud"] = json!("someone-else");
        let forged_payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&claims_changed).unwrap(),
        );
        assert_ne!(forged_payload, payload);
        let forged = format!("{head}.{forged_payload}.{sig}");
        assert!(
            validate_with_jwks(&em, &forged, "someone-else", None)
                .await
                .is_err()
        );
        // Nor for another audience.
        assert!(
            validate_with_jwks(&em, token, "another-app", None)
                .await
                .is_err()
        );
        seen.push((state_of(&d), item["resourceData"]["resultInfo"].clone()));
    }
    let states: Vec<_> = seen
        .iter()
        .map(|(s, _)| (s.0.as_str(), s.1.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("updated", "establishing"),
            ("updated", "established"),
            ("updated", "terminating"),
            ("deleted", "terminated"),
        ]
    );
    let result = &seen[3].1;
    assert_eq!(
        (result["code"].as_u64(), result["subcode"].as_u64()),
        (Some(200), Some(5001))
    );
    assert!(seen[..3].iter().all(|(_, r)| r.is_null()));
    // The call is gone.
    let r = http()
        .get(format!("{}/v1.0/communications/calls/{id}", em.base_url()))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn scripted_target_outcomes() {
    let em = emulator(
        "calls: { answerAfter: 10ms, length: 10ms }
notifications: { codesAsStrings: true }
targets:
  '+15550100': { outcome: decline, after: 10ms }
  '+15550101': { outcome: noAnswer }
  '+15550102': { outcome: busy }
  '+15550103': { outcome: unreachable }
  custom: { outcome: noAnswer, result: { code: 408, subcode: 1106, message: no ack } }
  answers: { outcome: answer, after: 1ms, length: 1ms, result: { code: 200, subcode: 4097 } }",
    )
    .await;
    let (url, mut rx) = callback_server(0).await;
    let t = token(&em).await;
    let expected: HashMap<&str, (&str, &str, bool)> = HashMap::from([
        ("+15550100", ("603", "0", false)),
        ("+15550101", ("408", "10057", false)),
        ("+15550102", ("486", "0", false)),
        ("+15550103", ("480", "10037", false)),
        ("custom", ("408", "1106", false)),
        ("answers", ("200", "4097", true)),
    ]);
    for id in expected.keys() {
        let target = if id.starts_with('+') {
            json!({"phone": {"id": id}})
        } else {
            user(id)
        };
        let body = p2p(
            &format!("{url}?calldRun={}", id.trim_start_matches('+')),
            target,
        );
        assert_eq!(create(&em, Some(&t), &body).await.status(), 201);
    }
    let mut per_run: HashMap<String, Vec<Delivery>> = HashMap::new();
    let mut finished = 0;
    while finished < expected.len() {
        let d = next(&mut rx).await;
        let run = d
            .query
            .clone()
            .unwrap()
            .trim_start_matches("calldRun=")
            .to_string();
        if state_of(&d).1 == "terminated" {
            finished += 1;
        }
        per_run.entry(run).or_default().push(d);
    }
    for (id, (code, subcode, answered)) in expected {
        let run = per_run.get(id.trim_start_matches('+')).unwrap();
        let states: Vec<String> = run.iter().map(|d| state_of(d).1).collect();
        let want: Vec<&str> = if answered {
            vec!["establishing", "established", "terminating", "terminated"]
        } else {
            vec!["establishing", "terminated"]
        };
        assert_eq!(states, want, "{id}");
        let result = &run.last().unwrap().body["value"][0]["resourceData"]["resultInfo"];
        assert_eq!(result["code"], code, "{id}");
        assert_eq!(result["subcode"], subcode, "{id}");
    }
}

#[tokio::test]
async fn refused_deliveries_are_retried() {
    let em = emulator(
        "calls: { answerAfter: 1ms, length: 1h }
notifications: { retryDelay: 5ms }",
    )
    .await;
    let (url, mut rx) = callback_server(2).await;
    let t = token(&em).await;
    assert_eq!(
        create(&em, Some(&t), &p2p(&url, user("u"))).await.status(),
        201
    );
    let states: Vec<String> = [
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
    ]
    .iter()
    .map(|d| state_of(d).1)
    .collect();
    assert_eq!(
        states,
        [
            "establishing",
            "establishing",
            "establishing",
            "established"
        ]
    );
}

#[tokio::test]
async fn a_failing_callback_never_blocks_the_create() {
    let em =
        emulator("calls: { answerAfter: 1h }\nnotifications: { attempts: 2, retryDelay: 1ms }")
            .await;
    // A callback that accepts each connection and closes it at once.
    let rude = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", rude.local_addr().unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = rude.accept().await {
            drop(stream);
            let _ = tx.send(());
        }
    });
    let t = token(&em).await;
    for _ in 0..3 {
        assert_eq!(
            create(&em, Some(&t), &p2p(&url, user("u"))).await.status(),
            201
        );
    }
    // Three `establishing` notifications, each tried at least twice.
    for _ in 0..6 {
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
}

// ---------------------------------------------------------------- DELETE, keepAlive

#[tokio::test]
async fn delete_and_keep_alive() {
    let em = emulator("calls: { answerAfter: 1ms, length: 1h }").await;
    let (url, mut rx) = callback_server(0).await;
    let t = token(&em).await;
    let resp = post_call(&em, "/beta/app/calls", Some(&t), &p2p(&url, user("u"))).await;
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(state_of(&next(&mut rx).await).1, "establishing");
    assert_eq!(state_of(&next(&mut rx).await).1, "established");

    let c = http();
    let base = em.base_url();
    let get = c
        .get(format!("{base}/v1.0/communications/calls/{id}"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.json::<Value>().await.unwrap()["state"], "established");
    for path in [
        format!("{base}/v1.0/communications/calls/{id}/keepAlive"),
        format!("{base}/beta/app/calls/{id}/keepAlive"),
    ] {
        let r = c.post(&path).bearer_auth(&t).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // keepAlive needs a token too.
    let r = c
        .post(format!("{base}/v1.0/communications/calls/{id}/keepAlive"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let del = c
        .delete(format!("{base}/v1.0/communications/calls/{id}"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let d = next(&mut rx).await;
    assert_eq!(state_of(&d), ("updated".into(), "terminating".into()));
    let d = next(&mut rx).await;
    assert_eq!(state_of(&d), ("deleted".into(), "terminated".into()));
    let result = &d.body["value"][0]["resourceData"]["resultInfo"];
    assert_eq!(
        (result["code"].as_u64(), result["subcode"].as_u64()),
        (Some(200), Some(7000))
    );

    let r = c
        .post(format!("{base}/v1.0/communications/calls/{id}/keepAlive"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{base}/v1.0/communications/calls/{id}"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .delete(format!("{base}/v1.0/communications/calls/{id}"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let kinds: Vec<(String, Option<u16>)> = em
        .requests()
        .into_iter()
        .filter(|r| r.kind != "token")
        .map(|r| (r.kind, r.status))
        .collect();
    let k = |s: &str, n| (s.to_string(), Some(n));
    assert_eq!(
        kinds,
        vec![
            k("create", 201),
            k("get", 200),
            k("keepAlive", 200),
            k("keepAlive", 200),
            k("keepAlive", 401),
            k("delete", 204),
            k("keepAlive", 404),
            k("get", 404),
            k("delete", 404),
        ]
    );
}

#[tokio::test]
async fn delete_while_ringing_ends_by_bot() {
    let em = emulator("calls: { answerAfter: 1h }").await;
    let (url, mut rx) = callback_server(0).await;
    let t = token(&em).await;
    let resp = create(&em, Some(&t), &p2p(&url, user("u"))).await;
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(state_of(&next(&mut rx).await).1, "establishing");
    let r = http()
        .delete(format!("{}/v1.0/communications/calls/{id}", em.base_url()))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(state_of(&next(&mut rx).await).1, "terminating");
    let d = next(&mut rx).await;
    assert_eq!(
        d.body["value"][0]["resourceData"]["resultInfo"]["subcode"],
        7000
    );
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn scripted_faults_in_order() {
    let em = emulator(
        "notifications: false
faults:
  retryAfter: 250ms
  script: [throttle, unavailable, unavailableNoRetryAfter, serverError, drop, ok]",
    )
    .await;
    let t = token(&em).await;
    let body = p2p("https://bot.contoso.com/cb", user("u"));
    let r = create(&em, Some(&t), &body).await;
    assert_eq!(r.headers()["retry-after"], "0.25");
    assert_eq!(graph_error(r, 429).await.0, "TooManyRequests");
    let r = create(&em, Some(&t), &body).await;
    assert_eq!(r.headers()["retry-after"], "0.25");
    assert_eq!(graph_error(r, 503).await.0, "ServiceUnavailable");
    let r = create(&em, Some(&t), &body).await;
    assert!(r.headers().get("retry-after").is_none());
    graph_error(r, 503).await;
    let r = create(&em, Some(&t), &body).await;
    assert!(r.headers().get("retry-after").is_none());
    graph_error(r, 500).await;
    // Dropped: the connection closes without an answer.
    let dropped = http()
        .post(format!("{}/v1.0/communications/calls", em.base_url()))
        .bearer_auth(&t)
        .header("client-request-id", "dropped-one")
        .json(&body)
        .send()
        .await;
    let err = dropped.expect_err("no answer");
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(create(&em, Some(&t), &body).await.status(), 201);
    // The script is used up: normal again.
    assert_eq!(create(&em, Some(&t), &body).await.status(), 201);

    let received = em.received();
    let summary: Vec<(Option<u16>, Option<ScriptedFault>)> =
        received.iter().map(|r| (r.status, r.fault)).collect();
    use ScriptedFault::*;
    assert_eq!(
        summary,
        vec![
            (Some(429), Some(Throttle)),
            (Some(503), Some(Unavailable)),
            (Some(503), Some(UnavailableNoRetryAfter)),
            (Some(500), Some(ServerError)),
            (None, Some(Drop)),
            (Some(201), None),
            (Some(201), None),
        ]
    );
    // The dropped request was read and recorded, body and all.
    assert_eq!(
        received[4].client_request_id.as_deref(),
        Some("dropped-one")
    );
    assert_eq!(received[4].body, body);
    assert!(received[4].call_id.is_none());

    // The same over HTTP, and reset.
    let listed: Vec<emulator::ReceivedRequest> = http()
        .get(format!("{}/_emulator/calls", em.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, received);
    let r = http()
        .post(format!("{}/_emulator/reset", em.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(em.received().is_empty());
}

#[tokio::test]
async fn fault_script_can_be_set_at_run_time() {
    let em = emulator("notifications: false").await;
    let t = token(&em).await;
    let body = p2p("https://bot.contoso.com/cb", user("u"));
    let r = http()
        .post(format!("{}/_emulator/faults", em.base_url()))
        .json(&json!({"script": ["throttle", "ok", "throttle"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let statuses: Vec<u16> = statuses_of(&em, &t, &body, 4).await;
    assert_eq!(statuses, [429, 201, 429, 201]);
    em.set_fault_script(vec![ScriptedFault::Unavailable]);
    assert_eq!(statuses_of(&em, &t, &body, 2).await, [503, 201]);
    let r = http()
        .post(format!("{}/_emulator/faults", em.base_url()))
        .json(&json!({"script": ["explode"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

async fn statuses_of(em: &EmulatorHandle, t: &str, body: &Value, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(create(em, Some(t), body).await.status().as_u16());
    }
    out
}

#[tokio::test]
async fn seeded_random_faults_are_reproducible() {
    let yaml = "notifications: false
faults: { seed: 1234, throttle: 0.3, unavailable: 0.2, drop: 0.1, retryAfter: 10ms }";
    let mut runs = Vec::new();
    for _ in 0..2 {
        let em = emulator(yaml).await;
        let t = token(&em).await;
        let body = p2p("https://bot.contoso.com/cb", user("u"));
        let client = http();
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let r = client
                .post(format!("{}/v1.0/communications/calls", em.base_url()))
                .bearer_auth(&t)
                .json(&body)
                .send()
                .await;
            statuses.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    for code in [0, 201, 429, 503] {
        assert!(runs[0].contains(&code), "{code} in {:?}", runs[0]);
    }
}

#[tokio::test]
async fn a_hang_places_the_call_but_never_answers() {
    let em = emulator("notifications: false\nfaults: { script: [hang] }").await;
    let t = token(&em).await;
    let err = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(format!("{}/v1.0/communications/calls", em.base_url()))
        .bearer_auth(&t)
        .json(&p2p("https://bot.contoso.com/cb", user("u")))
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout());
    let r = &em.received()[0];
    assert_eq!((r.status, r.fault), (None, Some(ScriptedFault::Hang)));
    let id = r.call_id.clone().expect("the call was placed");
    let get = http()
        .get(format!("{}/v1.0/communications/calls/{id}", em.base_url()))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
}

#[tokio::test]
async fn openid_configuration_and_jwks() {
    let em = emulator("notifications: { issuer: https://issuer.test }").await;
    assert_eq!(em.issuer(), "https://issuer.test");
    let c = http();
    let config: Value = c
        .get(em.open_id_config_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["issuer"], "https://issuer.test");
    let jwks: Value = c
        .get(config["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    for field in ["kty", "n", "e", "kid", "use", "alg"] {
        assert!(key[field].is_string(), "{field}");
    }
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    // Microsoft's path for the bot OpenID configuration works too.
    let alt: Value = c
        .get(format!(
            "{}/v1/.well-known/OpenIdConfiguration",
            em.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alt, config);
    em.shutdown().await;
}
