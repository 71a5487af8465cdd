//! The axum router, the request handler and the serve loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::keys::KeyCache;
use super::notification::{Inbound, parse_notification};
use super::tls::{TlsListener, load_tls};
use super::token::{self, TokenError, TokenRules, Verified};
use crate::config::{CallbackConfig, TlsConfig};

/// Longest `calldRun` value passed on; longer ones are dropped (the daemon
/// makes short ids, so a longer one is not ours).
const MAX_RUN_ID_LEN: usize = 256;

/// How the listener behaves. [`CallbackOptions::from_config`] fills it from
/// the configuration file; tests set fields directly.
#[derive(Debug, Clone)]
pub struct CallbackOptions {
    /// The app's client id: the only accepted token audience.
    pub client_id: String,
    /// Accepted token issuers.
    pub issuers: Vec<String>,
    /// Where the signing keys are found (its `jwks_uri`).
    pub open_id_config_url: String,
    /// `false` accepts notifications without checking any token (local
    /// experiments only; a warning is logged at every start).
    pub validate_tokens: bool,
    /// The only path notifications are accepted on (the path of
    /// `callback.publicUrl`); `None` accepts any path.
    pub path: Option<String>,
    /// Larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Time allowed for the body to arrive.
    pub body_timeout: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Timed refresh of the signing keys.
    pub key_refresh_interval: Duration,
    /// At most one refresh caused by an unknown key id per this interval.
    pub unknown_kid_min_interval: Duration,
    /// `Some(t)`: answer 202 only after the receiver has recorded the
    /// notification ([`Inbound::ack`]), waiting at most `t`, else 503 with
    /// `Retry-After` so Graph delivers it again (the daemon: a notification
    /// acknowledged is never lost to a crash). `None` (default): 202 as soon
    /// as it is queued.
    pub ack_timeout: Option<Duration>,
    /// Connection cap, header-read and idle timeouts (see `docs/callback.md`).
    pub limits: super::limits::ListenerLimits,
}

impl CallbackOptions {
    /// Defaults for everything but the client id.
    pub fn new(client_id: &str) -> CallbackOptions {
        let d = CallbackConfig::default();
        CallbackOptions {
            client_id: client_id.to_string(),
            issuers: d.issuers,
            open_id_config_url: d.open_id_config_url,
            validate_tokens: true,
            path: None,
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            leeway: Duration::from_secs(60),
            key_refresh_interval: Duration::from_secs(24 * 3600),
            unknown_kid_min_interval: Duration::from_secs(60),
            ack_timeout: None,
            limits: super::limits::ListenerLimits::default(),
        }
    }

    /// From `callback:` and the app's client id. The accepted path is the
    /// path of `publicUrl` (any path when it is not set).
    pub fn from_config(cfg: &CallbackConfig, client_id: &str) -> anyhow::Result<CallbackOptions> {
        let path = match &cfg.public_url {
            None => None,
            Some(u) => {
                let url = url::Url::parse(u)
                    .with_context(|| format!("callback.publicUrl {u:?} is not a URL"))?;
                Some(url.path().to_string())
            }
        };
        if cfg.validate_tokens && client_id.trim().is_empty() {
            anyhow::bail!(
                "callback.validateTokens needs the app's client id (graph.clientId) as the token audience"
            );
        }
        if cfg.validate_tokens && cfg.issuers.is_empty() {
            anyhow::bail!("callback.issuers is empty: no notification token could validate");
        }
        Ok(CallbackOptions {
            issuers: cfg.issuers.clone(),
            open_id_config_url: cfg.open_id_config_url.clone(),
            validate_tokens: cfg.validate_tokens,
            path,
            body_timeout: cfg.body_read_timeout,
            limits: super::limits::ListenerLimits {
                max_connections: cfg.max_connections.max(1),
                header_read_timeout: cfg.header_read_timeout,
                idle_timeout: cfg.idle_timeout,
            },
            ..CallbackOptions::new(client_id)
        })
    }
}

/// Request counters, readable by the admin endpoint.
#[derive(Debug, Default)]
pub struct CallbackStats {
    pub accepted: AtomicU64,
    pub unauthorized: AtomicU64,
    pub malformed: AtomicU64,
    pub too_large: AtomicU64,
    pub overloaded: AtomicU64,
    /// Wrong path or method, body timeouts.
    pub other: AtomicU64,
    /// Validly signed, but for another tenant than the run's (401).
    pub wrong_tenant: AtomicU64,
    /// Connections closed at once because `callback.maxConnections` were open.
    pub refused_connections: AtomicU64,
    /// Call events handed to the daemon.
    pub events: AtomicU64,
}

