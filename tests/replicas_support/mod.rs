//! Harness of the replica tests (issue 13): N real `calld run` processes on
//! ONE shared PostgreSQL ledger and ONE Graph emulator, each with its own
//! state directory, its own copy of the calls directory (as each pod has its
//! own git-sync checkout), its own callback listener and admin port.
//!
//! - [`RoundRobin`]: the load balancer in front of the callback listeners.
//!   Every replica's `callback.publicUrl` is the balancer, so Graph's (the
//!   emulator's) notifications for a call reach *any* replica, not the one
//!   that placed it. A backend marked down (a pod whose readiness failed), or
//!   one that refuses the connection (a killed process), is skipped.
//! - [`Cuttable`]: a TCP proxy in front of PostgreSQL, one per replica:
//!   `cut()` drops its connections and refuses new ones (the replica is
//!   partitioned from the database) until `restore()`.
//! - [`Cluster`]: the replicas (kill -9, SIGSTOP/SIGCONT, restart, start
//!   under libfaketime), writing specs into one or all copies with explicit
//!   mtimes, what the emulator received, and the runs in the shared ledger.
//!
//! Everything runs on 127.0.0.1. The proxies and the emulator are served by
//! a tokio runtime owned by the harness, so the tests themselves are plain
//! synchronous `#[test]`s.
//!
//! PostgreSQL: 127.0.0.1:5432, user `postgres`, database `test` (override
//! with `CALLD_TEST_PG`, a `postgres://` URL). Each cluster gets a fresh
//! schema, dropped at the end. Without PostgreSQL, [`Cluster::new`] prints
//! `SKIP: ...` and returns `None`, unless `CALLD_REQUIRE_POSTGRES=1`.
//!
//! What is read from the ledger by SQL assumes the PostgreSQL store keeps
//! SQLite's `runs` columns (`id`, `spec`, `slot`, `revision`, `state`,
//! `outcome`, `reason`, `due_at` in microseconds) plus the contract's
//! `claim_owner`, `claim_token`, `lease_until`, and the `spec_views` table.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use calld::emulator::{self, EmulatorConfig, EmulatorHandle, ReceivedRequest};
use serde_json::Value as Json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const BIN: &str = env!("CARGO_BIN_EXE_calld");
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "calld-test";
pub const SECRET_ENV: &str = "CALLD_TEST_SECRET";
pub const APP_ID: &str = "8a34a46b-3d17-4adc-8dce-dc4e7d572698";

/// Calls answered after 100 ms and ended 300 ms later by the emulator.
pub const FAST_CALLS: &str = "calls: { answerAfter: 100ms, length: 300ms }\n";

/// How long any wait may take before a test fails. Not a performance
/// bound: the machine is shared and slow, and nothing is asserted on time.
pub const WAIT: Duration = Duration::from_secs(90);

/// The default PostgreSQL URL of the tests.
pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------ PostgreSQL

/// The URL of the test database.
pub fn pg_url() -> String {
    std::env::var("CALLD_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

/// A connection to the test database, or why there is none.
pub fn pg_connect() -> Result<postgres::Client, String> {
    let url = pg_url();
    let mut config: postgres::Config = url.parse().map_err(|e| format!("{url}: {e}"))?;
    config.connect_timeout(Duration::from_secs(5));
    config
        .connect(postgres::NoTls)
        .map_err(|e| format!("PostgreSQL at {url}: {e}"))
}

/// A connection, or `None` after printing `SKIP: ...` (a panic when
/// `CALLD_REQUIRE_POSTGRES=1`).
pub fn pg_or_skip(test: &str) -> Option<postgres::Client> {
    match pg_connect() {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("CALLD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("{test}: PostgreSQL required (CALLD_REQUIRE_POSTGRES=1): {e}");
            }
            eprintln!("SKIP: {test}: PostgreSQL not reachable ({e})");
            None
        }
    }
}

/// `host:port` of a `postgres://` URL (127.0.0.1:5432 by default).
fn pg_addr(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).expect("a postgres:// URL");
    let host = u.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", u.port().unwrap_or(5432))
        .parse()
        .expect("a loopback address")
}

/// The same URL with the address replaced (through a proxy).
fn pg_url_via(url: &str, addr: SocketAddr) -> String {
    let mut u = url::Url::parse(url).expect("a postgres:// URL");
    u.set_host(Some(&addr.ip().to_string())).unwrap();
    u.set_port(Some(addr.port())).unwrap();
    u.to_string()
}

/// A fresh schema name for one cluster.
fn fresh_schema() -> String {
    let n: u64 = rand::random();
    format!("calld_t{:012x}", n & 0xffff_ffff_ffff)
}

// ------------------------------------------------------------------ runtime

/// A small multi-thread runtime for the proxies and the emulator.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

// ------------------------------------------------------------------ round robin

struct Backend {
    addr: SocketAddr,
    down: bool,
    served: usize,
}

struct RrState {
    backends: Mutex<Vec<Backend>>,
    next: AtomicUsize,
    refused: AtomicUsize,
}

/// A round-robin TCP balancer on 127.0.0.1: each new connection goes to the
/// next backend in turn; a backend marked down, or refusing the connection,
/// is skipped (the next one is tried). With no backend left the client's
/// connection is closed unanswered. Bytes are copied both ways, unchanged.
pub struct RoundRobin {
    addr: SocketAddr,
    state: Arc<RrState>,
    accept: JoinHandle<()>,
}

