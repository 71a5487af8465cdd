//! Figures for "a file is read when complete" (no assertion on time):
//! a rename into the calls directory, and a file written in place and
//! closed, both with the default `daemon.settle` (1 s) and with `0s`
//! (which holds nothing, as calld did before). Run:
//!
//! ```sh
//! cargo test --release --test identity_bench -- --ignored --nocapture --test-threads 1
//! ```

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use jiff::Timestamp;

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        ms.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        ms[ms.len() - 1]
    );
}

fn latencies(settle: &str, in_place: bool, n: usize) -> Vec<f64> {
    let emu = Emu::start("calls: { answerAfter: 10ms, length: 20ms }\n");
    let env = Env::with_config(
        &emu,
        &format!("daemon: {{ debounce: 20ms, settle: {settle} }}\n"),
    );
    let _d = env.start();
    let mut lat = Vec::new();
    for i in 0..n {
        let text = call_spec(&format!("Drop {i}"));
        let target = env.calls.join(format!("d{i:03}.yaml"));
        let before = if in_place {
            let before = Timestamp::now();
            std::fs::write(&target, text).unwrap();
            before
        } else {
            let staging = env.dir.path().join("staging").join("d.yaml");
            std::fs::write(&staging, text).unwrap();
            let before = Timestamp::now();
            std::fs::rename(&staging, &target).unwrap();
            before
        };
        let create = wait_until("the create", || {
            let c = emu.creates();
            (c.len() > i).then(|| c[i].clone())
        });
        lat.push(received_at(&create).duration_since(before).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(5));
    }
    lat
}

#[test]
#[ignore]
fn read_when_complete_latency() {
    for settle in ["1s", "0s"] {
        summary(
            &format!("rename-in (settle {settle})"),
            latencies(settle, false, 100),
        );
        summary(
            &format!("write in place + close (settle {settle})"),
            latencies(settle, true, 100),
        );
    }
}
