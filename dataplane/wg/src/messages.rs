//! WireGuard wire messages: constants and zero-copy views over untrusted bytes.
//!
//! Every message starts with a little-endian `u32` whose low byte is the type (1–4) and whose
//! three high bytes are reserved and zero. The three handshake-path messages have fixed sizes;
//! transport data is at least [`TRANSPORT_MIN_LEN`] bytes (an empty keepalive).
//!
//! # The no-panic guarantee
//! [`Message::parse`] checks the type word and the exact length before it builds a view. Every
//! view holds a fixed-size array reference (`&[u8; N]`) or, for transport data, a slice whose
//! length was checked, and every accessor reads at constant offsets inside that array. So once
//! `parse` returned `Ok`, **no accessor can panic**, whatever the bytes were. The offsets are
//! checked at compile time by the `const` assertions below.
//!
//! The views borrow; the handshake code writes messages into caller-provided arrays with the
//! `write_*` helpers, so nothing here allocates.

use crate::MessageError;

/// Type of a handshake initiation.
pub const TYPE_INITIATION: u8 = 1;
/// Type of a handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Type of a cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Type of transport data.
pub const TYPE_TRANSPORT: u8 = 4;

/// Size of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Size of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Size of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Header of a transport message: type, receiver index, counter.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Size of the Poly1305 tag that follows every encrypted payload.
pub const TAG_LEN: usize = 16;
/// Smallest transport message: a header and the tag of an empty (keepalive) payload.
pub const TRANSPORT_MIN_LEN: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Bytes a transport message adds to a plaintext packet, before padding.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_MIN_LEN;
/// Plaintext is zero-padded to a multiple of this many bytes (bounded by the MTU).
pub const PADDING_MULTIPLE: usize = 16;

/// Offsets inside an initiation.
pub(crate) mod init {
    pub(crate) const SENDER: usize = 4;
    pub(crate) const EPHEMERAL: usize = 8;
    pub(crate) const STATIC: usize = 40;
    pub(crate) const STATIC_LEN: usize = 32 + 16;
    pub(crate) const TIMESTAMP: usize = 88;
    pub(crate) const TIMESTAMP_LEN: usize = 12 + 16;
    pub(crate) const MAC1: usize = 116;
    pub(crate) const MAC2: usize = 132;
}

/// Offsets inside a response.
pub(crate) mod resp {
    pub(crate) const SENDER: usize = 4;
    pub(crate) const RECEIVER: usize = 8;
    pub(crate) const EPHEMERAL: usize = 12;
    pub(crate) const EMPTY: usize = 44;
    pub(crate) const MAC1: usize = 60;
    pub(crate) const MAC2: usize = 76;
}

/// Offsets inside a cookie reply.
pub(crate) mod cookie {
    pub(crate) const RECEIVER: usize = 4;
    pub(crate) const NONCE: usize = 8;
    pub(crate) const COOKIE: usize = 32;
    pub(crate) const COOKIE_LEN: usize = 16 + 16;
}

const _: () = {
    assert!(init::STATIC == init::EPHEMERAL + 32);
    assert!(init::TIMESTAMP == init::STATIC + init::STATIC_LEN);
    assert!(init::MAC1 == init::TIMESTAMP + init::TIMESTAMP_LEN);
    assert!(init::MAC2 + 16 == INITIATION_LEN);
    assert!(resp::EMPTY == resp::EPHEMERAL + 32);
    assert!(resp::MAC1 == resp::EMPTY + 16);
    assert!(resp::MAC2 + 16 == RESPONSE_LEN);
    assert!(cookie::COOKIE + cookie::COOKIE_LEN == COOKIE_REPLY_LEN);
};

/// Reads `N` bytes at constant offset `AT` of a fixed-size array. Out-of-range offsets fail to
/// compile, which is what makes the view accessors panic-free.
#[inline(always)]
pub(crate) fn field<const AT: usize, const N: usize, const M: usize>(buf: &[u8; M]) -> &[u8; N] {
    const { assert!(AT + N <= M) };
    let (_, rest) = buf.split_at(AT);
    match rest.first_chunk::<N>() {
        Some(chunk) => chunk,
        // Unreachable: the const assertion above proves AT + N <= M.
        None => unreachable_field(),
    }
}

#[cold]
#[inline(never)]
#[allow(clippy::panic)]
fn unreachable_field() -> ! {
    panic!("field offset checked at compile time")
}

