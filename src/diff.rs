//! `calld diff [PATH]`: what the running daemon would do if its calls
//! directory became PATH: runs placed at once (with how many targets each
//! rings), runs newly scheduled, planned runs canceled, specs held, and
//! how many stay unchanged. It reads the daemon's state (the ledger and its
//! spec report, or the admin endpoint) and never writes.
//!
//! A spec counts as changed when its revision (the hash of what reaches
//! Graph, [`crate::spec::Spec::revision`]) or its `suspend` differs from the
//! daemon's. [`diff`] is pure: the new specs, the daemon's report, its
//! status document and `now` are passed in.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::{Value as Json, json};

use crate::cli::Format;
use crate::schedule::Trigger;
use crate::spec::{Spec, SpecSet};
use crate::status::{local_time, relative, target_count};

fn entry<'a>(report: &'a Json, name: &str) -> Option<&'a Json> {
    report["specs"]
        .as_array()?
        .iter()
        .find(|s| s["name"].as_str() == Some(name))
}

fn status_row<'a>(status: &'a Json, name: &str) -> Option<&'a Json> {
    status["specs"]
        .as_array()?
        .iter()
        .find(|s| s["name"].as_str() == Some(name))
}

fn planned(status: &Json, name: &str) -> Option<Json> {
    let next = &status_row(status, name)?["nextRun"];
    (!next.is_null()).then(|| {
        json!({
            "run": next["id"],
            "scheduledAt": next["scheduledAt"],
            "dueAt": next["dueAt"],
        })
    })
}

fn next_of(spec: &Spec, now: Timestamp) -> Option<Timestamp> {
    spec.schedule.as_ref()?.next_after(now)
}

/// What placing `spec` now or later means: (placed now?, its next run, why).
fn plan_of(spec: &Spec, now: Timestamp) -> (bool, Option<Timestamp>, Option<&'static str>) {
    match &spec.schedule {
        None => (true, None, None),
        Some(s) => match &s.trigger {
            Trigger::At(at) if *at <= now => {
                let within = s.place_by(*at).is_none_or(|by| now <= by);
                if within {
                    (true, None, Some("its time has passed, within its deadline"))
                } else {
                    (
                        false,
                        None,
                        Some("its time and deadline have passed: recorded missed"),
                    )
                }
            }
            _ => (false, next_of(spec, now), None),
        },
    }
}

