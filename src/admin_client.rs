//! The CLI's side of the admin endpoint: `status --admin`, `history
//! --admin`, `diff --admin`, `trigger` and `retry` talk to a running daemon
//! through these two blocking calls (a CLI command makes one or two
//! requests, so each runs on a small current-thread runtime).

use std::time::Duration;

use serde_json::Value as Json;

/// `127.0.0.1:9464` or `http://host:9464/` → `http://host:9464`.
pub fn base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// GET `url` → (status, body), with a 10 s timeout.
pub fn get(url: &str) -> Result<(u16, String), String> {
    send(url, None, Duration::from_secs(10))
}

/// POST `body` as JSON to `url` → (status, the JSON answer), with a 30 s
/// timeout.
pub fn post_json(url: &str, body: &Json) -> Result<(u16, Json), String> {
    let (status, text) = send(url, Some(body), Duration::from_secs(30))
        .map_err(|e| format!("{e} (is the daemon running?)"))?;
    let doc =
        serde_json::from_str(&text).map_err(|e| format!("{url}: HTTP {status}, not JSON: {e}"))?;
    Ok((status, doc))
}

fn send(url: &str, body: Option<&Json>, timeout: Duration) -> Result<(u16, String), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let request = match body {
            Some(b) => client.post(url).json(b),
            None => client.get(url),
        };
        let resp = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok((status, text))
    })
}

#[cfg(test)]
mod tests {
    use super::base_url;

    #[test]
    fn base_urls() {
        assert_eq!(base_url("127.0.0.1:9464"), "http://127.0.0.1:9464");
        assert_eq!(base_url(" http://h:1/ "), "http://h:1");
        assert_eq!(base_url("https://h"), "https://h");
    }
}