/// Mutable counterpart of [`field`].
#[inline(always)]
pub(crate) fn field_mut<const AT: usize, const N: usize, const M: usize>(
    buf: &mut [u8; M],
) -> &mut [u8; N] {
    const { assert!(AT + N <= M) };
    let (_, rest) = buf.split_at_mut(AT);
    match rest.first_chunk_mut::<N>() {
        Some(chunk) => chunk,
        None => unreachable_field(),
    }
}

#[inline(always)]
fn u32_at<const AT: usize, const M: usize>(buf: &[u8; M]) -> u32 {
    u32::from_le_bytes(*field::<AT, 4, M>(buf))
}

/// A parsed message: a view of the right type over the caller's bytes.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// Type 1, exactly 148 bytes.
    Initiation(Initiation<'a>),
    /// Type 2, exactly 92 bytes.
    Response(Response<'a>),
    /// Type 3, exactly 64 bytes.
    CookieReply(CookieReply<'a>),
    /// Type 4, at least 32 bytes.
    Transport(Transport<'a>),
}

impl<'a> Message<'a> {
    /// Checks the type word and length and returns the matching view.
    ///
    /// # Errors
    /// [`MessageError::TooShort`] for fewer than 4 bytes, [`MessageError::UnknownType`] for a
    /// type byte outside 1–4 or non-zero reserved bytes, [`MessageError::BadLength`] when the
    /// length does not fit the type.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        let Some(head) = bytes.first_chunk::<4>() else {
            return Err(MessageError::TooShort);
        };
        let [ty, r1, r2, r3] = *head;
        if r1 != 0 || r2 != 0 || r3 != 0 {
            return Err(MessageError::UnknownType);
        }
        let bad_len = MessageError::BadLength;
        match ty {
            TYPE_INITIATION => bytes
                .try_into()
                .map(|b| Message::Initiation(Initiation(b)))
                .map_err(|_| bad_len),
            TYPE_RESPONSE => bytes
                .try_into()
                .map(|b| Message::Response(Response(b)))
                .map_err(|_| bad_len),
            TYPE_COOKIE_REPLY => bytes
                .try_into()
                .map(|b| Message::CookieReply(CookieReply(b)))
                .map_err(|_| bad_len),
            TYPE_TRANSPORT => Transport::new(bytes).map(Message::Transport),
            _ => Err(MessageError::UnknownType),
        }
    }
}

/// A handshake initiation (type 1).
#[derive(Debug, Clone, Copy)]
pub struct Initiation<'a>(pub(crate) &'a [u8; INITIATION_LEN]);

impl<'a> Initiation<'a> {
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8; INITIATION_LEN] {
        self.0
    }
    /// The initiator's session index.
    pub fn sender(&self) -> u32 {
        u32_at::<{ init::SENDER }, INITIATION_LEN>(self.0)
    }
    /// The initiator's ephemeral public key.
    pub fn ephemeral(&self) -> &'a [u8; 32] {
        field::<{ init::EPHEMERAL }, 32, INITIATION_LEN>(self.0)
    }
    /// The encrypted static key of the initiator.
    pub fn encrypted_static(&self) -> &'a [u8; init::STATIC_LEN] {
        field::<{ init::STATIC }, { init::STATIC_LEN }, INITIATION_LEN>(self.0)
    }
    /// The encrypted TAI64N timestamp.
    pub fn encrypted_timestamp(&self) -> &'a [u8; init::TIMESTAMP_LEN] {
        field::<{ init::TIMESTAMP }, { init::TIMESTAMP_LEN }, INITIATION_LEN>(self.0)
    }
    /// The first MAC (keyed by the responder's public key).
    pub fn mac1(&self) -> &'a [u8; 16] {
        field::<{ init::MAC1 }, 16, INITIATION_LEN>(self.0)
    }
    /// The second MAC (keyed by a cookie, or zero).
    pub fn mac2(&self) -> &'a [u8; 16] {
        field::<{ init::MAC2 }, 16, INITIATION_LEN>(self.0)
    }
}

/// A handshake response (type 2).
#[derive(Debug, Clone, Copy)]
pub struct Response<'a>(pub(crate) &'a [u8; RESPONSE_LEN]);

