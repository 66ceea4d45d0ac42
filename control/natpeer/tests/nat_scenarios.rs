//! The NAT scenarios of issue 7 in network namespaces: two `weft-natpeer` nodes, each behind
//! its own nftables NAT, with `weft-derper` (TLS, certificate pinned) and a second STUN server in
//! an "internet" namespace — [`weft_testkit::NatLab`], whose documentation draws the topology
//! and explains the NAT boxes' rules. "Easy" is `masquerade` (ports preserved), "hard" is
//! `masquerade fully-random` (a new port per destination). Each test prints, per node, the time
//! from the peer's first packet to its delivery through WireGuard and the time to a direct path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use weft_natpeer::lab::{describe, run_pair, run_pair_homed, summary, Lines};
use weft_testkit::{serial, NatKind, NatLab, NAT_PUBLIC};

fn workspace_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_weft-natpeer"))
        .parent()
        .unwrap()
        .join(name)
}

struct Lab {
    lab: NatLab,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    fn new(kinds: [NatKind; 2], block_udp: bool) -> Result<Self> {
        let serial = serial();
        Ok(Self {
            lab: NatLab::new(&workspace_bin("weft-derper"), kinds, block_udp)?,
            _serial: serial,
        })
    }

    fn run(&self, secs: u64, birthday: [Option<String>; 2]) -> Result<[Lines; 2]> {
        run_pair(
            &self.lab,
            Path::new(env!("CARGO_BIN_EXE_weft-natpeer")),
            secs,
            birthday,
        )
    }
}

fn report(label: &str, out: &[Lines; 2]) {
    for (line, lines) in describe(label, out).iter().zip(out) {
        eprintln!("{line}");
        eprintln!("  {}", summary(lines));
    }
}

#[test]
fn netns_nat_1_both_easy_go_direct_within_5s() -> Result<()> {
    let lab = Lab::new([NatKind::Easy, NatKind::Easy], false)?;
    let out = lab.run(8, [None, None])?;
    report("easy/easy", &out);
    for lines in &out {
        let s = summary(lines);
        assert_eq!(s["nat"], "EndpointIndependent", "{s}");
        let direct = s["direct_ms"].as_u64().context("never direct")?;
        assert!(direct < 5000, "direct after {direct} ms");
        assert!(s["first_packet_ms"].as_u64().is_some());
        assert!(s["delivered_direct"].as_u64().unwrap() > 0);
        assert!(s["direct_at_end"].is_string(), "path kept: {s}");
    }
    Ok(())
}

#[test]
fn netns_nat_2_easy_and_hard_go_direct_with_the_birthday_probe() -> Result<()> {
    let lab = Lab::new([NatKind::Easy, NatKind::Hard], false)?;
    // The easy side's mapping is its own port; the hard side fans out from 256 sockets to it,
    // the easy side sprays 1024 random ports of the hard side's address.
    let out = lab.run(
        10,
        [
            Some(format!("spray:{}:1024-65535:1024", NAT_PUBLIC[1])),
            Some(format!("fanout:{}:41641:256", NAT_PUBLIC[0])),
        ],
    )?;
    report("easy/hard", &out);
    assert_eq!(summary(&out[0])["nat"], "EndpointIndependent");
    assert_eq!(summary(&out[1])["nat"], "EndpointDependent");
    // The hard side opened 256 sockets; once the hit is in, only the shared one and the one
    // the path is bound to stay open.
    let open = summary(&out[1])["sockets_open"].as_u64().unwrap();
    assert!((1..=2).contains(&open), "{open} sockets still open");
    for lines in &out {
        let s = summary(lines);
        let direct = s["direct_ms"].as_u64().context("never direct")?;
        assert!(direct < 10_000, "direct after {direct} ms");
        assert!(s["delivered_direct"].as_u64().unwrap() > 0);
    }
    Ok(())
}

