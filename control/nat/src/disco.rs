//! Disco: the small sealed messages nodes use to find and keep a direct path.
//!
//! A disco packet is `magic ‖ sender disco key ‖ nonce ‖ box(message)` (`tailscale-protocol.md`
//! §7.1); the box is NaCl's (X25519 + XSalsa20-Poly1305), from the sender's disco private key to
//! the recipient's disco public key. The same bytes travel over UDP (on the socket WireGuard
//! uses, split off by the magic) and inside DERP packets. Messages (§7.2): `Ping` (a transaction
//! id and the sender's node key, optionally padded to probe the path MTU), `Pong` (the id and
//! the address the ping came from — a free STUN answer) and `CallMeMaybe` (the sender's
//! endpoints; only ever accepted via DERP). Peer-relay messages (types 4–9) are not spoken; they
//! parse as [`DiscoError::UnknownType`] and are dropped, as an older official client does.
//!
//! The shared key is computed once per peer ([`DiscoBox`]): X25519 costs far more than the
//! XSalsa20 of a 100-byte message, and a node pings every endpoint of every active peer.
//!
//! Guarantee: no function here panics on any input; the parsers ignore trailing bytes, as the
//! official receivers do.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crypto_box::aead::Aead;
use weft_keys::{PrivateKey, PublicKey};

/// The disco magic, `"TS💬"`.
pub const MAGIC: [u8; 6] = [0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac];
/// Length of the NaCl box nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag the box adds.
pub const TAG_LEN: usize = 16;
/// Bytes before the box: magic, sender key, nonce.
pub const HEADER_LEN: usize = MAGIC.len() + 32 + NONCE_LEN;
/// The shortest packet that can be disco: a header and an empty box.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// Length of a transaction id.
pub const TX_ID_LEN: usize = 12;
/// Bytes of one endpoint on the wire: a 16-byte IPv6 (v4-mapped for IPv4) address and a port.
pub const ENDPOINT_LEN: usize = 18;
/// The most endpoints a `CallMeMaybe` this node sends carries (the receiver takes any number
/// that fits in the packet).
pub const MAX_CALL_ME_MAYBE_ENDPOINTS: usize = 64;

const TYPE_PING: u8 = 0x01;
const TYPE_PONG: u8 = 0x02;
const TYPE_CALL_ME_MAYBE: u8 = 0x03;
const VERSION: u8 = 0;

/// A node's disco public key (`discokey:` in the control protocol). Regenerated at every start;
/// distinct from the node key so a disco key can never be used where a node key is meant.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiscoPublic(pub PublicKey);

impl fmt::Debug for DiscoPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.0.to_hex();
        write!(f, "discokey:{}…", hex.get(..8).unwrap_or(""))
    }
}

/// A node's disco private key. Never printed.
#[derive(Clone)]
pub struct DiscoPrivate(PrivateKey);

impl fmt::Debug for DiscoPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DiscoPrivate(…)")
    }
}

impl DiscoPrivate {
    /// Wraps a private key (a fresh random one per process start, drawn by the shell).
    pub fn new(key: PrivateKey) -> Self {
        Self(key)
    }

    /// The matching public key.
    pub fn public(&self) -> DiscoPublic {
        DiscoPublic(self.0.public_key())
    }
}

/// A disco transaction id: random per ping, echoed by the pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub [u8; TX_ID_LEN]);

/// A disco message (the plaintext inside the box).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Are you there on this path?"
    Ping {
        /// Echoed by the pong.
        tx: TxId,
        /// The sender's node key (absent from clients older than 1.16).
        node_key: Option<PublicKey>,
        /// Zero bytes appended to probe the path MTU.
        padding: u16,
    },
    /// The answer to a ping.
    Pong {
        /// The ping's transaction id.
        tx: TxId,
        /// Where the ping came from, as the responder saw it.
        src: SocketAddr,
    },
    /// "Ping me on these endpoints": the start of hole punching. Only accepted via DERP.
    CallMeMaybe {
        /// The sender's endpoints.
        endpoints: Vec<SocketAddr>,
    },
}

/// Why bytes are not an acceptable disco packet or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoError {
    /// No magic, or too short for a header and a box.
    #[error("not a disco packet")]
    NotDisco,
    /// The box does not open with this key pair.
    #[error("disco box does not authenticate")]
    Open,
    /// The message has no type and version.
    #[error("disco message too short")]
    TooShort,
    /// A message type this node does not speak.
    #[error("unknown disco message type {0:#04x}")]
    UnknownType(u8),
    /// A ping or pong payload too short for its fields.
    #[error("malformed disco {0}")]
    Malformed(&'static str),
    /// The message does not fit in a packet.
    #[error("disco message too large")]
    TooLarge,
}

