//! The pure side of issue 10 ("failures are not outcomes"): the decision
//! with no token, with a run waiting out a 429, with a call whose spec is
//! gone; and the ledger's attempt-matched, order-free notifications.

mod reconcile_support;

use std::time::Duration;

use calld::ledger::{
    AttemptResult, CallState, CallStateUpdate, CreateEnd, CreateStep, Disposition, Ledger,
    LedgerError, Outcome, RunState, SqliteLedger, StateChange, StateNotice,
};
use calld::reconcile::{Action, CallMemo};
use reconcile_support::*;

const T0: &str = "2026-12-01T10:00:00Z";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Places the due run of `w` and returns its id.
fn place_due(w: &mut World, now: jiff::Timestamp) -> String {
    let d = w.decide(now);
    let applied = w.apply(&d, now);
    assert_eq!(applied.placed.len(), 1, "{d:#?}");
    applied.placed[0].1.clone()
}

#[test]
fn with_no_token_a_due_run_waits_then_is_missed_with_the_last_error() {
    let now = ts(T0);
    let mut s = spec("daily", Some(at(T0)));
    s.schedule.as_mut().unwrap().deadline = Some(mins(5));
    let mut w = World::new(vec![s]);
    w.settings.placement_blocked = true;
    let d = w.decide(now);
    assert!(
        places(&d).is_empty(),
        "nothing placed without a token: {d:#?}"
    );
    w.apply(&d, now);
    let run = w.ledger.open_runs().unwrap().pop().unwrap();
    assert_eq!(run.state, RunState::Scheduled);
    // the daemon notes why
    assert!(
        w.ledger
            .note_waiting(
                &run.id,
                "token endpoint: invalid_client AADSTS7000215 since 10:00",
                now
            )
            .unwrap()
    );
    // within the deadline: still waiting, woken at the deadline
    let d = w.decide(plus(now, mins(3)));
    assert!(places(&d).is_empty() && finishes(&d).is_empty(), "{d:#?}");
    assert!(d.wake_at.is_some_and(|t| t <= plus(now, mins(5) + secs(1))));
    // past it: missed, with the last error
    let d = w.decide(plus(now, mins(6)));
    let f = finishes(&d);
    assert_eq!(f.len(), 1, "{d:#?}");
    assert_eq!(f[0].1, Outcome::Missed);
    assert!(
        f[0].2
            .contains("last error: token endpoint: invalid_client AADSTS7000215"),
        "{}",
        f[0].2
    );
    // the token back in time: placed, once
    w.settings.placement_blocked = false;
    let d = w.decide(plus(now, mins(4)));
    assert_eq!(places(&d).len(), 1);
}

#[test]
fn a_run_back_from_a_429_waits_for_its_retry_after_and_spends_no_retry() {
    let now = ts(T0);
    let mut w = World::new(vec![spec("once", None)]);
    let id = place_due(&mut w, now);
    let step = CreateStep {
        result: AttemptResult::new(Disposition::Failed),
        started_at: now,
        finished_at: now,
        client_request_id: "c1".into(),
    };
    let end = CreateEnd::Requeue {
        retry_after: Some(secs(30)),
        error: "HTTP 429 (TooManyRequests)".into(),
    };
    let r = w.ledger.record_create(&id, 1, &[step], &end, now).unwrap();
    assert_eq!(r.run.state, RunState::Scheduled);
    // before the Retry-After: nothing, woken at it
    let d = w.decide(plus(now, secs(10)));
    assert!(places(&d).is_empty(), "{d:#?}");
    assert_eq!(d.wake_at, Some(plus(now, secs(30))));
    // a restart loses nothing: the time is in the ledger
    w.restart(plus(now, secs(20)));
    let d = w.decide(plus(now, secs(31)));
    assert_eq!(places(&d).len(), 1, "{d:#?}");
    assert_eq!(w.ledger.open_run_progress().unwrap()[&id].tries, 0);
}

#[test]
fn without_a_deadline_a_waiting_run_gives_up_after_the_window() {
    let now = ts(T0);
    let mut w = World::new(vec![spec("once", None)]);
    w.settings.placement_blocked = true;
    let d = w.decide(now);
    w.apply(&d, now);
    let run = w.ledger.open_runs().unwrap().pop().unwrap();
    w.ledger
        .note_waiting(&run.id, "token endpoint: down", now)
        .unwrap();
    let d = w.decide(plus(now, mins(59)));
    assert!(finishes(&d).is_empty());
    let d = w.decide(plus(now, mins(61)));
    let f = finishes(&d);
    assert_eq!(f.len(), 1, "{d:#?}");
    assert_eq!(f[0].1, Outcome::Missed);
    assert!(f[0].2.contains("transientRetryWindow"), "{}", f[0].2);
}

/// An established call of run `id` (call `c`), established at `at`.
fn establish(w: &mut World, id: &str, at: jiff::Timestamp) {
    w.answer_placed(id, "c", at);
    w.notify(id, "c", "established", at);
}

