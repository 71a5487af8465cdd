//! Run identity against the pure core (loader → identity step → reconcile
//! → an in-memory ledger): over random sequences of what people do to a
//! calls directory (write, edit a comment, edit the call, rename, move,
//! truncate, make non-UTF-8, restore, delete, SIGHUP with changed defaults,
//! restart), the number of create requests equals the number of distinct
//! call intents the sequence expressed; and every living cron spec ends with
//! its one planned run, never canceled, and nothing else planned.

mod reconcile_support;

use std::collections::{BTreeMap, BTreeSet};

use calld::config::Defaults;
use calld::identity::{self, Memory};
use calld::ledger::{Ledger, Outcome};
use calld::spec::{Context, Input, load_set};
use proptest::prelude::*;
use reconcile_support::*;
use serde_json::json;

/// One spec file of the model.
#[derive(Debug, Clone)]
struct File {
    /// The call intent: (lineage, subject). Renames keep it.
    lineage: u32,
    subject: u32,
    comment: u32,
    /// Broken (truncated mid-line, or not UTF-8) until restored.
    broken: Option<bool>,
    /// A yearly cron spec (its planned run must never be canceled while
    /// the spec lives) instead of an unscheduled one.
    cron: bool,
}

fn text(f: &File) -> Vec<u8> {
    let full = intent_spec_text(f.lineage, f.subject, f.comment, f.cron);
    match f.broken {
        None => full.into_bytes(),
        Some(false) => cut_mid_flow(&full),
        Some(true) => {
            let mut b = full.into_bytes();
            b.insert(10, 0xff);
            b
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write,
    WriteCron,
    EditComment(usize),
    EditCall(usize),
    Rename(usize),
    Move(usize),
    Truncate(usize),
    NotUtf8(usize),
    Restore(usize),
    Delete(usize),
    Sighup,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Write),
        2 => Just(Op::WriteCron),
        2 => any::<usize>().prop_map(Op::EditComment),
        2 => any::<usize>().prop_map(Op::EditCall),
        2 => any::<usize>().prop_map(Op::Rename),
        2 => any::<usize>().prop_map(Op::Move),
        1 => any::<usize>().prop_map(Op::Truncate),
        1 => any::<usize>().prop_map(Op::NotUtf8),
        2 => any::<usize>().prop_map(Op::Restore),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => Just(Op::Sighup),
        1 => Just(Op::Restart),
    ]
}

/// The daemon around the pure core.
struct Daemon {
    world: World,
    memory: Memory,
    /// What the ledger persists of the memory (`spec_known`).
    persisted: BTreeMap<String, identity::Known>,
    defaults: Defaults,
    public_url: String,
    now: jiff::Timestamp,
    creates: usize,
    calls: u32,
}

impl Daemon {
    fn new() -> Daemon {
        let mut d = Daemon {
            world: World::new(vec![]),
            memory: Memory::default(),
            persisted: BTreeMap::new(),
            defaults: Defaults::default(),
            public_url: "https://bot.example.com/api/calls".into(),
            now: ts("2026-06-01T08:00:00Z"),
            creates: 0,
            calls: 0,
        };
        d.sighup(0);
        d
    }

    fn sighup(&mut self, n: u32) {
        self.defaults.source =
            Some(json!({ "identity": { "application": { "id": format!("app-{n}") } } }));
        self.defaults.tenant_id = Some(format!("tenant-{n}"));
        self.public_url = format!("https://bot{n}.example.com/api/calls");
    }

    fn restart(&mut self) {
        self.world.restart(self.now);
        self.memory = Memory {
            known: self.persisted.clone(),
            vanished: BTreeMap::new(),
        };
    }

    /// A new snapshot of the directory: decide until nothing is left to do.
    fn snapshot(&mut self, files: &BTreeMap<String, File>) {
        self.now = plus(self.now, mins(1));
        let ctx = Context {
            defaults: &self.defaults,
            public_url: Some(&self.public_url),
            now: self.now,
        };
        let bytes: Vec<(String, Vec<u8>)> =
            files.iter().map(|(r, f)| (r.clone(), text(f))).collect();
        let set = load_set(
            bytes.iter().map(|(rel, b)| Input {
                label: format!("/calls/{rel}"),
                rel: rel.clone(),
                bytes: Ok(b.as_slice()),
            }),
            &ctx,
        );
        for _ in 0..5 {
            let mut snap = self.world.snapshot();
            let step = identity::step(
                &self.memory,
                &identity::Input {
                    now: self.now,
                    specs: &set.specs,
                    invalid_names: &set.invalid_names,
                    invalid_files: &set.invalid_files,
                    dir_known: true,
                    unreadable: &[],
                    runs: &snap.runs,
                    latest: &snap.latest,
                    last_slots: &snap.last_slots,
                    prune_after: std::time::Duration::from_secs(300),
                },
            );
            let mut changed = false;
            for r in &step.renames {
                changed |= self
                    .world
                    .ledger
                    .rename_spec(&r.from, &r.to, &r.revision, self.now)
                    .unwrap()
                    .is_some();
            }
            for a in &step.adopt {
                changed |= self
                    .world
                    .ledger
                    .adopt_revision(&a.spec, &a.from, &a.to)
                    .unwrap();
            }
            if changed {
                snap = self.world.snapshot();
            }
            self.memory = step.memory.clone();
            self.persisted = step.memory.known.clone();
            self.world.specs = set.specs.clone();
            self.world.held = step.held.clone();
            let d = self.world.decide_on(&snap, self.now);
            if d.actions.is_empty() {
                break;
            }
            let applied = self.world.apply(&d, self.now);
            for (_, id) in applied.placed {
                self.creates += 1;
                self.calls += 1;
                let call = format!("call-{}", self.calls);
                self.world.answer_placed(&id, &call, self.now);
                self.world.notify(&id, &call, "terminated", self.now);
            }
        }
    }
}

