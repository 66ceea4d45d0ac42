//! Per-packet costs of the WireGuard core: AEAD choices on a full-size packet, the device's
//! encapsulate/decapsulate (crypto plus bookkeeping), allowed-IPs lookup, and a handshake.
//!
//! Run: `cargo bench -p weft-wg --bench wg`. Numbers drift on a shared VM; compare rows of one
//! run, not runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs, clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use weft_wg::allowedips::AllowedIps;
use weft_wg::{buffer_len_for, Decapsulated, Device, Encapsulated, Endpoint};

const PACKET: usize = 1420;

fn ipv4_packet(len: usize, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p
}

fn established() -> (Device, Device, Instant) {
    let now = Instant::now();
    let p = weft_wg::testing::established_pair(now).expect("handshake");
    (p.a, p.b, now)
}

fn aead(c: &mut Criterion) {
    let mut g = c.benchmark_group("aead_1420");
    g.throughput(Throughput::Bytes(PACKET as u64));
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[7; 32]).unwrap(),
    );
    let mut buf = vec![0u8; PACKET];
    let mut n = 0u64;
    g.bench_function("ring_seal", |b| {
        b.iter(|| {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_le_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::empty(),
                    &mut buf,
                )
                .unwrap();
            let _ = black_box(tag);
        })
    });
    {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
        g.bench_function("rustcrypto_seal", |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                let tag = cipher
                    .encrypt_in_place_detached(&nonce.into(), &[], &mut buf)
                    .unwrap();
                let _ = black_box(tag);
            })
        });
    }
    g.finish();
}

fn device(c: &mut Criterion) {
    let mut g = c.benchmark_group("device_1420");
    g.throughput(Throughput::Bytes(PACKET as u64));
    let (mut a, mut b, now) = established();
    let pkt = ipv4_packet(PACKET, [10, 0, 0, 1], [10, 0, 0, 2]);
    let mut buf = vec![0u8; buffer_len_for(PACKET, PACKET)];
    g.bench_function("encapsulate", |bench| {
        bench.iter(|| {
            buf[16..16 + PACKET].copy_from_slice(&pkt);
            match a.encapsulate(now, &mut buf, PACKET) {
                Encapsulated::Send { len, .. } => black_box(len),
                other => panic!("{other:?}"),
            }
        })
    });
    let from = Endpoint::Udp(SocketAddr::from(([192, 0, 2, 1], 1)));
    g.bench_function("encapsulate+decapsulate", |bench| {
        bench.iter(|| {
            buf[16..16 + PACKET].copy_from_slice(&pkt);
            let Encapsulated::Send { len, .. } = a.encapsulate(now, &mut buf, PACKET) else {
                panic!("no session")
            };
            match b.decapsulate(now, from, &mut buf[..len]) {
                Decapsulated::Packet { len, .. } => black_box(len),
                other => panic!("{other:?}"),
            }
        })
    });
    g.finish();
}

fn allowed_ips(c: &mut Criterion) {
    let mut table = AllowedIps::new();
    let mut x: u32 = 0x1234_5678;
    let mut addrs = Vec::new();
    for i in 0..1000u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let cidr = 8 + (x % 25) as u8;
        table
            .insert(IpAddr::V4(Ipv4Addr::from(x)), cidr, i)
            .unwrap();
        addrs.push(IpAddr::V4(Ipv4Addr::from(x ^ 0xff)));
    }
    let mut i = 0;
    c.bench_function("allowedips_lookup_v4_1000_prefixes", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(table.lookup(addrs[i]))
        })
    });
}

fn handshake(c: &mut Criterion) {
    c.bench_function("handshake_initiation_to_session", |b| {
        b.iter_batched(|| (), |_| black_box(established()), BatchSize::SmallInput)
    });
}

criterion_group!(benches, aead, device, allowed_ips, handshake);
criterion_main!(benches);
