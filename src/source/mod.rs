//! Watching the calls directory: a stream of [`Snapshot`]s of every spec file.
//!
//! Events are never trusted for what they say (ARCHITECTURE, "The source
//! never trusts event paths"). Any inotify event, a rescan flag from the
//! watcher, a queue overflow or a watcher error only marks the directory
//! *dirty*; a debounced rescan then computes the truth:
//!
//! 1. re-resolve the calls directory (it may sit behind a symlink that was
//!    flipped, as git-sync does) and re-watch it when its identity changed;
//! 2. walk it with [`list_spec_files`](crate::spec::files::list_spec_files);
//! 3. `stat` every file and re-read + re-hash (sha256) only the files whose
//!    stat key (length, mtime, ctime, inode, device) changed, or whose ctime
//!    is so recent that a same-tick rewrite could hide behind an equal key.
//!
//! A periodic resync rescans even without events. When inotify runs out of
//! watches (or instances) the source falls back to notify's `PollWatcher`
//! and says so in the log.
//!
//! - [`scan`]: [`Scanner`], one full scan with a stat-key cache (used by
//!   `calld check` and `--once` directly, and by the watcher).
//! - [`pacer`]: the pure timing rules (debounce, max delay, resync, retry).
//! - [`watcher`]: [`watch`], the watcher thread and its [`SourceGuard`].

pub mod pacer;
pub mod scan;
pub mod watcher;

pub use scan::{FileMap, FileSnapshot, RACY_WINDOW, ScanStats, Scanner, Snapshot};
pub use watcher::{SourceGuard, SourceOptions, WatchBackend, watch};
