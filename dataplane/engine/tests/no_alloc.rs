//! The per-packet pipeline allocates nothing in steady state.
//!
//! A counting global allocator (`weft_sys::CountingAlloc`) wraps the system one. Two established `Device`s push a million
//! 1380-byte TCP segments through what the engine's fast path does per packet: GSO split of a
//! TUN super-packet into a contiguous buffer, in-place encryption, in-place decryption, GRO
//! coalescing back into super-packets. After a warm-up, the allocation count must not move.
//!
//! What this does not cover yet: the syscalls themselves (`recvmmsg`, `sendmsg`, TUN reads and
//! writes), which the sharded engine will replace by an in-memory fake so the whole shard loop
//! can be counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use weft_packet::build::Spec;
use weft_packet::{Coalesced, GroTable, SuperPacket};
use weft_sys::CountingAlloc;
use weft_wg::{buffer_len_for, Decapsulated, Encapsulated};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const MTU: usize = 1420;
const MSS: u16 = 1380;
const SEGMENTS: usize = 45;

#[test]
fn a_million_segments_through_split_seal_open_and_coalesce_allocate_nothing() {
    // The counter is live: one allocation moves it.
    let probe = CountingAlloc::allocations();
    drop(std::hint::black_box(vec![1u8; 10]));
    assert!(
        CountingAlloc::allocations() > probe,
        "counting allocator not installed"
    );

    let now = Instant::now();
    let weft_wg::testing::Pair {
        mut a,
        mut b,
        a_addr: from_a,
        ..
    } = weft_wg::testing::established_pair(now).expect("handshake");

    let payload = vec![0x5au8; usize::from(MSS) * SEGMENTS];
    let frame = Spec::tcp4().super_frame(MSS, &payload);
    let stride = buffer_len_for(usize::from(MSS) + 40, MTU);
    let mut out = vec![0u8; stride * SEGMENTS];
    let mut gro = GroTable::new(64, false);
    let mut scratch = vec![0u8; weft_packet::gro::SCRATCH_LEN];
    let mut spans = Vec::with_capacity(SEGMENTS);

    let rounds = 1_000_000 / SEGMENTS + 1;
    let warmup = 10;
    let mut before = 0;
    let mut delivered = 0usize;
    for round in 0..rounds {
        if round == warmup {
            before = CountingAlloc::allocations();
            delivered = 0;
        }
        let sp = SuperPacket::from_frame(&frame).unwrap();
        assert_eq!(sp.segment_count(), SEGMENTS);
        spans.clear();
        // Transmit side: each segment written at its message's place, sealed in place.
        for i in 0..SEGMENTS {
            let len = sp.segment_len(i).unwrap();
            let slot = &mut out[i * stride..(i + 1) * stride];
            sp.write_segment(i, &mut slot[16..]).unwrap();
            let Encapsulated::Send { len: n, .. } = a.encapsulate(now, slot, len) else {
                panic!("no session");
            };
            assert_eq!(n, stride);
        }
        // Receive side: each message opened in place.
        for i in 0..SEGMENTS {
            let msg = &mut out[i * stride..(i + 1) * stride];
            let Decapsulated::Packet { start, len, .. } = b.decapsulate(now, from_a, msg) else {
                panic!("not delivered");
            };
            spans.push((i * stride + start, len));
        }
        let mut refs: [&[u8]; SEGMENTS] = [&[]; SEGMENTS];
        for (r, &(off, len)) in refs.iter_mut().zip(&spans) {
            *r = &out[off..off + len];
        }
        gro.coalesce(&refs, &mut scratch, |c| {
            if let Coalesced::Merged { segments, .. } = c {
                delivered += segments;
            }
        });
    }
    let after = CountingAlloc::allocations();
    let measured = (rounds - warmup) * SEGMENTS;
    assert!(measured >= 990_000, "only {measured} segments measured");
    assert_eq!(
        delivered, measured,
        "every segment coalesced into a merged frame"
    );
    assert_eq!(
        after - before,
        0,
        "allocations in steady state over {measured} segments"
    );
}
