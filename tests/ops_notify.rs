//! The systemd notifier against a real Unix datagram socket, as systemd's
//! `NOTIFY_SOCKET` is: the messages the daemon's lifecycle sends, in order.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use calld::systemd::Notifier;

/// A bound notify socket in a temporary directory.
struct Listener {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    socket: UnixDatagram,
}

fn listener() -> Listener {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    // A missing datagram fails the test instead of hanging it.
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    Listener {
        _dir: dir,
        path,
        socket,
    }
}

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notify datagram");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn monotonic_usec() -> i128 {
    match sd_notify::NotifyState::monotonic_usec_now().unwrap() {
        sd_notify::NotifyState::MonotonicUsec(u) => u,
        _ => unreachable!(),
    }
}

#[test]
fn lifecycle_sequence_reaches_the_socket_in_order() {
    let l = listener();
    let n = Notifier::with_socket(&l.path, Some(Duration::from_secs(20)));
    assert!(n.is_enabled());
    assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(10)));

    n.ready().unwrap();
    n.status("12 specs (1 invalid), 3 calls up").unwrap();
    n.watchdog().unwrap();
    let before = monotonic_usec();
    n.reloading().unwrap();
    let after = monotonic_usec();
    n.ready().unwrap();
    n.stopping().unwrap();

    assert_eq!(recv(&l.socket), "READY=1\n");
    assert_eq!(recv(&l.socket), "STATUS=12 specs (1 invalid), 3 calls up\n");
    assert_eq!(recv(&l.socket), "WATCHDOG=1\n");

    // RELOADING=1 and MONOTONIC_USEC in one datagram, the time taken from
    // CLOCK_MONOTONIC while reloading() ran.
    let reloading = recv(&l.socket);
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines.len(), 2, "{reloading:?}");
    assert_eq!(lines[0], "RELOADING=1");
    let usec: i128 = lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        before <= usec && usec <= after,
        "{before} <= {usec} <= {after}"
    );
    assert!(reloading.ends_with('\n'));

    assert_eq!(recv(&l.socket), "READY=1\n");
    assert_eq!(recv(&l.socket), "STOPPING=1\n");
}

#[test]
fn a_multi_line_status_stays_one_assignment() {
    let l = listener();
    let n = Notifier::with_socket(&l.path, None);
    n.status("line one\nREADY=1\r\nline three").unwrap();
    assert_eq!(recv(&l.socket), "STATUS=line one READY=1  line three\n");
    assert_eq!(n.watchdog_interval(), None);
}

#[test]
fn abstract_socket_names_work() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let name = format!("calld-ops-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let n = Notifier::with_socket(format!("@{name}"), None);
    n.watchdog().unwrap();
    assert_eq!(recv(&socket), "WATCHDOG=1\n");
}

#[test]
fn a_vanished_socket_is_an_error_not_a_panic() {
    let l = listener();
    let n = Notifier::with_socket(&l.path, None);
    drop(l);
    assert!(n.ready().is_err());
    assert!(Notifier::disabled().ready().is_ok());
}

/// Runs in a child process (see below) with systemd's variables set.
#[test]
#[ignore = "run by from_env_reads_systemds_variables in a child process"]
fn child_notifies_from_env() {
    let n = Notifier::from_env();
    assert!(n.is_enabled(), "NOTIFY_SOCKET not seen");
    n.status(&format!("interval={:?}", n.watchdog_interval()))
        .unwrap();
    n.ready().unwrap();
}

#[test]
fn from_env_reads_systemds_variables() {
    let l = listener();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_notifies_from_env",
            "--ignored",
            "--test-threads=1",
        ])
        .env("NOTIFY_SOCKET", &l.path)
        .env("WATCHDOG_USEC", "4000000")
        .env_remove("WATCHDOG_PID")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(recv(&l.socket), "STATUS=interval=Some(2s)\n");
    assert_eq!(recv(&l.socket), "READY=1\n");
}
