//! Helpers shared by the integration tests: unique interface names, cleanup guards, `ip`.
#![allow(dead_code, unreachable_pub)]

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A per-test number, unique within this test binary.
pub fn next_id() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// An interface name unique across concurrently running test binaries: `wts<pid>_<n>` (at most
/// 3 + 7 + 1 + 3 = 14 bytes with Linux's largest pid_max).
pub fn unique_name(id: u32) -> String {
    let name = format!("wts{}_{id}", std::process::id());
    assert!(name.len() <= 15, "{name} too long");
    name
}

/// A /30 inside 198.18.0.0/15 (RFC 2544 benchmarking space) for test `id`: `(local, peer)` =
/// (.1, .2). Unique per (pid mod 4096, id mod 8).
pub fn subnet(id: u32) -> (Ipv4Addr, Ipv4Addr) {
    let index = (std::process::id() % 4096) * 8 + id % 8;
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + index * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// Runs `ip ARGS...`, panicking on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the interface when dropped, so a failing test does not leak it. (A non-persistent TUN
/// also disappears when its descriptor closes; this covers the rest.)
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", "dev", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The open-file flags of a descriptor of this process, from /proc/self/fdinfo.
pub fn fd_flags(fd: BorrowedFd<'_>) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
    let line = info.lines().find(|l| l.starts_with("flags:")).unwrap();
    u32::from_str_radix(line.trim_start_matches("flags:").trim(), 8).unwrap()
}

/// Asserts the descriptor is non-blocking and close-on-exec.
pub fn assert_nonblocking_cloexec(fd: BorrowedFd<'_>) {
    let flags = fd_flags(fd);
    assert_ne!(
        flags & libc::O_NONBLOCK as u32,
        0,
        "not non-blocking: {flags:o}"
    );
    assert_ne!(
        flags & libc::O_CLOEXEC as u32,
        0,
        "not close-on-exec: {flags:o}"
    );
}

/// An IPv4/UDP packet (UDP checksum 0, i.e. none; header checksum filled in).
pub fn ipv4_udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64; // TTL
    p[9] = 17; // UDP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A network namespace named uniquely for this process and `tag`, deleted when dropped (which
/// also deletes every interface inside it).
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("wsn{}{tag}{}", std::process::id(), next_id());
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n NS ARGS...`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `PROGRAM ARGS...` inside the namespace (`ip netns exec`), panicking on failure.
    pub fn exec(&self, program: &str, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a new thread that has entered this namespace and returns its result.
    /// Sockets and TUNs created by `f` belong to the namespace for good and can be used from
    /// any thread afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns takes a descriptor (open for the call) and a flag; it only changes
            // the calling thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` holds `ifa` with `v4_a`/`v6_a`, `b` holds `ifb`
/// with `v4_b`/`v6_b`.
pub struct VethPair {
    pub a: Netns,
    pub b: Netns,
    pub ifa: String,
    pub ifb: String,
    pub v4_a: Ipv4Addr,
    pub v4_b: Ipv4Addr,
    pub v6_a: std::net::Ipv6Addr,
    pub v6_b: std::net::Ipv6Addr,
}

impl VethPair {
    pub fn new() -> VethPair {
        let a = Netns::new("a");
        let b = Netns::new("b");
        let id = next_id();
        let (v4_a, v4_b) = subnet(id);
        let v6_a: std::net::Ipv6Addr =
            format!("fd57:{:x}::{:x}:1", std::process::id() & 0xffff, id)
                .parse()
                .unwrap();
        let v6_b: std::net::Ipv6Addr =
            format!("fd57:{:x}::{:x}:2", std::process::id() & 0xffff, id)
                .parse()
                .unwrap();
        let ifa = format!("wa{}_{id}", std::process::id());
        let ifb = format!("wb{}_{id}", std::process::id());
        ip(&[
            "link", "add", &ifa, "netns", &a.0, "type", "veth", "peer", "name", &ifb, "netns", &b.0,
        ]);
        a.ip(&["addr", "add", &format!("{v4_a}/30"), "dev", &ifa]);
        b.ip(&["addr", "add", &format!("{v4_b}/30"), "dev", &ifb]);
        a.ip(&["addr", "add", &format!("{v6_a}/64"), "dev", &ifa, "nodad"]);
        b.ip(&["addr", "add", &format!("{v6_b}/64"), "dev", &ifb, "nodad"]);
        a.ip(&["link", "set", &ifa, "up"]);
        b.ip(&["link", "set", &ifb, "up"]);
        VethPair {
            a,
            b,
            ifa,
            ifb,
            v4_a,
            v4_b,
            v6_a,
            v6_b,
        }
    }
}

/// A payload for segment `i` of `len` bytes whose bytes name the segment, so reordering or
/// corruption shows.
pub fn segment(tag: u8, i: usize, len: usize) -> Vec<u8> {
    let mut v = vec![tag; len];
    v[..4].copy_from_slice(&(i as u32).to_be_bytes());
    v
}
