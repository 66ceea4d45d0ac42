//! The batched, offloaded packet paths of the event loop.
//!
//! **Transmit** (TUN → network): one TUN read returns a TSO/USO super-packet behind a
//! virtio-net header. It is split into segments (`weft-packet`) written straight into one
//! contiguous buffer at the position each WireGuard message will occupy, encrypted in place by
//! the core, and the run of equal-sized messages to one endpoint leaves in a single
//! `sendmsg` with `UDP_SEGMENT` (GSO). No segment is copied after it is written, and nothing is
//! allocated.
//!
//! **Receive** (network → TUN): one `recvmmsg` returns up to 64 messages, each possibly a GRO
//! super-datagram; every segment is decrypted in place, then the decrypted packets of the whole
//! batch are coalesced per flow into super-packets (`GroTable`) and written to the TUN, one
//! write per flow run instead of one per packet.
//!
//! Without offloads (the TUN opened without a virtio-net header, or GSO/GRO turned off), the
//! same code runs with one segment per read and one datagram per message: the fallbacks are
//! the same paths with smaller batches, which is why the interop tests cover both.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use weft_filter::{Filter, FlowTable, Verdict};
use weft_packet::{Coalesced, GroTable, SuperPacket, VirtioNetHdr, VNET_HDR_LEN};
use weft_sys::{RecvBatch, SysError, Transmit, WriteOutcome};
use weft_wg::demux::{classify, PacketKind};
use weft_wg::messages::TRANSPORT_HEADER_LEN;
use weft_wg::{buffer_len_for, Decapsulated, Device, Encapsulated, Endpoint};

use crate::apply::normalize;
use crate::engine::ControlHook;
use crate::shard::ShardIo;

/// Largest IP packet.
const MAX_IP: usize = 65535;
/// Largest UDP payload of one GSO send: the IP length field bounds the whole datagram
/// (IPv6's fixed header is the larger: 40 bytes, plus 8 of UDP).
const MAX_GSO_PAYLOAD: usize = MAX_IP - 48;
/// Segments per GSO send (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = weft_sys::MAX_GSO_SEGMENTS;
/// Messages per receive batch.
const RX_SLOTS: usize = 64;
/// Decrypted packets coalesced in one pass.
const GRO_CHUNK: usize = 256;

/// Counters of the fast paths.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PathStats {
    /// TUN frames read.
    pub(crate) tun_frames: u64,
    /// Segments produced from them.
    pub(crate) tx_segments: u64,
    /// UDP sends issued (one per GSO run).
    pub(crate) udp_sends: u64,
    /// GSO runs that the path MTU refused and that went out one datagram at a time.
    pub(crate) gso_fallbacks: u64,
    /// Frames dropped because they were not valid super-packets.
    pub(crate) tx_bad_frames: u64,
    /// UDP messages received (each possibly several datagrams).
    pub(crate) udp_messages: u64,
    /// Datagrams received.
    pub(crate) rx_datagrams: u64,
    /// TUN writes issued.
    pub(crate) tun_writes: u64,
    /// TUN writes that did not go through (queue full, link down, rejected).
    pub(crate) tun_write_drops: u64,
    /// Decrypted packets the packet filter dropped (any reason).
    pub(crate) rx_filtered: u64,
}

/// The transmit path's buffers.
pub(crate) struct TxPath {
    frame: Vec<u8>,
    out: Vec<u8>,
    vnet: bool,
    mtu: usize,
    pub(crate) stats: PathStats,
}

/// A run of messages in `TxPath::out` bound for one endpoint.
#[derive(Clone, Copy)]
struct Run {
    endpoint: SocketAddr,
    stride: usize,
    count: usize,
    /// The last message is shorter than `stride`: nothing may follow it in this send.
    closed: bool,
}

impl TxPath {
    pub(crate) fn new(vnet: bool, mtu: usize) -> Self {
        Self {
            frame: vec![0u8; VNET_HDR_LEN + MAX_IP],
            out: vec![0u8; MAX_GSO_PAYLOAD + buffer_len_for(mtu, mtu)],
            vnet,
            mtu,
            stats: PathStats::default(),
        }
    }

    /// Reads one frame from the TUN into the frame buffer. `Ok(None)` when the TUN is empty.
    pub(crate) fn read(&mut self, io: &mut impl ShardIo) -> Result<Option<usize>, SysError> {
        io.tun_read(&mut self.frame)
    }

    /// The frame of `len` bytes just read.
    pub(crate) fn frame(&self, len: usize) -> &[u8] {
        self.frame.get(..len).unwrap_or_default()
    }

