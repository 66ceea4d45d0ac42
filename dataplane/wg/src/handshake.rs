//! The Noise_IKpsk2 handshake: building and consuming initiations and responses.
//!
//! This module is only the cryptographic transcript. Which peer a message belongs to, whether it
//! is a replay or a flood, when to send, and what to do with the resulting keys is decided by
//! [`crate::peer`] and [`crate::device`]; MACs and cookies are in [`crate::cookie`]. Keeping the
//! transcript pure makes it testable against recorded messages from other implementations.
//!
//! Consuming an initiation is split in two, as in every implementation: the first half needs
//! only the local static key and reveals the initiator's static key (so the device can find the
//! peer); the second half needs that peer's precomputed static-static DH and its preshared key.
//!
//! Ephemeral keys and timestamps are arguments, never drawn here: randomness and time are the
//! caller's inputs.

use std::sync::OnceLock;

use weft_keys::{PresharedKey, PrivateKey, PublicKey};
use zeroize::Zeroize;

use crate::crypto::{self, Secret};
use crate::messages::{
    field_mut, init, resp, Initiation, Response, INITIATION_LEN, RESPONSE_LEN, TYPE_INITIATION,
    TYPE_RESPONSE,
};

/// The Noise protocol name WireGuard hashes first.
const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// WireGuard's prologue identifier.
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// Why a handshake message was refused. Callers count these and drop the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// An AEAD field did not authenticate (wrong keys, or tampering).
    #[error("handshake message failed to decrypt")]
    DecryptFailed,
    /// A Diffie-Hellman result was all zeros (a low-order public key).
    #[error("low-order public key")]
    LowOrderKey,
    /// The initiation's timestamp is not newer than the last accepted one from this peer.
    #[error("replayed initiation timestamp")]
    ReplayedTimestamp,
    /// Initiations from this peer arrive faster than 50 per second.
    #[error("initiation flood from peer")]
    Flood,
    /// A response arrived but no initiation of ours is outstanding for its receiver index.
    #[error("unexpected handshake response")]
    UnexpectedResponse,
    /// No local private key is configured.
    #[error("no private key configured")]
    NoPrivateKey,
}

/// C₀ = HASH(CONSTRUCTION) and H₀ = HASH(C₀ ‖ IDENTIFIER): the same for every handshake.
fn initial_chain() -> &'static ([u8; 32], [u8; 32]) {
    static INIT: OnceLock<([u8; 32], [u8; 32])> = OnceLock::new();
    INIT.get_or_init(|| {
        let ck = crypto::hash(&[CONSTRUCTION]);
        let h = crypto::hash(&[&ck, IDENTIFIER]);
        (ck, h)
    })
}

/// Transport keys derived at the end of a handshake, from the local side's point of view.
#[derive(Debug)]
pub(crate) struct SessionKeys {
    pub(crate) send: Secret,
    pub(crate) recv: Secret,
}

/// What an initiator keeps between sending an initiation and receiving the response.
#[derive(Debug)]
pub(crate) struct InitiatorState {
    pub(crate) local_index: u32,
    ck: Secret,
    h: [u8; 32],
    ephemeral: Secret,
}

impl Drop for InitiatorState {
    fn drop(&mut self) {
        self.h.zeroize();
    }
}

/// The first half of a consumed initiation: the transcript so far and what it revealed.
#[derive(Debug)]
pub(crate) struct HalfConsumed {
    /// The initiator's static public key, revealed by decryption.
    pub(crate) initiator: PublicKey,
    sender: u32,
    ephemeral: [u8; 32],
    encrypted_timestamp: [u8; init::TIMESTAMP_LEN],
    ck: Secret,
    h: [u8; 32],
}

/// A fully consumed initiation, ready for a response.
#[derive(Debug)]
pub(crate) struct ConsumedInitiation {
    pub(crate) remote_index: u32,
    pub(crate) timestamp: [u8; 12],
    remote_ephemeral: [u8; 32],
    ck: Secret,
    h: [u8; 32],
}

/// The local static identity with the values derived from it once.
#[derive(Debug, Clone)]
pub(crate) struct StaticIdentity {
    pub(crate) private: PrivateKey,
    pub(crate) public: PublicKey,
}

