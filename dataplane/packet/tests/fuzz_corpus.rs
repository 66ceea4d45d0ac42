//! Replays the committed fuzz corpora (`dataplane/fuzz/corpus/packet_vnet_hdr/`,
//! `packet_gso_split/`, `packet_gro_merge/`) through the invariants of the cargo-fuzz targets,
//! so they hold on stable with `cargo test`. A crash found by the fuzzer becomes a regression
//! test by adding its input to the corpus.
//!
//! The seed files come from the generators below; `seed_corpora_match_their_generators` checks
//! that every committed seed is what its generator makes (and passes the invariants). After
//! changing an input format, rewrite them with
//! `WEFT_REGENERATE_CORPORA=1 cargo test -p weft-packet --test fuzz_corpus`. Inputs the fuzzer
//! finds are added by hand and kept.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use weft_packet::build::Spec;
use weft_packet::fuzzing::{self, Violation};
use weft_packet::vnet::{GsoType, F_NEEDS_CSUM, GSO_ECN};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn replay(target: &str, check: fn(&[u8]) -> Result<(), Violation>) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "{target}: corpus too small: {}",
        files.len()
    );
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if let Err(v) = check(&data) {
            panic!("{}: {v}", path.display());
        }
    }
}

#[test]
fn packet_vnet_hdr_corpus() {
    replay("packet_vnet_hdr", fuzzing::check_vnet_hdr);
}

#[test]
fn packet_gso_split_corpus() {
    replay("packet_gso_split", fuzzing::check_gso_split);
}

#[test]
fn packet_gro_merge_corpus() {
    replay("packet_gro_merge", |d| {
        fuzzing::check_gro_merge(d).map(|_| ())
    });
    // The corpus must exercise merging, not only packets emitted alone.
    let dir = corpus_dir("packet_gro_merge");
    let (mut files_merging, mut merged) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let stats = fuzzing::check_gro_merge(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        files_merging += usize::from(stats.merged_packets > 0);
        merged += stats.merged_packets;
    }
    assert!(
        files_merging >= 10 && merged >= 50,
        "{files_merging} files, {merged} packets merged"
    );
}

// ---- Seed corpora ------------------------------------------------------------------------

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + 1) as u8).collect()
}

fn vnet(gso_type: u8, flags: u8, hdr_len: u16, gso: u16, start: u16, off: u16) -> Vec<u8> {
    let mut b = vec![flags, gso_type];
    for v in [hdr_len, gso, start, off] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

fn with_header(hdr: &[u8], packet: &[u8]) -> Vec<u8> {
    let mut f = hdr.to_vec();
    f.extend_from_slice(packet);
    f
}

fn vnet_hdr_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let tso4 = Spec::tcp4().super_frame(1448, &payload(3000));
    vec![
        ("empty", vec![]),
        ("short_9", vec![0; 9]),
        ("zero_10", vec![0; 10]),
        ("kernel_tso4", tso4[..10].to_vec()),
        ("kernel_tso4_with_packet", tso4),
        ("tso6", vnet(4, F_NEEDS_CSUM, 72, 1428, 40, 16)),
        ("udp_l4", vnet(5, F_NEEDS_CSUM, 28, 1200, 20, 6)),
        (
            "tso4_ecn",
            vnet(1 | GSO_ECN, F_NEEDS_CSUM, 52, 1448, 20, 16),
        ),
        ("none_needs_csum", vnet(0, F_NEEDS_CSUM, 0, 0, 20, 16)),
        ("none_data_valid", vnet(0, 2, 0, 0, 0, 0)),
        ("unknown_flags", vnet(0, 0xf8, 1, 2, 3, 4)),
        ("ufo_refused", vnet(3, 1, 28, 1200, 20, 6)),
        ("type_2", vnet(2, 0, 0, 0, 0, 0)),
        ("type_6", vnet(6, 0, 0, 0, 0, 0)),
        ("type_7f", vnet(0x7f, 0, 0, 0, 0, 0)),
        ("type_ecn_only", vnet(GSO_ECN, 0, 0, 0, 0, 0)),
        ("type_ecn_unknown", vnet(0x83, 0, 0, 0, 0, 0)),
        ("all_ff", vec![0xff; 10]),
        (
            "max_fields",
            vnet(1, 1, u16::MAX, u16::MAX, u16::MAX, u16::MAX),
        ),
        ("eleven_bytes", vec![1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0x60]),
    ]
}

