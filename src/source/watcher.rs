//! The watcher thread: notify events → dirty → debounced rescan → snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::Watcher as _;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventHandler, DebounceEventResult};

use super::pacer::Pacer;
use super::scan::{RACY_WINDOW, Scanner, Snapshot};

/// How often a missing calls directory is looked for again.
const ROOT_RETRY: Duration = Duration::from_secs(1);
/// The watcher thread wakes at least this often to notice a dropped receiver.
const CHECK_CLOSED_EVERY: Duration = Duration::from_secs(1);
/// How long the published snapshot keeps the bytes of the files its scan
/// read: then the channel's copy is swapped for the scanner's, which has
/// none (issue 12: no file bytes kept after parsing). A receiver that takes
/// it later reads what it needs again (`scan::read_again`, checked against
/// the hash).
const BYTES_KEPT_FOR: Duration = Duration::from_secs(2);
/// Floor of the resync interval (0 would rescan in a loop).
const MIN_RESYNC: Duration = Duration::from_millis(100);

/// Which notification backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchBackend {
    /// inotify (or the platform's native watcher); falls back to polling
    /// when it cannot be created or runs out of watches.
    #[default]
    Auto,
    /// notify's `PollWatcher` (network filesystems, where inotify sees nothing).
    Poll,
}

/// How the source watches.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Time from the last event to the rescan (`daemon.debounce`, default 20 ms).
    pub debounce: Duration,
    /// A full rescan even without events (`daemon.resyncInterval`, default 60 s).
    pub resync_interval: Duration,
    /// Longest wait after the first event when events keep coming (default 2 s).
    pub max_delay: Duration,
    /// Interval of the poll watcher, when polling (default 2 s).
    pub poll_interval: Duration,
    /// Which watcher to use (default: inotify, polling as a fallback).
    pub backend: WatchBackend,
    /// A file modified but not closed is read once it has been quiet this
    /// long (`daemon.settle`, default 1 s).
    pub settle: Duration,
    /// The first scan holds files modified within `settle` before it (no
    /// event says whether they were closed). On for the daemon
    /// ([`SourceOptions::from_config`]); off for `run --once`, whose first
    /// snapshot is its only one, and by default.
    pub hold_recent_at_start: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            debounce: Duration::from_millis(20),
            resync_interval: Duration::from_secs(60),
            max_delay: Duration::from_secs(2),
            poll_interval: Duration::from_secs(2),
            backend: WatchBackend::Auto,
            settle: Duration::from_secs(1),
            hold_recent_at_start: false,
        }
    }
}

impl SourceOptions {
    /// The options from the configuration's `daemon:` section.
    pub fn from_config(daemon: &crate::config::DaemonConfig) -> Self {
        SourceOptions {
            debounce: daemon.debounce,
            resync_interval: daemon.resync_interval,
            settle: daemon.settle,
            hold_recent_at_start: true,
            ..SourceOptions::default()
        }
    }

    /// The quiet time before a rescan: all of the debounce. Events go
    /// from notify straight to the watcher thread, whose pacer debounces
    /// them: no debouncer thread ticking while the directory is idle
    /// (issue 12; it woke every 10 ms at the default before).
    fn quiet(&self) -> Duration {
        self.debounce
    }
}

/// What the notify side tells the watcher thread.
#[derive(Debug)]
enum Msg {
    /// Something changed (any event, including a rescan flag), with what
    /// the events say about files being written (see [`writes_of`]).
    Dirty(Dirty),
    /// The watcher reported an error; rescan to be safe.
    WatcherError(String),
    /// Out of inotify watches or instances: switch to polling.
    WatchLimit(String),
    /// Rescan now (asked by the owner).
    Rescan,
    /// The guard was dropped.
    Stop,
}

/// What a batch of events says.
#[derive(Debug)]
struct Dirty {
    /// Files being written or done (see [`writes_of`]).
    writes: Vec<(PathBuf, Write)>,
    /// Every path the events name: where the next rescan looks.
    paths: Vec<PathBuf>,
    /// An event asked for a full rescan (a queue overflow).
    full: bool,
}

