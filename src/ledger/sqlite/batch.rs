//! [`Ledger::write_batch`] and [`Ledger::open_state`] on SQLite: one
//! IMMEDIATE transaction for the whole batch (one fsync at commit), a
//! savepoint per write so that a refused write is undone alone.

use jiff::Timestamp;
use rusqlite::TransactionBehavior;

use super::extras::{mark_requesting_with_in, record_call_op_in, record_create_in};
use super::{SqliteLedger, finish_in, insert_run_in, retry_later_in};
use crate::ledger::batch::{BatchResult, OpenState, Write, Written};
use crate::ledger::{Ledger, LedgerError, Result, RunProgress};

impl SqliteLedger {
    pub(super) fn write_batch_impl(&mut self, batch: &[Write], now: Timestamp) -> BatchResult {
        if self.read_only {
            return Err(LedgerError::ReadOnly);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if batch.iter().any(|w| matches!(w, Write::Known { .. })) {
            self.identity_tables()?;
        }
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(batch.len());
        for write in batch {
            let sp = tx.savepoint()?;
            let result = (|| -> Result<Written> {
                Ok(match write {
                    Write::Insert(new) => Written::Inserted(insert_run_in(&sp, new, now)?),
                    Write::Record { run, finish } => {
                        let ins = insert_run_in(&sp, run, now)?;
                        Written::Recorded(if ins.created {
                            Some(finish_in(&sp, &ins.run.id, finish, now)?)
                        } else {
                            None
                        })
                    }
                    Write::Finish { id, finish } => {
                        Written::Finished(finish_in(&sp, id, finish, now)?)
                    }
                    Write::Retry { id, due, reason } => {
                        Written::Retried(retry_later_in(&sp, id, *due, reason, now)?)
                    }
                    // one process holds the file: every claim is its own
                    Write::Requesting {
                        id,
                        hangup_after,
                        claim: _,
                    } => Written::Requesting(mark_requesting_with_in(&sp, id, *hangup_after, now)?),
                    Write::CallOp {
                        id,
                        hang_up,
                        expected,
                    } => {
                        record_call_op_in(&sp, id, *hang_up, Some(*expected), now)?;
                        Written::CallOp
                    }
                    Write::Create {
                        id,
                        first,
                        steps,
                        end,
                    } => Written::Created(record_create_in(&sp, id, *first, steps, end, now)?),
                    Write::Known { before, after } => {
                        super::identity::save_known_in(&sp, before, after)?;
                        Written::Known
                    }
                })
            })();
            if result.is_ok() {
                sp.commit()?;
            }
            // dropped without commit: rolled back
            out.push(result);
        }
        tx.commit()?;
        Ok(out)
    }

    pub(super) fn open_state_impl(&self) -> Result<OpenState> {
        // One read transaction: every part of the answer from one snapshot.
        let tx = self.conn.unchecked_transaction()?;
        let runs = self.open_runs()?;
        let mut progress = self.open_run_progress()?;
        let latest = self
            .latest_runs()?
            .into_iter()
            .map(|r| (r.spec.clone(), r))
            .collect();
        let last_slots = self.last_slots()?;
        let promises = self.call_promises()?;
        for (id, t) in self.not_before_times()? {
            progress
                .entry(id)
                .or_insert_with(RunProgress::default)
                .not_before = Some(t);
        }
        tx.finish()?;
        Ok(OpenState {
            runs,
            progress,
            latest,
            last_slots,
            promises,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use proptest::prelude::*;

    use crate::ledger::postgres::testing::{Schemas, TestStore, pg_available, store_test};
    use crate::ledger::{
        CreateEnd, Finish, Ledger, LedgerError, NewRun, Outcome, RunKey, RunState, SqliteLedger,
        Write, Written,
    };

    fn t(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn new_at(spec: &str, secs: i64) -> NewRun {
        NewRun {
            key: RunKey::at(spec, t(secs)),
            revision: "r1".into(),
            due: t(secs),
            tenant_id: None,
        }
    }

    store_test! {
    fn one_batch_inserts_finishes_and_marks_many_runs(mem) {
        let mut l = mem();
        let inserts: Vec<Write> = (0..300)
            .map(|i| Write::Insert(new_at(&format!("s{i}"), 10)))
            .collect();
        let out = l.write_batch(&inserts, t(0)).unwrap();
        let ids: Vec<String> = out
            .into_iter()
            .map(|r| match r.unwrap() {
                Written::Inserted(ins) => {
                    assert!(ins.created);
                    ins.run.id
                }
                other => panic!("{other:?}"),
            })
            .collect();
        let marks: Vec<Write> = ids
            .iter()
            .map(|id| Write::Requesting {
                id: id.clone(),
                hangup_after: Some(Duration::from_secs(60)),
                claim: None,
            })
            .collect();
        let out = l.write_batch(&marks, t(10)).unwrap();
        assert!(out.iter().all(|r| matches!(r, Ok(Written::Requesting(1)))));
        let open = l.open_state().unwrap();
        assert_eq!(open.runs.len(), 300);
        assert!(open.runs.iter().all(|r| r.state == RunState::Requesting));
        assert_eq!(open.promises.len(), 300);
        assert!(
            open.promises
                .values()
                .all(|p| p.hangup_after == Some(Duration::from_secs(60)))
        );
        assert!(open.progress.values().all(|p| p.tries == 1 && p.in_flight));
    }
    }

    store_test! {
    fn a_refused_write_skips_only_itself(mem) {
        let mut l = mem();
        let a = l.insert_run(&new_at("a", 10), t(0)).unwrap().run;
        let b = l.insert_run(&new_at("b", 10), t(0)).unwrap().run;
        l.finish(&a.id, &Finish::new(Outcome::Canceled), t(1))
            .unwrap();
        let out = l
            .write_batch(
                &[
                    // `a` moved meanwhile (canceled): refused
                    Write::Requesting {
                        id: a.id.clone(),
                        hangup_after: None,
                        claim: None,
                    },
                    Write::Requesting {
                        id: b.id.clone(),
                        hangup_after: None,
                        claim: None,
                    },
                    // marking `b` twice in one batch: the second is refused
                    Write::Requesting {
                        id: b.id.clone(),
                        hangup_after: None,
                        claim: None,
                    },
                    Write::Finish {
                        id: "nosuchrun".into(),
                        finish: Finish::new(Outcome::Missed),
                    },
                    Write::Record {
                        run: new_at("c", 5),
                        finish: Finish::new(Outcome::Missed).reason("down"),
                    },
                ],
                t(10),
            )
            .unwrap();
        assert!(
            matches!(out[0], Err(LedgerError::Refused { .. })),
            "{out:?}"
        );
        assert!(matches!(out[1], Ok(Written::Requesting(1))), "{out:?}");
        assert!(
            matches!(out[2], Err(LedgerError::Refused { .. })),
            "{out:?}"
        );
        assert!(
            matches!(out[3], Err(LedgerError::UnknownRun { .. })),
            "{out:?}"
        );
        let Ok(Written::Recorded(Some(c))) = &out[4] else {
            panic!("{out:?}")
        };
        assert_eq!(c.outcome, Some(Outcome::Missed));
        assert_eq!(
            l.run(&a.id).unwrap().unwrap().outcome,
            Some(Outcome::Canceled)
        );
        assert_eq!(l.run(&b.id).unwrap().unwrap().state, RunState::Requesting);
        assert_eq!(l.attempts(&b.id).unwrap().len(), 1);
        // recorded again: the key exists, nothing written
        let again = l
            .write_batch(
                &[Write::Record {
                    run: new_at("c", 5),
                    finish: Finish::new(Outcome::Missed),
                }],
                t(11),
            )
            .unwrap();
        assert!(matches!(again[0], Ok(Written::Recorded(None))));
    }
    }

    #[test]
    fn a_read_only_ledger_refuses_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        drop(SqliteLedger::open(&path, t(0)).unwrap());
        let mut ro = SqliteLedger::open_read_only(&path).unwrap();
        let res = ro.write_batch(&[Write::Insert(new_at("a", 1))], t(0));
        assert!(matches!(res, Err(LedgerError::ReadOnly)));
    }

    /// An operation on one of a few run keys, for the property below.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Recorded(u8),
        Finish(u8, bool),
        Retry(u8),
        Requesting(u8),
        Call(u8, bool),
        /// A create request's result: placed, else back to `scheduled`.
        Create(u8, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = 0u8..4;
        prop_oneof![
            k.clone().prop_map(Op::Insert),
            k.clone().prop_map(Op::Recorded),
            (k.clone(), any::<bool>()).prop_map(|(k, b)| Op::Finish(k, b)),
            k.clone().prop_map(Op::Retry),
            k.clone().prop_map(Op::Requesting),
            (k.clone(), any::<bool>()).prop_map(|(k, b)| Op::Call(k, b)),
            (k, any::<bool>()).prop_map(|(k, b)| Op::Create(k, b)),
        ]
    }

    fn key(k: u8) -> NewRun {
        new_at(&format!("s{k}"), 100 + i64::from(k))
    }

    /// The write of `op`, given the run ids known so far (by key).
    fn write_of(op: &Op, ids: &BTreeMap<u8, String>) -> Option<Write> {
        let id = |k: &u8| ids.get(k).cloned();
        Some(match op {
            Op::Insert(k) => Write::Insert(key(*k)),
            Op::Recorded(k) => Write::Record {
                run: key(*k),
                finish: Finish::new(Outcome::Missed).reason("down"),
            },
            Op::Finish(k, done) => Write::Finish {
                id: id(k)?,
                finish: Finish::new(if *done {
                    Outcome::Completed
                } else {
                    Outcome::Canceled
                }),
            },
            Op::Retry(k) => Write::Retry {
                id: id(k)?,
                due: t(500),
                reason: "again".into(),
            },
            Op::Requesting(k) => Write::Requesting {
                id: id(k)?,
                hangup_after: None,
                claim: None,
            },
            // never sent before: a second one for the same call is refused
            Op::Call(k, hang_up) => Write::CallOp {
                id: id(k)?,
                hang_up: *hang_up,
                expected: None,
            },
            Op::Create(k, placed) => Write::Create {
                id: id(k)?,
                first: 1,
                steps: Vec::new(),
                end: if *placed {
                    CreateEnd::Placed {
                        call_id: format!("call-{k}"),
                    }
                } else {
                    CreateEnd::Requeue {
                        retry_after: Some(Duration::from_secs(3)),
                        error: "busy".into(),
                    }
                },
            },
        })
    }

    /// The single method a write stands for.
    fn apply_one(l: &mut impl TestStore, w: &Write) -> Result<(), String> {
        let now = t(50);
        let r = match w {
            Write::Insert(n) => l.insert_run(n, now).map(drop),
            Write::Record { run, finish } => l.insert_run(run, now).and_then(|ins| {
                if ins.created {
                    l.finish(&ins.run.id, finish, now).map(drop)
                } else {
                    Ok(())
                }
            }),
            Write::Finish { id, finish } => l.finish(id, finish, now).map(drop),
            Write::Retry { id, due, reason } => l.retry_later(id, *due, reason, now).map(drop),
            Write::Requesting {
                id, hangup_after, ..
            } => l.mark_requesting_with(id, *hangup_after, now).map(drop),
            Write::CallOp {
                id,
                hang_up,
                expected,
            } => l.record_call_op_if(id, *hang_up, *expected, now),
            Write::Create {
                id,
                first,
                steps,
                end,
            } => l.record_create(id, *first, steps, end, now).map(drop),
            Write::Known { before, after } => l.save_known(before, after),
        };
        r.map_err(|e| e.to_string())
    }

    /// What is stored about each key, without the random ids.
    type Stored = (String, RunState, Option<Outcome>, Option<String>, u32);

    fn stored(l: &impl Ledger) -> Vec<Stored> {
        (0..4u8)
            .filter_map(|k| l.run_by_key(&key(k).key).unwrap())
            .map(|r| {
                let attempts = l.attempts(&r.id).unwrap().len() as u32;
                (r.spec, r.state, r.outcome, r.reason, attempts)
            })
            .collect()
    }

    /// A batch does what its writes, applied one by one with the single
    /// methods, do: the same answers and the same stored runs.
    fn batch_equals_one_by_one(
        batched: &mut impl TestStore,
        single: &mut impl TestStore,
        first: &[Op],
        second: &[Op],
    ) -> Result<(), TestCaseError> {
        for ops in [first, second] {
            let ids_b: BTreeMap<u8, String> = (0..4u8)
                .filter_map(|k| batched.run_by_key(&key(k).key).unwrap().map(|r| (k, r.id)))
                .collect();
            let ids_s: BTreeMap<u8, String> = (0..4u8)
                .filter_map(|k| single.run_by_key(&key(k).key).unwrap().map(|r| (k, r.id)))
                .collect();
            let wb: Vec<Write> = ops.iter().filter_map(|o| write_of(o, &ids_b)).collect();
            let ws: Vec<Write> = ops.iter().filter_map(|o| write_of(o, &ids_s)).collect();
            let out = batched.write_batch(&wb, t(50)).unwrap();
            let answers_b: Vec<bool> = out.iter().map(|r| r.is_ok()).collect();
            let answers_s: Vec<bool> = ws.iter().map(|w| apply_one(single, w).is_ok()).collect();
            prop_assert_eq!(answers_b, answers_s);
            prop_assert_eq!(stored(batched), stored(single));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn a_batch_equals_its_writes_one_by_one(
            first in proptest::collection::vec(op(), 0..6),
            second in proptest::collection::vec(op(), 0..12),
        ) {
            let mut batched = SqliteLedger::open_in_memory().unwrap();
            let mut single = SqliteLedger::open_in_memory().unwrap();
            batch_equals_one_by_one(&mut batched, &mut single, &first, &second)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The same across the two stores: a PostgreSQL batch does what the
        /// SQLite single methods do.
        #[test]
        fn a_postgres_batch_equals_the_sqlite_writes_one_by_one(
            first in proptest::collection::vec(op(), 0..6),
            second in proptest::collection::vec(op(), 0..12),
        ) {
            if pg_available(module_path!()) {
                let schemas = Schemas::default();
                let mut batched = schemas.ledger();
                let mut single = SqliteLedger::open_in_memory().unwrap();
                batch_equals_one_by_one(&mut batched, &mut single, &first, &second)?;
            }
        }
    }
}
