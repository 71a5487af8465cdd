//! The emulator's configuration file (YAML, camelCase, unknown keys are
//! errors). Every key has a default; the defaults are SPEC 5's no-config
//! behaviour: any client id and secret, every `Calls.*` role, each call
//! answered after 1 s and ended 5 s later with `resultInfo` 200/5001.
//!
//! Documented for users in `docs/emulator.md`; `examples/emulator.yaml`
//! shows every key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Deserializer};

use crate::config::Secret;
use crate::duration::serde_text as duration_text;

/// Every `Calls.*` application role Graph knows, granted by default.
pub const ALL_CALL_ROLES: &[&str] = &[
    "Calls.Initiate.All",
    "Calls.InitiateGroupCall.All",
    "Calls.JoinGroupCall.All",
    "Calls.JoinGroupCallAsGuest.All",
    "Calls.AccessMedia.All",
];

/// The emulator's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EmulatorConfig {
    /// The only tenant the token endpoint serves (its `tid`). Absent: any
    /// tenant in the token URL is accepted and becomes the token's `tid`.
    pub tenant_id: Option<String>,
    /// The app registrations the token endpoint knows. Empty: any client id
    /// with any secret or assertion, granted every `Calls.*` role.
    pub clients: Vec<ClientConfig>,
    /// Lifetime of the access tokens it issues (`expires_in`); default 1h.
    #[serde(with = "duration_text")]
    pub token_lifetime: Duration,
    /// A PEM RSA private key (PKCS#8 or PKCS#1) to sign tokens with, so the
    /// keys survive a restart. Absent: a key generated once per process.
    pub signing_key_file: Option<PathBuf>,
    /// Notification delivery (`false` turns it off, for load tests).
    #[serde(deserialize_with = "notifications_field::deserialize")]
    pub notifications: NotificationsConfig,
    /// What answering calls do.
    pub calls: CallsConfig,
    /// Per-target behaviour, keyed by identity id (user/application id,
    /// phone number, meeting thread id or join meeting id); case-insensitive.
    pub targets: BTreeMap<String, TargetConfig>,
    /// Injected failures on the create-call endpoints.
    pub faults: FaultsConfig,
    /// How many received requests `/_emulator/calls` keeps (oldest dropped).
    pub max_recorded: usize,
    /// Serve HTTPS with this PEM certificate chain and key (what MSAL and
    /// azure-identity require of an authority); absent: plain HTTP.
    pub tls: Option<crate::config::TlsConfig>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            tenant_id: None,
            clients: Vec::new(),
            token_lifetime: Duration::from_secs(3600),
            signing_key_file: None,
            notifications: NotificationsConfig::default(),
            calls: CallsConfig::default(),
            targets: BTreeMap::new(),
            faults: FaultsConfig::default(),
            max_recorded: 10_000,
            tls: None,
        }
    }
}

impl EmulatorConfig {
    /// Reads a YAML configuration file; an empty file is all defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read emulator configuration {}", path.display()))?;
        let mut config =
            Self::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Relative key and certificate paths are relative to the file.
        if let Some(dir) = path.parent() {
            let fix = |p: &mut PathBuf| {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            };
            if let Some(p) = config.signing_key_file.as_mut() {
                fix(p);
            }
            for p in config
                .clients
                .iter_mut()
                .filter_map(|c| c.certificate.as_mut())
            {
                fix(p);
            }
        }
        Ok(config)
    }

    /// Parses configuration text and checks it; an empty text is all defaults.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let config = if text.trim().is_empty() {
            EmulatorConfig::default()
        } else {
            serde_saphyr::from_str::<Option<EmulatorConfig>>(text)
                .map(Option::unwrap_or_default)
                .map_err(|e| e.to_string())?
        };
        config.check()?;
        Ok(config)
    }

    /// Checks what serde cannot: shares between 0 and 1, unique client ids.
    pub fn check(&self) -> Result<(), String> {
        let f = &self.faults;
        for (name, share) in [
            ("faults.throttle", f.throttle),
            ("faults.unavailable", f.unavailable),
            ("faults.drop", f.drop),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!(
                    "{name}: a share between 0 and 1 is expected, not {share}"
                ));
            }
        }
        if f.throttle + f.unavailable + f.drop > 1.0 + 1e-9 {
            return Err("faults: throttle + unavailable + drop add up to more than 1".to_string());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            if c.id.trim().is_empty() {
                return Err(format!("clients[{i}].id: must not be empty"));
            }
            if !seen.insert(c.id.to_ascii_lowercase()) {
                return Err(format!("clients[{i}].id: `{}` is listed twice", c.id));
            }
        }
        if self.notifications.attempts == 0 {
            return Err("notifications.attempts: at least 1".to_string());
        }
        Ok(())
    }

    /// The configured behaviour of a target, looked up case-insensitively.
    pub fn target(&self, id: &str) -> Option<&TargetConfig> {
        self.targets
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(id))
            .map(|(_, v)| v)
    }
}

