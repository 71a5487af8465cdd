//! One full scan of a calls directory, with a cache of stat keys so that a
//! rescan where nothing changed reads no file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::spec::files::{
    MAX_SPEC_FILE_BYTES, SpecFile, WalkProblem, is_skipped_name, is_spec_file_name,
    list_spec_files_noting_links,
};

/// Files whose ctime is this close to the start of a scan (or in the
/// future) are re-read on the next scan even when their stat key is equal:
/// a rewrite within one timestamp tick keeps the key ("racy git"). Two
/// seconds covers the coarsest common granularity (FAT, some NFS servers).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// One spec file as seen by a scan.
#[derive(Clone, PartialEq, Eq)]
pub struct FileSnapshot {
    /// Path relative to the calls directory, `/`-separated (`team-a/standup.yaml`).
    pub rel: String,
    /// The path that was opened (the calls directory joined with `rel`).
    pub path: PathBuf,
    /// The bytes, or why they could not be had (unreadable, over
    /// [`MAX_SPEC_FILE_BYTES`]). An error is reported for this file only.
    /// `Ok(None)`: not kept. Only the snapshot of the scan that read a file
    /// holds its bytes; the scanner's own memory and later snapshots keep
    /// its hash alone (issue 12: no file bytes kept after parsing), and
    /// [`read_again`] reads it again when it is needed.
    pub content: Result<Option<Arc<[u8]>>, String>,
    /// sha256 of the bytes; for an error, of the error message (so a
    /// changed error is a change too).
    pub hash: [u8; 32],
}

impl std::fmt::Debug for FileSnapshot {
    // The bytes are not printed: a snapshot of 10,000 files must stay readable.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let content = match &self.content {
            Ok(Some(bytes)) => format!("{} bytes", bytes.len()),
            Ok(None) => "bytes not kept".to_string(),
            Err(e) => format!("error: {e}"),
        };
        f.debug_struct("FileSnapshot")
            .field("rel", &self.rel)
            .field("path", &self.path)
            .field("content", &content)
            .field("hash", &hex::encode(&self.hash[..8]))
            .finish()
    }
}

impl Snapshot {
    /// One file as the incremental spec set takes it.
    pub fn file_ref(&self, rel: &str) -> Option<crate::spec::incremental::FileRef<'_>> {
        self.files.get(rel).map(FileSnapshot::to_file_ref)
    }

    /// Brings `set` to this snapshot: by the files that changed when `set`
    /// holds the snapshot this one follows (a scan of named paths), else by
    /// comparing every file's hash.
    pub fn update_spec_set(
        &self,
        set: &mut crate::spec::IncrementalSet,
        ctx: &crate::spec::Context,
    ) -> crate::spec::incremental::UpdateStats {
        let stats = match &self.delta {
            Some((base, rels)) if set.source_generation == Some(*base) => {
                set.update_changed(rels.iter().map(String::as_str), |r| self.file_ref(r), ctx)
            }
            _ => set.update(self.file_refs(), ctx),
        };
        set.source_generation = Some(self.generation);
        stats
    }

    /// The files as the incremental spec set takes them (no allocation for
    /// a file whose path is UTF-8).
    pub fn file_refs(&self) -> impl Iterator<Item = crate::spec::incremental::FileRef<'_>> {
        self.files.values().map(FileSnapshot::to_file_ref)
    }
}

impl FileSnapshot {
    /// The bytes, if the file could be read and this snapshot's scan read it.
    pub fn bytes(&self) -> Option<&[u8]> {
        self.content.as_ref().ok().and_then(|b| b.as_deref())
    }

    /// The file as the incremental spec set takes it.
    fn to_file_ref(&self) -> crate::spec::incremental::FileRef<'_> {
        crate::spec::incremental::FileRef {
            rel: &self.rel,
            label: self.path.to_string_lossy(),
            hash: self.hash,
            bytes: match &self.content {
                Ok(b) => Ok(b.as_deref()),
                Err(e) => Err(e.as_str()),
            },
            path: &self.path,
        }
    }
}

