//! [`Pair`]: the standard two-host topology of the interop tests.
//!
//! ```text
//!  netns A                                         netns B
//!  wg IF_A 10.200.0.1/24 fd10::1/64                wg IF_B 10.200.0.2/24 fd10::2/64
//!     |  (implementation A, UDP 51820)                |  (implementation B, UDP 51821)
//!  veth0 10.77.0.1/24 | fd00:77::1/64 ---------- veth0 10.77.0.2/24 | fd00:77::2/64
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::{veth, Netns};
use crate::process::ChildGuard;
use crate::traffic::{ping, ping_until_reply, tcp_transfer, TransferReport};
use crate::util::{unique_ifname, wait_until};
use crate::wg::{
    rss_kib, wg_set, wg_set_private_key, wg_show_dump, Keypair, WgDump, WgImpl, WgPeerDump,
};

/// Address family of the outer (underlay) network, i.e. of the UDP endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Which side is configured with the other's endpoint, and so starts the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// Only A knows B's endpoint: A initiates, B learns A's endpoint.
    A,
    /// Only B knows A's endpoint: B initiates.
    B,
    /// Both know each other's endpoint; A sends first.
    Both,
}

/// Name of the veth end in each namespace.
pub const VETH: &str = "veth0";
/// UDP listen port of side A.
pub const PORT_A: u16 = 51820;
/// UDP listen port of side B.
pub const PORT_B: u16 = 51821;
/// Default tunnel MTU, as wg-quick would pick for a 1500-byte underlay.
pub const DEFAULT_TUNNEL_MTU: u32 = 1420;
/// Bound on establishing the first handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Builder for a [`Pair`].
#[derive(Clone, Debug)]
pub struct PairBuilder {
    a: WgImpl,
    b: WgImpl,
    outer: Family,
    veth_mtu: u32,
    tunnel_mtu: u32,
    initiator: Initiator,
}

impl PairBuilder {
    /// A pair with `a` in namespace A and `b` in namespace B; outer IPv4, veth
    /// MTU 1500, tunnel MTU 1420, A initiating.
    pub fn new(a: WgImpl, b: WgImpl) -> Self {
        Self {
            a,
            b,
            outer: Family::V4,
            veth_mtu: 1500,
            tunnel_mtu: DEFAULT_TUNNEL_MTU,
            initiator: Initiator::A,
        }
    }

    /// Outer address family (endpoints).
    pub fn outer(mut self, family: Family) -> Self {
        self.outer = family;
        self
    }

    /// MTU of the veth link between the namespaces.
    pub fn veth_mtu(mut self, mtu: u32) -> Self {
        self.veth_mtu = mtu;
        self
    }

    /// MTU of both WireGuard interfaces.
    pub fn tunnel_mtu(mut self, mtu: u32) -> Self {
        self.tunnel_mtu = mtu;
        self
    }

    /// Which side gets an endpoint for its peer.
    pub fn initiator(mut self, initiator: Initiator) -> Self {
        self.initiator = initiator;
        self
    }

