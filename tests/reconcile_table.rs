//! Table tests of `calld::reconcile`: one situation each, applied to a real
//! (in-memory) ledger, and each decision re-run on the state it produced.

mod reconcile_support;

use std::time::Duration;

use calld::ledger::{Disposition, Ledger, Outcome, RunKey, RunState, Slot};
use calld::reconcile::Action;
use calld::schedule::Concurrency;
use calld::spec::model::roles;
use reconcile_support::*;

/// Decides at `now`, applies, and checks that deciding again at once asks
/// for nothing more (a decision is a fixpoint once applied).
fn step(w: &mut World, now: jiff::Timestamp) -> (calld::reconcile::Decision, Applied) {
    let d = w.decide(now);
    let applied = w.apply(&d, now);
    let again = w.decide(now);
    assert!(
        again.actions.is_empty(),
        "deciding again at {now} after applying {:#?}\nasked for {:#?}",
        d.actions,
        again.actions
    );
    if let Some(wake) = d.wake_at {
        assert!(wake > now, "wake_at {wake} is not after now {now}");
    }
    (d, applied)
}

fn key(spec: &str, t: &str) -> RunKey {
    RunKey::at(spec, ts(t))
}

#[test]
fn a_cron_spec_gets_its_next_run_inserted_then_placed_at_its_time() {
    let mut w = World::new(vec![spec("standup", Some(cron("0 9 * * *")))]);
    let (d, _) = step(&mut w, ts("2026-03-02T08:59:30Z"));
    assert_eq!(places(&d).len(), 0);
    assert!(
        matches!(&d.actions[..], [Action::Insert { run }] if run.key == key("standup", "2026-03-02T09:00:00Z"))
    );
    assert_eq!(d.wake_at, Some(ts("2026-03-02T09:00:00Z")));

    let (d, applied) = step(&mut w, ts("2026-03-02T09:00:00Z"));
    assert_eq!(places(&d), vec![&key("standup", "2026-03-02T09:00:00Z")]);
    assert_eq!(applied.placed.len(), 1);
    // The next one is visible, and the daemon sleeps until it.
    assert_eq!(
        w.run(&key("standup", "2026-03-03T09:00:00Z")).state,
        RunState::Scheduled
    );
    assert_eq!(d.wake_at, Some(ts("2026-03-03T09:00:00Z")));
}

#[test]
fn after_downtime_only_the_most_recent_slot_within_its_deadline_is_placed() {
    let mut w = World::new(vec![spec("tick", Some(cron("*/10 * * * *")))]);
    step(&mut w, ts("2026-03-02T09:59:00Z"));
    let (_, a) = step(&mut w, ts("2026-03-02T10:00:00Z"));
    assert_eq!(a.placed.len(), 1);
    // Down from 10:00 to 12:03.
    w.restart(ts("2026-03-02T12:03:00Z"));
    let (d, a) = step(&mut w, ts("2026-03-02T12:03:00Z"));
    assert_eq!(
        a.placed.iter().map(|p| &p.0).collect::<Vec<_>>(),
        vec![&key("tick", "2026-03-02T12:00:00Z")]
    );
    let missed: Vec<_> = finishes(&d)
        .into_iter()
        .filter(|f| f.1 == Outcome::Missed)
        .collect();
    // 10:10 (inserted before the downtime) to 11:50.
    assert_eq!(missed.len(), 11, "{missed:#?}");
    assert!(d.dropped.is_empty());
    // Every slot from 10:00 to 12:10 has exactly one run.
    let slots: Vec<_> = w.outcomes("tick").into_iter().map(|(k, _)| k).collect();
    let expected: Vec<_> = (0..=13)
        .map(|i| RunKey::at("tick", plus(ts("2026-03-02T10:00:00Z"), mins(10 * i))))
        .collect();
    assert_eq!(slots, expected);
}

#[test]
fn after_downtime_past_every_deadline_nothing_is_placed() {
    let mut w = World::new(vec![spec("tick", Some(cron("*/10 * * * *")))]);
    step(&mut w, ts("2026-03-02T10:00:00Z"));
    let (d, a) = step(&mut w, ts("2026-03-02T12:07:00Z"));
    assert!(a.placed.is_empty());
    assert!(
        finishes(&d)
            .iter()
            .any(|f| *f.0 == key("tick", "2026-03-02T12:00:00Z")
                && f.1 == Outcome::Missed
                && f.2.contains("deadline"))
    );
    assert_eq!(d.wake_at, Some(ts("2026-03-02T12:10:00Z")));
}

