//! The daemon's clock: the system time, optionally shifted for end-to-end
//! tests by `CALLD_TEST_CLOCK_OFFSET` (a signed duration such as `-190s`),
//! read once at start. With it a test can stop the daemon "three cron times
//! ago" without waiting three minutes. Not for production use: it is logged
//! loudly when set.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};

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

/// How far the shared ledger's clock is ahead of this machine's, in
/// microseconds (replicas, docs/replicas.md): every replica times its
/// decisions by the database's clock, so a replica whose own clock is
/// wrong places nothing early or late. 0 for a single daemon.
static STORE_OFFSET_US: AtomicI64 = AtomicI64::new(0);

/// Sets the store clock's offset from a reading: the store said `store`
/// between the local times `before` and `after` (the midpoint is taken).
pub fn set_store_reading(before: Timestamp, store: Timestamp, after: Timestamp) {
    let mid = before.as_microsecond() / 2 + after.as_microsecond() / 2;
    STORE_OFFSET_US.store(store.as_microsecond() - mid, Ordering::Relaxed);
}

/// The store clock's offset last measured (zero for a single daemon).
pub fn store_offset() -> SignedDuration {
    SignedDuration::from_micros(STORE_OFFSET_US.load(Ordering::Relaxed))
}

/// This machine's clock, shifted only by the test offset (for a reading
/// of the store's clock).
pub fn local_now() -> Timestamp {
    Timestamp::now()
        .checked_add(offset())
        .unwrap_or_else(|_| Timestamp::now())
}

/// Now, as the daemon sees it: the store's clock when replicas share one.
pub fn now() -> Timestamp {
    let local = local_now();
    local.checked_add(store_offset()).unwrap_or(local)
}
