//! `calld status` and `calld history`: read the ledger (also while the
//! daemon runs: SQLite WAL lets a reader in) and the daemon's spec report,
//! or ask a running daemon's admin endpoint (`--admin URL`, `/v1/status`
//! and `/v1/runs`).
//!
//! The status document is built by the pure [`status_doc`] (time passed
//! in) and printed as a timers table by [`status_text`], so the local and
//! the remote command print the same thing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use serde_json::{Value as Json, json};

use crate::callback::describe_result;
use crate::cli::Format;
use crate::config::Config;
use crate::daemon::SPECS_REPORT;
use crate::duration::format_duration;
use crate::ledger::{LEDGER_FILE, Ledger, ResultInfo, Run, RunRecord, RunState, SqliteLedger};
use crate::schedule::Trigger;
use crate::spec::Spec;

/// Where `status` and `history` read from.
pub enum Source {
    /// The ledger file (and `specs.json` beside it).
    Local(Box<dyn Ledger>, PathBuf),
    /// A running daemon's admin endpoint (base URL, no trailing slash).
    Remote(String),
}

/// The systemd unit's state directory (`StateDirectory=calld`), tried when
/// nothing names one and `./.calld` holds no ledger.
const SYSTEMD_STATE_DIR: &str = "/var/lib/calld";

/// Finds the ledger as `calld run` does: `--state-dir`, else
/// `CALLD_STATE_DIR`, else the configuration's `stateDir` (default config
/// file included), else `$STATE_DIRECTORY`, else `./.calld`. When none of
/// these is set and `./.calld` holds no ledger: `/var/lib/calld` (the
/// unit's), then the configuration's admin endpoint if a daemon answers
/// there. `--admin URL` asks that daemon only.
pub fn open_source(
    config: Option<&Path>,
    state_dir: Option<&Path>,
    admin: Option<&str>,
) -> Result<Source, u8> {
    if let Some(url) = admin {
        return Ok(Source::Remote(crate::admin_client::base_url(url)));
    }
    let (mut cfg, _) = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calld: configuration: {e}");
            return Err(2);
        }
    };
    if let Err(e) = crate::daemon::apply_env_overrides(&mut cfg, &|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    }) {
        eprintln!("calld: configuration: {e}");
        return Err(2);
    }
    if let Some(d) = state_dir {
        cfg.state_dir = Some(d.to_path_buf());
    }
    if let Some(url) = cfg.ledger.url.clone() {
        // a shared ledger (replicas): read it; the spec report is this
        // machine's replica's
        let opened = crate::daemon::store::pg_options(&cfg.ledger, url.clone())
            .and_then(|o| crate::daemon::store::connect_pg(&o).map_err(anyhow::Error::new));
        return match opened {
            Ok(l) => Ok(Source::Local(l, cfg.state_dir())),
            Err(e) => {
                eprintln!("calld: ledger {}: {e:#}", crate::config::redact_url(&url));
                Err(2)
            }
        };
    }
    let named = cfg.state_dir.is_some() || std::env::var_os("STATE_DIRECTORY").is_some();
    let dir = cfg.state_dir();
    let path = dir.join(LEDGER_FILE);
    if !named && !path.exists() {
        let systemd = Path::new(SYSTEMD_STATE_DIR);
        if systemd.join(LEDGER_FILE).exists() {
            return open_local(systemd);
        }
        let base = crate::admin_client::base_url(&cfg.admin.listen);
        if !cfg.admin.listen.is_empty()
            && cfg.admin.listen != "off"
            && crate::admin_client::get(&format!("{base}/healthz")).is_ok()
        {
            return Ok(Source::Remote(base));
        }
        eprintln!(
            "calld: no ledger at {} (nor {SYSTEMD_STATE_DIR}/{LEDGER_FILE}), and no daemon answers on admin.listen {}: \
             give --state-dir DIR, set stateDir in the configuration (--config F), or --admin URL",
            path.display(),
            cfg.admin.listen
        );
        return Err(2);
    }
    open_local(&dir)
}