/// A snapshot of [`CallbackStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackCounts {
    pub accepted: u64,
    pub unauthorized: u64,
    pub malformed: u64,
    pub too_large: u64,
    pub overloaded: u64,
    pub other: u64,
    pub wrong_tenant: u64,
    pub refused_connections: u64,
    pub events: u64,
}

impl CallbackStats {
    pub fn snapshot(&self) -> CallbackCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CallbackCounts {
            accepted: g(&self.accepted),
            unauthorized: g(&self.unauthorized),
            malformed: g(&self.malformed),
            too_large: g(&self.too_large),
            overloaded: g(&self.overloaded),
            other: g(&self.other),
            wrong_tenant: g(&self.wrong_tenant),
            refused_connections: g(&self.refused_connections),
            events: g(&self.events),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Everything the handler needs; cheap to clone.
#[derive(Clone)]
pub struct CallbackState {
    inner: Arc<Inner>,
}

struct Inner {
    opts: CallbackOptions,
    rules: TokenRules,
    /// `None` when token validation is off.
    keys: Option<Arc<KeyCache>>,
    tx: mpsc::Sender<Inbound>,
    stats: Arc<CallbackStats>,
    /// Unix second of the last refusal logged at warn level (the others go
    /// to debug, so a flood of bad requests cannot flood the log).
    last_warn: AtomicI64,
    suppressed: AtomicU64,
    /// Tokens whose signature is already verified.
    verified: VerifiedTokens,
}

/// Most tokens remembered as verified; the whole set is dropped when full
/// (Graph uses a handful of tokens at a time, so this is rare).
const VERIFIED_TOKENS_MAX: usize = 1024;

/// Claims of tokens whose signature verified, with the key generation that
/// verified them: new keys (a refresh) invalidate every entry.
#[derive(Default)]
struct VerifiedTokens {
    map: std::sync::Mutex<HashMap<String, (u64, Arc<serde_json::Value>)>>,
}

impl VerifiedTokens {
    fn get(&self, token: &str, generation: u64) -> Option<Arc<serde_json::Value>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(token) {
            Some((g, claims)) if *g == generation => Some(claims.clone()),
            _ => None,
        }
    }

    fn insert(&self, token: &str, generation: u64, claims: serde_json::Value) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VERIFIED_TOKENS_MAX {
            map.clear();
        }
        map.insert(token.to_string(), (generation, Arc::new(claims)));
    }
}

impl CallbackState {
    /// Build the state; fetches nothing yet ([`serve`] loads the keys).
    pub fn new(opts: CallbackOptions, tx: mpsc::Sender<Inbound>) -> anyhow::Result<CallbackState> {
        let keys = if opts.validate_tokens {
            Some(Arc::new(KeyCache::new(
                &opts.open_id_config_url,
                opts.unknown_kid_min_interval,
            )?))
        } else {
            None
        };
        let rules = TokenRules {
            audience: opts.client_id.clone(),
            issuers: opts.issuers.clone(),
            leeway_secs: i64::try_from(opts.leeway.as_secs()).unwrap_or(i64::MAX),
        };
        Ok(CallbackState {
            inner: Arc::new(Inner {
                opts,
                rules,
                keys,
                tx,
                stats: Arc::new(CallbackStats::default()),
                last_warn: AtomicI64::new(i64::MIN),
                suppressed: AtomicU64::new(0),
                verified: VerifiedTokens::default(),
            }),
        })
    }

    pub fn stats(&self) -> Arc<CallbackStats> {
        self.inner.stats.clone()
    }

    /// The key cache (`None` when token validation is off).
    pub fn keys(&self) -> Option<Arc<KeyCache>> {
        self.inner.keys.clone()
    }

    pub fn options(&self) -> &CallbackOptions {
        &self.inner.opts
    }

    async fn authorize(
        &self,
        cache: &KeyCache,
        headers: &HeaderMap,
    ) -> Result<Verified, TokenError> {
        let token = bearer(headers)?;
        let rules = &self.inner.rules;
        // Graph sends the same token with many notifications: a token whose
        // signature was verified with the current keys is not verified
        // again. Its claims (expiry included) are checked every time.
        let generation = cache.generation();
        if let Some(claims) = self.inner.verified.get(token, generation) {
            return token::check_claims(&claims, rules, unix_now());
        }
        let header = token::peek_header(token)?;
        let keys = cache.current();
        let claims = match (token::verify_signature(token, &keys), &header.kid) {
            (Err(TokenError::UnknownKey), Some(kid)) => {
                let keys = cache.refresh_for_unknown_kid(kid).await;
                // tagged with the generation read before: never newer than
                // the keys that verified it (a stale tag only costs a miss)
                token::verify_signature(token, &keys)?
            }
            (other, _) => other?,
        };
        let verified = token::check_claims(&claims, rules, unix_now())?;
        self.inner.verified.insert(token, generation, claims);
        Ok(verified)
    }

