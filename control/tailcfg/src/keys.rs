//! The typed public keys of the control protocol and their prefixed text forms.
//!
//! Tailscale gives every kind of Curve25519 public key its own Go type and its own text prefix, so
//! a disco key can never be read where a node key is expected: `mkey:`, `nodekey:`, `discokey:`
//! and `chalpub:` followed by 64 hex digits. These types do the same over [`weft_keys::PublicKey`].
//!
//! Facts carried over from Go (`types/key`): output hex is lowercase; input hex may be either case;
//! the prefix must match exactly and the hex must be exactly 64 digits. A zero key has no special
//! encoding: it is written as the prefix and 64 zeros (Go's `MarshalText` does not check
//! `IsZero`), which is how a client sends an unset `OldNodeKey`. The empty string is a parse error,
//! as in Go. Fields where Go omits a zero key (`omitzero`) skip it with [`MachinePublic::is_zero`]
//! and friends; fields without the tag always carry the key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use weft_keys::{PublicKey, KEY_LEN};

/// Why a prefixed key text could not be parsed. The message never echoes the input, which might
/// be (part of) a private key pasted in the wrong place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyTextError {
    /// The text does not start with the prefix of the expected key type.
    #[error("key text does not start with the expected prefix {expected:?}")]
    WrongPrefix {
        /// The prefix the type requires, e.g. `nodekey:`.
        expected: &'static str,
    },
    /// The part after the prefix is not 64 characters long.
    #[error("key hex has length {got}, want 64")]
    WrongLength {
        /// The length found after the prefix.
        got: usize,
    },
    /// The part after the prefix has a character that is not a hex digit.
    #[error("invalid hex character in key")]
    BadHex,
}

fn parse_prefixed(s: &str, prefix: &'static str) -> Result<PublicKey, KeyTextError> {
    let hex_part = s
        .strip_prefix(prefix)
        .ok_or(KeyTextError::WrongPrefix { expected: prefix })?;
    if hex_part.len() != 2 * KEY_LEN {
        return Err(KeyTextError::WrongLength {
            got: hex_part.len(),
        });
    }
    let mut out = [0u8; KEY_LEN];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| KeyTextError::BadHex)?;
    Ok(PublicKey::from_bytes(out))
}

macro_rules! prefixed_key {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(PublicKey);

        impl $name {
            /// The text prefix of this key type.
            pub const PREFIX: &'static str = $prefix;

            /// The all-zero key: Go's zero value, meaning "unset".
            pub const ZERO: Self = Self(PublicKey::from_bytes([0; KEY_LEN]));

            /// Wraps an untyped public key.
            pub const fn new(key: PublicKey) -> Self {
                Self(key)
            }

            /// Wraps raw key bytes.
            pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(PublicKey::from_bytes(bytes))
            }

            /// The untyped key.
            pub const fn key(&self) -> PublicKey {
                self.0
            }

            /// The raw key bytes.
            pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
                self.0.as_bytes()
            }

            /// Whether this is the zero key (Go's `IsZero`).
            pub fn is_zero(&self) -> bool {
                self.0.as_bytes() == &[0u8; KEY_LEN]
            }

            /// Parses the prefixed text form.
            ///
            /// # Errors
            /// [`KeyTextError`] when the prefix is wrong or the rest is not 64 hex digits.
            pub fn parse(s: &str) -> Result<Self, KeyTextError> {
                parse_prefixed(s, Self::PREFIX).map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::ZERO
            }
        }

        impl From<PublicKey> for $name {
            fn from(key: PublicKey) -> Self {
                Self(key)
            }
        }

        impl FromStr for $name {
            type Err = KeyTextError;
            fn from_str(s: &str) -> Result<Self, KeyTextError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(Self::PREFIX)?;
                f.write_str(&self.0.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Tailscale's "short string": the first 5 base64 characters in brackets.
                let b64 = self.0.to_base64();
                write!(f, "{}[{}]", stringify!($name), b64.get(..5).unwrap_or(&b64))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_key!(
    /// A machine key (`mkey:`): the client's ts2021 Noise static key, and the server's own key.
    MachinePublic,
    "mkey:"
);
prefixed_key!(
    /// A node key (`nodekey:`): the WireGuard static key, also the node's DERP identity.
    NodePublic,
    "nodekey:"
);
prefixed_key!(
    /// A disco key (`discokey:`): seals disco messages; regenerated at every client start.
    DiscoPublic,
    "discokey:"
);
prefixed_key!(
    /// A challenge key (`chalpub:`) sent in [`crate::EarlyNoise`].
    ChallengePublic,
    "chalpub:"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_key_is_prefix_and_zeros() {
        let text = NodePublic::ZERO.to_string();
        assert_eq!(text, format!("nodekey:{}", "0".repeat(64)));
        assert!(NodePublic::parse(&text).unwrap().is_zero());
    }

    #[test]
    fn typed_errors() {
        assert_eq!(
            NodePublic::parse(""),
            Err(KeyTextError::WrongPrefix {
                expected: "nodekey:"
            })
        );
        let disco = format!("discokey:{}", "ab".repeat(32));
        assert!(matches!(
            NodePublic::parse(&disco),
            Err(KeyTextError::WrongPrefix { .. })
        ));
        assert_eq!(
            MachinePublic::parse("mkey:abcd"),
            Err(KeyTextError::WrongLength { got: 4 })
        );
        let bad = format!("mkey:{}g", "0".repeat(63));
        assert_eq!(MachinePublic::parse(&bad), Err(KeyTextError::BadHex));
    }

    #[test]
    fn uppercase_hex_accepted_lowercase_written() {
        let upper = format!("chalpub:{}", "AB".repeat(32));
        let k = ChallengePublic::parse(&upper).unwrap();
        assert_eq!(k.to_string(), format!("chalpub:{}", "ab".repeat(32)));
    }
}
