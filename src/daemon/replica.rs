//! The daemon's side of a ledger shared by replicas (issue 13,
//! docs/replicas.md).
//!
//! Every replica plans the same runs (their keys are unique in the store,
//! so planning twice inserts once). A due run is placed by the replica that
//! **claims** it: a compare-and-set in the store, timed by the store's
//! clock, that gives a fencing token and a lease. The run is then marked
//! `requesting` with that token (refused if the lease ran out and another
//! replica took the run), and the request leaves only if this replica's own
//! monotonic clock says the lease still holds. A lease keeper renews the
//! leases of the runs in flight and reads the store's clock, by which every
//! decision is timed.
//!
//! Replicas watch their own copies of the calls directory, which lag each
//! other. Each publishes its view of each spec (revision and file time);
//! the newest view wins, and a replica whose copy is not the newest holds
//! that spec: it neither places nor cancels anything of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::ledger::{FencingToken, SpecView};
use crate::spec::Spec;

use super::{SharedLedger, with_ledger};

/// A claim this replica holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub token: FencingToken,
    /// When the claim (or its last renewal) committed, on this machine's
    /// monotonic clock: the lease is counted from here, so a stall of the
    /// process shows as time passed.
    pub since: Instant,
}

/// The claims of the runs this replica is placing, shared with the lease
/// keeper.
pub(crate) type Claims = Arc<Mutex<HashMap<String, Held>>>;

/// What a replica keeps between decisions.
pub(crate) struct Replica {
    pub id: String,
    pub lease: Duration,
    pub poll: Duration,
    pub claims: Claims,
    /// The views this replica published last, by spec name.
    published: HashMap<String, SpecView>,
    /// The newest view of each spec over all replicas (last read).
    pub newest: BTreeMap<String, SpecView>,
    /// Why the shared ledger cannot be used now (unreachable), if so.
    pub problem: Option<String>,
    /// Test hook `CALLD_TEST_STOP_AFTER_CLAIM=<spec>`: stop this process
    /// (SIGSTOP) once, right after a claim of that spec's run commits.
    stop_after_claim: Option<String>,
}

impl Replica {
    pub(crate) fn new(id: String, lease: Duration, poll: Duration) -> Replica {
        Replica {
            id,
            lease,
            poll,
            claims: Arc::new(Mutex::new(HashMap::new())),
            published: HashMap::new(),
            newest: BTreeMap::new(),
            problem: None,
            stop_after_claim: std::env::var("CALLD_TEST_STOP_AFTER_CLAIM")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    /// The views to publish: each valid spec whose revision or file time
    /// changed since the last publication, and a deletion for each spec
    /// published before that is gone now (not merely held: a file that
    /// cannot be read or parsed keeps its last view). File times are read
    /// here, for the changed specs only.
    pub(crate) fn views_to_publish(
        &self,
        specs: &BTreeMap<String, Arc<Spec>>,
        held: &BTreeSet<String>,
        calls_dir: &Path,
        now: Timestamp,
    ) -> Vec<SpecView> {
        let mut out = Vec::new();
        for (name, spec) in specs {
            let published = self.published.get(name);
            if published.is_some_and(|v| v.revision.as_deref() == Some(spec.revision.as_str())) {
                continue;
            }
            out.push(SpecView {
                spec: name.clone(),
                revision: Some(spec.revision.clone()),
                mtime: file_time(&calls_dir.join(&spec.file)).unwrap_or(now),
            });
        }
        for (name, v) in &self.published {
            if v.revision.is_some() && !specs.contains_key(name) && !held.contains(name) {
                out.push(SpecView {
                    spec: name.clone(),
                    revision: None,
                    mtime: now,
                });
            }
        }
        out
    }

    /// The views are in the store.
    pub(crate) fn published(&mut self, views: Vec<SpecView>) {
        for v in views {
            self.published.insert(v.spec.clone(), v);
        }
    }

    /// The specs this replica must hold because another replica's copy is
    /// newer (a different revision, or deleted there), with why.
    pub(crate) fn superseded(
        &self,
        specs: &BTreeMap<String, Arc<Spec>>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, newest) in &self.newest {
            let mine = specs.get(name).map(|s| s.revision.as_str());
            if newest.revision.as_deref() == mine {
                continue;
            }
            let what = match &newest.revision {
                Some(r) => format!("revision {}", short(r)),
                None => "its deletion".to_string(),
            };
            out.insert(
                name.clone(),
                format!(
                    "another replica's copy is newer ({what}, file time {}): left to it until this copy catches up",
                    newest.mtime
                ),
            );
        }
        out
    }

    /// Whether the claim on `id` is still certainly this replica's by its
    /// own clock (a margin of a tenth of the lease for the request to leave).
    pub(crate) fn lease_holds(claims: &Claims, id: &str, lease: Duration) -> bool {
        let claims = claims.lock().unwrap_or_else(|p| p.into_inner());
        claims
            .get(id)
            .is_some_and(|h| h.since.elapsed() + lease / 10 < lease)
    }

    /// The test hook: stops the process once after a claim of `spec`.
    pub(crate) fn after_claim(&mut self, spec: &str) {
        if self.stop_after_claim.as_deref() == Some(spec) {
            self.stop_after_claim = None;
            tracing::warn!(
                spec,
                "test hook: stopping this process (SIGSTOP) right after a claim"
            );
            // SAFETY: raise(3) with a valid signal number has no preconditions.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }
    }
}

/// A replica's own order of runs due together (a hash of both ids).
pub(crate) fn spread(replica: &str, run: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    replica.hash(&mut h);
    run.hash(&mut h);
    h.finish()
}

fn short(r: &str) -> &str {
    r.get(..12).unwrap_or(r)
}

fn file_time(path: &Path) -> Option<Timestamp> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Timestamp::try_from(modified).ok()
}

/// The lease keeper: every third of the lease, renews the leases of the
/// runs this replica is placing (a lost one is dropped from `claims`: its
/// request, if not yet sent, is not sent) and reads the store's clock.
pub(crate) fn spawn_lease_keeper(
    ledger: SharedLedger,
    claims: Claims,
    lease: Duration,
    metrics: crate::metrics::Metrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let period = (lease / 3).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => return,
            }
            let held: Vec<(String, FencingToken)> = {
                let c = claims.lock().unwrap_or_else(|p| p.into_inner());
                c.iter().map(|(id, h)| (id.clone(), h.token)).collect()
            };
            let started = Instant::now();
            let res = with_ledger(&ledger, move |l| {
                let before = crate::clock::local_now();
                let store = l.db_now()?;
                let after = crate::clock::local_now();
                let lost = if held.is_empty() {
                    Vec::new()
                } else {
                    l.renew_leases(&held)?
                };
                Ok((before, store, after, held, lost))
            })
            .await;
            match res {
                Ok((before, store, after, held, lost)) => {
                    if let Some(store) = store {
                        crate::clock::set_store_reading(before, store, after);
                    }
                    metrics.ledger_up(true);
                    let mut c = claims.lock().unwrap_or_else(|p| p.into_inner());
                    for (id, _) in &held {
                        if lost.contains(id) {
                            tracing::warn!(run = %id, "lease lost: another replica holds the run now; its request is not sent from here");
                            c.remove(id);
                        } else if let Some(h) = c.get_mut(id) {
                            h.since = started;
                            metrics.lease_renewed();
                        }
                    }
                }
                Err(e) => {
                    metrics.ledger_up(false);
                    tracing::warn!(error = %e, "lease keeper: the shared ledger is unreachable");
                }
            }
        }
    });
}
