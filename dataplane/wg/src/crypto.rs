//! The primitives WireGuard is built from, with WireGuard's names.
//!
//! HASH is BLAKE2s-256, MAC is keyed BLAKE2s-128, HMAC is HMAC-BLAKE2s, KDF*n* is HKDF built on
//! that HMAC, AEAD is ChaCha20-Poly1305 with a 64-bit little-endian counter nonce, XAEAD is
//! XChaCha20-Poly1305 (cookie replies only). The data path uses `ring`'s ChaCha20-Poly1305,
//! which has SIMD implementations for this CPU (AVX2/AVX-512); the handshake path uses the same
//! AEAD so that one implementation is tested by both. RustCrypto provides BLAKE2s, HMAC,
//! XChaCha20-Poly1305, and `x25519-dalek` the Diffie-Hellman.
//!
//! Every secret intermediate is zeroized when dropped ([`Secret`]).

use blake2::digest::{FixedOutput, KeyInit, Mac as _, Update};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::XChaCha20Poly1305;
use ring::aead;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 32-byte secret (chaining key, symmetric key, DH result), zeroized on drop.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Secret(pub(crate) [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The AEAD failed to authenticate a ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthFailed;

/// HASH(parts[0] ‖ parts[1] ‖ …).
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::default();
    for p in parts {
        Update::update(&mut h, p);
    }
    h.finalize_fixed().into()
}

/// MAC(key, parts): keyed BLAKE2s with a 16-byte output.
pub(crate) fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 16] {
    // A 32-byte key is always a valid BLAKE2s key, so `new_from_slice` cannot fail here; the
    // fallback keeps the function total without a panic path.
    let Ok(mut m) = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key)
    else {
        return [0; 16];
    };
    for p in parts {
        blake2::digest::Mac::update(&mut m, p);
    }
    m.finalize().into_bytes().into()
}

/// HMAC-BLAKE2s(key, parts).
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> Secret {
    let Ok(mut m) = <hmac::SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key) else {
        return Secret::default();
    };
    for p in parts {
        hmac::Mac::update(&mut m, p);
    }
    Secret(m.finalize().into_bytes().into())
}

/// KDF1: the first HKDF output.
pub(crate) fn kdf1(key: &[u8; 32], input: &[u8]) -> Secret {
    let t0 = hmac(key, &[input]);
    hmac(&t0.0, &[&[1]])
}

/// KDF2: the first two HKDF outputs.
pub(crate) fn kdf2(key: &[u8; 32], input: &[u8]) -> (Secret, Secret) {
    let t0 = hmac(key, &[input]);
    let t1 = hmac(&t0.0, &[&[1]]);
    let t2 = hmac(&t0.0, &[&t1.0, &[2]]);
    (t1, t2)
}

/// KDF3: the first three HKDF outputs.
pub(crate) fn kdf3(key: &[u8; 32], input: &[u8]) -> (Secret, Secret, Secret) {
    let t0 = hmac(key, &[input]);
    let t1 = hmac(&t0.0, &[&[1]]);
    let t2 = hmac(&t0.0, &[&t1.0, &[2]]);
    let t3 = hmac(&t0.0, &[&t2.0, &[3]]);
    (t1, t2, t3)
}

/// X25519(private, public). Returns `None` for an all-zero result (a low-order public key),
/// which every WireGuard implementation rejects.
pub(crate) fn dh(private: &[u8; 32], public: &[u8; 32]) -> Option<Secret> {
    let sk = x25519_dalek::StaticSecret::from(*private);
    let shared = sk.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if shared.was_contributory() {
        Some(Secret(shared.to_bytes()))
    } else {
        None
    }
}

/// X25519 base-point multiplication: the public key of `private`.
pub(crate) fn public_key(private: &[u8; 32]) -> [u8; 32] {
    let sk = x25519_dalek::StaticSecret::from(*private);
    x25519_dalek::PublicKey::from(&sk).to_bytes()
}

/// A ChaCha20-Poly1305 key for one direction of a session, or a handshake step.
pub(crate) struct AeadKey(aead::LessSafeKey);