    /// Where the frame's packet goes (its IP destination), if it parses that far.
    pub(crate) fn destination(&self, frame: &[u8]) -> Option<IpAddr> {
        let ip = if self.vnet {
            frame.get(VNET_HDR_LEN..)?
        } else {
            frame
        };
        match ip.first()? >> 4 {
            4 => {
                let b: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
                Some(IpAddr::from(b))
            }
            6 => {
                let b: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
                Some(IpAddr::from(b))
            }
            _ => None,
        }
    }

    /// Splits, encrypts and sends the frame of `len` bytes just read. With a packet filter
    /// (`flows`), its UDP or SCTP flow is recorded for the replies.
    pub(crate) fn send_frame(
        &mut self,
        device: &mut Device,
        now: Instant,
        len: usize,
        io: &mut impl ShardIo,
        flows: Option<(&Filter, &mut FlowTable)>,
    ) {
        let Self {
            frame,
            out,
            vnet,
            mtu,
            stats,
        } = self;
        if let Some(frame) = frame.get(..len) {
            send(frame, out, *vnet, *mtu, stats, device, now, io, flows);
        }
    }

    /// Splits, encrypts and sends `frame`, which another shard read (this shard owns the peer,
    /// so it receives the replies: it records the flow).
    pub(crate) fn send_foreign_frame(
        &mut self,
        device: &mut Device,
        now: Instant,
        frame: &[u8],
        io: &mut impl ShardIo,
        flows: Option<(&Filter, &mut FlowTable)>,
    ) {
        send(
            frame,
            &mut self.out,
            self.vnet,
            self.mtu,
            &mut self.stats,
            device,
            now,
            io,
            flows,
        );
    }
}

/// Splits `frame` into segments written straight into `out` at their messages' places,
/// encrypts them in place, and sends each run of equal-sized messages to one endpoint with
/// one GSO send. With `flows`, the first segment's UDP or SCTP flow is recorded: every
/// segment of a USO super-packet has the same addresses and ports, so once per frame is
/// enough.
#[allow(clippy::too_many_arguments)]
fn send(
    frame: &[u8],
    out: &mut [u8],
    vnet: bool,
    mtu: usize,
    stats: &mut PathStats,
    device: &mut Device,
    now: Instant,
    io: &mut impl ShardIo,
    mut flows: Option<(&Filter, &mut FlowTable)>,
) {
    stats.tun_frames += 1;
    let parsed = if vnet {
        SuperPacket::from_frame(frame)
    } else {
        SuperPacket::parse(&VirtioNetHdr::NONE, frame)
    };
    let Ok(sp) = parsed else {
        stats.tx_bad_frames += 1;
        return;
    };
    let mut run: Option<Run> = None;
    let mut cursor = 0usize;
    for i in 0..sp.segment_count() {
        let Some(seg_len) = sp.segment_len(i) else {
            break;
        };
        let need = buffer_len_for(seg_len, mtu);
        let full = run.is_some_and(|r| {
            r.closed || r.count >= MAX_GSO_SEGMENTS || cursor + need > MAX_GSO_PAYLOAD
        });
        if full {
            flush(out, stats, run.take(), cursor, io);
            cursor = 0;
        }
        let Some(slot) = out.get_mut(cursor..cursor + need) else {
            break;
        };
        let Some(body) = slot.get_mut(TRANSPORT_HEADER_LEN..) else {
            break;
        };
        if sp.write_segment(i, body).is_err() {
            stats.tx_bad_frames += 1;
            break;
        }
        if let Some((filter, table)) = flows.take() {
            filter.check_outbound(body.get(..seg_len).unwrap_or_default(), table);
        }
        stats.tx_segments += 1;
        let Encapsulated::Send {
            endpoint: Endpoint::Udp(to),
            len,
            ..
        } = device.encapsulate(now, slot, seg_len)
        else {
            // Staged, dropped, or for a relay: the slot is free again.
            continue;
        };
        match run {
            Some(mut r) if r.endpoint == to && len <= r.stride => {
                r.count += 1;
                r.closed = len < r.stride;
                cursor += len;
                run = Some(r);
            }
            Some(_) => {
                // Another peer or a bigger message: send what came before, then move this
                // message to the front of the buffer.
                flush(out, stats, run.take(), cursor, io);
                out.copy_within(cursor..cursor + len, 0);
                cursor = len;
                run = Some(Run {
                    endpoint: to,
                    stride: len,
                    count: 1,
                    closed: false,
                });
            }
            None => {
                cursor += len;
                run = Some(Run {
                    endpoint: to,
                    stride: len,
                    count: 1,
                    closed: false,
                });
            }
        }
    }
    flush(out, stats, run, cursor, io);
}

