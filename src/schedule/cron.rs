//! 5-field crontab expressions and their run times in a time zone.
//!
//! Parsing and wall-clock matching are croner's (5-field Vixie/OCPS syntax,
//! day-of-month OR day-of-week). What croner decides differently from calld is
//! the daylight-saving rule, so the search from wall-clock matches to instants
//! is done here:
//!
//! - A *fixed-time* job (neither the minute nor the hour field starts with
//!   `*`, as in Vixie cron) runs once per matching wall-clock time: a time in
//!   a spring-forward gap runs at the first instant after the gap, a time in a
//!   fall-back fold runs at its first occurrence only. croner treats only a
//!   single minute *and* single hour as fixed, so `30 2,14 * * *` would lose
//!   its 02:30 run on the spring-forward day and run twice on the fall-back
//!   day; calld does not.
//! - An *interval* job (`*/15 * * * *`, `0 * * * *`, `* 2 * * *`) runs on
//!   real instants only: wall-clock times inside a gap do not exist and are
//!   skipped, wall-clock times inside a fold run at both occurrences (Vixie
//!   does the same), so the runs stay evenly spaced in real time.
//!
//! Every run is a distinct instant and the search returns them in strictly
//! increasing order.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use croner::Cron;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// The example shown in every cron error message.
const EXAMPLE: &str = "e.g. `0 9 * * Mon-Fri` (09:00 on weekdays) or `*/15 * * * *`";

/// Upper bound on wall-clock matches examined for one answer. A real time
/// zone needs at most a fold's worth (60 for an every-minute job in a one-hour
/// fold); the bound only stops a pathological zone from looping.
const MAX_STEPS: usize = 100_000;

/// Parsed, valid patterns by their numeric text (weak: a pattern no spec
/// uses any more is dropped), and the size at which dead entries are pruned.
type Interned = Mutex<(HashMap<String, Weak<Cron>>, usize)>;

fn cache() -> &'static Interned {
    static CACHE: OnceLock<Interned> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new((HashMap::new(), 1024)))
}

fn interned(pattern: &str) -> Option<Arc<Cron>> {
    let guard = cache().lock().unwrap_or_else(|p| p.into_inner());
    guard.0.get(pattern).and_then(Weak::upgrade)
}

fn intern(pattern: &str, cron: &Arc<Cron>) {
    let mut guard = cache().lock().unwrap_or_else(|p| p.into_inner());
    let (map, prune_at) = &mut *guard;
    map.insert(pattern.to_string(), Arc::downgrade(cron));
    if map.len() >= *prune_at {
        map.retain(|_, w| w.strong_count() > 0);
        *prune_at = (map.len() * 2).max(1024);
    }
}

/// A parsed 5-field crontab expression (minute hour day-of-month month
/// day-of-week) or one of the `@daily`-style macros.
#[derive(Clone)]
pub struct CronExpr {
    /// As written (trimmed), for display and error messages.
    text: String,
    /// The numeric pattern handed to croner (names and macros expanded),
    /// shared by every expression with the same pattern.
    cron: Arc<Cron>,
    /// Vixie's "wildcard job": the minute or hour field starts with `*`.
    interval: bool,
}

impl std::fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CronExpr").field(&self.text).finish()
    }
}

impl std::fmt::Display for CronExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Two expressions are equal when they are written the same way.
impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for CronExpr {}

impl FromStr for CronExpr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(s)
    }
}

