//! Throughput of the create path, printed, never asserted (figures come
//! from runs, not from tests). Run it on purpose:
//!
//! ```sh
//! cargo test --release --test emulator_bench -- --ignored --nocapture
//! ```
//!
//! 16 creates in flight against an in-process emulator with
//! `notifications: false`, as the Graph client's benchmark does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use calld::emulator::{self, EmulatorConfig};
use serde_json::json;
use tokio::net::TcpListener;

const IN_FLIGHT: usize = 16;
const CREATES: usize = 8_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn creates_per_second() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config =
        EmulatorConfig::from_yaml("notifications: false\ncalls: { answerAfter: 1s, length: 5s }")
            .unwrap();
    let em = emulator::start(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    let base = em.base_url();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token: serde_json::Value = client
        .post(format!("{base}/bench/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bench"),
            ("client_secret", "x"),
            ("scope", &format!("{base}/.default")),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = Arc::new(token["access_token"].as_str().unwrap().to_string());
    let body = Arc::new(json!({
        "callbackUri": "https://bot.contoso.com/api/calls?calldRun=bench",
        "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        "source": {"identity": {"application": {"id": "8A34A46B-3D17-4ADC-8DCE-DC4E7D572698"}}},
        "targets": [{"identity": {"user": {"id": "550fae72-d251-43ec-868c-373732c2704f"}}}],
        "requestedModalities": ["audio"],
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"
    }));
    let url = Arc::new(format!("{base}/v1.0/communications/calls"));

    let run = |n: usize| {
        let client = client.clone();
        let (token, body, url) = (token.clone(), body.clone(), url.clone());
        async move {
            let mut latencies = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let r = client
                    .post(url.as_str())
                    .bearer_auth(token.as_str())
                    .json(&*body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let _ = r.bytes().await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }
    };
    // Warm-up: connections, caches.
    let warm: Vec<_> = (0..IN_FLIGHT).map(|_| tokio::spawn(run(20))).collect();
    for w in warm {
        w.await.unwrap();
    }

    let start = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| tokio::spawn(run(CREATES / IN_FLIGHT)))
        .collect();
    let mut all: Vec<Duration> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "emulator creates: {} in {:.2?} = {:.0}/s with {IN_FLIGHT} in flight; latency p50 {:.2?} p99 {:.2?} max {:.2?}",
        all.len(),
        elapsed,
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        all[all.len() - 1],
    );
    assert_eq!(em.received().len(), CREATES + IN_FLIGHT * 20);
}