/// What one scan cost; for logs, tests and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Spec files listed.
    pub files_listed: usize,
    /// Files opened and read (stat key changed, new, or racy).
    pub files_read: usize,
    /// Bytes read.
    pub bytes_read: u64,
    /// Files whose ctime was too recent to trust their stat key next time.
    pub racy_files: usize,
    /// Wall time of the scan.
    pub elapsed: Duration,
    /// Files not read yet because they are being written (modified but not
    /// closed, or changed while read): their last complete content stays
    /// in the snapshot (docs/watching.md, "Half-written files").
    pub unsettled_files: usize,
    /// Only the paths events named were looked at ([`Scanner::scan_paths`]),
    /// not the whole directory.
    pub targeted: bool,
    /// Folders a scan of named paths listed (a folder created or moved in).
    pub folders_listed: usize,
}

/// The files of a snapshot, by relative path (cheap to clone).
pub type FileMap = imbl::OrdMap<String, FileSnapshot>;

/// The complete set of spec files of a calls directory at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// 1 for the first snapshot, +1 for each snapshot that differs from
    /// the one before.
    pub generation: u64,
    /// The calls directory as configured.
    pub dir: PathBuf,
    /// Every spec file, by relative path: a persistent map, so that the
    /// snapshot of a scan of named paths shares what did not change with
    /// the one before (a copy of 100,000 entries per change was 80 ms).
    pub files: FileMap,
    /// Problems met while listing (an unreadable folder, a dangling symlink).
    pub problems: Vec<WalkProblem>,
    /// Set when the calls directory itself could not be read (missing, not
    /// a directory, no permission). `files` and `problems` then hold the
    /// last known state (empty on the first scan): the truth is unknown,
    /// which is not the same as "every spec was deleted".
    pub root_error: Option<String>,
    /// Whether this snapshot differs from the previous one (true for the first).
    pub changed: bool,
    /// What the scan cost.
    pub stats: ScanStats,
    /// For a scan of named paths: the generation this snapshot follows and
    /// the files (relative paths) that differ from it; `None` for a full
    /// scan.
    pub delta: Option<(u64, Vec<String>)>,
}

/// The identity of a file's state: any write, truncate, replace or
/// permission change changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatKey {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl StatKey {
    #[cfg(unix)]
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        StatKey {
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    #[cfg(not(unix))]
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        let nanos = |t: std::io::Result<SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| (d.as_secs() as i64, d.subsec_nanos() as i64))
                .unwrap_or((0, 0))
        };
        StatKey {
            len: meta.len(),
            mtime: nanos(meta.modified()),
            ctime: nanos(meta.created()),
            ino: 0,
            dev: 0,
        }
    }

    /// Whether the ctime is within [`RACY_WINDOW`] of `scan_start` or later.
    pub(crate) fn is_racy(&self, scan_start: SystemTime) -> bool {
        let ctime_ns = i128::from(self.ctime.0) * 1_000_000_000 + i128::from(self.ctime.1);
        let start_ns = match scan_start.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(_) => return true,
        };
        ctime_ns >= start_ns - RACY_WINDOW.as_nanos() as i128
    }
}

/// `stat` of the files of one folder after another, relative to the
/// folder (`fstatat`): the kernel walks one path component per file, not
/// the whole path (the resync of 100,000 files spent most of its time in
/// path lookups). Follows symlinks, as [`std::fs::metadata`] does.
#[derive(Default)]
struct FolderStat {
    open: Option<(PathBuf, std::fs::File)>,
}

impl FolderStat {
    /// The stat key and length of `path`; `None` when it cannot be had
    /// this way (the caller then looks the slow way).
    #[cfg(target_os = "linux")]
    fn stat(&mut self, path: &Path) -> Option<(StatKey, u64)> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::io::AsRawFd;
        let parent = path.parent()?;
        let name = std::ffi::CString::new(path.file_name()?.as_bytes()).ok()?;
        if self.open.as_ref().is_none_or(|(p, _)| p != parent) {
            let dir = std::fs::File::open(parent).ok()?;
            self.open = Some((parent.to_path_buf(), dir));
        }
        let (_, dir) = self.open.as_ref()?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a valid directory fd, a NUL-terminated name and a buffer
        // of the right type; `st` is read only when the call succeeded.
        let st = unsafe {
            if libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), 0) != 0 {
                return None;
            }
            st.assume_init()
        };
        Some((
            StatKey {
                len: st.st_size as u64,
                mtime: (st.st_mtime, st.st_mtime_nsec),
                ctime: (st.st_ctime, st.st_ctime_nsec),
                ino: st.st_ino,
                dev: st.st_dev,
            },
            st.st_size as u64,
        ))
    }

    #[cfg(not(target_os = "linux"))]
    fn stat(&mut self, path: &Path) -> Option<(StatKey, u64)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((StatKey::of(&meta), meta.len()))
    }
}

