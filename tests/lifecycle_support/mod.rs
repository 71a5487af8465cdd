//! End-to-end harness for the lifecycle tests: the real `calld` binary in
//! live mode against an in-process Graph emulator, a config file in a temp
//! dir, outcomes read with `calld history --format json`. Also a token
//! minter holding the emulator's signing key, so a test can post
//! notifications the daemon accepts. Nothing here talks to any host but
//! 127.0.0.1.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use calld::emulator::{self, EmulatorConfig, EmulatorHandle};
use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::LineEnding;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The daemon's client id (the `aud` of notification tokens).
pub const CLIENT_ID: &str = "calld-test";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const ISSUER: &str = "https://api.botframework.com";
pub const APP_ID: &str = "8a34a46b-3d17-4adc-8dce-dc4e7d572698";

/// How long any wait may take before the test fails (the machine is shared
/// and slow; these are not performance bounds).
pub const PATIENCE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ keys

/// An RSA key with the emulator's `kid` derivation, and its PEM on disk.
pub struct SignKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub pem_path: PathBuf,
}

impl SignKey {
    fn generate(name: &str) -> SignKey {
        let private =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("an RSA key");
        let der = private.to_pkcs1_der().expect("DER");
        let pem = private.to_pkcs1_pem(LineEnding::LF).expect("PEM");
        // The emulator's kid: the first 12 bytes of SHA-256(n), in hex.
        let kid = hex::encode(&Sha256::digest(private.n().to_bytes_be())[..12]);
        let dir = Box::leak(Box::new(tempfile::tempdir().expect("a temp dir")));
        let pem_path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&pem_path, pem.as_bytes()).expect("write the key");
        SignKey {
            kid,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            pem_path,
        }
    }
}

/// The emulator's signing key (the same for every emulator of the test).
pub fn emulator_key() -> &'static SignKey {
    static KEY: OnceLock<SignKey> = OnceLock::new();
    KEY.get_or_init(|| SignKey::generate("emulator"))
}

/// A key the daemon has never seen.
pub fn stranger_key() -> &'static SignKey {
    static KEY: OnceLock<SignKey> = OnceLock::new();
    KEY.get_or_init(|| SignKey::generate("stranger"))
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims like the emulator's notification tokens, valid for 10 minutes.
pub fn good_claims() -> Value {
    let now = unix_now();
    json!({
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "tid": TENANT,
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 600,
    })
}

