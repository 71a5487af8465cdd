//! The Graph client: create call, hang up, keepAlive, with the retry rules of
//! [`super::retry`] and a record of every attempt.
//!
//! One `reqwest::Client` (connections reused), a semaphore bounding the
//! requests in flight (`maxConcurrentRequests`), a per-request timeout
//! (`requestTimeout`), a fresh GUID `client-request-id` on each request, and
//! no redirects followed (a create is never re-sent behind our back).

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::{ApiVersion, GraphConfig};

use super::auth::{AuthError, TokenSource, TokenSourceConfig, error_chain};
use super::model::{Attempt, CreatedCall, GraphError};
use super::retry::{self, Disposition, Observed, Operation, RetryPolicy, RetryState};

/// Characters escaped in a URL path segment (ids, tenant).
pub const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How a create-call request ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum CreateOutcome {
    /// 2xx with the new call's id.
    #[serde(rename_all = "camelCase")]
    Placed {
        call_id: String,
        location: Option<String>,
        state: Option<String>,
    },
    /// Graph refused it: a 4xx other than 429 (a 401 after one fresh token).
    Rejected { status: u16, error: GraphError },
    /// Nothing was processed by Graph: throttling or connection failures
    /// outlasted the retries, or no token could be had.
    Failed { reason: String },
    /// It may have reached Graph (timeout, connection lost after sending, a
    /// 5xx, a 2xx without an id): never re-sent.
    Unknown { reason: String },
}

impl CreateOutcome {
    /// `placed`, `rejected`, `failed`, `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CreateOutcome::Placed { .. } => "placed",
            CreateOutcome::Rejected { .. } => "rejected",
            CreateOutcome::Failed { .. } => "failed",
            CreateOutcome::Unknown { .. } => "unknown",
        }
    }
}

/// A create-call request: its outcome and every HTTP attempt it took.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateResult {
    pub outcome: CreateOutcome,
    pub attempts: Vec<Attempt>,
}

/// How a hang-up or keepAlive ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum CallOpOutcome {
    /// 2xx.
    Done,
    /// 404: the call no longer exists (for keepAlive: it has ended).
    Gone { error: GraphError },
    /// Another 4xx (a 401 after one fresh token).
    Rejected { status: u16, error: GraphError },
    /// Retries exhausted, or no token.
    Failed { reason: String },
}

/// A hang-up or keepAlive: its outcome and every HTTP attempt it took.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallOpResult {
    pub outcome: CallOpOutcome,
    pub attempts: Vec<Attempt>,
}

/// The client's settings (from `graph:`, or set directly in tests).
#[derive(Debug, Clone)]
pub struct GraphClientOptions {
    /// Graph base URL without a trailing slash.
    pub base_url: String,
    pub api_version: ApiVersion,
    pub legacy_app_endpoint: bool,
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl GraphClientOptions {
    pub fn from_config(cfg: &GraphConfig) -> GraphClientOptions {
        GraphClientOptions {
            base_url: cfg.base_url(),
            api_version: cfg.api_version,
            legacy_app_endpoint: cfg.legacy_app_endpoint,
            max_concurrent_requests: cfg.max_concurrent_requests,
            request_timeout: cfg.request_timeout,
            retry: RetryPolicy::default(),
        }
    }
}

/// The one HTTP client for Graph and the token endpoint.
pub fn http_client(opts: &GraphClientOptions) -> Result<reqwest::Client, AuthError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("calld/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(opts.max_concurrent_requests.max(1))
        .connect_timeout(opts.request_timeout.min(Duration::from_secs(10)))
        .timeout(opts.request_timeout)
        .build()
        .map_err(|e| AuthError::Config(format!("cannot build the HTTP client: {e}")))
}

/// The Graph client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    tokens: Arc<TokenSource>,
    opts: GraphClientOptions,
    limiter: Semaphore,
}

/// What the retry loop ended with.
enum Final {
    Success {
        location: Option<String>,
        body: Option<bytes::Bytes>,
    },
    Rejected {
        status: u16,
        error: GraphError,
    },
    Failed {
        reason: String,
    },
    Unknown {
        reason: String,
    },
}

impl GraphClient {
    /// A live client from `graph:` (reads the secret or certificate now).
    pub fn from_config(cfg: &GraphConfig) -> Result<GraphClient, AuthError> {
        let opts = GraphClientOptions::from_config(cfg);
        let http = http_client(&opts)?;
        let tokens = TokenSource::new(http.clone(), TokenSourceConfig::from_graph_config(cfg)?);
        Ok(GraphClient::new(http, Arc::new(tokens), opts))
    }

