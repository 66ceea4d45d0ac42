//! Two relays of one region meshed with each other (`mesh_with`, in-process on loopback): a
//! client on each exchanges packets through both, PeerGone crosses the mesh, a relay restart
//! is healed by the retry, and a relay listed in its own `mesh_with` skips itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{deliver, key, metric, temp_dir, WAIT};
use weft_derp::client::ClientEvent;
use weft_derp::frame::PeerGoneReason;
use weft_derp::handshake::MeshKey;
use weft_derper::{tls, Config, Derper, TlsMode};
use weft_derphttp::{DerpClient, DerpUrl, DialConfig};
use weft_keys::{PrivateKey, PublicKey};

const RETRY: Duration = Duration::from_millis(500);

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A state directory with its self-signed certificate made in advance, so the pin is known
/// before the relay starts (the peer's `mesh_with` needs it).
fn state_with_pin() -> (PathBuf, String) {
    let dir = temp_dir("mesh");
    let (cert, key) =
        tls::ensure_self_signed(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    let ck = tls::load_certified_key(&cert, &key).unwrap();
    (dir, tls::cert_pin(ck.cert[0].as_ref()))
}

fn url(addr: SocketAddr, pin: Option<&str>) -> DerpUrl {
    DerpUrl::parse(&match pin {
        Some(p) => format!("https://{addr}#{p}"),
        None => format!("http://{addr}"),
    })
    .unwrap()
}

async fn start(addr: SocketAddr, dir: &Path, tls: bool, mesh_with: Vec<DerpUrl>) -> Derper {
    let mut c = Config::new(addr);
    c.state_dir = Some(dir.to_owned());
    c.tls = if tls {
        TlsMode::SelfSigned
    } else {
        TlsMode::PlainHttp
    };
    c.mesh_key = Some(MeshKey::from_bytes([0x4d; 32]));
    c.mesh_with = mesh_with;
    c.mesh_retry = RETRY;
    Derper::start(c).await.unwrap()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn client(u: &DerpUrl, addr: SocketAddr, k: &PrivateKey) -> DerpClient {
    let mut cfg = DialConfig::new(u.clone(), k.clone());
    cfg.addr = Some(addr);
    DerpClient::connect(cfg).await.unwrap()
}

async fn wait_peer_gone(c: &mut DerpClient, peer: PublicKey) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let ClientEvent::PeerGone { peer: p, reason } = c.recv().await.unwrap() {
                if p == peer {
                    assert_eq!(reason, PeerGoneReason::Disconnected);
                    return;
                }
            }
        }
    })
    .await
    .expect("no PeerGone");
}

