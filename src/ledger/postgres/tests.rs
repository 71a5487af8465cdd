//! What only the shared store does: claims between replicas, fencing,
//! reaping, views, the compare-and-set of call operations, concurrent
//! schema creation, LISTEN/NOTIFY, and keeping the password out of errors.
//! Each test uses fresh schemas and skips without a server (`testing`).

use std::sync::{Arc, Barrier};
use std::time::Duration;

use jiff::Timestamp;

use super::testing::{Schemas, available, options};
use super::{PG_SCHEMA_VERSION, PgLedger, PgListener, PgOptions};
use crate::ledger::{
    CallStateUpdate, Claim, Disposition, Ledger, LedgerError, NewRun, Outcome, RunKey, RunState,
    SpecView, StateChange, StateNotice, Write, Written,
};

/// Times near the database's clock: claims compare `due_at` with it.
fn now() -> Timestamp {
    Timestamp::now()
}

fn ago(secs: i64) -> Timestamp {
    now() - jiff::SignedDuration::from_secs(secs)
}

fn replica(schema: &str, name: &str) -> PgLedger {
    PgLedger::connect(&options(schema, name), now()).unwrap()
}

fn due_run(l: &mut PgLedger, spec: &str, rev: &str, secs_ago: i64) -> String {
    let t = ago(secs_ago);
    l.insert_run(
        &NewRun {
            key: RunKey::at(spec, t),
            revision: rev.into(),
            due: t,
            tenant_id: None,
        },
        now(),
    )
    .unwrap()
    .run
    .id
}

fn claim(id: &str, rev: &str) -> Claim {
    Claim {
        id: id.into(),
        revision: rev.into(),
    }
}

fn requesting(id: &str, token: Option<u64>) -> Write {
    Write::Requesting {
        id: id.into(),
        hangup_after: None,
        claim: token,
    }
}

/// Ends every lease in the schema (as if the lease time had passed).
fn expire_leases(l: &PgLedger) {
    l.client_for_tests()
        .execute(
            "UPDATE runs SET lease_until = now() - interval '1 second' WHERE lease_until IS NOT NULL",
            &[],
        )
        .unwrap();
}

macro_rules! require_pg {
    () => {
        if !available(module_path!()) {
            return;
        }
    };
}