impl Message {
    /// Appends the plaintext encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Ping {
                tx,
                node_key,
                padding,
            } => {
                out.extend_from_slice(&[TYPE_PING, VERSION]);
                out.extend_from_slice(&tx.0);
                if let Some(k) = node_key {
                    out.extend_from_slice(k.as_bytes());
                    out.resize(out.len() + usize::from(*padding), 0);
                }
            }
            Message::Pong { tx, src } => {
                out.extend_from_slice(&[TYPE_PONG, VERSION]);
                out.extend_from_slice(&tx.0);
                put_endpoint(out, *src);
            }
            Message::CallMeMaybe { endpoints } => {
                out.extend_from_slice(&[TYPE_CALL_ME_MAYBE, VERSION]);
                for ep in endpoints.iter().take(MAX_CALL_ME_MAYBE_ENDPOINTS) {
                    put_endpoint(out, *ep);
                }
            }
        }
    }

    /// Parses a plaintext message.
    ///
    /// # Errors
    /// [`DiscoError::TooShort`], [`DiscoError::UnknownType`] or [`DiscoError::Malformed`].
    pub fn parse(b: &[u8]) -> Result<Self, DiscoError> {
        let (&[ty, version], payload) = b.split_first_chunk::<2>().ok_or(DiscoError::TooShort)?;
        match ty {
            TYPE_PING => {
                let (tx, rest) = payload
                    .split_first_chunk::<TX_ID_LEN>()
                    .ok_or(DiscoError::Malformed("ping"))?;
                let (node_key, padding) = match rest.split_first_chunk::<32>() {
                    Some((k, pad)) => (
                        Some(PublicKey::from_bytes(*k)),
                        u16::try_from(pad.len()).unwrap_or(u16::MAX),
                    ),
                    None => (None, 0),
                };
                Ok(Message::Ping {
                    tx: TxId(*tx),
                    node_key,
                    padding,
                })
            }
            TYPE_PONG => {
                let (tx, rest) = payload
                    .split_first_chunk::<TX_ID_LEN>()
                    .ok_or(DiscoError::Malformed("pong"))?;
                let src = get_endpoint(rest).ok_or(DiscoError::Malformed("pong"))?;
                Ok(Message::Pong { tx: TxId(*tx), src })
            }
            TYPE_CALL_ME_MAYBE => {
                // Upstream: a wrong version or a ragged length is an empty list, not an error.
                let endpoints = if version != VERSION || payload.len() % ENDPOINT_LEN != 0 {
                    Vec::new()
                } else {
                    payload
                        .chunks_exact(ENDPOINT_LEN)
                        .filter_map(get_endpoint)
                        .collect()
                };
                Ok(Message::CallMeMaybe { endpoints })
            }
            other => Err(DiscoError::UnknownType(other)),
        }
    }
}

fn put_endpoint(out: &mut Vec<u8>, ep: SocketAddr) {
    let v6 = match ep.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&v6.octets());
    out.extend_from_slice(&ep.port().to_be_bytes());
}

fn get_endpoint(b: &[u8]) -> Option<SocketAddr> {
    let (ip, rest) = b.split_first_chunk::<16>()?;
    let (port, _) = rest.split_first_chunk::<2>()?;
    let ip = Ipv6Addr::from(*ip).to_canonical();
    Some(SocketAddr::new(ip, u16::from_be_bytes(*port)))
}

/// True when `b` looks like a disco packet (magic and room for a header and a box); the cheap
/// test the receive path runs before anything else touches the bytes.
pub fn looks_like_disco(b: &[u8]) -> bool {
    b.len() >= MIN_LEN && b.starts_with(&MAGIC)
}

/// Reads the sender's disco key from a disco packet, to find the [`DiscoBox`] that opens it.
///
/// # Errors
/// [`DiscoError::NotDisco`].
pub fn sender(packet: &[u8]) -> Result<DiscoPublic, DiscoError> {
    if !looks_like_disco(packet) {
        return Err(DiscoError::NotDisco);
    }
    let key = packet
        .get(MAGIC.len()..MAGIC.len() + 32)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or(DiscoError::NotDisco)?;
    Ok(DiscoPublic(PublicKey::from_bytes(key)))
}

/// The precomputed NaCl box between this node's disco key and one peer's.
pub struct DiscoBox {
    ours: DiscoPublic,
    theirs: DiscoPublic,
    shared: crypto_box::SalsaBox,
}

impl fmt::Debug for DiscoBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoBox")
            .field("ours", &self.ours)
            .field("theirs", &self.theirs)
            .finish_non_exhaustive()
    }
}

