//! Token endpoint troubles are not outcomes (issue 10): the real `calld`
//! binary against the emulator's token faults.
//!
//! - down for 3 s when a spec is dropped: exactly one create, after it is back;
//!   meanwhile `/readyz` and the run's reason say why nothing is placed;
//! - a wrong secret at start, fixed by a restart or by SIGHUP within the
//!   deadline: each due run placed once;
//! - hanging: a notification is accepted (202) and recorded while the token
//!   request still hangs, and `/healthz` answers.

mod daemon_support;
mod failures_support;
mod lifecycle_support;

use std::time::{Duration, Instant};

use calld::emulator::TokenFault;
use daemon_support::*;
use failures_support::*;

fn token_requests(emu: &Emu) -> Vec<calld::emulator::ReceivedRequest> {
    emu.requests()
        .into_iter()
        .filter(|r| r.kind == "token")
        .collect()
}

#[test]
fn token_endpoint_down_when_a_spec_is_dropped_places_it_once_when_back() {
    let emu = Emu::start(FAST_CALLS);
    let (admin, admin_addr) = admin_config();
    let env = Env::with_config(&emu, &admin);
    // Down from before the start: the daemon has no token at all.
    emu.set_token_fault(Some(TokenFault::Unavailable), None);
    let d = env.start();
    // While it is down: not ready, and why.
    let readyz = wait_until("/readyz to say why", || {
        let (status, body) = get(&admin_addr, "/readyz")?;
        (status == 503 && body.contains("token endpoint")).then_some(body)
    });
    println!("/readyz during the outage: {}", readyz.trim());
    assert!(readyz.contains("temporarily_unavailable"), "{readyz}");
    // The spec is dropped; the endpoint comes back 3 s later.
    let outage = Duration::from_secs(3);
    env.drop_spec("blip.yaml", &call_spec("Blip"));
    emu.set_token_fault(Some(TokenFault::Unavailable), Some(outage));
    let back_at = jiff::Timestamp::now() + outage;

    // Placed once it is back, and completed.
    let run = wait_until("the run to complete", || {
        let runs = env.history("blip");
        let r = runs.first()?.clone();
        (r["outcome"] == "completed").then_some(r)
    });
    let id = run["id"].as_str().unwrap();
    let creates = emu.creates_for(id);
    assert_eq!(creates.len(), 1, "exactly one create: {creates:#?}");
    assert!(
        received_at(&creates[0]) >= back_at,
        "the create was sent after the token endpoint came back"
    );
    let failed_tokens = token_requests(&emu)
        .iter()
        .filter(|r| r.status == Some(503))
        .count();
    assert!(failed_tokens >= 1, "the outage was seen");
    let (status, _) = get(&admin_addr, "/readyz").unwrap();
    assert_eq!(status, 200, "ready again");
    let metrics = get(&admin_addr, "/metrics").unwrap().1;
    assert!(
        metrics.contains("calld_token_refreshes_total{result=\"transient\"}"),
        "token refreshes are counted by outcome:\n{metrics}"
    );
    assert!(metrics.contains("calld_token_refreshes_total{result=\"ok\"}"));
    drop(d);
}

#[test]
fn wrong_secret_at_start_fixed_by_a_restart_places_each_due_run_once() {
    let emu = Emu::start(&format!(
        "{FAST_CALLS}clients: [{{ id: {CLIENT_ID}, secret: the-right-secret }}]\n"
    ));
    let (admin, admin_addr) = admin_config();
    let env = Env::with_config(&emu, &admin);
    let mut d = env.start_with(&[], &[(SECRET_ENV, "a-wrong-secret")]);
    d.wait_log("calls directory loaded");
    // Due now, deadline 5 minutes.
    let at = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap();
    env.drop_spec(
        "due.yaml",
        &format!(
            "{}schedule: {{ at: \"{at}\", deadline: 5m }}\n",
            call_spec("Due")
        ),
    );
    env.drop_spec("now.yaml", &call_spec("Now"));
    let readyz = wait_until("/readyz to name the refusal", || {
        let (status, body) = get(&admin_addr, "/readyz")?;
        (status == 503 && body.contains("AADSTS7000215")).then_some(body)
    });
    println!("/readyz with a wrong secret: {}", readyz.trim());
    // Both runs wait, `scheduled`, saying why; nothing reached Graph.
    for name in ["due", "now"] {
        let run = wait_until("the run to say why it waits", || {
            let runs = env.history(name);
            let r = runs.first()?.clone();
            r["reason"]
                .as_str()
                .is_some_and(|x| x.contains("invalid_client AADSTS7000215"))
                .then_some(r)
        });
        assert_eq!(run["state"], "scheduled", "{run:#}");
        println!("{name} while the secret is wrong: {}", run["reason"]);
    }
    assert!(emu.creates().is_empty(), "nothing was sent without a token");
    assert_eq!(d.stop().code(), Some(0));

    // Fixed (a restart with the right secret): each run placed once.
    let d2 = env.start_with(&[], &[(SECRET_ENV, "the-right-secret")]);
    for name in ["due", "now"] {
        let run = wait_until("the run to complete", || {
            let runs = env.history(name);
            let r = runs.first()?.clone();
            (r["outcome"] == "completed").then_some(r)
        });
        let id = run["id"].as_str().unwrap();
        assert_eq!(emu.creates_for(id).len(), 1, "{name} placed once");
        assert_eq!(env.history(name).len(), 1, "one run of {name}");
    }
    drop(d2);
}

