//! The ledger: calld's only memory of runs, attempts and call states.
//!
//! A *run* is one firing of one spec (SPEC 4), identified by its [`RunKey`]:
//! the spec name plus a [`Slot`] (the scheduled time of an `at`/`cron` spec, or
//! the revision hash of an unscheduled one). The key is unique in the store, so
//! inserting it twice returns the first run: a run can never be placed twice.
//!
//! Each run carries a short random [`Run::id`] that the daemon appends to the
//! callbackUri as `calldRun=<id>`, so a notification can be matched to its run
//! even when the create response was lost.
//!
//! The [`Ledger`] trait is the API the daemon uses; [`SqliteLedger`] is the
//! embedded implementation (`<stateDir>/ledger.db`, WAL, `synchronous=FULL`).
//! Every write is one transaction that is durable when the method returns.
//! No method reads a clock: every time is an argument.
//!
//! The controller's decision path needs two batched calls
//! ([`Ledger::open_state`] to read, [`Ledger::write_batch`] to write; see
//! the `batch` module): whatever the number of runs a decision touches, it
//! costs one read snapshot and one commit. A server-backed store implements
//! the same two in one round trip each.
//!
//! The transition rules (what may happen to a run in which state) are pure
//! functions in [`rules`], shared by every implementation.
//!
//! # Life of a run
//!
//! ```text
//! insert_run ─▶ scheduled ─mark_requesting─▶ requesting ─mark_placed─▶ placed
//!                  │  ▲                          │                      │ notifications
//!                  │  └──────── retry_later ◀────┤                      ▼
//!                  │                             │           establishing ─▶ established
//!                  ▼                             ▼                      │         │
//!     finish(missed|skipped|canceled|      finish(rejected|failed|      ▼         ▼
//!            rejected|failed)                     unknown)          terminating ─▶ finish
//! ```
//!
//! A run left `requesting` by a crash becomes `unknown` when the store is next
//! opened for writing; a later notification for it reopens it
//! ([`StateChange::Reopened`]).

mod batch;
pub mod postgres;
mod replica;
pub mod rules;
pub mod scoped;
mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use self::postgres::{PgLedger, PgListener, PgOptions};
pub use batch::{BatchResult, OpenState, Write, Written};
pub use replica::{Claim, FencingToken, SpecView};
pub use sqlite::{
    CallPromise, CreateEnd, CreateRecorded, CreateStep, LEDGER_FILE, RenameRecord, SCHEMA_VERSION,
    SqliteLedger, WAITING_PREFIX, requeue_backoff,
};

/// Defines a string-valued enum with `as_str`, `Display`, `FromStr` and serde
/// (all using the same camelCase names).
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $var,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var,)+];

            /// The camelCase name, as in SPEC 4 and the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $s,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$var),)+
                    _ => Err(ParseEnumError {
                        kind: stringify!($name),
                        value: s.to_string(),
                    }),
                }
            }
        }
    };
}

/// A string that names no value of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseEnumError {
    kind: &'static str,
    value: String,
}

string_enum! {
    /// Where a run is. Every state but `finished` is in progress; a finished
    /// run has an [`Outcome`].
    RunState {
        /// Known and waiting for its due time.
        Scheduled = "scheduled",
        /// A create request may be on its way to Graph.
        Requesting = "requesting",
        /// Graph answered 201; the call id is known.
        Placed = "placed",
        /// A notification said `establishing` (or `ringing`).
        Establishing = "establishing",
        /// A notification said `established`.
        Established = "established",
        /// A notification said `terminating` or `terminated`: the call is
        /// ending; the daemon decides the outcome.
        Terminating = "terminating",
        /// Done; see the outcome.
        Finished = "finished",
    }
}

impl RunState {
    /// True for every state but `finished`.
    pub fn is_open(self) -> bool {
        self != RunState::Finished
    }
}

string_enum! {
    /// How a run ended (SPEC 4).
    Outcome {
        /// The call was established, then ended.
        Completed = "completed",
        /// The call ended without ever being established.
        NotEstablished = "notEstablished",
        /// Graph refused the request (4xx other than 429).
        Rejected = "rejected",
        /// Transient errors outlasted the retries.
        Failed = "failed",
        /// The request may have reached Graph but its answer was lost.
        /// Resolved if a notification for the run arrives later.
        Unknown = "unknown",
        /// Not placed within the deadline of its time.
        Missed = "missed",
        /// Suspended, or blocked by `concurrency: forbid`.
        Skipped = "skipped",
        /// The spec was removed or changed before its time.
        Canceled = "canceled",
    }
}