struct Field {
    name: &'static str,
    range: &'static str,
    /// Characters allowed besides digits, `*`, `,`, `-`, `/`.
    extra: &'static str,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        range: "0-59",
        extra: "",
    },
    Field {
        name: "hour",
        range: "0-23",
        extra: "",
    },
    Field {
        name: "day-of-month",
        range: "1-31 (also L, 15W, ?)",
        extra: "LW?",
    },
    Field {
        name: "month",
        range: "1-12 or jan-dec",
        extra: "",
    },
    Field {
        name: "day-of-week",
        range: "0-7 or sun-sat, 0 and 7 both Sunday (also 5L, 1#2, ?)",
        extra: "L#?",
    },
];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl CronExpr {
    /// Parses a 5-field crontab line or a macro (`@yearly`, `@annually`,
    /// `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`).
    ///
    /// Month and weekday names (`jan`, `Mon-Fri`) are case-insensitive and
    /// allowed only in their own field. Errors name the bad field and show
    /// an example.
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!(
                "empty cron expression: write five fields (minute hour day-of-month month \
                 day-of-week), {EXAMPLE}, or a macro such as @daily"
            ));
        }
        let expanded = if let Some(name) = text.strip_prefix('@') {
            expand_macro(name)?
        } else {
            text
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            let what = match fields.len() {
                6 => " (a seconds or year field?)",
                7 => " (seconds and year fields?)",
                _ => "",
            };
            return Err(format!(
                "cron expression `{text}` has {} fields{what}: calld uses 5-field crontab \
                 (minute hour day-of-month month day-of-week), without seconds or years, {EXAMPLE}",
                fields.len()
            ));
        }
        let mut numeric = Vec::with_capacity(5);
        for (i, raw) in fields.iter().enumerate() {
            let field = normalize_field(i, raw).map_err(|why| field_error(i, raw, &why))?;
            numeric.push(field);
        }
        let pattern = numeric.join(" ");
        let interval = fields[0].starts_with('*') || fields[1].starts_with('*');
        // A pattern already parsed (and checked) by another spec is shared:
        // croner keeps a 10,000-entry year table per expression, so 100,000
        // specs would otherwise hold a gigabyte of identical tables.
        if let Some(cron) = interned(&pattern) {
            return Ok(CronExpr {
                text: text.to_string(),
                cron,
                interval,
            });
        }
        let cron = match Cron::from_str(&pattern) {
            Ok(c) => c,
            Err(e) => {
                // Let croner check each field on its own so that its
                // complaint can be pinned to that field (only on failure:
                // each parse fills the year table).
                for (i, field) in numeric.iter().enumerate() {
                    let mut probe = ["*"; 5];
                    probe[i] = field;
                    if let Err(e) = Cron::from_str(&probe.join(" ")) {
                        return Err(field_error(i, fields[i], &croner_reason(&e)));
                    }
                }
                return Err(format!(
                    "cron expression `{text}`: {}; {EXAMPLE}",
                    croner_reason(&e)
                ));
            }
        };
        let expr = CronExpr {
            text: text.to_string(),
            cron: Arc::new(cron),
            interval,
        };
        expr.check_matches_some_date()?;
        intern(&pattern, &expr.cron);
        Ok(expr)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `true` for an interval job (the minute or hour field starts with `*`),
    /// whose runs skip a DST gap and repeat in a DST fold; `false` for a
    /// fixed-time job, which runs right after a gap and once in a fold.
    pub fn is_interval(&self) -> bool {
        self.interval
    }

    /// A short English description (croner's), for `plan` output.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// Whether a wall-clock time matches the pattern (seconds ignored).
    pub fn matches(&self, wall: DateTime) -> bool {
        let minute = wall.with().second(0).subsec_nanosecond(0).build();
        match minute {
            Ok(m) => self.cron.is_time_matching(&m).unwrap_or(false),
            Err(_) => false,
        }
    }

    /// The first matching wall-clock time strictly after `after`.
    fn next_wall(&self, after: DateTime) -> Option<DateTime> {
        // croner drops the sub-second part and starts one second later, so
        // the answer is strictly after `after` either way.
        self.cron.find_next_occurrence(&after, false).ok()
    }

    /// The first matching wall-clock time at or after `at`.
    fn first_wall_from(&self, at: DateTime) -> Option<DateTime> {
        let just_before = at.checked_sub(SignedDuration::from_nanos(1)).ok()?;
        self.next_wall(just_before)
    }

    /// Rejects patterns such as `0 0 30 2 *` that match no date at all: the
    /// Gregorian calendar (weekdays included) repeats every 400 years, so a
    /// pattern without a match in 400 years never matches.
    fn check_matches_some_date(&self) -> Result<(), String> {
        let start = DateTime::constant(2001, 1, 1, 0, 0, 0, 0);
        match self.cron.find_next_occurrence(&start, true) {
            Ok(found) if found.year() < 2401 => Ok(()),
            _ => Err(format!(
                "cron expression `{}` never runs: its day-of-month and month fields name no \
                 real date (February has at most 29 days; April, June, September and November \
                 30); {EXAMPLE}",
                self.text
            )),
        }
    }

    /// The first run strictly after `after` in time zone `tz`, following the
    /// DST rules of the module documentation.
    pub(crate) fn next_after_in(&self, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let first = self.next_first_occurrence(tz, after)?;
        if !self.interval {
            return Some(first);
        }
        match self.next_second_occurrence(tz, after, first) {
            Some(second) => Some(first.min(second)),
            None => Some(first),
        }
    }

    /// The earliest run > `after` that is the first (or only) instant of its
    /// wall-clock time, or the end of a gap for a fixed-time job.
    ///
    /// Mapping a wall-clock time to that instant is monotonic (non-
    /// decreasing), and it maps the wall clock of `after` itself to an instant
    /// ≤ `after`; so the answer is the first matching wall-clock time after
    /// that of `after` whose instant lies past `after`.
    fn next_first_occurrence(&self, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let mut cursor = tz.to_datetime(after);
        for _ in 0..MAX_STEPS {
            let wall = self.next_wall(cursor)?;
            cursor = wall;
            let instant = match tz.to_ambiguous_timestamp(wall).offset() {
                AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok()?,
                AmbiguousOffset::Fold { before, .. } => before.to_timestamp(wall).ok()?,
                AmbiguousOffset::Gap {
                    before,
                    after: post,
                } => {
                    if self.interval {
                        continue;
                    }
                    gap_end(tz, wall, before, post)?
                }
            };
            if instant > after {
                return Some(instant);
            }
        }
        None
    }

    /// For an interval job: the earliest run > `after` that is the second
    /// occurrence of a wall-clock time repeated by a fold, if it comes before
    /// `bound` (the first-occurrence answer).
    fn next_second_occurrence(
        &self,
        tz: &TimeZone,
        after: Timestamp,
        bound: Timestamp,
    ) -> Option<Timestamp> {
        // The transition at or before `after` (its fold may still be running)
        // and those after it, up to the bound.
        let from = after.checked_add(SignedDuration::from_nanos(1)).ok()?;
        let previous = tz.preceding(from).next();
        let following = tz.following(after);
        let mut best: Option<Timestamp> = None;
        for transition in previous.into_iter().chain(following) {
            let at = transition.timestamp();
            // Second occurrences come at or after their transition.
            if at >= best.unwrap_or(bound) {
                break;
            }
            let post = transition.offset();
            let Some(pre) = at
                .checked_sub(SignedDuration::from_nanos(1))
                .ok()
                .map(|t| tz.to_offset(t))
            else {
                continue;
            };
            if pre <= post {
                continue; // a gap or a rename, not a fold
            }
            // Second occurrences are the instants [at, at + (pre - post)),
            // showing the wall clocks [at + post, at + pre) again.
            let fold_start = post.to_datetime(at);
            let fold_end = pre.to_datetime(at);
            let after_wall = post.to_datetime(after);
            let wall = if after_wall >= fold_start {
                self.next_wall(after_wall)
            } else {
                self.first_wall_from(fold_start)
            };
            let Some(wall) = wall.filter(|w| *w < fold_end) else {
                continue;
            };
            let Ok(instant) = post.to_timestamp(wall) else {
                continue;
            };
            if instant > after && instant < best.unwrap_or(bound) {
                best = Some(instant);
            }
        }
        best
    }
}

