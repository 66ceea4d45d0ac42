//! Serves the ts2021 channel on ADDR (default 127.0.0.1:8080) until an official client's first
//! HTTP/2 request arrives over it, prints it and exits 0 (1 after 60 s without one). Used by
//! `scripts/ts2021-probe.sh` inside the real-client sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use weft_coord::{serve_connection, ControlKey};
use weft_keys::PrivateKey;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let mut k = [0u8; 32];
    getrandom::getrandom(&mut k).unwrap();
    let control = Arc::new(ControlKey::new(PrivateKey::from_bytes(k)));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(serve_connection(
                s,
                Arc::clone(&control),
                Arc::new(move |r| {
                    let _ = tx.send(r);
                }),
            ));
        }
    });
    eprintln!("coord-probe: listening on {addr}");
    match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
        Ok(Some(r)) => {
            println!(
                "coord-probe: OK — {} {} over ts2021 + HTTP/2 from machine key {} (capver {})",
                r.method,
                r.path,
                r.machine.to_hex(),
                r.version
            );
            // Let the 501 reach the client before exiting.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        _ => {
            eprintln!("coord-probe: no request over ts2021 within 60 s");
            std::process::exit(1);
        }
    }
}
