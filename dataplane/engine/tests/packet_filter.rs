//! The tailnet packet filter in the shard loop: what it denies never reaches the TUN and is
//! counted, what it allows is delivered whole (GRO still rebuilds super-packets), and a new
//! filter takes effect from the next batch, with no batch judged by none; replies to UDP flows
//! this node sent are accepted without a rule (the reverse-flow cache), unsolicited UDP is not.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// The in-memory pair is a shell of its own: it takes the time it starts at.
#![allow(clippy::disallowed_methods)]

use std::net::IpAddr;
use std::time::Instant;

use weft_dataplane::testing::ShardPair;
use weft_filter::{compile, Filter, FilterRule, IpNet};
use weft_packet::build::Spec;
use weft_packet::tcp::flags;

const MTU: usize = 1420;
const MSS: u16 = 1380;

/// B's filter: protocol `proto` from 10.0.0.1 to 10.0.0.2 on ports `first..=last` only.
fn b_filter(proto: u8, first: u16, last: u16) -> Filter {
    let json = format!(
        r#"[{{"SrcIPs":["10.0.0.1"],"DstPorts":[{{"IP":"10.0.0.2","Ports":{{"First":{first},"Last":{last}}}}}],"IPProto":[{proto}]}}]"#
    );
    let rules: Vec<FilterRule> = serde_json::from_str(&json).unwrap();
    let compiled = compile(&rules).unwrap();
    assert!(compiled.skipped.is_empty());
    Filter::new(&compiled.rules, [IpNet::host(IpAddr::from([10, 0, 0, 2]))])
}

/// A pair whose A side reads copies of `frame` (B reads nothing it is fed).
fn pair(frame: Vec<u8>) -> ShardPair {
    let idle = Spec::udp4().super_frame(MSS, &[0; 8]);
    ShardPair::new(Instant::now(), MTU, frame, idle).unwrap()
}

#[test]
fn denied_syns_never_reach_the_tun_and_are_counted() {
    let syn = Spec {
        tcp_flags: flags::SYN,
        ..Spec::tcp4()
    }
    .super_frame(MSS, &[0x44; 100]);
    let mut p = pair(syn);
    p.set_filters(None, Some(b_filter(6, 22, 22)));
    p.feed(10, 0);
    p.run(1000).unwrap();
    assert_eq!(
        p.counts().1.written_frames,
        0,
        "no denied SYN reached B's TUN"
    );
    assert_eq!(p.filtered().1, 10, "each denied SYN counted");
    // The same SYNs with a rule for their port (443): delivered.
    p.set_filters(None, Some(b_filter(6, 443, 443)));
    p.feed(10, 0);
    p.run(1000).unwrap();
    assert_eq!(p.counts().1.written_frames, 10);
    assert_eq!(p.filtered().1, 10, "nothing more dropped");
}

#[test]
fn allowed_super_packets_are_delivered_whole() {
    // TSO super-packets of 20 segments (ACK, no SYN) to 443, through a rule for 400-500.
    let bulk = Spec::tcp4().super_frame(MSS, &vec![0x33; usize::from(MSS) * 20]);
    let len = bulk.len() as u64;
    let mut p = pair(bulk);
    p.set_filters(None, Some(b_filter(6, 400, 500)));
    p.feed(3, 0);
    p.run(1000).unwrap();
    let b = p.counts().1;
    assert_eq!(b.written_frames, 3, "GRO rebuilt each super-packet");
    assert_eq!(b.written_bytes, 3 * len);
    assert_eq!(p.filtered(), (0, 0));
}

