use super::*;
use crate::server::{Server, ServerConfig};

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

#[allow(clippy::disallowed_methods)] // Tests pick an arbitrary base instant; only offsets matter.
fn t0() -> Instant {
    Instant::now()
}

fn frame_bytes(f: &Frame<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    f.encode_to_vec(&mut v).unwrap();
    v
}

fn greeted(now: Instant) -> (Client, Server) {
    let server = Server::new(ServerConfig::new(key(100)), [1; 32]);
    let mut c = Client::new(ClientConfig::new(key(1)), now, [2; 32]).unwrap();
    let mut hello = Vec::new();
    server.write_server_key(&mut hello);
    assert_eq!(c.handle_input(now, &hello), Ok(hello.len()));
    (c, server)
}

#[test]
fn greeting_then_client_info_the_server_opens() {
    let now = t0();
    let (mut c, server) = greeted(now);
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::Connected {
            server_key: server.public_key()
        })
    );
    let mut out = Vec::new();
    assert!(c.poll_transmit(&mut out));
    let (k, info, used) = server.read_client_info(&out).unwrap().unwrap();
    assert_eq!((k, used), (c.public_key(), out.len()));
    assert_eq!(info.version, 2);
    assert!(info.can_ack_pings);
    assert!(!c.poll_transmit(&mut out));
}

#[test]
fn bad_greetings_are_fatal() {
    let now = t0();
    let mut c = Client::new(ClientConfig::new(key(1)), now, [0; 32]).unwrap();
    assert_eq!(
        c.handle_input(now, &frame_bytes(&Frame::KeepAlive)),
        Err(ClientError::BadGreeting)
    );
    let mut c = Client::new(ClientConfig::new(key(1)), now, [0; 32]).unwrap();
    let mut bad = frame_bytes(&Frame::ServerKey {
        key: key(5).public_key(),
    });
    bad[6] ^= 1;
    assert_eq!(c.handle_input(now, &bad), Err(ClientError::BadGreeting));
    // A greeting over 1 KiB is refused from its header.
    let mut c = Client::new(ClientConfig::new(key(1)), now, [0; 32]).unwrap();
    assert_eq!(
        c.handle_input(now, &[0x01, 0, 0, 0x08, 0]),
        Err(ClientError::BadGreeting)
    );
    assert!(!c.is_connected());
    assert_eq!(
        c.send_packet(key(2).public_key(), b"x"),
        Err(ClientError::NotConnected)
    );
}

#[test]
fn pinned_server_key_sends_client_info_at_once_and_checks_the_greeting() {
    let now = t0();
    let mut cfg = ClientConfig::new(key(1));
    cfg.server_key = Some(key(100).public_key());
    let mut c = Client::new(cfg.clone(), now, [0; 32]).unwrap();
    assert!(c.is_connected());
    assert!(c.poll_transmit(&mut Vec::new()));
    c.send_packet(key(2).public_key(), b"early").unwrap();
    let good = frame_bytes(&Frame::ServerKey {
        key: key(100).public_key(),
    });
    assert!(c.handle_input(now, &good).is_ok());
    let mut c = Client::new(cfg, now, [0; 32]).unwrap();
    let other = frame_bytes(&Frame::ServerKey {
        key: key(101).public_key(),
    });
    assert_eq!(
        c.handle_input(now, &other),
        Err(ClientError::ServerKeyMismatch)
    );
}

#[test]
fn frames_become_events_and_pings_are_answered() {
    let now = t0();
    let (mut c, _server) = greeted(now);
    c.poll_event();
    c.poll_transmit(&mut Vec::new());
    let src = key(9).public_key();
    let mut input = Vec::new();
    for f in [
        Frame::RecvPacket { src, packet: b"wg" },
        Frame::KeepAlive,
        Frame::PeerGone {
            peer: src,
            reason: PeerGoneReason::NotHere,
        },
        Frame::Ping([4; 8]),
        Frame::Pong([5; 8]),
        Frame::Health { problem: b"dup" },
        Frame::Restarting {
            reconnect_in_ms: 10,
            try_for_ms: 20,
        },
        Frame::Unknown {
            frame_type: 0x40,
            payload: b"?",
        },
    ] {
        f.encode_to_vec(&mut input).unwrap();
    }
    // Too-short frames are skipped, not fatal.
    input.extend_from_slice(&[0x05, 0, 0, 0, 3, 1, 2, 3]);
    input.extend_from_slice(&[0x08, 0, 0, 0, 1, 0]);
    assert_eq!(c.handle_input(now, &input), Ok(input.len()));
    let events: Vec<ClientEvent> = std::iter::from_fn(|| c.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            ClientEvent::Packet {
                src,
                packet: b"wg".to_vec()
            },
            ClientEvent::KeepAlive,
            ClientEvent::PeerGone {
                peer: src,
                reason: PeerGoneReason::NotHere
            },
            ClientEvent::Ping([4; 8]),
            ClientEvent::Pong([5; 8]),
            ClientEvent::Health("dup".into()),
            ClientEvent::Restarting {
                reconnect_in: Duration::from_millis(10),
                try_for: Duration::from_millis(20)
            },
        ]
    );
    assert_eq!(c.malformed_frames(), 2);
    let mut out = Vec::new();
    c.poll_transmit(&mut out);
    assert_eq!(out, frame_bytes(&Frame::Pong([4; 8])));
}

#[test]
fn a_bad_server_info_is_fatal() {
    let now = t0();
    let (mut c, _server) = greeted(now);
    let forged = frame_bytes(&Frame::ServerInfo { sealed: &[0; 40] });
    assert!(matches!(
        c.handle_input(now, &forged),
        Err(ClientError::Handshake(_))
    ));
}

#[test]
fn silence_for_two_minutes_is_fatal() {
    let now = t0();
    let (mut c, _server) = greeted(now);
    assert_eq!(c.poll_timeout(), Some(now + READ_TIMEOUT));
    let later = now + Duration::from_secs(100);
    c.handle_input(later, &frame_bytes(&Frame::KeepAlive))
        .unwrap();
    assert_eq!(c.handle_timeout(now + READ_TIMEOUT), Ok(()));
    assert_eq!(
        c.handle_timeout(later + READ_TIMEOUT),
        Err(ClientError::Timeout)
    );
}

#[test]
fn sending_is_bounded() {
    let now = t0();
    let (mut c, _server) = greeted(now);
    let dst = key(2).public_key();
    let big = vec![0u8; frame::MAX_PACKET_SIZE];
    let mut sent = 0;
    while c.send_packet(dst, &big).is_ok() {
        sent += 1;
    }
    assert_eq!(c.send_packet(dst, &big), Err(ClientError::BufferFull));
    assert_eq!(sent, MAX_BUFFERED / (big.len() + 37));
    c.poll_transmit(&mut Vec::new());
    assert!(c.send_packet(dst, &big).is_ok());
    assert!(matches!(
        c.send_packet(dst, &vec![0; frame::MAX_PACKET_SIZE + 1]),
        Err(ClientError::Encode(_))
    ));
}