/// One app registration.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// The application (client) id.
    pub id: String,
    /// The client secret. Absent (and no certificate): any secret accepted.
    #[serde(default, deserialize_with = "secret_opt")]
    pub secret: Option<Secret>,
    /// A PEM certificate (or public key) whose key signs client assertions.
    /// Absent: any well-formed assertion is accepted.
    pub certificate: Option<PathBuf>,
    /// Application roles in its tokens; default every `Calls.*` role.
    pub roles: Option<Vec<String>>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .field("certificate", &self.certificate)
            .field("roles", &self.roles)
            .finish()
    }
}

fn secret_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

/// Notification delivery. In YAML either `false`/`true` or a map.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Deliver notifications at all (default true).
    pub enabled: bool,
    /// `iss` of the notification tokens; default `https://api.botframework.com`.
    pub issuer: String,
    /// Deliveries per notification before giving up (default 4).
    pub attempts: u32,
    /// Wait before the first retry, doubled each time (default 100ms).
    #[serde(with = "duration_text")]
    pub retry_delay: Duration,
    /// Timeout of one delivery (default 5s).
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Lifetime of the notification tokens (default 10m; cached for 1m).
    #[serde(with = "duration_text")]
    pub token_lifetime: Duration,
    /// Send `resultInfo.code`/`subcode` as strings, as Graph's docs show
    /// (default: numbers, as the metadata says).
    pub codes_as_strings: bool,
    /// Accept any TLS certificate of an https callbackUri (self-signed
    /// test listeners). Default false.
    pub accept_invalid_certs: bool,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            enabled: true,
            issuer: "https://api.botframework.com".to_string(),
            attempts: 4,
            retry_delay: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            token_lifetime: Duration::from_secs(600),
            codes_as_strings: false,
            accept_invalid_certs: false,
        }
    }
}

// `notifications: false` or `notifications: { ... }`.
impl<'de> Deserialize<'de> for NotificationsConfigField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NotificationsConfigField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or a map of notification settings")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(NotificationsConfigField(NotificationsConfig {
                    enabled: v,
                    ..NotificationsConfig::default()
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Self::Value, A::Error> {
                NotificationsConfig::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(NotificationsConfigField)
            }
        }
        d.deserialize_any(V)
    }
}

/// Serde helper so that `notifications` takes a bool or a map.
struct NotificationsConfigField(NotificationsConfig);

pub(crate) mod notifications_field {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NotificationsConfig, D::Error> {
        NotificationsConfigField::deserialize(d).map(|f| f.0)
    }
}

/// A Graph `resultInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResultInfo {
    pub code: u32,
    pub subcode: u32,
    #[serde(default)]
    pub message: String,
}

impl ResultInfo {
    pub fn new(code: u32, subcode: u32, message: &str) -> Self {
        ResultInfo {
            code,
            subcode,
            message: message.to_string(),
        }
    }
}

/// Default behaviour of answered calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CallsConfig {
    /// From create to `established` (default 1s).
    #[serde(with = "duration_text")]
    pub answer_after: Duration,
    /// From `established` to the end (default 5s).
    #[serde(with = "duration_text")]
    pub length: Duration,
    /// `resultInfo` when the call ends by itself (default 200/5001).
    pub result: ResultInfo,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            answer_after: Duration::from_secs(1),
            length: Duration::from_secs(5),
            result: ResultInfo::new(200, 5001, "The conversation has ended."),
        }
    }
}

/// What a target does with the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Answer,
    Decline,
    NoAnswer,
    Busy,
    Unreachable,
}

impl Outcome {
    /// The `resultInfo` of a call this outcome ends (answer: see `calls.result`).
    pub fn default_result(self, calls: &CallsConfig) -> ResultInfo {
        match self {
            Outcome::Answer => calls.result.clone(),
            Outcome::Decline => ResultInfo::new(603, 0, "Call declined by the callee."),
            Outcome::NoAnswer => ResultInfo::new(
                408,
                10057,
                "Call timed out due to no signaling from callee endpoints.",
            ),
            Outcome::Busy => ResultInfo::new(486, 0, "The callee is busy."),
            Outcome::Unreachable => ResultInfo::new(480, 10037, "No callee endpoints were found."),
        }
    }
}

/// The scripted behaviour of one target (by identity id).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetConfig {
    pub outcome: Outcome,
    /// Answer: the answer delay (default `calls.answerAfter`). Others: how
    /// long it rings before ending (default: `calls.answerAfter`).
    #[serde(default, with = "duration_opt")]
    pub after: Option<Duration>,
    /// Answer only: how long the call lasts (default `calls.length`).
    #[serde(default, with = "duration_opt")]
    pub length: Option<Duration>,
    /// The final `resultInfo` (default: per outcome, see the docs).
    pub result: Option<ResultInfo>,
}

