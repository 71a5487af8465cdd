//! The admin endpoint on a real loopback port: readiness, metrics that
//! parse (and pass `promtool check metrics` when promtool is installed), the
//! JSON API and its errors, graceful shutdown.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use calld::admin::{self, AdminState};
use calld::metrics::Metrics;
use serde_json::{Value, json};

struct Server {
    base: String,
    state: AdminState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

async fn start(state: AdminState) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(admin::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    Server {
        base,
        state,
        stop: Some(stop),
        task,
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A daemon-like state: two specs, runs for one of them.
fn state(metrics: Metrics) -> AdminState {
    AdminState::new(metrics)
        .with_specs(|| {
            json!([
                {"name": "team-a/standup", "state": "valid", "nextRun": "2026-12-01T08:00:00Z"},
                {"name": "broken", "state": "invalid", "errors": ["broken.yaml:3:1: error: unknown key `tagets`"]},
            ])
        })
        .with_runs(|spec, limit| {
            (spec == "team-a/standup").then(|| {
                let runs: Vec<Value> = (0..50)
                    .map(|i| json!({"run": format!("r{i}"), "outcome": "completed"}))
                    .take(limit)
                    .collect();
                json!({"spec": spec, "limit": limit, "runs": runs})
            })
        })
}

#[tokio::test]
async fn health_and_readiness() {
    let server = start(state(Metrics::new())).await;
    let c = http();
    let r = c
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = c
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // Still alive while not ready.
    let r = c
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    server.state.set_ready(true);
    let r = c
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Shutting down: not ready again.
    server.state.set_ready(false);
    let r = c
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    server.shutdown().await;
}

/// Checks the Prometheus text format line by line: every sample belongs to
/// a family with `# TYPE`, label sets are well formed, values are numbers,
/// no series appears twice. Returns (series → value).
fn parse_prometheus_text(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(types.insert(name.into(), kind.into()).is_none(), "{line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (k, v) = pair.split_once('=').expect(line);
                assert!(!k.is_empty() && v.starts_with('"'), "{line}");
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {line}");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate {series}"
        );
    }
    samples
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let metrics = Metrics::with_build_info("0.1.0", "abc1234");
    let server = start(state(metrics.clone())).await;
    metrics.run_finished("completed");
    metrics.run_finished("notEstablished");
    metrics.graph_request("createCall", Some(201), Duration::from_millis(120));
    metrics.graph_request("createCall", Some(503), Duration::from_millis(40));
    metrics.graph_request("keepAlive", None, Duration::from_secs(30));
    metrics.token_refresh(true);
    metrics.notification("accepted");
    metrics.notification("unauthorized");
    metrics.set_spec_files(41, 1);
    metrics.watcher_rescan();
    metrics.placement_lag(Duration::from_millis(250));
    metrics.set_calls_up(2);

    let r = http()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let samples = parse_prometheus_text(&text);
    assert_eq!(samples["calld_runs_total{outcome=\"completed\"}"], 1.0);
    assert_eq!(samples["calld_runs_total{outcome=\"rejected\"}"], 0.0);
    assert_eq!(
        samples["calld_graph_requests_total{operation=\"keepAlive\",status=\"error\"}"],
        1.0
    );
    assert_eq!(
        samples["calld_graph_request_duration_seconds_count{operation=\"createCall\"}"],
        2.0
    );
    assert_eq!(samples["calld_spec_files{state=\"invalid\"}"], 1.0);
    assert_eq!(samples["calld_next_run_lag_seconds"], 0.25);
    assert_eq!(samples["calld_calls_up"], 2.0);
    assert_eq!(
        samples["calld_build_info{version=\"0.1.0\",commit=\"abc1234\"}"],
        1.0
    );
    let names: HashSet<&str> = samples
        .keys()
        .map(|s| s.split('{').next().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("calld_")), "{names:?}");

    // .ci/ops-checks runs promtool on this sample too.
    if let Some(path) = std::env::var_os("CALLD_METRICS_SAMPLE") {
        std::fs::write(path, &text).unwrap();
    }
    promtool_check(&text);

    // OpenMetrics for a scraper that asks for it.
    let r = http()
        .get(format!("{}/metrics", server.base))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = r.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("calld_runs_total{outcome=\"completed\"} 1"));
    server.shutdown().await;
}

/// `promtool check metrics` (lint and parse) when promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CALLD_REQUIRE_PROMTOOL").is_none(),
                "CALLD_REQUIRE_PROMTOOL is set but promtool is not installed"
            );
            println!("note: promtool not installed; `promtool check metrics` skipped");
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- input ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("promtool check metrics: ok");
}

#[tokio::test]
async fn json_api_and_its_errors() {
    let server = start(state(Metrics::new())).await;
    let c = http();
    let get = |path: &str| c.get(format!("{}{path}", server.base)).send();

    let r = get("/v1/specs").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let specs: Value = r.json().await.unwrap();
    assert_eq!(specs[0]["name"], "team-a/standup");
    assert_eq!(specs[1]["state"], "invalid");

    let r = get("/v1/runs?spec=team-a/standup&limit=3").await.unwrap();
    assert_eq!(r.status(), 200);
    let runs: Value = r.json().await.unwrap();
    assert_eq!(runs["spec"], "team-a/standup");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 3);

    // Percent-encoded names are decoded; the default limit applies.
    let runs: Value = get("/v1/runs?spec=team-a%2Fstandup")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["limit"], admin::DEFAULT_RUNS_LIMIT);

    for (path, status, needle) in [
        ("/v1/runs", 400, "spec"),
        ("/v1/runs?limit=3", 400, "spec"),
        ("/v1/runs?spec=", 400, "spec"),
        ("/v1/runs?spec=team-a/standup&limit=0", 400, "limit"),
        ("/v1/runs?spec=team-a/standup&limit=ten", 400, "limit"),
        ("/v1/runs?spec=team-a/standup&limit=1001", 400, "limit"),
        ("/v1/runs?spec=nope", 404, "nope"),
        ("/v2/whatever", 404, "not found"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body: Value = r.json().await.unwrap();
        let msg = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn defaults_answer_before_the_daemon_wires_providers() {
    let server = start(AdminState::new(Metrics::new())).await;
    let c = http();
    let specs: Value = c
        .get(format!("{}/v1/specs", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(specs, json!([]));
    let r = c
        .get(format!("{}/v1/runs?spec=x", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.shutdown().await;
}