fn open_local(dir: &Path) -> Result<Source, u8> {
    match SqliteLedger::open_read_only(&dir.join(LEDGER_FILE)) {
        Ok(l) => Ok(Source::Local(Box::new(l), dir.to_path_buf())),
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

pub fn run_json(r: &Run) -> Json {
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

/// What the daemon's spec report (`specs.json`, `/v1/specs`) says of one
/// spec, for `status`: where it is, its schedule in words and its zone.
pub fn spec_report_entry(s: &Spec) -> Json {
    let cron = match &s.schedule {
        Some(sc) => match &sc.trigger {
            Trigger::Cron(c) => Some(c.as_str().to_string()),
            Trigger::At(_) => None,
        },
        None => None,
    };
    let (kind, schedule, timezone, jitter, until, at) = match &s.schedule {
        None => ("once", "once".to_string(), None, None, None, None),
        Some(sc) => {
            let (kind, words, at) = match &sc.trigger {
                Trigger::At(t) => ("at", format!("at {t}"), Some(t.to_string())),
                Trigger::Cron(c) => ("cron", format!("cron {}", c.as_str()), None),
            };
            (
                kind,
                words,
                Some(sc.timezone_name.clone()),
                sc.jitter.map(format_duration),
                sc.until.map(|u| u.to_string()),
                at,
            )
        }
    };
    json!({
        "name": s.name,
        "file": s.file,
        "line": s.line,
        "revision": s.revision,
        "suspended": s.suspend,
        "scheduled": s.schedule.is_some(),
        "kind": kind,
        "schedule": schedule,
        "timezone": timezone,
        "jitter": jitter,
        "until": until,
        "at": at,
        "cron": cron,
        "permissions": s.permissions,
        "targets": target_count(s),
        "tenantId": s.call.tenant_id,
    })
}

/// How many people (or meetings) one run of the spec rings.
pub fn target_count(s: &Spec) -> usize {
    match &s.call.kind {
        crate::spec::model::CallKind::Targets(t) => t.len(),
        _ => 1,
    }
}

/// What the status of the specs is made of.
#[derive(Debug, Clone, Default)]
pub struct StatusInput {
    /// The daemon's spec report (`specs.json` / `/v1/specs`); `Null` when
    /// the daemon has not written one.
    pub report: Json,
    /// [`Ledger::latest_runs`].
    pub latest: Vec<Run>,
    /// [`Ledger::open_runs`].
    pub open: Vec<Run>,
    /// [`SqliteLedger::last_successes`].
    pub successes: Vec<Run>,
}

impl StatusInput {
    /// Reads everything from the ledger (`report` from `specs.json` beside
    /// it, or as given).
    pub fn from_ledger(ledger: &dyn Ledger, report: Json) -> crate::ledger::Result<StatusInput> {
        Ok(StatusInput {
            report,
            latest: ledger.latest_runs()?,
            open: ledger.open_runs()?,
            successes: ledger.last_successes()?,
        })
    }
}

/// `in 2h13m`, `5m ago`, `now`: the two largest units.
pub fn relative(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs.abs() < 1 {
        return "now".into();
    }
    let parts = [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut out = String::new();
    let mut rest = secs.unsigned_abs();
    let mut used = 0;
    for (unit, size) in parts {
        let n = rest / size;
        if used == 0 && n == 0 {
            continue;
        }
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
        rest %= size;
        used += 1;
        if used == 2 {
            break;
        }
    }
    if secs > 0 {
        format!("in {out}")
    } else {
        format!("{out} ago")
    }
}

/// A time in a zone, the way a timer list shows it: `Tue 09:00 CET`
/// within the coming week, with the date beyond (or in the past).
pub fn local_time(t: Timestamp, tz: &TimeZone, now: Timestamp) -> String {
    let z = t.to_zoned(tz.clone());
    let clock = if z.second() == 0 { "%H:%M" } else { "%H:%M:%S" };
    let ahead = t.duration_since(now);
    let fmt = if ahead >= SignedDuration::ZERO && ahead < SignedDuration::from_hours(6 * 24) {
        format!("%a {clock} %Z")
    } else {
        format!("%a %Y-%m-%d {clock} %Z")
    };
    z.strftime(&fmt).to_string()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Why a finished run did not complete, in one line.
fn run_reason(r: &Run) -> Option<String> {
    if r.outcome == Some(crate::ledger::Outcome::Completed) {
        return None;
    }
    if let Some(ri) = &r.result_info
        && r.outcome == Some(crate::ledger::Outcome::NotEstablished)
    {
        return Some(result_text(ri));
    }
    r.reason
        .as_deref()
        .map(|s| first_line(s).to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| r.result_info.as_ref().map(result_text))
}

fn diag_line(d: &Json) -> String {
    let path = d["path"].as_str().unwrap_or("");
    format!(
        "{}:{}:{}: {}{}",
        d["file"].as_str().unwrap_or(""),
        d["line"],
        d["column"],
        if path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        },
        first_line(d["message"].as_str().unwrap_or(""))
    )
}

/// The status document (what `status --format json` prints and
/// `/v1/status` serves). Pure: `now` is passed in.
///
/// Per spec: `state` is `active` (a next run is planned or a call is up),
/// `suspended`, `held` (the spec is invalid now: its planned runs wait for
/// it to be valid again), `removed` (gone from the calls directory but
/// with history or a call still up), `waiting` (valid, nothing planned:
/// `stateReason` says why), or `unknown` (the daemon has not reported its
/// specs yet).
pub fn status_doc(input: &StatusInput, now: Timestamp) -> Json {
    let report = &input.report;
    let reported = !report.is_null();
    let mut entries: BTreeMap<String, &Json> = BTreeMap::new();
    for s in report["specs"].as_array().into_iter().flatten() {
        if let Some(n) = s["name"].as_str() {
            entries.insert(n.to_string(), s);
        }
    }
    let held_why = report["held"].as_object().cloned().unwrap_or_default();
    let held: BTreeSet<String> = report["invalidNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .chain(held_why.keys().cloned())
        .collect();
    let diagnostics: Vec<Json> = report["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    #[derive(Default)]
    struct Acc<'a> {
        last: Option<&'a Run>,
        next: Option<&'a Run>,
        current: Option<&'a Run>,
        success: Option<&'a Run>,
    }
    let mut rows: BTreeMap<String, Acc> = BTreeMap::new();
    for n in entries.keys().chain(held.iter()) {
        rows.entry(n.clone()).or_default();
    }
    for r in &input.latest {
        rows.entry(r.spec.clone()).or_default().last = Some(r);
    }
    for r in &input.successes {
        rows.entry(r.spec.clone()).or_default().success = Some(r);
    }
    for r in &input.open {
        let e = rows.entry(r.spec.clone()).or_default();
        if r.state == RunState::Scheduled {
            if e.next.is_none_or(|n| r.due_at < n.due_at) {
                e.next = Some(r);
            }
        } else {
            e.current = Some(r);
        }
    }

    let mut zones: std::collections::HashMap<String, TimeZone> = std::collections::HashMap::new();
    let specs: Vec<Json> = rows
        .iter()
        .map(|(name, acc)| {
            let entry = entries.get(name).copied();
            let problems: Vec<&Json> = diagnostics
                .iter()
                .filter(|d| d["spec"].as_str() == Some(name.as_str()))
                .collect();
            let tz_name = entry
                .and_then(|e| e["timezone"].as_str())
                .unwrap_or("UTC")
                .to_string();
            let tz = zones
                .entry(tz_name.clone())
                .or_insert_with(|| {
                    crate::schedule::parse_timezone(&tz_name).unwrap_or(TimeZone::UTC)
                })
                .clone();
            let is_held = held.contains(name);
            // A held spec's planned run that is already due is not "next":
            // it waits for the spec to be valid again (then its deadline decides).
            let mut next = acc.next;
            let mut held_due = None;
            if is_held && let Some(n) = next.filter(|n| n.due_at <= now) {
                held_due = Some(n);
                next = None;
            }
            let (state, state_reason): (&str, Option<String>) = if is_held {
                let err = problems
                    .iter()
                    .find(|d| d["severity"] == "error")
                    .map(|d| diag_line(d))
                    .or_else(|| {
                        held_why
                            .get(name)
                            .and_then(Json::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "the spec is invalid (see `calld check`)".into());
                let why = match held_due {
                    Some(r) => format!(
                        "invalid, its run due {} is held: {err}",
                        short_time(&r.due_at)
                    ),
                    None => format!("invalid, planned runs are held: {err}"),
                };
                ("held", Some(why))
            } else if reported && entry.is_none() {
                let why = if acc.current.is_some() {
                    "no longer in the calls directory; its call is still up"
                } else {
                    "no longer in the calls directory"
                };
                ("removed", Some(why.to_string()))
            } else if entry.is_some_and(|e| e["suspended"] == true) {
                (
                    "suspended",
                    Some("suspend: true (nothing new is placed)".into()),
                )
            } else if !reported {
                (
                    "unknown",
                    Some("the daemon has not reported its specs".into()),
                )
            } else if next.is_some() || acc.current.is_some() {
                ("active", None)
            } else {
                let e = entry.expect("reported and present");
                let why = match e["kind"].as_str() {
                    Some("once") | None => match acc.last {
                        Some(l) if Some(l.revision.as_str()) == e["revision"].as_str() => {
                            "placed once for this revision; a change to the call places it again"
                                .to_string()
                        }
                        _ => "not placed yet".to_string(),
                    },
                    Some("at") => {
                        format!("its time ({}) has passed", e["at"].as_str().unwrap_or("?"))
                    }
                    Some(_) => match e["until"].as_str() {
                        Some(u) if u.parse::<Timestamp>().is_ok_and(|u| u <= now) => {
                            format!("no run after `until` {u}")
                        }
                        _ => "no next run planned yet".to_string(),
                    },
                };
                ("waiting", Some(why))
            };
            // a suspended spec's planned run is recorded `skipped`: not "next"
            if state == "suspended" {
                next = None;
            }
            let next_local = next.map(|n| local_time(n.scheduled_at, &tz, now));
            let next_jitter = next.and_then(|n| {
                let j = n.due_at.duration_since(n.scheduled_at);
                // whole seconds (a jitter under one second in milliseconds)
                let j = std::time::Duration::try_from(j).unwrap_or_default();
                let j = if j >= std::time::Duration::from_secs(1) {
                    std::time::Duration::from_secs(j.as_secs_f64().round() as u64)
                } else {
                    j
                };
                (!j.is_zero()).then(|| format_duration(j))
            });
            // the short reason: the state's, else the last run's failure
            let reason = state_reason.clone().or_else(|| {
                acc.current
                    .is_none()
                    .then(|| acc.last.and_then(run_reason))
                    .flatten()
            });
            json!({
                "name": name,
                "file": entry.and_then(|e| e["file"].as_str()),
                "revision": entry.map(|e| e["revision"].clone()),
                "state": state,
                "stateReason": state_reason,
                "kind": entry.and_then(|e| e["kind"].as_str()),
                "schedule": entry.and_then(|e| e["schedule"].as_str()),
                "timezone": entry.and_then(|e| e["timezone"].as_str()),
                "nextRun": next.map(run_json),
                "nextLocal": next_local,
                "nextJitter": next_jitter,
                "lastRun": acc.last.map(run_json),
                "currentRun": acc.current.map(run_json),
                "lastSuccess": acc.success.map(run_json),
                "reason": reason,
                "problems": problems,
            })
        })
        .collect();
    json!({
        "now": now.to_string(),
        "updatedAt": report["updatedAt"],
        "specs": specs,
        "invalidFiles": report["invalidFiles"].as_array().cloned().unwrap_or_default(),
        "diagnostics": diagnostics,
    })
}

fn ts(v: &Json) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

/// Cuts `s` to at most `width` characters (an ellipsis marks the cut).
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// The terminal's width: `$COLUMNS`, else the tty's, else `None`.
pub fn terminal_width() -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|c| *c > 0)
    {
        return Some(c);
    }
    // SAFETY: TIOCGWINSZ fills a winsize struct; stdout may not be a tty
    // (then the call fails and nothing is read).
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            return Some(usize::from(ws.ws_col));
        }
    }
    None
}

/// The timers table: one row per spec. `width`: cut the REASON column so
/// each line fits (`None`: never cut).
pub fn status_text(doc: &Json, width: Option<usize>) -> String {
    use std::fmt::Write as _;
    let now = ts(&doc["now"]).unwrap_or_else(Timestamp::now);
    let mut rows: Vec<[String; 7]> = Vec::new();
    for s in doc["specs"].as_array().into_iter().flatten() {
        let next = match (&s["nextRun"], s["nextLocal"].as_str()) {
            (n, Some(local)) if !n.is_null() => {
                let due = ts(&n["dueAt"]).unwrap_or(now);
                let jitter = s["nextJitter"]
                    .as_str()
                    .map(|j| format!("+{j} jitter, "))
                    .unwrap_or_default();
                format!("{local} ({jitter}{})", relative(due.duration_since(now)))
            }
            _ => "-".into(),
        };
        let last = match (&s["currentRun"], &s["lastRun"]) {
            (c, _) if !c.is_null() => format!(
                "{} {}",
                c["state"].as_str().unwrap_or("?"),
                ts(&c["scheduledAt"])
                    .map(|t| relative(t.duration_since(now)))
                    .unwrap_or_default()
            ),
            (_, l) if !l.is_null() => format!(
                "{} {}",
                l["outcome"].as_str().or(l["state"].as_str()).unwrap_or("?"),
                ts(&l["scheduledAt"])
                    .map(|t| relative(t.duration_since(now)))
                    .unwrap_or_default()
            ),
            _ => "-".into(),
        };
        let success = ts(&s["lastSuccess"]["scheduledAt"])
            .map(|t| relative(t.duration_since(now)))
            .unwrap_or_else(|| "never".into());
        rows.push([
            s["name"].as_str().unwrap_or("").to_string(),
            s["state"].as_str().unwrap_or("").to_string(),
            s["schedule"].as_str().unwrap_or("-").to_string(),
            next,
            last,
            success,
            s["reason"]
                .as_str()
                .map(first_line)
                .unwrap_or("")
                .to_string(),
        ]);
    }
    let heads = [
        "SPEC",
        "STATE",
        "SCHEDULE",
        "NEXT",
        "LAST",
        "LAST SUCCESS",
        "REASON",
    ];
    let mut w = [0usize; 6];
    for (i, h) in heads.iter().take(6).enumerate() {
        w[i] = rows
            .iter()
            .map(|r| r[i].chars().count())
            .chain([h.len()])
            .max()
            .unwrap_or(0);
    }
    let fixed: usize = w.iter().map(|x| x + 2).sum();
    let reason_width = width.map(|t| t.saturating_sub(fixed).max(10));
    let mut out = String::new();
    let line = |cells: [&str; 7], out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().take(6).enumerate() {
            let pad = w[i].saturating_sub(c.chars().count());
            write!(l, "{c}{}  ", " ".repeat(pad)).ok();
        }
        let reason = match reason_width {
            Some(rw) => cut(cells[6], rw),
            None => cells[6].to_string(),
        };
        l.push_str(&reason);
        writeln!(out, "{}", l.trim_end()).ok();
    };
    line(heads, &mut out);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]], &mut out);
    }
    if rows.is_empty() {
        writeln!(out, "(no specs and no runs)").ok();
    }
    let invalid = doc["invalidFiles"].as_array().map(Vec::len).unwrap_or(0);
    if invalid > 0 {
        writeln!(out, "\n{invalid} invalid file(s):").ok();
        for d in doc["diagnostics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["severity"] == "error")
        {
            let text = format!("  {}", diag_line(d));
            let text = match width {
                Some(t) => cut(&text, t),
                None => text,
            };
            writeln!(out, "{text}").ok();
        }
    }
    out
}

