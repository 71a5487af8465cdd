//! Graph wire types the client reads: error bodies, the created call, and the
//! record of each HTTP attempt. Parsing here is pure and tolerant: Graph (and
//! whatever proxy sits in front of it) may answer with anything.

use serde::{Deserialize, Serialize};

use super::retry::Disposition;

/// Longest piece of a non-JSON error body kept for the operator.
const RAW_SNIPPET_MAX: usize = 300;

/// Graph's error, from `{"error": {"code", "message", "innerError": {...}}}`.
///
/// Every field is optional: a non-JSON body (an HTML page from a proxy, an
/// empty 503) still gives a `GraphError` with the body's start in `raw`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphError {
    /// `error.code`; communications errors often carry numbers as strings (`"7505"`).
    pub code: Option<String>,
    pub message: Option<String>,
    /// `error.innerError.code`, when Graph nests a more precise one.
    pub inner_code: Option<String>,
    /// The `request-id` header, else `innerError.request-id`.
    pub request_id: Option<String>,
    /// The `client-request-id` we sent (Graph echoes it in `innerError`).
    pub client_request_id: Option<String>,
    /// `innerError.date`.
    pub date: Option<String>,
    /// The start of a body that was not Graph's JSON error format.
    pub raw: Option<String>,
}

impl GraphError {
    /// Parses an error body. Never fails: unknown shapes end up in `raw`.
    pub fn parse(body: &[u8]) -> GraphError {
        #[derive(Deserialize)]
        struct Envelope {
            error: Option<Body>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            code: Option<serde_json::Value>,
            message: Option<serde_json::Value>,
            #[serde(alias = "innererror", alias = "InnerError")]
            inner_error: Option<serde_json::Value>,
        }

        let parsed = serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.error);
        let Some(b) = parsed else {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            return GraphError {
                raw: (!text.is_empty()).then(|| truncate(text, RAW_SNIPPET_MAX)),
                ..GraphError::default()
            };
        };
        let inner = b.inner_error.unwrap_or(serde_json::Value::Null);
        let field = |k: &str| inner.get(k).and_then(scalar_text);
        GraphError {
            code: b.code.as_ref().and_then(scalar_text),
            message: b.message.as_ref().and_then(scalar_text),
            inner_code: field("code"),
            request_id: field("request-id").or_else(|| field("requestId")),
            client_request_id: field("client-request-id").or_else(|| field("clientRequestId")),
            date: field("date"),
            raw: None,
        }
    }

    /// One line for logs and outcomes: `7505: Request authorization tenant mismatch.`
    pub fn summary(&self) -> String {
        match (&self.code, &self.message, &self.raw) {
            (Some(c), Some(m), _) => format!("{c}: {m}"),
            (Some(c), None, _) => c.clone(),
            (None, Some(m), _) => m.clone(),
            (None, None, Some(raw)) => format!("non-JSON body: {raw}"),
            (None, None, None) => "no error body".to_string(),
        }
    }
}

/// A JSON scalar as text: Graph sends codes as strings or numbers.
fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What the client reads from a create-call answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedCall {
    pub id: String,
    pub state: Option<String>,
}

impl CreatedCall {
    /// The call's id and state from a 2xx body; `None` when there is no id.
    pub fn parse(body: &[u8]) -> Option<CreatedCall> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let id = v.get("id")?.as_str()?.trim();
        if id.is_empty() {
            return None;
        }
        Some(CreatedCall {
            id: id.to_string(),
            state: v.get("state").and_then(|s| s.as_str()).map(str::to_string),
        })
    }
}

/// One HTTP request the client made (or tried to make), for the ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub started_at: jiff::Timestamp,
    pub finished_at: jiff::Timestamp,
    /// The HTTP status, when an answer arrived.
    pub status: Option<u16>,
    /// Graph's error code; for failures without an answer, calld's own:
    /// `connect`, `timeout`, `connectionLost`, `token`, `badResponse`.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Graph's `request-id` (header, else error body).
    pub request_id: Option<String>,
    /// The fresh GUID sent as `client-request-id` (also for a request that
    /// never left: it is then simply not known to Graph).
    pub client_request_id: String,
    /// What the client made of this attempt.
    pub disposition: Disposition,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_graphs_error_format() {
        let e = GraphError::parse(
            br#"{"error":{"code":"7505","message":"Request authorization tenant mismatch.",
                "innerError":{"date":"2026-01-01T00:00:00","request-id":"r-1","client-request-id":"c-1"}}}"#,
        );
        assert_eq!(e.code.as_deref(), Some("7505"));
        assert_eq!(
            e.message.as_deref(),
            Some("Request authorization tenant mismatch.")
        );
        assert_eq!(e.request_id.as_deref(), Some("r-1"));
        assert_eq!(e.client_request_id.as_deref(), Some("c-1"));
        assert_eq!(e.date.as_deref(), Some("2026-01-01T00:00:00"));
        assert_eq!(e.raw, None);
        assert_eq!(e.summary(), "7505: Request authorization tenant mismatch.");
    }

    #[test]
    fn numeric_codes_and_nested_inner_codes() {
        let e = GraphError::parse(
            br#"{"error":{"code":7504,"message":"m","innerError":{"code":"x","requestId":"r"}}}"#,
        );
        assert_eq!(e.code.as_deref(), Some("7504"));
        assert_eq!(e.inner_code.as_deref(), Some("x"));
        assert_eq!(e.request_id.as_deref(), Some("r"));
    }

    #[test]
    fn tolerates_non_json_and_odd_json() {
        let e = GraphError::parse(b"<html>Service Unavailable</html>");
        assert_eq!(e.code, None);
        assert_eq!(e.raw.as_deref(), Some("<html>Service Unavailable</html>"));
        assert!(e.summary().contains("Service Unavailable"));

        assert_eq!(GraphError::parse(b"").summary(), "no error body");
        assert_eq!(GraphError::parse(b"   ").raw, None);
        // JSON but not Graph's shape: kept raw.
        let e = GraphError::parse(br#"{"error":"nope"}"#);
        assert_eq!(e.code, None);
        assert!(e.raw.is_some());
        let e = GraphError::parse(br#"[1,2]"#);
        assert_eq!(e.raw.as_deref(), Some("[1,2]"));
        // Invalid UTF-8 does not panic.
        let e = GraphError::parse(&[0xff, 0xfe, b'x']);
        assert!(e.raw.is_some());
    }

    #[test]
    fn long_raw_bodies_are_cut_on_a_char_boundary() {
        let body = "é".repeat(1000);
        let e = GraphError::parse(body.as_bytes());
        let raw = e.raw.unwrap();
        assert!(raw.len() <= RAW_SNIPPET_MAX + '…'.len_utf8());
        assert!(raw.ends_with('…'));
    }

    #[test]
    fn created_call_needs_an_id() {
        let c = CreatedCall::parse(br#"{"id":"abc","state":"establishing"}"#).unwrap();
        assert_eq!(c.id, "abc");
        assert_eq!(c.state.as_deref(), Some("establishing"));
        assert_eq!(CreatedCall::parse(br#"{"state":"establishing"}"#), None);
        assert_eq!(CreatedCall::parse(br#"{"id":""}"#), None);
        assert_eq!(CreatedCall::parse(br#"{"id":5}"#), None);
        assert_eq!(CreatedCall::parse(b"not json"), None);
    }
}