/// The first instant after the spring-forward gap that holds `wall`
/// (`before` and `after` are the offsets either side of the gap).
pub(crate) fn gap_end(
    tz: &TimeZone,
    wall: DateTime,
    before: Offset,
    after: Offset,
) -> Option<Timestamp> {
    // Read with the later offset, the wall clock lands before the transition;
    // read with the earlier one, at or after it.
    let lo = after.to_timestamp(wall).ok()?;
    let hi = before.to_timestamp(wall).ok()?;
    tz.following(lo)
        .map(|t| t.timestamp())
        .take_while(|t| *t <= hi)
        .find(|t| tz.to_offset(*t) == after)
        .or(Some(hi))
}

fn expand_macro(name: &str) -> Result<&'static str, String> {
    let lower = name.trim().to_ascii_lowercase();
    Ok(match lower.as_str() {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        "reboot" => {
            return Err(
                "@reboot is not supported: a spec without `schedule:` is placed once \
                 as soon as calld sees it"
                    .to_string(),
            );
        }
        _ => {
            return Err(format!(
                "unknown cron macro `@{name}`: use @yearly, @annually, @monthly, @weekly, \
                 @daily, @midnight or @hourly, or five fields, {EXAMPLE}"
            ));
        }
    })
}

fn field_error(index: usize, raw: &str, why: &str) -> String {
    let f = &FIELDS[index];
    format!(
        "cron {} field `{raw}`: {why}; the {} field takes {} with `*`, lists `a,b`, ranges \
         `a-b` and steps `*/n`, {EXAMPLE}",
        f.name, f.name, f.range
    )
}