    fn refused(&self, status: StatusCode, reason: &str) {
        let now = unix_now();
        let last = self.inner.last_warn.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10
            && self
                .inner
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = self.inner.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(
                status = status.as_u16(),
                reason,
                similar_refusals_not_logged = suppressed,
                "refused a notification"
            );
        } else {
            self.inner.suppressed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(status = status.as_u16(), reason, "refused a notification");
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, TokenError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(TokenError::Missing)?
        .to_str()
        .map_err(|_| TokenError::Malformed)?
        .trim();
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token)
}

/// The listener's routes: `GET /healthz`, and notifications on the
/// configured path (any path when none is configured).
pub fn router(state: CallbackState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(notify)
        .with_state(state)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        format!("{text}\n"),
    )
        .into_response()
}

async fn notify(State(st): State<CallbackState>, req: Request) -> Response {
    let stats = &st.inner.stats;
    let opts = &st.inner.opts;
    let (parts, body) = req.into_parts();

    if let Some(path) = &opts.path
        && parts.uri.path() != path
    {
        bump(&stats.other);
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    if parts.method != Method::POST {
        bump(&stats.other);
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > opts.max_body_bytes as u64) {
        bump(&stats.too_large);
        st.refused(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }

    // The key cache exists exactly when token validation is on.
    let tenant_id = if let Some(cache) = &st.inner.keys {
        match st.authorize(cache, &parts.headers).await {
            Ok(v) => Some(v.tenant_id),
            Err(e) => {
                bump(&stats.unauthorized);
                st.refused(StatusCode::UNAUTHORIZED, e.label());
                let mut r = plain(StatusCode::UNAUTHORIZED, &e.to_string());
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
    } else {
        None
    };

    let bytes = match read_body(body, opts.max_body_bytes, opts.body_timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            bump(&stats.too_large);
            st.refused(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        Err(BodyError::Timeout) => {
            bump(&stats.other);
            return plain(StatusCode::REQUEST_TIMEOUT, "body not received in time");
        }
        Err(BodyError::Broken) => {
            bump(&stats.malformed);
            return plain(StatusCode::BAD_REQUEST, "body could not be read");
        }
    };

    let events = match parse_notification(&bytes) {
        Ok(ev) => ev,
        Err(e) => {
            bump(&stats.malformed);
            st.refused(StatusCode::BAD_REQUEST, "not a notification");
            return plain(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };

    if events.is_empty() {
        bump(&stats.accepted);
        return StatusCode::ACCEPTED.into_response();
    }
    let n_events = events.len() as u64;
    let (ack, recorded) = match opts.ack_timeout {
        Some(t) => {
            let (ack, rx) = crate::callback::Ack::channel();
            (ack, Some((t, rx)))
        }
        None => (crate::callback::Ack::default(), None),
    };
    let inbound = Inbound {
        run_id: run_id(parts.uri.query()),
        attempt: attempt(parts.uri.query()),
        tenant_id,
        events,
        ack,
    };
    match st.inner.tx.try_send(inbound) {
        Ok(()) => {
            let verdict = match recorded {
                Some((t, rx)) => match tokio::time::timeout(t, rx).await {
                    Ok(Ok(v)) => Some(v),
                    _ => None,
                },
                None => Some(crate::callback::AckVerdict::Recorded),
            };
            if verdict == Some(crate::callback::AckVerdict::WrongTenant) {
                bump(&stats.wrong_tenant);
                st.refused(
                    StatusCode::UNAUTHORIZED,
                    "token tenant is not the run's tenant",
                );
                let mut r = plain(
                    StatusCode::UNAUTHORIZED,
                    "the token's tenant (tid) is not the tenant of the run",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            if verdict.is_none() {
                // not recorded (stopping, or too slow): Graph re-delivers
                bump(&stats.overloaded);
                st.refused(StatusCode::SERVICE_UNAVAILABLE, "not recorded in time");
                let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "not recorded in time");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                // the retry comes on a new connection, which a load
                // balancer may give to a replica that can record it
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            bump(&stats.accepted);
            stats.events.fetch_add(n_events, Ordering::Relaxed);
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => {
            bump(&stats.overloaded);
            let (reason, retry) = match e {
                mpsc::error::TrySendError::Full(_) => ("queue full", "1"),
                mpsc::error::TrySendError::Closed(_) => ("shutting down", "5"),
            };
            st.refused(StatusCode::SERVICE_UNAVAILABLE, reason);
            let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, reason);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(retry));
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken,
}

async fn read_body(
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<axum::body::Bytes, BodyError> {
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
    }
}

/// The request's `calldRun` query value.
fn run_id(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "calldRun")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty() && v.len() <= MAX_RUN_ID_LEN)
}

/// The request's `calldAttempt` query value.
fn attempt(query: Option<&str>) -> Option<u32> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "calldAttempt")
        .and_then(|(_, v)| v.parse().ok())
}

/// Serve notifications on `listener` until `shutdown` completes, then stop
/// accepting and let requests in progress finish. Loads the signing keys
/// first unless the caller already tried (`state.keys()?.refresh()`); a
/// failure is logged and the keys are retried on the timer and on the first
/// token. Then refreshes them in the background.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: CallbackState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("callback listener address")?;
    let _refresher = match state.keys() {
        None => {
            tracing::warn!(
                "callback.validateTokens is false: notifications are accepted WITHOUT checking \
                 who sent them. Use this only for local experiments."
            );
            None
        }
        Some(keys) => {
            // The caller may have loaded the keys already (to be ready
            // before it reports so); else load them now.
            let ok = if keys.stats().fetch_attempts == 0 {
                keys.refresh().await.is_ok()
            } else {
                keys.stats().keys > 0
            };
            let every = state.options().key_refresh_interval;
            Some(AbortOnDrop(tokio::spawn(keys.run_refresher(every, ok))))
        }
    };
    let limits = state.options().limits;
    let stats = state.stats();
    let app = router(state);
    match tls {
        None => {
            tracing::info!(%addr, max_connections = limits.max_connections, "notification listener up (plain HTTP)");
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            super::limits::serve_limited(listener, app, limits, stats, shutdown).await;
        }
        Some(cfg) => {
            tracing::info!(%addr, max_connections = limits.max_connections, "notification listener up (TLS)");
            let listener = TlsListener::new(listener, cfg).context("callback listener")?;
            super::limits::serve_limited(listener, app, limits, stats, shutdown).await;
        }
    }
    Ok(())
}

/// Build the state, load TLS from `callback.tls` if given, and [`serve`].
/// Use [`CallbackState::new`] and [`serve`] directly to keep the counters.
pub async fn start(
    listener: TcpListener,
    tls: Option<&TlsConfig>,
    opts: CallbackOptions,
    tx: mpsc::Sender<Inbound>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = tls.map(load_tls).transpose()?;
    let state = CallbackState::new(opts, tx)?;
    serve(listener, tls, state, shutdown).await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_from_query() {
        assert_eq!(run_id(Some("calldRun=r1")), Some("r1".into()));
        assert_eq!(
            run_id(Some("a=b&calldRun=r%2F2&calldRun=x")),
            Some("r/2".into())
        );
        assert_eq!(run_id(Some("calldrun=r1")), None);
        assert_eq!(run_id(Some("calldRun=")), None);
        assert_eq!(run_id(None), None);
        assert_eq!(run_id(Some(&format!("calldRun={}", "a".repeat(300)))), None);
    }

    #[test]
    fn bearer_header() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(bearer(&h("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(&h("bearer   abc ")), Ok("abc"));
        assert_eq!(bearer(&h("Basic abc")), Err(TokenError::Missing));
        assert_eq!(bearer(&h("Bearer")), Err(TokenError::Missing));
        assert_eq!(bearer(&h("Bearer  ")), Err(TokenError::Missing));
        assert_eq!(bearer(&HeaderMap::new()), Err(TokenError::Missing));
    }

    #[test]
    fn options_from_config() {
        let mut c = CallbackConfig {
            public_url: Some("https://bot.contoso.com/api/calls?x=1".into()),
            ..CallbackConfig::default()
        };
        let o = CallbackOptions::from_config(&c, "cid").unwrap();
        assert_eq!(o.path.as_deref(), Some("/api/calls"));
        assert_eq!(o.client_id, "cid");
        assert!(o.validate_tokens);
        assert!(CallbackOptions::from_config(&c, "").is_err());
        c.validate_tokens = false;
        assert!(CallbackOptions::from_config(&c, "").is_ok());
        c.public_url = None;
        assert_eq!(CallbackOptions::from_config(&c, "").unwrap().path, None);
        c.public_url = Some("not a url".into());
        assert!(CallbackOptions::from_config(&c, "x").is_err());
    }
}
