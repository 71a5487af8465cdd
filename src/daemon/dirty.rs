//! The controller's side of deciding only what changed (issue 12, item 2):
//! an in-memory copy of the ledger's open state, refreshed spec by spec
//! from the ledger (which stays the only durable memory: the copy is read
//! whole at start), and the bookkeeping that marks specs dirty.
//!
//! A decision reads (and decides) the specs of its
//! [`Scope`](crate::reconcile::scoped::Scope): the specs marked since the
//! last decision and those whose queued time came. Every ledger change of
//! a spec's runs marks the spec: a decision's own actions, a request's
//! result, a call operation, a notification, a trigger, a note on waiting
//! runs. Whatever else changes the input of every spec (the token's
//! state, the configuration, a rename) makes the next decision a full one.

use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;

use super::{Controller, with_ledger};
use crate::ledger::{self, OpenState, Run, RunState};
use crate::reconcile::Action;
use crate::reconcile::scoped::Scope;

/// The open runs as the ledger had them at each spec's last read, with
/// what a decision of one spec needs found without a walk over all of
/// them (at 100,000 specs a walk per decision was most of its cost).
#[derive(Debug, Default)]
pub(crate) struct OpenCache {
    /// Every open run (in no particular order) with
    /// [`OpenState::runs`]' companions below.
    pub(crate) state: OpenState,
    /// Run id → its position in `state.runs`.
    pos: HashMap<String, usize>,
    /// Spec name → the positions of its runs in `state.runs`.
    by_spec: HashMap<String, Vec<usize>>,
    /// (due time, run id) of every `scheduled` run: the next one for the
    /// status line.
    scheduled: BTreeSet<(Timestamp, String)>,
    /// How many runs have a call up (placed, establishing, established).
    up: usize,
}

fn is_up(state: RunState) -> bool {
    matches!(
        state,
        RunState::Placed | RunState::Establishing | RunState::Established
    )
}

impl OpenCache {
    pub(crate) fn spec_of(&self, run: &str) -> Option<&str> {
        self.run(run).map(|r| r.spec.as_str())
    }

    pub(crate) fn due_of(&self, run: &str) -> Option<Timestamp> {
        self.run(run).map(|r| r.due_at)
    }

    pub(crate) fn has_run(&self, run: &str) -> bool {
        self.pos.contains_key(run)
    }

    fn run(&self, id: &str) -> Option<&Run> {
        self.pos.get(id).map(|&i| &self.state.runs[i])
    }