    /// Creates the namespaces, the veth, starts both implementations and
    /// configures them; interfaces are up but no packet has been sent yet.
    /// Anything created is removed again if a later step fails.
    pub fn build(self) -> Result<Pair> {
        let ns_a = Netns::new("wfa")?;
        let ns_b = Netns::new("wfb")?;
        veth(&ns_a, VETH, &ns_b, VETH)?;
        let (outer_a, outer_b, prefix): (IpAddr, IpAddr, u8) = match self.outer {
            Family::V4 => (
                Ipv4Addr::new(10, 77, 0, 1).into(),
                Ipv4Addr::new(10, 77, 0, 2).into(),
                24,
            ),
            Family::V6 => (
                Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1).into(),
                Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2).into(),
                64,
            ),
        };
        for (ns, addr) in [(&ns_a, outer_a), (&ns_b, outer_b)] {
            ns.set_mtu(VETH, self.veth_mtu)?;
            ns.addr_add(VETH, &format!("{addr}/{prefix}"))?;
            ns.link_up(VETH)?;
        }
        let keys_a = Keypair::generate()?;
        let keys_b = Keypair::generate()?;
        let if_a = unique_ifname("a")?;
        let if_b = unique_ifname("b")?;
        let daemon_a = self.a.start(&ns_a, &if_a)?;
        let daemon_b = self.b.start(&ns_b, &if_b)?;
        let mut a = Side {
            daemon: daemon_a,
            ns: ns_a,
            imp: self.a,
            ifname: if_a,
            keys: keys_a,
            peer_public: keys_b.public.clone(),
            listen_port: PORT_A,
            outer: outer_a,
            outer_prefix: prefix,
            tunnel_v4: Ipv4Addr::new(10, 200, 0, 1),
            tunnel_v6: Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, 1),
        };
        let mut b = Side {
            daemon: daemon_b,
            ns: ns_b,
            imp: self.b,
            ifname: if_b,
            keys: keys_b,
            peer_public: a.keys.public.clone(),
            listen_port: PORT_B,
            outer: outer_b,
            outer_prefix: prefix,
            tunnel_v4: Ipv4Addr::new(10, 200, 0, 2),
            tunnel_v6: Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, 2),
        };
        let (a_has_endpoint, b_has_endpoint) = match self.initiator {
            Initiator::A => (true, false),
            Initiator::B => (false, true),
            Initiator::Both => (true, true),
        };
        let b_endpoint = b.endpoint();
        let a_endpoint = a.endpoint();
        a.configure(&b, a_has_endpoint.then_some(b_endpoint), self.tunnel_mtu)?;
        b.configure(&a, b_has_endpoint.then_some(a_endpoint), self.tunnel_mtu)?;
        Ok(Pair {
            a,
            b,
            outer: self.outer,
            initiator: self.initiator,
            veth_mtu: self.veth_mtu,
            tunnel_mtu: self.tunnel_mtu,
        })
    }
}

/// One host of a [`Pair`]. Fields are public so tests can reach everything.
///
/// Field order matters: the daemon is stopped before the namespace is deleted.
#[derive(Debug)]
pub struct Side {
    /// The WireGuard implementation's process.
    pub daemon: ChildGuard,
    /// The host's namespace.
    pub ns: Netns,
    /// Which implementation runs here.
    pub imp: WgImpl,
    /// The WireGuard interface (globally unique name).
    pub ifname: String,
    /// This side's keys.
    pub keys: Keypair,
    /// The other side's public key.
    pub peer_public: String,
    /// UDP listen port.
    pub listen_port: u16,
    /// Outer address on [`VETH`].
    pub outer: IpAddr,
    /// Prefix length of [`Side::outer`].
    pub outer_prefix: u8,
    /// Tunnel IPv4 address (/24).
    pub tunnel_v4: Ipv4Addr,
    /// Tunnel IPv6 address (/64).
    pub tunnel_v6: Ipv6Addr,
}

impl Side {
    fn configure(&mut self, peer: &Side, endpoint: Option<SocketAddr>, mtu: u32) -> Result<()> {
        let port = self.listen_port.to_string();
        let allowed = format!("{}/32,{}/128", peer.tunnel_v4, peer.tunnel_v6);
        let endpoint = endpoint.map(|e| e.to_string());
        let mut args = vec![
            "listen-port",
            port.as_str(),
            "peer",
            peer.keys.public.as_str(),
            "allowed-ips",
            allowed.as_str(),
        ];
        if let Some(e) = &endpoint {
            args.extend(["endpoint", e.as_str()]);
        }
        wg_set_private_key(&self.ns, &self.ifname, &self.keys, &args)
            .with_context(|| format!("configuring {}", self.imp))?;
        self.ns.set_mtu(&self.ifname, mtu)?;
        self.ns
            .addr_add(&self.ifname, &format!("{}/24", self.tunnel_v4))?;
        self.ns
            .addr_add(&self.ifname, &format!("{}/64", self.tunnel_v6))?;
        self.ns.link_up(&self.ifname)?;
        Ok(())
    }

