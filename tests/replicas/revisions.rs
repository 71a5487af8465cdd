//! Issue 13, must-show 5: replicas watching copies that disagree for a
//! while, as git-sync checkouts do.
//!
//! - A spec that reaches one replica's copy 2 s before the others' is
//!   placed once.
//! - A newer revision on one copy and the older on the others (the older
//!   copies carry an OLDER file mtime, as a lagging checkout would): only
//!   the newer revision is placed; the lagging replicas hold.

use std::time::{Duration, SystemTime};

use crate::replicas_support::*;
use jiff::SignedDuration;

#[test]
fn a_spec_reaching_one_copy_first_is_placed_once() {
    let Some(mut c) = Cluster::new(
        "a_spec_reaching_one_copy_first_is_placed_once",
        Opts::default(),
    ) else {
        return;
    };
    c.start_all();
    c.wait_all_ready();

    // No schedule: placed as soon as seen; r0 sees it 2 s before r1, r2
    // (whose checkouts, later, have later mtimes).
    let yaml = spec_yaml("early-unscheduled", None);
    c.write_spec(Copies::One(0), "early", &yaml, None);
    std::thread::sleep(Duration::from_secs(2));
    c.write_spec(Copies::Some(&[1, 2]), "early", &yaml, None);

    // Due 3 s from now, reaching r1 first and the others 2 s later.
    let at = at_in(3_000);
    let yaml_at = spec_yaml("early-at", Some(at));
    c.write_spec(Copies::One(1), "early-at", &yaml_at, None);
    std::thread::sleep(Duration::from_secs(2));
    c.write_spec(Copies::Some(&[0, 2]), "early-at", &yaml_at, None);

    c.wait_finished("early", 1);
    c.wait_finished("early-at", 1);
    sleep_until(at + SignedDuration::from_secs(3));
    assert_eq!(c.runs_of("early").len(), 1, "{:?}", c.runs_of("early"));
    assert_eq!(c.creates_for("early-unscheduled").len(), 1);
    assert_eq!(c.runs_of("early-at").len(), 1);
    assert_eq!(c.creates_for("early-at").len(), 1);
}

#[test]
fn only_the_newest_revision_is_placed_while_copies_lag() {
    let Some(mut c) = Cluster::new(
        "only_the_newest_revision_is_placed_while_copies_lag",
        Opts::default(),
    ) else {
        return;
    };
    c.start_all();
    c.wait_all_ready();
    let old_mtime = SystemTime::now() - Duration::from_secs(60);

    // (a) Scheduled: the old revision is everywhere first (an old commit);
    // a new revision of the same `at` lands on r0 only; r1 and r2 lag
    // behind with the old file (and its older mtime) when the run is due.
    let at = at_in(8_000);
    c.write_spec(
        Copies::All,
        "rev-at",
        &spec_yaml("rev-at-old", Some(at)),
        Some(old_mtime),
    );
    std::thread::sleep(Duration::from_secs(2));
    c.write_spec(
        Copies::One(0),
        "rev-at",
        &spec_yaml("rev-at-new", Some(at)),
        None,
    );
    c.wait_finished("rev-at", 1);
    sleep_until(at + SignedDuration::from_secs(3));
    assert_eq!(
        c.creates_for("rev-at-old").len(),
        0,
        "a lagging replica placed the old revision"
    );
    assert_eq!(c.creates_for("rev-at-new").len(), 1);

    // (b) Unscheduled (a revision is a run): the new revision on r1 with
    // now's mtime; the old one then reaches r0 and r2 with an older mtime.
    // Only the new one is ever placed.
    c.write_spec(
        Copies::One(1),
        "rev",
        &spec_yaml("rev-new", None),
        Some(SystemTime::now()),
    );
    c.wait_until("the new revision placed", || {
        (!c.creates_for("rev-new").is_empty()).then_some(())
    });
    c.write_spec(
        Copies::Some(&[0, 2]),
        "rev",
        &spec_yaml("rev-old", None),
        Some(old_mtime),
    );
    // Give the lagging replicas a few polls to do the wrong thing.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.creates_for("rev-new").len(), 1);
    assert_eq!(
        c.creates_for("rev-old").len(),
        0,
        "a lagging replica placed its older revision"
    );
    let runs = c.runs_of("rev");
    assert!(
        runs.iter()
            .all(|r| r.state == "finished" || r.state == "scheduled"),
        "{runs:?}"
    );

    // The copies converge (the lagging checkouts catch up): still nothing
    // more is placed.
    c.write_spec(
        Copies::Some(&[0, 2]),
        "rev",
        &spec_yaml("rev-new", None),
        Some(SystemTime::now()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.creates_for("rev-new").len(), 1, "converging re-placed it");
    assert_eq!(c.creates_for("rev-old").len(), 0);
}
