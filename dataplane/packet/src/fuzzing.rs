//! Invariants for the fuzz targets `packet_vnet_hdr`, `packet_gso_split` and
//! `packet_gro_merge` in `dataplane/fuzz`.
//!
//! They live in the library so that `tests/fuzz_corpus.rs` replays the committed corpora
//! (`dataplane/fuzz/corpus/<target>/`) with a plain `cargo test` on stable: a crash the fuzzer
//! finds becomes a regression test by dropping its input there. Each check returns the broken
//! invariant as a [`Violation`]; the fuzz targets panic on it.
//!
//! # Input formats
//! * `packet_vnet_hdr`: raw bytes.
//! * `packet_gso_split`: a first byte of `b'S'` makes the rest a *structured* case — header
//!   fields, `gso_size` and payload length read from the bytes, the frame built by
//!   [`crate::build`] — whose segments must equal the reference segmentation byte for byte.
//!   Anything else is a raw TUN read (virtio-net header and packet).
//! * `packet_gro_merge`: a first byte of 0 makes the rest raw packets, each behind a
//!   little-endian `u16` length. Anything else builds 1–4 flows from the bytes, each a
//!   reference segmentation; interleaves their segments; applies per-segment field edits
//!   (TTL, TOS, window, flags, ACK, sequence, options, IPv4 ID, flow label, truncation) and raw
//!   byte flips; and may insert junk packets.

use std::collections::BTreeMap;

use crate::build::{self, Spec};
use crate::gro::{Coalesced, GroStats, GroTable, SCRATCH_LEN};
use crate::gso::SuperPacket;
use crate::tcp::flags;
use crate::vnet::{GsoType, VirtioNetHdr, VnetError, VNET_HDR_LEN};

/// A broken invariant, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
    if ok {
        Ok(())
    } else {
        Err(Violation(what()))
    }
}

/// Headroom the engine reserves in front of each segment (the WireGuard transport header).
pub const HEADROOM: usize = 16;

/// `packet_vnet_hdr`: parsing never panics, accepts exactly the known GSO types on 10+ bytes,
/// and every accepted header round-trips through `to_bytes`/`emit`.
///
/// # Errors
/// The first invariant that does not hold.
pub fn check_vnet_hdr(data: &[u8]) -> Result<(), Violation> {
    match VirtioNetHdr::parse(data) {
        Err(VnetError::Truncated(n)) => ensure(n == data.len() && n < VNET_HDR_LEN, || {
            format!("Truncated({n}) for {} bytes", data.len())
        }),
        Err(VnetError::UnknownGsoType(t)) => ensure(
            data.get(1) == Some(&t) && GsoType::from_u8(t & 0x7f).is_none(),
            || format!("UnknownGsoType({t}) for {data:02x?}"),
        ),
        Ok(h) => {
            let head = data.get(..VNET_HDR_LEN).unwrap_or_default();
            ensure(h.to_bytes() == head, || {
                format!("{h:?} does not round-trip")
            })?;
            let mut out = [0u8; VNET_HDR_LEN];
            ensure(h.emit(&mut out).is_ok() && out == head, || "emit".into())?;
            let (h2, rest) =
                VirtioNetHdr::split_frame(data).map_err(|e| Violation(format!("{e}")))?;
            ensure(h2 == h && rest.len() + VNET_HDR_LEN == data.len(), || {
                "split_frame".into()
            })
        }
    }
}

/// `packet_gso_split`: see the module doc for the input format. For every accepted read:
/// segment payloads add up to the super-packet's payload, every segment has valid IPv4 header
/// and TCP/UDP checksums (by the naive model) and fits its announced length; structured cases
/// equal the reference segmentation exactly.
///
/// # Errors
/// The first invariant that does not hold.
pub fn check_gso_split(data: &[u8]) -> Result<(), Violation> {
    if let Some((b'S', rest)) = data.split_first() {
        let mut r = Reader(rest);
        let spec = spec_from(&mut r, true);
        let gso_size = 1 + r.u16() % 1500;
        let count = 1 + usize::from(r.u8() % 48);
        let len = ((count - 1) * usize::from(gso_size)
            + 1
            + usize::from(r.u16()) % usize::from(gso_size))
        .min(usize::from(u16::MAX) - spec.header_len());
        let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
        let frame = spec.super_frame(gso_size, &payload);
        let got = split_all(&frame)?.ok_or_else(|| Violation(format!("{spec:?} refused")))?;
        let want = spec.segments(gso_size, &payload);
        return ensure(got == want, || {
            format!("{spec:?} gso {gso_size}: segments differ from the reference")
        });
    }
    split_all(data).map(|_| ())
}

