//! The transition rules of a run: pure functions of its current state, used by
//! every [`Ledger`](super::Ledger) implementation. A rule either allows a
//! change or says why not ([`Refusal`]); the store turns a refusal into
//! [`LedgerError::Refused`](super::LedgerError::Refused) and changes nothing.

use jiff::Timestamp;

use super::{CallState, LedgerError, Outcome, Run, RunState};

/// Why a change is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// What was attempted (`mark requesting`, `finish as completed`, ...).
    pub action: &'static str,
    pub why: &'static str,
}

/// The parts of a run the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunView<'a> {
    pub state: RunState,
    pub outcome: Option<Outcome>,
    pub call_id: Option<&'a str>,
    /// Whether an `established` notification arrived for the current attempt.
    pub established: bool,
}

/// The parts of `run` the rules look at.
pub fn view(run: &Run) -> RunView<'_> {
    RunView {
        state: run.state,
        outcome: run.outcome,
        call_id: run.call_id.as_deref(),
        established: run.established_at.is_some(),
    }
}

/// The error a store returns for a refused change to `run`.
pub fn refused(run: &Run, r: Refusal) -> LedgerError {
    let status = match run.outcome {
        Some(o) => format!("finished ({o})"),
        None => run.state.to_string(),
    };
    LedgerError::Refused {
        id: run.id.clone(),
        action: r.action,
        status,
        why: r.why,
    }
}

/// Where a keepAlive's (`hang_up: false`) or a hang-up's time is kept
/// (a column of `run_extras`).
pub fn call_op_column(hang_up: bool) -> &'static str {
    if hang_up {
        "hangup_requested_at"
    } else {
        "last_keep_alive"
    }
}

/// A keepAlive or hang-up is recorded only for a run still open.
pub fn check_call_op(run: RunView<'_>) -> Result<(), Refusal> {
    if run.state == RunState::Finished {
        Err(Refusal {
            action: "record a call operation of",
            why: "the run is finished",
        })
    } else {
        Ok(())
    }
}

/// The compare-and-set of a keepAlive or hang-up: refused unless the stored
/// time of the last one is still `expected` (what the decision read;
/// another replica sent it otherwise). Times compare at the stored
/// microsecond precision.
pub fn check_call_op_unchanged(
    stored: Option<Timestamp>,
    expected: Option<Timestamp>,
) -> Result<(), Refusal> {
    let us = |t: Option<Timestamp>| t.map(|t| t.as_microsecond());
    if us(stored) == us(expected) {
        Ok(())
    } else {
        Err(Refusal {
            action: "record a call operation of",
            why: super::ALREADY_DONE,
        })
    }
}

/// Order of the in-progress states after `scheduled`: a notification never
/// moves a run to a lower rank.
pub fn rank(state: RunState) -> u8 {
    match state {
        RunState::Scheduled => 0,
        RunState::Requesting => 1,
        RunState::Placed => 2,
        RunState::Establishing => 3,
        RunState::Established => 4,
        RunState::Terminating => 5,
        RunState::Finished => 6,
    }
}

/// `scheduled` → `requesting`: only a scheduled run may be requested. This is
/// the guard that keeps a run from being placed twice.
pub fn check_requesting(run: RunView<'_>) -> Result<(), Refusal> {
    if run.state == RunState::Scheduled {
        Ok(())
    } else {
        Err(Refusal {
            action: "mark requesting",
            why: "only a scheduled run can be requested",
        })
    }
}

/// Another attempt is only opened while the run is `requesting`.
pub fn check_begin_attempt(run: RunView<'_>) -> Result<(), Refusal> {
    if run.state == RunState::Requesting {
        Ok(())
    } else {
        Err(Refusal {
            action: "begin an attempt on",
            why: "attempts are only made while the run is requesting",
        })
    }
}

/// What [`check_placed`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// `requesting` → `placed`.
    ToPlaced,
    /// A notification already moved the run further: only set the call id.
    KeepState,
}

/// 201 received with `call_id`.
pub fn check_placed(run: RunView<'_>, call_id: &str) -> Result<Placed, Refusal> {
    const ACTION: &str = "mark placed";
    match run.state {
        RunState::Requesting => Ok(Placed::ToPlaced),
        RunState::Establishing | RunState::Established | RunState::Terminating => {
            match run.call_id {
                Some(existing) if existing != call_id => Err(Refusal {
                    action: ACTION,
                    why: "the run is following another call",
                }),
                _ => Ok(Placed::KeepState),
            }
        }
        RunState::Placed if run.call_id == Some(call_id) => Ok(Placed::KeepState),
        RunState::Placed => Err(Refusal {
            action: ACTION,
            why: "the run is already placed with another call id",
        }),
        RunState::Scheduled => Err(Refusal {
            action: ACTION,
            why: "the run was never marked requesting",
        }),
        RunState::Finished => Err(Refusal {
            action: ACTION,
            why: "the run is finished",
        }),
    }
}

