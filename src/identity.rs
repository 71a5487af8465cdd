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
use std::sync::Arc;
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
    pub specs: &'a BTreeMap<String, Arc<Spec>>,
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
    if !input.dir_known {
        return unknown_dir(memory, input);
    }
    let known_files: BTreeSet<&str> = memory.known.values().map(|k| k.file.as_str()).collect();
    let delta = decide(memory, input, None, &|f| known_files.contains(f));
    let mut known = memory.known.clone();
    apply_known(&mut known, &delta.known);
    Step {
        renames: delta.renames,
        adopt: delta.adopt,
        held: delta.held,
        mass: delta.mass,
        pruned: delta.pruned,
        memory: Memory {
            known,
            vanished: delta.vanished,
        },
        wake_at: delta.wake_at,
    }
}

/// What changed since the step that made a [`Tracked`] memory: with it,
/// [`step_since`] looks only at the names that may have changed, in time
/// proportional to them, not to the directory (issue 12).
#[derive(Debug, Clone, Copy)]
pub struct Since<'a> {
    /// Every name whose spec (its presence, revision, file or schedule) or
    /// invalid mark may differ from the input of that step.
    pub names: &'a BTreeSet<String>,
    /// The names that step held.
    pub held: &'a BTreeSet<String>,
}

/// A memory with an index of the files it names, kept in step by
/// [`Tracked::apply`] (what [`step_since`] needs to tell whether a failing
/// file is one calld knows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked {
    memory: Memory,
    files: BTreeMap<String, usize>,
}

impl Tracked {
    pub fn new(memory: Memory) -> Self {
        let mut files = BTreeMap::new();
        for k in memory.known.values() {
            *files.entry(k.file.clone()).or_insert(0) += 1;
        }
        Tracked { memory, files }
    }

    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Brings the memory to the one after the step that gave `delta`.
    pub fn apply(&mut self, delta: &Delta) {
        for (name, new) in &delta.known {
            if let Some(old) = self.memory.known.get(name) {
                let gone = match self.files.get_mut(&old.file) {
                    Some(n) => {
                        *n -= 1;
                        *n == 0
                    }
                    None => false,
                };
                if gone {
                    self.files.remove(&old.file);
                }
            }
            if let Some(k) = new {
                *self.files.entry(k.file.clone()).or_insert(0) += 1;
            }
        }
        apply_known(&mut self.memory.known, &delta.known);
        self.memory.vanished.clone_from(&delta.vanished);
    }
}

/// What a step decided, with the memory as a change: [`Step`] without
/// the copy of every known spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub renames: Vec<Rename>,
    pub adopt: Vec<Adopt>,
    pub held: BTreeSet<String>,
    pub mass: Option<Mass>,
    pub pruned: Vec<String>,
    pub wake_at: Option<Timestamp>,
    /// The vanished names of the new memory (few: only a mass hold's).
    pub vanished: BTreeMap<String, Timestamp>,
    /// Per name, its new entry in the known specs (`None`: forgotten);
    /// names not listed keep theirs.
    pub known: BTreeMap<String, Option<Known>>,
}

/// [`step`], looking only at the names that may have changed since the
/// step that made `tracked` (`since`); the same decisions as [`step`] on
/// the same input, as long as:
/// - that step saw the calls directory (`dir_known`) and so does this one;
/// - the invalid files and unreadable paths are those of that step;
/// - `since.names` holds every name whose spec or invalid mark changed;
/// - the ledger's runs changed since only by the daemon's own actions
///   (runs are recorded under the spec's current revision), and every
///   rename and re-key that step asked for was applied.
///
/// Otherwise call [`step_all`]. `input.runs` needs to hold only the open runs
/// of `since.names` and `since.held` (more are ignored).
pub fn step_since(tracked: &Tracked, input: &Input<'_>, since: &Since<'_>) -> Delta {
    debug_assert!(input.dir_known, "step_since needs a known directory");
    let mut names: BTreeSet<&str> = since.names.iter().map(String::as_str).collect();
    names.extend(since.held.iter().map(String::as_str));
    names.extend(tracked.memory.vanished.keys().map(String::as_str));
    decide(&tracked.memory, input, Some(&names), &|f| {
        tracked.files.contains_key(f)
    })
}

