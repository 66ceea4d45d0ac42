//! MAC1, MAC2 and cookie replies: WireGuard's DoS defence for the handshake path.
//!
//! Every handshake message carries `mac1`, keyed by the receiver's public key, so a host that
//! does not know our public key cannot make us spend a Diffie-Hellman. Under load the receiver
//! also demands `mac2`, keyed by a *cookie* that it hands out in an encrypted cookie reply; the
//! cookie is a MAC of the sender's address under a secret that rotates every two minutes, so a
//! valid `mac2` proves the sender can receive at the address it claims.
//!
//! [`CookieChecker`] is the receiving side (one per device, keyed by our public key);
//! [`CookieState`] is the sending side (one per peer, keyed by the peer's public key).
//! Times are inputs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_keys::PublicKey;

use crate::crypto;
use crate::messages::{CookieReply, COOKIE_REPLY_LEN, TYPE_COOKIE_REPLY};

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// How long a cookie secret, and a received cookie, stay valid.
pub const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);
/// A received cookie is used only while it is this much younger than [`COOKIE_REFRESH_TIME`],
/// so that it is not used just as the responder rotates its secret (the kernel's latency margin).
const COOKIE_LATENCY: Duration = Duration::from_secs(5);

/// The result of checking a handshake message's MACs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacVerdict {
    /// `mac1` is wrong: not meant for us, or junk. Drop silently.
    Invalid,
    /// `mac1` is right, `mac2` is absent or stale.
    ValidNoCookie,
    /// Both MACs are right.
    ValidWithCookie,
}

/// The cookie bound to a source address: the IP bytes followed by the port in network order.
/// The peer never sees this input; it only needs to be stable on our side.
fn address_bytes(src: &SocketAddr, out: &mut [u8; 18]) -> usize {
    let port = src.port().to_be_bytes();
    match src {
        SocketAddr::V4(a) => {
            out[..4].copy_from_slice(&a.ip().octets());
            out[4..6].copy_from_slice(&port);
            6
        }
        SocketAddr::V6(a) => {
            out[..16].copy_from_slice(&a.ip().octets());
            out[16..18].copy_from_slice(&port);
            18
        }
    }
}

/// Checks MACs on messages to us and makes cookie replies.
#[derive(Debug)]
pub struct CookieChecker {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    secret: [u8; 32],
    secret_born: Option<Instant>,
}

impl CookieChecker {
    /// Creates a checker for messages sent to `local` (our public key).
    pub fn new(local: &PublicKey) -> Self {
        Self {
            mac1_key: crypto::hash(&[LABEL_MAC1, local.as_bytes()]),
            cookie_key: crypto::hash(&[LABEL_COOKIE, local.as_bytes()]),
            secret: [0; 32],
            secret_born: None,
        }
    }

    /// Checks `mac1` and, if asked, `mac2` of a handshake message (`msg` is the whole message;
    /// the MACs are its last 32 bytes).
    pub fn check(
        &self,
        msg: &[u8],
        src: &SocketAddr,
        check_mac2: bool,
        now: Instant,
    ) -> MacVerdict {
        let Some(body_len) = msg.len().checked_sub(32) else {
            return MacVerdict::Invalid;
        };
        let (body, macs) = msg.split_at(body_len);
        let (mac1, mac2) = macs.split_at(16);
        let expected = crypto::mac(&self.mac1_key, &[body]);
        if !constant_time_eq(&expected, mac1) {
            return MacVerdict::Invalid;
        }
        if !check_mac2 {
            return MacVerdict::ValidNoCookie;
        }
        let Some(cookie) = self.current_cookie(src, now) else {
            return MacVerdict::ValidNoCookie;
        };
        let expected = mac16::mac(&cookie, &[body, mac1]);
        if constant_time_eq(&expected, mac2) {
            MacVerdict::ValidWithCookie
        } else {
            MacVerdict::ValidNoCookie
        }
    }

