//! Mesh, privileged frames, timers and shutdown.

use super::*;

#[test]
fn watchers_get_the_present_list_then_changes() {
    let mut h = Harness::new();
    let remote: SocketAddr = "198.51.100.4:5555".parse().unwrap();
    let a = h.connect_with(
        1,
        ClientInfo::default(),
        ConnOptions {
            remote: Some(remote),
            not_ideal: false,
        },
    );
    let w = h.connect_mesh(50);
    h.send(w, Frame::WatchConns).unwrap();
    let got = h.drain(w);
    let regular = Some(PeerPresentFlags(PeerPresentFlags::IS_REGULAR));
    assert!(got.contains(&Out::Present(
        pk(1),
        Some(PeerEndpoint {
            addr: remote,
            flags: regular
        })
    )));
    // The mesh peer itself is listed too, flagged as such.
    assert!(got.iter().any(|o| matches!(o,
        Out::Present(k, Some(PeerEndpoint { flags: Some(f), .. }))
            if *k == pk(50) && f.0 == PeerPresentFlags::IS_MESH_PEER)));
    assert_eq!(got.len(), 2);

    let b = h.connect_with(
        2,
        ClientInfo {
            is_prober: true,
            ..ClientInfo::default()
        },
        ConnOptions {
            remote: None,
            not_ideal: true,
        },
    );
    let flags = PeerPresentFlags(PeerPresentFlags::IS_PROBER | PeerPresentFlags::NOT_IDEAL);
    assert_eq!(
        h.drain(w),
        vec![Out::Present(
            pk(2),
            Some(PeerEndpoint {
                addr: SocketAddr::from(([0u16; 8], 0)),
                flags: Some(flags)
            })
        )]
    );
    h.s.disconnect(b);
    h.s.disconnect(a);
    assert_eq!(
        h.drain(w),
        vec![
            Out::Gone(pk(2), PeerGoneReason::Disconnected),
            Out::Gone(pk(1), PeerGoneReason::Disconnected)
        ]
    );
}

#[test]
fn privileged_frames_need_the_mesh_key() {
    let mut h = Harness::new();
    let a = h.connect(1);
    assert_eq!(
        h.send(a, Frame::WatchConns),
        Err(ServerError::NotPermitted(0x10))
    );
    assert_eq!(
        h.send(a, Frame::ClosePeer { peer: pk(2) }),
        Err(ServerError::NotPermitted(0x11))
    );
    assert_eq!(
        h.send(
            a,
            Frame::ForwardPacket {
                src: pk(3),
                dst: pk(1),
                packet: b"p"
            }
        ),
        Err(ServerError::NotPermitted(0x0a))
    );
    // A wrong mesh key is just a regular client.
    let wrong = ClientInfo {
        mesh_key: Some(MeshKey::from_bytes([1; 32])),
        ..ClientInfo::default()
    };
    assert!(!h.s.is_mesh_peer(&wrong));
    let c = h.connect_with(4, wrong, ConnOptions::default());
    assert!(h.send(c, Frame::WatchConns).is_err());
}

#[test]
fn a_server_watching_itself_is_ignored() {
    let mut h = Harness::new();
    h.connect(1);
    let me = h.connect_mesh(200); // the server's own key
    h.send(me, Frame::WatchConns).unwrap();
    assert!(h.drain(me).is_empty());
    h.connect(2);
    assert!(h.drain(me).is_empty());
}

#[test]
fn close_peer_closes_every_connection_of_the_key() {
    let mut h = Harness::new();
    let t1 = h.connect(7);
    let t2 = h.connect(7);
    let m = h.connect_mesh(50);
    h.events();
    h.send(m, Frame::ClosePeer { peer: pk(7) }).unwrap();
    assert_eq!(h.events(), vec![Event::Close(t1), Event::Close(t2)]);
    h.send(m, Frame::ClosePeer { peer: pk(8) }).unwrap();
    assert!(h.events().is_empty());
}