#[test]
fn racing_replicas_win_each_claim_exactly_once() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let mut a = replica(&schema, "a");
    let ids: Vec<String> = (0..50)
        .map(|i| due_run(&mut a, &format!("s{i}"), "r1", 5))
        .collect();
    let claims: Vec<Claim> = ids.iter().map(|id| claim(id, "r1")).collect();
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let (schema, claims, barrier) = (schema.clone(), claims.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut l = replica(&schema, name);
                barrier.wait();
                // two rounds each: winning again what one already holds is
                // allowed (it is its own), another's is not
                let first = l.claim(&claims, now()).unwrap();
                let second = l.claim(&claims, now()).unwrap();
                for (x, y) in first.iter().zip(&second) {
                    assert_eq!(x.is_some(), y.is_some(), "{name}: a claim changed hands");
                }
                (name, second)
            })
        })
        .collect();
    let results: Vec<(&str, Vec<Option<u64>>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut tokens = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let winners: Vec<&str> = results
            .iter()
            .filter(|(_, r)| r[i].is_some())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(winners.len(), 1, "run {id}: winners {winners:?}");
        for (_, r) in &results {
            if let Some(t) = r[i] {
                assert!(tokens.insert(t), "token {t} given twice");
            }
        }
    }
    println!(
        "claims won: {:?}",
        results
            .iter()
            .map(|(n, r)| (n, r.iter().filter(|t| t.is_some()).count()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_claim_needs_a_due_scheduled_run_of_the_claimed_revision() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let mut a = replica(&schema, "a");
    let due = due_run(&mut a, "due", "r1", 5);
    let future = due_run(&mut a, "future", "r1", -3600);
    let got = a
        .claim(
            &[
                claim(&due, "r2"),
                claim(&future, "r1"),
                claim("nosuchrun", "r1"),
            ],
            now(),
        )
        .unwrap();
    assert_eq!(got, [None, None, None]);
    // finished: no claim
    a.finish(&due, &crate::ledger::Finish::new(Outcome::Missed), now())
        .unwrap();
    assert_eq!(a.claim(&[claim(&due, "r1")], now()).unwrap(), [None]);
}

#[test]
fn an_expired_lease_can_be_taken_and_the_old_token_is_fenced_off() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let mut a = replica(&schema, "a");
    let mut b = replica(&schema, "b");
    let id = due_run(&mut a, "s", "r1", 5);
    let ta = a.claim(&[claim(&id, "r1")], now()).unwrap()[0].expect("a wins");
    // while a's lease runs, b neither claims nor marks without a claim
    assert_eq!(b.claim(&[claim(&id, "r1")], now()).unwrap(), [None]);
    let out = b.write_batch(&[requesting(&id, None)], now()).unwrap();
    assert!(
        matches!(out[0], Err(LedgerError::Refused { .. })),
        "{out:?}"
    );
    // a stalls past its lease; b takes the run over
    expire_leases(&a);
    assert_eq!(
        a.renew_leases(&[(id.clone(), ta)]).unwrap(),
        vec![id.clone()]
    );
    let tb = b.claim(&[claim(&id, "r1")], now()).unwrap()[0].expect("b wins");
    assert!(tb > ta);
    // a wakes up: its old token is refused, nothing is written
    let out = a.write_batch(&[requesting(&id, Some(ta))], now()).unwrap();
    let Err(e) = &out[0] else { panic!("{out:?}") };
    assert!(e.to_string().contains("claim"), "{e}");
    assert!(a.attempts(&id).unwrap().is_empty());
    // b's token is good; b renews while its request is in flight
    let out = b.write_batch(&[requesting(&id, Some(tb))], now()).unwrap();
    assert!(matches!(out[0], Ok(Written::Requesting(1))), "{out:?}");
    assert!(b.renew_leases(&[(id.clone(), tb)]).unwrap().is_empty());
    assert_eq!(
        a.renew_leases(&[(id.clone(), ta)]).unwrap(),
        vec![id.clone()]
    );
    assert_eq!(b.claimed_runs().unwrap().len(), 1);
    // a token of the right number but another owner is refused too
    let c = due_run(&mut a, "t", "r1", 5);
    let tc = b.claim(&[claim(&c, "r1")], now()).unwrap()[0].unwrap();
    let out = a.write_batch(&[requesting(&c, Some(tc))], now()).unwrap();
    assert!(out[0].is_err(), "{out:?}");
}

#[test]
fn reaping_finishes_expired_requests_as_unknown_and_a_notification_reopens_them() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let mut a = replica(&schema, "pod-a");
    let mut b = replica(&schema, "pod-b");
    let id = due_run(&mut a, "s", "r1", 5);
    let live = due_run(&mut a, "live", "r1", 5);
    let t = a.claim(&[claim(&id, "r1")], now()).unwrap()[0].unwrap();
    a.write_batch(&[requesting(&id, Some(t))], now()).unwrap()[0]
        .as_ref()
        .unwrap();
    // a new replica does not recover another's requests at connect
    let c = replica(&schema, "pod-c");
    assert!(c.recovered().is_empty());
    assert_eq!(c.run(&id).unwrap().unwrap().state, RunState::Requesting);
    // nor does reaping touch a live lease
    assert!(b.reap_expired(now()).unwrap().is_empty());
    expire_leases(&a);
    let tl = b.claim(&[claim(&live, "r1")], now()).unwrap()[0].unwrap();
    b.write_batch(&[requesting(&live, Some(tl))], now())
        .unwrap()[0]
        .as_ref()
        .unwrap();
    let at = now();
    let reaped = b.reap_expired(at).unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    let r = &reaped[0];
    assert_eq!(r.id, id);
    assert_eq!(r.outcome, Some(Outcome::Unknown));
    assert_eq!(
        r.reason.as_deref(),
        Some("replica pod-a stopped while the request was in flight")
    );
    assert_eq!(r.updated_at, crate::ledger::truncate_micros(at));
    assert_eq!(
        b.attempts(&id).unwrap()[0].disposition,
        Some(Disposition::Unknown)
    );
    assert_eq!(b.run(&live).unwrap().unwrap().state, RunState::Requesting);
    assert!(b.reap_expired(now()).unwrap().is_empty());
    // a's late answer cannot place it; a notification with calldRun reopens it
    assert!(a.mark_placed(&id, "call-1", now()).is_err());
    let out = b
        .record_call_states(
            &[StateNotice {
                run_id: Some(id.clone()),
                attempt: Some(1),
                tenant_id: None,
                update: CallStateUpdate {
                    state: crate::ledger::CallState::Establishing,
                    call_id: Some("call-1".into()),
                    result_info: None,
                },
            }],
            now(),
        )
        .unwrap();
    let n = out[0].as_ref().unwrap().as_ref().unwrap();
    assert_eq!(n.change, StateChange::Reopened);
    assert_eq!(n.run.state, RunState::Establishing);
}

