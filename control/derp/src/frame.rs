//! The DERP frame codec: a 5-byte header (type byte, big-endian `u32` payload length) and the
//! payload layouts of every frame type a current client or server sends.
//!
//! Decoding is split in two steps because the two sides react differently to a bad payload:
//! [`next_frame`] cuts one complete frame off the front of a byte buffer (it only looks at the
//! header, and refuses a length above the caller's limit before any payload is buffered), and
//! [`RawFrame::parse`] turns the payload into a typed [`Frame`]. A stream stays in sync after a
//! payload error, so a client can skip a short frame as the official one does, while the server
//! closes the connection as upstream's does. Unknown frame types parse to [`Frame::Unknown`]; both
//! sides ignore them.
//!
//! Guarantee: no function here panics on any input. Parsing borrows from the input (packets are
//! not copied); encoding writes into a caller's buffer ([`Frame::encode`]) or appends to a
//! caller's `Vec` ([`Frame::encode_to_vec`]), so a reused buffer means no allocation per frame.
//!
//! Parsers are lenient exactly where the official peers are: a ServerKey frame may carry more
//! than magic and key, a PeerGone frame without a reason means Disconnected, a PeerPresent frame
//! may stop after the key or after the endpoint, a Ping/Pong may carry extra bytes (ignored).
//! So `parse(encode(f)) == f` holds for every frame, while `encode(parse(b)) == b` holds only for
//! the canonical forms.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use weft_keys::PublicKey;

/// The magic that opens a ServerKey frame: `"DERP🔑"`.
pub const MAGIC: [u8; 8] = [0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91];
/// Frame header length: type byte plus big-endian `u32` length.
pub const FRAME_HEADER_LEN: usize = 5;
/// Length of a node public key on the wire.
pub const KEY_LEN: usize = 32;
/// Length of a NaCl box nonce.
pub const NONCE_LEN: usize = 24;
/// Largest packet (payload bytes) in a SendPacket, ForwardPacket or RecvPacket frame.
pub const MAX_PACKET_SIZE: usize = 64 << 10;
/// Largest JSON body a ServerInfo frame may seal.
pub const MAX_INFO_LEN: usize = 1 << 20;
/// Largest ClientInfo frame a server reads (limits JSON work on untrusted input).
pub const MAX_CLIENT_INFO_LEN: usize = 256 << 10;
/// Smallest ClientInfo frame: key and nonce.
pub const MIN_CLIENT_INFO_LEN: usize = KEY_LEN + NONCE_LEN;
/// Frame length limit a server applies to everything a client sends (the ClientInfo cap, far
/// above the largest packet frame).
pub const SERVER_MAX_FRAME_LEN: u32 = MAX_CLIENT_INFO_LEN as u32;
/// Frame length limit a client applies to everything a server sends (as the official client).
pub const CLIENT_MAX_FRAME_LEN: u32 = 1 << 20;
/// Largest ping payload a server accepts (extra bytes after the 8 echoed ones are ignored).
pub const MAX_PING_LEN: usize = 1000;
/// The DERP protocol version weft speaks: RecvPacket carries the source key.
pub const PROTOCOL_VERSION: u32 = 2;
/// Length of a PeerPresent frame as current servers send it: key, 16-byte IP, port, flags.
pub const PEER_PRESENT_LEN: usize = KEY_LEN + 16 + 2 + 1;