impl RoundRobin {
    /// Binds 127.0.0.1:0 and serves on `rt`.
    pub fn start(rt: &tokio::runtime::Runtime, backends: Vec<SocketAddr>) -> RoundRobin {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the balancer");
        RoundRobin::serve(rt, listener, backends)
    }

    /// Serves on an already bound listener (to know the port before the
    /// backends exist).
    pub fn serve(
        rt: &tokio::runtime::Runtime,
        listener: TcpListener,
        backends: Vec<SocketAddr>,
    ) -> RoundRobin {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RrState {
            backends: Mutex::new(
                backends
                    .into_iter()
                    .map(|addr| Backend {
                        addr,
                        down: false,
                        served: 0,
                    })
                    .collect(),
            ),
            next: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let st = state.clone();
        let accept = rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    if let Some(upstream) = RoundRobin::pick(&st).await {
                        pipe(client, upstream).await;
                    } else {
                        st.refused.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        RoundRobin {
            addr,
            state,
            accept,
        }
    }

    /// The next backend that is up and accepts, starting at the turn.
    async fn pick(st: &RrState) -> Option<TcpStream> {
        let n = lock(&st.backends).len();
        if n == 0 {
            return None;
        }
        let start = st.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let i = (start + k) % n;
            let (addr, down) = {
                let b = &lock(&st.backends)[i];
                (b.addr, b.down)
            };
            if down {
                continue;
            }
            let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr));
            if let Ok(Ok(s)) = connect.await {
                lock(&st.backends)[i].served += 1;
                return Some(s);
            }
        }
        None
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Marks backend `i` down (skipped) or up again.
    pub fn set_down(&self, i: usize, down: bool) {
        lock(&self.state.backends)[i].down = down;
    }

    /// Adds a backend; its index.
    pub fn add_backend(&self, addr: SocketAddr) -> usize {
        let mut b = lock(&self.state.backends);
        b.push(Backend {
            addr,
            down: false,
            served: 0,
        });
        b.len() - 1
    }

    /// Connections forwarded to each backend so far.
    pub fn served(&self) -> Vec<usize> {
        lock(&self.state.backends)
            .iter()
            .map(|b| b.served)
            .collect()
    }

    /// Connections closed because no backend was up.
    pub fn unserved(&self) -> usize {
        self.state.refused.load(Ordering::Relaxed)
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies both ways until either side closes.
async fn pipe(mut a: TcpStream, mut b: TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

// ------------------------------------------------------------------ cuttable

struct CutState {
    cut: AtomicBool,
    /// The tasks of live connections (aborted by a cut: both sockets drop).
    conns: Mutex<Vec<JoinHandle<()>>>,
    accept: Mutex<Option<JoinHandle<()>>>,
    forwarded: AtomicUsize,
}

/// A TCP proxy on 127.0.0.1 in front of `target` (PostgreSQL). `cut()`
/// drops every connection and stops listening, so a new connection is
/// refused (ECONNREFUSED), until `restore()` listens on the same port again.
pub struct Cuttable {
    addr: SocketAddr,
    target: SocketAddr,
    state: Arc<CutState>,
    handle: tokio::runtime::Handle,
}

impl Cuttable {
    pub fn start(rt: &tokio::runtime::Runtime, target: SocketAddr) -> Cuttable {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let c = Cuttable {
            addr,
            target,
            state: Arc::new(CutState {
                cut: AtomicBool::new(false),
                conns: Mutex::new(Vec::new()),
                accept: Mutex::new(None),
                forwarded: AtomicUsize::new(0),
            }),
            handle: rt.handle().clone(),
        };
        c.listen(listener);
        c
    }

    fn listen(&self, listener: TcpListener) {
        let st = self.state.clone();
        let target = self.target;
        let task = self.handle.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if st.cut.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let st2 = st.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(Ok(up)) =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target))
                            .await
                    {
                        st2.forwarded.fetch_add(1, Ordering::Relaxed);
                        pipe(client, up).await;
                    }
                });
                let mut conns = lock(&st.conns);
                conns.retain(|h| !h.is_finished());
                conns.push(conn);
            }
        });
        *lock(&self.state.accept) = Some(task);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops all connections; refuses new ones until [`Cuttable::restore`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        if let Some(accept) = lock(&self.state.accept).take() {
            accept.abort(); // the listener is dropped with the task
        }
        for c in lock(&self.state.conns).drain(..) {
            c.abort();
        }
        // The abort takes effect at the task's next poll; wait for the
        // listening socket to be gone so the refusal is immediate.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Listens again on the same port.
    pub fn restore(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            let addr = self.addr;
            match self
                .handle
                .block_on(async move { TcpListener::bind(addr).await })
            {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("rebinding {} after a cut: {e}", self.addr),
            }
        };
        self.state.cut.store(false, Ordering::SeqCst);
        self.listen(listener);
    }

    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.state.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        if let Some(a) = lock(&self.state.accept).take() {
            a.abort();
        }
        for c in lock(&self.state.conns).drain(..) {
            c.abort();
        }
    }
}

// ------------------------------------------------------------------ faketime

