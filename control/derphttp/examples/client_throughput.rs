//! A rough throughput check: two clients on one in-process relay on loopback, one pushing
//! 1280-byte packets as fast as `send().await` lets it for a few seconds, the other counting
//! what arrives. Prints sent and received rates and the sender's frames per write. The relay
//! drops a packet when the receiver's 32-packet queue is full, so received < sent is expected
//! once the relay is the bottleneck. Not a benchmark of record (that is `perf/`); a quick way
//! to see what this crate costs. `cargo run --release -p weft-derphttp --example
//! client_throughput [plain|tls] [seconds] [offered Gb/s, 0 = unpaced]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use weft_derp::client::ClientEvent;
use weft_derper::{Config, Derper, TlsMode};
use weft_derphttp::{DerpClient, DerpUrl, DialConfig};
use weft_keys::PrivateKey;

#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tls = args.get(1).map(String::as_str) == Some("tls");
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    // Offered load in Gb/s; 0 = as fast as the sender can queue.
    let rate: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let dir = std::env::temp_dir().join(format!("weft-derphttp-tput-{}", std::process::id()));
    let d = Derper::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        stun_listen: None,
        state_dir: Some(dir.clone()),
        tls: if tls {
            TlsMode::SelfSigned
        } else {
            TlsMode::PlainHttp
        },
        mesh_key: None,
        verify_url: None,
        mesh_with: Vec::new(),
        mesh_retry: weft_derper::mesh::MESH_RETRY,
    })
    .await
    .unwrap();
    let port = d.local_addr().port();
    let url = match d.cert_pin() {
        Some(pin) => format!("https://localhost:{port}#{pin}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    let dial = |n: u8| {
        let mut c = DialConfig::new(
            DerpUrl::parse(&url).unwrap(),
            PrivateKey::from_bytes([n; 32]),
        );
        c.addr = Some(d.local_addr());
        c
    };
    let a = DerpClient::connect(dial(1)).await.unwrap();
    let mut b = DerpClient::connect(dial(2)).await.unwrap();
    let dst = b.public_key();
    let tx = a.sender();
    let dur = Duration::from_secs(secs);
    let start = now();
    let sender = tokio::spawn(async move {
        let p = vec![0u8; 1280];
        let mut sent = 0u64;
        while now() - start < dur {
            for _ in 0..16 {
                tx.send(dst, &p).await.unwrap();
            }
            sent += 16;
            if rate > 0.0 {
                // Pace: sleep until this many packets are due at `rate`.
                let due = Duration::from_secs_f64(sent as f64 * 1280.0 * 8.0 / (rate * 1e9));
                if let Some(ahead) = due.checked_sub(now() - start) {
                    tokio::time::sleep(ahead).await;
                }
            }
        }
        tx.stats()
    });
    let mut got = 0u64;
    let counting = async {
        loop {
            if let Ok(ClientEvent::Packet { .. }) = b.recv().await {
                got += 1;
            }
        }
    };
    let _ = tokio::time::timeout(dur + Duration::from_millis(200), counting).await;
    let s = sender.await.unwrap();
    let secs = dur.as_secs_f64();
    let gbps = |n: u64| n as f64 * 1280.0 * 8.0 / secs / 1e9;
    println!(
        "{}: sent {} pkts ({:.2} Gb/s), received {} ({:.2} Gb/s, {:.1}%), {:.1} frames/write, {} full",
        if tls { "tls" } else { "plain" },
        s.packets_sent,
        gbps(s.packets_sent),
        got,
        gbps(got),
        100.0 * got as f64 / s.packets_sent.max(1) as f64,
        s.packets_sent as f64 / s.writes.max(1) as f64,
        s.send_full,
    );
    let _ = std::fs::remove_dir_all(dir);
}
