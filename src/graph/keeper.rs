//! Keeps the access token (and its roles) fresh from a task of its own, so
//! that nothing on the daemon's decision path ever waits for the token
//! endpoint: the decision reads the last known [`TokenHealth`]. A hanging
//! or failing endpoint delays only the requests that need a token.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use super::auth::{AuthError, TokenSource};
use super::retry::{FailureClass, classify_auth};

/// Why no token can be had now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenProblem {
    pub class: FailureClass,
    /// One line, no secret: `invalid_client AADSTS7000215: ...`, `unreachable: ...`.
    pub message: String,
    /// Since when the endpoint has failed this way.
    pub since: Timestamp,
}

impl TokenProblem {
    /// `token endpoint: invalid_client AADSTS7000215 (...) since 10:02:11Z`.
    pub fn describe(&self) -> String {
        let since = self
            .since
            .round(jiff::Unit::Second)
            .unwrap_or(self.since)
            .to_string();
        format!("token endpoint: {} since {since}", self.message)
    }
}

/// What the decision knows about the token, without waiting for anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenHealth {
    /// A usable token is at hand.
    pub ok: bool,
    /// Its roles (`None` while unknown, or in an opaque token).
    pub roles: Option<Vec<String>>,
    /// Set while no token can be had.
    pub problem: Option<TokenProblem>,
    /// At least one answer (or failure) was seen.
    pub checked: bool,
}

impl TokenHealth {
    /// Nothing can be placed: the endpoint failed and no valid token is left.
    pub fn blocked(&self) -> bool {
        !self.ok && self.problem.is_some()
    }
}

/// A short, secret-free summary of a token failure.
pub fn summarize(e: &AuthError) -> String {
    match e {
        AuthError::Aad {
            status,
            error,
            description,
            ..
        } => {
            let code = e.aadsts().unwrap_or_default();
            // Azure AD's description: "AADSTS7000215: Invalid client secret
            // provided. ... Trace ID: ..." → its first sentence.
            let first = description
                .split_once(": ")
                .map(|(_, rest)| rest)
                .unwrap_or(description)
                .split(". ")
                .next()
                .unwrap_or("")
                .trim()
                .trim_end_matches('.');
            let mut out = format!("{error} {code}").trim().to_string();
            if !first.is_empty() {
                out = format!("{out} ({first}, HTTP {status})");
            } else {
                out = format!("{out} (HTTP {status})");
            }
            out
        }
        AuthError::Unreachable(m) => format!("unreachable ({m})"),
        AuthError::BadResponse { status, detail } => format!("HTTP {status}: {detail}"),
        AuthError::Config(m) | AuthError::Certificate(m) => m.clone(),
    }
}

/// The wait after `n` failures in a row: 1 s, 2 s, 4 s, ... at most 30 s.
pub fn failure_backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// The keeper task's handle: kick it to try again now (after SIGHUP).
#[derive(Debug)]
pub struct TokenKeeper {
    health: watch::Receiver<TokenHealth>,
    kick: Notify,
}

impl TokenKeeper {
    /// Starts the task. (Token requests are counted by the token source
    /// itself: [`TokenSource::refresh_counts`].)
    pub fn spawn(tokens: Arc<TokenSource>) -> Arc<TokenKeeper> {
        let (tx, rx) = watch::channel(TokenHealth::default());
        let keeper = Arc::new(TokenKeeper {
            health: rx,
            kick: Notify::new(),
        });
        let k = keeper.clone();
        tokio::spawn(async move { run(tokens, tx, k).await });
        keeper
    }

    /// The last known health.
    pub fn health(&self) -> TokenHealth {
        self.health.borrow().clone()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<TokenHealth> {
        self.health.clone()
    }

    /// Try again now (the configuration may have been fixed).
    pub fn kick(&self) {
        self.kick.notify_one();
    }
}

async fn run(tokens: Arc<TokenSource>, tx: watch::Sender<TokenHealth>, keeper: Arc<TokenKeeper>) {
    let mut failures = 0u32;
    loop {
        let result = tokens.token().await;
        let now = Timestamp::now();
        let wait = match result {
            Ok(t) => {
                // a refresh that failed while the old token is still valid
                let stale = t.refresh_at() <= now;
                let roles = t.roles().map(<[String]>::to_vec);
                tx.send_if_modified(|h| {
                    let new = TokenHealth {
                        ok: true,
                        roles,
                        problem: None,
                        checked: true,
                    };
                    let changed = *h != new;
                    if h.problem.is_some() {
                        tracing::info!("token endpoint: a token was obtained again");
                    }
                    *h = new;
                    changed
                });
                if stale {
                    failures += 1;
                    failure_backoff(failures)
                } else {
                    failures = 0;
                    let until = t.refresh_at().duration_since(now);
                    Duration::try_from(until)
                        .unwrap_or(Duration::ZERO)
                        .max(Duration::from_secs(1))
                }
            }
            Err(e) => {
                let class = classify_auth(&e);
                failures += 1;
                let message = summarize(&e);
                tx.send_if_modified(|h| {
                    let since = match &h.problem {
                        Some(p) if p.message == message => p.since,
                        _ => now,
                    };
                    let new = TokenHealth {
                        ok: false,
                        roles: None,
                        problem: Some(TokenProblem {
                            class,
                            message: message.clone(),
                            since,
                        }),
                        checked: true,
                    };
                    let changed = *h != new;
                    if changed {
                        tracing::warn!(class = class.as_str(), error = %e, "token endpoint: no access token; nothing is placed until one is obtained");
                    }
                    *h = new;
                    changed
                });
                failure_backoff(failures)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = keeper.kick.notified() => { failures = 0; }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_the_code_and_no_secret() {
        let e = AuthError::Aad {
            status: 401,
            error: "invalid_client".into(),
            description: "AADSTS7000215: Invalid client secret provided. Ensure the secret \
                          being sent in the request is the client secret value. Trace ID: x"
                .into(),
            codes: vec![7000215],
            trace_id: None,
            correlation_id: None,
        };
        assert_eq!(
            summarize(&e),
            "invalid_client AADSTS7000215 (Invalid client secret provided, HTTP 401)"
        );
        let p = TokenProblem {
            class: FailureClass::Environment,
            message: summarize(&e),
            since: "2026-12-01T10:02:11.4Z".parse().unwrap(),
        };
        assert_eq!(
            p.describe(),
            "token endpoint: invalid_client AADSTS7000215 (Invalid client secret provided, \
             HTTP 401) since 2026-12-01T10:02:11Z"
        );
    }

    #[test]
    fn backoff_grows_and_stops() {
        assert_eq!(failure_backoff(1), Duration::from_secs(1));
        assert_eq!(failure_backoff(2), Duration::from_secs(2));
        assert_eq!(failure_backoff(6), Duration::from_secs(30));
        assert_eq!(failure_backoff(60), Duration::from_secs(30));
    }

    #[test]
    fn blocked_only_with_a_problem_and_no_token() {
        let mut h = TokenHealth::default();
        assert!(!h.blocked());
        h.problem = Some(TokenProblem {
            class: FailureClass::Transient,
            message: "unreachable".into(),
            since: Timestamp::UNIX_EPOCH,
        });
        assert!(h.blocked());
        h.ok = true;
        assert!(!h.blocked());
    }
}