/// Splits a frame into fresh buffers and checks the generic invariants; `None` if refused.
fn split_all(frame: &[u8]) -> Result<Option<Vec<Vec<u8>>>, Violation> {
    let Ok(sp) = SuperPacket::from_frame(frame) else {
        return Ok(None);
    };
    let count = sp.segment_count();
    ensure(count >= 1, || "zero segments".into())?;
    let segmented = sp.header_len() > 0;
    let hlen = sp.header_len();
    // Every accepted read fits at most 65 535 payload bytes per... bound the work anyway.
    let mut bufs: Vec<Vec<u8>> = (0..count)
        .map(|i| vec![0xee; HEADROOM + sp.segment_len(i).unwrap_or_default()])
        .collect();
    let mut lens = vec![0usize; count];
    let n = sp
        .split_into(HEADROOM, &mut bufs, &mut lens)
        .map_err(|e| Violation(format!("split_into failed after parse: {e}")))?;
    ensure(n == count, || format!("{n} segments, announced {count}"))?;
    ensure(sp.write_segment(count, &mut [0u8; 64]).is_err(), || {
        "segment past the end accepted".into()
    })?;
    let mut payload_total = 0;
    let mut out = Vec::with_capacity(count);
    for (i, (buf, len)) in bufs.iter().zip(&lens).enumerate() {
        ensure(Some(*len) == sp.segment_len(i), || {
            format!("segment {i} length")
        })?;
        ensure(*len <= sp.max_segment_len(), || {
            format!("segment {i} too long")
        })?;
        ensure(buf.get(..HEADROOM) == Some(&[0xee; HEADROOM][..]), || {
            format!("segment {i} wrote into the headroom")
        })?;
        let seg = buf.get(HEADROOM..HEADROOM + len).unwrap_or_default();
        payload_total += len - hlen;
        if segmented {
            ensure(build::ipv4_checksum_ok(seg), || {
                format!("segment {i}: bad IPv4 header checksum")
            })?;
            // IPv6 extension headers are not walked by the naive model; skip those.
            if let Some(ok) = build::l4_checksum_ok(seg) {
                ensure(ok, || format!("segment {i}: bad L4 checksum"))?;
            }
        }
        out.push(seg.to_vec());
    }
    ensure(payload_total == sp.payload_len(), || {
        format!("payload {payload_total} != {}", sp.payload_len())
    })?;
    Ok(Some(out))
}

/// `packet_gro_merge`: see the module doc for the input format. Every packet is emitted
/// exactly once; bytes are conserved; singles are the caller's bytes unchanged; every merged
/// frame is a valid super-packet that splits back into exactly the packets that went in
/// (IPv4 ID and checksum fields aside, which are checked for validity instead); and each
/// flow's packets come out in the order they went in. Returns the coalescing counts, so the
/// corpus test can tell that its inputs do merge.
///
/// # Errors
/// The first invariant that does not hold.
pub fn check_gro_merge(data: &[u8]) -> Result<GroStats, Violation> {
    let packets = match data.split_first() {
        Some((0, rest)) => raw_packets(rest),
        _ => structured_packets(data),
    };
    let mut table = GroTable::new(64, true);
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut outputs: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
    let mut error: Option<Violation> = None;
    let stats = table.coalesce(&packets, &mut scratch, |c| {
        if error.is_some() {
            return;
        }
        match c {
            Coalesced::Single { index, packet } => {
                if packets.get(index).map(Vec::as_slice) != Some(packet) {
                    error = Some(Violation(format!("single {index} is not the input")));
                }
                outputs.push((index, vec![packet.to_vec()]));
            }
            Coalesced::Merged {
                first_index,
                segments,
                frame,
            } => match resplit(frame, segments) {
                Ok(segs) => outputs.push((first_index, segs)),
                Err(v) => error = Some(v),
            },
        }
    });
    if let Some(v) = error {
        return Err(v);
    }
    let emitted: usize = outputs.iter().map(|(_, s)| s.len()).sum();
    ensure(
        emitted == packets.len() && stats.packets == packets.len(),
        || format!("{emitted} packets out of {}", packets.len()),
    )?;
    let bytes_in: usize = packets.iter().map(Vec::len).sum();
    let bytes_out: usize = outputs.iter().flat_map(|(_, s)| s).map(Vec::len).sum();
    ensure(bytes_in == bytes_out, || {
        format!("{bytes_in} bytes in, {bytes_out} out")
    })?;

    // Per flow, the (normalized) packets come out in the order they went in.
    let mut flows: BTreeMap<Vec<u8>, InOut> = BTreeMap::new();
    for p in &packets {
        let key = naive_flow(p).unwrap_or_else(|| p.clone());
        flows.entry(key).or_default().0.push(normalize(p));
    }
    for p in outputs.iter().flat_map(|(_, s)| s) {
        let key = naive_flow(p).unwrap_or_else(|| p.clone());
        flows.entry(key).or_default().1.push(normalize(p));
    }
    for (key, (input, output)) in &flows {
        ensure(input == output, || {
            format!(
                "flow {key:02x?}: {} in, {} out, or reordered",
                input.len(),
                output.len()
            )
        })?;
    }
    Ok(stats)
}