#[test]
fn a_new_filter_applies_from_the_next_batch() {
    // UDP is judged by rule whatever it carries: 4-segment USO super-packets to port 443.
    let udp = Spec {
        dst_port: 443,
        ..Spec::udp4()
    }
    .super_frame(MSS, &vec![0x55; usize::from(MSS) * 4]);
    let mut p = pair(udp);
    let (mut delivered, mut dropped) = (0, 0);
    for round in 0..6u64 {
        let allow = round % 2 == 0;
        let port = if allow { 443 } else { 444 };
        p.set_filters(None, Some(b_filter(17, port, port)));
        p.feed(3, 0);
        p.run(1000).unwrap();
        let written = p.counts().1.written_frames;
        let filtered = p.filtered().1;
        if allow {
            assert!(
                written > delivered,
                "round {round}: allowed frames delivered"
            );
            assert_eq!(
                filtered, dropped,
                "round {round}: nothing dropped while allowed"
            );
        } else {
            assert_eq!(
                written, delivered,
                "round {round}: nothing delivered while denied"
            );
            assert_eq!(
                filtered,
                dropped + 3 * 4,
                "round {round}: every segment dropped"
            );
        }
        (delivered, dropped) = (written, filtered);
    }
}

/// B's filter allows nothing from A on UDP. B sends a 4-segment USO super-packet to A
/// (10.0.0.2:4433 → 10.0.0.1:40000, recorded once); A's "replies" (10.0.0.1:40000 →
/// 10.0.0.2:4433) are then delivered, and they were dropped before B sent anything. A
/// datagram from another source port stays unsolicited.
#[test]
fn replies_to_flows_b_sent_pass_without_a_rule() {
    let reply = Spec::udp4().super_frame(MSS, &vec![0x66; usize::from(MSS) * 2]);
    let mut query = Spec::udp4();
    std::mem::swap(&mut query.src, &mut query.dst);
    std::mem::swap(&mut query.src_port, &mut query.dst_port);
    let query = query.super_frame(MSS, &vec![0x77; usize::from(MSS) * 4]);
    let mut p = ShardPair::new(Instant::now(), MTU, reply, query).unwrap();
    // Allows TCP to 22 only: no UDP rule at all.
    p.set_filters(None, Some(b_filter(6, 22, 22)));

    // Unsolicited: dropped, both segments of each frame.
    p.feed(3, 0);
    p.run(1000).unwrap();
    assert_eq!(p.counts().1.written_frames, 0);
    assert_eq!(p.filtered().1, 3 * 2);
    assert_eq!(p.flows(), (0, 0));

    // B sends its query: one flow recorded for the whole super-packet (A has no filter, so
    // records nothing).
    p.feed(0, 2);
    p.run(1000).unwrap();
    assert_eq!(p.flows(), (0, 1));
    assert!(p.counts().0.written_frames > 0, "the query reached A");

    // The replies pass now (GRO may merge them into fewer frames).
    p.feed(3, 0);
    p.run(1000).unwrap();
    assert_eq!(p.filtered().1, 3 * 2, "no reply dropped");
    let delivered = p.counts().1.written_frames;
    assert!(delivered >= 1, "replies delivered");

    // The flow survives a filter change (the cache is kept apart from the rules).
    p.set_filters(None, Some(b_filter(6, 23, 23)));
    p.feed(1, 0);
    p.run(1000).unwrap();
    assert_eq!(p.counts().1.written_frames, delivered + 1);
    assert_eq!(p.filtered().1, 3 * 2);
}

/// The same query and replies, but the replies come from another port of A: not a reply.
#[test]
fn datagrams_from_another_port_are_still_unsolicited() {
    let other = Spec {
        src_port: 40001,
        ..Spec::udp4()
    }
    .super_frame(MSS, &[0x66; 100]);
    let mut query = Spec::udp4();
    std::mem::swap(&mut query.src, &mut query.dst);
    std::mem::swap(&mut query.src_port, &mut query.dst_port);
    let query = query.super_frame(MSS, &[0x77; 100]);
    let mut p = ShardPair::new(Instant::now(), MTU, other, query).unwrap();
    p.set_filters(None, Some(b_filter(6, 22, 22)));
    p.feed(0, 1);
    p.run(1000).unwrap();
    assert_eq!(p.flows(), (0, 1));
    p.feed(5, 0);
    p.run(1000).unwrap();
    assert_eq!(p.counts().1.written_frames, 0);
    assert_eq!(p.filtered().1, 5);
}