impl AeadKey {
    /// Builds the key. Infallible for 32 bytes.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        // `ring` accepts any 32-byte key for ChaCha20-Poly1305; the error arm is unreachable
        // but handled by falling back to a zero key that can never authenticate real data.
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key)
            .or_else(|_| aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &[0u8; 32]));
        match unbound {
            Ok(k) => Self(aead::LessSafeKey::new(k)),
            Err(_) => unreachable_key(),
        }
    }

    fn nonce(counter: u64) -> aead::Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_le_bytes());
        aead::Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub(crate) fn seal(&self, counter: u64, aad: &[u8], in_out: &mut [u8]) -> [u8; 16] {
        match self
            .0
            .seal_in_place_separate_tag(Self::nonce(counter), aead::Aad::from(aad), in_out)
        {
            Ok(tag) => {
                let mut t = [0u8; 16];
                t.copy_from_slice(tag.as_ref());
                t
            }
            // ring fails only for inputs beyond ChaCha20's 256 GiB limit.
            Err(_) => [0u8; 16],
        }
    }

    /// Decrypts `in_out` (ciphertext followed by the 16-byte tag) in place and returns the
    /// plaintext length.
    pub(crate) fn open(
        &self,
        counter: u64,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<usize, AuthFailed> {
        self.0
            .open_in_place(Self::nonce(counter), aead::Aad::from(aad), in_out)
            .map(|p| p.len())
            .map_err(|_| AuthFailed)
    }
}

#[cold]
#[allow(clippy::panic)]
fn unreachable_key() -> ! {
    panic!("ring rejected a 32-byte ChaCha20-Poly1305 key")
}

/// AEAD(key, 0, plaintext, aad) for the handshake: fixed-size in, fixed-size out.
pub(crate) fn seal_fixed<const N: usize, const M: usize>(
    key: &[u8; 32],
    plaintext: &[u8; N],
    aad: &[u8],
    out: &mut [u8; M],
) {
    const { assert!(M == N + 16) };
    let (body, tag) = out.split_at_mut(N);
    body.copy_from_slice(plaintext);
    let t = AeadKey::new(key).seal(0, aad, body);
    tag.copy_from_slice(&t);
}

/// Opens a fixed-size handshake ciphertext.
pub(crate) fn open_fixed<const N: usize, const M: usize>(
    key: &[u8; 32],
    ciphertext: &[u8; M],
    aad: &[u8],
) -> Result<[u8; N], AuthFailed> {
    const { assert!(M == N + 16) };
    let mut buf = *ciphertext;
    let len = AeadKey::new(key).open(0, aad, &mut buf)?;
    let mut out = [0u8; N];
    match buf.get(..len) {
        Some(p) if len == N => out.copy_from_slice(p),
        _ => return Err(AuthFailed),
    }
    buf.zeroize();
    Ok(out)
}

/// XAEAD seal of a 16-byte cookie: 32 bytes of ciphertext and tag.
pub(crate) fn xseal_cookie(
    key: &[u8; 32],
    nonce: &[u8; 24],
    cookie: &[u8; 16],
    aad: &[u8],
) -> [u8; 32] {
    let cipher = <XChaCha20Poly1305 as KeyInit>::new(key.into());
    let mut out = [0u8; 32];
    let (body, tag_out) = out.split_at_mut(16);
    body.copy_from_slice(cookie);
    if let Ok(tag) = cipher.encrypt_in_place_detached(nonce.into(), aad, body) {
        tag_out.copy_from_slice(&tag);
    }
    out
}

/// XAEAD open of a cookie.
pub(crate) fn xopen_cookie(
    key: &[u8; 32],
    nonce: &[u8; 24],
    sealed: &[u8; 32],
    aad: &[u8],
) -> Result<[u8; 16], AuthFailed> {
    let cipher = <XChaCha20Poly1305 as KeyInit>::new(key.into());
    let (body, tag) = sealed.split_at(16);
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(body);
    cipher
        .decrypt_in_place_detached(nonce.into(), aad, &mut cookie, tag.into())
        .map_err(|_| AuthFailed)?;
    Ok(cookie)
}

/// TAI64N for a time since the Unix epoch: 8 bytes big-endian `2^62 + 10 + seconds`, then
/// 4 bytes big-endian nanoseconds. The low 24 bits of the nanoseconds are cleared, as
/// wireguard-go does, so the timestamp says less about the host's clock.
pub(crate) fn tai64n(since_epoch: std::time::Duration) -> [u8; 12] {
    let secs = 0x4000_0000_0000_000a_u64.wrapping_add(since_epoch.as_secs());
    let nanos = since_epoch.subsec_nanos() & !0x00ff_ffff;
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&secs.to_be_bytes());
    out[8..].copy_from_slice(&nanos.to_be_bytes());
    out
}

#[cfg(test)]
#[path = "crypto_vectors.rs"]
mod vectors;
