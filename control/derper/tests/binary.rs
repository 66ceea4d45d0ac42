//! The `weft-derper` binary itself: it prints the certificate pin, relays for clients that pin
//! it, reloads the certificate on SIGHUP, and on SIGTERM sends Restarting and exits 0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{key, DerpConn};
use weft_derp::client::ClientEvent;

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

#[tokio::test]
async fn binary_prints_its_pin_relays_reloads_and_restarts() {
    let state = support::temp_dir("bin");
    // Find a free port (the binary logs its address, but a fixed one is simpler to read back).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-derper"))
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--no-stun",
            "--state-dir",
        ])
        .arg(&state)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pin = line
        .trim()
        .strip_prefix("CertName: ")
        .unwrap_or_else(|| panic!("no pin line: {line:?}"))
        .to_owned();
    assert!(pin.starts_with("sha256-raw:"), "{pin}");

    let mut a = DerpConn::connect(addr, Some(&pin), key(1), None)
        .await
        .unwrap();
    let mut b = DerpConn::connect(addr, Some(&pin), key(2), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();
    b.admitted().await.unwrap();
    a.send(key(2).public_key(), b"via the binary").await;
    let ev = b
        .wait_for(|e| matches!(e, ClientEvent::Packet { .. }))
        .await
        .unwrap();
    assert!(
        matches!(ev, ClientEvent::Packet { src, packet } if src == key(1).public_key() && packet == b"via the binary")
    );

    // SIGHUP: the same files are re-read; the relay keeps serving with the same pin.
    signal(pid, "-HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = DerpConn::connect(addr, Some(&pin), key(3), None)
        .await
        .unwrap();
    c.admitted().await.unwrap();

    signal(pid, "-TERM");
    for conn in [&mut a, &mut b, &mut c] {
        let ev = conn
            .wait_for(|e| matches!(e, ClientEvent::Restarting { .. }))
            .await
            .unwrap();
        assert!(matches!(ev, ClientEvent::Restarting { .. }));
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("certificate reloaded"), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}