/// Sends the run in `out[..len]`: one GSO send, or datagram by datagram when the path MTU
/// refuses the segment size (the kernel then fragments each datagram, as wireguard-go's sends
/// are fragmented).
fn flush(out: &[u8], stats: &mut PathStats, run: Option<Run>, len: usize, io: &mut impl ShardIo) {
    {
        let Some(run) = run else { return };
        let Some(contents) = out.get(..len) else {
            return;
        };
        stats.udp_sends += 1;
        let segment_size = (run.count > 1)
            .then(|| u16::try_from(run.stride).ok())
            .flatten();
        let gso = [Transmit {
            dst: run.endpoint,
            contents,
            segment_size,
        }];
        match io.udp_send(&gso) {
            Ok(_) => {}
            Err(SysError::Io { source, .. })
                if segment_size.is_some() && source.raw_os_error() == Some(libc::EMSGSIZE) =>
            {
                stats.gso_fallbacks += 1;
                let mut singles = [Transmit {
                    dst: run.endpoint,
                    contents: &[],
                    segment_size: None,
                }; MAX_GSO_SEGMENTS];
                let mut n = 0;
                for (t, chunk) in singles.iter_mut().zip(contents.chunks(run.stride)) {
                    t.contents = chunk;
                    n += 1;
                }
                let mut sent = 0;
                // Bounded: each round sends at least one datagram or stops.
                for _ in 0..n {
                    match io.udp_send(singles.get(sent..n).unwrap_or_default()) {
                        Ok(k) if k > 0 && sent + k < n => sent += k,
                        Ok(_) | Err(_) => break,
                    }
                }
            }
            Err(e) => tracing::trace!(error = %e, "send failed"),
        }
    }
}

/// One decrypted packet: slot, offset and length in the receive batch.
type Decrypted = (u16, u32, u32);

/// The receive path's buffers.
pub(crate) struct RxPath {
    batch: RecvBatch,
    decrypted: Vec<Decrypted>,
    gro: Option<GroTable>,
    /// Where merged super-packets are built.
    scratch: Vec<u8>,
    /// Where an unmerged packet gets its (empty) virtio-net header.
    single: Vec<u8>,
    pub(crate) stats: PathStats,
}

impl RxPath {
    /// `vnet`: the TUN takes virtio-net headers (so GRO frames can be written); `udp_gro`: the
    /// TUN accepted USO, so UDP flows may be merged too.
    pub(crate) fn new(vnet: bool, udp_gro: bool) -> Result<Self, SysError> {
        Ok(Self {
            batch: RecvBatch::new(RX_SLOTS, 65536)?,
            decrypted: Vec::with_capacity(RX_SLOTS * 64),
            gro: vnet.then(|| {
                let mut table = GroTable::new(GRO_CHUNK, udp_gro);
                // Decrypted packets are authenticated: as the kernel's WireGuard, which marks
                // them CHECKSUM_UNNECESSARY, do not spend a pass over every byte verifying
                // what the peer computed.
                table.trust_l4_checksums();
                table
            }),
            scratch: vec![0u8; weft_packet::gro::SCRATCH_LEN],
            single: vec![0u8; VNET_HDR_LEN + MAX_IP],
            stats: PathStats::default(),
        })
    }