#[test]
fn the_newest_view_wins_and_a_superseded_revision_is_not_claimed() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let mut a = replica(&schema, "a");
    let mut b = replica(&schema, "b");
    let view = |rev: Option<&str>, secs: i64| SpecView {
        spec: "s".into(),
        revision: rev.map(str::to_string),
        mtime: Timestamp::from_second(1_800_000_000 + secs).unwrap(),
    };
    a.publish_views(&[view(Some("r1"), 10)]).unwrap();
    b.publish_views(&[view(Some("r0"), 5)]).unwrap(); // older: ignored
    assert_eq!(b.newest_views().unwrap()["s"], view(Some("r1"), 10));
    b.publish_views(&[view(Some("r0"), 10)]).unwrap(); // tie, smaller revision
    assert_eq!(a.newest_views().unwrap()["s"], view(Some("r1"), 10));
    b.publish_views(&[view(None, 10)]).unwrap(); // tie, a deletion is lowest
    assert_eq!(a.newest_views().unwrap()["s"], view(Some("r1"), 10));
    b.publish_views(&[view(Some("r2"), 10)]).unwrap(); // tie, greater revision
    assert_eq!(a.newest_views().unwrap()["s"], view(Some("r2"), 10));
    // the same order as SpecView::is_newer_than
    assert!(view(Some("r2"), 10).is_newer_than(&view(Some("r1"), 10)));
    // a run planned from r1 is not claimed while the newest view is r2
    let id = due_run(&mut a, "s", "r1", 5);
    assert_eq!(a.claim(&[claim(&id, "r1")], now()).unwrap(), [None]);
    a.publish_views(&[view(Some("r1"), 20)]).unwrap();
    assert!(a.claim(&[claim(&id, "r1")], now()).unwrap()[0].is_some());
    // a later deletion holds it too
    b.publish_views(&[view(None, 30)]).unwrap();
    assert_eq!(b.newest_views().unwrap()["s"].revision, None);
    expire_leases(&a);
    assert_eq!(b.claim(&[claim(&id, "r1")], now()).unwrap(), [None]);
    // a time slot planned from an older revision goes to the replica whose
    // revision is the newest view, and takes that revision; a revision
    // slot never changes revision
    let at = due_run(&mut a, "edited", "old", 5);
    let once = a
        .insert_run(
            &NewRun {
                key: RunKey::revision("edited", "old"),
                revision: "old".into(),
                due: ago(5),
                tenant_id: None,
            },
            now(),
        )
        .unwrap()
        .run
        .id;
    let edited = |rev: &str, secs: i64| SpecView {
        spec: "edited".into(),
        revision: Some(rev.into()),
        mtime: Timestamp::from_second(1_800_000_000 + secs).unwrap(),
    };
    a.publish_views(&[edited("old", 1)]).unwrap();
    b.publish_views(&[edited("new", 2)]).unwrap();
    assert_eq!(a.claim(&[claim(&at, "old")], now()).unwrap(), [None]);
    let got = b
        .claim(&[claim(&at, "new"), claim(&once, "new")], now())
        .unwrap();
    assert!(got[0].is_some() && got[1].is_none(), "{got:?}");
    assert_eq!(b.run(&at).unwrap().unwrap().revision, "new");
    assert_eq!(b.run(&once).unwrap().unwrap().revision, "old");
    // a spec without a view row is claimed freely
    let other = due_run(&mut a, "other", "x", 5);
    assert!(b.claim(&[claim(&other, "x")], now()).unwrap()[0].is_some());
}

