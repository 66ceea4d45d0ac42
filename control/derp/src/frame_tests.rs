use super::*;
use proptest::prelude::*;

fn k(b: u8) -> PublicKey {
    PublicKey::from_bytes([b; 32])
}

fn encode(f: &Frame<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    f.encode_to_vec(&mut v).unwrap();
    v
}

fn parse(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (f, used) = decode(bytes, CLIENT_MAX_FRAME_LEN)?.expect("complete frame");
    assert_eq!(used, bytes.len());
    Ok(f)
}

// Byte vectors from upstream derp/client_test.go (TestClientRecv, TestClientSendPing/Pong).
#[test]
fn upstream_client_recv_vectors() {
    assert_eq!(
        parse(&[0x12, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
        Frame::Ping([1, 2, 3, 4, 5, 6, 7, 8])
    );
    assert_eq!(
        parse(&[0x13, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
        Frame::Pong([1, 2, 3, 4, 5, 6, 7, 8])
    );
    assert_eq!(
        parse(&[0x14, 0, 0, 0, 3, b'B', b'A', b'D']).unwrap(),
        Frame::Health { problem: b"BAD" }
    );
    assert_eq!(
        parse(&[0x14, 0, 0, 0, 0]).unwrap(),
        Frame::Health { problem: b"" }
    );
    assert_eq!(
        parse(&[0x15, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 2]).unwrap(),
        Frame::Restarting {
            reconnect_in_ms: 1,
            try_for_ms: 2
        }
    );
    assert_eq!(
        encode(&Frame::Ping([1, 2, 3, 4, 5, 6, 7, 8])),
        [0x12, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]
    );
}

#[test]
fn server_key_layout() {
    let bytes = encode(&Frame::ServerKey { key: k(7) });
    assert_eq!(bytes.len(), 45);
    assert_eq!(&bytes[..5], &[0x01, 0, 0, 0, 40]);
    assert_eq!(&bytes[5..13], b"DERP\xf0\x9f\x94\x91");
    assert_eq!(&bytes[13..], &[7u8; 32]);
    // Future fields after the key are accepted and ignored.
    let mut longer = bytes.clone();
    longer[4] = 43;
    longer.extend_from_slice(b"new");
    assert_eq!(parse(&longer).unwrap(), Frame::ServerKey { key: k(7) });
    // Wrong magic.
    let mut bad = bytes;
    bad[5] = b'X';
    assert_eq!(parse(&bad), Err(FrameError::BadMagic));
}

#[test]
fn peer_present_forms() {
    // Current servers: 51 bytes with a v4-mapped IPv4 address.
    let ep = PeerEndpoint {
        addr: "192.0.2.7:41641".parse().unwrap(),
        flags: Some(PeerPresentFlags(PeerPresentFlags::IS_REGULAR)),
    };
    let bytes = encode(&Frame::PeerPresent {
        peer: k(3),
        endpoint: Some(ep),
    });
    assert_eq!(bytes.len(), 5 + PEER_PRESENT_LEN);
    assert_eq!(
        &bytes[37..55],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7, 0xa2, 0xa9]
    );
    assert_eq!(bytes[55], 1);
    // Older servers: key only, or key + endpoint.
    assert_eq!(
        parse(&bytes_with_len(0x09, &bytes[5..37])).unwrap(),
        Frame::PeerPresent {
            peer: k(3),
            endpoint: None
        }
    );
    let no_flags_bytes = bytes_with_len(0x09, &bytes[5..55]);
    let no_flags = parse(&no_flags_bytes).unwrap();
    assert_eq!(
        no_flags,
        Frame::PeerPresent {
            peer: k(3),
            endpoint: Some(PeerEndpoint {
                addr: ep.addr,
                flags: None
            })
        }
    );
}

#[test]
fn peer_gone_without_reason_is_disconnected() {
    let bytes = bytes_with_len(0x08, &[9; 32]);
    let f = parse(&bytes).unwrap();
    assert_eq!(
        f,
        Frame::PeerGone {
            peer: k(9),
            reason: PeerGoneReason::Disconnected
        }
    );
    let mut p = vec![9; 32];
    p.push(1);
    assert_eq!(
        parse(&bytes_with_len(0x08, &p)).unwrap(),
        Frame::PeerGone {
            peer: k(9),
            reason: PeerGoneReason::NotHere
        }
    );
}

#[test]
fn length_rules() {
    // NotePreferred must be exactly one byte.
    assert!(matches!(
        parse(&bytes_with_len(0x07, &[1, 1])),
        Err(FrameError::BadLength { .. })
    ));
    assert!(matches!(
        parse(&bytes_with_len(0x07, &[])),
        Err(FrameError::BadLength { .. })
    ));
    // WatchConns is empty, ClosePeer exactly a key.
    assert!(parse(&bytes_with_len(0x10, &[0])).is_err());
    assert!(parse(&bytes_with_len(0x11, &[0; 31])).is_err());
    assert!(parse(&bytes_with_len(0x11, &[0; 33])).is_err());
    // Short packet frames.
    assert!(matches!(
        parse(&bytes_with_len(0x04, &[0; 31])),
        Err(FrameError::Short { .. })
    ));
    assert!(matches!(
        parse(&bytes_with_len(0x0a, &[0; 63])),
        Err(FrameError::Short { .. })
    ));
    // ClientInfo needs key and nonce.
    assert!(parse(&bytes_with_len(0x02, &[0; 55])).is_err());
    assert!(parse(&bytes_with_len(0x02, &[0; 56])).is_ok());
    // Ping: at least 8, at most 1000 bytes; extra bytes ignored.
    assert!(parse(&bytes_with_len(0x12, &[0; 7])).is_err());
    assert_eq!(
        parse(&bytes_with_len(0x12, &[5; 1000])).unwrap(),
        Frame::Ping([5; 8])
    );
    assert!(parse(&bytes_with_len(0x12, &[5; 1001])).is_err());
}

#[test]
fn packet_size_limits() {
    let max = vec![0u8; MAX_PACKET_SIZE];
    let f = Frame::SendPacket {
        dst: k(1),
        packet: &max,
    };
    let bytes = encode(&f);
    assert_eq!(parse(&bytes).unwrap(), f);
    let over = vec![0u8; MAX_PACKET_SIZE + 1];
    let too_big = Frame::SendPacket {
        dst: k(1),
        packet: &over,
    };
    let mut out = Vec::new();
    assert_eq!(
        too_big.encode_to_vec(&mut out),
        Err(EncodeError::PacketTooLarge {
            len: MAX_PACKET_SIZE + 1
        })
    );
    assert!(out.is_empty());
    let mut payload = vec![1u8; 32];
    payload.extend_from_slice(&over);
    assert_eq!(
        parse(&bytes_with_len(0x04, &payload)),
        Err(FrameError::PacketTooLarge {
            len: MAX_PACKET_SIZE + 1
        })
    );
}

#[test]
fn stream_cutting() {
    let mut stream = encode(&Frame::KeepAlive);
    stream.extend(encode(&Frame::Ping([1; 8])));
    // Incomplete header and incomplete payload ask for more.
    assert_eq!(next_frame(&stream[..3], 100).unwrap(), None);
    assert_eq!(next_frame(&stream[5..12], 100).unwrap(), None);
    let (f, used) = decode(&stream, 100).unwrap().unwrap();
    assert_eq!((f, used), (Frame::KeepAlive, 5));
    let (f, used) = decode(&stream[5..], 100).unwrap().unwrap();
    assert_eq!((f, used), (Frame::Ping([1; 8]), 13));
    // An oversize length is refused from the header alone.
    assert_eq!(
        next_frame(&[0x04, 0xff, 0xff, 0xff, 0xff], SERVER_MAX_FRAME_LEN),
        Err(FrameError::TooLarge {
            len: u32::MAX,
            limit: SERVER_MAX_FRAME_LEN
        })
    );
}

#[test]
fn unknown_types_are_kept_for_skipping() {
    let bytes = bytes_with_len(0x7f, b"later");
    let f = parse(&bytes).unwrap();
    assert_eq!(
        f,
        Frame::Unknown {
            frame_type: 0x7f,
            payload: b"later"
        }
    );
}

#[test]
fn encode_into_short_buffer_fails() {
    let f = Frame::Ping([0; 8]);
    let mut buf = [0u8; 12];
    assert_eq!(
        f.encode(&mut buf),
        Err(EncodeError::BufferTooSmall { need: 13, have: 12 })
    );
    let mut buf = [0u8; 20];
    assert_eq!(f.encode(&mut buf), Ok(13));
}

#[test]
fn disco_detection() {
    let mut p = vec![0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac];
    p.resize(6 + 32 + 24, 0);
    assert!(looks_like_disco(&p));
    assert!(!looks_like_disco(&p[..p.len() - 1]));
    p[0] = 0;
    assert!(!looks_like_disco(&p));
}

fn bytes_with_len(t: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An owned frame description, so proptest can generate frames that borrow from it.
#[derive(Debug, Clone)]
struct Owned {
    kind: u8,
    k1: [u8; 32],
    k2: [u8; 32],
    bytes: Vec<u8>,
    small: [u8; 8],
    flag: bool,
    addr: SocketAddr,
    tail: u8,
}

impl Owned {
    fn frame(&self) -> Frame<'_> {
        let (k1, k2) = (
            PublicKey::from_bytes(self.k1),
            PublicKey::from_bytes(self.k2),
        );
        let packet = &self.bytes[..self.bytes.len().min(MAX_PACKET_SIZE)];
        match self.kind % 18 {
            0 => Frame::ServerKey { key: k1 },
            1 => Frame::ClientInfo {
                key: k1,
                sealed: &self.bytes[..self.bytes.len().max(NONCE_LEN).min(self.bytes.len())],
            },
            2 => Frame::ServerInfo {
                sealed: &self.bytes,
            },
            3 => Frame::SendPacket { dst: k1, packet },
            4 => Frame::ForwardPacket {
                src: k1,
                dst: k2,
                packet,
            },
            5 => Frame::RecvPacket { src: k1, packet },
            6 => Frame::KeepAlive,
            7 => Frame::NotePreferred {
                preferred: self.flag,
            },
            8 => Frame::PeerGone {
                peer: k1,
                reason: PeerGoneReason::from_byte(self.tail),
            },
            9 => Frame::PeerPresent {
                peer: k1,
                endpoint: match self.tail % 3 {
                    0 => None,
                    1 => Some(PeerEndpoint {
                        addr: self.addr,
                        flags: None,
                    }),
                    _ => Some(PeerEndpoint {
                        addr: self.addr,
                        flags: Some(PeerPresentFlags(self.tail)),
                    }),
                },
            },
            10 => Frame::WatchConns,
            11 => Frame::ClosePeer { peer: k1 },
            12 => Frame::Ping(self.small),
            13 => Frame::Pong(self.small),
            14 => Frame::Health {
                problem: &self.bytes,
            },
            15 => Frame::Restarting {
                reconnect_in_ms: u32::from_be_bytes([
                    self.small[0],
                    self.small[1],
                    self.small[2],
                    self.small[3],
                ]),
                try_for_ms: u32::from_be_bytes([
                    self.small[4],
                    self.small[5],
                    self.small[6],
                    self.small[7],
                ]),
            },
            16 => Frame::Unknown {
                frame_type: 0x20 | self.tail,
                payload: &self.bytes,
            },
            _ => Frame::Unknown {
                frame_type: 0,
                payload: &self.bytes,
            },
        }
    }
}

fn addr_strategy() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>())
            // A v4-mapped IPv6 address comes back as IPv4, as in the official client.
            .prop_filter("not v4-mapped", |(ip, _)| Ipv6Addr::from(*ip)
                .to_ipv4_mapped()
                .is_none())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
    ]
}

