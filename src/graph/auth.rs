//! The token source: OAuth 2.0 client credentials against Azure AD (or the
//! emulator), with a client secret or a certificate-signed client assertion.
//!
//! The token is cached and refreshed ahead of its expiry with at most one
//! refresh in flight (callers that find it stale queue behind the one doing
//! the refresh and then share its result). [`TokenSource::invalidate`] after
//! a 401 forces the next caller to fetch a new one. Secrets and tokens are
//! held in [`Secret`], whose `Debug`/`Display` never show them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::config::{CertificateRef, GraphConfig, Secret};

use super::model::truncate;

/// The clock the token source reads (injected so tests control expiry).
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(jiff::Timestamp::now)
}

/// A client assertion lives this long (Azure AD's documented maximum is 10 min).
const ASSERTION_LIFETIME: i64 = 600;
/// Refresh this long before expiry at most...
const REFRESH_MARGIN_MAX: Duration = Duration::from_secs(300);
/// ...or at 90 % of the lifetime for short-lived tokens.
const REFRESH_MARGIN_SHARE: f64 = 0.10;

/// Errors getting a token. None of them ever contains a secret or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The configuration is incomplete or inconsistent.
    #[error("graph configuration: {0}")]
    Config(String),
    /// The certificate or its key cannot be used.
    #[error("graph.certificate: {0}")]
    Certificate(String),
    /// Azure AD answered with an error (`{error, error_description}`).
    #[error("token endpoint refused (HTTP {status} {error}): {description}")]
    Aad {
        status: u16,
        /// OAuth error: `invalid_client`, `unauthorized_client`, ...
        error: String,
        /// Azure AD's description, which starts with the `AADSTSnnnn:` code.
        description: String,
        /// `error_codes` (the numeric AADSTS codes).
        codes: Vec<u64>,
        trace_id: Option<String>,
        correlation_id: Option<String>,
    },
    /// The token endpoint could not be reached or did not answer.
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// The answer was not a usable token response.
    #[error("token endpoint answered HTTP {status} without a usable token: {detail}")]
    BadResponse { status: u16, detail: String },
}

impl AuthError {
    /// The AADSTS code (`AADSTS7000215`), when Azure AD gave one.
    pub fn aadsts(&self) -> Option<String> {
        let AuthError::Aad {
            description, codes, ..
        } = self
        else {
            return None;
        };
        if let Some(rest) = description.trim_start().strip_prefix("AADSTS") {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                return Some(format!("AADSTS{digits}"));
            }
        }
        codes.first().map(|c| format!("AADSTS{c}"))
    }
}

/// How the app proves who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `client_secret`.
    Secret(Secret),
    /// `client_assertion` signed with a certificate's key.
    Certificate(Arc<ClientCertificate>),
}

/// A certificate and its private key, ready to sign client assertions.
#[derive(Clone)]
pub struct ClientCertificate {
    key: jsonwebtoken::EncodingKey,
    /// base64url SHA-1 of the certificate DER (`x5t`, older Azure AD).
    x5t: String,
    /// base64url SHA-256 of the certificate DER (`x5t#S256`).
    x5t_s256: String,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.x5t_s256)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The claims of a client assertion.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: &'a str,
    nbf: i64,
    iat: i64,
    exp: i64,
}

