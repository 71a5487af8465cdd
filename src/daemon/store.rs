//! Opening the ledger store the configuration names: SQLite in the state
//! directory (one daemon), or a PostgreSQL database shared by replicas
//! (`ledger.url`, docs/replicas.md).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use tokio::sync::mpsc;

use crate::config::{LedgerConfig, redact_url};
use crate::ledger::{PgLedger, PgListener, PgOptions, SqliteLedger};

use super::{Event, Store};

/// Opens the store. A shared database that does not answer yet is retried
/// every second (a replica may start before its database); a local ledger
/// that cannot be opened is an error at once.
pub(crate) async fn open_store(cfg: &LedgerConfig, state_dir: &Path) -> anyhow::Result<Store> {
    let Some(url) = cfg.url.clone() else {
        let dir = state_dir.to_path_buf();
        let ledger =
            tokio::task::spawn_blocking(move || SqliteLedger::open_in(&dir, crate::clock::now()))
                .await
                .expect("ledger open task")?;
        for id in ledger.recovered() {
            tracing::warn!(run = %id, outcome = "unknown", "run was in flight when the daemon stopped; recorded as unknown (never re-sent)");
        }
        return Ok(Box::new(ledger));
    };
    let opts = pg_options(cfg, url)?;
    let shown = redact_url(&opts.url);
    let mut logged = false;
    loop {
        let o = opts.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut l = connect_pg(&o)?;
            // every decision is timed by the database's clock
            let before = crate::clock::local_now();
            if let Some(t) = l.db_now()? {
                crate::clock::set_store_reading(before, t, crate::clock::local_now());
            }
            Ok(l)
        })
        .await
        .expect("ledger open task");
        match res {
            Ok(l) => {
                tracing::info!(url = %shown, schema = %opts.schema, replica = %opts.replica_id,
                    clock_offset = %crate::clock::store_offset(), "shared ledger open (PostgreSQL)");
                return Ok(l);
            }
            Err(e @ crate::ledger::LedgerError::TooNew { .. }) => {
                return Err(e).with_context(|| format!("ledger {shown}"));
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(url = %shown, error = %e, "the shared ledger does not answer; retrying every second");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The PostgreSQL options of a `ledger:` section with this URL.
pub(crate) fn pg_options(cfg: &LedgerConfig, url: String) -> anyhow::Result<PgOptions> {
    let password = cfg.password().map_err(anyhow::Error::msg)?;
    Ok(PgOptions {
        url,
        password: password.map(|p| p.expose().to_string()),
        schema: cfg.schema.clone(),
        replica_id: cfg.replica_id(),
        lease: cfg.lease,
        tls_ca_file: cfg.ca_file.clone(),
    })
}

pub(crate) fn connect_pg(opts: &PgOptions) -> crate::ledger::Result<Store> {
    Ok(Box::new(PgLedger::connect(opts, crate::clock::now())?))
}

/// LISTEN on the shared ledger: another replica's change wakes the
/// controller at once (its own are ignored); polling stays the fallback
/// (a notification is lost across a reconnect). Wake-ups coalesce: the
/// channel holds a few, the controller drains them all in one decision.
pub(crate) fn spawn_listener(opts: PgOptions, poll: Duration, events: mpsc::Sender<Event>) {
    let me = opts.replica_id.clone();
    PgListener::spawn(opts, poll.max(Duration::from_millis(100)), move |payload| {
        if payload.is_some_and(|p| p.rsplit(' ').next() == Some(me.as_str())) {
            return !events.is_closed();
        }
        match events.try_send(Event::LedgerChanged) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}
