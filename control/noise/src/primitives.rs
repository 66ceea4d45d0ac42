//! BLAKE2s, HMAC-BLAKE2s HKDF, X25519 and ChaCha20-Poly1305 with the two nonce layouts ts2021
//! uses. Intermediate secrets are zeroized on drop.

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::Blake2s256;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::ChaCha20Poly1305;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// A 32-byte secret (chaining key, cipher key, DH output), zeroized on drop.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Secret(pub(crate) [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// BLAKE2s-256 over the concatenation of `parts`.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::default();
    for p in parts {
        Update::update(&mut h, p);
    }
    h.finalize_fixed().into()
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> Secret {
    let Ok(mut m) = <hmac::SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key) else {
        return Secret::default();
    };
    for p in parts {
        hmac::Mac::update(&mut m, p);
    }
    Secret(hmac::Mac::finalize(m).into_bytes().into())
}

/// Noise's HKDF with two outputs (`MixKey`, `Split`).
pub(crate) fn hkdf2(chaining_key: &[u8; 32], input: &[u8]) -> (Secret, Secret) {
    let prk = hmac(chaining_key, &[input]);
    let t1 = hmac(&prk.0, &[&[1]]);
    let t2 = hmac(&prk.0, &[&t1.0, &[2]]);
    (t1, t2)
}

/// X25519; a non-contributory (all-zero) result is refused.
pub(crate) fn dh(private: &[u8; 32], public: &[u8; 32]) -> Result<Secret, Error> {
    let sk = x25519_dalek::StaticSecret::from(*private);
    let shared = sk.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if shared.was_contributory() {
        Ok(Secret(shared.to_bytes()))
    } else {
        Err(Error::LowOrderKey)
    }
}

/// The public key of `private`.
pub(crate) fn public_key(private: &[u8; 32]) -> [u8; 32] {
    let sk = x25519_dalek::StaticSecret::from(*private);
    x25519_dalek::PublicKey::from(&sk).to_bytes()
}

/// A 96-bit nonce with `counter` big-endian in the last 8 bytes: ts2021's record nonce. For
/// counter 0 (every handshake message) it equals Noise's little-endian layout.
pub(crate) fn nonce_be(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    for (d, s) in n.iter_mut().skip(4).zip(counter.to_be_bytes()) {
        *d = s;
    }
    n
}

/// Encrypts `buf` in place and appends the 16-byte tag.
pub(crate) fn seal(key: &Secret, nonce: [u8; 12], ad: &[u8], buf: &mut Vec<u8>) {
    let cipher = ChaCha20Poly1305::new((&key.0).into());
    // Encryption into a Vec cannot fail (the buffer grows for the tag).
    let _ = cipher.encrypt_in_place((&nonce).into(), ad, buf);
}

/// Decrypts `buf` (ciphertext and tag) in place, leaving the plaintext.
pub(crate) fn open(
    key: &Secret,
    nonce: [u8; 12],
    ad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    let cipher = ChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt_in_place((&nonce).into(), ad, buf)
        .map_err(|_| Error::Decrypt)
}
