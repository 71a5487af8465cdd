//! Per-spec metrics from a real daemon (live mode, the emulator on
//! loopback): last success, last run, next run and last outcome by spec,
//! the series of a removed spec gone; and every metric the shipped alert
//! rules and Grafana dashboard (examples/monitoring/) use is one calld
//! serves.

mod daemon_support;

use daemon_support::*;

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn per_spec_series_from_a_running_daemon() {
    let emu = Emu::start(FAST_CALLS);
    let admin = free_port();
    let env = Env::with_config(&emu, &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"));
    env.drop_spec("once.yaml", &call_spec("Once"));
    env.drop_spec(
        "daily.yaml",
        &format!(
            "{}schedule: {{ cron: \"0 9 * * *\", timezone: Europe/Berlin }}\n",
            call_spec("Daily")
        ),
    );
    let _daemon = env.start();
    let runs = wait_until("once completed", || {
        let runs = env.history("once");
        (runs.first()?["outcome"] == "completed").then_some(runs)
    });
    let scheduled: jiff::Timestamp = runs[0]["scheduledAt"].as_str().unwrap().parse().unwrap();

    let text = wait_until("the per-spec series", || {
        let (status, body) = http_get(admin, "/metrics")?;
        (status == 200
            && body.contains("calld_spec_last_outcome{spec=\"once\",outcome=\"completed\"} 1"))
        .then_some(body)
    });
    let last_success = sample(
        &text,
        "calld_spec_last_success_timestamp_seconds{spec=\"once\"}",
    )
    .unwrap();
    assert!(
        (last_success - scheduled.as_millisecond() as f64 / 1000.0).abs() < 0.01,
        "{last_success} vs {scheduled}"
    );
    assert_eq!(
        sample(
            &text,
            "calld_spec_last_run_timestamp_seconds{spec=\"once\"}"
        ),
        Some(last_success)
    );
    let next = sample(
        &text,
        "calld_spec_next_run_timestamp_seconds{spec=\"daily\"}",
    )
    .unwrap();
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(
        next > now && next < now + 86_400.0 + 3_600.0,
        "next run within a day: {next}"
    );
    assert_eq!(
        sample(
            &text,
            "calld_spec_last_success_timestamp_seconds{spec=\"daily\"}"
        ),
        Some(0.0),
        "never succeeded: 0"
    );
    assert_eq!(sample(&text, "calld_spec_series_omitted"), Some(0.0));

    // removed: its series go
    env.remove_spec("once.yaml");
    wait_until("once's series gone", || {
        let (_, body) = http_get(admin, "/metrics")?;
        (!body.contains("spec=\"once\"") && body.contains("spec=\"daily\"")).then_some(())
    });

    // every calld_* name in the shipped rules and dashboard is served
    let families: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monitoring");
    let mut used = std::collections::BTreeSet::new();
    for file in ["calld.rules.yml", "grafana-dashboard.json"] {
        let body = std::fs::read_to_string(dir.join(file)).unwrap();
        for (i, _) in body.match_indices("calld_") {
            let name: String = body[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        let counter = family.strip_suffix("_total").unwrap_or(family);
        assert!(
            families.contains(family) || families.contains(counter),
            "{name} (examples/monitoring) is not served; families: {families:?}"
        );
    }
}

#[test]
fn token_failures_are_counted() {
    // the emulator knows the client with another secret: every token request fails
    let emu = Emu::start(&format!(
        "{FAST_CALLS}clients: [{{ id: {CLIENT_ID}, secret: not-this-one }}]\n"
    ));
    let admin = free_port();
    let env = Env::with_config(&emu, &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"));
    let _daemon = env.start();
    let text = wait_until("a token failure counted", || {
        let (_, body) = http_get(admin, "/metrics")?;
        // a wrong secret is an environment problem, not a passing trouble
        (sample(&body, "calld_token_refreshes_total{result=\"environment\"}")? >= 1.0)
            .then_some(body)
    });
    assert_eq!(
        sample(&text, "calld_token_refreshes_total{result=\"ok\"}"),
        Some(0.0),
        "{text}"
    );
}