#[test]
fn wrong_secret_fixed_by_sighup_places_the_due_run_once() {
    let emu = Emu::start(&format!(
        "{FAST_CALLS}clients: [{{ id: {CLIENT_ID}, secret: the-right-secret }}]\n"
    ));
    let (admin, admin_addr) = admin_config();
    let env = Env::with_config(&emu, &admin);
    // The secret in a file, which SIGHUP re-reads.
    let secret = env.dir.path().join("client-secret");
    std::fs::write(&secret, "a-wrong-secret\n").unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replace(
        &format!("clientSecret: {{ env: {SECRET_ENV} }}"),
        &format!("clientSecret: {{ file: {} }}", secret.display()),
    );
    assert!(text.contains("file:"), "{text}");
    std::fs::write(&env.config, text).unwrap();
    let d = env.start();
    env.drop_spec("hup.yaml", &call_spec("Hup"));
    wait_until("the run to wait for a token", || {
        let runs = env.history("hup");
        let r = runs.first()?.clone();
        (r["state"] == "scheduled" && r["reason"].as_str()?.contains("AADSTS7000215")).then_some(r)
    });
    assert!(emu.creates().is_empty());
    std::fs::write(&secret, "the-right-secret\n").unwrap();
    d.signal("HUP");
    let run = wait_until("the run to complete after SIGHUP", || {
        let runs = env.history("hup");
        let r = runs.first()?.clone();
        (r["outcome"] == "completed").then_some(r)
    });
    assert_eq!(emu.creates_for(run["id"].as_str().unwrap()).len(), 1);
    let (status, _) = get(&admin_addr, "/readyz").unwrap();
    assert_eq!(status, 200);
    drop(d);
}

#[test]
fn a_hanging_token_endpoint_delays_no_notification() {
    // Short tokens, so the daemon must go back to the token endpoint soon.
    let emu = Emu::start(&format!(
        "signingKeyFile: {}\ntokenLifetime: 4s\nnotifications: false\ncalls: {{ answerAfter: 100ms, length: 10m }}\n",
        lifecycle_support::emulator_key().pem_path.display()
    ));
    let (admin, admin_addr) = admin_config();
    let env = Env::with_config(&emu, &admin);
    let d = env.start();
    env.drop_spec("hang.yaml", &call_spec("Hang"));
    let create = wait_until("the create", || {
        emu.creates().into_iter().find(|c| c.status == Some(201))
    });
    let run_id = run_id(&create).unwrap();
    let call_id = create.call_id.clone().unwrap();
    wait_until("the run to be placed", || {
        let runs = env.history("hang");
        (runs.first()?["state"] == "placed").then_some(())
    });

    // The token endpoint hangs for 60 s from now; wait for the daemon's
    // refresh to be stuck in it.
    let hang_from = Instant::now();
    let before = token_requests(&emu).len();
    emu.set_token_fault(Some(TokenFault::Hang), Some(Duration::from_secs(60)));
    let hung = wait_until("a token request to hang", || {
        token_requests(&emu)
            .into_iter()
            .skip(before)
            .find(|r| r.status.is_none())
    });

    // A notification now: accepted and recorded while the request hangs.
    let addr = callback_addr(&env.public_url);
    let path = format!("/api/calls?calldRun={run_id}&calldAttempt=1");
    let body = lifecycle_support::notification(&call_id, "established", None);
    let sent = Instant::now();
    let status = post_notification(&addr, &path, &lifecycle_support::good_token(), &body);
    let took = sent.elapsed();
    assert_eq!(status, Some(202), "accepted while the token endpoint hangs");
    let runs = env.history("hang");
    assert_eq!(runs[0]["state"], "established", "{:#}", runs[0]);
    let still = token_requests(&emu)
        .into_iter()
        .find(|r| r.seq == hung.seq)
        .unwrap();
    assert!(
        still.status.is_none() && hang_from.elapsed() < Duration::from_secs(60),
        "the token request was still hanging"
    );
    println!(
        "notification answered in {took:?} while the token request hung ({:?} into the hang)",
        hang_from.elapsed()
    );
    let (status, _) = get(&admin_addr, "/healthz").unwrap();
    assert_eq!(status, 200);
    let (status, _) = get(&addr, "/healthz").unwrap();
    assert_eq!(status, 200);
    drop(d);
}
