//! The identity step's rules, one table row at a time (pure core: real
//! specs from the loader, runs from an in-memory ledger).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use calld::config::Defaults;
use calld::identity::{self, Known, Memory, Step};
use calld::ledger::{Ledger, NewRun, Run, RunKey, SqliteLedger};
use calld::spec::{Context, Input, SpecSet, load_set};
use jiff::Timestamp;
use serde_json::json;

fn now() -> Timestamp {
    "2026-06-01T08:00:00Z".parse().unwrap()
}

fn spec_text(subject: &str) -> String {
    format!("subject: {subject}\ntargets: [ {{ user: {{ id: u1 }} }} ]\n")
}

fn load(files: &[(&str, &str)]) -> SpecSet {
    let defaults = Defaults {
        source: Some(json!({ "identity": { "application": { "id": "app" } } })),
        ..Defaults::default()
    };
    let ctx = Context {
        defaults: &defaults,
        public_url: Some("https://bot.example.com/api/calls"),
        now: now(),
    };
    load_set(
        files.iter().map(|(rel, text)| Input {
            label: format!("/calls/{rel}"),
            rel: rel.to_string(),
            bytes: Ok(text.as_bytes()),
        }),
        &ctx,
    )
}

struct Ledgers {
    runs: Vec<Run>,
    latest: BTreeMap<String, Run>,
    last_slots: BTreeMap<String, Timestamp>,
}

fn ledger_with(runs: &[(&str, &str)]) -> Ledgers {
    let mut l = SqliteLedger::open_in_memory().unwrap();
    for (spec, rev) in runs {
        l.insert_run(
            &NewRun {
                key: RunKey::revision(*spec, *rev),
                revision: rev.to_string(),
                due: now(),
                tenant_id: None,
            },
            now(),
        )
        .unwrap();
    }
    Ledgers {
        runs: l.open_runs().unwrap(),
        latest: BTreeMap::new(),
        last_slots: BTreeMap::new(),
    }
}

fn step(memory: &Memory, set: &SpecSet, l: &Ledgers, dir_known: bool, at: Timestamp) -> Step {
    identity::step(
        memory,
        &identity::Input {
            now: at,
            specs: &set.specs,
            invalid_names: &set.invalid_names,
            invalid_files: &set.invalid_files,
            dir_known,
            unreadable: &[],
            runs: &l.runs,
            latest: &l.latest,
            last_slots: &l.last_slots,
            prune_after: Duration::from_secs(300),
        },
    )
}

fn memory_of(set: &SpecSet) -> Memory {
    Memory {
        known: set
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
            .collect(),
        vanished: BTreeMap::new(),
    }
}

#[test]
fn the_revision_ignores_configuration_and_layout() {
    let a = load(&[("a.yaml", &spec_text("Hi"))]);
    let defaults = Defaults {
        source: Some(json!({ "identity": { "application": { "id": "other" } } })),
        tenant_id: Some("t2".into()),
        ..Defaults::default()
    };
    let text = format!("# c\n\n{}", spec_text("Hi"));
    let b = load_set(
        [Input {
            label: "/x/a.yaml".into(),
            rel: "a.yaml".into(),
            bytes: Ok(text.as_bytes()),
        }],
        &Context {
            defaults: &defaults,
            public_url: Some("http://127.0.0.1:5555/api/calls"),
            now: now(),
        },
    );
    assert_eq!(a.specs["a"].revision, b.specs["a"].revision);
    let c = load(&[("a.yaml", &spec_text("Ho"))]);
    assert_ne!(a.specs["a"].revision, c.specs["a"].revision);
}

#[test]
fn a_rename_with_the_same_revision_moves_the_runs() {
    let before = load(&[("a.yaml", &spec_text("Hi")), ("keep.yaml", &spec_text("K"))]);
    let rev = before.specs["a"].revision.clone();
    let l = ledger_with(&[("a", &rev)]);
    let after = load(&[
        ("sub/b.yaml", &spec_text("Hi")),
        ("keep.yaml", &spec_text("K")),
    ]);
    let s = step(&memory_of(&before), &after, &l, true, now());
    assert_eq!(s.renames.len(), 1);
    assert_eq!(
        (s.renames[0].from.as_str(), s.renames[0].to.as_str()),
        ("a", "sub/b")
    );
    // an edit together with the move is not a rename
    let edited = load(&[
        ("sub/b.yaml", &spec_text("Other")),
        ("keep.yaml", &spec_text("K")),
    ]);
    assert!(
        step(&memory_of(&before), &edited, &l, true, now())
            .renames
            .is_empty()
    );
    // a new name that has runs of its own is not merged
    let l2 = ledger_with(&[("a", &rev), ("sub/b", "x")]);
    assert!(
        step(&memory_of(&before), &after, &l2, true, now())
            .renames
            .is_empty()
    );
}

