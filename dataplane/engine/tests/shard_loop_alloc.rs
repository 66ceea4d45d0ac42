//! The whole shard loop allocates nothing per packet in steady state.
//!
//! Two shards (`weft_dataplane::testing::ShardPair`) with established devices run the engine's
//! own loop body — TUN read, GSO split, in-place seal, UDP send, UDP receive, in-place open,
//! GRO coalescing, TUN write, timer checks — over in-memory I/O that preallocates everything.
//! A counting global allocator wraps the system one; after a warm-up, a million 1380-byte
//! segments go from A to B (and small packets from B to A), through the tailnet packet filter
//! on both sides, and the count must not move.
//!
//! What this does not count: the kernel's side of the syscalls, and the handshake path (a
//! handshake every two minutes allocates its messages; it is not per packet).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use weft_dataplane::testing::ShardPair;
use weft_packet::build::Spec;
use weft_sys::CountingAlloc;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const MTU: usize = 1420;
const MSS: u16 = 1380;
const SEGMENTS: u64 = 45;

#[test]
fn a_million_segments_through_the_shard_loop_allocate_nothing() {
    let probe = CountingAlloc::allocations();
    drop(std::hint::black_box(vec![1u8; 10]));
    assert!(
        CountingAlloc::allocations() > probe,
        "counting allocator not installed"
    );

    // A → B: TSO super-packets of 45 full segments. B → A: single small packets (acks).
    let bulk = Spec::tcp4().super_frame(MSS, &vec![0x5a; usize::from(MSS) * 45]);
    let mut back = Spec::tcp4();
    std::mem::swap(&mut back.src, &mut back.dst);
    std::mem::swap(&mut back.src_port, &mut back.dst_port);
    let ack = back.super_frame(MSS, &[0x11; 40]);

    let mut pair = ShardPair::new(Instant::now(), MTU, bulk.clone(), ack.clone()).unwrap();
    // The tailnet packet filter runs on every decrypted packet too: B admits the bulk flow by
    // rule, A admits the acks as TCP without SYN (return traffic).
    let rules: Vec<weft_filter::FilterRule> = serde_json::from_str(
        r#"[{"SrcIPs":["10.0.0.1"],"DstPorts":[{"IP":"10.0.0.2","Ports":{"First":443,"Last":443}}]}]"#,
    )
    .unwrap();
    let rules = weft_filter::compile(&rules).unwrap().rules;
    let host = |a: [u8; 4]| weft_filter::IpNet::host(std::net::IpAddr::from(a));
    pair.set_filters(
        Some(weft_filter::Filter::new(&[], [host([10, 0, 0, 1])])),
        Some(weft_filter::Filter::new(&rules, [host([10, 0, 0, 2])])),
    );

    // Warm-up: buffers reach their steady sizes, lazily initialised state is created.
    for _ in 0..20 {
        pair.feed(64, 8);
        pair.run(10_000).unwrap();
    }
    let (a0, b0) = pair.counts();
    let (sent_a0, sent_b0) = pair.segments_sent();

    let frames = 1_000_000 / SEGMENTS + 1;
    let before = CountingAlloc::allocations();
    let mut fed = 0;
    while fed < frames {
        let n = (frames - fed).min(64);
        pair.feed(n, 4);
        let turns = pair.run(10_000).unwrap();
        assert!(turns < 10_000, "the loop did not settle");
        fed += n;
    }
    let allocations = CountingAlloc::allocations() - before;

    let (a, b) = pair.counts();
    let (sent_a, sent_b) = pair.segments_sent();
    let (recv_a, recv_b) = pair.datagrams_received();
    let segments = sent_a - sent_a0;
    assert_eq!(segments, frames * SEGMENTS, "every segment sealed");
    assert!(segments >= 1_000_000);
    assert_eq!(a.refused_sends + b.refused_sends, 0, "nothing refused");
    assert_eq!(recv_b, sent_a, "every sealed segment arrived at B");
    assert_eq!(recv_a, sent_b, "every ack arrived at A");
    assert!(sent_b > sent_b0, "B sent acks during the measurement");
    // GRO puts each super-packet back together exactly: one TUN write per frame read, of the
    // frame's size.
    assert_eq!(b.written_frames - b0.written_frames, frames);
    assert_eq!(
        b.written_bytes - b0.written_bytes,
        frames * bulk.len() as u64
    );
    assert_eq!(a.written_frames - a0.written_frames, sent_b - sent_b0);
    assert_eq!(pair.filtered(), (0, 0), "the filters admitted both flows");
    assert_eq!(allocations, 0, "allocations in steady state");
}
