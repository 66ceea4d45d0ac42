//! Typed keys for weft.
//!
//! Every key has its own type so that a preshared key can never be passed where a public key is
//! expected, and so that secrets get the same treatment everywhere: they are zeroized on drop,
//! their `Debug` output is redacted, and they have no `PartialEq` (comparing secrets with `==` is
//! not constant time; use [`PrivateKey::ct_eq`]).
//!
//! Text forms: the `wg` tool and configuration files use standard base64 (44 characters); the
//! cross-platform UAPI uses 64 lowercase hex digits. Tailscale's prefixed forms (`nodekey:…`) arrive
//! with the control plane.
//!
//! This crate does no I/O and draws no randomness: callers pass random bytes in
//! ([`PrivateKey::from_bytes`]), so tests are deterministic.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of every Curve25519 key and of the preshared key, in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key's text form could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// The text is not 64 hex digits.
    #[error("expected 64 hex digits")]
    BadHex,
    /// The text is not 44 characters of standard base64 encoding 32 bytes.
    #[error("expected 44 characters of base64 encoding 32 bytes")]
    BadBase64,
}

fn decode_hex(s: &str) -> Result<[u8; KEY_LEN], KeyParseError> {
    let mut out = [0u8; KEY_LEN];
    if s.len() != 2 * KEY_LEN {
        return Err(KeyParseError::BadHex);
    }
    hex::decode_to_slice(s, &mut out).map_err(|_| KeyParseError::BadHex)?;
    Ok(out)
}

fn decode_b64(s: &str) -> Result<[u8; KEY_LEN], KeyParseError> {
    let mut out = [0u8; KEY_LEN];
    if s.len() != 44 {
        return Err(KeyParseError::BadBase64);
    }
    // `decode_slice` writes at most the decoded length; 44 chars with padding decode to 32 bytes.
    let mut buf = [0u8; 33];
    let n = B64
        .decode_slice(s.as_bytes(), &mut buf)
        .map_err(|_| KeyParseError::BadBase64)?;
    if n != KEY_LEN {
        buf.zeroize();
        return Err(KeyParseError::BadBase64);
    }
    out.copy_from_slice(buf.get(..KEY_LEN).ok_or(KeyParseError::BadBase64)?);
    buf.zeroize();
    Ok(out)
}

/// A Curve25519 public key: a WireGuard static key (a Tailscale node key) or an ephemeral key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses the UAPI form: 64 hex digits (either case).
    ///
    /// # Errors
    /// [`KeyParseError::BadHex`] when the text is not exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        decode_hex(s).map(Self)
    }

    /// Parses the `wg` tool's form: 44 characters of standard base64.
    ///
    /// # Errors
    /// [`KeyParseError::BadBase64`] when the text does not encode exactly 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        decode_b64(s).map(Self)
    }

    /// The UAPI form: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The `wg` tool's form: standard base64.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public keys are not secret, but a short form keeps logs readable.
        let b64 = self.to_base64();
        write!(f, "PublicKey({}…)", b64.get(..8).unwrap_or(&b64))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// A Curve25519 private key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// Makes a private key from 32 bytes (clamping happens inside X25519, as in every
    /// implementation, so any 32 bytes are a valid key).
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw secret bytes. Callers must not log or copy them into long-lived storage.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// Whether this is the all-zero key, which `wg` uses to mean "no key".
    pub fn is_zero(&self) -> bool {
        self.0.ct_eq(&[0u8; KEY_LEN]).into()
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Parses the UAPI form: 64 hex digits.
    ///
    /// # Errors
    /// [`KeyParseError::BadHex`] when the text is not exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        decode_hex(s).map(Self)
    }

    /// Parses the `wg` tool's form: 44 characters of standard base64.
    ///
    /// # Errors
    /// [`KeyParseError::BadBase64`] when the text does not encode exactly 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        decode_b64(s).map(Self)
    }

    /// The UAPI form: 64 lowercase hex digits. Only for the UAPI `get` reply, which is how `wg`
    /// shows a device's key to root.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A WireGuard preshared key (the `psk` mixed into IKpsk2). All zeros means "none".
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw secret bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Whether this is the all-zero "no preshared key".
    pub fn is_zero(&self) -> bool {
        self.0.ct_eq(&[0u8; KEY_LEN]).into()
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Parses the UAPI form: 64 hex digits.
    ///
    /// # Errors
    /// [`KeyParseError::BadHex`] when the text is not exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        decode_hex(s).map(Self)
    }

    /// Parses the `wg` tool's form: 44 characters of standard base64.
    ///
    /// # Errors
    /// [`KeyParseError::BadBase64`] when the text does not encode exactly 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        decode_b64(s).map(Self)
    }

    /// The UAPI form: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// Checks the text parsers' invariants on arbitrary bytes; panics when one is broken.
