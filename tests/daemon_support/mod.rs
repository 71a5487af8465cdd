//! End-to-end harness for the daemon: the real `calld` binary in live mode
//! against a real Graph emulator on loopback (held in the test process, so a
//! test reads what it received and scripts its faults), in a temporary
//! directory of its own.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use calld::emulator::{self, EmulatorConfig, EmulatorHandle, ReceivedRequest, ScriptedFault};
use serde_json::Value as Json;

pub const BIN: &str = env!("CARGO_BIN_EXE_calld");
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "calld-test";
pub const SECRET_ENV: &str = "CALLD_TEST_SECRET";
/// The source identity every spec gets from the configuration's defaults.
pub const APP_ID: &str = "8a34a46b-3d17-4adc-8dce-dc4e7d572698";

/// Short calls: answered after 100 ms, ended 300 ms later.
pub const FAST_CALLS: &str = "calls: { answerAfter: 100ms, length: 300ms }\n";

/// Generous: the machine is shared and slow; nothing is asserted on time.
pub const WAIT: Duration = Duration::from_secs(90);

/// A Graph emulator on 127.0.0.1:0, served by a runtime of its own.
pub struct Emu {
    handle: Option<EmulatorHandle>,
    rt: tokio::runtime::Runtime,
}

impl Emu {
    pub fn start(yaml: &str) -> Emu {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = EmulatorConfig::from_yaml(yaml).expect("emulator configuration");
        let handle = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            emulator::start(config, listener).await.expect("emulator")
        });
        Emu {
            handle: Some(handle),
            rt,
        }
    }

    fn h(&self) -> &EmulatorHandle {
        self.handle.as_ref().expect("running")
    }

    pub fn base_url(&self) -> String {
        self.h().base_url()
    }

    pub fn open_id_config_url(&self) -> String {
        self.h().open_id_config_url()
    }

    pub fn issuer(&self) -> String {
        self.h().issuer()
    }

    /// Every create request received, oldest first.
    pub fn creates(&self) -> Vec<ReceivedRequest> {
        self.h().received()
    }

    /// Creates that carry this run id in their callbackUri.
    pub fn creates_for(&self, run: &str) -> Vec<ReceivedRequest> {
        self.creates()
            .into_iter()
            .filter(|r| run_id(r).as_deref() == Some(run))
            .collect()
    }

    /// Every request (token, create, get, delete, keepAlive).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.h().requests()
    }

    pub fn set_fault_script(&self, script: Vec<ScriptedFault>) {
        self.h().set_fault_script(script);
    }

    /// Makes the token endpoint fail for `for_` (None: until changed).
    pub fn set_token_fault(&self, fault: Option<emulator::TokenFault>, for_: Option<Duration>) {
        self.h().set_token_fault(fault, for_);
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// The `calldRun` query parameter of a create's callbackUri.
pub fn run_id(req: &ReceivedRequest) -> Option<String> {
    let uri = req.body.get("callbackUri")?.as_str()?;
    let url = url::Url::parse(uri).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "calldRun")
        .map(|(_, v)| v.into_owned())
}

/// The receive time of a request.
pub fn received_at(req: &ReceivedRequest) -> jiff::Timestamp {
    req.time.parse().expect("RFC 3339 receive time")
}