/// libfaketime's preload library, if installed (Debian: package
/// `faketime`, which pulls `libfaketime`). `CALLD_LIBFAKETIME` overrides.
///
/// The replica is started with `LD_PRELOAD=<lib> FAKETIME=+30s` directly,
/// not through the `faketime` wrapper: the wrapper forks and waits, so its
/// pid is not calld's, and kill -9 / SIGSTOP would hit the wrong process.
///
/// What the skew test relies on (checked on Debian 12, libfaketime 0.9.10;
/// `replicas::skew::faketime_behaves_as_the_harness_assumes` checks it again):
/// - CLOCK_REALTIME (what `jiff::Timestamp::now()` / SystemTime read) is
///   shifted by the offset: the replica's own wall clock is 30 s ahead.
/// - CLOCK_MONOTONIC: by default libfaketime shifts it too (it then reads
///   about the faked epoch time, advancing at the real rate). That breaks
///   calld: std's timed waits (`recv_timeout`, `park_timeout`, a Condvar's
///   `wait_timeout`, as in the file watcher's debouncer) pass an ABSOLUTE
///   CLOCK_MONOTONIC deadline to futex(2), which the kernel reads on the
///   real clock, so they wait for decades. The harness therefore sets
///   `FAKETIME_DONT_FAKE_MONOTONIC=1`: only the wall clock is off, as on a
///   host whose NTP is broken. `Instant` (the lease check before sending,
///   tokio's timers) stays true.
/// - stat()/statx() file times are NOT shifted by this build (its
///   FAKE_STAT path is off unless asked for): a skewed replica sees the
///   same spec mtimes as the others, so revision agreement by mtime is
///   untouched by the skew; file times the kernel stamps (a write by the
///   replica) are real time.
/// - Child processes inherit LD_PRELOAD (calld spawns none).
pub fn libfaketime() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CALLD_LIBFAKETIME") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// The environment that makes a process see its clock shifted by `offset`
/// (libfaketime syntax: `+30s`, `-2m`).
pub fn faketime_env(offset: &str) -> Option<Vec<(String, String)>> {
    let lib = libfaketime()?;
    Some(vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FAKETIME".into(), offset.to_string()),
        // Only the wall clock is wrong on a skewed host; a faked monotonic
        // clock also breaks the process (see above).
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ])
}

/// libfaketime, or `None` after printing `SKIP: ...` (a panic when
/// `CALLD_REQUIRE_FAKETIME=1`, as in CI).
pub fn faketime_or_skip(test: &str) -> Option<PathBuf> {
    match libfaketime() {
        Some(p) => Some(p),
        None => {
            if std::env::var("CALLD_REQUIRE_FAKETIME").as_deref() == Ok("1") {
                panic!("{test}: libfaketime required (CALLD_REQUIRE_FAKETIME=1)");
            }
            eprintln!("SKIP: {test}: libfaketime not installed (apt-get install faketime)");
            None
        }
    }
}

// ------------------------------------------------------------------ files

/// Writes `content` to `path` atomically (written aside, renamed in), with
/// the file's mtime set to `mtime` when given (before the rename, so the
/// watcher never sees another mtime).
pub fn write_file(path: &Path, content: &str, mtime: Option<SystemTime>) {
    let dir = path.parent().expect("a parent");
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    {
        let f = File::create(&tmp).unwrap();
        use std::io::Write;
        (&f).write_all(content.as_bytes()).unwrap();
        if let Some(t) = mtime {
            f.set_modified(t).unwrap();
        }
        // No fsync: the watchers are on this host; the bench writes 3,000.
    }
    std::fs::rename(&tmp, path).unwrap();
}

/// The mtime of a file.
pub fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

// ------------------------------------------------------------------ specs

/// A one-target spec with `subject` (the emulator's records are matched to
/// specs by subject) and an optional `at` schedule.
pub fn spec_yaml(subject: &str, at: Option<jiff::Timestamp>) -> String {
    let mut s = format!("subject: {subject}\ntargets:\n  - phone: \"+14255550100\"\n");
    if let Some(at) = at {
        s.push_str(&format!("schedule: {{ at: \"{at}\" }}\n"));
    }
    s
}

/// The `calldRun` query parameter of a create's callbackUri.
pub fn run_id(req: &ReceivedRequest) -> Option<String> {
    let uri = req.body.get("callbackUri")?.as_str()?;
    let url = url::Url::parse(uri).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "calldRun")
        .map(|(_, v)| v.into_owned())
}

pub fn subject(req: &ReceivedRequest) -> Option<String> {
    req.body.get("subject")?.as_str().map(str::to_string)
}

/// The receive time of a request (the emulator's clock: the test's).
pub fn received_at(req: &ReceivedRequest) -> jiff::Timestamp {
    req.time.parse().expect("RFC 3339 receive time")
}

/// `p` (0..=100) percentile of `xs` (sorted in place); 0 when empty.
pub fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * (xs.len() as f64 - 1.0)).round() as usize;
    xs[rank.min(xs.len() - 1)]
}

// ------------------------------------------------------------------ ledger rows

/// A run as the shared ledger holds it.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub spec: String,
    pub slot: String,
    pub revision: String,
    pub state: String,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// Microseconds since the epoch.
    pub due_at: i64,
    pub claim_owner: Option<String>,
}

// ------------------------------------------------------------------ cluster

/// How to build a cluster.
#[derive(Clone)]
pub struct Opts {
    pub replicas: usize,
    /// `ledger.lease`.
    pub lease: String,
    /// `ledger.poll`.
    pub poll: String,
    /// The emulator's configuration.
    pub emulator: String,
    /// More top-level YAML for every replica's configuration.
    pub extra_config: String,
    /// More keys of the `graph:` section (indented two spaces, one per line).
    pub graph_extra: String,
    /// Each replica reaches PostgreSQL through a [`Cuttable`] of its own.
    pub db_proxies: bool,
    /// `RUST_LOG` of the replicas.
    pub rust_log: String,
    /// Write the `ledger:` section. Without it each replica keeps its own
    /// SQLite ledger and no PostgreSQL is needed: only for the harness's
    /// self-test (one replica), never for two.
    pub ledger: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            replicas: 3,
            lease: "2s".into(),
            poll: "200ms".into(),
            emulator: FAST_CALLS.into(),
            extra_config: String::new(),
            graph_extra: String::new(),
            db_proxies: true,
            rust_log: "calld=info,warn".into(),
            ledger: true,
        }
    }
}

