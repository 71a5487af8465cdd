//! The admin endpoint (`admin.listen`, loopback by default):
//!
//! | path | answers |
//! |---|---|
//! | `GET /` | the dashboard ([`crate::dashboard`]): HTML, read-only |
//! | `GET /healthz` | 200 `ok` while the process serves HTTP |
//! | `GET /readyz` | 503 `not ready` until [`AdminState::set_ready`], then 200 `ready` |
//! | `GET /metrics` | Prometheus text 0.0.4; OpenMetrics 1.0 when the `Accept` header asks for it |
//! | `GET /v1/specs` | JSON from the daemon's specs provider |
//! | `POST /v1/trigger` | `{"spec", "requestId"}`: one run of the spec now ([`crate::trigger`]); 404 unknown spec, 409 invalid or suspended |
//! | `POST /v1/retry` | `{"run", "force"?}`: a finished run's call again; 404 unknown run, 409 not retryable |
//! | `GET /v1/status` | the `calld status --format json` document (what `calld status --admin URL` prints) |
//! | `GET /v1/runs?spec=NAME&limit=N` | JSON from the daemon's runs provider; 400 without `spec` or with a bad `limit`, 404 for an unknown spec |
//!
//! Errors are JSON: `{"error": "..."}`. The providers run on the blocking
//! thread pool, so a provider may read the ledger synchronously.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::metrics::{CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT, Metrics};

/// `GET /v1/specs`: every spec the daemon knows, with its state.
pub type SpecsProvider = Arc<dyn Fn() -> Value + Send + Sync>;

/// `GET /v1/runs`: (spec name, limit) → that spec's runs, newest first;
/// `None` when no such spec is known (404).
pub type RunsProvider = Arc<dyn Fn(&str, usize) -> Option<Value> + Send + Sync>;

/// `GET /v1/status`: the status document ([`crate::status::status_doc`]).
pub type StatusProvider = Arc<dyn Fn() -> Result<Value, String> + Send + Sync>;

/// `POST /v1/trigger` and `/v1/retry`: (path, JSON body) → JSON, or
/// (HTTP status, message).
pub type ActionProvider = Arc<dyn Fn(&str, Value) -> Result<Value, (u16, String)> + Send + Sync>;

/// Default and largest `limit` of `/v1/runs`.
pub const DEFAULT_RUNS_LIMIT: usize = 20;
pub const MAX_RUNS_LIMIT: usize = 1000;

/// What the admin endpoint serves. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    /// Set by the daemon after the first full load (`/readyz` turns 200);
    /// cleared again while it stops.
    pub ready: Arc<AtomicBool>,
    /// Why the daemon is not ready (`token endpoint: ... since ...`), shown
    /// by `/readyz`.
    pub not_ready: Arc<std::sync::Mutex<Option<String>>>,
    pub metrics: Metrics,
    pub specs: SpecsProvider,
    pub runs: RunsProvider,
    pub status: StatusProvider,
    /// Run before each `/metrics` answer (on the blocking pool): refreshes
    /// the per-spec series from the ledger.
    pub refresh: Arc<dyn Fn() + Send + Sync>,
    pub actions: ActionProvider,
    /// `GET /`: the dashboard's HTML.
    pub dashboard: Arc<dyn Fn() -> Result<String, String> + Send + Sync>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// Not ready; `/v1/specs` answers `[]` and `/v1/runs` 404 until the
    /// providers are set.
    pub fn new(metrics: Metrics) -> Self {
        AdminState {
            ready: Arc::new(AtomicBool::new(false)),
            not_ready: Arc::new(std::sync::Mutex::new(None)),
            metrics,
            specs: Arc::new(|| json!([])),
            runs: Arc::new(|_, _| None),
            status: Arc::new(|| Err("no status provider".into())),
            refresh: Arc::new(|| {}),
            actions: Arc::new(|_, _| Err((503, "not served here".into()))),
            dashboard: Arc::new(|| Err("no dashboard here".into())),
        }
    }

    pub fn with_specs(mut self, f: impl Fn() -> Value + Send + Sync + 'static) -> Self {
        self.specs = Arc::new(f);
        self
    }

    pub fn with_runs(
        mut self,
        f: impl Fn(&str, usize) -> Option<Value> + Send + Sync + 'static,
    ) -> Self {
        self.runs = Arc::new(f);
        self
    }

    pub fn with_status(
        mut self,
        f: impl Fn() -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.status = Arc::new(f);
        self
    }

    pub fn with_actions(
        mut self,
        f: impl Fn(&str, Value) -> Result<Value, (u16, String)> + Send + Sync + 'static,
    ) -> Self {
        self.actions = Arc::new(f);
        self
    }

    pub fn with_dashboard(
        mut self,
        f: impl Fn() -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        self.dashboard = Arc::new(f);
        self
    }

    pub fn with_refresh(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.refresh = Arc::new(f);
        self
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Sets (or clears) why the daemon is not ready.
    pub fn set_not_ready_reason(&self, reason: Option<String>) {
        *self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    pub fn not_ready_reason(&self) -> Option<String> {
        self.not_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/specs", get(specs))
        .route("/v1/runs", get(runs))
        .route("/v1/status", get(status))
        .route("/v1/trigger", axum::routing::post(trigger))
        .route("/v1/retry", axum::routing::post(retry))
        .fallback(not_found)
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes; requests in
/// flight then finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        match state.not_ready_reason() {
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            )
                .into_response(),
            None => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
        }
    }
}

