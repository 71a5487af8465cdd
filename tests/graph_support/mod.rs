//! A scripted fake of Azure AD's token endpoint and of Graph, on loopback,
//! for the Graph client's tests and benchmark. Every request is counted.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "8a34a46b-3d17-4adc-8dce-dc4e7d572698";
pub const SECRET: &str = "s3cr3t-value-never-printed";

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Scripted {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        delay: Duration,
    },
}

impl Scripted {
    pub fn status(status: u16, body: &str) -> Scripted {
        Scripted::Respond {
            status,
            headers: vec![],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Scripted {
        let Scripted::Respond { headers, .. } = &mut self;
        headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Scripted {
        let Scripted::Respond { delay, .. } = &mut self;
        *delay = d;
        self
    }
    /// Graph's error format.
    pub fn graph_error(status: u16, code: &str, message: &str) -> Scripted {
        Scripted::status(
            status,
            &serde_json::json!({"error": {"code": code, "message": message,
                "innerError": {"date": "2026-01-01T00:00:00", "request-id": "body-request-id"}}})
            .to_string(),
        )
    }
}

/// A request the fake Graph received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

#[derive(Default)]
pub struct FakeState {
    /// Its own base URL, once bound.
    pub base: Mutex<String>,
    pub token_requests: AtomicUsize,
    pub token_forms: Mutex<Vec<HashMap<String, String>>>,
    /// Scripted token answers; when empty, a token is issued.
    pub token_script: Mutex<VecDeque<Scripted>>,
    /// `expires_in` of issued tokens (default 3600).
    pub token_expires_in: AtomicU64,
    /// Delay before a token answer, in ms (to overlap concurrent callers).
    pub token_delay_ms: AtomicU64,
    /// The expected client secret (None: any).
    pub expected_secret: Mutex<Option<String>>,
    /// The certificate PEM and its openssl-computed thumbprints that a client
    /// assertion must match.
    pub expected_cert: Mutex<Option<(Vec<u8>, String, String)>>,
    /// Roles written into issued tokens.
    pub roles: Mutex<Vec<String>>,
    pub graph: Mutex<Vec<Received>>,
    pub graph_count: AtomicUsize,
    /// Scripted Graph answers; when empty, success (201 for a create).
    pub graph_script: Mutex<VecDeque<Scripted>>,
    /// Delay of default answers, in µs.
    pub graph_delay_us: AtomicU64,
    /// Every Nth create (N > 0) answers 429 with Retry-After 0.
    pub throttle_every: AtomicU64,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// Don't keep request bodies (benchmark).
    pub lean: std::sync::atomic::AtomicBool,
    /// Call ids issued, to prove none twice.
    pub call_seq: AtomicU64,
}

pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
}

impl Fake {
    pub async fn start() -> Fake {
        let state = Arc::new(FakeState {
            token_expires_in: AtomicU64::new(3600),
            roles: Mutex::new(vec![
                "Calls.Initiate.All".into(),
                "Calls.JoinGroupCall.All".into(),
            ]),
            ..FakeState::default()
        });
        let app = axum::Router::new()
            .route(
                "/{tenant}/oauth2/v2.0/token",
                axum::routing::post(token_endpoint),
            )
            .fallback(graph_endpoint)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *state.base.lock().unwrap() = format!("http://{addr}");
        // No Nagle delay on answers, as a real server sets.
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fake { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("{}/{TENANT}/oauth2/v2.0/token", self.base_url())
    }

    pub fn script_graph(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.graph_script.lock().unwrap().extend(answers);
    }

    pub fn script_token(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.token_script.lock().unwrap().extend(answers);
    }

    pub fn graph_requests(&self) -> Vec<Received> {
        self.state.graph.lock().unwrap().clone()
    }

    pub fn graph_count(&self) -> usize {
        self.state.graph_count.load(Ordering::SeqCst)
    }

    pub fn token_count(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }
}

fn respond(s: &Scripted) -> Response {
    let Scripted::Respond {
        status,
        headers,
        body,
        ..
    } = s;
    let mut r = (StatusCode::from_u16(*status).unwrap(), body.clone()).into_response();
    for (k, v) in headers {
        r.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

fn aad_error(status: u16, error: &str, description: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(serde_json::json!({
            "error": error, "error_description": description,
            "error_codes": [7000215], "trace_id": "trace", "correlation_id": "corr"
        })),
    )
        .into_response()
}

/// An access token as Azure AD would shape it (unsigned here: the client
/// only reads its payload).
pub fn make_token(n: usize, roles: &[String]) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256"}"#);
    let payload = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"roles": roles, "tid": TENANT, "appid": CLIENT_ID, "n": n}).to_string(),
    );
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

async fn token_endpoint(
    State(st): State<Arc<FakeState>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let n = st.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    st.token_forms.lock().unwrap().push(form.clone());
    let delay = st.token_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let scripted = st.token_script.lock().unwrap().pop_front();
    if let Some(s) = scripted {
        return respond(&s);
    }
    if tenant != TENANT {
        return aad_error(400, "invalid_request", "AADSTS90002: Tenant not found.");
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
    {
        return aad_error(
            400,
            "invalid_request",
            "AADSTS900144: bad grant or client id",
        );
    }
    let base = st.base.lock().unwrap().clone();
    if form.get("scope") != Some(&format!("{base}/.default")) {
        return aad_error(400, "invalid_scope", "AADSTS1002012: bad scope");
    }
    let expected_secret = st.expected_secret.lock().unwrap().clone();
    let expected_cert = st.expected_cert.lock().unwrap().clone();
    if let Some((cert_pem, x5t_s256, x5t)) = expected_cert {
        if form.contains_key("client_secret") {
            return aad_error(
                401,
                "invalid_client",
                "AADSTS7000215: secret with a certificate",
            );
        }
        if form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return aad_error(400, "invalid_request", "AADSTS50027: bad assertion type");
        }
        let token_url = format!("{base}/{TENANT}/oauth2/v2.0/token");
        let assertion = form.get("client_assertion").cloned().unwrap_or_default();
        if let Err(why) = verify_assertion(&assertion, &cert_pem, &x5t_s256, &x5t, &token_url) {
            return aad_error(401, "invalid_client", &format!("AADSTS700027: {why}"));
        }
    } else if let Some(secret) = expected_secret
        && form.get("client_secret") != Some(&secret)
    {
        return aad_error(
            401,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let roles = st.roles.lock().unwrap().clone();
    axum::Json(serde_json::json!({
        "token_type": "Bearer",
        "expires_in": st.token_expires_in.load(Ordering::SeqCst),
        "ext_expires_in": 3599,
        "access_token": make_token(n, &roles),
    }))
    .into_response()
}

/// Checks a client assertion as Azure AD does: RS256 signature by the
/// certificate's key, thumbprints, audience, issuer, subject, lifetime.
pub fn verify_assertion(
    assertion: &str,
    cert_pem: &[u8],
    x5t_s256: &str,
    x5t: &str,
    token_url: &str,
) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| e.to_string())?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(format!("alg {:?}", header.alg));
    }
    if header.x5t_s256.as_deref() != Some(x5t_s256) {
        return Err(format!("x5t#S256 {:?}", header.x5t_s256));
    }
    if header.x5t.as_deref() != Some(x5t) {
        return Err(format!("x5t {:?}", header.x5t));
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(cert_pem).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[token_url]);
    v.set_issuer(&[CLIENT_ID]);
    v.sub = Some(CLIENT_ID.to_string());
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &v)
        .map_err(|e| format!("signature or claims: {e}"))?;
    let c = data.claims;
    let jti = c["jti"].as_str().unwrap_or_default();
    if jti.is_empty() {
        return Err("no jti".into());
    }
    let (nbf, exp) = (
        c["nbf"].as_i64().unwrap_or(0),
        c["exp"].as_i64().unwrap_or(0),
    );
    if exp - nbf != 600 {
        return Err(format!("lifetime {}", exp - nbf));
    }
    Ok(())
}

