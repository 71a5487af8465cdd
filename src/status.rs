//! `calld status` and `calld history`: read the ledger (also while the
//! daemon runs: SQLite WAL lets a reader in) and the daemon's spec report.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{Value as Json, json};

use crate::callback::describe_result;
use crate::cli::Format;
use crate::config::Config;
use crate::daemon::SPECS_REPORT;
use crate::ledger::{LEDGER_FILE, Ledger, ResultInfo, Run, RunRecord, RunState, SqliteLedger};

fn open(
    config: Option<&Path>,
    state_dir: Option<&Path>,
) -> Result<(SqliteLedger, std::path::PathBuf), u8> {
    let (mut cfg, _) = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calld: configuration: {e}");
            return Err(2);
        }
    };
    if let Some(d) = state_dir {
        cfg.state_dir = Some(d.to_path_buf());
    } else if let Some(d) = std::env::var_os("CALLD_STATE_DIR").filter(|d| !d.is_empty()) {
        cfg.state_dir = Some(d.into());
    }
    let dir = cfg.state_dir();
    match SqliteLedger::open_read_only(&dir.join(LEDGER_FILE)) {
        Ok(l) => Ok((l, dir)),
        Err(e) => {
            eprintln!("calld: {e}");
            Err(2)
        }
    }
}

/// "200/5001 (the conversation ended)".
pub fn result_text(r: &ResultInfo) -> String {
    let code = r.code.unwrap_or(0);
    let sub = r.subcode.unwrap_or(0);
    format!("{code}/{sub} ({})", describe_result(code, sub))
}

fn run_json(r: &Run) -> Json {
    let mut v = serde_json::to_value(r).expect("runs serialise");
    if let Some(info) = &r.result_info {
        v["resultMeaning"] = json!(describe_result(
            info.code.unwrap_or(0),
            info.subcode.unwrap_or(0)
        ));
    }
    v
}

