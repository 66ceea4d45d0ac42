//! Relayed throughput on loopback: a relay in-process, client A sending 1280-byte packets to
//! client B as fast as it can for a few seconds, B counting what arrives. Prints goodput at B
//! and the relay's drop counters. One-off measurement, not a test.
//!
//! `cargo run --release -p weft-derper --example relay_throughput -- [tls|plain] [seconds] [Gb/s]`
//!
//! Without a rate the sender is unpaced (the relay then mostly drops at B's queue head); with
//! one it paces itself to that offered load, but only at the timer's 1 ms granularity, so it
//! still sends bursts well above the relay's 32-packet per-client queue: paced numbers measure
//! those bursts more than the relay. The benchmark proper (relay binary and clients in separate
//! processes, TLS pinned, official clients too) is `weft-perf relay`; see `perf/README.md`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    missing_docs
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{key, metric, start, DerpConn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_derper::TlsMode;

/// Packets written per socket write: bursts above the relay's 32-packet queue overflow it.
const BATCH: usize = 8;

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "tls".into());
    let secs: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rate: Option<f64> = std::env::args().nth(3).and_then(|s| s.parse().ok());
    let tls = if mode == "plain" {
        TlsMode::PlainHttp
    } else {
        TlsMode::SelfSigned
    };
    let (d, _dir) = start(tls, None).await;
    let pin = d.cert_pin();
    let mut a = DerpConn::connect(d.local_addr(), pin.as_deref(), key(1), None)
        .await
        .unwrap();
    let mut b = DerpConn::connect(d.local_addr(), pin.as_deref(), key(2), None)
        .await
        .unwrap();
    a.admitted().await.unwrap();
    b.admitted().await.unwrap();

    // B: count RecvPacket payload bytes straight off the socket through the client core.
    let reader = tokio::spawn(async move {
        let mut bytes = 0u64;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 256 << 10];
        let start = Instant::now();
        let mut last = start;
        loop {
            let r = tokio::time::timeout(Duration::from_secs(1), b.stream.read(&mut chunk)).await;
            let Ok(Ok(n)) = r else { break };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let used = b.client.handle_input(Instant::now(), &buf).unwrap();
            buf.drain(..used);
            while let Some(ev) = b.client.poll_event() {
                if let weft_derp::client::ClientEvent::Packet { packet, .. } = ev {
                    bytes += packet.len() as u64;
                    last = Instant::now();
                }
            }
        }
        (bytes, last - start)
    });

    let pkt = vec![0x11u8; 1280];
    let dst = key(2).public_key();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::with_capacity(1 << 20);
    let mut sent = 0u64;
    let t0 = Instant::now();
    while Instant::now() < until {
        if let Some(gbps) = rate {
            let due = t0 + Duration::from_secs_f64(sent as f64 * 1280.0 * 8.0 / (gbps * 1e9));
            tokio::time::sleep_until(due.into()).await;
        }
        for _ in 0..BATCH {
            a.client.send_packet(dst, &pkt).unwrap();
            sent += 1;
        }
        out.clear();
        a.client.poll_transmit(&mut out);
        a.stream.write_all(&out).await.unwrap();
    }
    let (bytes, took) = reader.await.unwrap();
    let m = d.metrics();
    println!(
        "{mode}: sent {sent} packets ({:.2} Gb/s offered), B received {bytes} bytes in {:.2} s = {:.2} Gb/s goodput; relay received {:?} sent {:?} queue_head drops {:?}",
        sent as f64 * 1280.0 * 8.0 / secs as f64 / 1e9,
        took.as_secs_f64(),
        bytes as f64 * 8.0 / took.as_secs_f64() / 1e9,
        metric(&m, "derp_packets_received_total"),
        metric(&m, "derp_packets_sent_total"),
        metric(&m, "derp_packets_dropped_total{reason=\"queue_head\",kind=\"other\"}"),
    );
}
