//! [`NatLab`]: two hosts, each behind its own nftables NAT, and an "internet" namespace with a
//! DERP relay (TLS, self-signed, pinned) and two STUN servers — the topology of the NAT
//! traversal tests.
//!
//! ```text
//!   host0 10.0.1.2 ── nat0 10.0.1.1 | 198.51.100.1 ──┐
//!                                                      inet: weft-derper 192.0.2.1:3340 (+STUN :3478),
//!   host1 10.0.2.2 ── nat1 10.0.2.1 | 203.0.113.1  ──┘       a second STUN server 192.0.2.2:3478
//! ```
//!
//! "Easy" is `masquerade` (the port is kept when it can be), "hard" is `masquerade
//! fully-random` (a new random port per destination), optionally within a small port range.
//! Each NAT box also has the input firewall every NAT gateway has: new connections from the WAN
//! to the box itself are dropped in the `input` hook. Without it, a probe that crosses its
//! peer's probe reaches the box, finds no socket, and still leaves a confirmed (unreplied)
//! conntrack entry; masquerade must then avoid that tuple and gives the node's next packet to
//! that peer a different port, so even an "easy" NAT stops keeping ports for that peer for 30 s.
//! Dropping in `input` (before conntrack confirms) leaves no entry.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::netns::{veth, Netns};
use crate::process::ChildGuard;
use crate::tailscale::start_derper;
use crate::util::TempDir;

/// The mapping behaviour of a lab NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// `masquerade`: ports kept where possible.
    Easy,
    /// `masquerade fully-random`: a new port per destination.
    Hard,
    /// Hard, with UDP mapped only into `lo..=hi`.
    HardRange(u16, u16),
}

/// The NATs' public addresses.
pub const NAT_PUBLIC: [&str; 2] = ["198.51.100.1", "203.0.113.1"];
/// The relay's address in the internet namespace (DERP on 3340, STUN on 3478).
pub const DERP_IP: &str = "192.0.2.1";
/// The second STUN server's address.
pub const STUN2_IP: &str = "192.0.2.2";

/// The lab. Dropping it stops the relays and deletes every namespace.
#[derive(Debug)]
pub struct NatLab {
    /// The internet namespace (relay, STUN servers, routes between the NATs).
    pub inet: Netns,
    /// The NAT boxes.
    pub nats: Vec<Netns>,
    /// The hosts behind them (`10.0.1.2`, `10.0.2.2`; default route via their NAT).
    pub hosts: Vec<Netns>,
    /// Scratch space (relay state).
    pub dir: TempDir,
    /// `https://192.0.2.1:3340#sha256-raw:<hex>`.
    pub derp_url: String,
    /// The relay certificate's `sha256-raw:<hex>` pin.
    pub pin: String,
    /// Both relays' URLs: [`Self::derp_url`], then the one at [`STUN2_IP`] (a full relay too,
    /// not meshed with the first: a second region).
    pub derp_urls: Vec<String>,
    derpers: Vec<ChildGuard>,
}

impl NatLab {
    /// Builds the topology with `derper_bin` (the `weft-derper` binary) as relay and STUN
    /// servers. `block_udp` drops all forwarded UDP in both NATs (only TCP gets out).
    pub fn new(derper_bin: &Path, kinds: [NatKind; 2], block_udp: bool) -> Result<Self> {
        if !derper_bin.exists() {
            bail!(
                "{} not built (cargo build -p weft-derper)",
                derper_bin.display()
            );
        }
        let inet = Netns::new("natinet")?;
        inet.sysctl("net.ipv4.ip_forward", "1")?;
        inet.addr_add("lo", &format!("{DERP_IP}/32"))?;
        inet.addr_add("lo", &format!("{STUN2_IP}/32"))?;
        let mut nats = Vec::new();
        let mut hosts = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let nat = Netns::new(&format!("nat{i}"))?;
            let host = Netns::new(&format!("nathost{i}"))?;
            let inet_if = format!("i{i}");
            veth(&inet, &inet_if, &nat, "p0")?;
            veth(&nat, "l0", &host, "e0")?;
            let public = NAT_PUBLIC.get(i).copied().unwrap_or("192.0.2.254");
            let gw = if i == 0 {
                "198.51.100.254"
            } else {
                "203.0.113.254"
            };
            inet.addr_add(&inet_if, &format!("{gw}/24"))?;
            inet.link_up(&inet_if)?;
            nat.addr_add("p0", &format!("{public}/24"))?;
            nat.addr_add("l0", &format!("10.0.{}.1/24", i + 1))?;
            nat.link_up("p0")?;
            nat.link_up("l0")?;
            nat.ip(&["route", "add", "default", "via", gw])?;
            nat.sysctl("net.ipv4.ip_forward", "1")?;
            host.addr_add("e0", &format!("10.0.{}.2/24", i + 1))?;
            host.link_up("e0")?;
            host.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("10.0.{}.1", i + 1),
            ])?;
            nft(&nat, &rules(*kind, block_udp))?;
            nats.push(nat);
            hosts.push(host);
        }
        let dir = TempDir::new("natlab")?;
        let mut derpers = Vec::new();
        let mut pins = Vec::new();
        for (n, ip) in [DERP_IP, STUN2_IP].iter().enumerate() {
            // Both relays are waited for (the second one serves only STUN to most labs' nodes;
            // a node started before it would lose its first STUN answer).
            let state = dir.join(&format!("derper{n}"));
            let (d, pin) = start_derper(&inet, derper_bin, ip, &state, &[])?;
            pins.push(pin);
            derpers.push(d);
        }
        let derp_urls: Vec<String> = [DERP_IP, STUN2_IP]
            .iter()
            .zip(&pins)
            .map(|(ip, pin)| format!("https://{ip}:3340#{pin}"))
            .collect();
        Ok(Self {
            inet,
            nats,
            hosts,
            dir,
            derp_url: derp_urls.first().cloned().unwrap_or_default(),
            pin: pins.first().cloned().unwrap_or_default(),
            derp_urls,
            derpers,
        })
    }

    /// The relay's log so far.
    pub fn derper_log(&self) -> String {
        self.derpers
            .first()
            .map(ChildGuard::log)
            .unwrap_or_default()
    }
}

/// The nftables ruleset of one NAT box.
fn rules(kind: NatKind, block_udp: bool) -> String {
    let masq = match kind {
        NatKind::Easy => "oifname \"p0\" masquerade".to_owned(),
        NatKind::Hard => "oifname \"p0\" masquerade fully-random".to_owned(),
        NatKind::HardRange(lo, hi) => format!(
            "oifname \"p0\" meta l4proto udp masquerade to :{lo}-{hi} fully-random\n    \
             oifname \"p0\" masquerade fully-random"
        ),
    };
    let mut r = format!(
        "table ip weftnat {{\n  chain post {{\n    type nat hook postrouting priority 100;\n    {masq}\n  }}\n}}\n\
         table inet weftfw {{\n  chain input {{\n    type filter hook input priority 0;\n    \
         iifname \"p0\" ct state new drop\n  }}\n}}\n"
    );
    if block_udp {
        r.push_str(
            "table inet weftblock {\n  chain block_udp {\n    type filter hook forward priority 0;\n    \
             meta l4proto udp drop\n  }\n}\n",
        );
    }
    r
}

/// Loads `rules` with `nft -f -` inside `ns`.
fn nft(ns: &Netns, rules: &str) -> Result<()> {
    let mut child = ns
        .command(&["nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(rules.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("nft")?;
    if !out.status.success() {
        bail!(
            "nft failed: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