/// Turns what the debouncer delivers into a message, or nothing for events
/// that cannot mean a change (opens and read-only closes, which our own
/// rescans cause).
fn classify(result: DebounceEventResult) -> Option<Msg> {
    match result {
        Ok(events) => events
            .iter()
            .any(|e| e.need_rescan() || may_change(&e.kind))
            .then(|| {
                Msg::Dirty(Dirty {
                    writes: writes_of(&events),
                    paths: events
                        .iter()
                        .filter(|e| may_change(&e.kind))
                        .flat_map(|e| e.paths.iter().cloned())
                        .collect(),
                    full: events.iter().any(|e| e.need_rescan()),
                })
            }),
        Err(errors) => {
            if let Some(e) = errors.iter().find(|e| is_watch_limit(e)) {
                return Some(Msg::WatchLimit(e.to_string()));
            }
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            Some(Msg::WatcherError(text.join("; ")))
        }
    }
}

/// What an event says about a file's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// Created or modified: may be half-written until closed.
    Open,
    /// Closed after writing (`IN_CLOSE_WRITE`), renamed into place, or
    /// removed: complete (or gone), read at once.
    Done,
}

/// Per file, in event order, whether it is being written or done. Only a
/// speed-up: a file never closed (a poll watcher, `truncate`) settles after
/// `daemon.settle` without events.
fn writes_of(events: &[notify_debouncer_full::DebouncedEvent]) -> Vec<(PathBuf, Write)> {
    use notify::event::{ModifyKind, RenameMode};
    let mut out = Vec::new();
    for e in events {
        let write = match &e.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Write::Done,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => Write::Done,
            EventKind::Remove(_) => Write::Done,
            EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_))
            | EventKind::Modify(ModifyKind::Any) => Write::Open,
            _ => continue,
        };
        // a rename names the old path first: the new one is the file now
        for p in &e.paths {
            out.push((p.clone(), write));
        }
    }
    out
}

fn may_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether a notify error means "no more inotify watches or instances".
fn is_watch_limit(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => is_limit_io(io),
        _ => false,
    }
}

fn is_limit_io(io: &std::io::Error) -> bool {
    // ENOSPC: max_user_watches; EMFILE: max_user_instances (or out of fds)
    const ENOSPC: i32 = 28;
    const EMFILE: i32 = 24;
    cfg!(target_os = "linux") && matches!(io.raw_os_error(), Some(ENOSPC) | Some(EMFILE))
}

/// Forwards the debouncer's results to the watcher thread.
struct Forward(mpsc::Sender<Msg>);

impl DebounceEventHandler for Forward {
    fn handle_event(&mut self, result: DebounceEventResult) {
        if let Some(msg) = classify(result) {
            let _ = self.0.send(msg);
        }
    }
}

/// notify's events, one at a time, as a batch of one (the pacer debounces).
impl notify::EventHandler for Forward {
    fn handle_event(&mut self, event: notify::Result<notify::Event>) {
        let result = match event {
            Ok(e) => Ok(vec![notify_debouncer_full::DebouncedEvent::new(
                e,
                Instant::now(),
            )]),
            Err(e) => Err(vec![e]),
        };
        DebounceEventHandler::handle_event(self, result);
    }
}

/// The notify watcher in use.
enum Backend {
    Native(RecommendedWatcher),
    Poll(PollWatcher),
}

impl Backend {
    fn native(_opts: &SourceOptions, tx: &mpsc::Sender<Msg>) -> notify::Result<Backend> {
        RecommendedWatcher::new(Forward(tx.clone()), notify::Config::default()).map(Backend::Native)
    }

    fn poll(opts: &SourceOptions, tx: &mpsc::Sender<Msg>) -> anyhow::Result<Backend> {
        let config = notify::Config::default().with_poll_interval(opts.poll_interval);
        Ok(Backend::Poll(PollWatcher::new(
            Forward(tx.clone()),
            config,
        )?))
    }

    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        match self {
            Backend::Native(d) => d.watch(path, mode),
            Backend::Poll(d) => d.watch(path, mode),
        }
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        match self {
            Backend::Native(d) => d.unwatch(path),
            Backend::Poll(d) => d.unwatch(path),
        }
    }

    fn is_poll(&self) -> bool {
        matches!(self, Backend::Poll(_))
    }
}

