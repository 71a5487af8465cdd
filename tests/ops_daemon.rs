//! Operating the real daemon: systemd notifications (with the watchdog and
//! a blocked work loop), `/metrics` and `/readyz` after a sandbox run, JSON
//! logs with one outcome line per run, and no secret in any log.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_calld");

const DEMO: &str = r#"
subject: ops test
source: { identity: { application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 } } }
targets: [ { user: { id: 550fae72-d251-43ec-868c-373732c2704f } } ]
"#;

/// Kills the daemon when a test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn sandbox_dir() -> (tempfile::TempDir, u16) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("calls.d")).unwrap();
    std::fs::write(tmp.path().join("calls.d/ops.yaml"), DEMO).unwrap();
    let admin = free_port();
    std::fs::write(
        tmp.path().join("calld.yaml"),
        format!(
            "callsDir: {0}/calls.d\nstateDir: {0}/state\nadmin: {{ listen: 127.0.0.1:{admin} }}\n",
            tmp.path().display()
        ),
    )
    .unwrap();
    (tmp, admin)
}

fn datagrams(sock: &UnixDatagram, for_: Duration) -> Vec<(Instant, String)> {
    let end = Instant::now() + for_;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            out.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    out
}

#[test]
fn systemd_sequence_with_watchdog_reload_and_stop() {
    let (tmp, _admin) = sandbox_dir();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(tmp.path().join("calld.yaml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000") // pings every 200 ms
        .env("CALLD_TEST_HOOKS", "1")
        .env_remove("CALLD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut daemon = Daemon(cmd.spawn().unwrap());

    let mut seen: Vec<(Instant, String)> = Vec::new();
    wait_until(
        "READY, STATUS and watchdog pings",
        Duration::from_secs(30),
        || {
            seen.extend(datagrams(&sock, Duration::from_millis(200)));
            let ready = seen.iter().position(|(_, m)| m.contains("READY=1"));
            let status = seen.iter().position(|(_, m)| m.starts_with("STATUS="));
            let pings = seen
                .iter()
                .filter(|(_, m)| m.contains("WATCHDOG=1"))
                .count();
            (ready.is_some() && status.is_some() && pings >= 3).then_some(())
        },
    );
    let ready_at = seen
        .iter()
        .position(|(_, m)| m.contains("READY=1"))
        .unwrap();
    let status_at = seen
        .iter()
        .position(|(_, m)| m.starts_with("STATUS="))
        .unwrap();
    assert!(
        ready_at < status_at || seen[status_at].1.contains("specs"),
        "{seen:?}"
    );
    let status = &seen[status_at].1;
    assert!(
        status.contains("specs") && status.contains("invalid"),
        "{status}"
    );

    // A blocked work loop stops the pings.
    signal(&daemon.0, "USR1");
    std::thread::sleep(Duration::from_millis(700));
    let _ = datagrams(&sock, Duration::from_millis(10)); // drain what came before the block
    let during = datagrams(&sock, Duration::from_millis(1500));
    assert!(
        !during.iter().any(|(_, m)| m.contains("WATCHDOG=1")),
        "watchdog pings while the loop was blocked: {during:?}"
    );
    let after = datagrams(&sock, Duration::from_millis(2500));
    assert!(
        after.iter().any(|(_, m)| m.contains("WATCHDOG=1")),
        "pings resume: {after:?}"
    );

    // SIGHUP: RELOADING with MONOTONIC_USEC, then READY.
    signal(&daemon.0, "HUP");
    let reload = datagrams(&sock, Duration::from_millis(1500));
    let r = reload
        .iter()
        .position(|(_, m)| m.contains("RELOADING=1"))
        .expect("RELOADING=1");
    assert!(reload[r].1.contains("MONOTONIC_USEC="), "{:?}", reload[r]);
    assert!(
        reload[r..].iter().any(|(_, m)| m.contains("READY=1")),
        "READY after reload: {reload:?}"
    );

    // SIGTERM: STOPPING, exit 0.
    signal(&daemon.0, "TERM");
    let stop = datagrams(&sock, Duration::from_millis(1500));
    assert!(
        stop.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "{stop:?}"
    );
    let code = wait_until("exit", Duration::from_secs(20), || {
        daemon.0.try_wait().unwrap()
    });
    assert_eq!(code.code(), Some(0));
}

#[test]
fn metrics_and_readiness_after_a_sandbox_run() {
    let (tmp, admin) = sandbox_dir();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(tmp.path().join("calld.yaml"))
        .env_remove("CALLD_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _daemon = Daemon(cmd.spawn().unwrap());
    wait_until("/healthz", Duration::from_secs(30), || {
        http_get(admin, "/healthz").filter(|(s, _)| *s == 200)
    });
    wait_until("/readyz 200", Duration::from_secs(30), || {
        http_get(admin, "/readyz").filter(|(s, _)| *s == 200)
    });
    // the demo call is answered after 1 s and ends 5 s later
    let metrics = wait_until(
        "a completed run in /metrics",
        Duration::from_secs(40),
        || {
            let (_, body) = http_get(admin, "/metrics")?;
            body.contains("calld_runs_total{outcome=\"completed\"} 1")
                .then_some(body)
        },
    );
    assert!(
        metrics.contains("calld_graph_requests_total{operation=\"create\",status=\"201\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("calld_spec_files{state=\"valid\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("calld_build_info{"), "{metrics}");
    let (status, specs) = http_get(admin, "/v1/specs").unwrap();
    assert_eq!(status, 200);
    assert!(specs.contains("\"name\":\"ops\""), "{specs}");
    let (status, runs) = http_get(admin, "/v1/runs?spec=ops&limit=5").unwrap();
    assert_eq!(status, 200);
    assert!(runs.contains("\"outcome\":\"completed\""), "{runs}");

    // promtool, when installed (CI installs it in .ci/ops-checks)
    if let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("promtool not installed: skipped `promtool check metrics`");
    }
}

#[test]
fn readyz_stays_503_without_a_token() {
    // Live mode against a token endpoint that does not answer: the process
    // lives (/healthz 200) but is not ready (/readyz 503) — no token.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("calls.d")).unwrap();
    let (admin, cb, dead) = (free_port(), free_port(), free_port());
    std::fs::write(
        tmp.path().join("calld.yaml"),
        format!(
            "callsDir: {dir}/calls.d\nstateDir: {dir}/state\n\
             graph: {{ baseUrl: http://127.0.0.1:{dead}, authorityUrl: http://127.0.0.1:{dead}, tenantId: t, clientId: c, clientSecret: {{ env: CALLD_TEST_SECRET }} }}\n\
             callback: {{ listen: 127.0.0.1:{cb}, publicUrl: http://127.0.0.1:{cb}/api/calls, openIdConfigUrl: http://127.0.0.1:{dead}/oid }}\n\
             admin: {{ listen: 127.0.0.1:{admin} }}\n",
            dir = tmp.path().display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(tmp.path().join("calld.yaml"))
        .env("CALLD_TEST_SECRET", "x")
        .env_remove("CALLD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _daemon = Daemon(cmd.spawn().unwrap());
    wait_until("/healthz", Duration::from_secs(30), || {
        http_get(admin, "/healthz").filter(|(s, _)| *s == 200)
    });
    for _ in 0..5 {
        let (status, _) = http_get(admin, "/readyz").unwrap();
        assert_eq!(status, 503, "ready without a token");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn json_logs_one_outcome_line_per_run_and_no_secret() {
    let secret = "s3cr3t-VALUE-that-must-not-leak";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(async {
        let cfg = calld::emulator::EmulatorConfig::from_yaml(
            "calls: { answerAfter: 100ms, length: 300ms }\n",
        )
        .unwrap();
        calld::emulator::start(
            cfg,
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
        .await
        .unwrap()
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("calls.d")).unwrap();
    for i in 0..3 {
        std::fs::write(
            tmp.path().join(format!("calls.d/c{i}.yaml")),
            DEMO.replace("ops test", &format!("call {i}")),
        )
        .unwrap();
    }
    let cb = free_port();
    std::fs::write(
        tmp.path().join("calld.yaml"),
        format!(
            "callsDir: {dir}/calls.d\nstateDir: {dir}/state\n\
             graph: {{ baseUrl: {emu}, authorityUrl: {emu}, tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47, clientId: calld-test, clientSecret: {{ env: CALLD_TEST_SECRET }} }}\n\
             callback: {{ listen: 127.0.0.1:{cb}, publicUrl: http://127.0.0.1:{cb}/api/calls, openIdConfigUrl: {oid}, issuers: [{iss}] }}\n\
             admin: {{ listen: off }}\nlog: {{ format: json, level: debug }}\n",
            dir = tmp.path().display(),
            emu = emu.base_url(),
            oid = emu.open_id_config_url(),
            iss = emu.issuer(),
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--once", "--timeout", "60s", "--config"])
        .arg(tmp.path().join("calld.yaml"))
        .env("CALLD_TEST_SECRET", secret)
        .env_remove("CALLD_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !stderr.contains(secret) && !stdout.contains(secret),
        "the secret leaked into the logs"
    );
    let mut outcomes = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if let Some(o) = v.get("outcome").and_then(|o| o.as_str()) {
            outcomes.push((
                v["spec"].as_str().unwrap().to_string(),
                o.to_string(),
                v["run"].as_str().unwrap().to_string(),
            ));
        }
    }
    outcomes.sort();
    let specs: Vec<&str> = outcomes.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        specs,
        ["c0", "c1", "c2"],
        "one outcome line per run: {outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|(_, o, _)| o == "completed"),
        "{outcomes:?}"
    );
    assert_eq!(
        stdout.lines().count(),
        3,
        "--once prints one line per run: {stdout}"
    );
    drop(emu);
}
