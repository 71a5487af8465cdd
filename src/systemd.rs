//! systemd integration: `sd_notify(3)` messages for `Type=notify` /
//! `Type=notify-reload` units.
//!
//! The daemon sends `READY=1` after its first full load, `STATUS=` with a
//! one-line summary, `WATCHDOG=1` from its work loop (so a stuck loop stops
//! the pings and systemd restarts it), `RELOADING=1` + `MONOTONIC_USEC=` on
//! SIGHUP followed by `READY=1` when the reload is done, and `STOPPING=1`
//! on shutdown.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op that
//! returns `Ok(())`.
//!
//! Messages are formatted by the `sd-notify` crate; the datagram is sent here
//! so that a notifier can also target an explicit socket (tests).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use sd_notify::NotifyState;

/// Where the datagrams go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A socket file (systemd's `/run/systemd/notify`).
    Path(PathBuf),
    /// A Linux abstract socket (`NOTIFY_SOCKET=@name`).
    Abstract(Vec<u8>),
}

/// Sends service-manager notifications. Cheap to clone; no-op when disabled.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// `None`: not started by systemd (or notifications not wanted).
    target: Option<Target>,
    /// `WATCHDOG_USEC` when it is meant for this process.
    watchdog_timeout: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd gives the service: `NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC` and `WATCHDOG_PID`. A no-op notifier when
    /// `NOTIFY_SOCKET` is unset or empty.
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }

    /// The pure part of [`Notifier::from_env`]: the variables' values and
    /// this process's id. A watchdog whose `WATCHDOG_PID` names another
    /// process, or whose `WATCHDOG_USEC` is not a positive integer, is ignored.
    pub fn from_vars(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        my_pid: u32,
    ) -> Self {
        let target = notify_socket.and_then(parse_target);
        let pid_ok = match watchdog_pid {
            None => true,
            Some(p) => p.trim().parse::<u32>().is_ok_and(|p| p == my_pid),
        };
        let watchdog_timeout = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && pid_ok)
            .map(Duration::from_micros);
        Notifier {
            target,
            watchdog_timeout,
        }
    }

    /// A notifier that sends to this socket path (`@name` for an abstract
    /// socket), with this watchdog timeout (`WATCHDOG_USEC`). For tests and
    /// for callers that read the environment themselves.
    pub fn with_socket(socket: impl Into<OsString>, watchdog_timeout: Option<Duration>) -> Self {
        Notifier {
            target: parse_target(&socket.into()),
            watchdog_timeout,
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier::default()
    }

    /// True when there is a socket to notify.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to call [`Notifier::watchdog`]: half of `WATCHDOG_USEC`, as
    /// `sd_watchdog_enabled(3)` recommends. `None`: no watchdog configured
    /// (or no socket to send the pings to).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        self.watchdog_timeout.map(|t| t / 2)
    }

    /// `READY=1`: startup (or a reload) is finished.
    pub fn ready(&self) -> io::Result<()> {
        self.send(&[NotifyState::Ready])
    }

    /// `STATUS=<text>`: a one-line summary shown by `systemctl status`.
    /// Line breaks are replaced by spaces (a second line would be parsed as
    /// another assignment).
    pub fn status(&self, text: &str) -> io::Result<()> {
        let line: String = text
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send(&[NotifyState::Status(&line)])
    }

    /// `WATCHDOG=1`: the work loop is alive.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send(&[NotifyState::Watchdog])
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>`, as
    /// `Type=notify-reload` requires. Send [`Notifier::ready`] when done.
    pub fn reloading(&self) -> io::Result<()> {
        if self.target.is_none() {
            return Ok(());
        }
        let now = NotifyState::monotonic_usec_now()?;
        self.send(&[NotifyState::Reloading, now])
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) -> io::Result<()> {
        self.send(&[NotifyState::Stopping])
    }

    fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let message = format_message(states);
        let socket = UnixDatagram::unbound()?;
        let sent = match target {
            Target::Path(path) => socket.send_to(message.as_bytes(), path)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)?
            }
        };
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "incomplete sd_notify datagram",
            ));
        }
        Ok(())
    }
}

/// One datagram: `KEY=VALUE` lines, each ending in a newline.
fn format_message(states: &[NotifyState<'_>]) -> String {
    let mut message = String::new();
    for state in states {
        message.push_str(&state.to_string());
        message.push('\n');
    }
    message
}

fn parse_target(socket: &OsStr) -> Option<Target> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    match bytes.first()? {
        b'@' => Some(Target::Abstract(bytes[1..].to_vec())),
        b'/' => Some(Target::Path(PathBuf::from(socket))),
        // systemd accepts only absolute paths and abstract names.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_socket_disables() {
        let n = Notifier::from_vars(None, Some("10000000"), None, 1);
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        assert!(n.ready().is_ok());
        assert!(n.reloading().is_ok());
        let n = Notifier::from_vars(Some(OsStr::new("")), None, None, 1);
        assert!(!n.is_enabled());
        let n = Notifier::from_vars(Some(OsStr::new("relative/path")), None, None, 1);
        assert!(!n.is_enabled());
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        let sock = Some(OsStr::new("/run/systemd/notify"));
        let n = Notifier::from_vars(sock, Some("30000000"), None, 42);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        let n = Notifier::from_vars(sock, Some("30000000"), Some("42"), 42);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
    }

    #[test]
    fn watchdog_for_another_pid_or_garbage_is_ignored() {
        let sock = Some(OsStr::new("/run/systemd/notify"));
        assert_eq!(
            Notifier::from_vars(sock, Some("30000000"), Some("41"), 42).watchdog_interval(),
            None
        );
        for bad in ["", "0", "-5", "ten", "1.5"] {
            assert_eq!(
                Notifier::from_vars(sock, Some(bad), None, 42).watchdog_interval(),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn abstract_and_path_targets() {
        assert_eq!(
            parse_target(OsStr::new("@calld/notify")),
            Some(Target::Abstract(b"calld/notify".to_vec()))
        );
        assert_eq!(
            parse_target(OsStr::new("/run/x")),
            Some(Target::Path(PathBuf::from("/run/x")))
        );
    }

    #[test]
    fn messages_are_newline_terminated_lines() {
        assert_eq!(
            format_message(&[NotifyState::Reloading, NotifyState::MonotonicUsec(12)]),
            "RELOADING=1\nMONOTONIC_USEC=12\n"
        );
    }
}
