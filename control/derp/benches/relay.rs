//! Per-packet cost of the relay core: one client's SendPacket frames in, the destination's
//! RecvPacket frames out (`handle_input` + `poll_transmit`), and the frame codec alone.
//! The server shell adds TLS and syscalls on top; this is the ceiling the core allows.
//!
//! Run: `cargo bench -p weft-derp --bench relay`. Compare rows of one run, not runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    clippy::disallowed_methods
)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_derp::frame::{self, Frame, SERVER_MAX_FRAME_LEN};
use weft_derp::handshake::ClientInfo;
use weft_derp::server::{ConnOptions, Server, ServerConfig};
use weft_keys::PrivateKey;

const PACKET: usize = 1280;
const BATCH: usize = 16;

fn relay(c: &mut Criterion) {
    let now = Instant::now();
    let mut s = Server::new(ServerConfig::new(PrivateKey::from_bytes([1; 32])), [0; 32]);
    let a_key = PrivateKey::from_bytes([2; 32]).public_key();
    let b_key = PrivateKey::from_bytes([3; 32]).public_key();
    let a = s.accept(now, a_key, &ClientInfo::default(), ConnOptions::default());
    let b = s.accept(now, b_key, &ClientInfo::default(), ConnOptions::default());
    let mut sink = Vec::new();
    while s.poll_transmit(a, &mut sink, 1 << 20) {}
    while s.poll_transmit(b, &mut sink, 1 << 20) {}
    let packet = vec![0xab; PACKET];
    let mut input = Vec::new();
    for _ in 0..BATCH {
        Frame::SendPacket {
            dst: b_key,
            packet: &packet,
        }
        .encode_to_vec(&mut input)
        .unwrap();
    }
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Bytes((PACKET * BATCH) as u64));
    g.bench_function("send_to_recv_1280B_x16", |bench| {
        let mut out = Vec::with_capacity(64 << 10);
        bench.iter(|| {
            let used = s.handle_input(a, now, black_box(&input)).unwrap();
            assert_eq!(used, input.len());
            out.clear();
            while s.poll_transmit(b, &mut out, 64 << 10) {}
            while s.poll_event().is_some() {}
            black_box(out.len())
        });
    });
    g.bench_function("decode_1280B_x16", |bench| {
        bench.iter(|| {
            let mut rest = &input[..];
            let mut n = 0;
            while let Some((raw, used)) = frame::next_frame(rest, SERVER_MAX_FRAME_LEN).unwrap() {
                n += raw.parse().unwrap().payload_len();
                rest = &rest[used..];
            }
            black_box(n)
        });
    });
    g.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