///
/// Shared by the cargo-fuzz target `dataplane/fuzz/fuzz_targets/key_text.rs` and by a test that
/// replays its committed corpus. Invariants: no parser panics; whatever parses re-encodes to an
/// equal key, and the canonical form (lowercase hex, standard base64) is reproduced exactly.
#[doc(hidden)]
#[allow(clippy::panic)]
pub fn fuzz_key_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = PublicKey::from_hex(text) {
        if PublicKey::from_hex(&k.to_hex()) != Ok(k) {
            panic!("hex round trip changed the key");
        }
        if text.bytes().all(|b| !b.is_ascii_uppercase()) && k.to_hex() != text {
            panic!("lowercase hex is not canonical");
        }
    }
    if let Ok(k) = PublicKey::from_base64(text) {
        if PublicKey::from_base64(&k.to_base64()) != Ok(k) {
            panic!("base64 round trip changed the key");
        }
    }
    if let Ok(k) = PrivateKey::from_base64(text) {
        if !PrivateKey::from_hex(&k.to_hex()).is_ok_and(|k2| k2.ct_eq(&k)) {
            panic!("private key hex round trip changed the key");
        }
    }
    let _ = PresharedKey::from_hex(text);
    let _ = PresharedKey::from_base64(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc7748_public_key_derivation() {
        // RFC 7748 §6.1: Alice's private key and public key.
        let sk = PrivateKey::from_hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        )
        .unwrap();
        assert_eq!(
            sk.public_key().to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn debug_is_redacted() {
        let sk = PrivateKey::from_bytes([7; 32]);
        let psk = PresharedKey::from_bytes([9; 32]);
        assert_eq!(format!("{sk:?}"), "PrivateKey(<redacted>)");
        assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(PublicKey::from_hex("00"), Err(KeyParseError::BadHex));
        assert_eq!(
            PublicKey::from_hex(&"zz".repeat(32)),
            Err(KeyParseError::BadHex)
        );
        assert_eq!(
            PublicKey::from_base64("AAAA"),
            Err(KeyParseError::BadBase64)
        );
        // 44 characters that decode to 33 bytes are not a key.
        assert!(PublicKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_err());
        // Multi-byte UTF-8 of the right byte length must not panic on slicing.
        assert!(PublicKey::from_hex(&"é".repeat(32)).is_err());
    }

    proptest! {
        #[test]
        fn text_forms_round_trip(bytes in any::<[u8; 32]>()) {
            let pk = PublicKey::from_bytes(bytes);
            prop_assert_eq!(PublicKey::from_hex(&pk.to_hex()).unwrap(), pk);
            prop_assert_eq!(PublicKey::from_base64(&pk.to_base64()).unwrap(), pk);
            prop_assert_eq!(PublicKey::from_hex(&pk.to_hex().to_uppercase()).unwrap(), pk);
        }

        #[test]
        fn parsers_never_panic(s in ".{0,80}") {
            let _ = PublicKey::from_hex(&s);
            let _ = PublicKey::from_base64(&s);
            let _ = PrivateKey::from_hex(&s);
            let _ = PresharedKey::from_base64(&s);
        }
    }
}
