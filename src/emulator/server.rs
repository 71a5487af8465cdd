//! The HTTP side: a hyper accept loop (so a fault can close a connection
//! without answering), one dispatch function, the call store and the
//! notification deliveries.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use super::config::{EmulatorConfig, ResultInfo, ScriptedFault};
use super::errors::{AadError, GraphError};
use super::faults::{FaultPicker, retry_after_header};
use super::keys::SigningKey;
use super::plan::{CallPlan, ended_by_bot, notification, plan_call};
use super::token::{AccessClaims, KnownClient, TokenContext, check_token_request};
use super::validate::{ApiVersion, check_create, check_tenant, missing_roles};

/// Largest request body read (Graph's own limit is 4 MB).
const MAX_BODY: usize = 4 << 20;
/// Cached access tokens (validated once, then looked up).
const ACCESS_CACHE_MAX: usize = 4096;
/// How long a notification token is reused for one (aud, tid).
const NOTIFICATION_TOKEN_REUSE: Duration = Duration::from_secs(60);
/// A `hang` fault gives up on the connection after this.
const HANG_LIMIT: Duration = Duration::from_secs(300);

/// One request the emulator received, as `GET /_emulator/calls` and
/// `/_emulator/requests` list it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedRequest {
    /// Position in arrival order, from 1 (not reset by `/_emulator/reset`).
    pub seq: u64,
    /// Arrival time, RFC 3339.
    pub time: String,
    /// `create`, `get`, `delete`, `keepAlive` or `token`.
    pub kind: String,
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// The client's `client-request-id` header, if any.
    pub client_request_id: Option<String>,
    /// The `request-id` the emulator answered with.
    pub request_id: String,
    /// The JSON body (a string when it was not JSON; token requests keep
    /// only their non-secret fields).
    pub body: Value,
    /// The status answered; `None` when no answer was sent (drop, hang).
    pub status: Option<u16>,
    /// The Graph error code answered, if any.
    pub error_code: Option<String>,
    /// The id of the call created (or addressed).
    pub call_id: Option<String>,
    /// The fault applied, if any (`None`: processed normally).
    pub fault: Option<ScriptedFault>,
}

#[derive(Default)]
struct Log {
    next_seq: u64,
    entries: VecDeque<ReceivedRequest>,
}

/// A fault of the token endpoint (`EmulatorHandle::set_token_fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFault {
    /// 503 `temporarily_unavailable`.
    Unavailable,
    /// No answer until the fault ends.
    Hang,
}

/// One live call.
struct CallEntry {
    id: String,
    /// The call object as GET answers it.
    object: Mutex<Value>,
    /// DELETE asked for the end.
    hangup: Notify,
    ending: AtomicBool,
    callback_uri: String,
    /// Notification token audience and tenant: the creating token's.
    aud: String,
    tid: String,
    etag: AtomicU32,
}

/// Set on each request of a connection, so a handler can close it.
#[derive(Clone)]
struct ConnCtl {
    close: Arc<Notify>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    pub base_url: String,
    pub key: Arc<SigningKey>,
    clients: Vec<KnownClient>,
    access_cache: Mutex<HashMap<String, AccessClaims>>,
    notification_tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
    calls: Mutex<HashMap<String, Arc<CallEntry>>>,
    log: Mutex<Log>,
    faults: Mutex<FaultPicker>,
    /// A fault of the token endpoint, until an instant (None: for good).
    token_fault: Mutex<Option<(TokenFault, Option<Instant>)>>,
    http: reqwest::Client,
    shutdown: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Graph's `date` format: `2024-01-05T10:41:39`.
fn graph_date() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

impl Shared {
    pub(crate) fn new(
        config: EmulatorConfig,
        base_url: String,
        key: Arc<SigningKey>,
        clients: Vec<KnownClient>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.notifications.timeout)
            .tls_danger_accept_invalid_certs(config.notifications.accept_invalid_certs)
            .build()?;
        Ok(Shared {
            faults: Mutex::new(FaultPicker::new(&config.faults)),
            token_fault: Mutex::new(None),
            config,
            base_url,
            key,
            clients,
            access_cache: Mutex::new(HashMap::new()),
            notification_tokens: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            log: Mutex::new(Log::default()),
            http,
            shutdown,
        })
    }

