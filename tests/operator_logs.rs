//! What the daemon logs, from the real binary: one line per state change
//! of a call (with its spec), which specs a load added, changed or
//! removed, and each finding once per file revision (not on every rescan).

mod daemon_support;

use daemon_support::*;

fn lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

#[test]
fn call_states_spec_changes_and_warnings_once() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::with_config(
        &emu,
        &format!(
            "admin: {{ listen: 127.0.0.1:{} }}\ndaemon: {{ debounce: 20ms, resyncInterval: 1h }}\n",
            free_port()
        ),
    );
    env.drop_spec("bad.yaml", &format!("{}subjcet: typo\n", call_spec("Bad")));
    let daemon = env.start_with(&[], &[("RUST_LOG", "calld=info,warn")]);
    daemon.wait_log("calls directory loaded");
    env.drop_spec("ring.yaml", &call_spec("Ring"));
    daemon.wait_log("run finished");
    let log = daemon.log_text();
    let states = lines_with(&log, &["call state changed", "spec=ring"]);
    assert!(
        states.iter().any(|l| l.contains("state=established")),
        "the answer is logged with its spec:\n{log}"
    );
    assert!(
        states
            .iter()
            .all(|l| l.contains("call_id=") && l.contains("run=")),
        "{states:?}"
    );
    assert!(
        !lines_with(&log, &["calls directory loaded", "added=ring"]).is_empty(),
        "the load names the added spec:\n{log}"
    );

    // rescans of an unchanged directory: the finding is not repeated
    let before = lines_with(&daemon.log_text(), &["invalid spec", "bad.yaml"]).len();
    assert_eq!(before, 1, "{}", daemon.log_text());
    for n in 0..3 {
        daemon.signal("HUP");
        daemon.wait_log_count("SIGHUP: configuration reloaded", n + 1);
    }
    // wait for the rescans the SIGHUPs asked for
    daemon.wait_log_count("calls directory loaded", 5);
    assert_eq!(
        lines_with(&daemon.log_text(), &["invalid spec", "bad.yaml"]).len(),
        1,
        "once per file revision:\n{}",
        daemon.log_text()
    );
    // a new revision of the file with the same problem: said once more
    env.drop_spec(
        "bad.yaml",
        &format!("{}subjcet: typo again\n", call_spec("Bad")),
    );
    wait_until("the new revision's finding", || {
        (lines_with(&daemon.log_text(), &["invalid spec", "bad.yaml"]).len() == 2).then_some(())
    });

    // changed and removed
    env.drop_spec("ring.yaml", &call_spec("Ring again"));
    wait_until("changed=ring", || {
        (!lines_with(
            &daemon.log_text(),
            &["calls directory loaded", "changed=ring"],
        )
        .is_empty())
        .then_some(())
    });
    env.remove_spec("ring.yaml");
    wait_until("removed=ring", || {
        (!lines_with(
            &daemon.log_text(),
            &["calls directory loaded", "removed=ring"],
        )
        .is_empty())
        .then_some(())
    });
}