    /// The open runs of `names` (copies, for a step that looks at them only).
    pub(crate) fn runs_of<'a>(&'a self, names: impl IntoIterator<Item = &'a String>) -> Vec<Run> {
        names
            .into_iter()
            .filter_map(|n| self.by_spec.get(n))
            .flatten()
            .map(|&i| self.state.runs[i].clone())
            .collect()
    }

    /// How many calls are up, and the next scheduled run (due time, spec).
    pub(crate) fn summary(&self) -> (usize, Option<(Timestamp, &str)>) {
        let next = self
            .scheduled
            .first()
            .and_then(|(t, id)| self.spec_of(id).map(|s| (*t, s)));
        (self.up, next)
    }

    fn note(&mut self, i: usize) {
        let r = &self.state.runs[i];
        self.pos.insert(r.id.clone(), i);
        self.by_spec.entry(r.spec.clone()).or_default().push(i);
        if r.state == RunState::Scheduled {
            self.scheduled.insert((r.due_at, r.id.clone()));
        }
        if is_up(r.state) {
            self.up += 1;
        }
    }

    /// Takes the run at `i` out (the last run moves to `i`).
    fn take(&mut self, i: usize) -> Run {
        let r = self.state.runs.swap_remove(i);
        self.pos.remove(&r.id);
        if r.state == RunState::Scheduled {
            self.scheduled.remove(&(r.due_at, r.id.clone()));
        }
        if is_up(r.state) {
            self.up -= 1;
        }
        let last = self.state.runs.len();
        if i < last {
            let moved = &self.state.runs[i];
            self.pos.insert(moved.id.clone(), i);
            if let Some(at) = self
                .by_spec
                .get_mut(&moved.spec)
                .and_then(|v| v.iter_mut().find(|p| **p == last))
            {
                *at = i;
            }
        }
        r
    }

    fn replace_all(&mut self, state: OpenState) {
        self.state = state;
        self.pos.clear();
        self.by_spec.clear();
        self.scheduled.clear();
        self.up = 0;
        for i in 0..self.state.runs.len() {
            self.note(i);
        }
    }

    /// The part about `names` becomes `part` (read for exactly these names).
    fn replace_specs(&mut self, names: &BTreeSet<String>, part: &OpenState) {
        for name in names {
            let Some(mut at) = self.by_spec.remove(name) else {
                continue;
            };
            // highest first: a swap_remove moves only runs behind the ones
            // still to take
            at.sort_unstable_by(|a, b| b.cmp(a));
            for i in at {
                let r = self.take(i);
                self.state.progress.remove(&r.id);
                self.state.promises.remove(&r.id);
            }
        }
        for r in &part.runs {
            self.state.runs.push(r.clone());
            self.note(self.state.runs.len() - 1);
        }
        let s = &mut self.state;
        s.progress
            .extend(part.progress.iter().map(|(k, v)| (k.clone(), v.clone())));
        s.promises
            .extend(part.promises.iter().map(|(k, v)| (k.clone(), *v)));
        for name in names {
            match part.latest.get(name) {
                Some(r) => s.latest.insert(name.clone(), r.clone()),
                None => s.latest.remove(name),
            };
            match part.last_slots.get(name) {
                Some(t) => s.last_slots.insert(name.clone(), *t),
                None => s.last_slots.remove(name),
            };
        }
    }

    /// Checks the indexes against the runs (tests).
    #[cfg(test)]
    fn check(&self) {
        assert_eq!(self.pos.len(), self.state.runs.len());
        for (i, r) in self.state.runs.iter().enumerate() {
            assert_eq!(self.pos[&r.id], i);
            assert!(self.by_spec[&r.spec].contains(&i));
        }
        assert_eq!(
            self.by_spec.values().map(Vec::len).sum::<usize>(),
            self.state.runs.len()
        );
        let scheduled = self
            .state
            .runs
            .iter()
            .filter(|r| r.state == RunState::Scheduled)
            .count();
        assert_eq!(self.scheduled.len(), scheduled);
        let up = self.state.runs.iter().filter(|r| is_up(r.state)).count();
        assert_eq!(self.up, up);
    }
}

/// The spec an action is about.
pub(crate) fn action_spec(a: &Action) -> &str {
    match a {
        Action::Insert { run } | Action::Record { run, .. } => &run.key.spec,
        Action::Finish { key, .. }
        | Action::Retry { key, .. }
        | Action::HangUp { key, .. }
        | Action::KeepAlive { key, .. }
        | Action::Place { key, .. } => &key.spec,
    }
}

impl Controller {
    /// Reads the open state of `scope` from the ledger and brings the copy
    /// up to date with it. Returns the scope's part (all of it for a full
    /// scope: then `None`, read it from the copy).
    pub(crate) async fn read_scope(&mut self, scope: &Scope) -> ledger::Result<Option<OpenState>> {
        match scope {
            Scope::Full => {
                let state = with_ledger(&self.rt.ledger, |l| l.open_state()).await?;
                self.cache.replace_all(state);
                Ok(None)
            }
            Scope::Specs(names) => {
                let asked = names.clone();
                let part = if asked.is_empty() {
                    OpenState::default()
                } else {
                    with_ledger(&self.rt.ledger, move |l| l.open_state_of(&asked)).await?
                };
                self.cache.replace_specs(names, &part);
                Ok(Some(part))
            }
        }
    }

    /// A run's ledger rows changed outside a decision: its spec is decided
    /// again (all specs when the run is not known yet).
    pub(crate) async fn run_changed(&mut self, run: &str) {
        if let Some(spec) = self.cache.spec_of(run) {
            let spec = spec.to_string();
            self.dirty.mark(&spec);
            return;
        }
        // inserted since the copy was read: the ledger knows its spec
        let id = run.to_string();
        match with_ledger(&self.rt.ledger, move |l| l.run(&id)).await {
            Ok(Some(r)) => self.dirty.mark(&r.spec),
            _ => self.dirty.mark_all(),
        }
    }

    /// What the decision's inputs other than specs and runs were; a change
    /// makes the next decision a full one.
    pub(crate) fn note_globals(&mut self, key: String) {
        if self.globals_key.as_deref() != Some(key.as_str()) {
            self.globals_key = Some(key);
            self.dirty.mark_all();
        }
    }

    /// Held names changed: those that changed are decided again.
    pub(crate) fn held_changed(&mut self, held: &BTreeSet<String>) -> BTreeSet<String> {
        let changed: BTreeSet<String> = held
            .symmetric_difference(&self.last_held)
            .cloned()
            .collect();
        self.last_held = held.clone();
        changed
    }
}

