//! The daemon's clock: the system time, optionally shifted for end-to-end
//! tests by `CALLD_TEST_CLOCK_OFFSET` (a signed duration such as `-190s`),
//! read once at start. With it a test can stop the daemon "three cron times
//! ago" without waiting three minutes. Not for production use: it is logged
//! loudly when set.

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};

static OFFSET: OnceLock<SignedDuration> = OnceLock::new();

fn offset() -> SignedDuration {
    *OFFSET.get_or_init(|| {
        let Ok(text) = std::env::var("CALLD_TEST_CLOCK_OFFSET") else {
            return SignedDuration::ZERO;
        };
        let (neg, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.trim_start_matches('+')),
        };
        match crate::duration::parse_duration(body).ok().and_then(|d| SignedDuration::try_from(d).ok()) {
            Some(d) => {
                tracing::warn!(offset = %text, "CALLD_TEST_CLOCK_OFFSET is set: the daemon's clock is shifted (tests only)");
                if neg { -d } else { d }
            }
            None => SignedDuration::ZERO,
        }
    })
}

/// Now, as the daemon sees it.
pub fn now() -> Timestamp {
    Timestamp::now()
        .checked_add(offset())
        .unwrap_or_else(|_| Timestamp::now())
}