impl StaticIdentity {
    pub(crate) fn new(private: PrivateKey) -> Self {
        let public = private.public_key();
        Self { private, public }
    }

    /// DH(local static, remote static), precomputed per peer as every implementation does.
    /// `None` when the peer's key is low-order: such a peer can never complete a handshake.
    pub(crate) fn static_static(&self, remote: &PublicKey) -> Option<Secret> {
        crypto::dh(self.private.as_bytes(), remote.as_bytes())
    }
}

/// Writes an initiation (without MACs) to `out` and returns the state to keep.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_initiation(
    local: &StaticIdentity,
    remote: &PublicKey,
    static_static: &Secret,
    local_index: u32,
    ephemeral_private: [u8; 32],
    timestamp: [u8; 12],
    out: &mut [u8; INITIATION_LEN],
) -> Result<InitiatorState, HandshakeError> {
    let (ck0, h0) = initial_chain();
    let mut h = crypto::hash(&[h0, remote.as_bytes()]);
    let ephemeral = Secret(ephemeral_private);
    let e_pub = crypto::public_key(&ephemeral.0);

    let ck = crypto::kdf1(ck0, &e_pub);
    h = crypto::hash(&[&h, &e_pub]);

    let es = crypto::dh(&ephemeral.0, remote.as_bytes()).ok_or(HandshakeError::LowOrderKey)?;
    let (ck, k) = crypto::kdf2(&ck.0, &es.0);
    let mut enc_static = [0u8; init::STATIC_LEN];
    crypto::seal_fixed(&k.0, local.public.as_bytes(), &h, &mut enc_static);
    h = crypto::hash(&[&h, &enc_static]);

    let (ck, k) = crypto::kdf2(&ck.0, &static_static.0);
    let mut enc_ts = [0u8; init::TIMESTAMP_LEN];
    crypto::seal_fixed(&k.0, &timestamp, &h, &mut enc_ts);
    h = crypto::hash(&[&h, &enc_ts]);

    *out = [0; INITIATION_LEN];
    *field_mut::<0, 4, INITIATION_LEN>(out) = u32::from(TYPE_INITIATION).to_le_bytes();
    *field_mut::<{ init::SENDER }, 4, INITIATION_LEN>(out) = local_index.to_le_bytes();
    *field_mut::<{ init::EPHEMERAL }, 32, INITIATION_LEN>(out) = e_pub;
    *field_mut::<{ init::STATIC }, { init::STATIC_LEN }, INITIATION_LEN>(out) = enc_static;
    *field_mut::<{ init::TIMESTAMP }, { init::TIMESTAMP_LEN }, INITIATION_LEN>(out) = enc_ts;

    Ok(InitiatorState {
        local_index,
        ck,
        h,
        ephemeral,
    })
}

/// The first half of consuming an initiation: decrypts the initiator's static key.
pub(crate) fn consume_initiation_begin(
    local: &StaticIdentity,
    msg: &Initiation<'_>,
) -> Result<HalfConsumed, HandshakeError> {
    let (ck0, h0) = initial_chain();
    let mut h = crypto::hash(&[h0, local.public.as_bytes()]);
    let e_pub = *msg.ephemeral();
    let ck = crypto::kdf1(ck0, &e_pub);
    h = crypto::hash(&[&h, &e_pub]);

    let es = crypto::dh(local.private.as_bytes(), &e_pub).ok_or(HandshakeError::LowOrderKey)?;
    let (ck, k) = crypto::kdf2(&ck.0, &es.0);
    let initiator: [u8; 32] = crypto::open_fixed(&k.0, msg.encrypted_static(), &h)
        .map_err(|_| HandshakeError::DecryptFailed)?;
    h = crypto::hash(&[&h, msg.encrypted_static()]);

    Ok(HalfConsumed {
        initiator: PublicKey::from_bytes(initiator),
        sender: msg.sender(),
        ephemeral: e_pub,
        encrypted_timestamp: *msg.encrypted_timestamp(),
        ck,
        h,
    })
}

