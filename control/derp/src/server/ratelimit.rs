//! The optional per-client receive rate limit: a token bucket over frame bytes, as upstream's
//! `PerClientRateLimitBytesPerSec`. Reading pauses instead of dropping, so TCP flow control
//! slows the sender down; mesh peers are exempt.

use std::time::{Duration, Instant};

const NANOS: u128 = 1_000_000_000;

/// A client receive limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate in frame bytes per second (must be above zero to limit anything).
    pub bytes_per_second: u64,
    /// Bucket size in bytes; a frame costs at most this much (larger frames are clamped, as
    /// upstream does, so they pass after a full refill).
    pub burst: u64,
}

/// Tokens are kept in byte-nanoseconds so that frequent small refills lose nothing.
#[derive(Debug, Clone)]
pub(super) struct TokenBucket {
    limit: RateLimit,
    scaled: u128,
    at: Instant,
}

impl TokenBucket {
    pub(super) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            scaled: u128::from(limit.burst) * NANOS,
            at: now,
        }
    }

    /// Takes the cost of a frame of `len` bytes, or says when it can be afforded.
    pub(super) fn take(&mut self, now: Instant, len: usize) -> Result<(), Instant> {
        let rate = u128::from(self.limit.bytes_per_second);
        let cap = u128::from(self.limit.burst) * NANOS;
        if now > self.at {
            let elapsed = now.duration_since(self.at).as_nanos();
            self.scaled = self
                .scaled
                .saturating_add(elapsed.saturating_mul(rate))
                .min(cap);
            self.at = now;
        }
        let cost = (len as u128).min(u128::from(self.limit.burst)) * NANOS;
        if self.scaled >= cost {
            self.scaled -= cost;
            return Ok(());
        }
        let missing = cost - self.scaled;
        let wait_nanos = missing.div_ceil(rate.max(1));
        let wait = Duration::from_nanos(u64::try_from(wait_nanos).unwrap_or(u64::MAX));
        Err(now + wait)
    }
}
