use proptest::prelude::*;

use super::*;
use crate::build::{self, Spec};
use crate::proptest::{spec, super_packet, SuperPacketCase};
use crate::tcp::flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
use crate::vnet::GSO_ECN;

/// One emitted frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Single(usize),
    Merged {
        first: usize,
        segments: usize,
        frame: Vec<u8>,
    },
}

impl Out {
    fn segments(&self) -> usize {
        match self {
            Out::Single(_) => 1,
            Out::Merged { segments, .. } => *segments,
        }
    }
}

fn merge_with(table: &mut GroTable, packets: &[Vec<u8>], scratch_len: usize) -> Vec<Out> {
    let mut scratch = vec![0u8; scratch_len];
    let mut out = Vec::new();
    let stats = table.coalesce(packets, &mut scratch, |c| match c {
        Coalesced::Single { index, packet } => {
            assert_eq!(packet, &packets[index][..]);
            out.push(Out::Single(index));
        }
        Coalesced::Merged {
            first_index,
            segments,
            frame,
        } => out.push(Out::Merged {
            first: first_index,
            segments,
            frame: frame.to_vec(),
        }),
    });
    assert_eq!(stats.packets, packets.len());
    assert_eq!(stats.frames, out.len());
    assert_eq!(out.iter().map(Out::segments).sum::<usize>(), packets.len());
    out
}

fn merge(packets: &[Vec<u8>]) -> Vec<Out> {
    merge_with(&mut GroTable::new(64, true), packets, SCRATCH_LEN)
}

/// Segment sizes: how many packets each emitted frame carries.
fn shape(out: &[Out]) -> Vec<usize> {
    out.iter().map(Out::segments).collect()
}

/// Splits a merged frame back with GSO.
fn resplit(frame: &[u8]) -> Vec<Vec<u8>> {
    let sp = crate::gso::SuperPacket::from_frame(frame).unwrap();
    (0..sp.segment_count())
        .map(|i| {
            let mut b = vec![0u8; sp.segment_len(i).unwrap()];
            sp.write_segment(i, &mut b).unwrap();
            b
        })
        .collect()
}

fn payload(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(3) ^ tag).collect()
}

/// `n` contiguous segments of `size` bytes from `spec` (the reference segmentation).
fn stream(spec: &Spec, size: usize, n: usize) -> Vec<Vec<u8>> {
    spec.segments(size as u16, &payload(size * n, spec.src_port as u8))
}

// ---- Merging -------------------------------------------------------------------------------

#[test]
fn contiguous_tcp4_segments_merge_into_one_frame() {
    let mut spec = Spec::tcp4();
    spec.tcp_flags = ACK | PSH;
    let data = payload(3000, 1);
    let segs = spec.segments(1000, &data);
    let out = merge(&segs);
    assert_eq!(shape(&out), [3]);
    let Out::Merged {
        first: 0, frame, ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    let (hdr, ip) = VirtioNetHdr::split_frame(frame).unwrap();
    assert_eq!(
        hdr,
        VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GsoType::TcpV4,
            ecn: false,
            hdr_len: 40,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 16,
        }
    );
    // The frame is exactly the super-packet the kernel would have read from its socket.
    assert_eq!(frame, &spec.super_frame(1000, &data));
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 3040);
    assert!(build::ipv4_checksum_ok(ip));
    assert_eq!(ip[33], ACK | PSH, "PSH of the last segment carried");
    assert_eq!(resplit(frame), segs);
}

#[test]
fn tcp6_udp4_udp6_merge_too() {
    for spec in [Spec::tcp6(), Spec::udp4(), Spec::udp6()] {
        let data = payload(2500, 2);
        let segs = spec.segments(1000, &data);
        let out = merge(&segs);
        assert_eq!(shape(&out), [3], "{spec:?}");
        let Out::Merged { frame, .. } = &out[0] else {
            panic!()
        };
        assert_eq!(frame, &spec.super_frame(1000, &data));
        assert_eq!(resplit(frame), segs);
    }
}