    pub(crate) fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.log).entries.iter().cloned().collect()
    }

    pub(crate) fn reset(&self) {
        lock(&self.log).entries.clear();
        lock(&self.faults).set_script([]);
    }

    /// Makes the token endpoint fail (`None`: work again), for `for_` or for good.
    pub(crate) fn set_token_fault(&self, fault: Option<TokenFault>, for_: Option<Duration>) {
        *lock(&self.token_fault) = fault.map(|f| (f, for_.map(|d| Instant::now() + d)));
    }

    /// The token fault in force now, and until when.
    fn token_fault_now(&self) -> Option<(TokenFault, Option<Instant>)> {
        let mut slot = lock(&self.token_fault);
        if let Some((_, Some(until))) = *slot
            && Instant::now() >= until
        {
            *slot = None;
        }
        *slot
    }

    pub(crate) fn set_fault_script(&self, script: Vec<ScriptedFault>) {
        lock(&self.faults).set_script(script);
    }

    fn record(&self, mut r: ReceivedRequest) -> u64 {
        let mut log = lock(&self.log);
        log.next_seq += 1;
        r.seq = log.next_seq;
        log.entries.push_back(r);
        while log.entries.len() > self.config.max_recorded.max(1) {
            log.entries.pop_front();
        }
        log.next_seq
    }

    fn update(&self, seq: u64, f: impl FnOnce(&mut ReceivedRequest)) {
        let mut log = lock(&self.log);
        if let Some(r) = log.entries.iter_mut().rev().find(|r| r.seq == seq) {
            f(r);
        }
    }

    /// The base URLs a request may use: ours, and its `Host` header's.
    fn bases(&self, headers: &HeaderMap) -> Vec<String> {
        let mut bases = vec![self.base_url.clone()];
        if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            let scheme = if self.base_url.starts_with("https:") {
                "https"
            } else {
                "http"
            };
            let b = format!("{scheme}://{host}");
            if !b.eq_ignore_ascii_case(&self.base_url) {
                bases.push(b);
            }
        }
        bases
    }

    /// Checks the bearer token of a Graph request.
    fn authenticate(&self, headers: &HeaderMap) -> Result<AccessClaims, GraphError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if value.trim().is_empty() {
            return Err(GraphError::unauthorized("Access token is empty."));
        }
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                GraphError::unauthorized("The Authorization header must use the Bearer scheme.")
            })?;
        let cached = lock(&self.access_cache).get(token).cloned();
        let claims = match cached {
            Some(c) => c,
            None => {
                let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                v.leeway = 0;
                v.validate_aud = false;
                v.set_required_spec_claims(&["exp", "aud"]);
                let claims = jsonwebtoken::decode::<AccessClaims>(
                    token,
                    self.key.decoding_key(),
                    &v,
                )
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        ErrorKind::ExpiredSignature => GraphError::unauthorized(
                            "Lifetime validation failed, the token is expired.",
                        ),
                        ErrorKind::InvalidSignature => GraphError::unauthorized(
                            "Access token validation failure. Invalid signature.",
                        ),
                        _ => GraphError::unauthorized(format!(
                            "IDX14100: JWT is not well formed or not issued by this emulator: {e}."
                        )),
                    }
                })?
                .claims;
                let mut cache = lock(&self.access_cache);
                if cache.len() >= ACCESS_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(token.to_string(), claims.clone());
                claims
            }
        };
        if claims.exp <= now_secs() {
            return Err(GraphError::unauthorized(
                "Lifetime validation failed, the token is expired.",
            ));
        }
        if !self
            .bases(headers)
            .iter()
            .any(|b| b.eq_ignore_ascii_case(&claims.aud))
            && !super::token::is_graph_resource(&claims.aud)
        {
            return Err(GraphError::unauthorized(
                "Access token validation failure. Invalid audience.",
            ));
        }
        Ok(claims)
    }

    /// A notification token for (aud, tid), reused for a minute.
    fn notification_token(&self, aud: &str, tid: &str) -> anyhow::Result<String> {
        let key = (aud.to_string(), tid.to_string());
        if let Some((t, at)) = lock(&self.notification_tokens).get(&key)
            && at.elapsed() < NOTIFICATION_TOKEN_REUSE
        {
            return Ok(t.clone());
        }
        let now = now_secs();
        let token = self.key.sign(&json!({
            "iss": self.config.notifications.issuer,
            "aud": aud,
            "tid": tid,
            "iat": now,
            "nbf": now,
            "exp": now + self.config.notifications.token_lifetime.as_secs().max(60),
            "serviceurl": self.base_url,
        }))?;
        lock(&self.notification_tokens).insert(key, (token.clone(), Instant::now()));
        Ok(token)
    }

    /// Azure AD's tenant discovery document (`/{tenant}/v2.0/.well-known/
    /// openid-configuration`), which MSAL and azure-identity read first.
    /// Its URLs use the host the client named (`localhost` or `127.0.0.1`),
    /// as the issuer MSAL checks must match the authority it was given.
    fn tenant_openid_configuration(&self, tenant: &str, headers: &HeaderMap) -> Value {
        let bases = self.bases(headers);
        let base = bases.last().unwrap_or(&self.base_url);
        json!({
            "issuer": format!("{base}/{tenant}/v2.0"),
            "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
            "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
            "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
            "jwks_uri": format!("{base}/v1/keys"),
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": null,
            "cloud_instance_name": "microsoftonline.com",
        })
    }

    fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.config.notifications.issuer,
            "authorization_endpoint": format!("{}/common/oauth2/v2.0/authorize", self.base_url),
            "token_endpoint": format!("{}/common/oauth2/v2.0/token", self.base_url),
            "jwks_uri": format!("{}/v1/keys", self.base_url),
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_post"],
        })
    }
}