/// Frame type bytes (`derp.go`); see [`Frame`] for each payload.
pub mod frame_type {
    /// S→C greeting: magic + server key.
    pub const SERVER_KEY: u8 = 0x01;
    /// C→S: client key + sealed ClientInfo.
    pub const CLIENT_INFO: u8 = 0x02;
    /// S→C: sealed ServerInfo.
    pub const SERVER_INFO: u8 = 0x03;
    /// C→S: destination key + packet.
    pub const SEND_PACKET: u8 = 0x04;
    /// S→C: source key + packet.
    pub const RECV_PACKET: u8 = 0x05;
    /// S→C: keep-alive, empty.
    pub const KEEP_ALIVE: u8 = 0x06;
    /// C→S: one byte, home server or not.
    pub const NOTE_PREFERRED: u8 = 0x07;
    /// S→C: peer key + reason.
    pub const PEER_GONE: u8 = 0x08;
    /// S→watchers: peer key [+ endpoint [+ flags]].
    pub const PEER_PRESENT: u8 = 0x09;
    /// Mesh→S: source key + destination key + packet.
    pub const FORWARD_PACKET: u8 = 0x0a;
    /// Mesh→S: subscribe to connects/disconnects, empty.
    pub const WATCH_CONNS: u8 = 0x10;
    /// Mesh→S: close a peer's connections.
    pub const CLOSE_PEER: u8 = 0x11;
    /// Either way: 8 bytes to echo.
    pub const PING: u8 = 0x12;
    /// Either way: the echoed 8 bytes.
    pub const PONG: u8 = 0x13;
    /// S→C: problem text.
    pub const HEALTH: u8 = 0x14;
    /// S→C: reconnect-in and try-for milliseconds.
    pub const RESTARTING: u8 = 0x15;
}
use frame_type as ft;

/// Why a server says a peer is gone (the PeerGone reason byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerGoneReason {
    /// `0x00`: the peer disconnected from this server (also what a reason-less frame means).
    Disconnected,
    /// `0x01`: the server does not know the destination.
    NotHere,
    /// Any other byte (`0xf0`, MeshConnBroke, is invented locally by mesh clients).
    Other(u8),
}

impl PeerGoneReason {
    /// The wire byte.
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Disconnected => 0x00,
            Self::NotHere => 0x01,
            Self::Other(b) => b,
        }
    }

    /// The reason a wire byte stands for.
    pub const fn from_byte(b: u8) -> Self {
        match b {
            0x00 => Self::Disconnected,
            0x01 => Self::NotHere,
            b => Self::Other(b),
        }
    }
}

/// PeerPresent flag bits. Zero means "old server that does not send flags".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PeerPresentFlags(pub u8);

impl PeerPresentFlags {
    /// A regular client (no other bit applies).
    pub const IS_REGULAR: u8 = 0x01;
    /// A mesh peer (connected with the mesh key).
    pub const IS_MESH_PEER: u8 = 0x02;
    /// A prober.
    pub const IS_PROBER: u8 = 0x04;
    /// The client connected to a node other than its region's first.
    pub const NOT_IDEAL: u8 = 0x08;
}

/// The optional tail of a PeerPresent frame: the client's address and, from current servers, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerEndpoint {
    /// The client's remote address (IPv4 travels v4-mapped and comes back unmapped).
    pub addr: SocketAddr,
    /// The flags byte, absent from older servers.
    pub flags: Option<PeerPresentFlags>,
}

/// A decoded frame, borrowing its variable parts from the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// S→C, first frame: the server's public key (after the magic).
    ServerKey {
        /// The server's node public key.
        key: PublicKey,
    },
    /// C→S, second frame: the client's key and its sealed ClientInfo.
    ClientInfo {
        /// The client's node public key.
        key: PublicKey,
        /// 24-byte nonce followed by the NaCl box of the ClientInfo JSON.
        sealed: &'a [u8],
    },
    /// S→C: the sealed ServerInfo.
    ServerInfo {
        /// 24-byte nonce followed by the NaCl box of the ServerInfo JSON.
        sealed: &'a [u8],
    },
    /// C→S: relay `packet` to `dst`.
    SendPacket {
        /// Destination node key.
        dst: PublicKey,
        /// The packet (at most [`MAX_PACKET_SIZE`] bytes).
        packet: &'a [u8],
    },
    /// Mesh peer → S: a packet another server of the region received for one of our clients.
    ForwardPacket {
        /// Original sender.
        src: PublicKey,
        /// Destination node key.
        dst: PublicKey,
        /// The packet (at most [`MAX_PACKET_SIZE`] bytes).
        packet: &'a [u8],
    },
    /// S→C: a relayed packet and who sent it.
    RecvPacket {
        /// Sender's node key.
        src: PublicKey,
        /// The packet.
        packet: &'a [u8],
    },
    /// S→C: keep-alive, no reply.
    KeepAlive,
    /// C→S: whether this server is the client's home.
    NotePreferred {
        /// True for home.
        preferred: bool,
    },
    /// S→C: a peer is gone or unknown.
    PeerGone {
        /// The peer's key.
        peer: PublicKey,
        /// Why.
        reason: PeerGoneReason,
    },
    /// S→watchers: a client connected.
    PeerPresent {
        /// The client's key.
        peer: PublicKey,
        /// Address and flags, when the server sent them.
        endpoint: Option<PeerEndpoint>,
    },
    /// Mesh peer → S: subscribe to connects and disconnects.
    WatchConns,
    /// Mesh peer → S: close every connection of `peer`.
    ClosePeer {
        /// The client to close.
        peer: PublicKey,
    },
    /// Either way: echo these 8 bytes in a Pong.
    Ping([u8; 8]),
    /// Either way: the answer to a Ping.
    Pong([u8; 8]),
    /// S→C: a problem text; empty clears it.
    Health {
        /// The UTF-8 text as sent (not validated).
        problem: &'a [u8],
    },
    /// S→C: the server is restarting.
    Restarting {
        /// Milliseconds to wait before reconnecting.
        reconnect_in_ms: u32,
        /// Milliseconds to keep trying.
        try_for_ms: u32,
    },
    /// A frame type this codec does not know; receivers ignore it.
    Unknown {
        /// The type byte.
        frame_type: u8,
        /// The payload.
        payload: &'a [u8],
    },
}

