//! Logging as the daemon will use it: JSON lines carry the daemon's fields,
//! the level changes at run time, RUST_LOG wins, secrets never show.

use std::io::Write;
use std::sync::{Arc, Mutex};

use calld::config::{LogFormat, Secret, SecretRef};
use calld::logging;
use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
    fn json_lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[test]
fn json_lines_carry_the_daemons_fields() {
    let out = Capture::default();
    let (sub, _handle) = logging::build(LogFormat::Json, "info", None, false, out.clone()).unwrap();
    tracing::subscriber::with_default(sub, || {
        tracing::info!(target: "calld::daemon",
            run = "r-42",
            spec = "team-a/standup",
            outcome = "notEstablished",
            call_id = "491f0b00-ffff-4bc9-a43e-b226498ec22a",
            request_id = "b8c2f1d0-0000-4d6a-9a65-0d8b1d2ad0e7",
            reason = "480: declined",
            "run finished"
        );
        let span = tracing::info_span!(target: "calld::daemon", "placement", spec = "team-b/alert");
        let _guard = span.enter();
        tracing::warn!(target: "calld::daemon", attempt = 2_u64, "retrying");
        tracing::debug!(target: "calld::daemon", "not at info");
    });
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{}", out.text());

    let first = &lines[0];
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["message"], "run finished");
    assert_eq!(first["run"], "r-42");
    assert_eq!(first["spec"], "team-a/standup");
    assert_eq!(first["outcome"], "notEstablished");
    assert_eq!(first["call_id"], "491f0b00-ffff-4bc9-a43e-b226498ec22a");
    assert_eq!(first["request_id"], "b8c2f1d0-0000-4d6a-9a65-0d8b1d2ad0e7");
    assert_eq!(first["reason"], "480: declined");
    assert!(first["timestamp"].is_string());
    assert_eq!(first["target"], "calld::daemon");

    let second = &lines[1];
    assert_eq!(second["level"], "WARN");
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["span"]["name"], "placement");
    assert_eq!(second["span"]["spec"], "team-b/alert");
}

#[test]
fn secrets_never_reach_the_log() {
    const SECRET: &str = "Zx9~very-secret-client-value";
    for format in [LogFormat::Json, LogFormat::Text] {
        let out = Capture::default();
        let (sub, _h) = logging::build(format, "trace", None, false, out.clone()).unwrap();
        let secret = Secret::new(SECRET);
        let reference = SecretRef::Env("CALLD_CLIENT_SECRET".into());
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "calld::daemon", secret = ?secret, "debug form");
            tracing::info!(target: "calld::daemon", secret = %secret, "display form");
            tracing::info!(target: "calld::daemon", "in the message: {secret} {secret:?}");
            tracing::info!(target: "calld::daemon", client_secret = ?reference, "where it comes from");
            let span = tracing::info_span!(target: "calld::daemon", "token", secret = ?secret);
            let _g = span.enter();
            tracing::info!(target: "calld::daemon", "inside a span holding it");
        });
        let text = out.text();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(!text.contains(SECRET), "{format:?} leaked:\n{text}");
        assert!(text.contains("redacted"), "{text}");
        assert!(text.contains("CALLD_CLIENT_SECRET"), "{text}");
    }
}

#[test]
fn set_level_changes_what_is_logged() {
    let out = Capture::default();
    let (sub, handle) = logging::build(LogFormat::Json, "warn", None, false, out.clone()).unwrap();
    assert!(!handle.is_overridden());
    tracing::subscriber::with_default(sub, || {
        tracing::info!(target: "calld::daemon", "one");
        handle.set_level("debug").unwrap();
        tracing::debug!(target: "calld::daemon", "two");
        // A bad level is refused and the current one stays.
        let err = handle.set_level("loud").unwrap_err();
        assert!(format!("{err:#}").contains("unknown level"), "{err:#}");
        tracing::debug!(target: "calld::daemon", "three");
        handle.set_level("error").unwrap();
        tracing::warn!(target: "calld::daemon", "four");
        handle.set_level("warn,calld=trace").unwrap();
        tracing::trace!(target: "calld::daemon", "five");
    });
    let messages: Vec<String> = out
        .json_lines()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(messages, ["two", "three", "five"]);
}

#[test]
fn a_bare_level_keeps_dependencies_at_warn() {
    let out = Capture::default();
    let (sub, _h) = logging::build(LogFormat::Json, "debug", None, false, out.clone()).unwrap();
    tracing::subscriber::with_default(sub, || {
        tracing::debug!(target: "calld::source", "ours");
        tracing::info!(target: "hyper::proto::h1", "theirs, chatty");
        tracing::warn!(target: "hyper::proto::h1", "theirs, a problem");
    });
    let lines = out.json_lines();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["ours", "theirs, a problem"]);
}

#[test]
fn rust_log_overrides_the_configured_level() {
    let out = Capture::default();
    let (sub, handle) =
        logging::build(LogFormat::Json, "trace", Some("warn"), false, out.clone()).unwrap();
    assert!(handle.is_overridden());
    tracing::subscriber::with_default(sub, || {
        tracing::info!(target: "calld::daemon", "hidden");
        // A reload with a config level keeps RUST_LOG in force.
        handle.set_level("trace").unwrap();
        tracing::debug!(target: "calld::daemon", "still hidden");
        tracing::warn!(target: "calld::daemon", "shown");
    });
    let lines = out.json_lines();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["shown"]);
}

#[test]
fn bad_levels_and_rust_log_are_clear_errors() {
    let err = logging::build(LogFormat::Text, "verbose", None, false, Capture::default())
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("log.level") && msg.contains("verbose"),
        "{msg}"
    );

    let err = logging::build(
        LogFormat::Text,
        "info",
        Some("calld=shouting"),
        false,
        Capture::default(),
    )
    .err()
    .unwrap();
    assert!(format!("{err:#}").contains("RUST_LOG"), "{err:#}");
}

#[test]
fn text_is_plain_unless_colour_is_asked_for() {
    for ansi in [false, true] {
        let out = Capture::default();
        let (sub, _h) = logging::build(LogFormat::Text, "info", None, ansi, out.clone()).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "calld::daemon",
                spec = "team-a/standup",
                outcome = "completed",
                "run finished"
            );
        });
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("run finished"), "{text}");
        assert_eq!(text.contains('\x1b'), ansi, "{text:?}");
        if !ansi {
            assert!(text.contains("spec=\"team-a/standup\""), "{text}");
            assert!(text.contains("INFO"), "{text}");
        }
    }
}

#[test]
fn journald_outside_systemd_is_a_clear_error() {
    let socket = std::path::Path::new("/run/systemd/journal/socket");
    let result = logging::build(LogFormat::Journald, "info", None, false, Capture::default());
    if socket.exists() {
        // A journal is there (a systemd machine): the layer connects.
        assert!(result.is_ok(), "{:#}", result.err().unwrap());
    } else {
        let msg = format!("{:#}", result.err().unwrap());
        assert!(
            msg.contains("journald") && msg.contains("text or json"),
            "{msg}"
        );
    }
}