/// The second half: decrypts the timestamp with the peer's static-static secret. Replay and
/// flood checks on the timestamp are the caller's (they need per-peer history and time).
pub(crate) fn consume_initiation_finish(
    half: HalfConsumed,
    static_static: &Secret,
) -> Result<ConsumedInitiation, HandshakeError> {
    let (ck, k) = crypto::kdf2(&half.ck.0, &static_static.0);
    let timestamp: [u8; 12] = crypto::open_fixed(&k.0, &half.encrypted_timestamp, &half.h)
        .map_err(|_| HandshakeError::DecryptFailed)?;
    let h = crypto::hash(&[&half.h, &half.encrypted_timestamp]);
    Ok(ConsumedInitiation {
        remote_index: half.sender,
        timestamp,
        remote_ephemeral: half.ephemeral,
        ck,
        h,
    })
}

/// Writes a response (without MACs) to a consumed initiation and derives the session keys.
pub(crate) fn create_response(
    consumed: ConsumedInitiation,
    initiator: &PublicKey,
    psk: &PresharedKey,
    local_index: u32,
    ephemeral_private: [u8; 32],
    out: &mut [u8; RESPONSE_LEN],
) -> Result<SessionKeys, HandshakeError> {
    let ephemeral = Secret(ephemeral_private);
    let e_pub = crypto::public_key(&ephemeral.0);
    let ck = crypto::kdf1(&consumed.ck.0, &e_pub);
    let mut h = crypto::hash(&[&consumed.h, &e_pub]);

    let ee =
        crypto::dh(&ephemeral.0, &consumed.remote_ephemeral).ok_or(HandshakeError::LowOrderKey)?;
    let ck = crypto::kdf1(&ck.0, &ee.0);
    let se = crypto::dh(&ephemeral.0, initiator.as_bytes()).ok_or(HandshakeError::LowOrderKey)?;
    let ck = crypto::kdf1(&ck.0, &se.0);

    let (ck, tau, k) = crypto::kdf3(&ck.0, psk.as_bytes());
    h = crypto::hash(&[&h, &tau.0]);
    let mut empty = [0u8; 16];
    crypto::seal_fixed::<0, 16>(&k.0, &[], &h, &mut empty);
    h.zeroize();

    *out = [0; RESPONSE_LEN];
    *field_mut::<0, 4, RESPONSE_LEN>(out) = u32::from(TYPE_RESPONSE).to_le_bytes();
    *field_mut::<{ resp::SENDER }, 4, RESPONSE_LEN>(out) = local_index.to_le_bytes();
    *field_mut::<{ resp::RECEIVER }, 4, RESPONSE_LEN>(out) = consumed.remote_index.to_le_bytes();
    *field_mut::<{ resp::EPHEMERAL }, 32, RESPONSE_LEN>(out) = e_pub;
    *field_mut::<{ resp::EMPTY }, 16, RESPONSE_LEN>(out) = empty;

    // The responder receives with the first key and sends with the second.
    let (t1, t2) = crypto::kdf2(&ck.0, &[]);
    Ok(SessionKeys { send: t2, recv: t1 })
}

