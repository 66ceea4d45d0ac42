//! `weft-natpeer`: one WireGuard peer over `weft-magicsock`, for NAT-traversal labs and tests.
//!
//! It is a node without a control server: keys, the peer and the relay are given on the command
//! line (throwaway lab keys), as a netmap would give them. It sends the peer a small IPv4 packet
//! through WireGuard every `--interval-ms`, wherever the path state machine says (relay first,
//! then direct), and prints JSON lines: `ready`, `first_packet` (from the peer's first packet
//! sent to the first delivered here, through the tunnel), `direct` (time until this node holds
//! a trusted direct path to the peer, i.e. one of its pings was answered over UDP; checked
//! every 5 ms), `birthday_hit`, and a `summary` with every counter. The tests of the NAT
//! scenarios read these lines; `weft-natlab` prints them for people. The private keys come
//! from the environment (`WEFT_NATPEER_NODE_KEY`, `WEFT_NATPEER_DISCO_KEY`), which other local
//! users cannot read, unlike a command line (`/proc/*/cmdline`); they are still lab keys.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;
use weft_derphttp::DerpUrl;
use weft_keys::{PrivateKey, PublicKey};
use weft_magicsock::{now, DerpRegion, MagicSock, Options, Source};
use weft_nat::birthday::Plan;
use weft_nat::disco::{DiscoPrivate, DiscoPublic};
use weft_nat::node::PeerConfig;
use weft_wg::messages::TRANSPORT_HEADER_LEN;
use weft_wg::{Decapsulated, Device, Encapsulated, Endpoint};

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The shared UDP socket.
    #[arg(long, default_value = "0.0.0.0:41641")]
    listen: SocketAddr,
    /// A local address to offer as an endpoint (repeatable; default: every interface that is
    /// up, except loopback).
    #[arg(long = "local-addr")]
    local_addrs: Vec<IpAddr>,
    /// A STUN server (repeatable; two at different IPs tell the NAT type).
    #[arg(long)]
    stun: Vec<SocketAddr>,
    /// The home relay: https://host:port#sha256-raw:<hex>, or http://… (test mode).
    #[arg(long)]
    derp: Option<String>,
    /// The home relay's region id.
    #[arg(long, default_value_t = 900)]
    region: u16,
    /// Another relay of the DERP map, as REGION=URL (repeatable): dialled when the peer's
    /// home region is there.
    #[arg(long = "derp-region")]
    derp_regions: Vec<String>,
    /// The peer's home region (default: this node's).
    #[arg(long)]
    peer_region: Option<u16>,
    /// This node's private key (hex; lab keys only).
    #[arg(long, env = "WEFT_NATPEER_NODE_KEY", hide_env_values = true)]
    node_key: String,
    /// This node's disco private key (hex; lab keys only).
    #[arg(long, env = "WEFT_NATPEER_DISCO_KEY", hide_env_values = true)]
    disco_key: String,
    /// The peer's node public key (hex).
    #[arg(long)]
    peer_key: String,
    /// The peer's disco public key (hex).
    #[arg(long)]
    peer_disco: String,
    /// An endpoint of the peer known in advance (repeatable; normally from control).
    #[arg(long = "peer-endpoint")]
    peer_endpoints: Vec<SocketAddr>,
    /// This node's tunnel address.
    #[arg(long)]
    tunnel_ip: Ipv4Addr,
    /// The peer's tunnel address.
    #[arg(long)]
    peer_tunnel_ip: Ipv4Addr,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Milliseconds between data packets.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Birthday probe: fanout:IP:PORT:SOCKETS, spray:IP:LO-HI:COUNT or sweep:IP:LO-HI:SOCKETS.
    #[arg(long)]
    birthday: Option<String>,
    /// Wait this long after start-up before sending (so the peer is on the relay too); times
    /// are measured from the first packet sent.
    #[arg(long, default_value_t = 0)]
    start_after_ms: u64,
    /// Print a `trace` line whenever the node's disco counters or path change.
    #[arg(long)]
    trace: bool,
    /// Delay before the birthday probe starts (after STUN has answered).
    #[arg(long, default_value_t = 500)]
    birthday_delay_ms: u64,
}

