//! What a load of the calls directory logs: which specs it added, changed,
//! removed or put on hold (one line), and each finding once per file
//! revision (a rescan that finds the same file with the same problem says
//! nothing again; an edit that keeps the problem says it once more).

use std::collections::{BTreeSet, HashSet};

use crate::source::Snapshot;
use crate::spec::{Severity, SpecSet};

/// At most this many names per list in the summary line.
const MAX_NAMES: usize = 20;

/// The findings already logged: (file, its content hash, the finding).
#[derive(Debug, Default)]
pub(crate) struct LoadLog {
    seen: HashSet<(String, [u8; 32], String)>,
}

/// The names as `a, b, c` (at most [`MAX_NAMES`], then `and N more`).
pub(crate) fn name_list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let names: Vec<&String> = names.into_iter().collect();
    let mut out = names
        .iter()
        .take(MAX_NAMES)
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMES {
        out.push_str(&format!(" and {} more", names.len() - MAX_NAMES));
    }
    out
}

/// What changed between two loads: (added, changed, removed, newly held).
pub(crate) fn spec_changes(
    old: &SpecSet,
    new: &SpecSet,
) -> (
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<String>,
) {
    let mut added = BTreeSet::new();
    let mut changed = BTreeSet::new();
    for (name, spec) in &new.specs {
        match old.specs.get(name) {
            None => {
                added.insert(name.clone());
            }
            Some(o) if o.revision != spec.revision || o.suspend != spec.suspend => {
                changed.insert(name.clone());
            }
            Some(_) => {}
        }
    }
    let held: BTreeSet<String> = new
        .invalid_names
        .difference(&old.invalid_names)
        .cloned()
        .collect();
    let removed = old
        .specs
        .keys()
        .chain(old.invalid_names.iter())
        .filter(|n| !new.specs.contains_key(*n) && !new.invalid_names.contains(*n))
        .cloned()
        .collect();
    (added, changed, removed, held)
}

/// [`spec_changes`] when only the names in `touched` may have changed:
/// `old` holds the previous entries of those names only.
fn touched_changes(
    old: &SpecSet,
    new: &SpecSet,
    touched: &BTreeSet<String>,
) -> (
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<String>,
) {
    let part = SpecSet {
        specs: touched
            .iter()
            .filter_map(|n| new.specs.get(n).map(|s| (n.clone(), s.clone())))
            .collect(),
        invalid_names: touched
            .iter()
            .filter(|n| new.invalid_names.contains(*n))
            .cloned()
            .collect(),
        ..SpecSet::default()
    };
    spec_changes(old, &part)
}

impl LoadLog {
    /// Logs the load of `new`: only the names in `touched` changed since
    /// the last load, whose entries for them were `old`.
    pub(crate) fn log_touched(
        &mut self,
        old: &SpecSet,
        new: &SpecSet,
        touched: &BTreeSet<String>,
        snap: &Snapshot,
    ) {
        self.log_with(new, snap, touched_changes(old, new, touched));
    }

    #[allow(clippy::type_complexity)]
    fn log_with(
        &mut self,
        new: &SpecSet,
        snap: &Snapshot,
        changes: (
            BTreeSet<String>,
            BTreeSet<String>,
            BTreeSet<String>,
            BTreeSet<String>,
        ),
    ) {
        // by label, built once (not a walk over every file per finding)
        let hashes: std::collections::HashMap<String, [u8; 32]> = if new.diagnostics.is_empty() {
            Default::default()
        } else {
            snap.files
                .values()
                .map(|f| (f.path.display().to_string(), f.hash))
                .collect()
        };
        let hash_of = |label: &str| -> [u8; 32] { hashes.get(label).copied().unwrap_or_default() };
        let mut now_seen = HashSet::new();
        for d in &new.diagnostics {
            let key = (d.file.clone(), hash_of(&d.file), d.to_string());
            if !self.seen.contains(&key) {
                match d.severity {
                    Severity::Error => {
                        tracing::warn!(file = %d.file, line = d.line, column = d.column, spec = d.spec.as_deref().unwrap_or(""), "invalid spec: {d}")
                    }
                    Severity::Warning => {
                        tracing::info!(file = %d.file, spec = d.spec.as_deref().unwrap_or(""), "spec warning: {d}")
                    }
                }
            }
            now_seen.insert(key);
        }
        self.seen = now_seen;
        let (added, changed, removed, held) = changes;
        tracing::info!(
            files = new.file_count,
            specs = new.specs.len(),
            invalid_files = new.invalid_files.len(),
            added = %name_list(&added),
            changed = %name_list(&changed),
            removed = %name_list(&removed),
            held = %name_list(&held),
            "calls directory loaded"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> SpecSet {
        let ctx_defaults = crate::config::Config::from_yaml(
            "defaults: { source: { identity: { application: { id: 8a34a46b-3d17-4adc-8dce-dc4e7d572698 } } } }\ncallback: { publicUrl: https://bot.contoso.com/api/calls }\n",
        )
        .unwrap();
        let ctx = crate::spec::Context {
            defaults: &ctx_defaults.defaults,
            public_url: Some("https://bot.contoso.com/api/calls"),
            now: "2026-12-01T00:00:00Z".parse().unwrap(),
        };
        crate::spec::load_set(
            files.iter().map(|(rel, text)| crate::spec::Input {
                label: format!("calls.d/{rel}"),
                rel: rel.to_string(),
                bytes: Ok(text.as_bytes()),
            }),
            &ctx,
        )
    }

    #[test]
    fn added_changed_removed_held() {
        let t = "targets:\n  - user: { id: 550fae72-d251-43ec-868c-373732c2704f }\n";
        let old = set(&[("a.yaml", t), ("b.yaml", t), ("c.yaml", t)]);
        let new = set(&[
            ("a.yaml", t),
            ("b.yaml", &format!("subject: changed\n{t}")),
            ("c.yaml", &format!("{t}subjcet: typo\n")),
            ("d.yaml", t),
        ]);
        let (added, changed, removed, held) = spec_changes(&old, &new);
        let v = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        assert_eq!(v(&added), ["d"]);
        assert_eq!(v(&changed), ["b"]);
        assert!(removed.is_empty(), "c is held, not removed");
        assert_eq!(v(&held), ["c"]);
        let gone = set(&[("a.yaml", t)]);
        let (_, _, removed, _) = spec_changes(&new, &gone);
        assert_eq!(v(&removed), ["b", "c", "d"]);
    }

    #[test]
    fn long_lists_are_cut() {
        let names: Vec<String> = (0..25).map(|i| format!("s{i}")).collect();
        let text = name_list(&names);
        assert!(text.ends_with("s19 and 5 more"), "{text}");
    }
}