/// One replica: its files, ports and process.
pub struct Replica {
    pub index: usize,
    /// `ledger.replicaId`: `r0`, `r1`, ...
    pub id: String,
    pub root: PathBuf,
    pub calls: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// The callback listener.
    pub port: u16,
    pub admin_port: u16,
    pub db_proxy: Option<Cuttable>,
    child: Option<Child>,
    starts: u32,
    /// Environment of every start (e.g. libfaketime).
    pub env: Vec<(String, String)>,
}

impl Replica {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.root.join(format!("calld-{n}.log"))
    }

    /// The log of every start of this replica.
    pub fn log_text(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last `n` lines of each start's log.
    pub fn log_tail(&self, n: usize) -> String {
        let mut out = String::new();
        for s in 1..=self.starts {
            let text = std::fs::read_to_string(self.log_path(s)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            out.push_str(&format!("--- {} start {s}\n", self.id));
            out.push_str(&lines[from..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// Whether the process runs (a stopped one counts as running).
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Whether the process is stopped (SIGSTOP: state `T` in /proc).
    pub fn stopped(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                // "pid (comm) S ...": the state follows the last ')'.
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace().next().map(|st| st == "T")
            })
            .unwrap_or(false)
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.pid().expect("running") as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// GET `path` on the admin port: (status, body), None while it does not
    /// answer.
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(("127.0.0.1", self.admin_port), path)
    }

    /// `/readyz`'s status, None when nothing answers.
    pub fn readyz(&self) -> Option<u16> {
        self.admin_get("/readyz").map(|(s, _)| s)
    }

    /// A metric's value summed over its label sets matching `labels`
    /// (`name{a="b"}` substring match), from `/metrics`.
    pub fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let (_, body) = self.admin_get("/metrics")?;
        let mut sum = None;
        for line in body.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let metric = key.split('{').next().unwrap_or(key);
            if metric == name && key.contains(labels) {
                *sum.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        sum
    }

    /// `calld <args> --config <this replica's config>`.
    pub fn calld(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("NO_COLOR", "1")
            .env_remove("CALLD_STATE_DIR")
            .env_remove("CALLD_CONFIG")
            .env_remove("CALLD_LEDGER_URL")
            .output()
            .expect("calld runs")
    }

    /// `calld history NAME --format json` through this replica's config
    /// (the shared ledger): the runs, newest first.
    pub fn history(&self, spec: &str) -> Vec<Json> {
        let out = self.calld(&["history", spec, "--limit", "100000", "--format", "json"]);
        if !out.status.success() {
            return Vec::new();
        }
        let doc: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
        doc["runs"].as_array().cloned().unwrap_or_default()
    }

    /// `calld status --format json` through this replica's config.
    pub fn status(&self) -> Option<Json> {
        let out = self.calld(&["status", "--format", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

/// Where a spec is written.
#[derive(Clone, Copy, Debug)]
pub enum Copies<'a> {
    All,
    One(usize),
    Some(&'a [usize]),
}

/// N replicas, one emulator, one balancer, one schema.
pub struct Cluster {
    pub opts: Opts,
    pub rt: tokio::runtime::Runtime,
    emu: Option<EmulatorHandle>,
    pub lb: RoundRobin,
    pub dir: tempfile::TempDir,
    pub schema: String,
    pub db_url: String,
    pub replicas: Vec<Replica>,
    pg: Option<Mutex<postgres::Client>>,
}

impl Cluster {
    /// Sets the cluster up (nothing started yet); `None` after `SKIP:` when
    /// PostgreSQL is not reachable.
    pub fn new(test: &str, opts: Opts) -> Option<Cluster> {
        let schema = fresh_schema();
        let pg = if opts.ledger {
            let mut pg = pg_or_skip(test)?;
            // The store creates its schema itself (under an advisory lock);
            // a leftover of the same name is unlikely (random), but be sure.
            pg.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .expect("drop a stale schema");
            Some(Mutex::new(pg))
        } else {
            None
        };
        let rt = runtime();
        let emu = {
            let config = EmulatorConfig::from_yaml(&opts.emulator).expect("emulator config");
            rt.block_on(async {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                emulator::start(config, l).await.expect("emulator")
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let db_url = pg_url();
        let db_addr = pg_addr(&db_url);
        let mut replicas = Vec::new();
        let mut backends = Vec::new();
        let lb_listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the balancer");
        let lb_addr = lb_listener.local_addr().unwrap();
        for i in 0..opts.replicas {
            let root = dir.path().join(format!("r{i}"));
            let calls = root.join("calls.d");
            let state = root.join("state");
            std::fs::create_dir_all(&calls).unwrap();
            let port = free_port();
            let admin_port = free_port();
            backends.push(format!("127.0.0.1:{port}").parse().unwrap());
            let db_proxy = (opts.ledger && opts.db_proxies).then(|| Cuttable::start(&rt, db_addr));
            let url = match &db_proxy {
                Some(p) => pg_url_via(&db_url, p.addr()),
                None => db_url.clone(),
            };
            let config = root.join("calld.yaml");
            let ledger = if opts.ledger {
                format!(
                    "ledger:\n  url: \"{url}\"\n  schema: {schema}\n  replicaId: r{i}\n  lease: {lease}\n  poll: {poll}\n",
                    lease = opts.lease,
                    poll = opts.poll,
                )
            } else {
                String::new()
            };
            let text = format!(
                "callsDir: {calls}\n\
                 stateDir: {state}\n\
                 graph:\n  mode: live\n  baseUrl: {base}\n  authorityUrl: {base}\n  tenantId: {TENANT}\n  clientId: {CLIENT_ID}\n  clientSecret: {{ env: {SECRET_ENV} }}\n{graph_extra}\
                 callback:\n  listen: 127.0.0.1:{port}\n  publicUrl: http://{lb_addr}/api/calls\n  openIdConfigUrl: {oid}\n  issuers: [{iss}]\n\
                 admin:\n  listen: 127.0.0.1:{admin_port}\n\
                 defaults:\n  tenantId: {TENANT}\n  source: {{ identity: {{ applicationInstance: {{ id: {APP_ID}, displayName: calld test }} }} }}\n\
                 {ledger}\
                 {extra}\n",
                calls = calls.display(),
                state = state.display(),
                base = emu.base_url(),
                oid = emu.open_id_config_url(),
                iss = emu.issuer(),
                extra = opts.extra_config,
                graph_extra = opts.graph_extra,
            );
            let text = if opts.extra_config.contains("daemon:") {
                text
            } else {
                format!("{text}daemon: {{ debounce: 20ms }}\n")
            };
            std::fs::write(&config, text).unwrap();
            replicas.push(Replica {
                index: i,
                id: format!("r{i}"),
                root,
                calls,
                state,
                config,
                port,
                admin_port,
                db_proxy,
                child: None,
                starts: 0,
                env: Vec::new(),
            });
        }
        let lb = RoundRobin::serve(&rt, lb_listener, backends);
        Some(Cluster {
            opts,
            rt,
            emu: Some(emu),
            lb,
            dir,
            schema,
            db_url,
            replicas,
            pg,
        })
    }

    pub fn emu(&self) -> &EmulatorHandle {
        self.emu.as_ref().expect("running")
    }

    pub fn r(&self, i: usize) -> &Replica {
        &self.replicas[i]
    }

    // -------------------------------------------------------------- processes

    /// Starts replica `i` (with its `env`, plus `extra_env`), waits until
    /// its callback listener accepts, and marks it up at the balancer.
    pub fn start_with(&mut self, i: usize, extra_env: &[(&str, &str)]) {
        let r = &mut self.replicas[i];
        assert!(r.child.is_none(), "{} already runs", r.id);
        r.starts += 1;
        let log = File::create(r.log_path(r.starts)).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(&r.config)
            .env(SECRET_ENV, "test-secret-value")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", &self.opts.rust_log)
            .env_remove("CALLD_TEST_CLOCK_OFFSET")
            .env_remove("CALLD_TEST_STOP_AFTER_CLAIM")
            .env_remove("CALLD_CONFIG")
            .env_remove("CALLD_CALLS_DIR")
            .env_remove("CALLD_STATE_DIR")
            .env_remove("CALLD_GRAPH_MODE")
            .env_remove("CALLD_CLIENT_SECRET")
            .env_remove("CALLD_LEDGER_URL")
            .env_remove("CALLD_ADMIN_LISTEN")
            .env_remove("LD_PRELOAD")
            .env_remove("FAKETIME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &r.env {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        r.child = Some(cmd.spawn().expect("spawn calld"));
        let deadline = Instant::now() + WAIT;
        let addr: SocketAddr = format!("127.0.0.1:{}", r.port).parse().unwrap();
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Some(status) = r.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited at start ({status}):\n{}", r.id, r.log_tail(80));
            }
            if r.stopped() {
                break; // a test hook stopped it early
            }
            assert!(
                Instant::now() < deadline,
                "{}'s callback listener never came up:\n{}",
                r.id,
                r.log_tail(80)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.lb.set_down(i, false);
    }

    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    /// Starts every replica not running yet.
    pub fn start_all(&mut self) {
        for i in 0..self.replicas.len() {
            if self.replicas[i].child.is_none() {
                self.start(i);
            }
        }
    }

    /// Makes every later start of replica `i` run under libfaketime with
    /// `offset` (`+30s`); false when libfaketime is not installed.
    pub fn set_faketime(&mut self, i: usize, offset: &str) -> bool {
        match faketime_env(offset) {
            Some(env) => {
                self.replicas[i].env.extend(env);
                true
            }
            None => false,
        }
    }

    /// Waits until every running replica's `/readyz` answers 200.
    pub fn wait_ready(&self, i: usize) {
        self.wait_until(&format!("{} ready", self.replicas[i].id), || {
            (self.replicas[i].readyz() == Some(200)).then_some(())
        });
    }

    pub fn wait_all_ready(&self) {
        for i in 0..self.replicas.len() {
            if self.replicas[i].child.is_some() {
                self.wait_ready(i);
            }
        }
    }

    /// kill -9 (no goodbye) and reap; the balancer skips it.
    pub fn kill9(&mut self, i: usize) {
        self.lb.set_down(i, true);
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9, then start again (same state dir, same copy).
    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.start(i);
    }

    /// SIGSTOP; the balancer skips it (as its readiness probe would fail).
    pub fn sigstop(&mut self, i: usize) {
        self.lb.set_down(i, true);
        self.replicas[i].signal(libc::SIGSTOP);
    }

    /// SIGCONT; the balancer sends to it again.
    pub fn sigcont(&mut self, i: usize) {
        self.replicas[i].signal(libc::SIGCONT);
        self.lb.set_down(i, false);
    }

    /// Cuts replica `i` off the database (its [`Cuttable`]).
    pub fn cut_db(&self, i: usize) {
        self.replicas[i]
            .db_proxy
            .as_ref()
            .expect("Opts::db_proxies")
            .cut();
    }

    pub fn restore_db(&self, i: usize) {
        self.replicas[i]
            .db_proxy
            .as_ref()
            .expect("Opts::db_proxies")
            .restore();
    }

    // -------------------------------------------------------------- specs

    fn targets(&self, copies: Copies<'_>) -> Vec<usize> {
        match copies {
            Copies::All => (0..self.replicas.len()).collect(),
            Copies::One(i) => vec![i],
            Copies::Some(v) => v.to_vec(),
        }
    }

    /// Writes `calls.d/<name>.yaml` into the chosen copies. `mtime`: the
    /// file's mtime (`None`: the moment of each write, as a checkout would
    /// leave it). Use [`Cluster::write_spec_same`] for copies that agree.
    pub fn write_spec(
        &self,
        copies: Copies<'_>,
        name: &str,
        yaml: &str,
        mtime: Option<SystemTime>,
    ) {
        for i in self.targets(copies) {
            let path = self.replicas[i].calls.join(format!("{name}.yaml"));
            write_file(&path, yaml, mtime);
        }
    }

    /// Writes a spec into every copy with ONE mtime (now): the copies agree
    /// on (revision, mtime), as checkouts of the same commit that preserve
    /// commit times would.
    pub fn write_spec_same(&self, name: &str, yaml: &str) -> SystemTime {
        let t = SystemTime::now();
        self.write_spec(Copies::All, name, yaml, Some(t));
        t
    }

    /// Writes many specs into every copy, one mtime for all of them.
    pub fn write_specs_same(&self, specs: &[(String, String)]) -> SystemTime {
        let t = SystemTime::now();
        for i in 0..self.replicas.len() {
            for (name, yaml) in specs {
                let path = self.replicas[i].calls.join(format!("{name}.yaml"));
                write_file(&path, yaml, Some(t));
            }
        }
        t
    }

    pub fn remove_spec(&self, copies: Copies<'_>, name: &str) {
        for i in self.targets(copies) {
            let _ = std::fs::remove_file(self.replicas[i].calls.join(format!("{name}.yaml")));
        }
    }

    // -------------------------------------------------------------- emulator

    /// Every create the emulator received, oldest first.
    pub fn creates(&self) -> Vec<ReceivedRequest> {
        self.emu().received()
    }

    /// Creates per `calldRun` (a run sent twice counts 2).
    pub fn creates_per_run(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.creates() {
            let id = run_id(&r).unwrap_or_default();
            *m.entry(id).or_insert(0) += 1;
        }
        m
    }

    /// Creates per subject (the tests give every spec its own subject).
    pub fn creates_per_subject(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.creates() {
            *m.entry(subject(&r).unwrap_or_default()).or_insert(0) += 1;
        }
        m
    }

    /// Creates with this subject.
    pub fn creates_for(&self, subj: &str) -> Vec<ReceivedRequest> {
        self.creates()
            .into_iter()
            .filter(|r| subject(r).as_deref() == Some(subj))
            .collect()
    }

    /// Every request the emulator received (creates, gets, deletes, ...).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.emu().requests()
    }

    // -------------------------------------------------------------- ledger

    /// Runs SQL on the test database (the schema is on the search path).
    pub fn sql(&self, query: &str) -> Vec<postgres::Row> {
        let mut pg = lock(self.pg.as_ref().expect("Opts::ledger"));
        pg.batch_execute(&format!("SET search_path TO {}, public", self.schema))
            .expect("search_path");
        pg.query(query, &[])
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// Like [`Cluster::sql`], `None` on an error (a table not there yet).
    pub fn try_sql(&self, query: &str) -> Option<Vec<postgres::Row>> {
        let mut pg = lock(self.pg.as_ref()?);
        pg.batch_execute(&format!("SET search_path TO {}, public", self.schema))
            .ok()?;
        pg.query(query, &[]).ok()
    }

    /// Every run of the shared ledger (empty before its tables exist).
    pub fn runs(&self) -> Vec<RunRow> {
        let Some(rows) = self.try_sql(
            "SELECT id, spec, slot, revision, state, outcome, reason, due_at, claim_owner \
             FROM runs ORDER BY due_at, id",
        ) else {
            return Vec::new();
        };
        rows.iter()
            .map(|r| RunRow {
                id: r.get(0),
                spec: r.get(1),
                slot: r.get(2),
                revision: r.get(3),
                state: r.get(4),
                outcome: r.get(5),
                reason: r.get(6),
                due_at: r.get(7),
                claim_owner: r.get(8),
            })
            .collect()
    }

    /// The runs of one spec.
    pub fn runs_of(&self, spec: &str) -> Vec<RunRow> {
        self.runs().into_iter().filter(|r| r.spec == spec).collect()
    }

    /// Waits until `spec` has `n` runs, all finished; returns them.
    pub fn wait_finished(&self, spec: &str, n: usize) -> Vec<RunRow> {
        self.wait_until(&format!("{n} finished run(s) of {spec}"), || {
            let runs = self.runs_of(spec);
            (runs.len() >= n && runs.iter().all(|r| r.state == "finished")).then_some(runs)
        })
    }

    /// The shared `spec_views` row of `spec`: (revision, mtime µs, replica).
    pub fn view(&self, spec: &str) -> Option<(Option<String>, i64, String)> {
        let rows = self.try_sql(&format!(
            "SELECT revision, mtime, replica FROM spec_views WHERE spec = '{}'",
            spec.replace('\'', "''")
        ))?;
        rows.first().map(|r| (r.get(0), r.get(1), r.get(2)))
    }

    // -------------------------------------------------------------- waiting

    /// Polls `f` until `Some`; after [`WAIT`] panics naming `what`, with the
    /// replicas' log tails.
    pub fn wait_until<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.log_tails(40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tails(&self, n: usize) -> String {
        self.replicas
            .iter()
            .map(|r| r.log_tail(n))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            if self.replicas[i].stopped() {
                self.replicas[i].signal(libc::SIGCONT);
            }
            self.kill9(i);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(60));
        }
        if let (Some(pg), Err(_)) = (&self.pg, std::env::var("CALLD_KEEP_SCHEMA")) {
            let _ =
                lock(pg).batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
        if let Some(h) = self.emu.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

// ------------------------------------------------------------------ misc

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET (`Connection: close`): (status, body), None when
/// nothing answers within 5 s.
pub fn http_get(addr: impl std::net::ToSocketAddrs, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = addr.to_socket_addrs().ok()?.next()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
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

/// Sleeps until `t` (returns at once when past).
pub fn sleep_until(t: jiff::Timestamp) {
    let d = t.duration_since(jiff::Timestamp::now());
    if d.is_positive() {
        std::thread::sleep(Duration::try_from(d).unwrap_or_default());
    }
}

/// Now plus `ms` milliseconds, whole seconds (an `at` a spec can carry).
pub fn at_in(ms: i64) -> jiff::Timestamp {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(ms);
    // calld truncates to microseconds; keep milliseconds for readability
    jiff::Timestamp::from_millisecond(t.as_millisecond()).unwrap()
}

// ------------------------------------------------------------------ self-tests

/// Unit tests of the proxies, run by the test file that calls
/// `replicas_support::self_tests::all()` (replicas_proxies.rs).
pub mod self_tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo server on 127.0.0.1 that prefixes each reply with `tag`.
    fn echo(rt: &tokio::runtime::Runtime, tag: &'static str) -> (SocketAddr, JoinHandle<()>) {
        let l = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = l.local_addr().unwrap();
        let h = rt.spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let mut out = tag.as_bytes().to_vec();
                                out.extend_from_slice(&buf[..n]);
                                if s.write_all(&out).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, h)
    }

    /// One round trip through `addr`: the reply, None when the connection
    /// fails or closes.
    fn round_trip(addr: SocketAddr, msg: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(msg.as_bytes()).ok()?;
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    pub fn round_robin_rotates_and_skips_down_and_dead_backends() {
        let rt = runtime();
        let (a, _ha) = echo(&rt, "a:");
        let (b, hb) = echo(&rt, "b:");
        let (c, _hc) = echo(&rt, "c:");
        let lb = RoundRobin::start(&rt, vec![a, b, c]);
        let got: Vec<String> = (0..6)
            .map(|_| round_trip(lb.addr(), "x").unwrap())
            .collect();
        assert_eq!(got, ["a:x", "b:x", "c:x", "a:x", "b:x", "c:x"]);
        assert_eq!(lb.served(), [2, 2, 2]);

        // Marked down: skipped.
        lb.set_down(1, true);
        let got: Vec<String> = (0..4)
            .map(|_| round_trip(lb.addr(), "y").unwrap())
            .collect();
        assert!(got.iter().all(|g| g != "b:y"), "{got:?}");
        assert!(got.contains(&"a:y".to_string()) && got.contains(&"c:y".to_string()));
        lb.set_down(1, false);

        // Dead (connection refused): the next one answers, nothing is lost.
        hb.abort();
        wait_refused(b);
        let got: Vec<String> = (0..6)
            .map(|_| round_trip(lb.addr(), "z").unwrap())
            .collect();
        assert!(got.iter().all(|g| g == "a:z" || g == "c:z"), "{got:?}");

        // Every backend down: the client's connection closes unanswered.
        for i in 0..3 {
            lb.set_down(i, true);
        }
        assert_eq!(round_trip(lb.addr(), "w"), None);
        assert!(lb.unserved() >= 1);
    }

    /// A long connection keeps its backend; new connections rotate.
    pub fn round_robin_keeps_a_connection_on_its_backend() {
        let rt = runtime();
        let (a, _ha) = echo(&rt, "a:");
        let (b, _hb) = echo(&rt, "b:");
        let lb = RoundRobin::start(&rt, vec![a, b]);
        let mut s = std::net::TcpStream::connect(lb.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for i in 0..5 {
            s.write_all(format!("m{i}").as_bytes()).unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap();
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), format!("a:m{i}"));
        }
        assert_eq!(round_trip(lb.addr(), "n").unwrap(), "b:n");
    }

    fn wait_refused(addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(Instant::now() < deadline, "{addr} still accepts");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn cuttable_forwards_cuts_and_restores() {
        let rt = runtime();
        let (target, _h) = echo(&rt, "db:");
        let proxy = Cuttable::start(&rt, target);
        assert_eq!(round_trip(proxy.addr(), "q1").unwrap(), "db:q1");

        // A connection open across the cut is dropped by it.
        let mut open = std::net::TcpStream::connect(proxy.addr()).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        open.write_all(b"q2").unwrap();
        let mut buf = [0u8; 64];
        let n = open.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"db:q2");

        proxy.cut();
        assert!(proxy.is_cut());
        // The open connection: EOF or reset, never an answer.
        let _ = open.write_all(b"q3");
        let dead = match open.read(&mut buf) {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        };
        assert!(dead, "a connection survived the cut");
        // New connections are refused.
        let refused = std::net::TcpStream::connect_timeout(&proxy.addr(), Duration::from_secs(2));
        assert!(refused.is_err(), "connected through a cut proxy");
        assert_eq!(round_trip(proxy.addr(), "q4"), None);

        proxy.restore();
        assert!(!proxy.is_cut());
        assert_eq!(round_trip(proxy.addr(), "q5").unwrap(), "db:q5");
        // Cut and restore again: the same port each time.
        proxy.cut();
        assert_eq!(round_trip(proxy.addr(), "q6"), None);
        proxy.restore();
        assert_eq!(round_trip(proxy.addr(), "q7").unwrap(), "db:q7");
        assert!(proxy.forwarded() >= 4);
    }

    /// Through the proxy to the real PostgreSQL, if there is one.
    pub fn cuttable_carries_postgres() {
        let Some(_) = pg_or_skip("cuttable_carries_postgres") else {
            return;
        };
        let rt = runtime();
        let proxy = Cuttable::start(&rt, pg_addr(&pg_url()));
        let url = pg_url_via(&pg_url(), proxy.addr());
        let mut config: postgres::Config = url.parse().unwrap();
        config.connect_timeout(Duration::from_secs(5));
        let mut c = config.connect(postgres::NoTls).expect("through the proxy");
        let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1);
        proxy.cut();
        assert!(
            c.query_one("SELECT 1", &[]).is_err(),
            "a query through a cut"
        );
        assert!(
            config.connect(postgres::NoTls).is_err(),
            "connected through a cut"
        );
        proxy.restore();
        let mut c = config.connect(postgres::NoTls).expect("after restore");
        let two: i32 = c.query_one("SELECT 2", &[]).unwrap().get(0);
        assert_eq!(two, 2);
    }

    pub fn write_file_sets_the_mtime_before_the_file_appears() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("calls.d").join("a.yaml");
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        write_file(&p, "subject: a\n", Some(old));
        assert_eq!(mtime(&p), old);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "subject: a\n");
        write_file(&p, "subject: b\n", None);
        assert!(mtime(&p) > old);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }
}

/// End-to-end self-tests of the harness with the real binary but without
/// the shared ledger (one replica, its own SQLite): what the scenario tests
/// rely on besides the replica feature itself.
pub mod e2e_self_tests {
    use super::*;

    fn one_replica(faketime: Option<&str>) -> Option<Cluster> {
        let mut c = Cluster::new(
            "harness self-test",
            Opts {
                replicas: 1,
                ledger: false,
                ..Opts::default()
            },
        )?;
        if let Some(offset) = faketime
            && !c.set_faketime(0, offset)
        {
            faketime_or_skip("harness self-test under libfaketime")?;
        }
        c.start(0);
        c.wait_ready(0);
        Some(c)
    }

    /// The create's callbackUri is the balancer's; the emulator's
    /// notifications reach the replica through it; the outcome is recorded;
    /// kill -9, SIGSTOP/SIGCONT and restart work on the real process.
    pub fn a_replica_is_notified_through_the_balancer(faketime: Option<&str>) {
        let started = jiff::Timestamp::now();
        let Some(mut c) = one_replica(faketime) else {
            return;
        };
        if faketime.is_some() {
            // The replica's log stamps come from its (faked) wall clock: at
            // least 20 s after the test's clock at its start (+30 s faked;
            // a slow start only makes the stamp later).
            let log = c.r(0).log_text();
            let stamp: jiff::Timestamp = log
                .split_whitespace()
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("no time stamp in the log: {log}"));
            assert!(
                stamp >= started + jiff::SignedDuration::from_secs(20),
                "libfaketime did not move the replica's clock: {stamp} vs {started}"
            );
        }
        c.write_spec(Copies::All, "hello", &spec_yaml("hello", None), None);
        let creates = c.wait_until("the create", || {
            let v = c.creates_for("hello");
            (!v.is_empty()).then_some(v)
        });
        let uri = creates[0].body["callbackUri"].as_str().unwrap().to_string();
        assert!(
            uri.starts_with(&c.lb.url("/api/calls")),
            "callbackUri {uri} is not the balancer's"
        );
        let run = c.wait_until("the run finished (notifications came through)", || {
            c.r(0)
                .history("hello")
                .into_iter()
                .find(|r| r["state"] == "finished")
        });
        assert_eq!(run["outcome"], "completed", "{run:#}");
        assert!(
            c.lb.served()[0] >= 1,
            "no notification through the balancer"
        );

        c.sigstop(0);
        c.wait_until("stopped", || c.r(0).stopped().then_some(()));
        assert_eq!(c.r(0).readyz(), None, "a stopped process answers nothing");
        c.sigcont(0);
        c.wait_ready(0);
        assert!(!c.r(0).stopped());
        c.kill9(0);
        assert!(!c.replicas[0].running());
        c.start(0);
        c.wait_ready(0);
        assert_eq!(
            c.creates_for("hello").len(),
            1,
            "placed again after restart"
        );
    }
}
