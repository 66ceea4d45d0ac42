//! A two-party in-memory harness for `weft-wg`, in the style of quinn-proto's `tests/util.rs`:
//! two [`Device`]s with fixed seeds, a fake clock (a base `Instant` plus an offset that only the
//! test advances), and a simulated network between them with deterministic loss, duplication,
//! reordering and corruption.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use weft_keys::{PrivateKey, PublicKey};
use weft_wg::device::DEFAULT_MTU;
use weft_wg::messages::TRANSPORT_HEADER_LEN;
use weft_wg::{buffer_len_for, Decapsulated, Device, Encapsulated, Endpoint, PeerId, RxDrop};

/// Wall-clock time the devices are pinned to at the harness's time zero.
pub(crate) const UNIX_BASE: Duration = Duration::from_secs(1_700_000_000);

pub(crate) const A_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub(crate) const B_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub(crate) const A_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub(crate) const B_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

pub(crate) fn a_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 51820))
}
pub(crate) fn b_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 2], 51820))
}
/// An address nobody owns: datagrams "from" it are forged.
pub(crate) fn attacker_addr() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 66], 6666))
}

pub(crate) const A_KEY: [u8; 32] = [0x11; 32];
pub(crate) const B_KEY: [u8; 32] = [0x22; 32];
pub(crate) const A_SEED: [u8; 32] = [0xa1; 32];
pub(crate) const B_SEED: [u8; 32] = [0xb2; 32];

/// The wall-clock base `Instant`. Only offsets from it matter.
#[allow(clippy::disallowed_methods)] // The harness is the shell: it owns the (fake) clock.
pub(crate) fn clock_base() -> Instant {
    Instant::now()
}

/// xorshift64*: tiny, deterministic.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with probability `ppm` / 1 000 000.
    pub(crate) fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && (self.next_u64() % 1_000_000) < u64::from(ppm)
    }
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

/// Impairments of one direction of the link, in parts per million.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Link {
    /// Drop everything.
    pub(crate) blocked: bool,
    pub(crate) loss_ppm: u32,
    pub(crate) dup_ppm: u32,
    pub(crate) reorder_ppm: u32,
    pub(crate) corrupt_ppm: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    A,
    B,
}

impl Who {
    pub(crate) fn other(self) -> Who {
        match self {
            Who::A => Who::B,
            Who::B => Who::A,
        }
    }
}

/// A datagram a side handed to the network, with the time it did.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) at: Duration,
    pub(crate) to: Endpoint,
    pub(crate) payload: Vec<u8>,
}

impl Sent {
    pub(crate) fn is_initiation(&self) -> bool {
        self.payload.first() == Some(&1)
    }
    pub(crate) fn is_response(&self) -> bool {
        self.payload.first() == Some(&2)
    }
    pub(crate) fn is_cookie_reply(&self) -> bool {
        self.payload.first() == Some(&3)
    }
    pub(crate) fn is_transport(&self) -> bool {
        self.payload.first() == Some(&4)
    }
    pub(crate) fn is_keepalive(&self) -> bool {
        self.is_transport() && self.payload.len() == 32
    }
}

/// One party: its device, its view of the other party, and what happened to it.
#[derive(Debug)]
pub(crate) struct Side {
    pub(crate) dev: Device,
    /// The other party's id in `dev`.
    pub(crate) peer: PeerId,
    /// This side's current UDP address (changes when it roams).
    pub(crate) addr: SocketAddr,
    pub(crate) private: PrivateKey,
    pub(crate) public: PublicKey,
    /// Datagrams on their way to this side: (source address, bytes).
    pub(crate) inbox: VecDeque<(SocketAddr, Vec<u8>)>,
    /// IP packets decapsulated for the TUN, in order.
    pub(crate) delivered: Vec<Vec<u8>>,
    /// Keepalives received, with the time.
    pub(crate) keepalives_rx: Vec<Duration>,
    /// Every drop `decapsulate` reported.
    pub(crate) drops: Vec<RxDrop>,
    /// Everything this side sent.
    pub(crate) sent: Vec<Sent>,
    /// Every datagram that reached this side (before decapsulation), with the time.
    pub(crate) received: Vec<(Duration, Vec<u8>)>,
}

impl Side {
    pub(crate) fn info(&self) -> weft_wg::PeerInfo {
        self.dev.peer_info(self.peer).expect("peer exists")
    }
    pub(crate) fn initiations_sent(&self) -> Vec<Duration> {
        self.sent
            .iter()
            .filter(|s| s.is_initiation())
            .map(|s| s.at)
            .collect()
    }
    pub(crate) fn keepalives_sent(&self) -> Vec<Duration> {
        self.sent
            .iter()
            .filter(|s| s.is_keepalive())
            .map(|s| s.at)
            .collect()
    }
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.sent.iter().map(|s| s.payload.len() as u64).sum()
    }
}

