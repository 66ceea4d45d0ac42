//! STUN over UDP, the HTTP endpoints (`/generate_204`, `/metrics`, probes, `/`), and admission
//! through a verify URL served by a tiny HTTP server inside the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::sync::{Arc, Mutex};

use support::{http_get, key, metric, start, DerpConn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_derp::client::ClientEvent;
use weft_derp::stun;
use weft_derper::TlsMode;
use weft_keys::PublicKey;

#[tokio::test]
async fn stun_answers_with_the_senders_address() {
    let (d, _dir) = start(TlsMode::PlainHttp, None).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let tx = stun::TxId(*b"weft-derper!");
    sock.send_to(&stun::binding_request(tx), d.stun_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = tokio::time::timeout(support::WAIT, sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, d.stun_addr().unwrap());
    assert_eq!(stun::parse_response(&buf[..n]).unwrap(), (tx, me));

    // Junk, and a request without Tailscale's SOFTWARE, are ignored and counted.
    sock.send_to(b"not stun at all", d.stun_addr().unwrap())
        .await
        .unwrap();
    let mut other = stun::binding_request(tx);
    other[24..32].copy_from_slice(b"notnode!");
    sock.send_to(&other, d.stun_addr().unwrap()).await.unwrap();
    // Then one more valid request, so its answer proves the two before were handled.
    sock.send_to(&stun::binding_request(tx), d.stun_addr().unwrap())
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(support::WAIT, sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stun::parse_response(&buf[..n]).unwrap(), (tx, me));
    let m = d.metrics();
    assert_eq!(metric(&m, "derper_stun_answered_total"), Some(2));
    assert_eq!(metric(&m, "derper_stun_ignored_total"), Some(2));
}

async fn generate_204(pin: Option<&str>, tls: TlsMode) {
    let (d, _dir) = start(tls, None).await;
    let pin = pin.map(|_| d.cert_pin().unwrap());
    let r = http_get(
        d.local_addr(),
        pin.as_deref(),
        "/generate_204",
        "X-Tailscale-Challenge: ts_derp1.example:3340\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    assert!(
        r.contains("X-Tailscale-Response: response ts_derp1.example:3340\r\n"),
        "{r}"
    );
    assert!(
        r.contains("Cache-Control: no-cache, no-store, must-revalidate, no-transform, max-age=0"),
        "{r}"
    );
    // A challenge outside the allowed alphabet gets no answer header.
    let r = http_get(
        d.local_addr(),
        pin.as_deref(),
        "/generate_204",
        "X-Tailscale-Challenge: bad value\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    assert!(!r.contains("X-Tailscale-Response"), "{r}");
}

#[tokio::test]
async fn generate_204_echoes_the_challenge_over_plain_http() {
    generate_204(None, TlsMode::PlainHttp).await;
}

#[tokio::test]
async fn generate_204_echoes_the_challenge_over_tls() {
    generate_204(Some(""), TlsMode::SelfSigned).await;
}

#[tokio::test]
async fn other_endpoints() {
    let (d, _dir) = start(TlsMode::PlainHttp, None).await;
    let a = d.local_addr();
    let r = http_get(a, None, "/", "").await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("weft-derper"),
        "{r}"
    );
    let r = http_get(a, None, "/derp/probe", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("Access-Control-Allow-Origin: *"), "{r}");
    let r = http_get(a, None, "/derp/latency-check", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // /derp without the upgrade, or with another protocol.
    let r = http_get(a, None, "/derp", "").await;
    assert!(r.starts_with("HTTP/1.1 426"), "{r}");
    let r = http_get(a, None, "/derp", "Upgrade: h2c\r\nConnection: Upgrade\r\n").await;
    assert!(r.starts_with("HTTP/1.1 426"), "{r}");
    let r = http_get(a, None, "/nope", "").await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
}

#[tokio::test]
async fn metrics_count_the_traffic() {
    let (d, _dir) = start(TlsMode::SelfSigned, None).await;
    let pin = d.cert_pin();
    let mut a = DerpConn::connect(d.local_addr(), pin.as_deref(), key(1), None)
        .await
        .unwrap();
    let mut b = DerpConn::connect(d.local_addr(), pin.as_deref(), key(2), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();
    b.admitted().await.unwrap();
    for i in 0..5u8 {
        a.send(key(2).public_key(), &[i; 100]).await;
    }
    for _ in 0..5 {
        b.wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
            .await
            .unwrap();
    }
    // To a key nobody has: dropped, counted by reason.
    a.send(key(3).public_key(), &[9; 50]).await;
    a.client.send_ping(*b"12345678").unwrap();
    a.flush().await.unwrap();
    a.wait_for(|e| matches!(e, ClientEvent::Pong(_)))
        .await
        .unwrap();

    let r = http_get(d.local_addr(), pin.as_deref(), "/metrics", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.contains("# TYPE derp_packets_received_total counter"),
        "{r}"
    );
    assert_eq!(metric(&r, "derp_current_connections"), Some(2));
    assert_eq!(metric(&r, "derp_packets_received_total"), Some(6));
    assert_eq!(metric(&r, "derp_bytes_received_total"), Some(550));
    assert_eq!(metric(&r, "derp_packets_sent_total"), Some(5));
    assert_eq!(metric(&r, "derp_bytes_sent_total"), Some(500));
    assert_eq!(
        metric(
            &r,
            "derp_packets_dropped_total{reason=\"unknown_dest\",kind=\"other\"}"
        ),
        Some(1)
    );
    assert_eq!(
        metric(
            &r,
            "derp_bytes_dropped_total{reason=\"unknown_dest\",kind=\"other\"}"
        ),
        Some(50)
    );
    assert_eq!(
        metric(
            &r,
            "derp_packets_dropped_total{reason=\"queue_head\",kind=\"other\"}"
        ),
        Some(0)
    );
    assert_eq!(metric(&r, "derp_got_ping_total"), Some(1));
    assert_eq!(metric(&r, "derp_sent_pong_total"), Some(1));
    // This request and nothing else went through hyper's routes besides the two upgrades.
    assert_eq!(metric(&r, "derper_http_requests_total"), Some(3));
}

/// A one-route HTTP server: answers `{"Allow":true}` only for `allowed`, records each body.
async fn verify_server(allowed: PublicKey, bodies: Arc<Mutex<Vec<String>>>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                let body = loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            assert!(text.starts_with("POST /verify HTTP/1.1"), "{text}");
                            break text[end + 4..end + 4 + len].to_owned();
                        }
                    }
                };
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let allow = v["NodePublic"] == format!("nodekey:{}", allowed.to_hex());
                bodies.lock().unwrap().push(body);
                let answer = format!("{{\"Allow\":{allow}}}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            });
        }
    });
    format!("http://{addr}/verify")
}