impl DiscoBox {
    /// Computes the shared key between `ours` and `theirs`; `None` when `theirs` is all zeros
    /// or another low-order point, whose shared key anyone could compute (such a peer gets no
    /// disco at all, only the relay, as upstream does with a zero disco key).
    pub fn new(ours: &DiscoPrivate, theirs: DiscoPublic) -> Option<Self> {
        let secret = zeroize::Zeroizing::new(*ours.0.as_bytes());
        let dh = x25519_dalek::StaticSecret::from(*secret)
            .diffie_hellman(&x25519_dalek::PublicKey::from(*theirs.0.as_bytes()));
        if !dh.was_contributory() {
            return None;
        }
        let shared = crypto_box::SalsaBox::new(
            &crypto_box::PublicKey::from_bytes(*theirs.0.as_bytes()),
            &crypto_box::SecretKey::from_bytes(*secret),
        );
        Some(Self {
            ours: ours.public(),
            theirs,
            shared,
        })
    }

    /// The peer's disco key.
    pub fn peer(&self) -> DiscoPublic {
        self.theirs
    }

    /// Seals `msg` to the peer, writing the whole packet into `out` (cleared first).
    ///
    /// # Errors
    /// [`DiscoError::TooLarge`] if the cipher refuses the length (not reachable for messages
    /// this module builds).
    pub fn seal(
        &self,
        nonce: [u8; NONCE_LEN],
        msg: &Message,
        out: &mut Vec<u8>,
    ) -> Result<(), DiscoError> {
        let mut plain = Vec::with_capacity(64);
        msg.encode(&mut plain);
        let ct = self
            .shared
            .encrypt(&crypto_box::Nonce::from(nonce), plain.as_slice())
            .map_err(|_| DiscoError::TooLarge)?;
        out.clear();
        out.reserve(HEADER_LEN + ct.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(self.ours.0.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(())
    }

    /// Opens a packet the peer sealed to this node and parses its message.
    ///
    /// # Errors
    /// [`DiscoError::NotDisco`] when the packet is not from this box's peer, [`DiscoError::Open`]
    /// when it does not authenticate, or a parse error of the message.
    pub fn open(&self, packet: &[u8]) -> Result<Message, DiscoError> {
        if sender(packet)? != self.theirs {
            return Err(DiscoError::NotDisco);
        }
        let nonce = packet
            .get(MAGIC.len() + 32..HEADER_LEN)
            .and_then(|n| <[u8; NONCE_LEN]>::try_from(n).ok())
            .ok_or(DiscoError::NotDisco)?;
        let boxed = packet.get(HEADER_LEN..).ok_or(DiscoError::NotDisco)?;
        let plain = self
            .shared
            .decrypt(&crypto_box::Nonce::from(nonce), boxed)
            .map_err(|_| DiscoError::Open)?;
        Message::parse(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u8) -> DiscoPrivate {
        DiscoPrivate::new(PrivateKey::from_bytes([n; 32]))
    }

    #[test]
    fn unpadded_ping_is_124_bytes_on_the_wire() {
        // §7.2: 6 + 32 + 24 + 16 + 2 + 44.
        let b = DiscoBox::new(&key(1), key(2).public()).unwrap();
        let mut out = Vec::new();
        let ping = Message::Ping {
            tx: TxId([7; 12]),
            node_key: Some(PublicKey::from_bytes([9; 32])),
            padding: 0,
        };
        b.seal([3; 24], &ping, &mut out).unwrap();
        assert_eq!(out.len(), 124);
        assert!(out.starts_with(&MAGIC));
        assert_eq!(sender(&out).unwrap(), key(1).public());
        let back = DiscoBox::new(&key(2), key(1).public()).unwrap();
        assert_eq!(back.open(&out).unwrap(), ping);
    }

    #[test]
    fn a_third_party_cannot_open_or_forge() {
        let a_to_b = DiscoBox::new(&key(1), key(2).public()).unwrap();
        let mut out = Vec::new();
        let pong = Message::Pong {
            tx: TxId([1; 12]),
            src: "192.0.2.1:41641".parse().unwrap(),
        };
        a_to_b.seal([0; 24], &pong, &mut out).unwrap();
        // C pretends to be B: its box with A does not open A's packet to B.
        let c_from_a = DiscoBox::new(&key(3), key(1).public()).unwrap();
        assert_eq!(c_from_a.open(&out), Err(DiscoError::Open));
        // A flipped byte anywhere in the box fails authentication.
        let b_from_a = DiscoBox::new(&key(2), key(1).public()).unwrap();
        for i in HEADER_LEN..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 1;
            assert_eq!(b_from_a.open(&bad), Err(DiscoError::Open), "byte {i}");
        }
        // A packet from someone else is refused before any crypto.
        let d_to_b = DiscoBox::new(&key(4), key(2).public()).unwrap();
        let mut other = Vec::new();
        d_to_b.seal([0; 24], &pong, &mut other).unwrap();
        assert_eq!(b_from_a.open(&other), Err(DiscoError::NotDisco));
    }

    #[test]
    fn a_zero_or_low_order_peer_key_gets_no_box() {
        assert!(DiscoBox::new(&key(1), DiscoPublic(PublicKey::from_bytes([0; 32]))).is_none());
        // 1 is a low-order point of Curve25519 (order 4 subgroup member u=1).
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(DiscoBox::new(&key(1), DiscoPublic(PublicKey::from_bytes(one))).is_none());
        assert!(DiscoBox::new(&key(1), key(2).public()).is_some());
    }

    #[test]
    fn wire_layouts_match_the_reference() {
        let mut out = Vec::new();
        Message::Pong {
            tx: TxId([0xaa; 12]),
            src: "1.2.3.4:258".parse().unwrap(),
        }
        .encode(&mut out);
        let mut want = vec![2, 0];
        want.extend_from_slice(&[0xaa; 12]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4, 1, 2]);
        assert_eq!(out, want);

        // Old pings had no node key; a ping shorter than its id is malformed.
        let mut old = vec![1, 0];
        old.extend_from_slice(&[5; 12]);
        assert_eq!(
            Message::parse(&old).unwrap(),
            Message::Ping {
                tx: TxId([5; 12]),
                node_key: None,
                padding: 0
            }
        );
        assert_eq!(
            Message::parse(&old[..13]),
            Err(DiscoError::Malformed("ping"))
        );
        // Padding is counted; trailing bytes after a pong are ignored.
        let mut padded = old.clone();
        padded.extend_from_slice(&[1; 32]);
        padded.extend_from_slice(&[0; 100]);
        assert!(matches!(
            Message::parse(&padded).unwrap(),
            Message::Ping { padding: 100, .. }
        ));
        let mut long_pong = want.clone();
        long_pong.extend_from_slice(b"trailing");
        assert!(matches!(
            Message::parse(&long_pong),
            Ok(Message::Pong { .. })
        ));
    }

    #[test]
    fn call_me_maybe_ragged_or_wrong_version_is_empty() {
        let mut b = vec![3, 0];
        b.extend_from_slice(&[0; 17]);
        assert_eq!(
            Message::parse(&b).unwrap(),
            Message::CallMeMaybe { endpoints: vec![] }
        );
        let mut v1 = vec![3, 1];
        v1.extend_from_slice(&[0; 18]);
        assert_eq!(
            Message::parse(&v1).unwrap(),
            Message::CallMeMaybe { endpoints: vec![] }
        );
        assert_eq!(Message::parse(&[9, 0]), Err(DiscoError::UnknownType(9)));
        assert_eq!(Message::parse(&[1]), Err(DiscoError::TooShort));
        assert_eq!(Message::parse(&[]), Err(DiscoError::TooShort));
    }

    fn arb_endpoint() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(Ipv6Addr::from(ip).to_canonical(), p)),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<[u8; 12]>(), any::<Option<[u8; 32]>>(), 0u16..1400).prop_map(|(tx, k, pad)| {
                Message::Ping {
                    tx: TxId(tx),
                    node_key: k.map(PublicKey::from_bytes),
                    padding: if k.is_some() { pad } else { 0 },
                }
            }),
            (any::<[u8; 12]>(), arb_endpoint())
                .prop_map(|(tx, src)| Message::Pong { tx: TxId(tx), src }),
            proptest::collection::vec(arb_endpoint(), 0..MAX_CALL_ME_MAYBE_ENDPOINTS)
                .prop_map(|endpoints| Message::CallMeMaybe { endpoints }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips_sealed(msg in arb_message(), nonce in any::<[u8; 24]>()) {
            let a = DiscoBox::new(&key(1), key(2).public()).unwrap();
            let b = DiscoBox::new(&key(2), key(1).public()).unwrap();
            let mut out = Vec::new();
            a.seal(nonce, &msg, &mut out).unwrap();
            prop_assert!(looks_like_disco(&out));
            prop_assert_eq!(b.open(&out).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::parse(&bytes);
            let b = DiscoBox::new(&key(2), key(1).public()).unwrap();
            let _ = b.open(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = sender(&framed);
            let _ = b.open(&framed);
        }

        #[test]
        fn parsed_messages_re_encode_to_a_prefix_equivalent(bytes in proptest::collection::vec(any::<u8>(), 2..200)) {
            if let Ok(m) = Message::parse(&bytes) {
                let mut again = Vec::new();
                m.encode(&mut again);
                prop_assert_eq!(Message::parse(&again).unwrap(), m);
            }
        }
    }
}