/// Two devices, a clock and a network.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) base: Instant,
    pub(crate) elapsed: Duration,
    pub(crate) a: Side,
    pub(crate) b: Side,
    pub(crate) a_to_b: Link,
    pub(crate) b_to_a: Link,
    pub(crate) rng: XorShift,
    /// Datagrams sent to an address nobody has (any more).
    pub(crate) misrouted: Vec<(Endpoint, Vec<u8>)>,
    /// Datagrams the network dropped.
    pub(crate) lost: usize,
    /// Whether `drive` may run `handle_timeout` on each side (a test can freeze one).
    pub(crate) timeouts_enabled: [bool; 2],
}

fn new_side(
    base: Instant,
    seed: [u8; 32],
    key: [u8; 32],
    other: &PublicKey,
    addr: SocketAddr,
    other_addr: SocketAddr,
    other_ips: (Ipv4Addr, Ipv6Addr),
) -> Side {
    let private = PrivateKey::from_bytes(key);
    let public = private.public_key();
    let mut dev = Device::new(seed, base, UNIX_BASE);
    dev.set_private_key(Some(private.clone()));
    let peer = dev.add_peer(*other);
    dev.set_endpoint(peer, Some(Endpoint::Udp(other_addr)));
    dev.add_allowed_ip(peer, IpAddr::V4(other_ips.0), 32)
        .unwrap();
    dev.add_allowed_ip(peer, IpAddr::V6(other_ips.1), 128)
        .unwrap();
    Side {
        dev,
        peer,
        addr,
        private,
        public,
        inbox: VecDeque::new(),
        delivered: Vec::new(),
        keepalives_rx: Vec::new(),
        drops: Vec::new(),
        sent: Vec::new(),
        received: Vec::new(),
    }
}

const DRIVE_BOUND: usize = 100_000;

impl Pair {
    /// A and B configured as each other's peer, with endpoints and allowed IPs
    /// (A = 10.0.0.1/32, fd00::1/128; B = 10.0.0.2/32, fd00::2/128). No handshake yet.
    pub(crate) fn new() -> Self {
        Self::with_seeds(A_SEED, B_SEED)
    }

    pub(crate) fn with_seeds(a_seed: [u8; 32], b_seed: [u8; 32]) -> Self {
        let base = clock_base();
        let a_pub = PrivateKey::from_bytes(A_KEY).public_key();
        let b_pub = PrivateKey::from_bytes(B_KEY).public_key();
        let a = new_side(
            base,
            a_seed,
            A_KEY,
            &b_pub,
            a_addr(),
            b_addr(),
            (B_V4, B_V6),
        );
        let b = new_side(
            base,
            b_seed,
            B_KEY,
            &a_pub,
            b_addr(),
            a_addr(),
            (A_V4, A_V6),
        );
        Self {
            base,
            elapsed: Duration::ZERO,
            a,
            b,
            a_to_b: Link::default(),
            b_to_a: Link::default(),
            rng: XorShift::new(0x5eed_1234_abcd_ef01),
            misrouted: Vec::new(),
            lost: 0,
            timeouts_enabled: [true, true],
        }
    }

    /// A pair that completed a handshake initiated by A's first packet (delivered).
    pub(crate) fn established() -> Self {
        let mut p = Self::new();
        let pkt = ipv4(A_V4, B_V4, 0, 20);
        assert!(matches!(p.send(Who::A, &pkt), Encapsulated::Staged(_)));
        p.drive();
        assert_eq!(p.b.delivered, vec![pkt], "handshake did not complete");
        p.b.delivered.clear();
        p
    }

    pub(crate) fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    pub(crate) fn side(&self, who: Who) -> &Side {
        match who {
            Who::A => &self.a,
            Who::B => &self.b,
        }
    }

    pub(crate) fn side_mut(&mut self, who: Who) -> &mut Side {
        match who {
            Who::A => &mut self.a,
            Who::B => &mut self.b,
        }
    }

    fn link(&self, from: Who) -> Link {
        match from {
            Who::A => self.a_to_b,
            Who::B => self.b_to_a,
        }
    }

