//! Source benchmark: `cargo bench --bench source` (add `-- --quick` for
//! 10,000 files only). Prints, it does not assert timings.
//!
//! - full scan of 10,000 and 100,000 small spec files: cold (fresh scanner,
//!   every file read and hashed; the OS page cache is warm) and warm (nothing
//!   changed: stat only, no file read);
//! - latency from `rename` into the calls directory to the published
//!   snapshot that contains the file, over 200 drops (p50 / p99 / max).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use calld::source::scan::RACY_WINDOW;
use calld::source::{Scanner, SourceOptions, watch};

const BODY: &str = "name: bench\nto: [alice@contoso.com]\nschedule:\n  cron: \"0 9 * * 1-5\"\n  timezone: Europe/Paris\nmedia: service\n";

fn populate(dir: &Path, n: usize) {
    for i in 0..n {
        let sub = dir.join(format!("team-{:04}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&sub).unwrap();
        }
        fs::write(sub.join(format!("spec-{i:06}.yaml")), BODY).unwrap();
    }
}

/// On-CPU time of the calling thread (Linux), to compare runs on a machine
/// shared with other work, where wall time mostly measures the load.
fn thread_cpu() -> Option<Duration> {
    let text = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let before = thread_cpu();
    let out = f();
    let cpu = match (before, thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    (out, cpu)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn scans(n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = Instant::now();
    populate(dir, n);
    let created = t.elapsed();
    // let the files settle past the racy window, so warm scans may trust stat
    std::thread::sleep(RACY_WINDOW + Duration::from_millis(200));

    let runs = if n > 50_000 { 3 } else { 5 };
    let (mut cold, mut cold_cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut sc = Scanner::new(dir);
        let (s, cpu) = timed(|| sc.scan());
        assert_eq!(s.files.len(), n);
        assert_eq!(s.stats.files_read, n);
        cold.push(s.stats.elapsed);
        cold_cpu.push(cpu);
    }
    let mut sc = Scanner::new(dir);
    sc.scan();
    let (mut warm, mut warm_cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (s, cpu) = timed(|| sc.scan());
        assert_eq!(s.stats.files_read, 0, "a warm rescan must not read files");
        assert!(!s.changed);
        warm.push(s.stats.elapsed);
        warm_cpu.push(cpu);
    }
    println!(
        "scan {n:>7} files: cold {:>9.1?} (cpu {:>9.1?})  warm {:>9.1?} (cpu {:>9.1?})  median of {runs}; files read when warm: 0",
        median(cold),
        median(cold_cpu),
        median(warm),
        median(warm_cpu),
    );
    let _ = created;
}

fn latency(debounce: Duration, existing: usize, drops: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("calls.d");
    let staging = tmp.path().join("staging");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(&staging).unwrap();
    populate(&dir, existing);
    std::thread::sleep(RACY_WINDOW + Duration::from_millis(200));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let opts = SourceOptions {
        debounce,
        ..SourceOptions::default()
    };
    let (guard, mut rx) = watch(dir.clone(), opts).unwrap();
    let mut samples = Vec::with_capacity(drops);
    for i in 0..drops {
        let name = format!("drop-{i:04}.yaml");
        fs::write(staging.join(&name), BODY).unwrap();
        rx.borrow_and_update();
        let t = Instant::now();
        fs::rename(staging.join(&name), dir.join(&name)).unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async {
                while !rx.borrow_and_update().files.contains_key(&name) {
                    rx.changed().await.unwrap();
                }
            })
            .await
            .expect("snapshot within 30 s")
        });
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "rename → snapshot, debounce {debounce:?}, {existing} files present, {drops} drops: p50 {:.1?}  p99 {:.1?}  max {:.1?}  ({})",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
        if guard.is_polling() {
            "polling"
        } else {
            "inotify"
        },
    );
}

fn main() {
    if let Ok(load) = fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }
    let quick = std::env::args().any(|a| a == "--quick");
    scans(10_000);
    if !quick {
        scans(100_000);
    }
    latency(Duration::from_millis(50), 100, 200);
    latency(Duration::from_millis(50), 10_000, 200);
    latency(Duration::from_millis(10), 100, 200);
}
