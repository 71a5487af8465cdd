//! The open state of some specs only (issue 12, item 2): a decision about
//! the specs that changed reads only their runs.

use std::collections::BTreeSet;

use super::OpenState;

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
