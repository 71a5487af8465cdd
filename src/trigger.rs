//! `calld trigger NAME` and `calld retry RUN`: runs placed on request,
//! through the running daemon's admin endpoint (`POST /v1/trigger`,
//! `POST /v1/retry`).
//!
//! A request becomes one run in the ledger with the slot
//! `trigger:<request id>` ([`Slot::Trigger`]), `scheduled` and due now; the
//! daemon's next decision places it like any run (deadline, permissions,
//! `concurrency`, `retry` apply) and records its outcome. The run key is
//! unique, so the same request id never places two runs: a client that
//! re-sends a request after a lost answer gets the run the first one made.
//! `calld trigger` draws a fresh id for each invocation (`--request-id` to
//! give one); `calld retry RUN` uses `retry-<RUN>`, so a run is retried at
//! most once (retry the new run to try again).

use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use serde_json::{Value as Json, json};

use crate::ledger::{Ledger, NewRun, Outcome, RunKey, RunState, Slot};

/// Why a request was refused: (HTTP status, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// A request id: 1 to 100 of `A-Z a-z 0-9 . _ -`.
pub fn valid_request_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The spec's entry in the daemon's report, if it can be placed now.
fn placeable<'r>(report: &'r Json, name: &str) -> Result<&'r Json, Refusal> {
    let held = report["invalidNames"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|n| n.as_str() == Some(name));
    if held {
        return Err(Refusal::new(
            409,
            format!("`{name}` is invalid now (see `calld check`): fix it first"),
        ));
    }
    let Some(entry) = report["specs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"].as_str() == Some(name))
    else {
        return Err(Refusal::new(404, format!("no spec named `{name}`")));
    };
    if entry["suspended"] == true {
        return Err(Refusal::new(
            409,
            format!("`{name}` is suspended: resume it (suspend: false) first"),
        ));
    }
    Ok(entry)
}

fn insert(
    ledger: &mut dyn Ledger,
    entry: &Json,
    name: &str,
    request_id: &str,
    now: Timestamp,
) -> Result<Json, Refusal> {
    let new = NewRun {
        key: RunKey {
            spec: name.to_string(),
            slot: Slot::Trigger(request_id.to_string()),
        },
        revision: entry["revision"].as_str().unwrap_or("").to_string(),
        due: now,
        tenant_id: entry["tenantId"].as_str().map(str::to_string),
    };
    let ins = ledger
        .insert_run(&new, now)
        .map_err(|e| Refusal::new(500, e.to_string()))?;
    Ok(json!({
        "spec": name,
        "requestId": request_id,
        "created": ins.created,
        "run": crate::status::run_json(&ins.run),
    }))
}

/// `POST /v1/trigger {"spec", "requestId"}`: one run of `name`, now.
pub fn trigger(
    ledger: &mut dyn Ledger,
    report: &Json,
    name: &str,
    request_id: &str,
    now: Timestamp,
) -> Result<Json, Refusal> {
    if !valid_request_id(request_id) {
        return Err(Refusal::new(
            400,
            "`requestId` must be 1 to 100 of A-Z a-z 0-9 . _ -",
        ));
    }
    let entry = placeable(report, name)?;
    insert(ledger, entry, name, request_id, now)
}

/// `POST /v1/retry {"run", "force"}`: the finished run's call again, when
/// its outcome was `failed`, `missed` or `notEstablished` (`unknown` only
/// with `force`: it may already have rung).
pub fn retry(
    ledger: &mut dyn Ledger,
    report: &Json,
    run_id: &str,
    force: bool,
    now: Timestamp,
) -> Result<Json, Refusal> {
    let run = ledger
        .run(run_id)
        .map_err(|e| Refusal::new(500, e.to_string()))?
        .ok_or_else(|| Refusal::new(404, format!("no run `{run_id}`")))?;
    if run.state != RunState::Finished {
        return Err(Refusal::new(
            409,
            format!("run `{run_id}` is still in progress ({})", run.state),
        ));
    }
    match run.outcome {
        Some(Outcome::Failed | Outcome::Missed | Outcome::NotEstablished) => {}
        Some(Outcome::Unknown) if force => {}
        Some(Outcome::Unknown) => {
            return Err(Refusal::new(
                409,
                format!(
                    "run `{run_id}` ended `unknown`: its call may have rung already; --force places it again anyway"
                ),
            ));
        }
        other => {
            return Err(Refusal::new(
                409,
                format!(
                    "run `{run_id}` ended `{}`: only failed, missed or notEstablished runs (unknown with --force) are retried",
                    other.map(|o| o.as_str()).unwrap_or("?")
                ),
            ));
        }
    }
    let entry = placeable(report, &run.spec)?;
    let mut doc = insert(ledger, entry, &run.spec, &format!("retry-{run_id}"), now)?;
    doc["retryOf"] = json!(run_id);
    Ok(doc)
}

