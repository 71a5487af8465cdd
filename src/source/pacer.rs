//! When to rescan: the pure timing rules of the source (no I/O, time passed in).
//!
//! - An event marks the directory dirty; the rescan waits for `quiet` without
//!   events (a `git pull` of 10,000 files becomes one or a few rescans), but
//!   never more than `max_delay` after the first event (a directory that is
//!   written to all the time is still rescanned).
//! - A requested rescan (SIGHUP, tests) runs at once.
//! - A resync runs `resync` after the last full scan, events or not, or
//!   later where a full scan is costly: the safety net takes at most
//!   1/[`RESYNC_COST_RATIO`] of a core (a resync of 100,000 files that takes
//!   263 ms runs every 105 s, not every 60 s).
//! - A follow-up runs at a set time (the calls directory is missing: retry;
//!   files too recent to trust their stat key: look again once they are not).

use std::time::{Duration, Instant};

/// The resync waits at least this many times as long as the last full scan
/// took: an idle daemon spends at most 0.25 % of a core on it.
pub const RESYNC_COST_RATIO: u32 = 400;

/// The timing state of one source.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Quiet time after the last event before a rescan.
    quiet: Duration,
    /// Longest wait after the first event of a dirty period.
    max_delay: Duration,
    /// Interval of the periodic resync.
    resync: Duration,
    /// First event since the last scan started, if any.
    dirty_since: Option<Instant>,
    /// Latest event since the last scan started.
    last_event: Option<Instant>,
    /// A rescan was asked for explicitly.
    requested: bool,
    /// When the periodic resync is due.
    next_resync: Instant,
    /// An extra rescan at this time.
    follow_up: Option<Instant>,
}

impl Pacer {
    pub fn new(quiet: Duration, max_delay: Duration, resync: Duration, now: Instant) -> Self {
        Pacer {
            quiet,
            max_delay: max_delay.max(quiet),
            resync,
            dirty_since: None,
            last_event: None,
            requested: false,
            next_resync: now + resync,
            follow_up: None,
        }
    }

    /// Something happened in the watched folders.
    pub fn event(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
        self.last_event = Some(now);
    }

    /// Rescan as soon as possible.
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// Rescan at `at` at the latest (the earliest follow-up wins).
    pub fn follow_up(&mut self, at: Instant) {
        self.follow_up = Some(self.follow_up.map_or(at, |f| f.min(at)));
    }

    /// Whether anything is waiting (an event, a request or a follow-up).
    pub fn is_dirty(&self) -> bool {
        self.requested || self.dirty_since.is_some() || self.follow_up.is_some()
    }

    /// When the next rescan is due (`now` or earlier: rescan now).
    pub fn next_due(&self, now: Instant) -> Instant {
        if self.requested {
            return now;
        }
        let mut due = self.next_resync;
        if let (Some(first), Some(last)) = (self.dirty_since, self.last_event) {
            due = due.min((last + self.quiet).min(first + self.max_delay));
        }
        if let Some(f) = self.follow_up {
            due = due.min(f);
        }
        due
    }

