//! `--packet-filter FILE`: the tailnet packet filter for a `weft-wg` device that has no
//! coordination server, read from a JSON file and re-read on SIGHUP.
//!
//! Why a file: until the node agent receives netmaps, this is how a lab (and the namespace
//! tests) gives the data plane the same `PacketFilter` a control server would send, with the
//! node's *local nets* that a netmap implies (its addresses and the routes it serves). The
//! file is `{"LocalNets": ["100.64.0.2/32", …], "PacketFilter": [FilterRule, …]}`.
//! A file that cannot be used is an error at start; on a reload it is reported and the filter
//! in force stays (never a moment of allow-all).
//!
//! Where it is enforced: in the kernel when it can be — the tc program of `weft-ebpf` on the
//! TUN's ingress, which judges each packet weft writes before the host stack or the forwarding
//! path sees it — and otherwise by the engine's userspace matcher, which gives the same
//! verdicts (the parity tests in `dataplane/filter/tests/ebpf_parity.rs`). [`Enforcer`] picks
//! the path, says once why the kernel path is unavailable, and moves between them without a
//! gap: the new path is enforcing before the old one stops.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use weft_dataplane::PacketFilterControl;
use weft_ebpf::TcFilter;
use weft_filter::{compile, tc_tables, Filter, FilterRule, IpNet, Rule};

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterFile {
    /// The node's addresses and the routes it serves, as CIDRs or bare addresses.
    #[serde(rename = "LocalNets")]
    local_nets: Vec<String>,
    /// The rules, in the netmap's wire shape.
    #[serde(rename = "PacketFilter")]
    packet_filter: Vec<FilterRule>,
}

/// A compiled filter file.
#[derive(Debug)]
pub(crate) struct Loaded {
    rules: Vec<Rule>,
    local: Vec<IpNet>,
}

impl Loaded {
    /// The userspace matcher for these rules.
    pub(crate) fn filter(&self) -> Filter {
        Filter::new(&self.rules, self.local.iter().copied())
    }
}

/// Reads and compiles `path`. Entries a control server may send but this node cannot use are
/// logged and left out, as official clients do; a list that cannot be used at all is an error.
pub(crate) fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read packet filter {}", path.display()))?;
    let file: FilterFile = serde_json::from_str(&text)
        .with_context(|| format!("packet filter {} is not valid", path.display()))?;
    let compiled = compile(&file.packet_filter)
        .map_err(|e| anyhow!("packet filter {}: {e}", path.display()))?;
    for skipped in &compiled.skipped {
        tracing::warn!(file = %path.display(), %skipped, "packet filter entry left out");
    }
    let mut local = Vec::with_capacity(file.local_nets.len());
    for net in &file.local_nets {
        local.push(parse_net(net).with_context(|| {
            format!(
                "packet filter {}: bad LocalNets entry {net:?}",
                path.display()
            )
        })?);
    }
    if local.is_empty() {
        bail!(
            "packet filter {}: LocalNets is empty, so every packet would be dropped",
            path.display()
        );
    }
    tracing::info!(
        file = %path.display(),
        rules = compiled.rules.len(),
        local_nets = local.len(),
        "packet filter loaded"
    );
    Ok(Loaded {
        rules: compiled.rules,
        local,
    })
}

/// How long the tc program stays attached after the userspace matcher took over: far longer
/// than a packet waits in the kernel's receive backlog.
const BACKLOG_DRAIN: std::time::Duration = std::time::Duration::from_millis(100);

/// Which path enforces the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enforcement {
    /// The tc program on the TUN.
    Kernel,
    /// The engine's userspace matcher.
    Userspace,
}

/// Installs filters on the kernel path or the userspace one (see the module doc).
pub(crate) struct Enforcer {
    control: PacketFilterControl,
    ifname: String,
    ifindex: u32,
    /// `false` once loading the program failed or was turned off: never retried.
    ebpf: bool,
    tc: Option<TcFilter>,
}

impl Enforcer {
    /// `ebpf`: try the kernel path (`--no-ebpf` turns it off).
    pub(crate) fn new(
        control: PacketFilterControl,
        ifname: &str,
        ifindex: u32,
        ebpf: bool,
    ) -> Self {
        Self {
            control,
            ifname: ifname.to_owned(),
            ifindex,
            ebpf,
            tc: None,
        }
    }

    /// Makes `loaded` the filter in force and returns where it is enforced.
    pub(crate) fn apply(&mut self, loaded: &Loaded) -> Enforcement {
        let path = match self.try_kernel(loaded) {
            Ok(()) => {
                // The program enforces the new rules: the userspace copy can go.
                self.control.set(None);
                Enforcement::Kernel
            }
            Err(reason) => {
                // Userspace first, then the program goes (if it was attached): no gap. Frames
                // written unchecked before the switch may still sit in the kernel's receive
                // backlog behind the program; give them time to pass it before detaching.
                self.control.set(Some(loaded.filter()));
                if self.tc.is_some() {
                    std::thread::sleep(BACKLOG_DRAIN);
                }
                if self.tc.take().is_some() {
                    tracing::warn!(
                        interface = self.ifname,
                        %reason,
                        "packet filter moved from the kernel to the userspace matcher"
                    );
                }
                Enforcement::Userspace
            }
        };
        tracing::info!(interface = self.ifname, path = ?path, "packet filter enforced");
        path
    }

