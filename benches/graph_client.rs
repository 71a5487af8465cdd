//! Graph client throughput: creates against the in-process emulator
//! (notifications off) and against the tests' scripted fake Graph, on
//! loopback, 16 in flight, connections reused. Prints creates/second,
//! p50/p99 latency and the process's peak RSS; then places 1,000 calls
//! through a 10 % share of 429s (at each server) and checks that all end
//! placed, none twice (counted at the server).
//!
//! Run: `cargo bench --bench graph_client` (`CALLD_BENCH_SECS=N` to change
//! the 5 s measuring time per server).

#[path = "../tests/graph_support/mod.rs"]
mod graph_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use calld::config::{ApiVersion, Secret};
use calld::emulator::{self, EmulatorConfig};
use calld::graph::auth::{Credential, TokenSource, TokenSourceConfig};
use calld::graph::{
    CreateOutcome, CreateResult, GraphClient, GraphClientOptions, RetryPolicy, http_client,
};
use graph_support::{CLIENT_ID, Fake, SECRET, TENANT};

const IN_FLIGHT: usize = 16;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

/// A client for a server that is both Azure AD and Graph at `base`.
fn client(base: &str) -> Arc<GraphClient> {
    let opts = GraphClientOptions {
        base_url: base.to_string(),
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
            token_url: format!("{base}/{TENANT}/oauth2/v2.0/token"),
            client_id: CLIENT_ID.into(),
            scope: format!("{base}/.default"),
            credential: Credential::Secret(Secret::new(SECRET)),
        },
    );
    Arc::new(GraphClient::new(http, Arc::new(tokens), opts))
}

fn body() -> Arc<serde_json::Value> {
    Arc::new(serde_json::json!({
        "@odata.type": "#microsoft.graph.call",
        "callbackUri": "https://bot.contoso.com/api/calls?calldRun=bench",
        "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        "source": {"identity": {"application": {"id": "8A34A46B-3D17-4ADC-8DCE-DC4E7D572698"}}},
        "targets": [{"identity": {"user": {"id": "550fae72-d251-43ec-868c-373732c2704f"}}}],
        "requestedModalities": ["audio"],
        "tenantId": TENANT
    }))
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here; 100 Hz.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn placed(r: &CreateResult) -> bool {
    matches!(r.outcome, CreateOutcome::Placed { .. })
}

/// 16 workers creating calls for `secs`; prints the figures.
async fn measure(label: &str, c: &Arc<GraphClient>, secs: u64) {
    let url = c.create_url();
    let body = body();
    // Warm-up: token, connections.
    for _ in 0..200 {
        let r = c.create_call(&url, &body).await;
        assert!(placed(&r), "{label}: {:?}", r.outcome);
    }
    let start = Instant::now();
    let cpu_start = cpu_time();
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
                    assert!(placed(&r), "{:?}", r.outcome);
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
    let cpu = cpu_time().saturating_sub(cpu_start);
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label}: {} creates in {:.2}s, {IN_FLIGHT} in flight: {:.0} creates/s, \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         CPU (client + server) {:.0} µs per create; token requests {}; peak RSS {} KiB; \
         load average {}",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.90)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        cpu.as_secs_f64() * 1e6 / lat.len().max(1) as f64,
        c.tokens().fetch_count(),
        peak_rss_kib().map_or("?".into(), |k| k.to_string()),
        load_average()
    );
}

/// 1,000 calls, 16 at a time, against a server answering 10 % of creates
/// with 429. Returns (placed, distinct call ids, attempts after a 429).
async fn thousand(c: &Arc<GraphClient>) -> (usize, usize, usize) {
    let url = c.create_url();
    let body = body();
    let mut remaining = 1000usize;
    let mut tasks = Vec::new();
    for i in 0..IN_FLIGHT {
        let n = remaining / (IN_FLIGHT - i);
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
    let (mut n_placed, mut retries) = (0, 0);
    for t in tasks {
        for r in t.await.expect("task") {
            if let CreateOutcome::Placed { call_id, .. } = &r.outcome {
                n_placed += 1;
                assert!(ids.insert(call_id.clone()), "call {call_id} placed twice");
            }
            retries += r.attempts.len() - 1;
        }
    }
    (n_placed, ids.len(), retries)
}

async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: u64 = std::env::var("CALLD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);

    // The scripted fake of the tests (no body checks): first, so that the
    // peak RSS printed is the client's and the fake's alone.
    let fake = Fake::start().await;
    fake.state.lean.store(true, Ordering::SeqCst);
    measure("fake", &client(&fake.base_url()), secs).await;

    // The real emulator, notifications off.
    let config = EmulatorConfig::from_yaml("notifications: false\nmaxRecorded: 1000").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let em = emulator::start(config, listener).await.expect("emulator");
    measure("emulator", &client(&em.base_url()), secs).await;
    drop(em);

    // 1,000 calls through 10 % of 429s, at the emulator...
    let config = EmulatorConfig::from_yaml(
        "notifications: false\nmaxRecorded: 10000\nfaults: { seed: 7, throttle: 0.1, retryAfter: 1ms }",
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let em = emulator::start(config, listener).await.expect("emulator");
    let (n_placed, distinct, retries) = thousand(&client(&em.base_url())).await;
    let received = em.received();
    let created = received.iter().filter(|r| r.status == Some(201)).count();
    let throttled = received.iter().filter(|r| r.status == Some(429)).count();
    println!(
        "emulator, 1000 calls with 10% 429s: {n_placed} placed, {distinct} distinct call ids; \
         at the server: {} create requests, {created} answered 201, {throttled} answered 429; \
         {retries} retries",
        received.len()
    );
    assert_eq!(n_placed, 1000, "every call placed");
    assert_eq!(created, 1000, "the emulator created each call exactly once");
    assert_eq!(received.len(), 1000 + retries, "only the 429s were re-sent");
    assert_eq!(throttled, retries);

    // ...and at the fake (every 10th create request answered 429).
    let fake = Fake::start().await;
    fake.state.lean.store(true, Ordering::SeqCst);
    fake.state.throttle_every.store(10, Ordering::SeqCst);
    let (n_placed, distinct, retries) = thousand(&client(&fake.base_url())).await;
    let issued = fake.state.call_seq.load(Ordering::SeqCst);
    let requests = fake.graph_count();
    println!(
        "fake, 1000 calls with 10% 429s: {n_placed} placed, {distinct} distinct call ids; \
         at the server: {requests} create requests, {issued} calls created; {retries} retries"
    );
    assert_eq!(n_placed, 1000, "every call placed");
    assert_eq!(issued, 1000, "the server created each call exactly once");
    assert_eq!(requests, 1000 + retries, "only the 429s were re-sent");
}
