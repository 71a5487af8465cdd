//! Graph client throughput: creates against an in-process fake Graph on
//! loopback, 16 in flight, connections reused. Prints creates/second,
//! p50/p99 latency and the process's peak RSS; then places 1,000 calls
//! through a 10 % share of 429s and checks that all end placed, none twice.
//!
//! Run: `cargo bench --bench graph_client` (`CALLD_BENCH_SECS=N` to change
//! the 5 s measuring time).

#[path = "../tests/graph_support/mod.rs"]
mod graph_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use calld::config::{ApiVersion, Secret};
use calld::graph::auth::{Credential, TokenSource, TokenSourceConfig};
use calld::graph::{CreateOutcome, GraphClient, GraphClientOptions, RetryPolicy, http_client};
use graph_support::{CLIENT_ID, Fake, SECRET};

const IN_FLIGHT: usize = 16;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn client(fake: &Fake) -> Arc<GraphClient> {
    let opts = GraphClientOptions {
        base_url: fake.base_url(),
        api_version: ApiVersion::V1,
        legacy_app_endpoint: false,
        max_concurrent_requests: IN_FLIGHT,
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy::default(),
    };
    let http = http_client(&opts).expect("http client");
    let tokens = TokenSource::new(
        http.clone(),
        TokenSourceConfig {
            token_url: fake.token_url(),
            client_id: CLIENT_ID.into(),
            scope: format!("{}/.default", fake.base_url()),
            credential: Credential::Secret(Secret::new(SECRET)),
        },
    );
    Arc::new(GraphClient::new(http, Arc::new(tokens), opts))
}

fn body() -> serde_json::Value {
    serde_json::from_str(include_str!(
        "../tests/fixtures/graph/seed/01-p2p-service-hosted-media.request.json"
    ))
    .expect("seed body")
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run() {
    let secs: u64 = std::env::var("CALLD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let fake = Fake::start().await;
    fake.state.lean.store(true, Ordering::SeqCst);
    let c = client(&fake);
    let url = c.create_url();
    let body = Arc::new(body());

    // Warm-up: token, connections.
    for _ in 0..200 {
        let r = c.create_call(&url, &body).await;
        assert!(matches!(r.outcome, CreateOutcome::Placed { .. }), "{:?}", r.outcome);
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let r = c.create_call(&url, &body).await;
                    lat.push(t.elapsed());
                    assert!(matches!(r.outcome, CreateOutcome::Placed { .. }), "{:?}", r.outcome);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.expect("worker"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    println!(
        "graph_client: {} creates in {:.2}s, {} in flight: {:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        IN_FLIGHT,
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    println!(
        "graph_client: token requests {}, peak RSS (VmHWM) {} KiB",
        fake.token_count(),
        peak_rss_kib().map_or("?".into(), |k| k.to_string())
    );

    // 1,000 calls through 10 % of 429s (Retry-After: 0).
    let fake = Fake::start().await;
    fake.state.lean.store(true, Ordering::SeqCst);
    fake.state.throttle_every.store(10, Ordering::SeqCst);
    let c = client(&fake);
    let url = c.create_url();
    let per_worker = 1000 / IN_FLIGHT + 1;
    let mut remaining = 1000usize;
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let n = per_worker.min(remaining);
        remaining -= n;
        let (c, url, body) = (c.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(c.create_call(&url, &body).await);
            }
            out
        }));
    }
    let mut ids = HashSet::new();
    let (mut placed, mut retried_attempts) = (0, 0);
    for t in tasks {
        for r in t.await.expect("task") {
            if let CreateOutcome::Placed { call_id, .. } = &r.outcome {
                placed += 1;
                assert!(ids.insert(call_id.clone()), "call {call_id} placed twice");
            }
            retried_attempts += r.attempts.len() - 1;
        }
    }
    let issued = fake.state.call_seq.load(Ordering::SeqCst);
    let requests = fake.graph_count();
    println!(
        "graph_client: 1000 calls with 10% 429s: {placed} placed, {} distinct call ids, {issued} calls created at the server, {requests} create requests ({retried_attempts} retries after 429)",
        ids.len()
    );
    assert_eq!(placed, 1000, "every call placed");
    assert_eq!(issued, 1000, "the server created each call exactly once");
    assert_eq!(requests, 1000 + retried_attempts, "only the 429s were re-sent");
}
