//! Issue 13's must-shows, against a real PostgreSQL (docs/replicas.md,
//! "Testing it"): several real `calld run` replicas on one database, one
//! Graph emulator, a round-robin balancer in front of their callback
//! listeners. One test binary, so the scenarios (each with its own schema,
//! ports and emulator) run side by side instead of one after the other.
//! Without a database they print `SKIP:` (they fail instead when
//! `CALLD_REQUIRE_POSTGRES=1`).

#[path = "../replicas_support/mod.rs"]
mod replicas_support;

mod chaos;
mod db_cut;
mod fencing;
mod revisions;
mod skew;
