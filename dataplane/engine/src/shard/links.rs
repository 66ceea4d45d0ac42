//! The hand-off between shards: bounded single-producer single-consumer rings
//! (`weft-handoff`), one for each ordered pair of shards.
//!
//! The kernel picks a TUN queue by flow hash, not by peer, so a shard may read a frame for a
//! peer that another shard owns. It passes the frame to the owner through the ring for that
//! pair and the owner splits, seals and sends it; a flow always maps to one queue and one ring,
//! so its order is kept. In steady state this path is rare: the TUN driver remembers which
//! queue last *wrote* a flow's packets (the owner writes the flow's incoming half) and sends
//! the flow's outgoing packets to that queue, so after the first round trip a flow is read by
//! its owner — except for flows that never write back, such as a one-way UDP stream, which
//! stay on the queue the hash chose. Those are single packets at high rates, so frames smaller
//! than half a slot are packed, length-prefixed, into one staging buffer per destination and
//! published as one ring entry at the end of the turn (or when the buffer fills): 16 slots then
//! hold hundreds of packets instead of 16. A full ring drops what it could not take (counted),
//! as a full TUN queue would.

use std::sync::Arc;

use weft_handoff::{channel, Consumer, Producer, TUN_FRAME_CAPACITY};
use weft_sys::Waker;

/// Entries each ring holds. Slot memory is only touched when used.
const RING_SLOTS: usize = 16;
/// Ring entry tags: one frame, or length-prefixed frames packed together.
const TAG_FRAME: u64 = 0;
const TAG_PACKED: u64 = 1;
/// Bytes of the length prefix of a packed frame.
const PREFIX: usize = 4;
/// Frames at least this long go into the ring on their own.
const PACK_LIMIT: usize = TUN_FRAME_CAPACITY / 2;

/// The producer end towards one shard, with its staging buffer of packed frames.
struct Outbox {
    ring: Producer,
    staging: Vec<u8>,
    staged: u64,
}

/// Counters of one shard's hand-offs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LinkStats {
    /// Frames passed to another shard.
    pub(crate) handed_off: u64,
    /// Frames dropped because the owner's ring was full.
    pub(crate) dropped: u64,
    /// Frames taken from other shards.
    pub(crate) taken: u64,
}

/// One shard's ends of the rings.
pub(crate) struct Links {
    me: usize,
    /// Indexed by destination shard; `None` at `me`.
    outboxes: Vec<Option<Outbox>>,
    inboxes: Vec<Consumer>,
    wakers: Vec<Arc<Waker>>,
    pub(crate) stats: LinkStats,
}

impl Links {
    /// Builds the rings between `wakers.len()` shards (shard `k` is woken with `wakers[k]`) and
    /// returns each shard's ends, in shard order.
    pub(crate) fn mesh(wakers: &[Arc<Waker>]) -> Vec<Links> {
        let n = wakers.len();
        let mut links: Vec<Links> = (0..n)
            .map(|me| Links {
                me,
                outboxes: (0..n).map(|_| None).collect(),
                inboxes: Vec::with_capacity(n.saturating_sub(1)),
                wakers: wakers.to_vec(),
                stats: LinkStats::default(),
            })
            .collect();
        for from in 0..n {
            for to in 0..n {
                if from == to {
                    continue;
                }
                // A power of two by construction, so this cannot fail.
                let Ok((p, c)) = channel(RING_SLOTS, TUN_FRAME_CAPACITY) else {
                    continue;
                };
                if let Some(slot) = links.get_mut(from).and_then(|l| l.outboxes.get_mut(to)) {
                    *slot = Some(Outbox {
                        ring: p,
                        staging: Vec::with_capacity(TUN_FRAME_CAPACITY),
                        staged: 0,
                    });
                }
                if let Some(l) = links.get_mut(to) {
                    l.inboxes.push(c);
                }
            }
        }
        links
    }

    /// This shard's number.
    pub(crate) fn me(&self) -> usize {
        self.me
    }

    /// Passes `frame` to shard `owner`: a large frame at once, a small one packed with others
    /// until [`Links::flush`] (or a full staging buffer). Returns `false` if it was dropped
    /// (ring full, no such shard, longer than a slot).
    pub(crate) fn hand_off(&mut self, owner: usize, frame: &[u8]) -> bool {
        let Some(Some(out)) = self.outboxes.get_mut(owner) else {
            self.stats.dropped += 1;
            return false;
        };
        let wakers = &self.wakers;
        let stats = &mut self.stats;
        if frame.len() >= PACK_LIMIT {
            // Whatever is staged goes first, so the destination sees the frames in order.
            publish(out, owner, wakers, stats);
            return push(&mut out.ring, TAG_FRAME, frame, 1, owner, wakers, stats);
        }
        if out.staging.len() + PREFIX + frame.len() > TUN_FRAME_CAPACITY {
            publish(out, owner, wakers, stats);
        }
        let Ok(len) = u32::try_from(frame.len()) else {
            stats.dropped += 1;
            return false;
        };
        out.staging.extend_from_slice(&len.to_le_bytes());
        out.staging.extend_from_slice(frame);
        out.staged += 1;
        true
    }

    /// Publishes every staging buffer (call at the end of each turn).
    pub(crate) fn flush(&mut self) {
        let (wakers, stats) = (&self.wakers, &mut self.stats);
        for (owner, out) in self.outboxes.iter_mut().enumerate() {
            if let Some(out) = out {
                publish(out, owner, wakers, stats);
            }
        }
    }