/// A folder's identity, to notice one replaced under the same path.
type DirId = Option<(u64, u64)>;

#[cfg(unix)]
fn dir_id(path: &Path) -> DirId {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_id(path: &Path) -> DirId {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

/// The folders to watch, computed afresh on every rescan:
/// - the canonical calls directory, recursively;
/// - for every component of the configured path that is a symlink, its
///   (canonical) parent, non-recursively: a flip of that symlink (git-sync's
///   `current`) is an event there, not in the old target we watch;
/// - the folders of symlinked spec files whose target lies outside.
fn desired_watches(
    dir: &Path,
    canonical_root: Option<&Path>,
    outside: impl IntoIterator<Item = PathBuf>,
) -> BTreeMap<PathBuf, RecursiveMode> {
    let mut want = BTreeMap::new();
    let mut add = |path: PathBuf, mode: RecursiveMode| {
        let entry = want.entry(path).or_insert(mode);
        if mode == RecursiveMode::Recursive {
            *entry = mode;
        }
    };
    if let Some(root) = canonical_root {
        add(root.to_path_buf(), RecursiveMode::Recursive);
    }
    if let Ok(abs) = std::path::absolute(dir) {
        for component in abs.ancestors() {
            let is_link = std::fs::symlink_metadata(component)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if let (true, Some(parent)) = (is_link, component.parent())
                && let Ok(parent) = std::fs::canonicalize(parent)
            {
                add(parent, RecursiveMode::NonRecursive);
            }
        }
    }
    for d in outside {
        add(d, RecursiveMode::NonRecursive);
    }
    want
}

/// The watches in place.
#[derive(Default)]
struct WatchSet {
    active: BTreeMap<PathBuf, (RecursiveMode, DirId)>,
}

impl WatchSet {
    /// Makes the active watches the desired ones; a folder replaced under the
    /// same path is watched again. Returns how many watches were added, or the
    /// watch-limit error.
    fn sync(
        &mut self,
        backend: &mut Backend,
        desired: BTreeMap<PathBuf, RecursiveMode>,
    ) -> Result<usize, notify::Error> {
        let desired: BTreeMap<PathBuf, (RecursiveMode, DirId)> = desired
            .into_iter()
            .map(|(p, m)| {
                let id = dir_id(&p);
                (p, (m, id))
            })
            .collect();
        let stale: Vec<PathBuf> = self
            .active
            .iter()
            .filter(|(p, w)| desired.get(*p) != Some(*w))
            .map(|(p, _)| p.clone())
            .collect();
        for path in stale {
            self.active.remove(&path);
            if let Err(e) = backend.unwatch(&path) {
                // the folder is gone, and its watch with it
                tracing::trace!(path = %path.display(), error = %e, "unwatch");
            }
            tracing::debug!(path = %path.display(), "stopped watching");
        }
        let mut added = 0;
        for (path, (mode, id)) in desired {
            if self.active.contains_key(&path) || id.is_none() {
                continue;
            }
            match backend.watch(&path, mode) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), ?mode, "watching");
                    self.active.insert(path, (mode, id));
                    added += 1;
                }
                Err(e) if is_watch_limit(&e) => return Err(e),
                Err(e) => {
                    // retried on the next rescan; the resync covers the gap
                    tracing::warn!(path = %path.display(), error = %e, "cannot watch folder");
                }
            }
        }
        Ok(added)
    }
}

/// Everything the watcher thread owns.
struct Source {
    opts: SourceOptions,
    scanner: Scanner,
    pacer: Pacer,
    backend: Backend,
    watches: WatchSet,
    /// A clone for backends created later (the poll fallback).
    msg_tx: mpsc::Sender<Msg>,
    /// Shared with the guard: whether we poll.
    polling: Arc<AtomicBool>,
    /// Files being written (modified, not closed yet), with their latest
    /// change: held until closed or quiet for `settle`.
    writing: HashMap<PathBuf, Instant>,
    /// Paths named by events since the last scan: the next scan looks
    /// only there (docs/watching.md, "Cost of a change").
    targets: BTreeSet<PathBuf>,
    /// The next scan is a full one (first scan, overflow, watcher error,
    /// requested, a watch added, the directory unreadable).
    full_next: bool,
}

