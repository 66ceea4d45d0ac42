//! A bounded flood of bogus WireGuard handshake initiations, for denial-of-service
//! tests. It runs as a `python3` script inside a namespace (no `setns` here).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::netns::Netns;
use crate::process::ChildGuard;

/// Sends 148-byte type-1 (handshake initiation) messages with random contents.
///
/// argv: destination address, destination port, packet count limit, time limit
/// in seconds, responder public key (base64), then source addresses to bind to.
/// Every 32 packets it opens a new socket (a new source port), rotating over the
/// source addresses. Even-numbered packets carry a *valid* mac1 for the
/// responder's key (so they get past the cheap check and cost a DH unless the
/// responder is under load and demands cookies); odd ones a random mac1. mac2 is
/// zero. Prints `sent N errors E` (datagrams the kernel accepted, and send
/// errors) every second and at the end.
const FLOOD_PY: &str = r#"
import base64, hashlib, os, socket, sys, time
dst, port, count, secs, pub = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
sources = sys.argv[6:] or [None]
key = hashlib.blake2s(b"mac1----" + base64.b64decode(pub)).digest()
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
start = time.monotonic(); end = start + secs; report = start + 1.0
n = 0; sent = 0; errors = 0; sock = None
while n < count and time.monotonic() < end:
    if n % 32 == 0:
        if sock is not None:
            sock.close()
        sock = socket.socket(fam, socket.SOCK_DGRAM)
        src = sources[(n // 32) % len(sources)]
        if src is not None:
            sock.bind((src, 0))
    body = b"\x01\x00\x00\x00" + os.urandom(112)
    if n % 2 == 0:
        mac1 = hashlib.blake2s(body, key=key, digest_size=16).digest()
    else:
        mac1 = os.urandom(16)
    try:
        sock.sendto(body + mac1 + bytes(16), (dst, port))
        sent += 1
    except OSError:
        errors += 1
    n += 1
    now = time.monotonic()
    if now >= report:
        print("sent", sent, "errors", errors, flush=True)
        report = now + 1.0
print("sent", sent, "errors", errors, "done", flush=True)
"#;

/// Parameters of a [`HandshakeFlood`].
#[derive(Clone, Debug)]
pub struct FloodSpec {
    /// Target address (the responder's outer address).
    pub target: IpAddr,
    /// Target UDP port (the responder's listen port).
    pub port: u16,
    /// The responder's public key, base64 (to compute valid mac1s).
    pub responder_public: String,
    /// Addresses to send from (must exist in the namespace); empty for the default.
    pub sources: Vec<IpAddr>,
    /// At most this many packets.
    pub max_packets: u64,
    /// At most this long.
    pub duration: Duration,
}

/// A running flood; stopped on drop.
#[derive(Debug)]
pub struct HandshakeFlood {
    guard: ChildGuard,
}

impl HandshakeFlood {
    /// Starts the flood from inside `ns`.
    pub fn start(ns: &Netns, spec: &FloodSpec) -> Result<Self> {
        let port = spec.port.to_string();
        let count = spec.max_packets.to_string();
        let secs = format!("{:.1}", spec.duration.as_secs_f64());
        let target = spec.target.to_string();
        let limit = (spec.duration.as_secs() + 10).to_string();
        let sources: Vec<String> = spec.sources.iter().map(IpAddr::to_string).collect();
        let mut argv = vec![
            "timeout",
            "-k",
            "5",
            limit.as_str(),
            "python3",
            "-c",
            FLOOD_PY,
            target.as_str(),
            port.as_str(),
            count.as_str(),
            secs.as_str(),
            spec.responder_public.as_str(),
        ];
        argv.extend(sources.iter().map(String::as_str));
        let guard = ns.spawn(&format!("handshake flood to {target}:{port}"), &argv)?;
        Ok(Self { guard })
    }

    /// The sender's process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Whether it is still sending.
    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// Packets sent so far, from the last progress line.
    pub fn sent(&self) -> u64 {
        self.guard
            .log()
            .lines()
            .rev()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("sent"))
                    .then(|| w.next().and_then(|n| n.parse().ok()))
                    .flatten()
            })
            .unwrap_or(0)
    }

    /// Waits (bounded) for the flood to finish by itself; returns packets sent.
    pub fn wait(&mut self, timeout: Duration) -> Result<u64> {
        let status = self.guard.wait_timeout(timeout)?;
        if !status.success() {
            return Err(anyhow!(
                "flood failed ({status}): {}",
                self.guard.log_tail(20)
            ));
        }
        Ok(self.sent())
    }

    /// The flood's output.
    pub fn log(&self) -> String {
        self.guard.log()
    }

    /// Stops it now; returns packets sent.
    pub fn stop(&mut self) -> Result<u64> {
        self.guard.stop().context("stopping flood")?;
        Ok(self.sent())
    }
}