/// Signs `claims` with `key` (RS256, `kid` given).
pub fn mint_with(key: &SignKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

/// A token the daemon accepts: signed by the emulator's key.
pub fn good_token() -> String {
    mint_with(emulator_key(), &emulator_key().kid, &good_claims())
}

// ------------------------------------------------------------------ emulator

/// Starts an emulator on loopback with `yaml` and the shared signing key.
pub async fn start_emulator(yaml: &str) -> EmulatorHandle {
    let mut config = EmulatorConfig::from_yaml(yaml).expect("emulator config");
    config.signing_key_file = Some(emulator_key().pem_path.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    emulator::start(config, listener).await.expect("emulator")
}

/// The creates the emulator received whose first target is `phone`.
pub fn creates_for(emu: &EmulatorHandle, phone: &str) -> Vec<calld::emulator::ReceivedRequest> {
    emu.received()
        .into_iter()
        .filter(|r| r.body["targets"][0]["identity"]["phone"]["id"] == phone)
        .collect()
}

/// Every request of `kind` (`delete`, `keepAlive`, ...) about `call_id`.
pub fn requests_for(
    emu: &EmulatorHandle,
    kind: &str,
    call_id: &str,
) -> Vec<calld::emulator::ReceivedRequest> {
    emu.requests()
        .into_iter()
        .filter(|r| r.kind == kind && r.path.contains(call_id))
        .collect()
}

// ------------------------------------------------------------------ specs

/// A one-target spec calling `phone`, plus `extra` YAML lines.
pub fn spec(phone: &str, extra: &str) -> String {
    format!(
        "subject: lifecycle test\n\
         tenantId: {TENANT}\n\
         source:\n  identity:\n    applicationInstance: {{ id: {APP_ID}, displayName: calld test }}\n\
         targets:\n  - phone: \"{phone}\"\n{extra}\n"
    )
}

// ------------------------------------------------------------------ daemon

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `calld run` in live mode, with its own temp dir (config, calls.d,
/// state, log). Killed on drop; its log is printed when the test failed.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    /// The callback listener's port.
    pub port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    /// Writes the config; `public_url` defaults to the listener itself.
    /// `extra` is appended to the config (top-level keys).
    pub fn new(emu: &EmulatorHandle, public_url: Option<&str>, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let root = dir.path();
        std::fs::create_dir_all(root.join("calls.d")).unwrap();
        let public = public_url
            .map(str::to_string)
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}/api/calls"));
        let base = emu.base_url();
        let config = format!(
            "callsDir: {calls}\n\
             stateDir: {state}\n\
             graph: {{ baseUrl: \"{base}\", authorityUrl: \"{base}\", tenantId: {TENANT}, clientId: {CLIENT_ID}, clientSecret: {{ env: CALLD_TEST_SECRET }}, requestTimeout: 60s }}\n\
             callback: {{ listen: \"127.0.0.1:{port}\", publicUrl: \"{public}\", openIdConfigUrl: \"{oidc}\", issuers: [\"{iss}\"] }}\n\
             {extra}\n",
            calls = root.join("calls.d").display(),
            state = root.join("state").display(),
            oidc = emu.open_id_config_url(),
            iss = emu.issuer(),
        );
        let mut config = config;
        if !extra.contains("daemon:") {
            config.push_str("daemon: { debounce: 20ms }\n");
        }
        if !extra.contains("log:") {
            config.push_str("log: { level: debug }\n");
        }
        std::fs::write(root.join("calld.yaml"), config).unwrap();
        Daemon {
            dir,
            port,
            child: None,
            starts: 0,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root().join("state")
    }

    /// The listener's notification URL (no `calldRun`).
    pub fn callback_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/calls", self.port)
    }

    /// Drops a spec file into calls.d (written aside, then renamed in).
    pub fn write_spec(&self, name: &str, yaml: &str) {
        let tmp = self.root().join(format!(".{name}.yaml"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(
            &tmp,
            self.root().join("calls.d").join(format!("{name}.yaml")),
        )
        .unwrap();
    }

    fn log_path(&self) -> PathBuf {
        self.root().join(format!("calld-{}.log", self.starts))
    }

    /// Starts `calld run` and waits until its callback listener accepts.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_calld"))
            .arg("run")
            .arg("--config")
            .arg(self.root().join("calld.yaml"))
            .env_remove("CALLD_CONFIG")
            .env_remove("CALLD_CLIENT_SECRET")
            .env_remove("CALLD_TEST_CLOCK_OFFSET")
            .env_remove("RUST_LOG")
            .env("CALLD_TEST_SECRET", "lifecycle-secret")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn calld");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let started = std::time::Instant::now();
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("calld exited at start ({status}):\n{}", self.log_tail());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "calld's callback listener never came up:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        child.wait().ok().and_then(|s| s.code())
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// The end of the daemon's log (all starts).
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let p = self.root().join(format!("calld-{i}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(60);
            out.push_str(&format!(
                "--- {} (last {} lines)\n",
                p.display(),
                lines.len() - from
            ));
            out.push_str(&lines[from..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// `calld history NAME --format json` (empty before the ledger exists).
    pub fn history(&self, spec: &str) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_calld"))
            .args([
                "history",
                spec,
                "--format",
                "json",
                "--limit",
                "1000",
                "--state-dir",
            ])
            .arg(self.state_dir())
            .env("NO_COLOR", "1")
            .output()
            .expect("calld history");
        if !out.status.success() {
            return json!({ "runs": [] });
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "calld history printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The runs of `spec`, newest first.
    pub fn runs(&self, spec: &str) -> Vec<Value> {
        self.history(spec)["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `spec` has a run for which `pred` holds; returns it.
    pub async fn wait_run(&self, spec: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            if let Some(r) = self.runs(spec).into_iter().find(|r| pred(r)) {
                return r;
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "waited {PATIENCE:?} for {spec}: {what}; history: {:#}\n{}",
                    self.history(spec),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `spec`'s newest run is finished; returns it.
    pub async fn wait_finished(&self, spec: &str) -> Value {
        self.wait_run(spec, "a finished run", |r| r["state"] == "finished")
            .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// Waits until `cond` returns `Some`.
pub async fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ reading runs

pub fn ts(v: &Value) -> Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("not a time {v}: {e}"))
}

/// The states of a run's notifications, in order of arrival.
pub fn states(run: &Value) -> Vec<String> {
    run["callStates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_string())
        .collect()
}

/// The part of a run a notification sequence decides (not times or ids).
pub fn final_record(run: &Value) -> Value {
    json!({
        "state": run["state"],
        "outcome": run["outcome"],
        "reason": run["reason"],
        "resultInfo": run["resultInfo"],
        "established": !run["establishedAt"].is_null(),
        "callIdSet": !run["callId"].is_null(),
    })
}

// ------------------------------------------------------------------ notifications

/// A `commsNotifications` body as Graph (and the emulator) send it.
pub fn notification(call_id: &str, state: &str, result: Option<(i64, i64, &str)>) -> Value {
    let mut data = json!({
        "@odata.type": "#microsoft.graph.call",
        "@odata.id": format!("/communications/calls/{call_id}"),
        "id": call_id,
        "state": state,
        "direction": "outgoing",
    });
    if let Some((code, subcode, message)) = result {
        data["resultInfo"] = json!({"code": code, "subcode": subcode, "message": message});
    }
    json!({
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [{
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": if state == "terminated" { "deleted" } else { "updated" },
            "resourceUrl": format!("/communications/calls/{call_id}"),
            "resourceData": data,
        }]
    })
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs `body` to `url` with an optional bearer token; the status.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> u16 {
    let mut req = client
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send()
        .await
        .expect("the daemon answers")
        .status()
        .as_u16()
}

/// POSTs a signed notification; the status.
pub async fn notify(client: &reqwest::Client, url: &str, body: &Value) -> u16 {
    post(
        client,
        url,
        Some(&good_token()),
        "application/json",
        serde_json::to_vec(body).unwrap(),
    )
    .await
}
