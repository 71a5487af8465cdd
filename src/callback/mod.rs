//! The notification listener (owned by the callback work).
