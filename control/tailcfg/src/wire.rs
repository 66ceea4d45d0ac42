//! Small value types and serde helpers shared by the message types: IP prefixes in Go's
//! `netip.Prefix` text form, `[]byte` as base64, and tolerance for Go's `null` collections.
//!
//! Go writes a nil slice or map that is not tagged `omitempty` as `null`; serde would refuse
//! `null` for a `Vec`. Every collection field therefore reads `null` as empty
//! ([`null_as_default`]), so whatever an official client or another server sends is accepted.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Reads `null` (or an absent field, with `#[serde(default)]`) as `T::default()`.
///
/// # Errors
/// Whatever `T`'s own deserializer returns for a non-null value.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `skip_serializing_if` for Go's `omitempty` on a bool.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// `skip_serializing_if` for Go's `omitempty` on an integer.
pub(crate) fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// `skip_serializing_if` for Go's `omitempty` on a float.
pub(crate) fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

/// Why an IP prefix text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrefixError {
    /// No `/` separating address and length.
    #[error("prefix has no '/'")]
    NoSlash,
    /// The address part is not an IPv4 or IPv6 address.
    #[error("bad address in prefix")]
    BadAddr,
    /// The length is not a decimal number within the address family's size.
    #[error("bad prefix length")]
    BadLength,
}

/// An IP prefix as Go's `netip.Prefix` (`"100.64.0.1/32"`, `"fd7a:115c:a1e0::/48"`). Like Go,
/// host bits may be set (a node's `Addresses` are /32 and /128 of the node's own address).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// A prefix; `None` when `len` exceeds the family's bit count.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Self { addr, len })
    }

    /// The single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    /// The address part.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix length is zero (`0.0.0.0/0`, `::/0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (a, l) = s.split_once('/').ok_or(PrefixError::NoSlash)?;
        let addr: IpAddr = a.parse().map_err(|_| PrefixError::BadAddr)?;
        // Go accepts only plain decimal digits, without sign or leading zeros.
        if l.is_empty()
            || !l.bytes().all(|b| b.is_ascii_digit())
            || (l.len() > 1 && l.starts_with('0'))
        {
            return Err(PrefixError::BadLength);
        }
        let len: u8 = l.parse().map_err(|_| PrefixError::BadLength)?;
        Self::new(addr, len).ok_or(PrefixError::BadLength)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Go's `[]byte` in JSON: standard base64 with padding. `null` reads as empty.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Base64Bytes(pub Vec<u8>);

impl Base64Bytes {
    /// Whether there are no bytes (what `omitempty` leaves out).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        match s {
            None => Ok(Self::default()),
            Some(s) => B64
                .decode(s.as_bytes())
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p: IpPrefix = "100.64.0.1/32".parse().unwrap();
        assert_eq!(p.to_string(), "100.64.0.1/32");
        let p: IpPrefix = "fd7a:115c:a1e0::/48".parse().unwrap();
        assert_eq!(p.len(), 48);
        for bad in [
            "",
            "1.2.3.4",
            "1.2.3.4/33",
            "::/129",
            "x/1",
            "1.2.3.4/+1",
            "1.2.3.4/01",
            "1.2.3.4/",
        ] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_null_and_text() {
        let b: Base64Bytes = serde_json::from_str("null").unwrap();
        assert!(b.is_empty());
        let b: Base64Bytes = serde_json::from_str("\"AQID\"").unwrap();
        assert_eq!(b.0, [1, 2, 3]);
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"AQID\"");
        assert!(serde_json::from_str::<Base64Bytes>("\"!!\"").is_err());
    }
}
