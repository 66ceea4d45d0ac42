//! `weft-derphttp` against the real relay (`weft_derper::Derper`) in-process on loopback, over
//! TLS with the certificate pinned and over plain HTTP: packets both ways, PeerGone, ping,
//! a wrong pin and a wrong server key refused, a mesh watcher, and a burst that shows writes
//! are batched.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use support::{key, start, wait_for, WAIT};
use weft_derp::client::ClientEvent;
use weft_derp::frame::PeerGoneReason;
use weft_derp::handshake::MeshKey;
use weft_derper::TlsMode;
use weft_derphttp::{DerpClient, DerpError, DialConfig, SendError, TlsVerify};

fn is_packet(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::Packet { .. })
}

/// A→B, B→A, ping/pong, then A leaves and B (which received from A) hears PeerGone.
async fn pair(tls: TlsMode) {
    let r = start(tls, None).await;
    let (ka, kb) = (key(1), key(2));
    let mut a = r.connect(&ka).await;
    let mut b = r.connect(&kb).await;
    assert_eq!(a.server_key(), r.d().public_key());
    assert_eq!(b.public_key(), kb.public_key());

    let packet: Vec<u8> = (0..1280u32).map(|i| (i * 7) as u8).collect();
    a.send(kb.public_key(), &packet).await.unwrap();
    assert_eq!(
        wait_for(&mut b, is_packet).await,
        ClientEvent::Packet {
            src: ka.public_key(),
            packet: packet.clone()
        }
    );
    b.sender().try_send(ka.public_key(), b"reply").unwrap();
    assert_eq!(
        wait_for(&mut a, is_packet).await,
        ClientEvent::Packet {
            src: kb.public_key(),
            packet: b"reply".to_vec()
        }
    );

    a.sender().send_ping(*b"12345678").unwrap();
    assert_eq!(
        wait_for(&mut a, |e| matches!(e, ClientEvent::Pong(_))).await,
        ClientEvent::Pong(*b"12345678")
    );
    let stats = a.sender().stats();
    assert_eq!((stats.packets_sent, stats.packets_received), (1, 1));

    // A leaves: B received from A, so the relay tells B.
    let a_sender = a.sender();
    drop(a);
    assert!(a_sender.is_closed());
    assert_eq!(
        a_sender.try_send(kb.public_key(), b"late"),
        Err(SendError::Closed)
    );
    assert_eq!(
        wait_for(&mut b, |e| matches!(e, ClientEvent::PeerGone { .. })).await,
        ClientEvent::PeerGone {
            peer: ka.public_key(),
            reason: PeerGoneReason::Disconnected
        }
    );
}

#[tokio::test]
async fn two_clients_over_pinned_tls() {
    pair(TlsMode::SelfSigned).await;
}

#[tokio::test]
async fn two_clients_over_plain_http() {
    pair(TlsMode::PlainHttp).await;
}

#[tokio::test]
async fn a_wrong_pin_is_refused_and_named() {
    let r = start(TlsMode::SelfSigned, None).await;
    let real = r.d().cert_pin().unwrap();
    let wrong = format!("sha256-raw:{}", "00".repeat(32));
    let mut cfg = r.dial(&key(1));
    cfg.tls = TlsVerify::Pin(wrong.clone());
    let err = DerpClient::connect(cfg).await.unwrap_err();
    match &err {
        DerpError::PinMismatch {
            expected,
            presented,
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(presented, &real);
        }
        e => panic!("expected a pin mismatch, got {e:?}"),
    }
    assert!(err.to_string().contains("pin mismatch"), "{err}");
    // Without any root the chain is untrusted: a TLS error, not a pin error.
    let mut cfg = r.dial(&key(1));
    cfg.tls = TlsVerify::Roots(std::sync::Arc::new(rustls::RootCertStore::empty()));
    assert!(matches!(
        DerpClient::connect(cfg).await,
        Err(DerpError::Tls(_))
    ));
    // The insecure test mode connects.
    let c = DerpClient::connect(support::insecure(r.dial(&key(1))))
        .await
        .unwrap();
    assert_eq!(c.server_key(), r.d().public_key());
}

#[tokio::test]
async fn a_wrong_server_key_and_a_closed_port_are_refused() {
    let r = start(TlsMode::PlainHttp, None).await;
    let mut cfg = r.dial(&key(1));
    cfg.server_key = Some(key(99).public_key());
    assert!(matches!(
        DerpClient::connect(cfg).await,
        Err(DerpError::ServerKeyMismatch)
    ));
    // The right key works (the client then sends ClientInfo without waiting for ServerKey).
    let mut cfg = r.dial(&key(1));
    cfg.server_key = Some(r.d().public_key());
    cfg.note_preferred = true;
    DerpClient::connect(cfg).await.unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = DialConfig::new(
        weft_derphttp::DerpUrl::parse(&format!("http://{port}")).unwrap(),
        key(1),
    );
    cfg.addr = Some(port);
    assert!(matches!(
        DerpClient::connect(cfg).await,
        Err(DerpError::Connect { .. })
    ));
}

