//! The retry rules, as a pure function: they decide whether someone's phone
//! rings twice, so they are tested over every status and error combination.
//!
//! A create-call request has no idempotency key and Graph offers no way to
//! list an app's calls, so a create that *may* have reached Graph is never
//! sent again. It is retried only when Graph says it did not process it (429,
//! or 503 with `Retry-After`), when the connection failed before the request
//! was sent, or once after a 401 with a fresh token. Everything else that is
//! not a success is final: `rejected` (4xx), `failed` (nothing reached Graph,
//! or the throttling outlasted the retries) or `unknown` (it may have).
//!
//! Hang-up and keepAlive are idempotent (a second DELETE or keepAlive does no
//! harm), so for them timeouts, lost connections and every 5xx are retried
//! like throttling.

use serde::Serialize;
use std::time::Duration;

/// Which kind of request is being classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Create call: never re-sent when it may have reached Graph.
    Create,
    /// Hang up, keepAlive: safe to send twice.
    Idempotent,
}

/// What happened to one HTTP attempt, reduced to what the rules need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// An HTTP answer, with its parsed `Retry-After` (None: absent or unreadable).
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// The connection failed before the request was sent (refused, DNS, TLS
    /// handshake, connect timeout): Graph cannot have seen it.
    NotSent,
    /// The request was (or may have been) sent, and no answer came: timeout,
    /// connection reset or closed, unreadable answer.
    MaybeSent,
}

/// The limits of the retry loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries of one request, the first included.
    pub max_attempts: u32,
    /// First backoff step when there is no `Retry-After`.
    pub base_delay: Duration,
    /// Largest single backoff step.
    pub max_delay: Duration,
    /// Sum of all waits of one request; a `Retry-After` that would exceed it
    /// ends the request as `failed` instead of waiting.
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_total_wait: Duration::from_secs(60),
        }
    }
}

/// Where the loop stands when an attempt is classified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Attempts made so far, the one being classified included (≥ 1).
    pub attempts: u32,
    /// Time already spent waiting between attempts.
    pub waited: Duration,
    /// A 401 has already been answered with a fresh token.
    pub token_refreshed: bool,
}

/// The decision for one attempt; also recorded with it in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Disposition {
    /// 2xx.
    Success,
    /// Send again after this wait (throttled, or nothing was sent).
    Retry {
        #[serde(rename = "afterMs", serialize_with = "millis")]
        after: Duration,
    },
    /// 401: get a fresh token and send again at once (once).
    RetryWithNewToken,
    /// Final: Graph refused the request (4xx).
    Rejected,
    /// Final: nothing was processed by Graph, and retrying is over.
    Failed,
    /// Final: Graph may have processed the request; it is not sent again.
    Unknown,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
}

impl Disposition {
    /// Short name for logs and the ledger.
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Success => "success",
            Disposition::Retry { .. } => "retry",
            Disposition::RetryWithNewToken => "retryWithNewToken",
            Disposition::Rejected => "rejected",
            Disposition::Failed => "failed",
            Disposition::Unknown => "unknown",
        }
    }

    /// True when the loop stops here.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            Disposition::Retry { .. } | Disposition::RetryWithNewToken
        )
    }
}

/// The rules. `jitter` is a random number in `[0, 1)` (passed in so that
/// tests are deterministic).
pub fn classify(
    op: Operation,
    observed: Observed,
    state: RetryState,
    policy: &RetryPolicy,
    jitter: f64,
) -> Disposition {
    let retry = |retry_after: Option<Duration>| -> Disposition {
        if state.attempts >= policy.max_attempts {
            return Disposition::Failed;
        }
        let after = retry_after.unwrap_or_else(|| backoff(state.attempts, policy, jitter));
        match state.waited.checked_add(after) {
            Some(total) if total <= policy.max_total_wait => Disposition::Retry { after },
            _ => Disposition::Failed,
        }
    };
    match (op, observed) {
        (_, Observed::Status { status, .. }) if (200..300).contains(&status) => {
            Disposition::Success
        }
        (_, Observed::Status { status: 401, .. }) => {
            if state.token_refreshed {
                Disposition::Rejected
            } else {
                Disposition::RetryWithNewToken
            }
        }
        (
            _,
            Observed::Status {
                status: 429,
                retry_after,
            },
        ) => retry(retry_after),
        // Graph says a 503 with Retry-After was not processed.
        (
            _,
            Observed::Status {
                status: 503,
                retry_after: Some(after),
            },
        ) => retry(Some(after)),
        (_, Observed::NotSent) => retry(None),
        // 1xx/3xx are not expected from Graph (redirects are not followed):
        // a create's fate is then unknown; an idempotent request is refused.
        (Operation::Create, Observed::Status { status, .. }) if !(400..500).contains(&status) => {
            Disposition::Unknown
        }
        (Operation::Create, Observed::MaybeSent) => Disposition::Unknown,
        (Operation::Idempotent, Observed::Status { status, .. }) if status >= 500 => retry(None),
        (Operation::Idempotent, Observed::MaybeSent) => retry(None),
        (_, Observed::Status { .. }) => Disposition::Rejected,
    }
}

