use std::time::{Duration, Instant};

use weft_keys::{PrivateKey, PublicKey};

use super::*;
use crate::frame::{self, Frame, PeerGoneReason, CLIENT_MAX_FRAME_LEN};
use crate::handshake::{self, ClientInfo, MeshKey};

const MESH: [u8; 32] = [0x6d; 32];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    ServerInfo,
    Recv(PublicKey, Vec<u8>),
    Gone(PublicKey, PeerGoneReason),
    Present(PublicKey, Option<PeerEndpoint>),
    Pong([u8; 8]),
    KeepAlive,
    Health(Vec<u8>),
    Restarting(u32, u32),
}

struct Harness {
    s: Server,
    t0: Instant,
}

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

fn pk(n: u8) -> PublicKey {
    key(n).public_key()
}

fn disco_packet(tag: u8) -> Vec<u8> {
    let mut p = vec![0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac];
    p.resize(6 + 32 + 24 + 8, tag);
    p
}

impl Harness {
    fn new() -> Self {
        Self::with_queue_depth(32)
    }

    #[allow(clippy::disallowed_methods)] // Tests pick an arbitrary base instant; only offsets matter.
    fn with_queue_depth(depth: usize) -> Self {
        let mut config = ServerConfig::new(key(200));
        config.mesh_key = Some(MeshKey::from_bytes(MESH));
        config.send_queue_depth = depth;
        Self {
            s: Server::new(config, [42; 32]),
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn connect(&mut self, n: u8) -> ConnId {
        self.connect_with(n, ClientInfo::default(), ConnOptions::default())
    }

    fn connect_mesh(&mut self, n: u8) -> ConnId {
        let info = ClientInfo {
            mesh_key: Some(MeshKey::from_bytes(MESH)),
            ..ClientInfo::default()
        };
        self.connect_with(n, info, ConnOptions::default())
    }

    fn connect_with(&mut self, n: u8, info: ClientInfo, opts: ConnOptions) -> ConnId {
        let id = self.s.accept(self.t0, pk(n), &info, opts);
        assert_eq!(self.drain(id), vec![Out::ServerInfo]);
        id
    }

    fn send(&mut self, from: ConnId, frame: Frame<'_>) -> Result<(), ServerError> {
        let mut bytes = Vec::new();
        frame.encode_to_vec(&mut bytes).unwrap();
        let now = self.t0;
        let used = self.s.handle_input(from, now, &bytes)?;
        assert_eq!(used, bytes.len());
        Ok(())
    }

    fn send_packet(&mut self, from: ConnId, dst: u8, packet: &[u8]) {
        self.send(
            from,
            Frame::SendPacket {
                dst: pk(dst),
                packet,
            },
        )
        .unwrap();
    }

    /// Everything the server would write to `conn` now.
    fn drain(&mut self, conn: ConnId) -> Vec<Out> {
        let mut bytes = Vec::new();
        while self.s.poll_transmit(conn, &mut bytes, 1 << 20) {}
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while let Some((f, used)) = frame::decode(rest, CLIENT_MAX_FRAME_LEN).unwrap() {
            out.push(match f {
                Frame::ServerInfo { .. } => Out::ServerInfo,
                Frame::RecvPacket { src, packet } => Out::Recv(src, packet.to_vec()),
                Frame::PeerGone { peer, reason } => Out::Gone(peer, reason),
                Frame::PeerPresent { peer, endpoint } => Out::Present(peer, endpoint),
                Frame::Pong(d) => Out::Pong(d),
                Frame::KeepAlive => Out::KeepAlive,
                Frame::Health { problem } => Out::Health(problem.to_vec()),
                Frame::Restarting {
                    reconnect_in_ms,
                    try_for_ms,
                } => Out::Restarting(reconnect_in_ms, try_for_ms),
                other => panic!("server wrote {other:?}"),
            });
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }
}

#[test]
fn handshake_through_the_server() {
    let mut h = Harness::new();
    let client = key(1);
    let mut hello = Vec::new();
    h.s.write_server_key(&mut hello);
    let Frame::ServerKey { key: server_key } = frame::decode(&hello, CLIENT_MAX_FRAME_LEN)
        .unwrap()
        .unwrap()
        .0
    else {
        panic!("no server key");
    };
    assert_eq!(server_key, pk(200));

    let info = ClientInfo {
        version: 2,
        can_ack_pings: true,
        ..ClientInfo::default()
    };
    let mut ci = Vec::new();
    handshake::write_client_info(&client, &server_key, &info, [3; 24], &mut ci).unwrap();
    // Partial input waits for the rest.
    assert_eq!(h.s.read_client_info(&ci[..40]).unwrap(), None);
    let (k, got, used) = h.s.read_client_info(&ci).unwrap().unwrap();
    assert_eq!((k, &got, used), (client.public_key(), &info, ci.len()));
    assert!(!h.s.is_mesh_peer(&got));

    let id = h.s.accept(h.t0, k, &got, ConnOptions::default());
    assert_eq!(h.events(), vec![Event::Wake(id)]);
    let mut out = Vec::new();
    assert!(!h.s.poll_transmit(id, &mut out, 4096));
    let Frame::ServerInfo { sealed } = frame::decode(&out, CLIENT_MAX_FRAME_LEN)
        .unwrap()
        .unwrap()
        .0
    else {
        panic!("no server info");
    };
    let si = handshake::open_server_info(&client, &server_key, sealed).unwrap();
    assert_eq!(si.version, 2);
}

#[test]
fn handshake_refusals() {
    let h = Harness::new();
    // Another frame first.
    let mut b = Vec::new();
    Frame::Ping([0; 8]).encode_to_vec(&mut b).unwrap();
    assert_eq!(
        h.s.read_client_info(&b),
        Err(ServerError::NotClientInfo(0x12))
    );
    // Sealed to the wrong server.
    let mut ci = Vec::new();
    handshake::write_client_info(&key(1), &pk(99), &ClientInfo::default(), [0; 24], &mut ci)
        .unwrap();
    assert!(matches!(
        h.s.read_client_info(&ci),
        Err(ServerError::Handshake(_))
    ));
    // An oversize ClientInfo is refused from its header.
    let huge = [0x02, 0x00, 0x04, 0x00, 0x01];
    assert!(matches!(
        h.s.read_client_info(&huge),
        Err(ServerError::Frame(FrameError::TooLarge { .. }))
    ));
}

#[test]
fn packets_are_relayed_with_the_source_key() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    h.events();
    h.send_packet(a, 2, b"hello");
    assert_eq!(h.events(), vec![Event::Wake(b)]);
    assert_eq!(h.drain(b), vec![Out::Recv(pk(1), b"hello".to_vec())]);
    assert!(h.drain(a).is_empty());
    let st = h.s.stats();
    assert_eq!((st.packets_received, st.bytes_received), (1, 5));
    assert_eq!((st.packets_sent, st.bytes_sent), (1, 5));
    assert_eq!(st.drops.total_packets(), 0);
}

#[test]
fn unknown_destination_is_dropped_and_counted() {
    let mut h = Harness::new();
    let a = h.connect(1);
    h.send_packet(a, 9, b"nobody");
    assert!(h.drain(a).is_empty(), "no PeerGone for a non-disco packet");
    assert_eq!(
        h.s.stats().drops.get(DropReason::UnknownDest, false),
        DropCount {
            packets: 1,
            bytes: 6
        }
    );
}

#[test]
fn undeliverable_disco_gets_rate_limited_not_here() {
    let mut h = Harness::new();
    let a = h.connect(1);
    for _ in 0..5 {
        h.send_packet(a, 9, &disco_packet(1));
    }
    // Burst of three.
    assert_eq!(
        h.drain(a),
        vec![Out::Gone(pk(9), PeerGoneReason::NotHere); 3]
    );
    assert_eq!(
        h.s.stats().drops.get(DropReason::UnknownDest, true).packets,
        5
    );
    assert_eq!(h.s.stats().peer_gone_not_here_frames, 3);
    // One more token a second later.
    let later = h.at(1);
    let p = disco_packet(1);
    let mut b = Vec::new();
    Frame::SendPacket {
        dst: pk(9),
        packet: &p,
    }
    .encode_to_vec(&mut b)
    .unwrap();
    h.s.handle_input(a, later, &b).unwrap();
    h.s.handle_input(a, later, &b).unwrap();
    assert_eq!(h.drain(a), vec![Out::Gone(pk(9), PeerGoneReason::NotHere)]);
}

#[test]
fn a_slow_client_loses_its_own_oldest_packets() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let slow = h.connect(2);
    let fast = h.connect(3);
    for i in 0..40u8 {
        h.send_packet(a, 2, &[i]);
        h.send_packet(a, 3, &[i]);
        assert_eq!(h.drain(fast), vec![Out::Recv(pk(1), vec![i])]);
    }
    // Disco has its own queue, untouched by the flood.
    h.send_packet(a, 2, &disco_packet(7));
    let got = h.drain(slow);
    assert_eq!(got.len(), 33);
    assert_eq!(got[0], Out::Recv(pk(1), disco_packet(7)));
    let expect: Vec<Out> = (8..40u8).map(|i| Out::Recv(pk(1), vec![i])).collect();
    assert_eq!(&got[1..], &expect[..]);
    assert_eq!(
        h.s.stats().drops.get(DropReason::QueueHead, false),
        DropCount {
            packets: 8,
            bytes: 8
        }
    );
}

#[test]
fn transmit_respects_the_byte_budget() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    for _ in 0..4 {
        h.send_packet(a, 2, &[0; 100]);
    }
    let mut out = Vec::new();
    assert!(h.s.poll_transmit(b, &mut out, 150));
    assert_eq!(out.len(), 2 * (5 + 32 + 100));
    assert!(!h.s.poll_transmit(b, &mut out, 1000));
    assert_eq!(out.len(), 4 * (5 + 32 + 100));
    // Drained: the next packet wakes the connection again.
    h.events();
    h.send_packet(a, 2, &[1]);
    assert_eq!(h.events(), vec![Event::Wake(b)]);
}