string_enum! {
    /// What became of one create request.
    Disposition {
        /// 201 Created.
        Placed = "placed",
        /// A 4xx other than 429.
        Rejected = "rejected",
        /// 429, 5xx or a network error before anything was sent.
        Failed = "failed",
        /// The request may have reached Graph; its answer was lost.
        Unknown = "unknown",
    }
}

/// A Graph `callState` as received in a notification. Values calld does not
/// know are kept as they are ([`CallState::Other`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum CallState {
    Incoming,
    Establishing,
    Ringing,
    Established,
    Hold,
    Transferring,
    TransferAccepted,
    Redirecting,
    Terminating,
    Terminated,
    /// Anything else (`unknownFutureValue`, values added later).
    Other(String),
}

impl CallState {
    pub fn as_str(&self) -> &str {
        match self {
            CallState::Incoming => "incoming",
            CallState::Establishing => "establishing",
            CallState::Ringing => "ringing",
            CallState::Established => "established",
            CallState::Hold => "hold",
            CallState::Transferring => "transferring",
            CallState::TransferAccepted => "transferAccepted",
            CallState::Redirecting => "redirecting",
            CallState::Terminating => "terminating",
            CallState::Terminated => "terminated",
            CallState::Other(s) => s,
        }
    }
}

impl From<&str> for CallState {
    fn from(s: &str) -> Self {
        match s {
            "incoming" => CallState::Incoming,
            "establishing" => CallState::Establishing,
            "ringing" => CallState::Ringing,
            "established" => CallState::Established,
            "hold" => CallState::Hold,
            "transferring" => CallState::Transferring,
            "transferAccepted" => CallState::TransferAccepted,
            "redirecting" => CallState::Redirecting,
            "terminating" => CallState::Terminating,
            "terminated" => CallState::Terminated,
            other => CallState::Other(other.to_string()),
        }
    }
}

impl From<String> for CallState {
    fn from(s: String) -> Self {
        CallState::from(s.as_str())
    }
}

impl From<CallState> for String {
    fn from(s: CallState) -> Self {
        s.as_str().to_string()
    }
}

impl FromStr for CallState {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(CallState::from(s))
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Graph's `resultInfo` (codes are Int32 in the metadata; the docs show
/// strings: the caller parses either into numbers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Which firing of a spec a run is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Slot {
    /// The scheduled time of an `at` or `cron` spec. Stored at microsecond
    /// precision (finer digits are dropped).
    At(Timestamp),
    /// The revision hash of an unscheduled spec.
    Revision(String),
    /// A run placed on request (`calld trigger`, `calld retry`), outside
    /// the schedule: the request's id, so the same request never places
    /// two runs.
    Trigger(String),
}

impl Slot {
    /// The slot with its time truncated to what the store keeps.
    pub fn normalized(&self) -> Slot {
        match self {
            Slot::At(t) => Slot::At(truncate_micros(*t)),
            Slot::Revision(r) => Slot::Revision(r.clone()),
            Slot::Trigger(r) => Slot::Trigger(r.clone()),
        }
    }

    /// The stored text: `at:<RFC 3339 UTC>`, `rev:<hash>` or `trigger:<request id>`.
    pub fn key_text(&self) -> String {
        match self.normalized() {
            Slot::At(t) => format!("at:{t}"),
            Slot::Revision(r) => format!("rev:{r}"),
            Slot::Trigger(r) => format!("trigger:{r}"),
        }
    }

    /// Parses [`Slot::key_text`].
    pub fn from_key_text(s: &str) -> Option<Slot> {
        if let Some(t) = s.strip_prefix("at:") {
            t.parse().ok().map(Slot::At)
        } else if let Some(r) = s.strip_prefix("trigger:") {
            Some(Slot::Trigger(r.to_string()))
        } else {
            s.strip_prefix("rev:")
                .map(|r| Slot::Revision(r.to_string()))
        }
    }
}

pub(crate) fn truncate_micros(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

/// The unique key of a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunKey {
    pub spec: String,
    pub slot: Slot,
}

