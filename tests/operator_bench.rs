//! Figures for the operator views (ignored by default; prints, asserts
//! nothing about time): building the status document, the table, a
//! `/metrics` scrape with the per-spec series and the dashboard page from a
//! ledger of N specs with a finished and a planned run each.
//!
//! `cargo test --release --test operator_bench -- --ignored --nocapture`

use std::time::Instant;

use calld::ledger::{Finish, Ledger, NewRun, Outcome, RunKey, SqliteLedger};
use serde_json::json;

fn ledger_with(n: usize) -> (SqliteLedger, serde_json::Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut l = SqliteLedger::open_in(dir.path(), jiff::Timestamp::now()).unwrap();
    let now: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
    let mut specs = Vec::new();
    for i in 0..n {
        let name = format!("team-{}/spec-{i:05}", i % 20);
        let past: jiff::Timestamp = "2026-12-01T08:00:00Z".parse().unwrap();
        let next: jiff::Timestamp = "2026-12-02T08:00:00Z".parse().unwrap();
        for (t, finish) in [(past, true), (next, false)] {
            let ins = l
                .insert_run(
                    &NewRun {
                        key: RunKey::at(&name, t),
                        revision: "r1".into(),
                        due: t,
                        tenant_id: None,
                    },
                    now,
                )
                .unwrap();
            if finish {
                l.mark_requesting(&ins.run.id, None, now).unwrap();
                let outcome = if i % 7 == 0 {
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                };
                l.finish(&ins.run.id, &Finish::new(outcome), now).unwrap();
            }
        }
        specs.push(
            json!({"name": name, "kind": "cron", "cron": "0 9 * * *", "schedule": "cron 0 9 * * *",
            "timezone": "Europe/Berlin", "revision": "r1", "suspended": false}),
        );
    }
    let report = json!({"updatedAt": now.to_string(), "specs": specs, "invalidNames": [], "invalidFiles": [], "diagnostics": []});
    (l, report, dir)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[test]
#[ignore]
fn operator_views_figures() {
    for n in [1_000usize, 10_000] {
        let (l, report, _dir) = ledger_with(n);
        let now: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let t = Instant::now();
        let input = calld::status::StatusInput::from_ledger(&l, report.clone()).unwrap();
        let read = ms(t);
        let t = Instant::now();
        let doc = calld::status::status_doc(&input, now);
        let build = ms(t);
        let t = Instant::now();
        let text = calld::status::status_text(&doc, Some(160));
        let table = ms(t);
        let metrics = calld::metrics::Metrics::new();
        let t = Instant::now();
        calld::status::refresh_spec_metrics(&metrics, &l, &report, now).unwrap();
        let body = metrics.encode();
        let scrape = ms(t);
        let t = Instant::now();
        let html = calld::dashboard::render(&doc, &report, &[], now);
        let page = ms(t);
        println!(
            "{n} specs: ledger reads {read:.1} ms, status document {build:.1} ms, table {table:.1} ms ({} lines), \
             /metrics with per-spec series {scrape:.1} ms ({} KB), dashboard {page:.1} ms ({} KB)",
            text.lines().count(),
            body.len() / 1024,
            html.len() / 1024
        );
    }
}