    fn try_kernel(&mut self, loaded: &Loaded) -> Result<(), String> {
        if !self.ebpf {
            return Err("eBPF is off".into());
        }
        let tables = tc_tables(&loaded.rules, &loaded.local).map_err(|e| {
            let reason = format!("the rule set does not fit the tc program: {e}");
            if self.tc.is_none() {
                tracing::warn!(%reason, "packet filter enforced in userspace");
            }
            reason
        })?;
        if let Some(tc) = self.tc.as_mut() {
            return tc.install(&tables).map_err(|e| e.to_string());
        }
        let attached = TcFilter::load(0).and_then(|mut tc| {
            // Rules before attaching: an attached program without rules drops everything.
            tc.install(&tables)?;
            tc.attach(self.ifindex)?;
            Ok(tc)
        });
        match attached {
            Ok(tc) => {
                self.tc = Some(tc);
                Ok(())
            }
            Err(e) => {
                // Said once: later reloads go straight to userspace.
                self.ebpf = false;
                tracing::warn!(
                    interface = self.ifname,
                    error = %e,
                    "cannot load the eBPF packet filter (needs root, BTF and tc/bpf support); \
                     enforcing it with the userspace matcher instead"
                );
                Err(e.to_string())
            }
        }
    }

    /// The kernel program's counters (passed, dropped), if it is in use.
    pub(crate) fn kernel_counters(&self) -> Option<(u64, u64)> {
        let c = self.tc.as_ref()?.counters().ok()?;
        Some((c.passed(), c.dropped()))
    }
}

/// `a.b.c.d/len`, `v6/len` or a bare address (a host prefix); host bits must be zero.
fn parse_net(s: &str) -> Result<IpNet> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().context("not an IP address")?;
    let Some(len) = len else {
        return Ok(IpNet::host(addr));
    };
    let len: u8 = len.parse().context("bad prefix length")?;
    IpNet::new(addr, len).ok_or_else(|| anyhow!("prefix length too long or host bits set"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(text: &str) -> tempfile_path::Temp {
        tempfile_path::Temp::new(text)
    }

    /// A throwaway file under the system temp dir, removed on drop.
    mod tempfile_path {
        pub(super) struct Temp(pub(super) std::path::PathBuf);
        impl Temp {
            pub(super) fn new(text: &str) -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("weft-filter-{}-{n}.json", std::process::id()));
                std::fs::write(&path, text).unwrap();
                Self(path)
            }
        }
        impl Drop for Temp {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn loads_a_filter_and_refuses_bad_files() {
        let good = write(
            r#"{"LocalNets": ["10.9.0.2", "192.168.7.0/24"],
                "PacketFilter": [{"SrcIPs": ["10.9.0.1"],
                  "DstPorts": [{"IP": "*", "Ports": {"First": 22, "Last": 22}}]}]}"#,
        );
        let f = load(&good.0).unwrap().filter();
        // A SYN from 10.9.0.1 to 10.9.0.2:22 passes; to :23 it does not.
        let syn = |port: u16| {
            let mut p = vec![0u8; 40];
            p[0] = 0x45;
            p[3] = 40;
            p[9] = 6;
            p[12..16].copy_from_slice(&[10, 9, 0, 1]);
            p[16..20].copy_from_slice(&[10, 9, 0, 2]);
            p[22..24].copy_from_slice(&port.to_be_bytes());
            p[32] = 0x50;
            p[33] = 0x02;
            p
        };
        assert_eq!(f.check_inbound(&syn(22)), weft_filter::Verdict::Accept);
        assert!(matches!(
            f.check_inbound(&syn(23)),
            weft_filter::Verdict::Drop(_)
        ));

        for (text, want) in [
            ("{", "not valid"),
            (
                r#"{"LocalNets": [], "PacketFilter": []}"#,
                "LocalNets is empty",
            ),
            (
                r#"{"LocalNets": ["10.0.0.1/33"], "PacketFilter": []}"#,
                "bad LocalNets",
            ),
            (
                r#"{"LocalNets": ["10.0.0.1/8"], "PacketFilter": []}"#,
                "bad LocalNets",
            ),
            (
                r#"{"LocalNets": ["x"], "PacketFilter": []}"#,
                "bad LocalNets",
            ),
            (r#"{"LocalNets": ["10.0.0.1"], "Rules": []}"#, "not valid"),
        ] {
            let bad = write(text);
            let err = format!("{:#}", load(&bad.0).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
        }
        let missing = std::env::temp_dir().join("weft-no-such-filter.json");
        assert!(format!("{:#}", load(&missing).unwrap_err()).contains("cannot read"));
    }
}