/// Why bytes could not be decoded into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces more bytes than the reader's limit; the stream cannot continue.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Announced payload length.
        len: u32,
        /// The reader's limit.
        limit: u32,
    },
    /// The payload is shorter than its type needs.
    #[error("frame type {frame_type:#04x}: payload of {len} bytes is too short")]
    Short {
        /// The type byte.
        frame_type: u8,
        /// Payload length.
        len: usize,
    },
    /// The payload length is not one the type allows (NotePreferred, WatchConns, ClosePeer, Ping).
    #[error("frame type {frame_type:#04x}: payload of {len} bytes has the wrong length")]
    BadLength {
        /// The type byte.
        frame_type: u8,
        /// Payload length.
        len: usize,
    },
    /// A packet frame carries more than [`MAX_PACKET_SIZE`] bytes of packet.
    #[error("packet of {len} bytes exceeds {MAX_PACKET_SIZE}")]
    PacketTooLarge {
        /// Packet length.
        len: usize,
    },
    /// A ServerKey frame without the DERP magic.
    #[error("server greeting without the DERP magic")]
    BadMagic,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is shorter than [`Frame::encoded_len`].
    #[error("output buffer of {have} bytes, frame needs {need}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A packet longer than [`MAX_PACKET_SIZE`].
    #[error("packet of {len} bytes exceeds {MAX_PACKET_SIZE}")]
    PacketTooLarge {
        /// Packet length.
        len: usize,
    },
    /// A payload longer than a `u32` length can state.
    #[error("payload of {len} bytes is too long for a frame")]
    PayloadTooLong {
        /// Payload length.
        len: usize,
    },
}

/// One frame cut from a stream: its type byte and payload, not yet interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The type byte.
    pub frame_type: u8,
    /// The payload (without the header).
    pub payload: &'a [u8],
}

/// Cuts the first complete frame off `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more and call again), or
/// the frame and the number of bytes it took (header included) — drop those from the buffer.
///
/// # Errors
/// [`FrameError::TooLarge`] as soon as the header announces more than `limit` payload bytes; the
/// connection cannot be resynchronised and should be closed.
pub fn next_frame(buf: &[u8], limit: u32) -> Result<Option<(RawFrame<'_>, usize)>, FrameError> {
    let Some((header, rest)) = buf.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let [frame_type, l0, l1, l2, l3] = *header;
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let Some(payload) = rest.get(..len as usize) else {
        return Ok(None);
    };
    Ok(Some((
        RawFrame {
            frame_type,
            payload,
        },
        FRAME_HEADER_LEN + payload.len(),
    )))
}

/// Cuts and parses the first frame of `buf` (see [`next_frame`] and [`RawFrame::parse`]).
///
/// # Errors
/// Any [`FrameError`]; after a payload error the frame's bytes are still consumed by a caller
/// using the two-step API, which this convenience does not expose.
pub fn decode(buf: &[u8], limit: u32) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    match next_frame(buf, limit)? {
        None => Ok(None),
        Some((raw, used)) => Ok(Some((raw.parse()?, used))),
    }
}