#[test]
fn one_replica_records_each_call_operation() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let mut a = replica(&schema, "a");
    let mut b = replica(&schema, "b");
    let id = due_run(&mut a, "s", "r1", 5);
    let t = a.claim(&[claim(&id, "r1")], now()).unwrap()[0].unwrap();
    a.write_batch(&[requesting(&id, Some(t))], now()).unwrap()[0]
        .as_ref()
        .unwrap();
    let op = |expected: Option<Timestamp>| Write::CallOp {
        id: id.clone(),
        hang_up: false,
        expected,
    };
    let t1 = Timestamp::from_second(1_800_000_100).unwrap();
    // both read "never sent": the first wins, the second lost the race
    assert!(matches!(
        a.write_batch(&[op(None)], t1).unwrap()[0],
        Ok(Written::CallOp)
    ));
    let out = b.write_batch(&[op(None)], t1).unwrap();
    let Err(e) = &out[0] else { panic!("{out:?}") };
    assert!(LedgerError::is_already_done(e), "{e}");
    // the next one, from what is stored now
    let t2 = Timestamp::from_second(1_800_000_200).unwrap();
    assert!(b.write_batch(&[op(Some(t1))], t2).unwrap()[0].is_ok());
    assert!(a.write_batch(&[op(Some(t1))], t2).unwrap()[0].is_err());
    assert_eq!(
        a.call_promise(&id).unwrap().unwrap().last_keep_alive,
        Some(t2)
    );
    // hang-ups have their own slot
    let hang = Write::CallOp {
        id: id.clone(),
        hang_up: true,
        expected: None,
    };
    assert!(a.write_batch(std::slice::from_ref(&hang), t2).unwrap()[0].is_ok());
    assert!(b.write_batch(&[hang], t2).unwrap()[0].is_err());
}

#[test]
fn replicas_starting_at_once_create_the_schema_once() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (schema, barrier) = (schema.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgLedger::connect(&options(&schema, &format!("r{i}")), now()).map(drop)
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let l = replica(&schema, "check");
    let rows: Vec<i64> = l
        .client_for_tests()
        .query("SELECT version FROM schema_version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, [PG_SCHEMA_VERSION]);
    // a schema from a newer calld is refused with both versions named
    l.client_for_tests()
        .execute("UPDATE schema_version SET version = 99", &[])
        .unwrap();
    let err = PgLedger::connect(&options(&schema, "x"), now()).unwrap_err();
    assert!(err.to_string().contains("newer than this calld"), "{err}");
}

#[test]
fn identity_memory_is_per_replica_and_db_now_is_the_servers_clock() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let mut a = replica(&schema, "a");
    let b = replica(&schema, "b");
    let known = |rev: &str| {
        std::collections::BTreeMap::from([(
            "s".to_string(),
            crate::identity::Known {
                revision: rev.into(),
                file: "s.yaml".into(),
            },
        )])
    };
    a.save_known(&Default::default(), &known("r1")).unwrap();
    assert_eq!(a.known_specs().unwrap(), known("r1"));
    assert!(b.known_specs().unwrap().is_empty());
    // the same save as a write of a batch (the daemon's first batch)
    let out = a
        .write_batch(
            &[crate::ledger::Write::Known {
                before: known("r1"),
                after: known("r2"),
            }],
            now(),
        )
        .unwrap();
    assert!(
        matches!(&out[..], [Ok(crate::ledger::Written::Known)]),
        "{out:?}"
    );
    assert_eq!(a.known_specs().unwrap(), known("r2"));
    assert!(b.known_specs().unwrap().is_empty());
    let before = now();
    let db = a.db_now().unwrap().unwrap();
    let after = now();
    // same machine: the server's clock is this one's (loose bounds)
    assert!(
        db >= before - jiff::SignedDuration::from_secs(60),
        "{db} {before}"
    );
    assert!(
        db <= after + jiff::SignedDuration::from_secs(60),
        "{db} {after}"
    );
    assert!(a.is_shared());
    assert!(a.describe().contains(&schema));
}

#[test]
fn a_listener_hears_the_other_replicas_writes() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let mut a = replica(&schema, "a");
    let mut listener = PgListener::connect(&options(&schema, "b")).unwrap();
    due_run(&mut a, "s", "r1", 5);
    let got = listener.wait(Duration::from_secs(30)).unwrap();
    assert_eq!(got.as_deref(), Some("runs a"));
    // one notification per transaction, not per run
    let batch: Vec<Write> = (0..5)
        .map(|i| {
            let t = ago(5);
            Write::Insert(NewRun {
                key: RunKey::at(format!("b{i}"), t),
                revision: "r1".into(),
                due: t,
                tenant_id: None,
            })
        })
        .collect();
    a.write_batch(&batch, now()).unwrap();
    assert!(listener.wait(Duration::from_secs(30)).unwrap().is_some());
    a.db_now().unwrap(); // a round trip after the commit
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(listener.drain().unwrap(), 0);
}

