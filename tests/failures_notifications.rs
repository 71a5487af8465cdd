//! Notifications arrive late, twice, out of order or for someone else; a
//! call's spec goes away while it is up (issue 10). The real `calld`
//! binary against the emulator; the tests post validly signed
//! notifications themselves where the order matters.

mod daemon_support;
mod failures_support;
mod lifecycle_support;

use std::time::Duration;

use calld::emulator::ReceivedRequest;
use daemon_support::*;
use failures_support::*;
use serde_json::Value as Json;

/// An emulator that creates calls (up for 10 minutes) but sends no
/// notification: the test sends them, in the order it wants.
fn silent_emulator() -> Emu {
    Emu::start(&format!(
        "signingKeyFile: {}\nnotifications: false\ncalls: {{ answerAfter: 100ms, length: 10m }}\n",
        lifecycle_support::emulator_key().pem_path.display()
    ))
}

fn notify(env: &Env, run: &str, attempt: u32, call: &str, state: &str) -> u16 {
    let result = (state == "terminated").then_some((408, 10057, "no answer"));
    let body = lifecycle_support::notification(call, state, result);
    let path = format!("/api/calls?calldRun={run}&calldAttempt={attempt}");
    post_notification(
        &callback_addr(&env.public_url),
        &path,
        &lifecycle_support::good_token(),
        &body,
    )
    .expect("the listener answers")
}

fn created(emu: &Emu, n: usize) -> ReceivedRequest {
    wait_until(&format!("create #{n}"), || {
        emu.creates()
            .into_iter()
            .filter(|c| c.status == Some(201))
            .nth(n - 1)
    })
}

fn run_in_state(env: &Env, spec: &str, state: &str) -> Json {
    wait_until(&format!("{spec} to be {state}"), || {
        let runs = env.history(spec);
        let r = runs.first()?.clone();
        (r["state"] == state).then_some(r)
    })
}

fn finished(env: &Env, spec: &str) -> Json {
    run_in_state(env, spec, "finished")
}

fn requests_for(emu: &Emu, kind: &str, call: &str) -> Vec<ReceivedRequest> {
    emu.requests()
        .into_iter()
        .filter(|r| r.kind == kind && r.path.contains(call))
        .collect()
}

#[test]
fn notifications_of_attempt_1_during_attempt_2_leave_attempt_2_followed() {
    let emu = silent_emulator();
    let env = Env::new(&emu);
    let d = env.start();
    env.drop_spec(
        "retry.yaml",
        &format!(
            "{}retry: {{ attempts: 1, interval: 1s }}\nhangupAfter: 2s\n",
            call_spec("Retry")
        ),
    );
    let c1 = created(&emu, 1);
    let run = run_id(&c1).unwrap();
    let a = c1.call_id.clone().unwrap();
    run_in_state(&env, "retry", "placed");
    // Attempt 1 was not answered: a retry.
    assert_eq!(notify(&env, &run, 1, &a, "terminated"), 202);
    let c2 = created(&emu, 2);
    assert_eq!(run_id(&c2).as_deref(), Some(run.as_str()), "the same run");
    let b = c2.call_id.clone().unwrap();
    assert_ne!(a, b);
    // Late and out of order: attempt 1's call "establishing", "established"
    // (it is that attempt's history only); then attempt 2's own.
    assert_eq!(notify(&env, &run, 1, &a, "establishing"), 202);
    assert_eq!(notify(&env, &run, 1, &a, "established"), 202);
    let established_b = jiff::Timestamp::now();
    assert_eq!(notify(&env, &run, 2, &b, "established"), 202);
    let r = run_in_state(&env, "retry", "established");
    assert_eq!(
        r["callId"],
        b.as_str(),
        "attempt 2's call is followed: {r:#}"
    );

    // Attempt 2's call is hung up at hangupAfter; attempt 1's is not touched.
    let delete = wait_until("the hang-up of attempt 2's call", || {
        requests_for(&emu, "delete", &b).into_iter().next()
    });
    let after = received_at(&delete).duration_since(established_b);
    println!("DELETE of attempt 2's call {after:?} after its established");
    assert!(after >= jiff::SignedDuration::from_secs(2), "{after:?}");
    assert!(requests_for(&emu, "delete", &a).is_empty());
    assert_eq!(notify(&env, &run, 2, &b, "terminated"), 202);
    let r = finished(&env, "retry");
    assert_eq!(r["outcome"], "completed", "{r:#}");
    assert_eq!(r["callId"], b.as_str());
    assert_eq!(emu.creates().len(), 2);
    drop(d);
}

