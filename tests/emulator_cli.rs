//! `calld emulator`: the binary starts, serves the OpenID configuration,
//! and stops on SIGTERM; a bad configuration is a clear error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_calld");

/// Reads stderr lines until the base URL appears; forwards the rest.
fn base_url_from(stderr: std::process::ChildStderr) -> (String, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the emulator logs its URL");
        if let Some(at) = line.find("http://127.0.0.1:") {
            let rest = &line[at..];
            let end = rest
                .char_indices()
                .skip("http://127.0.0.1:".len())
                .find(|(_, c)| !c.is_ascii_digit())
                .map(|(i, _)| i)
                .unwrap_or(rest.len());
            return (rest[..end].to_string(), rx);
        }
    }
}

#[test]
fn serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("emulator.yaml");
    std::fs::write(&config, "notifications: { issuer: https://cli.test }\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["emulator", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (base, _lines) = base_url_from(child.stderr.take().unwrap());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config: serde_json::Value = runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{base}/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(config["issuer"], "https://cli.test");
    assert_eq!(config["jwks_uri"], format!("{base}/v1/keys"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "stopped cleanly on SIGTERM");
}

#[test]
fn a_bad_configuration_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("emulator.yaml");
    std::fs::write(&config, "faults: { throttel: 0.5 }\n").unwrap();
    let out = Command::new(BIN)
        .args(["emulator", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("throttel"), "{stderr}");
    assert!(stderr.contains("emulator.yaml"), "{stderr}");
}
