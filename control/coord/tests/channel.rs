//! The ts2021 channel end to end over loopback TCP: `/key`, the upgrade with weft's own client
//! handshake, HTTP/2 over the Noise records, the request arriving with the proven machine key
//! and a clear `501` for endpoints that do not exist yet; and the refusals of §2.2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_controlbase::ClientHandshake;
use weft_coord::{serve_connection, ControlKey, MachineRequest, NoiseStream};
use weft_keys::PrivateKey;

fn key(b: u8) -> PrivateKey {
    PrivateKey::from_bytes([b; 32])
}

/// Starts the server on an ephemeral loopback port; returns its address and the requests seen.
async fn start() -> (std::net::SocketAddr, Arc<Mutex<Vec<MachineRequest>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let control = Arc::new(ControlKey::new(key(2)));
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let sink = Arc::clone(&sink);
            let control = Arc::clone(&control);
            tokio::spawn(serve_connection(
                s,
                control,
                Arc::new(move |r| sink.lock().unwrap().push(r)),
            ));
        }
    });
    (addr, seen)
}

/// Sends an HTTP/1.1 request head and returns the response head.
async fn http1(s: &mut TcpStream, head: &str) -> String {
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "connection closed");
        got.push(b[0]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn key_upgrade_and_http2_over_noise() {
    let (addr, seen) = start().await;
    // GET /key.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = http1(&mut s, "GET /key?v=133 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut body))
        .await
        .unwrap()
        .unwrap();
    let body = String::from_utf8_lossy(&body[..n]).into_owned();
    assert!(
        body.contains(&format!(
            "\"publicKey\":\"mkey:{}\"",
            key(2).public_key().to_hex()
        )),
        "{body}"
    );

    // POST /ts2021 with weft's client handshake.
    let (hs, init) = ClientHandshake::start(&key(1), &key(2).public_key(), 133, &key(3)).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(init);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = http1(
        &mut s,
        &format!(
            "POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {b64}\r\n\r\n"
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("upgrade: tailscale-control-protocol"));
    let mut response = [0u8; weft_controlbase::RESPONSE_LEN];
    s.read_exact(&mut response).await.unwrap();
    let transport = hs.finish(&response).unwrap();

    // HTTP/2 over the records.
    let noise = NoiseStream::new(s, transport, &[]);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(noise))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("https://control/machine/register")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), hyper::StatusCode::NOT_IMPLEMENTED);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("not implemented"));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].machine,
        key(1).public_key(),
        "the proven machine key"
    );
    assert_eq!(seen[0].version, 133);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/machine/register")
    );
}

#[tokio::test]
async fn bad_upgrades_get_400() {
    let (addr, seen) = start().await;
    let (_, init) = ClientHandshake::start(&key(1), &key(9).public_key(), 133, &key(3)).unwrap();
    let wrong_key = base64::engine::general_purpose::STANDARD.encode(init);
    for head in [
        "POST /ts2021 HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        "POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: websocketx\r\nConnection: upgrade\r\nX-Tailscale-Handshake: AAAA\r\n\r\n".to_owned(),
        "POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: !!!\r\n\r\n".to_owned(),
        format!("POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {wrong_key}\r\n\r\n"),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let got = http1(&mut s, &head).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{head:?} -> {got}");
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert!(http1(&mut s, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 404"));
    assert!(seen.lock().unwrap().is_empty());
}