    /// `outer:listen_port`, where the other side reaches this one.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.outer, self.listen_port)
    }

    /// The tunnel address of the given family.
    pub fn tunnel(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.tunnel_v4.into(),
            Family::V6 => self.tunnel_v6.into(),
        }
    }

    /// `wg show <ifname> dump`, parsed.
    pub fn dump(&self) -> Result<WgDump> {
        wg_show_dump(&self.ns, &self.ifname)
    }

    /// This side's view of its peer (the other side).
    pub fn peer(&self) -> Result<WgPeerDump> {
        Ok(self.dump()?.peer(&self.peer_public)?.clone())
    }

    /// `wg set <ifname> <args...>`.
    pub fn wg_set(&self, args: &[&str]) -> Result<()> {
        wg_set(&self.ns, &self.ifname, args)
    }

    /// Changes the listen port with `wg set <ifname> listen-port <port>`.
    pub fn set_listen_port(&mut self, port: u16) -> Result<()> {
        self.wg_set(&["listen-port", &port.to_string()])?;
        self.listen_port = port;
        Ok(())
    }

    /// Moves the outer address: adds `new` to the veth, then removes the old
    /// one (IPv4: with `promote_secondaries`, so the subnet route survives).
    /// `new` must be in the same subnet as the old address.
    pub fn change_outer_addr(&mut self, new: IpAddr) -> Result<()> {
        if new.is_ipv4() != self.outer.is_ipv4() {
            bail!(
                "new outer address {new} is not of the family of {}",
                self.outer
            );
        }
        if new.is_ipv4() {
            self.ns
                .sysctl(&format!("net.ipv4.conf.{VETH}.promote_secondaries"), "1")?;
        }
        self.ns
            .addr_add(VETH, &format!("{new}/{}", self.outer_prefix))?;
        self.ns
            .addr_del(VETH, &format!("{}/{}", self.outer, self.outer_prefix))?;
        self.outer = new;
        Ok(())
    }

    /// Resident set size of the daemon, KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.daemon.pid())
    }

    /// Fails if the daemon has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.daemon.try_status()? {
            bail!(
                "{} on {} exited: {status}; log:\n{}",
                self.imp,
                self.ifname,
                self.daemon.log_tail(40)
            );
        }
        Ok(())
    }
}

/// Two namespaces, a veth between them, and a WireGuard implementation on each
/// side configured as the other's peer. Dropping it stops both daemons and
/// deletes both namespaces.
#[derive(Debug)]
pub struct Pair {
    /// Side A.
    pub a: Side,
    /// Side B.
    pub b: Side,
    /// Outer address family.
    pub outer: Family,
    /// Who was given an endpoint.
    pub initiator: Initiator,
    /// MTU of the veth.
    pub veth_mtu: u32,
    /// MTU of the WireGuard interfaces.
    pub tunnel_mtu: u32,
}

/// Direction of traffic in a [`Pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From A to B.
    AtoB,
    /// From B to A.
    BtoA,
}

impl Pair {
    /// Runs `f` on the pair; if it fails, the error is extended with the tail of
    /// both daemons' logs (the guards have not dropped yet, so they are still
    /// there). Scenarios run their checks inside this.
    pub fn run<T>(&mut self, f: impl FnOnce(&mut Pair) -> Result<T>) -> Result<T> {
        f(self).map_err(|e| anyhow!("{e:#}\n{}", self.logs(60)))
    }