impl RunKey {
    pub fn at(spec: impl Into<String>, time: Timestamp) -> RunKey {
        RunKey {
            spec: spec.into(),
            slot: Slot::At(time),
        }
    }

    pub fn revision(spec: impl Into<String>, revision: impl Into<String>) -> RunKey {
        RunKey {
            spec: spec.into(),
            slot: Slot::Revision(revision.into()),
        }
    }
}

/// What the daemon knows about a run before it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    pub key: RunKey,
    /// The spec revision (hash of its normalised content) the run was planned from.
    pub revision: String,
    /// When to place it: the scheduled time plus jitter.
    pub due: Timestamp,
    pub tenant_id: Option<String>,
}

/// One run as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// Short, URL-safe, unique (`[a-z2-7]{16}`); sent as `calldRun=<id>`.
    pub id: String,
    pub spec: String,
    pub slot: Slot,
    pub revision: String,
    /// The slot time, or for a revision slot the time the run was inserted.
    pub scheduled_at: Timestamp,
    /// Scheduled time plus jitter; moved by [`Ledger::retry_later`].
    pub due_at: Timestamp,
    pub state: RunState,
    /// Set exactly when `state` is `finished`.
    pub outcome: Option<Outcome>,
    /// Why the run finished as it did (free text for people).
    pub reason: Option<String>,
    /// The Graph call id of the current attempt.
    pub call_id: Option<String>,
    pub tenant_id: Option<String>,
    /// The latest `resultInfo` (from a notification or the finish).
    pub result_info: Option<ResultInfo>,
    /// When the first `established` notification of the current attempt arrived.
    pub established_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Run {
    pub fn key(&self) -> RunKey {
        RunKey {
            spec: self.spec.clone(),
            slot: self.slot.clone(),
        }
    }

    /// A run of the slot `at` (due then, nothing recorded yet), for unit
    /// tests that need runs without a ledger.
    #[cfg(test)]
    pub(crate) fn sample(id: String, spec: String, state: RunState, at: Timestamp) -> Run {
        Run {
            id,
            spec,
            slot: Slot::At(at),
            revision: "r1".into(),
            scheduled_at: at,
            due_at: at,
            state,
            outcome: None,
            reason: None,
            call_id: None,
            tenant_id: None,
            result_info: None,
            established_at: None,
            created_at: at,
            updated_at: at,
        }
    }
}

/// One create request of a run, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1, 2, ... within the run.
    pub number: u32,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// `None` while the request is in flight.
    pub disposition: Option<Disposition>,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    /// The call id Graph gave this attempt (set by [`Ledger::mark_placed`]).
    pub call_id: Option<String>,
}

/// How one create request ended, as the Graph client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptResult {
    pub disposition: Option<Disposition>,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<String>,
    /// The `client-request-id` the request was sent with, when it was not
    /// known as the attempt began (kept otherwise).
    pub client_request_id: Option<String>,
}

impl AttemptResult {
    pub fn new(disposition: Disposition) -> AttemptResult {
        AttemptResult {
            disposition: Some(disposition),
            ..AttemptResult::default()
        }
    }
}

/// A notification about a run's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStateUpdate {
    pub state: CallState,
    /// The call id from the notification's resource URL, when known.
    pub call_id: Option<String>,
    pub result_info: Option<ResultInfo>,
}

/// One notification for [`Ledger::record_call_states`], addressed to its
/// run by the `calldRun` id of its callbackUri when it carries one (and that
/// run exists), else by the Graph call id in `update.call_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateNotice {
    /// The `calldRun` query parameter the notification arrived with.
    pub run_id: Option<String>,
    /// The `calldAttempt` query parameter (the attempt whose create carried
    /// this callbackUri), when present: a notification about an earlier
    /// attempt's call is that attempt's history only.
    pub attempt: Option<u32>,
    /// The `tid` of the notification's token, when validated: a run of
    /// another tenant refuses it ([`LedgerError::WrongTenant`]).
    pub tenant_id: Option<String>,
    pub update: CallStateUpdate,
}

/// One notification state, as stored (history shows them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallStateRecord {
    /// Order of arrival within the run (1, 2, ...).
    pub seq: u32,
    pub at: Timestamp,
    pub state: CallState,
    pub call_id: Option<String>,
    pub result_info: Option<ResultInfo>,
}

