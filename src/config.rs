//! The configuration file (SPEC 3): one YAML file, every key defaulted.
//!
//! Resolution: `--config F`, else `$CALLD_CONFIG`, else `/etc/calld/calld.yaml`
//! when it exists, else no file (all defaults: sandbox mode).

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration::serde_text as duration_text;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// The calls directory; default `./calls.d`.
    pub calls_dir: Option<PathBuf>,
    /// Where the ledger lives; default `$STATE_DIRECTORY`, else `./.calld`.
    pub state_dir: Option<PathBuf>,
    pub graph: GraphConfig,
    pub callback: CallbackConfig,
    pub admin: AdminConfig,
    pub defaults: Defaults,
    pub log: LogConfig,
    pub daemon: DaemonConfig,
    pub ledger: LedgerConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GraphMode {
    Live,
    Sandbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Cloud {
    #[default]
    Global,
    Usgov,
    Usgovdod,
    China,
}

impl Cloud {
    /// (Graph base URL, authority URL) of this national cloud.
    pub fn urls(self) -> (&'static str, &'static str) {
        match self {
            Cloud::Global => (
                "https://graph.microsoft.com",
                "https://login.microsoftonline.com",
            ),
            Cloud::Usgov => (
                "https://graph.microsoft.us",
                "https://login.microsoftonline.us",
            ),
            Cloud::Usgovdod => (
                "https://dod-graph.microsoft.us",
                "https://login.microsoftonline.us",
            ),
            Cloud::China => (
                "https://microsoftgraph.chinacloudapi.cn",
                "https://login.chinacloudapi.cn",
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "v1.0")]
    V1,
    #[serde(rename = "beta")]
    Beta,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1.0",
            ApiVersion::Beta => "beta",
        }
    }
}

impl std::str::FromStr for ApiVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1.0" | "v1" => Ok(ApiVersion::V1),
            "beta" => Ok(ApiVersion::Beta),
            other => Err(format!("unknown API version `{other}`: write v1.0 or beta")),
        }
    }
}

/// `graph:`: how calld reaches Microsoft Graph.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GraphConfig {
    /// live | sandbox; default: live when clientId is set, else sandbox.
    pub mode: Option<GraphMode>,
    pub cloud: Cloud,
    /// Overrides the cloud's Graph URL (the emulator's address in tests).
    pub base_url: Option<String>,
    /// Overrides the cloud's login URL.
    pub authority_url: Option<String>,
    pub api_version: ApiVersion,
    /// Use the deprecated beta `/app/calls` endpoint of the seed examples.
    pub legacy_app_endpoint: bool,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretRef>,
    pub certificate: Option<CertificateRef>,
    pub max_concurrent_requests: usize,
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            mode: None,
            cloud: Cloud::Global,
            base_url: None,
            authority_url: None,
            api_version: ApiVersion::V1,
            legacy_app_endpoint: false,
            tenant_id: None,
            client_id: None,
            client_secret: None,
            certificate: None,
            max_concurrent_requests: 16,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl GraphConfig {
    /// The effective mode: explicit, else live when a client id is set.
    pub fn effective_mode(&self) -> GraphMode {
        self.mode.unwrap_or(if self.client_id.is_some() {
            GraphMode::Live
        } else {
            GraphMode::Sandbox
        })
    }

    /// The Graph base URL without a trailing slash.
    pub fn base_url(&self) -> String {
        let url = self
            .base_url
            .clone()
            .unwrap_or_else(|| self.cloud.urls().0.to_string());
        url.trim_end_matches('/').to_string()
    }

    /// The authority (login) URL without a trailing slash.
    pub fn authority_url(&self) -> String {
        let url = self
            .authority_url
            .clone()
            .unwrap_or_else(|| self.cloud.urls().1.to_string());
        url.trim_end_matches('/').to_string()
    }
}

/// Where a secret comes from. The secret itself is never stored here.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SecretRef {
    /// An environment variable's name.
    Env(String),
    /// A file whose content (trimmed) is the secret.
    File(PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names where the secret lives, never the secret.
        match self {
            SecretRef::Env(n) => write!(f, "{{env: {n}}}"),
            SecretRef::File(p) => write!(f, "{{file: {}}}", p.display()),
            SecretRef::Credential(n) => write!(f, "{{credential: {n}}}"),
        }
    }
}

/// A secret value: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl SecretRef {
    /// Reads the secret. Errors name where it was looked for, never its value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| format!("graph.clientSecret: environment variable {name} is not set")),
            SecretRef::File(path) => read_secret_file(path, "graph.clientSecret.file"),
            SecretRef::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!(
                        "graph.clientSecret.credential: $CREDENTIALS_DIRECTORY is not set \
                         (use LoadCredential={name}:... in the systemd unit)"
                    )
                })?;
                read_secret_file(&Path::new(&dir).join(name), "graph.clientSecret.credential")
            }
        }
    }
}

