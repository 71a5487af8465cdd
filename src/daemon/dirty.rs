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
use crate::ledger::{self, OpenState};
use crate::reconcile::Action;
use crate::reconcile::scoped::Scope;

/// The open runs as the ledger had them at each spec's last read.
#[derive(Debug, Default)]
pub(crate) struct OpenCache {
    pub(crate) state: OpenState,
    /// Run id → (spec, due time) of every open run.
    index: HashMap<String, (String, Timestamp)>,
}

impl OpenCache {
    pub(crate) fn spec_of(&self, run: &str) -> Option<&str> {
        self.index.get(run).map(|(s, _)| s.as_str())
    }

    pub(crate) fn due_of(&self, run: &str) -> Option<Timestamp> {
        self.index.get(run).map(|(_, t)| *t)
    }

    pub(crate) fn has_run(&self, run: &str) -> bool {
        self.index.contains_key(run)
    }

    fn replace_all(&mut self, state: OpenState) {
        self.index = state
            .runs
            .iter()
            .map(|r| (r.id.clone(), (r.spec.clone(), r.due_at)))
            .collect();
        self.state = state;
    }

    /// The part about `names` becomes `part` (read for exactly these names).
    fn replace_specs(&mut self, names: &BTreeSet<String>, part: &OpenState) {
        let s = &mut self.state;
        let index = &mut self.index;
        s.runs.retain(|r| {
            let gone = names.contains(&r.spec);
            if gone {
                index.remove(&r.id);
                s.progress.remove(&r.id);
                s.promises.remove(&r.id);
            }
            !gone
        });
        for r in &part.runs {
            index.insert(r.id.clone(), (r.spec.clone(), r.due_at));
        }
        s.runs.extend(part.runs.iter().cloned());
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