/// Resolves once the stop flag is set or its sender is gone.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Serves `listener` until `shutdown` turns true (or its sender is dropped).
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let router = Router::new().fallback(dispatch).with_state(shared);
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "emulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let router = router.clone();
        let ctl = ConnCtl {
            close: Arc::new(Notify::new()),
        };
        let mut stop = shutdown.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let close = ctl.close.clone();
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ctl.clone());
                    let router = router.clone();
                    async move {
                        let r: Result<Response, Infallible> =
                            router.oneshot(req.map(Body::new)).await;
                        r
                    }
                },
            );
            let Some(acceptor) = acceptor else {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    // Dropping the connection closes the socket unanswered.
                    _ = close.notified() => {}
                    _ = stopped(&mut stop) => {}
                }
                return;
            };
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
            let stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "emulator: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                _ = stopped(&mut stop) => return,
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = close.notified() => {}
                _ = stopped(&mut stop) => {}
            }
        });
    }
    // Dropping the JoinSet aborts every open connection.
}

/// The ids of one Graph answer.
struct Ids {
    request_id: String,
    client_request_id: String,
    client_sent: Option<String>,
}

impl Ids {
    fn new(headers: &HeaderMap) -> Self {
        let client_sent = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ids {
            request_id: uuid::Uuid::new_v4().to_string(),
            client_request_id: client_sent
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            client_sent,
        }
    }

    fn headers(&self, resp: &mut Response) {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            h.insert("request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.client_request_id) {
            h.insert("client-request-id", v);
        }
    }

