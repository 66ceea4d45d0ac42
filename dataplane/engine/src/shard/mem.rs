//! In-memory I/O for a shard, and two shards wired back to back: the whole shard loop (TUN
//! read, GSO split, seal, UDP send, UDP receive, open, GRO coalescing, TUN write, timers) runs
//! without a kernel, so tests can count its allocations and check what it delivers.
//!
//! The "wire" behaves like a veth with UDP GRO on the receiving socket: a GSO send arrives as
//! one coalesced message with its segment size, a plain send as one datagram, and a full
//! queue refuses further sends as a full socket buffer would. All storage is allocated up
//! front, so the fake adds no allocation of its own to what is counted.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use weft_sys::{RecvBatch, SysError, Transmit, WriteOutcome};
use weft_wg::allowedips::AllowedIps;
use weft_wg::Device;

use super::{Ready, Shard, ShardIo, ShardState};
use crate::engine::DropHook;
use crate::fastpath::PathStats;

/// Messages a wire direction holds before sends are refused.
const WIRE_SLOTS: usize = 256;
/// Largest message (a whole GSO run).
const WIRE_MESSAGE: usize = 65535;

struct Message {
    from: SocketAddr,
    stride: usize,
    len: usize,
    buf: Vec<u8>,
}

/// One direction of the wire: a fixed ring of messages.
struct Wire {
    slots: Vec<Message>,
    head: usize,
    len: usize,
}

impl Wire {
    fn new() -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            slots: (0..WIRE_SLOTS)
                .map(|_| Message {
                    from: unspecified,
                    stride: 0,
                    len: 0,
                    buf: vec![0; WIRE_MESSAGE],
                })
                .collect(),
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, from: SocketAddr, stride: usize, payload: &[u8]) -> bool {
        if self.len == self.slots.len() || payload.len() > WIRE_MESSAGE {
            return false;
        }
        let i = (self.head + self.len) % self.slots.len();
        let Some(m) = self.slots.get_mut(i) else {
            return false;
        };
        let Some(dst) = m.buf.get_mut(..payload.len()) else {
            return false;
        };
        dst.copy_from_slice(payload);
        m.from = from;
        m.stride = stride;
        m.len = payload.len();
        self.len += 1;
        true
    }

    /// Moves messages into `batch` until it is full or the wire is empty.
    fn pop_into(&mut self, batch: &mut RecvBatch) -> usize {
        batch.clear();
        let mut n = 0;
        while self.len > 0 {
            let Some(m) = self.slots.get(self.head) else {
                break;
            };
            if !batch.push(m.from, m.stride, m.buf.get(..m.len).unwrap_or_default()) {
                break;
            }
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
            n += 1;
        }
        n
    }
}

/// Counters of one side's in-memory TUN.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TunCounts {
    /// Frames the TUN handed to the shard.
    pub read_frames: u64,
    /// Frames the shard wrote to the TUN.
    pub written_frames: u64,
    /// Bytes written (virtio-net headers included).
    pub written_bytes: u64,
    /// UDP sends the wire refused (queue full) or that went elsewhere than the peer.
    pub refused_sends: u64,
}

/// A shard's TUN and UDP socket, in memory. The TUN yields copies of one frame, as many as
/// [`MemIo::feed`] allowed; what the shard writes to the TUN is counted and handed to an
/// optional inspector.
pub struct MemIo {
    addr: SocketAddr,
    peer: SocketAddr,
    inbox: Rc<RefCell<Wire>>,
    outbox: Rc<RefCell<Wire>>,
    frame: Vec<u8>,
    frames_left: u64,
    counts: TunCounts,
}

impl MemIo {
    /// Makes more frames available on the TUN.
    pub fn feed(&mut self, frames: u64) {
        self.frames_left += frames;
    }

    /// The counters.
    pub fn counts(&self) -> TunCounts {
        self.counts
    }
}

impl ShardIo for MemIo {
    fn wait(&mut self, _timeout: Duration) -> Result<Ready, SysError> {
        Ok(Ready {
            tun: self.frames_left > 0,
            udp: self.inbox.borrow().len > 0,
            woken: false,
        })
    }

    fn tun_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, SysError> {
        if self.frames_left == 0 {
            return Ok(None);
        }
        let n = self.frame.len();
        let Some(dst) = buf.get_mut(..n) else {
            return Err(SysError::BadConfig {
                reason: "TUN read buffer shorter than the frame",
            });
        };
        dst.copy_from_slice(&self.frame);
        self.frames_left -= 1;
        self.counts.read_frames += 1;
        Ok(Some(n))
    }

    fn tun_write(&mut self, frame: &[u8]) -> Result<WriteOutcome, SysError> {
        self.counts.written_frames += 1;
        self.counts.written_bytes += frame.len() as u64;
        Ok(WriteOutcome::Written)
    }

    fn udp_recv(&mut self, batch: &mut RecvBatch) -> Result<usize, SysError> {
        Ok(self.inbox.borrow_mut().pop_into(batch))
    }