fn read_secret_file(path: &Path, key: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("{key}: {} is empty", path.display()));
    }
    Ok(Secret(trimmed.to_string()))
}

/// `graph.certificate`: a client assertion signed with this key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateRef {
    pub key_file: PathBuf,
    pub cert_file: PathBuf,
}

/// `callback:`: the public notification listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CallbackConfig {
    /// The callbackUri Graph posts to; a spec's `callbackUri` overrides it.
    pub public_url: Option<String>,
    pub listen: String,
    pub tls: Option<TlsConfig>,
    pub validate_tokens: bool,
    pub open_id_config_url: String,
    pub issuers: Vec<String>,
    /// Open connections at most (default 512); more are closed at once and
    /// counted (`calld_callback_refused_connections_total`).
    pub max_connections: usize,
    /// A request's headers must arrive within this (default 10s).
    #[serde(with = "duration_text")]
    pub header_read_timeout: Duration,
    /// A kept-alive connection without a request is closed after this (default 60s).
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// A request's body must arrive within this (default 30s).
    #[serde(with = "duration_text")]
    pub body_read_timeout: Duration,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            public_url: None,
            listen: "0.0.0.0:8443".into(),
            tls: None,
            validate_tokens: true,
            open_id_config_url: "https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration"
                .into(),
            issuers: vec![
                "https://api.botframework.com".into(),
                "https://graph.microsoft.com".into(),
            ],
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `admin:`: health, readiness, metrics and the JSON API.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// `defaults:`: merged into every spec that does not set its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Defaults {
    pub tenant_id: Option<String>,
    /// A participantInfo (`identity`, `languageId`, `region`), as in a spec.
    pub source: Option<serde_json::Value>,
    /// IANA time zone name; default UTC.
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
    Journald,
}

/// `log:`
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `daemon:` (calld's own addition to SPEC 3): timings of the daemon's loops.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Full rescan of the calls directory even without events; default 60s.
    #[serde(with = "duration_text")]
    pub resync_interval: Duration,
    /// Debounce of watcher events before a rescan; default 20ms (the drop latency floor).
    #[serde(with = "duration_text")]
    pub debounce: Duration,
    /// Runs older than this are pruned from the ledger; default 90d.
    #[serde(with = "duration_text")]
    pub history_retention: Duration,
    /// A placed call with no notification within this is recorded `unknown`; default 10m.
    #[serde(with = "duration_text")]
    pub notification_timeout: Duration,
    /// keepAlive interval of established calls; default 15m (Graph ends a
    /// call that gets none for 45m).
    #[serde(with = "duration_text")]
    pub keep_alive_interval: Duration,
    /// A spec file modified but not closed (or changed while read) is read
    /// again once it has been quiet this long; default 1s (docs/watching.md).
    #[serde(with = "duration_text")]
    pub settle: Duration,
    /// Specs that vanish all at once (over half, and more than 10) are held
    /// this long before their runs are canceled; default 5m (docs/runs.md).
    #[serde(with = "duration_text")]
    pub prune_after: Duration,
    /// keepAlive stops after a call has been up this long (default 4h);
    /// Graph then ends it within 45 minutes.
    #[serde(with = "duration_text")]
    pub max_call_duration: Duration,
    /// A run without a deadline keeps retrying transient failures (token
    /// outages, throttling) for this long after its due time, then is
    /// recorded `missed` (default 1h).
    #[serde(with = "duration_text")]
    pub transient_retry_window: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            resync_interval: Duration::from_secs(60),
            debounce: Duration::from_millis(20),
            history_retention: Duration::from_secs(90 * 86_400),
            notification_timeout: Duration::from_secs(600),
            keep_alive_interval: Duration::from_secs(15 * 60),
            settle: Duration::from_secs(1),
            prune_after: Duration::from_secs(5 * 60),
            max_call_duration: Duration::from_secs(4 * 3600),
            transient_retry_window: Duration::from_secs(3600),
        }
    }
}

/// `ledger:` (issue 13, docs/replicas.md): where runs are recorded. Without
/// `url`, SQLite in `stateDir` (one daemon). With a PostgreSQL URL, a
/// database that several replicas share.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// `postgres://user@host:port/db` (also `CALLD_LEDGER_URL`). A password
    /// in the URL works but is better given by `passwordFile` or
    /// `passwordCredential`; it is never logged.
    pub url: Option<String>,
    /// A file holding the database password.
    pub password_file: Option<PathBuf>,
    /// A systemd credential (`LoadCredential=`) holding the database password.
    pub password_credential: Option<String>,
    /// The PostgreSQL schema of calld's tables; default `calld`.
    pub schema: String,
    /// This replica's name in claims and logs; default `<hostname>-<pid>`.
    pub replica_id: Option<String>,
    /// How long a claim holds a run without renewal; default 5s.
    #[serde(with = "duration_text")]
    pub lease: Duration,
    /// How often a replica re-reads the shared ledger when nothing wakes it;
    /// default 1s.
    #[serde(with = "duration_text")]
    pub poll: Duration,
    /// A CA bundle (PEM) to verify the database's TLS certificate with
    /// (TLS is used when this is set or the URL says `sslmode=require`).
    pub ca_file: Option<PathBuf>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            url: None,
            password_file: None,
            password_credential: None,
            schema: "calld".to_string(),
            replica_id: None,
            lease: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            ca_file: None,
        }
    }
}

