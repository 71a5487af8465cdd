//! `calld run`: the daemon. Wires the source (watching the calls
//! directory), the spec loader, the pure [`crate::reconcile`] decision, the
//! ledger, the Graph client and the callback listener together.
//!
//! One controller task owns every decision. It builds a snapshot of the
//! ledger, asks `reconcile` what to do, applies the actions (ledger writes,
//! placement tasks, hang-ups, keep-alives) and sleeps until the decision's
//! `wake_at`, a new snapshot of the calls directory, a notification, a
//! finished request or a signal — whichever comes first. There is no polling
//! loop: with nothing due, the daemon sleeps.
//!
//! Exactly-once: a run is marked `requesting` in the ledger (synced to disk)
//! before its create request leaves; the ledger refuses to mark a run twice,
//! and a run left `requesting` by a crash becomes `unknown`, never re-sent.

mod batch;
mod dirty;
mod identity;
mod logs;
pub(crate) mod replica;
pub mod report;
mod setup;
pub(crate) mod store;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tokio::sync::mpsc;

use crate::callback::Inbound;
use crate::config::Config;
use crate::graph::{CreateOutcome, CreateResult, GraphClient};
use crate::ledger::{
    self, AttemptResult, CallStateUpdate, Disposition, Ledger, Outcome, ResultInfo, Run,
};
use crate::reconcile::scoped::Scope;
use crate::reconcile::{self, CallMemo, Settings};
use crate::source::Snapshot;
use crate::spec::{Context, Spec, SpecSet, render};

pub use setup::{RunArgs, apply_env_overrides, run};

/// The ledger store the daemon uses (SQLite in the state directory, or a
/// PostgreSQL database shared by replicas).
pub type Store = Box<dyn Ledger>;

/// The shared ledger: one store connection, used from blocking threads.
pub type SharedLedger = Arc<Mutex<Store>>;

/// Runs a ledger operation on a blocking thread (SQLite fsyncs; a
/// server-backed store waits on the network).
pub async fn with_ledger<T: Send + 'static>(
    ledger: &SharedLedger,
    f: impl FnOnce(&mut dyn Ledger) -> ledger::Result<T> + Send + 'static,
) -> ledger::Result<T> {
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = ledger.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.as_mut())
    })
    .await
    .expect("ledger task panicked")
}

