//! Graph's and Azure AD's error bodies.

use serde_json::{Value, json};

/// An error answered in Graph's format:
/// `{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl GraphError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// 400 `BadRequest`, the code Graph uses for invalid create-call bodies.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 `InvalidAuthenticationToken`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "InvalidAuthenticationToken", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "itemNotFound", message)
    }

    /// The JSON body, with the ids that identify this answer.
    pub fn body(&self, date: &str, request_id: &str, client_request_id: &str) -> Value {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": date,
                    "request-id": request_id,
                    "client-request-id": client_request_id,
                }
            }
        })
    }
}

/// An error answered by the token endpoint in Azure AD's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AadError {
    pub status: u16,
    /// OAuth error: `invalid_client`, `invalid_request`, ...
    pub error: &'static str,
    /// The AADSTS number.
    pub aadsts: u32,
    pub description: String,
}

impl AadError {
    pub fn new(
        status: u16,
        error: &'static str,
        aadsts: u32,
        description: impl Into<String>,
    ) -> Self {
        AadError {
            status,
            error,
            aadsts,
            description: description.into(),
        }
    }

    pub fn body(&self, timestamp: &str, trace_id: &str, correlation_id: &str) -> Value {
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.aadsts, self.description
            ),
            "error_codes": [self.aadsts],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        })
    }
}