/// Consumes a response to our initiation and derives the session keys.
pub(crate) fn consume_response(
    state: &InitiatorState,
    local: &StaticIdentity,
    psk: &PresharedKey,
    msg: &Response<'_>,
) -> Result<SessionKeys, HandshakeError> {
    if msg.receiver() != state.local_index {
        return Err(HandshakeError::UnexpectedResponse);
    }
    let e_pub = *msg.ephemeral();
    let ck = crypto::kdf1(&state.ck.0, &e_pub);
    let mut h = crypto::hash(&[&state.h, &e_pub]);
    let ee = crypto::dh(&state.ephemeral.0, &e_pub).ok_or(HandshakeError::LowOrderKey)?;
    let ck = crypto::kdf1(&ck.0, &ee.0);
    let se = crypto::dh(local.private.as_bytes(), &e_pub).ok_or(HandshakeError::LowOrderKey)?;
    let ck = crypto::kdf1(&ck.0, &se.0);
    let (ck, tau, k) = crypto::kdf3(&ck.0, psk.as_bytes());
    h = crypto::hash(&[&h, &tau.0]);
    let _: [u8; 0] = crypto::open_fixed(&k.0, msg.encrypted_nothing(), &h)
        .map_err(|_| HandshakeError::DecryptFailed)?;
    h.zeroize();
    let (t1, t2) = crypto::kdf2(&ck.0, &[]);
    Ok(SessionKeys { send: t1, recv: t2 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Message;

    fn identity(seed: u8) -> StaticIdentity {
        StaticIdentity::new(PrivateKey::from_bytes([seed; 32]))
    }

    fn run(psk_i: [u8; 32], psk_r: [u8; 32]) -> Result<(SessionKeys, SessionKeys), HandshakeError> {
        let (a, b) = (identity(1), identity(2));
        let ss_a = a.static_static(&b.public).unwrap();
        let ss_b = b.static_static(&a.public).unwrap();
        let mut init_msg = [0u8; INITIATION_LEN];
        let st = create_initiation(&a, &b.public, &ss_a, 7, [3; 32], [4; 12], &mut init_msg)?;
        let Ok(Message::Initiation(m)) = Message::parse(&init_msg) else {
            panic!()
        };
        let half = consume_initiation_begin(&b, &m)?;
        assert_eq!(half.initiator, a.public);
        let consumed = consume_initiation_finish(half, &ss_b)?;
        assert_eq!(consumed.timestamp, [4; 12]);
        assert_eq!(consumed.remote_index, 7);
        let mut resp_msg = [0u8; RESPONSE_LEN];
        let keys_b = create_response(
            consumed,
            &a.public,
            &PresharedKey::from_bytes(psk_r),
            9,
            [5; 32],
            &mut resp_msg,
        )?;
        let Ok(Message::Response(r)) = Message::parse(&resp_msg) else {
            panic!()
        };
        assert_eq!((r.sender(), r.receiver()), (9, 7));
        let keys_a = consume_response(&st, &a, &PresharedKey::from_bytes(psk_i), &r)?;
        Ok((keys_a, keys_b))
    }

    #[test]
    fn both_sides_derive_mirrored_keys() {
        let (a, b) = run([0; 32], [0; 32]).unwrap();
        assert_eq!(a.send.0, b.recv.0);
        assert_eq!(a.recv.0, b.send.0);
        assert_ne!(a.send.0, a.recv.0);
    }

    #[test]
    fn preshared_key_mismatch_fails() {
        assert_eq!(
            run([1; 32], [2; 32]).err(),
            Some(HandshakeError::DecryptFailed)
        );
        assert!(run([1; 32], [1; 32]).is_ok());
    }

    #[test]
    fn wrong_responder_cannot_read_initiation() {
        let (a, b, c) = (identity(1), identity(2), identity(3));
        let ss = a.static_static(&b.public).unwrap();
        let mut msg = [0u8; INITIATION_LEN];
        create_initiation(&a, &b.public, &ss, 1, [3; 32], [0; 12], &mut msg).unwrap();
        let Ok(Message::Initiation(m)) = Message::parse(&msg) else {
            panic!()
        };
        assert_eq!(
            consume_initiation_begin(&c, &m).err(),
            Some(HandshakeError::DecryptFailed)
        );
    }

    #[test]
    fn tampered_timestamp_fails() {
        let (a, b) = (identity(1), identity(2));
        let ss = a.static_static(&b.public).unwrap();
        let mut msg = [0u8; INITIATION_LEN];
        create_initiation(&a, &b.public, &ss, 1, [3; 32], [0; 12], &mut msg).unwrap();
        msg[init::TIMESTAMP] ^= 1;
        let Ok(Message::Initiation(m)) = Message::parse(&msg) else {
            panic!()
        };
        let half = consume_initiation_begin(&b, &m).unwrap();
        let ss_b = b.static_static(&a.public).unwrap();
        assert_eq!(
            consume_initiation_finish(half, &ss_b).err(),
            Some(HandshakeError::DecryptFailed)
        );
    }

    #[test]
    fn low_order_ephemeral_rejected() {
        let b = identity(2);
        let mut msg = [0u8; INITIATION_LEN];
        msg[0] = 1;
        let Ok(Message::Initiation(m)) = Message::parse(&msg) else {
            panic!()
        };
        assert_eq!(
            consume_initiation_begin(&b, &m).err(),
            Some(HandshakeError::LowOrderKey)
        );
    }
}