/// What a notification did to its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StateChange {
    /// Only a history row was added (finished run, stale or out-of-order
    /// state, another attempt's call).
    Recorded,
    /// The run moved forward to a later in-progress state.
    Advanced { from: RunState },
    /// The run was `unknown` and is in progress again.
    Reopened,
}

/// The run after a notification, and what the notification did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notified {
    pub run: Run,
    pub change: StateChange,
}

/// Where an open run's requests and call stand, beyond its [`Run`] row:
/// what [`crate::reconcile`] needs to decide retries, outcomes and timeouts.
/// See [`Ledger::open_run_progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunProgress {
    /// How many times the run was marked `requesting` (1 + the `retry`
    /// attempts made so far); the Graph client's own retries of a 429/5xx
    /// (`begin_attempt`) do not count.
    pub tries: u32,
    /// How many create requests were made (every attempt, all tries).
    pub attempts: u32,
    /// The disposition of the latest attempt; `None` when there is no
    /// attempt or the latest one is still in flight.
    pub last_disposition: Option<Disposition>,
    /// Whether the latest attempt is still in flight.
    pub in_flight: bool,
    /// The latest notification state about the run's current call;
    /// `terminated` once the call reached it, whatever arrived after.
    pub last_call_state: Option<CallState>,
    /// A `scheduled` run waiting out a transient failure: not placed before
    /// this ([`SqliteLedger::not_before_times`]; filled in by the daemon).
    pub not_before: Option<Timestamp>,
}

/// The result of [`Ledger::insert_run`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inserted {
    pub run: Run,
    /// False when the key existed: `run` is the existing run, unchanged.
    pub created: bool,
}

/// How to finish a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub result_info: Option<ResultInfo>,
}

impl Finish {
    pub fn new(outcome: Outcome) -> Finish {
        Finish {
            outcome,
            reason: None,
            result_info: None,
        }
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Finish {
        self.reason = Some(reason.into());
        self
    }

    pub fn result_info(mut self, info: ResultInfo) -> Finish {
        self.result_info = Some(info);
        self
    }
}

/// A run with everything recorded about it (for `calld history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    #[serde(flatten)]
    pub run: Run,
    pub attempts: Vec<Attempt>,
    pub call_states: Vec<CallStateRecord>,
}

/// Everything that can go wrong with the ledger. Messages are for operators.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("no ledger at {path} (has the daemon run with this state directory?)")]
    NotFound { path: PathBuf },
    #[error(
        "the ledger at {path} is corrupt: {detail}; stop calld, move the file aside and restore a backup (see docs/ledger.md)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the ledger at {path} has schema version {found}, newer than this calld supports ({supported}); run a newer calld"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "the ledger at {path} has schema version {found}, older than this calld's ({expected}); start the daemon once to migrate it"
    )]
    SchemaOutdated {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error("another process holds {path}: is another calld running with this state directory?")]
    Locked { path: PathBuf },
    #[error("the ledger was opened read-only")]
    ReadOnly,
    #[error("no run with id {id:?}")]
    UnknownRun { id: String },
    #[error("run {id} has no attempt {number}")]
    UnknownAttempt { id: String, number: u32 },
    #[error("run {id}: cannot {action} a run that is {status}: {why}")]
    Refused {
        id: String,
        action: &'static str,
        /// The run's state, or `finished (outcome)`.
        status: String,
        why: &'static str,
    },
    #[error("run {id} already has call id {existing:?}, refusing {new:?}")]
    CallIdConflict {
        id: String,
        existing: String,
        new: String,
    },
    #[error("run {id}: the notification was signed for tenant {tenant}, not the run's")]
    WrongTenant { id: String, tenant: String },
    #[error("the ledger holds an unreadable value: {detail}")]
    BadData { detail: String },
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ledger database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL ledger (a connection, a statement, the schema). The
    /// text never holds the password.
    #[error("PostgreSQL ledger: {0}")]
    Postgres(String),
}

/// The `why` of a compare-and-set a replica lost ([`Write::CallOp`]).
pub const ALREADY_DONE: &str = "another replica already sent it";