    fn udp_send(&mut self, transmits: &[Transmit<'_>]) -> Result<usize, SysError> {
        let mut wire = self.outbox.borrow_mut();
        let mut sent = 0;
        for t in transmits {
            if t.dst != self.peer {
                self.counts.refused_sends += 1;
                sent += 1;
                continue;
            }
            let stride = t.segment_size.map_or(t.contents.len(), usize::from);
            if !wire.push(self.addr, stride, t.contents) {
                self.counts.refused_sends += 1;
                break;
            }
            sent += 1;
        }
        Ok(sent)
    }
}

/// One side of a [`ShardPair`].
struct Side {
    shard: Shard,
    state: ShardState,
    io: MemIo,
}

/// Two shards with established devices, joined by an in-memory wire.
pub struct ShardPair {
    a: Side,
    b: Side,
    now: Instant,
}

impl ShardPair {
    /// Builds the pair from `weft_wg::testing::established_pair` (A at 192.0.2.1:1, B at
    /// 192.0.2.2:2). A's TUN yields copies of `frame_a`, B's of `frame_b` (frames as a TUN
    /// with virtio-net headers returns them); both TUNs take coalesced writes, TCP and UDP.
    ///
    /// # Errors
    /// If the handshake of the fixture does not complete.
    pub fn new(
        now: Instant,
        mtu: usize,
        frame_a: Vec<u8>,
        frame_b: Vec<u8>,
    ) -> Result<Self, SysError> {
        let pair = weft_wg::testing::established_pair(now).ok_or(SysError::BadConfig {
            reason: "fixture handshake did not complete",
        })?;
        let a_addr = SocketAddr::from(([192, 0, 2, 1], 1));
        let b_addr = SocketAddr::from(([192, 0, 2, 2], 2));
        let to_b = Rc::new(RefCell::new(Wire::new()));
        let to_a = Rc::new(RefCell::new(Wire::new()));
        let side = |device, addr, peer, inbox, outbox, frame| -> Result<Side, SysError> {
            Ok(Side {
                shard: Shard::new("mem", true, true, mtu, Box::new(DropHook::default()))?,
                state: ShardState {
                    device,
                    routes: AllowedIps::new(),
                    filter: None,
                    flows: weft_filter::FlowTable::new(),
                },
                io: MemIo {
                    addr,
                    peer,
                    inbox,
                    outbox,
                    frame,
                    frames_left: 0,
                    counts: TunCounts::default(),
                },
            })
        };
        Ok(Self {
            a: side(
                pair.a,
                a_addr,
                b_addr,
                Rc::clone(&to_a),
                Rc::clone(&to_b),
                frame_a,
            )?,
            b: side(pair.b, b_addr, a_addr, to_b, to_a, frame_b)?,
            now,
        })
    }

    /// Makes `a` more frames available on A's TUN and `b` on B's.
    pub fn feed(&mut self, a: u64, b: u64) {
        self.a.io.feed(a);
        self.b.io.feed(b);
    }

    /// Runs both shards' loops, turn by turn, until neither has anything to read or
    /// `max_turns` turns have run; the clock advances 1 µs per turn. Returns the turns run.
    ///
    /// # Errors
    /// A shard's turn failed.
    pub fn run(&mut self, max_turns: usize) -> Result<usize, SysError> {
        for turn in 0..max_turns {
            let ra = self.a.io.wait(Duration::ZERO)?;
            let rb = self.b.io.wait(Duration::ZERO)?;
            if !(ra.tun || ra.udp || rb.tun || rb.udp) {
                return Ok(turn);
            }
            self.now += Duration::from_micros(1);
            for (side, ready) in [(&mut self.a, ra), (&mut self.b, rb)] {
                side.shard
                    .turn(&mut side.io, &mut side.state, self.now, ready)?;
            }
        }
        Ok(max_turns)
    }

    /// The TUN counters of A and B.
    pub fn counts(&self) -> (TunCounts, TunCounts) {
        (self.a.io.counts(), self.b.io.counts())
    }

    /// Segments sealed by A and by B (from their transmit paths' counters).
    pub fn segments_sent(&self) -> (u64, u64) {
        let seg = |s: &Side| -> u64 {
            let (tx, _): (PathStats, PathStats) = s.shard.stats();
            tx.tx_segments
        };
        (seg(&self.a), seg(&self.b))
    }

    /// Datagrams received by A and by B.
    pub fn datagrams_received(&self) -> (u64, u64) {
        let rx = |s: &Side| -> u64 { s.shard.stats().1.rx_datagrams };
        (rx(&self.a), rx(&self.b))
    }

    /// Installs packet filters on A and B (`None`: none), as `PacketFilterControl::set` does.
    pub fn set_filters(&mut self, a: Option<weft_filter::Filter>, b: Option<weft_filter::Filter>) {
        self.a.state.filter = a.map(std::sync::Arc::new);
        self.b.state.filter = b.map(std::sync::Arc::new);
    }

    /// Flows in the reverse-flow caches of A and B.
    pub fn flows(&self) -> (usize, usize) {
        (self.a.state.flows.len(), self.b.state.flows.len())
    }

    /// Decrypted packets the packet filters of A and B dropped.
    pub fn filtered(&self) -> (u64, u64) {
        let f = |s: &Side| -> u64 { s.shard.stats().1.rx_filtered };
        (f(&self.a), f(&self.b))
    }

    /// Data packets each device delivered (the cores' counters), for cross-checking.
    pub fn devices(&self) -> (&Device, &Device) {
        (&self.a.state.device, &self.b.state.device)
    }
}