    pub fn new(http: reqwest::Client, tokens: Arc<TokenSource>, opts: GraphClientOptions) -> Self {
        let limiter = Semaphore::new(opts.max_concurrent_requests.max(1));
        GraphClient {
            http,
            tokens,
            opts,
            limiter,
        }
    }

    pub fn tokens(&self) -> &Arc<TokenSource> {
        &self.tokens
    }

    pub fn options(&self) -> &GraphClientOptions {
        &self.opts
    }

    /// The create-call URL of the configuration: `{base}/v1.0/communications/calls`,
    /// `{base}/beta/communications/calls`, or the legacy `{base}/beta/app/calls`.
    pub fn create_url(&self) -> String {
        create_url(
            &self.opts.base_url,
            self.opts.api_version,
            self.opts.legacy_app_endpoint,
        )
    }

    /// A call's URL: `{base}/{version}/communications/calls/{id}` (the legacy
    /// endpoint is beta-only, so its calls are addressed under beta).
    pub fn call_url(&self, call_id: &str) -> String {
        let version = if self.opts.legacy_app_endpoint {
            ApiVersion::Beta
        } else {
            self.opts.api_version
        };
        format!(
            "{}/{}/communications/calls/{}",
            self.opts.base_url.trim_end_matches('/'),
            version.as_str(),
            percent_encoding::utf8_percent_encode(call_id, PATH_SEGMENT)
        )
    }

    /// `POST url` with `body`: places a call. `url` is the full create URL
    /// (see [`create_url`](Self::create_url)). Never sent twice when it may
    /// have reached Graph.
    pub async fn create_call(&self, url: &str, body: &serde_json::Value) -> CreateResult {
        self.create(url, body, true).await
    }

    /// [`create_call`](Self::create_call) without waiting in the client:
    /// when Graph answers "not now" (429, 503 with `Retry-After`) or the
    /// connection fails before sending, it returns at once as `Failed`, its
    /// last attempt's disposition `Retry { after }` saying how long to wait.
    /// The daemon records that durably and waits with the run `scheduled`
    /// (a stop or crash during the wait then loses nothing). A 401 is still
    /// retried once at once with a fresh token.
    pub async fn create_call_once(&self, url: &str, body: &serde_json::Value) -> CreateResult {
        self.create(url, body, false).await
    }

    async fn create(&self, url: &str, body: &serde_json::Value, wait: bool) -> CreateResult {
        let bytes = bytes::Bytes::from(body.to_string());
        let (fin, mut attempts) = self
            .execute(Method::POST, url, Some(bytes), Operation::Create, wait)
            .await;
        let outcome = match fin {
            Final::Success { location, body } => {
                match body.as_deref().and_then(CreatedCall::parse) {
                    Some(c) => CreateOutcome::Placed {
                        call_id: c.id,
                        location,
                        state: c.state,
                    },
                    None => {
                        if let Some(last) = attempts.last_mut() {
                            last.disposition = Disposition::Unknown;
                        }
                        CreateOutcome::Unknown {
                            reason: "Graph answered success without a call id: the call may \
                                     exist, so it is not sent again"
                                .into(),
                        }
                    }
                }
            }
            Final::Rejected { status, error } => CreateOutcome::Rejected { status, error },
            Final::Failed { reason } => CreateOutcome::Failed { reason },
            Final::Unknown { reason } => CreateOutcome::Unknown { reason },
        };
        CreateResult { outcome, attempts }
    }

    /// `DELETE` the call. A 404 (already gone) is [`CallOpOutcome::Gone`].
    pub async fn hang_up(&self, call_id: &str) -> CallOpResult {
        let url = self.call_url(call_id);
        self.call_op(Method::DELETE, &url).await
    }

    /// `POST .../keepAlive`. A 404 means the call has ended: [`CallOpOutcome::Gone`].
    pub async fn keep_alive(&self, call_id: &str) -> CallOpResult {
        let url = format!("{}/keepAlive", self.call_url(call_id));
        self.call_op(Method::POST, &url).await
    }

    async fn call_op(&self, method: Method, url: &str) -> CallOpResult {
        let (fin, attempts) = self
            .execute(method, url, None, Operation::Idempotent, true)
            .await;
        let outcome = match fin {
            Final::Success { .. } => CallOpOutcome::Done,
            Final::Rejected { status: 404, error } => CallOpOutcome::Gone { error },
            Final::Rejected { status, error } => CallOpOutcome::Rejected { status, error },
            Final::Failed { reason } | Final::Unknown { reason } => {
                CallOpOutcome::Failed { reason }
            }
        };
        CallOpResult { outcome, attempts }
    }

