//! The dashboard on the admin port (`GET /`), from a real daemon (live
//! mode, the emulator on loopback): served as HTML with no script and no
//! outside asset, and rendered by headless Chromium (Debian's `chromium`),
//! whose DOM must hold the status table, the 24-hour timeline and each
//! run's lane of attempts and call states. Without Chromium the browser
//! part is skipped, saying so (CALLD_REQUIRE_CHROMIUM=1 makes that a
//! failure, as CI sets it). CALLD_DASHBOARD_SCREENSHOT=FILE keeps the
//! screenshot (docs/dashboard.png is made this way).

mod daemon_support;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use daemon_support::*;

fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CALLD_CHROMIUM") {
        return Some(p.into());
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
}

fn headless(
    bin: &PathBuf,
    profile: &std::path::Path,
    args: &[&str],
    url: &str,
) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs")
}

#[test]
fn the_dashboard_renders_in_a_browser() {
    let emu = Emu::start(&format!(
        "{FAST_CALLS}targets: {{ \"+14255550199\": {{ outcome: decline, after: 100ms }} }}\n"
    ));
    let admin = free_port();
    let env = Env::with_config(&emu, &format!("admin: {{ listen: 127.0.0.1:{admin} }}\n"));
    let cron = |expr: &str, tz: &str| format!("schedule: {{ cron: \"{expr}\", timezone: {tz} }}\n");
    env.drop_spec(
        "team-a/standup.yaml",
        &format!(
            "{}{}",
            call_spec("Standup"),
            cron("0 9 * * *", "Europe/Berlin")
        ),
    );
    env.drop_spec(
        "team-b/standup.yaml",
        &format!(
            "{}{}",
            call_spec("Standup B"),
            cron("0 9 * * *", "Europe/London")
        ),
    );
    env.drop_spec(
        "oncall/hourly.yaml",
        &format!("{}{}", call_spec("Hourly"), cron("30 * * * *", "UTC")),
    );
    env.drop_spec(
        "paused.yaml",
        &format!(
            "{}suspend: true\n{}",
            call_spec("Paused"),
            cron("0 10 * * *", "UTC")
        ),
    );
    env.drop_spec("hello.yaml", &call_spec("Hello"));
    env.drop_spec(
        "decliner.yaml",
        "subject: Decliner\ntargets:\n  - phone: \"+14255550199\"\n",
    );
    env.drop_spec(
        "broken.yaml",
        &format!("{}subjcet: typo\n", call_spec("Broken")),
    );
    let _daemon = env.start();
    wait_until("hello completed and decliner declined", || {
        let hello = env.history("hello");
        let dec = env.history("decliner");
        (hello.first()?["outcome"] == "completed" && dec.first()?["outcome"] == "notEstablished")
            .then_some(())
    });

    let (head, html) = wait_until("the dashboard", || http_get(admin, "/"));
    let head_l = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head_l.contains("content-type: text/html"), "{head}");
    assert!(
        head_l.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(!html.contains("<script"), "no JavaScript");
    for outside in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(outside), "no outside asset ({outside})");
    }
    for name in [
        "team-a/standup",
        "team-b/standup",
        "oncall/hourly",
        "paused",
        "hello",
        "decliner",
    ] {
        assert!(
            html.contains(&format!("data-spec=\"{name}\"")),
            "{name} in the table"
        );
    }

    let Some(bin) = chromium() else {
        if std::env::var_os("CALLD_REQUIRE_CHROMIUM").is_some() {
            panic!(
                "CALLD_REQUIRE_CHROMIUM is set but no chromium is installed (apt-get install chromium)"
            );
        }
        println!(
            "SKIPPED the browser part: no chromium installed (apt-get install chromium); the HTML checks above ran"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{admin}/");
    let out = headless(&bin, &tmp.path().join("profile"), &["--dump-dom"], &url);
    assert!(out.status.success(), "{out:?}");
    let dom = String::from_utf8_lossy(&out.stdout);
    // the browser parsed a table row per spec, the timeline, the lanes
    assert!(dom.contains("<table id=\"status\">"), "{dom}");
    assert_eq!(dom.matches("<tr data-spec=").count(), 7, "{dom}");
    assert!(dom.contains("<svg") && dom.contains("id=\"timeline\""));
    // 24 hourly runs, two standups: the 09:00 Berlin and London runs are
    // an hour apart in UTC
    let dots = dom.matches("<circle class=\"run\"").count();
    assert_eq!(dots, 24 + 2, "{dots} runs drawn");
    assert!(dom.contains("CET") || dom.contains("CEST"));
    assert!(dom.contains("GMT") || dom.contains("BST"));
    let lane_of = |spec: &str| {
        let runs = env.history(spec);
        let id = runs[0]["id"].as_str().unwrap().to_string();
        let start = dom
            .find(&format!("data-run=\"{id}\""))
            .expect("the run's lane");
        let lane = &dom[start..];
        lane[..lane.find("</div>").unwrap()].to_string()
    };
    let hello = lane_of("hello");
    for part in [
        "attempt 1: placed HTTP 201",
        "establishing",
        "established",
        "terminated",
        "completed",
    ] {
        assert!(hello.contains(part), "{part} in {hello}");
    }
    let declined = lane_of("decliner");
    assert!(
        declined.contains("notEstablished") && !declined.contains(">established<"),
        "{declined}"
    );
    assert!(
        dom.contains("class=\"st held\""),
        "the invalid spec is held"
    );

    let shot = tmp.path().join("dashboard.png");
    let out = headless(
        &bin,
        &tmp.path().join("profile"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1500",
        ],
        &url,
    );
    assert!(out.status.success(), "{out:?}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(png.len() > 10_000, "a real page, {} bytes", png.len());
    if let Some(keep) = std::env::var_os("CALLD_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