/// Something that wakes the controller.
#[derive(Debug)]
pub(crate) enum Event {
    /// A create request finished without a result to record (its lease
    /// ran out before it left: already requeued in the ledger).
    Placed { run: String, outcome: &'static str },
    /// A create request finished: its result is recorded with the other
    /// results at hand, in the next decision's first batch (batch.rs).
    Created(Box<CreateDone>),
    /// A run was requested through the admin endpoint (`calld trigger`,
    /// `calld retry`): it is in the ledger, due now.
    Triggered { run: String },
    /// Another replica changed the shared ledger (LISTEN/NOTIFY): decide
    /// again now rather than at the next poll.
    LedgerChanged,
    /// A hang-up or keepAlive finished.
    CallOp {
        run: String,
        op: &'static str,
        gone: bool,
    },
}

/// A create request's answer, not yet recorded. Its run stays in flight
/// (and `requesting` in the ledger) until the batch that records it is
/// committed; a crash before that leaves it `requesting`, recovered as
/// `unknown`, exactly as a crash between the answer and a record of its own.
#[derive(Debug)]
pub(crate) struct CreateDone {
    pub(crate) run: String,
    /// The attempt its `requesting` mark opened.
    pub(crate) attempt: u32,
    /// The run's spec when the request left.
    pub(crate) spec: String,
    pub(crate) result: CreateResult,
}

/// What the daemon was started with, after configuration and sandbox setup.
pub struct Runtime {
    pub config: Config,
    pub calls_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The callbackUri of specs that set none.
    pub public_url: Option<String>,
    /// Sandbox mode: every callbackUri is rewritten to this local listener
    /// (nothing may reach an outside host).
    pub sandbox_callback: Option<String>,
    pub client: Arc<GraphClient>,
    /// Keeps the token fresh off the decision path; the decision reads it.
    pub keeper: Arc<crate::graph::keeper::TokenKeeper>,
    pub ledger: SharedLedger,
    pub jitter_seed: u64,
    /// `--once`: place what is due now, wait for the outcomes, exit.
    pub once: Option<Duration>,
    pub metrics: crate::metrics::Metrics,
    /// systemd: READY/STATUS/WATCHDOG/RELOADING/STOPPING (no-op outside systemd).
    pub notifier: crate::systemd::Notifier,
    /// The latest spec report, served by the admin endpoint's `/v1/specs`.
    pub specs_json: Arc<Mutex<report::SpecsReport>>,
}

/// The controller: every decision is taken here, one at a time.
pub(crate) struct Controller {
    rt: Runtime,
    specs: SpecSet,
    calls: BTreeMap<String, CallMemo>,
    /// Runs whose placement task is running (never two for one run), or
    /// whose answer waits in `created` for its record.
    in_flight: HashSet<String>,
    /// Create answers that arrived since the last ledger batch: recorded
    /// together in the next one (batch.rs). Their requests are over, so
    /// they do not count against `graph.maxConcurrentRequests`.
    created: Vec<CreateDone>,
    /// The last decision recorded create answers: decide again at once
    /// (their runs' specs are read again: a closed or requeued request is
    /// finished or retried, a placed call's deadline is set).
    pub(crate) recorded: bool,
    /// Runs whose hang-up or keepAlive is running.
    ops_in_flight: HashSet<(String, &'static str)>,
    events_tx: mpsc::Sender<Event>,
    /// `--once`: the runs placed by this process, to wait for.
    watched: BTreeSet<String>,
    /// The ledger's open state as last read, spec by spec (dirty.rs).
    cache: dirty::OpenCache,
    /// What the next decision looks at (dirty.rs).
    pub(crate) dirty: reconcile::scoped::DirtySet,
    /// The inputs every spec's decision depends on, as last seen.
    globals_key: Option<String>,
    /// The held names of the last decision.
    last_held: BTreeSet<String>,
    /// The spec report's bookkeeping (report.rs).
    report: report::ReportState,
    /// The identity step's save of the known specs, for the decision's
    /// first batch ([`crate::ledger::Write::Known`]).
    pending_known: Option<ledger::Write>,
    last_status: String,
    /// Findings already logged, so each is logged once per file revision.
    load_log: logs::LoadLog,
    /// A due run was left `scheduled` by the last decision because
    /// `graph.maxConcurrentRequests` requests were in flight; the next
    /// finished request triggers the decision that places it.
    pub(crate) deferred: bool,
    /// Run identity between snapshots (loaded from the ledger at the first
    /// decision): [`crate::identity`].
    identity: Option<crate::identity::Tracked>,
    /// The names the snapshots loaded since the last identity step touched.
    ident_touched: BTreeSet<String>,
    /// What the last identity step saw (identity.rs).
    ident_last: Option<identity::LastStep>,
    /// Whether the calls directory has been read successfully once.
    pub(crate) dir_known: bool,
    /// The names held at the last decision, with why (for the spec report).
    held_now: BTreeMap<String, String>,
    /// Paths the last listing could not read (their specs are held).
    unreadable: Vec<String>,
    /// +1 per loaded snapshot: the identity step runs again only for a new
    /// one (or when a mass hold ends).
    snapshot_gen: u64,
    /// The last identity step: (snapshot_gen, held names, wake_at).
    identity_cache: Option<(u64, BTreeSet<String>, Option<Timestamp>)>,
    /// The spec set kept file by file: a snapshot costs the files that
    /// changed (issue 12, docs/watching.md "Cost of a change").
    loader: crate::spec::IncrementalSet,
    /// The call promises as the last decision read them from the ledger
    /// (the expected values of its keepAlive/hang-up compare-and-sets).
    stored_promises: batch::Promises,
    /// Set when the ledger is shared by replicas (docs/replicas.md).
    pub(crate) replica: Option<replica::Replica>,
    /// The specs left to another replica's newer copy at the last decision.
    superseded_now: BTreeMap<String, String>,
}

/// How the controller loop ended.
pub(crate) enum Exit {
    Signal,
    /// `--once` finished: the runs it placed, with their final state.
    Once(Vec<Run>),
    OnceTimeout(Vec<Run>),
}

impl Controller {
    pub(crate) fn new(rt: Runtime, events_tx: mpsc::Sender<Event>) -> Self {
        Controller {
            rt,
            specs: SpecSet::default(),
            calls: BTreeMap::new(),
            in_flight: HashSet::new(),
            created: Vec::new(),
            recorded: false,
            ops_in_flight: HashSet::new(),
            events_tx,
            watched: BTreeSet::new(),
            cache: dirty::OpenCache::default(),
            dirty: reconcile::scoped::DirtySet::new(),
            globals_key: None,
            last_held: BTreeSet::new(),
            report: report::ReportState::default(),
            pending_known: None,
            last_status: String::new(),
            load_log: logs::LoadLog::default(),
            deferred: false,
            identity: None,
            ident_touched: BTreeSet::new(),
            ident_last: None,
            dir_known: false,
            held_now: BTreeMap::new(),
            unreadable: Vec::new(),
            snapshot_gen: 0,
            identity_cache: None,
            loader: crate::spec::IncrementalSet::new(),
            stored_promises: Default::default(),
            replica: None,
            superseded_now: BTreeMap::new(),
        }
    }

    /// Validates a new snapshot of the calls directory.
    pub(crate) fn load_snapshot(&mut self, snap: &Snapshot) {
        let started = std::time::Instant::now();
        let ctx = Context {
            defaults: &self.rt.config.defaults,
            public_url: self.rt.public_url.as_deref(),
            now: crate::clock::now(),
        };
        let update = snap.update_spec_set(&mut self.loader, &ctx);
        tracing::debug!(
            loaded = update.files_loaded,
            removed = update.files_removed,
            names = update.names_resolved,
            "spec set updated"
        );
        let touched = self.loader.take_touched();
        let (old_part, mut set) = self.patch_specs(&touched);
        for name in &touched {
            self.dirty.mark(name);
        }
        self.ident_touched.extend(touched.iter().cloned());
        self.report.touch(&touched);
        if snap.root_error.is_none() {
            self.dir_known = true;
        }
        self.snapshot_gen += 1;
        self.unreadable = snap
            .problems
            .iter()
            .map(|p| p.path.display().to_string())
            .collect();
        if let (Some(e), false) = (&snap.root_error, self.dir_known) {
            tracing::warn!(error = %e, "the calls directory has never been read: nothing is placed or canceled from the ledger's planned runs until it is (retrying every second)");
        }
        if let Some(e) = &snap.root_error {
            set.diagnostics.push(crate::spec::Diagnostic::new(
                &self.rt.calls_dir.display().to_string(),
                crate::spec::yaml::Pos::default(),
                crate::spec::Severity::Error,
                "",
                format!("cannot read the calls directory: {e}"),
            ));
        }
        self.load_log.log_touched(&old_part, &set, &touched, snap);
        self.rt.metrics.watcher_rescan();
        self.rt.metrics.set_spec_files(
            (set.file_count - set.invalid_files.len()) as u64,
            set.invalid_files.len() as u64,
        );
        self.specs = set;
        let loaded = started.elapsed();
        self.write_specs_report();
        tracing::debug!(
            names = touched.len(),
            load_ms = loaded.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "snapshot loaded"
        );
    }

