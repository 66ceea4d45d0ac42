//! The reverse-flow cache allocates nothing per packet: a UDP query/reply exchange through
//! the shard loop with filters on both sides (B records its flow, A's replies pass as replies),
//! and a `FlowTable` of 512 filled, evicted and refreshed by thousands of distinct flows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods)]

use std::net::IpAddr;
use std::time::Instant;

use weft_dataplane::testing::ShardPair;
use weft_filter::{Filter, FlowTable, IpNet, Verdict};
use weft_packet::build::Spec;
use weft_sys::CountingAlloc;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const MTU: usize = 1420;
const MSS: u16 = 1380;

fn host(a: [u8; 4]) -> IpNet {
    IpNet::host(IpAddr::from(a))
}

#[test]
fn recording_and_answering_flows_allocates_nothing() {
    let probe = CountingAlloc::allocations();
    drop(std::hint::black_box(vec![1u8; 10]));
    assert!(
        CountingAlloc::allocations() > probe,
        "counting allocator not installed"
    );

    // The table alone: 20 000 distinct flows through 512 entries, each answered once.
    let filter = Filter::deny_all([host([10, 0, 0, 2])]);
    let mut flows = FlowTable::new();
    let packets: Vec<(Vec<u8>, Vec<u8>)> = (0..20_000u32)
        .map(|i| {
            let out = Spec {
                src: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                dst: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                src_port: 1024 + (i % 60000) as u16,
                dst_port: 53 + (i / 60000) as u16,
                ..Spec::udp4()
            };
            let mut back = out.clone();
            std::mem::swap(&mut back.src, &mut back.dst);
            std::mem::swap(&mut back.src_port, &mut back.dst_port);
            (out.packet(&[0; 16]), back.packet(&[0; 16]))
        })
        .collect();
    let before = CountingAlloc::allocations();
    let mut accepted = 0;
    for (out, back) in &packets {
        assert!(filter.check_outbound(out, &mut flows));
        accepted += u32::from(filter.check_inbound_with(back, &mut flows) == Verdict::Accept);
    }
    assert_eq!(
        CountingAlloc::allocations() - before,
        0,
        "table allocations"
    );
    assert_eq!(accepted, 20_000);
    assert_eq!(flows.len(), 512);

    // The shard loop: B queries A over UDP (USO super-packets), A answers; B's filter has no
    // UDP rule, so every answer passes as a reply.
    let answer = Spec::udp4().super_frame(MSS, &vec![0x66; usize::from(MSS) * 4]);
    let mut query = Spec::udp4();
    std::mem::swap(&mut query.src, &mut query.dst);
    std::mem::swap(&mut query.src_port, &mut query.dst_port);
    let query = query.super_frame(MSS, &vec![0x77; usize::from(MSS) * 4]);
    let mut pair = ShardPair::new(Instant::now(), MTU, answer, query).unwrap();
    pair.set_filters(
        Some(Filter::deny_all([host([10, 0, 0, 1])])),
        Some(Filter::deny_all([host([10, 0, 0, 2])])),
    );
    for _ in 0..20 {
        pair.feed(0, 8);
        pair.run(10_000).unwrap();
        pair.feed(8, 0);
        pair.run(10_000).unwrap();
    }
    let (_, b0) = pair.counts();
    let before = CountingAlloc::allocations();
    for _ in 0..2_000 {
        pair.feed(0, 4);
        pair.run(10_000).unwrap();
        pair.feed(4, 0);
        pair.run(10_000).unwrap();
    }
    let allocations = CountingAlloc::allocations() - before;
    let (_, b) = pair.counts();
    assert!(
        b.written_frames - b0.written_frames >= 2_000,
        "answers delivered"
    );
    // B dropped no answer. A's filter allows nothing either: only the first queries, before
    // A had answered, were dropped; since then they are replies to A's own flow.
    assert_eq!(pair.filtered().1, 0, "B dropped no answer");
    assert_eq!(pair.flows(), (1, 1));
    assert_eq!(allocations, 0, "shard loop allocations");
}