#[test]
fn a_week_of_downtime_records_a_bounded_number_of_missed_runs_and_counts_the_rest() {
    let mut w = World::new(vec![spec("every-minute", Some(cron("* * * * *")))]);
    step(&mut w, ts("2026-03-02T00:00:00Z"));
    let back = ts("2026-03-09T00:00:30Z");
    w.restart(back);
    let (d, a) = step(&mut w, back);
    assert_eq!(a.placed.len(), 1);
    assert_eq!(a.placed[0].0, key("every-minute", "2026-03-09T00:00:00Z"));
    let recorded = finishes(&d).len() as u64;
    assert!(recorded <= 101, "{recorded} rows recorded");
    assert_eq!(d.dropped.len(), 1);
    let dropped = &d.dropped[0];
    assert!(!dropped.more);
    // The slots from 00:01 on day one to 23:59 on day seven: each one is
    // placed, recorded or counted, exactly once.
    let slots_in_between = 7 * 24 * 60 - 1;
    assert_eq!(dropped.count + recorded, slots_in_between, "{dropped:?}");
    // 00:01 was inserted before the downtime (the next run): finished as
    // missed; counting starts after it.
    assert_eq!(dropped.first, ts("2026-03-02T00:02:00Z"));
    // The recorded ones are the most recent.
    let last_recorded = finishes(&d)
        .iter()
        .map(|f| f.0.clone())
        .max_by_key(|k| k.slot.key_text());
    assert_eq!(
        last_recorded,
        Some(key("every-minute", "2026-03-08T23:59:00Z"))
    );
}

#[test]
fn a_suspended_spec_has_its_due_runs_skipped_and_places_nothing() {
    let mut s = spec("standup", Some(cron("0 9 * * *")));
    s.suspend = true;
    let mut w = World::new(vec![s]);
    step(&mut w, ts("2026-03-02T08:00:00Z"));
    let (d, a) = step(&mut w, ts("2026-03-02T09:00:00Z"));
    assert!(a.placed.is_empty());
    assert_eq!(
        finishes(&d),
        vec![(
            &key("standup", "2026-03-02T09:00:00Z"),
            Outcome::Skipped,
            "the spec is suspended"
        )]
    );
    // Resumed: the next slot is placed as usual.
    std::sync::Arc::make_mut(w.specs.get_mut("standup").unwrap()).suspend = false;
    let (_, a) = step(&mut w, ts("2026-03-03T09:00:00Z"));
    assert_eq!(a.placed.len(), 1);
}

#[test]
fn an_unscheduled_suspended_spec_waits_and_is_placed_when_resumed() {
    let mut s = spec("once", None);
    s.suspend = true;
    let mut w = World::new(vec![s]);
    let (d, _) = step(&mut w, ts("2026-03-02T08:00:00Z"));
    assert!(d.actions.is_empty());
    assert_eq!(d.wake_at, None);
    std::sync::Arc::make_mut(w.specs.get_mut("once").unwrap()).suspend = false;
    let (_, a) = step(&mut w, ts("2026-03-02T08:05:00Z"));
    assert_eq!(a.placed.len(), 1);
}

#[test]
fn a_held_spec_keeps_its_runs_untouched_until_it_is_valid_again() {
    let mut w = World::new(vec![spec("standup", Some(cron("0 9 * * *")))]);
    step(&mut w, ts("2026-03-02T08:00:00Z"));
    let s = w.specs.remove("standup").unwrap();
    w.held.insert("standup".into());
    // Due, then past its deadline: nothing happens to it.
    for now in [
        "2026-03-02T09:00:00Z",
        "2026-03-02T09:30:00Z",
        "2026-03-04T09:00:00Z",
    ] {
        let (d, _) = step(&mut w, ts(now));
        assert!(d.actions.is_empty(), "{:?}", d.actions);
    }
    assert_eq!(
        w.run(&key("standup", "2026-03-02T09:00:00Z")).state,
        RunState::Scheduled
    );
    // Valid again: the held run is past its deadline, so missed; the
    // catch-up of the days in between follows the usual rule.
    w.held.clear();
    w.specs.insert("standup".into(), s);
    let (d, a) = step(&mut w, ts("2026-03-04T09:01:00Z"));
    assert_eq!(a.placed[0].0, key("standup", "2026-03-04T09:00:00Z"));
    assert_eq!(
        finishes(&d)
            .iter()
            .filter(|f| f.1 == Outcome::Missed)
            .count(),
        2
    );
}

