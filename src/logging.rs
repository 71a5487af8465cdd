//! Logging: `log.format` text | json | journald, `log.level` (or `RUST_LOG`),
//! the level changeable at run time (SIGHUP reload).
//!
//! - **text**: for people; ANSI colour only when stderr is a terminal and
//!   `NO_COLOR` is unset or empty.
//! - **json**: one object per line on stderr, the event's fields at the top
//!   level next to `timestamp`, `level`, `target` and `message`, the current
//!   span's fields under `span`. The daemon logs with the fields `run`,
//!   `spec`, `outcome`, `call_id`, `request_id`, `reason`.
//! - **journald**: native journal entries; each field becomes a journal field
//!   prefixed with `CALLD_` (`CALLD_SPEC=team-a/standup`, `CALLD_OUTCOME=...`),
//!   so `journalctl -u calld CALLD_OUTCOME=failed` filters on it.
//!
//! `RUST_LOG`, when set and not empty, overrides `log.level`, at start and on
//! reload.
//!
//! Secrets are never logged: [`crate::config::Secret`] prints as
//! `<redacted>` through both `Debug` and `Display`.

use std::io::IsTerminal;

use anyhow::{Context, anyhow, bail};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LogFormat;

/// Changes the log level of a running subscriber.
#[derive(Clone)]
pub struct LogHandle {
    /// The filter in force, replaceable while the subscriber runs.
    reload: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` at start: when set, it wins over every configured level.
    env_override: Option<String>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("env_override", &self.env_override)
            .finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Sets the level (`info`, `debug`, `calld=debug,warn`, ...). An invalid
    /// level is an error and leaves the current one in force. When `RUST_LOG`
    /// was set at start it stays in force: the level is checked, not applied.
    pub fn set_level(&self, level: &str) -> anyhow::Result<()> {
        let filter = parse_level(level).context("log.level")?;
        if let Some(env) = &self.env_override {
            tracing::info!(
                rust_log = env.as_str(),
                "log.level {level:?} not applied: RUST_LOG is set"
            );
            return Ok(());
        }
        self.reload
            .reload(filter)
            .map_err(|e| anyhow!("cannot change the log level: {e}"))
    }

    /// True when `RUST_LOG` decides the level.
    pub fn is_overridden(&self) -> bool {
        self.env_override.is_some()
    }
}

/// Installs the global subscriber, writing to stderr (or to journald).
/// Fails on an invalid level or `RUST_LOG`, when journald is asked for but
/// cannot be reached, or when a global subscriber is already installed.
pub fn init(format: LogFormat, level: &str) -> anyhow::Result<LogHandle> {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    let (subscriber, handle) = build(format, level, rust_log.as_deref(), ansi, std::io::stderr)?;
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| anyhow!("cannot install the logger: {e}"))?;
    Ok(handle)
}

/// The subscriber [`init`] installs, without installing it: `rust_log` is
/// `RUST_LOG`'s value, `writer` receives text and json output (journald
/// writes to the journal socket instead). For tests and for callers that
/// scope a subscriber with `tracing::subscriber::with_default`.
pub fn build<W>(
    format: LogFormat,
    level: &str,
    rust_log: Option<&str>,
    ansi: bool,
    writer: W,
) -> anyhow::Result<(impl tracing::Subscriber + Send + Sync + 'static, LogHandle)>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match rust_log {
        Some(env) => EnvFilter::builder()
            .parse(env)
            .map_err(|e| anyhow!("RUST_LOG {env:?}: {e}"))?,
        None => parse_level(level).context("log.level")?,
    };
    let (filter, reload) = reload::Layer::new(filter);

    let mut text = None;
    let mut json = None;
    let mut journald = None;
    match format {
        LogFormat::Text => {
            text = Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(writer),
            )
        }
        LogFormat::Json => {
            json = Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
        }
        LogFormat::Journald => {
            journald = Some(
                tracing_journald::layer()
                    .map_err(|e| {
                        anyhow!(
                            "log.format journald: cannot reach the journal \
                             (/run/systemd/journal/socket): {e}; use text or json outside systemd"
                        )
                    })?
                    .with_field_prefix(Some("CALLD".into()))
                    .with_syslog_identifier("calld".into()),
            )
        }
    }
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(journald);
    let handle = LogHandle {
        reload,
        env_override: rust_log.map(str::to_string),
    };
    Ok((subscriber, handle))
}

const LEVELS: [&str; 7] = ["trace", "debug", "info", "warn", "warning", "error", "off"];

/// A `log.level` value: a level, or `EnvFilter` directives
/// (`warn,calld=debug`). A bare word must be a level name: `inf` is an error
/// rather than a filter for a module called `inf`.
///
/// A single level `L` applies to calld itself; its dependencies (HTTP,
/// TLS, SQLite, ...) log at `warn`, or at `L` when that is stricter
/// (`debug` means `warn,calld=debug`). Directives are used as written.
pub fn parse_level(level: &str) -> anyhow::Result<EnvFilter> {
    let level = level.trim();
    if let Some(bare) = LEVELS
        .iter()
        .find(|l| l.eq_ignore_ascii_case(level))
        .map(|l| if *l == "warning" { "warn" } else { l })
    {
        let deps = if matches!(bare, "error" | "off") {
            bare
        } else {
            "warn"
        };
        return EnvFilter::builder()
            .parse(format!("{deps},calld={bare}"))
            .map_err(|e| anyhow!("invalid level {level:?}: {e}"));
    }
    if level.is_empty() {
        bail!("empty level: write one of trace, debug, info, warn, error, off");
    }
    for directive in level.split(',').map(str::trim) {
        if directive.is_empty() {
            bail!("empty directive in {level:?}");
        }
        if !directive.contains('=')
            && !directive.contains('[')
            && !directive.contains("::")
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            bail!(
                "unknown level {directive:?}: write one of trace, debug, info, warn, error, off \
                 (or target=level directives such as calld=debug)"
            );
        }
    }
    EnvFilter::builder()
        .parse(level.replace("warning", "warn"))
        .map_err(|e| anyhow!("invalid level {level:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_parse() {
        for ok in [
            "info",
            "DEBUG",
            " warn ",
            "warning",
            "off",
            "calld=debug",
            "warn,calld=debug",
            "calld::daemon=trace",
        ] {
            assert!(parse_level(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_bare_level_is_calld_s_level_with_dependencies_at_warn() {
        assert_eq!(
            parse_level("debug").unwrap().to_string(),
            "calld=debug,warn"
        );
        assert_eq!(parse_level("Info").unwrap().to_string(), "calld=info,warn");
        assert_eq!(
            parse_level("warning").unwrap().to_string(),
            "calld=warn,warn"
        );
        assert_eq!(
            parse_level("error").unwrap().to_string(),
            "calld=error,error"
        );
        assert_eq!(
            parse_level("warn,hyper=debug").unwrap().to_string(),
            "hyper=debug,warn"
        );
    }

    #[test]
    fn bad_levels_are_clear_errors() {
        for bad in ["", "  ", "inf", "verbose", "info,", "calld=loud"] {
            let err = parse_level(bad).expect_err(bad).to_string();
            assert!(
                err.contains("level") || err.contains("directive"),
                "{bad}: {err}"
            );
        }
    }
}
