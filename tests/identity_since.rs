//! The incremental identity step (`identity::step_since`, issue 12) makes
//! the same decisions as the full one (`identity::step`) over random
//! sequences of what people do to a calls directory: write, edit, rename,
//! move, break, restore, delete one file or many at once (a mass
//! disappearance), make a folder unreadable and readable again, let time
//! pass beyond `pruneAfter`. At every snapshot both steps run on the same
//! input; the incremental one is told only the names whose spec or invalid
//! mark changed (the least the daemon's loader tells it) and the names the
//! last step held, and its memory is kept only by its own deltas.

mod reconcile_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use calld::config::Defaults;
use calld::identity::{self, Memory, Tracked};
use calld::spec::{Context, Input, SpecSet, load_set};
use jiff::Timestamp;
use proptest::prelude::*;
use reconcile_support::{cut_mid_flow, intent_spec_text};

#[derive(Debug, Clone)]
struct File {
    lineage: u32,
    subject: u32,
    comment: u32,
    broken: bool,
    cron: bool,
}

fn text(f: &File) -> Vec<u8> {
    let full = intent_spec_text(f.lineage, f.subject, f.comment, f.cron);
    if f.broken {
        cut_mid_flow(&full)
    } else {
        full.into_bytes()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(u8),
    EditComment(usize),
    EditCall(usize),
    Rename(usize),
    Move(usize),
    Break(usize),
    Restore(usize),
    Delete(usize),
    /// Deletes every file but a few: a mass disappearance.
    DeleteMost,
    /// Puts back what the last DeleteMost removed.
    Undelete,
    ToggleUnreadable,
    /// Time passes (beyond `pruneAfter` when long).
    Wait(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..15).prop_map(Op::Write),
        2 => any::<usize>().prop_map(Op::EditComment),
        2 => any::<usize>().prop_map(Op::EditCall),
        2 => any::<usize>().prop_map(Op::Rename),
        2 => any::<usize>().prop_map(Op::Move),
        1 => any::<usize>().prop_map(Op::Break),
        2 => any::<usize>().prop_map(Op::Restore),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => Just(Op::DeleteMost),
        1 => Just(Op::Undelete),
        1 => Just(Op::ToggleUnreadable),
        1 => any::<bool>().prop_map(Op::Wait),
    ]
}

/// What the identity step sees of a spec set, per name.
fn view(set: &SpecSet) -> BTreeMap<String, (String, String, bool)> {
    set.specs
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                (s.revision.clone(), s.file.clone(), s.schedule.is_some()),
            )
        })
        .collect()
}

struct Last {
    view: BTreeMap<String, (String, String, bool)>,
    invalid_names: BTreeSet<String>,
    invalid_files: BTreeSet<String>,
    unreadable: Vec<String>,
    held: BTreeSet<String>,
}

struct Model {
    files: BTreeMap<String, File>,
    stash: BTreeMap<String, File>,
    unreadable: bool,
    now: Timestamp,
    /// The ledger, as far as identity looks at it: names with a slot.
    slots: BTreeMap<String, Timestamp>,
    memory: Memory,
    tracked: Tracked,
    last: Option<Last>,
    scoped_steps: usize,
}

const PRUNE_AFTER: Duration = Duration::from_secs(600);

impl Model {
    fn snapshot(&mut self) {
        let defaults = Defaults::default();
        let ctx = Context {
            defaults: &defaults,
            public_url: Some("https://bot.example.com/api/calls"),
            now: self.now,
        };
        let visible: Vec<(String, Vec<u8>)> = self
            .files
            .iter()
            .filter(|(rel, _)| !(self.unreadable && rel.starts_with("sub1/")))
            .map(|(r, f)| (r.clone(), text(f)))
            .collect();
        let set = load_set(
            visible.iter().map(|(rel, b)| Input {
                label: format!("/calls/{rel}"),
                rel: rel.clone(),
                bytes: Ok(b.as_slice()),
            }),
            &ctx,
        );
        let unreadable: Vec<String> = if self.unreadable {
            vec!["/calls/sub1".to_string()]
        } else {
            vec![]
        };
        let input = identity::Input {
            now: self.now,
            specs: &set.specs,
            invalid_names: &set.invalid_names,
            invalid_files: &set.invalid_files,
            dir_known: true,
            unreadable: &unreadable,
            runs: &[],
            latest: &BTreeMap::new(),
            last_slots: &self.slots,
            prune_after: PRUNE_AFTER,
        };
        let full = identity::step(&self.memory, &input);
        let all = identity::step_all(&self.tracked, &input);
        same("step_all", &full, &all);
        let view_now = view(&set);
        let delta = match &self.last {
            Some(last)
                if last.invalid_files == set.invalid_files && last.unreadable == unreadable =>
            {
                // the names whose spec or invalid mark changed, no more
                let mut names: BTreeSet<String> = BTreeSet::new();
                for (n, v) in &view_now {
                    if last.view.get(n) != Some(v) {
                        names.insert(n.clone());
                    }
                }
                names.extend(
                    last.view
                        .keys()
                        .filter(|n| !view_now.contains_key(*n))
                        .cloned(),
                );
                names.extend(
                    last.invalid_names
                        .symmetric_difference(&set.invalid_names)
                        .cloned(),
                );
                let d = identity::step_since(
                    &self.tracked,
                    &input,
                    &identity::Since {
                        names: &names,
                        held: &last.held,
                    },
                );
                self.scoped_steps += 1;
                same("step_since", &full, &d);
                d
            }
            _ => all,
        };
        self.tracked.apply(&delta);
        assert_eq!(
            self.tracked.memory(),
            &full.memory,
            "the memory kept by deltas"
        );
        // the ledger follows the renames
        for r in &full.renames {
            if let Some(t) = self.slots.remove(&r.from) {
                self.slots.insert(r.to.clone(), t);
            }
        }
        // every valid spec not held gets a slot (a run)
        for name in set.specs.keys() {
            if !full.held.contains(name) {
                self.slots.entry(name.clone()).or_insert(self.now);
            }
        }
        self.memory = full.memory.clone();
        self.last = Some(Last {
            view: view_now,
            invalid_names: set.invalid_names.clone(),
            invalid_files: set.invalid_files.clone(),
            unreadable,
            held: full.held.clone(),
        });
    }
}