#[test]
fn a_removed_specs_call_is_hung_up_at_the_hangup_after_it_was_placed_with() {
    let now = ts(T0);
    let mut s = spec("gone", None);
    s.hangup_after = Some(secs(2));
    let mut w = World::new(vec![s]);
    let id = place_due(&mut w, now);
    establish(&mut w, &id, now);
    w.specs.clear(); // removed
    w.calls.insert(
        id.clone(),
        CallMemo {
            placed_hangup_after: Some(Some(secs(2))),
            ..CallMemo::default()
        },
    );
    let d = w.decide(plus(now, secs(1)));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::HangUp { .. })));
    assert_eq!(d.wake_at, Some(plus(now, secs(2))));
    let d = w.decide(plus(now, secs(2)));
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::HangUp { id: x, .. } if *x == id)),
        "{d:#?}"
    );
    // placed without hangupAfter: left alone even if the spec now has one
    let mut s = spec("gone", None);
    s.hangup_after = Some(secs(1));
    w.specs.insert("gone".into(), std::sync::Arc::new(s));
    w.calls.insert(
        id.clone(),
        CallMemo {
            placed_hangup_after: Some(None),
            ..CallMemo::default()
        },
    );
    let d = w.decide(plus(now, secs(5)));
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::HangUp { .. })),
        "{d:#?}"
    );
}

#[test]
fn keep_alive_stops_after_the_maximum_call_length() {
    let now = ts(T0);
    let mut w = World::new(vec![spec("long", None)]);
    w.settings.keep_alive_interval = mins(15);
    w.settings.max_call_duration = mins(60);
    let id = place_due(&mut w, now);
    establish(&mut w, &id, now);
    let keep_alive = |d: &calld::reconcile::Decision| {
        d.actions
            .iter()
            .any(|a| matches!(a, Action::KeepAlive { .. }))
    };
    // overdue after a restart: one keepAlive, then the interval again
    let d = w.decide(plus(now, mins(40)));
    assert!(keep_alive(&d));
    w.calls.entry(id.clone()).or_default().last_keep_alive = Some(plus(now, mins(40)));
    assert!(!keep_alive(&w.decide(plus(now, mins(41)))));
    // the next one would fall past maxCallDuration: none
    w.calls.entry(id.clone()).or_default().last_keep_alive = Some(plus(now, mins(50)));
    let d = w.decide(plus(now, mins(66)));
    assert!(!keep_alive(&d), "{d:#?}");
}

fn placed_run(l: &mut SqliteLedger, call: &str, tenant: Option<&str>) -> String {
    let now = ts(T0);
    let new = calld::ledger::NewRun {
        key: calld::ledger::RunKey::revision("s", "r"),
        revision: "r".into(),
        due: now,
        tenant_id: tenant.map(str::to_string),
    };
    let id = l.insert_run(&new, now).unwrap().run.id;
    let n = l.mark_requesting_with(&id, None, now).unwrap();
    let step = CreateStep {
        result: AttemptResult::new(Disposition::Placed),
        started_at: now,
        finished_at: now,
        client_request_id: "c".into(),
    };
    l.record_create(
        &id,
        n,
        &[step],
        &CreateEnd::Placed {
            call_id: call.into(),
        },
        now,
    )
    .unwrap();
    id
}

fn notice(
    run: &str,
    attempt: Option<u32>,
    call: &str,
    state: &str,
    tid: Option<&str>,
) -> StateNotice {
    StateNotice {
        run_id: Some(run.to_string()),
        attempt,
        tenant_id: tid.map(str::to_string),
        update: CallStateUpdate {
            state: CallState::from(state),
            call_id: Some(call.to_string()),
            result_info: None,
        },
    }
}

#[test]
fn an_earlier_attempts_notification_is_that_attempts_history_only() {
    let now = ts(T0);
    let mut l = SqliteLedger::open_in_memory().unwrap();
    let id = placed_run(&mut l, "A", None);
    // attempt 1 not answered: a retry, attempt 2 placed with call B
    l.record_call_state(
        &id,
        &notice(&id, Some(1), "A", "terminated", None).update,
        now,
    )
    .unwrap();
    l.retry_later(&id, now, "retry", now).unwrap();
    let n = l.mark_requesting_with(&id, None, now).unwrap();
    assert_eq!(n, 2);
    // attempt 1's late "established" while attempt 2's request is in flight
    let out = l
        .record_call_states(&[notice(&id, Some(1), "A", "established", None)], now)
        .unwrap();
    assert_eq!(
        out[0].as_ref().unwrap().as_ref().unwrap().change,
        StateChange::Recorded
    );
    let run = l.run(&id).unwrap().unwrap();
    assert_eq!(run.state, RunState::Requesting);
    assert_eq!(run.call_id, None, "attempt 1's call did not take over");
    let step = CreateStep {
        result: AttemptResult::new(Disposition::Placed),
        started_at: now,
        finished_at: now,
        client_request_id: "c2".into(),
    };
    l.record_create(
        &id,
        2,
        &[step],
        &CreateEnd::Placed {
            call_id: "B".into(),
        },
        now,
    )
    .unwrap();
    // by call id alone, too
    let mut by_call = notice(&id, None, "A", "establishing", None);
    by_call.run_id = None;
    l.record_call_states(&[by_call], now).unwrap();
    assert_eq!(l.run(&id).unwrap().unwrap().state, RunState::Placed);
    l.record_call_states(&[notice(&id, Some(2), "B", "established", None)], now)
        .unwrap();
    let run = l.run(&id).unwrap().unwrap();
    assert_eq!(
        (run.state, run.call_id.as_deref()),
        (RunState::Established, Some("B"))
    );
}

