//! The spec report behind `calld status` and `/v1/specs` (issue 12,
//! item 4): updated for the specs that changed, not rebuilt, and written
//! to `specs.json` off the decision path when it is large.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::{Controller, SPECS_REPORT};

/// Above this many specs, `specs.json` is written from a blocking thread
/// (the latest report; writes that pile up are coalesced).
const BACKGROUND_WRITE_FROM: usize = 2_000;

#[derive(Debug)]
pub(crate) struct ReportState {
    /// Names whose entry may have changed since the report was updated.
    touched: BTreeSet<String>,
    /// Build it whole next time (at start).
    whole: bool,
    /// Held while `specs.json` is written; a write waiting for it is
    /// skipped when another one is waiting already.
    writer: Arc<Mutex<()>>,
    queued: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for ReportState {
    fn default() -> Self {
        ReportState {
            touched: BTreeSet::new(),
            whole: true,
            writer: Arc::new(Mutex::new(())),
            queued: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

impl ReportState {
    pub(crate) fn touch(&mut self, names: &BTreeSet<String>) {
        if !self.whole {
            self.touched.extend(names.iter().cloned());
        }
    }
}

/// The spec report as the daemon keeps it: each spec's entry as compact
/// JSON text (a few hundred bytes, where a `serde_json::Value` tree took
/// a few kilobytes: issue 12, item 4), the rest as JSON values. Readers
/// get the whole document with [`SpecsReport::to_value`].
#[derive(Debug, Default, Clone)]
pub struct SpecsReport {
    /// Set at the first update: before, the report is `null`.
    ready: bool,
    /// Every top-level field but `specs`.
    head: serde_json::Map<String, serde_json::Value>,
    /// Per spec name, its entry ([`crate::status::spec_report_entry`]); a
    /// persistent map, so the writer of `specs.json` takes a copy of it in
    /// O(1) and serializes it without holding the lock.
    entries: imbl::OrdMap<String, Arc<str>>,
}

/// The report as JSON, read without holding the lock while it is built.
pub fn read(report: &Mutex<SpecsReport>) -> serde_json::Value {
    let copy = report.lock().unwrap_or_else(|p| p.into_inner()).clone();
    copy.to_value()
}

impl SpecsReport {
    /// The document `calld status` and `/v1/specs` read.
    pub fn to_value(&self) -> serde_json::Value {
        if !self.ready {
            return serde_json::Value::Null;
        }
        let mut doc = self.head.clone();
        let specs = self
            .entries
            .values()
            .map(|e| serde_json::from_str(e).expect("an entry is JSON"))
            .collect();
        doc.insert("specs".into(), serde_json::Value::Array(specs));
        serde_json::Value::Object(doc)
    }

    /// The document as JSON text (what `specs.json` holds), without a
    /// tree of it in between.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.entries.values().map(|e| e.len() + 2).sum::<usize>() + 4096);
        out.push(b'{');
        for (k, v) in &self.head {
            serde_json::to_writer(&mut out, k).expect("JSON");
            out.push(b':');
            serde_json::to_writer(&mut out, v).expect("JSON");
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(b"\"specs\":[");
        for (i, e) in self.entries.values().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",\n");
            }
            out.extend_from_slice(e.as_bytes());
        }
        out.extend_from_slice(b"]}\n");
        out
    }

    fn set_entry(&mut self, spec: &crate::spec::Spec) {
        let entry = crate::status::spec_report_entry(spec).to_string();
        self.entries.insert(spec.name.clone(), entry.into());
    }
}

impl Controller {
    /// `<stateDir>/specs.json`: the daemon's view of the calls directory,
    /// read by `calld status` (written atomically).
    pub(crate) fn write_specs_report(&mut self) {
        let touched = std::mem::take(&mut self.report.touched);
        let whole = std::mem::take(&mut self.report.whole);
        {
            let mut doc = self.rt.specs_json.lock().unwrap_or_else(|p| p.into_inner());
            let set = &self.specs;
            if whole || !doc.ready {
                doc.entries.clear();
                for s in set.specs.values() {
                    doc.set_entry(s);
                }
                doc.ready = true;
            } else {
                for name in &touched {
                    match set.specs.get(name) {
                        Some(s) => doc.set_entry(s),
                        None => {
                            doc.entries.remove(name);
                        }
                    }
                }
            }
            let head = &mut doc.head;
            head.insert("updatedAt".into(), json!(crate::clock::now().to_string()));
            head.insert("files".into(), json!(set.file_count));
            head.insert("invalidNames".into(), json!(set.invalid_names));
            head.insert("invalidFiles".into(), json!(set.invalid_files));
            head.insert("diagnostics".into(), json!(set.diagnostics));
            head.insert("held".into(), json!(self.held_now));
            #[cfg(debug_assertions)]
            {
                let mut full = super::specs_report(&self.specs);
                full["held"] = json!(self.held_now);
                full["updatedAt"] = doc.head["updatedAt"].clone();
                debug_assert_eq!(doc.to_value(), full, "the patched spec report");
            }
        }
        let json = self.rt.specs_json.clone();
        let path = self.rt.state_dir.join(SPECS_REPORT);
        let tmp = self.rt.state_dir.join(format!(".{SPECS_REPORT}.tmp"));
        let writer = self.report.writer.clone();
        let write = move || {
            let _guard = writer.lock().unwrap_or_else(|p| p.into_inner());
            let copy = json.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let bytes = copy.to_json();
            let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = result {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the spec report for `calld status`");
            }
        };
        if self.specs.specs.len() < BACKGROUND_WRITE_FROM {
            write();
            return;
        }
        use std::sync::atomic::Ordering;
        if self.report.queued.swap(true, Ordering::AcqRel) {
            // a write is queued: it will take the latest report
            return;
        }
        let queued = self.report.queued.clone();
        tokio::task::spawn_blocking(move || {
            queued.store(false, Ordering::Release);
            write();
        });
    }
}