/// [`step`] over every name, as a change to `tracked` (apply it with
/// [`Tracked::apply`] when the directory is known: before, nothing is
/// learnt).
pub fn step_all(tracked: &Tracked, input: &Input<'_>) -> Delta {
    if !input.dir_known {
        let s = unknown_dir(&tracked.memory, input);
        return Delta {
            held: s.held,
            vanished: s.memory.vanished,
            ..Delta::default()
        };
    }
    decide(&tracked.memory, input, None, &|f| {
        tracked.files.contains_key(f)
    })
}

fn apply_known(known: &mut BTreeMap<String, Known>, changes: &BTreeMap<String, Option<Known>>) {
    for (name, new) in changes {
        match new {
            Some(k) => {
                known.insert(name.clone(), k.clone());
            }
            None => {
                known.remove(name);
            }
        }
    }
}

/// Before the first good read: hold everything the ledger has and learn
/// nothing (unknown is not empty).
fn unknown_dir(memory: &Memory, input: &Input<'_>) -> Step {
    Step {
        held: input
            .runs
            .iter()
            .map(|r| r.spec.clone())
            .chain(input.latest.keys().cloned())
            .chain(memory.known.keys().cloned())
            .chain(input.invalid_names.iter().cloned())
            .collect(),
        memory: memory.clone(),
        ..Step::default()
    }
}

/// The step, over every name (`only` = None) or over the names that may
/// have changed (see [`step_since`] for why the others cannot matter).
fn decide(
    memory: &Memory,
    input: &Input<'_>,
    only: Option<&BTreeSet<&str>>,
    is_known_file: &dyn Fn(&str) -> bool,
) -> Delta {
    let mut out = Delta::default();
    let looked_at = |name: &str| only.is_none_or(|o| o.contains(name));
    // the known specs to look at
    let known_entries: Vec<(&String, &Known)> = match only {
        None => memory.known.iter().collect(),
        Some(o) => o
            .iter()
            .filter_map(|n| memory.known.get_key_value(*n))
            .collect(),
    };
    // the valid specs to look at
    let spec_entries: Vec<(&String, &Arc<Spec>)> = match only {
        None => input.specs.iter().collect(),
        Some(o) => o
            .iter()
            .filter_map(|n| input.specs.get_key_value(*n))
            .collect(),
    };
    // Held by the loader, and every spec a failing file held before.
    let mut held: BTreeSet<String> = input.invalid_names.clone();
    for &(name, k) in &known_entries {
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
    let runs: Vec<&Run> = input.runs.iter().filter(|r| looked_at(&r.spec)).collect();
    let latest: Vec<&Run> = match only {
        None => input.latest.values().collect(),
        Some(o) => o.iter().filter_map(|n| input.latest.get(*n)).collect(),
    };
    let run_specs: BTreeSet<&str> = runs.iter().map(|r| r.spec.as_str()).collect();
    let has_runs = |name: &str| {
        run_specs.contains(name)
            || input.latest.contains_key(name)
            || input.last_slots.contains_key(name)
    };
    let mut gone: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for &(name, k) in &known_entries {
        if !input.specs.contains_key(name) && !held.contains(name) {
            gone.entry(k.revision.as_str()).or_default().push(name);
        }
    }
    let mut appeared: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for &(name, spec) in &spec_entries {
        if !memory.known.contains_key(name) && !has_runs(name) {
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
            if has_runs(from) {
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
    let unexplained = input.invalid_files.iter().any(|f| !is_known_file(f));
    if unexplained {
        for &(name, _) in &known_entries {
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
    let fresh: Vec<&str> = known_entries
        .iter()
        .map(|(n, _)| n.as_str())
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
    for r in runs.iter().chain(&latest) {
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

    // The memory: valid specs, plus held ones under what was known of them
    // (as a change: only the names looked at can change).
    for &(name, s) in &spec_entries {
        let unchanged = memory
            .known
            .get(name)
            .is_some_and(|k| k.revision == s.revision && k.file == s.file);
        if !unchanged {
            out.known.insert(
                name.clone(),
                Some(Known {
                    revision: s.revision.clone(),
                    file: s.file.clone(),
                }),
            );
        }
    }
    for &(name, _) in &known_entries {
        if !input.specs.contains_key(name) && !held.contains(name) {
            out.known.insert(name.clone(), None);
        }
    }
    out.held = held;
    out.vanished = vanished;
    out
}