fn same(what: &str, full: &identity::Step, d: &identity::Delta) {
    assert_eq!(full.renames, d.renames, "{what}: renames");
    assert_eq!(full.adopt, d.adopt, "{what}: adopt");
    assert_eq!(full.held, d.held, "{what}: held");
    assert_eq!(full.mass, d.mass, "{what}: mass");
    assert_eq!(full.pruned, d.pruned, "{what}: pruned");
    assert_eq!(full.wake_at, d.wake_at, "{what}: wake_at");
    assert_eq!(full.memory.vanished, d.vanished, "{what}: vanished");
}

fn pick(files: &BTreeMap<String, File>, i: usize) -> Option<String> {
    (!files.is_empty()).then(|| files.keys().nth(i % files.len()).unwrap().clone())
}

fn run(ops: &[Op]) -> usize {
    let mut m = Model {
        files: BTreeMap::new(),
        stash: BTreeMap::new(),
        unreadable: false,
        now: "2026-06-01T08:00:00Z".parse().unwrap(),
        slots: BTreeMap::new(),
        memory: Memory::default(),
        tracked: Tracked::default(),
        last: None,
        scoped_steps: 0,
    };
    let mut counter = 0u32;
    for op in ops {
        counter += 1;
        match op {
            Op::Write(n) => {
                for i in 0..*n {
                    let dir = ["", "sub1/", "sub2/"][(counter + u32::from(i)) as usize % 3];
                    m.files.insert(
                        format!("{dir}spec-{counter}-{i}.yaml"),
                        File {
                            // a few share a lineage: identical specs move together
                            lineage: counter * 100 + u32::from(i) % 4,
                            subject: 0,
                            comment: 0,
                            broken: false,
                            cron: i % 2 == 0,
                        },
                    );
                }
            }
            Op::EditComment(i) => {
                if let Some(k) = pick(&m.files, *i) {
                    m.files.get_mut(&k).unwrap().comment = counter;
                }
            }
            Op::EditCall(i) => {
                if let Some(k) = pick(&m.files, *i) {
                    m.files.get_mut(&k).unwrap().subject = counter;
                }
            }
            Op::Rename(i) | Op::Move(i) => {
                if let Some(k) = pick(&m.files, *i) {
                    let f = m.files.remove(&k).unwrap();
                    let new = match op {
                        Op::Rename(_) => format!("renamed-{counter}.yaml"),
                        _ => format!("sub{}/moved-{counter}.yaml", counter % 3),
                    };
                    m.files.insert(new, f);
                }
            }
            Op::Break(i) => {
                if let Some(k) = pick(&m.files, *i) {
                    m.files.get_mut(&k).unwrap().broken = true;
                }
            }
            Op::Restore(i) => {
                if let Some(k) = pick(&m.files, *i) {
                    m.files.get_mut(&k).unwrap().broken = false;
                }
            }
            Op::Delete(i) => {
                if let Some(k) = pick(&m.files, *i) {
                    m.files.remove(&k);
                }
            }
            Op::DeleteMost => {
                let keep: Vec<String> = m.files.keys().take(2).cloned().collect();
                let all = std::mem::take(&mut m.files);
                for (k, f) in all {
                    if keep.contains(&k) {
                        m.files.insert(k, f);
                    } else {
                        m.stash.insert(k, f);
                    }
                }
            }
            Op::Undelete => m.files.append(&mut m.stash),
            Op::ToggleUnreadable => m.unreadable = !m.unreadable,
            Op::Wait(long) => {
                let secs = if *long { 900 } else { 30 };
                m.now = m
                    .now
                    .checked_add(jiff::SignedDuration::from_secs(secs))
                    .unwrap();
            }
        }
        m.now = m
            .now
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap();
        m.snapshot();
        // a second step on the same snapshot changes nothing more
        m.snapshot();
    }
    m.scoped_steps
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn incremental_identity_step_decides_as_the_full_one(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}

/// The sequences above do exercise the incremental path (not only the
/// fall-back to a full step), including a mass disappearance.
#[test]
fn the_incremental_path_is_taken() {
    let mut ops: Vec<Op> = vec![Op::Write(14), Op::Write(14), Op::EditCall(3), Op::Rename(5)];
    ops.extend([
        Op::DeleteMost,
        Op::Wait(false),
        Op::Undelete,
        Op::DeleteMost,
    ]);
    ops.extend([Op::Wait(true), Op::Break(2), Op::Restore(2), Op::Move(1)]);
    let scoped = run(&ops);
    assert!(scoped >= ops.len(), "{scoped} incremental steps");
}
