//! Reconnect delays: exponential, capped at 5 s, as Tailscale's clients reconnect to DERP
//! (`tailscale-protocol.md` §6.6).
//!
//! No jitter is drawn here (this crate reads no randomness besides the handshake nonce); a
//! caller with many clients dialling one server can add its own.

use std::time::Duration;

/// The cap on a reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Delays between reconnect attempts: `initial`, doubling to [`MAX_BACKOFF`], reset after a
/// connection succeeds.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100))
    }
}

impl Backoff {
    /// Starts at `initial` (at most [`MAX_BACKOFF`]).
    pub fn new(initial: Duration) -> Self {
        let initial = initial.min(MAX_BACKOFF);
        Self {
            initial,
            next: initial,
        }
    }

    /// The delay before the next attempt; each call doubles the following one, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d
    }

    /// Back to the initial delay (call after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(1000));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
