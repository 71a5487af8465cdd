//! The built-in Graph emulator: a Microsoft Graph and Azure AD stand-in for
//! calls, served over real HTTP on one loopback address.
//!
//! It is the sandbox mode's backend (`calld run` without credentials), the
//! test suite's Graph, and `calld emulator` for users' CI. It shares no
//! logic with the Graph client in [`crate::graph`]: it checks calld's
//! requests independently, against Graph's metadata (the schema extracts in
//! `tests/fixtures/graph/`).
//!
//! - [`config`]: the YAML configuration ([`EmulatorConfig`]).
//! - [`validate`]: Graph's rules for a create-call body and the roles it needs (pure).
//! - [`token`]: the client-credentials rules of the token endpoint (pure).
//! - [`plan`]: what a call does and the notifications it sends (pure).
//! - [`faults`]: which fault the next create gets (pure, seeded).
//! - `keys`: the RS256 signing key and its JWKS.
//! - `server`: the accept loop, the handlers, the call store, deliveries.
//!
//! User documentation: `docs/emulator.md`.

pub mod config;
pub mod errors;
pub mod faults;
mod keys;
pub mod plan;
mod server;
pub mod token;
pub mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{EmulatorConfig, ScriptedFault};
pub use server::{ReceivedRequest, TokenFault};

use keys::SigningKey;
use server::Shared;
use token::KnownClient;

/// A running emulator. Dropping it stops the server too; [`shutdown`]
/// additionally waits for the accept loop to end.
///
/// [`shutdown`]: EmulatorHandle::shutdown
pub struct EmulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Starts an emulator on `listener` (bind it to `127.0.0.1:0` in tests).
pub async fn start(
    config: EmulatorConfig,
    listener: TcpListener,
) -> anyhow::Result<EmulatorHandle> {
    config
        .check()
        .map_err(|e| anyhow::anyhow!("emulator configuration: {e}"))?;
    let addr = listener
        .local_addr()
        .context("the emulator's listener has no local address")?;
    let clients = config
        .clients
        .iter()
        .map(|c| KnownClient::load(c, None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key_file = config.signing_key_file.clone();
    // Generating an RSA key takes a while: off the async workers.
    let key = tokio::task::spawn_blocking(move || match key_file {
        Some(path) => SigningKey::from_pem_file(&path).map(Arc::new),
        None => SigningKey::process_default(),
    })
    .await
    .context("the key task failed")??;
    let tls = match &config.tls {
        Some(t) => Some(crate::callback::tls::load_tls(t).map_err(|e| {
            anyhow::anyhow!(
                "emulator tls: {}",
                format!("{e:#}").replace("callback.tls.", "tls.")
            )
        })?),
        None => None,
    };
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(
        config,
        server::base_url(addr, tls.is_some()),
        key,
        clients,
        stop_rx.clone(),
    )?);
    let task = tokio::spawn(server::serve(listener, shared.clone(), stop_rx, tls));
    Ok(EmulatorHandle {
        addr,
        shared,
        stop,
        task: Some(task),
    })
}

impl EmulatorHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS): both `graph.baseUrl`
    /// and `graph.authorityUrl`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// For `callback.openIdConfigUrl`.
    pub fn open_id_config_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.shared.base_url)
    }

    /// `iss` of the notification tokens (for `callback.issuers`).
    pub fn issuer(&self) -> String {
        self.shared.config.notifications.issuer.clone()
    }

    /// Every create request received, in order (as `GET /_emulator/calls`).
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared
            .requests()
            .into_iter()
            .filter(|r| r.kind == "create")
            .collect()
    }

    /// Every request received: token, create, get, delete, keepAlive (as
    /// `GET /_emulator/requests`).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.requests()
    }

    /// Replaces the fault script: the next creates get these, in order.
    /// Makes the token endpoint fail (`None`: work again), for `for_` or
    /// until changed.
    pub fn set_token_fault(&self, fault: Option<TokenFault>, for_: Option<std::time::Duration>) {
        self.shared.set_token_fault(fault, for_);
    }

    pub fn set_fault_script(&self, script: Vec<ScriptedFault>) {
        self.shared.set_fault_script(script);
    }

    /// Forgets the received requests and the fault script (as `POST /_emulator/reset`).
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops serving: open connections are closed, calls stop where they are.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// `calld emulator --listen ADDR [--config F]`: serve until Ctrl-C or SIGTERM.
pub fn run_cli(
    listen: &str,
    config: Option<&Path>,
    tls: Option<crate::config::TlsConfig>,
) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .try_init();
    let mut config = match config {
        Some(path) => EmulatorConfig::from_file(path)?,
        None => EmulatorConfig::default(),
    };
    // the command line's --tls-cert/--tls-key win over the file's `tls:`
    if tls.is_some() {
        config.tls = tls;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let emulator = start(config, listener).await?;
        let base = emulator.base_url();
        tracing::info!(
            graph = %base,
            authority = %base,
            openid = %emulator.open_id_config_url(),
            issuer = %emulator.issuer(),
            "Graph emulator listening: use graph.baseUrl and graph.authorityUrl = {base}; \
             GET {base}/_emulator/calls lists the creates received",
        );
        wait_for_stop().await;
        tracing::info!("Graph emulator stopping");
        emulator.shutdown().await;
        Ok(())
    })
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
