//! What a store shared by several replicas adds to the ledger (issue 13,
//! docs/replicas.md): claims with leases and fencing tokens, timed by the
//! store's clock, and the revisions each spec has on the replicas' copies
//! of the calls directory.
//!
//! A single-process store (SQLite, which one daemon holds with a file lock)
//! needs none of it: the [`Ledger`](super::Ledger) trait's defaults grant
//! every claim, renew every lease, reap nothing and agree on every view.

use jiff::Timestamp;
use serde::Serialize;

/// A request to claim a due run before it is marked `requesting`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    /// The revision of the claimer's copy of the run's spec: a run planned
    /// from another revision, or a spec whose newest view is another
    /// revision, is not claimed.
    pub revision: String,
}

/// A claim won: the run is this replica's until `lease` runs out, unless
/// renewed ([`Ledger::renew_leases`](super::Ledger::renew_leases)).
/// `token` fences the run's writes: a replica whose lease ran out (it
/// stalled) cannot mark the run `requesting` with an old token.
pub type FencingToken = u64;

/// One replica's view of one spec: the revision its copy holds (`None`:
/// the file is gone) and the file's modification time. The newest view by
/// `mtime` (ties: the greater revision) is the one replicas act on; a
/// replica whose copy is not the newest holds the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView {
    pub spec: String,
    pub revision: Option<String>,
    pub mtime: Timestamp,
}

impl SpecView {
    /// Whether `self` supersedes `other` (the order the store keeps).
    pub fn is_newer_than(&self, other: &SpecView) -> bool {
        (self.mtime, self.revision.as_deref()) > (other.mtime, other.revision.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rev: Option<&str>, secs: i64) -> SpecView {
        SpecView {
            spec: "s".into(),
            revision: rev.map(str::to_string),
            mtime: Timestamp::from_second(secs).unwrap(),
        }
    }

    #[test]
    fn the_later_file_wins_and_ties_go_to_the_greater_revision() {
        assert!(v(Some("a"), 2).is_newer_than(&v(Some("b"), 1)));
        assert!(!v(Some("b"), 1).is_newer_than(&v(Some("a"), 2)));
        assert!(v(Some("b"), 1).is_newer_than(&v(Some("a"), 1)));
        // a deletion observed later wins; at the same time a file wins
        assert!(v(None, 3).is_newer_than(&v(Some("a"), 2)));
        assert!(v(Some("a"), 3).is_newer_than(&v(None, 3)));
        assert!(!v(Some("a"), 3).is_newer_than(&v(Some("a"), 3)));
    }
}
