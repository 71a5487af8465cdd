//! The public listener cannot be starved (issue 10): 2,000 slow-header
//! connections against the real `calld` binary. Beyond
//! `callback.maxConnections` they are closed at once (and counted); the
//! daemon still places a dropped spec and answers `/healthz` on the admin
//! endpoint; once the slow ones hit `callback.headerReadTimeout`, the call's
//! notifications get through and the run completes. Prints what it measured.

mod daemon_support;
mod failures_support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use daemon_support::*;
use failures_support::*;

const SLOW: usize = 2000;
const CAP: usize = 200;

/// Whether the server closed the connection (EOF or reset), without waiting.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    s.set_nonblocking(true).unwrap();
    let r = match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => true, // an answer (408/400): the server is done with it
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    s.set_nonblocking(false).unwrap();
    r
}

#[test]
fn two_thousand_slow_header_connections_do_not_starve_the_daemon() {
    let emu = Emu::start(&format!(
        "{FAST_CALLS}notifications: {{ attempts: 14, retryDelay: 200ms }}\n"
    ));
    let (admin, admin_addr) = admin_config();
    let env = Env::with_config(&emu, &admin);
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replacen(
        "callback:\n",
        &format!(
            "callback:\n  maxConnections: {CAP}\n  headerReadTimeout: 10s\n  idleTimeout: 30s\n"
        ),
        1,
    );
    std::fs::write(&env.config, text).unwrap();
    let d = env.start();
    let addr = callback_addr(&env.public_url);

    // 2,000 connections that send half a request and stop.
    let opened = Instant::now();
    let mut slow = Vec::with_capacity(SLOW);
    let mut connect_errors = 0;
    for _ in 0..SLOW {
        match TcpStream::connect(&addr) {
            Ok(mut s) => {
                let _ = s.write_all(b"POST /api/calls HTTP/1.1\r\nHost: slow\r\n");
                slow.push(s);
            }
            Err(_) => connect_errors += 1,
        }
    }
    let open_time = opened.elapsed();
    // Beyond the cap they are closed at once.
    let refused = wait_until("the connections beyond the cap to be closed", || {
        let n = slow.iter_mut().map(closed).filter(|c| *c).count();
        (n + connect_errors >= SLOW - CAP).then_some(n)
    });
    let refused_after = opened.elapsed();
    println!(
        "{SLOW} slow connections opened in {open_time:?} ({connect_errors} connect errors); \
         {refused} closed at once by the listener within {refused_after:?} (cap {CAP})"
    );

    // At the cap: the admin endpoint answers and a dropped spec is placed.
    let (status, _) = get(&admin_addr, "/healthz").expect("admin /healthz answers");
    assert_eq!(status, 200);
    env.drop_spec("busy.yaml", &call_spec("Busy"));
    let placed = wait_until("the create", || {
        emu.creates().into_iter().find(|c| c.status == Some(201))
    });
    let placed_after = opened.elapsed();
    assert!(
        slow.iter_mut().map(closed).any(|c| !c),
        "the slow connections were still held while the call was placed"
    );
    println!("spec dropped at the cap placed {placed_after:?} after the flood began");
    let refusals = wait_until("the refusals to be counted", || {
        let m = get(&admin_addr, "/metrics")?.1;
        m.lines()
            .find(|l| l.starts_with("calld_notifications_total{result=\"connectionRefused\"}"))
            .map(str::to_string)
    });
    println!("{refusals}");

    // The slow ones time out; the call's notifications then get through.
    wait_until("the slow connections to time out", || {
        slow.iter_mut().all(closed).then_some(())
    });
    let all_closed = opened.elapsed();
    println!("all slow connections closed by the listener {all_closed:?} after the flood began");
    let run = wait_until("the run to complete", || {
        let runs = env.history("busy");
        let r = runs.first()?.clone();
        (r["outcome"] == "completed").then_some(r)
    });
    println!("run completed {:?} after the flood began", opened.elapsed());
    assert_eq!(run["id"].as_str(), run_id(&placed).as_deref());
    let (status, _) = get(&addr, "/healthz").expect("the listener answers again");
    assert_eq!(status, 200);
    drop(slow);
    drop(d);
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let emu = Emu::start(FAST_CALLS);
    let env = Env::new(&emu);
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replacen(
        "callback:\n",
        "callback:\n  idleTimeout: 2s\n  headerReadTimeout: 20s\n",
        1,
    );
    std::fs::write(&env.config, text).unwrap();
    let d = env.start();
    let addr = callback_addr(&env.public_url);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: idle\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "answered, and kept alive"
    );
    // Then nothing: the listener closes it (EOF) after idleTimeout.
    let idle = Instant::now();
    let eof = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                break false;
            }
            Err(_) => break true,
        }
    };
    assert!(eof, "the idle connection was closed by the listener");
    println!(
        "idle kept-alive connection closed after {:?} (idleTimeout 2s)",
        idle.elapsed()
    );
    drop(d);
}