/// Count of creates per run id (a run sent twice shows up as 2).
pub fn creates_per_run(creates: &[ReceivedRequest]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in creates {
        let id = run_id(r).expect("every create of the daemon carries calldRun");
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory with a calls directory, a state directory and a
/// configuration file pointing the daemon at the emulator in live mode.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub calls: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub public_url: String,
    starts: std::cell::Cell<u32>,
}

impl Env {
    pub fn new(emu: &Emu) -> Env {
        Env::with_config(emu, "")
    }

    /// `extra`: more top-level YAML appended to the configuration.
    pub fn with_config(emu: &Emu, extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls.d");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&calls).unwrap();
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        let port = free_port();
        let public_url = format!("http://127.0.0.1:{port}/api/calls");
        let base = emu.base_url();
        let config = dir.path().join("calld.yaml");
        let text = format!(
            "callsDir: {calls}\n\
             stateDir: {state}\n\
             graph:\n  mode: live\n  baseUrl: {base}\n  authorityUrl: {base}\n  tenantId: {TENANT}\n  clientId: {CLIENT_ID}\n  clientSecret: {{ env: {SECRET_ENV} }}\n\
             callback:\n  listen: 127.0.0.1:{port}\n  publicUrl: {public_url}\n  openIdConfigUrl: {oid}\n  issuers: [{iss}]\n\
             defaults:\n  tenantId: {TENANT}\n  source: {{ identity: {{ applicationInstance: {{ id: {APP_ID}, displayName: calld test }} }} }}\n\
             {extra}",
            calls = calls.display(),
            state = state.display(),
            oid = emu.open_id_config_url(),
            iss = emu.issuer(),
        );
        let text = if extra.contains("daemon:") {
            text
        } else {
            format!("{text}\ndaemon: {{ debounce: 20ms }}\n")
        };
        std::fs::write(&config, text).unwrap();
        Env {
            dir,
            calls,
            state,
            config,
            public_url,
            starts: std::cell::Cell::new(0),
        }
    }

    /// Writes a spec outside the calls directory, then renames it in (an
    /// atomic drop, as an operator or a deploy tool would).
    pub fn drop_spec(&self, rel: &str, content: &str) {
        let staging = self.dir.path().join("staging").join(rel.replace('/', "_"));
        std::fs::write(&staging, content).unwrap();
        let target = self.calls.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::rename(&staging, &target).unwrap();
    }

    pub fn remove_spec(&self, rel: &str) {
        std::fs::remove_file(self.calls.join(rel)).unwrap();
    }

    /// `calld run --config <this env>` with `args`, extra environment, its
    /// log (stderr) in a file of its own.
    pub fn start_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let n = self.starts.get() + 1;
        self.starts.set(n);
        let log = self.dir.path().join(format!("daemon-{n}.log"));
        let out = self.dir.path().join(format!("daemon-{n}.out"));
        // CALLD_BENCH_WRAP="heaptrack -o /tmp/ht": run the daemon under a
        // profiler (benchmarks only; its RSS figures are then the wrapper's)
        let wrap: Vec<String> = std::env::var("CALLD_BENCH_WRAP")
            .map(|w| w.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env(SECRET_ENV, "test-secret-value")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "calld=info,warn")
            .env_remove("CALLD_TEST_CLOCK_OFFSET")
            .env_remove("CALLD_CONFIG")
            .env_remove("CALLD_CALLS_DIR")
            .env_remove("CALLD_STATE_DIR")
            .env_remove("CALLD_GRAPH_MODE")
            .env_remove("CALLD_CLIENT_SECRET")
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&log).unwrap());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("calld runs");
        Daemon {
            child: Some(child),
            log,
            out,
        }
    }

    /// Starts the daemon and waits for its first complete load.
    pub fn start(&self) -> Daemon {
        let d = self.start_with(&[], &[]);
        d.wait_log("calls directory loaded");
        d
    }

    /// Runs a `calld` command against this env's state directory.
    pub fn calld(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("NO_COLOR", "1")
            .env_remove("CALLD_STATE_DIR")
            .env_remove("CALLD_CONFIG")
            .output()
            .expect("calld runs")
    }

    /// `calld history NAME --format json`: the runs, newest first.
    pub fn history(&self, name: &str) -> Vec<Json> {
        let out = self.calld(&["history", name, "--limit", "100000", "--format", "json"]);
        // exit 1: no run yet and the daemon does not know the spec (yet)
        if out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stderr).contains("no spec or run named")
        {
            return Vec::new();
        }
        assert!(out.status.success(), "calld history: {out:?}");
        let doc: Json = serde_json::from_slice(&out.stdout).expect("history JSON");
        doc["runs"].as_array().cloned().unwrap_or_default()
    }

    /// `calld status --format json`.
    pub fn status(&self) -> Json {
        let out = self.calld(&["status", "--format", "json"]);
        assert!(out.status.success(), "calld status: {out:?}");
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// `calld render FILE`: the JSON line of each spec.
    pub fn render(&self, rel: &str) -> Vec<Json> {
        let out = self.calld(&["render", self.calls.join(rel).to_str().unwrap()]);
        assert!(out.status.success(), "calld render: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("render JSON"))
            .collect()
    }
}

/// A running `calld run`; killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
    pub out: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the log has `needle`; fails if the daemon exits first.
    pub fn wait_log(&self, needle: &str) {
        self.wait_log_count(needle, 1);
    }

    /// Waits until `needle` appears at least `n` times in the log.
    pub fn wait_log_count(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.log_text();
            if text.matches(needle).count() >= n {
                return;
            }
            if Instant::now() > deadline {
                panic!("the daemon never logged {needle:?} ({n} times); log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("the daemon did not exit; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns `Some`, or panics after [`WAIT`] naming `what`.
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A spec placed once (no schedule), one phone target.
pub fn call_spec(subject: &str) -> String {
    format!("subject: {subject}\ntargets:\n  - phone: \"+14255550100\"\n")
}

/// Runs of a history with this outcome.
pub fn with_outcome<'a>(runs: &'a [Json], outcome: &str) -> Vec<&'a Json> {
    runs.iter().filter(|r| r["outcome"] == outcome).collect()
}

/// The JSON of a path, for error messages.
pub fn show(p: &Path) -> String {
    p.display().to_string()
}

/// GET `path` from the admin endpoint on `port`: (status, body), or None
/// while it does not answer.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
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
