//! The spec set kept up to date file by file (issue 12, "incremental
//! source"): a change costs the files it touches, not the directory.
//!
//! [`IncrementalSet`] keeps each file's [`FileLoad`] with the content hash it
//! was loaded from, and an index of which files claim which spec name. A new
//! snapshot is compared with it by content hash (no allocation when nothing
//! changed); only changed, new or removed files are (re)validated and only
//! the names they claim are resolved again (duplicate-name detection
//! included). The result is always what [`load_set`](super::load_set) gives
//! for the same files: `tests/scale_source_props.rs` checks that after random
//! sequences of file operations.
//!
//! Validation depends on the context (the configuration's defaults and
//! `callback.publicUrl`, and the time, for "`at` is in the past" warnings),
//! so a cached load is reused only while
//! - the context's defaults and public URL are those it was loaded with,
//! - no `at` / `until` of its specs has passed since it was loaded,
//! - and the file has no error (files with errors are few and re-validated
//!   at each update: an invalid document's `at` may pass too).
//!
//! Many files to load at once (start-up, a `git pull`) are validated on all
//! cores ([`load_many`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;

use super::diag::Diagnostic;
use super::load::{FileLoad, Input, SpecSet, load_input};
use super::model::Spec;
use super::validate::Context;

/// Below this many files a load stays on the calling thread (spawning
/// threads costs more than it saves).
const PARALLEL_MIN_FILES: usize = 64;

/// Loads many inputs, in parallel on the available cores when there are
/// enough of them; the result is in input order.
pub fn load_many(inputs: Vec<Input<'_>>, ctx: &Context) -> Vec<FileLoad> {
    par_map(inputs, |i| load_input(i, ctx))
}