/// Back to `scheduled` for another try: allowed while a request is failing
/// (`requesting`) or while a placed call has not been established.
pub fn check_retry(run: RunView<'_>) -> Result<(), Refusal> {
    const ACTION: &str = "retry";
    match run.state {
        RunState::Requesting => Ok(()),
        RunState::Placed | RunState::Establishing | RunState::Terminating if !run.established => {
            Ok(())
        }
        RunState::Established
        | RunState::Placed
        | RunState::Establishing
        | RunState::Terminating => Err(Refusal {
            action: ACTION,
            why: "the call was established; only calls that fail or are never established are retried",
        }),
        RunState::Scheduled => Err(Refusal {
            action: ACTION,
            why: "the run is already scheduled",
        }),
        RunState::Finished => Err(Refusal {
            action: ACTION,
            why: "the run is finished",
        }),
    }
}

/// Which outcome may end a run in which state:
///
/// | outcome | allowed from |
/// |---|---|
/// | `missed`, `skipped`, `canceled` | `scheduled` (the run was never sent) |
/// | `rejected`, `failed` | `scheduled` (refused before sending, e.g. a missing role) or `requesting` |
/// | `unknown` | `requesting` to `terminating` (something may be in flight) |
/// | `completed` | `placed` to `terminating`, after an `established` notification |
/// | `notEstablished` | `placed` to `terminating`, never established |
///
/// A finished run cannot be finished again.
pub fn check_finish(run: RunView<'_>, outcome: Outcome) -> Result<(), Refusal> {
    use RunState::*;
    let action = match outcome {
        Outcome::Completed => "finish as completed",
        Outcome::NotEstablished => "finish as notEstablished",
        Outcome::Rejected => "finish as rejected",
        Outcome::Failed => "finish as failed",
        Outcome::Unknown => "finish as unknown",
        Outcome::Missed => "finish as missed",
        Outcome::Skipped => "finish as skipped",
        Outcome::Canceled => "finish as canceled",
    };
    let refuse = |why| Err(Refusal { action, why });
    if run.state == Finished {
        return refuse("the run is already finished");
    }
    let call_phase = matches!(run.state, Placed | Establishing | Established | Terminating);
    match outcome {
        Outcome::Missed | Outcome::Skipped | Outcome::Canceled => {
            if run.state == Scheduled {
                Ok(())
            } else {
                refuse("a request was already made for this run")
            }
        }
        Outcome::Rejected | Outcome::Failed => {
            if matches!(run.state, Scheduled | Requesting) {
                Ok(())
            } else {
                refuse("Graph already accepted the request")
            }
        }
        Outcome::Unknown => {
            if run.state == Scheduled {
                refuse("no request was made for this run")
            } else {
                Ok(())
            }
        }
        Outcome::Completed => {
            if call_phase && run.established {
                Ok(())
            } else {
                refuse("the call was never established")
            }
        }
        Outcome::NotEstablished => {
            if !call_phase {
                refuse("no call was placed for this run")
            } else if run.established {
                refuse("the call was established")
            } else {
                Ok(())
            }
        }
    }
}

/// The run state a notification state points to, if any.
pub fn notified_state(state: &CallState) -> Option<RunState> {
    match state {
        CallState::Establishing | CallState::Ringing => Some(RunState::Establishing),
        CallState::Established => Some(RunState::Established),
        CallState::Terminating | CallState::Terminated => Some(RunState::Terminating),
        _ => None,
    }
}

/// What a notification does to a run (a history row is added in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationEffect {
    /// Only the history row.
    Record,
    /// Move the in-progress run to this (later) state; adopt the call id if
    /// the run had none.
    Advance(RunState),
    /// The run was `unknown`: reopen it in this state with the call id.
    Reopen(RunState),
}

/// Decides what a notification with `state` about call `call_id` does to
/// `run`.
///
/// - A finished run only gains the history row, except an `unknown` one,
///   which the notification proves was placed: it reopens in the notified
///   state (at least `placed`).
/// - A `scheduled` run (waiting for a retry, or never sent) is not moved.
/// - A notification about another call than the run's current one is history.
/// - Otherwise the run moves forward to the notified state, at least to
///   `placed` (the notification proves the call exists), never backwards.
pub fn on_notification(
    run: RunView<'_>,
    state: &CallState,
    call_id: Option<&str>,
) -> NotificationEffect {
    let other_call = matches!((run.call_id, call_id), (Some(a), Some(b)) if a != b);
    if other_call {
        return NotificationEffect::Record;
    }
    let target = notified_state(state).unwrap_or(RunState::Placed);
    match run.state {
        RunState::Finished => {
            if run.outcome == Some(Outcome::Unknown) {
                NotificationEffect::Reopen(target)
            } else {
                NotificationEffect::Record
            }
        }
        RunState::Scheduled => NotificationEffect::Record,
        current => {
            if rank(target) > rank(current) {
                NotificationEffect::Advance(target)
            } else {
                NotificationEffect::Record
            }
        }
    }
}