    /// Whether a rescan is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next_due(now)
    }

    /// A rescan starts now: what was pending is covered by it; events that
    /// arrive from now on call for another one. Only a full scan
    /// ([`Pacer::resynced`]) moves the resync clock: a stream of events
    /// neither postpones the safety net nor turns the scan of an event
    /// into a full one.
    pub fn scan_started(&mut self, _now: Instant) {
        self.dirty_since = None;
        self.last_event = None;
        self.requested = false;
        self.follow_up = None;
    }

    /// Whether the periodic full scan is due at `now`.
    pub fn resync_due(&self, now: Instant) -> bool {
        now >= self.next_resync
    }

    /// A full scan starts now: the next resync is one interval later.
    pub fn resynced(&mut self, now: Instant) {
        self.next_resync = now + self.resync;
    }

    /// The full scan started at `started` took `cost`: the next resync is
    /// no sooner than [`RESYNC_COST_RATIO`] times that after its start.
    pub fn resync_cost(&mut self, started: Instant, cost: Duration) {
        let spaced = started + cost.saturating_mul(RESYNC_COST_RATIO);
        self.next_resync = self.next_resync.max(spaced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn pacer(t0: Instant) -> Pacer {
        Pacer::new(50 * MS, 1000 * MS, 60_000 * MS, t0)
    }

    #[test]
    fn a_costly_resync_is_spaced_out_by_its_cost() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        p.resynced(t0);
        // cheap: the interval stands
        p.resync_cost(t0, 10 * MS);
        assert_eq!(p.next_due(t0), t0 + 60_000 * MS);
        // 263 ms (100,000 files): 400 times that
        p.resync_cost(t0, 263 * MS);
        assert_eq!(p.next_due(t0), t0 + 105_200 * MS);
        assert!(!p.resync_due(t0 + 105_199 * MS));
        // the next cheap scan brings the interval back
        p.resynced(t0 + 105_200 * MS);
        p.resync_cost(t0 + 105_200 * MS, MS);
        assert_eq!(p.next_due(t0), t0 + 165_200 * MS);
        // events are still scanned at once
        p.event(t0 + 110_000 * MS);
        assert_eq!(p.next_due(t0), t0 + 110_050 * MS);
    }

    #[test]
    fn idle_pacer_waits_for_the_resync() {
        let t0 = Instant::now();
        let p = pacer(t0);
        assert!(!p.is_dirty());
        assert_eq!(p.next_due(t0), t0 + 60_000 * MS);
        assert!(!p.is_due(t0 + 59_999 * MS));
        assert!(p.is_due(t0 + 60_000 * MS));
    }

    #[test]
    fn an_event_is_debounced_by_the_quiet_time() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        p.event(t0 + 10 * MS);
        assert!(p.is_dirty());
        assert!(!p.is_due(t0 + 59 * MS));
        assert!(p.is_due(t0 + 60 * MS));
        // another event pushes the rescan back
        p.event(t0 + 40 * MS);
        assert!(!p.is_due(t0 + 60 * MS));
        assert_eq!(p.next_due(t0), t0 + 90 * MS);
    }

    #[test]
    fn a_continuous_stream_of_events_is_capped_by_max_delay() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        let mut t = t0;
        let mut first_due = None;
        // an event every 10 ms for 5 s: never quiet
        for _ in 0..500 {
            p.event(t);
            if first_due.is_none() && p.is_due(t) {
                first_due = Some(t);
            }
            t += 10 * MS;
        }
        assert_eq!(first_due, Some(t0 + 1000 * MS));
    }

    #[test]
    fn scan_clears_pending_work_and_restarts_the_resync_clock() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        p.event(t0);
        p.request();
        p.follow_up(t0 + 5 * MS);
        assert!(p.is_due(t0));
        p.scan_started(t0 + 100 * MS);
        p.resynced(t0 + 100 * MS);
        assert!(!p.is_dirty());
        assert!(!p.is_due(t0 + 100 * MS));
        assert_eq!(p.next_due(t0), t0 + 60_100 * MS);
        // an event during the scan calls for another one
        p.event(t0 + 120 * MS);
        assert_eq!(p.next_due(t0), t0 + 170 * MS);
    }

    #[test]
    fn a_stream_of_event_scans_does_not_postpone_the_resync() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        let mut t = t0;
        while t < t0 + 61_000 * MS {
            p.event(t);
            t += 100 * MS;
            if p.is_due(t) {
                p.scan_started(t);
            }
        }
        assert!(p.resync_due(t0 + 60_000 * MS));
        p.resynced(t0 + 60_000 * MS);
        assert!(!p.resync_due(t0 + 119_999 * MS));
        assert!(p.resync_due(t0 + 120_000 * MS));
    }

    #[test]
    fn request_is_due_at_once() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        p.request();
        assert!(p.is_due(t0));
        assert_eq!(p.next_due(t0 + 5 * MS), t0 + 5 * MS);
    }

    #[test]
    fn earliest_follow_up_wins() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        p.follow_up(t0 + 2000 * MS);
        p.follow_up(t0 + 1000 * MS);
        p.follow_up(t0 + 3000 * MS);
        assert_eq!(p.next_due(t0), t0 + 1000 * MS);
        assert!(!p.is_due(t0 + 999 * MS));
        assert!(p.is_due(t0 + 1000 * MS));
    }

    #[test]
    fn max_delay_is_never_shorter_than_quiet() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100 * MS, 10 * MS, 60_000 * MS, t0);
        p.event(t0);
        assert_eq!(p.next_due(t0), t0 + 100 * MS);
    }
}