/// What the scanner remembers of a file between scans.
struct Cached {
    /// None when the stat failed: retried every scan.
    key: Option<StatKey>,
    /// Re-read next time even when the key is equal.
    racy: bool,
    /// Why the file could not be had, if it could not.
    error: Option<String>,
    /// The bytes this scan read, until its snapshot takes them: the cache
    /// keeps none.
    fresh: Option<Arc<[u8]>>,
    hash: [u8; 32],
    /// For a file that is a symlink: the canonical folder of its target.
    link_dir: Option<PathBuf>,
}

/// Scans a calls directory; keeps a cache of stat keys and contents so a
/// rescan re-reads only what changed.
pub struct Scanner {
    /// The calls directory as configured (may contain symlinks).
    dir: PathBuf,
    /// Per relative path, what the last scan saw.
    cache: HashMap<String, Cached>,
    /// The last snapshot, to tell whether the next one changed.
    last: Option<Arc<Snapshot>>,
    /// The canonical calls directory at the last scan.
    canonical_root: Option<PathBuf>,
    /// Files being written (absolute paths as events name them): not read
    /// until they settle. Set by the watcher before each scan.
    unsettled: HashSet<PathBuf>,
    /// Whether a file that changes while it is read is held (the watcher's
    /// scanner; `check` and `--once` read what is there).
    hold_changing: bool,
    /// Files seen changing during the last scan's read.
    changed_during_read: Vec<PathBuf>,
    /// Next scan only: a file modified this recently is treated as being
    /// written (no event has told whether it was closed yet).
    hold_recent: Option<Duration>,
    /// The last full scan met a symlink in the tree: a change behind it is
    /// not an event at its path, so [`Scanner::scan_paths`] scans in full.
    tree_has_links: bool,
}

