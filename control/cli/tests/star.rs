//! A sharded weft hub with several peers, in network namespaces: every peer reaches the hub
//! and the hub every peer, whichever shard owns the peer, whichever shard the kernel hashes
//! the peer's initiation to (a foreign shard hands it to the owner), and whichever TUN queue
//! the kernel puts a flow on (a foreign queue hands the frame to the owner).
//!
//! Topology: hub namespace with one veth per spoke (`10.90.K.1/24` ↔ `10.90.K.2/24`); tunnel
//! `10.201.0.1` (hub) and `10.201.0.(10 + K)` (spoke K). Spokes alternate wireguard-go and a
//! one-shard weft; they initiate (the hub has no endpoints), so initiations arrive from four
//! different 4-tuples.
//!
//! Needs root, `ip`, `wg`, `socat`, `ping` and wireguard-go. Named `netns_*`: runs serially.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use weft_testkit::{
    ping, ping_until_reply, serial, tcp_transfer, unique_ifname, veth, wg_set_private_key,
    wg_show_dump, ChildGuard, Keypair, Netns, WgImpl,
};

const SPOKES: u8 = 4;
const HUB_SHARDS: u8 = 3;
const HUB_PORT: u16 = 51820;

fn weft_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft-wg"))
}

fn hub_tunnel() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 201, 0, 1))
}

fn spoke_tunnel(k: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 201, 0, 10 + k))
}

struct Spoke {
    _daemon: ChildGuard,
    ns: Netns,
    keys: Keypair,
    imp: WgImpl,
}

#[test]
fn netns_sharded_hub_with_four_peers() {
    let _serial = serial();
    let hub_ns = Netns::new("wsh").unwrap();
    let hub_if = unique_ifname("hub").unwrap();
    let hub_imp = WgImpl::WeftSharded(weft_path(), HUB_SHARDS);
    let mut hub = hub_imp.start(&hub_ns, &hub_if).unwrap();
    let hub_keys = Keypair::generate().unwrap();

    let mut spokes = Vec::new();
    let mut hub_peers: Vec<String> = Vec::new();
    for k in 0..SPOKES {
        let ns = Netns::new("wss").unwrap();
        let (hub_veth, spoke_veth) = (format!("h{k}"), "s".to_owned());
        veth(&hub_ns, &hub_veth, &ns, &spoke_veth).unwrap();
        hub_ns
            .addr_add(&hub_veth, &format!("10.90.{k}.1/24"))
            .unwrap();
        hub_ns.link_up(&hub_veth).unwrap();
        ns.addr_add(&spoke_veth, &format!("10.90.{k}.2/24"))
            .unwrap();
        ns.link_up(&spoke_veth).unwrap();
        let imp = if k % 2 == 0 {
            WgImpl::WireguardGo
        } else {
            WgImpl::WeftSharded(weft_path(), 1)
        };
        let ifname = unique_ifname(&format!("sp{k}")).unwrap();
        let daemon = imp.start(&ns, &ifname).unwrap();
        let keys = Keypair::generate().unwrap();
        let endpoint = format!("10.90.{k}.1:{HUB_PORT}");
        let port = (HUB_PORT + 1 + u16::from(k)).to_string();
        wg_set_private_key(
            &ns,
            &ifname,
            &keys,
            &[
                "listen-port",
                &port,
                "peer",
                &hub_keys.public,
                "allowed-ips",
                "10.201.0.0/24",
                "endpoint",
                &endpoint,
            ],
        )
        .unwrap();
        ns.addr_add(&ifname, &format!("{}/24", spoke_tunnel(k)))
            .unwrap();
        ns.link_up(&ifname).unwrap();
        hub_peers.extend([
            "peer".to_owned(),
            keys.public.clone(),
            "allowed-ips".to_owned(),
            format!("{}/32", spoke_tunnel(k)),
        ]);
        spokes.push(Spoke {
            _daemon: daemon,
            ns,
            keys,
            imp,
        });
    }
    let mut args = vec!["listen-port".to_owned(), HUB_PORT.to_string()];
    args.extend(hub_peers);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    wg_set_private_key(&hub_ns, &hub_if, &hub_keys, &args).unwrap();
    hub_ns
        .addr_add(&hub_if, &format!("{}/24", hub_tunnel()))
        .unwrap();
    hub_ns.link_up(&hub_if).unwrap();

    // Spokes initiate.
    for (k, s) in spokes.iter().enumerate() {
        ping_until_reply(&s.ns, hub_tunnel(), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("spoke {k} ({}) -> hub: {e:#}", s.imp));
    }
    // The hub reaches every spoke, and bulk data flows both ways with every spoke.
    for (k, s) in spokes.iter().enumerate() {
        let k = u8::try_from(k).unwrap();
        ping(&hub_ns, spoke_tunnel(k), 3).unwrap_or_else(|e| panic!("hub -> spoke {k}: {e:#}"));
        tcp_transfer(&hub_ns, &s.ns, spoke_tunnel(k), 4 << 20)
            .unwrap_or_else(|e| panic!("hub -> spoke {k} transfer: {e:#}"));
        tcp_transfer(&s.ns, &hub_ns, hub_tunnel(), 4 << 20)
            .unwrap_or_else(|e| panic!("spoke {k} -> hub transfer: {e:#}"));
    }
    // The hub's `get` gathers every peer from every shard, each with a handshake and traffic.
    let dump = wg_show_dump(&hub_ns, &hub_if).unwrap();
    assert_eq!(dump.peers.len(), usize::from(SPOKES), "{dump:?}");
    for s in &spokes {
        let p = dump
            .peers
            .iter()
            .find(|p| p.public_key == s.keys.public)
            .unwrap_or_else(|| panic!("hub lost peer {}", s.keys.public));
        assert_ne!(p.latest_handshake, 0);
        assert!(p.rx_bytes > 4 << 20 && p.tx_bytes > 4 << 20, "{p:?}");
    }

    hub.stop().unwrap();
    let log = hub.log();
    let stopped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shard stopped"))
        .collect();
    assert_eq!(stopped.len(), usize::from(HUB_SHARDS), "{log}");
    // How the work spread (informative: which shard the kernel hashed each initiation and
    // each flow to is not under the test's control).
    for line in stopped {
        println!("{line}");
    }
}