    fn error(&self, e: &GraphError) -> Response {
        let body = e.body(&graph_date(), &self.request_id, &self.client_request_id);
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(body)).into_response();
        self.headers(&mut resp);
        resp
    }

    fn json(&self, status: StatusCode, body: &Value) -> Response {
        let mut resp = (status, axum::Json(body)).into_response();
        self.headers(&mut resp);
        resp
    }

    fn empty(&self, status: StatusCode) -> Response {
        let mut resp = status.into_response();
        self.headers(&mut resp);
        resp
    }
}

/// The Graph routes.
enum Route<'a> {
    Create { api: ApiVersion, legacy: bool },
    Call { id: &'a str },
    KeepAlive { id: &'a str },
}

fn graph_route<'a>(segments: &[&'a str]) -> Option<Route<'a>> {
    let api = |v: &str| match v {
        "v1.0" => Some(ApiVersion::V1),
        "beta" => Some(ApiVersion::Beta),
        _ => None,
    };
    Some(match segments {
        [v, "communications", "calls"] => Route::Create {
            api: api(v)?,
            legacy: false,
        },
        ["beta", "app", "calls"] | ["beta", "applications", _, "calls"] => Route::Create {
            api: ApiVersion::Beta,
            legacy: true,
        },
        [v, "communications", "calls", id] => {
            api(v)?;
            Route::Call { id }
        }
        ["beta", "app", "calls", id] => Route::Call { id },
        [v, "communications", "calls", id, k] if k.eq_ignore_ascii_case("keepAlive") => {
            api(v)?;
            Route::KeepAlive { id }
        }
        ["beta", "app", "calls", id, k] if k.eq_ignore_ascii_case("keepAlive") => {
            Route::KeepAlive { id }
        }
        _ => return None,
    })
}

async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let ctl = req.extensions().get::<ConnCtl>().cloned();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = parts.method.clone();

    match (&method, segments.as_slice()) {
        (&Method::GET, [".well-known", "openid-configuration"])
        | (&Method::GET, ["v1", ".well-known", "OpenIdConfiguration"]) => {
            return axum::Json(shared.openid_configuration()).into_response();
        }
        (&Method::GET, [tenant, "v2.0", ".well-known", "openid-configuration"]) => {
            return axum::Json(shared.tenant_openid_configuration(tenant, &parts.headers))
                .into_response();
        }
        (&Method::GET, ["v1", "keys"]) => {
            return axum::Json(json!({"keys": [shared.key.jwk()]})).into_response();
        }
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => {
            return token(&shared, tenant, &parts.headers, &parts.uri, body).await;
        }
        (&Method::GET, ["_emulator", "calls"]) => {
            let creates: Vec<_> = shared
                .requests()
                .into_iter()
                .filter(|r| r.kind == "create")
                .collect();
            return axum::Json(creates).into_response();
        }
        (&Method::GET, ["_emulator", "requests"]) => {
            return axum::Json(shared.requests()).into_response();
        }
        (&Method::POST, ["_emulator", "reset"]) => {
            shared.reset();
            return StatusCode::NO_CONTENT.into_response();
        }
        (&Method::POST, ["_emulator", "faults"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Script {
                script: Vec<ScriptedFault>,
            }
            let bytes = axum::body::to_bytes(body, MAX_BODY)
                .await
                .unwrap_or_default();
            return match serde_json::from_slice::<Script>(&bytes) {
                Ok(s) => {
                    shared.set_fault_script(s.script);
                    StatusCode::NO_CONTENT.into_response()
                }
                Err(e) => (
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"script\": [\"throttle\", \"ok\", ...]}}: {e}\n"),
                )
                    .into_response(),
            };
        }
        (&Method::GET, ["_emulator", "faults"]) => {
            let script = lock(&shared.faults).script();
            return axum::Json(json!({ "script": script })).into_response();
        }
        _ => {}
    }

    let ids = Ids::new(&parts.headers);
    let Some(route) = graph_route(&segments) else {
        return ids.error(&GraphError::new(
            404,
            "BadRequest",
            format!("Resource not found for the segment '{path}' (the emulator serves Graph's call endpoints)."),
        ));
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or(path.clone());
    match (route, &method) {
        (Route::Create { api, legacy }, &Method::POST) => {
            create(
                &shared,
                ctl,
                &parts.headers,
                &path_and_query,
                body,
                api,
                legacy,
                ids,
            )
            .await
        }
        (Route::Call { id }, &Method::GET) => call_op(
            &shared,
            &parts.headers,
            &path_and_query,
            "get",
            id,
            ids,
            |call| Ok((StatusCode::OK, Some(lock(&call.object).clone()))),
        ),
        (Route::Call { id }, &Method::DELETE) => call_op(
            &shared,
            &parts.headers,
            &path_and_query,
            "delete",
            id,
            ids,
            |call| {
                if call.ending.swap(true, Ordering::SeqCst) {
                    return Err(GraphError::not_found(format!(
                        "Call {} is already ending.",
                        call.id
                    )));
                }
                call.hangup.notify_one();
                Ok((StatusCode::NO_CONTENT, None))
            },
        ),
        (Route::KeepAlive { id }, &Method::POST) => call_op(
            &shared,
            &parts.headers,
            &path_and_query,
            "keepAlive",
            id,
            ids,
            |call| {
                if call.ending.load(Ordering::SeqCst) {
                    return Err(GraphError::not_found(format!(
                        "Call {} has ended.",
                        call.id
                    )));
                }
                Ok((StatusCode::OK, None))
            },
        ),
        _ => ids.error(&GraphError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not allowed on {path}."),
        )),
    }
}