impl Scanner {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Scanner {
            dir: dir.into(),
            cache: HashMap::new(),
            last: None,
            canonical_root: None,
            unsettled: HashSet::new(),
            hold_changing: false,
            changed_during_read: Vec::new(),
            hold_recent: None,
            tree_has_links: false,
        }
    }

    /// For the next scan only: files modified within `window` before it
    /// are held as being written (they are reported by
    /// [`Scanner::take_changed_during_read`]). The watcher's first scan uses
    /// it: no event has said yet whether those files were closed.
    pub fn hold_recent_once(&mut self, window: Duration) {
        self.hold_recent = Some(window);
    }

    /// The files being written (not closed yet): their previous content is
    /// kept until they settle. Turns on holding files that change while
    /// they are read.
    pub fn set_unsettled(&mut self, paths: HashSet<PathBuf>) {
        self.unsettled = paths;
        self.hold_changing = true;
    }

    /// The files that changed while the last scan read them (look again
    /// once they are quiet).
    pub fn take_changed_during_read(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.changed_during_read)
    }

    fn is_unsettled(&self, file: &crate::spec::files::SpecFile) -> bool {
        !self.unsettled.is_empty()
            && (self.unsettled.contains(&file.path)
                || self
                    .canonical_root
                    .as_ref()
                    .is_some_and(|r| self.unsettled.contains(&r.join(&file.rel))))
    }

    /// The calls directory as configured.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last snapshot produced, if any.
    pub fn last(&self) -> Option<&Arc<Snapshot>> {
        self.last.as_ref()
    }

    /// One full scan: list, stat, re-read what changed. Never fails: an
    /// unreadable directory is reported in [`Snapshot::root_error`], an
    /// unreadable file in its [`FileSnapshot::content`].
    pub fn scan(&mut self) -> Arc<Snapshot> {
        let started = Instant::now();
        let scan_start = SystemTime::now();
        let mut stats = ScanStats::default();
        self.canonical_root = std::fs::canonicalize(&self.dir).ok();

        let (listed, problems, links) = match list_spec_files_noting_links(&self.dir) {
            Ok(found) => found,
            Err(e) => {
                let message = format!(
                    "cannot read the calls directory {}: {e}",
                    self.dir.display()
                );
                stats.elapsed = started.elapsed();
                return self.publish_root_error(message, stats);
            }
        };
        self.tree_has_links = links;
        stats.files_listed = listed.len();

        let hold_recent = self.hold_recent.take();
        if hold_recent.is_none()
            && let Some(same) = self.unchanged(&listed, &problems, &mut stats, started)
        {
            return same;
        }
        let mut files = FileMap::new();
        let mut seen = HashMap::with_capacity(listed.len());
        let mut read = Vec::new();
        for file in listed {
            let old = self.cache.remove(&file.rel);
            let Some(mut cached) = self.visit(&file, old, scan_start, hold_recent, &mut stats)
            else {
                continue;
            };
            let content = cached.take_content();
            if matches!(content, Ok(Some(_))) {
                read.push(file.rel.clone());
            }
            files.insert(
                file.rel.clone(),
                FileSnapshot {
                    rel: file.rel.clone(),
                    path: file.path,
                    content,
                    hash: cached.hash,
                },
            );
            seen.insert(file.rel, cached);
        }
        // files not seen this time are gone: forget them
        self.cache = seen;
        stats.elapsed = started.elapsed();

        let changed = match &self.last {
            None => true,
            Some(last) => {
                last.root_error.is_some()
                    || last.problems != problems
                    || last.files.len() != files.len()
                    || last
                        .files
                        .values()
                        .zip(files.values())
                        .any(|(a, b)| a.rel != b.rel || a.hash != b.hash || a.path != b.path)
            }
        };
        self.finish(files, problems, None, changed, stats, None, &read)
    }

    /// The snapshot of a full scan where nothing changed since the last
    /// one (every listed file known, with the same stat key, none racy or
    /// being written), without a copy of the file map; `None` when
    /// something may have changed. Costs a stat per file, no read and no
    /// allocation per file (issue 12: the resync is cheap when idle).
    fn unchanged(
        &mut self,
        listed: &[SpecFile],
        problems: &[WalkProblem],
        stats: &mut ScanStats,
        started: Instant,
    ) -> Option<Arc<Snapshot>> {
        let last = self.last.as_ref()?;
        if last.root_error.is_some()
            || last.problems != problems
            || last.files.len() != listed.len()
            || self.cache.len() != listed.len()
        {
            return None;
        }
        let scan_start = SystemTime::now();
        let mut settled: Vec<&str> = Vec::new();
        let mut folder = FolderStat::default();
        for file in listed {
            let cached = self.cache.get(&file.rel)?;
            if cached.key.is_none() || self.is_unsettled(file) {
                return None;
            }
            let (key, len) = folder.stat(&file.path)?;
            if cached.key != Some(key) {
                return None;
            }
            if last
                .files
                .get(&file.rel)
                .is_none_or(|f| f.path != file.path)
            {
                return None;
            }
            if cached.racy {
                // written just before the last read: once out of the racy
                // window, read again; unchanged only if its bytes are
                if key.is_racy(scan_start) {
                    return None;
                }
                let content = read_limited(&file.path, len);
                if hash_content(&content) != cached.hash {
                    return None;
                }
                settled.push(&file.rel);
            }
        }
        stats.files_read += settled.len();
        for rel in settled {
            if let Some(c) = self.cache.get_mut(rel) {
                c.racy = false;
            }
        }
        stats.elapsed = started.elapsed();
        let files = last.files.clone();
        let problems = last.problems.clone();
        Some(self.finish(files, problems, None, false, stats.clone(), None, &[]))
    }

    /// Looks at one listed file: its cached state when its stat key is
    /// unchanged, else its bytes (or the hold, when it is being written).
    /// `None`: it is gone.
    fn visit(
        &mut self,
        file: &SpecFile,
        old: Option<Cached>,
        scan_start: SystemTime,
        hold_recent: Option<Duration>,
        stats: &mut ScanStats,
    ) -> Option<Cached> {
        let meta = match std::fs::metadata(&file.path) {
            Ok(m) => Ok(m),
            // deleted between the listing and now: it is gone
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => Err(e),
        };
        let key = meta.as_ref().ok().map(StatKey::of);
        let reuse = match (old, key) {
            (Some(c), Some(k)) if c.key == Some(k) && !c.racy => Ok(c),
            (old, _) => Err(old),
        };
        let cached = match reuse {
            Ok(c) => c,
            // being written: keep the last complete content (read again
            // once it settles); a file not read before is held
            Err(old) if self.is_unsettled(file) => {
                stats.unsettled_files += 1;
                match old {
                    Some(mut c) => {
                        c.key = None;
                        c
                    }
                    None => being_written(),
                }
            }
            Err(None)
                if hold_recent.is_some_and(|w| {
                    meta.as_ref()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .is_some_and(|t| t + w > scan_start)
                }) =>
            {
                stats.unsettled_files += 1;
                self.changed_during_read.push(file.path.clone());
                being_written()
            }
            Err(old) => {
                let content = match &meta {
                    Ok(m) => read_limited(&file.path, m.len()),
                    Err(e) => Err(format!("cannot stat: {e}")),
                };
                let after = std::fs::metadata(&file.path).ok().map(|m| StatKey::of(&m));
                if self.hold_changing && content.is_ok() && after != key {
                    // changed while we read it: not complete
                    stats.unsettled_files += 1;
                    self.changed_during_read.push(file.path.clone());
                    return Some(match old {
                        Some(mut c) => {
                            c.key = None;
                            c
                        }
                        None => being_written(),
                    });
                }
                stats.files_read += 1;
                if let Ok(bytes) = &content {
                    stats.bytes_read += bytes.len() as u64;
                }
                let hash = hash_content(&content);
                let (fresh, error) = match content {
                    Ok(bytes) => (Some(bytes), None),
                    Err(e) => (None, Some(e)),
                };
                Cached {
                    key,
                    racy: key.is_some_and(|k| k.is_racy(scan_start)),
                    error,
                    fresh,
                    hash,
                    link_dir: link_dir(&file.path),
                }
            }
        };
        if cached.racy {
            stats.racy_files += 1;
        }
        Some(cached)
    }

    /// Whether [`Scanner::scan_paths`] can look at named paths only: a
    /// full scan came before and saw a plain tree (no symlink, no problem,
    /// the calls directory readable and where it was).
    fn can_scan_paths(&self) -> bool {
        !self.tree_has_links
            && self.hold_recent.is_none()
            && self
                .last
                .as_ref()
                .is_some_and(|l| l.root_error.is_none() && l.problems.is_empty())
            && self.canonical_root.is_some()
            && std::fs::canonicalize(&self.dir).ok() == self.canonical_root
    }

    /// A scan of the paths events named (files or folders, absolute, as
    /// the watcher reports them): a folder is listed again, a file is
    /// looked at, a path that is gone drops what was below it; everything
    /// else is taken from the last scan without a system call. Falls back
    /// to [`Scanner::scan`] whenever a named path cannot be trusted alone:
    /// outside the calls directory, the directory itself, a symlink, a
    /// tree with symlinks, or an unreadable folder (docs/watching.md, "Cost
    /// of a change").
    pub fn scan_paths<'p>(&mut self, paths: impl IntoIterator<Item = &'p Path>) -> Arc<Snapshot> {
        if !self.can_scan_paths() {
            return self.scan();
        }
        let started = Instant::now();
        let scan_start = SystemTime::now();
        let root = self.canonical_root.clone().expect("checked");
        let mut folders_listed = 0;
        // (relative path, what is there now); None: gone
        let mut todo: BTreeMap<String, Option<Vec<SpecFile>>> = BTreeMap::new();
        for p in paths {
            let Ok(rel) = p.strip_prefix(&root) else {
                return self.scan();
            };
            let mut parts = Vec::new();
            for c in rel.components() {
                match c {
                    std::path::Component::Normal(n) => match n.to_str() {
                        Some(n) => parts.push(n),
                        None => return self.scan(),
                    },
                    _ => return self.scan(),
                }
            }
            if parts.is_empty() {
                return self.scan();
            }
            // below a skipped name: never part of the tree
            if parts.iter().any(|n| is_skipped_name(n)) {
                continue;
            }
            let rel = parts.join("/");
            let meta = std::fs::symlink_metadata(p);
            if meta.as_ref().is_ok_and(|m| m.is_dir()) {
                folders_listed += 1;
            }
            let found = match meta {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(_) => return self.scan(),
                Ok(m) if m.file_type().is_symlink() => return self.scan(),
                Ok(m) if m.is_dir() => match list_spec_files_noting_links(p) {
                    Ok((files, problems, links)) if problems.is_empty() && !links => Some(
                        files
                            .into_iter()
                            .map(|f| SpecFile {
                                rel: format!("{rel}/{}", f.rel),
                                path: f.path,
                            })
                            .collect(),
                    ),
                    _ => return self.scan(),
                },
                Ok(m) if m.is_file() && is_spec_file_name(parts[parts.len() - 1]) => {
                    Some(vec![SpecFile {
                        rel: rel.clone(),
                        path: p.to_path_buf(),
                    }])
                }
                Ok(_) => None,
            };
            todo.insert(rel, found);
        }
        let last = self.last.clone().expect("checked");
        let mut files = last.files.clone();
        let mut stats = ScanStats {
            targeted: true,
            folders_listed,
            ..ScanStats::default()
        };
        let mut changed = false;
        let mut delta: Vec<String> = Vec::new();
        for (rel, found) in todo {
            // what was at or below `rel` is replaced by what is there now
            // (`team-a.yaml` sorts between `team-a` and `team-a/…`)
            let prefix = format!("{rel}/");
            let mut gone: BTreeSet<String> = files
                .range(prefix.clone()..)
                .take_while(|(r, _)| r.starts_with(&prefix))
                .map(|(r, _)| r.clone())
                .collect();
            if files.contains_key(&rel) {
                gone.insert(rel.clone());
            }
            for file in found.into_iter().flatten() {
                gone.remove(&file.rel);
                let old = self.cache.remove(&file.rel);
                match self.visit(&file, old, scan_start, None, &mut stats) {
                    Some(mut cached) => {
                        let snap = FileSnapshot {
                            rel: file.rel.clone(),
                            path: file.path,
                            content: cached.take_content(),
                            hash: cached.hash,
                        };
                        let same = files
                            .get(&file.rel)
                            .is_some_and(|f| f.hash == snap.hash && f.path == snap.path);
                        if !same {
                            changed = true;
                            delta.push(file.rel.clone());
                            files.insert(file.rel.clone(), snap);
                        }
                        self.cache.insert(file.rel, cached);
                    }
                    None => {
                        gone.insert(file.rel);
                    }
                }
            }
            for r in gone {
                if files.remove(&r).is_some() {
                    changed = true;
                    delta.push(r.clone());
                }
                self.cache.remove(&r);
            }
        }
        stats.files_listed = files.len();
        stats.elapsed = started.elapsed();
        let read: Vec<String> = delta
            .iter()
            .filter(|r| files.get(*r).is_some_and(|f| f.bytes().is_some()))
            .cloned()
            .collect();
        let delta = Some((last.generation, delta));
        self.finish(
            files,
            last.problems.clone(),
            None,
            changed,
            stats,
            delta,
            &read,
        )
    }

    fn publish_root_error(&mut self, message: String, stats: ScanStats) -> Arc<Snapshot> {
        let (files, problems, changed) = match &self.last {
            Some(last) => (
                last.files.clone(),
                last.problems.clone(),
                last.root_error.as_deref() != Some(message.as_str()),
            ),
            None => (FileMap::new(), Vec::new(), true),
        };
        self.finish(files, problems, Some(message), changed, stats, None, &[])
    }

    /// Publishes a snapshot. The scanner remembers it without the bytes
    /// of the files this scan read (`read`): those go to whoever takes the
    /// snapshot, and are gone once it is dropped.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        files: FileMap,
        problems: Vec<WalkProblem>,
        root_error: Option<String>,
        changed: bool,
        stats: ScanStats,
        delta: Option<(u64, Vec<String>)>,
        read: &[String],
    ) -> Arc<Snapshot> {
        let last_generation = self.last.as_ref().map_or(0, |s| s.generation);
        let mut kept = files.clone();
        for rel in read {
            if let Some(f) = kept.get_mut(rel) {
                f.content = Ok(None);
            }
        }
        let snapshot = Snapshot {
            generation: if changed {
                last_generation + 1
            } else {
                last_generation
            },
            dir: self.dir.clone(),
            files,
            problems,
            root_error,
            changed,
            stats,
            delta,
        };
        let published = Arc::new(snapshot.clone());
        self.last = Some(if read.is_empty() {
            published.clone()
        } else {
            Arc::new(Snapshot {
                files: kept,
                ..snapshot
            })
        });
        published
    }

    /// The canonical path of the calls directory at the last scan.
    pub(crate) fn canonical_root(&self) -> Option<&Path> {
        self.canonical_root.as_deref()
    }

    /// Folders holding the targets of symlinked spec files that lie outside
    /// the (canonical) calls directory: a recursive watch of the calls
    /// directory does not see writes there, so the watcher watches them too.
    pub(crate) fn outside_link_dirs(&self) -> BTreeSet<PathBuf> {
        let root = self.canonical_root.as_deref();
        self.cache
            .values()
            .filter_map(|c| c.link_dir.as_ref())
            .filter(|d| root.is_none_or(|r| !d.starts_with(r)))
            .cloned()
            .collect()
    }
}

