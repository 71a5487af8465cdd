//! The daemon's side of [`crate::identity`]: runs the pure step before each
//! decision, applies renames and re-keys to the ledger, keeps the memory
//! (persisted in the ledger) and logs what it means.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::dirty::OpenCache;
use super::{Controller, with_ledger};
use crate::identity::{self, Memory};
use crate::ledger::Run;

/// What the last identity step saw, for the next one to look only at what
/// changed since (identity::step_since).
pub(crate) struct LastStep {
    held: BTreeSet<String>,
    invalid_files: BTreeSet<String>,
    unreadable: Vec<String>,
    /// Every rename and re-key it asked for was applied.
    clean: bool,
}

/// What the identity step leaves for the decision.
pub(crate) struct IdentityView {
    /// Names whose runs are held.
    pub held: BTreeSet<String>,
    /// When a mass hold ends.
    pub wake_at: Option<Timestamp>,
    /// Whether the ledger changed (renames, re-keys): read it again.
    pub ledger_changed: bool,
}

impl Controller {
    /// One identity step over the current snapshot and ledger state.
    pub(crate) async fn identity_step(
        &mut self,
        now: Timestamp,
        open: &OpenCache,
    ) -> anyhow::Result<IdentityView> {
        // Only a new snapshot (or the end of a mass hold) changes the step.
        if let Some((generation, held, wake_at)) = &self.identity_cache
            && *generation == self.snapshot_gen
            && wake_at.is_none_or(|w| now < w)
        {
            return Ok(IdentityView {
                held: held.clone(),
                wake_at: *wake_at,
                ledger_changed: false,
            });
        }
        if self.identity.is_none() {
            let known = with_ledger(&self.rt.ledger, |l| l.known_specs()).await?;
            self.identity = Some(identity::Tracked::new(Memory {
                known,
                vanished: BTreeMap::new(),
            }));
        }
        let tracked = self.identity.take().unwrap_or_default();
        // Only the names that changed since the last step, when nothing
        // else did (identity::step_since); else every name.
        let touched = std::mem::take(&mut self.ident_touched);
        let scoped = self.ident_last.as_ref().filter(|last| {
            self.dir_known
                && last.clean
                && last.invalid_files == self.specs.invalid_files
                && last.unreadable == self.unreadable
        });
        // a scoped step needs the open runs of the names it looks at only
        // (each name once: a name both touched and held has its runs once)
        let scoped_runs: Option<Vec<Run>> = scoped.map(|last| {
            let names: BTreeSet<&String> = touched
                .iter()
                .chain(&last.held)
                .chain(tracked.memory().vanished.keys())
                .collect();
            open.runs_of(names)
        });
        let input = identity::Input {
            now,
            specs: &self.specs.specs,
            invalid_names: &self.specs.invalid_names,
            invalid_files: &self.specs.invalid_files,
            dir_known: self.dir_known,
            unreadable: &self.unreadable,
            runs: scoped_runs.as_deref().unwrap_or(&open.state.runs),
            latest: &open.state.latest,
            last_slots: &open.state.last_slots,
            prune_after: self.rt.config.daemon.prune_after,
        };
        let step_started = std::time::Instant::now();
        let (step, scoped) = match scoped {
            Some(last) => {
                let since = identity::Since {
                    names: &touched,
                    held: &last.held,
                };
                (identity::step_since(&tracked, &input, &since), true)
            }
            None => (identity::step_all(&tracked, &input), false),
        };
        let step_ms = step_started.elapsed().as_secs_f64() * 1e3;
        let mut clean = true;
        let mut changed = false;
        for r in &step.renames {
            let (from, to, rev) = (r.from.clone(), r.to.clone(), r.revision.clone());
            match with_ledger(&self.rt.ledger, move |l| {
                l.rename_spec(&from, &to, &rev, now)
            })
            .await
            {
                Ok(Some(n)) => {
                    changed = true;
                    tracing::info!(from = %r.from, to = %r.to, runs = n, "spec renamed: its runs and history move to the new name; nothing is placed again");
                }
                Ok(None) => {
                    tracing::warn!(from = %r.from, to = %r.to, "spec looks renamed, but the new name has runs already: histories are not merged")
                }
                Err(e) => {
                    clean = false;
                    tracing::warn!(from = %r.from, to = %r.to, error = %e, "cannot record a rename")
                }
            }
        }
        for a in &step.adopt {
            let (spec, from, to) = (a.spec.clone(), a.from.clone(), a.to.clone());
            match with_ledger(&self.rt.ledger, move |l| {
                l.adopt_revision(&spec, &from, &to)
            })
            .await
            {
                Ok(true) => {
                    changed = true;
                    tracing::info!(spec = %a.spec, old = %a.from, new = %a.to, "run recorded under the old revision format kept as this revision's run (upgrade)");
                }
                Ok(false) => {}
                Err(e) => {
                    clean = false;
                    tracing::warn!(spec = %a.spec, error = %e, "cannot re-key a run to the new revision format")
                }
            }
        }
        if let Some(m) = &step.mass {
            tracing::error!(
                vanished = m.vanished,
                known = m.known,
                prune_at = %m.prune_at,
                "MASS DISAPPEARANCE: {} of {} specs vanished at once (a bad commit, an unmounted volume?); their runs are HELD, not canceled, until {} (daemon.pruneAfter); restore the files, or set daemon.pruneAfter: 0s and send SIGHUP to confirm the removal now",
                m.vanished,
                m.known,
                m.prune_at
            );
        }
        if !step.pruned.is_empty() {
            tracing::warn!(
                specs = step.pruned.len(),
                "specs gone for daemon.pruneAfter are removed now: their planned runs are canceled"
            );
        }
        if self.dir_known && !step.known.is_empty() {
            let old = &tracked.memory().known;
            let before: BTreeMap<String, identity::Known> = step
                .known
                .keys()
                .filter_map(|n| old.get(n).map(|k| (n.clone(), k.clone())))
                .collect();
            let after: BTreeMap<String, identity::Known> = step
                .known
                .iter()
                .filter_map(|(n, k)| k.clone().map(|k| (n.clone(), k)))
                .collect();
            // saved in the decision's first batch, with the runs it inserts
            // (one commit for a new spec's memory and its first run); a
            // step's save still waiting (its decision wrote nothing since)
            // is written first
            self.save_pending_known().await;
            self.pending_known = Some(crate::ledger::Write::Known { before, after });
        }
        let mut tracked = tracked;
        if self.dir_known {
            tracked.apply(&step);
        }
        tracing::debug!(
            scoped,
            step_ms,
            total_ms = step_started.elapsed().as_secs_f64() * 1e3,
            names = touched.len(),
            changed = step.known.len(),
            held = step.held.len(),
            "identity step"
        );
        let why_held = held_reasons(&step.held, tracked.memory(), &self.specs, self.dir_known);
        self.identity = Some(tracked);
        self.ident_last = self.dir_known.then(|| LastStep {
            held: step.held.clone(),
            invalid_files: self.specs.invalid_files.clone(),
            unreadable: self.unreadable.clone(),
            clean,
        });
        if why_held != self.held_now {
            self.held_now = why_held;
            self.write_specs_report();
        }
        self.identity_cache = Some((self.snapshot_gen, step.held.clone(), step.wake_at));
        Ok(IdentityView {
            held: step.held,
            wake_at: step.wake_at,
            ledger_changed: changed,
        })
    }
}