fn parse_plan(spec: &str) -> Result<Plan> {
    let parts: Vec<&str> = spec.split(':').collect();
    let range = |s: &str| -> Result<(u16, u16)> {
        let (lo, hi) = s.split_once('-').context("range must be LO-HI")?;
        Ok((lo.parse()?, hi.parse()?))
    };
    let seed = || -> Result<[u8; 32]> {
        let mut s = [0u8; 32];
        getrandom::getrandom(&mut s).map_err(|e| anyhow::anyhow!("OS randomness: {e}"))?;
        Ok(s)
    };
    match parts.as_slice() {
        ["fanout", ip, port, sockets] => Ok(Plan::fan_out(
            SocketAddr::new(ip.parse()?, port.parse()?),
            sockets.parse()?,
        )),
        ["spray", ip, r, count] => {
            let (lo, hi) = range(r)?;
            Ok(Plan::spray(ip.parse()?, lo, hi, count.parse()?, seed()?))
        }
        ["sweep", ip, r, sockets] => {
            let (lo, hi) = range(r)?;
            Ok(Plan::sweep(ip.parse()?, lo, hi, sockets.parse()?))
        }
        _ => bail!("bad --birthday {spec:?}: fanout:IP:PORT:SOCKETS, spray:IP:LO-HI:COUNT or sweep:IP:LO-HI:SOCKETS"),
    }
}

/// `REGION=URL`, as `--derp-region` takes it.
fn parse_region(spec: &str) -> Result<DerpRegion> {
    let (id, url) = spec
        .split_once('=')
        .with_context(|| format!("--derp-region {spec:?}: want REGION=URL"))?;
    Ok(DerpRegion {
        region: id
            .parse()
            .with_context(|| format!("--derp-region {spec:?}: region id"))?,
        url: DerpUrl::parse(url).with_context(|| format!("--derp-region {spec:?}: URL"))?,
        addr: None,
    })
}

/// Offset, in a data packet, of the sender's traffic start time (Unix nanoseconds).
const START_OFFSET: usize = 36;

