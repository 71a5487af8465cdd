use super::*;
use jiff::SignedDuration;
use proptest::prelude::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cron(expr: &str, tz: &str) -> Schedule {
    Schedule::new(Trigger::Cron(CronExpr::parse(expr).unwrap()), tz).unwrap()
}

#[test]
fn concurrency_spellings() {
    assert_eq!(Concurrency::default(), Concurrency::Forbid);
    for c in [
        Concurrency::Forbid,
        Concurrency::Allow,
        Concurrency::Replace,
    ] {
        assert_eq!(c.to_string().parse::<Concurrency>(), Ok(c));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{c}\""));
        assert_eq!(serde_json::from_str::<Concurrency>(&json).unwrap(), c);
    }
    let err = "Forbid".parse::<Concurrency>().unwrap_err();
    assert!(err.contains("`Forbid`") && err.contains("forbid") && err.contains("replace"));
    assert!(serde_json::from_str::<Concurrency>("\"sometimes\"").is_err());
}

#[test]
fn time_zones() {
    assert_eq!(parse_timezone("UTC").unwrap(), TimeZone::UTC);
    assert_eq!(parse_timezone("utc").unwrap(), TimeZone::UTC);
    let berlin = parse_timezone("Europe/Berlin").unwrap();
    assert_eq!(berlin.iana_name(), Some("Europe/Berlin"));
    let err = parse_timezone("Europe/Berln").unwrap_err();
    assert_eq!(
        err,
        "unknown time zone `Europe/Berln`: use an IANA name such as Europe/Berlin"
    );
    let err = parse_timezone("America/New_Yrok").unwrap_err();
    assert!(err.contains("such as America/New_York"), "{err}");
    // Nothing close: a generic example.
    let err = parse_timezone("Middle/Earth").unwrap_err();
    assert!(
        err.contains("`Middle/Earth`") && err.contains("IANA"),
        "{err}"
    );
    assert!(
        parse_timezone("  ")
            .unwrap_err()
            .contains("empty time zone")
    );
    assert!(parse_timezone("+01:00").is_err());
}

#[test]
fn times_with_and_without_offsets() {
    let ny = parse_timezone("America/New_York").unwrap();
    let cases = [
        ("2026-12-01T09:00:00+01:00", "2026-12-01T08:00:00Z"),
        ("2026-12-01T08:00:00Z", "2026-12-01T08:00:00Z"),
        ("2026-12-01T09:00:00", "2026-12-01T14:00:00Z"),
        ("2026-12-01 09:00", "2026-12-01T14:00:00Z"),
        ("2026-07-01T09:00:00.5", "2026-07-01T13:00:00.5Z"),
        // Spring-forward gap (02:00-03:00 does not exist): right after it.
        ("2026-03-08T02:30:00", "2026-03-08T07:00:00Z"),
        ("2026-03-08T02:00:00", "2026-03-08T07:00:00Z"),
        // Fall-back fold (01:00-02:00 twice): the first occurrence (EDT).
        ("2026-11-01T01:30:00", "2026-11-01T05:30:00Z"),
        ("2026-11-01T02:00:00", "2026-11-01T07:00:00Z"),
    ];
    for (text, want) in cases {
        assert_eq!(parse_time(text, &ny), Ok(ts(want)), "{text}");
    }
    let err = parse_time("2026-12-01", &ny).unwrap_err();
    assert!(
        err.contains("no time of day") && err.contains("2026-12-01T09:00:00"),
        "{err}"
    );
    let err = parse_time("tomorrow 9am", &ny).unwrap_err();
    assert!(
        err.contains("`tomorrow 9am` is not a time") && err.contains("RFC 3339"),
        "{err}"
    );
    assert!(parse_time("2026-02-30T09:00:00", &ny).is_err());
    assert!(parse_time("", &ny).unwrap_err().contains("empty"));
}

#[test]
fn deadlines() {
    assert_eq!(parse_deadline("none"), Ok(None));
    assert_eq!(parse_deadline("5m"), Ok(Some(Duration::from_secs(300))));
    assert_eq!(
        parse_deadline(" 1h30m "),
        Ok(Some(Duration::from_secs(5400)))
    );
    let err = parse_deadline("0s").unwrap_err();
    assert!(
        err.contains("miss every run") && err.contains("none"),
        "{err}"
    );
    let err = parse_deadline("soon").unwrap_err();
    assert!(
        err.contains("`soon`") && err.contains("none for no deadline"),
        "{err}"
    );
    assert_eq!(DEFAULT_DEADLINE, Duration::from_secs(300));
}

