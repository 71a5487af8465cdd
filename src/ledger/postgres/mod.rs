//! The shared ledger of several replicas: PostgreSQL (issue 13).
//!
//! [`PgLedger`] implements the same [`Ledger`](super::Ledger) trait as
//! [`SqliteLedger`](super::SqliteLedger), with the same tables, the same
//! rules ([`super::rules`]) and the same answers; see docs/ledger-postgres.md.
//! It is synchronous (the `postgres` crate, the blocking wrapper of
//! tokio-postgres): the daemon calls the ledger from blocking threads.
//!
//! What only the shared store does: a replica *claims* a due run before it
//! marks it `requesting` (a lease on the database clock, a fencing token
//! from a sequence), renews the leases of its requests in flight, and reaps
//! the `requesting` runs whose lease expired (their replica stopped). No run
//! is recovered at open: another live replica may be sending it.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};

use super::{LedgerError, Result};

mod cache;
mod listen;
mod replica;
mod schema;
mod store;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use listen::PgListener;
pub use replica::reaped_reason;
pub use schema::PG_SCHEMA_VERSION;

/// The channel of `LISTEN`/`NOTIFY`: a transaction that inserts runs,
/// changes claims or records notifications sends one notification on it,
/// with the payload `<what> <schema> <replica id>`.
pub const NOTIFY_CHANNEL: &str = "calld";

/// How to reach the shared ledger.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db?sslmode=require` (or the key=value form).
    pub url: String,
    /// The password (from `passwordFile`); never logged or shown.
    pub password: Option<String>,
    /// The schema holding calld's tables (`[a-z_][a-z0-9_]*`).
    pub schema: String,
    /// This replica's name: the owner of its claims.
    pub replica_id: String,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// A PEM file of CA certificates to verify the server with; enables TLS.
    /// Without it, `sslmode=require` verifies with the system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("schema", &self.schema)
            .field("replica_id", &self.replica_id)
            .field("lease", &self.lease)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// The PostgreSQL ledger. `Send` and `Sync`; one connection, used by one
/// call at a time (reads take `&self`, so the client sits in a mutex).
pub struct PgLedger {
    client: Mutex<cache::Conn>,
    connector: Connector,
    schema: String,
    replica_id: String,
    lease: Duration,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("server", &self.connector.describe)
            .field("schema", &self.schema)
            .field("replica_id", &self.replica_id)
            .finish_non_exhaustive()
    }
}

/// What is needed to (re)connect: the parsed configuration, TLS, and the
/// secrets to keep out of error texts.
#[derive(Clone)]
pub(super) struct Connector {
    config: Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    secrets: Vec<String>,
    /// `host:port/db` for messages.
    describe: String,
    schema: String,
}

impl Connector {
    fn new(opts: &PgOptions) -> Result<Connector> {
        let mut secrets: Vec<String> = opts.password.iter().cloned().collect();
        let mut config: Config = opts.url.parse().map_err(|e: postgres::Error| {
            LedgerError::Postgres(redact(
                &format!("the ledger url is not a valid PostgreSQL connection string: {e}"),
                &secrets,
            ))
        })?;
        if let Some(pw) = config.get_password() {
            secrets.push(String::from_utf8_lossy(pw).into_owned());
        }
        if let Some(pw) = &opts.password {
            config.password(pw.as_str());
        }
        if config.get_application_name().is_none() {
            config.application_name("calld");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.keepalives(true);
        let want_tls = opts.tls_ca_file.is_some() || config.get_ssl_mode() == SslMode::Require;
        let tls = if want_tls {
            if config.get_ssl_mode() != SslMode::Require {
                config.ssl_mode(SslMode::Require);
            }
            Some(tls_connector(opts.tls_ca_file.as_deref())?)
        } else {
            None
        };
        let describe = describe(&config);
        if !schema::valid_schema_name(&opts.schema) {
            return Err(LedgerError::Postgres(format!(
                "ledger schema {:?} is not a plain lower-case name ([a-z_][a-z0-9_]*, at most 63 characters)",
                opts.schema
            )));
        }
        Ok(Connector {
            config,
            tls,
            secrets,
            describe,
            schema: opts.schema.clone(),
        })
    }

    /// A new session with `search_path` set to the schema.
    fn connect(&self) -> Result<Client> {
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
        .map_err(|e| {
            LedgerError::Postgres(redact(
                &format!(
                    "cannot connect to the ledger at {}: {}",
                    self.describe,
                    error_text(&e)
                ),
                &self.secrets,
            ))
        })?;
        // A replica stopped inside a transaction (SIGSTOP, a stalled VM)
        // must not hold its row locks for ever: the server ends such a
        // session; a write waiting for a lock gives up rather than hang.
        client.batch_execute(&format!(
            "SET search_path TO {}; SET idle_in_transaction_session_timeout = '15s'; \
             SET lock_timeout = '10s'",
            self.schema
        ))?;
        Ok(client)
    }
}

fn describe(config: &Config) -> String {
    use postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// The url without its password, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not shown)".into(),
    }
}