/// Why each held name is held, for `calld status` and `/v1/specs`.
fn held_reasons(
    held: &BTreeSet<String>,
    memory: &Memory,
    set: &crate::spec::SpecSet,
    dir_known: bool,
) -> BTreeMap<String, String> {
    // the first error of each spec and of each file (one pass: thousands
    // of held names must not each walk thousands of findings)
    let mut by_spec: BTreeMap<&str, &crate::spec::Diagnostic> = BTreeMap::new();
    let mut by_file: BTreeMap<&str, &crate::spec::Diagnostic> = BTreeMap::new();
    for d in set.diagnostics.iter().filter(|d| d.is_error()) {
        if let Some(spec) = d.spec.as_deref() {
            by_spec.entry(spec).or_insert(d);
        }
        by_file.entry(d.file.as_str()).or_insert(d);
    }
    held.iter()
        .map(|name| {
            let file = memory.known.get(name).map(|k| k.file.as_str());
            let error = by_spec
                .get(name.as_str())
                .or_else(|| file.and_then(|f| by_file.get(f)));
            let reason = if !dir_known {
                "the calls directory has not been read yet".to_string()
            } else if let Some(since) = memory.vanished.get(name) {
                format!("vanished with many others at {since}: held until daemon.pruneAfter passes")
            } else if let Some(d) = error {
                format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message)
            } else {
                "its file has errors".to_string()
            };
            (name.clone(), reason)
        })
        .collect()
}