#[test]
fn duplicate_connections_last_writer_is_active() {
    let mut h = Harness::new();
    let sender = h.connect(1);
    let old = h.connect(2);
    let new = h.connect(2);
    assert_eq!(h.s.active_conn(&pk(2)), Some(new));
    assert_eq!(h.s.stats().duplicate_client_keys, 1);
    assert_eq!(h.s.stats().duplicate_client_conns, 2);
    h.send_packet(sender, 2, b"to-new");
    assert_eq!(h.drain(new), vec![Out::Recv(pk(1), b"to-new".to_vec())]);
    assert!(h.drain(old).is_empty());
    // The old connection speaks: it becomes the active one.
    h.send(old, Frame::NotePreferred { preferred: true })
        .unwrap();
    assert_eq!(h.s.active_conn(&pk(2)), Some(old));
    h.send_packet(sender, 2, b"to-old");
    assert_eq!(h.drain(old), vec![Out::Recv(pk(1), b"to-old".to_vec())]);
    assert!(h.drain(new).is_empty());
    // Closing one of two leaves the other active, and nobody hears the key left.
    h.s.disconnect(old);
    assert_eq!(h.s.active_conn(&pk(2)), Some(new));
    assert_eq!(h.s.stats().duplicate_client_keys, 0);
    assert_eq!(h.s.stats().duplicate_client_conns, 0);
    assert!(h.drain(sender).is_empty());
    assert_eq!(h.s.stats().current_home_clients, 0);
}

