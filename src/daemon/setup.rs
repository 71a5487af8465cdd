//! Starting the daemon: configuration (file, `CALLD_*` environment, flags),
//! sandbox mode, the ledger, the Graph client, the callback listener, the
//! source; then the controller loop with signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::{Controller, Event, Exit, Runtime, with_ledger};
use crate::callback::CallbackOptions;
use crate::config::{Config, GraphMode, Secret};
use crate::graph::auth::token_url;
use crate::graph::{
    Credential, GraphClient, GraphClientOptions, TokenSource, TokenSourceConfig, http_client,
};
use crate::source::{SourceOptions, watch as watch_dir};

/// `calld run` arguments.
#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    pub config: Option<PathBuf>,
    pub calls_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub once: bool,
    /// `--once`: how long to wait for outcomes.
    pub timeout: Duration,
}

/// At most this many queued notifications are recorded in one transaction.
const NOTIFICATION_BATCH: usize = 4096;

/// The client id and secret the daemon uses against its own emulator.
const SANDBOX_CLIENT_ID: &str = "calld-sandbox";
const SANDBOX_TENANT: &str = "00000000-0000-0000-0000-000000000000";

/// `CALLD_*` environment variables override the file (flags override both).
/// Documented in the README ("Configuration").
/// `/readyz` until the calls directory has been read once.
const DIR_NOT_READ: &str = "the calls directory has not been read yet (missing or unreadable); \
                            nothing is placed or canceled until it is";

pub fn apply_env_overrides(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    if let Some(v) = env("CALLD_CALLS_DIR") {
        config.calls_dir = Some(v.into());
    }
    if let Some(v) = env("CALLD_STATE_DIR") {
        config.state_dir = Some(v.into());
    }
    if let Some(v) = env("CALLD_LEDGER_URL") {
        config.ledger.url = Some(v);
    }
    if let Some(v) = env("CALLD_GRAPH_MODE") {
        config.graph.mode = Some(match v.as_str() {
            "live" => GraphMode::Live,
            "sandbox" => GraphMode::Sandbox,
            other => return Err(format!("CALLD_GRAPH_MODE={other}: write live or sandbox")),
        });
    }
    if let Some(v) = env("CALLD_GRAPH_BASE_URL") {
        config.graph.base_url = Some(v);
    }
    if let Some(v) = env("CALLD_GRAPH_AUTHORITY_URL") {
        config.graph.authority_url = Some(v);
    }
    if let Some(v) = env("CALLD_TENANT_ID") {
        config.graph.tenant_id = Some(v);
    }
    if let Some(v) = env("CALLD_CLIENT_ID") {
        config.graph.client_id = Some(v);
    }
    if env("CALLD_CLIENT_SECRET").is_some()
        && config.graph.client_secret.is_none()
        && config.graph.certificate.is_none()
    {
        // the secret stays in the environment; only its name is kept
        config.graph.client_secret =
            Some(crate::config::SecretRef::Env("CALLD_CLIENT_SECRET".into()));
    }
    if let Some(v) = env("CALLD_CALLBACK_PUBLIC_URL") {
        config.callback.public_url = Some(v);
    }
    if let Some(v) = env("CALLD_CALLBACK_LISTEN") {
        config.callback.listen = v;
    }
    if let Some(v) = env("CALLD_ADMIN_LISTEN") {
        config.admin.listen = v;
    }
    if let Some(v) = env("CALLD_LOG_LEVEL") {
        config.log.level = v;
    }
    if let Some(v) = env("CALLD_LOG_FORMAT") {
        config.log.format = match v.as_str() {
            "text" => crate::config::LogFormat::Text,
            "json" => crate::config::LogFormat::Json,
            "journald" => crate::config::LogFormat::Journald,
            other => {
                return Err(format!(
                    "CALLD_LOG_FORMAT={other}: write text, json or journald"
                ));
            }
        };
    }
    Ok(())
}