/// `items.into_iter().map(f).collect()`, on all cores (scoped threads, one
/// contiguous chunk each) when there are [`PARALLEL_MIN_FILES`] items or
/// more. Each thread handles one item at a time, so a caller that reads a
/// file inside `f` never holds more than one file's bytes per core.
pub fn par_map<T, R, F>(items: Vec<T>, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || items.len() < PARALLEL_MIN_FILES {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    // contiguous chunks keep the order; spec files are alike in size
    let chunk = n.div_ceil(threads);
    let mut items = items;
    let mut chunks = Vec::with_capacity(threads);
    while !items.is_empty() {
        let rest = items.split_off(chunk.min(items.len()));
        chunks.push(std::mem::replace(&mut items, rest));
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| s.spawn(move || c.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// One file, as [`IncrementalSet::update`] is given it.
pub struct FileRef<'b> {
    /// Path relative to the calls directory (gives the default spec name).
    pub rel: &'b str,
    /// How findings name the file (borrowed when it can be: an unchanged
    /// file costs no allocation).
    pub label: Cow<'b, str>,
    /// The content hash (any hash that changes with the bytes or the error).
    pub hash: [u8; 32],
    /// The bytes, or why they could not be read. `Ok(None)`: not at hand
    /// (a snapshot holds only the bytes its own scan read): read again from
    /// `path` if the file must be validated, and used only if they still
    /// have `hash`.
    pub bytes: Result<Option<&'b [u8]>, &'b str>,
    /// Where to read them again.
    pub path: &'b std::path::Path,
}

/// What a file contributes, kept between updates.
#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    /// Its `file` is the file's label (how findings name it).
    load: FileLoad,
    has_errors: bool,
    /// The earliest `at` / `until` of its specs still in the future when
    /// it was loaded: its findings change then.
    expires: Option<Timestamp>,
    /// Specs of this file that are duplicates (of any name).
    dup_specs: usize,
}

/// Which files claim a name, in file order.
#[derive(Debug, Default)]
struct Claims {
    /// Files with valid specs of this name, with how many, sorted by file
    /// (almost always one: a vector, where a map took a 360-byte node).
    valid: Vec<(String, usize)>,
    /// Files with an invalid document of this name.
    invalid: BTreeSet<String>,
    /// The files whose specs were counted as duplicates of it, with how many.
    dup_files: BTreeMap<String, usize>,
}

/// What one update did (for logs and the benchmark).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// Files validated (new, changed, or whose cached findings expired).
    pub files_loaded: usize,
    /// Files gone since the last update.
    pub files_removed: usize,
    /// Names resolved again.
    pub names_resolved: usize,
}

/// The spec set of a calls directory, updated in time proportional to the
/// change (see the module documentation).
#[derive(Debug, Default)]
pub struct IncrementalSet {
    entries: BTreeMap<String, Entry>,
    claims: BTreeMap<String, Claims>,
    /// Per file label, its own findings (non-empty only).
    own_diags: BTreeMap<String, Vec<Diagnostic>>,
    /// Per name, the duplicate findings.
    dup_diags: BTreeMap<String, Vec<Diagnostic>>,
    /// (expiry, rel) of cached loads that must be validated again then.
    expiries: BTreeSet<(Timestamp, String)>,
    /// Files whose load has errors (validated again at each update).
    errors: BTreeSet<String>,
    /// The context the cached loads were made with.
    ctx_key: Option<String>,
    /// The generation of the source snapshot the set was last brought to
    /// (kept for [`Snapshot::update_spec_set`](crate::source::Snapshot::update_spec_set)).
    pub source_generation: Option<u64>,
    set: SpecSet,
    /// Names resolved again since the last [`IncrementalSet::take_touched`]
    /// (the only names whose spec or invalid mark may have changed).
    touched: BTreeSet<String>,
}

fn ctx_key(ctx: &Context) -> String {
    format!("{:?}\0{:?}", ctx.defaults, ctx.public_url)
}

/// The earliest `at` / `until` after `now` among a load's specs.
fn expiry(load: &FileLoad, now: Timestamp) -> Option<Timestamp> {
    load.specs
        .iter()
        .filter_map(|s| s.schedule.as_ref())
        .flat_map(|sch| {
            let at = match sch.trigger {
                crate::schedule::Trigger::At(t) => Some(t),
                crate::schedule::Trigger::Cron(_) => None,
            };
            at.into_iter().chain(sch.until)
        })
        .filter(|t| *t >= now)
        .min()
}

impl IncrementalSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current spec set (what [`load_set`](super::load_set) gives for
    /// the files of the last update).
    pub fn set(&self) -> &SpecSet {
        &self.set
    }

    /// The names resolved again since the last call: outside them, the
    /// set's `specs` and `invalid_names` are as they were then.
    pub fn take_touched(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.touched)
    }

    /// Brings the set to `files` (every file of the directory, sorted by
    /// `rel`, as a [`Snapshot`](crate::source::Snapshot) holds them).
    /// Unchanged files cost a hash comparison.
    pub fn update<'b, I>(&mut self, files: I, ctx: &Context) -> UpdateStats
    where
        I: IntoIterator<Item = FileRef<'b>>,
    {
        let key = ctx_key(ctx);
        let ctx_changed = self.ctx_key.as_deref() != Some(key.as_str());
        self.ctx_key = Some(key);
        // files whose cached findings are out of date without a change
        let mut stale: BTreeSet<String> = BTreeSet::new();
        if ctx_changed {
            stale.extend(self.entries.keys().cloned());
        } else {
            while let Some(first) = self.expiries.first() {
                // the warnings say "in the past" once now > t
                if first.0 >= ctx.now {
                    break;
                }
                let (_, rel) = self.expiries.pop_first().expect("first");
                stale.insert(rel);
            }
            stale.extend(self.errors.iter().cloned());
        }

        // merge-walk the (sorted) input against the entries
        let mut to_load: Vec<FileRef<'b>> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        let mut old = self.entries.iter().peekable();
        for f in files {
            while let Some((rel, _)) = old.next_if(|(rel, _)| rel.as_str() < f.rel) {
                removed.push(rel.clone());
            }
            let same = match old.next_if(|(rel, _)| rel.as_str() == f.rel) {
                Some((rel, e)) => {
                    e.hash == f.hash && e.load.file == *f.label && !stale.contains(rel)
                }
                None => false,
            };
            if !same {
                to_load.push(f);
            }
        }
        removed.extend(old.map(|(rel, _)| rel.clone()));

        self.apply(to_load, removed, ctx)
    }

    /// Brings the set up to date when only the files `rels` (relative
    /// paths) may have changed since the last update: `lookup` gives a
    /// file as it is now (`None`: gone). Costs the named files, the files
    /// with errors and those whose findings expired; all files when the
    /// context changed.
    pub fn update_changed<'b, I, L>(&mut self, rels: I, lookup: L, ctx: &Context) -> UpdateStats
    where
        I: IntoIterator<Item = &'b str>,
        L: Fn(&str) -> Option<FileRef<'b>>,
    {
        let key = ctx_key(ctx);
        let mut names: BTreeSet<String> = rels.into_iter().map(str::to_string).collect();
        if self.ctx_key.as_deref() != Some(key.as_str()) {
            names.extend(self.entries.keys().cloned());
        } else {
            while let Some(first) = self.expiries.first() {
                if first.0 >= ctx.now {
                    break;
                }
                let (_, rel) = self.expiries.pop_first().expect("first");
                names.insert(rel);
            }
            names.extend(self.errors.iter().cloned());
        }
        self.ctx_key = Some(key);
        let mut to_load = Vec::new();
        let mut removed = Vec::new();
        for rel in names {
            match lookup(&rel) {
                Some(f) => to_load.push(f),
                None if self.entries.contains_key(&rel) => removed.push(rel),
                None => {}
            }
        }
        self.apply(to_load, removed, ctx)
    }

    fn apply<'b>(
        &mut self,
        to_load: Vec<FileRef<'b>>,
        removed: Vec<String>,
        ctx: &Context,
    ) -> UpdateStats {
        let stats = UpdateStats {
            files_loaded: to_load.len(),
            files_removed: removed.len(),
            names_resolved: 0,
        };
        if to_load.is_empty() && removed.is_empty() {
            return stats;
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for rel in &removed {
            self.remove(rel, &mut touched);
        }
        let meta: Vec<(String, [u8; 32])> = to_load
            .iter()
            .map(|f| (f.rel.to_string(), f.hash))
            .collect();
        // the bytes no snapshot holds any more (a file validated again
        // without a change: the context changed, its findings expired, it
        // has errors), read again
        let again: Vec<Option<Result<Arc<[u8]>, String>>> = to_load
            .iter()
            .map(|f| {
                matches!(f.bytes, Ok(None))
                    .then(|| crate::source::scan::read_again(f.path, &f.hash))
            })
            .collect();
        let loads = load_many(
            to_load
                .into_iter()
                .zip(&again)
                .map(|(f, again)| Input {
                    label: f.label.into_owned(),
                    rel: f.rel.to_string(),
                    bytes: match (f.bytes, again) {
                        (Ok(Some(b)), _) => Ok(b),
                        (Ok(None), Some(Ok(b))) => Ok(&b[..]),
                        (Ok(None), Some(Err(e))) => Err(e.clone()),
                        (Err(e), _) => Err(e.to_string()),
                        (Ok(None), None) => Err("not read".to_string()), // read above
                    },
                })
                .collect(),
            ctx,
        );
        for ((rel, hash), load) in meta.into_iter().zip(loads) {
            self.remove(&rel, &mut touched);
            self.insert(rel, hash, load, ctx.now, &mut touched);
        }
        let names_resolved = touched.len();
        for name in &touched {
            self.resolve(name);
        }
        self.touched.extend(touched);
        self.set.file_count = self.entries.len();
        self.rebuild_diagnostics();
        UpdateStats {
            names_resolved,
            ..stats
        }
    }

    fn remove(&mut self, rel: &str, touched: &mut BTreeSet<String>) {
        let Some(e) = self.entries.remove(rel) else {
            return;
        };
        if let Some(t) = e.expires {
            self.expiries.remove(&(t, rel.to_string()));
        }
        self.own_diags.remove(&e.load.file);
        self.errors.remove(rel);
        self.set.invalid_files.remove(&e.load.file);
        for s in &e.load.specs {
            if let Some(c) = self.claims.get_mut(&s.name) {
                c.valid.retain(|(r, _)| r != rel);
                c.dup_files.remove(rel);
            }
            touched.insert(s.name.clone());
        }
        for n in &e.load.invalid_names {
            if let Some(c) = self.claims.get_mut(n) {
                c.invalid.remove(rel);
            }
            touched.insert(n.clone());
        }
    }

    fn insert(
        &mut self,
        rel: String,
        hash: [u8; 32],
        load: FileLoad,
        now: Timestamp,
        touched: &mut BTreeSet<String>,
    ) {
        for s in &load.specs {
            let valid = &mut self.claims.entry(s.name.clone()).or_default().valid;
            match valid.binary_search_by(|(r, _)| r.as_str().cmp(&rel)) {
                Ok(i) => valid[i].1 += 1,
                Err(i) => valid.insert(i, (rel.clone(), 1)),
            }
            touched.insert(s.name.clone());
        }
        for n in &load.invalid_names {
            self.claims
                .entry(n.clone())
                .or_default()
                .invalid
                .insert(rel.clone());
            touched.insert(n.clone());
        }
        let has_errors = load.has_errors();
        if has_errors {
            self.set.invalid_files.insert(load.file.clone());
            self.errors.insert(rel.clone());
        }
        if !load.diagnostics.is_empty() {
            self.own_diags
                .insert(load.file.clone(), load.diagnostics.clone());
        }
        let expires = expiry(&load, now);
        if let Some(t) = expires {
            self.expiries.insert((t, rel.clone()));
        }
        self.entries.insert(
            rel,
            Entry {
                hash,
                load,
                has_errors,
                expires,
                dup_specs: 0,
            },
        );
    }

    /// Decides one name again from the files that claim it, as
    /// [`SetBuilder::finish`](super::SetBuilder::finish) does.
    fn resolve(&mut self, name: &str) {
        self.set.specs.remove(name);
        self.dup_diags.remove(name);
        let Some(claims) = self.claims.get_mut(name) else {
            self.set.invalid_names.remove(name);
            return;
        };
        // undo the old duplicate marks
        for (rel, n) in std::mem::take(&mut claims.dup_files) {
            if let Some(e) = self.entries.get_mut(&rel) {
                e.dup_specs -= n;
                if e.dup_specs == 0 && !e.has_errors {
                    self.set.invalid_files.remove(&e.load.file);
                }
            }
        }
        if claims.valid.is_empty() && claims.invalid.is_empty() {
            self.claims.remove(name);
            self.set.invalid_names.remove(name);
            return;
        }
        let specs: Vec<&Arc<Spec>> = claims
            .valid
            .iter()
            .filter_map(|(rel, _)| self.entries.get(rel))
            .flat_map(|e| e.load.specs.iter().filter(|s| s.name == name))
            .collect();
        if specs.len() == 1 && claims.invalid.is_empty() {
            self.set.specs.insert(name.to_string(), specs[0].clone());
            self.set.invalid_names.remove(name);
            return;
        }
        self.set.invalid_names.insert(name.to_string());
        if specs.is_empty() {
            return;
        }
        let places: Vec<String> = specs
            .iter()
            .map(|s| format!("{}:{}", s.file, s.line))
            .collect();
        let invalid_places: Vec<String> = claims
            .invalid
            .iter()
            .filter_map(|rel| self.entries.get(rel))
            .map(|e| format!("{}, which has errors", e.load.file))
            .collect();
        let mut diags = Vec::with_capacity(specs.len());
        for (s, own) in specs.iter().zip(&places) {
            let others: Vec<&str> = places
                .iter()
                .filter(|p| *p != own)
                .chain(&invalid_places)
                .map(String::as_str)
                .collect();
            let d = super::load::duplicate_name(&s.file, s.line, name, &others);
            diags.push(d);
        }
        let dup: BTreeMap<String, usize> = claims
            .valid
            .iter()
            .map(|(rel, n)| (rel.clone(), *n))
            .collect();
        for (rel, n) in &dup {
            if let Some(e) = self.entries.get_mut(rel) {
                e.dup_specs += n;
                self.set.invalid_files.insert(e.load.file.clone());
            }
        }
        if let Some(c) = self.claims.get_mut(name) {
            c.dup_files = dup;
        }
        self.dup_diags.insert(name.to_string(), diags);
    }

    fn rebuild_diagnostics(&mut self) {
        let mut all: Vec<Diagnostic> = self
            .own_diags
            .values()
            .flatten()
            .chain(self.dup_diags.values().flatten())
            .cloned()
            .collect();
        all.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        self.set.diagnostics = all;
    }
}
