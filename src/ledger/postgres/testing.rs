//! PostgreSQL for the ledger tests: each ledger in a fresh schema of its
//! own (random name, dropped at the end) in database `test` on
//! 127.0.0.1:5432 as `postgres` (or `CALLD_TEST_PG_URL`). Without a
//! reachable server a test prints `SKIP:` and passes, unless
//! `CALLD_REQUIRE_POSTGRES=1`.

use std::cell::RefCell;
use std::time::Duration;

use rand::Rng;

use super::{PgLedger, PgOptions};
use crate::ledger::Ledger;

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
                panic!(
                    "CALLD_REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {}",
                    super::error_text(&e)
                );
            }
            eprintln!(
                "SKIP: {test}: PostgreSQL at {} unreachable: {e}",
                test_url()
            );
            false
        }
    }
}

/// [`available`], asked once per test binary (property tests ask per case).
pub(crate) fn pg_available(test: &str) -> bool {
    static UP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UP.get_or_init(|| available(test))
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

/// What the store tests need beyond the [`Ledger`] trait.
pub(crate) trait TestStore: Ledger {
    /// How many attempt rows the store holds (of every run).
    fn attempt_rows(&self) -> i64;

    /// The store's `record_call_op_if` (the single method of `Write::CallOp`).
    fn record_call_op_if(
        &mut self,
        id: &str,
        hang_up: bool,
        expected: Option<jiff::Timestamp>,
        at: jiff::Timestamp,
    ) -> crate::ledger::Result<()>;
}

impl TestStore for crate::ledger::SqliteLedger {
    fn record_call_op_if(
        &mut self,
        id: &str,
        hang_up: bool,
        expected: Option<jiff::Timestamp>,
        at: jiff::Timestamp,
    ) -> crate::ledger::Result<()> {
        crate::ledger::SqliteLedger::record_call_op_if(self, id, hang_up, expected, at)
    }

    fn attempt_rows(&self) -> i64 {
        self.conn_for_tests()
            .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
            .unwrap()
    }
}

impl TestStore for super::PgLedger {
    fn record_call_op_if(
        &mut self,
        id: &str,
        hang_up: bool,
        expected: Option<jiff::Timestamp>,
        at: jiff::Timestamp,
    ) -> crate::ledger::Result<()> {
        super::PgLedger::record_call_op_if(self, id, hang_up, expected, at)
    }

    fn attempt_rows(&self) -> i64 {
        self.client_for_tests()
            .query_one("SELECT COUNT(*) FROM attempts", &[])
            .unwrap()
            .get(0)
    }
}

/// One store test, run against each implementation: `fn name(mem) { .. }`
/// becomes `name::sqlite` and `name::postgres`, each calling `mem()` for a
/// fresh, empty ledger of its kind (the type is `L` in the body). The
/// PostgreSQL one uses fresh schemas and skips without a server (see
/// `ledger::postgres::testing`).
macro_rules! store_test {
    ($(#[$m:meta])* fn $name:ident($mk:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::ledger::postgres::testing::TestStore;

            #[allow(unused_mut)]
            fn body<L: TestStore>($mk: &dyn Fn() -> L) $body

            #[test]
            fn sqlite() {
                body(&|| $crate::ledger::SqliteLedger::open_in_memory().unwrap());
            }

            #[test]
            fn postgres() {
                $crate::ledger::postgres::testing::with_pg(module_path!(), |mk| body(mk));
            }
        }
    };
}

pub(crate) use store_test;