/// The body as parsed once: the log keeps it (a string when it is not JSON).
fn parse_body(bytes: &[u8]) -> (Result<Value, String>, Value) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => (Ok(v.clone()), v),
        Err(e) => (
            Err(e.to_string()),
            Value::String(String::from_utf8_lossy(bytes).into_owned()),
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn create(
    shared: &Arc<Shared>,
    ctl: Option<ConnCtl>,
    headers: &HeaderMap,
    path: &str,
    body: Body,
    api: ApiVersion,
    legacy: bool,
    ids: Ids,
) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ids.error(&GraphError::new(
                413,
                "RequestEntityTooLarge",
                "The request body is larger than 4 MB.",
            ));
        }
    };
    let (parsed, logged) = parse_body(&bytes);
    let seq = shared.record(ReceivedRequest {
        seq: 0,
        time: jiff::Timestamp::now().to_string(),
        kind: "create".into(),
        method: "POST".into(),
        path: path.to_string(),
        client_request_id: ids.client_sent.clone(),
        request_id: ids.request_id.clone(),
        body: logged,
        status: None,
        error_code: None,
        call_id: None,
        fault: None,
    });
    let fault = lock(&shared.faults).next_fault();
    let latency = shared.config.faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let retry_after = retry_after_header(shared.config.faults.retry_after);
    let faulted = |status: u16, code: &str, message: &str, retry: bool| {
        shared.update(seq, |r| {
            r.status = Some(status);
            r.error_code = Some(code.to_string());
            r.fault = Some(fault);
        });
        let mut resp = ids.error(&GraphError::new(status, code, message));
        if retry && let Ok(v) = HeaderValue::from_str(&retry_after) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    };
    match fault {
        ScriptedFault::Ok | ScriptedFault::Hang => {}
        ScriptedFault::Throttle => {
            return faulted(
                429,
                "TooManyRequests",
                "Too many requests. Retry after the time given in the Retry-After header.",
                true,
            );
        }
        ScriptedFault::Unavailable => {
            return faulted(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
                true,
            );
        }
        ScriptedFault::UnavailableNoRetryAfter => {
            return faulted(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
                false,
            );
        }
        ScriptedFault::ServerError => {
            return faulted(
                500,
                "UnknownError",
                "An internal server error occurred.",
                false,
            );
        }
        ScriptedFault::Drop => {
            shared.update(seq, |r| r.fault = Some(fault));
            if let Some(ctl) = ctl {
                ctl.close.notify_one();
            }
            std::future::pending::<()>().await;
            unreachable!("a dropped connection never answers");
        }
    }

    let result = place(shared, headers, parsed, api);
    if fault == ScriptedFault::Hang {
        let call_id = result.as_ref().ok().map(|(_, id)| id.clone());
        shared.update(seq, |r| {
            r.fault = Some(fault);
            r.call_id = call_id;
        });
        tokio::time::sleep(HANG_LIMIT).await;
        if let Some(ctl) = ctl {
            ctl.close.notify_one();
        }
        std::future::pending::<()>().await;
    }
    match result {
        Ok((object, id)) => {
            shared.update(seq, |r| {
                r.status = Some(201);
                r.call_id = Some(id.clone());
            });
            let location = if legacy {
                format!("{}/beta/app/calls/{id}", shared.base_url)
            } else {
                format!(
                    "{}/{}/communications/calls/{id}",
                    shared.base_url,
                    api.as_str()
                )
            };
            let mut resp = ids.json(StatusCode::CREATED, &object);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => {
            shared.update(seq, |r| {
                r.status = Some(e.status);
                r.error_code = Some(e.code.clone());
            });
            ids.error(&e)
        }
    }
}

