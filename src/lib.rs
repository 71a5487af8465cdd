//! calld: declarative call orchestration on Microsoft Graph.
//!
//! calld watches a directory of YAML call specs, turns each spec into Graph
//! create-call requests at the right time, follows every call through Graph's
//! notifications and records its outcome durably.
//!
//! # Layout
//!
//! Pure core (no I/O, time passed in), tested hardest:
//! - [`spec`]: YAML call specs: raw positioned types, validation into a model
//!   that cannot hold an invalid value, rendering to Graph create-call bodies.
//! - [`schedule`]: `at` / `cron` / time zones / deadline / jitter → run times.
//! - [`duration`]: the `90s`, `5m`, `1h30m`, `2d` duration syntax.
//! - [`config`]: the configuration file (SPEC 3).
//! - [`plan`]: what `calld plan` shows per spec.
//! - [`identity`]: what a change of the calls directory means for run
//!   identity: renames, held names, mass disappearances.
//! - [`reconcile`]: the daemon's decision function: specs + open runs + now →
//!   actions (insert, place, finish, retry, hang up, keepAlive) and the next wake-up.
//!
//! I/O at the edges:
//! - [`graph`]: token source and Graph client (create, hang up, keepAlive, retries).
//! - [`emulator`]: the built-in Graph emulator, a real HTTP server on loopback.
//! - [`ledger`]: the durable record of runs and attempts (SQLite).
//! - [`source`]: watching the calls directory (inotify + debounced rescan + resync).
//! - [`callback`]: the notification listener and its token validation.
//! - [`cli`]: the `check`, `render`, `plan` and `schema` commands.
//! - [`daemon`]: `calld run`: wires everything together around [`reconcile`].
//! - [`status`]: `calld status` and `calld history`, reading the ledger
//!   (or a daemon's admin endpoint).
//! - [`diff`]: `calld diff`: what a proposed calls directory would do.
//! - [`trigger`]: `calld trigger` / `calld retry`: runs placed on request.
//! - [`auth_check`]: `calld auth check`: the token's roles against the specs.
//!
//! Operating it:
//! - [`systemd`]: `sd_notify` readiness, status, watchdog and reload messages.
//! - [`admin`]: `/` (the [`dashboard`]), `/healthz`, `/readyz`, `/metrics`,
//!   `/v1/specs`, `/v1/status`, `/v1/runs`, `POST /v1/trigger`, `POST /v1/retry`.
//! - [`admin_client`]: the CLI's calls to that endpoint (`--admin`, `trigger`, `retry`).
//! - [`metrics`]: the typed Prometheus registry.
//! - [`logging`]: text, JSON and journald logs, level reloadable at run time.

pub mod admin;
pub mod admin_client;
pub mod auth_check;
pub mod callback;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod diff;
pub mod duration;
pub mod emulator;
pub mod graph;
pub mod identity;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod schedule;
pub mod source;
pub mod spec;
pub mod status;
pub mod systemd;
pub mod trigger;

/// The git commit calld was built from (`git rev-parse --short HEAD`, or
/// `$CALLD_GIT_COMMIT` at build time, else "unknown").
pub const GIT_COMMIT: &str = env!("CALLD_GIT_COMMIT");

/// The long version for `calld --version`: "0.1.0 (abc1234)".
pub const VERSION_LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CALLD_GIT_COMMIT"),
    ")"
);