fn pick(files: &BTreeMap<String, File>, i: usize) -> Option<String> {
    (!files.is_empty()).then(|| files.keys().nth(i % files.len()).unwrap().clone())
}

fn run_ops(ops: &[Op]) -> (usize, usize) {
    let mut d = Daemon::new();
    let mut files: BTreeMap<String, File> = BTreeMap::new();
    let mut intents: BTreeSet<(u32, u32)> = BTreeSet::new();
    let (mut lineages, mut subjects, mut comments, mut names, mut hups) =
        (0u32, 0u32, 0u32, 0u32, 0u32);
    let mut deleted_crons = 0usize;
    for op in ops {
        match op {
            Op::Write | Op::WriteCron => {
                lineages += 1;
                subjects += 1;
                names += 1;
                files.insert(
                    format!("spec-{names}.yaml"),
                    File {
                        lineage: lineages,
                        subject: subjects,
                        comment: 0,
                        broken: None,
                        cron: matches!(op, Op::WriteCron),
                    },
                );
            }
            Op::EditComment(i) => {
                if let Some(k) = pick(&files, *i) {
                    comments += 1;
                    files.get_mut(&k).unwrap().comment = comments;
                }
            }
            Op::EditCall(i) => {
                if let Some(k) = pick(&files, *i) {
                    subjects += 1;
                    let f = files.get_mut(&k).unwrap();
                    f.subject = subjects;
                    f.broken = None;
                }
            }
            Op::Rename(i) | Op::Move(i) => {
                if let Some(k) = pick(&files, *i) {
                    names += 1;
                    let new = match op {
                        Op::Rename(_) => format!("renamed-{names}.yaml"),
                        _ => format!("sub{}/moved-{names}.yaml", names % 3),
                    };
                    let f = files.remove(&k).unwrap();
                    files.insert(new, f);
                }
            }
            Op::Truncate(i) | Op::NotUtf8(i) => {
                if let Some(k) = pick(&files, *i) {
                    files.get_mut(&k).unwrap().broken = Some(matches!(op, Op::NotUtf8(_)));
                }
            }
            Op::Restore(i) => {
                if let Some(k) = pick(&files, *i) {
                    files.get_mut(&k).unwrap().broken = None;
                }
            }
            Op::Delete(i) => {
                if let Some(k) = pick(&files, *i) {
                    let f = files.remove(&k).unwrap();
                    deleted_crons += usize::from(f.cron);
                }
            }
            Op::Sighup => {
                hups += 1;
                d.sighup(hups);
            }
            Op::Restart => d.restart(),
        }
        // a broken file expresses no new intent; a valid one expresses its
        // own (a cron spec's yearly run is not due in the window)
        for f in files.values().filter(|f| f.broken.is_none() && !f.cron) {
            intents.insert((f.lineage, f.subject));
        }
        d.snapshot(&files);
    }
    // Every file restored: each living cron spec has its one planned run,
    // never canceled.
    for f in files.values_mut() {
        f.broken = None;
    }
    d.snapshot(&files);
    for (rel, f) in files.iter().filter(|(_, f)| f.cron) {
        let name = rel.strip_suffix(".yaml").unwrap();
        let h = d.world.ledger.history(name, 1000).unwrap();
        let open = h.iter().filter(|r| r.run.outcome.is_none()).count();
        assert_eq!(open, 1, "{name} (lineage {}): {h:?}", f.lineage);
        assert!(
            h.iter().all(|r| r.run.outcome != Some(Outcome::Canceled)),
            "{name}: {h:?}"
        );
    }
    // and nothing else is planned: one run per living cron spec (a spec
    // renamed and edited while broken is a removal and a new spec: the old
    // name's run is canceled, never left planned beside the new one)
    let open = d.world.ledger.open_runs().unwrap();
    let crons = files.values().filter(|f| f.cron).count();
    assert_eq!(open.len(), crons, "deleted {deleted_crons}: {open:?}");
    (d.creates, intents.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn one_create_per_call_intent(ops in proptest::collection::vec(op(), 1..40)) {
        let (creates, intents) = run_ops(&ops);
        prop_assert_eq!(creates, intents, "ops: {:?}", ops);
    }
}

#[test]
fn a_rename_then_a_restart_then_a_move_places_once() {
    use Op::*;
    let (creates, intents) = run_ops(&[Write, Rename(0), Restart, Move(0), Sighup, EditComment(0)]);
    assert_eq!((creates, intents), (1, 1));
}

#[test]
fn an_edit_of_the_call_places_once_more() {
    use Op::*;
    let (creates, intents) = run_ops(&[Write, Sighup, EditCall(0), Truncate(0), Restore(0)]);
    assert_eq!((creates, intents), (2, 2));
}
