//! What only a shared ledger does (issue 13): claims with leases and
//! fencing tokens, lease renewal, reaping of the requests of a stopped
//! replica, the shared views of the specs, and the database clock. Every
//! lease is timed by the database's `now()`, never a replica's clock.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::cache::Q;
use super::store::{query_runs, reload, us};
use super::{PgLedger, notify};
use crate::ledger::{Claim, FencingToken, LedgerError, Result, Run, SpecView};

/// The reason recorded on a run reaped by [`PgLedger::reap_expired`].
pub fn reaped_reason(owner: &str) -> String {
    format!("replica {owner} stopped while the request was in flight")
}

/// Up to this long after the database's `now()` a run counts as due
/// (the replicas' clocks are offset to the database's, not exact).
const DUE_TOLERANCE_US: i64 = 1_000_000;

impl PgLedger {
    /// Claims each run (one compare-and-set per run, one transaction):
    /// `Some(fencing token)` when won. A claim is won iff the run is
    /// `scheduled`, due (`due_at <= db now + 1 s`), its lease is free,
    /// expired or already this replica's, it was planned from
    /// `claim.revision`, and the newest shared view of its spec has that
    /// revision (or the spec has no view). The lease runs until `db now +
    /// lease`.
    ///
    /// One exception to "planned from `claim.revision`": a time-slot (or
    /// triggered) run planned from an older revision is claimed by a
    /// replica whose revision the newest view confirms, and takes that
    /// revision (the slot is the same; SQLite places it with the spec as it
    /// is now, too). A revision slot is its revision: never re-labelled.
    pub fn claim(&mut self, claims: &[Claim], now: Timestamp) -> Result<Vec<Option<FencingToken>>> {
        let _ = now;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let me = self.ctx();
        let lease = me.lease_us();
        // Rows are locked in id order, whatever the order asked: two
        // replicas claiming overlapping sets never deadlock.
        let mut order: Vec<usize> = (0..claims.len()).collect();
        order.sort_by(|a, b| claims[*a].id.cmp(&claims[*b].id));
        self.write(|tx| {
            let mut out = vec![None; claims.len()];
            for i in order {
                let c = &claims[i];
                let row = tx.query_opt(
                    "UPDATE runs r SET claim_owner = $2, claim_token = nextval('claim_tokens'), \
                        lease_until = now() + ($3::bigint * interval '1 microsecond'), \
                        revision = $4 \
                     WHERE r.id = $1 AND r.state = 'scheduled' \
                       AND r.due_at <= (extract(epoch from now()) * 1000000)::bigint + $5::bigint \
                       AND (r.lease_until IS NULL OR r.lease_until <= now() OR r.claim_owner = $2) \
                       AND NOT EXISTS (SELECT 1 FROM spec_views v WHERE v.spec = r.spec \
                                       AND v.revision IS DISTINCT FROM $4) \
                       AND (r.revision = $4 OR (r.slot NOT LIKE 'rev:%' AND EXISTS \
                            (SELECT 1 FROM spec_views v WHERE v.spec = r.spec AND v.revision = $4))) \
                     RETURNING r.claim_token",
                    &[&c.id, &me.replica, &lease, &c.revision, &DUE_TOLERANCE_US],
                )?;
                out[i] = row.map(|r| r.get::<_, i64>(0) as u64);
            }
            if out.iter().any(Option::is_some) {
                notify(tx, me.replica, "claims")?;
            }
            Ok(out)
        })
    }

    /// Extends the lease of each `(run id, token)` still this replica's
    /// (token matches, lease not expired, run `scheduled` or
    /// `requesting`). Returns the ids that are no longer ours.
    pub fn renew_leases(&mut self, held: &[(String, FencingToken)]) -> Result<Vec<String>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
        let tokens: Vec<i64> = held
            .iter()
            .map(|(_, t)| i64::try_from(*t).unwrap_or(i64::MAX))
            .collect();
        let me = self.ctx();
        let renewed: std::collections::HashSet<String> = self
            .conn()?
            .query(
                "UPDATE runs r SET lease_until = now() + ($4::bigint * interval '1 microsecond') \
                 FROM unnest($1::text[], $2::bigint[]) AS h(id, token) \
                 WHERE r.id = h.id AND r.claim_token = h.token AND r.claim_owner = $3 \
                   AND r.lease_until > now() AND r.state IN ('scheduled', 'requesting') \
                 RETURNING r.id",
                &[&ids, &tokens, &me.replica, &me.lease_us()],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(held
            .iter()
            .filter(|(id, _)| !renewed.contains(id))
            .map(|(id, _)| id.clone())
            .collect())
    }

