//! WireGuard's timers, as deadlines on a fake-able clock.
//!
//! The protocol has five per-peer timers (the kernel's `timers.c` is the model):
//!
//! * **retransmit handshake** — REKEY_TIMEOUT plus up to a third of a second of jitter after
//!   sending an initiation with no response; retried until REKEY_ATTEMPT_TIME (18 tries), then
//!   the peer gives up and drops its queued packets;
//! * **send keepalive** — KEEPALIVE_TIMEOUT after receiving data while we sent nothing back, so
//!   the other side knows its packets arrive (passive keepalive);
//! * **new handshake** — KEEPALIVE_TIMEOUT + REKEY_TIMEOUT after sending data that got no
//!   answer: the session may be dead on the other side, so renegotiate;
//! * **zero key material** — 3 × REJECT_AFTER_TIME after the last session was derived, erase
//!   every key;
//! * **persistent keepalive** — the user's interval after any authenticated packet, to keep NAT
//!   mappings open.
//!
//! Each is an `Option<Instant>` deadline. The owner calls `Timers::due` from its timeout
//! handler and reacts to the expired ones; nothing here reads the clock.

use std::time::{Duration, Instant};

/// Start a new handshake after this many messages on a session.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// The initiator starts a new handshake when sending on a session this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// A session this old is never used.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Give up on a handshake after trying this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Interval between handshake retransmissions.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Passive keepalive delay.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshake attempts before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT.
pub const MAX_TIMER_HANDSHAKES: u32 = 18;
/// Exclusive upper bound of the retransmission jitter, in milliseconds (the kernel's HZ/3).
pub const REKEY_TIMEOUT_JITTER_MAX_MS: u64 = 334;
/// Keys are erased this long after the last session was derived.
pub const ZERO_KEYS_AFTER: Duration = Duration::from_secs(180 * 3);
/// The responder ignores initiations from one peer closer together than this (50 per second).
pub const HANDSHAKE_INITIATION_RATE: Duration = Duration::from_millis(20);
/// The initiator starts a handshake from the receive path when its session is this old.
pub const REKEY_ON_RECEIVE_AGE: Duration = Duration::from_secs(180 - 10 - 5);

/// Which timers fired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fired {
    pub(crate) retransmit: bool,
    pub(crate) send_keepalive: bool,
    pub(crate) new_handshake: bool,
    pub(crate) zero_keys: bool,
    pub(crate) persistent_keepalive: bool,
}

/// The deadlines of one peer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Timers {
    pub(crate) retransmit: Option<Instant>,
    pub(crate) send_keepalive: Option<Instant>,
    pub(crate) new_handshake: Option<Instant>,
    pub(crate) zero_keys: Option<Instant>,
    pub(crate) persistent_keepalive: Option<Instant>,
    /// Data arrived while a passive keepalive was already pending: send another after it.
    pub(crate) need_another_keepalive: bool,
    /// Handshake attempts in the current run.
    pub(crate) handshake_attempts: u32,
    /// Persistent keepalive interval; zero means off.
    pub(crate) persistent_interval: u16,
}

fn due(slot: &mut Option<Instant>, now: Instant) -> bool {
    match *slot {
        Some(t) if t <= now => {
            *slot = None;
            true
        }
        _ => false,
    }
}

impl Timers {
    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit,
            self.send_keepalive,
            self.new_handshake,
            self.zero_keys,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Clears and reports the timers that are due.
    pub(crate) fn due(&mut self, now: Instant) -> Fired {
        Fired {
            retransmit: due(&mut self.retransmit, now),
            send_keepalive: due(&mut self.send_keepalive, now),
            new_handshake: due(&mut self.new_handshake, now),
            zero_keys: due(&mut self.zero_keys, now),
            persistent_keepalive: due(&mut self.persistent_keepalive, now),
        }
    }

    /// We sent an initiation.
    pub(crate) fn handshake_initiated(&mut self, now: Instant, jitter: Duration) {
        self.retransmit = Some(now + REKEY_TIMEOUT + jitter);
    }

    /// A handshake completed (response received, or the responder's session confirmed).
    pub(crate) fn handshake_complete(&mut self) {
        self.retransmit = None;
        self.handshake_attempts = 0;
    }

    /// New keys were derived.
    pub(crate) fn session_derived(&mut self, now: Instant) {
        self.zero_keys = Some(now + ZERO_KEYS_AFTER);
    }

    /// We sent a data packet (not a keepalive).
    pub(crate) fn data_sent(&mut self, now: Instant, jitter: Duration) {
        if self.new_handshake.is_none() {
            self.new_handshake = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter);
        }
    }

    /// We received a data packet (not a keepalive).
    pub(crate) fn data_received(&mut self, now: Instant) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        } else {
            self.need_another_keepalive = true;
        }
    }

    /// We sent any authenticated packet (data, keepalive, handshake).
    pub(crate) fn authenticated_sent(&mut self) {
        self.send_keepalive = None;
    }

    /// We received any authenticated packet.
    pub(crate) fn authenticated_received(&mut self) {
        self.new_handshake = None;
    }

    /// An authenticated packet went either way: push the persistent keepalive out.
    pub(crate) fn authenticated_traversal(&mut self, now: Instant) {
        if self.persistent_interval > 0 {
            self.persistent_keepalive =
                Some(now + Duration::from_secs(u64::from(self.persistent_interval)));
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests pick an arbitrary base instant; only offsets matter.
mod tests {
    use super::*;

    #[test]
    fn deadlines_fire_once() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.data_received(t0);
        t.data_received(t0 + Duration::from_secs(1));
        assert!(t.need_another_keepalive);
        assert_eq!(t.next_deadline(), Some(t0 + KEEPALIVE_TIMEOUT));
        assert_eq!(t.due(t0 + Duration::from_secs(9)), Fired::default());
        let f = t.due(t0 + KEEPALIVE_TIMEOUT);
        assert!(f.send_keepalive && !f.retransmit);
        assert_eq!(t.due(t0 + KEEPALIVE_TIMEOUT), Fired::default());
    }

    #[test]
    fn new_handshake_not_pushed_by_more_data() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.data_sent(t0, Duration::ZERO);
        t.data_sent(t0 + Duration::from_secs(3), Duration::ZERO);
        assert_eq!(t.new_handshake, Some(t0 + Duration::from_secs(15)));
        t.authenticated_received();
        assert_eq!(t.new_handshake, None);
    }

    #[test]
    fn persistent_keepalive_only_when_configured() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.authenticated_traversal(t0);
        assert_eq!(t.persistent_keepalive, None);
        t.persistent_interval = 25;
        t.authenticated_traversal(t0);
        assert_eq!(t.persistent_keepalive, Some(t0 + Duration::from_secs(25)));
    }
}
