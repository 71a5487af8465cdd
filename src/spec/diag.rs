//! Diagnostics: every error and warning names `file:line:column`, the key
//! path (`targets[1].phone`) and says what to write instead.

use serde::Serialize;
use std::fmt;

use super::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One finding about a spec file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file as it was named to calld (relative to the calls directory,
    /// or the path given on the command line).
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub severity: Severity,
    /// The key path inside the document (`targets[1].phone`); empty for the
    /// file or document as a whole.
    pub path: String,
    /// The spec the finding belongs to, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(
        file: &str,
        pos: Pos,
        severity: Severity,
        path: &str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            severity,
            path: path.to_string(),
            spec: None,
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `path:line:col: error: targets[1].phone: message`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: ",
            self.file,
            self.line,
            self.column,
            self.severity.as_str()
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}