impl fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("password_file", &self.password_file)
            .field("password_credential", &self.password_credential)
            .field("schema", &self.schema)
            .field("replica_id", &self.replica_id)
            .field("lease", &self.lease)
            .field("poll", &self.poll)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl LedgerConfig {
    /// The database password from `passwordFile` or `passwordCredential`.
    pub fn password(&self) -> Result<Option<Secret>, String> {
        if let Some(path) = &self.password_file {
            return read_secret_file(path, "ledger.passwordFile").map(Some);
        }
        if let Some(name) = &self.password_credential {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                format!(
                    "ledger.passwordCredential: $CREDENTIALS_DIRECTORY is not set \
                     (use LoadCredential={name}:... in the systemd unit)"
                )
            })?;
            return read_secret_file(&Path::new(&dir).join(name), "ledger.passwordCredential")
                .map(Some);
        }
        Ok(None)
    }

    /// This replica's id: `replicaId`, else `<hostname>-<pid>`.
    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "calld".to_string());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// A URL with any password replaced by `***` (for logs and errors).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".to_string(),
    }
}

/// Errors loading the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    /// The file to load: `explicit`, else `$CALLD_CONFIG`, else
    /// `/etc/calld/calld.yaml` when it exists.
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("CALLD_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let etc = Path::new("/etc/calld/calld.yaml");
        etc.exists().then(|| etc.to_path_buf())
    }

    /// Loads the located file, or the defaults when there is none.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        match Config::locate(explicit) {
            None => Ok((Config::default(), None)),
            Some(path) => Ok((Config::from_file(&path)?, Some(path))),
        }
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses configuration text; an empty file is all defaults.
    pub fn from_yaml(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_saphyr::from_str::<Option<Config>>(text)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string())
    }

    /// The callbackUri of specs that set none: `callback.publicUrl`, else in
    /// sandbox mode the local listener (`http://127.0.0.1:PORT/api/calls`,
    /// PORT from `callback.listen`); in live mode there is no default.
    pub fn effective_public_url(&self) -> Option<String> {
        if let Some(url) = &self.callback.public_url {
            return Some(url.clone());
        }
        if self.graph.effective_mode() == GraphMode::Sandbox {
            let port = self.callback.listen.rsplit(':').next().unwrap_or("8443");
            return Some(format!("http://127.0.0.1:{port}/api/calls"));
        }
        None
    }

    pub fn calls_dir(&self) -> PathBuf {
        self.calls_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./calls.d"))
    }

    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        match std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
            // systemd may pass several, colon-separated: the first is ours.
            Some(d) => PathBuf::from(d.to_string_lossy().split(':').next().unwrap_or(".calld")),
            None => PathBuf::from("./.calld"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_interval_defaults_to_15_minutes_and_can_be_set() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.daemon.keep_alive_interval, Duration::from_secs(900));
        let c = Config::from_yaml("daemon: { keepAliveInterval: 2m }").unwrap();
        assert_eq!(c.daemon.keep_alive_interval, Duration::from_secs(120));
        assert!(Config::from_yaml("daemon: { keepAliveInterval: soon }").is_err());
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.graph.effective_mode(), GraphMode::Sandbox);
        assert_eq!(c.graph.max_concurrent_requests, 16);
        assert_eq!(c.admin.listen, "127.0.0.1:9464");
        assert!(c.callback.validate_tokens);
    }

    #[test]
    fn parses_the_documented_example() {
        let c = Config::from_yaml(
            r#"
callsDir: ./calls.d
stateDir: /var/lib/calld
graph:
  cloud: usgov
  apiVersion: beta
  tenantId: t
  clientId: c
  clientSecret: { env: CALLD_CLIENT_SECRET }
  requestTimeout: 10s
callback:
  publicUrl: https://bot.contoso.com/api/calls
  listen: 0.0.0.0:8443
defaults:
  source: { identity: { application: { id: abc } } }
  timezone: Europe/Berlin
log: { format: json, level: debug }
"#,
        )
        .unwrap();
        assert_eq!(c.graph.effective_mode(), GraphMode::Live);
        assert_eq!(c.graph.base_url(), "https://graph.microsoft.us");
        assert_eq!(c.graph.api_version, ApiVersion::Beta);
        assert_eq!(c.graph.request_timeout, Duration::from_secs(10));
        assert_eq!(
            c.graph.client_secret,
            Some(SecretRef::Env("CALLD_CLIENT_SECRET".into()))
        );
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::from_yaml("graph:\n  clientID: x\n").unwrap_err();
        assert!(err.contains("clientID"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }
}