/// A flow's normalized packets, as they went in and as they came out.
type InOut = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// Checks a merged frame like the kernel would and splits it back.
fn resplit(frame: &[u8], segments: usize) -> Result<Vec<Vec<u8>>, Violation> {
    let (hdr, packet) =
        VirtioNetHdr::split_frame(frame).map_err(|e| Violation(format!("merged header: {e}")))?;
    ensure(hdr.needs_csum() && hdr.gso_type != GsoType::None, || {
        format!("merged frame header {hdr:?}")
    })?;
    ensure(segments >= 2, || "merged frame of one segment".into())?;
    // Complete the partial checksum as the kernel would before local delivery.
    let mut full = packet.to_vec();
    let single = VirtioNetHdr {
        gso_type: GsoType::None,
        ..hdr
    };
    crate::gso::complete_partial_checksum(&single, &mut full)
        .map_err(|e| Violation(format!("merged csum offsets: {e}")))?;
    ensure(build::l4_checksum_ok(&full) == Some(true), || {
        "merged frame's completed checksum does not verify".into()
    })?;
    ensure(build::ipv4_checksum_ok(&full), || {
        "merged IPv4 header checksum".into()
    })?;
    let segs = split_all(frame)?.ok_or_else(|| Violation("merged frame refused by GSO".into()))?;
    ensure(segs.len() == segments, || {
        format!(
            "merged frame announced {segments} segments, splits into {}",
            segs.len()
        )
    })?;
    Ok(segs)
}

/// Masks the fields a merge may legitimately change: IPv4 ID and header checksum, the L4
/// checksum (its validity is checked elsewhere; 0x0000 and 0xffff are the same value).
fn normalize(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    let Some(&b0) = p.first() else {
        return p;
    };
    if naive_flow(&p).is_none() {
        return p;
    }
    let (ip_hlen, proto) = if b0 >> 4 == 4 {
        for i in [4, 5, 10, 11] {
            if let Some(b) = p.get_mut(i) {
                *b = 0;
            }
        }
        (usize::from(b0 & 0x0f) * 4, p.get(9).copied().unwrap_or(0))
    } else {
        (40, p.get(6).copied().unwrap_or(0))
    };
    let at = ip_hlen + if proto == 6 { 16 } else { 6 };
    for i in [at, at + 1] {
        if let Some(b) = p.get_mut(i) {
            *b = 0;
        }
    }
    p
}

/// The flow GRO keys a packet by, by an independent parse; `None` for packets it does not
/// key (not TCP/UDP, IPv4 fragments, IPv6 extension headers, malformed headers).
fn naive_flow(p: &[u8]) -> Option<Vec<u8>> {
    let b0 = *p.first()?;
    let (ip_hlen, proto, addrs, label): (usize, u8, &[u8], u32) = match b0 >> 4 {
        4 => {
            let ihl = usize::from(b0 & 0x0f) * 4;
            let frag = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]);
            if ihl < 20 || p.len() < ihl || frag & 0x3fff != 0 {
                return None;
            }
            (ihl, *p.get(9)?, p.get(12..20)?, 0)
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let label = u32::from_be_bytes([0, *p.get(1)? & 0x0f, *p.get(2)?, *p.get(3)?]);
            (40, *p.get(6)?, p.get(8..40)?, label)
        }
        _ => return None,
    };
    let l4 = p.get(ip_hlen..)?;
    match proto {
        6 => {
            let doff = usize::from(*l4.get(12)? >> 4) * 4;
            if doff < 20 || l4.len() < doff {
                return None;
            }
        }
        17 if l4.len() >= 8 => {}
        _ => return None,
    }
    let mut key = vec![b0 >> 4, proto];
    key.extend_from_slice(addrs);
    key.extend_from_slice(l4.get(..4)?);
    key.extend_from_slice(&label.to_be_bytes());
    Some(key)
}

fn raw_packets(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (p, tail) = tail.split_at(len);
        packets.push(p.to_vec());
        rest = tail;
    }
    packets
}

/// One packet to build: header fields and payload.
struct Item {
    spec: Spec,
    payload: Vec<u8>,
}

