//! Issue 12, incremental source: after any random sequence of file
//! operations (create, edit, delete, rename, move between folders, make
//! invalid, duplicate a name, restore, time passing, changed defaults), the
//! incremental spec set equals a full reload of the same files.
//!
//! Two levels: the pure core (an in-memory directory, many cases), and the
//! real thing (files in a temp dir, read by the source's `Scanner`, whose
//! snapshot feeds the incremental set).

use std::collections::BTreeMap;

use calld::config::Defaults;
use calld::source::Scanner;
use calld::spec::incremental::{FileRef, IncrementalSet};
use calld::spec::{Context, Input, SpecSet, load_set};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};

const DIRS: [&str; 4] = ["", "team-a/", "team-b/sub/", "team-c/"];
const STEMS: [&str; 4] = ["a", "b", "standup", "x.y"];
const EXTS: [&str; 2] = [".yaml", ".yml"];

/// A slot: (folder, stem, extension). `a.yaml` and `a.yml` in one folder
/// claim the same default name (a duplicate without any `name:`).
type Slot = (usize, usize, usize);

fn rel(s: Slot) -> String {
    format!("{}{}{}", DIRS[s.0], STEMS[s.1], EXTS[s.2])
}

/// What a file holds.
#[derive(Debug, Clone, PartialEq)]
struct Content {
    /// An explicit `name:` (from a few, so that names collide).
    name: Option<u8>,
    subject: u8,
    /// `at` in minutes after the test's start (time passes in the test, so
    /// some become past: a warning appears without any file change).
    at: Option<u8>,
    /// A cron schedule with `until` in minutes after the start.
    until: Option<u8>,
    /// A second document (multi-document file); its name may repeat.
    second: Option<u8>,
    /// 0: fine; 1: broken YAML; 2: not UTF-8; 3: an unknown key; 4: empty.
    broken: u8,
}

fn base() -> Timestamp {
    "2026-06-01T08:00:00Z".parse().unwrap()
}

fn minutes(m: u8) -> Timestamp {
    base()
        .checked_add(SignedDuration::from_mins(i64::from(m)))
        .unwrap()
}

fn doc(name: Option<u8>, subject: u8, schedule: &str) -> String {
    let name = name.map(|n| format!("name: n{n}\n")).unwrap_or_default();
    format!(
        "{name}subject: call {subject}\n{schedule}targets: [ {{ user: {{ id: u{subject} }} }} ]\n"
    )
}

