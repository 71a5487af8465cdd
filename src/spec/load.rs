//! Loading spec files: bytes → documents → validated specs, with every
//! problem reported and one bad file never hiding the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::diag::{Diagnostic, Severity};
use super::files::MAX_SPEC_FILE_BYTES;
use super::model::Spec;
use super::validate::{Checker, Context, check_name, normal_name, validate_document};
use super::yaml::{Pos, Value, parse_documents};

/// What one file gave.
#[derive(Debug, Clone, Default)]
pub struct FileLoad {
    pub file: String,
    /// Shared, not copied, by the spec sets built from this load.
    pub specs: Vec<Arc<Spec>>,
    pub diagnostics: Vec<Diagnostic>,
    /// Names of documents that failed validation, where a name was known:
    /// their runs are held, not canceled, until they are valid again.
    pub invalid_names: BTreeSet<String>,
}

impl FileLoad {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The whole calls directory, validated.
#[derive(Debug, Clone, Default)]
pub struct SpecSet {
    /// Valid specs by name (duplicates removed: neither runs).
    pub specs: BTreeMap<String, Arc<Spec>>,
    /// Every finding, by file then position.
    pub diagnostics: Vec<Diagnostic>,
    /// Names whose spec exists but is invalid (or duplicated).
    pub invalid_names: BTreeSet<String>,
    /// Files with at least one error.
    pub invalid_files: BTreeSet<String>,
    /// Number of files read.
    pub file_count: usize,
}

impl SpecSet {
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
    pub fn warning_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }
}

const START: Pos = Pos { line: 1, column: 1 };

/// Line and column (1-based, in characters) of a byte offset.
fn pos_of_offset(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count() as u64
        + 1;
    Pos { line, column }
}

/// The spec name a file gives its only document: its path without the
/// extension (`team-a/standup.yaml` → `team-a/standup`).
pub fn default_name(rel: &str) -> &str {
    rel.strip_suffix(".yaml")
        .or_else(|| rel.strip_suffix(".yml"))
        .unwrap_or(rel)
}

/// Loads one file's bytes. `label` names the file in findings (the path as
/// the user knows it); `rel` is its path relative to the calls directory,
/// which gives the default spec name. Never panics on any input.
pub fn load_file(label: &str, rel: &str, bytes: &[u8], ctx: &Context) -> FileLoad {
    let mut out = FileLoad {
        file: label.to_string(),
        ..FileLoad::default()
    };
    let mut ck = Checker::new(label);
    if bytes.len() as u64 > MAX_SPEC_FILE_BYTES {
        ck.error(
            START,
            "",
            format!(
                "the file is larger than the {} KiB limit for a spec file: split it into several files",
                MAX_SPEC_FILE_BYTES / 1024
            ),
        );
        return held_whole(out, ck, rel);
    }
    if let Some(nul) = bytes.iter().position(|b| *b == 0) {
        ck.error(
            pos_of_offset(bytes, nul),
            "",
            "this is a binary file, not YAML: remove it from the calls directory",
        );
        return held_whole(out, ck, rel);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            ck.error(
                pos_of_offset(bytes, e.valid_up_to()),
                "",
                "the file is not UTF-8: save it as UTF-8",
            );
            return held_whole(out, ck, rel);
        }
    };
    let docs = match parse_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            let pos = if e.pos.line == 0 { START } else { e.pos };
            ck.error(pos, "", yaml_message(text, pos, &e.message));
            return held_whole(out, ck, rel);
        }
    };
    let docs: Vec<_> = docs.into_iter().flatten().collect();
    if docs.is_empty() {
        ck.error(
            START,
            "",
            "the file holds no call spec: write one, or remove the file",
        );
        return held_whole(out, ck, rel);
    }
    let single = docs.len() == 1;
    for doc in &docs {
        let before = ck.diags.len();
        let explicit_name = match &doc.value {
            Value::Map(entries) => {
                entries
                    .iter()
                    .find(|(k, _)| k.name == "name")
                    .and_then(|(_, v)| match &v.value {
                        Value::String(s) => Some(normal_name(s)),
                        _ => None,
                    })
            }
            _ => None,
        };
        let name = explicit_name.or_else(|| single.then(|| normal_name(default_name(rel))));
        let spec = validate_document(&mut ck, doc, single.then(|| default_name(rel)), ctx);
        for d in &mut ck.diags[before..] {
            d.spec = name.clone();
        }
        match spec {
            Some(s) => out.specs.push(Arc::new(s)),
            None => {
                if let Some(n) = name {
                    out.invalid_names.insert(n);
                }
            }
        }
    }
    out.diagnostics = ck.diags;
    out
}

/// A file that could not be read as documents at all (size, NUL bytes,
/// encoding, YAML syntax, no document): it still names the spec its path
/// gives, whose runs are held, not canceled (the daemon also holds every
/// spec the file held before, under their names).
/// The error both specs of a duplicate name get; `others` are the other
/// places that claim it (`file:line`, or a file with errors).
pub(crate) fn duplicate_name(file: &str, line: u64, name: &str, others: &[&str]) -> Diagnostic {
    let mut d = Diagnostic::new(
        file,
        Pos { line, column: 1 },
        Severity::Error,
        "name",
        format!(
            "duplicate name `{name}` (also at {}): names are unique across the calls directory; \
             neither runs until one is renamed",
            others.join(", ")
        ),
    );
    d.spec = Some(name.to_string());
    d
}

