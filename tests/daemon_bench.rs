//! Daemon benchmarks: ignored tests that print figures (no assertion on
//! time). Run them on a release build:
//!
//! ```sh
//! cargo test --release --test daemon_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `drop_latency`: rename a spec into the watched directory, time until
//!   the emulator receives the create (its own receive time); 200 drops.
//! - `firing_accuracy`: 200 `at` runs spread over 20 s; |receive time −
//!   scheduled time|.
//! - `scale_100k`: 100,000 cron specs; time to the first complete load and
//!   to every run planned, RSS, one changed file picked up, idle CPU.
//!   `CALLD_BENCH_SPECS` changes the count.
//! - `burst_300`: 300 `at` specs due the same second, with N = 0 and
//!   10,000 other cron specs (`CALLD_BENCH_OTHERS=0,10000`): time from the
//!   due second to the last create at the emulator, none early; and the
//!   time from start to every cron run planned.

mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::*;
use jiff::{SignedDuration, Timestamp};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

fn ms_between(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64() * 1000.0
}

fn drops(debounce: &str) {
    let emu = Emu::start("calls: { answerAfter: 10ms, length: 20ms }\n");
    let env = Env::with_config(&emu, &format!("daemon: {{ debounce: {debounce} }}\n"));
    let _d = env.start();
    let mut lat = Vec::new();
    for i in 0..200 {
        let staging = env.dir.path().join("staging").join("d.yaml");
        std::fs::write(&staging, call_spec(&format!("Drop {i}"))).unwrap();
        let before = Timestamp::now();
        std::fs::rename(&staging, env.calls.join(format!("d{i:03}.yaml"))).unwrap();
        let create = wait_until("the create", || {
            let c = emu.creates();
            (c.len() > i).then(|| c[i].clone())
        });
        assert_eq!(create.body["subject"], format!("Drop {i}"));
        lat.push(ms_between(before, received_at(&create)));
    }
    summary(&format!("drop latency (debounce {debounce})"), lat);
}

#[test]
#[ignore]
fn drop_latency() {
    drops("50ms"); // the default
    drops("20ms");
    drops("5ms");
}

#[test]
#[ignore]
fn firing_accuracy() {
    let emu = Emu::start("calls: { answerAfter: 10ms, length: 20ms }\n");
    let env = Env::new(&emu);
    let start = Timestamp::now()
        .checked_add(SignedDuration::from_secs(5))
        .unwrap();
    let start = Timestamp::from_millisecond(start.as_millisecond()).unwrap();
    let mut times = Vec::new();
    for i in 0..200i64 {
        let at = start
            .checked_add(SignedDuration::from_millis(i * 100 + (i * 37) % 100))
            .unwrap();
        times.push(at);
        env.drop_spec(
            &format!("at{i:03}.yaml"),
            &format!(
                "{}schedule: {{ at: \"{at}\" }}\n",
                call_spec(&format!("At {i}"))
            ),
        );
    }
    let _d = env.start();
    let creates = wait_until("200 creates", || {
        let c = emu.creates();
        (c.len() >= 200).then_some(c)
    });
    let mut err = Vec::new();
    let mut early = 0;
    for c in &creates {
        let i: usize = c.body["subject"].as_str().unwrap()[3..].parse().unwrap();
        let d = ms_between(times[i], received_at(c));
        if d < 0.0 {
            early += 1;
        }
        err.push(d.abs());
    }
    summary("firing accuracy |receive - at|", err);
    println!("fired before their time: {early}");
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // fields after the command name, which is in parentheses
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at field 3
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok());
    out.unwrap_or(100.0)
}