fn load_config(args: &RunArgs) -> Result<Config, String> {
    let (mut config, _) = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    apply_env_overrides(&mut config, &|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    })?;
    if let Some(d) = &args.calls_dir {
        config.calls_dir = Some(d.clone());
    }
    if let Some(d) = &args.state_dir {
        config.state_dir = Some(d.clone());
    }
    Ok(config)
}

/// `calld run`. Returns the exit code.
pub fn run(args: RunArgs) -> u8 {
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calld run: configuration: {e}");
            return 2;
        }
    };
    let log = match crate::logging::init(config.log.format, &config.log.level) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("calld run: {e:#}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("calld run: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    match runtime.block_on(run_async(config, args, log)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("calld run: {e:#}");
            2
        }
    }
}

/// A stable jitter seed per state directory (`<stateDir>/jitter-seed`), so
/// a restart keeps every run's jitter.
fn jitter_seed(state_dir: &Path) -> anyhow::Result<u64> {
    let path = state_dir.join("jitter-seed");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(seed) = text.trim().parse()
    {
        return Ok(seed);
    }
    let seed: u64 = rand::random();
    std::fs::write(&path, seed.to_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(seed)
}

async fn run_async(
    mut config: Config,
    args: RunArgs,
    log: crate::logging::LogHandle,
) -> anyhow::Result<u8> {
    let state_dir = config.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let calls_dir = config.calls_dir();
    let ledger = super::store::open_store(&config.ledger, &state_dir).await?;
    let ledger = Arc::new(Mutex::new(ledger));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_rx_keeper = shutdown_rx.clone();
    let shutdown = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Graph: live, or the built-in emulator (sandbox).
    let mode = config.graph.effective_mode();
    let mut _emulator = None;
    let (client, callback_opts, callback_listener, sandbox_callback, public_url) = match mode {
        GraphMode::Sandbox => {
            let emu = crate::emulator::start(
                crate::emulator::EmulatorConfig::default(),
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .context("sandbox emulator")?,
            )
            .await?;
            let base = emu.base_url();
            tracing::warn!(
                emulator = %base,
                "SANDBOX MODE: no Graph credentials are configured, so calls go to the built-in Graph emulator; NO REAL CALL IS PLACED"
            );
            let opts = GraphClientOptions {
                base_url: base.clone(),
                ..GraphClientOptions::from_config(&config.graph)
            };
            let http = http_client(&opts)?;
            let tokens = TokenSource::new(
                http.clone(),
                TokenSourceConfig {
                    token_url: token_url(&base, SANDBOX_TENANT),
                    client_id: SANDBOX_CLIENT_ID.into(),
                    scope: format!("{base}/.default"),
                    credential: Credential::Secret(Secret::new("sandbox")),
                },
            );
            let client = GraphClient::new(http, Arc::new(tokens), opts);
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("sandbox callback listener")?;
            let local = format!(
                "http://127.0.0.1:{}/api/calls",
                listener.local_addr()?.port()
            );
            let mut cb = CallbackOptions::new(SANDBOX_CLIENT_ID);
            cb.open_id_config_url = emu.open_id_config_url();
            cb.issuers = vec![emu.issuer()];
            cb.path = Some("/api/calls".into());
            let public = config
                .callback
                .public_url
                .clone()
                .unwrap_or_else(|| local.clone());
            _emulator = Some(emu);
            (client, cb, listener, Some(local), Some(public))
        }
        GraphMode::Live => {
            let client = GraphClient::from_config(&config.graph).context("graph")?;
            let client_id = config.graph.client_id.clone().unwrap_or_default();
            let cb = CallbackOptions::from_config(&config.callback, &client_id)?;
            let addr: SocketAddr = config.callback.listen.parse().with_context(|| {
                format!(
                    "callback.listen {:?} is not an address",
                    config.callback.listen
                )
            })?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (callback.listen)"))?;
            let public = config.effective_public_url();
            (client, cb, listener, None, public)
        }
    };
    config.callback.public_url = public_url.clone();
    // A notification is answered 202 only once it is in the ledger: one
    // acknowledged and then lost to a crash would leave its run waiting
    // (or end it wrongly, e.g. `notEstablished` for an answered call).
    let mut callback_opts = callback_opts;
    callback_opts.ack_timeout = Some(Duration::from_secs(10));

    // Notifications → the controller.
    let (notif_tx, mut notif_rx) = mpsc::channel(4096);
    // TLS and the signing keys are loaded before the first call is placed,
    // so a bad certificate stops the start and the first notifications
    // validate.
    let tls = config
        .callback
        .tls
        .as_ref()
        .map(crate::callback::load_tls)
        .transpose()?;
    let callback_state = crate::callback::CallbackState::new(callback_opts, notif_tx)?;
    let callback_stats = callback_state.stats();
    if let Some(keys) = callback_state.keys()
        && let Err(e) = keys.refresh().await
    {
        tracing::warn!(
            "cannot load the notification signing keys yet (retrying in the background): {e:#}"
        );
    }
    let cb_shutdown = shutdown();
    let callback_task = tokio::spawn(async move {
        if let Err(e) =
            crate::callback::serve(callback_listener, tls, callback_state, cb_shutdown).await
        {
            tracing::error!("callback listener: {e:#}");
        }
    });

    // The calls directory.
    let source_dir = calls_dir.clone();
    let source_opts = SourceOptions {
        // `--once` acts on its first snapshot only: read what is there
        hold_recent_at_start: !args.once,
        ..SourceOptions::from_config(&config.daemon)
    };
    let (source_guard, mut snapshots) =
        tokio::task::spawn_blocking(move || watch_dir(source_dir, source_opts))
            .await
            .expect("source task")?;

    let (events_tx, mut events_rx) = mpsc::channel::<Event>(1024);
    let once = args.once.then_some(args.timeout);
    let metrics = crate::metrics::Metrics::new();
    let notifier = crate::systemd::Notifier::from_env();
    let specs_json = Arc::new(Mutex::new(super::report::SpecsReport::default()));
    let admin_state = admin_state(&metrics, &specs_json, &ledger, events_tx.clone());
    let admin_task = start_admin(&config.admin.listen, admin_state.clone(), shutdown()).await;
    let sandbox = sandbox_callback.is_some();
    let client = Arc::new(client);
    // The token (and its roles) is kept fresh by a task of its own: the
    // controller never waits for the token endpoint.
    let keeper = crate::graph::keeper::TokenKeeper::spawn(client.tokens().clone());
    let mut refresh_counts = crate::graph::auth::RefreshCounts::default();
    let mut token_health = keeper.subscribe();
    let rt = Runtime {
        keeper: keeper.clone(),
        metrics,
        notifier: notifier.clone(),
        specs_json,
        jitter_seed: jitter_seed(&state_dir)?,
        config,
        calls_dir,
        state_dir,
        public_url,
        sandbox_callback,
        client,
        ledger: ledger.clone(),
        once,
    };
    let events_for_listener = events_tx.clone();
    let mut controller = Controller::new(rt, events_tx);
    if ledger.lock().unwrap_or_else(|p| p.into_inner()).is_shared() {
        let cfg = &controller.rt.config.ledger;
        let r = super::replica::Replica::new(cfg.replica_id(), cfg.lease, cfg.poll);
        tracing::info!(replica = %r.id, lease = ?r.lease, poll = ?r.poll, "replica on a shared ledger: due runs are claimed (docs/replicas.md)");
        super::replica::spawn_lease_keeper(
            ledger.clone(),
            r.claims.clone(),
            r.lease,
            controller.rt.metrics.clone(),
            shutdown_rx_keeper.clone(),
        );
        if let Some(url) = cfg.url.clone() {
            let opts = super::store::pg_options(cfg, url)?;
            super::store::spawn_listener(opts, r.poll, events_for_listener.clone());
        }
        controller.replica = Some(r);
    }
    let first = snapshots.borrow_and_update().clone();
    if let (Some(e), true) = (&first.root_error, once.is_some()) {
        // a CI job with a path typo must not pass
        eprintln!("calld run --once: {e}");
        return Ok(2);
    }
    controller.load_snapshot(&first);
    // its file bytes go with it (the spec set keeps none)
    drop(first);
    let invalid_at_start = controller.invalid_report();
    admin_state.set_not_ready_reason(Some(if controller.dir_known {
        "starting".to_string()
    } else {
        DIR_NOT_READ.to_string()
    }));
    // systemd: the first full load is done and the ledger is open.
    let _ = notifier.ready();
    let mut ready = false;
    let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // Test hook (CALLD_TEST_HOOKS=1): SIGUSR1 blocks the work loop for 3 s,
    // so a test can see the watchdog pings stop.
    let mut block_hook = match std::env::var_os("CALLD_TEST_HOOKS") {
        Some(_) => Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::user_defined1(),
        )?),
        None => None,
    };
    let once_deadline = once.map(|t| tokio::time::Instant::now() + t);
    let mut prune_at = tokio::time::Instant::now();

    // `--once` decides once the token keeper has answered (a token, or why
    // there is none), so that what is due is placed or reported.
    if let Some(t) = once
        && !sandbox
    {
        let _ = tokio::time::timeout(t, token_health.wait_for(|h| h.checked)).await;
    }
    let mut listener_counts = crate::callback::CallbackCounts::default();
    let exit = loop {
        // Every decision takes the create answers at hand first, whatever
        // woke the loop: their runs hold request slots until recorded (in
        // the decision's first batch), and the select below would otherwise
        // leave them waiting behind notifications and timers.
        while let Ok(ev) = events_rx.try_recv() {
            controller.on_event(ev).await;
        }
        // Ready as soon as the specs are loaded, the ledger is open and a
        // token is at hand, not only after the first decision (at 100,000
        // specs it plans every run: seconds).
        update_readiness(&controller, &keeper, sandbox, &admin_state, &mut ready);
        let wake = match controller.decide().await {
            Ok(w) => w,
            // a shared ledger that does not answer: not ready, nothing
            // placed, tried again at the next poll (decide logged it)
            Err(e) if controller.is_shared() => {
                controller.note_ledger_error(&e);
                None
            }
            Err(e) => return Err(e),
        };
        sync_listener_counts(
            &controller.rt.metrics,
            &callback_stats.snapshot(),
            &mut listener_counts,
        );
        {
            // every token request (the keeper's, and a request's after a 401)
            let now = controller.rt.client.tokens().refresh_counts();
            for (result, new, old) in [
                ("ok", now.ok, refresh_counts.ok),
                ("transient", now.transient, refresh_counts.transient),
                ("environment", now.environment, refresh_counts.environment),
            ] {
                controller
                    .rt
                    .metrics
                    .token_refreshes_add(result, new.saturating_sub(old));
            }
            refresh_counts = now;
        }
        update_readiness(&controller, &keeper, sandbox, &admin_state, &mut ready);
        if once.is_some()
            && let Some(runs) = controller.once_done().await?
        {
            break Exit::Once(runs);
        }
        if tokio::time::Instant::now() >= prune_at {
            let cutoff = crate::clock::now()
                - jiff::SignedDuration::try_from(controller.rt.config.daemon.history_retention)
                    .unwrap_or_default();
            match with_ledger(&ledger, move |l| l.prune(cutoff)).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "old runs pruned from the ledger"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune the ledger"),
            }
            prune_at = tokio::time::Instant::now() + Duration::from_secs(3600);
        }
        // A placement deferred for lack of a request slot is due already:
        // the next finished request (an event) wakes the loop, not the clock.
        let wake = wake.filter(|w| !(controller.deferred && *w <= crate::clock::now()));
        let sleep_for = wake
            .map(|w| {
                let d = w.duration_since(crate::clock::now());
                Duration::try_from(d).unwrap_or(Duration::ZERO)
            })
            .unwrap_or(Duration::from_secs(3600));
        let mut sleep_until = tokio::time::Instant::now() + sleep_for;
        if let Some(r) = &controller.replica {
            // other replicas change the shared ledger: look again soon
            sleep_until = sleep_until.min(tokio::time::Instant::now() + r.poll);
        }
        if let Some(d) = once_deadline {
            sleep_until = sleep_until.min(d);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(sleep_until) => {
                if let Some(d) = once_deadline && tokio::time::Instant::now() >= d {
                    break Exit::OnceTimeout(controller.watched_runs().await);
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the source stopped watching {}", controller.rt.calls_dir.display());
                }
                let snap = snapshots.borrow_and_update().clone();
                controller.load_snapshot(&snap);
            }
            Some(inbound) = notif_rx.recv() => {
                // take what else is queued: one ledger transaction for all
                let mut batch = vec![inbound];
                while batch.len() < NOTIFICATION_BATCH
                    && let Ok(more) = notif_rx.try_recv()
                {
                    batch.push(more);
                }
                controller.on_notifications(batch).await;
            }
            changed = token_health.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the token keeper stopped");
                }
                token_health.borrow_and_update();
            }
            Some(event) = events_rx.recv() => {
                controller.on_event(event).await;
                while let Ok(more) = events_rx.try_recv() {
                    controller.on_event(more).await;
                }
            }
            _ = sigterm.recv() => break Exit::Signal,
            _ = sigint.recv() => break Exit::Signal,
            _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                // from the work loop itself: a stuck loop stops the pings
                let _ = notifier.watchdog();
            }
            _ = async { block_hook.as_mut().expect("guarded").recv().await }, if block_hook.is_some() => {
                tracing::warn!("test hook: blocking the work loop for 3 s");
                std::thread::sleep(Duration::from_secs(3));
            }
            _ = sighup.recv() => {
                let _ = notifier.reloading();
                match load_config(&args) {
                    Ok(new) => {
                        if let Err(e) = log.set_level(&new.log.level) {
                            tracing::warn!("reload: log.level: {e:#}");
                        }
                        // what a reload changes: spec defaults and the daemon's timings;
                        // Graph, callback and admin settings need a restart
                        controller.rt.config.defaults = new.defaults;
                        controller.rt.config.daemon = new.daemon;
                        // the secret or certificate, re-read: a wrong one
                        // fixed needs no restart
                        if !sandbox {
                            match TokenSourceConfig::from_graph_config(&new.graph) {
                                Ok(c) => controller.rt.client.tokens().set_credential(c.credential),
                                Err(e) => tracing::warn!("SIGHUP: graph credential not reloaded: {e}"),
                            }
                        }
                        let snap = snapshots.borrow().clone();
                        controller.load_snapshot(&snap);
                        tracing::info!("SIGHUP: configuration reloaded; rescanning the calls directory");
                    }
                    Err(e) => tracing::error!("SIGHUP: configuration not reloaded, keeping the old one: {e}"),
                }
                source_guard.request_rescan();
                // try the token endpoint again now
                keeper.kick();
                let _ = notifier.ready();
            }
        }
    };

    tracing::info!(
        status = controller.status_line(),
        "stopping: no new placements"
    );
    let _ = notifier.stopping();
    admin_state.set_ready(false);
    // Notifications already queued are recorded (and acknowledged); later
    // ones are refused with 503, so Graph delivers them to the next start.
    notif_rx.close();
    let mut rest = Vec::new();
    while let Some(inbound) = notif_rx.recv().await {
        rest.push(inbound);
    }
    if !rest.is_empty() {
        controller.on_notifications(rest).await;
    }
    let _ = shutdown_tx.send(true);
    // let request tasks that are already running record their result
    // (and the answers at hand first: they wait for no event)
    while let Ok(ev) = events_rx.try_recv() {
        controller.on_event(ev).await;
    }
    controller.flush_created().await;
    controller.save_pending_known().await;
    let drain_until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !controller.in_flight.is_empty() && tokio::time::Instant::now() < drain_until {
        match tokio::time::timeout_at(drain_until, events_rx.recv()).await {
            Ok(Some(ev)) => {
                controller.on_event(ev).await;
                while let Ok(more) = events_rx.try_recv() {
                    controller.on_event(more).await;
                }
                // no decision follows: the answers are recorded here
                controller.flush_created().await;
            }
            _ => break,
        }
    }
    let _ = callback_task.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    drop(source_guard);
    let exit_kind_once = !matches!(exit, Exit::Signal);
    let code = match exit {
        Exit::Signal => 0,
        Exit::Once(runs) => print_once(&runs, false),
        Exit::OnceTimeout(runs) => print_once(&runs, true),
    };
    let code = match (&exit_kind_once, invalid_at_start) {
        (true, Some(why)) => {
            eprintln!("calld run --once: {why}");
            code.max(1)
        }
        _ => code,
    };
    tracing::info!("stopped");
    Ok(code)
}