#[test]
fn a_removed_spec_has_its_scheduled_runs_canceled_and_its_call_left_alone() {
    let mut w = World::new(vec![spec(
        "standup",
        Some(with_concurrency(cron("0 9 * * *"), Concurrency::Allow)),
    )]);
    step(&mut w, ts("2026-03-02T08:00:00Z"));
    let (_, a) = step(&mut w, ts("2026-03-02T09:00:00Z"));
    let id = a.placed[0].1.clone();
    w.answer_placed(&id, "call-1", ts("2026-03-02T09:00:01Z"));
    w.notify(&id, "call-1", "established", ts("2026-03-02T09:00:05Z"));
    w.specs.clear();
    let (d, _) = step(&mut w, ts("2026-03-02T09:01:00Z"));
    assert_eq!(
        finishes(&d),
        vec![(
            &key("standup", "2026-03-03T09:00:00Z"),
            Outcome::Canceled,
            "the spec was removed"
        )]
    );
    assert_eq!(
        w.run(&key("standup", "2026-03-02T09:00:00Z")).state,
        RunState::Established
    );
    // The call still gets its keepAlive.
    let (d, _) = step(&mut w, ts("2026-03-02T09:15:05Z"));
    assert!(matches!(&d.actions[..], [Action::KeepAlive { call_id, .. }] if call_id == "call-1"));
}

#[test]
fn a_spec_removed_and_added_back_plans_from_now_not_from_its_canceled_run() {
    let mut w = World::new(vec![spec("tick", Some(cron("*/10 * * * *")))]);
    step(&mut w, ts("2026-03-02T10:01:00Z"));
    let s = w.specs.remove("tick").unwrap();
    step(&mut w, ts("2026-03-02T10:02:00Z"));
    w.specs.insert("tick".into(), s);
    w.restart(ts("2026-03-02T13:02:00Z"));
    let (d, a) = step(&mut w, ts("2026-03-02T13:02:00Z"));
    // 13:00 is within the first-sight window and its deadline: placed.
    assert_eq!(a.placed.len(), 1);
    assert_eq!(a.placed[0].0, key("tick", "2026-03-02T13:00:00Z"));
    // The hours it did not exist are not reported as missed.
    assert!(finishes(&d).is_empty(), "{:?}", finishes(&d));
}

#[test]
fn a_changed_schedule_cancels_the_slots_it_no_longer_has() {
    let mut w = World::new(vec![spec("standup", Some(cron("0 9 * * *")))]);
    step(&mut w, ts("2026-03-02T08:00:00Z"));
    std::sync::Arc::make_mut(w.specs.get_mut("standup").unwrap()).schedule =
        Some(cron("30 8 * * *"));
    std::sync::Arc::make_mut(w.specs.get_mut("standup").unwrap()).revision = "rev-2".into();
    let (d, _) = step(&mut w, ts("2026-03-02T08:10:00Z"));
    assert_eq!(finishes(&d).len(), 1);
    assert_eq!(finishes(&d)[0].1, Outcome::Canceled);
    assert_eq!(finishes(&d)[0].0, &key("standup", "2026-03-02T09:00:00Z"));
    assert_eq!(d.wake_at, Some(ts("2026-03-02T08:30:00Z")));
    // A slot both schedules have is kept.
    std::sync::Arc::make_mut(w.specs.get_mut("standup").unwrap()).schedule =
        Some(cron("30 8,9 * * *"));
    let (d, _) = step(&mut w, ts("2026-03-02T08:11:00Z"));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
}

#[test]
fn an_unscheduled_spec_runs_once_per_revision() {
    let mut w = World::new(vec![spec("once", None)]);
    let (d, a) = step(&mut w, ts("2026-03-02T08:00:00Z"));
    assert!(matches!(
        &d.actions[..],
        [Action::Insert { .. }, Action::Place { id: None, .. }]
    ));
    assert_eq!(a.placed[0].0, RunKey::revision("once", "rev-once-1"));
    let id = a.placed[0].1.clone();
    w.answer_placed(&id, "c1", ts("2026-03-02T08:00:01Z"));
    w.notify(&id, "c1", "established", ts("2026-03-02T08:00:02Z"));
    w.notify(&id, "c1", "terminated", ts("2026-03-02T08:01:00Z"));
    let (d, _) = step(&mut w, ts("2026-03-02T08:01:00Z"));
    assert_eq!(finishes(&d)[0].1, Outcome::Completed);
    // Same revision (a comment edit): nothing; a new one: placed again.
    let (d, _) = step(&mut w, ts("2026-03-02T09:00:00Z"));
    assert!(d.actions.is_empty());
    std::sync::Arc::make_mut(w.specs.get_mut("once").unwrap()).revision = "rev-once-2".into();
    let (_, a) = step(&mut w, ts("2026-03-02T09:00:10Z"));
    assert_eq!(a.placed[0].0, RunKey::revision("once", "rev-once-2"));
}