#[test]
fn established_after_terminated_reopens_not_established_as_answered() {
    let now = ts(T0);
    let mut l = SqliteLedger::open_in_memory().unwrap();
    let id = placed_run(&mut l, "A", None);
    l.record_call_states(&[notice(&id, Some(1), "A", "terminated", None)], now)
        .unwrap();
    l.finish(
        &id,
        &calld::ledger::Finish::new(Outcome::NotEstablished),
        now,
    )
    .unwrap();
    let out = l
        .record_call_states(&[notice(&id, Some(1), "A", "established", None)], now)
        .unwrap();
    let n = out[0].as_ref().unwrap().as_ref().unwrap();
    assert_eq!(n.change, StateChange::Reopened);
    assert_eq!(n.run.state, RunState::Terminating);
    assert!(n.run.established_at.is_some());
    // the decision then records completed
    l.finish(&id, &calld::ledger::Finish::new(Outcome::Completed), now)
        .unwrap();
    // duplicates: no new rows
    let before = l.call_states(&id).unwrap().len();
    l.record_call_states(&[notice(&id, Some(1), "A", "established", None)], now)
        .unwrap();
    assert_eq!(l.call_states(&id).unwrap().len(), before);
}

#[test]
fn another_tenants_notification_is_refused_and_writes_nothing() {
    let now = ts(T0);
    let mut l = SqliteLedger::open_in_memory().unwrap();
    let id = placed_run(&mut l, "A", Some("72f988bf-86f1-41af-91ab-2d7cd011db47"));
    let out = l
        .record_call_states(
            &[
                notice(
                    &id,
                    Some(1),
                    "A",
                    "established",
                    Some("0b3a1f52-0000-0000-0000-000000000000"),
                ),
                notice(
                    &id,
                    Some(1),
                    "A",
                    "establishing",
                    Some("72F988BF-86F1-41AF-91AB-2D7CD011DB47"),
                ),
            ],
            now,
        )
        .unwrap();
    assert!(matches!(out[0], Err(LedgerError::WrongTenant { .. })));
    assert!(out[1].is_ok(), "the right tenant (any case) is recorded");
    let states = l.call_states(&id).unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state, CallState::Establishing);
}

mod order_free {
    use super::*;
    use proptest::prelude::*;

    fn states() -> impl Strategy<Value = (Vec<&'static str>, usize)> {
        (
            proptest::collection::vec(
                prop_oneof![
                    Just("establishing"),
                    Just("ringing"),
                    Just("established"),
                    Just("terminating"),
                    Just("terminated"),
                    Just("hold"),
                ],
                0..8,
            ),
            0usize..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        /// Any order, any duplicates, decisions in between: the outcome
        /// is `completed` exactly when the call ever reached `established`,
        /// and the run is placed once.
        #[test]
        fn the_outcome_follows_the_set_of_states((mut seq, at) in states()) {
            seq.insert(at.min(seq.len()), "terminated");
            let t0 = ts(T0);
            let mut w = World::new(vec![spec("call", None)]);
            let id = place_due(&mut w, t0);
            w.answer_placed(&id, "c", t0);
            let mut placed = 1;
            for (i, state) in seq.iter().enumerate() {
                let now = plus(t0, secs(i as u64 + 1));
                w.notify(&id, "c", state, now);
                let d = w.decide(now);
                placed += w.apply(&d, now).placed.len();
            }
            for k in 0..2u64 {
                let now = plus(t0, mins(5 + k));
                let d = w.decide(now);
                placed += w.apply(&d, now).placed.len();
            }
            let run = w.ledger.run(&id).unwrap().unwrap();
            prop_assert_eq!(run.state, RunState::Finished, "{:?}", seq);
            let want = if seq.contains(&"established") {
                Outcome::Completed
            } else {
                Outcome::NotEstablished
            };
            prop_assert_eq!(run.outcome, Some(want), "{:?}", seq);
            prop_assert_eq!(placed, 1);
        }
    }
}