#[test]
fn packets_for_mesh_known_keys_are_forwarded() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let (l1, l2) = (MeshLinkId(1), MeshLinkId(2));
    h.s.mesh_peer_present(l1, pk(9));
    h.s.mesh_peer_present(l2, pk(9));
    h.events();
    h.send_packet(a, 9, b"far");
    assert_eq!(
        h.events(),
        vec![Event::Forward {
            link: l1,
            src: pk(1),
            dst: pk(9),
            packet: b"far".to_vec()
        }]
    );
    // The first link goes; the second still reaches the key.
    h.s.mesh_peer_gone(l1, pk(9));
    h.send_packet(a, 9, b"far2");
    assert!(matches!(h.events()[..], [Event::Forward { link, .. }] if link == l2));
    h.s.mesh_link_lost(l2);
    h.send_packet(a, 9, b"gone");
    assert!(h.events().is_empty());
    assert_eq!(h.s.stats().packets_forwarded_out, 2);
    assert_eq!(
        h.s.stats().drops.by_reason(DropReason::UnknownDest).packets,
        1
    );
}

#[test]
fn a_local_client_wins_over_a_mesh_route() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    h.s.mesh_peer_present(MeshLinkId(1), pk(2));
    h.events();
    h.send_packet(a, 2, b"near");
    assert_eq!(h.drain(b), vec![Out::Recv(pk(1), b"near".to_vec())]);
    assert!(!h
        .events()
        .iter()
        .any(|e| matches!(e, Event::Forward { .. })));
}

#[test]
fn forwarded_packets_are_delivered_and_never_reforwarded() {
    let mut h = Harness::new();
    let m = h.connect_mesh(50);
    let b = h.connect(2);
    h.send(
        m,
        Frame::ForwardPacket {
            src: pk(9),
            dst: pk(2),
            packet: b"via mesh",
        },
    )
    .unwrap();
    assert_eq!(h.drain(b), vec![Out::Recv(pk(9), b"via mesh".to_vec())]);
    // A key only another mesh peer has: dropped, not sent back into the mesh.
    h.s.mesh_peer_present(MeshLinkId(3), pk(8));
    h.events();
    h.send(
        m,
        Frame::ForwardPacket {
            src: pk(9),
            dst: pk(8),
            packet: b"loop",
        },
    )
    .unwrap();
    assert!(!h
        .events()
        .iter()
        .any(|e| matches!(e, Event::Forward { .. })));
    assert_eq!(
        h.s.stats()
            .drops
            .by_reason(DropReason::UnknownDestOnForward)
            .packets,
        1
    );
    assert_eq!(h.s.stats().packets_forwarded_in, 2);
}

#[test]
fn leaving_the_region_through_the_mesh_sends_peer_gone() {
    let mut h = Harness::new();
    let m = h.connect_mesh(50);
    let b = h.connect(2);
    let link = MeshLinkId(5);
    h.s.mesh_peer_present(link, pk(9));
    h.send(
        m,
        Frame::ForwardPacket {
            src: pk(9),
            dst: pk(2),
            packet: b"hi",
        },
    )
    .unwrap();
    h.drain(b);
    h.s.mesh_link_lost(link);
    assert_eq!(
        h.drain(b),
        vec![Out::Gone(pk(9), PeerGoneReason::Disconnected)]
    );
}

#[test]
fn keep_alives_follow_the_jittered_period() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let first = h.s.poll_timeout().unwrap();
    let d = first - h.t0;
    assert!(
        d >= Duration::from_secs(60) && d < Duration::from_secs(65),
        "{d:?}"
    );
    h.s.handle_timeout(first - Duration::from_millis(1));
    assert!(h.drain(a).is_empty());
    h.s.handle_timeout(first);
    assert_eq!(h.drain(a), vec![Out::KeepAlive]);
    assert_eq!(h.s.poll_timeout(), Some(first + d));
    // Two connections get different jitter from the seeded generator (almost surely).
    let b = h.connect(2);
    let timers: Vec<Instant> = h.s.timers.iter().map(|(t, _)| *t).collect();
    assert_eq!(timers.len(), 2);
    h.s.disconnect(b);
    assert_eq!(h.s.poll_timeout(), Some(first + d));
    h.s.disconnect(a);
    assert_eq!(h.s.poll_timeout(), None);
    assert_eq!(h.s.stats().keep_alives_sent, 1);
}

#[test]
fn shutdown_tells_everyone_to_reconnect() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    h.s.shutdown(Duration::from_millis(500), Duration::from_secs(30));
    assert_eq!(h.drain(a), vec![Out::Restarting(500, 30_000)]);
    assert_eq!(h.drain(b), vec![Out::Restarting(500, 30_000)]);
}

