//! `LISTEN calld` on a connection of its own: the replicas' transactions
//! that insert runs, change claims or record notifications each send one
//! `NOTIFY calld`, so another replica re-reads the ledger at once instead
//! of at its next poll.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::{Connector, NOTIFY_CHANNEL, PgOptions};
use crate::ledger::Result;

/// A connection listening on [`NOTIFY_CHANNEL`]. Blocking; keep it on a
/// thread of its own.
pub struct PgListener {
    client: postgres::Client,
    connector: Connector,
}

impl std::fmt::Debug for PgListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgListener")
            .field("server", &self.connector.describe)
            .finish_non_exhaustive()
    }
}

impl PgListener {
    /// Opens a connection (the same url, password and TLS as the ledger)
    /// and listens.
    pub fn connect(opts: &PgOptions) -> Result<PgListener> {
        let connector = Connector::new(opts)?;
        let mut client = connector.connect()?;
        client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))?;
        Ok(PgListener { client, connector })
    }

    /// Waits up to `timeout` for the next notification about this schema:
    /// `Ok(Some("<what> <replica id>"))`, `Ok(None)` on timeout. An error means the
    /// connection broke: call [`PgListener::reconnect`] (or connect anew).
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<String>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut n = self.client.notifications();
            let mut it = n.timeout_iter(left);
            match it.next()? {
                None => return Ok(None),
                Some(n) => {
                    if let Some(p) = Self::ours(&self.connector.schema, n.payload()) {
                        return Ok(Some(p));
                    }
                }
            }
        }
    }

    /// `<what> <replica>` of a payload about `schema`.
    fn ours(schema_: &str, payload: &str) -> Option<String> {
        let mut parts = payload.splitn(3, ' ');
        let what = parts.next()?;
        let schema = parts.next()?;
        let replica = parts.next().unwrap_or("");
        (schema == schema_).then(|| format!("{what} {replica}"))
    }

    /// Drains the notifications already received, without waiting:
    /// how many there were.
    pub fn drain(&mut self) -> Result<usize> {
        let mut n = self.client.notifications();
        let mut it = n.iter();
        let mut count = 0;
        while let Some(n) = it.next()? {
            if Self::ours(&self.connector.schema, n.payload()).is_some() {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Replaces a broken connection with a new one, listening again.
    pub fn reconnect(&mut self) -> Result<()> {
        let mut client = self.connector.connect()?;
        client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))?;
        self.client = client;
        Ok(())
    }

    /// Runs on a new thread until `on_notify` returns false: calls it with
    /// each payload, and with `None` after each `idle` without one (and
    /// after a reconnection: something may have been missed). Reconnects
    /// after a broken connection, waiting `idle` between tries.
    pub fn spawn(
        opts: PgOptions,
        idle: Duration,
        mut on_notify: impl FnMut(Option<&str>) -> bool + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("calld-pg-listen".into())
            .spawn(move || {
                let mut listener: Option<PgListener> = None;
                loop {
                    let Some(l) = listener.as_mut() else {
                        match PgListener::connect(&opts) {
                            Ok(l) => {
                                listener = Some(l);
                                if !on_notify(None) {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!("ledger LISTEN: {e}");
                                std::thread::sleep(idle);
                            }
                        }
                        continue;
                    };
                    match l.wait(idle) {
                        Ok(p) => {
                            if !on_notify(p.as_deref()) {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("ledger LISTEN connection lost: {e}");
                            listener = None;
                        }
                    }
                }
            })
            .expect("spawn the LISTEN thread")
    }
}