#[tokio::test]
async fn a_mesh_watcher_sees_clients_come_and_go() {
    let mesh = MeshKey::from_bytes([7; 32]);
    let r = start(TlsMode::PlainHttp, Some(mesh.clone())).await;
    let a = r.connect(&key(1)).await;
    let mut cfg = r.dial(&key(50));
    cfg.mesh_key = Some(mesh);
    let mut w = DerpClient::connect(cfg).await.unwrap();
    w.sender().watch_conns().unwrap();
    let present = |k: weft_keys::PublicKey| move |e: &ClientEvent| matches!(e, ClientEvent::PeerPresent { peer, .. } if *peer == k);
    wait_for(&mut w, present(key(1).public_key())).await;
    let b = r.connect(&key(2)).await;
    wait_for(&mut w, present(key(2).public_key())).await;
    drop(a);
    assert_eq!(
        wait_for(&mut w, |e| matches!(e, ClientEvent::PeerGone { .. })).await,
        ClientEvent::PeerGone {
            peer: key(1).public_key(),
            reason: PeerGoneReason::Disconnected
        }
    );
    // A mesh peer may inject packets for local clients.
    let mut b = b;
    w.sender()
        .try_forward_packet(key(9).public_key(), key(2).public_key(), b"via mesh")
        .unwrap();
    assert_eq!(
        wait_for(&mut b, is_packet).await,
        ClientEvent::Packet {
            src: key(9).public_key(),
            packet: b"via mesh".to_vec()
        }
    );
}

/// 20 000 packets of 1280 bytes through the relay (TLS): all arrive, in order, and the sender
/// wrote them in far fewer writes than packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_arrives_whole_and_in_order_with_batched_writes() {
    const N: u32 = 20_000;
    let r = start(TlsMode::SelfSigned, None).await;
    let (ka, kb) = (key(1), key(2));
    let a = r.connect(&ka).await;
    let mut b = r.connect(&kb).await;
    let tx = a.sender();
    let dst = kb.public_key();
    // The relay's per-client queue is 32 packets and drops the oldest when full, so the
    // receiver acknowledges every 16 packets to keep the sender within the queue.
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<u32>(1024);
    let sender = tokio::spawn(async move {
        let mut p = vec![0u8; 1280];
        let mut acked = 0;
        for i in 0..N {
            while i >= acked + 24 {
                acked = ack_rx.recv().await.unwrap();
            }
            p[..4].copy_from_slice(&i.to_be_bytes());
            tx.send(dst, &p).await.unwrap();
        }
        tx.stats()
    });
    let mut next = 0u32;
    while next < N {
        let ev = tokio::time::timeout(WAIT, b.recv()).await.unwrap().unwrap();
        if let ClientEvent::Packet { packet, .. } = ev {
            assert_eq!(packet.len(), 1280);
            let i = u32::from_be_bytes(packet[..4].try_into().unwrap());
            assert_eq!(i, next, "packets lost or reordered");
            next += 1;
            if next.is_multiple_of(8) {
                let _ = ack_tx.try_send(next);
            }
        }
    }
    let stats = sender.await.unwrap();
    assert_eq!(stats.packets_sent, u64::from(N));
    assert!(stats.writes < u64::from(N), "{stats:?}");
    assert_eq!(b.sender().stats().packets_received, u64::from(N));
    drop(a);
}

/// A relay shutting down sends Restarting, then closes: the client sees both, the error last.
#[tokio::test]
async fn a_relay_shutdown_surfaces_as_restarting_then_closed() {
    let mut r = start(TlsMode::PlainHttp, None).await;
    let mut a = r.connect(&key(1)).await;
    let tx = a.sender();
    r.derper
        .take()
        .unwrap()
        .shutdown(std::time::Duration::from_millis(50))
        .await;
    assert!(matches!(
        wait_for(&mut a, |e| matches!(e, ClientEvent::Restarting { .. })).await,
        ClientEvent::Restarting { .. }
    ));
    let end = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(e) = a.recv().await {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(end, DerpError::ClosedByServer), "{end:?}");
    // Reported once; then plainly closed, and senders know.
    assert!(matches!(a.recv().await, Err(DerpError::Closed)));
    assert!(tx.is_closed());
    assert_eq!(
        tx.try_send(key(2).public_key(), b"x"),
        Err(SendError::Closed)
    );
}