#[test]
fn new_schedule_has_the_documented_defaults() {
    let s = cron("0 9 * * *", "Europe/Berlin");
    assert_eq!(s.deadline, Some(DEFAULT_DEADLINE));
    assert_eq!(s.concurrency, Concurrency::Forbid);
    assert_eq!(s.jitter, None);
    assert_eq!(s.until, None);
    assert_eq!(s.timezone_name, "Europe/Berlin");
    assert!(Schedule::new(Trigger::At(ts("2026-01-01T00:00:00Z")), "Mars/Olympus").is_err());
}

#[test]
fn at_runs_exactly_once() {
    let at = ts("2026-12-01T08:00:00Z");
    let s = Schedule::new(Trigger::At(at), "UTC").unwrap();
    assert_eq!(s.next_after(ts("2026-01-01T00:00:00Z")), Some(at));
    assert_eq!(s.next_after(at), None, "strictly after");
    assert_eq!(s.next_after(ts("2027-01-01T00:00:00Z")), None);
    assert_eq!(s.runs_after(ts("2026-01-01T00:00:00Z"), 10), vec![at]);
    assert_eq!(
        s.runs_between(ts("2026-01-01T00:00:00Z"), at, 10),
        vec![at],
        "to is inclusive"
    );
    let early = Schedule {
        until: Some(ts("2026-11-30T00:00:00Z")),
        ..s.clone()
    };
    assert_eq!(early.next_after(ts("2026-01-01T00:00:00Z")), None);
}

#[test]
fn until_stops_runs_and_is_inclusive() {
    let mut s = cron("0 9 * * *", "UTC");
    s.until = Some(ts("2026-06-03T09:00:00Z"));
    assert_eq!(
        s.runs_after(ts("2026-06-01T00:00:00Z"), 10),
        vec![
            ts("2026-06-01T09:00:00Z"),
            ts("2026-06-02T09:00:00Z"),
            ts("2026-06-03T09:00:00Z"),
        ]
    );
    assert_eq!(s.next_after(ts("2026-06-03T09:00:00Z")), None);
    assert_eq!(
        s.last_between(ts("2026-06-01T00:00:00Z"), ts("2027-01-01T00:00:00Z")),
        Some(ts("2026-06-03T09:00:00Z"))
    );
}

#[test]
fn runs_between_is_half_open_and_limited() {
    let s = cron("*/15 * * * *", "UTC");
    let from = ts("2026-06-01T10:00:00Z");
    let to = ts("2026-06-01T11:00:00Z");
    assert_eq!(
        s.runs_between(from, to, 100),
        vec![
            ts("2026-06-01T10:15:00Z"),
            ts("2026-06-01T10:30:00Z"),
            ts("2026-06-01T10:45:00Z"),
            ts("2026-06-01T11:00:00Z"),
        ]
    );
    assert_eq!(s.runs_between(from, to, 2).len(), 2);
    assert!(s.runs_between(to, from, 10).is_empty());
}

#[test]
fn last_between_finds_the_latest_run_cheaply() {
    let s = cron("*/5 * * * *", "Europe/Berlin");
    let from = ts("2026-01-01T00:00:00Z");
    let to = ts("2026-09-14T10:17:00Z");
    assert_eq!(s.last_between(from, to), Some(ts("2026-09-14T10:15:00Z")));
    assert_eq!(s.last_between(to, from), None);
    // Sparse: yearly, a long way back.
    let y = cron("@yearly", "Europe/Berlin");
    assert_eq!(
        y.last_between(ts("2020-06-01T00:00:00Z"), ts("2026-06-01T00:00:00Z")),
        Some(ts("2025-12-31T23:00:00Z"))
    );
    // Nothing in the window.
    assert_eq!(
        y.last_between(ts("2026-01-02T00:00:00Z"), ts("2026-06-01T00:00:00Z")),
        None
    );
    // Agrees with the forward scan.
    let h = cron("0 2 * * *", "America/New_York");
    let from = ts("2026-02-20T00:00:00Z");
    for to in [
        "2026-03-08T06:59:59Z",
        "2026-03-08T07:00:00Z",
        "2026-03-10T12:00:00Z",
    ] {
        let to = ts(to);
        assert_eq!(
            h.last_between(from, to),
            h.runs_between(from, to, 1000).last().copied()
        );
    }
}

