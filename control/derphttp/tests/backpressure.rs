//! The send bound, against a hand-driven server that completes the handshake and then stops
//! reading: `try_send` fills the outgoing buffer and then refuses (counted) without waiting,
//! `send().await` waits, and both resume once the server reads again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weft_derp::client::MAX_BUFFERED;
use weft_derp::handshake::{write_server_info, ServerInfo};
use weft_derp::server::parse_client_info;
use weft_derphttp::{DerpClient, DerpUrl, DialConfig, SendError};
use weft_keys::PrivateKey;

#[tokio::test]
async fn a_stalled_server_fills_the_bound_and_send_waits_for_room() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_key = PrivateKey::from_bytes([0x53; 32]);
    let sk = server_key.clone();
    let (resume_tx, resume_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // The upgrade request, then the 101 and the greeting.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut out =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
                .to_vec();
        weft_derp::frame::Frame::ServerKey {
            key: sk.public_key(),
        }
        .encode_to_vec(&mut out)
        .unwrap();
        s.write_all(&out).await.unwrap();
        let mut pending = Vec::new();
        let client = loop {
            if let Some((k, _, _)) = parse_client_info(&sk, &pending).unwrap() {
                break k;
            }
            let n = s.read(&mut chunk).await.unwrap();
            pending.extend_from_slice(&chunk[..n]);
        };
        let mut info = Vec::new();
        write_server_info(&sk, &client, &ServerInfo::current(), [1; 24], &mut info).unwrap();
        s.write_all(&info).await.unwrap();
        // Stall until told, then drain everything.
        resume_rx.await.unwrap();
        let mut total = 0usize;
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });

    let mut cfg = DialConfig::new(
        DerpUrl::parse(&format!("http://{addr}")).unwrap(),
        PrivateKey::from_bytes([1; 32]),
    );
    cfg.server_key = Some(server_key.public_key());
    let c = DerpClient::connect(cfg).await.unwrap();
    let tx = c.sender();
    let dst = PrivateKey::from_bytes([2; 32]).public_key();
    let packet = [0u8; 1280];
    // Kernel socket buffers absorb some megabytes first; then the core's 1 MiB bound is hit.
    let mut queued = 0u64;
    let full = loop {
        match tx.try_send(dst, &packet) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        if queued.is_multiple_of(256) {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(queued < 1_000_000, "the bound never applied");
    };
    assert_eq!(full, SendError::Full);
    assert!(queued as usize * 1280 >= MAX_BUFFERED / 2, "{queued}");
    assert_eq!(tx.stats().send_full, 1);
    // An awaiting send does not complete while the server is stalled ...
    let waiting = tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(dst, &packet).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    // ... and does once it reads again.
    resume_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(tx.stats().packets_sent, queued + 1);
    drop(c);
    let read = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    // Everything queued was written before the close (frames: 5 + 32 + 1280 bytes each).
    assert!(read as u64 >= (queued + 1) * (5 + 32 + 1280), "{read}");
}