    /// Lends up to `budget` ring entries' worth of frames from other shards to `f`, oldest
    /// first per ring. Returns the frames lent.
    pub(crate) fn drain(&mut self, budget: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut taken = 0usize;
        for inbox in &mut self.inboxes {
            for _ in 0..budget {
                let popped = inbox.pop_with(|tag, entry| {
                    if tag != TAG_PACKED {
                        f(entry);
                        return 1;
                    }
                    unpack(entry, &mut f)
                });
                match popped {
                    Ok(n) => taken += n,
                    Err(_) => break,
                }
            }
        }
        self.stats.taken += taken as u64;
        taken
    }

    /// Announces that this shard is about to block. `false`: frames are waiting, do not block.
    pub(crate) fn prepare_sleep(&mut self) -> bool {
        let mut all_empty = true;
        for inbox in &mut self.inboxes {
            all_empty &= inbox.prepare_sleep();
        }
        if !all_empty {
            self.end_sleep();
        }
        all_empty
    }

    /// Withdraws [`Links::prepare_sleep`] after waking.
    pub(crate) fn end_sleep(&mut self) {
        for inbox in &mut self.inboxes {
            inbox.end_sleep();
        }
    }
}

/// Publishes `out`'s staging buffer, if anything is staged.
fn publish(out: &mut Outbox, owner: usize, wakers: &[Arc<Waker>], stats: &mut LinkStats) {
    if out.staged == 0 {
        return;
    }
    let frames = out.staged;
    push(
        &mut out.ring,
        TAG_PACKED,
        &out.staging,
        frames,
        owner,
        wakers,
        stats,
    );
    out.staging.clear();
    out.staged = 0;
}

/// Pushes one ring entry holding `frames` frames, waking the owner if it sleeps.
fn push(
    ring: &mut Producer,
    tag: u64,
    entry: &[u8],
    frames: u64,
    owner: usize,
    wakers: &[Arc<Waker>],
    stats: &mut LinkStats,
) -> bool {
    match ring.push(tag, entry) {
        Ok(wake) => {
            stats.handed_off += frames;
            if wake.is_needed() {
                if let Some(w) = wakers.get(owner) {
                    let _ = w.wake();
                }
            }
            true
        }
        Err(_) => {
            stats.dropped += frames;
            false
        }
    }
}

/// Lends each length-prefixed frame of a packed entry to `f`; returns how many. A malformed
/// entry (impossible: this module wrote it) ends early.
fn unpack(mut entry: &[u8], f: &mut impl FnMut(&[u8])) -> usize {
    let mut n = 0;
    while let Some((len, rest)) = entry.split_first_chunk::<PREFIX>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some((frame, rest)) = rest.split_at_checked(len) else {
            break;
        };
        f(frame);
        n += 1;
        entry = rest;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(n: usize) -> Vec<Links> {
        let wakers: Vec<Arc<Waker>> = (0..n).map(|_| Arc::new(Waker::new().unwrap())).collect();
        Links::mesh(&wakers)
    }

    fn frame(len: usize, tag: u8) -> Vec<u8> {
        (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
    }

    fn drained(l: &mut Links) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        l.drain(1000, |f| got.push(f.to_vec()));
        got
    }

    #[test]
    fn small_and_large_frames_arrive_in_order() {
        let mut links = mesh(3);
        let sent: Vec<Vec<u8>> = vec![
            frame(60, 1),
            frame(1400, 2),
            frame(PACK_LIMIT, 3), // large: flushes the two before it
            frame(0, 4),
            frame(1, 5),
            frame(TUN_FRAME_CAPACITY, 6),
            frame(200, 7),
        ];
        for f in &sent {
            assert!(links[0].hand_off(2, f));
        }
        // A large frame publishes what was staged before it, so everything up to the last large
        // frame is visible, in order; the small frame after it waits for the flush.
        assert_eq!(drained(&mut links[2]), sent[..6].to_vec());
        links[0].flush();
        assert_eq!(drained(&mut links[2]), sent[6..].to_vec());
        assert!(drained(&mut links[1]).is_empty());
        assert_eq!(links[0].stats.handed_off, 7);
        assert_eq!(links[2].stats.taken, 7);
    }

    #[test]
    fn packing_multiplies_what_the_ring_holds_and_drops_are_counted() {
        let mut links = mesh(2);
        // 16 slots of ~64 KiB: 1400-byte packets, 46 to an entry.
        let per_entry = TUN_FRAME_CAPACITY / (PREFIX + 1400);
        let total = RING_SLOTS * per_entry;
        for i in 0..total {
            assert!(links[0].hand_off(1, &frame(1400, i as u8)));
        }
        links[0].flush();
        assert_eq!(links[0].stats.handed_off, total as u64);
        assert_eq!(links[0].stats.dropped, 0);
        // The ring is full now: the next entry is dropped as a whole, and counted.
        for i in 0..3 {
            links[0].hand_off(1, &frame(1400, i));
        }
        links[0].flush();
        assert_eq!(links[0].stats.dropped, 3);
        let got = drained(&mut links[1]);
        assert_eq!(got.len(), total);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, f)| *f == frame(1400, i as u8)));
    }

    #[test]
    fn a_frame_for_no_shard_is_dropped() {
        let mut links = mesh(2);
        assert!(!links[0].hand_off(0, &[1, 2, 3]));
        assert!(!links[0].hand_off(7, &[1, 2, 3]));
        assert_eq!(links[0].stats.dropped, 2);
    }
}