    /// Sends one request, retrying as the rules allow.
    async fn execute(
        &self,
        method: Method,
        url: &str,
        body: Option<bytes::Bytes>,
        op: Operation,
        wait: bool,
    ) -> (Final, Vec<Attempt>) {
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut state = RetryState::default();
        loop {
            state.attempts += 1;
            let client_request_id = uuid::Uuid::new_v4().to_string();
            let started_at = jiff::Timestamp::now();
            let token = match self.tokens.token().await {
                Ok(t) => t,
                Err(e) => {
                    attempts.push(Attempt {
                        started_at,
                        finished_at: jiff::Timestamp::now(),
                        status: None,
                        error_code: Some("token".into()),
                        error_message: Some(e.to_string()),
                        request_id: None,
                        client_request_id,
                        disposition: Disposition::Failed,
                    });
                    let reason = format!("no access token, nothing was sent to Graph: {e}");
                    return (Final::Failed { reason }, attempts);
                }
            };

            let sent = {
                // The semaphore is never closed; without a permit we would
                // still send, so a closed one cannot lose a request.
                let _permit = self.limiter.acquire().await.ok();
                let mut req = self
                    .http
                    .request(method.clone(), url)
                    .bearer_auth(token.bearer())
                    .header("client-request-id", &client_request_id)
                    .header("return-client-request-id", "true")
                    .timeout(self.opts.request_timeout);
                req = match &body {
                    Some(b) => req.header(CONTENT_TYPE, "application/json").body(b.clone()),
                    None => req.header(CONTENT_LENGTH, "0"),
                };
                send(req).await
            };
            let finished_at = jiff::Timestamp::now();

            let (observed, answer, failure) = match sent {
                Ok(a) => {
                    let retry_after = a
                        .headers
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry::parse_retry_after(v, finished_at));
                    (
                        Observed::Status {
                            status: a.status,
                            retry_after,
                        },
                        Some(a),
                        None,
                    )
                }
                Err(SendError::Invalid(m)) => {
                    attempts.push(Attempt {
                        started_at,
                        finished_at,
                        status: None,
                        error_code: Some("invalidRequest".into()),
                        error_message: Some(m.clone()),
                        request_id: None,
                        client_request_id,
                        disposition: Disposition::Failed,
                    });
                    let reason = format!("the request could not be built, nothing was sent: {m}");
                    return (Final::Failed { reason }, attempts);
                }
                Err(SendError::NotSent(m)) => (Observed::NotSent, None, Some(("connect", m))),
                Err(SendError::Timeout(m)) => (Observed::MaybeSent, None, Some(("timeout", m))),
                Err(SendError::Lost(m)) => (Observed::MaybeSent, None, Some(("connectionLost", m))),
            };

            let disposition =
                retry::classify(op, observed, state, &self.opts.retry, rand::random::<f64>());

            let error = answer
                .as_ref()
                .filter(|a| !(200..300).contains(&a.status))
                .map(|a| {
                    let mut e = GraphError::parse(a.body.as_deref().unwrap_or_default());
                    e.request_id = a.request_id.clone().or(e.request_id);
                    e.client_request_id
                        .get_or_insert_with(|| client_request_id.clone());
                    e
                });
            let request_id = answer
                .as_ref()
                .and_then(|a| a.request_id.clone())
                .or_else(|| error.as_ref().and_then(|e| e.request_id.clone()));
            let (error_code, error_message) = match (&error, &failure) {
                (Some(e), _) => (e.code.clone(), Some(e.summary())),
                (None, Some((code, m))) => (Some((*code).to_string()), Some(m.clone())),
                (None, None) => (None, None),
            };
            let described = describe(observed, error.as_ref(), failure.as_ref().map(|f| &f.1));
            tracing::debug!(
                %method, url, status = ?answer.as_ref().map(|a| a.status),
                client_request_id, request_id = ?request_id,
                disposition = disposition.as_str(), "graph request"
            );
            attempts.push(Attempt {
                started_at,
                finished_at,
                status: answer.as_ref().map(|a| a.status),
                error_code,
                error_message,
                request_id,
                client_request_id,
                disposition,
            });

            match disposition {
                Disposition::Success => {
                    let a = answer.expect("success has an answer");
                    return (
                        Final::Success {
                            location: a.location,
                            body: a.body,
                        },
                        attempts,
                    );
                }
                Disposition::Retry { after } if !wait => {
                    let reason = format!(
                        "{described}; nothing was processed, to be sent again in {}",
                        crate::duration::format_duration(after)
                    );
                    return (Final::Failed { reason }, attempts);
                }
                Disposition::Retry { after } => {
                    tracing::info!(%method, url, attempt = state.attempts, wait_ms = after.as_millis() as u64,
                                   "{described}; retrying");
                    tokio::time::sleep(after).await;
                    state.waited = state.waited.saturating_add(after);
                }
                Disposition::RetryWithNewToken => {
                    tracing::info!(%method, url, "HTTP 401: fetching a new token and retrying once");
                    self.tokens.invalidate(&token);
                    state.token_refreshed = true;
                }
                Disposition::Rejected => {
                    let status = answer.map(|a| a.status).unwrap_or_default();
                    return (
                        Final::Rejected {
                            status,
                            error: error.unwrap_or_default(),
                        },
                        attempts,
                    );
                }
                Disposition::Failed => {
                    let n = attempts.len();
                    let reason = format!(
                        "{described}; gave up after {n} attempt{}",
                        if n == 1 { "" } else { "s" }
                    );
                    return (Final::Failed { reason }, attempts);
                }
                Disposition::Unknown => {
                    let reason = match op {
                        Operation::Create => format!(
                            "{described}; Graph may have processed the request, so it is not \
                             sent again"
                        ),
                        Operation::Idempotent => described,
                    };
                    return (Final::Unknown { reason }, attempts);
                }
            }
        }
    }
}