/// Checks and places one call: the call object and its id.
fn place(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    parsed: Result<Value, String>,
    api: ApiVersion,
) -> Result<(Value, String), GraphError> {
    let claims = shared.authenticate(headers)?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_type {
        return Err(GraphError::new(
            415,
            "UnsupportedMediaType",
            "The request must have Content-Type: application/json.",
        ));
    }
    let body = parsed.map_err(|e| {
        GraphError::bad_request(format!(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format: {e}."
        ))
    })?;
    let shape = check_create(&body, api)?;
    let missing = missing_roles(&shape, &claims.roles);
    if !missing.is_empty() {
        return Err(GraphError::new(
            403,
            "7504",
            format!(
                "Insufficient enterprise tenant permissions, cannot access this API. \
                 The application needs the permission(s) {}.",
                missing.join(", ")
            ),
        ));
    }
    check_tenant(&claims.tid, shape.tenant_id.as_deref())?;

    let id = uuid::Uuid::new_v4().to_string();
    let mut object = serde_json::Map::new();
    if let Value::Object(b) = &body {
        for (k, v) in b {
            object.insert(k.clone(), v.clone());
        }
    }
    object.insert("@odata.type".into(), json!("#microsoft.graph.call"));
    object.insert("id".into(), json!(id));
    object.insert("state".into(), json!("establishing"));
    object.insert("direction".into(), json!("outgoing"));
    object.insert(
        "myParticipantId".into(),
        json!(uuid::Uuid::new_v4().to_string()),
    );
    object.insert(
        "callChainId".into(),
        json!(uuid::Uuid::new_v4().to_string()),
    );
    let object = Value::Object(object);
    let call = Arc::new(CallEntry {
        id: id.clone(),
        object: Mutex::new(object.clone()),
        hangup: Notify::new(),
        ending: AtomicBool::new(false),
        callback_uri: body["callbackUri"].as_str().unwrap_or_default().to_string(),
        aud: claims.appid.clone(),
        tid: claims.tid.clone(),
        etag: AtomicU32::new(0),
    });
    lock(&shared.calls).insert(id.clone(), call.clone());
    let plan = plan_call(&shape, &shared.config);
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut stop = shared.shutdown.clone();
        tokio::select! {
            _ = lifecycle(&shared, &call, plan) => {}
            _ = stopped(&mut stop) => {}
        }
    });
    Ok((object, id))
}