/// The admin endpoint's state: metrics, readiness, `/v1/specs` from the
/// controller's latest report, `/v1/runs` from the ledger.
fn admin_state(
    metrics: &crate::metrics::Metrics,
    specs: &Arc<Mutex<super::report::SpecsReport>>,
    ledger: &super::SharedLedger,
    events: mpsc::Sender<Event>,
) -> crate::admin::AdminState {
    let specs = specs.clone();
    let ledger = ledger.clone();
    let (specs2, ledger2) = (specs.clone(), ledger.clone());
    let (specs3, ledger3, metrics3) = (specs.clone(), ledger.clone(), metrics.clone());
    let (specs4, ledger4) = (specs.clone(), ledger.clone());
    let (specs5, ledger5) = (specs.clone(), ledger.clone());
    crate::admin::AdminState::new(metrics.clone())
        .with_specs(move || super::report::read(&specs))
        .with_status(move || {
            let report = super::report::read(&specs2);
            let l = ledger2.lock().unwrap_or_else(|p| p.into_inner());
            let input =
                crate::status::StatusInput::from_ledger(l.as_ref(), report).map_err(|e| e.to_string())?;
            Ok(crate::status::status_doc(&input, crate::clock::now()))
        })
        .with_actions(move |path, body| {
            let report = super::report::read(&specs4);
            let now = crate::clock::now();
            let doc = {
                let mut l = ledger4.lock().unwrap_or_else(|p| p.into_inner());
                let result = match path {
                    "trigger" => crate::trigger::trigger(
                        l.as_mut(),
                        &report,
                        body["spec"].as_str().unwrap_or(""),
                        body["requestId"].as_str().unwrap_or(""),
                        now,
                    ),
                    _ => crate::trigger::retry(
                        l.as_mut(),
                        &report,
                        body["run"].as_str().unwrap_or(""),
                        body["force"] == true,
                        now,
                    ),
                };
                result.map_err(|r| (r.status, r.message))?
            };
            let run = doc["run"]["id"].as_str().unwrap_or("").to_string();
            tracing::info!(run = %run, spec = doc["spec"].as_str().unwrap_or(""), request_id = doc["requestId"].as_str().unwrap_or(""), created = doc["created"] == true, "run requested ({path})");
            // wake the controller: the run is due now
            let _ = events.try_send(Event::Triggered { run });
            Ok(doc)
        })
        .with_dashboard(move || {
            let report = super::report::read(&specs5);
            let now = crate::clock::now();
            let l = ledger5.lock().unwrap_or_else(|p| p.into_inner());
            let input = crate::status::StatusInput::from_ledger(l.as_ref(), report.clone())
                .map_err(|e| e.to_string())?;
            let doc = crate::status::status_doc(&input, now);
            let mut recent = Vec::new();
            for s in doc["specs"]
                .as_array()
                .into_iter()
                .flatten()
                .take(crate::dashboard::MAX_SPECS)
            {
                let name = s["name"].as_str().unwrap_or("").to_string();
                let runs = l
                    .history(&name, crate::dashboard::RECENT_RUNS)
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|r| serde_json::to_value(r).unwrap_or_default())
                    .collect();
                recent.push((name, runs));
            }
            Ok(crate::dashboard::render(&doc, &report, &recent, now))
        })
        .with_refresh(move || {
            let report = super::report::read(&specs3);
            let l = ledger3.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) =
                crate::status::refresh_spec_metrics(&metrics3, l.as_ref(), &report, crate::clock::now())
            {
                tracing::warn!(error = %e, "cannot refresh the per-spec metrics");
            }
        })
        .with_runs(move |spec, limit| {
            let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            let records = l.history(spec, limit).ok()?;
            if records.is_empty() {
                return None;
            }
            Some(serde_json::json!({ "spec": spec, "runs": records }))
        })
}

