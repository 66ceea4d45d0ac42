//! Two `weft-natpeer` nodes in a [`NatLab`]: start both, collect their JSON lines, summarise.
//! Shared by the NAT scenario tests and the `weft-natlab` demo binary.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;
use weft_keys::PrivateKey;
use weft_testkit::{ChildGuard, NatLab, DERP_IP, STUN2_IP};

/// What one node printed.
pub type Lines = Vec<Value>;

/// Runs a pair of `natpeer_bin` nodes in `lab.hosts` for `secs` seconds, with an optional
/// birthday plan each (`--birthday` syntax), and returns each node's JSON lines. Both nodes
/// are homed on the lab's first relay (region 900).
///
/// Node 1 starts sending 200 ms after node 0: WireGuard initiations that cross (both sides
/// sending their first packet in the same millisecond) each replace the other's handshake
/// state, as in the kernel, and cost a 5 s retry.
///
/// # Errors
/// When a node cannot start or exits with an error (its log is in the error).
pub fn run_pair(
    lab: &NatLab,
    natpeer_bin: &Path,
    secs: u64,
    birthday: [Option<String>; 2],
) -> Result<[Lines; 2]> {
    run_pair_homed(lab, natpeer_bin, secs, birthday, [0, 0])
}

/// [`run_pair`] with each node homed on the lab relay `homes[i]` (0 or 1; region 900 + index).
/// Each node is given the whole DERP map and its peer's home region, as a netmap gives them.
///
/// # Errors
/// As [`run_pair`].
pub fn run_pair_homed(
    lab: &NatLab,
    natpeer_bin: &Path,
    secs: u64,
    birthday: [Option<String>; 2],
    homes: [usize; 2],
) -> Result<[Lines; 2]> {
    let url = |i: usize| {
        lab.derp_urls
            .get(i)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("lab has no relay {i}"))
    };
    let region = |i: usize| (900 + i).to_string();
    let bin = natpeer_bin.to_string_lossy().into_owned();
    let keys = [
        PrivateKey::from_bytes([11; 32]),
        PrivateKey::from_bytes([12; 32]),
    ];
    let disco = [
        PrivateKey::from_bytes([21; 32]),
        PrivateKey::from_bytes([22; 32]),
    ];
    let mut peers: Vec<ChildGuard> = Vec::new();
    let [b0, b1] = birthday;
    let sides = [
        (0usize, &keys[0], &disco[0], &keys[1], &disco[1], b0),
        (1, &keys[1], &disco[1], &keys[0], &disco[0], b1),
    ];
    for (i, key, disco_key, peer_key, peer_disco, bday) in sides {
        let j = 1 - i;
        let home = homes.get(i).copied().unwrap_or(0);
        let peer_home = homes.get(j).copied().unwrap_or(0);
        let other = 1 - home.min(1);
        let mut argv: Vec<String> = vec![
            bin.clone(),
            "--listen".into(),
            "0.0.0.0:41641".into(),
            "--stun".into(),
            format!("{DERP_IP}:3478"),
            "--stun".into(),
            format!("{STUN2_IP}:3478"),
            "--derp".into(),
            url(home)?,
            "--region".into(),
            region(home),
            "--derp-region".into(),
            format!("{}={}", region(other), url(other)?),
            "--peer-region".into(),
            region(peer_home),
            "--peer-key".into(),
            peer_key.public_key().to_hex(),
            "--peer-disco".into(),
            peer_disco.public_key().to_hex(),
            "--tunnel-ip".into(),
            format!("100.64.0.{}", i + 1),
            "--peer-tunnel-ip".into(),
            format!("100.64.0.{}", j + 1),
            "--duration".into(),
            secs.to_string(),
            "--trace".into(),
            "--start-after-ms".into(),
            (300 + 200 * i).to_string(),
        ];
        if let Some(b) = bday {
            argv.extend(["--birthday".into(), b]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let host = lab
            .hosts
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("lab has no host {i}"))?;
        // Private keys through the environment, not the command line.
        let mut cmd = host.command(&argv);
        cmd.env("WEFT_NATPEER_NODE_KEY", key.to_hex())
            .env("WEFT_NATPEER_DISCO_KEY", disco_key.to_hex());
        peers.push(ChildGuard::spawn(&format!("natpeer{i}"), cmd)?);
    }
    let mut out: [Lines; 2] = [Vec::new(), Vec::new()];
    for (slot, (i, p)) in out.iter_mut().zip(peers.iter_mut().enumerate()) {
        let status = p.wait_timeout(Duration::from_secs(secs + 30))?;
        let log = p.log();
        if !status.success() {
            bail!("natpeer{i} failed ({status}):\n{log}");
        }
        *slot = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
    }
    Ok(out)
}

/// The first line of kind `name`.
pub fn event<'a>(lines: &'a [Value], name: &str) -> Option<&'a Value> {
    lines.iter().find(|v| v["event"] == name)
}

/// The summary line (`Value::Null` if the node printed none).
pub fn summary(lines: &[Value]) -> &Value {
    event(lines, "summary").unwrap_or(&Value::Null)
}

/// One human line per node.
pub fn describe(label: &str, out: &[Lines; 2]) -> Vec<String> {
    out.iter()
        .enumerate()
        .map(|(i, lines)| {
            let s = summary(lines);
            let ms = |v: &Value| v.as_u64().map_or("never".to_owned(), |m| format!("{m} ms"));
            let birthday = event(lines, "birthday_hit").map_or(String::new(), |h| {
                format!(
                    ", birthday hit after {} probes ({} ms)",
                    h["probes"], h["elapsed_ms"]
                )
            });
            let regions: Vec<String> = s["derp_links"]
                .as_array()
                .map(|v| v.iter().map(|l| l["region"].to_string()).collect())
                .unwrap_or_default();
            format!(
                "{label} node{i}: NAT {}, first packet delivered {} after the peer sent it, direct path {}, \
                 packets received direct {} / relayed {}{birthday}, relay links to regions [{}]",
                s["nat"].as_str().unwrap_or("?"),
                ms(&s["first_packet_ms"]),
                ms(&s["direct_ms"]),
                s["delivered_direct"],
                s["delivered_derp"],
                regions.join(", "),
            )
        })
        .collect()
}
