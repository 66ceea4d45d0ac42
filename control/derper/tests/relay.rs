//! The relay in-process on loopback, driven by `weft_derp::client::Client`s over real sockets:
//! with TLS (self-signed, pinned) and with plain HTTP; packets, ping/pong, PeerGone, fast
//! start, Restarting on shutdown, the TLS probe drop, and certificate persistence and reload.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::{key, metric, start, DerpConn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_derp::client::ClientEvent;
use weft_derp::frame::PeerGoneReason;
use weft_derper::{tls, TlsMode};

/// A→B, B→A, ping/pong, then A leaves and B (which received from A) hears PeerGone.
async fn relay_pair(tls_mode: TlsMode) {
    let (d, _dir) = start(tls_mode, None).await;
    let pin = d.cert_pin();
    let pin = pin.as_deref();
    let (ka, kb) = (key(1), key(2));
    let mut a = DerpConn::connect(d.local_addr(), pin, ka.clone(), None)
        .await
        .unwrap();
    let mut b = DerpConn::connect(d.local_addr(), pin, kb.clone(), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();
    b.admitted().await.unwrap();

    let packet: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
    a.send(kb.public_key(), &packet).await;
    let ev = b
        .wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
        .await
        .unwrap();
    assert_eq!(
        ev,
        ClientEvent::Packet {
            src: ka.public_key(),
            packet: packet.clone()
        }
    );
    b.send(ka.public_key(), b"reply").await;
    let ev = a
        .wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
        .await
        .unwrap();
    assert_eq!(
        ev,
        ClientEvent::Packet {
            src: kb.public_key(),
            packet: b"reply".to_vec()
        }
    );

    a.client.send_ping(*b"pingpong").unwrap();
    a.flush().await.unwrap();
    let ev = a
        .wait_for(|e| matches!(e, ClientEvent::Pong(_)))
        .await
        .unwrap();
    assert_eq!(ev, ClientEvent::Pong(*b"pingpong"));

    drop(a);
    let ev = b
        .wait_for(|e| matches!(e, ClientEvent::PeerGone { .. }))
        .await
        .unwrap();
    assert_eq!(
        ev,
        ClientEvent::PeerGone {
            peer: ka.public_key(),
            reason: PeerGoneReason::Disconnected
        }
    );
    let m = d.metrics();
    assert_eq!(metric(&m, "derp_packets_received_total"), Some(2));
    assert_eq!(metric(&m, "derp_packets_sent_total"), Some(2));
    assert_eq!(metric(&m, "derp_got_ping_total"), Some(1));
    assert_eq!(metric(&m, "derp_accepts_total"), Some(2));
    d.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn relays_over_tls_with_a_pinned_self_signed_certificate() {
    relay_pair(TlsMode::SelfSigned).await;
}

#[tokio::test]
async fn relays_over_plain_http() {
    relay_pair(TlsMode::PlainHttp).await;
}

#[tokio::test]
async fn fast_start_skips_the_http_response() {
    let (d, _dir) = start(TlsMode::SelfSigned, None).await;
    let pin = d.cert_pin();
    let server_key = d.public_key();
    let mut a = DerpConn::connect(d.local_addr(), pin.as_deref(), key(3), Some(server_key))
        .await
        .unwrap();
    let mut b = DerpConn::connect(d.local_addr(), pin.as_deref(), key(4), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();
    b.admitted().await.unwrap();
    a.send(key(4).public_key(), b"fast").await;
    let ev = b
        .wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
        .await
        .unwrap();
    assert_eq!(
        ev,
        ClientEvent::Packet {
            src: key(3).public_key(),
            packet: b"fast".to_vec()
        }
    );
}

#[tokio::test]
async fn unknown_destination_disco_gets_peer_gone_not_here() {
    let (d, _dir) = start(TlsMode::PlainHttp, None).await;
    let mut a = DerpConn::connect(d.local_addr(), None, key(5), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();
    let mut disco = b"TS\xf0\x9f\x92\xac".to_vec();
    disco.resize(6 + 32 + 24 + 16, 0x33);
    a.send(key(6).public_key(), &disco).await;
    let ev = a
        .wait_for(|e| matches!(e, ClientEvent::PeerGone { .. }))
        .await
        .unwrap();
    assert_eq!(
        ev,
        ClientEvent::PeerGone {
            peer: key(6).public_key(),
            reason: PeerGoneReason::NotHere
        }
    );
    let m = d.metrics();
    assert_eq!(
        metric(
            &m,
            "derp_packets_dropped_total{reason=\"unknown_dest\",kind=\"disco\"}"
        ),
        Some(1)
    );
}

#[tokio::test]
async fn shutdown_sends_restarting() {
    let (d, _dir) = start(TlsMode::PlainHttp, None).await;
    let mut a = DerpConn::connect(d.local_addr(), None, key(7), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();
    let relay = d.relay().clone();
    relay.shutdown(
        weft_derper::RESTART_RECONNECT_IN,
        weft_derper::RESTART_TRY_FOR,
    );
    let ev = a
        .wait_for(|e| matches!(e, ClientEvent::Restarting { .. }))
        .await
        .unwrap();
    assert_eq!(
        ev,
        ClientEvent::Restarting {
            reconnect_in: weft_derper::RESTART_RECONNECT_IN,
            try_for: weft_derper::RESTART_TRY_FOR
        }
    );
}

#[tokio::test]
async fn plain_http_port_drops_tls_probes() {
    let (d, _dir) = start(TlsMode::PlainHttp, None).await;
    let mut s = tokio::net::TcpStream::connect(d.local_addr())
        .await
        .unwrap();
    // The start of a TLS ClientHello record.
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01])
        .await
        .unwrap();
    let mut out = Vec::new();
    let n = tokio::time::timeout(support::WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the plain port answered a TLS probe");
    assert_eq!(
        metric(&d.metrics(), "derper_tls_probes_dropped_total"),
        Some(1)
    );
}

#[tokio::test]
async fn bad_client_info_is_dropped_and_counted() {
    let (d, _dir) = start(TlsMode::PlainHttp, None).await;
    let mut s = tokio::net::TcpStream::connect(d.local_addr())
        .await
        .unwrap();
    s.write_all(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    // A SendPacket frame where ClientInfo belongs.
    let mut frame = vec![0x04, 0, 0, 0, 40];
    frame.extend_from_slice(&[0u8; 40]);
    s.write_all(&frame).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(support::WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains("Derp-Version: 2"), "{text}");
    assert!(
        text.contains(&format!("Derp-Public-Key: {}", d.public_key().to_hex())),
        "{text}"
    );
    assert_eq!(
        metric(&d.metrics(), "derper_handshake_failures_total"),
        Some(1)
    );
    assert_eq!(metric(&d.metrics(), "derp_accepts_total"), Some(0));
}

#[tokio::test]
async fn self_signed_certificate_is_kept_with_a_private_key_file() {
    let (d, dir) = start(TlsMode::SelfSigned, None).await;
    let pin = d.cert_pin().unwrap();
    assert!(
        pin.starts_with("sha256-raw:") && pin.len() == 11 + 64,
        "{pin}"
    );
    let der_pem = std::fs::read(dir.join(tls::SELF_SIGNED_CERT)).unwrap();
    let der = rustls_pemfile::certs(&mut der_pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(tls::cert_pin(der.as_ref()), pin);
    for f in [tls::SELF_SIGNED_KEY, weft_derper::NODE_KEY_FILE] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let server_key = d.public_key();
    d.shutdown(Duration::ZERO).await;
    // A restart on the same state dir keeps the certificate (so the pin) and the DERP key.
    let d2 = weft_derper::Derper::start(weft_derper::Config {
        listen: support::loopback(),
        stun_listen: None,
        state_dir: Some(dir),
        tls: TlsMode::SelfSigned,
        mesh_key: None,
        verify_url: None,
        mesh_with: Vec::new(),
        mesh_retry: weft_derper::mesh::MESH_RETRY,
    })
    .await
    .unwrap();
    assert_eq!(d2.cert_pin().unwrap(), pin);
    assert_eq!(d2.public_key(), server_key);
}

#[tokio::test]
async fn certificate_reload_serves_the_new_certificate() {
    let dir = support::temp_dir("certs");
    let (cert, keyf) = (dir.join("c.pem"), dir.join("k.pem"));
    let write = |name: &str| {
        let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&keyf, made.key_pair.serialize_pem()).unwrap();
        tls::cert_pin(made.cert.der())
    };
    let first = write("one.example");
    let (d, _state) = start(
        TlsMode::Files {
            cert: cert.clone(),
            key: keyf.clone(),
        },
        None,
    )
    .await;
    assert_eq!(d.cert_pin().unwrap(), first);
    let mut a = DerpConn::connect(d.local_addr(), Some(&first), key(8), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();

    let second = write("two.example");
    assert_ne!(first, second);
    d.reload_certs().unwrap();
    assert_eq!(d.cert_pin().unwrap(), second);
    // New connections get the new certificate; the old pin no longer matches.
    let mut b = DerpConn::connect(d.local_addr(), Some(&second), key(9), None)
        .await
        .unwrap();
    b.admitted().await.unwrap();
    assert!(
        DerpConn::connect(d.local_addr(), Some(&first), key(10), None)
            .await
            .is_err()
    );
    // The connection made before the reload still relays.
    b.send(key(8).public_key(), b"after reload").await;
    let ev = a
        .wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
        .await
        .unwrap();
    assert!(matches!(ev, ClientEvent::Packet { packet, .. } if packet == b"after reload"));

    // A broken file keeps the certificate in force.
    std::fs::write(&keyf, b"not a key").unwrap();
    assert!(d.reload_certs().is_err());
    assert_eq!(d.cert_pin().unwrap(), second);
}

#[tokio::test]
async fn a_client_that_never_reads_stalls_nobody_else() {
    let (d, _dir) = start(TlsMode::PlainHttp, None).await;
    let mut a = DerpConn::connect(d.local_addr(), None, key(11), None)
        .await
        .unwrap();
    let mut b = DerpConn::connect(d.local_addr(), None, key(12), None)
        .await
        .unwrap();
    // The slow one: admitted, then never read again.
    let mut slow = DerpConn::connect(d.local_addr(), None, key(13), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();
    b.admitted().await.unwrap();
    slow.admitted().await.unwrap();

    // 16 MB at the slow client (more than loopback socket buffers hold), a packet for B after
    // every 100; B must get all of them while the slow one is stuck.
    let big = vec![0x5au8; 1300];
    let mut to_b = 0u32;
    for i in 0..12_000u32 {
        a.send(key(13).public_key(), &big).await;
        if i % 100 == 0 {
            a.send(key(12).public_key(), &i.to_be_bytes()).await;
            to_b += 1;
        }
    }
    // A last one for B: when it arrives, every packet before it was handled.
    a.send(key(12).public_key(), b"last").await;
    to_b += 1;
    let mut got = 0u32;
    while got < to_b {
        let ev = b
            .wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
            .await
            .unwrap();
        assert!(matches!(ev, ClientEvent::Packet { src, .. } if src == key(11).public_key()));
        got += 1;
    }
    let m = d.metrics();
    let head_drops = metric(
        &m,
        "derp_packets_dropped_total{reason=\"queue_head\",kind=\"other\"}",
    )
    .unwrap();
    assert!(
        head_drops > 0,
        "the slow client's queue never overflowed:\n{m}"
    );
    assert_eq!(
        metric(&m, "derp_packets_received_total"),
        Some(12_000 + 121)
    );
    drop(slow);
}

#[tokio::test]
async fn a_hostile_frame_length_drops_only_that_client() {
    let (d, _dir) = start(TlsMode::PlainHttp, None).await;
    let mut a = DerpConn::connect(d.local_addr(), None, key(14), None)
        .await
        .unwrap();
    let mut b = DerpConn::connect(d.local_addr(), None, key(15), None)
        .await
        .unwrap();
    let mut bad = DerpConn::connect(d.local_addr(), None, key(16), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();
    b.admitted().await.unwrap();
    bad.admitted().await.unwrap();
    // A SendPacket header announcing 4 GiB.
    bad.stream
        .write_all(&[0x04, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(
        bad.next_event().await.is_err(),
        "the hostile client was not dropped"
    );
    a.send(key(15).public_key(), b"still here").await;
    let ev = b
        .wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
        .await
        .unwrap();
    assert!(matches!(ev, ClientEvent::Packet { packet, .. } if packet == b"still here"));
    let m = d.metrics();
    assert_eq!(metric(&m, "derper_input_errors_total"), Some(1));
    assert_eq!(metric(&m, "derp_current_connections"), Some(2));
}

/// DERP over WebSocket (`Upgrade: websocket`, subprotocol `derp`) to a client on a plain
/// upgrade, both ways.
#[tokio::test]
async fn relays_over_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (d, _dir) = start(TlsMode::PlainHttp, None).await;
    let mut req = format!("ws://{}/derp", d.local_addr())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "derp".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(d.local_addr())
        .await
        .unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "derp"
    );
    let mut w = DerpConn::over(Box::pin(weft_derper::ws::WsBytes::new(ws)), key(21))
        .await
        .unwrap();
    let mut t = DerpConn::connect(d.local_addr(), None, key(22), None)
        .await
        .unwrap();
    w.admitted().await.unwrap();
    t.admitted().await.unwrap();
    w.send(key(22).public_key(), b"from websocket").await;
    let ev = t
        .wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
        .await
        .unwrap();
    assert_eq!(
        ev,
        ClientEvent::Packet {
            src: key(21).public_key(),
            packet: b"from websocket".to_vec()
        }
    );
    t.send(key(21).public_key(), &[7u8; 3000]).await;
    let ev = w
        .wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
        .await
        .unwrap();
    assert_eq!(
        ev,
        ClientEvent::Packet {
            src: key(22).public_key(),
            packet: vec![7u8; 3000]
        }
    );
    // Without the derp subprotocol it is not DERP.
    let r = support::http_get(
        d.local_addr(),
        None,
        "/derp",
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 426"), "{r}");
}