impl ClientCertificate {
    /// Reads `certificate: {keyFile, certFile}`. Errors name the files, never
    /// their content.
    pub fn load(r: &CertificateRef) -> Result<ClientCertificate, AuthError> {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).map_err(|e| {
                AuthError::Certificate(format!("cannot read {what} {}: {e}", p.display()))
            })
        };
        let key = read(&r.key_file, "keyFile")?;
        let cert = read(&r.cert_file, "certFile")?;
        ClientCertificate::from_pem(&key, &cert).map_err(|e| match e {
            AuthError::Certificate(m) => AuthError::Certificate(format!(
                "{m} (keyFile {}, certFile {})",
                r.key_file.display(),
                r.cert_file.display()
            )),
            other => other,
        })
    }

    /// From PEM text: an RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA
    /// PRIVATE KEY`) and a certificate (the first `CERTIFICATE` block; a chain
    /// file is fine). Checks that the key belongs to the certificate.
    pub fn from_pem(key_pem: &[u8], cert_pem: &[u8]) -> Result<ClientCertificate, AuthError> {
        let bad = |m: &str| AuthError::Certificate(m.to_string());
        let key_blocks =
            pem::parse_many(key_pem).map_err(|_| bad("the key file is not PEM text"))?;
        let key_block = key_blocks
            .iter()
            .find(|b| b.tag() == "PRIVATE KEY" || b.tag() == "RSA PRIVATE KEY")
            .ok_or_else(|| {
                if key_blocks
                    .iter()
                    .any(|b| b.tag() == "ENCRYPTED PRIVATE KEY")
                {
                    bad(
                        "the private key is encrypted; give calld an unencrypted key \
                         (e.g. through a systemd credential)",
                    )
                } else {
                    bad("the key file holds no PRIVATE KEY or RSA PRIVATE KEY block")
                }
            })?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem::encode(key_block).as_bytes())
            .map_err(|_| bad("the private key is not an RSA key calld can read"))?;

        let cert_blocks =
            pem::parse_many(cert_pem).map_err(|_| bad("the certificate file is not PEM text"))?;
        let cert_block = cert_blocks
            .iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or_else(|| bad("the certificate file holds no CERTIFICATE block"))?;
        let der = cert_block.contents();
        let cert = ClientCertificate {
            key,
            x5t: URL_SAFE_NO_PAD.encode(Sha1::digest(der)),
            x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(der)),
        };

        // The key must match the certificate, or Azure AD refuses every
        // assertion with an obscure error: sign a probe and verify it.
        let public = jsonwebtoken::DecodingKey::from_rsa_pem(pem::encode(cert_block).as_bytes())
            .map_err(|_| bad("the certificate does not hold an RSA public key"))?;
        let probe = cert.assertion(
            "probe",
            "https://probe.invalid/",
            jiff::Timestamp::now(),
            "p",
        )?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(&probe, &public, &validation)
            .map_err(|_| bad("the private key does not belong to the certificate"))?;
        Ok(cert)
    }

    /// base64url SHA-256 thumbprint of the certificate (`x5t#S256`).
    pub fn thumbprint_sha256(&self) -> &str {
        &self.x5t_s256
    }

    /// base64url SHA-1 thumbprint of the certificate (`x5t`).
    pub fn thumbprint_sha1(&self) -> &str {
        &self.x5t
    }

    /// A signed client assertion (RS256) for `token_url`.
    pub fn assertion(
        &self,
        client_id: &str,
        token_url: &str,
        now: jiff::Timestamp,
        jti: &str,
    ) -> Result<String, AuthError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5t = Some(self.x5t.clone());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let now = now.as_second();
        let claims = AssertionClaims {
            aud: token_url,
            iss: client_id,
            sub: client_id,
            jti,
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| AuthError::Certificate(format!("cannot sign the client assertion: {e}")))
    }
}

/// The claims calld reads from its own access token (not verified: it comes
/// straight from Azure AD over TLS and is only read to warn early).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TokenClaims {
    #[serde(default)]
    pub roles: Vec<String>,
    pub tid: Option<String>,
    pub appid: Option<String>,
    pub aud: Option<String>,
}

impl TokenClaims {
    /// Reads the payload of a JWT without verifying it; `None` for an opaque
    /// token.
    pub fn from_jwt(token: &str) -> Option<TokenClaims> {
        let mut parts = token.split('.');
        let (_, payload) = (parts.next()?, parts.next()?);
        let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// An access token and what calld knows about it. `Debug` hides the token.
pub struct AccessToken {
    value: Secret,
    obtained_at: jiff::Timestamp,
    expires_at: jiff::Timestamp,
    refresh_at: jiff::Timestamp,
    claims: Option<TokenClaims>,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &self.value)
            .field("obtained_at", &self.obtained_at)
            .field("expires_at", &self.expires_at)
            .field("claims", &self.claims)
            .finish()
    }
}

