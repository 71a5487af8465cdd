//! The admin endpoint's dashboard (`GET /`): one server-rendered HTML page,
//! read-only, with no JavaScript and no external assets (styles inline,
//! the timeline an inline SVG). It refreshes itself every 30 s
//! (`<meta http-equiv="refresh">`).
//!
//! - the status table (as `calld status`);
//! - a 24-hour timeline of every spec's next nominal runs, one lane per
//!   spec, with a row above counting runs per 15 minutes, so pile-ups (all
//!   at 09:00) and daylight-saving shifts (a zone's 09:00 moving an hour in
//!   UTC) are visible;
//! - per spec its recent runs, each in one lane: its attempts and the call
//!   states Graph reported, in order.
//!
//! [`render`] is pure: everything, `now` included, is passed in.

use std::fmt::Write;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value as Json;

use crate::schedule::{Schedule, Trigger, cron::CronExpr};

/// At most this many specs get a lane in the timeline and a recent-runs block.
pub const MAX_SPECS: usize = 60;
/// At most this many rows in the status table (those that need attention first).
pub const MAX_TABLE_ROWS: usize = 500;
/// Runs per spec in the recent-runs block.
pub const RECENT_RUNS: usize = 5;
/// At most this many runs per spec in the 24-hour timeline.
const MAX_RUNS_PER_LANE: usize = 96;

/// HTML-escapes text (also for attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The schedule of a spec report entry (`kind`, `cron`, `at`, `timezone`,
/// `until`), rebuilt to compute its runs; `None` for an unscheduled spec.
fn schedule_of(entry: &Json) -> Option<Schedule> {
    let tz = entry["timezone"].as_str().unwrap_or("UTC");
    let trigger = match entry["kind"].as_str()? {
        "cron" => Trigger::Cron(CronExpr::parse(entry["cron"].as_str()?).ok()?),
        "at" => Trigger::At(entry["at"].as_str()?.parse().ok()?),
        _ => return None,
    };
    let mut s = Schedule::new(trigger, tz).ok()?;
    s.until = entry["until"].as_str().and_then(|u| u.parse().ok());
    Some(s)
}