async fn two_relays(tls: bool) {
    let (dir1, pin1) = state_with_pin();
    let (dir2, pin2) = state_with_pin();
    let (pin1, pin2) = if tls {
        (Some(pin1.as_str()), Some(pin2.as_str()))
    } else {
        (None, None)
    };
    let (addr1, addr2) = (free_port(), free_port());
    let (url1, url2) = (url(addr1, pin1), url(addr2, pin2));
    // Both relays get the same list, themselves included, as a region's servers would.
    let list = vec![url1.clone(), url2.clone()];
    let d1 = start(addr1, &dir1, tls, list.clone()).await;
    let d2 = start(addr2, &dir2, tls, list.clone()).await;
    eventually("mesh up", || {
        d1.mesh_links_up() == 1 && d2.mesh_links_up() == 1
    })
    .await;

    let (ka, kb) = (key(1), key(2));
    let mut a = client(&url1, addr1, &ka).await;
    let mut b = client(&url2, addr2, &kb).await;
    deliver(&a, &mut b, b"a to b").await;
    deliver(&b, &mut a, b"b to a").await;
    let m1 = d1.metrics();
    assert!(metric(&m1, "derp_packets_forwarded_out_total").unwrap() >= 1);
    assert!(metric(&m1, "derp_packets_forwarded_in_total").unwrap() >= 1);
    assert_eq!(metric(&m1, "derper_mesh_links_up"), Some(1));

    // B leaves relay 2: relay 1 hears it over the watch and tells A, which received from B;
    // A's packets for B are no longer forwarded.
    drop(b);
    wait_peer_gone(&mut a, kb.public_key()).await;
    let forwarded = metric(&d1.metrics(), "derp_packets_forwarded_out_total").unwrap();
    a.sender().try_send(kb.public_key(), b"nobody").unwrap();
    a.sender().send_ping(*b"syncsync").unwrap();
    tokio::time::timeout(WAIT, async {
        while !matches!(a.recv().await.unwrap(), ClientEvent::Pong(_)) {}
    })
    .await
    .unwrap();
    assert_eq!(
        metric(&d1.metrics(), "derp_packets_forwarded_out_total").unwrap(),
        forwarded
    );

    // Relay 2 restarts (same port, same key and certificate): relay 1 redials within the retry.
    d2.shutdown(Duration::from_millis(50)).await;
    eventually("link down", || d1.mesh_links_up() == 0).await;
    let d2 = start(addr2, &dir2, tls, list).await;
    eventually("mesh back", || {
        d1.mesh_links_up() == 1 && d2.mesh_links_up() == 1
    })
    .await;
    let mut b = client(&url2, addr2, &kb).await;
    deliver(&a, &mut b, b"after restart").await;
    deliver(&b, &mut a, b"and back").await;
    assert!(metric(&d1.metrics(), "derper_mesh_connects_total").unwrap() >= 2);

    drop((a, b));
    d1.shutdown(Duration::ZERO).await;
    d2.shutdown(Duration::ZERO).await;
    let _ = std::fs::remove_dir_all(dir1);
    let _ = std::fs::remove_dir_all(dir2);
}

#[tokio::test]
async fn meshed_relays_over_pinned_tls() {
    two_relays(true).await;
}

#[tokio::test]
async fn meshed_relays_over_plain_http() {
    two_relays(false).await;
}

#[tokio::test]
async fn mesh_configuration_errors_are_refused_at_start() {
    let mut c = Config::new("127.0.0.1:0".parse().unwrap());
    c.mesh_with = vec![url(free_port(), None)];
    assert!(matches!(
        Derper::start(c.clone()).await,
        Err(weft_derper::StartError::MeshWithoutKey)
    ));
    c.mesh_key = Some(MeshKey::from_bytes([1; 32]));
    c.mesh_with = vec![DerpUrl::parse("https://127.0.0.1:1").unwrap()];
    assert!(matches!(
        Derper::start(c).await,
        Err(weft_derper::StartError::MeshWithoutPin(_))
    ));
}

#[tokio::test]
async fn a_wrong_mesh_key_gets_no_link() {
    let (dir1, _) = state_with_pin();
    let addr1 = free_port();
    let d1 = start(addr1, &dir1, false, vec![]).await;
    let dir2 = temp_dir("mesh");
    let mut c = Config::new(free_port());
    c.state_dir = Some(dir2.clone());
    c.mesh_key = Some(MeshKey::from_bytes([0x99; 32]));
    c.mesh_with = vec![url(addr1, None)];
    c.mesh_retry = RETRY;
    let d2 = Derper::start(c).await.unwrap();
    // Relay 1 takes relay 2 for an ordinary client and closes it at WatchConns; relay 2 keeps
    // retrying and never counts a link as up for long.
    eventually("two refusals", || {
        metric(&d2.metrics(), "derper_mesh_failures_total").unwrap_or(0) >= 2
    })
    .await;
    assert!(metric(&d1.metrics(), "derper_input_errors_total").unwrap() >= 1);
    d1.shutdown(Duration::ZERO).await;
    d2.shutdown(Duration::ZERO).await;
    let _ = std::fs::remove_dir_all(dir1);
    let _ = std::fs::remove_dir_all(dir2);
}