#[test]
fn a_file_that_fails_to_load_holds_what_it_held() {
    let multi = "name: one\nsubject: a\ntargets: [ { user: { id: u1 } } ]\n---\nname: two\nsubject: b\ntargets: [ { user: { id: u1 } } ]\n";
    let before = load(&[("multi.yaml", multi)]);
    assert_eq!(before.specs.len(), 2);
    let broken: &[&str] = &[
        "name: one\nsubject: a\ntargets: [ { user: ",
        "subject: \u{0}\n",
        "",
    ];
    for text in broken {
        let after = load(&[("multi.yaml", text)]);
        let s = step(&memory_of(&before), &after, &ledger_with(&[]), true, now());
        let held: BTreeSet<&str> = s.held.iter().map(String::as_str).collect();
        assert!(
            held.contains("one") && held.contains("two"),
            "{text:?}: {held:?}"
        );
        // and it is remembered for the next step
        assert!(s.memory.known.contains_key("one"));
    }
    // not UTF-8
    let mut bytes = multi.as_bytes().to_vec();
    bytes.insert(3, 0xfe);
    let after = load_set(
        [Input {
            label: "/calls/multi.yaml".into(),
            rel: "multi.yaml".into(),
            bytes: Ok(&bytes),
        }],
        &Context {
            defaults: &Defaults::default(),
            public_url: None,
            now: now(),
        },
    );
    let s = step(&memory_of(&before), &after, &ledger_with(&[]), true, now());
    assert!(s.held.contains("one") && s.held.contains("two"));
}

#[test]
fn before_the_first_read_everything_in_the_ledger_is_held() {
    let l = ledger_with(&[("x", "r1"), ("y", "r2")]);
    let s = step(&Memory::default(), &SpecSet::default(), &l, false, now());
    assert!(s.held.contains("x") && s.held.contains("y"));
    assert!(s.renames.is_empty());
}

fn many(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("s{i:02}.yaml"), spec_text(&format!("S{i}"))))
        .collect()
}

fn load_owned(files: &[(String, String)]) -> SpecSet {
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    load(&refs)
}

#[test]
fn mass_disappearance_rule() {
    // (known, vanishing, held?)
    for (known, gone, mass) in [
        (30, 20, true),
        (20, 11, true),
        (20, 10, false), // not more than 10
        (30, 12, false), // not over half
        (22, 11, false), // exactly half
        (5, 5, false),
    ] {
        let files = many(known);
        let before = load_owned(&files);
        let after = load_owned(&files[gone..]);
        let s = step(&memory_of(&before), &after, &ledger_with(&[]), true, now());
        assert_eq!(s.mass.is_some(), mass, "{gone} of {known}");
        assert_eq!(
            s.held.len(),
            if mass { gone } else { 0 },
            "{gone} of {known}"
        );
        if mass {
            // held until pruneAfter, then released
            let later = now() + jiff::SignedDuration::from_mins(4);
            let s2 = step(&s.memory, &after, &ledger_with(&[]), true, later);
            assert_eq!(s2.held.len(), gone);
            assert!(s2.mass.is_none(), "reported once");
            let s3 = step(
                &s2.memory,
                &after,
                &ledger_with(&[]),
                true,
                now() + jiff::SignedDuration::from_mins(5),
            );
            assert!(s3.held.is_empty());
            assert_eq!(s3.pruned.len(), gone);
            // one that comes back is valid again, not held
            let back = load_owned(&files[gone - 1..]);
            let s4 = step(&s2.memory, &back, &ledger_with(&[]), true, later);
            assert_eq!(s4.held.len(), gone - 1);
        }
    }
}

#[test]
fn a_run_under_the_older_revision_format_is_adopted() {
    let set = load(&[("a.yaml", &spec_text("Hi"))]);
    let spec = &set.specs["a"];
    let old = calld::spec::render::legacy_revision(spec);
    let l = ledger_with(&[("a", &old)]);
    let s = step(&memory_of(&set), &set, &l, true, now());
    assert_eq!(s.adopt.len(), 1);
    assert_eq!(s.adopt[0].from, old);
    assert_eq!(s.adopt[0].to, spec.revision);
    // and the ledger re-keys it
    let mut ledger = SqliteLedger::open_in_memory().unwrap();
    ledger
        .insert_run(
            &NewRun {
                key: RunKey::revision("a", old.clone()),
                revision: old.clone(),
                due: now(),
                tenant_id: None,
            },
            now(),
        )
        .unwrap();
    assert!(ledger.adopt_revision("a", &old, &spec.revision).unwrap());
    assert!(
        ledger
            .run_by_key(&RunKey::revision("a", spec.revision.clone()))
            .unwrap()
            .is_some()
    );
}