/// Reads a file of `len` bytes (from its stat), refusing files over
/// [`MAX_SPEC_FILE_BYTES`] even if they grew since the stat.
fn read_limited(path: &Path, len: u64) -> Result<Arc<[u8]>, String> {
    let too_big = |n: u64| {
        format!(
            "file is {n} bytes, over the {MAX_SPEC_FILE_BYTES}-byte (1 MiB) limit for a spec file; split it"
        )
    };
    if len > MAX_SPEC_FILE_BYTES {
        return Err(too_big(len));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_SPEC_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_SPEC_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes.into())
}

/// What a snapshot holds for a file seen for the first time while it is
/// still being written: an error, so the specs its path names are held
/// (not taken as deleted) until it is read complete.
pub const BEING_WRITTEN: &str =
    "still being written (modified, not closed yet): read once it has been quiet for daemon.settle";

fn being_written() -> Cached {
    let content = Err(BEING_WRITTEN.to_string());
    Cached {
        key: None,
        racy: false,
        hash: hash_content(&content),
        error: content.err(),
        fresh: None,
        link_dir: None,
    }
}

impl Cached {
    /// The file's content for the snapshot: the bytes this scan read
    /// (taken: the cache keeps none), else none at hand, or the error.
    fn take_content(&mut self) -> Result<Option<Arc<[u8]>>, String> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(self.fresh.take()),
        }
    }
}