impl<'a> Response<'a> {
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8; RESPONSE_LEN] {
        self.0
    }
    /// The responder's session index.
    pub fn sender(&self) -> u32 {
        u32_at::<{ resp::SENDER }, RESPONSE_LEN>(self.0)
    }
    /// The initiator's session index, echoed back.
    pub fn receiver(&self) -> u32 {
        u32_at::<{ resp::RECEIVER }, RESPONSE_LEN>(self.0)
    }
    /// The responder's ephemeral public key.
    pub fn ephemeral(&self) -> &'a [u8; 32] {
        field::<{ resp::EPHEMERAL }, 32, RESPONSE_LEN>(self.0)
    }
    /// The encrypted empty payload (only a tag).
    pub fn encrypted_nothing(&self) -> &'a [u8; 16] {
        field::<{ resp::EMPTY }, 16, RESPONSE_LEN>(self.0)
    }
    /// The first MAC.
    pub fn mac1(&self) -> &'a [u8; 16] {
        field::<{ resp::MAC1 }, 16, RESPONSE_LEN>(self.0)
    }
    /// The second MAC.
    pub fn mac2(&self) -> &'a [u8; 16] {
        field::<{ resp::MAC2 }, 16, RESPONSE_LEN>(self.0)
    }
}

/// A cookie reply (type 3).
#[derive(Debug, Clone, Copy)]
pub struct CookieReply<'a>(pub(crate) &'a [u8; COOKIE_REPLY_LEN]);

impl<'a> CookieReply<'a> {
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8; COOKIE_REPLY_LEN] {
        self.0
    }
    /// The session index of the handshake message that triggered the reply.
    pub fn receiver(&self) -> u32 {
        u32_at::<{ cookie::RECEIVER }, COOKIE_REPLY_LEN>(self.0)
    }
    /// The XChaCha20 nonce.
    pub fn nonce(&self) -> &'a [u8; 24] {
        field::<{ cookie::NONCE }, 24, COOKIE_REPLY_LEN>(self.0)
    }
    /// The encrypted cookie and its tag.
    pub fn encrypted_cookie(&self) -> &'a [u8; cookie::COOKIE_LEN] {
        field::<{ cookie::COOKIE }, { cookie::COOKIE_LEN }, COOKIE_REPLY_LEN>(self.0)
    }
}

/// Transport data (type 4): header plus an encrypted payload of at least a tag.
#[derive(Debug, Clone, Copy)]
pub struct Transport<'a> {
    header: &'a [u8; TRANSPORT_HEADER_LEN],
    payload: &'a [u8],
}

impl<'a> Transport<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, MessageError> {
        if bytes.len() < TRANSPORT_MIN_LEN {
            return Err(MessageError::BadLength);
        }
        let (header, payload) = bytes
            .split_first_chunk::<TRANSPORT_HEADER_LEN>()
            .ok_or(MessageError::BadLength)?;
        Ok(Self { header, payload })
    }
    /// The receiver's session index.
    pub fn receiver(&self) -> u32 {
        u32_at::<4, TRANSPORT_HEADER_LEN>(self.header)
    }
    /// The nonce counter.
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(*field::<8, 8, TRANSPORT_HEADER_LEN>(self.header))
    }
    /// The encrypted payload including its tag (at least [`TAG_LEN`] bytes).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Reads the receiver index and counter of a transport message without building a view.
/// Returns `None` unless `bytes` is a well-formed transport message.
pub fn transport_header(bytes: &[u8]) -> Option<(u32, u64)> {
    match Message::parse(bytes) {
        Ok(Message::Transport(t)) => Some((t.receiver(), t.counter())),
        _ => None,
    }
}

/// Writes a transport header into the first [`TRANSPORT_HEADER_LEN`] bytes of `out`.
pub(crate) fn write_transport_header(
    out: &mut [u8; TRANSPORT_HEADER_LEN],
    receiver: u32,
    counter: u64,
) {
    *field_mut::<0, 4, TRANSPORT_HEADER_LEN>(out) = u32::from(TYPE_TRANSPORT).to_le_bytes();
    *field_mut::<4, 4, TRANSPORT_HEADER_LEN>(out) = receiver.to_le_bytes();
    *field_mut::<8, 8, TRANSPORT_HEADER_LEN>(out) = counter.to_le_bytes();
}