impl LedgerError {
    /// A compare-and-set lost to another replica: the operation is done.
    pub fn is_already_done(e: &LedgerError) -> bool {
        matches!(e, LedgerError::Refused { why, .. } if *why == ALREADY_DONE)
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// The durable record of runs. Every write is durable when it returns; every
/// time is passed in (`now`), never read from a clock.
///
/// Methods that take a run id return [`LedgerError::UnknownRun`] for an id
/// that does not exist, and [`LedgerError::Refused`] when the rules in
/// [`rules`] forbid the change (the run is left as it was).
pub trait Ledger: Send {
    /// Inserts a `scheduled` run for `new.key`, or returns the run that
    /// already has that key (unchanged, `created: false`). Atomic: two
    /// writers racing on one key get the same run.
    ///
    /// Exception: a run `canceled` before it was ever sent (its spec was
    /// removed or its schedule changed, and is back) is revived: it is
    /// `scheduled` again with the new revision and due time, keeps its id,
    /// and `created` is true. It cannot have been placed, so this never
    /// places a slot twice.
    fn insert_run(&mut self, new: &NewRun, now: Timestamp) -> Result<Inserted>;

    /// The run with this id.
    fn run(&self, id: &str) -> Result<Option<Run>>;

    /// The run with this key.
    fn run_by_key(&self, key: &RunKey) -> Result<Option<Run>>;

    /// The run whose current call, or one of whose attempts, has this Graph
    /// call id (newest first if several).
    fn run_by_call_id(&self, call_id: &str) -> Result<Option<Run>>;

    /// `scheduled` → `requesting`, and opens attempt 1 (or the next number
    /// after a retry) as in flight. Durable before it returns: call it, then
    /// send the request. Returns the attempt number.
    fn mark_requesting(
        &mut self,
        id: &str,
        client_request_id: Option<&str>,
        now: Timestamp,
    ) -> Result<u32>;

    /// Opens another attempt on a `requesting` run (the Graph client retrying
    /// a 429/5xx). Returns the attempt number.
    fn begin_attempt(
        &mut self,
        id: &str,
        client_request_id: Option<&str>,
        now: Timestamp,
    ) -> Result<u32>;

    /// Records how an in-flight attempt ended. Refused if the attempt is
    /// already finished (for example by crash recovery).
    fn finish_attempt(
        &mut self,
        id: &str,
        number: u32,
        result: &AttemptResult,
        now: Timestamp,
    ) -> Result<()>;

    /// 201 received: `requesting` → `placed` with the call id (also stamped
    /// on the latest attempt). A notification that raced ahead is kept: a run
    /// already `establishing`/`established`/`terminating` only gains the id.
    fn mark_placed(&mut self, id: &str, call_id: &str, now: Timestamp) -> Result<Run>;

    /// Records a notification state. Every notification adds a history row;
    /// in addition it may advance an in-progress run (never backwards: an
    /// `establishing` after `established` changes nothing) or reopen an
    /// `unknown` one. A finished run with any other outcome only gains the
    /// history row.
    fn record_call_state(
        &mut self,
        id: &str,
        update: &CallStateUpdate,
        now: Timestamp,
    ) -> Result<Notified>;

    /// Records a batch of notifications in **one** transaction (one fsync),
    /// in order, each exactly as [`Ledger::record_call_state`] would. Each
    /// notice finds its run by `run_id`, else by its call id; one that
    /// matches no run gives `Ok(None)` and writes nothing. An error on one
    /// notice undoes that notice only (the others are kept); the outer error
    /// means nothing of the batch was written.
    fn record_call_states(
        &mut self,
        batch: &[StateNotice],
        now: Timestamp,
    ) -> Result<Vec<Result<Option<Notified>>>>;

    /// Puts a run whose attempt failed, or whose call was never established,
    /// back to `scheduled` with a new due time (SPEC `retry`). Clears the call id
    /// (it stays on the attempt).
    fn retry_later(
        &mut self,
        id: &str,
        due: Timestamp,
        reason: &str,
        now: Timestamp,
    ) -> Result<Run>;

    /// Finishes a run with an outcome (see [`rules::check_finish`] for
    /// which outcome is allowed from which state).
    fn finish(&mut self, id: &str, finish: &Finish, now: Timestamp) -> Result<Run>;

    /// Cancels the `scheduled` runs of `spec` (outcome `canceled`), all of
    /// them (`keep: None`) or those whose slot is not in `keep`. Returns the
    /// canceled runs.
    fn cancel_scheduled(
        &mut self,
        spec: &str,
        keep: Option<&[Slot]>,
        reason: &str,
        now: Timestamp,
    ) -> Result<Vec<Run>>;

    /// Every run that is not finished, oldest due first.
    fn open_runs(&self) -> Result<Vec<Run>>;

    /// Per spec, its newest run that has left `scheduled` (newest by
    /// scheduled time), ordered by spec name.
    fn latest_runs(&self) -> Result<Vec<Run>>;

    /// The runs of one spec, newest first (by scheduled time), at most
    /// `limit`, each with its attempts and call states.
    fn history(&self, spec: &str, limit: usize) -> Result<Vec<RunRecord>>;

    /// The attempts of a run, in order.
    fn attempts(&self, id: &str) -> Result<Vec<Attempt>>;

    /// The notification states of a run, in order of arrival.
    fn call_states(&self, id: &str) -> Result<Vec<CallStateRecord>>;

    /// Per spec, the latest time slot ever inserted and not canceled (for
    /// catch-up after downtime: a canceled slot was never due). Specs with
    /// only revision slots are absent.
    fn last_slots(&self) -> Result<std::collections::BTreeMap<String, Timestamp>>;

    /// For every open run, by run id: its tries, its latest attempt and the
    /// latest notification state of its current call (the decision input of
    /// [`crate::reconcile`]).
    fn open_run_progress(&self) -> Result<std::collections::BTreeMap<String, RunProgress>>;

    /// Applies `batch` in order in **one** transaction (one fsync; for a
    /// server-backed store, one commit), each write exactly as its single
    /// method would ([`Write`]). A write that fails (refused by the rules,
    /// unknown run) is undone alone and its error is in its position of the
    /// answer; the others are kept. The outer error means nothing of the
    /// batch was written. Durable when it returns: the controller sends the
    /// create requests of the `requesting` writes only after this returns.
    fn write_batch(&mut self, batch: &[Write], now: Timestamp) -> BatchResult;

    /// Everything a decision reads about the open runs, from one snapshot:
    /// [`Ledger::open_runs`], [`Ledger::open_run_progress`] (with each
    /// waiting run's earliest next try), [`Ledger::latest_runs`],
    /// [`Ledger::last_slots`] and the promises of the calls in progress.
    fn open_state(&self) -> Result<OpenState>;

    /// [`Ledger::open_state`] restricted to the runs of `specs` (and their
    /// `latest` / `last_slots` entries): a decision about the specs that
    /// changed reads only their runs (issue 12).
    fn open_state_of(&self, specs: &std::collections::BTreeSet<String>) -> Result<OpenState> {
        Ok(scoped::restrict(self.open_state()?, specs))
    }

    /// Deletes finished runs last updated before `cutoff`, with their attempts
    /// and states. The newest run of each spec, and its newest time-slot run,
    /// are always kept (status and catch-up need them). Returns how many runs
    /// were deleted.
    fn prune(&mut self, cutoff: Timestamp) -> Result<usize>;

    // ---- create requests, waiting runs and call promises (issue 10) ----

    /// `scheduled` → `requesting` (as [`Ledger::mark_requesting`]) and, in
    /// the same transaction, the call's promise: the spec's `hangupAfter`
    /// as it is now, kept with the run whatever happens to the spec later.
    fn mark_requesting_with(
        &mut self,
        id: &str,
        hangup_after: Option<std::time::Duration>,
        now: Timestamp,
    ) -> Result<u32>;

    /// Records a create request in **one** transaction: every attempt (the
    /// first is `first`, opened by `mark_requesting`; more are opened here),
    /// then the end: the call id and `placed`, or back to `scheduled` with
    /// the earliest next try, or the last attempt closed. A crash leaves
    /// either nothing of it or all of it.
    fn record_create(
        &mut self,
        id: &str,
        first: u32,
        steps: &[CreateStep],
        end: &CreateEnd,
        now: Timestamp,
    ) -> Result<CreateRecorded>;

    /// Sets the reason of a `scheduled` run that cannot be placed now (no
    /// token): `waiting: <why>`. A run carrying another reason keeps it.
    /// Returns whether the row changed.
    fn note_waiting(&mut self, id: &str, why: &str, now: Timestamp) -> Result<bool>;

    /// The earliest next try of each open run waiting out a transient
    /// failure, by run id.
    fn not_before_times(&self) -> Result<std::collections::BTreeMap<String, Timestamp>>;

    /// The promises of every open run's call, by run id.
    fn call_promises(&self) -> Result<std::collections::BTreeMap<String, CallPromise>>;

    /// The promise of one run (None: none recorded).
    fn call_promise(&self, id: &str) -> Result<Option<CallPromise>>;

    /// A keepAlive (`hang_up: false`) or hang-up was sent for the run's call
    /// at `at` (unconditionally; [`Write::CallOp`] is the compare-and-set).
    fn record_call_op(&mut self, id: &str, hang_up: bool, at: Timestamp) -> Result<()>;

    // ---- run identity (issue 9) ----

    /// Moves every run of `from` to `to` and records the rename. Refused
    /// (`None`) when `to` already has runs. Returns how many runs moved.
    fn rename_spec(
        &mut self,
        from: &str,
        to: &str,
        revision: &str,
        now: Timestamp,
    ) -> Result<Option<usize>>;

    /// Re-keys an unscheduled spec's run recorded under revision `from` to
    /// `to`, unless a run of `to` exists. Returns whether a run was re-keyed.
    fn adopt_revision(&mut self, spec: &str, from: &str, to: &str) -> Result<bool>;

    /// The renames that led to `name`, newest first, following the chain back.
    fn renames_to(&self, name: &str) -> Result<Vec<RenameRecord>>;

    /// The specs known at this daemon's last identity step (a shared store
    /// keeps one memory per replica).
    fn known_specs(&self) -> Result<std::collections::BTreeMap<String, crate::identity::Known>>;

    /// Replaces the known specs: writes only what changed from `before`.
    fn save_known(
        &mut self,
        before: &std::collections::BTreeMap<String, crate::identity::Known>,
        after: &std::collections::BTreeMap<String, crate::identity::Known>,
    ) -> Result<()>;

    // ---- reports ----

    /// Per spec, its newest run with outcome `completed`, by spec name.
    fn last_successes(&self) -> Result<Vec<Run>>;

    /// Per spec, its newest finished run that was not `canceled`.
    fn latest_finished_runs(&self) -> Result<Vec<Run>>;

    /// Checks the store's integrity (SQLite: `PRAGMA quick_check`).
    fn check_integrity(&self) -> Result<()> {
        Ok(())
    }

    /// The runs that recovery at open turned from `requesting` into
    /// `unknown` (the daemon logs them).
    fn recovered(&self) -> &[String] {
        &[]
    }

    /// A short text naming the store for logs and `status` (never a secret).
    fn describe(&self) -> String;

    // ---- replicas (issue 13; the defaults are a single process's) ----

    /// Whether several daemons share this store (claims, leases and views
    /// matter then).
    fn is_shared(&self) -> bool {
        false
    }

    /// Claims due runs before they are marked `requesting`: per claim, the
    /// fencing token when won, `None` when lost (another replica holds
    /// the run, the run moved, it is not due by the store's clock, or its
    /// revision is not the newest view). A single process wins every
    /// claim of a `scheduled` run.
    fn claim(&mut self, claims: &[Claim], now: Timestamp) -> Result<Vec<Option<FencingToken>>> {
        let _ = now;
        claims
            .iter()
            .map(|c| {
                Ok(self
                    .run(&c.id)?
                    .filter(|r| r.state == RunState::Scheduled)
                    .map(|_| 0))
            })
            .collect()
    }

    /// Extends the leases of the runs this replica holds; returns the ids
    /// that are no longer its own (the lease ran out and another took it).
    fn renew_leases(&mut self, held: &[(String, FencingToken)]) -> Result<Vec<String>> {
        let _ = held;
        Ok(Vec::new())
    }

    /// Runs left `requesting` by a replica whose lease ran out (it died or
    /// stalled mid-request) become `unknown`, never re-sent. Returns them.
    fn reap_expired(&mut self, now: Timestamp) -> Result<Vec<Run>> {
        let _ = now;
        Ok(Vec::new())
    }

    /// Publishes this replica's views of the specs that changed.
    fn publish_views(&mut self, views: &[SpecView]) -> Result<()> {
        let _ = views;
        Ok(())
    }

    /// The newest view of every spec, over all replicas.
    fn newest_views(&mut self) -> Result<std::collections::BTreeMap<String, SpecView>> {
        Ok(std::collections::BTreeMap::new())
    }

    /// The store's clock, for a shared store (every replica times its
    /// decisions by it); `None` for a single process.
    fn db_now(&mut self) -> Result<Option<Timestamp>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