fn held_whole(mut out: FileLoad, ck: Checker, rel: &str) -> FileLoad {
    out.diagnostics = ck.diags;
    if let Some(n) = held_default_name(rel) {
        for d in &mut out.diagnostics {
            d.spec.get_or_insert_with(|| n.clone());
        }
        out.invalid_names.insert(n);
    }
    out
}

/// The default name of a file, as a held name (if it is a valid name).
fn held_default_name(rel: &str) -> Option<String> {
    let d = default_name(rel);
    check_name(d).ok().map(|()| normal_name(d))
}

/// serde-saphyr's message, with a hint for the mistakes people make.
fn yaml_message(text: &str, pos: Pos, message: &str) -> String {
    let line = text
        .lines()
        .nth(pos.line.saturating_sub(1) as usize)
        .unwrap_or("");
    let tabbed = line.starts_with('\t') || text.lines().any(|l| l.starts_with('\t'));
    if tabbed && (message.contains("tab") || message.contains("indent") || line.starts_with('\t')) {
        return format!("{message}: YAML does not allow tabs for indentation; indent with spaces");
    }
    if message.contains("budget")
        || message.contains("recursion limit")
        || message.contains("too large or too complex")
    {
        return format!(
            "{message}: the document is nested too deeply or uses too many aliases for a call spec"
        );
    }
    format!("invalid YAML: {message}")
}

/// One file to load: its label in findings, its path relative to the calls
/// directory, and its bytes or the error reading it.
pub struct Input<'b> {
    pub label: String,
    pub rel: String,
    pub bytes: Result<&'b [u8], String>,
}

/// Loads a set of files and enforces unique names across them: a duplicate
/// is an error for both, and neither runs.
pub fn load_set<'b, I>(files: I, ctx: &Context) -> SpecSet
where
    I: IntoIterator<Item = Input<'b>>,
{
    let mut builder = SetBuilder::default();
    for input in files {
        builder.add_input(input, ctx);
    }
    builder.finish()
}

/// Loads one input: its bytes, or the error reading it (a file that cannot
/// be read still names the spec its path gives, whose runs are held).
pub fn load_input(input: Input<'_>, ctx: &Context) -> FileLoad {
    match input.bytes {
        Ok(bytes) => load_file(&input.label, &input.rel, bytes, ctx),
        Err(e) => {
            let mut load = FileLoad {
                file: input.label.clone(),
                ..FileLoad::default()
            };
            load.diagnostics.push(Diagnostic::new(
                &input.label,
                START,
                Severity::Error,
                "",
                format!("cannot read: {e}"),
            ));
            // a file we cannot read still names a spec whose runs are held
            load.invalid_names.extend(held_default_name(&input.rel));
            load
        }
    }
}

/// [`load_set`] one file at a time, so a caller can read, load and drop
/// each file's bytes in turn instead of holding the whole directory.
#[derive(Debug, Default)]
pub struct SetBuilder {
    set: SpecSet,
    by_name: BTreeMap<String, Vec<Arc<Spec>>>,
    // names of invalid documents, with their files: a valid spec sharing a
    // name with an invalid one is a duplicate too (else fixing the invalid
    // one would silently stop the valid one)
    invalid_in: BTreeMap<String, Vec<String>>,
}

impl SetBuilder {
    /// Loads one input (its bytes, or the error reading it) and adds it.
    pub fn add_input(&mut self, input: Input<'_>, ctx: &Context) {
        self.add(load_input(input, ctx));
    }

    /// Adds one file's result.
    pub fn add(&mut self, load: FileLoad) {
        let set = &mut self.set;
        set.file_count += 1;
        if load.has_errors() {
            set.invalid_files.insert(load.file.clone());
        }
        for name in &load.invalid_names {
            self.invalid_in
                .entry(name.clone())
                .or_default()
                .push(load.file.clone());
        }
        set.invalid_names.extend(load.invalid_names);
        set.diagnostics.extend(load.diagnostics);
        for spec in load.specs {
            self.by_name
                .entry(spec.name.clone())
                .or_default()
                .push(spec);
        }
    }

    /// Resolves duplicate names and sorts the findings.
    pub fn finish(self) -> SpecSet {
        let SetBuilder {
            mut set,
            by_name,
            invalid_in,
        } = self;
        for (name, specs) in by_name {
            let invalid_files = invalid_in.get(&name);
            if specs.len() == 1 && invalid_files.is_none() {
                let spec = specs.into_iter().next().expect("one");
                set.specs.insert(name, spec);
                continue;
            }
            let places: Vec<String> = specs
                .iter()
                .map(|s| format!("{}:{}", s.file, s.line))
                .collect();
            let invalid_places: Vec<String> = invalid_files
                .into_iter()
                .flatten()
                .map(|f| format!("{f}, which has errors"))
                .collect();
            for s in &specs {
                let others: Vec<&String> = places
                    .iter()
                    .filter(|p| **p != format!("{}:{}", s.file, s.line))
                    .chain(&invalid_places)
                    .collect();
                let others: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
                let d = duplicate_name(&s.file, s.line, &name, &others);
                set.diagnostics.push(d);
                set.invalid_files.insert(s.file.clone());
            }
            set.invalid_names.insert(name);
        }
        set.diagnostics
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        set
    }
}