/// `text` with every secret replaced by `***`.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// The rustls client configuration: the CA file's certificates, or the
/// system's roots; the `ring` provider (no process-wide default is set).
fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect())
                .map_err(|e| {
                    LedgerError::Postgres(format!(
                        "cannot read the ledger's CA file {}: {e}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(LedgerError::Postgres(format!(
                    "the ledger's CA file {} holds no certificate",
                    path.display()
                )));
            }
            for c in certs {
                roots.add(c).map_err(|e| {
                    LedgerError::Postgres(format!(
                        "the ledger's CA file {} holds an unusable certificate: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LedgerError::Postgres(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// An operator-readable text of a client error: the server's message,
/// detail and hint, or the I/O cause. Never holds the password (the client
/// does not echo its configuration).
pub(super) fn error_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} ({})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(&format!(": {c}"));
        }
        src = cause.source();
    }
    s
}

impl From<postgres::Error> for LedgerError {
    fn from(e: postgres::Error) -> Self {
        LedgerError::Postgres(error_text(&e))
    }
}

impl PgLedger {
    /// Connects, creates or migrates the schema (under an advisory lock:
    /// safe when several replicas start at once), and checks the version.
    /// Unlike [`SqliteLedger::open`](super::SqliteLedger::open) nothing is
    /// recovered here: `requesting` runs of a stopped replica are reaped
    /// when their lease expires ([`PgLedger::reap_expired`]).
    pub fn connect(opts: &PgOptions, now: Timestamp) -> Result<PgLedger> {
        let _ = now;
        let connector = Connector::new(opts)?;
        let mut client = connector.connect()?;
        schema::migrate(&mut client, &connector.describe, &opts.schema)?;
        let found = schema::stored_version(&mut client)?;
        if found != PG_SCHEMA_VERSION {
            return Err(LedgerError::Postgres(format!(
                "the ledger schema {:?} has version {found}, this calld expects {PG_SCHEMA_VERSION}",
                opts.schema
            )));
        }
        Ok(PgLedger {
            client: Mutex::new(cache::Conn::new(client)),
            connector,
            schema: opts.schema.clone(),
            replica_id: opts.replica_id.clone(),
            lease: opts.lease,
        })
    }

    /// This replica's id (the owner of its claims).
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The claim lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// `host:port/db` of the server (no credentials), for logs.
    pub fn server(&self) -> &str {
        &self.connector.describe
    }

    /// Always empty: nothing is recovered at open (see [`PgLedger::connect`]).
    pub fn recovered(&self) -> &[String] {
        &[]
    }

    /// A round trip to the server (health check, `/readyz`).
    pub fn check_connection(&self) -> Result<()> {
        self.conn()?.client.simple_query("SELECT 1")?;
        Ok(())
    }

    /// The connection, reconnected first if the last one broke.
    fn conn(&self) -> Result<MutexGuard<'_, cache::Conn>> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if guard.client.is_closed() {
            *guard = cache::Conn::new(self.connector.connect()?);
        }
        Ok(guard)
    }

    /// Runs `f` in one transaction and commits: durable when this returns
    /// `Ok`. On error nothing is written.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut cache::Cx<'_, postgres::Transaction<'_>>) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.conn()?;
        let cache::Conn { client, cache } = &mut *guard;
        let mut tx = client.transaction()?;
        let value = f(&mut cache::Cx { c: &mut tx, cache })?;
        tx.commit()?;
        Ok(value)
    }

    #[cfg(test)]
    pub(crate) fn client_for_tests(
        &self,
    ) -> MutexGuard<'_, impl std::ops::DerefMut<Target = Client>> {
        self.conn().unwrap()
    }
}

/// Sends the one notification of a transaction (delivered at commit).
fn notify(c: &mut impl cache::Q, replica: &str, what: &str) -> Result<()> {
    // The channel is the database's: the payload names the schema, so a
    // listener ignores other deployments sharing the database.
    c.execute(
        "SELECT pg_notify($1, $2::text || ' ' || current_schema() || ' ' || $3::text)",
        &[&NOTIFY_CHANNEL, &what, &replica],
    )?;
    Ok(())
}