/// The admin endpoint's base URL for the command line: `--admin URL`, else
/// the configuration's `admin.listen` (environment included).
fn admin_url(config: Option<&Path>, admin: Option<&str>) -> Result<String, String> {
    if let Some(a) = admin {
        return Ok(crate::admin_client::base_url(a));
    }
    let (mut cfg, _) = crate::config::Config::load(config).map_err(|e| e.to_string())?;
    crate::daemon::apply_env_overrides(&mut cfg, &|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    })?;
    if cfg.admin.listen.is_empty() || cfg.admin.listen == "off" {
        return Err("admin.listen is off: give --admin URL".into());
    }
    Ok(crate::admin_client::base_url(&cfg.admin.listen))
}

/// Prints the answer; the exit code: 0 placed, 1 refused (unknown spec or
/// run, invalid, suspended, not retryable), 2 usage or connection error.
fn finish(
    cmd: &str,
    result: Result<(u16, Json), String>,
    json_out: bool,
    wait: Option<(&str, std::time::Duration)>,
) -> u8 {
    let (status, doc) = match result {
        Ok(x) => x,
        Err(e) => {
            eprintln!("calld {cmd}: {e}");
            return 2;
        }
    };
    if status != 200 {
        eprintln!(
            "calld {cmd}: {}",
            doc["error"].as_str().unwrap_or("refused")
        );
        return if status == 400 || status >= 500 { 2 } else { 1 };
    }
    let mut out = std::io::stdout().lock();
    if json_out {
        let _ = writeln!(out, "{doc}");
    } else {
        let run = &doc["run"];
        let verb = if doc["created"] == true {
            "placed now"
        } else {
            "already requested"
        };
        let _ = writeln!(
            out,
            "run {} of {}: {verb} (trigger {}); `calld history {}` follows it",
            run["id"].as_str().unwrap_or("?"),
            doc["spec"].as_str().unwrap_or("?"),
            doc["requestId"].as_str().unwrap_or("?"),
            doc["spec"].as_str().unwrap_or("?"),
        );
    }
    drop(out);
    match wait {
        None => 0,
        Some((base, timeout)) => wait_for(
            cmd,
            base,
            doc["spec"].as_str().unwrap_or(""),
            doc["run"]["id"].as_str().unwrap_or(""),
            timeout,
        ),
    }
}

/// `--wait`: polls `/v1/runs` until the run is finished; exit 0 when it
/// completed, 1 for any other outcome or the timeout.
fn wait_for(cmd: &str, base: &str, spec: &str, id: &str, timeout: std::time::Duration) -> u8 {
    let url = format!(
        "{base}/v1/runs?spec={}&limit=1000",
        percent_encoding::utf8_percent_encode(spec, percent_encoding::NON_ALPHANUMERIC)
    );
    let until = std::time::Instant::now() + timeout;
    loop {
        if let Ok((200, body)) = crate::admin_client::get(&url)
            && let Ok(doc) = serde_json::from_str::<Json>(&body)
            && let Some(run) = doc["runs"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["id"].as_str() == Some(id)))
            && run["state"] == "finished"
        {
            let outcome = run["outcome"].as_str().unwrap_or("?");
            println!(
                "{spec}\t{id}\t{outcome}\t{}",
                run["reason"].as_str().unwrap_or("")
            );
            return u8::from(outcome != "completed");
        }
        if std::time::Instant::now() >= until {
            eprintln!("calld {cmd}: --wait: run {id} has no outcome yet after {timeout:?}");
            return 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// `calld trigger NAME [--request-id ID]`.
pub fn trigger_cmd(
    name: &str,
    request_id: Option<&str>,
    config: Option<&Path>,
    admin: Option<&str>,
    json_out: bool,
    wait: Option<std::time::Duration>,
) -> u8 {
    let request_id = request_id
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if !valid_request_id(&request_id) {
        eprintln!("calld trigger: --request-id: 1 to 100 of A-Z a-z 0-9 . _ -");
        return 2;
    }
    let base = match admin_url(config, admin) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("calld trigger: {e}");
            return 2;
        }
    };
    let body = json!({ "spec": name, "requestId": request_id });
    finish(
        "trigger",
        crate::admin_client::post_json(&format!("{base}/v1/trigger"), &body),
        json_out,
        wait.map(|w| (base.as_str(), w)),
    )
}