fn structured_packets(data: &[u8]) -> Vec<Vec<u8>> {
    let mut r = Reader(data);
    let flows = 1 + usize::from(r.u8() % 4);
    let mut queues: Vec<std::collections::VecDeque<Item>> = Vec::new();
    for f in 0..flows {
        let spec = spec_from(&mut r, false);
        let gso = 1 + usize::from(r.u8()) * 6;
        let count = 1 + usize::from(r.u8() % 12);
        let last = 1 + usize::from(r.u8()) % gso;
        let payload: Vec<u8> = (0..(count - 1) * gso + last)
            .map(|i| (i + f) as u8)
            .collect();
        let n = payload.chunks(gso).count();
        let items = payload
            .chunks(gso)
            .enumerate()
            .map(|(i, chunk)| {
                let mut s = spec.clone();
                s.ident = spec.ident.wrapping_add(i as u16);
                s.seq = spec.seq.wrapping_add((i * gso) as u32);
                if i + 1 != n {
                    s.tcp_flags &= !(flags::FIN | flags::PSH);
                }
                if i != 0 {
                    s.tcp_flags &= !flags::CWR;
                }
                Item {
                    spec: s,
                    payload: chunk.to_vec(),
                }
            })
            .collect();
        queues.push(items);
    }
    // Interleave the flows.
    let mut items = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        let pick = usize::from(r.u8()) % queues.len();
        let next = (0..flows)
            .map(|k| (pick + k) % flows)
            .find(|&k| queues.get(k).is_some_and(|q| !q.is_empty()));
        if let Some(item) = next
            .and_then(|k| queues.get_mut(k))
            .and_then(|q| q.pop_front())
        {
            items.push(item);
        }
    }
    // Field edits, then raw edits.
    let mut raw_edits = Vec::new();
    while !r.0.is_empty() && !items.is_empty() {
        let op = r.u8();
        let at = usize::from(r.u8()) % items.len();
        let v = r.u16();
        if op % 14 == 12 {
            let spec = items.get(at).map_or_else(Spec::tcp4, |i| i.spec.clone());
            let junk = Item {
                spec: Spec {
                    ip_options: vec![1, 1, 1, 0],
                    ..spec
                },
                payload: vec![v as u8; usize::from(v % 64)],
            };
            items.insert(at, junk);
            continue;
        }
        let Some(item) = items.get_mut(at) else {
            break;
        };
        let s = &mut item.spec;
        match op % 14 {
            0 => s.ttl = v as u8,
            1 => s.tos = v as u8,
            2 => s.window = v,
            3 => s.tcp_flags = v as u8,
            4 => s.ack = s.ack.wrapping_add(u32::from(v)),
            5 => s.seq = s.seq.wrapping_add(u32::from(v)),
            6 => s.tcp_options = vec![1, 1, 8, 10, 0, 0, (v >> 8) as u8, v as u8, 0, 0, 0, 0],
            7 => s.ident = s.ident.wrapping_add(v),
            8 => s.flow_label = u32::from(v) & 0xf_ffff,
            9 => item
                .payload
                .truncate(usize::from(v) % (item.payload.len() + 1)),
            10 => s.df = !s.df,
            11 => raw_edits.push((at, usize::from(v), r.u8())),
            _ => s.ip_options = vec![1; usize::from(v % 3) * 4],
        }
    }
    let mut packets: Vec<Vec<u8>> = items.iter().map(|i| i.spec.packet(&i.payload)).collect();
    for (at, pos, xor) in raw_edits {
        if let Some(b) = packets.get_mut(at).and_then(|p| {
            let len = p.len().max(1);
            p.get_mut(pos % len)
        }) {
            *b ^= xor | 1;
        }
    }
    packets
}

/// Header fields from fuzz bytes: few distinct flows, so they collide and interleave.
fn spec_from(r: &mut Reader<'_>, ip_options: bool) -> Spec {
    let kind = r.u8();
    let mut s = match kind % 4 {
        0 => Spec::tcp4(),
        1 => Spec::tcp6(),
        2 => Spec::udp4(),
        _ => Spec::udp6(),
    };
    s.src_port = 40000 + u16::from(r.u8() % 4);
    s.ttl = if kind & 0x10 != 0 { r.u8() } else { 64 };
    s.tos = if kind & 0x20 != 0 { r.u8() } else { 0 };
    s.ident = r.u16();
    s.df = kind & 0x40 == 0;
    s.seq = r.u32();
    s.window = r.u16();
    let f = r.u8();
    s.tcp_flags = if f == 0xff {
        r.u8()
    } else {
        flags::ACK | (f & (flags::PSH | flags::FIN | flags::CWR | flags::ECE))
    };
    if kind & 0x80 != 0 {
        let ts = r.u32();
        s.tcp_options = vec![1, 1, 8, 10];
        s.tcp_options.extend_from_slice(&ts.to_be_bytes());
        s.tcp_options.extend_from_slice(&[0, 0, 0, 1]);
    }
    if ip_options && kind & 0x08 != 0 && !s.v6 {
        s.ip_options = vec![1; 4 * (1 + usize::from(r.u8() % 10))];
    }
    s
}

/// Reads little pieces of fuzz input, yielding zeros once it runs out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}