fn croner_reason(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    let text = match e {
        E::ComponentError(m) | E::InvalidPattern(m) | E::IllegalCharacters(m) => m.clone(),
        other => other.to_string(),
    };
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => "invalid".to_string(),
    }
}

/// Checks the characters of one field and turns month and weekday names
/// into numbers, so that croner sees names only in their own field.
fn normalize_field(index: usize, raw: &str) -> Result<String, String> {
    let extra = FIELDS[index].extra;
    for item in raw.split(',') {
        if item.is_empty() {
            return Err("empty item in a list".to_string());
        }
    }
    let mut out = String::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_ascii_alphabetic() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let word = &raw[start..i];
            let lower = word.to_ascii_lowercase();
            let after_dash = start > 0 && bytes[start - 1] == b'-';
            if let Some(m) = MONTHS.iter().position(|n| *n == lower) {
                if index != 3 {
                    return Err(format!(
                        "`{word}` is a month name, allowed only in the month field"
                    ));
                }
                out.push_str(&(m + 1).to_string());
            } else if let Some(d) = DAYS.iter().position(|n| *n == lower) {
                if index != 4 {
                    return Err(format!(
                        "`{word}` is a day name, allowed only in the day-of-week field"
                    ));
                }
                // `Fri-Sun` ends on Sunday: 5-7, not the empty range 5-0.
                let n = if d == 0 && after_dash { 7 } else { d };
                out.push_str(&n.to_string());
            } else if word
                .chars()
                .all(|ch| extra.contains(ch.to_ascii_uppercase()))
            {
                out.push_str(&word.to_ascii_uppercase());
            } else {
                return Err(format!("unknown name `{word}`"));
            }
            continue;
        }
        if c.is_ascii_digit() || "*,-/".contains(c) || extra.contains(c) {
            out.push(c);
        } else {
            return Err(format!("unexpected character `{c}`"));
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(s: &str) -> DateTime {
        s.parse().unwrap()
    }

    #[test]
    fn names_and_numbers_are_the_same_pattern() {
        let names = CronExpr::parse("0 9 * jan-Mar Mon-FRI").unwrap();
        let numbers = CronExpr::parse("0 9 * 1-3 1-5").unwrap();
        let mut a = wall("2026-01-01T00:00");
        let mut b = a;
        for _ in 0..50 {
            a = names.next_wall(a).unwrap();
            b = numbers.next_wall(b).unwrap();
            assert_eq!(a, b);
        }
        assert_eq!(names.as_str(), "0 9 * jan-Mar Mon-FRI");
    }

    #[test]
    fn sunday_is_zero_and_seven_and_ends_ranges() {
        // 2026-03-01 is a Sunday.
        for p in ["0 0 * * 0", "0 0 * * 7", "0 0 * * sun", "0 0 * * Fri-Sun"] {
            let c = CronExpr::parse(p).unwrap();
            assert!(c.matches(wall("2026-03-01T00:00")), "{p}");
            assert!(!c.matches(wall("2026-03-02T00:00")), "{p}");
        }
        let c = CronExpr::parse("0 0 * * Fri-Sun").unwrap();
        assert!(c.matches(wall("2026-02-27T00:00"))); // Friday
        assert!(c.matches(wall("2026-02-28T00:00"))); // Saturday
    }

    #[test]
    fn day_of_month_and_day_of_week_are_ored() {
        // 13th of the month or any Friday (Vixie).
        let c = CronExpr::parse("0 12 13 * Fri").unwrap();
        assert!(c.matches(wall("2026-03-13T12:00"))); // Friday the 13th
        assert!(c.matches(wall("2026-04-13T12:00"))); // Monday the 13th
        assert!(c.matches(wall("2026-04-17T12:00"))); // a Friday
        assert!(!c.matches(wall("2026-04-14T12:00")));
        // Only one restricted: the other `*` does not widen it.
        let c = CronExpr::parse("0 12 13 * *").unwrap();
        assert!(!c.matches(wall("2026-04-17T12:00")));
    }

    #[test]
    fn macros_expand() {
        let cases = [
            ("@yearly", "2027-01-01T00:00"),
            ("@annually", "2027-01-01T00:00"),
            ("@monthly", "2026-04-01T00:00"),
            ("@weekly", "2026-03-22T00:00"), // next Sunday
            ("@daily", "2026-03-18T00:00"),
            ("@midnight", "2026-03-18T00:00"),
            ("@hourly", "2026-03-17T11:00"),
            ("@HOURLY", "2026-03-17T11:00"),
        ];
        for (m, next) in cases {
            let c = CronExpr::parse(m).unwrap();
            assert_eq!(
                c.next_wall(wall("2026-03-17T10:30")),
                Some(wall(next)),
                "{m}"
            );
            assert_eq!(c.as_str(), m);
        }
        assert!(CronExpr::parse("@hourly").unwrap().is_interval());
        assert!(!CronExpr::parse("@daily").unwrap().is_interval());
    }

    #[test]
    fn interval_or_fixed() {
        for (p, interval) in [
            ("*/15 * * * *", true),
            ("0 * * * *", true),
            ("* 2 * * *", true),
            ("0 */2 * * *", true),
            ("30 2 * * *", false),
            ("30 2,14 * * *", false),
            ("0 9-17 * * Mon-Fri", false),
        ] {
            assert_eq!(CronExpr::parse(p).unwrap().is_interval(), interval, "{p}");
        }
    }

    #[test]
    fn errors_name_the_field_and_show_an_example() {
        let cases = [
            ("60 * * * *", "minute field `60`"),
            ("* 24 * * *", "hour field `24`"),
            ("* * 0 * *", "day-of-month field `0`"),
            ("* * * 13 *", "month field `13`"),
            ("* * * * 8", "day-of-week field `8`"),
            ("*/0 * * * *", "step cannot be zero"),
            ("* * * Mon *", "`Mon` is a day name"),
            ("* * * * Jan", "`Jan` is a month name"),
            ("* * * * Mo", "unknown name `Mo`"),
            ("1,,2 * * * *", "empty item"),
            ("* * * * +Mon", "unexpected character `+`"),
            ("0 0 * * * *", "has 6 fields"),
            ("0 0 0 * * * 2026", "has 7 fields"),
            ("0 0 *", "has 3 fields"),
            ("", "empty cron expression"),
            ("@every 5m", "unknown cron macro `@every 5m`"),
            ("@reboot", "@reboot is not supported"),
            ("0 0 30 2 *", "never runs"),
            ("0 0 31 4,6 *", "never runs"),
        ];
        for (p, want) in cases {
            let err = CronExpr::parse(p).unwrap_err();
            assert!(err.contains(want), "{p}: {err}");
            if !p.starts_with('@') || p == "@every 5m" {
                assert!(err.contains("0 9 * * Mon-Fri"), "{p}: {err}");
            }
        }
        assert!(CronExpr::parse("0 0 29 2 *").is_ok(), "leap day exists");
    }

    #[test]
    fn special_day_fields_are_accepted() {
        let c = CronExpr::parse("0 0 L * *").unwrap();
        assert_eq!(
            c.next_wall(wall("2026-02-01T00:00")),
            Some(wall("2026-02-28T00:00"))
        );
        let c = CronExpr::parse("0 0 * * 5L").unwrap(); // last Friday
        assert_eq!(
            c.next_wall(wall("2026-03-01T00:00")),
            Some(wall("2026-03-27T00:00"))
        );
        let c = CronExpr::parse("0 0 * * mon#2").unwrap(); // second Monday
        assert_eq!(
            c.next_wall(wall("2026-03-01T00:00")),
            Some(wall("2026-03-09T00:00"))
        );
    }
}