/// Serves the admin endpoint on `admin.listen`; a listen failure is logged
/// and the daemon goes on without it (calls matter more than metrics).
async fn start_admin(
    listen: &str,
    state: crate::admin::AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    if listen.is_empty() || listen == "off" {
        return None;
    }
    match TcpListener::bind(listen).await {
        Ok(listener) => {
            tracing::info!(addr = %listen, "admin endpoint up (/healthz /readyz /metrics /v1/specs /v1/runs)");
            Some(tokio::spawn(async move {
                if let Err(e) = crate::admin::serve(listener, state, shutdown).await {
                    tracing::error!("admin endpoint: {e:#}");
                }
            }))
        }
        Err(e) => {
            tracing::error!(addr = %listen, "cannot listen on admin.listen, the admin endpoint is off: {e}");
            None
        }
    }
}

/// `/readyz`: loaded, ledger open, and a token at hand (or sandbox); else
/// why nothing is placed. Read, never awaited.
fn update_readiness(
    controller: &Controller,
    keeper: &crate::graph::keeper::TokenKeeper,
    sandbox: bool,
    admin_state: &crate::admin::AdminState,
    ready: &mut bool,
) {
    let health = keeper.health();
    // ... and the calls directory read once (docs/runs.md: unknown is not
    // empty).
    let ledger_problem = controller.ledger_problem();
    let now_ready = controller.dir_known && (sandbox || health.ok) && ledger_problem.is_none();
    let reason = if !controller.dir_known {
        Some(DIR_NOT_READ.to_string())
    } else if ledger_problem.is_some() {
        ledger_problem
    } else {
        health.problem.as_ref().map(|p| p.describe())
    };
    if now_ready != *ready || admin_state.not_ready_reason() != reason {
        *ready = now_ready;
        admin_state.set_ready(now_ready);
        admin_state.set_not_ready_reason(if now_ready { None } else { reason });
    }
}

