//! The spec report behind `calld status` and `/v1/specs` (issue 12,
//! item 4): updated for the specs that changed, not rebuilt, and written
//! to `specs.json` off the decision path when it is large.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::{Controller, SPECS_REPORT, specs_report};

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

impl Controller {
    /// `<stateDir>/specs.json`: the daemon's view of the calls directory,
    /// read by `calld status` (written atomically).
    pub(crate) fn write_specs_report(&mut self) {
        let touched = std::mem::take(&mut self.report.touched);
        let whole = std::mem::take(&mut self.report.whole);
        {
            let mut doc = self.rt.specs_json.lock().unwrap_or_else(|p| p.into_inner());
            let patchable = doc.get("specs").is_some_and(|s| s.is_array());
            if whole || !patchable {
                *doc = specs_report(&self.specs);
            } else {
                let set = &self.specs;
                let specs = doc["specs"].as_array_mut().expect("an array");
                for name in &touched {
                    let at = specs.binary_search_by(|e| {
                        e["name"].as_str().unwrap_or_default().cmp(name.as_str())
                    });
                    match (at, set.specs.get(name)) {
                        (Ok(i), Some(s)) => specs[i] = crate::status::spec_report_entry(s),
                        (Ok(i), None) => {
                            specs.remove(i);
                        }
                        (Err(i), Some(s)) => specs.insert(i, crate::status::spec_report_entry(s)),
                        (Err(_), None) => {}
                    }
                }
                doc["updatedAt"] = json!(crate::clock::now().to_string());
                doc["files"] = json!(set.file_count);
                doc["invalidNames"] = json!(set.invalid_names);
                doc["invalidFiles"] = json!(set.invalid_files);
                doc["diagnostics"] = json!(set.diagnostics);
            }
            doc["held"] = json!(self.held_now);
            #[cfg(debug_assertions)]
            {
                let mut full = specs_report(&self.specs);
                full["held"] = json!(self.held_now);
                full["updatedAt"] = doc["updatedAt"].clone();
                debug_assert_eq!(*doc, full, "the patched spec report");
            }
        }
        let json = self.rt.specs_json.clone();
        let path = self.rt.state_dir.join(SPECS_REPORT);
        let tmp = self.rt.state_dir.join(format!(".{SPECS_REPORT}.tmp"));
        let writer = self.report.writer.clone();
        let write = move || {
            let _guard = writer.lock().unwrap_or_else(|p| p.into_inner());
            let bytes = {
                let doc = json.lock().unwrap_or_else(|p| p.into_inner());
                serde_json::to_vec_pretty(&*doc).expect("JSON")
            };
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