impl AccessToken {
    /// The bearer token, for the `Authorization` header only.
    pub fn bearer(&self) -> &str {
        self.value.expose()
    }

    pub fn expires_at(&self) -> jiff::Timestamp {
        self.expires_at
    }

    /// When the source fetches a new one.
    pub fn refresh_at(&self) -> jiff::Timestamp {
        self.refresh_at
    }

    /// The token's claims; `None` when it is not a readable JWT.
    pub fn claims(&self) -> Option<&TokenClaims> {
        self.claims.as_ref()
    }

    /// The application roles granted (`roles` claim); `None` when unknown.
    pub fn roles(&self) -> Option<&[String]> {
        self.claims.as_ref().map(|c| c.roles.as_slice())
    }

    /// The tenant the token was issued for (`tid`).
    pub fn tenant_id(&self) -> Option<&str> {
        self.claims.as_ref()?.tid.as_deref()
    }

    /// Whether the token carries `role` (case-insensitive: casing varies
    /// between Microsoft's sources).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles()
            .is_some_and(|rs| rs.iter().any(|r| r.eq_ignore_ascii_case(role)))
    }

    /// The roles of `required` this token does not satisfy, or `None` when the
    /// token's roles cannot be read (then Graph decides). Per Graph's
    /// permission reference, `Calls.InitiateGroupCall.All` also grants
    /// `Calls.Initiate.All`.
    pub fn missing_roles<'a>(&self, required: &[&'a str]) -> Option<Vec<&'a str>> {
        self.roles()?;
        Some(
            required
                .iter()
                .copied()
                .filter(|r| {
                    !(self.has_role(r)
                        || (r.eq_ignore_ascii_case("Calls.Initiate.All")
                            && self.has_role("Calls.InitiateGroupCall.All")))
                })
                .collect(),
        )
    }
}

/// What the token source needs.
#[derive(Debug, Clone)]
pub struct TokenSourceConfig {
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub token_url: String,
    pub client_id: String,
    /// `{graph base}/.default`.
    pub scope: String,
    pub credential: Credential,
}

impl TokenSourceConfig {
    /// From `graph:`: needs `tenantId`, `clientId` and exactly one of
    /// `clientSecret` and `certificate`. Reads the secret or key now.
    pub fn from_graph_config(cfg: &GraphConfig) -> Result<TokenSourceConfig, AuthError> {
        let need = |v: &Option<String>, key: &str| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| AuthError::Config(format!("graph.{key} is required in live mode")))
        };
        let tenant = need(&cfg.tenant_id, "tenantId")?;
        let client_id = need(&cfg.client_id, "clientId")?;
        let credential = match (&cfg.client_secret, &cfg.certificate) {
            (Some(s), None) => Credential::Secret(s.resolve().map_err(AuthError::Config)?),
            (None, Some(c)) => Credential::Certificate(Arc::new(ClientCertificate::load(c)?)),
            (Some(_), Some(_)) => {
                return Err(AuthError::Config(
                    "set either graph.clientSecret or graph.certificate, not both".into(),
                ));
            }
            (None, None) => {
                return Err(AuthError::Config(
                    "graph.clientSecret or graph.certificate is required in live mode".into(),
                ));
            }
        };
        Ok(TokenSourceConfig {
            token_url: token_url(&cfg.authority_url(), &tenant),
            client_id,
            scope: format!("{}/.default", cfg.base_url()),
            credential,
        })
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/token`, the tenant percent-encoded.
pub fn token_url(authority: &str, tenant: &str) -> String {
    let tenant = percent_encoding::utf8_percent_encode(tenant, super::client::PATH_SEGMENT);
    format!(
        "{}/{tenant}/oauth2/v2.0/token",
        authority.trim_end_matches('/')
    )
}

/// The refresh time for a token obtained at `now` that lives `lifetime`.
pub fn refresh_time(now: jiff::Timestamp, lifetime: Duration) -> jiff::Timestamp {
    let margin = lifetime
        .mul_f64(REFRESH_MARGIN_SHARE)
        .min(REFRESH_MARGIN_MAX);
    let ahead = lifetime.saturating_sub(margin);
    let ahead = jiff::SignedDuration::try_from(ahead).unwrap_or(jiff::SignedDuration::ZERO);
    now.checked_add(ahead).unwrap_or(jiff::Timestamp::MAX)
}

/// Cached, self-refreshing access tokens.
pub struct TokenSource {
    http: reqwest::Client,
    cfg: TokenSourceConfig,
    clock: Clock,
    /// The current token; read on every request (fast path).
    cache: RwLock<Option<Arc<AccessToken>>>,
    /// Held by the one caller that refreshes.
    refresh: tokio::sync::Mutex<()>,
    /// Token requests sent (metrics, tests).
    fetches: AtomicU64,
    /// A credential set after start ([`TokenSource::set_credential`], SIGHUP).
    credential_override: RwLock<Option<Credential>>,
    /// Token requests by outcome: ok, transient, environment.
    outcomes: [AtomicU64; 3],
}

/// How many token requests ended how ([`TokenSource::refresh_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshCounts {
    pub ok: u64,
    /// Unreachable, timed out, 5xx, throttled.
    pub transient: u64,
    /// Refused: wrong secret, missing consent, bad certificate.
    pub environment: u64,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.cfg.token_url)
            .field("client_id", &self.cfg.client_id)
            .field("credential", &self.cfg.credential)
            .finish()
    }
}