    /// Finishes as `unknown` every `requesting` run whose lease expired
    /// (its replica died or stalled): the request may have reached Graph,
    /// so it is never sent again; a later notification reopens the run.
    /// Its in-flight attempt becomes `unknown` too. Returns the reaped runs.
    pub fn reap_expired(&mut self, now: Timestamp) -> Result<Vec<Run>> {
        let me = self.replica_id.clone();
        self.write(|tx| {
            let rows = tx.query(
                "SELECT seq, id, COALESCE(claim_owner, '(unknown)') FROM runs \
                 WHERE state = 'requesting' AND lease_until IS NOT NULL AND lease_until < now() \
                 ORDER BY seq FOR UPDATE SKIP LOCKED",
                &[],
            )?;
            let mut reaped = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = row.get(0);
                let id: String = row.get(1);
                let reason = reaped_reason(row.get::<_, &str>(2));
                tx.execute(
                    "UPDATE attempts SET disposition = 'unknown', \
                     error_message = COALESCE(error_message, $2) \
                     WHERE run_seq = $1 AND disposition IS NULL",
                    &[&seq, &reason],
                )?;
                tx.execute(
                    "UPDATE runs SET state = 'finished', outcome = 'unknown', reason = $2, \
                     updated_at = $3, lease_until = NULL WHERE seq = $1",
                    &[&seq, &reason, &us(now)],
                )?;
                reaped.push(reload(tx, &id)?);
            }
            if !reaped.is_empty() {
                notify(tx, &me, "reaped")?;
            }
            Ok(reaped)
        })
    }

    /// Publishes this replica's views of its specs: each is kept only if
    /// newer than the stored one (greatest mtime; tie: the greater revision
    /// text, a deletion lowest).
    pub fn publish_views(&mut self, views: &[SpecView]) -> Result<()> {
        if views.is_empty() {
            return Ok(());
        }
        let me = self.replica_id.clone();
        self.write(|tx| {
            for v in views {
                tx.execute(
                    "INSERT INTO spec_views (spec, revision, mtime, replica, updated) \
                     VALUES ($1, $2, $3, $4, now()) \
                     ON CONFLICT (spec) DO UPDATE SET revision = excluded.revision, \
                       mtime = excluded.mtime, replica = excluded.replica, updated = now() \
                     WHERE (excluded.mtime, excluded.revision IS NOT NULL, \
                            COALESCE(excluded.revision, '')) \
                         > (spec_views.mtime, spec_views.revision IS NOT NULL, \
                            COALESCE(spec_views.revision, ''))",
                    &[&v.spec, &v.revision, &us(v.mtime), &me],
                )?;
            }
            Ok(())
        })
    }

    /// The newest shared view of every spec, by name.
    pub fn newest_views(&mut self) -> Result<BTreeMap<String, SpecView>> {
        self.conn()?
            .query("SELECT spec, revision, mtime FROM spec_views", &[])?
            .iter()
            .map(|r| {
                let spec: String = r.get(0);
                let mtime =
                    Timestamp::from_microsecond(r.get(2)).map_err(|e| LedgerError::BadData {
                        detail: format!("spec_views.mtime of {spec:?}: {e}"),
                    })?;
                Ok((
                    spec.clone(),
                    SpecView {
                        spec,
                        revision: r.get(1),
                        mtime,
                    },
                ))
            })
            .collect()
    }

    /// The database's clock (`now()`), at microsecond precision.
    pub fn db_now(&mut self) -> Result<Option<Timestamp>> {
        let v: i64 = self
            .conn()?
            .query_one(
                "SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint",
                &[],
            )?
            .get(0);
        Timestamp::from_microsecond(v)
            .map(Some)
            .map_err(|e| LedgerError::BadData {
                detail: format!("database clock: {e}"),
            })
    }

    /// The runs this replica holds a live claim on (for tests and status).
    pub fn claimed_runs(&self) -> Result<Vec<Run>> {
        query_runs(
            &mut *self.conn()?,
            "SELECT seq, id, spec, slot, revision, scheduled_at, due_at, state, outcome, \
             reason, call_id, tenant_id, result_code, result_subcode, result_message, \
             established_at, created_at, updated_at FROM runs \
             WHERE claim_owner = $1 AND lease_until > now() ORDER BY seq",
            &[&self.replica_id],
        )
    }
}