#[test]
fn jitter_is_deterministic_and_bounded() {
    let mut s = cron("0 9 * * *", "UTC");
    let nominal = ts("2026-06-01T09:00:00Z");
    assert_eq!(
        s.jitter_for(7, "a", nominal),
        Duration::ZERO,
        "no jitter set"
    );
    s.jitter = Some(Duration::from_secs(30));
    let d = s.jitter_for(7, "team/standup", nominal);
    assert_eq!(d, s.jitter_for(7, "team/standup", nominal));
    let runs = s.runs_after(ts("2026-01-01T00:00:00Z"), 400);
    let delays: Vec<Duration> = runs
        .iter()
        .map(|r| s.jitter_for(7, "team/standup", *r))
        .collect();
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(30)));
    let min = delays.iter().min().unwrap();
    let max = delays.iter().max().unwrap();
    assert!(
        *min < Duration::from_secs(3) && *max > Duration::from_secs(27),
        "{min:?} {max:?}"
    );
    // Each input matters.
    let spread = |f: &dyn Fn(u64) -> Duration| {
        (0..20)
            .map(f)
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    assert!(spread(&|i| s.jitter_for(i, "x", nominal)) > 10);
    assert!(spread(&|i| s.jitter_for(7, &format!("spec-{i}"), nominal)) > 10);
    // Name and seed are not just concatenated: ("ab", ..) differs from ("a", ..).
    assert_ne!(
        s.jitter_for(7, "ab", nominal),
        s.jitter_for(7, "a", nominal)
    );
    s.jitter = Some(Duration::from_micros(500));
    assert_eq!(
        s.jitter_for(7, "x", nominal),
        Duration::ZERO,
        "below a millisecond"
    );
}

#[test]
fn due_time_and_deadline() {
    let mut s = cron("0 9 * * *", "UTC");
    let nominal = ts("2026-06-01T09:00:00Z");
    assert_eq!(s.due_at(1, "x", nominal), nominal);
    assert_eq!(s.place_by(nominal), Some(ts("2026-06-01T09:05:00Z")));
    s.jitter = Some(Duration::from_secs(600));
    let due = s.due_at(1, "x", nominal);
    let delay = s.jitter_for(1, "x", nominal);
    assert_eq!(due, nominal + SignedDuration::try_from(delay).unwrap());
    assert_eq!(
        s.place_by(due),
        Some(due + SignedDuration::from_mins(5)),
        "the deadline counts from the due time"
    );
    s.deadline = None;
    assert_eq!(s.place_by(due), None);
}

// ---------------------------------------------------------------------------
// Property tests: the search against a brute-force, minute-by-minute oracle.

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