impl TokenSource {
    pub fn new(http: reqwest::Client, cfg: TokenSourceConfig) -> TokenSource {
        TokenSource::with_clock(http, cfg, system_clock())
    }

    pub fn with_clock(http: reqwest::Client, cfg: TokenSourceConfig, clock: Clock) -> TokenSource {
        TokenSource {
            http,
            cfg,
            clock,
            cache: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
            credential_override: RwLock::new(None),
            outcomes: Default::default(),
        }
    }

    pub fn config(&self) -> &TokenSourceConfig {
        &self.cfg
    }

    /// Replaces the secret or certificate used from the next token request
    /// on (the daemon re-reads it on SIGHUP, so a fixed secret needs no
    /// restart). The current token, if any, is kept while it is valid.
    pub fn set_credential(&self, credential: Credential) {
        *self
            .credential_override
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(credential);
    }

    /// The credential in use: the one set last, else the configured one.
    fn credential(&self) -> Credential {
        self.credential_override
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| self.cfg.credential.clone())
    }

    /// Token requests so far, by outcome (for `calld_token_refreshes_total`).
    pub fn refresh_counts(&self) -> RefreshCounts {
        let g = |i: usize| self.outcomes[i].load(Ordering::Relaxed);
        RefreshCounts {
            ok: g(0),
            transient: g(1),
            environment: g(2),
        }
    }

    /// Token requests sent so far.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn cached(&self) -> Option<Arc<AccessToken>> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A valid token: the cached one, or a fresh one when it is due for
    /// refresh. Concurrent callers share one refresh. If a refresh fails while
    /// the old token has not yet expired, the old token is returned.
    pub async fn token(&self) -> Result<Arc<AccessToken>, AuthError> {
        if let Some(t) = self.cached()
            && (self.clock)() < t.refresh_at
        {
            return Ok(t);
        }
        let _refreshing = self.refresh.lock().await;
        let current = self.cached();
        if let Some(t) = &current
            && (self.clock)() < t.refresh_at
        {
            // Someone else refreshed while we waited.
            return Ok(t.clone());
        }
        let fetched = self.fetch().await;
        let slot = match &fetched {
            Ok(_) => 0,
            Err(e) => match super::retry::classify_auth(e) {
                super::retry::FailureClass::Environment => 2,
                _ => 1,
            },
        };
        self.outcomes[slot].fetch_add(1, Ordering::Relaxed);
        match fetched {
            Ok(t) => {
                let t = Arc::new(t);
                *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
                Ok(t)
            }
            Err(e) => match current {
                Some(old) if (self.clock)() < old.expires_at => {
                    tracing::warn!(error = %e, "token refresh failed; the current token is still valid");
                    Ok(old)
                }
                _ => Err(e),
            },
        }
    }

    /// Forgets `stale` (after Graph answered 401 to it) so the next
    /// [`token`](Self::token) fetches a new one. A token that was already
    /// replaced is left alone, so many 401s cause one refresh.
    pub fn invalidate(&self, stale: &Arc<AccessToken>) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.as_ref().is_some_and(|c| Arc::ptr_eq(c, stale)) {
            *cache = None;
        }
    }

    async fn fetch(&self) -> Result<AccessToken, AuthError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let now = (self.clock)();
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.cfg.client_id.clone()),
            ("scope", self.cfg.scope.clone()),
        ];
        match &self.credential() {
            Credential::Secret(s) => form.push(("client_secret", s.expose().to_string())),
            Credential::Certificate(c) => {
                let jti = uuid::Uuid::new_v4().to_string();
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push((
                    "client_assertion",
                    c.assertion(&self.cfg.client_id, &self.cfg.token_url, now, &jti)?,
                ));
            }
        }
        let resp = self
            .http
            .post(&self.cfg.token_url)
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .form(&form)
            .send()
            .await
            .map_err(|e| AuthError::Unreachable(self.scrub(&error_chain(&e))))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| AuthError::Unreachable(self.scrub(&error_chain(&e))))?;
        if !(200..300).contains(&status) {
            return Err(self.aad_error(status, &body));
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| AuthError::BadResponse {
                status,
                detail: format!("not a token response ({e})"),
            })?;
        if parsed.access_token.trim().is_empty() {
            return Err(AuthError::BadResponse {
                status,
                detail: "empty access_token".into(),
            });
        }
        if let Some(tt) = &parsed.token_type
            && !tt.eq_ignore_ascii_case("bearer")
        {
            return Err(AuthError::BadResponse {
                status,
                detail: format!("token_type {tt}, expected Bearer"),
            });
        }
        let lifetime = Duration::from_secs(parsed.expires_in.seconds());
        let expires_at = now
            .checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or_default())
            .unwrap_or(jiff::Timestamp::MAX);
        let claims = TokenClaims::from_jwt(&parsed.access_token);
        tracing::debug!(
            expires_in = lifetime.as_secs(),
            roles = ?claims.as_ref().map(|c| &c.roles),
            "access token obtained"
        );
        Ok(AccessToken {
            value: Secret::new(parsed.access_token),
            obtained_at: now,
            expires_at,
            refresh_at: refresh_time(now, lifetime),
            claims,
        })
    }

    fn aad_error(&self, status: u16, body: &[u8]) -> AuthError {
        #[derive(Deserialize)]
        struct AadError {
            error: String,
            error_description: Option<String>,
            #[serde(default)]
            error_codes: Vec<u64>,
            trace_id: Option<String>,
            correlation_id: Option<String>,
        }
        match serde_json::from_slice::<AadError>(body) {
            Ok(e) => AuthError::Aad {
                status,
                error: self.scrub(&e.error),
                description: self.scrub(e.error_description.as_deref().unwrap_or("")),
                codes: e.error_codes,
                trace_id: e.trace_id,
                correlation_id: e.correlation_id,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                AuthError::BadResponse {
                    status,
                    detail: if text.is_empty() {
                        "empty body".into()
                    } else {
                        self.scrub(&truncate(text, 300))
                    },
                }
            }
        }
    }

    /// Removes the client secret from text that came from elsewhere (an error
    /// page that echoes the request must not leak it).
    fn scrub(&self, text: &str) -> String {
        match &self.credential() {
            Credential::Secret(s) if !s.expose().is_empty() => {
                text.replace(s.expose(), "<redacted>")
            }
            _ => text.to_string(),
        }
    }
}