#[test]
fn renames_are_recorded_and_followed_back() {
    let mut l = SqliteLedger::open_in_memory().unwrap();
    l.insert_run(
        &NewRun {
            key: RunKey::revision("a", "r"),
            revision: "r".into(),
            due: now(),
            tenant_id: None,
        },
        now(),
    )
    .unwrap();
    assert_eq!(l.rename_spec("a", "b", "r", now()).unwrap(), Some(1));
    assert_eq!(l.rename_spec("b", "c", "r", now()).unwrap(), Some(1));
    let chain = l.renames_to("c").unwrap();
    let pairs: Vec<(&str, &str)> = chain
        .iter()
        .map(|r| (r.from.as_str(), r.to.as_str()))
        .collect();
    assert_eq!(pairs, [("b", "c"), ("a", "b")]);
    assert_eq!(l.history("c", 10).unwrap().len(), 1);
    // never merged into a name with runs
    l.insert_run(
        &NewRun {
            key: RunKey::revision("d", "r2"),
            revision: "r2".into(),
            due: now(),
            tenant_id: None,
        },
        now(),
    )
    .unwrap();
    assert_eq!(l.rename_spec("c", "d", "r", now()).unwrap(), None);
    // the known specs survive a reopen (here: a save and a load)
    let known: BTreeMap<String, Known> = [(
        "c".to_string(),
        Known {
            revision: "r".into(),
            file: "/calls/c.yaml".into(),
        },
    )]
    .into();
    l.save_known(&BTreeMap::new(), &known).unwrap();
    assert_eq!(l.known_specs().unwrap(), known);
    l.save_known(&known, &BTreeMap::new()).unwrap();
    assert!(l.known_specs().unwrap().is_empty());
}

/// The daemon saves the identity step's memory in the decision's first
/// batch: with the runs it inserts, in one commit.
#[test]
fn the_known_specs_are_saved_in_a_batch_with_the_runs() {
    use calld::ledger::{Write, Written};
    let mut l = SqliteLedger::open_in_memory().unwrap();
    let known = |rev: &str| -> BTreeMap<String, Known> {
        [(
            "n".to_string(),
            Known {
                revision: rev.into(),
                file: "/calls/n.yaml".into(),
            },
        )]
        .into()
    };
    let insert = Write::Insert(NewRun {
        key: RunKey::revision("n", "r1"),
        revision: "r1".into(),
        due: now(),
        tenant_id: None,
    });
    let out = l
        .write_batch(
            &[
                Write::Known {
                    before: BTreeMap::new(),
                    after: known("r1"),
                },
                insert,
            ],
            now(),
        )
        .unwrap();
    assert!(matches!(out[0], Ok(Written::Known)), "{out:?}");
    assert!(matches!(&out[1], Ok(Written::Inserted(i)) if i.created));
    assert_eq!(l.known_specs().unwrap(), known("r1"));
    assert!(
        l.run_by_key(&RunKey::revision("n", "r1"))
            .unwrap()
            .is_some()
    );
    // a change, then the name gone
    let out = l
        .write_batch(
            &[Write::Known {
                before: known("r1"),
                after: known("r2"),
            }],
            now(),
        )
        .unwrap();
    assert!(matches!(&out[..], [Ok(Written::Known)]), "{out:?}");
    assert_eq!(l.known_specs().unwrap(), known("r2"));
    l.write_batch(
        &[Write::Known {
            before: known("r2"),
            after: BTreeMap::new(),
        }],
        now(),
    )
    .unwrap();
    assert!(l.known_specs().unwrap().is_empty());
}

#[test]
fn names_from_paths_obey_the_rule_and_nfc() {
    let bad = load(&[("line\nbreak.yaml", &spec_text("x"))]);
    assert!(bad.specs.is_empty());
    let d = bad.diagnostics.iter().find(|d| d.is_error()).unwrap();
    assert!(
        d.file.contains("line\nbreak.yaml") && d.message.contains("refused"),
        "{d}"
    );
    let dup = load(&[
        ("caf\u{e9}.yaml", &spec_text("x")),
        ("cafe\u{301}.yaml", &spec_text("y")),
    ]);
    assert!(dup.specs.is_empty());
    assert!(dup.invalid_names.contains("caf\u{e9}"));
    let explicit = load(&[(
        "a.yaml",
        "name: \"cafe\u{301}\"\nsubject: x\ntargets: [ { user: { id: u1 } } ]\n",
    )]);
    assert!(explicit.specs.contains_key("caf\u{e9}"));
}