/// Injected failures of the create-call endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultsConfig {
    /// Seed of the random draws, for reproducible runs. Absent: random.
    pub seed: Option<u64>,
    /// Share of creates answered 429 with `Retry-After`.
    pub throttle: f64,
    /// Share of creates answered 503 with `Retry-After`.
    pub unavailable: f64,
    /// Share of creates whose connection is closed without an answer.
    pub drop: f64,
    /// `Retry-After` of 429 and 503 answers (fractional seconds allowed;
    /// default 1s).
    #[serde(with = "duration_text")]
    pub retry_after: Duration,
    /// Added to every create's answer.
    #[serde(with = "duration_text")]
    pub latency: Duration,
    /// Exact faults of the next creates, in order; the random shares apply
    /// once it is used up.
    pub script: Vec<ScriptedFault>,
}

impl Default for FaultsConfig {
    fn default() -> Self {
        FaultsConfig {
            seed: None,
            throttle: 0.0,
            unavailable: 0.0,
            drop: 0.0,
            retry_after: Duration::from_secs(1),
            latency: Duration::ZERO,
            script: Vec::new(),
        }
    }
}

/// One entry of `faults.script`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ScriptedFault {
    /// Processed normally.
    Ok,
    /// 429 `TooManyRequests` with `Retry-After`.
    Throttle,
    /// 503 `ServiceUnavailable` with `Retry-After`.
    Unavailable,
    /// 503 without `Retry-After` (the client must not re-send the create).
    UnavailableNoRetryAfter,
    /// 500 `InternalServerError` without `Retry-After`.
    ServerError,
    /// Read and record the request, then close the connection unanswered.
    Drop,
    /// Process normally but never answer and keep the connection open (a
    /// client timeout): the call is created.
    Hang,
}

mod duration_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => crate::duration::parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_the_spec_defaults() {
        let c = EmulatorConfig::from_yaml("").unwrap();
        assert!(c.clients.is_empty());
        assert!(c.notifications.enabled);
        assert_eq!(c.notifications.issuer, "https://api.botframework.com");
        assert_eq!(c.calls.answer_after, Duration::from_secs(1));
        assert_eq!(c.calls.length, Duration::from_secs(5));
        assert_eq!(
            c.calls.result,
            ResultInfo::new(200, 5001, "The conversation has ended.")
        );
        assert_eq!(c.faults.throttle, 0.0);
    }

    #[test]
    fn notifications_takes_a_bool_or_a_map() {
        let c = EmulatorConfig::from_yaml("notifications: false").unwrap();
        assert!(!c.notifications.enabled);
        let c =
            EmulatorConfig::from_yaml("notifications:\n  issuer: https://x.test\n  attempts: 2")
                .unwrap();
        assert!(c.notifications.enabled);
        assert_eq!(c.notifications.issuer, "https://x.test");
        assert_eq!(c.notifications.attempts, 2);
        let e = EmulatorConfig::from_yaml("notifications:\n  isuer: x").unwrap_err();
        assert!(e.contains("isuer"), "{e}");
    }

    #[test]
    fn full_example_parses() {
        let text = include_str!("../../examples/emulator.yaml");
        let c = EmulatorConfig::from_yaml(text).unwrap();
        assert!(!c.clients.is_empty());
        assert!(!c.targets.is_empty());
    }

    #[test]
    fn targets_and_faults() {
        let c = EmulatorConfig::from_yaml(
            "targets:\n  '+15550100': { outcome: decline, after: 250ms }\n  \
             ABC: { outcome: answer, length: 2s, result: { code: 200, subcode: 7000 } }\n\
             faults: { seed: 7, throttle: 0.25, retryAfter: 1500ms, script: [throttle, drop, ok] }",
        )
        .unwrap();
        let t = c.target("+15550100").unwrap();
        assert_eq!(t.outcome, Outcome::Decline);
        assert_eq!(t.after, Some(Duration::from_millis(250)));
        assert_eq!(
            c.target("abc").unwrap().length,
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            c.faults.script,
            vec![
                ScriptedFault::Throttle,
                ScriptedFault::Drop,
                ScriptedFault::Ok
            ]
        );
        assert_eq!(c.faults.retry_after, Duration::from_millis(1500));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for (text, needle) in [
            ("faults: { throttle: 1.5 }", "faults.throttle"),
            ("faults: { throttle: 0.6, drop: 0.6 }", "more than 1"),
            ("faults: { script: [explode] }", "explode"),
            ("targets: { x: { outcome: maybe } }", "maybe"),
            ("tokenLifetime: soon", "duration"),
            ("clients: [{ id: a }, { id: A }]", "twice"),
            ("colour: blue", "colour"),
        ] {
            let e = EmulatorConfig::from_yaml(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn client_secret_is_not_in_debug() {
        let c = EmulatorConfig::from_yaml("clients: [{ id: a, secret: hunter2 }]").unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}