fn short_time(t: &jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

pub fn status(config: Option<&Path>, state_dir: Option<&Path>, format: Format) -> u8 {
    let (ledger, dir) = match open(config, state_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let report: Json = std::fs::read(dir.join(SPECS_REPORT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Json::Null);
    let (latest, open) = match ledger
        .latest_runs()
        .and_then(|l| Ok((l, ledger.open_runs()?)))
    {
        Ok(x) => x,
        Err(e) => {
            eprintln!("calld status: {e}");
            return 2;
        }
    };
    // per spec: (latest finished-or-started run, next scheduled run, run in progress)
    type Row = (Option<Run>, Option<Run>, Option<Run>);
    let mut names: BTreeMap<String, Row> = BTreeMap::new();
    for s in report["specs"].as_array().into_iter().flatten() {
        if let Some(n) = s["name"].as_str() {
            names.entry(n.to_string()).or_default();
        }
    }
    // held names (a file that fails to load, a mass disappearance, ...)
    let held = report["held"].as_object().cloned().unwrap_or_default();
    for n in held.keys() {
        names.entry(n.clone()).or_default();
    }
    for r in latest {
        let spec = r.spec.clone();
        names.entry(spec).or_default().0 = Some(r);
    }
    for r in open {
        let e = names.entry(r.spec.clone()).or_default();
        if r.state == RunState::Scheduled {
            if e.1.as_ref().is_none_or(|n| r.due_at < n.due_at) {
                e.1 = Some(r);
            }
        } else {
            e.2 = Some(r);
        }
    }
    let diagnostics: Vec<Json> = report["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let problems_of = |name: &str| -> Vec<&Json> {
        diagnostics
            .iter()
            .filter(|d| d["spec"].as_str() == Some(name))
            .collect()
    };
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let specs: Vec<Json> = names
                .iter()
                .map(|(name, (last, next, current))| {
                    json!({
                        "name": name,
                        "lastRun": last.as_ref().map(run_json),
                        "currentRun": current.as_ref().map(run_json),
                        "nextRun": next.as_ref().map(run_json),
                        "revision": report["specs"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|s| s["name"].as_str() == Some(name))
                            .map(|s| s["revision"].clone()),
                        "problems": problems_of(name),
                        "held": held.get(name),
                    })
                })
                .collect();
            let doc = json!({
                "updatedAt": report["updatedAt"],
                "specs": specs,
                "invalidFiles": report["invalidFiles"],
                "diagnostics": diagnostics,
            });
            let _ = writeln!(out, "{doc}");
        }
        Format::Text | Format::Github => {
            let rows: Vec<[String; 4]> = names
                .iter()
                .map(|(name, (last, next, current))| {
                    let last_txt = match (current, last) {
                        (Some(c), _) => format!("{} {}", short_time(&c.scheduled_at), c.state),
                        (None, Some(l)) => {
                            let mut t = format!(
                                "{} {}",
                                short_time(&l.scheduled_at),
                                l.outcome.map(|o| o.as_str()).unwrap_or(l.state.as_str())
                            );
                            if let Some(ri) = &l.result_info {
                                t.push_str(&format!(" {}", result_text(ri)));
                            } else if let Some(reason) = &l.reason {
                                t.push_str(&format!(" ({reason})"));
                            }
                            t
                        }
                        (None, None) => "-".into(),
                    };
                    let next_txt = next
                        .as_ref()
                        .map(|n| short_time(&n.due_at))
                        .unwrap_or_else(|| "-".into());
                    let probs = problems_of(name)
                        .iter()
                        .filter(|d| d["severity"] == "error")
                        .map(|d| {
                            format!(
                                "{}:{}:{}: {}",
                                d["file"].as_str().unwrap_or(""),
                                d["line"],
                                d["column"],
                                d["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    [name.clone(), last_txt, next_txt, probs]
                })
                .collect();
            let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0).max(4);
            let w2 = rows.iter().map(|r| r[2].len()).max().unwrap_or(0).max(8);
            let _ = writeln!(out, "{:<w0$}  {:<w2$}  LAST RUN", "SPEC", "NEXT RUN");
            for r in &rows {
                let _ = writeln!(out, "{:<w0$}  {:<w2$}  {}", r[0], r[2], r[1]);
                if let Some(why) = held.get(&r[0]).and_then(Json::as_str) {
                    let _ = writeln!(out, "{:<w0$}  held (runs kept, nothing placed): {why}", "");
                } else if !r[3].is_empty() {
                    let _ = writeln!(out, "{:<w0$}  invalid: {}", "", r[3]);
                }
            }
            let invalid_files: Vec<&Json> = report["invalidFiles"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if !invalid_files.is_empty() {
                let _ = writeln!(out, "\n{} invalid file(s):", invalid_files.len());
                for d in diagnostics.iter().filter(|d| d["severity"] == "error") {
                    let path = d["path"].as_str().unwrap_or("");
                    let _ = writeln!(
                        out,
                        "  {}:{}:{}: error: {}{}",
                        d["file"].as_str().unwrap_or(""),
                        d["line"],
                        d["column"],
                        if path.is_empty() {
                            String::new()
                        } else {
                            format!("{path}: ")
                        },
                        d["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    0
}

pub fn history(
    name: &str,
    limit: usize,
    config: Option<&Path>,
    state_dir: Option<&Path>,
    format: Format,
) -> u8 {
    let (ledger, _) = match open(config, state_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // names are compared after NFC normalisation (docs/runs.md)
    let name = &crate::spec::validate::normal_name(name);
    let records: Vec<RunRecord> = match ledger.history(name, limit) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("calld history: {e}");
            return 2;
        }
    };
    let renames = ledger.renames_to(name).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let runs: Vec<Json> = records
                .iter()
                .map(|rec| {
                    let mut v = serde_json::to_value(rec).expect("records serialise");
                    if let Some(info) = &rec.run.result_info {
                        v["resultMeaning"] = json!(describe_result(
                            info.code.unwrap_or(0),
                            info.subcode.unwrap_or(0)
                        ));
                    }
                    v
                })
                .collect();
            let _ = writeln!(
                out,
                "{}",
                json!({ "spec": name, "runs": runs, "renamedFrom": renames })
            );
        }
        Format::Text | Format::Github => {
            for r in &renames {
                let _ = writeln!(
                    out,
                    "renamed from `{}` to `{}` at {} (same revision {}): the runs below include those of `{}`",
                    r.from,
                    r.to,
                    short_time(&r.at),
                    r.revision.get(..12).unwrap_or(&r.revision),
                    r.from
                );
            }
            if records.is_empty() {
                let _ = writeln!(out, "no runs recorded for `{name}`");
                return 0;
            }
            for rec in &records {
                let r = &rec.run;
                let outcome = r.outcome.map(|o| o.as_str()).unwrap_or(r.state.as_str());
                let _ = writeln!(
                    out,
                    "run {}  scheduled {}  {}  revision {}",
                    r.id,
                    short_time(&r.scheduled_at),
                    outcome,
                    r.revision.get(..12).unwrap_or(&r.revision)
                );
                if let Some(reason) = &r.reason {
                    let _ = writeln!(out, "  reason: {reason}");
                }
                if let Some(ri) = &r.result_info {
                    let _ = writeln!(out, "  result: {}", result_text(ri));
                }
                if let Some(c) = &r.call_id {
                    let _ = writeln!(out, "  call:   {c}");
                }
                for a in &rec.attempts {
                    let _ = writeln!(
                        out,
                        "  attempt {} at {}: {}{}{}{}",
                        a.number,
                        short_time(&a.started_at),
                        a.disposition.map(|d| d.as_str()).unwrap_or("in flight"),
                        a.http_status
                            .map(|s| format!(" HTTP {s}"))
                            .unwrap_or_default(),
                        a.error_code
                            .as_ref()
                            .map(|c| format!(" {c}"))
                            .unwrap_or_default(),
                        a.request_id
                            .as_ref()
                            .map(|c| format!(" request-id {c}"))
                            .unwrap_or_default(),
                    );
                }
                for s in &rec.call_states {
                    let _ = writeln!(
                        out,
                        "  {}  {}{}",
                        short_time(&s.at),
                        s.state,
                        s.result_info
                            .as_ref()
                            .map(|ri| format!(" {}", result_text(ri)))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    0
}