#[test]
#[ignore]
fn scale_100k() {
    let n: usize = std::env::var("CALLD_BENCH_SPECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let emu = Emu::start("calls: { answerAfter: 10ms, length: 20ms }\n");
    let admin = free_port();
    let env = Env::with_config(&emu, &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"));
    // spread over the day, but none in the next two hours (idle means idle)
    let hour_now = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).hour() as usize;
    let t = Instant::now();
    for i in 0..n {
        let m = i % 60;
        let h = (hour_now + 2 + (i / 60) % 20) % 24;
        let dir = format!("team-{:03}", i % 500);
        env.drop_spec(
            &format!("{dir}/s{i:06}.yaml"),
            &format!(
                "{}schedule: {{ cron: \"{m} {h} * * *\" }}\n",
                call_spec(&format!("Spec {i}"))
            ),
        );
    }
    println!("wrote {n} specs in {:?}", t.elapsed());

    let started = Instant::now();
    let trace = std::env::var_os("CALLD_BENCH_LOG").is_some();
    let mut d = if trace {
        env.start_with(&[], &[("RUST_LOG", "calld=debug,warn")])
    } else {
        env.start_with(&[], &[])
    };
    wait_until_long("the first load", Duration::from_secs(3600), || {
        d.log_text()
            .contains("calls directory loaded")
            .then_some(())
    });
    let loaded = started.elapsed();
    println!(
        "first complete load logged: {loaded:?}, RSS {} MB",
        rss_kb(d.pid()) / 1024
    );
    wait_until_long("/readyz", Duration::from_secs(3600), || {
        http_get(admin, "/readyz").filter(|(status, _)| *status == 200)
    });
    println!(
        "ready (/readyz 200): {:?} after start, RSS {} MB",
        started.elapsed(),
        rss_kb(d.pid()) / 1024
    );
    let ledger_path = env.state.join(calld::ledger::LEDGER_FILE);
    let planned = wait_until_long("every run planned", Duration::from_secs(3600), || {
        let l = calld::ledger::SqliteLedger::open_read_only(&ledger_path).ok()?;
        use calld::ledger::Ledger;
        let open = l.open_runs().ok()?;
        (open.len() >= n).then_some(open.len())
    });
    println!(
        "every run planned ({planned} runs in the ledger): {:?} after start, RSS {} MB",
        started.elapsed(),
        rss_kb(d.pid()) / 1024
    );
    if trace {
        // what start-up spent its time on (the first plan runs after /readyz)
        let log = d.log_text();
        for line in log.lines().filter(|l| {
            ["calls directory loaded", "identity step", "full=true"]
                .iter()
                .any(|w| l.contains(w))
        }) {
            println!("  {line}");
        }
    }

    // One changed file: a new subject (a new revision of a cron spec keeps
    // its slot) is visible as the run's revision... measure the simplest
    // observable act: the spec's cron moved, so its planned run is canceled.
    let rel = "team-007/s000007.yaml";
    let name = "team-007/s000007";
    let before = env.history(name);
    assert_eq!(before.len(), 1);
    let log_before = d.log_text().len();
    let t = Instant::now();
    env.drop_spec(
        rel,
        &format!(
            "{}schedule: {{ cron: \"59 {} * * *\" }}\n",
            call_spec("Spec 7"),
            (hour_now + 23) % 24
        ),
    );
    let ledger = calld::ledger::SqliteLedger::open_read_only(&ledger_path).unwrap();
    loop {
        use calld::ledger::Ledger;
        let h = ledger.history(name, 10).unwrap();
        if h.len() >= 2 {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            panic!("the change was not picked up");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "one changed file acted on (run canceled, new run planned): {:?}",
        t.elapsed()
    );
    println!("RSS after the change: {} MB", rss_kb(d.pid()) / 1024);
    if trace {
        std::thread::sleep(Duration::from_millis(500));
        let log = d.log_text();
        for line in log[log_before.min(log.len())..].lines().filter(|l| {
            ["rescan", "snapshot loaded", "identity step", "decision"]
                .iter()
                .any(|w| l.contains(w))
        }) {
            println!("  {line}");
        }
    }

    // drop → create: a new spec without a schedule is placed at once
    let mut lat = Vec::new();
    for i in 0..20 {
        let staging = env.dir.path().join("staging").join("new.yaml");
        std::fs::write(&staging, call_spec(&format!("New {i}"))).unwrap();
        let log_at = if trace { d.log_text().len() } else { 0 };
        let before = Timestamp::now();
        std::fs::rename(&staging, env.calls.join(format!("new-{i:02}.yaml"))).unwrap();
        let create = wait_until_long("the create", Duration::from_secs(600), || {
            let c = emu.creates();
            (c.len() > i).then(|| c[i].clone())
        });
        let ms = ms_between(before, received_at(&create));
        if trace && ms > 100.0 {
            // a slow one: what the daemon logged in between
            println!("  slow drop → create ({ms:.1} ms, renamed at {before}):");
            let log = d.log_text();
            for line in log[log_at.min(log.len())..].lines().take(30) {
                println!("    {}", &line[..line.len().min(220)]);
            }
        }
        lat.push(ms);
        std::thread::sleep(Duration::from_millis(200));
    }
    summary(&format!("N = {n}: drop → create"), lat);
    if trace {
        let log = d.log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("decision") || l.contains("snapshot loaded"))
            .collect();
        for line in &lines[lines.len().saturating_sub(12)..] {
            println!("{line}");
        }
    }
    let calls_done = emu.creates().len();

    // idle CPU over 60 s
    std::thread::sleep(Duration::from_secs(2));
    let ticks = clock_ticks_per_second();
    let c0 = cpu_ticks(d.pid());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let c1 = cpu_ticks(d.pid());
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "idle CPU over {secs:.0} s: {:.2} % of a core",
        (c1 - c0) as f64 / ticks / secs * 100.0
    );
    println!("RSS idle: {} MB", rss_kb(d.pid()) / 1024);
    // CALLD_BENCH_IDLE_SECS=300: also the average over a longer window (a
    // resync of 100,000 files is spaced by its cost: a 60 s window holds
    // one or none)
    if let Some(long) = std::env::var("CALLD_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        let c0 = cpu_ticks(d.pid());
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(long));
        let c1 = cpu_ticks(d.pid());
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "idle CPU over the next {secs:.0} s: {:.2} % of a core",
            (c1 - c0) as f64 / ticks / secs * 100.0
        );
    }
    if trace {
        // what the daemon did while idle (the resync's scans)
        let log = d.log_text();
        for line in log
            .lines()
            .rev()
            .take(2000)
            .filter(|l| l.contains("rescan") && l.contains("changed=false"))
            .take(6)
        {
            println!("  {line}");
        }
    }
    assert!(d.running());
    assert_eq!(emu.creates().len(), calls_done, "nothing else was due");
}