    /// Why the loaded specs are not all valid, if they are not (`--once`
    /// exits 1 then).
    pub(crate) fn invalid_report(&self) -> Option<String> {
        let errors = self.specs.error_count();
        (errors > 0).then(|| {
            let first = self
                .specs
                .diagnostics
                .iter()
                .find(|d| d.is_error())
                .map(|d| format!(": first: {d}"))
                .unwrap_or_default();
            format!(
                "{errors} error(s) in {} invalid spec file(s){first}",
                self.specs.invalid_files.len()
            )
        })
    }

    /// One decision: read the ledger's open state of the specs to decide
    /// (those that changed and those whose time came: [`dirty`]),
    /// reconcile them, apply. Returns when to decide again.
    pub(crate) async fn decide(&mut self) -> anyhow::Result<Option<Timestamp>> {
        let now = crate::clock::now();
        self.deferred = false;
        self.recorded = false;
        // A shared ledger: first this replica's part of the common memory
        // (replica.rs): runs whose replica died mid-request become
        // `unknown`, this copy's changed views are published, the newest
        // views are read.
        let superseded = match self.replica_step(now).await {
            Ok(s) => s,
            Err(e) => return Err(self.ledger_trouble(e)),
        };
        let health = self.rt.keeper.health();
        let granted = self.granted_roles(&health);
        // Live mode: nothing is placed before the token keeper's first answer
        // (the roles are checked first), nor while no token can be had.
        let blocked = self.rt.sandbox_callback.is_none() && (health.blocked() || !health.checked);
        // What every spec's decision depends on: a change decides them all.
        self.note_globals(format!(
            "{blocked}\0{granted:?}\0{:?}\0{}",
            self.rt.config.daemon, self.dir_known
        ));
        // `--once` decides everything; so does a replica: the others
        // change the shared ledger without marking this one's specs.
        if self.rt.once.is_some() || self.replica.is_some() {
            self.dirty.mark_all();
        }
        let started = std::time::Instant::now();
        let mut scope = self.dirty.take(now);
        let mut part = match self.read_scope(&scope).await {
            Ok(p) => p,
            Err(e) => return Err(self.ledger_trouble(e)),
        };
        let read_at = started.elapsed();
        if let Some(r) = &mut self.replica
            && r.problem.take().is_some()
        {
            tracing::info!("the shared ledger answers again");
            self.rt.metrics.ledger_up(true);
        }
        let left_to_others: BTreeSet<String> = superseded.keys().cloned().collect();
        self.note_superseded(superseded);
        // Renames, held names, upgrades: before the decision (docs/runs.md).
        let cache = std::mem::take(&mut self.cache);
        let ident = self.identity_step(now, &cache).await;
        self.cache = cache;
        let mut ident = ident?;
        // another replica's newer copy: neither placed nor canceled here
        ident.held.extend(left_to_others.iter().cloned());
        if ident.ledger_changed {
            scope = Scope::Full;
            part = self.read_scope(&scope).await?;
            self.write_specs_report();
        }
        let held_changed = self.held_changed(&ident.held);
        if let Scope::Specs(names) = &scope
            && !held_changed.is_subset(names)
        {
            let mut names = names.clone();
            names.extend(held_changed);
            scope = Scope::Specs(names);
            part = self.read_scope(&scope).await?;
        }
        // The memos of runs no longer open go.
        let cache = &self.cache;
        self.calls.retain(|id, _| cache.has_run(id));
        // A run whose request task is running is in flight whatever the ledger says.
        let in_flight: Vec<String> = self
            .in_flight
            .iter()
            .filter(|id| match &scope {
                Scope::Full => true,
                Scope::Specs(_) => scope.contains(cache.spec_of(id).unwrap_or_default()),
            })
            .cloned()
            .collect();
        let scoped_specs;
        let (specs, state) = match (&scope, &mut part) {
            (Scope::Specs(names), Some(part)) => {
                scoped_specs = reconcile::scoped::specs_in(&self.specs.specs, names);
                (&scoped_specs, part)
            }
            _ => (&self.specs.specs, &mut self.cache.state),
        };
        let filtered;
        let specs = if left_to_others.is_empty() {
            specs
        } else {
            filtered = specs
                .iter()
                .filter(|(n, _)| !left_to_others.contains(*n))
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect::<BTreeMap<_, _>>();
            &filtered
        };
        for id in in_flight {
            state.progress.entry(id).or_default().in_flight = true;
        }
        // The promises of calls in progress come from the ledger (they
        // survive a restart); what this process sent since is at least as new.
        self.stored_promises = Arc::new(state.promises.clone());
        for (id, p) in &state.promises {
            let m = self.calls.entry(id.clone()).or_default();
            m.placed_hangup_after = Some(p.hangup_after);
            m.last_keep_alive = m.last_keep_alive.max(p.last_keep_alive);
            m.hangup_requested_at = m.hangup_requested_at.max(p.hangup_requested_at);
        }
        let input = reconcile::Input {
            now,
            specs,
            held: &ident.held,
            runs: &state.runs,
            progress: &state.progress,
            latest: &state.latest,
            last_slots: &state.last_slots,
            calls: &self.calls,
            granted_roles: granted.as_deref(),
            jitter_seed: self.rt.jitter_seed,
            settings: Settings {
                notification_timeout: self.rt.config.daemon.notification_timeout,
                // never 0: a keepAlive on every decision would spin
                keep_alive_interval: self
                    .rt
                    .config
                    .daemon
                    .keep_alive_interval
                    .max(Duration::from_secs(1)),
                placement_blocked: blocked,
                transient_retry_window: self.rt.config.daemon.transient_retry_window,
                max_call_duration: self.rt.config.daemon.max_call_duration,
                ..Settings::default()
            },
        };
        let ident_at = started.elapsed();
        let (decision, wakes) = reconcile::reconcile_with_wakes(&input);
        let decided_at = started.elapsed();
        let actions = decision.actions.len();
        self.dirty.decided(&scope, &wakes);
        for d in &decision.dropped {
            tracing::warn!(spec = %d.spec, count = d.count, first = %d.first, last = %d.last, "slots passed during downtime were not recorded (too many)");
        }
        // The specs acted on are read again at the next decision.
        for a in &decision.actions {
            self.dirty.mark(dirty::action_spec(a));
        }
        // Group commit: one transaction for the decision's ledger writes,
        // one for its `requesting` marks (then the requests): batch.rs.
        let inserted = self.apply_all(decision.actions).await;
        if blocked && let Some(problem) = &health.problem {
            // the open runs, and those this decision inserted
            let mut all: Vec<Run> = self.cache.state.runs.clone();
            all.extend(inserted.into_values());
            self.note_waiting(&all, &problem.describe(), now).await;
        }
        self.update_status();
        tracing::debug!(
            specs = match &scope {
                Scope::Full => self.specs.specs.len(),
                Scope::Specs(s) => s.len(),
            },
            full = matches!(scope, Scope::Full),
            actions,
            read_ms = read_at.as_secs_f64() * 1e3,
            identity_ms = (ident_at - read_at).as_secs_f64() * 1e3,
            reconcile_ms = (decided_at - ident_at).as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "decision"
        );
        let mut wake = match (self.dirty.next_wake(), ident.wake_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.recorded {
            wake = Some(now);
        }
        Ok(wake)
    }

    /// A shared ledger's part of a decision (nothing for SQLite): reaps the
    /// runs whose replica died mid-request, publishes this copy's changed
    /// views and reads the newest ones. Returns the specs to leave to
    /// another replica's newer copy, with why.
    async fn replica_step(&mut self, now: Timestamp) -> ledger::Result<BTreeMap<String, String>> {
        let Some(r) = &self.replica else {
            return Ok(BTreeMap::new());
        };
        // nothing is published before the calls directory was read once
        let views = if self.dir_known {
            let held: BTreeSet<String> = self.held_now.keys().cloned().collect();
            r.views_to_publish(&self.specs.specs, &held, &self.rt.calls_dir, now)
        } else {
            Vec::new()
        };
        let (reaped, newest, views) = with_ledger(&self.rt.ledger, move |l| {
            let reaped = l.reap_expired(now)?;
            if !views.is_empty() {
                l.publish_views(&views)?;
            }
            Ok((reaped, l.newest_views()?, views))
        })
        .await?;
        for run in &reaped {
            log_outcome(run, Outcome::Unknown, run.reason.as_deref().unwrap_or(""));
            self.rt.metrics.run_finished(Outcome::Unknown.as_str());
        }
        let r = self.replica.as_mut().expect("checked above");
        r.published(views);
        r.newest = newest;
        Ok(r.superseded(&self.specs.specs))
    }

    /// The ledger failed a decision: with a shared ledger the daemon stays
    /// up, not ready, placing nothing, until it answers again (the runs
    /// wait within their deadlines); a local ledger's failure is fatal.
    fn ledger_trouble(&mut self, e: ledger::LedgerError) -> anyhow::Error {
        let e = anyhow::Error::new(e);
        self.note_ledger_error(&e);
        e
    }

    /// Notes (once per distinct error) that the shared ledger failed.
    pub(crate) fn note_ledger_error(&mut self, e: &anyhow::Error) {
        if let Some(r) = &mut self.replica {
            let why = format!("ledger unreachable: {e:#}");
            if r.problem.as_deref() != Some(why.as_str()) {
                tracing::warn!(error = %format!("{e:#}"), "the shared ledger is unreachable: placing nothing until it answers");
            }
            r.problem = Some(why);
            self.rt.metrics.ledger_up(false);
        }
    }

    /// Whether the ledger is shared by replicas.
    pub(crate) fn is_shared(&self) -> bool {
        self.replica.is_some()
    }

    /// Why the shared ledger cannot be used now, if so.
    pub(crate) fn ledger_problem(&self) -> Option<String> {
        self.replica.as_ref().and_then(|r| r.problem.clone())
    }

    /// The specs left to another replica's newer copy, for the spec
    /// report (`calld status` shows them held, with why).
    fn note_superseded(&mut self, superseded: BTreeMap<String, String>) {
        if superseded == self.superseded_now {
            return;
        }
        for name in self.superseded_now.keys() {
            self.held_now.remove(name);
        }
        self.held_now
            .extend(superseded.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !superseded.is_empty() || !self.superseded_now.is_empty() {
            tracing::info!(specs = ?superseded.keys().collect::<Vec<_>>(), "specs left to another replica's newer copy");
        }
        self.superseded_now = superseded;
        self.write_specs_report();
    }

    /// Nothing can be placed (no token): the due `scheduled` runs say why
    /// in their reason (`waiting: token endpoint: ... since ...`), which
    /// `calld status` and `history` show.
    async fn note_waiting(&mut self, runs: &[Run], why: &str, now: Timestamp) {
        let note = format!("{}{why}", ledger::WAITING_PREFIX);
        let due = runs
            .iter()
            .filter(|r| r.state == ledger::RunState::Scheduled && r.due_at <= now);
        if self.rt.once.is_some() {
            // `--once` waits for (and reports) the runs it could not place
            self.watched.extend(due.clone().map(|r| r.id.clone()));
        }
        let ids: Vec<String> = due
            .filter(|r| r.reason.as_deref() != Some(note.as_str()))
            .filter(|r| {
                r.reason
                    .as_deref()
                    .is_none_or(|x| x.starts_with(ledger::WAITING_PREFIX))
            })
            .map(|r| r.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        for r in runs.iter().filter(|r| ids.contains(&r.id)) {
            self.dirty.mark(&r.spec);
        }
        let why = why.to_string();
        let res = with_ledger(&self.rt.ledger, move |l| {
            for id in &ids {
                l.note_waiting(id, &why, now)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "cannot note why runs wait");
        }
    }

    /// The token's roles (live mode), to refuse a spec whose permission is
    /// missing before calling Graph. `None` while unknown (and in sandbox
    /// mode, where the emulator grants every role). Read from the token
    /// keeper's last known value: the decision never waits for the network.
    fn granted_roles(&self, health: &crate::graph::keeper::TokenHealth) -> Option<Vec<String>> {
        if self.rt.sandbox_callback.is_some() || !health.ok {
            return None;
        }
        health.roles.clone()
    }

    fn due_of(&self, id: &str) -> Option<Timestamp> {
        self.cache.due_of(id)
    }

    /// Sends the create request of a run whose `requesting` mark (attempt
    /// `attempt`) is on disk, from a task of its own.
    fn send_create(&mut self, id: String, spec: Arc<Spec>, attempt: u32, now: Timestamp) {
        self.in_flight.insert(id.clone());
        // a new call: nothing sent for it yet (an earlier attempt's
        // keepAlive or hang-up times do not carry over)
        self.calls.remove(&id);
        if let Some(due) = self.due_of(&id) {
            let lag = now.duration_since(due);
            self.rt
                .metrics
                .placement_lag(Duration::try_from(lag).unwrap_or(Duration::ZERO));
        }
        if self.rt.once.is_some() {
            self.watched.insert(id.clone());
        }
        let mut body = render::body_for_run(&spec, &id);
        if let Some(local) = &self.rt.sandbox_callback {
            let uri = render::callback_uri_for_run(local, &id);
            body["callbackUri"] = json!(uri);
        }
        // Each attempt has its own call: its notifications say which.
        if let Some(uri) = body.get("callbackUri").and_then(|u| u.as_str()) {
            let uri = with_attempt_marker(uri, attempt);
            body["callbackUri"] = json!(uri);
        }
        let url = self.rt.client.create_url();
        let client = self.rt.client.clone();
        let ledger = self.rt.ledger.clone();
        let events = self.events_tx.clone();
        let metrics = self.rt.metrics.clone();
        tracing::info!(run = %id, spec = %spec.name, attempt, "placing call");
        let fence = self.replica.as_ref().map(|r| (r.claims.clone(), r.lease));
        tokio::spawn(async move {
            // A shared ledger: the request leaves only while the claim's
            // lease certainly holds by this machine's own clock (a process
            // that stalled since the claim sends nothing: another replica
            // may hold the run now).
            if let Some((claims, lease)) = &fence
                && !replica::Replica::lease_holds(claims, &id, *lease)
            {
                tracing::warn!(run = %id, "not sent: the claim's lease ran out before the request left (fenced); the run goes back to scheduled");
                metrics.fenced_request();
                let end = ledger::CreateEnd::Requeue {
                    retry_after: Some(Duration::ZERO),
                    error: "the claim's lease ran out before the request left".into(),
                };
                let rid = id.clone();
                let _ = with_ledger(&ledger, move |l| {
                    l.record_create(&rid, attempt, &[], &end, crate::clock::now())
                })
                .await;
                claims.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                let _ = events
                    .send(Event::Placed {
                        run: id,
                        outcome: "fenced",
                    })
                    .await;
                return;
            }
            let result = client.create_call_once(&url, &body).await;
            test_hook_stall_after_create().await;
            for a in &result.attempts {
                let secs = a.finished_at.duration_since(a.started_at);
                metrics.graph_request(
                    "create",
                    a.status,
                    Duration::try_from(secs).unwrap_or(Duration::ZERO),
                );
            }
            // recorded by the controller with the other answers at hand
            let _ = events
                .send(Event::Created(Box::new(CreateDone {
                    run: id,
                    attempt,
                    spec: spec.name.clone(),
                    result,
                })))
                .await;
        });
    }

    fn spawn_call_op(&mut self, id: String, call_id: String, op: &'static str, reason: String) {
        if !self.ops_in_flight.insert((id.clone(), op)) {
            return;
        }
        let client = self.rt.client.clone();
        let events = self.events_tx.clone();
        let metrics = self.rt.metrics.clone();
        tokio::spawn(async move {
            let result = match op {
                "hangUp" => {
                    tracing::info!(run = %id, call_id = %call_id, reason = %reason, "hanging up");
                    client.hang_up(&call_id).await
                }
                _ => client.keep_alive(&call_id).await,
            };
            for a in &result.attempts {
                let secs = a.finished_at.duration_since(a.started_at);
                metrics.graph_request(
                    op,
                    a.status,
                    Duration::try_from(secs).unwrap_or(Duration::ZERO),
                );
            }
            let gone = matches!(result.outcome, crate::graph::CallOpOutcome::Gone { .. });
            match &result.outcome {
                crate::graph::CallOpOutcome::Done => {
                    tracing::debug!(run = %id, call_id = %call_id, op, "done")
                }
                other => {
                    tracing::warn!(run = %id, call_id = %call_id, op, result = ?other, "call operation did not succeed")
                }
            }
            let _ = events.send(Event::CallOp { run: id, op, gone }).await;
        });
    }

    /// A request task finished.
    pub(crate) async fn on_event(&mut self, event: Event) {
        match event {
            Event::Placed { run, outcome } => {
                tracing::debug!(run = %run, result = outcome, "create request finished");
                self.in_flight.remove(&run);
                self.run_changed(&run).await;
            }
            Event::Created(done) => {
                tracing::debug!(run = %done.run, result = done.result.outcome.as_str(), "create request finished");
                self.created.push(*done);
            }
            Event::Triggered { run } => {
                tracing::debug!(run = %run, "run requested through the admin endpoint");
                self.run_changed(&run).await;
            }
            Event::LedgerChanged => {}
            Event::CallOp { run, op, gone } => {
                self.ops_in_flight.remove(&(run.clone(), op));
                self.run_changed(&run).await;
                let hung_up = self
                    .calls
                    .get(&run)
                    .is_some_and(|m| m.hangup_requested_at.is_some());
                if gone && op == "keepAlive" && hung_up {
                    // Our own hang-up ended the call (a keepAlive due at the
                    // same moment lost the race): Graph's `terminated`
                    // notification says how it ended, not this 404.
                    tracing::debug!(run = %run, "keepAlive: 404 after our hang-up; waiting for Graph's terminated notification");
                } else if gone && op == "keepAlive" {
                    // 404: the call is gone; record its end as Graph would have.
                    let now = crate::clock::now();
                    let update = CallStateUpdate {
                        state: ledger::CallState::Terminated,
                        call_id: None,
                        result_info: Some(ResultInfo {
                            code: Some(404),
                            subcode: None,
                            message: Some("keepAlive: the call no longer exists".into()),
                        }),
                    };
                    let _ = with_ledger(&self.rt.ledger, move |l| {
                        l.record_call_state(&run, &update, now)
                    })
                    .await;
                }
            }
        }
    }

    /// Validated notifications from the callback listener, recorded in one
    /// ledger transaction (one fsync for the whole batch).
    pub(crate) async fn on_notifications(&mut self, inbound: Vec<Inbound>) {
        let now = crate::clock::now();
        // Each notice remembers which request it came from, so a request is
        // acknowledged (202) only once all of its notices are recorded.
        let mut owners = Vec::new();
        let mut batch: Vec<ledger::StateNotice> = Vec::new();
        for (i, n) in inbound.iter().enumerate() {
            for event in &n.events {
                let Some(state) = event.state.as_ref() else {
                    continue;
                };
                owners.push(i);
                batch.push(ledger::StateNotice {
                    // calldRun first; else the Graph call id
                    run_id: n.run_id.clone(),
                    attempt: n.attempt,
                    tenant_id: n.tenant_id.clone(),
                    update: CallStateUpdate {
                        state: ledger::CallState::from(state.as_str()),
                        call_id: event.call_id.clone(),
                        result_info: event.result_info.as_ref().map(|r| ResultInfo {
                            code: Some(r.code),
                            subcode: Some(r.subcode),
                            message: r.message.clone(),
                        }),
                    },
                });
            }
        }
        let mut recorded = vec![true; inbound.len()];
        let mut wrong_tenant = vec![false; inbound.len()];
        if !batch.is_empty() {
            let notices = batch.clone();
            match with_ledger(&self.rt.ledger, move |l| {
                l.record_call_states(&notices, now)
            })
            .await
            {
                Ok(results) => {
                    for ((notice, owner), res) in batch.iter().zip(&owners).zip(results) {
                        match res {
                            Ok(Some(n)) => {
                                self.dirty.mark(&n.run.spec);
                                self.rt.metrics.notification("recorded");
                                if n.change == ledger::StateChange::Recorded {
                                    tracing::debug!(run = %n.run.id, spec = %n.run.spec, state = %notice.update.state, change = ?n.change, "notification")
                                } else {
                                    // one line per state change of a call (answered: established)
                                    tracing::info!(run = %n.run.id, spec = %n.run.spec, call_id = n.run.call_id.as_deref().unwrap_or(""), state = %n.run.state, call_state = %notice.update.state, "call state changed")
                                }
                            }
                            Ok(None) => {
                                self.rt.metrics.notification("unmatched");
                                tracing::info!(
                                    call_id = notice.update.call_id.as_deref().unwrap_or(""),
                                    run = notice.run_id.as_deref().unwrap_or(""),
                                    "notification for a call calld did not place; ignored"
                                )
                            }
                            Err(e @ ledger::LedgerError::WrongTenant { .. }) => {
                                self.rt.metrics.notification("wrongTenant");
                                tracing::warn!(error = %e, "notification refused (401): signed for another tenant than its run's");
                                wrong_tenant[*owner] = true;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot record a notification; Graph is asked to send it again");
                                recorded[*owner] = false;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, count = batch.len(), "cannot record notifications; Graph is asked to send them again");
                    recorded.iter_mut().for_each(|r| *r = false);
                }
            }
        }
        // Recorded (or not ours): the listener may answer 202; otherwise
        // dropping the ack answers 503 and Graph delivers it again.
        for ((n, ok), wrong) in inbound.iter().zip(recorded).zip(wrong_tenant) {
            if wrong {
                n.ack.refuse();
            } else if ok {
                n.ack.done();
            }
        }
    }

    /// The one-line summary for logs and systemd's STATUS=.
    fn update_status(&mut self) {
        let (up, next) = self.cache.summary();
        let next = next
            .map(|(due, spec)| format!(", next run {due} {spec}"))
            .unwrap_or_default();
        let invalid = self.specs.invalid_files.len();
        let status = format!(
            "{} specs, {invalid} invalid{next}, {up} calls up",
            self.specs.specs.len()
        );
        self.rt.metrics.set_calls_up(up as u64);
        if status != self.last_status {
            tracing::debug!(status = %status, "status");
            let _ = self.rt.notifier.status(&status);
            self.last_status = status;
        }
    }

    pub(crate) fn status_line(&self) -> &str {
        &self.last_status
    }

    /// `--once`: whether every run placed by this process has finished.
    pub(crate) async fn once_done(&self) -> anyhow::Result<Option<Vec<Run>>> {
        if !self.in_flight.is_empty() {
            return Ok(None);
        }
        let runs = self.load_watched().await?;
        Ok(runs
            .iter()
            .all(|r| r.state == ledger::RunState::Finished)
            .then_some(runs))
    }

    /// `--once` after its timeout: the runs as they are now.
    pub(crate) async fn watched_runs(&self) -> Vec<Run> {
        self.load_watched().await.unwrap_or_default()
    }

    /// The runs placed (or refused) by this process, from the ledger.
    async fn load_watched(&self) -> ledger::Result<Vec<Run>> {
        let ids: Vec<String> = self.watched.iter().cloned().collect();
        with_ledger(&self.rt.ledger, move |l| {
            let mut out = Vec::new();
            for id in &ids {
                out.extend(l.run(id)?);
            }
            Ok(out)
        })
        .await
    }
}

/// The ledger write that records a create request's attempts and result
/// (`Ledger::record_create`, as a [`ledger::Write::Create`] of a batch):
/// the 201's call id and `placed` together; a request Graph did not
/// process (429, 503 with `Retry-After`, refused connection, no token)
/// sends the run back to `scheduled` with its earliest next try, durably,
/// before any wait.
pub(crate) fn create_write(done: &CreateDone) -> ledger::Write {
    let result = &done.result;
    let (end, reason) = create_end(result);
    let last = result.attempts.len().saturating_sub(1);
    let final_disposition = final_disposition(result, &end);
    let steps: Vec<ledger::CreateStep> = result
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| ledger::CreateStep {
            result: AttemptResult {
                disposition: Some(if i == last {
                    final_disposition
                } else {
                    Disposition::Failed
                }),
                http_status: a.status,
                error_code: a.error_code.clone(),
                error_message: a
                    .error_message
                    .clone()
                    .or_else(|| if i == last { reason.clone() } else { None }),
                request_id: a.request_id.clone(),
                client_request_id: Some(a.client_request_id.clone()),
            },
            started_at: a.started_at,
            finished_at: a.finished_at,
            client_request_id: a.client_request_id.clone(),
        })
        .collect();
    ledger::Write::Create {
        id: done.run.clone(),
        first: done.attempt,
        steps,
        end,
    }
}

/// The disposition of a create request's last attempt.
fn final_disposition(result: &CreateResult, end: &ledger::CreateEnd) -> Disposition {
    match end {
        ledger::CreateEnd::Placed { .. } => Disposition::Placed,
        ledger::CreateEnd::Requeue { .. } => Disposition::Failed,
        ledger::CreateEnd::Closed => match &result.outcome {
            CreateOutcome::Rejected { .. } => Disposition::Rejected,
            CreateOutcome::Failed { .. } => Disposition::Failed,
            _ => Disposition::Unknown,
        },
    }
}

/// The log line of a recorded create request.
pub(crate) fn log_created(done: &CreateDone, recorded: &ledger::CreateRecorded) {
    let (id, spec_name) = (&done.run, &done.spec);
    let (end, reason) = create_end(&done.result);
    match &end {
        ledger::CreateEnd::Placed { call_id } => {
            tracing::info!(run = %id, spec = %spec_name, call_id = %call_id, "call placed")
        }
        ledger::CreateEnd::Requeue { error, .. } => {
            let at = recorded
                .not_before
                .map(|t| t.to_string())
                .unwrap_or_default();
            tracing::warn!(run = %id, spec = %spec_name, error = %error, next_try = %at, "create request not processed by Graph; the run stays scheduled")
        }
        ledger::CreateEnd::Closed => {
            let result = final_disposition(&done.result, &end);
            tracing::warn!(run = %id, spec = %spec_name, result = result.as_str(), reason = reason.as_deref().unwrap_or(""), "create request did not place the call")
        }
    }
}

/// How a create result ends in the ledger, and the reason to record.
fn create_end(result: &CreateResult) -> (ledger::CreateEnd, Option<String>) {
    match &result.outcome {
        CreateOutcome::Placed { call_id, .. } => (
            ledger::CreateEnd::Placed {
                call_id: call_id.clone(),
            },
            None,
        ),
        CreateOutcome::Rejected { status, error } => (
            ledger::CreateEnd::Closed,
            Some(format!("HTTP {status}: {}", error.summary())),
        ),
        CreateOutcome::Unknown { reason } => (ledger::CreateEnd::Closed, Some(reason.clone())),
        CreateOutcome::Failed { reason } => {
            let last = result.attempts.last();
            // A request that could not even be built is a bug, not a passing trouble.
            if last.is_some_and(|a| a.error_code.as_deref() == Some("invalidRequest")) {
                return (ledger::CreateEnd::Closed, Some(reason.clone()));
            }
            let retry_after = match last.map(|a| a.disposition) {
                Some(crate::graph::Disposition::Retry { after }) => Some(after),
                _ => None,
            };
            (
                ledger::CreateEnd::Requeue {
                    retry_after,
                    error: reason.clone(),
                },
                Some(reason.clone()),
            )
        }
    }
}

/// The callbackUri with `calldAttempt=<n>` (next to `calldRun`): the
/// notifications of each attempt's call say which attempt they are about.
pub fn with_attempt_marker(uri: &str, attempt: u32) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            url.query_pairs_mut()
                .append_pair("calldAttempt", &attempt.to_string());
            url.to_string()
        }
        Err(_) => uri.to_string(),
    }
}

/// Test hook (`CALLD_TEST_HOOKS=1` and `CALLD_TEST_STALL_AFTER_CREATE=<ms>`):
/// waits between a create's answer and its ledger write, so a test can
/// kill -9 the daemon in that window.
async fn test_hook_stall_after_create() {
    if std::env::var_os("CALLD_TEST_HOOKS").is_none() {
        return;
    }
    if let Some(ms) = std::env::var("CALLD_TEST_STALL_AFTER_CREATE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!(
            ms,
            "test hook: stalling between the create's answer and its record"
        );
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// A run that ends `rejected`, `failed` or `unknown` after a request: its
/// reason gets the last attempt's error (HTTP status, Graph's code and
/// message), so the outcome line, `status` and `--once` say why.
fn with_attempt_error(
    l: &dyn Ledger,
    id: &str,
    outcome: Outcome,
    reason: String,
) -> ledger::Result<String> {
    if !matches!(
        outcome,
        Outcome::Rejected | Outcome::Failed | Outcome::Unknown
    ) {
        return Ok(reason);
    }
    let attempts = l.attempts(id)?;
    let Some(last) = attempts.iter().max_by_key(|a| a.number) else {
        return Ok(reason);
    };
    let mut text = String::new();
    if let Some(s) = last.http_status {
        text = format!("HTTP {s}");
    }
    if let Some(c) = &last.error_code {
        text = format!("{text} {c}").trim_start().to_string();
    }
    if let Some(m) = last.error_message.as_deref().filter(|m| !m.is_empty()) {
        // the daemon's own message may already start with "HTTP 403: "
        let m = match last.http_status {
            Some(s) => m.strip_prefix(&format!("HTTP {s}: ")).unwrap_or(m),
            None => m,
        };
        text = if text.is_empty() {
            m.to_string()
        } else {
            format!("{text}: {m}")
        };
    }
    Ok(if text.is_empty() {
        reason
    } else {
        format!("{reason} ({text})")
    })
}

/// One structured log line per outcome.
pub(crate) fn log_outcome(run: &Run, outcome: Outcome, reason: &str) {
    let result_info = run
        .result_info
        .as_ref()
        .map(|r| format!("{}/{}", r.code.unwrap_or(0), r.subcode.unwrap_or(0)))
        .unwrap_or_default();
    tracing::info!(
        run = %run.id,
        spec = %run.spec,
        outcome = outcome.as_str(),
        call_id = run.call_id.as_deref().unwrap_or(""),
        result_info = %result_info,
        reason = %reason,
        "run finished"
    );
}

/// The file `calld status` reads for the daemon's view of the specs.
pub const SPECS_REPORT: &str = "specs.json";

/// The daemon's view of the calls directory, as JSON.
pub fn specs_report(set: &SpecSet) -> serde_json::Value {
    let specs: Vec<_> = set
        .specs
        .values()
        .map(|s| crate::status::spec_report_entry(s))
        .collect();
    json!({
        "updatedAt": crate::clock::now().to_string(),
        "files": set.file_count,
        "specs": specs,
        "invalidNames": set.invalid_names,
        "invalidFiles": set.invalid_files,
        "diagnostics": set.diagnostics,
    })
}