#[test]
fn three_duplicates_fall_back_to_the_last_sender() {
    let mut h = Harness::new();
    let c1 = h.connect(2);
    let c2 = h.connect(2);
    let c3 = h.connect(2);
    assert_eq!(h.s.stats().duplicate_client_conns, 3);
    h.send(c2, Frame::Ping([0; 8])).unwrap();
    h.send(c3, Frame::Ping([0; 8])).unwrap();
    assert_eq!(h.s.active_conn(&pk(2)), Some(c3));
    h.s.disconnect(c3);
    assert_eq!(h.s.active_conn(&pk(2)), Some(c2));
    h.s.disconnect(c2);
    assert_eq!(h.s.active_conn(&pk(2)), Some(c1));
    assert_eq!(h.s.stats().duplicate_client_conns, 0);
}

#[test]
fn peer_gone_goes_to_clients_that_received_from_the_leaver() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    let c = h.connect(3);
    h.send_packet(a, 2, b"x");
    h.drain(b);
    h.s.disconnect(a);
    assert_eq!(
        h.drain(b),
        vec![Out::Gone(pk(1), PeerGoneReason::Disconnected)]
    );
    assert!(h.drain(c).is_empty());
    assert_eq!(h.s.stats().peer_gone_disconnected_frames, 1);
    // The receiver leaving first unregisters it: no stale notifications.
    let a2 = h.connect(1);
    h.send_packet(a2, 3, b"y");
    h.drain(c);
    h.s.disconnect(c);
    h.s.disconnect(a2);
    assert!(h.drain(b).is_empty());
}

