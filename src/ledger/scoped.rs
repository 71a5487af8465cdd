//! The open state of some specs only (issue 12, item 2): a decision about
//! the specs that changed reads only their runs.

use std::collections::BTreeSet;

use super::{Ledger, OpenState, Result};

/// [`Ledger::open_state`] restricted to the runs of `specs` (and their
/// `latest` / `last_slots` entries). The default reads everything and
/// keeps the named specs' part; a store implements it with a query of its
/// own when it can do better.
pub trait OpenStateOf: Ledger {
    fn open_state_of(&self, specs: &BTreeSet<String>) -> Result<OpenState> {
        Ok(restrict(self.open_state()?, specs))
    }
}

/// The part of `state` that is about `specs`.
pub fn restrict(mut state: OpenState, specs: &BTreeSet<String>) -> OpenState {
    state.runs.retain(|r| specs.contains(&r.spec));
    let ids: BTreeSet<&str> = state.runs.iter().map(|r| r.id.as_str()).collect();
    state.progress.retain(|id, _| ids.contains(id.as_str()));
    state.promises.retain(|id, _| ids.contains(id.as_str()));
    state.latest.retain(|s, _| specs.contains(s));
    state.last_slots.retain(|s, _| specs.contains(s));
    state
}
