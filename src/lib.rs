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
//! - [`status`]: `calld status` and `calld history`, reading the ledger.

pub mod callback;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod emulator;
pub mod graph;
pub mod ledger;
pub mod plan;
pub mod reconcile;
pub mod schedule;
pub mod source;
pub mod spec;
pub mod status;
