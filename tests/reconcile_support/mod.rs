//! Shared by the reconcile tests: spec builders, input snapshots from a real
//! (in-memory) ledger, and an applier for decisions.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use calld::ledger::{
    AttemptResult, CallState, CallStateUpdate, Disposition, Finish, Ledger, Outcome, ResultInfo,
    Run, RunKey, RunProgress, SqliteLedger,
};
use calld::reconcile::{Action, CallMemo, Decision, Input, Settings, reconcile};
use calld::schedule::{Concurrency, CronExpr, Schedule, Trigger};
use calld::spec::model::{
    Call, CallKind, IdentityKind, Media, Modality, Participant, Retry, Spec, Target, roles,
};
use jiff::Timestamp;
use serde_json::Map;

/// A spec file of the identity models: one call intent (lineage, subject;
/// a rename keeps both), a comment to edit without changing the call, and
/// a yearly cron schedule or none.
pub fn intent_spec_text(lineage: u32, subject: u32, comment: u32, cron: bool) -> String {
    let schedule = if cron {
        "schedule: { cron: \"0 0 1 1 *\" }\n"
    } else {
        ""
    };
    format!(
        "# note {comment}\nsubject: call {lineage}-{subject}\n{schedule}targets: [ {{ user: {{ id: u{lineage} }} }} ]\n"
    )
}

/// [`intent_spec_text`] cut in the middle of its flow list: never valid YAML.
pub fn cut_mid_flow(text: &str) -> Vec<u8> {
    text.as_bytes()[..text.len() - 8].to_vec()
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

pub fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap())
        .unwrap()
}

pub fn spec(name: &str, schedule: Option<Schedule>) -> Spec {
    Spec {
        name: name.to_string(),
        file: format!("{name}.yaml"),
        line: 1,
        description: None,
        suspend: false,
        call: Call {
            subject: None,
            tenant_id: None,
            callback_uri: "https://bot.example.com/api/calls".to_string(),
            source: Some(Participant {
                identity: Map::new().into(),
                extra: Map::new().into(),
            }),
            kind: CallKind::Targets(vec![Target {
                kind: IdentityKind::User,
                identity: Map::new().into(),
            }]),
            modalities: vec![Modality::Audio],
            media: Media::ServiceHosted {
                prefetch: Vec::new(),
            },
            chat: None,
        },
        schedule,
        retry: Retry::default(),
        hangup_after: None,
        graph_patch: None,
        revision: format!("rev-{name}-1"),
        permissions: &[roles::INITIATE],
    }
}

pub fn cron(expr: &str) -> Schedule {
    Schedule::new(Trigger::Cron(CronExpr::parse(expr).unwrap()), "UTC").unwrap()
}

pub fn at(t: &str) -> Schedule {
    Schedule::new(Trigger::At(ts(t)), "UTC").unwrap()
}

pub fn with_concurrency(mut s: Schedule, c: Concurrency) -> Schedule {
    s.concurrency = c;
    s
}

/// The daemon's side of the world: specs, the ledger and its memory.
pub struct World {
    pub ledger: SqliteLedger,
    pub specs: BTreeMap<String, Arc<Spec>>,
    pub held: BTreeSet<String>,
    pub calls: BTreeMap<String, CallMemo>,
    pub roles: Option<Vec<String>>,
    pub settings: Settings,
    pub seed: u64,
}

/// A plain copy of what the ledger holds, so an [`Input`] can borrow it.
pub struct Snapshot {
    pub runs: Vec<Run>,
    pub progress: BTreeMap<String, RunProgress>,
    pub latest: BTreeMap<String, Run>,
    pub last_slots: BTreeMap<String, Timestamp>,
}

/// What applying a decision did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Keys marked requesting, in order, with their run ids.
    pub placed: Vec<(RunKey, String)>,
    pub hung_up: Vec<String>,
    pub kept_alive: Vec<String>,
    pub retried: Vec<RunKey>,
}

