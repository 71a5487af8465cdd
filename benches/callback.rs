//! Notification listener throughput on loopback.
//!
//! `cargo bench --bench callback` (seconds per run: `CALLD_BENCH_SECS`,
//! default 5; requests in flight: `CALLD_BENCH_INFLIGHT`, default 32).
//!
//! 1. End to end: keep-alive HTTP/1.1 clients POST signed notifications
//!    (RS256, validated against a JWKS served on loopback) to the listener,
//!    several requests in flight, while a task drains the daemon's queue as
//!    the daemon would. Prints notifications/s and p50/p99 time to 202.
//! 2. Cold token checks: the full signature + claims check
//!    (`calld::callback::token::verify`) of one token, without the
//!    listener's verified-token memory: the cost of a token seen first.

#[path = "../tests/callback_support/mod.rs"]
mod callback_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use callback_support::*;
use calld::callback::token::{KeySet, TokenRules, verify};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Name of the listener's runtime threads, to read their CPU time.
const SERVER_THREAD: &str = "cb-listener";

fn main() {
    let secs = env_u64("CALLD_BENCH_SECS", 5);
    let inflight = env_u64("CALLD_BENCH_INFLIGHT", 32) as usize;
    // The listener and the clients run on separate runtimes (both may use
    // both cores), so the listener's own CPU time can be read apart from
    // the clients': on a shared machine the rate depends on the load, the
    // CPU time per notification much less.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cb-client")
        .enable_all()
        .build()
        .unwrap();
    let h = server_rt.block_on(Harness::start());
    client_rt.block_on(end_to_end(
        h,
        &server_rt,
        Duration::from_secs(secs),
        inflight,
    ));
    cold_verify(Duration::from_secs(secs.min(3)));
}

/// CPU time (user + system) of this process's threads named `name`.
fn threads_cpu(name: &str) -> Duration {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for t in tasks.flatten() {
        if let Some((comm, t)) = stat_cpu_ticks(&t.path().join("stat"))
            && comm.starts_with(name)
        {
            ticks += t;
        }
    }
    Duration::from_millis(ticks * 10) // USER_HZ = 100
}

/// CPU time of the calling thread.
fn this_thread_cpu() -> Duration {
    let ticks =
        stat_cpu_ticks(std::path::Path::new("/proc/thread-self/stat")).map_or(0, |(_, t)| t);
    Duration::from_millis(ticks * 10)
}

/// (comm, utime + stime in ticks) of a /proc .../stat file.
fn stat_cpu_ticks(path: &std::path::Path) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    // after "(comm)": state is field 3, utime 14, stime 15
    let f: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((stat[open + 1..close].to_string(), get(14) + get(15)))
}

async fn end_to_end(
    mut h: Harness,
    server_rt: &tokio::runtime::Runtime,
    run_for: Duration,
    inflight: usize,
) {
    let mut rx = std::mem::replace(&mut h.rx, tokio::sync::mpsc::channel(1).1);
    let drain = tokio::spawn(async move {
        let mut n = 0u64;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    // Graph sends one token with many notifications: a few tokens, reused.
    let tokens: Arc<Vec<String>> = Arc::new((0..4).map(|_| good_token()).collect());
    let url = h.url("/api/calls?calldRun=bench-run");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(inflight)
        .http1_only()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));

    // warm up: connections, keys, verified tokens
    for t in tokens.iter() {
        let r = client
            .post(&url)
            .bearer_auth(t)
            .body(notification("warm", "established").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    }

    let cpu_before = threads_cpu(SERVER_THREAD);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..inflight {
        let client = client.clone();
        let url = url.clone();
        let tokens = tokens.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut refused = 0u64;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = notification(&format!("call-{w}-{i}"), "established").to_string();
                let t0 = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(&tokens[i % tokens.len()])
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                        lat.push(t0.elapsed());
                    }
                    _ => refused += 1,
                }
                i += 1;
            }
            (lat, refused)
        }));
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut refused = 0;
    for w in workers {
        let (l, r) = w.await.unwrap();
        lat.extend(l);
        refused += r;
    }
    let elapsed = started.elapsed();
    let server_cpu = threads_cpu(SERVER_THREAD).saturating_sub(cpu_before);
    lat.sort();
    drop(client);
    server_rt.spawn(h.shutdown()).await.unwrap().unwrap();
    let queued = drain.await.unwrap();

    println!(
        "callback end-to-end: {} notifications in {:.2} s = {:.0} notifications/s \
         ({inflight} in flight, keep-alive); time to 202: p50 {:.2} ms, p99 {:.2} ms; \
         not 202: {refused}; queued: {queued}",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
    let per = server_cpu.as_secs_f64() / lat.len().max(1) as f64;
    println!(
        "callback listener CPU: {:.2} s over the run = {:.0} µs per notification \
         (≈ {:.0} notifications/s per core, clients excluded); load average now: {}",
        server_cpu.as_secs_f64(),
        per * 1e6,
        if per > 0.0 { 1.0 / per } else { 0.0 },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );
}

fn cold_verify(run_for: Duration) {
    let keys = KeySet::from_jwks(
        serde_json::json!({ "keys": [key("a").jwk()] })
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let rules = TokenRules {
        audience: CLIENT_ID.into(),
        issuers: vec![ISSUER.into()],
        leeway_secs: 60,
    };
    let token = good_token();
    let now = now();
    let cpu_before = this_thread_cpu();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < run_for {
        verify(&token, &keys, &rules, now).unwrap();
        n += 1;
    }
    let per = started.elapsed() / n as u32;
    let cpu_per = this_thread_cpu().saturating_sub(cpu_before).as_secs_f64() / n as f64;
    println!(
        "callback cold token check (RS256, 2048-bit, one thread): {:.1} µs each = {:.0}/s; \
         CPU {:.1} µs each",
        per.as_secs_f64() * 1e6,
        1.0 / per.as_secs_f64(),
        cpu_per * 1e6,
    );
}