/// The local status document: ledger + `specs.json`.
pub fn local_status_doc(
    ledger: &dyn Ledger,
    state_dir: &Path,
    now: Timestamp,
) -> crate::ledger::Result<Json> {
    let report: Json = std::fs::read(state_dir.join(SPECS_REPORT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Json::Null);
    Ok(status_doc(&StatusInput::from_ledger(ledger, report)?, now))
}

/// `calld status`.
pub fn status(
    config: Option<&Path>,
    state_dir: Option<&Path>,
    admin: Option<&str>,
    format: Format,
    wide: bool,
) -> u8 {
    let doc = match open_source(config, state_dir, admin) {
        Err(code) => return code,
        Ok(Source::Local(ledger, dir)) => {
            match local_status_doc(ledger.as_ref(), &dir, Timestamp::now()) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("calld status: {e}");
                    return 2;
                }
            }
        }
        Ok(Source::Remote(base)) => match fetch_json(&format!("{base}/v1/status")) {
            Ok((_, d)) => d,
            Err(e) => {
                eprintln!("calld status: {e}");
                return 2;
            }
        },
    };
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let _ = writeln!(out, "{doc}");
        }
        _ => {
            let width = if wide { None } else { terminal_width() };
            let _ = write!(out, "{}", status_text(&doc, width));
        }
    }
    0
}

