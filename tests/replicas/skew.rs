//! Issue 13, must-show 4: one replica's clock 30 s ahead (libfaketime)
//! changes no placement time: every create arrives at the emulator (which
//! runs on the test's, true, clock) not before its run is due; and nothing
//! is placed twice. The replica must time runs by the database's clock
//! (its measured offset), not its own.

use std::process::Command;

use crate::replicas_support::*;
use jiff::{SignedDuration, Timestamp};

/// What the harness's comments on libfaketime claim, checked with
/// coreutils: the faked process's wall clock is ahead, file mtimes are not.
#[test]
fn faketime_behaves_as_the_harness_assumes() {
    let Some(_) = faketime_or_skip("faketime_behaves_as_the_harness_assumes") else {
        return;
    };
    let env = faketime_env("+30s").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("spec.yaml");
    let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
    write_file(&f, "x", Some(t));
    let run = |args: &[&str]| -> String {
        let out = Command::new(args[0])
            .args(&args[1..])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("coreutils");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let real = Timestamp::now().as_second();
    let faked: i64 = run(&["date", "+%s"]).parse().unwrap();
    assert!(
        (faked - real - 30).abs() <= 5,
        "faked {faked}, real {real}: not 30 s ahead"
    );
    let seen: i64 = run(&["stat", "-c", "%Y", f.to_str().unwrap()])
        .parse()
        .unwrap();
    assert_eq!(seen, 1_767_225_600, "libfaketime shifted a file's mtime");
}

#[test]
fn a_replica_30s_ahead_places_nothing_early_and_nothing_twice() {
    let test = "a_replica_30s_ahead_places_nothing_early_and_nothing_twice";
    let Some(_) = faketime_or_skip(test) else {
        return;
    };
    let Some(mut c) = Cluster::new(
        test,
        Opts {
            replicas: 2,
            ..Opts::default()
        },
    ) else {
        return;
    };
    assert!(c.set_faketime(0, "+30s"));

    // Phase 1, the skewed replica alone: by its own clock the run is 26 s
    // overdue at once; by the database's it is due in 4 s.
    c.start(0);
    c.wait_ready(0);
    let at = at_in(4_000);
    c.write_spec_same("skew-alone", &spec_yaml("skew-alone", Some(at)));
    c.wait_finished("skew-alone", 1);
    let creates = c.creates_for("skew-alone");
    assert_eq!(creates.len(), 1);
    let early = at.duration_since(received_at(&creates[0]));
    assert!(
        !early.is_positive(),
        "the skewed replica placed {early:?} before due ({at})"
    );

    // Phase 2, both: a normal and a skewed replica compete for 10 runs.
    c.start(1);
    c.wait_ready(1);
    let first = at_in(3_000);
    let mut due = Vec::new();
    let specs: Vec<(String, String)> = (0..10)
        .map(|k| {
            let name = format!("skew-{k}");
            let at = first + SignedDuration::from_millis(500 * k);
            due.push((name.clone(), at));
            (name.clone(), spec_yaml(&name, Some(at)))
        })
        .collect();
    c.write_specs_same(&specs);
    for (name, _) in &due {
        c.wait_finished(name, 1);
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut late = Vec::new();
    for (name, at) in &due {
        let creates = c.creates_for(name);
        let runs = c.runs_of(name);
        assert_eq!(runs.len(), 1, "{name}: {runs:?}");
        assert_eq!(creates.len(), 1, "{name}: sent {} times", creates.len());
        let got = received_at(&creates[0]);
        assert!(got >= *at, "{name}: placed at {got}, due {at}");
        late.push(got.duration_since(*at).as_secs_f64() * 1e3);
    }
    eprintln!(
        "skew: lateness ms p50 {:.0} max {:.0}",
        percentile(&mut late, 50.0),
        percentile(&mut late, 100.0)
    );
}