/// What a failure is, for the run it hits (see `docs/runs.md`, "Failures").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureClass {
    /// It passes by itself (unreachable, timeout, 5xx, throttled): the run
    /// stays `scheduled` and is tried again with backoff until its deadline.
    Transient,
    /// The environment must change (wrong secret, missing consent, a bad
    /// certificate): treated like a transient failure (an operator fixes
    /// it), and `/readyz` says so.
    Environment,
    /// The request itself is wrong (a 4xx from Graph the body caused).
    Final,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Environment => "environment",
            FailureClass::Final => "final",
        }
    }
}

/// Classifies a failure to get an access token. Nothing reached Graph, so
/// no token failure is ever final for a run.
pub fn classify_auth(e: &super::auth::AuthError) -> FailureClass {
    use super::auth::AuthError;
    match e {
        AuthError::Unreachable(_) => FailureClass::Transient,
        AuthError::Aad { status, error, .. } => {
            if *status >= 500
                || *status == 429
                || *status == 408
                || error == "temporarily_unavailable"
                || error == "server_error"
            {
                FailureClass::Transient
            } else {
                // invalid_client (wrong secret, AADSTS7000215), unauthorized_client,
                // invalid_grant, consent missing (AADSTS65001), unknown tenant...
                FailureClass::Environment
            }
        }
        AuthError::BadResponse { status, .. } => {
            if *status >= 500 || *status == 429 || *status == 408 {
                FailureClass::Transient
            } else {
                FailureClass::Environment
            }
        }
        AuthError::Config(_) | AuthError::Certificate(_) => FailureClass::Environment,
    }
}

/// Classifies the end of a create request that did not place a call:
/// `Rejected` (a 4xx the body caused) is final; `Failed` (Graph processed
/// nothing: throttled, refused connection, no token) is transient;
/// `Unknown` is final too (it may have reached Graph: never re-sent).
pub fn classify_create(disposition: Disposition) -> FailureClass {
    match disposition {
        Disposition::Failed | Disposition::Retry { .. } | Disposition::RetryWithNewToken => {
            FailureClass::Transient
        }
        Disposition::Success | Disposition::Rejected | Disposition::Unknown => FailureClass::Final,
    }
}

/// Exponential backoff with "equal jitter": half the step fixed, half random,
/// so every wait is at least half the step. `attempts` counts from 1.
pub fn backoff(attempts: u32, policy: &RetryPolicy, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let step = policy
        .base_delay
        .saturating_mul(1u32 << exp)
        .min(policy.max_delay);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    step / 2 + step.mul_f64(jitter / 2.0)
}

/// Longest `Retry-After` believed; anything above is clamped (and will then
/// exceed any sane retry budget).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(86_400);

