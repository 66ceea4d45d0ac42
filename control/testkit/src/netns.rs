//! [`Netns`]: a network namespace that deletes itself, and veth links between two.

use std::fs::File;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::process::ChildGuard;
use crate::util::{bounded, send_signal, sweep_stale_once, unique_netns_name, TempDir};

/// Default bound on a foreground command run with [`Netns::exec`].
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// A network namespace named `<prefix>.wft<pid>.<counter>`, with `lo` up.
///
/// On drop, every process inside it is killed (SIGTERM, then SIGKILL, bounded)
/// and the namespace is deleted, which also destroys its interfaces (veth ends,
/// TUN devices). This runs during unwinding too, so a failing test leaves
/// nothing behind. Names made by this kit that belong to dead processes are
/// swept when the first namespace of a process is created.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn new(prefix: &str) -> Result<Self> {
        sweep_stale_once();
        let name = unique_netns_name(prefix);
        run_host(&["ip", "netns", "add", &name]).context("ip netns add (are we root?)")?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <name> <argv...>` as a command to configure and spawn.
    /// The environment of the test process is passed through.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Runs `argv` inside the namespace in the foreground, bounded by
    /// [`EXEC_TIMEOUT`]; returns its output whatever the exit status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        self.exec_env(EXEC_TIMEOUT, &[], argv)
    }

    /// Like [`Netns::exec`] with an explicit bound and extra environment variables.
    ///
    /// Output is collected through files rather than pipes, so a command that
    /// leaves a daemon behind holding its stdout (e.g. `wg-quick up` with a
    /// userspace implementation) does not block the caller.
    pub fn exec_env(
        &self,
        timeout: Duration,
        env: &[(&str, &str)],
        argv: &[&str],
    ) -> Result<Output> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        let mut cmd = bounded(timeout, &full);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_to_files(cmd).with_context(|| format!("in netns {}: {argv:?}", self.name))
    }

    /// Runs `argv` inside the namespace and fails unless it exits 0; returns stdout.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let out = self.exec(argv)?;
        check_output(&out, &format!("in netns {}: {argv:?}", self.name))
    }

    /// Spawns `argv` inside the namespace as a guarded background process.
    pub fn spawn(&self, label: &str, argv: &[&str]) -> Result<ChildGuard> {
        ChildGuard::spawn(label, self.command(argv))
    }

    /// Runs `ip -n <name> <args...>` and fails unless it exits 0.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_host(&full)
    }

    /// Adds an address in CIDR form (`10.0.0.1/24`, `fd00::1/64`) to `dev`.
    /// IPv6 addresses are added with `nodad`, so they are usable at once.
    pub fn addr_add(&self, dev: &str, cidr: &str) -> Result<()> {
        if cidr.contains(':') {
            self.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
        } else {
            self.ip(&["-4", "addr", "add", cidr, "dev", dev])?;
        }
        Ok(())
    }

    /// Removes an address in CIDR form from `dev`.
    pub fn addr_del(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "del", cidr, "dev", dev])?;
        Ok(())
    }

    /// Sets the MTU of `dev`.
    pub fn set_mtu(&self, dev: &str, mtu: u32) -> Result<()> {
        self.ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string()])?;
        Ok(())
    }

    /// Brings `dev` up.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "set", "dev", dev, "up"])?;
        Ok(())
    }

    /// Adds a route to `dest` (CIDR) through `dev`, on-link.
    pub fn route_add(&self, dest: &str, dev: &str) -> Result<()> {
        self.ip(&["route", "add", dest, "dev", dev])?;
        Ok(())
    }

    /// Whether the namespace has an interface called `dev`.
    pub fn link_exists(&self, dev: &str) -> bool {
        self.ip(&["link", "show", "dev", dev]).is_ok()
    }

    /// The MTU of `dev`.
    pub fn mtu(&self, dev: &str) -> Result<u32> {
        let text = self.ip(&["-o", "link", "show", "dev", dev])?;
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "mtu" {
                if let Some(v) = words.next() {
                    return v.parse().with_context(|| format!("parsing mtu {v:?}"));
                }
            }
        }
        bail!("no mtu in {text:?}")
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.conf.X.promote_secondaries`, ...).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["sysctl", "-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// UDP datagrams dropped on receive in this namespace so far
    /// (`RcvbufErrors` of `Udp` in `/proc/net/snmp` plus `Udp6RcvbufErrors`).
    /// Byte counters of two peers can only agree if this stays 0.
    pub fn udp_receive_drops(&self) -> Result<u64> {
        let snmp = self.run(&["cat", "/proc/net/snmp"])?;
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (header, values) = (udp.next(), udp.next());
        let (Some(header), Some(values)) = (header, values) else {
            bail!("no Udp lines in /proc/net/snmp");
        };
        let v4 = header
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(k, _)| *k == "RcvbufErrors")
            .ok_or_else(|| anyhow!("no RcvbufErrors in {header:?}"))?
            .1
            .parse::<u64>()
            .context("RcvbufErrors")?;
        let snmp6 = self.run(&["cat", "/proc/net/snmp6"])?;
        let v6 = snmp6
            .lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .find(|(k, _)| *k == "Udp6RcvbufErrors")
            .map(|(_, v)| v.trim().parse::<u64>())
            .transpose()
            .context("Udp6RcvbufErrors")?
            .unwrap_or(0);
        Ok(v4 + v6)
    }

    /// Process ids currently inside the namespace.
    pub fn pids(&self) -> Result<Vec<u32>> {
        netns_pids(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy_netns(&self.name);
    }
}

fn netns_pids(name: &str) -> Result<Vec<u32>> {
    let out = run_host(&["ip", "netns", "pids", name])?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Kills everything in the namespace (bounded: 20 rounds of 100 ms, SIGKILL
/// from the 10th) and deletes it. Errors are ignored: this is cleanup.
pub(crate) fn destroy_netns(name: &str) {
    for round in 0..20 {
        let pids = netns_pids(name).unwrap_or_default();
        if pids.is_empty() {
            break;
        }
        let signal = if round < 10 { "TERM" } else { "KILL" };
        for pid in pids {
            send_signal(signal, &pid.to_string());
        }
        sleep(Duration::from_millis(100));
    }
    for _ in 0..10 {
        if run_host(&["ip", "netns", "del", name]).is_ok() {
            return;
        }
        sleep(Duration::from_millis(100));
    }
    eprintln!("weft-testkit: could not delete netns {name}");
}

/// Creates a veth pair: `a_if` in `a`, `b_if` in `b`. Both ends start down.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    run_host(&[
        "ip",
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])
    .with_context(|| format!("creating veth {a_if}@{} <-> {b_if}@{}", a.name(), b.name()))?;
    Ok(())
}

/// Runs a host command (bounded by [`EXEC_TIMEOUT`]) and fails unless it exits 0.
pub(crate) fn run_host(argv: &[&str]) -> Result<String> {
    let out = run_to_files(bounded(EXEC_TIMEOUT, argv))?;
    check_output(&out, &format!("{argv:?}"))
}

fn check_output(out: &Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): stdout: {} stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a (bounded) command with stdout/stderr in temp files and collects them.
fn run_to_files(mut cmd: Command) -> Result<Output> {
    let dir = TempDir::new("exec")?;
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).context("creating stdout file")?)
        .stderr(File::create(&err_path).context("creating stderr file")?);
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    Ok(Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    })
}