/// The diff document (`calld diff --format json`).
pub fn diff(new: &SpecSet, report: &Json, status: &Json, now: Timestamp) -> Json {
    let mut place_now = Vec::new();
    let mut schedule = Vec::new();
    let mut cancel = Vec::new();
    let mut held = Vec::new();
    let mut unchanged = 0usize;
    let was_held: BTreeSet<&str> = report["invalidNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect();
    let zone_of = |spec: &Spec| {
        spec.schedule
            .as_ref()
            .map(|s| s.timezone.clone())
            .unwrap_or(jiff::tz::TimeZone::UTC)
    };

    for (name, spec) in &new.specs {
        let old = entry(report, name);
        let same = old.is_some_and(|o| {
            o["revision"].as_str() == Some(spec.revision.as_str())
                && (o["suspended"] == true) == spec.suspend
        });
        if same && !was_held.contains(name.as_str()) {
            unchanged += 1;
            continue;
        }
        let why = match old {
            None if was_held.contains(name.as_str()) => "valid again",
            None => "new",
            Some(o) if (o["suspended"] == true) != spec.suspend => {
                if spec.suspend {
                    "suspended"
                } else {
                    "resumed"
                }
            }
            Some(_) => "changed",
        };
        let old_planned = planned(status, name);
        if spec.suspend {
            if let Some(p) = old_planned {
                cancel.push(json!({"spec": name, "run": p["run"], "dueAt": p["dueAt"], "reason": "suspended: its runs are skipped"}));
            } else {
                schedule.push(json!({"spec": name, "next": null, "reason": format!("{why}; suspended, nothing is placed")}));
            }
            continue;
        }
        let (now_placed, next, note) = plan_of(spec, now);
        // an unscheduled spec whose revision already ran is not placed again
        let already = spec.schedule.is_none()
            && status_row(status, name)
                .is_some_and(|r| r["lastRun"]["revision"].as_str() == Some(spec.revision.as_str()));
        if let Some(p) = &old_planned {
            let kept = next.is_some_and(|n| {
                p["scheduledAt"]
                    .as_str()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    == Some(n)
            });
            if !kept {
                cancel.push(json!({"spec": name, "run": p["run"], "dueAt": p["dueAt"], "reason": format!("{why}: the spec no longer plans this run")}));
            }
        }
        if now_placed && !already {
            place_now.push(json!({
                "spec": name,
                "targets": target_count(spec),
                "reason": note.map(|n| format!("{why}; {n}")).unwrap_or_else(|| why.to_string()),
            }));
        } else if let Some(n) = next {
            let local = local_time(n, &zone_of(spec), now);
            let same_next = old_planned.as_ref().is_some_and(|p| {
                p["scheduledAt"]
                    .as_str()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    == Some(n)
            });
            schedule.push(json!({
                "spec": name,
                "next": n.to_string(),
                "nextLocal": local,
                "targets": target_count(spec),
                "reason": if same_next { format!("{why}; its next run is kept") } else { why.to_string() },
            }));
        } else {
            schedule.push(json!({
                "spec": name,
                "next": null,
                "reason": note.map(|n| format!("{why}; {n}")).unwrap_or_else(|| format!("{why}; no run planned")),
            }));
        }
    }

    // specs that would be invalid: held (their planned runs wait)
    for name in &new.invalid_names {
        if was_held.contains(name.as_str()) {
            unchanged += 1;
            continue;
        }
        let error = new
            .diagnostics
            .iter()
            .find(|d| d.is_error() && d.spec.as_deref() == Some(name.as_str()))
            .map(|d| d.to_string())
            .unwrap_or_default();
        held.push(json!({"spec": name, "error": error}));
    }
    // invalid files that name no spec
    for file in &new.invalid_files {
        let named = new
            .diagnostics
            .iter()
            .any(|d| &d.file == file && d.spec.is_some());
        if !named {
            let error = new
                .diagnostics
                .iter()
                .find(|d| &d.file == file && d.is_error())
                .map(|d| d.to_string())
                .unwrap_or_default();
            held.push(json!({"spec": null, "file": file, "error": error}));
        }
    }
    // removed specs: their planned runs are canceled
    for e in report["specs"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else {
            continue;
        };
        if new.specs.contains_key(name) || new.invalid_names.contains(name) {
            continue;
        }
        match planned(status, name) {
            Some(p) => cancel.push(json!({"spec": name, "run": p["run"], "dueAt": p["dueAt"], "reason": "removed"})),
            None => cancel.push(json!({"spec": name, "run": null, "dueAt": null, "reason": "removed (nothing was planned)"})),
        }
    }
    let rings: usize = place_now
        .iter()
        .map(|p| p["targets"].as_u64().unwrap_or(0) as usize)
        .sum();
    json!({
        "placeNow": place_now,
        "schedule": schedule,
        "cancel": cancel,
        "held": held,
        "unchanged": unchanged,
        "ringsNow": rings,
    })
}

/// Whether the diff says anything would change.
pub fn changes(doc: &Json) -> bool {
    ["placeNow", "schedule", "cancel", "held"]
        .iter()
        .any(|k| doc[*k].as_array().is_some_and(|a| !a.is_empty()))
}

/// The text form (also what the GitOps example posts on a pull request).
pub fn diff_text(doc: &Json, now: Timestamp) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let list = |k: &str| doc[k].as_array().cloned().unwrap_or_default();
    let place = list("placeNow");
    if !place.is_empty() {
        writeln!(
            out,
            "place now: {} run(s), ringing {} target(s) at once",
            place.len(),
            doc["ringsNow"]
        )
        .ok();
        for p in &place {
            writeln!(
                out,
                "  + {}  ({} target(s); {})",
                p["spec"].as_str().unwrap_or(""),
                p["targets"],
                p["reason"].as_str().unwrap_or("")
            )
            .ok();
        }
    }
    let sched = list("schedule");
    if !sched.is_empty() {
        writeln!(out, "schedule: {} spec(s)", sched.len()).ok();
        for s in &sched {
            let next = match (s["nextLocal"].as_str(), s["next"].as_str()) {
                (Some(local), Some(utc)) => {
                    let rel = utc
                        .parse::<Timestamp>()
                        .map(|t| relative(t.duration_since(now)))
                        .unwrap_or_default();
                    format!("next {local} ({rel})")
                }
                _ => "no run planned".into(),
            };
            writeln!(
                out,
                "  ~ {}  {next}; {}",
                s["spec"].as_str().unwrap_or(""),
                s["reason"].as_str().unwrap_or("")
            )
            .ok();
        }
    }
    let cancel = list("cancel");
    if !cancel.is_empty() {
        writeln!(out, "cancel: {} planned run(s) or spec(s)", cancel.len()).ok();
        for c in &cancel {
            let run = match (c["run"].as_str(), c["dueAt"].as_str()) {
                (Some(r), Some(d)) => format!("run {r} due {d}"),
                _ => "no planned run".into(),
            };
            writeln!(
                out,
                "  - {}  {run}; {}",
                c["spec"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            )
            .ok();
        }
    }
    let held = list("held");
    if !held.is_empty() {
        writeln!(
            out,
            "held (invalid; their planned runs wait): {}",
            held.len()
        )
        .ok();
        for h in &held {
            writeln!(
                out,
                "  ! {}  {}",
                h["spec"].as_str().or(h["file"].as_str()).unwrap_or(""),
                h["error"].as_str().unwrap_or("")
            )
            .ok();
        }
    }
    writeln!(
        out,
        "unchanged: {} spec(s){}",
        doc["unchanged"],
        if changes(doc) {
            ""
        } else {
            "; nothing would change"
        }
    )
    .ok();
    out
}

/// `calld diff [PATH]`: exit 0 when nothing would change, 1 when something
/// would, 2 on error.
pub fn run(
    path: Option<&Path>,
    config: Option<&Path>,
    state_dir: Option<&Path>,
    admin: Option<&str>,
    format: Format,
) -> u8 {
    let (mut cfg, _) = match crate::config::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calld diff: configuration: {e}");
            return 2;
        }
    };
    if let Err(e) = crate::daemon::apply_env_overrides(&mut cfg, &|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    }) {
        eprintln!("calld diff: configuration: {e}");
        return 2;
    }
    let now = Timestamp::now();
    let paths: Vec<PathBuf> = path.map(|p| vec![p.to_path_buf()]).unwrap_or_default();
    let new = match crate::cli::load_paths(&paths, &cfg, now) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("calld diff: {e}");
            return 2;
        }
    };
    let (report, status) = match crate::status::open_source(config, state_dir, admin) {
        Err(code) => return code,
        Ok(crate::status::Source::Local(ledger, dir)) => {
            let report: Json = std::fs::read(dir.join(crate::daemon::SPECS_REPORT))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Json::Null);
            match crate::status::local_status_doc(ledger.as_ref(), &dir, now) {
                Ok(s) => (report, s),
                Err(e) => {
                    eprintln!("calld diff: {e}");
                    return 2;
                }
            }
        }
        Ok(crate::status::Source::Remote(base)) => {
            let get = |p: &str| -> Result<Json, String> {
                let (code, body) = crate::admin_client::get(&format!("{base}{p}"))?;
                if code != 200 {
                    return Err(format!("{base}{p}: HTTP {code}"));
                }
                serde_json::from_str(&body).map_err(|e| e.to_string())
            };
            match get("/v1/specs").and_then(|r| Ok((r, get("/v1/status")?))) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("calld diff: {e}");
                    return 2;
                }
            }
        }
    };
    if report.is_null() {
        eprintln!(
            "calld diff: the daemon has not reported its specs yet (no specs.json): start it once, or use --admin URL"
        );
        return 2;
    }
    let doc = diff(&new, &report, &status, now);
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let _ = writeln!(out, "{doc}");
        }
        _ => {
            let _ = write!(out, "{}", diff_text(&doc, now));
        }
    }
    u8::from(changes(&doc))
}