/// Parses a `Retry-After` value: seconds (fractional allowed, as Graph sends)
/// or an HTTP-date, relative to `now`. A date in the past means "now".
/// Anything else (negative, NaN, garbage) is `None`.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = v.parse().ok()?;
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(
            secs.min(RETRY_AFTER_MAX.as_secs_f64()),
        ));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(v)
        .ok()?;
    let secs = at.duration_since(now).as_secs_f64();
    Some(Duration::from_secs_f64(
        secs.clamp(0.0, RETRY_AFTER_MAX.as_secs_f64()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disposition::*;
    use Operation::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_total_wait: Duration::from_secs(10),
        }
    }

    fn first() -> RetryState {
        RetryState {
            attempts: 1,
            ..RetryState::default()
        }
    }

    fn status(status: u16) -> Observed {
        Observed::Status {
            status,
            retry_after: None,
        }
    }

    fn status_ra(status: u16, secs: f64) -> Observed {
        Observed::Status {
            status,
            retry_after: Some(Duration::from_secs_f64(secs)),
        }
    }

    fn c(op: Operation, o: Observed) -> Disposition {
        classify(op, o, first(), &policy(), 0.0)
    }

    #[test]
    fn success_for_every_2xx() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(c(Create, status(s)), Success, "{s}");
            assert_eq!(c(Idempotent, status(s)), Success, "{s}");
            // A Retry-After on a success changes nothing.
            assert_eq!(c(Create, status_ra(s, 1.0)), Success, "{s}");
        }
    }

    #[test]
    fn a_create_that_may_have_reached_graph_is_never_resent() {
        for s in [500, 501, 502, 503, 504, 507, 599] {
            assert_eq!(c(Create, status(s)), Unknown, "{s}");
        }
        // Retry-After on a 5xx other than 503 does not make it safe.
        for s in [500, 502, 504] {
            assert_eq!(c(Create, status_ra(s, 1.0)), Unknown, "{s}");
        }
        assert_eq!(c(Create, Observed::MaybeSent), Unknown);
        // Unexpected 1xx/3xx: unknown too.
        for s in [100, 301, 302, 304, 307] {
            assert_eq!(c(Create, status(s)), Unknown, "{s}");
        }
    }

    #[test]
    fn throttling_is_retried_after_retry_after() {
        for op in [Create, Idempotent] {
            assert_eq!(
                c(op, status_ra(429, 2.5)),
                Retry {
                    after: Duration::from_millis(2500)
                }
            );
            assert_eq!(
                c(op, status_ra(503, 0.25)),
                Retry {
                    after: Duration::from_millis(250)
                }
            );
            // Retry-After: 0 retries at once.
            assert_eq!(
                c(op, status_ra(429, 0.0)),
                Retry {
                    after: Duration::ZERO
                }
            );
        }
    }

    #[test]
    fn throttling_without_retry_after_backs_off() {
        // jitter 0: half the step; attempt 1 step = base.
        assert_eq!(
            c(Create, status(429)),
            Retry {
                after: Duration::from_millis(50)
            }
        );
        let third = RetryState {
            attempts: 3,
            ..first()
        };
        assert_eq!(
            classify(Create, status(429), third, &policy(), 0.999_999),
            Retry {
                after: backoff(3, &policy(), 0.999_999)
            }
        );
        // 503 without Retry-After: a create is unknown, an idempotent request retried.
        assert_eq!(c(Create, status(503)), Unknown);
        assert_eq!(
            c(Idempotent, status(503)),
            Retry {
                after: Duration::from_millis(50)
            }
        );
    }

    #[test]
    fn connect_failures_are_retried_for_every_operation() {
        for op in [Create, Idempotent] {
            assert_eq!(
                c(op, Observed::NotSent),
                Retry {
                    after: Duration::from_millis(50)
                }
            );
        }
    }

    #[test]
    fn retries_end_as_failed_at_the_attempt_limit() {
        let last = RetryState {
            attempts: 5,
            ..first()
        };
        for op in [Create, Idempotent] {
            for o in [
                status(429),
                status_ra(429, 0.1),
                status_ra(503, 0.1),
                Observed::NotSent,
            ] {
                assert_eq!(
                    classify(op, o, last, &policy(), 0.5),
                    Failed,
                    "{op:?} {o:?}"
                );
            }
        }
        assert_eq!(
            classify(Idempotent, status(500), last, &policy(), 0.5),
            Failed
        );
        assert_eq!(
            classify(Idempotent, Observed::MaybeSent, last, &policy(), 0.5),
            Failed
        );
        // The limit does not turn an unknown create into a failure.
        assert_eq!(classify(Create, status(500), last, &policy(), 0.5), Unknown);
    }

    #[test]
    fn retries_end_as_failed_beyond_the_wait_budget() {
        let waited = RetryState {
            attempts: 2,
            waited: Duration::from_secs(9),
            token_refreshed: false,
        };
        assert_eq!(
            classify(Create, status_ra(429, 1.0), waited, &policy(), 0.0),
            Retry {
                after: Duration::from_secs(1)
            }
        );
        assert_eq!(
            classify(Create, status_ra(429, 1.5), waited, &policy(), 0.0),
            Failed
        );
        // A single huge Retry-After is not waited for.
        assert_eq!(c(Create, status_ra(429, 3600.0)), Failed);
        assert_eq!(
            c(
                Create,
                Observed::Status {
                    status: 429,
                    retry_after: Some(Duration::MAX)
                }
            ),
            Failed
        );
    }

    #[test]
    fn unauthorized_gets_one_fresh_token() {
        for op in [Create, Idempotent] {
            assert_eq!(c(op, status(401)), RetryWithNewToken);
            let refreshed = RetryState {
                attempts: 2,
                token_refreshed: true,
                ..first()
            };
            assert_eq!(
                classify(op, status(401), refreshed, &policy(), 0.0),
                Rejected
            );
        }
    }

    #[test]
    fn other_4xx_are_rejected() {
        for s in [400, 403, 404, 405, 408, 409, 410, 413, 415, 422, 499] {
            assert_eq!(c(Create, status(s)), Rejected, "{s}");
            assert_eq!(c(Idempotent, status(s)), Rejected, "{s}");
            assert_eq!(c(Create, status_ra(s, 1.0)), Rejected, "{s}");
        }
    }

    #[test]
    fn idempotent_requests_retry_server_errors_and_lost_answers() {
        for s in [500, 502, 503, 504] {
            assert!(matches!(c(Idempotent, status(s)), Retry { .. }), "{s}");
        }
        assert!(matches!(c(Idempotent, Observed::MaybeSent), Retry { .. }));
        // 3xx for an idempotent request: refused, not retried.
        assert_eq!(c(Idempotent, status(302)), Rejected);
    }

    #[test]
    fn only_retries_are_not_final() {
        assert!(
            !Retry {
                after: Duration::ZERO
            }
            .is_final()
        );
        assert!(!RetryWithNewToken.is_final());
        for d in [Success, Rejected, Failed, Unknown] {
            assert!(d.is_final());
        }
    }

    #[test]
    fn backoff_grows_caps_and_stays_within_jitter_bounds() {
        let p = policy();
        assert_eq!(backoff(1, &p, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(2, &p, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(3, &p, 0.0), Duration::from_millis(200));
        // Capped at max_delay (2s): half fixed.
        assert_eq!(backoff(10, &p, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX, &p, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(0, &p, 0.0), Duration::from_millis(50));
        // Bad jitter values do not panic.
        assert_eq!(backoff(1, &p, f64::NAN), Duration::from_millis(50));
        assert_eq!(backoff(1, &p, 7.0), Duration::from_millis(100));
    }

    #[test]
    fn retry_after_seconds() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1e9999", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("1.2.3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999", now),
            Some(RETRY_AFTER_MAX)
        );
    }

    #[test]
    fn retry_after_http_date() {
        let now: jiff::Timestamp = "2015-10-21T07:28:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Wed, 99 Oct 2015 07:00:00 GMT", now),
            None
        );
    }

    proptest::proptest! {
        /// Whatever happens, a create that may have reached Graph is never retried.
        #[test]
        fn create_never_retries_what_may_have_reached_graph(
            status in 100u16..600,
            ra in proptest::option::of(0u64..100_000),
            attempts in 1u32..10,
            waited in 0u64..100_000,
            refreshed: bool,
            jitter in 0.0f64..1.0,
        ) {
            let retry_after = ra.map(Duration::from_millis);
            let state = RetryState { attempts, waited: Duration::from_millis(waited), token_refreshed: refreshed };
            let d = classify(Create, Observed::Status { status, retry_after }, state, &policy(), jitter);
            if matches!(d, Retry { .. }) {
                proptest::prop_assert!(status == 429 || (status == 503 && retry_after.is_some()));
                proptest::prop_assert!(attempts < policy().max_attempts);
            }
            if d == RetryWithNewToken {
                proptest::prop_assert!(status == 401 && !refreshed);
            }
            if let Retry { after } = d {
                proptest::prop_assert!(state.waited + after <= policy().max_total_wait);
            }
            let d = classify(Create, Observed::MaybeSent, state, &policy(), jitter);
            proptest::prop_assert_eq!(d, Unknown);
        }
    }

    #[test]
    fn token_failures_are_never_final() {
        use crate::graph::auth::AuthError;
        let aad = |status: u16, error: &str| AuthError::Aad {
            status,
            error: error.into(),
            description: "AADSTS7000215: Invalid client secret provided.".into(),
            codes: vec![7000215],
            trace_id: None,
            correlation_id: None,
        };
        for (e, want) in [
            (
                AuthError::Unreachable("refused".into()),
                FailureClass::Transient,
            ),
            (aad(401, "invalid_client"), FailureClass::Environment),
            (aad(400, "invalid_grant"), FailureClass::Environment),
            (aad(400, "unauthorized_client"), FailureClass::Environment),
            (aad(503, "temporarily_unavailable"), FailureClass::Transient),
            (aad(500, "server_error"), FailureClass::Transient),
            (aad(429, "throttled"), FailureClass::Transient),
            (
                AuthError::BadResponse {
                    status: 502,
                    detail: "bad gateway".into(),
                },
                FailureClass::Transient,
            ),
            (
                AuthError::BadResponse {
                    status: 200,
                    detail: "no token".into(),
                },
                FailureClass::Environment,
            ),
            (AuthError::Config("x".into()), FailureClass::Environment),
            (
                AuthError::Certificate("x".into()),
                FailureClass::Environment,
            ),
        ] {
            assert_eq!(classify_auth(&e), want, "{e}");
            assert_ne!(classify_auth(&e), FailureClass::Final);
        }
    }

    #[test]
    fn create_failures() {
        assert_eq!(
            classify_create(Disposition::Failed),
            FailureClass::Transient
        );
        assert_eq!(
            classify_create(Disposition::Retry {
                after: Duration::from_secs(30)
            }),
            FailureClass::Transient
        );
        assert_eq!(classify_create(Disposition::Rejected), FailureClass::Final);
        assert_eq!(classify_create(Disposition::Unknown), FailureClass::Final);
    }
}
