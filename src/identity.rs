//! Run identity across snapshots of the calls directory (docs/runs.md,
//! "Run identity"). Pure: no I/O, time passed in.
//!
//! Between loading a snapshot and [`crate::reconcile`], the daemon asks
//! [`step`] what the change from the last known snapshot means:
//!
//! - **renames**: a spec that disappeared under one name while a spec with
//!   the same revision appeared under a new name (a `git mv`, a renamed
//!   file, an edited `name:`) is the same spec: its runs move to the new
//!   name ([`Step::renames`]), so nothing is placed again and scheduled
//!   runs are neither canceled nor planned twice;
//! - **upgrades**: an unscheduled spec whose run was recorded under the
//!   revision format of an older calld ([`crate::spec::render::legacy_revision`])
//!   keeps that run ([`Step::adopt`]);
//! - **held names**: specs of a file that fails to load (whatever the
//!   reason), every spec while the calls directory has never been read, and
//!   specs that vanished in a mass disappearance are held: their runs are
//!   neither placed nor canceled ([`Step::held`]).
//!
//! The [`Memory`] is what the daemon keeps between steps (and persists in
//! the ledger, so a rename while the daemon is down is still a rename).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::ledger::{Run, Slot};
use crate::spec::Spec;
use crate::spec::render::legacy_revision;

/// A mass disappearance: more than this many specs at once...
pub const MASS_MIN: usize = 10;

/// One spec as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub revision: String,
    /// The file it was read from (as the loader labels it).
    pub file: String,
}

/// What the daemon remembers between snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// Every spec known at the last step (valid, or held under its name).
    pub known: BTreeMap<String, Known>,
    /// Names held after a mass disappearance, with when they vanished.
    pub vanished: BTreeMap<String, Timestamp>,
}

/// What one step looks at.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub now: Timestamp,
    /// Valid specs of the snapshot, by name.
    pub specs: &'a BTreeMap<String, Spec>,
    /// Names the loader holds (invalid documents, files it could not load).
    pub invalid_names: &'a BTreeSet<String>,
    /// Files with errors (labels as in [`Spec::file`]).
    pub invalid_files: &'a BTreeSet<String>,
    /// Whether the calls directory has been read successfully at least once
    /// since the daemon started.
    pub dir_known: bool,
    /// Paths the last listing could not read (a folder without permission,
    /// a dangling symlink): the specs known from below them are held.
    pub unreadable: &'a [String],
    /// The ledger's open runs.
    pub runs: &'a [Run],
    /// Per spec, its latest run that left `scheduled`.
    pub latest: &'a BTreeMap<String, Run>,
    /// Names with a time slot in the ledger.
    pub last_slots: &'a BTreeMap<String, Timestamp>,
    /// `daemon.pruneAfter`.
    pub prune_after: Duration,
}

/// A spec's runs move from one name to another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rename {
    pub from: String,
    pub to: String,
    pub revision: String,
}

/// An unscheduled spec's run recorded under the old revision format is
/// re-keyed to the spec's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopt {
    pub spec: String,
    pub from: String,
    pub to: String,
}

/// A mass disappearance seen in this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mass {
    pub vanished: usize,
    pub known: usize,
    pub prune_at: Timestamp,
}