#[test]
fn cwr_may_open_a_batch_and_sets_the_ecn_bit() {
    let mut spec = Spec::tcp4();
    spec.tcp_flags = ACK | CWR;
    let segs = stream(&spec, 500, 3);
    let out = merge(&segs);
    assert_eq!(shape(&out), [3]);
    let Out::Merged { frame, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(frame[1], GsoType::TcpV4 as u8 | GSO_ECN);
    assert_eq!(resplit(frame), segs);
}

#[test]
fn fixed_id_flows_merge_only_with_df() {
    for df in [true, false] {
        let mut spec = Spec::tcp4();
        spec.df = df;
        let segs: Vec<_> = (0..3)
            .map(|i| {
                let mut s = spec.clone();
                s.seq += 100 * i;
                s.packet(&payload(100, 0))
            })
            .collect();
        let want: &[usize] = if df { &[3] } else { &[1, 1, 1] };
        assert_eq!(shape(&merge(&segs)), want, "df {df}");
    }
}

#[test]
fn interleaved_flows_merge_per_flow_in_order() {
    let a = Spec::tcp4();
    let b = Spec {
        src_port: 40001,
        ..Spec::tcp4()
    };
    let c = Spec::udp6();
    let (sa, sb, sc) = (stream(&a, 700, 3), stream(&b, 700, 2), stream(&c, 300, 3));
    let packets = vec![
        sa[0].clone(),
        sb[0].clone(),
        sc[0].clone(),
        sa[1].clone(),
        sc[1].clone(),
        sb[1].clone(),
        sa[2].clone(),
        sc[2].clone(),
    ];
    let out = merge(&packets);
    assert_eq!(shape(&out), [3, 2, 3]);
    let firsts: Vec<usize> = out
        .iter()
        .map(|o| match o {
            Out::Merged { first, .. } => *first,
            Out::Single(i) => *i,
        })
        .collect();
    assert_eq!(firsts, [0, 1, 2]);
    for (o, want) in out.iter().zip([&sa, &sb, &sc]) {
        let Out::Merged { frame, .. } = o else {
            panic!()
        };
        assert_eq!(&resplit(frame), want);
    }
}

#[test]
fn a_shorter_segment_ends_the_batch() {
    let spec = Spec::tcp4();
    let mut segs = stream(&spec, 1000, 2);
    let mut s = spec.clone();
    s.seq += 2000;
    for (i, len) in [500, 1000, 1000].into_iter().enumerate() {
        s.ident = spec.ident + 2 + i as u16;
        segs.push(s.packet(&payload(len, 9)));
        s.seq += len as u32;
    }
    assert_eq!(shape(&merge(&segs)), [3, 2]);
}

#[test]
fn psh_or_fin_in_the_middle_ends_the_batch() {
    for f in [PSH, FIN] {
        let spec = Spec::tcp4();
        let mut segs = stream(&spec, 1000, 4);
        let mut s = spec.clone();
        s.seq += 1000;
        s.ident += 1;
        s.tcp_flags |= f;
        segs[1] = s.packet(&payload(1000, spec.src_port as u8)[..]);
        let out = merge(&segs);
        assert_eq!(shape(&out), [2, 2], "flag {f:#x}");
        let Out::Merged { frame, .. } = &out[0] else {
            panic!()
        };
        assert_eq!(frame[VNET_HDR_LEN + 33], ACK | f);
    }
}

#[test]
fn udp_batches_stop_at_64_datagrams() {
    let segs = stream(&Spec::udp4(), 100, 70);
    assert_eq!(shape(&merge(&segs)), [64, 6]);
}

#[test]
fn merged_frames_stay_within_64k() {
    let segs = stream(&Spec::tcp4(), 1460, 50);
    let out = merge(&segs);
    assert_eq!(shape(&out), [44, 6]);
    let Out::Merged { frame, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(frame.len(), VNET_HDR_LEN + 40 + 44 * 1460);
}

#[test]
fn a_small_scratch_buffer_caps_the_merge() {
    let segs = stream(&Spec::tcp4(), 1000, 5);
    let out = merge_with(&mut GroTable::new(64, true), &segs, VNET_HDR_LEN + 3040);
    assert_eq!(shape(&out), [3, 2]);
    let out = merge_with(&mut GroTable::new(64, true), &segs, 100);
    assert_eq!(shape(&out), [1, 1, 1, 1, 1]);
}

#[test]
fn batches_larger_than_the_capacity_are_chunked() {
    let segs = stream(&Spec::tcp4(), 100, 10);
    let out = merge_with(&mut GroTable::new(4, true), &segs, SCRATCH_LEN);
    assert_eq!(shape(&out), [4, 4, 2]);
    let Out::Merged { first, .. } = &out[2] else {
        panic!()
    };
    assert_eq!(*first, 8);
}

#[test]
fn different_ipv6_flow_labels_are_different_flows() {
    let a = Spec::tcp6();
    let b = Spec {
        flow_label: 7,
        ..Spec::tcp6()
    };
    let (sa, sb) = (stream(&a, 500, 2), stream(&b, 500, 2));
    let out = merge(&[sa[0].clone(), sb[0].clone(), sa[1].clone(), sb[1].clone()]);
    assert_eq!(shape(&out), [2, 2]);
}

#[test]
fn the_table_is_reusable() {
    let mut table = GroTable::new(64, true);
    let segs = stream(&Spec::tcp4(), 500, 3);
    assert_eq!(shape(&merge_with(&mut table, &segs, SCRATCH_LEN)), [3]);
    assert_eq!(shape(&merge_with(&mut table, &segs[1..], SCRATCH_LEN)), [2]);
    assert_eq!(
        shape(&merge_with(&mut table, &[], SCRATCH_LEN)),
        [0usize; 0]
    );
}

// ---- Not merging ---------------------------------------------------------------------------

/// Builds segment 1 of a two-segment stream from `edit`ed fields and checks it stays apart.
fn assert_second_not_merged(base: &Spec, edit: impl Fn(&mut Spec, &mut Vec<u8>)) {
    let mut s = base.clone();
    let first = s.packet(&payload(1000, 5));
    s.seq = s.seq.wrapping_add(1000);
    s.ident = s.ident.wrapping_add(1);
    let mut data = payload(1000, 6);
    edit(&mut s, &mut data);
    let second = s.packet(&data);
    let out = merge(&[first, second]);
    assert_eq!(out, [Out::Single(0), Out::Single(1)], "{s:?}");
}

#[test]
fn tcp_mismatches_are_not_merged() {
    let base = Spec::tcp4();
    assert_second_not_merged(&base, |s, _| s.seq += 1); // gap
    assert_second_not_merged(&base, |s, _| s.seq -= 1); // overlap
    assert_second_not_merged(&base, |s, _| s.ack += 1);
    assert_second_not_merged(&base, |s, _| s.window += 1);
    assert_second_not_merged(&base, |s, _| s.tcp_flags |= ECE);
    assert_second_not_merged(&base, |s, _| s.tcp_flags |= CWR);
    assert_second_not_merged(&base, |s, _| s.tcp_flags = ACK | URG);
    assert_second_not_merged(&base, |s, _| s.tcp_flags = ACK | RST);
    assert_second_not_merged(&base, |s, _| s.tcp_flags = ACK | SYN);
    assert_second_not_merged(&base, |s, _| s.src_port += 1);
    assert_second_not_merged(&base, |s, _| s.dst = [9; 16]);
    assert_second_not_merged(&base, |s, _| s.tcp_options = vec![1, 1, 1, 1]);
    assert_second_not_merged(&base, |_, d| d.push(0)); // larger than the first
    let mut ts = base.clone();
    ts.tcp_options = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    assert_second_not_merged(&ts, |s, _| s.tcp_options[7] = 2); // TSval differs
    assert_second_not_merged(&ts, |s, _| s.tcp_options[11] = 3); // TSecr differs
}

#[test]
fn ip_mismatches_are_not_merged() {
    for base in [Spec::tcp4(), Spec::udp4()] {
        assert_second_not_merged(&base, |s, _| s.ttl -= 1);
        assert_second_not_merged(&base, |s, _| s.tos = 0x10);
        assert_second_not_merged(&base, |s, _| s.df = false);
        assert_second_not_merged(&base, |s, _| s.ident += 5);
        assert_second_not_merged(&base, |s, _| s.ip_options = vec![1, 1, 1, 0]);
    }
    for base in [Spec::tcp6(), Spec::udp6()] {
        assert_second_not_merged(&base, |s, _| s.ttl -= 1);
        assert_second_not_merged(&base, |s, _| s.tos = 0x10);
        assert_second_not_merged(&base, |s, _| s.flow_label += 1);
    }
    assert_second_not_merged(&Spec::udp4(), |s, _| s.v6 = true);
}

#[test]
fn unverifiable_or_odd_packets_are_emitted_alone() {
    let spec = Spec::tcp4();
    let good = stream(&spec, 500, 2);

    let mut bad_l4 = good.clone();
    bad_l4[1][45] ^= 1;
    assert_eq!(shape(&merge(&bad_l4)), [1, 1]);

    let mut bad_ip = good.clone();
    bad_ip[1][11] ^= 1;
    assert_eq!(shape(&merge(&bad_ip)), [1, 1]);

    let mut fragment = good.clone();
    fragment[1][6] |= 0x20;
    assert_eq!(shape(&merge(&fragment)), [1, 1]);

    let mut padded = good.clone();
    padded[1].push(0);
    assert_eq!(shape(&merge(&padded)), [1, 1]);

    let junk = vec![vec![0x45; 3], vec![], vec![0x60; 39], good[0].clone()];
    assert_eq!(shape(&merge(&junk)), [1, 1, 1, 1]);
}

#[test]
fn trusted_l4_checksums_are_not_verified_but_everything_else_is() {
    let spec = Spec::tcp4();
    let good = stream(&spec, 500, 2);
    let mut trusting = GroTable::new(64, true);
    trusting.trust_l4_checksums();

    // A wrong TCP checksum (a payload byte flipped after it was computed) merges...
    let mut bad_l4 = good.clone();
    bad_l4[1][45] ^= 1;
    let out = merge_with(&mut trusting, &bad_l4, SCRATCH_LEN);
    assert_eq!(shape(&out), [2]);
    // ...carrying the bytes as received, under the pseudo-header sum the kernel completes.
    let Out::Merged { frame, .. } = &out[0] else {
        panic!("not merged");
    };
    assert_eq!(frame.last(), bad_l4[1].last());
    assert_eq!(frame[VNET_HDR_LEN + 40 + 500 + 5], bad_l4[1][45]);

    // The IPv4 header checksum and every other rule still apply.
    let mut bad_ip = good.clone();
    bad_ip[1][11] ^= 1;
    assert_eq!(
        shape(&merge_with(&mut trusting, &bad_ip, SCRATCH_LEN)),
        [1, 1]
    );
    let mut padded = good.clone();
    padded[1].push(0);
    assert_eq!(
        shape(&merge_with(&mut trusting, &padded, SCRATCH_LEN)),
        [1, 1]
    );
    assert_eq!(shape(&merge_with(&mut trusting, &good, SCRATCH_LEN)), [2]);
}

#[test]
fn zero_payload_and_zero_udp_checksum_are_not_merged() {
    let spec = Spec::tcp4();
    let ack = spec.packet(&[]);
    assert_eq!(shape(&merge(&[ack.clone(), ack])), [1, 1]);

    let udp = stream(&Spec::udp4(), 200, 3);
    let mut no_csum = udp.clone();
    for p in &mut no_csum {
        p[26] = 0;
        p[27] = 0;
    }
    assert_eq!(shape(&merge(&no_csum)), [1, 1, 1]);
    let out = merge_with(&mut GroTable::new(64, false), &udp, SCRATCH_LEN);
    assert_eq!(shape(&out), [1, 1, 1], "UDP GRO disabled");
}

#[test]
fn a_pure_ack_of_the_flow_closes_the_batch() {
    let spec = Spec::tcp4();
    let segs = stream(&spec, 500, 4);
    let mut s = spec.clone();
    s.seq += 1000;
    let packets = vec![
        segs[0].clone(),
        segs[1].clone(),
        s.packet(&[]),
        segs[2].clone(),
        segs[3].clone(),
    ];
    let out = merge(&packets);
    assert_eq!(shape(&out), [2, 1, 2]);
    assert_eq!(out[1], Out::Single(2));
}

#[test]
fn a_psh_segment_cannot_open_a_batch() {
    let mut spec = Spec::tcp4();
    spec.tcp_flags = ACK | PSH;
    let segs = (0..3)
        .map(|i| {
            let mut s = spec.clone();
            s.seq += 100 * i;
            s.ident += i as u16;
            s.packet(&payload(100, 0))
        })
        .collect::<Vec<_>>();
    assert_eq!(shape(&merge(&segs)), [1, 1, 1]);
}

// ---- Properties ----------------------------------------------------------------------------

/// The segments GSO produces for `case`, for GRO to merge.
fn split(case: &SuperPacketCase) -> Vec<Vec<u8>> {
    resplit(&case.frame())
}

proptest! {
    /// Split then merge gives back the super-packet: for two or more segments, the merged
    /// frame equals the kernel-shaped TUN read byte for byte (virtio header included — IPv4 ID
    /// and both checksums come back identical because the original carries the values
    /// segmentation starts from); a single segment comes back as itself.
    #[test]
    fn split_then_merge_is_the_identity(case in super_packet(64)) {
        let segs = split(&case);
        let out = merge(&segs);
        if segs.len() == 1 {
            prop_assert_eq!(out, vec![Out::Single(0)]);
        } else {
            prop_assert_eq!(out.len(), 1);
            let Out::Merged { first, segments, frame } = &out[0] else {
                panic!("{out:?}")
            };
            prop_assert_eq!((*first, *segments), (0, segs.len()));
            prop_assert_eq!(frame, &case.frame());
        }
    }

    /// Several flows, interleaved at random: each flow merges into exactly one frame whose
    /// segments are that flow's packets in order, and frames come out in first-packet order.
    #[test]
    fn interleaved_flows_merge_per_flow(
        cases in proptest::collection::vec(super_packet(12), 1..5),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..200),
    ) {
        // Distinct source ports keep the flows apart.
        let cases: Vec<SuperPacketCase> = cases
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| { c.spec.src_port = 1000 + i as u16; c })
            .collect();
        let mut queues: Vec<std::collections::VecDeque<(usize, Vec<u8>)>> = cases
            .iter()
            .enumerate()
            .map(|(f, c)| split(c).into_iter().map(|p| (f, p)).collect())
            .collect();
        let mut packets = Vec::new();
        let mut owner = Vec::new();
        let mut picks = picks.into_iter();
        while queues.iter().any(|q| !q.is_empty()) {
            let live: Vec<usize> = (0..queues.len()).filter(|&f| !queues[f].is_empty()).collect();
            let f = live[picks.next().map_or(0, |p| p.index(live.len()))];
            let (flow, p) = queues[f].pop_front().unwrap();
            owner.push(flow);
            packets.push(p);
        }
        let out = merge(&packets);
        prop_assert_eq!(out.len(), cases.len());
        let mut seen = Vec::new();
        for o in &out {
            let (first, segs) = match o {
                Out::Single(i) => (*i, vec![packets[*i].clone()]),
                Out::Merged { first, frame, .. } => (*first, resplit(frame)),
            };
            let flow = owner[first];
            prop_assert_eq!(&segs, &split(&cases[flow]));
            seen.push(first);
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        prop_assert_eq!(seen, sorted);
    }

    /// Breaking one mergeability rule between two otherwise contiguous segments keeps them
    /// apart: sequence gap, flags, flow, TCP options, TTL.
    #[test]
    fn broken_rules_never_merge(base in spec(), which in 0usize..6, delta in 1u8..=255) {
        let mut s = base.clone();
        s.tcp_flags = ACK;
        let first = s.packet(&payload(600, 1));
        s.seq = s.seq.wrapping_add(600);
        s.ident = s.ident.wrapping_add(1);
        // UDP has no sequence, flags or options: break a rule it does have instead.
        let which = if s.udp && matches!(which, 0 | 1 | 3) { 4 + which % 2 } else { which };
        match which {
            0 => s.seq = s.seq.wrapping_add(u32::from(delta)),
            1 => s.tcp_flags ^= ECE,
            2 => s.src_port = s.src_port.wrapping_add(u16::from(delta)),
            3 => {
                s.tcp_options = if s.tcp_options.is_empty() {
                    vec![1; 4]
                } else {
                    let mut o = s.tcp_options.clone();
                    o[0] = o[0].wrapping_add(delta);
                    o
                };
            }
            4 => s.ttl = s.ttl.wrapping_add(delta),
            _ => s.dst[0] ^= delta,
        }
        let second = s.packet(&payload(600, 2));
        prop_assert_eq!(merge(&[first, second]), vec![Out::Single(0), Out::Single(1)]);
    }

    /// Whatever the bytes, coalescing conserves packets and bytes and never panics.
    #[test]
    fn arbitrary_packets_are_conserved(
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..40)
    ) {
        let out = merge(&packets);
        prop_assert_eq!(out.iter().map(Out::segments).sum::<usize>(), packets.len());
    }
}
