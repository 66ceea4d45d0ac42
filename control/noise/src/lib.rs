//! ts2021: the control channel between a Tailscale client and its coordination server, as a
//! sans-IO core. Every `/machine/*` request of an official client travels over it.
//!
//! The channel is Noise `IK` (`Noise_IK_25519_ChaChaPoly_BLAKE2s`) with the client's machine
//! key as its static key and the server's key (served by `GET /key`) known in advance,
//! followed by length-framed ChaCha20-Poly1305 records that carry HTTP/2. It is not stock
//! Noise in one respect: record nonces put the 64-bit counter **big-endian** in the last eight
//! bytes, where the Noise specification puts it little-endian. That is why this crate is
//! written on the primitives (BLAKE2s, HMAC, ChaCha20-Poly1305, X25519) rather than on a
//! Noise library such as `snow`, which the tests use instead as an independent reference for
//! everything the two have in common (the handshake and each direction's first record).
//! Facts: `../shared/docs/tailscale-protocol.md` §2.
//!
//! Like every weft core it does no I/O, reads no clock and draws no randomness: the caller
//! passes the ephemeral key, feeds received bytes and sends what it is given.
//!
//! # Use
//! Client: [`ClientHandshake::start`] gives the 101-byte initiation to send in the
//! `X-Tailscale-Handshake` header; [`ClientHandshake::finish`] takes the server's 51-byte
//! response and gives a [`Transport`]. Server: [`accept`] takes the initiation and gives the
//! response, the client's machine key and a [`Transport`]. Then [`Transport::seal`] frames
//! plaintext into records and [`Transport::open`] / [`RecordReader`] take them apart.

#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod primitives;
mod transport;

pub use handshake::{accept, error_message, Accepted, ClientHandshake};
pub use transport::{RecordReader, Transport};

/// Message type of the client's initiation.
pub const MSG_INITIATION: u8 = 0x01;
/// Message type of the server's response.
pub const MSG_RESPONSE: u8 = 0x02;
/// Message type of an unauthenticated error message from the server.
pub const MSG_ERROR: u8 = 0x03;
/// Message type of a transport record.
pub const MSG_RECORD: u8 = 0x04;

/// Length of the client's initiation: version (2), type (1), length (2), payload (96).
pub const INITIATION_LEN: usize = 101;
/// Length of the server's response: type (1), length (2), payload (48).
pub const RESPONSE_LEN: usize = 51;
/// Largest frame (header and ciphertext).
pub const MAX_MESSAGE_SIZE: usize = 4096;
/// Largest record ciphertext.
pub const MAX_CIPHERTEXT_SIZE: usize = MAX_MESSAGE_SIZE - 3;
/// Largest plaintext per record; longer writes are split.
pub const MAX_PLAINTEXT_SIZE: usize = MAX_CIPHERTEXT_SIZE - 16;

/// The prologue both sides mix in: the protocol name and the version the client announced.
pub fn prologue(version: u16) -> Vec<u8> {
    format!("Tailscale Control Protocol v{version}").into_bytes()
}

/// The first five plaintext bytes of the optional early payload a server sends before HTTP/2
/// (an HTTP/2 connection preface never starts with them).
pub const EARLY_PAYLOAD_MAGIC: [u8; 5] = [0xff, 0xff, 0xff, b'T', b'S'];
/// Largest early payload a client accepts.
pub const MAX_EARLY_PAYLOAD: usize = 10 << 20;

/// The early payload's plaintext: magic, big-endian length, then `json` (a
/// `tailcfg.EarlyNoise` object). `None` if `json` is larger than clients accept.
pub fn early_payload(json: &[u8]) -> Option<Vec<u8>> {
    if json.len() > MAX_EARLY_PAYLOAD {
        return None;
    }
    let len = u32::try_from(json.len()).ok()?;
    let mut out = Vec::with_capacity(9 + json.len());
    out.extend_from_slice(&EARLY_PAYLOAD_MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(json);
    Some(out)
}

/// What the first nine plaintext bytes from a server say: an early payload of that many JSON
/// bytes follows (`Some(Ok(len))`), one too large to accept (`Some(Err(len))`), or they are
/// the start of HTTP/2 and belong to it (`None`).
pub fn early_payload_len(first9: &[u8; 9]) -> Option<Result<usize, usize>> {
    let (magic, len) = first9.split_at(5);
    if magic != EARLY_PAYLOAD_MAGIC {
        return None;
    }
    let len = len
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Some(if len > MAX_EARLY_PAYLOAD {
        Err(len)
    } else {
        Ok(len)
    })
}

/// Why a handshake message or a record was refused. A record error ends the connection's read
/// side (one failed decryption is fatal, as in the official implementation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message is not the expected length.
    #[error("{what} must be {want} bytes, got {got}")]
    BadLength {
        /// Which message.
        what: &'static str,
        /// The length it must have.
        want: usize,
        /// The length it has.
        got: usize,
    },
    /// The header's type or length field is not what this message needs.
    #[error("bad {what} header (type {kind:#04x}, length {len})")]
    BadHeader {
        /// Which message.
        what: &'static str,
        /// The type byte seen.
        kind: u8,
        /// The length field seen.
        len: usize,
    },
    /// The server answered with an error message instead of a response (unauthenticated: a
    /// hint only).
    #[error("server refused the handshake: {0}")]
    ServerError(String),
    /// A Diffie-Hellman result was all zeros (a low-order public key).
    #[error("low-order public key")]
    LowOrderKey,
    /// Authentication failed: wrong keys, or the message was altered.
    #[error("decryption failed")]
    Decrypt,
    /// A record's length field exceeds the largest record.
    #[error("record of {0} bytes exceeds the 4093-byte limit")]
    RecordTooLarge(usize),
    /// The 64-bit nonce counter is exhausted; the connection must end.
    #[error("nonce counter exhausted")]
    NonceExhausted,
    /// An earlier error ended this direction of the connection.
    #[error("connection already failed")]
    Broken,
}
