//! The signing-key cache: the JWKS named by the OpenID configuration,
//! fetched at start, refreshed on a timer and when a token names a key id
//! the cache does not know.
//!
//! - At most one fetch is in flight (a mutex held across the fetch); callers
//!   that wait for it see its result instead of fetching again.
//! - Refreshes caused by unknown key ids are rate-limited
//!   (`unknown_kid_min_interval`), so tokens with made-up `kid`s cannot make
//!   calld hammer the OpenID endpoint.
//! - A failed fetch, or one that yields no usable key, keeps the old keys
//!   and is logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use super::token::KeySet;

/// Longest OpenID configuration or JWKS document read.
const MAX_DOC_BYTES: usize = 1024 * 1024;
/// Timeout of each of the two requests of a fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed timed refresh, try again this soon (or at the normal
/// interval, whichever is shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

pub struct KeyCache {
    open_id_config_url: String,
    client: reqwest::Client,
    /// The keys in use; swapped whole on a successful fetch.
    keys: RwLock<Arc<KeySet>>,
    /// Held during a fetch (single flight); holds when the last fetch
    /// caused by an unknown kid started (rate limit).
    fetch: tokio::sync::Mutex<Option<Instant>>,
    unknown_kid_min_interval: Duration,
    /// Successful fetches; also tells waiters that the keys changed.
    generation: AtomicU64,
    attempts: AtomicU64,
    failures: AtomicU64,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("open_id_config_url", &self.open_id_config_url)
            .field("keys", &self.current())
            .finish_non_exhaustive()
    }
}

/// Counters of the key cache, for the admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCacheStats {
    pub keys: usize,
    pub fetch_attempts: u64,
    pub fetch_failures: u64,
    pub successful_fetches: u64,
}

impl KeyCache {
    pub fn new(
        open_id_config_url: &str,
        unknown_kid_min_interval: Duration,
    ) -> anyhow::Result<KeyCache> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("calld/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client for the OpenID keys")?;
        url::Url::parse(open_id_config_url).with_context(|| {
            format!("callback.openIdConfigUrl {open_id_config_url:?} is not a URL")
        })?;
        Ok(KeyCache {
            open_id_config_url: open_id_config_url.to_string(),
            client,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetch: tokio::sync::Mutex::new(None),
            unknown_kid_min_interval,
            generation: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// The keys in use now.
    pub fn current(&self) -> Arc<KeySet> {
        // A poisoned lock only means a writer panicked between two whole
        // values: the value is still consistent.
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes whenever new keys are loaded.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> KeyCacheStats {
        KeyCacheStats {
            keys: self.current().len(),
            fetch_attempts: self.attempts.load(Ordering::Relaxed),
            fetch_failures: self.failures.load(Ordering::Relaxed),
            successful_fetches: self.generation.load(Ordering::Relaxed),
        }
    }

    /// Fetch the keys now (waiting for a fetch already in flight first).
    /// Returns the number of keys loaded; on error the old keys stay.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        let _guard = self.fetch.lock().await;
        self.fetch_locked().await
    }

    /// A token named `kid`, which the cache does not hold: refresh, unless
    /// another refresh just happened or one for an unknown kid ran less
    /// than `unknown_kid_min_interval` ago. Returns the keys to use.
    pub async fn refresh_for_unknown_kid(&self, kid: &str) -> Arc<KeySet> {
        let seen = self.generation.load(Ordering::Acquire);
        let mut last = self.fetch.lock().await;
        if self.generation.load(Ordering::Acquire) != seen || self.current().contains_kid(kid) {
            return self.current();
        }
        if let Some(t) = *last
            && t.elapsed() < self.unknown_kid_min_interval
        {
            tracing::debug!("unknown token key id; key refresh rate-limited");
            return self.current();
        }
        *last = Some(Instant::now());
        tracing::info!("token names an unknown key id; refreshing the OpenID keys");
        let _ = self.fetch_locked().await;
        self.current()
    }

    /// Refresh every `every`; after a failure, retry sooner. The first
    /// refresh happens after one wait: the caller loads the keys at start.
    pub async fn run_refresher(self: Arc<Self>, every: Duration, last_ok: bool) {
        let mut ok = last_ok;
        loop {
            let wait = if ok {
                every
            } else {
                every.min(RETRY_AFTER_FAILURE)
            };
            tokio::time::sleep(wait).await;
            ok = self.refresh().await.is_ok();
        }
    }

    /// One fetch; the caller holds `self.fetch`.
    async fn fetch_locked(&self) -> anyhow::Result<usize> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        match self.fetch_keys().await {
            Ok(set) => {
                let n = set.len();
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                self.generation.fetch_add(1, Ordering::Release);
                tracing::info!(keys = n, "loaded the OpenID signing keys");
                Ok(n)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let kept = self.current().len();
                tracing::warn!(
                    error = format!("{e:#}"),
                    kept_keys = kept,
                    "could not fetch the OpenID signing keys; keeping the old ones"
                );
                Err(e)
            }
        }
    }

    async fn fetch_keys(&self) -> anyhow::Result<KeySet> {
        let config = self.get(&self.open_id_config_url).await?;
        let config: serde_json::Value = serde_json::from_slice(&config)
            .with_context(|| format!("{} is not JSON", self.open_id_config_url))?;
        let Some(jwks_uri) = config.get("jwks_uri").and_then(|v| v.as_str()) else {
            bail!("{} has no jwks_uri", self.open_id_config_url);
        };
        let parsed = url::Url::parse(jwks_uri).with_context(|| format!("jwks_uri {jwks_uri:?}"))?;
        if self.open_id_config_url.starts_with("https:") && parsed.scheme() != "https" {
            bail!("jwks_uri {jwks_uri:?} is not https");
        }
        let jwks = self.get(jwks_uri).await?;
        let set = KeySet::from_jwks(&jwks).map_err(|e| anyhow::anyhow!("{jwks_uri}: {e}"))?;
        if set.is_empty() {
            bail!("{jwks_uri} holds no usable RSA signing key");
        }
        Ok(set)
    }

    async fn get(&self, url: &str) -> anyhow::Result<Vec<u8>> {
        let mut resp = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}");
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.with_context(|| format!("GET {url}"))? {
            if body.len() + chunk.len() > MAX_DOC_BYTES {
                bail!("GET {url}: document larger than {MAX_DOC_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