/// Adds what the callback listener counted since the last call to
/// `calld_notifications_total{result}` (the listener keeps plain atomics).
fn sync_listener_counts(
    metrics: &crate::metrics::Metrics,
    now: &crate::callback::CallbackCounts,
    last: &mut crate::callback::CallbackCounts,
) {
    for (result, new, old) in [
        ("accepted", now.accepted, last.accepted),
        ("unauthorized", now.unauthorized, last.unauthorized),
        ("malformed", now.malformed, last.malformed),
        ("tooLarge", now.too_large, last.too_large),
        ("overloaded", now.overloaded, last.overloaded),
        ("other", now.other, last.other),
        ("wrongTenant", now.wrong_tenant, last.wrong_tenant),
        (
            "connectionRefused",
            now.refused_connections,
            last.refused_connections,
        ),
    ] {
        metrics.notifications_add(result, new.saturating_sub(old));
    }
    *last = *now;
}

/// `--once`: one line per run placed, exit 0 only if all completed.
fn print_once(runs: &[crate::ledger::Run], timed_out: bool) -> u8 {
    let mut ok = !timed_out;
    if runs.is_empty() {
        println!("nothing was due");
    }
    for r in runs {
        let outcome = r.outcome.map(|o| o.as_str()).unwrap_or(r.state.as_str());
        if r.outcome != Some(crate::ledger::Outcome::Completed) {
            ok = false;
        }
        println!(
            "{}\t{}\t{}\t{}",
            r.spec,
            r.id,
            outcome,
            r.reason.as_deref().unwrap_or("")
        );
    }
    if timed_out {
        eprintln!("calld run --once: timed out before every call reached an outcome");
    }
    u8::from(!ok)
}