fn gso_split_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut tcp4_flags = Spec::tcp4();
    tcp4_flags.tcp_flags = 0x10 | 0x08 | 0x01 | 0x80;
    tcp4_flags.tcp_options = vec![1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9];
    let mut ipopt = Spec::tcp4();
    ipopt.ip_options = vec![1, 1, 1, 0];
    let mut v4_udp_nodf = Spec::udp4();
    v4_udp_nodf.df = false;
    v4_udp_nodf.ident = 0xffff;

    let tcp4 = Spec::tcp4().super_frame(1000, &payload(3500));
    let mut none_partial = Spec::udp4().super_frame(2000, &payload(500));
    none_partial[1] = 0;
    let mut routing = Spec::tcp6().super_frame(500, &payload(1200));
    routing[10 + 6] = 43;
    let mut dstopts = Spec::udp6().super_frame(100, &payload(300));
    dstopts[10 + 6] = 60;
    dstopts.splice(50..50, [17, 0, 1, 4, 0, 0, 0, 0]);
    dstopts[6..8].copy_from_slice(&48u16.to_le_bytes());
    let mut zero_gso = tcp4.clone();
    zero_gso[4] = 0;
    zero_gso[5] = 0;
    let mut mismatch = tcp4.clone();
    mismatch[1] = GsoType::TcpV6 as u8;
    let mut wrong_proto = tcp4.clone();
    wrong_proto[1] = GsoType::UdpL4 as u8;
    let mut fragment = tcp4.clone();
    fragment[10 + 6] |= 0x20;
    let mut bad_doff = tcp4.clone();
    bad_doff[10 + 20 + 12] = 0x40;
    let mut stale_hdr_len = tcp4.clone();
    stale_hdr_len[2..4].copy_from_slice(&1500u16.to_le_bytes());
    let mut bad_csum_offsets = tcp4.clone();
    bad_csum_offsets[6] = 30;
    let mut none_csum_past_end = vnet(0, F_NEEDS_CSUM, 0, 0, 40, 30);
    none_csum_past_end.extend_from_slice(&[0x45; 60]);

    vec![
        ("tcp4_3500_by_1000", tcp4.clone()),
        ("tcp4_psh_fin_cwr_timestamps", tcp4_flags.super_frame(1448, &payload(5000))),
        ("tcp6_4000_by_1428", Spec::tcp6().super_frame(1428, &payload(4000))),
        ("udp4_no_df_ident_wraps", v4_udp_nodf.super_frame(1200, &payload(3700))),
        ("udp6_exact_multiple", Spec::udp6().super_frame(500, &payload(1500))),
        ("tcp4_ip_options", ipopt.super_frame(600, &payload(1900))),
        ("tcp4_gso_1_many_segments", Spec::tcp4().super_frame(1, &payload(300))),
        ("tcp4_gso_larger_than_payload", Spec::tcp4().super_frame(65000, &payload(900))),
        ("udp6_dstopts", dstopts),
        ("tcp6_routing_refused", routing),
        ("none_plain", with_header(&[0; 10], &Spec::tcp4().packet(&payload(100)))),
        ("none_junk", with_header(&[0; 10], &[0x99; 33])),
        ("none_needs_csum", none_partial),
        ("none_needs_csum_past_end", none_csum_past_end),
        ("zero_gso_size", zero_gso),
        ("tcpv6_type_over_ipv4", mismatch),
        ("udp_type_over_tcp", wrong_proto),
        ("ipv4_fragment", fragment),
        ("bad_tcp_data_offset", bad_doff),
        ("kernel_hdr_len_stale", stale_hdr_len),
        ("bad_csum_start", bad_csum_offsets),
        ("empty_payload", Spec::tcp4().super_frame(1000, &[])),
        ("truncated_tcp", tcp4[..10 + 30].to_vec()),
        ("structured_tcp4", b"S\x00\x01\x00\x00\x10\x00\x00\x00\x02\x00\x10\xe8\x03\x05\x00".to_vec()),
        ("structured_udp6_options", b"S\x8b\x02\x40\x33\xff\x00\x00\x01\x00\x00\x00\x00\x00\xff\xff\x05\xdc\x05\x20\x03\x04".to_vec()),
        ("structured_ipv4_options", b"S\x08\x03\x12\x34\x00\x00\x00\x00\x00\x01\x09\x03\x64\x00\x2f\x11\x01".to_vec()),
    ]
}

