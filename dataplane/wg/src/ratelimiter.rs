//! Per-source token buckets for handshake messages under load.
//!
//! The model is the kernel module's `ratelimiter.c`: each source (an IPv4 address, or an IPv6
//! /64, since one host usually owns a whole /64) may send 20 handshake messages per second with
//! a burst of 5. Entries idle for a second are collected, and the table is bounded: when it is
//! full, new sources are refused rather than letting a spoofed flood grow memory.
//!
//! Only consulted while the device is under load and only for messages whose `mac2` proved the
//! source address, so a spoofer cannot exhaust a real peer's bucket.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshake messages allowed per second per source.
pub const PACKETS_PER_SECOND: u64 = 20;
/// Burst allowed per source.
pub const PACKETS_BURST: u64 = 5;
const PACKET_COST_NS: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const TOKEN_MAX_NS: u64 = PACKET_COST_NS * PACKETS_BURST;
/// Most sources tracked at once.
pub const MAX_ENTRIES: usize = 8192;
const IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    last: Instant,
    tokens_ns: u64,
}

/// The table of buckets. See the module doc.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: BTreeMap<[u8; 16], Bucket>,
    last_gc: Option<Instant>,
}

fn source_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&v4.octets());
            k[15] = 4;
            k
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => source_key(IpAddr::V4(v4)),
            None => {
                let mut k = v6.octets();
                k[8..].fill(0);
                k[15] = 6;
                k
            }
        },
    }
}

impl RateLimiter {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether one more handshake message from `ip` is allowed at `now`.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.collect(now);
        let key = source_key(ip);
        if let Some(b) = self.buckets.get_mut(&key) {
            let elapsed =
                u64::try_from(now.saturating_duration_since(b.last).as_nanos()).unwrap_or(u64::MAX);
            b.last = now;
            b.tokens_ns = b.tokens_ns.saturating_add(elapsed).min(TOKEN_MAX_NS);
            if b.tokens_ns >= PACKET_COST_NS {
                b.tokens_ns -= PACKET_COST_NS;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= MAX_ENTRIES {
            return false;
        }
        self.buckets.insert(
            key,
            Bucket {
                last: now,
                tokens_ns: TOKEN_MAX_NS - PACKET_COST_NS,
            },
        );
        true
    }

    /// Drops buckets idle for over a second (at most once a second).
    fn collect(&mut self, now: Instant) {
        if self
            .last_gc
            .is_some_and(|t| now.saturating_duration_since(t) < IDLE)
        {
            return;
        }
        self.last_gc = Some(now);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
    }

    /// Number of tracked sources.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests pick an arbitrary base instant; only offsets matter.
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..10).filter(|_| rl.allow(ip, t0)).count();
        assert_eq!(allowed as u64, PACKETS_BURST);
        // 50 ms later one more token.
        let t1 = t0 + Duration::from_millis(50);
        assert!(rl.allow(ip, t1));
        assert!(!rl.allow(ip, t1));
        // Over a second at an offered 1000/s only about 20 pass.
        let mut passed = 0;
        for i in 0..1000u64 {
            if rl.allow(ip, t1 + Duration::from_millis(i)) {
                passed += 1;
            }
        }
        assert!((19..=21).contains(&passed), "passed {passed}");
    }

    #[test]
    fn sources_are_independent_and_v6_grouped_by_64() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new();
        for _ in 0..PACKETS_BURST {
            assert!(rl.allow("2001:db8::1".parse().unwrap(), t0));
        }
        assert!(
            !rl.allow("2001:db8::2".parse().unwrap(), t0),
            "same /64 shares a bucket"
        );
        assert!(rl.allow("2001:db8:0:1::1".parse().unwrap(), t0));
        assert!(rl.allow("192.0.2.9".parse().unwrap(), t0));
    }

    #[test]
    fn table_is_bounded_and_collected() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new();
        for i in 0..(MAX_ENTRIES as u32 + 100) {
            let _ = rl.allow(IpAddr::V4(i.into()), t0);
        }
        assert_eq!(rl.len(), MAX_ENTRIES);
        assert!(!rl.allow("203.0.113.1".parse().unwrap(), t0));
        assert!(rl.allow("203.0.113.1".parse().unwrap(), t0 + Duration::from_secs(2)));
        assert_eq!(rl.len(), 1);
    }
}