/// GET, DELETE and keepAlive on one call.
fn call_op(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    path: &str,
    kind: &str,
    id: &str,
    ids: Ids,
    op: impl FnOnce(&CallEntry) -> Result<(StatusCode, Option<Value>), GraphError>,
) -> Response {
    let seq = shared.record(ReceivedRequest {
        seq: 0,
        time: jiff::Timestamp::now().to_string(),
        kind: kind.to_string(),
        method: match kind {
            "get" => "GET",
            "delete" => "DELETE",
            _ => "POST",
        }
        .to_string(),
        path: path.to_string(),
        client_request_id: ids.client_sent.clone(),
        request_id: ids.request_id.clone(),
        body: Value::Null,
        status: None,
        error_code: None,
        call_id: Some(id.to_string()),
        fault: None,
    });
    let result = shared.authenticate(headers).and_then(|_| {
        let call = lock(&shared.calls).get(id).cloned();
        match call {
            Some(call) => op(&call),
            None => Err(GraphError::not_found(format!(
                "Call {id} was not found: it never existed or has ended."
            ))),
        }
    });
    match result {
        Ok((status, body)) => {
            shared.update(seq, |r| r.status = Some(status.as_u16()));
            match body {
                Some(b) => ids.json(status, &b),
                None => ids.empty(status),
            }
        }
        Err(e) => {
            shared.update(seq, |r| {
                r.status = Some(e.status);
                r.error_code = Some(e.code.clone());
            });
            ids.error(&e)
        }
    }
}

/// The course of one call: its states, its notifications.
async fn lifecycle(shared: &Arc<Shared>, call: &Arc<CallEntry>, plan: CallPlan) {
    let start = tokio::time::Instant::now();
    deliver(shared, call, "establishing", None).await;
    // Waits until `at` or a DELETE; true when hung up.
    let wait = |at: tokio::time::Instant| async move {
        tokio::select! {
            _ = tokio::time::sleep_until(at) => false,
            _ = call.hangup.notified() => true,
        }
    };
    let ending = |shared: &Arc<Shared>, result: ResultInfo| {
        let shared = shared.clone();
        let call = call.clone();
        async move {
            // From here on DELETE and keepAlive answer 404.
            call.ending.store(true, Ordering::SeqCst);
            set_state(&call, "terminating", None);
            deliver(&shared, &call, "terminating", None).await;
            finish(&shared, &call, result).await;
        }
    };
    match plan {
        CallPlan::Answer {
            answer_after,
            length,
            result,
        } => {
            let answer_at = start + answer_after;
            if wait(answer_at).await {
                return ending(shared, ended_by_bot()).await;
            }
            set_state(call, "established", None);
            deliver(shared, call, "established", None).await;
            let result = if wait(answer_at + length).await {
                ended_by_bot()
            } else {
                result
            };
            ending(shared, result).await;
        }
        CallPlan::NotAnswered { after, result, .. } => {
            if wait(start + after).await {
                return ending(shared, ended_by_bot()).await;
            }
            call.ending.store(true, Ordering::SeqCst);
            finish(shared, call, result).await;
        }
    }
}

fn set_state(call: &CallEntry, state: &str, result: Option<&ResultInfo>) {
    let mut o = lock(&call.object);
    o["state"] = json!(state);
    if let Some(r) = result {
        o["resultInfo"] = json!({"code": r.code, "subcode": r.subcode, "message": r.message});
    }
}

/// The call is gone (404 from now on); `deleted` with `state: terminated`.
async fn finish(shared: &Arc<Shared>, call: &Arc<CallEntry>, result: ResultInfo) {
    call.ending.store(true, Ordering::SeqCst);
    set_state(call, "terminated", Some(&result));
    lock(&shared.calls).remove(&call.id);
    deliver(shared, call, "terminated", Some(&result)).await;
}