/// A file's bytes read again, for a snapshot that does not hold them
/// ([`FileSnapshot::content`]); refused unless they still have `hash` (the
/// file changed since its scan: the next scan reads it).
pub fn read_again(path: &Path, hash: &[u8; 32]) -> Result<Arc<[u8]>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let content = read_limited(path, len);
    if hash_content(&content) != *hash {
        return Err(
            "changed since the calls directory was scanned: read again at the next scan".into(),
        );
    }
    content
}

fn hash_content(content: &Result<Arc<[u8]>, String>) -> [u8; 32] {
    let mut h = Sha256::new();
    match content {
        Ok(bytes) => h.update(bytes),
        Err(e) => {
            h.update(b"calld-source-error\0");
            h.update(e.as_bytes());
        }
    }
    h.finalize().into()
}

/// For a path that is a symlink, the canonical folder of what it points to.
fn link_dir(path: &Path) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let target = std::fs::canonicalize(path).ok()?;
    target.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_with_ctime(secs: i64) -> StatKey {
        StatKey {
            len: 1,
            mtime: (secs, 0),
            ctime: (secs, 0),
            ino: 1,
            dev: 1,
        }
    }

    #[test]
    fn racy_when_ctime_is_recent_or_in_the_future() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(key_with_ctime(1_000_000).is_racy(start));
        assert!(key_with_ctime(999_999).is_racy(start));
        assert!(key_with_ctime(1_000_100).is_racy(start));
        assert!(!key_with_ctime(999_997).is_racy(start));
        assert!(!key_with_ctime(0).is_racy(start));
    }

    #[test]
    fn folder_stat_gives_the_key_of_a_plain_stat() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("a")).unwrap();
        std::fs::write(d.join("a/one.yaml"), "x: 1\n").unwrap();
        std::fs::write(d.join("a/two.yaml"), "x: 22\n").unwrap();
        std::fs::write(d.join("three.yaml"), "x: 333\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(d.join("three.yaml"), d.join("a/link.yaml")).unwrap();
        let mut folder = FolderStat::default();
        for rel in ["a/link.yaml", "a/one.yaml", "a/two.yaml", "three.yaml"] {
            let path = d.join(rel);
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(
                folder.stat(&path),
                Some((StatKey::of(&meta), meta.len())),
                "{rel}"
            );
        }
        assert_eq!(folder.stat(&d.join("a/gone.yaml")), None);
    }

    #[test]
    fn only_the_scan_that_read_a_file_hands_its_bytes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("a.yaml"), "v: 1\n").unwrap();
        std::fs::write(d.join("b.yaml"), "v: 1\n").unwrap();
        let mut sc = Scanner::new(d);
        let first = sc.scan();
        assert_eq!(first.files["a.yaml"].bytes(), Some(&b"v: 1\n"[..]));
        assert_eq!(first.files["b.yaml"].bytes(), Some(&b"v: 1\n"[..]));
        // the scanner itself remembers hashes, no bytes
        let remembered = sc.last().unwrap();
        assert!(remembered.files.values().all(|f| f.content == Ok(None)));
        assert_eq!(remembered.files["a.yaml"].hash, first.files["a.yaml"].hash);
        assert!(sc.cache.values().all(|c| c.fresh.is_none()));
        drop(first);

        // an edit: the scan of its path hands on that file's bytes only
        std::fs::write(d.join("a.yaml"), "v: 22\n").unwrap();
        let second = sc.scan_paths([d.join("a.yaml").as_path()]);
        assert!(second.stats.targeted);
        assert_eq!(second.files["a.yaml"].bytes(), Some(&b"v: 22\n"[..]));
        assert_eq!(second.files["b.yaml"].content, Ok(None));
        assert!(
            sc.last()
                .unwrap()
                .files
                .values()
                .all(|f| f.content == Ok(None))
        );

        // bytes not kept are read again, only while they have the hash
        let b = &second.files["b.yaml"];
        assert_eq!(&*read_again(&b.path, &b.hash).unwrap(), b"v: 1\n");
        std::fs::write(d.join("b.yaml"), "v: 333\n").unwrap();
        let err = read_again(&b.path, &b.hash).unwrap_err();
        assert!(err.contains("changed since"), "{err}");
    }

    #[test]
    fn error_hash_differs_from_content_hash_and_by_message() {
        let a = hash_content(&Err("x".into()));
        let b = hash_content(&Err("y".into()));
        let c = hash_content(&Ok(Arc::from(&b"x"[..])));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(c, <[u8; 32]>::from(Sha256::digest(b"x")));
    }

    #[test]
    fn read_limited_refuses_big_files_even_if_stat_was_small() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("big.yaml");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_SPEC_FILE_BYTES + 10).unwrap();
        // the stat said 5 bytes, the file has grown since
        let err = read_limited(&p, 5).unwrap_err();
        assert!(err.contains("over the 1048576-byte"), "{err}");
        let err = read_limited(&p, MAX_SPEC_FILE_BYTES + 10).unwrap_err();
        assert!(
            err.contains(&format!("{}", MAX_SPEC_FILE_BYTES + 10)),
            "{err}"
        );
        // exactly at the limit is fine
        f.set_len(MAX_SPEC_FILE_BYTES).unwrap();
        assert_eq!(
            read_limited(&p, MAX_SPEC_FILE_BYTES).unwrap().len() as u64,
            MAX_SPEC_FILE_BYTES
        );
    }
}
