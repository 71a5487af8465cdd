//! Deciding the specs that changed (issue 12, item 2).
//!
//! [`reconcile`](super::reconcile) decides each spec from that spec and its
//! own runs only, so a decision over a subset of the specs gives exactly
//! the actions a decision over all of them gives for that subset (and
//! [`reconcile_with_wakes`](super::reconcile_with_wakes) says when each
//! spec needs looking at again). [`DirtySet`] keeps what the daemon must
//! decide next: the specs marked dirty (changed or removed specs, specs
//! whose runs got a notification or a request result, specs whose actions
//! were just applied) and one ordered deadline queue of (time, spec) for
//! the specs whose time comes. Pure: no clock, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;

use crate::spec::Spec;

/// Which specs a decision looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every spec and every open run (at start, after a rename, when the
    /// token's state or the configuration changed).
    Full,
    /// These specs (and the open runs under these names) only.
    Specs(BTreeSet<String>),
}

impl Scope {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Scope::Full => true,
            Scope::Specs(s) => s.contains(name),
        }
    }
}

/// What the next decision must look at, and when (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct DirtySet {
    full: bool,
    dirty: BTreeSet<String>,
    queue: BTreeSet<(Timestamp, String)>,
    wake_of: HashMap<String, Timestamp>,
}

impl Default for DirtySet {
    /// The first decision looks at everything.
    fn default() -> Self {
        DirtySet {
            full: true,
            dirty: BTreeSet::new(),
            queue: BTreeSet::new(),
            wake_of: HashMap::new(),
        }
    }
}

impl DirtySet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next decision looks at `name`.
    pub fn mark(&mut self, name: &str) {
        if !self.full && !self.dirty.contains(name) {
            self.dirty.insert(name.to_string());
        }
    }

    pub fn mark_all(&mut self) {
        self.full = true;
        self.dirty.clear();
    }

    /// Whether a decision has anything to look at now.
    pub fn pending(&self, now: Timestamp) -> bool {
        self.full || !self.dirty.is_empty() || self.queue.first().is_some_and(|(t, _)| *t <= now)
    }

    /// The earliest queued wake-up.
    pub fn next_wake(&self) -> Option<Timestamp> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// The scope of a decision at `now`: everything marked, and every spec
    /// whose time came. Clears the marks.
    pub fn take(&mut self, now: Timestamp) -> Scope {
        if std::mem::take(&mut self.full) {
            self.dirty.clear();
            return Scope::Full;
        }
        let mut names = std::mem::take(&mut self.dirty);
        while let Some((t, _)) = self.queue.first() {
            if *t > now {
                break;
            }
            let (_, name) = self.queue.pop_first().expect("first");
            self.wake_of.remove(&name);
            names.insert(name);
        }
        Scope::Specs(names)
    }

    /// After a decision over `scope`: the specs' new wake-ups (`wakes`, as
    /// [`reconcile_with_wakes`](super::reconcile_with_wakes) gives them)
    /// replace their old ones.
    pub fn decided(&mut self, scope: &Scope, wakes: &BTreeMap<String, Timestamp>) {
        match scope {
            Scope::Full => {
                self.queue.clear();
                self.wake_of.clear();
                for (name, t) in wakes {
                    self.set_wake(name, *t);
                }
            }
            Scope::Specs(names) => {
                for name in names {
                    if let Some(old) = self.wake_of.remove(name) {
                        self.queue.remove(&(old, name.clone()));
                    }
                    if let Some(t) = wakes.get(name) {
                        self.set_wake(name, *t);
                    }
                }
            }
        }
    }

    fn set_wake(&mut self, name: &str, t: Timestamp) {
        if let Some(old) = self.wake_of.insert(name.to_string(), t) {
            self.queue.remove(&(old, name.to_string()));
        }
        self.queue.insert((t, name.to_string()));
    }

    /// How many specs have a wake-up queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// The specs of `names` that exist in `specs` (a decision over a scope
/// takes these as its specs).
pub fn specs_in(
    specs: &BTreeMap<String, Arc<Spec>>,
    names: &BTreeSet<String>,
) -> BTreeMap<String, Arc<Spec>> {
    names
        .iter()
        .filter_map(|n| specs.get(n).map(|s| (n.clone(), s.clone())))
        .collect()
}