/// POSTs one notification, retrying with a doubling delay.
async fn deliver(shared: &Arc<Shared>, call: &CallEntry, state: &str, result: Option<&ResultInfo>) {
    let n = &shared.config.notifications;
    if !n.enabled {
        return;
    }
    let etag = call.etag.fetch_add(1, Ordering::SeqCst) + 1;
    let body = notification(&call.id, state, result, etag, n.codes_as_strings);
    let token = match shared.notification_token(&call.aud, &call.tid) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "emulator: cannot sign a notification token");
            return;
        }
    };
    let mut delay = n.retry_delay;
    for attempt in 1..=n.attempts {
        let sent = shared
            .http
            .post(&call.callback_uri)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(call = %call.id, state, "emulator: notification delivered");
                return;
            }
            Ok(r) => tracing::warn!(
                call = %call.id, state, attempt, status = r.status().as_u16(),
                "emulator: the callback refused a notification"
            ),
            Err(e) => tracing::warn!(
                call = %call.id, state, attempt, error = %e,
                "emulator: a notification could not be delivered"
            ),
        }
        if attempt < n.attempts {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }
    tracing::warn!(call = %call.id, state, uri = %call.callback_uri,
        "emulator: gave up delivering a notification");
}

/// The token endpoint.
async fn token(
    shared: &Arc<Shared>,
    tenant: &str,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: Body,
) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&bytes).into_owned().collect();
    // Only the fields that are no secret go into the log.
    let logged: serde_json::Map<String, Value> = form
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "grant_type" | "client_id" | "scope" | "client_assertion_type"
            )
        })
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let seq = shared.record(ReceivedRequest {
        seq: 0,
        time: jiff::Timestamp::now().to_string(),
        kind: "token".into(),
        method: "POST".into(),
        path: uri.path().to_string(),
        client_request_id: headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        request_id: trace_id.clone(),
        body: Value::Object(logged),
        status: None,
        error_code: None,
        call_id: None,
        fault: None,
    });
    match shared.token_fault_now() {
        Some((TokenFault::Unavailable, _)) => {
            shared.update(seq, |r| r.status = Some(503));
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "error": "temporarily_unavailable",
                    "error_description": "AADSTS50196: The server is temporarily unavailable (emulated outage).",
                    "error_codes": [50196],
                    "trace_id": trace_id,
                    "correlation_id": correlation_id,
                })),
            )
                .into_response();
        }
        Some((TokenFault::Hang, until)) => {
            // Answer nothing until the fault ends (then answer normally).
            let wait = until
                .map(|u| u.saturating_duration_since(Instant::now()))
                .unwrap_or(HANG_LIMIT);
            tokio::time::sleep(wait).await;
        }
        None => {}
    }
    let bases = shared.bases(headers);
    let ctx = TokenContext {
        tenant_in_path: tenant,
        bases: &bases,
        config: &shared.config,
        clients: &shared.clients,
        now: now_secs(),
        unique: uuid::Uuid::new_v4().to_string(),
    };
    let issued = check_token_request(&ctx, &form).and_then(|claims| {
        shared
            .key
            .sign(&claims)
            .map_err(|e| AadError::new(500, "server_error", 50000, format!("{e}")))
            .map(|t| (claims, t))
    });
    let timestamp = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%SZ")
        .to_string();
    let (status, body) = match issued {
        Ok((claims, access_token)) => {
            let lifetime = claims.exp - claims.iat;
            (
                200,
                json!({
                    "token_type": "Bearer",
                    "expires_in": lifetime,
                    "ext_expires_in": lifetime,
                    "access_token": access_token,
                }),
            )
        }
        Err(e) => {
            tracing::info!(
                error = e.error,
                aadsts = e.aadsts,
                "emulator: token request refused"
            );
            shared.update(seq, |r| r.error_code = Some(format!("AADSTS{}", e.aadsts)));
            (e.status, e.body(&timestamp, &trace_id, &correlation_id))
        }
    };
    shared.update(seq, |r| r.status = Some(status));
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        h.insert("x-ms-request-id", v);
    }
    resp
}

/// Where the emulator is reachable: an unspecified listen address maps to
/// loopback.
pub(crate) fn base_url(addr: SocketAddr, tls: bool) -> String {
    let ip = addr.ip();
    let ip = if ip.is_unspecified() {
        match ip {
            std::net::IpAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        ip
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}