/// Per spec (valid, not suspended), its nominal run times in `[now, now + 24h)`.
pub fn next_day_runs(report: &Json, now: Timestamp) -> Vec<(String, String, Vec<Timestamp>)> {
    let end = now + SignedDuration::from_hours(24);
    report["specs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["suspended"] != true)
        .filter_map(|e| {
            let s = schedule_of(e)?;
            let just_before = now - SignedDuration::from_micros(1);
            let runs: Vec<Timestamp> = s
                .runs_between(just_before, end, MAX_RUNS_PER_LANE)
                .into_iter()
                .filter(|t| *t >= now && *t < end)
                .collect();
            Some((
                e["name"].as_str()?.to_string(),
                s.timezone_name.clone(),
                runs,
            ))
        })
        .collect()
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f24;background:#fff}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .4em}\
.meta{color:#57606a}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #d0d7de;vertical-align:top}\
th{background:#f6f8fa}td.reason{color:#57606a;max-width:32em;overflow-wrap:anywhere}\
.st{display:inline-block;padding:0 .5em;border-radius:1em;font-size:.85em;font-weight:600}\
.active{background:#dafbe1;color:#116329}.waiting{background:#ddf4ff;color:#0550ae}\
.suspended{background:#eaeef2;color:#57606a}.held{background:#ffebe9;color:#a40e26}\
.removed{background:#fff8c5;color:#7d4e00}.unknown{background:#eaeef2;color:#57606a}\
.lane{display:flex;flex-wrap:wrap;gap:.3em;align-items:center;margin:.2em 0 .5em}\
.chip{border:1px solid #d0d7de;border-radius:.3em;padding:0 .4em;font-size:.85em;background:#f6f8fa}\
.ok{border-color:#1a7f37;color:#116329}.bad{border-color:#cf222e;color:#a40e26}\
.run{font-family:ui-monospace,monospace;font-size:.85em;min-width:11em}\
svg text{font:11px system-ui,sans-serif;fill:#57606a}";

fn state_badge(state: &str) -> String {
    let class = match state {
        "active" | "waiting" | "suspended" | "held" | "removed" => state,
        _ => "unknown",
    };
    format!("<span class=\"st {class}\">{}</span>", esc(state))
}

fn rel(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map(|t| crate::status::relative(t.duration_since(now)))
        .unwrap_or_else(|| "-".into())
}

fn ts(v: &Json) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

fn good(outcome: &str) -> bool {
    outcome == "completed"
}

/// The 24-hour timeline, as an inline SVG.
fn timeline(lanes: &[(String, String, Vec<Timestamp>)], now: Timestamp) -> String {
    let label_w = 220.0;
    let width = 1100.0;
    let plot_w = width - label_w - 10.0;
    let lane_h = 18.0;
    let top = 60.0;
    let height = top + lane_h * lanes.len() as f64 + 10.0;
    let x_of = |t: Timestamp| {
        let secs = t.duration_since(now).as_secs_f64();
        label_w + plot_w * (secs / 86_400.0)
    };
    let mut svg = String::new();
    write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"timeline\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"next runs in the coming 24 hours\">"
    )
    .ok();
    // hour ticks (UTC), every 3 hours labelled
    let start_hour = now
        .to_zoned(jiff::tz::TimeZone::UTC)
        .with()
        .minute(0)
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .map(|z| z.timestamp())
        .unwrap_or(now);
    for h in 0..=24 {
        let t = start_hour + SignedDuration::from_hours(h + 1);
        if t.duration_since(now) > SignedDuration::from_hours(24) {
            break;
        }
        let x = x_of(t);
        let hour = t.to_zoned(jiff::tz::TimeZone::UTC).hour();
        write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{height}\" stroke=\"#eaeef2\"/>",
            top - 8.0
        )
        .ok();
        if hour % 3 == 0 {
            write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{hour:02}:00Z</text>",
                top - 12.0
            )
            .ok();
        }
    }
    // runs per 15 minutes: a bar per bucket
    let mut buckets = [0u32; 96];
    for (_, _, runs) in lanes {
        for t in runs {
            let i = (t.duration_since(now).as_secs() / 900).clamp(0, 95) as usize;
            buckets[i] += 1;
        }
    }
    let max = buckets.iter().copied().max().unwrap_or(0).max(1);
    write!(
        svg,
        "<text x=\"0\" y=\"26\">runs per 15 min (max {max})</text>"
    )
    .ok();
    for (i, n) in buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
        let h = 30.0 * f64::from(*n) / f64::from(max);
        let x = label_w + plot_w * (i as f64 / 96.0);
        write!(
            svg,
            "<rect class=\"bucket\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#0969da\"><title>{n} run(s)</title></rect>",
            36.0 - h,
            plot_w / 96.0 - 1.0
        )
        .ok();
    }
    for (i, (name, tz, runs)) in lanes.iter().enumerate() {
        let y = top + lane_h * i as f64 + lane_h / 2.0;
        write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\">{}</text><line x1=\"{label_w}\" y1=\"{y:.1}\" x2=\"{width}\" y2=\"{y:.1}\" stroke=\"#d0d7de\"/>",
            y + 4.0,
            esc(name)
        )
        .ok();
        let zone = crate::schedule::parse_timezone(tz).unwrap_or(jiff::tz::TimeZone::UTC);
        for t in runs {
            let local = t.to_zoned(zone.clone()).strftime("%a %H:%M %Z").to_string();
            write!(
                svg,
                "<circle class=\"run\" cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#1a7f37\"><title>{}: {} ({})</title></circle>",
                x_of(*t),
                esc(name),
                esc(&local),
                t
            )
            .ok();
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The page. `doc`: the status document; `report`: the daemon's spec
/// report; `recent`: per spec, its recent run records as `history` JSON.
pub fn render(doc: &Json, report: &Json, recent: &[(String, Vec<Json>)], now: Timestamp) -> String {
    let mut h = String::new();
    let specs = doc["specs"].as_array().cloned().unwrap_or_default();
    let count = |state: &str| specs.iter().filter(|s| s["state"] == state).count();
    write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>calld</title><style>{STYLE}</style></head><body>\
         <h1>calld</h1><p class=\"meta\">{} · {} specs: {} active, {} waiting, {} suspended, {} held, {} removed · as of {} · refreshes every 30 s</p>",
        esc(crate::VERSION_LONG),
        specs.len(),
        count("active"),
        count("waiting"),
        count("suspended"),
        count("held"),
        count("removed"),
        esc(&now.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()),
    )
    .ok();

    // the status table
    // those that need attention first: held, removed, a last run that did
    // not complete; then by name
    let attention = |s: &Json| -> u8 {
        match s["state"].as_str() {
            Some("held") => 0,
            Some("removed") => 1,
            _ if !s["lastRun"].is_null() && s["lastRun"]["outcome"] != "completed" => 2,
            _ => 3,
        }
    };
    let mut specs = specs;
    specs.sort_by_key(|s| attention(s));
    let more = specs.len().saturating_sub(MAX_TABLE_ROWS);
    specs.truncate(MAX_TABLE_ROWS);
    h.push_str("<h2>Specs</h2><table id=\"status\"><thead><tr><th>spec</th><th>state</th><th>schedule</th><th>next</th><th>last</th><th>last success</th><th>reason</th></tr></thead><tbody>");
    for s in &specs {
        let next = match (&s["nextRun"], s["nextLocal"].as_str()) {
            (n, Some(local)) if !n.is_null() => {
                format!("{} ({})", esc(local), esc(&rel(ts(&n["dueAt"]), now)))
            }
            _ => "-".into(),
        };
        let last = match (&s["currentRun"], &s["lastRun"]) {
            (c, _) if !c.is_null() => format!(
                "{} {}",
                esc(c["state"].as_str().unwrap_or("")),
                esc(&rel(ts(&c["scheduledAt"]), now))
            ),
            (_, l) if !l.is_null() => format!(
                "{} {}",
                esc(l["outcome"].as_str().unwrap_or("")),
                esc(&rel(ts(&l["scheduledAt"]), now))
            ),
            _ => "-".into(),
        };
        write!(
            h,
            "<tr data-spec=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td><td>{next}</td><td>{last}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
            state_badge(s["state"].as_str().unwrap_or("")),
            esc(s["schedule"].as_str().unwrap_or("-")),
            esc(&match ts(&s["lastSuccess"]["scheduledAt"]) {
                Some(t) => rel(Some(t), now),
                None => "never".into(),
            }),
            esc(s["reason"].as_str().unwrap_or("")),
            name = esc(s["name"].as_str().unwrap_or("")),
        )
        .ok();
    }
    h.push_str("</tbody></table>");
    if more > 0 {
        write!(h, "<p class=\"meta\">{more} more spec(s) not listed: <a href=\"/v1/status\">/v1/status</a> has them all.</p>").ok();
    }
    let invalid = doc["invalidFiles"].as_array().map(Vec::len).unwrap_or(0);
    if invalid > 0 {
        write!(h, "<p class=\"meta\">{invalid} invalid file(s): <code>calld check</code> names each problem.</p>").ok();
    }

    // the timeline
    let mut lanes = next_day_runs(report, now);
    let omitted = lanes.len().saturating_sub(MAX_SPECS);
    lanes.truncate(MAX_SPECS);
    let total: usize = lanes.iter().map(|l| l.2.len()).sum();
    write!(
        h,
        "<h2>Next 24 hours</h2><p class=\"meta\">{total} nominal run(s) of {} scheduled spec(s) (jitter not shown; times in UTC, hover a dot for the spec's own zone){}</p>",
        lanes.len(),
        if omitted > 0 {
            format!("; {omitted} more spec(s) not drawn")
        } else {
            String::new()
        }
    )
    .ok();
    h.push_str(&timeline(&lanes, now));

    // recent runs
    h.push_str("<h2>Recent runs</h2>");
    for (name, runs) in recent.iter().take(MAX_SPECS) {
        write!(h, "<h3 id=\"runs-{0}\">{0}</h3>", esc(name)).ok();
        if runs.is_empty() {
            h.push_str("<p class=\"meta\">no runs yet</p>");
        }
        for r in runs.iter().take(RECENT_RUNS) {
            let outcome = r["outcome"].as_str().or(r["state"].as_str()).unwrap_or("");
            let class = if r["outcome"].is_null() {
                ""
            } else if good(outcome) {
                " ok"
            } else {
                " bad"
            };
            let trigger = if r["slot"]["trigger"].is_null() {
                ""
            } else {
                " (trigger)"
            };
            write!(
                h,
                "<div class=\"lane\" data-run=\"{id}\"><span class=\"run\">{id}{trigger}</span><span class=\"chip\">{}</span>",
                esc(&ts(&r["scheduledAt"])
                    .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
                    .unwrap_or_default()),
                id = esc(r["id"].as_str().unwrap_or("")),
            )
            .ok();
            // each attempt, then the states of its call; states that name
            // no attempt's call (or none) after the last attempt
            let attempts: Vec<&Json> = r["attempts"].as_array().into_iter().flatten().collect();
            let states: Vec<&Json> = r["callStates"].as_array().into_iter().flatten().collect();
            let chip = |h: &mut String, s: &Json| {
                write!(
                    h,
                    "<span class=\"chip state\">{}</span>",
                    esc(s["state"].as_str().unwrap_or(""))
                )
                .ok();
            };
            let owned = |s: &Json| {
                !s["callId"].is_null() && attempts.iter().any(|a| a["callId"] == s["callId"])
            };
            for (i, a) in attempts.iter().enumerate() {
                let status = match &a["httpStatus"] {
                    Json::Null => String::new(),
                    v => format!(" HTTP {v}"),
                };
                write!(
                    h,
                    "<span class=\"chip attempt\">attempt {}: {}{}</span>",
                    a["number"],
                    esc(a["disposition"].as_str().unwrap_or("in flight")),
                    esc(&status)
                )
                .ok();
                for s in &states {
                    let mine = !a["callId"].is_null() && s["callId"] == a["callId"];
                    let last_and_unowned = i + 1 == attempts.len() && !owned(s);
                    if mine || last_and_unowned {
                        chip(&mut h, s);
                    }
                }
            }
            if attempts.is_empty() {
                for s in &states {
                    chip(&mut h, s);
                }
            }
            write!(
                h,
                "<span class=\"chip outcome{class}\">{}</span>",
                esc(outcome)
            )
            .ok();
            if let Some(reason) = r["reason"].as_str() {
                write!(h, "<span class=\"meta\">{}</span>", esc(reason)).ok();
            }
            h.push_str("</div>");
        }
    }
    h.push_str("<p class=\"meta\">Read-only. JSON: <a href=\"/v1/status\">/v1/status</a> · <a href=\"/v1/specs\">/v1/specs</a> · <a href=\"/metrics\">/metrics</a></p></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_and_draws_runs() {
        let now: Timestamp = "2026-12-01T06:00:00Z".parse().unwrap();
        let report = json!({"specs": [
            {"name": "stand<up>", "kind": "cron", "cron": "0 9 * * *", "timezone": "Europe/Berlin", "suspended": false},
            {"name": "hourly", "kind": "cron", "cron": "0 * * * *", "timezone": "UTC", "suspended": false},
            {"name": "paused", "kind": "cron", "cron": "0 * * * *", "timezone": "UTC", "suspended": true},
            {"name": "once", "kind": "once", "suspended": false},
        ]});
        let lanes = next_day_runs(&report, now);
        assert_eq!(lanes.len(), 2, "{lanes:?}");
        assert_eq!(
            lanes[0].2,
            vec!["2026-12-01T08:00:00Z".parse::<Timestamp>().unwrap()]
        );
        assert_eq!(lanes[1].2.len(), 24);
        let doc = json!({"specs": [{"name": "stand<up>", "state": "active", "schedule": "cron 0 9 * * *"}], "invalidFiles": []});
        let recent = vec![(
            "stand<up>".to_string(),
            vec![
                json!({"id": "r1", "outcome": "completed", "scheduledAt": "2026-11-30T08:00:00Z",
                "slot": {"at": "2026-11-30T08:00:00Z"},
                "attempts": [{"number": 1, "disposition": "placed", "httpStatus": 201, "callId": "c1"}],
                "callStates": [{"state": "establishing", "callId": "c1"}, {"state": "established", "callId": "c1"}, {"state": "terminated", "callId": "c1"}]}),
            ],
        )];
        let html = render(&doc, &report, &recent, now);
        assert!(html.contains("stand&lt;up&gt;") && !html.contains("stand<up>"));
        assert_eq!(html.matches("<circle class=\"run\"").count(), 25);
        assert!(!html.contains("<script"));
        let lane = &html[html.find("data-run=\"r1\"").unwrap()..];
        let lane = &lane[..lane.find("</div>").unwrap()];
        for part in [
            "attempt 1: placed HTTP 201",
            "establishing",
            "established",
            "terminated",
            "completed",
        ] {
            assert!(lane.contains(part), "{part} in {lane}");
        }
    }
}