    fn current_cookie(&self, src: &SocketAddr, now: Instant) -> Option<[u8; 16]> {
        let born = self.secret_born?;
        if now.saturating_duration_since(born) >= COOKIE_REFRESH_TIME {
            return None;
        }
        let mut addr = [0u8; 18];
        let n = address_bytes(src, &mut addr);
        Some(crypto::mac(&self.secret, &[addr.get(..n).unwrap_or(&addr)]))
    }

    /// Builds a cookie reply to the handshake message `msg` (whose sender index is
    /// `receiver`), rotating the secret first if it is older than two minutes.
    /// `random` supplies a fresh secret (if one is needed) and the nonce.
    pub fn make_reply(
        &mut self,
        msg: &[u8],
        receiver: u32,
        src: &SocketAddr,
        now: Instant,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> [u8; COOKIE_REPLY_LEN] {
        let fresh = self
            .secret_born
            .is_some_and(|b| now.saturating_duration_since(b) < COOKIE_REFRESH_TIME);
        if !fresh {
            random(&mut self.secret);
            self.secret_born = Some(now);
        }
        let mut out = [0u8; COOKIE_REPLY_LEN];
        let Some(cookie) = self.current_cookie(src, now) else {
            return out;
        };
        let mac1 = msg
            .len()
            .checked_sub(32)
            .and_then(|s| msg.get(s..s + 16))
            .unwrap_or(&[]);
        let mut nonce = [0u8; 24];
        random(&mut nonce);
        let sealed = crypto::xseal_cookie(&self.cookie_key, &nonce, &cookie, mac1);
        out[0] = TYPE_COOKIE_REPLY;
        out[4..8].copy_from_slice(&receiver.to_le_bytes());
        out[8..32].copy_from_slice(&nonce);
        out[32..64].copy_from_slice(&sealed);
        out
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The sending side for one peer: adds MACs and remembers a cookie the peer gave us.
#[derive(Debug)]
pub struct CookieState {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    cookie: Option<([u8; 16], Instant)>,
    last_mac1: Option<[u8; 16]>,
}

impl CookieState {
    /// Creates the state for messages to `remote` (the peer's public key).
    pub fn new(remote: &PublicKey) -> Self {
        Self {
            mac1_key: crypto::hash(&[LABEL_MAC1, remote.as_bytes()]),
            cookie_key: crypto::hash(&[LABEL_COOKIE, remote.as_bytes()]),
            cookie: None,
            last_mac1: None,
        }
    }

    /// Fills in the last 32 bytes of `msg` (mac1, then mac2 if we hold a fresh cookie).
    pub fn add_macs(&mut self, msg: &mut [u8], now: Instant) {
        let Some(body_len) = msg.len().checked_sub(32) else {
            return;
        };
        let (body, macs) = msg.split_at_mut(body_len);
        let (mac1_out, mac2_out) = macs.split_at_mut(16);
        let mac1 = crypto::mac(&self.mac1_key, &[body]);
        mac1_out.copy_from_slice(&mac1);
        self.last_mac1 = Some(mac1);
        let fresh = self.cookie.filter(|(_, got)| {
            now.saturating_duration_since(*got) < COOKIE_REFRESH_TIME - COOKIE_LATENCY
        });
        match fresh {
            Some((cookie, _)) => {
                let mac2 = mac16::mac(&cookie, &[body, &mac1]);
                mac2_out.copy_from_slice(&mac2);
            }
            None => mac2_out.fill(0),
        }
    }

    /// Takes a cookie reply: decrypts it with the `mac1` we last sent as associated data.
    /// Returns whether a cookie was stored.
    pub fn consume_reply(&mut self, reply: &CookieReply<'_>, now: Instant) -> bool {
        let Some(mac1) = self.last_mac1 else {
            return false;
        };
        match crypto::xopen_cookie(
            &self.cookie_key,
            reply.nonce(),
            reply.encrypted_cookie(),
            &mac1,
        ) {
            Ok(cookie) => {
                self.cookie = Some((cookie, now));
                // One reply per sent message: a second reply to the same mac1 is ignored.
                self.last_mac1 = None;
                true
            }
            Err(_) => false,
        }
    }
}

/// `crypto::mac` takes a 32-byte key; mac2 is keyed with the 16-byte cookie itself.
mod mac16 {
    use blake2::digest::{KeyInit, Mac};
    pub(super) fn mac(key: &[u8; 16], parts: &[&[u8]]) -> [u8; 16] {
        let Ok(mut m) =
            <blake2::Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key)
        else {
            return [0; 16];
        };
        for p in parts {
            Mac::update(&mut m, p);
        }
        m.finalize().into_bytes().into()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests pick an arbitrary base instant; only offsets matter.
mod tests {
    use super::*;
    use crate::messages::Message;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mac1_and_cookie_round_trip() {
        let t0 = Instant::now();
        let responder = PublicKey::from_bytes([9; 32]);
        let mut checker = CookieChecker::new(&responder);
        let mut sender = CookieState::new(&responder);
        let src = addr("192.0.2.1:51820");
        let mut msg = [0x11u8; 148];
        sender.add_macs(&mut msg, t0);
        assert_eq!(
            checker.check(&msg, &src, false, t0),
            MacVerdict::ValidNoCookie
        );
        assert_eq!(
            checker.check(&msg, &src, true, t0),
            MacVerdict::ValidNoCookie
        );

        let mut n = 0u8;
        let mut rnd = |b: &mut [u8]| {
            n = n.wrapping_add(1);
            b.fill(n)
        };
        let reply = checker.make_reply(&msg, 77, &src, t0, &mut rnd);
        let Ok(Message::CookieReply(r)) = Message::parse(&reply) else {
            panic!()
        };
        assert_eq!(r.receiver(), 77);
        assert!(sender.consume_reply(&r, t0));

        sender.add_macs(&mut msg, t0);
        assert_eq!(
            checker.check(&msg, &src, true, t0),
            MacVerdict::ValidWithCookie
        );
        // The cookie is bound to the address it was issued for.
        assert_eq!(
            checker.check(&msg, &addr("192.0.2.1:51821"), true, t0),
            MacVerdict::ValidNoCookie
        );
        // The checker's secret expires after two minutes.
        let later = t0 + COOKIE_REFRESH_TIME;
        assert_eq!(
            checker.check(&msg, &src, true, later),
            MacVerdict::ValidNoCookie
        );
        // The sender stops using its cookie before that.
        sender.add_macs(&mut msg, t0 + COOKIE_REFRESH_TIME - COOKIE_LATENCY);
        assert_eq!(&msg[132..], &[0u8; 16]);
    }

    #[test]
    fn wrong_key_or_tamper_is_invalid() {
        let t0 = Instant::now();
        let checker = CookieChecker::new(&PublicKey::from_bytes([9; 32]));
        let mut other = CookieState::new(&PublicKey::from_bytes([8; 32]));
        let mut msg = [0u8; 92];
        other.add_macs(&mut msg, t0);
        assert_eq!(
            checker.check(&msg, &addr("[::1]:1"), false, t0),
            MacVerdict::Invalid
        );
        assert_eq!(
            checker.check(&[0u8; 10], &addr("[::1]:1"), false, t0),
            MacVerdict::Invalid
        );
    }

    #[test]
    fn reply_to_other_message_is_refused() {
        let t0 = Instant::now();
        let responder = PublicKey::from_bytes([9; 32]);
        let mut checker = CookieChecker::new(&responder);
        let mut sender = CookieState::new(&responder);
        let src = addr("10.0.0.1:5");
        let mut msg = [1u8; 148];
        sender.add_macs(&mut msg, t0);
        let mut forged = [2u8; 148];
        CookieState::new(&responder).add_macs(&mut forged, t0);
        let reply = checker.make_reply(&forged, 1, &src, t0, &mut |b| b.fill(3));
        let Ok(Message::CookieReply(r)) = Message::parse(&reply) else {
            panic!()
        };
        assert!(!sender.consume_reply(&r, t0));
    }
}