#[test]
fn no_peer_gone_while_a_duplicate_remains() {
    let mut h = Harness::new();
    let a1 = h.connect(1);
    let _a2 = h.connect(1);
    let b = h.connect(2);
    h.send_packet(a1, 2, b"x");
    h.drain(b);
    h.s.disconnect(a1);
    assert!(h.drain(b).is_empty());
}

#[test]
fn queued_packets_of_a_closed_connection_count_as_gone() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    h.send_packet(a, 2, b"lost");
    h.s.disconnect(b);
    assert_eq!(
        h.s.stats().drops.get(DropReason::GoneDisconnected, false),
        DropCount {
            packets: 1,
            bytes: 4
        }
    );
    assert!(!h.s.poll_transmit(b, &mut Vec::new(), 100));
    assert_eq!(
        h.s.handle_input(b, h.t0, &[0x06, 0, 0, 0, 0]),
        Err(ServerError::UnknownConn)
    );
}

#[test]
fn ping_pong_with_a_single_slot() {
    let mut h = Harness::new();
    let a = h.connect(1);
    h.send(a, Frame::Ping([1; 8])).unwrap();
    h.send(a, Frame::Ping([2; 8])).unwrap();
    assert_eq!(h.drain(a), vec![Out::Pong([1; 8])]);
    assert_eq!(h.s.stats().pings_ignored, 1);
    // Extra ping bytes are ignored; the 8 first are echoed.
    let mut p = vec![9u8; 8];
    p.extend_from_slice(&[0; 100]);
    let mut bytes = vec![0x12, 0, 0, 0, 108];
    bytes.extend_from_slice(&p);
    h.s.handle_input(a, h.t0, &bytes).unwrap();
    assert_eq!(h.drain(a), vec![Out::Pong([9; 8])]);
    // A short ping is fatal, as upstream.
    assert!(h
        .s
        .handle_input(a, h.t0, &[0x12, 0, 0, 0, 2, 1, 2])
        .is_err());
}

#[test]
fn note_preferred_bookkeeping() {
    let mut h = Harness::new();
    let a = h.connect(1);
    h.send(a, Frame::NotePreferred { preferred: true }).unwrap();
    h.send(a, Frame::NotePreferred { preferred: true }).unwrap();
    assert_eq!(h.s.stats().current_home_clients, 1);
    h.send(a, Frame::NotePreferred { preferred: false })
        .unwrap();
    assert_eq!(h.s.stats().current_home_clients, 0);
    h.send(a, Frame::NotePreferred { preferred: true }).unwrap();
    h.s.disconnect(a);
    assert_eq!(h.s.stats().current_home_clients, 0);
    let b = h.connect(2);
    assert!(matches!(
        h.s.handle_input(b, h.t0, &[0x07, 0, 0, 0, 2, 1, 1]),
        Err(ServerError::Frame(FrameError::BadLength { .. }))
    ));
}

#[path = "tests_mesh.rs"]
mod mesh;

#[path = "tests_model.rs"]
mod model;