/// `expires_in`: a number (v2 endpoint) or a string (v1).
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Number(f64),
    Text(String),
}

impl ExpiresIn {
    fn seconds(&self) -> u64 {
        let s = match self {
            ExpiresIn::Number(n) => *n,
            ExpiresIn::Text(t) => t.trim().parse().unwrap_or(0.0),
        };
        if s.is_finite() && s > 0.0 {
            s.min(u32::MAX as f64) as u64
        } else {
            0
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: ExpiresIn,
}

/// An error and its sources on one line (reqwest's top-level message alone
/// says little).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    fn token(payload: Option<&str>) -> AccessToken {
        let now = ts("2026-01-01T00:00:00Z");
        AccessToken {
            value: Secret::new("eyJ-secret-token"),
            obtained_at: now,
            expires_at: now,
            refresh_at: now,
            claims: payload.and_then(|p| TokenClaims::from_jwt(&jwt(p))),
        }
    }

    #[test]
    fn refresh_five_minutes_early_or_at_ninety_percent() {
        let now = ts("2026-01-01T00:00:00Z");
        assert_eq!(
            refresh_time(now, Duration::from_secs(3600)),
            ts("2026-01-01T00:55:00Z")
        );
        assert_eq!(
            refresh_time(now, Duration::from_secs(100)),
            ts("2026-01-01T00:01:30Z")
        );
        assert_eq!(refresh_time(now, Duration::ZERO), now);
        // Absurd lifetimes do not panic.
        let _ = refresh_time(now, Duration::from_secs(u64::MAX));
    }