/// GET a JSON document from the admin endpoint: (status, body).
fn fetch_json(url: &str) -> Result<(u16, Json), String> {
    let (status, body) = crate::admin_client::get(url)?;
    let doc: Json =
        serde_json::from_str(&body).map_err(|e| format!("{url}: HTTP {status}, not JSON: {e}"))?;
    if status >= 500 || status == 400 {
        return Err(format!(
            "{url}: HTTP {status}: {}",
            doc["error"].as_str().unwrap_or(&body)
        ));
    }
    Ok((status, doc))
}

/// `calld history NAME`: `limit` 0 means every run. Exit 1 for a spec the
/// ledger has no run of and the daemon does not know.
pub fn history(
    name: &str,
    limit: usize,
    config: Option<&Path>,
    state_dir: Option<&Path>,
    admin: Option<&str>,
    format: Format,
) -> u8 {
    let limit = if limit == 0 { usize::MAX } else { limit };
    // names are compared after NFC normalisation (docs/runs.md)
    let name = &crate::spec::validate::normal_name(name);
    let mut renames = Vec::new();
    let (records, known): (Vec<Json>, bool) = match open_source(config, state_dir, admin) {
        Err(code) => return code,
        Ok(Source::Local(ledger, dir)) => {
            renames = ledger.renames_to(name).unwrap_or_default();
            let records: Vec<RunRecord> = match ledger.history(name, limit) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("calld history: {e}");
                    return 2;
                }
            };
            let report: Json = std::fs::read(dir.join(SPECS_REPORT))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Json::Null);
            let known = report["specs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"].as_str() == Some(name))
                || report["invalidNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n.as_str() == Some(name))
                || report["held"].get(name.as_str()).is_some();
            (records.iter().map(record_json).collect(), known)
        }
        Ok(Source::Remote(base)) => {
            let lim = limit.min(crate::admin::MAX_RUNS_LIMIT);
            let url = format!(
                "{base}/v1/runs?spec={}&limit={lim}",
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
            );
            match fetch_json(&url) {
                Ok((404, _)) => (Vec::new(), false),
                Ok((_, doc)) => (
                    doc["runs"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|r| {
                            let mut r = r.clone();
                            add_meaning(&mut r);
                            r
                        })
                        .collect(),
                    true,
                ),
                Err(e) => {
                    eprintln!("calld history: {e}");
                    return 2;
                }
            }
        }
    };
    if records.is_empty() && !known && renames.is_empty() {
        eprintln!(
            "calld history: no spec or run named `{name}` (see `calld status` for the names)"
        );
        return 1;
    }
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let _ = writeln!(
                out,
                "{}",
                json!({ "spec": name, "runs": records, "renamedFrom": renames })
            );
        }
        _ => {
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
                let _ = writeln!(out, "no runs recorded for `{name}` yet");
                return 0;
            }
            let _ = write!(out, "{}", history_text(&records));
        }
    }
    0
}