impl Controller {
    /// The loaded spec set after an update of the loader, made from the
    /// last one by changing only the `touched` names (no copy of the whole
    /// set), and the old entries of those names (for the load's log line).
    pub(crate) fn patch_specs(
        &mut self,
        touched: &BTreeSet<String>,
    ) -> (crate::spec::SpecSet, crate::spec::SpecSet) {
        let new = self.loader.set();
        let mut set = std::mem::take(&mut self.specs);
        let mut old = crate::spec::SpecSet::default();
        for name in touched {
            if let Some(s) = set.specs.remove(name) {
                old.specs.insert(name.clone(), s);
            }
            if set.invalid_names.remove(name) {
                old.invalid_names.insert(name.clone());
            }
            if let Some(s) = new.specs.get(name) {
                set.specs.insert(name.clone(), s.clone());
            }
            if new.invalid_names.contains(name) {
                set.invalid_names.insert(name.clone());
            }
        }
        set.diagnostics.clone_from(&new.diagnostics);
        set.invalid_files.clone_from(&new.invalid_files);
        set.file_count = new.file_count;
        #[cfg(debug_assertions)]
        {
            let names = |s: &crate::spec::SpecSet| -> Vec<(String, String, bool)> {
                s.specs
                    .values()
                    .map(|s| (s.name.clone(), s.revision.clone(), s.suspend))
                    .collect()
            };
            debug_assert_eq!(names(&set), names(new), "patched spec set");
            debug_assert_eq!(
                set.invalid_names, new.invalid_names,
                "patched invalid names"
            );
        }
        (old, set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(id: usize, spec: usize, state: RunState, due: i64) -> Run {
        let t = Timestamp::from_second(1_800_000_000 + due).unwrap();
        Run::sample(format!("r{id}"), format!("s{spec}"), state, t)
    }

    /// Random replacements of specs' runs keep the indexes true, and the
    /// copy holds exactly the runs last given for each spec.
    #[test]
    fn replacing_specs_keeps_the_indexes_in_step() {
        let states = [
            RunState::Scheduled,
            RunState::Requesting,
            RunState::Placed,
            RunState::Established,
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        let mut want: BTreeMap<String, Vec<Run>> = BTreeMap::new();
        let mut id = 0;
        let mut all = Vec::new();
        for spec in 0..20 {
            for _ in 0..next(3) {
                let r = run(id, spec, states[next(4) as usize], next(100) as i64);
                id += 1;
                want.entry(r.spec.clone()).or_default().push(r.clone());
                all.push(r);
            }
        }
        let mut cache = OpenCache::default();
        cache.replace_all(OpenState {
            runs: all,
            ..OpenState::default()
        });
        cache.check();
        for _ in 0..500 {
            let names: BTreeSet<String> =
                (0..1 + next(4)).map(|_| format!("s{}", next(25))).collect();
            let mut part = OpenState::default();
            for name in &names {
                let spec: usize = name[1..].parse().unwrap();
                let runs: Vec<Run> = (0..next(4))
                    .map(|_| {
                        id += 1;
                        run(id, spec, states[next(4) as usize], next(100) as i64)
                    })
                    .collect();
                part.runs.extend(runs.iter().cloned());
                want.insert(name.clone(), runs);
            }
            cache.replace_specs(&names, &part);
            cache.check();
            let mut got: Vec<&str> = cache.state.runs.iter().map(|r| r.id.as_str()).collect();
            let mut expected: Vec<&str> = want.values().flatten().map(|r| r.id.as_str()).collect();
            got.sort_unstable();
            expected.sort_unstable();
            assert_eq!(got, expected);
            let (up, next_run) = cache.summary();
            let runs = want.values().flatten();
            assert_eq!(up, runs.clone().filter(|r| is_up(r.state)).count());
            let first = runs
                .filter(|r| r.state == RunState::Scheduled)
                .map(|r| (r.due_at, r.id.clone()))
                .min();
            assert_eq!(next_run.map(|n| n.0), first.map(|f| f.0));
            for name in want.keys() {
                let mut of: Vec<String> = cache.runs_of([name]).into_iter().map(|r| r.id).collect();
                of.sort();
                let mut w: Vec<String> = want[name].iter().map(|r| r.id.clone()).collect();
                w.sort();
                assert_eq!(of, w, "{name}");
            }
        }
    }
}