struct InFlight<'a>(&'a FakeState);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn graph_endpoint(
    State(st): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(&st);
    let n = st.graph_count.fetch_add(1, Ordering::SeqCst) + 1;
    if !st.lean.load(Ordering::Relaxed) {
        st.graph.lock().unwrap().push(Received {
            method: method.to_string(),
            path: uri.path().to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: String::from_utf8_lossy(&body).to_string(),
        });
    }
    let scripted = st.graph_script.lock().unwrap().pop_front();
    if let Some(s) = scripted {
        let Scripted::Respond { delay, .. } = &s;
        if !delay.is_zero() {
            tokio::time::sleep(*delay).await;
        }
        let mut r = respond(&s);
        r.headers_mut()
            .insert("request-id", format!("req-{n}").parse().unwrap());
        return r;
    }
    let delay = st.graph_delay_us.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_micros(delay)).await;
    }
    let is_create = method == Method::POST && uri.path().ends_with("/calls");
    let every = st.throttle_every.load(Ordering::Relaxed);
    if is_create && every > 0 && (n as u64).is_multiple_of(every) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0"), ("request-id", "throttled")],
            "",
        )
            .into_response();
    }
    if is_create {
        let id = format!("call-{}", st.call_seq.fetch_add(1, Ordering::SeqCst) + 1);
        let location = format!("{}{}/{id}", st.base.lock().unwrap(), uri.path());
        return (
            StatusCode::CREATED,
            [
                ("location", location.as_str()),
                ("request-id", &format!("req-{n}")),
            ],
            axum::Json(serde_json::json!({
                "@odata.type": "#microsoft.graph.call", "id": id, "state": "establishing"
            })),
        )
            .into_response();
    }
    if method == Method::DELETE {
        return StatusCode::NO_CONTENT.into_response();
    }
    StatusCode::OK.into_response()
}

/// A raw TCP server that reads each request in full and then closes the
/// connection without answering. Returns its address and its request count.
pub async fn start_dropper() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            c.fetch_add(1, Ordering::SeqCst);
                            // Close without a word: the request was sent.
                            drop(sock);
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, count)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A loopback port with nothing listening (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// A manual clock for the token source.
#[derive(Clone)]
pub struct ManualClock(pub Arc<Mutex<jiff::Timestamp>>);

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock(Arc::new(Mutex::new(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        )))
    }
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap();
        *t = t
            .checked_add(jiff::SignedDuration::try_from(d).unwrap())
            .unwrap();
    }
    pub fn clock(&self) -> calld::graph::auth::Clock {
        let c = self.0.clone();
        Arc::new(move || *c.lock().unwrap())
    }
}

pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

/// The certificate's thumbprints as computed by openssl (see the fixtures' README).
pub const CERT_X5T_S256: &str = "eMuAzeqtLR2LiyPfV_Tuh8DgVY8Xmh8FpR7jtubVgrM";
pub const CERT_X5T: &str = "qZ36VWqJZaKrXFznfw6x5EGwFM0";