fn gro_merge_seeds() -> Vec<(&'static str, Vec<u8>)> {
    fn raw(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![0u8];
        for p in packets {
            out.extend_from_slice(&(p.len() as u16).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }
    let tcp4 = Spec::tcp4().segments(1000, &payload(5000));
    let udp6 = Spec::udp6().segments(300, &payload(1000));
    let other = Spec {
        src_port: 40001,
        ..Spec::tcp4()
    }
    .segments(1000, &payload(2500));
    let mut interleaved = Vec::new();
    for (i, p) in tcp4.iter().enumerate() {
        interleaved.push(p.clone());
        interleaved.extend(other.get(i).cloned());
        interleaved.extend(udp6.get(i).cloned());
    }
    let mut gap = tcp4.clone();
    gap.remove(2);
    let mut bad_csum = tcp4.clone();
    bad_csum[1][50] ^= 0xff;
    let mut ack_between = tcp4.clone();
    ack_between.insert(2, Spec::tcp4().packet(&[]));

    // Structured inputs: flows, then per flow (kind, port, ident, seq, window, flags, gso,
    // count, last), then interleaving picks, then edits (op, index, value).
    let one_flow = vec![
        4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 200, 7, 255, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let two_flows_edits = vec![
        1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 8, 100, 5, 3, 3, 1, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 10, 4,
        2, 1, 0, 1, 0, 1, 0, 1, 0, 0, 5, 9, 0, 2, 3, 1, 0, 14, 1, 7, 0,
    ];
    let mut seeds = vec![
        ("raw_tcp4_stream", raw(&tcp4)),
        ("raw_udp6_stream", raw(&udp6)),
        ("raw_three_flows_interleaved", raw(&interleaved)),
        ("raw_sequence_gap", raw(&gap)),
        ("raw_bad_checksum", raw(&bad_csum)),
        ("raw_pure_ack_between", raw(&ack_between)),
        (
            "raw_junk",
            raw(&[vec![0x45; 20], vec![], vec![0x60; 41], vec![0xff; 3]]),
        ),
        ("raw_truncated_length", vec![0, 200, 0, 0x45, 0, 0]),
        ("structured_one_tcp4_flow", one_flow),
        ("structured_two_flows_with_edits", two_flows_edits),
    ];
    // Pseudo-random structured inputs of growing length.
    let names = [
        "structured_random_01",
        "structured_random_02",
        "structured_random_03",
        "structured_random_04",
        "structured_random_05",
        "structured_random_06",
        "structured_random_07",
        "structured_random_08",
        "structured_random_09",
        "structured_random_10",
        "structured_random_11",
        "structured_random_12",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, name) in names.into_iter().enumerate() {
        let len = 24 + 12 * i;
        let mut bytes = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect::<Vec<u8>>();
        // Keep the first byte non-zero: zero selects the raw format.
        bytes[0] |= 1;
        seeds.push((name, bytes));
    }
    seeds
}

/// Every committed seed equals what its generator makes today; with
/// `WEFT_REGENERATE_CORPORA=1` the seeds are rewritten instead.
#[test]
fn seed_corpora_match_their_generators() {
    let regenerate = std::env::var_os("WEFT_REGENERATE_CORPORA").is_some();
    for (target, seeds, check) in [
        (
            "packet_vnet_hdr",
            vnet_hdr_seeds(),
            fuzzing::check_vnet_hdr as fn(&[u8]) -> Result<(), Violation>,
        ),
        (
            "packet_gso_split",
            gso_split_seeds(),
            fuzzing::check_gso_split,
        ),
        ("packet_gro_merge", gro_merge_seeds(), |d| {
            fuzzing::check_gro_merge(d).map(|_| ())
        }),
    ] {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            check(&data).unwrap_or_else(|v| panic!("{target}/{name}: {v}"));
            let path = dir.join(name);
            if regenerate {
                std::fs::write(&path, data).unwrap();
            } else {
                let committed = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{}: {e} (regenerate the corpora)", path.display()));
                assert!(
                    committed == data,
                    "{target}/{name} differs from its generator"
                );
            }
        }
    }
}