/// More paths than this in one rescan: a full scan is as cheap.
const MAX_TARGETS: usize = 4096;

impl Source {
    /// Re-computes the watches; on running out of inotify watches, switches
    /// to polling. Returns whether a watch was added (then something may
    /// have changed between the scan and the watch: rescan once more).
    fn sync_watches(&mut self) -> bool {
        let desired = desired_watches(
            self.scanner.dir(),
            self.scanner.canonical_root(),
            self.scanner.outside_link_dirs(),
        );
        match self.watches.sync(&mut self.backend, desired) {
            Ok(added) => added > 0,
            Err(e) => {
                self.fall_back_to_polling(&e.to_string());
                true
            }
        }
    }

    fn fall_back_to_polling(&mut self, why: &str) {
        if self.backend.is_poll() {
            return;
        }
        tracing::warn!(
            dir = %self.scanner.dir().display(),
            error = why,
            poll_interval = ?self.opts.poll_interval,
            "inotify watches exhausted; falling back to polling. Raise fs.inotify.max_user_watches \
             (and fs.inotify.max_user_instances) to get instant updates back"
        );
        match Backend::poll(&self.opts, &self.msg_tx) {
            Ok(b) => {
                // dropping the native watcher frees its inotify watches
                self.backend = b;
                self.watches = WatchSet::default();
                self.polling.store(true, Ordering::Relaxed);
                let desired = desired_watches(
                    self.scanner.dir(),
                    self.scanner.canonical_root(),
                    self.scanner.outside_link_dirs(),
                );
                if let Err(e) = self.watches.sync(&mut self.backend, desired) {
                    tracing::warn!(error = %e, "cannot poll the calls directory");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot create the poll watcher"),
        }
        self.pacer.request();
    }

    /// One rescan; arranges follow-ups. Returns the snapshot.
    fn rescan(&mut self) -> Arc<Snapshot> {
        let started = Instant::now();
        let resync_due = self.pacer.resync_due(started);
        self.pacer.scan_started(started);
        // files being written: quiet for `settle` counts as done
        let settle = self.opts.settle;
        let targets = &mut self.targets;
        self.writing.retain(|path, at| {
            let writing = started.duration_since(*at) < settle;
            if !writing {
                // settled: read it now
                targets.insert(path.clone());
            }
            writing
        });
        self.scanner
            .set_unsettled(self.writing.keys().cloned().collect());
        let full = self.full_next
            || self.targets.is_empty()
            || self.targets.len() > MAX_TARGETS
            || self.backend.is_poll();
        if !full && resync_due {
            // the events' paths first (a full scan of a large directory
            // takes a while), the resync right after
            self.pacer.request();
        }
        let snapshot = if full {
            self.pacer.resynced(started);
            self.scanner.scan()
        } else {
            self.scanner
                .scan_paths(self.targets.iter().map(PathBuf::as_path))
        };
        if full && snapshot.stats.files_read == 0 {
            // what the safety net costs when nothing changed sets its pace
            // (not a first load or a scan that read files again)
            self.pacer.resync_cost(started, started.elapsed());
        }
        self.targets.clear();
        self.full_next = false;
        if snapshot.stats.folders_listed > 0 {
            // a folder created or moved in: files written into it before
            // its watch was in place gave no event; look at everything
            // once it is quiet
            self.full_next = true;
            self.pacer.follow_up(Instant::now() + self.opts.quiet());
        }
        let now = Instant::now();
        for p in self.scanner.take_changed_during_read() {
            self.writing.insert(p, now);
        }
        if let Some(first) = self.writing.values().min() {
            self.pacer.follow_up(*first + settle);
        }
        if self.sync_watches() {
            // something may have changed before the watch was in place
            self.full_next = true;
            self.pacer.follow_up(Instant::now() + self.opts.quiet());
        }
        let now = Instant::now();
        if snapshot.root_error.is_some() {
            self.full_next = true;
            self.pacer.follow_up(now + ROOT_RETRY);
        }
        // With inotify, a rewrite after our read is an event, and the rescan
        // it causes re-reads racy files. A poll watcher compares mtimes and
        // misses a rewrite within the same tick: look again once it settled.
        if snapshot.stats.racy_files > 0 && self.backend.is_poll() {
            self.pacer
                .follow_up(now + RACY_WINDOW + Duration::from_millis(100));
        }
        let s = &snapshot.stats;
        tracing::debug!(
            dir = %snapshot.dir.display(),
            generation = snapshot.generation,
            changed = snapshot.changed,
            files = s.files_listed,
            read = s.files_read,
            bytes = s.bytes_read,
            elapsed = ?s.elapsed,
            "rescan"
        );
        if let (true, Some(e)) = (snapshot.changed, &snapshot.root_error) {
            if snapshot.files.is_empty() && snapshot.generation == 1 {
                // nothing known yet: the daemon holds everything (docs/runs.md)
                tracing::warn!(error = %e, "calls directory not readable yet; retrying every second");
            } else {
                tracing::warn!(error = %e, "calls directory unreadable; keeping the last known specs");
            }
        }
        snapshot
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>, tx: tokio::sync::watch::Sender<Arc<Snapshot>>) {
        // (generation, when) of a published snapshot that holds file bytes
        let mut strip: Option<(u64, Instant)> = {
            let first = tx.borrow();
            (first.stats.files_read > 0).then(|| (first.generation, Instant::now()))
        };
        loop {
            let now = Instant::now();
            if let Some((generation, at)) = strip
                && now >= at + BYTES_KEPT_FOR
            {
                strip = None;
                if let Some(kept) = self.scanner.last().filter(|l| l.generation == generation) {
                    // in place, without a change notice: a receiver that
                    // took it has its own copy
                    tx.send_if_modified(|cur| {
                        if cur.generation == generation {
                            *cur = kept.clone();
                        }
                        false
                    });
                }
            }
            if self.pacer.is_due(now) {
                let snapshot = self.rescan();
                if snapshot.changed {
                    if snapshot.stats.files_read > 0 {
                        strip = Some((snapshot.generation, now));
                    }
                    if tx.send(snapshot).is_err() {
                        break; // every receiver is gone
                    }
                }
                continue;
            }
            let wait = self
                .pacer
                .next_due(now)
                .saturating_duration_since(now)
                .min(CHECK_CLOSED_EVERY);
            match rx.recv_timeout(wait) {
                Ok(Msg::Dirty(Dirty {
                    writes,
                    paths,
                    full,
                })) => {
                    let now = Instant::now();
                    if full || paths.is_empty() {
                        self.full_next = true;
                    }
                    self.targets.extend(paths);
                    for (path, w) in writes {
                        match w {
                            Write::Open => {
                                self.writing.insert(path, now);
                            }
                            Write::Done => {
                                self.writing.remove(&path);
                            }
                        }
                    }
                    self.pacer.event(now);
                }
                Ok(Msg::WatcherError(e)) => {
                    tracing::warn!(error = %e, "watcher error; rescanning");
                    self.full_next = true;
                    self.pacer.event(Instant::now());
                }
                Ok(Msg::WatchLimit(e)) => self.fall_back_to_polling(&e),
                Ok(Msg::Rescan) => {
                    self.full_next = true;
                    self.pacer.request();
                }
                Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if tx.is_closed() {
                        break;
                    }
                }
            }
        }
        tracing::debug!(dir = %self.scanner.dir().display(), "source stopped");
    }
}

/// Keeps the source running; dropping it stops the watcher thread (without
/// waiting for it: use [`SourceGuard::stop`] to wait).
pub struct SourceGuard {
    msg_tx: mpsc::Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
    polling: Arc<AtomicBool>,
}

impl SourceGuard {
    /// Rescans at once, without waiting for an event (SIGHUP, an operator's
    /// "reload", or anything that suspects a lost event).
    pub fn request_rescan(&self) {
        let _ = self.msg_tx.send(Msg::Rescan);
    }