    /// Receives one batch, decrypts it and writes the packets to the TUN. Returns the number of
    /// messages received (0: the socket is drained) or `Err` when the TUN is gone.
    pub(crate) fn receive(
        &mut self,
        device: &mut Device,
        now: Instant,
        io: &mut impl ShardIo,
        hook: &mut dyn ControlHook,
        filter: Option<(&Filter, &mut FlowTable)>,
    ) -> Result<usize, SysError> {
        let mut filter = filter;
        let n = match io.udp_recv(&mut self.batch) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "receive failed");
                return Ok(0);
            }
        };
        self.stats.udp_messages += n as u64;
        self.decrypted.clear();
        for slot in 0..n {
            let Some((meta, buf)) = self.batch.get_mut(slot) else {
                continue;
            };
            if meta.truncated {
                continue;
            }
            let from = normalize(meta.addr);
            let stride = if meta.stride == 0 {
                meta.len
            } else {
                meta.stride
            };
            let Some(payload) = buf.get_mut(..meta.len) else {
                continue;
            };
            let mut offset = 0usize;
            for datagram in payload.chunks_mut(stride.max(1)) {
                self.stats.rx_datagrams += 1;
                let here = offset;
                offset += datagram.len();
                let kind = classify(datagram);
                if kind != PacketKind::WireGuard {
                    hook.on_datagram(kind, from, datagram);
                    continue;
                }
                if let Decapsulated::Packet { start, len, .. } =
                    device.decapsulate(now, Endpoint::Udp(from), datagram)
                {
                    if let Some((filter, flows)) = filter.as_mut() {
                        let packet = datagram.get(start..start + len).unwrap_or_default();
                        if let Verdict::Drop(reason) = filter.check_inbound_with(packet, flows) {
                            self.stats.rx_filtered += 1;
                            tracing::trace!(%reason, "packet filter dropped a packet");
                            continue;
                        }
                    }
                    if let (Ok(s), Ok(o), Ok(l)) = (
                        u16::try_from(slot),
                        u32::try_from(here + start),
                        u32::try_from(len),
                    ) {
                        self.decrypted.push((s, o, l));
                    }
                }
            }
        }
        self.deliver(io)?;
        Ok(n)
    }

    /// Writes the decrypted packets of the batch to the TUN, coalesced where allowed.
    fn deliver(&mut self, io: &mut impl ShardIo) -> Result<(), SysError> {
        let Self {
            batch,
            decrypted,
            gro,
            scratch,
            single,
            stats,
        } = self;
        let packet = |&(slot, off, len): &Decrypted| -> &[u8] {
            batch
                .get(usize::from(slot))
                .and_then(|(_, buf)| buf.get(off as usize..(off + len) as usize))
                .unwrap_or_default()
        };
        let Some(gro) = gro.as_mut() else {
            for d in decrypted.iter() {
                write(io, packet(d), stats)?;
            }
            return Ok(());
        };
        let mut gone = None;
        let mut rest = decrypted.as_slice();
        // Bounded: every round consumes at least one packet.
        for _ in 0..decrypted.len() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(message_aligned_chunk(rest, GRO_CHUNK));
            rest = tail;
            let mut refs: [&[u8]; GRO_CHUNK] = [&[]; GRO_CHUNK];
            for (r, d) in refs.iter_mut().zip(chunk) {
                *r = packet(d);
            }
            let refs = refs.get(..chunk.len()).unwrap_or_default();
            gro.coalesce(refs, scratch, |frame| {
                if gone.is_some() {
                    return;
                }
                let result = match frame {
                    Coalesced::Merged { frame, .. } => write(io, frame, stats),
                    Coalesced::Single { packet, .. } => write_single(io, packet, single, stats),
                };
                if let Err(e) = result {
                    gone = Some(e);
                }
            });
        }
        gone.map_or(Ok(()), Err)
    }
}

/// How many of `packets` (at least one) to coalesce in one pass of at most `max`: the pass
/// ends at a message boundary whenever one exists, so that the segments of one GRO message
/// (at most 64, one flow's run) are never written as two super-packets.
fn message_aligned_chunk(packets: &[Decrypted], max: usize) -> usize {
    let end = max.min(packets.len());
    let Some(&(next_slot, _, _)) = packets.get(end) else {
        return end;
    };
    let split = packets
        .get(..end)
        .unwrap_or_default()
        .iter()
        .rposition(|&(slot, _, _)| slot != next_slot)
        .map_or(end, |i| i + 1);
    split.max(1)
}

fn write(io: &mut impl ShardIo, frame: &[u8], stats: &mut PathStats) -> Result<(), SysError> {
    stats.tun_writes += 1;
    match io.tun_write(frame)? {
        WriteOutcome::Written => {}
        _ => stats.tun_write_drops += 1,
    }
    Ok(())
}

/// Writes an unmerged packet behind an empty virtio-net header, built in `frame`.
fn write_single(
    io: &mut impl ShardIo,
    packet: &[u8],
    frame: &mut [u8],
    stats: &mut PathStats,
) -> Result<(), SysError> {
    let total = VNET_HDR_LEN + packet.len();
    let Some(frame) = frame.get_mut(..total) else {
        stats.tun_write_drops += 1;
        return Ok(());
    };
    let (hdr, body) = frame.split_at_mut(VNET_HDR_LEN);
    hdr.copy_from_slice(&VirtioNetHdr::NONE.to_bytes());
    body.copy_from_slice(packet);
    write(io, frame, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(slots: &[(u16, usize)]) -> Vec<Decrypted> {
        slots
            .iter()
            .flat_map(|&(slot, n)| (0..n).map(move |i| (slot, i as u32 * 100, 100)))
            .collect()
    }

    #[test]
    fn chunks_end_at_message_boundaries() {
        // 45 + 45 + 45 with room for 100: the third message waits for the next pass.
        assert_eq!(
            message_aligned_chunk(&packets(&[(0, 45), (1, 45), (2, 45)]), 100),
            90
        );
        // Everything fits.
        assert_eq!(
            message_aligned_chunk(&packets(&[(0, 45), (1, 45)]), 100),
            90
        );
        // Exactly at a boundary.
        assert_eq!(
            message_aligned_chunk(&packets(&[(0, 50), (1, 50), (2, 1)]), 100),
            100
        );
        // One message longer than a pass is cut (cannot happen with 64-segment GRO and a
        // 256-packet pass, but the chunk must still make progress).
        assert_eq!(message_aligned_chunk(&packets(&[(0, 300)]), 256), 256);
        assert_eq!(message_aligned_chunk(&packets(&[(0, 1)]), 256), 1);
        assert_eq!(message_aligned_chunk(&[], 256), 0);
    }
}