/// The length of `plaintext_len` bytes after zero-padding to a multiple of 16, never beyond
/// `mtu` (but never shorter than the plaintext), as the kernel and wireguard-go pad.
pub fn padded_len(plaintext_len: usize, mtu: usize) -> usize {
    let padded = plaintext_len.div_ceil(PADDING_MULTIPLE) * PADDING_MULTIPLE;
    if plaintext_len > mtu {
        plaintext_len
    } else {
        padded.min(mtu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(ty: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        if let Some(b) = v.first_mut() {
            *b = ty;
        }
        v
    }

    #[test]
    fn sizes_are_exact() {
        assert!(matches!(
            Message::parse(&msg(1, 148)),
            Ok(Message::Initiation(_))
        ));
        assert_eq!(
            Message::parse(&msg(1, 147)).err(),
            Some(MessageError::BadLength)
        );
        assert_eq!(
            Message::parse(&msg(1, 149)).err(),
            Some(MessageError::BadLength)
        );
        assert!(matches!(
            Message::parse(&msg(2, 92)),
            Ok(Message::Response(_))
        ));
        assert_eq!(
            Message::parse(&msg(2, 93)).err(),
            Some(MessageError::BadLength)
        );
        assert!(matches!(
            Message::parse(&msg(3, 64)),
            Ok(Message::CookieReply(_))
        ));
        assert_eq!(
            Message::parse(&msg(3, 63)).err(),
            Some(MessageError::BadLength)
        );
        assert!(matches!(
            Message::parse(&msg(4, 32)),
            Ok(Message::Transport(_))
        ));
        // No alignment rule for transport data.
        assert!(matches!(
            Message::parse(&msg(4, 33)),
            Ok(Message::Transport(_))
        ));
        assert_eq!(
            Message::parse(&msg(4, 31)).err(),
            Some(MessageError::BadLength)
        );
    }

    #[test]
    fn reserved_and_unknown_types_rejected() {
        let mut m = msg(1, 148);
        m[1] = 1;
        assert_eq!(Message::parse(&m).err(), Some(MessageError::UnknownType));
        m[1] = 0;
        m[3] = 0x80;
        assert_eq!(Message::parse(&m).err(), Some(MessageError::UnknownType));
        assert_eq!(
            Message::parse(&msg(0, 148)).err(),
            Some(MessageError::UnknownType)
        );
        assert_eq!(
            Message::parse(&msg(5, 148)).err(),
            Some(MessageError::UnknownType)
        );
        assert_eq!(
            Message::parse(&[1, 0, 0]).err(),
            Some(MessageError::TooShort)
        );
        assert_eq!(Message::parse(&[]).err(), Some(MessageError::TooShort));
    }

    #[test]
    fn transport_fields() {
        let mut m = msg(4, 40);
        m[4..8].copy_from_slice(&0x0403_0201u32.to_le_bytes());
        m[8..16].copy_from_slice(&0x0807_0605_0403_0201u64.to_le_bytes());
        let Ok(Message::Transport(t)) = Message::parse(&m) else {
            panic!("not transport")
        };
        assert_eq!(t.receiver(), 0x0403_0201);
        assert_eq!(t.counter(), 0x0807_0605_0403_0201);
        assert_eq!(t.payload().len(), 24);
        assert_eq!(
            transport_header(&m),
            Some((0x0403_0201, 0x0807_0605_0403_0201))
        );
    }

    #[test]
    fn padding_follows_the_kernel() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(16, 1420), 16);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1420, 1420), 1420);
        assert_eq!(padded_len(1500, 1420), 1500);
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_views_are_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            match Message::parse(&bytes) {
                Ok(Message::Initiation(m)) => {
                    prop_assert_eq!(bytes.len(), INITIATION_LEN);
                    let _ = (m.sender(), m.ephemeral(), m.encrypted_static(), m.encrypted_timestamp(), m.mac1(), m.mac2());
                }
                Ok(Message::Response(m)) => {
                    prop_assert_eq!(bytes.len(), RESPONSE_LEN);
                    let _ = (m.sender(), m.receiver(), m.ephemeral(), m.encrypted_nothing(), m.mac1(), m.mac2());
                }
                Ok(Message::CookieReply(m)) => {
                    prop_assert_eq!(bytes.len(), COOKIE_REPLY_LEN);
                    let _ = (m.receiver(), m.nonce(), m.encrypted_cookie());
                }
                Ok(Message::Transport(m)) => {
                    // Length conservation: header + payload is the whole datagram.
                    prop_assert_eq!(TRANSPORT_HEADER_LEN + m.payload().len(), bytes.len());
                    let _ = (m.receiver(), m.counter());
                }
                Err(_) => {}
            }
        }
    }
}
