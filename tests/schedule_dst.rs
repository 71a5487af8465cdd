//! Run times at the 2026 DST changes, through the public schedule API.
//!
//! America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (gap), 2026-11-01
//! 02:00 EDT -> 01:00 EST (01:00-02:00 twice). Europe/Berlin: 2026-03-29
//! 02:00 CET -> 03:00 CEST, 2026-10-25 03:00 CEST -> 02:00 CET (02:00-03:00
//! twice). Australia/Lord_Howe moves by 30 minutes.
//!
//! Rules: a fixed-time job (minute and hour fields not starting with `*`)
//! whose time falls in a gap runs at the end of the gap, and in a fold runs
//! at the first occurrence only; an interval job skips a gap and runs at both
//! occurrences in a fold. Runs strictly increase and never repeat.

use calld::schedule::{CronExpr, Schedule, Trigger, parse_time, parse_timezone};
use jiff::Timestamp;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn schedule(pattern: &str, zone: &str) -> Schedule {
    let expr = CronExpr::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
    Schedule::new(Trigger::Cron(expr), zone).unwrap()
}

/// The runs after `from` are exactly `expected` (UTC), and every other way
/// of asking agrees.
fn check(pattern: &str, zone: &str, from: &str, expected: &[&str]) {
    let s = schedule(pattern, zone);
    let from = ts(from);
    let want: Vec<Timestamp> = expected.iter().map(|e| ts(e)).collect();
    let got = s.runs_after(from, want.len());
    let local = |v: &[Timestamp]| -> Vec<String> {
        v.iter()
            .map(|t| {
                t.to_zoned(s.timezone.clone())
                    .strftime("%F %T %Z")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        got,
        want,
        "`{pattern}` in {zone} after {from}\n got:  {:?}\n want: {:?}",
        local(&got),
        local(&want)
    );
    let last = *want.last().unwrap();
    assert_eq!(s.runs_between(from, last, 100), want, "runs_between");
    assert_eq!(s.next_after(from), Some(want[0]), "next_after");
    for pair in want.windows(2) {
        assert_eq!(
            s.next_after(pair[0]),
            Some(pair[1]),
            "next_after({})",
            pair[0]
        );
    }
}

// --- America/New_York, spring forward (2026-03-08, 02:00-03:00 missing) ---

#[test]
fn new_york_spring_daily_0230_runs_at_0300() {
    check(
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T00:00:00Z",
        &[
            "2026-03-07T07:30:00Z", // 02:30 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT, right after the gap
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ],
    );
}

#[test]
fn new_york_spring_two_fixed_hours_keep_the_gap_run() {
    // croner alone drops the 02:30 run here (it counts only a single hour as
    // fixed-time).
    check(
        "30 2,14 * * *",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        &[
            "2026-03-07T19:30:00Z", // 14:30 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT
            "2026-03-08T18:30:00Z", // 14:30 EDT
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ],
    );
}

#[test]
fn new_york_spring_gap_run_and_0300_run_are_one_run() {
    check(
        "0 2,3 * * *",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        &[
            "2026-03-08T07:00:00Z", // 02:00 (gap) and 03:00 EDT: once
            "2026-03-09T06:00:00Z", // 02:00 EDT
            "2026-03-09T07:00:00Z", // 03:00 EDT
        ],
    );
}

#[test]
fn new_york_spring_hourly_skips_the_missing_hour() {
    check(
        "0 * * * *",
        "America/New_York",
        "2026-03-08T04:30:00Z",
        &[
            "2026-03-08T05:00:00Z", // 00:00 EST
            "2026-03-08T06:00:00Z", // 01:00 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT, one real hour later
            "2026-03-08T08:00:00Z", // 04:00 EDT
        ],
    );
}

#[test]
fn new_york_spring_every_30_minutes() {
    check(
        "*/30 * * * *",
        "America/New_York",
        "2026-03-08T05:50:00Z",
        &[
            "2026-03-08T06:00:00Z", // 01:00 EST
            "2026-03-08T06:30:00Z", // 01:30 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT
            "2026-03-08T07:30:00Z", // 03:30 EDT
        ],
    );
}

#[test]
fn new_york_spring_weekly() {
    check(
        "30 2 * * Sun",
        "America/New_York",
        "2026-03-01T12:00:00Z",
        &[
            "2026-03-08T07:00:00Z", // 03:00 EDT
            "2026-03-15T06:30:00Z", // 02:30 EDT
        ],
    );
}

// --- America/New_York, fall back (2026-11-01, 01:00-02:00 twice) ---

#[test]
fn new_york_fall_daily_0130_runs_once() {
    check(
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00:00Z",
        &[
            "2026-11-01T05:30:00Z", // 01:30 EDT, not again at 01:30 EST
            "2026-11-02T06:30:00Z", // 01:30 EST
        ],
    );
}

#[test]
fn new_york_fall_two_fixed_hours_run_once_in_the_fold() {
    // croner alone runs 01:30 twice here.
    check(
        "30 1,13 * * *",
        "America/New_York",
        "2026-10-31T12:00:00Z",
        &[
            "2026-10-31T17:30:00Z", // 13:30 EDT
            "2026-11-01T05:30:00Z", // 01:30 EDT
            "2026-11-01T18:30:00Z", // 13:30 EST
        ],
    );
}

#[test]
fn new_york_fall_daily_0230_is_not_affected() {
    check(
        "30 2 * * *",
        "America/New_York",
        "2026-10-31T00:00:00Z",
        &[
            "2026-10-31T06:30:00Z", // 02:30 EDT
            "2026-11-01T07:30:00Z", // 02:30 EST, 25 hours later
            "2026-11-02T07:30:00Z",
        ],
    );
}

#[test]
fn new_york_fall_hourly_runs_in_both_repeated_hours() {
    check(
        "0 * * * *",
        "America/New_York",
        "2026-11-01T03:30:00Z",
        &[
            "2026-11-01T04:00:00Z", // 00:00 EDT
            "2026-11-01T05:00:00Z", // 01:00 EDT
            "2026-11-01T06:00:00Z", // 01:00 EST
            "2026-11-01T07:00:00Z", // 02:00 EST
            "2026-11-01T08:00:00Z", // 03:00 EST
        ],
    );
}

#[test]
fn new_york_fall_every_30_minutes() {
    check(
        "*/30 * * * *",
        "America/New_York",
        "2026-11-01T04:50:00Z",
        &[
            "2026-11-01T05:00:00Z", // 01:00 EDT
            "2026-11-01T05:30:00Z", // 01:30 EDT
            "2026-11-01T06:00:00Z", // 01:00 EST
            "2026-11-01T06:30:00Z", // 01:30 EST
            "2026-11-01T07:00:00Z", // 02:00 EST
        ],
    );
}

#[test]
fn new_york_fall_weekly() {
    check(
        "30 1 * * Sun",
        "America/New_York",
        "2026-10-26T00:00:00Z",
        &[
            "2026-11-01T05:30:00Z", // 01:30 EDT
            "2026-11-08T06:30:00Z", // 01:30 EST
        ],
    );
}

#[test]
fn new_york_fall_starting_inside_the_fold() {
    let hourly = schedule("0 * * * *", "America/New_York");
    // 01:30 EDT (first pass) -> 01:00 EST (second pass).
    assert_eq!(
        hourly.next_after(ts("2026-11-01T05:30:00Z")),
        Some(ts("2026-11-01T06:00:00Z"))
    );
    // 01:10 EST (second pass) -> 02:00 EST.
    assert_eq!(
        hourly.next_after(ts("2026-11-01T06:10:00Z")),
        Some(ts("2026-11-01T07:00:00Z"))
    );
    let daily = schedule("30 1 * * *", "America/New_York");
    // 01:15 EST: today's 01:30 already ran (EDT); next is tomorrow.
    assert_eq!(
        daily.next_after(ts("2026-11-01T06:15:00Z")),
        Some(ts("2026-11-02T06:30:00Z"))
    );
}

// --- Europe/Berlin, spring forward (2026-03-29, 02:00-03:00 missing) ---

#[test]
fn berlin_spring_daily_0230_runs_at_0300() {
    check(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T00:00:00Z",
        &[
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ],
    );
}

#[test]
fn berlin_spring_hourly() {
    check(
        "0 * * * *",
        "Europe/Berlin",
        "2026-03-28T22:30:00Z",
        &[
            "2026-03-28T23:00:00Z", // 00:00 CET
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-29T02:00:00Z", // 04:00 CEST
        ],
    );
}

#[test]
fn berlin_spring_every_30_minutes() {
    check(
        "*/30 * * * *",
        "Europe/Berlin",
        "2026-03-28T23:50:00Z",
        &[
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T00:30:00Z", // 01:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-29T01:30:00Z", // 03:30 CEST
        ],
    );
}

#[test]
fn berlin_spring_weekly() {
    check(
        "30 2 * * Sun",
        "Europe/Berlin",
        "2026-03-22T12:00:00Z",
        &[
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-04-05T00:30:00Z", // 02:30 CEST
        ],
    );
}

// --- Europe/Berlin, fall back (2026-10-25, 02:00-03:00 twice) ---

#[test]
fn berlin_fall_daily_0230_runs_once() {
    check(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T00:00:00Z",
        &[
            "2026-10-24T00:30:00Z", // 02:30 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST, not again at 02:30 CET
            "2026-10-26T01:30:00Z", // 02:30 CET
        ],
    );
}

#[test]
fn berlin_fall_hourly() {
    check(
        "0 * * * *",
        "Europe/Berlin",
        "2026-10-24T22:30:00Z",
        &[
            "2026-10-24T23:00:00Z", // 01:00 CEST
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ],
    );
}

#[test]
fn berlin_fall_every_30_minutes() {
    check(
        "*/30 * * * *",
        "Europe/Berlin",
        "2026-10-24T23:50:00Z",
        &[
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ],
    );
}

#[test]
fn berlin_fall_weekly() {
    check(
        "30 2 * * Sun",
        "Europe/Berlin",
        "2026-10-18T12:00:00Z",
        &[
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-11-01T01:30:00Z", // 02:30 CET
        ],
    );
}

// --- Half-hour DST and no DST ---

#[test]
fn lord_howe_half_hour_gap() {
    // 2026-10-04 02:00 (+10:30) -> 02:30 (+11).
    check(
        "0 2 * * *",
        "Australia/Lord_Howe",
        "2026-10-01T00:00:00Z",
        &[
            "2026-10-01T15:30:00Z", // Oct 2 02:00 +10:30
            "2026-10-02T15:30:00Z", // Oct 3 02:00 +10:30
            "2026-10-03T15:30:00Z", // Oct 4 02:30 +11, right after the gap
            "2026-10-04T15:00:00Z", // Oct 5 02:00 +11
        ],
    );
}

#[test]
fn lord_howe_half_hour_fold() {
    // 2026-04-05 02:00 (+11) -> 01:30 (+10:30): 01:30-02:00 twice.
    check(
        "45 1 * * *",
        "Australia/Lord_Howe",
        "2026-04-03T00:00:00Z",
        &[
            "2026-04-03T14:45:00Z", // Apr 4 01:45 +11
            "2026-04-04T14:45:00Z", // Apr 5 01:45 +11, once
            "2026-04-05T15:15:00Z", // Apr 6 01:45 +10:30
        ],
    );
    check(
        "*/15 * * * *",
        "Australia/Lord_Howe",
        "2026-04-04T14:20:00Z",
        &[
            "2026-04-04T14:30:00Z", // 01:30 +11
            "2026-04-04T14:45:00Z", // 01:45 +11
            "2026-04-04T15:00:00Z", // 01:30 +10:30
            "2026-04-04T15:15:00Z", // 01:45 +10:30
            "2026-04-04T15:30:00Z", // 02:00 +10:30
        ],
    );
}

#[test]
fn kolkata_has_no_dst() {
    check(
        "30 2 * * *",
        "Asia/Kolkata",
        "2026-03-07T00:00:00Z",
        &[
            "2026-03-07T21:00:00Z",
            "2026-03-08T21:00:00Z",
            "2026-03-09T21:00:00Z",
        ],
    );
}

// --- `at`, `until` and local times at DST changes ---

#[test]
fn local_at_times_at_dst_changes() {
    let ny = parse_timezone("America/New_York").unwrap();
    let berlin = parse_timezone("Europe/Berlin").unwrap();
    let cases = [
        (&ny, "2026-03-08T02:30:00", "2026-03-08T07:00:00Z"),
        (&ny, "2026-11-01T01:30:00", "2026-11-01T05:30:00Z"),
        (&berlin, "2026-03-29T02:30:00", "2026-03-29T01:00:00Z"),
        (&berlin, "2026-10-25T02:30:00", "2026-10-25T00:30:00Z"),
        (&berlin, "2026-10-25T02:30:00+01:00", "2026-10-25T01:30:00Z"),
    ];
    for (tz, text, want) in cases {
        assert_eq!(parse_time(text, tz), Ok(ts(want)), "{text}");
    }
    let at = parse_time("2026-03-29T02:30:00", &berlin).unwrap();
    let s = Schedule::new(Trigger::At(at), "Europe/Berlin").unwrap();
    assert_eq!(s.runs_after(ts("2026-01-01T00:00:00Z"), 5), vec![at]);
}

#[test]
fn until_cuts_a_cron_schedule_across_a_dst_change() {
    let mut s = schedule("0 * * * *", "America/New_York");
    s.until = Some(parse_time("2026-11-01T01:30:00", &s.timezone).unwrap()); // 01:30 EDT
    assert_eq!(
        s.runs_after(ts("2026-11-01T03:30:00Z"), 10),
        vec![ts("2026-11-01T04:00:00Z"), ts("2026-11-01T05:00:00Z")],
        "01:00 EST comes after `until` (01:30 EDT) in real time"
    );
}
