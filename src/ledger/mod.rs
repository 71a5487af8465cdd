//! The durable ledger of runs and attempts (owned by the ledger work).
