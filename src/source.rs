//! Watching the calls directory (owned by the source work).