fn text(c: &Content) -> Vec<u8> {
    let schedule = match (c.at, c.until) {
        (Some(a), _) => format!("schedule: {{ at: \"{}\" }}\n", minutes(a)),
        (None, Some(u)) => format!(
            "schedule: {{ cron: \"*/5 * * * *\", until: \"{}\" }}\n",
            minutes(u)
        ),
        (None, None) => String::new(),
    };
    let mut t = doc(c.name, c.subject, &schedule);
    if let Some(n) = c.second {
        t = format!("{t}---\n{}", doc(Some(n), c.subject + 1, ""));
    }
    match c.broken {
        1 => t.as_bytes()[..t.len() - 6].to_vec(),
        2 => {
            let mut b = t.into_bytes();
            b.insert(3, 0xff);
            b
        }
        3 => format!("{t}subjcet: typo\n").into_bytes(),
        4 => Vec::new(),
        _ => t.into_bytes(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(Slot, Content),
    Edit(Slot, Content),
    Delete(Slot),
    Rename(Slot, Slot),
    Invalid(Slot, u8),
    /// Copy a file with an explicit name: two specs of one name.
    Duplicate(Slot, Slot),
    /// Back to the last content that had no error kind.
    Restore(Slot),
    /// Rename the folder `team-a` to `team-c`, or back (files and all).
    MoveDir,
    Time(u8),
    Defaults(u8),
    /// Nothing changes: the update must cost nothing and change nothing.
    Nothing,
}

fn slot() -> impl Strategy<Value = Slot> {
    (0..DIRS.len(), 0..STEMS.len(), 0..EXTS.len())
}

fn content() -> impl Strategy<Value = Content> {
    (
        prop::option::of(0u8..3),
        0u8..4,
        prop::option::weighted(0.3, 0u8..60),
        prop::option::weighted(0.3, 0u8..60),
        prop::option::weighted(0.2, 0u8..3),
        prop_oneof![6 => Just(0u8), 1 => 1u8..5],
    )
        .prop_map(|(name, subject, at, until, second, broken)| Content {
            name,
            subject,
            at,
            until,
            second,
            broken,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (slot(), content()).prop_map(|(s, c)| Op::Create(s, c)),
        3 => (slot(), content()).prop_map(|(s, c)| Op::Edit(s, c)),
        2 => slot().prop_map(Op::Delete),
        // a rename within a folder, or a move between folders
        2 => (slot(), slot()).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => (slot(), 1u8..5).prop_map(|(s, k)| Op::Invalid(s, k)),
        2 => (slot(), slot()).prop_map(|(a, b)| Op::Duplicate(a, b)),
        2 => slot().prop_map(Op::Restore),
        1 => Just(Op::MoveDir),
        2 => (1u8..20).prop_map(Op::Time),
        1 => (0u8..3).prop_map(Op::Defaults),
        1 => Just(Op::Nothing),
    ]
}

/// The directory as the model keeps it.
#[derive(Default)]
struct Model {
    files: BTreeMap<String, Content>,
    good: BTreeMap<String, Content>,
    now: u8,
    defaults: u8,
}

impl Model {
    /// Applies one op; the slots it wrote (for the real-file test).
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create(s, c) | Op::Edit(s, c) => {
                let r = rel(*s);
                if matches!(op, Op::Edit(..)) && !self.files.contains_key(&r) {
                    return;
                }
                if c.broken == 0 {
                    self.good.insert(r.clone(), c.clone());
                }
                self.files.insert(r, c.clone());
            }
            Op::Delete(s) => {
                self.files.remove(&rel(*s));
            }
            Op::Rename(a, b) => {
                if let Some(c) = self.files.remove(&rel(*a)) {
                    self.files.insert(rel(*b), c);
                }
            }
            Op::Invalid(s, k) => {
                if let Some(c) = self.files.get_mut(&rel(*s)) {
                    c.broken = *k;
                }
            }
            Op::Duplicate(a, b) => {
                if let Some(c) = self.files.get(&rel(*a)) {
                    let mut c = c.clone();
                    c.name.get_or_insert(0);
                    self.files.insert(rel(*b), c);
                }
            }
            Op::Restore(s) => {
                let r = rel(*s);
                if let Some(c) = self.good.get(&r) {
                    self.files.insert(r, c.clone());
                }
            }
            Op::MoveDir => {
                let Some((from, to)) = self.dir_move() else {
                    return;
                };
                for map in [&mut self.files, &mut self.good] {
                    let moved: Vec<String> = map
                        .keys()
                        .filter(|r| r.starts_with(from))
                        .cloned()
                        .collect();
                    for r in moved {
                        let c = map.remove(&r).expect("listed");
                        map.insert(format!("{to}{}", &r[from.len()..]), c);
                    }
                }
            }
            Op::Time(m) => self.now = self.now.saturating_add(*m),
            Op::Defaults(d) => self.defaults = *d,
            Op::Nothing => {}
        }
    }

    /// Which way [`Op::MoveDir`] goes: into the one of `team-a/` and
    /// `team-c/` that holds no file; nowhere when both hold files.
    fn dir_move(&self) -> Option<(&'static str, &'static str)> {
        let has = |d: &str| self.files.keys().any(|r| r.starts_with(d));
        match (has("team-a/"), has("team-c/")) {
            (true, true) => None,
            (_, true) => Some(("team-c/", "team-a/")),
            _ => Some(("team-a/", "team-c/")),
        }
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            source: Some(
                json!({ "identity": { "application": { "id": format!("app-{}", self.defaults) } } }),
            ),
            tenant_id: Some(format!("tenant-{}", self.defaults)),
            ..Defaults::default()
        }
    }
}

fn label(rel: &str) -> String {
    format!("/calls/{rel}")
}

/// Everything a consumer of the set can see, comparable.
fn view(set: &SpecSet) -> String {
    format!(
        "specs: {:#?}\ndiagnostics: {:#?}\ninvalid names: {:?}\ninvalid files: {:?}\nfiles: {}",
        set.specs, set.diagnostics, set.invalid_names, set.invalid_files, set.file_count
    )
}