/// `calld retry RUN [--force]`.
pub fn retry_cmd(
    run: &str,
    force: bool,
    config: Option<&Path>,
    admin: Option<&str>,
    json_out: bool,
    wait: Option<std::time::Duration>,
) -> u8 {
    let base = match admin_url(config, admin) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("calld retry: {e}");
            return 2;
        }
    };
    let body = json!({ "run": run, "force": force });
    finish(
        "retry",
        crate::admin_client::post_json(&format!("{base}/v1/retry"), &body),
        json_out,
        wait.map(|w| (base.as_str(), w)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Finish, SqliteLedger};

    fn report() -> Json {
        json!({
            "specs": [
                {"name": "a", "revision": "r1", "suspended": false},
                {"name": "paused", "revision": "r1", "suspended": true},
            ],
            "invalidNames": ["broken"],
        })
    }

    #[test]
    fn one_run_per_request_id() {
        let mut l = SqliteLedger::open_in_memory().unwrap();
        let now: Timestamp = "2026-12-01T08:00:00Z".parse().unwrap();
        let first = trigger(&mut l, &report(), "a", "req-1", now).unwrap();
        assert_eq!(first["created"], true);
        assert_eq!(first["run"]["state"], "scheduled");
        assert_eq!(first["run"]["slot"]["trigger"], "req-1");
        let again = trigger(&mut l, &report(), "a", "req-1", now).unwrap();
        assert_eq!(again["created"], false, "the same request: the same run");
        assert_eq!(again["run"]["id"], first["run"]["id"]);
        let other = trigger(&mut l, &report(), "a", "req-2", now).unwrap();
        assert_ne!(other["run"]["id"], first["run"]["id"]);
        assert_eq!(l.open_runs().unwrap().len(), 2);
    }

    #[test]
    fn refusals() {
        let mut l = SqliteLedger::open_in_memory().unwrap();
        let now: Timestamp = "2026-12-01T08:00:00Z".parse().unwrap();
        let code = |r: Result<Json, Refusal>| r.unwrap_err().status;
        assert_eq!(code(trigger(&mut l, &report(), "nope", "x", now)), 404);
        assert_eq!(code(trigger(&mut l, &report(), "broken", "x", now)), 409);
        assert_eq!(code(trigger(&mut l, &report(), "paused", "x", now)), 409);
        assert_eq!(code(trigger(&mut l, &report(), "a", "bad id", now)), 400);
        assert_eq!(code(retry(&mut l, &report(), "nope", false, now)), 404);
        assert!(l.open_runs().unwrap().is_empty());
    }

    #[test]
    fn retry_by_outcome() {
        let mut l = SqliteLedger::open_in_memory().unwrap();
        let now: Timestamp = "2026-12-01T08:00:00Z".parse().unwrap();
        let finished = |l: &mut SqliteLedger, req: &str, outcome: Outcome| {
            let doc = trigger(l, &report(), "a", req, now).unwrap();
            let id = doc["run"]["id"].as_str().unwrap().to_string();
            if outcome == Outcome::Unknown {
                l.mark_requesting(&id, None, now).unwrap();
            }
            l.finish(&id, &Finish::new(outcome), now).unwrap();
            id
        };
        let failed = finished(&mut l, "f", Outcome::Failed);
        let unknown = finished(&mut l, "u", Outcome::Unknown);
        let canceled = finished(&mut l, "c", Outcome::Canceled);
        let r = retry(&mut l, &report(), &failed, false, now).unwrap();
        assert_eq!(r["created"], true);
        assert_eq!(r["retryOf"], failed.as_str());
        let again = retry(&mut l, &report(), &failed, false, now).unwrap();
        assert_eq!(again["created"], false, "a run is retried once");
        assert_eq!(again["run"]["id"], r["run"]["id"]);
        let refused = retry(&mut l, &report(), &unknown, false, now).unwrap_err();
        assert_eq!(refused.status, 409);
        assert!(refused.message.contains("--force"), "{}", refused.message);
        assert_eq!(
            retry(&mut l, &report(), &unknown, true, now).unwrap()["created"],
            true
        );
        assert_eq!(
            retry(&mut l, &report(), &canceled, true, now)
                .unwrap_err()
                .status,
            409
        );
        // in progress: refused
        let open = trigger(&mut l, &report(), "a", "open", now).unwrap();
        let open_id = open["run"]["id"].as_str().unwrap();
        assert_eq!(
            retry(&mut l, &report(), open_id, false, now)
                .unwrap_err()
                .status,
            409
        );
    }
}