    /// The last `lines` lines of each daemon's output, labelled.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for (name, side) in [("A", &self.a), ("B", &self.b)] {
            out.push_str(&format!(
                "----- side {name}: {} (last {lines} lines) -----\n{}\n",
                side.daemon.label(),
                side.daemon.log_tail(lines)
            ));
        }
        out
    }

    /// `(sender, receiver)` for a direction.
    pub fn sides(&self, dir: Dir) -> (&Side, &Side) {
        match dir {
            Dir::AtoB => (&self.a, &self.b),
            Dir::BtoA => (&self.b, &self.a),
        }
    }

    /// Establishes the first handshake: the side with an endpoint pings the
    /// other's tunnel address until a reply comes, then both sides must report a
    /// handshake and an endpoint for their peer. Bounded by [`HANDSHAKE_TIMEOUT`].
    pub fn handshake(&mut self) -> Result<()> {
        let dir = match self.initiator {
            Initiator::A | Initiator::Both => Dir::AtoB,
            Initiator::B => Dir::BtoA,
        };
        let (from, to) = self.sides(dir);
        ping_until_reply(&from.ns, to.tunnel_v4.into(), HANDSHAKE_TIMEOUT)
            .with_context(|| format!("first handshake {} -> {}", from.imp, to.imp))?;
        for side in [&self.a, &self.b] {
            let peer = side.peer()?;
            if !side.imp.has_handshake(&peer) {
                bail!(
                    "{} on {} reports no handshake: {peer:?}",
                    side.imp,
                    side.ifname
                );
            }
            if peer.endpoint.is_none() {
                bail!(
                    "{} on {} has no endpoint for its peer",
                    side.imp,
                    side.ifname
                );
            }
        }
        self.a.check_alive()?;
        self.b.check_alive()?;
        Ok(())
    }

    /// Pings the other side's inner IPv4 and IPv6 addresses, `count` each, in
    /// both directions; every request must be answered.
    pub fn ping_all(&self, count: u32) -> Result<()> {
        for dir in [Dir::AtoB, Dir::BtoA] {
            let (from, to) = self.sides(dir);
            for family in [Family::V4, Family::V6] {
                ping(&from.ns, to.tunnel(family), count)
                    .with_context(|| format!("{dir:?} {family:?} {} -> {}", from.imp, to.imp))?;
            }
        }
        Ok(())
    }

    /// A hashed TCP transfer of `bytes` through the tunnel, to the receiver's
    /// tunnel address of `family`.
    pub fn transfer(&self, dir: Dir, family: Family, bytes: u64) -> Result<TransferReport> {
        let (from, to) = self.sides(dir);
        tcp_transfer(&from.ns, &to.ns, to.tunnel(family), bytes)
            .with_context(|| format!("{dir:?} {family:?} transfer {} -> {}", from.imp, to.imp))
    }

    /// Waits (bounded by `timeout`) until the byte counters agree: A's tx equals
    /// B's rx and B's tx equals A's rx. Returns `(a_peer, b_peer)` as last read.
    pub fn wait_counters_agree(&self, timeout: Duration) -> Result<(WgPeerDump, WgPeerDump)> {
        let mut last = None;
        let result = wait_until(
            "byte counters to agree",
            timeout,
            Duration::from_millis(250),
            || {
                let a = self.a.peer()?;
                let b = self.b.peer()?;
                let agree = a.tx_bytes == b.rx_bytes && b.tx_bytes == a.rx_bytes;
                last = Some((a, b));
                Ok(agree)
            },
        );
        match (result, last) {
            (Ok(()), Some(last)) => Ok(last),
            (Err(e), Some((a, b))) => Err(anyhow!(
                "{e:#}: A ({}) tx {} rx {}, B ({}) tx {} rx {}",
                self.a.imp,
                a.tx_bytes,
                a.rx_bytes,
                self.b.imp,
                b.tx_bytes,
                b.rx_bytes
            )),
            (Err(e), None) => Err(e),
            (Ok(()), None) => Err(anyhow!("counters agreed without being read")),
        }
    }
}