/// OpenMetrics only for a client that lists it in `Accept` (Prometheus
/// does); the classic text format for everyone else (curl, promtool).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or("");
            // `q=0` means "not acceptable".
            let refused = params.any(|p| matches!(p, "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let refresh = state.refresh.clone();
    let _ = tokio::task::spawn_blocking(move || refresh()).await;
    let (content_type, body) = if wants_openmetrics(&headers) {
        (CONTENT_TYPE_OPENMETRICS, state.metrics.encode_openmetrics())
    } else {
        (CONTENT_TYPE_TEXT, state.metrics.encode())
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn specs(State(state): State<AdminState>) -> Response {
    let provider = state.specs.clone();
    match tokio::task::spawn_blocking(move || provider()).await {
        Ok(value) => axum::Json(value).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the specs provider failed",
        ),
    }
}

#[derive(serde::Deserialize)]
struct RunsQuery {
    spec: Option<String>,
    limit: Option<String>,
}

async fn runs(
    State(state): State<AdminState>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "invalid query string");
    };
    let Some(spec) = query.spec.filter(|s| !s.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing query parameter `spec`: /v1/runs?spec=NAME[&limit=N]",
        );
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_RUNS_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_RUNS_LIMIT).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("`limit` must be a whole number from 1 to {MAX_RUNS_LIMIT}"),
                );
            }
        },
    };
    let provider = state.runs.clone();
    let name = spec.clone();
    match tokio::task::spawn_blocking(move || provider(&name, limit)).await {
        Ok(Some(value)) => axum::Json(value).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no spec named {spec:?}")),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the runs provider failed",
        ),
    }
}

async fn status(State(state): State<AdminState>) -> Response {
    let provider = state.status.clone();
    match tokio::task::spawn_blocking(move || provider()).await {
        Ok(Ok(value)) => axum::Json(value).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the status provider failed",
        ),
    }
}

async fn action(
    state: AdminState,
    path: &'static str,
    body: Result<axum::Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(axum::Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let provider = state.actions.clone();
    match tokio::task::spawn_blocking(move || provider(path, body)).await {
        Ok(Ok(value)) => axum::Json(value).into_response(),
        Ok(Err((status, message))) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the action failed"),
    }
}

async fn trigger(
    State(state): State<AdminState>,
    body: Result<axum::Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    action(state, "trigger", body).await
}

async fn retry(
    State(state): State<AdminState>,
    body: Result<axum::Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    action(state, "retry", body).await
}

async fn dashboard(State(state): State<AdminState>) -> Response {
    let provider = state.dashboard.clone();
    match tokio::task::spawn_blocking(move || provider()).await {
        Ok(Ok(html)) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // no script, no outside asset: say so to the browser too
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
                ),
            ],
            html,
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the dashboard failed"),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not found: /, /healthz, /readyz, /metrics, /v1/specs, /v1/status, /v1/runs?spec=NAME",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert!(!wants_openmetrics(&HeaderMap::new()));
        assert!(!wants_openmetrics(&accept("*/*")));
        assert!(!wants_openmetrics(&accept("text/plain;version=0.0.4")));
        // What Prometheus 2.x sends.
        assert!(wants_openmetrics(&accept(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(&accept(
            "application/openmetrics-text; q=0, text/plain"
        )));
    }
}
