//! Run times from a spec's `schedule:` (`at` / `cron`, time zone, deadline,
//! concurrency, jitter, until).
//!
//! Everything here is pure: no I/O and no clock; the current time is always
//! an argument. The user-facing rules are in `docs/scheduling.md`; the DST
//! rules are in [`cron`]'s documentation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use sha2::{Digest, Sha256};

pub mod cron;

pub use cron::CronExpr;

/// The deadline when a spec does not set one: a run not placed within five
/// minutes of its time is `missed`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5 * 60);

/// What to do when a run comes due while the spec's previous call is still up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Concurrency {
    /// Skip the new run (outcome `skipped`).
    #[default]
    Forbid,
    /// Place the new call alongside the old one.
    Allow,
    /// Hang up the old call, then place the new one.
    Replace,
}

impl Concurrency {
    /// The spelling used in spec files.
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
            Concurrency::Replace => "replace",
        }
    }
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Concurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "forbid" => Ok(Concurrency::Forbid),
            "allow" => Ok(Concurrency::Allow),
            "replace" => Ok(Concurrency::Replace),
            other => Err(format!(
                "unknown concurrency `{other}`: write forbid (skip the run while the previous \
                 call is up, the default), allow (place it anyway) or replace (hang up the \
                 previous call first)"
            )),
        }
    }
}

impl serde::Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// When a spec runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Exactly once, at this instant.
    At(Timestamp),
    /// At every match of a crontab expression, in the schedule's time zone.
    Cron(CronExpr),
}

/// A validated `schedule:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub trigger: Trigger,
    pub timezone: TimeZone,
    /// The IANA name as written in the spec (or configuration), or "UTC".
    pub timezone_name: String,
    /// How late a run may still be placed; `None` is no limit (`none`).
    pub deadline: Option<Duration>,
    pub concurrency: Concurrency,
    /// Each run is delayed by a deterministic amount in `[0, jitter]`.
    pub jitter: Option<Duration>,
    /// No nominal run after this instant (a run exactly at it still runs).
    pub until: Option<Timestamp>,
}

impl Schedule {
    /// A schedule with every optional setting at its default (deadline 5m,
    /// concurrency forbid, no jitter, no until) in the named time zone.
    pub fn new(trigger: Trigger, timezone_name: &str) -> Result<Schedule, String> {
        Ok(Schedule {
            trigger,
            timezone: parse_timezone(timezone_name)?,
            timezone_name: timezone_name.trim().to_string(),
            deadline: Some(DEFAULT_DEADLINE),
            concurrency: Concurrency::default(),
            jitter: None,
            until: None,
        })
    }

