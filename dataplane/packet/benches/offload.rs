//! Costs of the TUN offload path: GSO split of a 64 KiB TCP super-packet into 1380-byte
//! segments (one TUN read becoming 47 packets to encrypt), GRO merge of 45 decrypted 1380-byte
//! segments into one TUN write, and the checksum loop both sit on.
//!
//! Run: `cargo bench -p weft-packet --bench offload`. Numbers drift on a shared VM; compare
//! rows of one run, not runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_packet::build::Spec;
use weft_packet::checksum::Checksum;
use weft_packet::gro::{Coalesced, GroTable, SCRATCH_LEN};
use weft_packet::{SuperPacket, VirtioNetHdr};

const MSS: u16 = 1380;
const HEADROOM: usize = 16;

/// TCP/IPv4 with a timestamp option, as Linux sends it.
fn spec() -> Spec {
    let mut s = Spec::tcp4();
    s.tcp_options = vec![1, 1, 8, 10, 0, 1, 2, 3, 4, 5, 6, 7];
    s
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn gso(c: &mut Criterion) {
    let data = payload(47 * usize::from(MSS));
    let frame = spec().super_frame(MSS, &data);
    let (hdr, packet) = VirtioNetHdr::split_frame(&frame).unwrap();
    assert!(packet.len() <= 65535);
    let mut bufs = vec![[0u8; 1600]; 64];
    let mut lens = [0usize; 64];

    let mut g = c.benchmark_group("gso");
    g.throughput(Throughput::Bytes(packet.len() as u64));
    g.bench_function("split_tcp4_64k_mss1380", |b| {
        b.iter(|| {
            let sp = SuperPacket::parse(&hdr, black_box(packet)).unwrap();
            let n = sp.split_into(HEADROOM, &mut bufs, &mut lens).unwrap();
            assert_eq!(n, 47);
            black_box(&bufs);
        });
    });
    g.finish();
}

fn gro(c: &mut Criterion) {
    let data = payload(45 * usize::from(MSS));
    let segments = spec().segments(MSS, &data);
    let bytes: usize = segments.iter().map(Vec::len).sum();
    let mut table = GroTable::new(64, true);
    let mut scratch = vec![0u8; SCRATCH_LEN];

    let mut g = c.benchmark_group("gro");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("merge_45_tcp4_segments_mss1380", |b| {
        b.iter(|| {
            let mut frames = 0;
            table.coalesce(black_box(&segments), &mut scratch, |c| {
                if let Coalesced::Merged { frame, .. } = c {
                    black_box(frame);
                }
                frames += 1;
            });
            assert_eq!(frames, 1);
        });
    });
    g.finish();
}

fn checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [1380usize, 65535] {
        let data = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("sum_{len}"), |b| {
            b.iter(|| {
                let mut s = Checksum::new();
                s.add_bytes(black_box(&data));
                black_box(s.fold())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, gso, gro, checksum);
criterion_main!(benches);
