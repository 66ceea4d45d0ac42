//! One transport session (the kernel's "keypair"): two directional keys, the send counter and
//! the receive replay window.
//!
//! Keys are kept as raw bytes in zeroizing storage and turned into an AEAD key for each call:
//! ChaCha20-Poly1305 has no key schedule, so this costs a 32-byte copy, and it lets dropping a
//! session really erase its keys (the "zero key material" timer).

use std::time::Instant;

use crate::crypto::{AeadKey, Secret};
use crate::handshake::SessionKeys;
use crate::messages::{padded_len, write_transport_header, TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::replay::{ReplayWindow, REJECT_AFTER_MESSAGES};
use crate::timers::{REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES};

/// Why a transport message could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The counter was seen before, is too old, or is past the limit.
    Replay,
    /// The AEAD tag did not verify.
    Auth,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) local_index: u32,
    pub(crate) remote_index: u32,
    pub(crate) created: Instant,
    pub(crate) initiator: bool,
    send_key: Secret,
    recv_key: Secret,
    send_counter: u64,
    replay: ReplayWindow,
}

impl Session {
    pub(crate) fn new(
        keys: SessionKeys,
        local_index: u32,
        remote_index: u32,
        initiator: bool,
        now: Instant,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            created: now,
            initiator,
            send_key: keys.send.clone(),
            recv_key: keys.recv.clone(),
            send_counter: 0,
            replay: ReplayWindow::new(),
        }
    }

    /// Whether the session may still send: younger than REJECT_AFTER_TIME and counters left.
    pub(crate) fn can_send(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < REJECT_AFTER_TIME
            && self.send_counter < REJECT_AFTER_MESSAGES
    }

    /// Whether the session may still receive.
    pub(crate) fn can_receive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < REJECT_AFTER_TIME
    }

    /// Whether sending on this session should start a new handshake (kernel `keep_key_fresh`).
    pub(crate) fn wants_rekey_on_send(&self, now: Instant) -> bool {
        self.send_counter > REKEY_AFTER_MESSAGES
            || (self.initiator
                && now.saturating_duration_since(self.created) >= crate::timers::REKEY_AFTER_TIME)
    }

    /// Encrypts in place. `buf` holds the plaintext at `TRANSPORT_HEADER_LEN..` (`len` bytes);
    /// it must have room for padding up to `mtu` and the tag. Returns the message length, or
    /// `None` when the buffer is too small or the counters are used up.
    pub(crate) fn seal(&mut self, buf: &mut [u8], len: usize, mtu: usize) -> Option<usize> {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            return None;
        }
        let padded = padded_len(len, mtu);
        let total = TRANSPORT_HEADER_LEN + padded + TAG_LEN;
        let msg = buf.get_mut(..total)?;
        let (header, rest) = msg.split_first_chunk_mut::<TRANSPORT_HEADER_LEN>()?;
        let (body, tag_out) = rest.split_at_mut(padded);
        body.get_mut(len..)?.fill(0);
        let counter = self.send_counter;
        self.send_counter += 1;
        write_transport_header(header, self.remote_index, counter);
        let tag = AeadKey::new(&self.send_key.0).seal(counter, &[], body);
        tag_out.copy_from_slice(&tag);
        Some(total)
    }

    /// Authenticates and decrypts `payload` (ciphertext and tag) in place; returns the
    /// plaintext length. The replay window is updated only for authentic packets.
    pub(crate) fn open(&mut self, counter: u64, payload: &mut [u8]) -> Result<usize, OpenError> {
        if !self.replay.check(counter) {
            return Err(OpenError::Replay);
        }
        let n = AeadKey::new(&self.recv_key.0)
            .open(counter, &[], payload)
            .map_err(|_| OpenError::Auth)?;
        if !self.replay.accept(counter) {
            return Err(OpenError::Replay);
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests pick an arbitrary base instant; only offsets matter.
mod tests {
    use super::*;

    fn pair(now: Instant) -> (Session, Session) {
        let a = SessionKeys {
            send: Secret([1; 32]),
            recv: Secret([2; 32]),
        };
        let b = SessionKeys {
            send: Secret([2; 32]),
            recv: Secret([1; 32]),
        };
        (
            Session::new(a, 10, 20, true, now),
            Session::new(b, 20, 10, false, now),
        )
    }

    #[test]
    fn seal_open_with_padding_and_replay() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut buf = [0u8; 16 + 48 + 16];
        buf[16..21].copy_from_slice(b"hello");
        let n = a.seal(&mut buf, 5, 1420).unwrap();
        assert_eq!(n, 16 + 16 + 16, "5 bytes pad to 16");
        let msg = buf[..n].to_vec();
        assert_eq!(&msg[4..8], &20u32.to_le_bytes());
        let mut m1 = msg.clone();
        let len = b.open(0, &mut m1[16..]).unwrap();
        assert_eq!(&m1[16..16 + len], b"hello\0\0\0\0\0\0\0\0\0\0\0");
        let mut m2 = msg.clone();
        assert_eq!(b.open(0, &mut m2[16..]), Err(OpenError::Replay));
        let mut m3 = msg;
        m3[20] ^= 1;
        assert_eq!(b.open(1, &mut m3[16..]), Err(OpenError::Auth));
    }

    #[test]
    fn forged_counter_does_not_advance_window() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut buf = [0u8; 64];
        let n = a.seal(&mut buf, 0, 1420).unwrap();
        let mut forged = [0u8; 32];
        assert_eq!(b.open(1 << 40, &mut forged[..]), Err(OpenError::Auth));
        // The genuine counter-0 packet is still accepted: the forgery moved nothing.
        assert_eq!(b.open(0, &mut buf[16..n]), Ok(0));
    }

    #[test]
    fn too_small_buffer_is_refused() {
        let now = Instant::now();
        let (mut a, _) = pair(now);
        let mut buf = [0u8; 40];
        assert_eq!(a.seal(&mut buf, 20, 1420), None);
    }
}