    /// First nominal run strictly after `after` (None when past `until` or
    /// an `at` already passed).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let next = match &self.trigger {
            Trigger::At(at) => Some(*at).filter(|at| *at > after),
            Trigger::Cron(expr) => expr.next_after_in(&self.timezone, after),
        }?;
        match self.until {
            Some(until) if next > until => None,
            _ => Some(next),
        }
    }

    /// Up to `limit` nominal runs strictly after `after`, in increasing order.
    pub fn runs_after(&self, after: Timestamp, limit: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(limit.min(64));
        let mut cursor = after;
        while out.len() < limit {
            match self.next_after(cursor) {
                Some(next) => {
                    out.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        out
    }

    /// Nominal runs in `(from, to]`, the first `limit` of them, in
    /// increasing order (for downtime catch-up; see also
    /// [`Schedule::last_between`]).
    pub fn runs_between(&self, from: Timestamp, to: Timestamp, limit: usize) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut cursor = from;
        while out.len() < limit {
            match self.next_after(cursor) {
                Some(next) if next <= to => {
                    out.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        out
    }

    /// The latest nominal run in `(from, to]`: the one a restarted daemon may
    /// still place. Looks back from `to` in doubling windows, so the cost
    /// does not grow with the length of the downtime.
    pub fn last_between(&self, from: Timestamp, to: Timestamp) -> Option<Timestamp> {
        if to <= from {
            return None;
        }
        let mut window = jiff::SignedDuration::from_mins(1);
        loop {
            let lo = to
                .checked_sub(window)
                .ok()
                .filter(|lo| *lo > from)
                .unwrap_or(from);
            let mut last = None;
            let mut cursor = lo;
            while let Some(next) = self.next_after(cursor).filter(|n| *n <= to) {
                last = Some(next);
                cursor = next;
            }
            if last.is_some() || lo == from {
                return last;
            }
            window = window.checked_mul(2).unwrap_or(jiff::SignedDuration::MAX);
        }
    }

    /// Deterministic delay in `[0, jitter]` (millisecond steps) for one run:
    /// the same (seed, spec name, nominal time) always gives the same delay,
    /// across restarts and calld versions.
    pub fn jitter_for(&self, seed: u64, spec_name: &str, nominal: Timestamp) -> Duration {
        let Some(jitter) = self.jitter else {
            return Duration::ZERO;
        };
        let span = jitter.as_millis().min(u64::MAX as u128 - 1) as u64;
        if span == 0 {
            return Duration::ZERO;
        }
        let mut h = Sha256::new();
        h.update(b"calld-jitter-v1\0");
        h.update(seed.to_le_bytes());
        h.update((spec_name.len() as u64).to_le_bytes());
        h.update(spec_name.as_bytes());
        h.update(nominal.as_nanosecond().to_le_bytes());
        let digest = h.finalize();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        // The bias of a 64-bit hash reduced modulo a millisecond count is
        // below 2^-20 for any jitter under a century.
        Duration::from_millis(u64::from_le_bytes(word) % (span + 1))
    }

    /// When a run is due: its nominal time plus its jitter.
    pub fn due_at(&self, seed: u64, spec_name: &str, nominal: Timestamp) -> Timestamp {
        let delay = self.jitter_for(seed, spec_name, nominal);
        jiff::SignedDuration::try_from(delay)
            .ok()
            .and_then(|d| nominal.checked_add(d).ok())
            .unwrap_or(nominal)
    }

    /// The last instant a run due at `due` may still be placed; `None` when
    /// the deadline is `none`. The deadline counts from the due time, so a
    /// jitter never makes a run miss its deadline.
    pub fn place_by(&self, due: Timestamp) -> Option<Timestamp> {
        let deadline = jiff::SignedDuration::try_from(self.deadline?).ok()?;
        Some(due.checked_add(deadline).unwrap_or(Timestamp::MAX))
    }
}

/// An IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`).
///
/// The system database (`/usr/share/zoneinfo`) is used, with a copy built
/// into calld as the fallback for systems and containers without one.
pub fn parse_timezone(name: &str) -> Result<TimeZone, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("empty time zone: use an IANA name such as Europe/Berlin, or UTC".to_string());
    }
    if name.eq_ignore_ascii_case("UTC") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| {
        let example = closest_zone_name(name).unwrap_or_else(|| "Europe/Berlin".to_string());
        format!("unknown time zone `{name}`: use an IANA name such as {example}")
    })
}

/// The known zone name nearest to `name` by edit distance, if near enough to
/// be a typo.
fn closest_zone_name(name: &str) -> Option<String> {
    // Listing the database walks the zoneinfo directory: do it once.
    static NAMES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        jiff::tz::db()
            .available()
            .map(|n| (n.as_str().to_ascii_lowercase(), n.as_str().to_string()))
            .collect()
    });
    let wanted = name.to_ascii_lowercase();
    if wanted.len() > 64 {
        return None;
    }
    let mut best: Option<(usize, &str)> = None;
    for (lower, candidate) in names {
        if lower.len().abs_diff(wanted.len()) > 3 {
            continue;
        }
        let distance = edit_distance(&wanted, lower);
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.filter(|(d, _)| *d <= 3 && *d * 3 < name.len())
        .map(|(_, n)| n.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a = a.as_bytes();
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// An `at` or `until` time: RFC 3339 with an offset (`2026-12-01T09:00:00+01:00`,
/// `...Z`), or a local date and time without one (`2026-12-01T09:00:00`,
/// `2026-12-01 09:00`), read in `tz`.
///
/// A local time in a spring-forward gap means the instant right after the
/// gap; one in a fall-back fold means its first occurrence.
pub fn parse_time(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let s = text.trim();
    let hint = "write an RFC 3339 time such as 2026-12-01T09:00:00+01:00 or \
                2026-12-01T08:00:00Z, or a local time such as 2026-12-01T09:00:00 (read in the \
                schedule's timezone)";
    if s.is_empty() {
        return Err(format!("empty time: {hint}"));
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    // A bare date would silently mean midnight; ask for the time instead.
    let has_time = s.len() > 10 && matches!(s.as_bytes()[10], b'T' | b't' | b' ');
    let wall = match s.parse::<DateTime>() {
        Ok(wall) if has_time => wall,
        Ok(_) => return Err(format!("`{s}` has a date but no time of day: {hint}")),
        Err(_) => return Err(format!("`{s}` is not a time: {hint}")),
    };
    let out_of_range = || format!("`{s}` is out of range: {hint}");
    match tz.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Unambiguous { offset } => {
            offset.to_timestamp(wall).map_err(|_| out_of_range())
        }
        AmbiguousOffset::Fold { before, .. } => {
            before.to_timestamp(wall).map_err(|_| out_of_range())
        }
        AmbiguousOffset::Gap { before, after } => {
            cron::gap_end(tz, wall, before, after).ok_or_else(out_of_range)
        }
    }
}

/// A `deadline:` value: `none` (no limit) or a positive duration (`5m`).
pub fn parse_deadline(text: &str) -> Result<Option<Duration>, String> {
    let s = text.trim();
    if s == "none" {
        return Ok(None);
    }
    let d =
        crate::duration::parse_duration(s).map_err(|e| format!("{e}, or none for no deadline"))?;
    if d.is_zero() {
        return Err(format!(
            "deadline `{s}` would miss every run: write a positive duration such as 5m, or \
             none for no deadline"
        ));
    }
    Ok(Some(d))
}

#[cfg(test)]
mod tests;