    #[test]
    fn reads_roles_and_tenant_from_the_payload() {
        let t = token(Some(
            r#"{"roles":["Calls.Initiate.All","calls.joingroupcall.all"],"tid":"t1","appid":"a"}"#,
        ));
        assert_eq!(t.tenant_id(), Some("t1"));
        assert!(t.has_role("calls.initiate.all"));
        assert!(t.has_role("Calls.JoinGroupCall.All"));
        assert!(!t.has_role("Calls.AccessMedia.All"));
        assert_eq!(
            t.missing_roles(&["Calls.Initiate.All", "Calls.AccessMedia.All"]),
            Some(vec!["Calls.AccessMedia.All"])
        );
        // Group-call permission covers peer-to-peer.
        let g = token(Some(r#"{"roles":["Calls.InitiateGroupCall.All"]}"#));
        assert_eq!(g.missing_roles(&["Calls.Initiate.All"]), Some(vec![]));
        // No roles claim: none granted.
        let none = token(Some(r#"{"tid":"t"}"#));
        assert_eq!(
            none.missing_roles(&["Calls.Initiate.All"]),
            Some(vec!["Calls.Initiate.All"])
        );
        // Opaque token: unknown, Graph decides.
        let opaque = token(None);
        assert_eq!(opaque.roles(), None);
        assert_eq!(opaque.missing_roles(&["Calls.Initiate.All"]), None);
    }

    #[test]
    fn claims_of_garbage_are_none() {
        for t in ["", "abc", "a.b", "a.!!!.c", &jwt("[1]"), &jwt("not json")] {
            assert_eq!(TokenClaims::from_jwt(t), None, "{t}");
        }
    }

    #[test]
    fn access_token_debug_hides_the_token() {
        let t = token(Some(r#"{"roles":[]}"#));
        let d = format!("{t:?}");
        assert!(!d.contains("eyJ-secret-token"), "{d}");
        assert!(d.contains("redacted"), "{d}");
    }

    #[test]
    fn aadsts_code_from_description_or_codes() {
        let e = AuthError::Aad {
            status: 401,
            error: "invalid_client".into(),
            description: "AADSTS7000215: Invalid client secret provided.".into(),
            codes: vec![7000215],
            trace_id: None,
            correlation_id: None,
        };
        assert_eq!(e.aadsts().as_deref(), Some("AADSTS7000215"));
        assert!(e.to_string().contains("AADSTS7000215"), "{e}");
        assert!(e.to_string().contains("invalid_client"), "{e}");
        let e = AuthError::Aad {
            status: 400,
            error: "invalid_request".into(),
            description: "something".into(),
            codes: vec![90002],
            trace_id: None,
            correlation_id: None,
        };
        assert_eq!(e.aadsts().as_deref(), Some("AADSTS90002"));
        assert_eq!(AuthError::Config("x".into()).aadsts(), None);
    }

    #[test]
    fn expires_in_as_number_or_text() {
        let p = |s: &str| {
            serde_json::from_str::<TokenResponse>(s)
                .unwrap()
                .expires_in
                .seconds()
        };
        assert_eq!(p(r#"{"access_token":"a","expires_in":3599}"#), 3599);
        assert_eq!(p(r#"{"access_token":"a","expires_in":"3599"}"#), 3599);
        assert_eq!(p(r#"{"access_token":"a","expires_in":"x"}"#), 0);
        assert_eq!(p(r#"{"access_token":"a","expires_in":-5}"#), 0);
    }

    #[test]
    fn token_url_escapes_the_tenant() {
        assert_eq!(
            token_url(
                "https://login.microsoftonline.com/",
                "contoso.onmicrosoft.com"
            ),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            token_url("https://x", "a/b"),
            "https://x/a%2Fb/oauth2/v2.0/token"
        );
    }

    #[test]
    fn live_mode_needs_ids_and_exactly_one_credential() {
        use crate::config::SecretRef;
        let mut cfg = GraphConfig::default();
        let err = TokenSourceConfig::from_graph_config(&cfg).unwrap_err();
        assert!(err.to_string().contains("tenantId"), "{err}");
        cfg.tenant_id = Some("t".into());
        cfg.client_id = Some("c".into());
        let err = TokenSourceConfig::from_graph_config(&cfg).unwrap_err();
        assert!(
            err.to_string()
                .contains("clientSecret or graph.certificate"),
            "{err}"
        );
        cfg.client_secret = Some(SecretRef::Env("CALLD_TEST_UNSET_VARIABLE_X".into()));
        let err = TokenSourceConfig::from_graph_config(&cfg).unwrap_err();
        assert!(
            err.to_string().contains("CALLD_TEST_UNSET_VARIABLE_X"),
            "{err}"
        );
        cfg.certificate = Some(CertificateRef {
            key_file: "k".into(),
            cert_file: "c".into(),
        });
        let err = TokenSourceConfig::from_graph_config(&cfg).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn national_cloud_urls_and_overrides() {
        use crate::config::Cloud;
        let dir = std::env::temp_dir().join(format!("calld-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("s");
        std::fs::write(&secret, "x\n").unwrap();
        let mut cfg = GraphConfig {
            tenant_id: Some("t".into()),
            client_id: Some("c".into()),
            client_secret: Some(crate::config::SecretRef::File(secret)),
            cloud: Cloud::China,
            ..GraphConfig::default()
        };
        let ts = TokenSourceConfig::from_graph_config(&cfg).unwrap();
        assert_eq!(
            ts.token_url,
            "https://login.chinacloudapi.cn/t/oauth2/v2.0/token"
        );
        assert_eq!(ts.scope, "https://microsoftgraph.chinacloudapi.cn/.default");
        cfg.cloud = Cloud::Usgovdod;
        let ts = TokenSourceConfig::from_graph_config(&cfg).unwrap();
        assert_eq!(
            ts.token_url,
            "https://login.microsoftonline.us/t/oauth2/v2.0/token"
        );
        assert_eq!(ts.scope, "https://dod-graph.microsoft.us/.default");
        cfg.base_url = Some("http://127.0.0.1:9/".into());
        cfg.authority_url = Some("http://127.0.0.1:8".into());
        let ts = TokenSourceConfig::from_graph_config(&cfg).unwrap();
        assert_eq!(ts.token_url, "http://127.0.0.1:8/t/oauth2/v2.0/token");
        assert_eq!(ts.scope, "http://127.0.0.1:9/.default");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