fn add_meaning(v: &mut Json) {
    if let (Some(code), Some(sub)) = (
        v["resultInfo"]["code"].as_i64(),
        v["resultInfo"]["subcode"].as_i64(),
    ) {
        v["resultMeaning"] = json!(describe_result(code, sub));
    }
}

fn record_json(rec: &RunRecord) -> Json {
    let mut v = serde_json::to_value(rec).expect("records serialise");
    if let Some(info) = &rec.run.result_info {
        v["resultMeaning"] = json!(describe_result(
            info.code.unwrap_or(0),
            info.subcode.unwrap_or(0)
        ));
    }
    v
}

fn json_result_text(v: &Json) -> Option<String> {
    if v.is_null() {
        return None;
    }
    let code = v["code"].as_i64().unwrap_or(0);
    let sub = v["subcode"].as_i64().unwrap_or(0);
    Some(format!("{code}/{sub} ({})", describe_result(code, sub)))
}

fn json_time(v: &Json) -> String {
    ts(v).map(|t| short_time(&t)).unwrap_or_default()
}

/// The text form of `history`, from the JSON records.
pub fn history_text(records: &[Json]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for r in records {
        let outcome = r["outcome"].as_str().or(r["state"].as_str()).unwrap_or("?");
        let trigger = if r["slot"]["trigger"].is_null() {
            ""
        } else {
            "  (trigger)"
        };
        let revision = r["revision"].as_str().unwrap_or("");
        writeln!(
            out,
            "run {}  scheduled {}  {outcome}{trigger}  revision {}",
            r["id"].as_str().unwrap_or(""),
            json_time(&r["scheduledAt"]),
            revision.get(..12).unwrap_or(revision),
        )
        .ok();
        if let Some(reason) = r["reason"].as_str() {
            writeln!(out, "  reason: {reason}").ok();
        }
        if let Some(ri) = json_result_text(&r["resultInfo"]) {
            writeln!(out, "  result: {ri}").ok();
        }
        if let Some(c) = r["callId"].as_str() {
            writeln!(out, "  call:   {c}").ok();
        }
        for a in r["attempts"].as_array().into_iter().flatten() {
            let opt = |k: &str, prefix: &str| match &a[k] {
                Json::Null => String::new(),
                Json::String(s) => format!(" {prefix}{s}"),
                v => format!(" {prefix}{v}"),
            };
            writeln!(
                out,
                "  attempt {} at {}: {}{}{}{}",
                a["number"],
                json_time(&a["startedAt"]),
                a["disposition"].as_str().unwrap_or("in flight"),
                opt("httpStatus", "HTTP "),
                opt("errorCode", ""),
                opt("requestId", "request-id "),
            )
            .ok();
        }
        for s in r["callStates"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {}  {}{}",
                json_time(&s["at"]),
                s["state"].as_str().unwrap_or(""),
                json_result_text(&s["resultInfo"])
                    .map(|t| format!(" {t}"))
                    .unwrap_or_default()
            )
            .ok();
        }
    }
    out
}