fn field(values: std::ops::Range<u32>, max_step: u32) -> impl Strategy<Value = String> {
    let (lo, hi) = (values.start, values.end);
    prop_oneof![
        3 => Just("*".to_string()),
        2 => (1..=max_step).prop_map(|n| format!("*/{n}")),
        4 => (lo..hi).prop_map(|v| v.to_string()),
        2 => (lo..hi, lo..hi).prop_map(|(a, b)| format!("{},{}", a.min(b), a.max(b))),
        2 => (lo..hi, lo..hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        1 => (lo..hi, 1..=max_step).prop_map(move |(a, n)| format!("{a}-{}/{n}", hi - 1)),
    ]
}

fn cron_pattern() -> impl Strategy<Value = String> {
    // Hours are biased towards 0-3, where DST changes happen.
    let hour = prop_oneof![2 => field(0..4, 3), 1 => field(0..24, 8)];
    let dom = prop_oneof![6 => Just("*".to_string()), 1 => (1u32..29).prop_map(|d| d.to_string()), 1 => Just("L".to_string())];
    let month = prop_oneof![6 => Just("*".to_string()), 1 => Just("3,4,10,11".to_string()), 1 => Just("jan-jun".to_string())];
    let dow = prop_oneof![5 => Just("*".to_string()), 1 => Just("Mon-Fri".to_string()), 2 => (0u32..8).prop_map(|d| d.to_string()), 1 => Just("sat,sun".to_string())];
    (field(0..60, 30), hour, dom, month, dow)
        .prop_map(|(m, h, d, mo, w)| format!("{m} {h} {d} {mo} {w}"))
}

/// A start instant: near one of the zone's DST changes in 2025-2027, or
/// anywhere in 2020-2035.
fn start_for(zone: &str, pick: usize, near: bool, offset_secs: i64) -> Timestamp {
    let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
    let transitions: Vec<Timestamp> = tz
        .following(ts("2025-01-01T00:00:00Z"))
        .take_while(|t| t.timestamp() < ts("2028-01-01T00:00:00Z"))
        .map(|t| t.timestamp())
        .collect();
    if near && !transitions.is_empty() {
        let base = transitions[pick % transitions.len()];
        base + SignedDuration::from_secs(offset_secs % (2 * 86_400))
    } else {
        ts("2020-01-01T00:00:00Z")
            + SignedDuration::from_secs(offset_secs.rem_euclid(16 * 365 * 86_400))
    }
}

/// Every run in `(from, to]`, by brute force: each UTC minute whose wall
/// clock matches (a fold's second occurrence only for interval jobs), plus,
/// for fixed-time jobs, the end of each gap whose skipped wall-clock times
/// hold a match.
fn oracle(expr: &CronExpr, tz: &TimeZone, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
    let mut out = Vec::new();
    let minute = SignedDuration::from_mins(1);
    let mut t = Timestamp::from_second(from.as_second().div_euclid(60) * 60).unwrap();
    while t <= to {
        if t > from {
            let wall = tz.to_datetime(t);
            if expr.matches(wall) {
                let keep = match tz.to_ambiguous_timestamp(wall).offset() {
                    AmbiguousOffset::Fold { before, .. } => {
                        before.to_timestamp(wall).unwrap() == t || expr.is_interval()
                    }
                    _ => true,
                };
                if keep {
                    out.push(t);
                }
            }
        }
        t += minute;
    }
    if !expr.is_interval() {
        let start = from - SignedDuration::from_hours(48);
        for tr in tz.following(start).take_while(|tr| tr.timestamp() <= to) {
            let at = tr.timestamp();
            let pre = tz.to_offset(at - SignedDuration::from_nanos(1));
            let post = tr.offset();
            if pre >= post || at <= from {
                continue;
            }
            let mut wall = pre.to_datetime(at);
            let end = post.to_datetime(at);
            let mut hit = false;
            while wall < end {
                hit |= expr.matches(wall);
                wall += minute;
            }
            if hit {
                out.push(at);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn runs_are_ordered_and_consistent(
        pattern in cron_pattern(),
        zone in 0usize..ZONES.len(),
        pick in 0usize..8,
        near in any::<bool>(),
        offset in -200_000i64..200_000_000i64,
    ) {
        let expr = CronExpr::parse(&pattern).map_err(TestCaseError::fail)?;
        let start = start_for(ZONES[zone], pick, near, offset);
        let s = Schedule::new(Trigger::Cron(expr), ZONES[zone]).unwrap();
        let runs = s.runs_after(start, 40);
        prop_assert!(!runs.is_empty());
        prop_assert!(runs[0] > start);
        for pair in runs.windows(2) {
            prop_assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
            prop_assert_eq!(s.next_after(pair[0]), Some(pair[1]));
        }
        prop_assert_eq!(s.next_after(start), Some(runs[0]));
        let last = *runs.last().unwrap();
        prop_assert_eq!(s.runs_between(start, last, 1000), runs.clone());
        prop_assert_eq!(s.last_between(start, last), Some(last));
        // Starting inside the run list (not on a run) changes nothing after it.
        let mid = runs[runs.len() / 2] - SignedDuration::from_nanos(1);
        prop_assert_eq!(s.next_after(mid), Some(runs[runs.len() / 2]));
    }

    #[test]
    fn runs_match_the_brute_force_oracle(
        pattern in cron_pattern(),
        zone in 0usize..ZONES.len(),
        pick in 0usize..8,
        before in 0i64..86_400,
    ) {
        let expr = CronExpr::parse(&pattern).map_err(TestCaseError::fail)?;
        let tz = TimeZone::get(ZONES[zone]).unwrap();
        // A 30-hour window holding one of the zone's DST changes (if any).
        let from = start_for(ZONES[zone], pick, true, -before);
        let to = from + SignedDuration::from_hours(30);
        let want = oracle(&expr, &tz, from, to);
        let s = Schedule::new(Trigger::Cron(expr), ZONES[zone]).unwrap();
        let got = s.runs_between(from, to, 100_000);
        prop_assert_eq!(got, want, "pattern {} in {} from {}", pattern, ZONES[zone], from);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever is written, parsing answers Ok or a message, never a panic,
    /// and an accepted pattern always has a next run.
    #[test]
    fn parsing_never_panics(
        text in prop_oneof![
            "[0-9*/,LW#?a-zA-Z@ -]{0,40}",
            "([0-9]{1,12}|\\*|\\*/[0-9]{1,6}|[0-9]{1,3}-[0-9]{1,3}(/[0-9]{1,3})?|[a-zA-Z]{1,4}|L|[0-9]L|[0-9]#[0-9]|[0-9]{1,2}W)( ([0-9]{1,12}|\\*|\\*/[0-9]{1,6}|[0-9]{1,3}-[0-9]{1,3}|[a-zA-Z]{3}(-[a-zA-Z]{3})?|L|[0-9]L|[0-9]#[0-9]|[0-9]{1,2}W)){4}",
            "\\PC{0,30}",
        ],
        zone in 0usize..ZONES.len(),
    ) {
        let tz = TimeZone::get(ZONES[zone]).unwrap();
        let _ = parse_time(&text, &tz);
        let _ = parse_deadline(&text);
        let _ = text.parse::<Concurrency>();
        let _ = parse_timezone(&text);
        if let Ok(expr) = CronExpr::parse(&text) {
            let s = Schedule::new(Trigger::Cron(expr), ZONES[zone]).unwrap();
            prop_assert!(s.next_after(ts("2026-01-01T00:00:00Z")).is_some(), "{}", text);
        } else {
            let err = CronExpr::parse(&text).unwrap_err();
            prop_assert!(!err.is_empty());
        }
    }
}