impl World {
    pub fn new(specs: Vec<Spec>) -> World {
        World {
            ledger: SqliteLedger::open_in_memory().unwrap(),
            specs: specs
                .into_iter()
                .map(|s| (s.name.clone(), Arc::new(s)))
                .collect(),
            held: BTreeSet::new(),
            calls: BTreeMap::new(),
            roles: None,
            settings: Settings::default(),
            seed: 7,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        // as the daemon does: a run waiting out a transient failure carries
        // its earliest next try
        let mut progress = self.ledger.open_run_progress().unwrap();
        for (id, t) in self.ledger.not_before_times().unwrap() {
            progress.entry(id).or_default().not_before = Some(t);
        }
        Snapshot {
            runs: self.ledger.open_runs().unwrap(),
            progress,
            latest: self
                .ledger
                .latest_runs()
                .unwrap()
                .into_iter()
                .map(|r| (r.spec.clone(), r))
                .collect(),
            last_slots: self.ledger.last_slots().unwrap(),
        }
    }

    pub fn decide(&self, now: Timestamp) -> Decision {
        let snap = self.snapshot();
        self.decide_on(&snap, now)
    }

    pub fn decide_on(&self, snap: &Snapshot, now: Timestamp) -> Decision {
        let input = Input {
            now,
            specs: &self.specs,
            held: &self.held,
            runs: &snap.runs,
            progress: &snap.progress,
            latest: &snap.latest,
            last_slots: &snap.last_slots,
            calls: &self.calls,
            granted_roles: self.roles.as_deref(),
            jitter_seed: self.seed,
            settings: self.settings,
        };
        reconcile(&input)
    }

    /// Applies the actions as the daemon does. Panics on any refused ledger
    /// call: a correct decision never asks for one.
    pub fn apply(&mut self, decision: &Decision, now: Timestamp) -> Applied {
        let mut applied = Applied::default();
        for action in &decision.actions {
            match action {
                Action::Insert { run } => {
                    let ins = self.ledger.insert_run(run, now).unwrap();
                    assert!(ins.created, "insert of an existing key {:?}", run.key);
                }
                Action::Record {
                    run,
                    outcome,
                    reason,
                } => {
                    let ins = self.ledger.insert_run(run, now).unwrap();
                    assert!(ins.created, "record of an existing key {:?}", run.key);
                    self.ledger
                        .finish(&ins.run.id, &Finish::new(*outcome).reason(reason), now)
                        .unwrap();
                }
                Action::Finish {
                    id,
                    outcome,
                    reason,
                    ..
                } => {
                    self.ledger
                        .finish(id, &Finish::new(*outcome).reason(reason), now)
                        .unwrap_or_else(|e| panic!("finish {outcome}: {e}"));
                    self.calls.remove(id);
                }
                Action::Retry {
                    id,
                    key,
                    due,
                    reason,
                } => {
                    self.ledger.retry_later(id, *due, reason, now).unwrap();
                    self.calls.remove(id);
                    applied.retried.push(key.clone());
                }
                Action::HangUp { id, .. } => {
                    self.calls
                        .entry(id.clone())
                        .or_default()
                        .hangup_requested_at = Some(now);
                    applied.hung_up.push(id.clone());
                }
                Action::KeepAlive { id, .. } => {
                    self.calls.entry(id.clone()).or_default().last_keep_alive = Some(now);
                    applied.kept_alive.push(id.clone());
                }
                Action::Place { id, key } => {
                    let id = match id {
                        Some(id) => id.clone(),
                        None => self.ledger.run_by_key(key).unwrap().expect("inserted").id,
                    };
                    self.ledger
                        .mark_requesting(&id, None, now)
                        .unwrap_or_else(|e| panic!("place {key:?}: {e}"));
                    applied.placed.push((key.clone(), id));
                }
            }
        }
        applied
    }

    /// What a restart does: runs left `requesting` become `unknown` (as
    /// `SqliteLedger::open` does) and the daemon's memory is gone.
    pub fn restart(&mut self, now: Timestamp) {
        for run in self.ledger.open_runs().unwrap() {
            if run.state == calld::ledger::RunState::Requesting {
                self.ledger
                    .finish(
                        &run.id,
                        &Finish::new(Outcome::Unknown).reason("restart"),
                        now,
                    )
                    .unwrap();
            }
        }
        self.calls.clear();
    }

    /// The request of `id` was answered 201 with `call`.
    pub fn answer_placed(&mut self, id: &str, call: &str, now: Timestamp) {
        self.ledger
            .finish_attempt(
                id,
                last_attempt(&self.ledger, id),
                &AttemptResult::new(Disposition::Placed),
                now,
            )
            .unwrap();
        self.ledger.mark_placed(id, call, now).unwrap();
    }

    /// The request of `id` ended with `disposition` (not placed).
    pub fn answer(&mut self, id: &str, disposition: Disposition, now: Timestamp) {
        self.ledger
            .finish_attempt(
                id,
                last_attempt(&self.ledger, id),
                &AttemptResult::new(disposition),
                now,
            )
            .unwrap();
    }

    pub fn notify(&mut self, id: &str, call: &str, state: &str, now: Timestamp) {
        let result_info = (state == "terminated").then_some(ResultInfo {
            code: Some(200),
            subcode: Some(5001),
            message: None,
        });
        self.ledger
            .record_call_state(
                id,
                &CallStateUpdate {
                    state: CallState::from(state),
                    call_id: Some(call.to_string()),
                    result_info,
                },
                now,
            )
            .unwrap();
    }

    pub fn run(&self, key: &RunKey) -> Run {
        self.ledger.run_by_key(key).unwrap().expect("run exists")
    }

    pub fn outcomes(&self, spec: &str) -> Vec<(RunKey, Option<Outcome>)> {
        let mut v: Vec<_> = self
            .ledger
            .history(spec, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| (r.run.key(), r.run.outcome))
            .collect();
        v.reverse();
        v
    }
}

fn last_attempt(ledger: &SqliteLedger, id: &str) -> u32 {
    ledger
        .attempts(id)
        .unwrap()
        .last()
        .expect("an attempt")
        .number
}

pub fn places(d: &Decision) -> Vec<&RunKey> {
    d.actions
        .iter()
        .filter_map(|a| match a {
            Action::Place { key, .. } => Some(key),
            _ => None,
        })
        .collect()
}

pub fn finishes(d: &Decision) -> Vec<(&RunKey, Outcome, &str)> {
    d.actions
        .iter()
        .filter_map(|a| match a {
            Action::Finish {
                key,
                outcome,
                reason,
                ..
            } => Some((key, *outcome, reason.as_str())),
            Action::Record {
                run,
                outcome,
                reason,
            } => Some((&run.key, *outcome, reason.as_str())),
            _ => None,
        })
        .collect()
}