fn owned_strategy() -> impl Strategy<Value = Owned> {
    (
        any::<u8>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 24..200),
        any::<[u8; 8]>(),
        any::<bool>(),
        addr_strategy(),
        any::<u8>(),
    )
        .prop_map(|(kind, k1, k2, bytes, small, flag, addr, tail)| Owned {
            kind,
            k1,
            k2,
            bytes,
            small,
            flag,
            addr,
            tail,
        })
}

proptest! {
    #[test]
    fn frames_round_trip(o in owned_strategy()) {
        let f = o.frame();
        let bytes = encode(&f);
        prop_assert_eq!(bytes.len(), f.encoded_len());
        let (back, used) = decode(&bytes, CLIENT_MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&back, &f);
        // Re-encoding the parsed frame gives the same bytes (canonical forms).
        prop_assert_eq!(encode(&back), bytes.clone());
        // Every strict prefix is "need more", never an error.
        for cut in [0, 1, 4, 5, bytes.len() / 2, bytes.len() - 1].into_iter().filter(|c| *c < bytes.len()) {
            prop_assert_eq!(next_frame(&bytes[..cut], CLIENT_MAX_FRAME_LEN).unwrap(), None);
        }
    }

    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut rest = &bytes[..];
        while let Ok(Some((raw, used))) = next_frame(rest, SERVER_MAX_FRAME_LEN) {
            prop_assert!(used >= FRAME_HEADER_LEN && used <= rest.len());
            if let Ok(f) = raw.parse() {
                let again = encode(&f);
                let (g, _) = decode(&again, CLIENT_MAX_FRAME_LEN).unwrap().unwrap();
                prop_assert_eq!(g, f);
            }
            rest = &rest[used..];
        }
    }

    #[test]
    fn typed_headers_never_panic(t in any::<u8>(), payload in prop::collection::vec(any::<u8>(), 0..80)) {
        let bytes = bytes_with_len(t, &payload);
        let _ = decode(&bytes, CLIENT_MAX_FRAME_LEN);
    }
}