fn key_at(b: &[u8]) -> Option<(PublicKey, &[u8])> {
    let (k, rest) = b.split_first_chunk::<KEY_LEN>()?;
    Some((PublicKey::from_bytes(*k), rest))
}

impl<'a> RawFrame<'a> {
    /// Interprets the payload according to the type byte.
    ///
    /// # Errors
    /// [`FrameError::Short`], [`FrameError::BadLength`], [`FrameError::PacketTooLarge`] or
    /// [`FrameError::BadMagic`] when the payload does not fit its type.
    pub fn parse(&self) -> Result<Frame<'a>, FrameError> {
        let p = self.payload;
        let t = self.frame_type;
        let short = || FrameError::Short {
            frame_type: t,
            len: p.len(),
        };
        let bad_len = || FrameError::BadLength {
            frame_type: t,
            len: p.len(),
        };
        let packet_ok = |packet: &[u8]| {
            if packet.len() > MAX_PACKET_SIZE {
                Err(FrameError::PacketTooLarge { len: packet.len() })
            } else {
                Ok(())
            }
        };
        Ok(match t {
            ft::SERVER_KEY => {
                let (magic, rest) = p.split_first_chunk::<8>().ok_or_else(short)?;
                let (key, _future) = key_at(rest).ok_or_else(short)?;
                if *magic != MAGIC {
                    return Err(FrameError::BadMagic);
                }
                Frame::ServerKey { key }
            }
            ft::CLIENT_INFO => {
                if p.len() < MIN_CLIENT_INFO_LEN {
                    return Err(short());
                }
                let (key, sealed) = key_at(p).ok_or_else(short)?;
                Frame::ClientInfo { key, sealed }
            }
            ft::SERVER_INFO => {
                if p.len() < NONCE_LEN {
                    return Err(short());
                }
                Frame::ServerInfo { sealed: p }
            }
            ft::SEND_PACKET => {
                let (dst, packet) = key_at(p).ok_or_else(short)?;
                packet_ok(packet)?;
                Frame::SendPacket { dst, packet }
            }
            ft::FORWARD_PACKET => {
                let (src, rest) = key_at(p).ok_or_else(short)?;
                let (dst, packet) = key_at(rest).ok_or_else(short)?;
                packet_ok(packet)?;
                Frame::ForwardPacket { src, dst, packet }
            }
            ft::RECV_PACKET => {
                let (src, packet) = key_at(p).ok_or_else(short)?;
                packet_ok(packet)?;
                Frame::RecvPacket { src, packet }
            }
            ft::KEEP_ALIVE => Frame::KeepAlive,
            ft::NOTE_PREFERRED => match p {
                [b] => Frame::NotePreferred { preferred: *b != 0 },
                _ => return Err(bad_len()),
            },
            ft::PEER_GONE => {
                let (peer, rest) = key_at(p).ok_or_else(short)?;
                let reason = rest.first().map_or(PeerGoneReason::Disconnected, |b| {
                    PeerGoneReason::from_byte(*b)
                });
                Frame::PeerGone { peer, reason }
            }
            ft::PEER_PRESENT => {
                let (peer, rest) = key_at(p).ok_or_else(short)?;
                let endpoint = rest.split_first_chunk::<18>().map(|(ep, rest)| {
                    let (ip, port) = ep.split_at(16);
                    let mut ip16 = [0u8; 16];
                    ip16.copy_from_slice(ip);
                    let ip6 = Ipv6Addr::from(ip16);
                    let ip = ip6.to_ipv4_mapped().map_or(IpAddr::V6(ip6), IpAddr::V4);
                    let port = match port {
                        [a, b] => u16::from_be_bytes([*a, *b]),
                        _ => 0,
                    };
                    PeerEndpoint {
                        addr: SocketAddr::new(ip, port),
                        flags: rest.first().map(|f| PeerPresentFlags(*f)),
                    }
                });
                Frame::PeerPresent { peer, endpoint }
            }
            ft::WATCH_CONNS => {
                if !p.is_empty() {
                    return Err(bad_len());
                }
                Frame::WatchConns
            }
            ft::CLOSE_PEER => {
                let k: [u8; KEY_LEN] = p.try_into().map_err(|_| bad_len())?;
                Frame::ClosePeer {
                    peer: PublicKey::from_bytes(k),
                }
            }
            ft::PING | ft::PONG => {
                let (data, _extra) = p.split_first_chunk::<8>().ok_or_else(short)?;
                if p.len() > MAX_PING_LEN {
                    return Err(bad_len());
                }
                if t == ft::PING {
                    Frame::Ping(*data)
                } else {
                    Frame::Pong(*data)
                }
            }
            ft::HEALTH => Frame::Health { problem: p },
            ft::RESTARTING => {
                let (a, rest) = p.split_first_chunk::<4>().ok_or_else(short)?;
                let (b, _future) = rest.split_first_chunk::<4>().ok_or_else(short)?;
                Frame::Restarting {
                    reconnect_in_ms: u32::from_be_bytes(*a),
                    try_for_ms: u32::from_be_bytes(*b),
                }
            }
            other => Frame::Unknown {
                frame_type: other,
                payload: p,
            },
        })
    }
}