fn full_reload(
    files: &BTreeMap<String, Vec<u8>>,
    labels: impl Fn(&str) -> String,
    ctx: &Context,
) -> SpecSet {
    load_set(
        files.iter().map(|(rel, b)| Input {
            label: labels(rel),
            rel: rel.clone(),
            bytes: Ok(b.as_slice()),
        }),
        ctx,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The pure core: in-memory files, every op followed by an update.
    #[test]
    fn incremental_equals_full_reload(ops in prop::collection::vec(op(), 1..40)) {
        let mut model = Model::default();
        let mut inc = IncrementalSet::new();
        let public_url = "https://bot.example.com/api/calls";
        for (i, op) in ops.iter().enumerate() {
            model.apply(op);
            let defaults = model.defaults();
            let ctx = Context { defaults: &defaults, public_url: Some(public_url), now: minutes(model.now) };
            let bytes: BTreeMap<String, Vec<u8>> =
                model.files.iter().map(|(r, c)| (r.clone(), text(c))).collect();
            let stats = inc.update(
                bytes.iter().map(|(r, b)| FileRef {
                    rel: r,
                    label: label(r).into(),
                    hash: Sha256::digest(b).into(),
                    bytes: Ok(Some(b.as_slice())),
                    path: std::path::Path::new(r),
                }),
                &ctx,
            );
            let full = full_reload(&bytes, label, &ctx);
            prop_assert_eq!(view(inc.set()), view(&full), "after op {} ({:?})", i, op);
            if matches!(op, Op::Nothing) && full.error_count() == 0 {
                prop_assert_eq!(stats.files_loaded, 0, "nothing changed, nothing is read");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Real files in a temp dir, read by the source's scanner: the same
    /// equality, with renames and moves done by `rename(2)`. One scanner
    /// looks only at the paths each op touched (as events name them), and
    /// its snapshot must equal a fresh full scan's; the incremental set is
    /// fed from it.
    #[test]
    fn scanner_fed_incremental_equals_full_reload(ops in prop::collection::vec(op(), 1..25)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("calls.d");
        std::fs::create_dir_all(&dir).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let mut model = Model::default();
        let mut scanner = Scanner::new(&dir);
        scanner.scan();
        let mut inc = IncrementalSet::new();
        let public_url = "https://bot.example.com/api/calls";
        for (i, op) in ops.iter().enumerate() {
            let before = model.files.clone();
            let mut touched: Vec<std::path::PathBuf> = Vec::new();
            // make the directory match the model, renames as renames
            match op {
                Op::Rename(a, b) if before.contains_key(&rel(*a)) => {
                    let (a, b) = (dir.join(rel(*a)), dir.join(rel(*b)));
                    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
                    std::fs::rename(&a, &b).unwrap();
                    touched.extend([a, b]);
                }
                Op::MoveDir => if let Some((from, to)) = model.dir_move() {
                    let (from, to) = (dir.join(from.trim_end_matches('/')), dir.join(to.trim_end_matches('/')));
                    if from.exists() {
                        let _ = std::fs::remove_dir(&to);
                        std::fs::rename(&from, &to).unwrap();
                        touched.extend([from, to]);
                    }
                }
                _ => {}
            }
            model.apply(op);
            for r in before.keys() {
                if !model.files.contains_key(r) && dir.join(r).exists() {
                    std::fs::remove_file(dir.join(r)).unwrap();
                    touched.push(dir.join(r));
                }
            }
            for (r, c) in &model.files {
                let want = text(c);
                let path = dir.join(r);
                if std::fs::read(&path).ok().as_deref() != Some(want.as_slice()) {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &want).unwrap();
                    touched.push(path);
                }
            }
            let snap = scanner.scan_paths(touched.iter().map(|p| p.as_path()));
            // a plain tree (no symlink): only the named paths are looked at
            prop_assert!(snap.stats.targeted || touched.is_empty());
            let fresh = Scanner::new(&dir).scan();
            let files = |s: &calld::source::Snapshot| -> Vec<(String, std::path::PathBuf, [u8; 32])> {
                s.files.values().map(|f| (f.rel.clone(), f.path.clone(), f.hash)).collect()
            };
            prop_assert_eq!(files(&snap), files(&fresh), "snapshot after op {} ({:?})", i, op);
            let defaults = model.defaults();
            let ctx = Context { defaults: &defaults, public_url: Some(public_url), now: minutes(model.now) };
            // by the delta of the scan of named paths
            snap.update_spec_set(&mut inc, &ctx);
            let bytes: BTreeMap<String, Vec<u8>> =
                model.files.iter().map(|(r, c)| (r.clone(), text(c))).collect();
            let full = full_reload(&bytes, |r| dir.join(r).display().to_string(), &ctx);
            prop_assert_eq!(view(inc.set()), view(&full), "after op {} ({:?})", i, op);
        }
    }
}

/// Many files at once (start-up, a `git pull`) are validated in parallel;
/// the result is the same as loading them one by one, in order.
#[test]
fn parallel_load_equals_sequential_load() {
    let defaults = Model::default().defaults();
    let ctx = Context {
        defaults: &defaults,
        public_url: Some("https://bot.example.com/api/calls"),
        now: base(),
    };
    let files: BTreeMap<String, Vec<u8>> = (0..500u32)
        .map(|i| {
            let c = Content {
                name: (i % 7 == 0).then_some((i % 3) as u8),
                subject: (i % 4) as u8,
                at: (i % 5 == 0).then_some((i % 60) as u8),
                until: None,
                second: None,
                broken: if i % 11 == 0 { (i % 4 + 1) as u8 } else { 0 },
            };
            (format!("team-{:02}/s-{i:04}.yaml", i / 50), text(&c))
        })
        .collect();
    let mut inc = IncrementalSet::new();
    let stats = inc.update(
        files.iter().map(|(r, b)| FileRef {
            rel: r,
            label: label(r).into(),
            hash: Sha256::digest(b).into(),
            bytes: Ok(Some(b.as_slice())),
            path: std::path::Path::new(r),
        }),
        &ctx,
    );
    assert_eq!(stats.files_loaded, 500);
    let full = full_reload(&files, label, &ctx);
    assert!(full.error_count() > 0 && !full.specs.is_empty());
    assert!(
        full.diagnostics
            .iter()
            .any(|d| d.message.starts_with("duplicate name")),
        "the files hold duplicate names"
    );
    assert_eq!(view(inc.set()), view(&full));
}

/// A tree with a symlink: a change behind it is not an event at its path,
/// so a scan of named paths falls back to a full scan and still sees it.
#[cfg(unix)]
#[test]
fn named_paths_fall_back_to_a_full_scan_when_the_tree_has_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let outside = dir.join("outside");
    let calls = dir.join("calls.d");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&calls).unwrap();
    std::fs::write(outside.join("cm.yaml"), "v: 1\n").unwrap();
    std::os::unix::fs::symlink(outside.join("cm.yaml"), calls.join("cm.yaml")).unwrap();
    std::fs::write(calls.join("plain.yaml"), "v: 1\n").unwrap();
    let mut sc = Scanner::new(&calls);
    sc.scan();
    std::fs::write(outside.join("cm.yaml"), "v: 2\n").unwrap();
    std::fs::write(calls.join("plain.yaml"), "v: 2\n").unwrap();
    let snap = sc.scan_paths([calls.join("plain.yaml").as_path()]);
    assert!(!snap.stats.targeted);
    assert_eq!(snap.files["cm.yaml"].bytes(), Some(&b"v: 2\n"[..]));
    assert_eq!(snap.files["plain.yaml"].bytes(), Some(&b"v: 2\n"[..]));
    // without the symlink, named paths are enough
    std::fs::remove_file(calls.join("cm.yaml")).unwrap();
    sc.scan();
    std::fs::write(calls.join("plain.yaml"), "v: 3\n").unwrap();
    let snap = sc.scan_paths([calls.join("plain.yaml").as_path()]);
    assert!(snap.stats.targeted);
    assert_eq!(snap.files["plain.yaml"].bytes(), Some(&b"v: 3\n"[..]));
    assert_eq!(snap.files.len(), 1);
}