#[test]
fn netns_nat_3_both_hard_stay_relayed_and_traffic_flows() -> Result<()> {
    let lab = Lab::new([NatKind::Hard, NatKind::Hard], false)?;
    let out = lab.run(6, [None, None])?;
    report("hard/hard", &out);
    for lines in &out {
        let s = summary(lines);
        assert_eq!(s["nat"], "EndpointDependent");
        assert!(s["direct_ms"].is_null(), "{s}");
        assert!(s["first_packet_ms"].as_u64().unwrap() < 2000);
        // 6 s at one packet per 50 ms, minus the handshake: nearly all through the relay.
        assert!(s["delivered_derp"].as_u64().unwrap() >= 100, "{s}");
    }
    Ok(())
}

#[test]
fn netns_nat_4_udp_blocked_uses_derp_over_tls() -> Result<()> {
    let lab = Lab::new([NatKind::Easy, NatKind::Easy], true)?;
    let out = lab.run(6, [None, None])?;
    report("udp blocked", &out);
    for lines in &out {
        let s = summary(lines);
        assert_eq!(s["nat"], "Unknown", "no STUN answer gets through: {s}");
        assert!(s["direct_ms"].is_null());
        assert!(s["delivered_derp"].as_u64().unwrap() >= 100, "{s}");
        assert_eq!(s["delivered_direct"], 0);
    }
    Ok(())
}

/// Beyond the list: the nodes are homed on different relays that are not meshed (two
/// regions), and UDP is blocked. Each node reaches the other through the peer's home relay,
/// dialled on the first packet, while the peer's packets come in on its own home link.
#[test]
fn netns_nat_6_peers_homed_in_two_regions_relay_through_each_others_home() -> Result<()> {
    let lab = Lab::new([NatKind::Easy, NatKind::Easy], true)?;
    let out = run_pair_homed(
        &lab.lab,
        Path::new(env!("CARGO_BIN_EXE_weft-natpeer")),
        6,
        [None, None],
        [0, 1],
    )?;
    report("two regions", &out);
    for lines in &out {
        let s = summary(lines);
        assert!(s["direct_ms"].is_null(), "{s}");
        assert!(s["first_packet_ms"].as_u64().unwrap() < 2000, "{s}");
        assert!(s["delivered_derp"].as_u64().unwrap() >= 100, "{s}");
        assert_eq!(s["derp_links_opened"], 1, "one link beyond home: {s}");
        assert_eq!(s["derp_unknown_region"], 0, "{s}");
        let links = s["derp_links"].as_array().unwrap();
        let regions: Vec<_> = links
            .iter()
            .map(|l| l["region"].as_u64().unwrap())
            .collect();
        assert_eq!(regions, [900, 901], "{s}");
        assert!(links.iter().all(|l| l["up"] == true), "{s}");
    }
    Ok(())
}

#[test]
fn netns_nat_5_birthday_between_two_hard_nats_with_64_ports() -> Result<()> {
    let (lo, hi) = (40000, 40063);
    let runs = 3;
    let mut successes = 0;
    for run in 0..runs {
        let lab = Lab::new(
            [NatKind::HardRange(lo, hi), NatKind::HardRange(lo, hi)],
            false,
        )?;
        let out = lab.run(
            8,
            [
                Some(format!("sweep:{}:{lo}-{hi}:2", NAT_PUBLIC[1])),
                Some(format!("sweep:{}:{lo}-{hi}:2", NAT_PUBLIC[0])),
            ],
        )?;
        report(&format!("birthday run {run}"), &out);
        if out.iter().all(|l| summary(l)["direct_ms"].is_u64()) {
            successes += 1;
        }
        for lines in &out {
            // Traffic flows either way (relayed until a hit).
            assert!(
                summary(lines)["delivered_derp"].as_u64().unwrap()
                    + summary(lines)["delivered_direct"].as_u64().unwrap()
                    > 50
            );
        }
    }
    eprintln!("birthday, two hard NATs over {} ports, 2 sockets a side: direct in {successes}/{runs} runs (simulation: 100/100 seeds)", hi - lo + 1);
    // The expected rate is ~98 %; all runs failing means the mechanism is broken, not unlucky.
    assert!(successes >= 1, "no run went direct");
    Ok(())
}