/// `{base}/v1.0/communications/calls`, `{base}/beta/communications/calls`, or
/// with `legacy`, `{base}/beta/app/calls`.
pub fn create_url(base_url: &str, version: ApiVersion, legacy: bool) -> String {
    let base = base_url.trim_end_matches('/');
    if legacy {
        format!("{base}/beta/app/calls")
    } else {
        format!("{base}/{}/communications/calls", version.as_str())
    }
}

/// One line saying what an attempt observed.
fn describe(observed: Observed, error: Option<&GraphError>, failure: Option<&String>) -> String {
    match observed {
        Observed::Status { status, .. } => match error {
            Some(e) => format!("HTTP {status} ({})", e.summary()),
            None => format!("HTTP {status}"),
        },
        Observed::NotSent => format!(
            "connection failed before the request was sent: {}",
            failure.map(String::as_str).unwrap_or("")
        ),
        Observed::MaybeSent => format!(
            "no answer after the request was sent: {}",
            failure.map(String::as_str).unwrap_or("")
        ),
    }
}

/// An HTTP answer, body read.
struct Answer {
    status: u16,
    headers: HeaderMap,
    location: Option<String>,
    request_id: Option<String>,
    /// None when the body could not be read.
    body: Option<bytes::Bytes>,
}

enum SendError {
    /// The request could not be built (bad URL): nothing sent.
    Invalid(String),
    /// The connection failed before the request was sent.
    NotSent(String),
    /// No answer within the timeout.
    Timeout(String),
    /// The connection broke after the request (may have been) sent.
    Lost(String),
}

async fn send(req: reqwest::RequestBuilder) -> Result<Answer, SendError> {
    let resp = req.send().await.map_err(|e| {
        let m = error_chain(&e);
        if e.is_builder() {
            SendError::Invalid(m)
        } else if e.is_connect() {
            SendError::NotSent(m)
        } else if e.is_timeout() {
            SendError::Timeout(m)
        } else {
            SendError::Lost(m)
        }
    })?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let location = text(LOCATION.as_str());
    let request_id = text("request-id");
    // A body that cannot be read still leaves the status known.
    let body = resp.bytes().await.ok();
    Ok(Answer {
        status,
        location,
        request_id,
        body,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_urls_for_every_form() {
        assert_eq!(
            create_url("https://graph.microsoft.com/", ApiVersion::V1, false),
            "https://graph.microsoft.com/v1.0/communications/calls"
        );
        assert_eq!(
            create_url("https://graph.microsoft.com", ApiVersion::Beta, false),
            "https://graph.microsoft.com/beta/communications/calls"
        );
        // Legacy is beta whatever the version says.
        assert_eq!(
            create_url("https://graph.microsoft.us", ApiVersion::V1, true),
            "https://graph.microsoft.us/beta/app/calls"
        );
    }

    #[test]
    fn outcome_names() {
        let e = GraphError::default();
        assert_eq!(
            CreateOutcome::Placed {
                call_id: "x".into(),
                location: None,
                state: None
            }
            .as_str(),
            "placed"
        );
        assert_eq!(
            CreateOutcome::Rejected {
                status: 400,
                error: e
            }
            .as_str(),
            "rejected"
        );
        assert_eq!(
            CreateOutcome::Failed { reason: "r".into() }.as_str(),
            "failed"
        );
        assert_eq!(
            CreateOutcome::Unknown { reason: "r".into() }.as_str(),
            "unknown"
        );
    }
}
