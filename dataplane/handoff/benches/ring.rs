//! Cost of one hand-off on one thread: push a frame into the ring and pop it again (two
//! uncontended slot locks, one copy in, a read of every byte out, the counter updates and the
//! wake-up fence), against a plain copy of the same frame, so the ring's own overhead is the
//! difference between the rows.
//!
//! Run: `cargo bench -p weft-handoff --bench ring`. Numbers drift on a shared VM; compare rows
//! of one run, not runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_handoff::{channel, TUN_FRAME_CAPACITY};

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff");
    for len in [64usize, 1500, TUN_FRAME_CAPACITY] {
        let frame: Vec<u8> = (0..len).map(|i| i as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));

        let (mut p, mut cons) = channel(16, TUN_FRAME_CAPACITY).unwrap();
        g.bench_function(format!("push_pop/{len}"), |b| {
            b.iter(|| {
                let _ = p.push(7, black_box(&frame)).unwrap();
                cons.pop_with(|tag, f| black_box((tag, f.last().copied())))
                    .unwrap()
            })
        });

        let mut dst = vec![0u8; TUN_FRAME_CAPACITY];
        g.bench_function(format!("copy_only/{len}"), |b| {
            b.iter(|| {
                dst[..len].copy_from_slice(black_box(&frame));
                black_box(dst[len - 1])
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