/// A world with `standup` (every 10 minutes) whose 10:00 call is established.
fn with_call_up(concurrency: Concurrency) -> (World, String) {
    let mut w = World::new(vec![spec(
        "standup",
        Some(with_concurrency(cron("*/10 * * * *"), concurrency)),
    )]);
    step(&mut w, ts("2026-03-02T09:59:00Z"));
    let (_, a) = step(&mut w, ts("2026-03-02T10:00:00Z"));
    let id = a.placed[0].1.clone();
    w.answer_placed(&id, "call-1", ts("2026-03-02T10:00:01Z"));
    w.notify(&id, "call-1", "established", ts("2026-03-02T10:00:05Z"));
    (w, id)
}

#[test]
fn concurrency_forbid_skips_while_the_previous_call_is_up() {
    let (mut w, _) = with_call_up(Concurrency::Forbid);
    let (d, a) = step(&mut w, ts("2026-03-02T10:10:00Z"));
    assert!(a.placed.is_empty());
    assert_eq!(finishes(&d)[0].1, Outcome::Skipped);
    assert!(finishes(&d)[0].2.contains("concurrency: forbid"));
}

#[test]
fn concurrency_allow_places_alongside() {
    let (mut w, _) = with_call_up(Concurrency::Allow);
    let (_, a) = step(&mut w, ts("2026-03-02T10:10:00Z"));
    assert_eq!(a.placed.len(), 1);
}

#[test]
fn concurrency_replace_hangs_up_first_then_places() {
    let (mut w, first) = with_call_up(Concurrency::Replace);
    let (d, a) = step(&mut w, ts("2026-03-02T10:10:00Z"));
    let hang = d
        .actions
        .iter()
        .position(|a| matches!(a, Action::HangUp { id, .. } if *id == first));
    let place = d
        .actions
        .iter()
        .position(|a| matches!(a, Action::Place { .. }));
    assert!(
        hang.is_some() && place.is_some() && hang < place,
        "{:#?}",
        d.actions
    );
    assert_eq!(a.placed.len(), 1);
}

#[test]
fn a_missing_permission_rejects_without_a_request_and_names_the_role() {
    let mut w = World::new(vec![spec("once", None)]);
    w.roles = Some(vec!["Calls.JoinGroupCall.All".into()]);
    let (d, a) = step(&mut w, ts("2026-03-02T08:00:00Z"));
    assert!(a.placed.is_empty());
    let f = finishes(&d);
    assert_eq!(f[0].1, Outcome::Rejected);
    assert!(f[0].2.contains(roles::INITIATE), "{}", f[0].2);
    // The group-call role covers one-to-one calls.
    let mut w = World::new(vec![spec("once", None)]);
    w.roles = Some(vec!["calls.initiategroupcall.all".into()]);
    let (_, a) = step(&mut w, ts("2026-03-02T08:00:00Z"));
    assert_eq!(a.placed.len(), 1);
}

#[test]
fn failed_requests_are_retried_after_the_interval_then_fail() {
    let mut s = spec("once", None);
    s.retry.attempts = 2;
    s.retry.interval = mins(5);
    let mut w = World::new(vec![s]);
    let t0 = ts("2026-03-02T08:00:00Z");
    let (_, a) = step(&mut w, t0);
    let id = a.placed[0].1.clone();
    let mut now = t0;
    for attempt in 1..=3 {
        w.answer(&id, Disposition::Failed, now);
        let (d, a) = step(&mut w, now);
        if attempt < 3 {
            assert!(
                matches!(&d.actions[..], [Action::Retry { due, .. }] if *due == plus(now, mins(5))),
                "{:#?}",
                d.actions
            );
            assert_eq!(d.wake_at, Some(plus(now, mins(5))));
            // Not placed before its time, placed at it.
            let (d, _) = step(&mut w, plus(now, mins(4)));
            assert!(d.actions.is_empty());
            now = plus(now, mins(5));
            let (_, a) = step(&mut w, now);
            assert_eq!(a.placed.len(), 1, "attempt {attempt}");
        } else {
            assert!(a.placed.is_empty());
            assert_eq!(finishes(&d)[0].1, Outcome::Failed);
        }
    }
    assert_eq!(w.ledger.open_run_progress().unwrap().len(), 0);
}