#[test]
fn health_text_is_sent_and_cleared() {
    let mut h = Harness::new();
    let a = h.connect(1);
    h.s.set_health(a, "duplicate key");
    assert_eq!(h.drain(a), vec![Out::Health(b"duplicate key".to_vec())]);
    h.s.set_health(a, "");
    assert_eq!(h.drain(a), vec![Out::Health(vec![])]);
}

#[test]
fn unknown_and_server_only_frames_are_skipped() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let bytes = [
        0x7f, 0, 0, 0, 2, 1, 2, // unknown type
        0x01, 0, 0, 0, 1, 0, // a bogus ServerKey from a client: not parsed, skipped
        0x06, 0, 0, 0, 0, // KeepAlive from a client
    ];
    assert_eq!(h.s.handle_input(a, h.t0, &bytes), Ok(bytes.len()));
    assert_eq!(h.s.stats().unknown_frames, 3);
}

#[test]
fn input_is_consumed_frame_by_frame() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    let mut bytes = Vec::new();
    for p in [&b"one"[..], b"two"] {
        Frame::SendPacket {
            dst: pk(2),
            packet: p,
        }
        .encode_to_vec(&mut bytes)
        .unwrap();
    }
    let first = 5 + 32 + 3;
    assert_eq!(h.s.handle_input(a, h.t0, &bytes[..first + 10]), Ok(first));
    assert_eq!(h.s.handle_input(a, h.t0, &bytes[first..]), Ok(first));
    assert_eq!(
        h.drain(b),
        vec![
            Out::Recv(pk(1), b"one".to_vec()),
            Out::Recv(pk(1), b"two".to_vec())
        ]
    );
    // An oversize header is refused at once.
    assert!(matches!(
        h.s.handle_input(a, h.t0, &[0x04, 0x7f, 0, 0, 0]),
        Err(ServerError::Frame(FrameError::TooLarge { .. }))
    ));
}

#[test]
fn rate_limited_clients_pause_and_mesh_peers_do_not() {
    let mut h = Harness::new();
    h.s.config.rate_limit = Some(RateLimit {
        bytes_per_second: 1000,
        burst: 100,
    });
    let a = h.connect(1);
    let b = h.connect(2);
    let m = h.connect_mesh(50);
    let mut bytes = Vec::new();
    for _ in 0..3 {
        // 32-byte key + 18-byte packet = 50 bytes of frame payload each.
        Frame::SendPacket {
            dst: pk(2),
            packet: &[7; 18],
        }
        .encode_to_vec(&mut bytes)
        .unwrap();
    }
    let one = bytes.len() / 3;
    // The burst pays for two frames; the third waits 50 ms (50 bytes at 1000 B/s).
    assert_eq!(h.s.handle_input(a, h.t0, &bytes), Ok(2 * one));
    assert_eq!(h.s.paused_until(a), Some(h.t0 + Duration::from_millis(50)));
    assert_eq!(
        h.s.handle_input(a, h.t0 + Duration::from_millis(49), &bytes[2 * one..]),
        Ok(0)
    );
    assert_eq!(
        h.s.handle_input(a, h.t0 + Duration::from_millis(50), &bytes[2 * one..]),
        Ok(one)
    );
    assert_eq!(h.s.paused_until(a), None);
    assert_eq!(h.drain(b).len(), 3);
    assert_eq!(h.s.stats().rate_limit_pauses, 2);
    // A frame above the burst costs the burst, so it passes after a full refill.
    let big = [0u8; 500];
    let mut f = Vec::new();
    Frame::SendPacket {
        dst: pk(2),
        packet: &big,
    }
    .encode_to_vec(&mut f)
    .unwrap();
    let later = h.t0 + Duration::from_secs(1);
    assert_eq!(h.s.handle_input(a, later, &f), Ok(f.len()));
    // Mesh peers are exempt.
    let mut many = Vec::new();
    for _ in 0..20 {
        Frame::ForwardPacket {
            src: pk(9),
            dst: pk(2),
            packet: &[1; 100],
        }
        .encode_to_vec(&mut many)
        .unwrap();
    }
    assert_eq!(h.s.handle_input(m, h.t0, &many), Ok(many.len()));
}