/// The per-spec metric series (`calld_spec_*`): one row per spec the
/// daemon reports (valid or held). Pure: the ledger's answers are passed in.
pub fn spec_series(
    report: &Json,
    successes: &[Run],
    finished: &[Run],
    open: &[Run],
    now: Timestamp,
) -> Vec<crate::metrics::SpecSeries> {
    let held: BTreeSet<&str> = report["invalidNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect();
    let mut names: BTreeSet<&str> = report["specs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    names.extend(held.iter().copied());
    let by_spec = |runs: &'_ [Run]| -> BTreeMap<String, Run> {
        runs.iter().map(|r| (r.spec.clone(), r.clone())).collect()
    };
    let successes = by_spec(successes);
    let finished = by_spec(finished);
    let mut next: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for r in open.iter().filter(|r| r.state == RunState::Scheduled) {
        if held.contains(r.spec.as_str()) && r.due_at <= now {
            continue; // held, not next
        }
        let e = next.entry(r.spec.as_str()).or_insert(r.due_at);
        *e = (*e).min(r.due_at);
    }
    names
        .into_iter()
        .map(|n| crate::metrics::SpecSeries {
            spec: n.to_string(),
            last_success: successes.get(n).map(|r| r.scheduled_at),
            last_run: finished.get(n).map(|r| {
                (
                    r.scheduled_at,
                    r.outcome
                        .map(|o| o.as_str())
                        .unwrap_or("unknown")
                        .to_string(),
                )
            }),
            next_run: next.get(n).copied(),
        })
        .collect()
}

/// Refreshes the per-spec metrics from the ledger and the spec report.
pub fn refresh_spec_metrics(
    metrics: &crate::metrics::Metrics,
    ledger: &dyn Ledger,
    report: &Json,
    now: Timestamp,
) -> crate::ledger::Result<()> {
    let rows = spec_series(
        report,
        &ledger.last_successes()?,
        &ledger.latest_finished_runs()?,
        &ledger.open_runs()?,
        now,
    );
    metrics.set_spec_series(rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        assert_eq!(relative(SignedDuration::from_secs(0)), "now");
        assert_eq!(relative(SignedDuration::from_secs(59)), "in 59s");
        assert_eq!(
            relative(SignedDuration::from_secs(2 * 3600 + 13 * 60 + 5)),
            "in 2h13m"
        );
        assert_eq!(relative(SignedDuration::from_secs(-300)), "5m ago");
        assert_eq!(relative(SignedDuration::from_secs(-3600)), "1h ago");
        assert_eq!(relative(SignedDuration::from_secs(90_000)), "in 1d1h");
        assert_eq!(relative(SignedDuration::from_secs(86_400 + 30)), "in 1d");
    }

    #[test]
    fn local_times_in_the_spec_zone() {
        let tz = crate::schedule::parse_timezone("Europe/Berlin").unwrap();
        let now: Timestamp = "2026-12-01T06:47:00Z".parse().unwrap();
        let t: Timestamp = "2026-12-01T08:00:00Z".parse().unwrap();
        assert_eq!(local_time(t, &tz, now), "Tue 09:00 CET");
        let summer: Timestamp = "2027-07-01T07:00:00Z".parse().unwrap();
        assert_eq!(local_time(summer, &tz, now), "Thu 2027-07-01 09:00 CEST");
    }

    fn run(spec: &str, state: RunState, due: &str) -> Run {
        let t: Timestamp = due.parse().unwrap();
        Run::sample(format!("id-{spec}-{due}"), spec.into(), state, t)
    }

    fn report() -> Json {
        json!({
            "updatedAt": "2026-12-01T08:00:00Z",
            "specs": [
                {"name": "ok", "kind": "cron", "schedule": "cron 0 9 * * *", "timezone": "Europe/Berlin", "revision": "r1", "suspended": false},
                {"name": "paused", "kind": "cron", "schedule": "cron 0 9 * * *", "timezone": "UTC", "revision": "r1", "suspended": true},
                {"name": "done", "kind": "at", "at": "2026-11-30T08:00:00Z", "schedule": "at 2026-11-30T08:00:00Z", "revision": "r1", "suspended": false},
            ],
            "invalidNames": ["broken"],
            "invalidFiles": ["calls.d/broken.yaml"],
            "diagnostics": [{"file": "calls.d/broken.yaml", "line": 3, "column": 1, "severity": "error", "path": "subjcet", "spec": "broken", "message": "unknown key `subjcet`"}],
        })
    }

    #[test]
    fn states_and_the_held_past_run() {
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let mut finished = run("done", RunState::Finished, "2026-11-30T08:00:00Z");
        finished.outcome = Some(crate::ledger::Outcome::Completed);
        let mut gone = run("gone", RunState::Finished, "2026-11-29T08:00:00Z");
        gone.outcome = Some(crate::ledger::Outcome::Failed);
        gone.reason = Some("HTTP 503\nmore".into());
        let input = StatusInput {
            report: report(),
            latest: vec![finished.clone(), gone.clone()],
            open: vec![
                run("ok", RunState::Scheduled, "2026-12-02T08:00:00Z"),
                // the held spec's run is past due: not "next"
                run("broken", RunState::Scheduled, "2026-12-01T09:00:00Z"),
            ],
            successes: vec![finished],
        };
        let doc = status_doc(&input, now);
        let get = |n: &str| {
            doc["specs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(get("ok")["state"], "active");
        assert_eq!(get("ok")["nextLocal"], "Wed 09:00 CET");
        assert_eq!(get("paused")["state"], "suspended");
        assert_eq!(get("done")["state"], "waiting");
        assert!(
            get("done")["stateReason"]
                .as_str()
                .unwrap()
                .contains("has passed")
        );
        assert_eq!(get("gone")["state"], "removed");
        assert_eq!(get("gone")["lastRun"]["outcome"], "failed");
        let broken = get("broken");
        assert_eq!(broken["state"], "held");
        assert!(broken["nextRun"].is_null(), "{broken}");
        let why = broken["stateReason"].as_str().unwrap();
        assert!(why.contains("held") && why.contains("subjcet"), "{why}");

        let cut_table = status_text(&doc, Some(115));
        let cut_line = cut_table.lines().find(|l| l.starts_with("gone ")).unwrap();
        assert!(
            cut_line.ends_with('…') && cut_line.chars().count() <= 115,
            "{cut_line}"
        );
        let table = status_text(&doc, None);
        let line = table.lines().find(|l| l.starts_with("ok ")).unwrap();
        assert!(line.contains("Wed 09:00 CET (in 22h)"), "{line}");
        let gone_line = table.lines().find(|l| l.starts_with("gone ")).unwrap();
        assert!(
            gone_line.ends_with("no longer in the calls directory"),
            "{gone_line}"
        );
        assert!(
            table.lines().all(|l| !l.contains("more")),
            "one line per reason"
        );

        // metrics: held past run not next; removed spec absent
        let rows = spec_series(
            &input.report,
            &input.successes,
            &input.latest,
            &input.open,
            now,
        );
        let names: Vec<&str> = rows.iter().map(|r| r.spec.as_str()).collect();
        assert_eq!(names, ["broken", "done", "ok", "paused"]);
        assert_eq!(rows[0].next_run, None);
        assert!(rows[1].last_success.is_some());
        assert_eq!(rows[1].last_run.as_ref().unwrap().1, "completed");
        assert!(rows[2].next_run.is_some());
    }

    #[test]
    fn cut_marks_the_cut() {
        assert_eq!(cut("abcdef", 10), "abcdef");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