    /// Whether the source polls (by choice, or because inotify ran out).
    pub fn is_polling(&self) -> bool {
        self.polling.load(Ordering::Relaxed)
    }

    /// Stops the watcher thread and waits for it (at most one rescan).
    pub fn stop(mut self) {
        let _ = self.msg_tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// For tests: what an overflow or a watcher error does (mark dirty,
    /// debounced rescan).
    #[doc(hidden)]
    pub fn simulate_overflow(&self) {
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        let event = notify_debouncer_full::DebouncedEvent::new(overflow, Instant::now());
        DebounceEventHandler::handle_event(&mut Forward(self.msg_tx.clone()), Ok(vec![event]));
    }
}

impl SourceGuard {
    /// For tests: what inotify running out of watches does (switch to the
    /// poll watcher, log it, rescan).
    #[doc(hidden)]
    pub fn simulate_watch_limit(&self) {
        let limit = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        DebounceEventHandler::handle_event(&mut Forward(self.msg_tx.clone()), Err(vec![limit]));
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let _ = self.msg_tx.send(Msg::Stop);
    }
}

impl std::fmt::Debug for SourceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceGuard")
            .field("polling", &self.is_polling())
            .finish()
    }
}

/// Starts watching `dir`. The first snapshot is taken before this returns
/// and is the receiver's current value; later snapshots are published only
/// when something changed (latest wins: a burst never queues snapshots).
/// The source stops when the guard or every receiver is dropped.
///
/// Blocking: the first scan reads every spec file (call it from
/// `spawn_blocking` in async code if the directory may be large).
pub fn watch(
    dir: PathBuf,
    opts: SourceOptions,
) -> anyhow::Result<(SourceGuard, tokio::sync::watch::Receiver<Arc<Snapshot>>)> {
    let mut opts = opts;
    opts.resync_interval = opts.resync_interval.max(MIN_RESYNC);
    let (msg_tx, msg_rx) = mpsc::channel();
    let polling = Arc::new(AtomicBool::new(false));

    let backend = match opts.backend {
        WatchBackend::Poll => Backend::poll(&opts, &msg_tx)?,
        WatchBackend::Auto => match Backend::native(&opts, &msg_tx) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot create an inotify watcher; polling instead. Raise fs.inotify.max_user_instances"
                );
                Backend::poll(&opts, &msg_tx)?
            }
        },
    };
    polling.store(backend.is_poll(), Ordering::Relaxed);
    let now = Instant::now();
    let mut source = Source {
        pacer: Pacer::new(opts.quiet(), opts.max_delay, opts.resync_interval, now),
        scanner: Scanner::new(dir),
        backend,
        watches: WatchSet::default(),
        msg_tx: msg_tx.clone(),
        polling: polling.clone(),
        writing: HashMap::new(),
        targets: BTreeSet::new(),
        full_next: true,
        opts,
    };

    // Watch first, then scan: a change made during the first scan is an event.
    source.watches_before_first_scan();
    if source.opts.hold_recent_at_start && !source.opts.settle.is_zero() {
        source.scanner.hold_recent_once(source.opts.settle);
    }
    let first = source.rescan();
    tracing::info!(
        dir = %first.dir.display(),
        files = first.files.len(),
        polling = source.backend.is_poll(),
        "watching the calls directory"
    );

    let (tx, rx) = tokio::sync::watch::channel(first);
    let thread = std::thread::Builder::new()
        .name("calld-source".into())
        .spawn(move || source.run(msg_rx, tx))?;
    Ok((
        SourceGuard {
            msg_tx,
            thread: Some(thread),
            polling,
        },
        rx,
    ))
}