    /// Puts a datagram from `from` on the network towards `to`.
    fn route(&mut self, from: Who, to: Endpoint, payload: Vec<u8>) {
        let at = self.elapsed;
        self.side_mut(from).sent.push(Sent {
            at,
            to,
            payload: payload.clone(),
        });
        let dest = match to {
            Endpoint::Udp(addr) if addr == self.side(from.other()).addr => from.other(),
            _ => {
                self.misrouted.push((to, payload));
                return;
            }
        };
        let link = self.link(from);
        if link.blocked || self.rng.chance(link.loss_ppm) {
            self.lost += 1;
            return;
        }
        let mut payload = payload;
        if self.rng.chance(link.corrupt_ppm) && !payload.is_empty() {
            let bit = self.rng.below(payload.len() * 8);
            payload[bit / 8] ^= 1 << (bit % 8);
        }
        let copies = if self.rng.chance(link.dup_ppm) { 2 } else { 1 };
        let src = self.side(from).addr;
        for _ in 0..copies {
            let reorder = self.rng.chance(link.reorder_ppm);
            let pos = if reorder {
                let n = self.side(dest).inbox.len();
                self.rng.below(n + 1)
            } else {
                self.side(dest).inbox.len()
            };
            self.side_mut(dest)
                .inbox
                .insert(pos, (src, payload.clone()));
        }
    }

    /// Moves every pending transmit of both devices onto the network. Returns how many.
    pub(crate) fn flush(&mut self) -> usize {
        let mut n = 0;
        for who in [Who::A, Who::B] {
            while let Some(t) = self.side_mut(who).dev.poll_transmit() {
                if let Some(peer) = t.peer {
                    assert_eq!(peer, self.side(who).peer, "transmit for an unknown peer");
                }
                self.route(who, t.endpoint, t.payload);
                n += 1;
            }
        }
        n
    }

    /// Decapsulates every datagram waiting for `who`. Returns how many.
    pub(crate) fn deliver(&mut self, who: Who) -> usize {
        let mut n = 0;
        while let Some((from, bytes)) = self.side_mut(who).inbox.pop_front() {
            self.inject(who, from, bytes);
            n += 1;
        }
        n
    }

    /// Hands `bytes` to `who`'s `decapsulate` as if received from `from`, and records the
    /// outcome. Transmits it causes stay queued in the device.
    pub(crate) fn inject(&mut self, who: Who, from: SocketAddr, bytes: Vec<u8>) -> Decapsulated {
        let now = self.now();
        let at = self.elapsed;
        let side = self.side_mut(who);
        side.received.push((at, bytes.clone()));
        let mut buf = bytes;
        let verdict = side.dev.decapsulate(now, Endpoint::Udp(from), &mut buf);
        match verdict {
            Decapsulated::Packet { peer, start, len } => {
                assert_eq!(peer, side.peer);
                side.delivered.push(buf[start..start + len].to_vec());
            }
            Decapsulated::Keepalive(peer) => {
                assert_eq!(peer, side.peer);
                side.keepalives_rx.push(at);
            }
            Decapsulated::Handshake => {}
            Decapsulated::Dropped(why) => side.drops.push(why),
        }
        verdict
    }

    /// Runs `handle_timeout` on `who` if its `poll_timeout` has passed. Returns whether it ran.
    pub(crate) fn timeout(&mut self, who: Who) -> bool {
        let now = self.now();
        let idx = match who {
            Who::A => 0,
            Who::B => 1,
        };
        if !self.timeouts_enabled[idx] {
            return false;
        }
        let dev = &mut self.side_mut(who).dev;
        if dev.poll_timeout().is_some_and(|t| t <= now) {
            dev.handle_timeout(now);
            true
        } else {
            false
        }
    }

    /// One round: transmits to the network, deliveries, expired timeouts.
    pub(crate) fn step(&mut self) -> bool {
        let mut progress = self.flush() > 0;
        progress |= self.deliver(Who::A) > 0;
        progress |= self.deliver(Who::B) > 0;
        progress |= self.timeout(Who::A);
        progress |= self.timeout(Who::B);
        progress
    }

    /// Steps until nothing happens at the current instant. Panics if that never comes (a
    /// livelock: a timer that stays due, or a ping-pong of messages).
    pub(crate) fn drive(&mut self) {
        for _ in 0..DRIVE_BOUND {
            if !self.step() {
                return;
            }
        }
        panic!("drive did not settle at {:?}", self.elapsed);
    }