/// A 20-byte IPv4 header, an 8-byte UDP header, the sequence number and the time the sender
/// started sending (Unix ns: namespaces share the host clock, so the receiver can tell how long
/// the first packet took), written to `out`.
fn data_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seq: u64,
    started_unix_ns: u64,
    out: &mut [u8],
) -> usize {
    const LEN: usize = 44;
    let mut p = [0u8; LEN];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(LEN as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum: u32 = p
        .chunks_exact(2)
        .take(10)
        .map(|c| c.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
        .sum();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&40000u16.to_be_bytes());
    p[24..26].copy_from_slice(&24u16.to_be_bytes());
    p[28..36].copy_from_slice(&seq.to_be_bytes());
    p[START_OFFSET..LEN].copy_from_slice(&started_unix_ns.to_be_bytes());
    match out.get_mut(..LEN) {
        Some(o) => {
            o.copy_from_slice(&p);
            LEN
        }
        None => 0,
    }
}

fn emit(v: serde_json::Value) {
    println!("{v}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let node_key = PrivateKey::from_hex(&args.node_key).context("--node-key")?;
    let disco_key =
        DiscoPrivate::new(PrivateKey::from_hex(&args.disco_key).context("--disco-key")?);
    let peer_key = PublicKey::from_hex(&args.peer_key).context("--peer-key")?;
    let peer_disco = DiscoPublic(PublicKey::from_hex(&args.peer_disco).context("--peer-disco")?);
    let plan = args.birthday.as_deref().map(parse_plan).transpose()?;
    let derp = match &args.derp {
        Some(u) => Some(DerpRegion {
            region: args.region,
            url: DerpUrl::parse(u).with_context(|| format!("--derp {u}"))?,
            addr: None,
        }),
        None => None,
    };
    let derp_regions = args
        .derp_regions
        .iter()
        .map(|spec| parse_region(spec))
        .collect::<Result<Vec<_>>>()?;
    let region = derp.as_ref().map(|d| d.region);
    let peer_region = args.peer_region.or(region);
    let mut ms = MagicSock::start(Options {
        node_key: node_key.clone(),
        disco_key,
        listen: args.listen,
        local_addrs: args
            .local_addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, 0))
            .collect(),
        stun: args.stun.clone(),
        derp,
        derp_regions,
    })
    .await?;
    ms.upsert_peer(PeerConfig {
        node_key: peer_key,
        disco: peer_disco,
        endpoints: args.peer_endpoints.clone(),
        home_derp: peer_region,
    });

    let boot = now();
    let unix = Duration::from_nanos(unix_ns());
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("OS randomness: {e}"))?;
    let mut wg = Device::new(seed, boot, unix);
    wg.set_private_key(Some(node_key));
    let id = wg.add_peer(peer_key);
    wg.add_allowed_ip(id, IpAddr::V4(args.peer_tunnel_ip), 32)
        .context("allowed IP")?;
    // The device wants an endpoint; the path state machine decides the real one per packet.
    let peer_relay = weft_wg::DerpRegion(peer_region.unwrap_or(args.region));
    wg.set_endpoint(id, Some(Endpoint::Derp(peer_relay)));

    // Wait for the relay link (bounded) so the first packet is not lost to a cold start.
    for _ in 0..100 {
        if region.is_none() || ms.derp_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emit(
        json!({"event": "ready", "local": ms.local_addr().map(|a| a.to_string()),
        "derp_connected": ms.derp_connected(), "ms": ms_since(boot)}),
    );
    // Traffic starts after --start-after-ms; until then the loop below already serves disco,
    // STUN and the peer's first WireGuard packets.
    let start = now() + Duration::from_millis(args.start_after_ms);

    let end = start + Duration::from_secs(args.duration);
    let start_unix_ns = unix_ns() + args.start_after_ms * 1_000_000;
    let mut tick =
        tokio::time::interval_at(start.into(), Duration::from_millis(args.interval_ms.max(1)));
    let mut birthday_at = plan
        .as_ref()
        .map(|_| start + Duration::from_millis(args.birthday_delay_ms));
    let mut plan = plan;
    let mut seq = 0u64;
    let (mut delivered_direct, mut delivered_derp) = (0u64, 0u64);
    let mut first_packet: Option<u64> = None;
    let mut direct_at: Option<u64> = None;
    let mut reported_hit = false;
    let mut last_trace = None;
    let mut probe_tick = tokio::time::interval(Duration::from_millis(5));
    let mut buf = vec![0u8; 2048];
    loop {
        let t = now();
        if t >= end {
            break;
        }
        let wg_deadline = wg.poll_timeout();
        let wg_sleep = async {
            match wg_deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                let n = data_packet(args.tunnel_ip, args.peer_tunnel_ip, seq, start_unix_ns, buf.get_mut(TRANSPORT_HEADER_LEN..).unwrap_or_default());
                if let Encapsulated::Send { len, .. } = wg.encapsulate(now(), &mut buf, n) {
                    let msg = buf.get(..len).unwrap_or_default().to_vec();
                    ms.send(&peer_key, &msg);
                }
            }
            got = ms.recv() => {
                let Some((from, mut datagram)) = got else { break };
                let endpoint = match from {
                    Source::Udp { addr, .. } => Endpoint::Udp(addr),
                    Source::Derp(_) => Endpoint::Derp(peer_relay),
                };
                if let Decapsulated::Packet { start: at, .. } = wg.decapsulate(now(), endpoint, &mut datagram) {
                    if first_packet.is_none() {
                        // From the peer's first packet to this delivery.
                        let peer_start = datagram
                            .get(at + START_OFFSET..at + START_OFFSET + 8)
                            .and_then(|b| <[u8; 8]>::try_from(b).ok())
                            .map_or(0, u64::from_be_bytes);
                        let ms_ = unix_ns().saturating_sub(peer_start) / 1_000_000;
                        first_packet = Some(ms_);
                        emit(json!({"event": "first_packet", "ms": ms_, "via": if matches!(from, Source::Udp{..}) {"direct"} else {"derp"}}));
                    }
                    match from {
                        Source::Udp { .. } => delivered_direct += 1,
                        Source::Derp(_) => delivered_derp += 1,
                    }
                }
            }
            () = wg_sleep => {
                wg.handle_timeout(now());
            }
            // Disco is handled inside `recv`, which returns only WireGuard datagrams: look at
            // the path every 5 ms until it is direct, so `direct` is timed to within 5 ms.
            _ = probe_tick.tick(), if direct_at.is_none() => {}
            () = async {
                match birthday_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                birthday_at = None;
                if let Some(p) = plan.take() {
                    emit(json!({"event": "birthday_start", "ms": ms_since(start), "sockets": p.sockets, "ports": p.ports.len()}));
                    ms.start_birthday(&peer_key, p).await?;
                }
            }
        }
        while let Some(tx) = wg.poll_transmit() {
            ms.send(&peer_key, &tx.payload);
        }
        if args.trace {
            let st = ms.node().stats();
            let key = (
                st.disco_in,
                st.disco_out,
                ms.node().direct_path(&peer_key, now()),
                ms.node().endpoints(now()).len(),
            );
            if Some(key) != last_trace {
                last_trace = Some(key);
                emit(
                    json!({"event": "trace", "ms": ms_since(start), "unix_ms": unix_ns() / 1_000_000 % 100_000, "disco_in": key.0,
                    "disco_out": key.1, "direct": key.2.map(|a| a.to_string()), "endpoints": key.3,
                    "path": format!("{:?}", ms.node().peer_status(&peer_key))}),
                );
            }
        }
        if direct_at.is_none() {
            if let Some(path) = ms.node().direct_path(&peer_key, now()) {
                let ms_ = ms_since(start);
                direct_at = Some(ms_);
                emit(json!({"event": "direct", "ms": ms_, "path": path.to_string()}));
            }
        }
        if !reported_hit {
            if let Some(hit) = ms.node().birthday_hit_for(&peer_key) {
                reported_hit = true;
                emit(
                    json!({"event": "birthday_hit", "ms": ms_since(start), "socket": hit.socket,
                    "remote": hit.remote.to_string(), "probes": hit.probes_sent,
                    "elapsed_ms": hit.elapsed.as_millis() as u64}),
                );
            }
        }
    }
    let node = ms.node();
    let stats = node.stats();
    let shell = ms.stats();
    emit(json!({
        "event": "summary",
        "sent": seq,
        "delivered_direct": delivered_direct,
        "delivered_derp": delivered_derp,
        "first_packet_ms": first_packet,
        "direct_ms": direct_at,
        "direct_at_end": node.direct_path(&peer_key, now()).map(|a| a.to_string()),
        "nat": format!("{:?}", node.nat_mapping()),
        "endpoints": node.endpoints(now()).iter().map(|e| e.0.to_string()).collect::<Vec<_>>(),
        "disco_in": stats.disco_in,
        "disco_out": stats.disco_out,
        "disco_bad": stats.disco_bad,
        "birthday_probes": stats.birthday_probes,
        "udp_out": shell.udp_out,
        "derp_out": shell.derp_out,
        "derp_send_drops": shell.derp_send_drops,
        "udp_send_errors": shell.udp_send_errors,
        "derp_connects": shell.derp_connects,
        "derp_links_opened": shell.derp_links_opened,
        "sockets_open": ms.open_sockets(),
        "derp_unknown_region": shell.derp_unknown_region,
        "derp_links": ms.derp_links().iter().map(|(r, up)| json!({"region": r, "up": up})).collect::<Vec<_>>(),
        "wireguard": format!("{:?}", wg.stats()),
    }));
    Ok(())
}

/// The wall clock in Unix nanoseconds.
#[allow(clippy::disallowed_methods)] // The shell reads the wall clock.
fn unix_ns() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn ms_since(start: Instant) -> u64 {
    u64::try_from(now().saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}