impl Source {
    /// The watches that can be known before any scan: the canonical calls
    /// directory and the parents of symlinks on its path.
    fn watches_before_first_scan(&mut self) {
        let canonical = std::fs::canonicalize(self.scanner.dir()).ok();
        let desired = desired_watches(self.scanner.dir(), canonical.as_deref(), []);
        if let Err(e) = self.watches.sync(&mut self.backend, desired) {
            self.fall_back_to_polling(&e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::Event;
    use notify_debouncer_full::DebouncedEvent;

    fn ev(kind: EventKind) -> DebouncedEvent {
        DebouncedEvent::new(Event::new(kind), Instant::now())
    }

    #[test]
    fn writes_say_open_until_closed_renamed_in_or_removed() {
        use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};
        let at = |kind: EventKind, paths: &[&str]| {
            let mut e = Event::new(kind);
            for p in paths {
                e = e.add_path(PathBuf::from(p));
            }
            DebouncedEvent::new(e, Instant::now())
        };
        let events = vec![
            at(EventKind::Create(CreateKind::File), &["/c/a.yaml"]),
            at(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &["/c/a.yaml"],
            ),
            at(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/c/b.yaml"],
            ),
            at(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/c/x.tmp", "/c/d.yaml"],
            ),
            at(EventKind::Remove(RemoveKind::File), &["/c/e.yaml"]),
            at(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/c/f.yaml"],
            ),
        ];
        let w = writes_of(&events);
        let of = |p: &str| {
            w.iter()
                .rev()
                .find(|(q, _)| q == Path::new(p))
                .map(|(_, w)| *w)
        };
        assert_eq!(of("/c/a.yaml"), Some(Write::Open));
        assert_eq!(of("/c/b.yaml"), Some(Write::Done));
        assert_eq!(of("/c/d.yaml"), Some(Write::Done));
        assert_eq!(of("/c/e.yaml"), Some(Write::Done));
        assert_eq!(of("/c/f.yaml"), None);
    }

    #[test]
    fn reads_by_our_own_rescans_are_not_changes() {
        let opens = vec![
            ev(EventKind::Access(AccessKind::Open(AccessMode::Any))),
            ev(EventKind::Access(AccessKind::Close(AccessMode::Read))),
        ];
        assert!(classify(Ok(opens)).is_none());
    }

    #[test]
    fn any_other_event_marks_dirty() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::Folder),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Any,
        ] {
            assert!(
                matches!(classify(Ok(vec![ev(kind)])), Some(Msg::Dirty(_))),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn overflow_marks_dirty() {
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        let e = DebouncedEvent::new(overflow, Instant::now());
        assert!(matches!(classify(Ok(vec![e])), Some(Msg::Dirty(_))));
    }

    #[test]
    fn watch_limit_errors_fall_back_other_errors_rescan() {
        let limit = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert!(matches!(
            classify(Err(vec![limit])),
            Some(Msg::WatchLimit(_))
        ));
        #[cfg(target_os = "linux")]
        {
            let enospc = notify::Error::io(std::io::Error::from_raw_os_error(28));
            assert!(matches!(
                classify(Err(vec![enospc])),
                Some(Msg::WatchLimit(_))
            ));
            let emfile = notify::Error::io(std::io::Error::from_raw_os_error(24));
            assert!(is_watch_limit(&emfile));
        }
        let other = notify::Error::generic("boom");
        match classify(Err(vec![other])) {
            Some(Msg::WatcherError(m)) => assert!(m.contains("boom"), "{m}"),
            m => panic!("{m:?}"),
        }
        assert!(!is_watch_limit(&notify::Error::path_not_found()));
    }

    #[test]
    fn the_pacer_waits_the_whole_debounce() {
        let o = SourceOptions::default();
        assert_eq!(o.quiet(), o.debounce);
        let zero = SourceOptions {
            debounce: Duration::ZERO,
            ..SourceOptions::default()
        };
        assert_eq!(zero.quiet(), Duration::ZERO);
    }

    #[cfg(unix)]
    #[test]
    fn desired_watches_include_parents_of_symlinks_on_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir_all(root.join(".worktrees/h1/calls.d")).unwrap();
        std::os::unix::fs::symlink(".worktrees/h1", root.join("current")).unwrap();
        let dir = root.join("current/calls.d");
        let canonical = std::fs::canonicalize(&dir).unwrap();
        let outside = root.join("elsewhere");
        let want = desired_watches(&dir, Some(&canonical), [outside.clone()]);
        assert_eq!(
            want,
            BTreeMap::from([
                (root.clone(), RecursiveMode::NonRecursive),
                (root.join(".worktrees/h1/calls.d"), RecursiveMode::Recursive),
                (outside, RecursiveMode::NonRecursive),
            ])
        );
        // without symlinks on the path: the directory alone
        let plain = root.join(".worktrees/h1/calls.d");
        let want = desired_watches(&plain, Some(&plain), []);
        assert_eq!(
            want,
            BTreeMap::from([(plain.clone(), RecursiveMode::Recursive)])
        );
    }
}