/// Writes `bytes` at `*at` in `out` and advances `at`. The caller sized `out` beforehand.
fn put(out: &mut [u8], at: &mut usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(*at..*at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    *at += bytes.len();
}

impl Frame<'_> {
    /// The type byte of this frame.
    pub fn frame_type(&self) -> u8 {
        match self {
            Self::ServerKey { .. } => ft::SERVER_KEY,
            Self::ClientInfo { .. } => ft::CLIENT_INFO,
            Self::ServerInfo { .. } => ft::SERVER_INFO,
            Self::SendPacket { .. } => ft::SEND_PACKET,
            Self::ForwardPacket { .. } => ft::FORWARD_PACKET,
            Self::RecvPacket { .. } => ft::RECV_PACKET,
            Self::KeepAlive => ft::KEEP_ALIVE,
            Self::NotePreferred { .. } => ft::NOTE_PREFERRED,
            Self::PeerGone { .. } => ft::PEER_GONE,
            Self::PeerPresent { .. } => ft::PEER_PRESENT,
            Self::WatchConns => ft::WATCH_CONNS,
            Self::ClosePeer { .. } => ft::CLOSE_PEER,
            Self::Ping(_) => ft::PING,
            Self::Pong(_) => ft::PONG,
            Self::Health { .. } => ft::HEALTH,
            Self::Restarting { .. } => ft::RESTARTING,
            Self::Unknown { frame_type, .. } => *frame_type,
        }
    }

    /// Payload length (without the 5-byte header).
    pub fn payload_len(&self) -> usize {
        match self {
            Self::ServerKey { .. } => MAGIC.len() + KEY_LEN,
            Self::ClientInfo { sealed, .. } => KEY_LEN + sealed.len(),
            Self::ServerInfo { sealed } => sealed.len(),
            Self::SendPacket { packet, .. } | Self::RecvPacket { packet, .. } => {
                KEY_LEN + packet.len()
            }
            Self::ForwardPacket { packet, .. } => 2 * KEY_LEN + packet.len(),
            Self::KeepAlive | Self::WatchConns => 0,
            Self::NotePreferred { .. } => 1,
            Self::PeerGone { .. } => KEY_LEN + 1,
            Self::PeerPresent { endpoint, .. } => match endpoint {
                None => KEY_LEN,
                Some(PeerEndpoint { flags: None, .. }) => KEY_LEN + 18,
                Some(PeerEndpoint { flags: Some(_), .. }) => PEER_PRESENT_LEN,
            },
            Self::ClosePeer { .. } => KEY_LEN,
            Self::Ping(_) | Self::Pong(_) | Self::Restarting { .. } => 8,
            Self::Health { problem } => problem.len(),
            Self::Unknown { payload, .. } => payload.len(),
        }
    }

    /// Whole encoded length, header included.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload_len()
    }

    fn check(&self) -> Result<(), EncodeError> {
        let packet_len = match self {
            Self::SendPacket { packet, .. }
            | Self::RecvPacket { packet, .. }
            | Self::ForwardPacket { packet, .. } => packet.len(),
            _ => 0,
        };
        if packet_len > MAX_PACKET_SIZE {
            return Err(EncodeError::PacketTooLarge { len: packet_len });
        }
        let len = self.payload_len();
        if u32::try_from(len).is_err() {
            return Err(EncodeError::PayloadTooLong { len });
        }
        Ok(())
    }

    /// Encodes the frame at the start of `out` and returns its length.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] when `out` is shorter than [`Self::encoded_len`],
    /// [`EncodeError::PacketTooLarge`] for a packet above [`MAX_PACKET_SIZE`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check()?;
        let need = self.encoded_len();
        if out.len() < need {
            return Err(EncodeError::BufferTooSmall {
                need,
                have: out.len(),
            });
        }
        let mut at = 0;
        put(out, &mut at, &[self.frame_type()]);
        // check() proved the payload length fits a u32.
        put(out, &mut at, &(self.payload_len() as u32).to_be_bytes());
        match self {
            Self::ServerKey { key } => {
                put(out, &mut at, &MAGIC);
                put(out, &mut at, key.as_bytes());
            }
            Self::ClientInfo { key, sealed } => {
                put(out, &mut at, key.as_bytes());
                put(out, &mut at, sealed);
            }
            Self::ServerInfo { sealed } => put(out, &mut at, sealed),
            Self::SendPacket { dst: k, packet } | Self::RecvPacket { src: k, packet } => {
                put(out, &mut at, k.as_bytes());
                put(out, &mut at, packet);
            }
            Self::ForwardPacket { src, dst, packet } => {
                put(out, &mut at, src.as_bytes());
                put(out, &mut at, dst.as_bytes());
                put(out, &mut at, packet);
            }
            Self::KeepAlive | Self::WatchConns => {}
            Self::NotePreferred { preferred } => put(out, &mut at, &[u8::from(*preferred)]),
            Self::PeerGone { peer, reason } => {
                put(out, &mut at, peer.as_bytes());
                put(out, &mut at, &[reason.to_byte()]);
            }
            Self::PeerPresent { peer, endpoint } => {
                put(out, &mut at, peer.as_bytes());
                if let Some(ep) = endpoint {
                    let ip16 = match ep.addr.ip() {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                        IpAddr::V6(v6) => v6.octets(),
                    };
                    put(out, &mut at, &ip16);
                    put(out, &mut at, &ep.addr.port().to_be_bytes());
                    if let Some(f) = ep.flags {
                        put(out, &mut at, &[f.0]);
                    }
                }
            }
            Self::ClosePeer { peer } => put(out, &mut at, peer.as_bytes()),
            Self::Ping(d) | Self::Pong(d) => put(out, &mut at, d),
            Self::Health { problem } => put(out, &mut at, problem),
            Self::Restarting {
                reconnect_in_ms,
                try_for_ms,
            } => {
                put(out, &mut at, &reconnect_in_ms.to_be_bytes());
                put(out, &mut at, &try_for_ms.to_be_bytes());
            }
            Self::Unknown { payload, .. } => put(out, &mut at, payload),
        }
        Ok(at)
    }

    /// Appends the encoded frame to `out` (no allocation when `out` has the capacity).
    ///
    /// # Errors
    /// [`EncodeError::PacketTooLarge`] for a packet above [`MAX_PACKET_SIZE`]; `out` is unchanged.
    pub fn encode_to_vec(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.check()?;
        let start = out.len();
        out.resize(start + self.encoded_len(), 0);
        let tail = out.get_mut(start..).unwrap_or_default();
        match self.encode(tail) {
            Ok(_) => Ok(()),
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}

/// Whether `packet` looks like a sealed disco message (magic `"TS💬"`, then sender key and
/// nonce), which the server queues separately and answers with PeerGone(NotHere) when undeliverable.
pub fn looks_like_disco(packet: &[u8]) -> bool {
    const DISCO_MAGIC: [u8; 6] = [0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac];
    packet.len() >= DISCO_MAGIC.len() + KEY_LEN + NONCE_LEN && packet.starts_with(&DISCO_MAGIC)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