mod reconcile_support;

#[test]
fn a_renamed_cron_spec_keeps_its_planned_run() {
    use calld::reconcile::Action;
    let cron = "subject: c\ntargets: [ { user: { id: u1 } } ]\nschedule: { cron: \"0 9 * * *\" }\n";
    let before = load(&[("daily.yaml", cron)]);
    let mut w = reconcile_support::World::new(vec![]);
    w.specs = before.specs.clone();
    let d = w.decide(now());
    w.apply(&d, now());
    let planned = w.ledger.open_runs().unwrap();
    assert_eq!(planned.len(), 1);

    let after = load(&[("team/daily.yaml", cron)]);
    let snap = w.snapshot();
    let s = identity::step(
        &memory_of(&before),
        &identity::Input {
            now: now(),
            specs: &after.specs,
            invalid_names: &after.invalid_names,
            invalid_files: &after.invalid_files,
            dir_known: true,
            unreadable: &[],
            runs: &snap.runs,
            latest: &snap.latest,
            last_slots: &snap.last_slots,
            prune_after: Duration::from_secs(300),
        },
    );
    assert_eq!(s.renames.len(), 1);
    for r in &s.renames {
        w.ledger
            .rename_spec(&r.from, &r.to, &r.revision, now())
            .unwrap();
    }
    w.specs = after.specs.clone();
    w.held = s.held.clone();
    let d = w.decide(now());
    assert!(
        !d.actions.iter().any(|a| matches!(
            a,
            Action::Finish { .. } | Action::Insert { .. } | Action::Place { .. }
        )),
        "nothing canceled, planned or placed: {:?}",
        d.actions
    );
    let open = w.ledger.open_runs().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, planned[0].id);
    assert_eq!(open[0].spec, "team/daily");
}

#[test]
fn the_scanner_keeps_the_last_complete_content_of_a_file_being_written() {
    use calld::source::Scanner;
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.yaml");
    let b = tmp.path().join("b.yaml");
    std::fs::write(&a, "v: 1\n").unwrap();
    let mut sc = Scanner::new(tmp.path());
    sc.set_unsettled(Default::default());
    assert_eq!(sc.scan().files["a.yaml"].bytes(), Some(&b"v: 1\n"[..]));
    // a rewrite and a new file, both still being written
    std::fs::write(&a, "v: 2 and more\n").unwrap();
    std::fs::write(&b, "half").unwrap();
    sc.set_unsettled([a.clone(), b.clone()].into_iter().collect());
    let snap = sc.scan();
    // its last complete content stays: the same hash, so the loader keeps
    // what it validated (no snapshot keeps the bytes of a file it did not read)
    use sha2::Digest;
    let v1: [u8; 32] = sha2::Sha256::digest(b"v: 1\n").into();
    assert_eq!(snap.files["a.yaml"].hash, v1);
    assert_eq!(snap.files["a.yaml"].content, Ok(None));
    // a file never read before is held (its specs are not taken as deleted)
    assert_eq!(
        snap.files["b.yaml"].content.as_ref().unwrap_err(),
        calld::source::scan::BEING_WRITTEN
    );
    assert_eq!(snap.stats.unsettled_files, 2);
    assert!(snap.changed);
    // settled: read as they are now
    sc.set_unsettled(Default::default());
    let snap = sc.scan();
    assert_eq!(snap.files["a.yaml"].bytes(), Some(&b"v: 2 and more\n"[..]));
    assert_eq!(snap.files["b.yaml"].bytes(), Some(&b"half"[..]));
    assert!(snap.changed);
}

#[test]
fn specs_below_an_unreadable_folder_are_held() {
    let before = load(&[
        ("team/a.yaml", &spec_text("A")),
        ("teamx/b.yaml", &spec_text("B")),
        ("c.yaml", &spec_text("C")),
    ]);
    let after = load(&[("c.yaml", &spec_text("C"))]);
    let unreadable = vec!["/calls/team".to_string()];
    let l = ledger_with(&[]);
    let s = identity::step(
        &memory_of(&before),
        &identity::Input {
            now: now(),
            specs: &after.specs,
            invalid_names: &after.invalid_names,
            invalid_files: &after.invalid_files,
            dir_known: true,
            unreadable: &unreadable,
            runs: &l.runs,
            latest: &l.latest,
            last_slots: &l.last_slots,
            prune_after: Duration::from_secs(300),
        },
    );
    let held: Vec<&str> = s.held.iter().map(String::as_str).collect();
    assert_eq!(held, ["team/a"], "teamx/b is not below /calls/team");
}