#[tokio::test]
async fn verify_url_admits_one_key_and_denies_another() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let url = verify_server(key(1).public_key(), bodies.clone()).await;
    let (d, _dir) = start(TlsMode::PlainHttp, Some(url)).await;

    let mut ok = DerpConn::connect(d.local_addr(), None, key(1), None)
        .await
        .unwrap();
    ok.admitted().await.unwrap();
    let mut denied = DerpConn::connect(d.local_addr(), None, key(2), None)
        .await
        .unwrap();
    let err = denied.admitted().await.unwrap_err();
    assert_eq!(err, "eof");

    let m = d.metrics();
    assert_eq!(metric(&m, "derper_verify_allowed_total"), Some(1));
    assert_eq!(metric(&m, "derper_verify_denied_total"), Some(1));
    assert_eq!(metric(&m, "derp_accepts_total"), Some(1));
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    let first: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"NodePublic": format!("nodekey:{}", key(1).public_key().to_hex()), "Source": "127.0.0.1"})
    );
}

#[tokio::test]
async fn verify_url_failure_denies_and_is_counted() {
    // A port nobody listens on: connection refused.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/verify", dead.local_addr().unwrap());
    drop(dead);
    let (d, _dir) = start(TlsMode::PlainHttp, Some(url)).await;
    let mut c = DerpConn::connect(d.local_addr(), None, key(1), None)
        .await
        .unwrap();
    assert_eq!(c.admitted().await.unwrap_err(), "eof");
    assert_eq!(metric(&d.metrics(), "derper_verify_errors_total"), Some(1));
    assert_eq!(metric(&d.metrics(), "derp_accepts_total"), Some(0));
}

#[test]
fn verify_url_must_be_http() {
    assert!(weft_derper::verify::Verifier::new("https://example.invalid/verify").is_err());
    assert!(weft_derper::verify::Verifier::new("not a url").is_err());
    assert!(weft_derper::verify::Verifier::new("http://127.0.0.1:8080/verify").is_ok());
}
