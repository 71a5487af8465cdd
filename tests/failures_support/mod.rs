//! Helpers of the `failures_*` tests: raw loopback HTTP (a GET, a POST of a
//! signed notification), the admin listener in the config, and reading runs.
//! Used with `daemon_support` (the daemon and the emulator) and
//! `lifecycle_support` (the emulator's signing key, to sign notifications).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value as Json;

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); the
/// status and body, or `None` when nothing answered within 30 s.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

pub fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    http(addr, "GET", path, &[], b"")
}

/// POSTs `body` with `token` to the listener at `addr` (path with query).
pub fn post_notification(addr: &str, path: &str, token: &str, body: &Json) -> Option<u16> {
    let bytes = serde_json::to_vec(body).unwrap();
    let auth = format!("Bearer {token}");
    http(
        addr,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &bytes,
    )
    .map(|(s, _)| s)
}

/// `callback.listen` of a daemon_support Env's config.
pub fn callback_addr(public_url: &str) -> String {
    let u = url::Url::parse(public_url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
}

/// The newest run of a history, or None.
pub fn newest(runs: &[Json]) -> Option<&Json> {
    runs.first()
}

/// The call states of a history run, in arrival order.
pub fn states(run: &Json) -> Vec<String> {
    run["callStates"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["state"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The admin config line for a free loopback port, and its address.
pub fn admin_config() -> (String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    (format!("admin: {{ listen: \"{addr}\" }}\n"), addr)
}