#[test]
fn established_after_terminated_is_completed_and_not_rung_again() {
    let emu = silent_emulator();
    let env = Env::new(&emu);
    let d = env.start();
    env.drop_spec(
        "order.yaml",
        &format!(
            "{}retry: {{ attempts: 2, interval: 5s }}\n",
            call_spec("Order")
        ),
    );
    let c1 = created(&emu, 1);
    let run = run_id(&c1).unwrap();
    let a = c1.call_id.clone().unwrap();
    run_in_state(&env, "order", "placed");
    assert_eq!(notify(&env, &run, 1, &a, "terminated"), 202);
    assert_eq!(notify(&env, &run, 1, &a, "established"), 202);
    // Re-deliveries change nothing.
    assert_eq!(notify(&env, &run, 1, &a, "established"), 202);
    assert_eq!(notify(&env, &run, 1, &a, "terminated"), 202);
    let r = finished(&env, "order");
    assert_eq!(
        r["outcome"], "completed",
        "answered, whatever came first: {r:#}"
    );
    let states = states(&r);
    assert_eq!(
        states,
        ["terminated", "established"],
        "duplicates are idempotent"
    );
    // Past the retry interval: still one create.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(emu.creates().len(), 1, "not rung again");
    assert_eq!(env.history("order")[0]["outcome"], "completed");
    drop(d);
}

#[test]
fn a_validly_signed_notification_for_another_tenant_is_refused() {
    let emu = silent_emulator();
    let (admin, admin_addr) = admin_config();
    let env = Env::with_config(&emu, &admin);
    let d = env.start();
    env.drop_spec("tenant.yaml", &call_spec("Tenant"));
    let c1 = created(&emu, 1);
    let run = run_id(&c1).unwrap();
    let a = c1.call_id.clone().unwrap();
    let before = run_in_state(&env, "tenant", "placed");

    let mut claims = lifecycle_support::good_claims();
    claims["tid"] = "0b3a1f52-6c0e-4a7e-9f7e-2f8f1a2b3c4d".into();
    let key = lifecycle_support::emulator_key();
    let token = lifecycle_support::mint_with(key, &key.kid, &claims);
    let body = lifecycle_support::notification(&a, "established", None);
    let path = format!("/api/calls?calldRun={run}&calldAttempt=1");
    let status = post_notification(&callback_addr(&env.public_url), &path, &token, &body);
    assert_eq!(status, Some(401), "another tenant's notification");
    let after = env.history("tenant");
    assert_eq!(after[0], before, "the ledger is unchanged");
    let counted = wait_until("the refusal to be counted", || {
        let m = get(&admin_addr, "/metrics")?.1;
        m.lines()
            .find(|l| l.starts_with("calld_notifications_total{result=\"wrongTenant\"}"))
            .map(str::to_string)
    });
    println!("{counted}");
    // The right tenant still gets through.
    assert_eq!(notify(&env, &run, 1, &a, "established"), 202);
    run_in_state(&env, "tenant", "established");
    drop(d);
}

#[test]
fn a_removed_specs_call_is_hung_up_at_its_hangup_after_and_keep_alive_stops() {
    let emu = Emu::start("calls: { answerAfter: 100ms, length: 10m }\n");
    let env = Env::with_config(&emu, "daemon: { debounce: 20ms, keepAliveInterval: 1s }\n");
    let d = env.start();
    env.drop_spec(
        "gone.yaml",
        &format!("{}hangupAfter: 3s\n", call_spec("Gone")),
    );
    let r = run_in_state(&env, "gone", "established");
    let call = r["callId"].as_str().unwrap().to_string();
    let established_at: jiff::Timestamp = r["establishedAt"].as_str().unwrap().parse().unwrap();
    env.remove_spec("gone.yaml");

    let delete = wait_until("the hang-up", || {
        requests_for(&emu, "delete", &call).into_iter().next()
    });
    let after = received_at(&delete).duration_since(established_at);
    println!("DELETE {after:?} after established (hangupAfter 3s, spec removed)");
    assert!(after >= jiff::SignedDuration::from_secs(3), "{after:?}");
    let r = finished(&env, "gone");
    assert_eq!(r["outcome"], "completed", "{r:#}");
    let keep_alives = requests_for(&emu, "keepAlive", &call).len();
    println!("{keep_alives} keepAlive(s) while the call was up");
    assert!(
        keep_alives >= 1,
        "keepAlive followed the call while it was up"
    );
    // The call ended: no keepAlive after it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(requests_for(&emu, "keepAlive", &call).len(), keep_alives);
    drop(d);
}