/// The result of [`step`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Apply first, in order (the ledger moves the runs).
    pub renames: Vec<Rename>,
    /// Apply after the renames.
    pub adopt: Vec<Adopt>,
    /// Every name whose runs are held now (pass to reconcile as `held`).
    pub held: BTreeSet<String>,
    /// Set when this step started holding a mass disappearance.
    pub mass: Option<Mass>,
    /// Names released from a mass hold because `pruneAfter` passed.
    pub pruned: Vec<String>,
    /// The memory for the next step.
    pub memory: Memory,
    /// When a mass hold ends (wake the daemon then).
    pub wake_at: Option<Timestamp>,
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Decides what the change from `memory` to the input means.
pub fn step(memory: &Memory, input: &Input<'_>) -> Step {
    let mut out = Step::default();
    let ledger_names = || {
        input
            .runs
            .iter()
            .map(|r| r.spec.clone())
            .chain(input.latest.keys().cloned())
    };

    // Unknown is not empty: before the first good read, hold everything
    // the ledger has and learn nothing.
    if !input.dir_known {
        out.held = ledger_names()
            .chain(memory.known.keys().cloned())
            .chain(input.invalid_names.iter().cloned())
            .collect();
        out.memory = memory.clone();
        return out;
    }

    // Held by the loader, and every spec a failing file held before.
    let mut held: BTreeSet<String> = input.invalid_names.clone();
    for (name, k) in &memory.known {
        let below_unreadable = input.unreadable.iter().any(|p| {
            k.file == *p
                || k.file
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        });
        if (input.invalid_files.contains(&k.file) || below_unreadable)
            && !input.specs.contains_key(name)
        {
            held.insert(name.clone());
        }
    }

    // Renames: gone names and new names, paired by revision.
    let has_runs: BTreeSet<&str> = input
        .runs
        .iter()
        .map(|r| r.spec.as_str())
        .chain(input.latest.keys().map(String::as_str))
        .chain(input.last_slots.keys().map(String::as_str))
        .collect();
    let mut gone: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, k) in &memory.known {
        if !input.specs.contains_key(name) && !held.contains(name) {
            gone.entry(k.revision.as_str()).or_default().push(name);
        }
    }
    let mut appeared: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, spec) in input.specs {
        if !memory.known.contains_key(name) && !has_runs.contains(name.as_str()) {
            appeared
                .entry(spec.revision.as_str())
                .or_default()
                .push(name);
        }
    }
    let mut renamed_away: BTreeSet<&str> = BTreeSet::new();
    for (rev, to_names) in &appeared {
        let Some(from_names) = gone.get(rev) else {
            continue;
        };
        // several identical specs moved at once: pair them in name order
        for (from, to) in from_names.iter().zip(to_names) {
            renamed_away.insert(from);
            if has_runs.contains(from) {
                out.renames.push(Rename {
                    from: from.to_string(),
                    to: to.to_string(),
                    revision: rev.to_string(),
                });
            }
        }
    }

    // A file calld never saw valid fails to load: it may be a spec renamed
    // or moved while broken, so the specs that are gone are held with it
    // (their runs kept) until it loads or is removed.
    let known_files: BTreeSet<&str> = memory.known.values().map(|k| k.file.as_str()).collect();
    let unexplained = input
        .invalid_files
        .iter()
        .any(|f| !known_files.contains(f.as_str()));
    if unexplained {
        for name in memory.known.keys() {
            if !input.specs.contains_key(name) && !renamed_away.contains(name.as_str()) {
                held.insert(name.clone());
            }
        }
    }

    // Mass disappearance: what vanished without a rename or an error.
    let mut vanished = memory.vanished.clone();
    vanished.retain(|name, _| {
        !input.specs.contains_key(name)
            && !held.contains(name)
            && !renamed_away.contains(name.as_str())
    });
    let fresh: Vec<&str> = memory
        .known
        .keys()
        .map(String::as_str)
        .filter(|n| {
            !input.specs.contains_key(*n)
                && !held.contains(*n)
                && !renamed_away.contains(n)
                && !vanished.contains_key(*n)
        })
        .collect();
    if fresh.len() > MASS_MIN && fresh.len() * 2 > memory.known.len() {
        for n in &fresh {
            vanished.insert(n.to_string(), input.now);
        }
        out.mass = Some(Mass {
            vanished: fresh.len(),
            known: memory.known.len(),
            prune_at: add(input.now, input.prune_after),
        });
    }
    vanished.retain(|name, since| {
        let until = add(*since, input.prune_after);
        if input.now >= until {
            out.pruned.push(name.clone());
            false
        } else {
            out.wake_at = Some(out.wake_at.map_or(until, |w: Timestamp| w.min(until)));
            true
        }
    });
    held.extend(vanished.keys().cloned());

    // Upgrades: an unscheduled spec's run under the older revision format.
    // (indexed by name: this runs before every decision)
    let mut revision_slots: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in input.runs.iter().chain(input.latest.values()) {
        if let Slot::Revision(rev) = &r.slot {
            revision_slots.entry(r.spec.as_str()).or_default().push(rev);
        }
    }
    for (name, slots) in &revision_slots {
        let Some(spec) = input.specs.get(*name) else {
            continue;
        };
        if spec.schedule.is_some()
            || held.contains(*name)
            || slots.contains(&spec.revision.as_str())
        {
            continue;
        }
        // only computed for a spec whose runs carry another revision
        let old = legacy_revision(spec);
        if slots.contains(&old.as_str()) {
            out.adopt.push(Adopt {
                spec: name.to_string(),
                from: old,
                to: spec.revision.clone(),
            });
        }
    }

    // The memory: valid specs, plus held ones under what was known of them.
    let mut known: BTreeMap<String, Known> = input
        .specs
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                Known {
                    revision: s.revision.clone(),
                    file: s.file.clone(),
                },
            )
        })
        .collect();
    for name in &held {
        if let Some(k) = memory.known.get(name) {
            known.entry(name.clone()).or_insert_with(|| k.clone());
        }
    }
    out.held = held;
    out.memory = Memory { known, vanished };
    out
}