#[test]
fn a_call_never_established_is_retried_and_rejected_and_unknown_are_final() {
    let mut s = spec("once", None);
    s.retry.attempts = 1;
    let mut w = World::new(vec![s]);
    let t0 = ts("2026-03-02T08:00:00Z");
    let (_, a) = step(&mut w, t0);
    let id = a.placed[0].1.clone();
    w.answer_placed(&id, "c1", t0);
    w.notify(&id, "c1", "establishing", t0);
    w.notify(&id, "c1", "terminated", plus(t0, mins(1)));
    let (d, _) = step(&mut w, plus(t0, mins(1)));
    assert!(
        matches!(&d.actions[..], [Action::Retry { .. }]),
        "{:#?}",
        d.actions
    );
    let (_, a) = step(&mut w, plus(t0, mins(6)));
    assert_eq!(a.placed.len(), 1);
    w.answer_placed(&id, "c2", plus(t0, mins(6)));
    w.notify(&id, "c2", "terminated", plus(t0, mins(7)));
    let (d, _) = step(&mut w, plus(t0, mins(7)));
    assert_eq!(finishes(&d)[0].1, Outcome::NotEstablished);

    for (disposition, outcome) in [
        (Disposition::Rejected, Outcome::Rejected),
        (Disposition::Unknown, Outcome::Unknown),
    ] {
        let mut s = spec("once", None);
        s.retry.attempts = 3;
        let mut w = World::new(vec![s]);
        let (_, a) = step(&mut w, t0);
        w.answer(&a.placed[0].1, disposition, t0);
        let (d, _) = step(&mut w, t0);
        assert_eq!(finishes(&d)[0].1, outcome);
    }
}

#[test]
fn terminating_waits_for_terminated_or_the_grace_period() {
    let mut w = World::new(vec![spec("once", None)]);
    let t0 = ts("2026-03-02T08:00:00Z");
    let (_, a) = step(&mut w, t0);
    let id = a.placed[0].1.clone();
    w.answer_placed(&id, "c1", t0);
    w.notify(&id, "c1", "established", t0);
    w.notify(&id, "c1", "terminating", plus(t0, mins(2)));
    let (d, _) = step(&mut w, plus(t0, mins(2)));
    assert!(d.actions.is_empty());
    assert_eq!(
        d.wake_at,
        Some(plus(plus(t0, mins(2)), Duration::from_secs(30)))
    );
    let (d, _) = step(&mut w, plus(plus(t0, mins(2)), Duration::from_secs(30)));
    assert_eq!(finishes(&d)[0].1, Outcome::Completed);
}

#[test]
fn a_placed_call_without_notification_times_out_as_unknown() {
    let mut w = World::new(vec![spec("once", None)]);
    let t0 = ts("2026-03-02T08:00:00Z");
    let (_, a) = step(&mut w, t0);
    let id = a.placed[0].1.clone();
    w.answer_placed(&id, "c1", t0);
    let (d, _) = step(&mut w, plus(t0, mins(1)));
    assert_eq!(d.wake_at, Some(plus(t0, mins(10))));
    let (d, _) = step(&mut w, plus(t0, mins(10)));
    assert_eq!(finishes(&d)[0].1, Outcome::Unknown);
    assert!(finishes(&d)[0].2.contains("no notification"));
}