fn wait_until_long<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 300 `at` specs due the same second, with `others` cron specs (none due
/// during the run) in the directory: the time from the due second to the
/// last create at the emulator, and how many arrived early (must be none).
fn burst(others: usize) {
    const BURST: usize = 300;
    let emu = Emu::start("calls: { answerAfter: 10ms, length: 20ms }\n");
    // CALLD_BENCH_LOG=1: the daemon logs at debug level and the decisions
    // made during the burst are printed (CALLD_BENCH_LOG=<file>: and the
    // whole log is written to that file)
    let trace = std::env::var_os("CALLD_BENCH_LOG").is_some();
    let env = Env::new(&emu);
    let hour_now = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).hour() as usize;
    for i in 0..others {
        let m = i % 60;
        let h = (hour_now + 2 + (i / 60) % 20) % 24;
        env.drop_spec(
            &format!("team-{:03}/s{i:06}.yaml", i % 500),
            &format!(
                "{}schedule: {{ cron: \"{m} {h} * * *\" }}\n",
                call_spec(&format!("Spec {i}"))
            ),
        );
    }
    let ledger_path = env.state.join(calld::ledger::LEDGER_FILE);
    let open_runs = || {
        use calld::ledger::Ledger;
        calld::ledger::SqliteLedger::open_read_only(&ledger_path)
            .ok()
            .and_then(|l| l.open_runs().ok())
            .map_or(0, |r| r.len())
    };
    let started = Instant::now();
    let d = if trace {
        env.start_with(&[], &[("RUST_LOG", "calld=debug,warn")])
    } else {
        env.start()
    };
    wait_until_long("the cron runs planned", Duration::from_secs(3600), || {
        (open_runs() >= others).then_some(())
    });
    println!(
        "N = {others}: start to every cron run planned: {:?}",
        started.elapsed()
    );
    // due on a whole second, far enough ahead for the 300 files to be loaded
    let due = Timestamp::now()
        .checked_add(SignedDuration::from_secs(8))
        .unwrap();
    let due = Timestamp::from_second(due.as_second()).unwrap();
    for i in 0..BURST {
        env.drop_spec(
            &format!("burst/b{i:03}.yaml"),
            &format!(
                "{}schedule: {{ at: \"{due}\" }}\n",
                call_spec(&format!("Burst {i}"))
            ),
        );
    }
    wait_until_long("the burst planned", Duration::from_secs(600), || {
        (open_runs() >= others + BURST).then_some(())
    });
    let planned_before = Timestamp::now() < due;
    let creates = wait_until_long("300 creates", Duration::from_secs(600), || {
        let c = emu.creates();
        (c.len() >= BURST).then_some(c)
    });
    let mut after: Vec<f64> = creates
        .iter()
        .map(|c| ms_between(due, received_at(c)))
        .collect();
    after.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let early = after.iter().filter(|d| **d < 0.0).count();
    println!(
        "300 `at` specs due the same second, N = {others} cron specs: first create +{:.1} ms, p50 +{:.1} ms, last create +{:.1} ms after due; early: {early}{}",
        after[0],
        percentile(&after, 0.5),
        after[after.len() - 1],
        if planned_before {
            ""
        } else {
            " (WARNING: not all planned before due)"
        }
    );
    if trace {
        let log = d.log_text();
        // CALLD_BENCH_LOG=<file>: the whole daemon log goes there too
        if let Some(path) = std::env::var_os("CALLD_BENCH_LOG").filter(|p| p.len() > 1) {
            std::fs::write(&path, &log).unwrap();
        }
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("decision")).collect();
        for line in &lines[lines.len().saturating_sub(40)..] {
            println!("{line}");
        }
    }
}

#[test]
#[ignore]
fn burst_300() {
    let counts: Vec<usize> = std::env::var("CALLD_BENCH_OTHERS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 10_000]);
    for n in counts {
        burst(n);
    }
}
