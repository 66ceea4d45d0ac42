//! A rough throughput check: two clients on one in-process relay on loopback, one pushing
//! 1280-byte packets as fast as `send().await` lets it for a few seconds, the other counting
//! what arrives. Prints sent and received rates and the sender's frames per write. The relay
//! drops a packet when the receiver's 32-packet queue is full, so received < sent is expected
//! once the relay is the bottleneck. Not a benchmark of record (that is `perf/`); a quick way
//! to see what this crate costs. `cargo run --release -p weft-derphttp --example
//! client_throughput [plain|tls|mesh-plain|mesh-tls] [seconds] [offered Gb/s, 0 = unpaced]`
//! (the `mesh-` modes put B on a second relay meshed with the first).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use weft_derp::client::ClientEvent;
use weft_derper::{tls, Config, Derper, TlsMode};
use weft_derphttp::{DerpClient, DerpUrl, DialConfig};
use weft_keys::PrivateKey;

#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("plain", String::as_str);
    let tls = mode.ends_with("tls");
    let mesh = mode.starts_with("mesh");
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    // Offered load in Gb/s; 0 = as fast as the sender can queue.
    let rate: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let dir = std::env::temp_dir().join(format!("weft-derphttp-tput-{}", std::process::id()));
    // One relay, or two meshed with each other (A on the first, B on the second).
    let n = if mesh { 2 } else { 1 };
    let mut addrs = Vec::new();
    let mut urls = Vec::new();
    for i in 0..n {
        let d = dir.join(i.to_string());
        let (cert, key) =
            tls::ensure_self_signed(&d, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let pin = tls::cert_pin(tls::load_certified_key(&cert, &key).unwrap().cert[0].as_ref());
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        addrs.push(addr);
        urls.push(
            DerpUrl::parse(&if tls {
                format!("https://{addr}#{pin}")
            } else {
                format!("http://{addr}")
            })
            .unwrap(),
        );
    }
    let mut relays = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut c = Config::new(*addr);
        c.state_dir = Some(dir.join(i.to_string()));
        c.tls = if tls {
            TlsMode::SelfSigned
        } else {
            TlsMode::PlainHttp
        };
        if mesh {
            c.mesh_key = Some(weft_derp::handshake::MeshKey::from_bytes([7; 32]));
            c.mesh_with = urls.clone();
            c.mesh_retry = Duration::from_millis(200);
        }
        relays.push(Derper::start(c).await.unwrap());
    }
    let dial = |n: u8| {
        let i = usize::from(n - 1) % addrs.len();
        let mut c = DialConfig::new(urls[i].clone(), PrivateKey::from_bytes([n; 32]));
        c.addr = Some(addrs[i]);
        c
    };
    let a = DerpClient::connect(dial(1)).await.unwrap();
    let mut b = DerpClient::connect(dial(2)).await.unwrap();
    let dst = b.public_key();
    let tx = a.sender();
    // The mesh learns of B asynchronously: send until one packet arrives.
    loop {
        tx.try_send(dst, b"warm-up").unwrap();
        if let Ok(Ok(ClientEvent::Packet { .. })) =
            tokio::time::timeout(Duration::from_millis(100), b.recv()).await
        {
            break;
        }
    }
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
        mode,
        s.packets_sent,
        gbps(s.packets_sent),
        got,
        gbps(got),
        100.0 * got as f64 / s.packets_sent.max(1) as f64,
        s.packets_sent as f64 / s.writes.max(1) as f64,
        s.send_full,
    );
    for (i, r) in relays.iter().enumerate() {
        let m = r.metrics();
        let drops: Vec<&str> = m
            .lines()
            .filter(|l| {
                (l.starts_with("derp_packets_dropped_total")
                    || l.starts_with("derper_mesh_forward_dropped_total"))
                    && !l.ends_with(" 0")
            })
            .collect();
        println!("  relay {i} drops: {drops:?}");
    }
    drop(relays);
    let _ = std::fs::remove_dir_all(dir);
}
