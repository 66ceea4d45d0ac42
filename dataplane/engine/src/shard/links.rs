//! The hand-off between shards: bounded single-producer single-consumer rings
//! (`weft-handoff`), one for each ordered pair of shards.
//!
//! The kernel picks a TUN queue by flow hash, not by peer, so a shard may read a frame for a
//! peer that another shard owns. It passes the frame to the owner through the ring for that
//! pair and the owner splits, seals and sends it; a flow always maps to one queue and one ring,
//! so its order is kept. In steady state this path is rare: the TUN driver remembers which
//! queue last *wrote* a flow's packets (the owner writes the flow's incoming half) and sends
//! the flow's outgoing packets to that queue, so after the first round trip a flow is read by
//! its owner. A full ring drops the frame (counted), as a full TUN queue would.

use std::sync::Arc;

use weft_handoff::{channel, Consumer, Producer, TUN_FRAME_CAPACITY};
use weft_sys::Waker;

/// Frames each ring holds. Slot memory is only touched when used, and the path is rare.
const RING_SLOTS: usize = 16;

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
    outboxes: Vec<Option<Producer>>,
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
                    *slot = Some(p);
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

    /// Passes `frame` to shard `owner`, waking it if it sleeps. Returns `false` if the frame
    /// was dropped (ring full, or no such shard).
    pub(crate) fn hand_off(&mut self, owner: usize, frame: &[u8]) -> bool {
        let Some(Some(out)) = self.outboxes.get_mut(owner) else {
            self.stats.dropped += 1;
            return false;
        };
        match out.push(0, frame) {
            Ok(wake) => {
                self.stats.handed_off += 1;
                if wake.is_needed() {
                    if let Some(w) = self.wakers.get(owner) {
                        let _ = w.wake();
                    }
                }
                true
            }
            Err(_) => {
                self.stats.dropped += 1;
                false
            }
        }
    }

    /// Lends up to `budget` frames from other shards to `f`, oldest first per ring.
    pub(crate) fn drain(&mut self, budget: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut taken = 0;
        for inbox in &mut self.inboxes {
            while taken < budget {
                if inbox.pop_with(|_, frame| f(frame)).is_err() {
                    break;
                }
                taken += 1;
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