    /// The earliest future deadline of either device (ignoring frozen ones).
    fn next_deadline(&self) -> Option<Duration> {
        let mut next: Option<Instant> = None;
        for (i, who) in [Who::A, Who::B].into_iter().enumerate() {
            if !self.timeouts_enabled[i] {
                continue;
            }
            if let Some(t) = self.side(who).dev.poll_timeout() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next.map(|t| t.saturating_duration_since(self.base))
    }

    /// Lets `d` pass, stopping at every deadline on the way so timers fire on time.
    pub(crate) fn advance(&mut self, d: Duration) {
        let target = self.elapsed + d;
        self.drive();
        for _ in 0..DRIVE_BOUND {
            match self.next_deadline() {
                Some(t) if t <= target => {
                    self.elapsed = self.elapsed.max(t);
                }
                _ => {
                    self.elapsed = target;
                    self.drive();
                    return;
                }
            }
            self.drive();
        }
        panic!("advance did not reach {target:?}: timers keep firing");
    }

    /// Jumps to the next deadline of either device (if any before `limit` from now) and drives.
    /// Returns whether there was one.
    pub(crate) fn advance_to_next_deadline(&mut self, limit: Duration) -> bool {
        self.drive();
        match self.next_deadline() {
            Some(t) if t <= self.elapsed + limit => {
                self.elapsed = self.elapsed.max(t);
                self.drive();
                true
            }
            _ => false,
        }
    }

    /// Advances to an absolute harness time.
    pub(crate) fn advance_to(&mut self, t: Duration) {
        assert!(t >= self.elapsed, "time goes forward");
        self.advance(t - self.elapsed);
    }

    fn encap(&mut self, who: Who, packet: &[u8]) -> (Encapsulated, Vec<u8>) {
        let now = self.now();
        let mut buf = vec![0u8; buffer_len_for(packet.len(), DEFAULT_MTU)];
        buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + packet.len()].copy_from_slice(packet);
        let r = self
            .side_mut(who)
            .dev
            .encapsulate(now, &mut buf, packet.len());
        if let Encapsulated::Send { len, .. } = r {
            buf.truncate(len);
        }
        (r, buf)
    }

    /// Encapsulates a packet read from `who`'s TUN; a transport message goes on the network.
    pub(crate) fn send(&mut self, who: Who, packet: &[u8]) -> Encapsulated {
        let (r, buf) = self.encap(who, packet);
        if let Encapsulated::Send { endpoint, .. } = r {
            self.route(who, endpoint, buf);
        }
        r
    }

    /// Encapsulates a packet but keeps the message instead of sending it (a datagram "in
    /// flight" that the test delivers later with [`Pair::inject`]).
    pub(crate) fn seal(&mut self, who: Who, packet: &[u8]) -> Vec<u8> {
        let (r, buf) = self.encap(who, packet);
        assert!(
            matches!(r, Encapsulated::Send { .. }),
            "expected a transport message, got {r:?}"
        );
        buf
    }

    /// The packet `who` would send to the other side, numbered `seq` (IPv4 when `seq` is even,
    /// IPv6 when odd).
    pub(crate) fn packet(&self, who: Who, seq: u32) -> Vec<u8> {
        let len = 20 + (seq as usize * 7) % 200;
        match (who, seq % 2) {
            (Who::A, 0) => ipv4(A_V4, B_V4, seq, len),
            (Who::A, _) => ipv6(A_V6, B_V6, seq, len),
            (Who::B, 0) => ipv4(B_V4, A_V4, seq, len),
            (Who::B, _) => ipv6(B_V6, A_V6, seq, len),
        }
    }
}

/// Duration helpers.
pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
pub(crate) fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in header.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A minimal valid IPv4 packet (IHL 5, protocol 253 "experimental") of `payload_len` bytes of
/// payload, whose first 4 payload bytes are `seq`.
pub(crate) fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, seq: u32, payload_len: usize) -> Vec<u8> {
    let payload_len = payload_len.max(4);
    let total = 20 + payload_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[24..].iter_mut().enumerate() {
        *b = (i as u8) ^ (seq as u8);
    }
    p
}

/// A minimal valid IPv6 packet (next header 253) with `seq` in its first payload bytes.
pub(crate) fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, seq: u32, payload_len: usize) -> Vec<u8> {
    let payload_len = payload_len.max(4);
    let mut p = vec![0u8; 40 + payload_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    p[6] = 253;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..44].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[44..].iter_mut().enumerate() {
        *b = (i as u8) ^ (seq as u8);
    }
    p
}

/// The sequence number of a packet built by [`ipv4`] or [`ipv6`].
pub(crate) fn seq_of(packet: &[u8]) -> u32 {
    let off = if packet[0] >> 4 == 4 { 20 } else { 40 };
    u32::from_be_bytes(packet[off..off + 4].try_into().unwrap())
}

/// The receiver index of a response, cookie reply or transport message.
pub(crate) fn receiver_index(msg: &[u8]) -> u32 {
    let at = if msg[0] == 2 { 8 } else { 4 };
    u32::from_le_bytes(msg[at..at + 4].try_into().unwrap())
}
