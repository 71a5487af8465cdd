//! PostgreSQL for the ledger tests: each ledger in a fresh schema of its
//! own (random name, dropped at the end) in database `test` on
//! 127.0.0.1:5432 as `postgres` (or `CALLD_TEST_PG_URL`). Without a
//! reachable server a test prints `SKIP:` and passes, unless
//! `CALLD_REQUIRE_POSTGRES=1`.

use std::cell::RefCell;
use std::time::Duration;

use rand::Rng;

use super::{PgLedger, PgOptions};

pub(crate) fn test_url() -> String {
    std::env::var("CALLD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The options of a ledger in `schema` for replica `replica`.
pub(crate) fn options(schema: &str, replica: &str) -> PgOptions {
    PgOptions {
        url: test_url(),
        password: None,
        schema: schema.to_string(),
        replica_id: replica.to_string(),
        lease: Duration::from_secs(5),
        tls_ca_file: None,
    }
}

/// Whether the test server answers; `false` (after printing `SKIP:`) when
/// it does not and it is not required.
pub(crate) fn available(test: &str) -> bool {
    match postgres::Client::connect(&test_url(), postgres::NoTls) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("CALLD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("CALLD_REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {e}");
            }
            eprintln!(
                "SKIP: {test}: PostgreSQL at {} unreachable: {e}",
                test_url()
            );
            false
        }
    }
}

pub(crate) fn random_schema() -> String {
    let mut rng = rand::rng();
    let tail: String = (0..12)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect();
    format!("calld_test_{tail}")
}

/// Schemas made by one test; all dropped when it ends (also on panic).
#[derive(Default)]
pub(crate) struct Schemas(RefCell<Vec<String>>);

impl Schemas {
    /// A new schema name, dropped with `self`.
    pub(crate) fn fresh(&self) -> String {
        let s = random_schema();
        self.0.borrow_mut().push(s.clone());
        s
    }

    /// A new ledger in a new schema.
    pub(crate) fn ledger(&self) -> PgLedger {
        let schema = self.fresh();
        PgLedger::connect(&options(&schema, "test-replica"), jiff::Timestamp::now())
            .expect("connect to the test PostgreSQL")
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let schemas = self.0.borrow();
        if schemas.is_empty() {
            return;
        }
        if let Ok(mut c) = postgres::Client::connect(&test_url(), postgres::NoTls) {
            for s in schemas.iter() {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"));
            }
        }
    }
}

/// Runs `f` with a maker of fresh PostgreSQL ledgers, or skips.
pub(crate) fn with_pg(test: &str, f: impl FnOnce(&dyn Fn() -> PgLedger)) {
    if !available(test) {
        return;
    }
    let schemas = Schemas::default();
    f(&|| schemas.ledger());
}