#[test]
fn established_calls_get_keep_alive_every_interval_and_hang_up_after() {
    let mut s = spec("once", None);
    s.hangup_after = Some(mins(40));
    let mut w = World::new(vec![s]);
    let t0 = ts("2026-03-02T08:00:00Z");
    let (_, a) = step(&mut w, t0);
    let id = a.placed[0].1.clone();
    w.answer_placed(&id, "c1", t0);
    w.notify(&id, "c1", "established", t0);
    let (d, _) = step(&mut w, plus(t0, mins(1)));
    assert_eq!(d.wake_at, Some(plus(t0, mins(15))));
    let (d, a) = step(&mut w, plus(t0, mins(15)));
    assert_eq!(a.kept_alive, vec![id.clone()]);
    assert_eq!(d.wake_at, Some(plus(t0, mins(30))));
    let (_, a) = step(&mut w, plus(t0, mins(30)));
    assert_eq!(a.kept_alive.len(), 1);
    let (d, _) = step(&mut w, plus(t0, mins(31)));
    assert_eq!(d.wake_at, Some(plus(t0, mins(40))));
    let (_, a) = step(&mut w, plus(t0, mins(40)));
    assert_eq!(a.hung_up, vec![id.clone()]);
    // Still up after the notification timeout: the DELETE is sent again.
    let (_, a) = step(&mut w, plus(t0, mins(50)));
    assert_eq!(a.hung_up, vec![id.clone()]);
    // After a restart (memory lost) the keepAlive is sent at once if overdue.
    w.calls.clear();
    let (_, a) = step(&mut w, plus(t0, mins(51)));
    assert_eq!(a.kept_alive, vec![id.clone()]);
}

#[test]
fn an_at_spec_is_placed_within_its_deadline_or_recorded_missed() {
    // Seen a little late: still placed.
    let mut w = World::new(vec![spec("once", Some(at("2026-03-02T09:00:00Z")))]);
    let (_, a) = step(&mut w, ts("2026-03-02T09:03:00Z"));
    assert_eq!(a.placed.len(), 1);
    // Seen long after: one missed row, no call, nothing more to wait for.
    let mut w = World::new(vec![spec("once", Some(at("2026-03-02T09:00:00Z")))]);
    let (d, a) = step(&mut w, ts("2026-03-02T11:00:00Z"));
    assert!(a.placed.is_empty());
    assert_eq!(finishes(&d)[0].1, Outcome::Missed);
    assert_eq!(d.wake_at, None);
    // In the future: inserted, and the daemon wakes for it.
    let mut w = World::new(vec![spec("once", Some(at("2026-03-02T09:00:00Z")))]);
    let (d, _) = step(&mut w, ts("2026-03-02T08:00:00Z"));
    assert_eq!(d.wake_at, Some(ts("2026-03-02T09:00:00Z")));
}

#[test]
fn a_new_cron_spec_looks_back_only_within_its_first_sight_window() {
    let mut w = World::new(vec![spec("standup", Some(cron("0 9 * * *")))]);
    let (_, a) = step(&mut w, ts("2026-03-02T09:02:00Z"));
    assert_eq!(a.placed.len(), 1);
    let mut w = World::new(vec![spec("standup", Some(cron("0 9 * * *")))]);
    let (d, a) = step(&mut w, ts("2026-03-02T09:10:00Z"));
    assert!(a.placed.is_empty());
    assert!(finishes(&d).is_empty());
}

#[test]
fn jitter_delays_the_placement_and_the_wake_up() {
    let mut s = cron("0 9 * * *");
    s.jitter = Some(mins(10));
    let sched = s.clone();
    let mut w = World::new(vec![spec("standup", Some(s))]);
    let due = sched.due_at(w.seed, "standup", ts("2026-03-02T09:00:00Z"));
    assert!(
        due > ts("2026-03-02T09:00:00Z"),
        "the seed gives no delay; pick another"
    );
    let (d, _) = step(&mut w, ts("2026-03-02T08:00:00Z"));
    assert_eq!(d.wake_at, Some(due));
    let (d, _) = step(&mut w, ts("2026-03-02T09:00:00Z"));
    assert!(places(&d).is_empty());
    let (_, a) = step(&mut w, due);
    assert_eq!(a.placed.len(), 1);
    assert_eq!(
        w.run(&a.placed[0].0).slot,
        Slot::At(ts("2026-03-02T09:00:00Z"))
    );
}

#[test]
fn with_no_deadline_a_late_run_is_still_placed_after_downtime() {
    let mut s = cron("0 9 * * *");
    s.deadline = None;
    let mut w = World::new(vec![spec("standup", Some(s))]);
    step(&mut w, ts("2026-03-02T08:00:00Z"));
    let (d, a) = step(&mut w, ts("2026-03-04T15:00:00Z"));
    assert_eq!(a.placed.len(), 1);
    assert_eq!(a.placed[0].0, key("standup", "2026-03-04T09:00:00Z"));
    assert_eq!(finishes(&d).len(), 2);
}
