//! Batched operations: the shape of what the controller asks of a store
//! (issue 12, items 3 and 5).
//!
//! A decision reads the open state of every run in one go
//! ([`Ledger::open_state`]) and writes what it decided in one go
//! ([`Ledger::write_batch`]): one transaction, one fsync (SQLite) or one
//! round trip and one commit (a server-backed store), however many runs the
//! decision touched. The create requests of a batch of due runs leave only
//! after the batch that marked them `requesting` is committed.
//!
//! A write of a batch that the rules refuse (the run moved meanwhile) is
//! undone alone and reported in its own slot of the answer; the other
//! writes of the batch are kept.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::{
    CallPromise, CreateEnd, CreateRecorded, CreateStep, Finish, Inserted, NewRun, Result, Run,
    RunProgress,
};

/// One write of a [`Ledger::write_batch`](super::Ledger::write_batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// [`Ledger::insert_run`](super::Ledger::insert_run).
    Insert(NewRun),
    /// `insert_run`, then `finish` with `finish` only if the insert created
    /// the run (a slot recorded `missed` or `skipped` at once).
    Record { run: NewRun, finish: Finish },
    /// [`Ledger::finish`](super::Ledger::finish).
    Finish { id: String, finish: Finish },
    /// [`Ledger::retry_later`](super::Ledger::retry_later).
    Retry {
        id: String,
        due: Timestamp,
        reason: String,
    },
    /// [`Ledger::mark_requesting`](super::Ledger::mark_requesting), with the
    /// call's promise (the spec's `hangupAfter` as the request leaves).
    /// Committed before the create request is sent.
    ///
    /// `claim` is the fencing token of the claim this replica won
    /// ([`Ledger::claim`](super::Ledger::claim)): a shared store refuses the
    /// mark unless the claim is still this replica's and its lease has not
    /// run out. `None` for a single-process store.
    Requesting {
        id: String,
        hangup_after: Option<Duration>,
        claim: Option<super::FencingToken>,
    },
    /// A keepAlive (`hang_up: false`) or a hang-up is being sent for the
    /// run's call (recorded before it leaves: a restart sends an overdue
    /// keepAlive once).
    ///
    /// A compare-and-set: refused unless the stored time of the last such
    /// operation is still `expected` (what the decision read). So of
    /// several replicas deciding the same keepAlive, one sends it.
    CallOp {
        id: String,
        hang_up: bool,
        expected: Option<Timestamp>,
    },
    /// [`Ledger::record_create`](super::Ledger::record_create): a create
    /// request's attempts and end. The results of the requests that
    /// finished together are recorded in one batch (one fsync).
    Create {
        id: String,
        first: u32,
        steps: Vec<CreateStep>,
        end: CreateEnd,
    },
    /// [`Ledger::save_known`](super::Ledger::save_known): the identity
    /// step's memory of the specs it saw, in the same commit as the runs
    /// the decision that follows it inserts (one fsync for a new spec's
    /// memory and its first run).
    Known {
        before: BTreeMap<String, crate::identity::Known>,
        after: BTreeMap<String, crate::identity::Known>,
    },
}

/// What one [`Write`] did, in the same position of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Inserted(Inserted),
    /// The finished run; `None` when the key existed (nothing written).
    Recorded(Option<Run>),
    Finished(Run),
    Retried(Run),
    /// The attempt number opened by `requesting`.
    Requesting(u32),
    CallOp,
    Created(CreateRecorded),
    Known,
}

/// Everything a decision reads about the runs that are not finished, read
/// together (one snapshot of the store).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenState {
    /// [`Ledger::open_runs`](super::Ledger::open_runs).
    pub runs: Vec<Run>,
    /// [`Ledger::open_run_progress`](super::Ledger::open_run_progress),
    /// with `not_before` filled in.
    pub progress: BTreeMap<String, RunProgress>,
    /// [`Ledger::latest_runs`](super::Ledger::latest_runs), by spec name.
    pub latest: BTreeMap<String, Run>,
    /// [`Ledger::last_slots`](super::Ledger::last_slots).
    pub last_slots: BTreeMap<String, Timestamp>,
    /// The promises of the open runs' calls, by run id.
    pub promises: BTreeMap<String, CallPromise>,
}

/// The answer of a batch: per write, what it did or why it was refused.
pub type BatchResult = Result<Vec<Result<Written>>>;