#[test]
fn the_password_never_shows_in_errors_or_debug_output() {
    let opts = PgOptions {
        // nothing listens on port 1
        url: "postgres://calld:url-sekrit@127.0.0.1:1/calld".into(),
        password: Some("file-sekrit".into()),
        schema: "calld".into(),
        replica_id: "a".into(),
        lease: Duration::from_secs(5),
        tls_ca_file: None,
    };
    let err = PgLedger::connect(&opts, now()).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("127.0.0.1:1/calld"), "{text}");
    assert!(!text.contains("sekrit"), "{text}");
    let debug = format!("{opts:?}");
    assert!(!debug.contains("sekrit"), "{debug}");
    // a malformed url, whose parser might echo it
    let bad = PgOptions {
        url: "postgres://calld:url-sekrit@127.0.0.1:notaport/calld".into(),
        ..opts.clone()
    };
    let err = PgLedger::connect(&bad, now()).unwrap_err();
    assert!(!err.to_string().contains("sekrit"), "{err}");
    // a bad schema name is refused before anything is sent
    let odd = PgOptions {
        schema: "Robert'); DROP".into(),
        ..opts
    };
    assert!(
        PgLedger::connect(&odd, now())
            .unwrap_err()
            .to_string()
            .contains("schema")
    );
}

#[test]
fn tls_is_used_when_asked_and_the_server_is_verified() {
    require_pg!();
    // A CA file that did not sign the server's certificate (or a server
    // without TLS): the connection is refused, never made in clear text.
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca.cert.pem()).unwrap();
    let schemas = Schemas::default();
    let opts = PgOptions {
        tls_ca_file: Some(path),
        ..options(&schemas.fresh(), "a")
    };
    let err = PgLedger::connect(&opts, now()).unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
    // a CA file that holds no certificate is named as such
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = PgLedger::connect(
        &PgOptions {
            tls_ca_file: Some(empty),
            ..opts
        },
        now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
}

/// Figures, not assertions: `cargo test --lib pg_batch_figures -- --ignored --nocapture`.
#[test]
#[ignore]
fn pg_batch_figures() {
    require_pg!();
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    let mut a = replica(&schema, "a");
    for n in [100usize, 1000] {
        let t = ago(5);
        let inserts: Vec<Write> = (0..n)
            .map(|i| {
                Write::Insert(NewRun {
                    key: RunKey::at(format!("n{n}-s{i}"), t),
                    revision: "r1".into(),
                    due: t,
                    tenant_id: None,
                })
            })
            .collect();
        let start = std::time::Instant::now();
        let out = a.write_batch(&inserts, now()).unwrap();
        let insert = start.elapsed();
        let ids: Vec<String> = out
            .into_iter()
            .map(|r| match r.unwrap() {
                Written::Inserted(i) => i.run.id,
                other => panic!("{other:?}"),
            })
            .collect();
        let claims: Vec<Claim> = ids.iter().map(|id| claim(id, "r1")).collect();
        let start = std::time::Instant::now();
        let tokens = a.claim(&claims, now()).unwrap();
        let claimed = start.elapsed();
        let marks: Vec<Write> = ids
            .iter()
            .zip(&tokens)
            .map(|(id, t)| requesting(id, *t))
            .collect();
        let start = std::time::Instant::now();
        a.write_batch(&marks, now()).unwrap();
        let marked = start.elapsed();
        let start = std::time::Instant::now();
        let open = a.open_state().unwrap();
        let read = start.elapsed();
        let start = std::time::Instant::now();
        let held: Vec<(String, u64)> = ids
            .iter()
            .cloned()
            .zip(tokens.iter().map(|t| t.unwrap()))
            .collect();
        assert!(a.renew_leases(&held).unwrap().is_empty());
        let renewed = start.elapsed();
        println!(
            "PG batch of {n}: insert {insert:?}, claim {claimed:?}, requesting {marked:?}, \
             renew {renewed:?}, open_state ({} open runs) {read:?}",
            open.runs.len()
        );
    }
}
