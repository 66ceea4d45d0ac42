//! The transmit hand-off of weft's line-rate engine: a bounded single-producer
//! single-consumer ring of packet frames.
//!
//! The kernel picks a TUN queue by flow hash, not by peer, so shard *k* may read a frame for
//! a peer owned by shard *j*. It passes the frame to *j* through the ring for the ordered pair
//! (*k*, *j*) (docs/ARCHITECTURE.md, "Transmit hand-off"). A flow always maps to one TUN
//! queue, hence one reading shard and one ring, and the ring is FIFO, so per-flow packet
//! order is kept without any reordering logic at the owner.
//!
//! # Design
//!
//! [`channel`] builds a ring of a power-of-two number of slots, each a `Mutex` around a
//! buffer preallocated to `frame_capacity` bytes and a caller-chosen `u64` tag (say, the
//! destination peer). [`Producer::push`] copies a frame into the next free slot;
//! [`Consumer::pop_with`] lends the oldest frame to a closure, then frees its slot. Nothing
//! allocates after [`channel`] returns. Two counters, `tail` (written only by the producer)
//! and `head` (written only by the consumer), are published with Release and read with
//! Acquire; a slot between `head` and `tail` belongs to the consumer, every other slot to the
//! producer. The halves are `Send` but not `Clone` and both operations take `&mut self`, so
//! "single producer, single consumer" is enforced by the type system.
//!
//! # Why no `unsafe`
//!
//! The usual SPSC ring hands out `&mut [u8]` into an `UnsafeCell` and relies on the index
//! protocol for exclusivity. Here each slot has its own lock instead, and by the protocol the
//! producer and the consumer never touch the same slot at once, so every lock is uncontended:
//! taking and releasing it is a pair of uncontended atomic operations. A push and a pop
//! together cost tens of nanoseconds more than copying the frame, counters and wake-up fence
//! included (`benches/ring.rs`, one thread: 34 ns against 6 ns for a 64-byte frame, 1.46 µs
//! against 1.40 µs for a 64 KiB super-packet); next to the sealing and sending of the frame
//! that follows, that is small enough that the ring needs no `unsafe`.
//!
//! The locks are taken with `try_lock`, which turns the protocol into a checked assertion: a
//! slot found locked is a bug in the ring, reported as [`PushError::SlotBusy`] or
//! [`PopError::SlotBusy`], never waited for. The ring is model-checked with loom
//! (scripts/loom.sh): no frame is lost or duplicated, order is FIFO, `try_lock` never fails,
//! and no wake-up is lost.
//!
//! # Sleeping consumers
//!
//! A consumer shard that found all its rings empty blocks (on an eventfd, say). To avoid
//! both lost wake-ups and an eventfd write per frame, it first calls
//! [`Consumer::prepare_sleep`], which raises a "sleeping" flag and then re-checks the ring;
//! it blocks only if that returns `true`. [`Producer::push`] returns [`Wake::Needed`] for the
//! first frame pushed after the flag was raised, and the caller then signals the consumer
//! (later pushes in the same sleep return [`Wake::NotNeeded`], so a batch costs one signal).
//! A `SeqCst` fence on each side, between publishing its own variable and reading the
//! other's, guarantees that at least one of the two sees the other: either the consumer sees
//! the frame and stays awake, or the producer sees the flag and wakes it. Only the consumer
//! writes the flag (a counter of sleeps, odd while one is announced), so the argument needs
//! no read-modify-write.
//!
//! Like every weft core, this crate does no I/O and reads no clock.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod sync;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

use std::fmt;

use sync::{fence, Arc, AtomicUsize, Mutex, Ordering, TryLockError};

/// The slot capacity a TUN frame needs: the 10-byte `virtio_net_hdr` in front of an IP
/// packet of at most 65535 bytes (a TSO super-packet).
pub const TUN_FRAME_CAPACITY: usize = 65_535 + 10;

/// [`channel`] was given an invalid slot count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The number of slots is zero or not a power of two.
    #[error("ring slot count {0} is not a nonzero power of two")]
    SlotCount(usize),
}

/// Why [`Producer::push`] did not queue a frame. The frame was not copied; the ring is
/// unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// Every slot holds a frame the consumer has not taken yet. The caller counts the frame
    /// as dropped (the ring is the queue; there is no waiting).
    #[error("hand-off ring full")]
    Full,
    /// The frame is longer than the slots' capacity.
    #[error("frame of {len} bytes exceeds the ring's slot capacity of {capacity}")]
    Oversize {
        /// Length of the refused frame.
        len: usize,
        /// The ring's slot capacity.
        capacity: usize,
    },
    /// The next free slot was locked: the consumer is still using it. The index protocol
    /// rules this out, so it is a bug in this crate; it is reported rather than waited for.
    #[error("hand-off ring slot {index} locked by the consumer (ring protocol bug)")]
    SlotBusy {
        /// Index of the slot in the ring.
        index: usize,
    },
}

/// Why [`Consumer::pop_with`] did not lend a frame. The closure was not called; the ring is
/// unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PopError {
    /// No frame is queued.
    #[error("hand-off ring empty")]
    Empty,
    /// The oldest frame's slot was locked: the producer is still using it. The index
    /// protocol rules this out, so it is a bug in this crate; it is reported rather than
    /// waited for.
    #[error("hand-off ring slot {index} locked by the producer (ring protocol bug)")]
    SlotBusy {
        /// Index of the slot in the ring.
        index: usize,
    },
}

/// Whether the consumer must be signalled after a successful [`Producer::push`].
#[must_use = "a consumer that announced it is going to sleep must be woken, or the frame waits"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The consumer is awake (or has already been told to wake up); nothing to do.
    NotNeeded,
    /// The consumer announced it may be asleep ([`Consumer::prepare_sleep`]) and no push
    /// since has reported it: the caller must signal it (write its eventfd).
    Needed,
}

impl Wake {
    /// `true` for [`Wake::Needed`].
    pub fn is_needed(self) -> bool {
        self == Wake::Needed
    }
}

/// One ring slot: a frame buffer allocated once, to the ring's capacity, and the frame's tag.
struct Slot {
    /// The frame; `frame.capacity() >= frame_capacity`, so refilling never reallocates.
    frame: Vec<u8>,
    tag: u64,
}

/// Keeps `head` and `tail` on different cache lines (128 bytes: adjacent-line prefetch), so
/// the producer's and the consumer's stores do not invalidate each other's line.
#[repr(align(128))]
struct Padded<T>(T);

/// The state both halves share.
struct Shared {
    slots: Box<[Mutex<Slot>]>,
    /// `slots.len() - 1`; a counter maps to slot `counter & mask`.
    mask: usize,
    frame_capacity: usize,
    /// Count of frames ever popped (wrapping). Written only by the consumer.
    head: Padded<AtomicUsize>,
    /// Count of frames ever pushed (wrapping). Written only by the producer.
    tail: Padded<AtomicUsize>,
    /// Odd while the consumer may be blocked waiting for a wake-up (see
    /// [`Consumer::prepare_sleep`]), even while it is awake; each announced sleep has its own
    /// odd value. Written only by the consumer.
    sleep: Padded<AtomicUsize>,
}

impl Shared {
    fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

/// Builds a ring of `slots` slots (a nonzero power of two), each able to hold a frame of up
/// to `frame_capacity` bytes (use [`TUN_FRAME_CAPACITY`] for TUN frames), and returns its
/// two halves. Allocates `slots × frame_capacity` bytes now and nothing afterwards.
pub fn channel(slots: usize, frame_capacity: usize) -> Result<(Producer, Consumer), ChannelError> {
    channel_at(slots, frame_capacity, 0)
}

/// [`channel`] with both counters starting at `start` instead of 0, so tests can cross the
/// counters' wrap-around at `usize::MAX` quickly.
fn channel_at(
    slots: usize,
    frame_capacity: usize,
    start: usize,
) -> Result<(Producer, Consumer), ChannelError> {
    if !slots.is_power_of_two() {
        return Err(ChannelError::SlotCount(slots));
    }
    let slots: Box<[Mutex<Slot>]> = (0..slots)
        .map(|_| {
            Mutex::new(Slot {
                frame: Vec::with_capacity(frame_capacity),
                tag: 0,
            })
        })
        .collect();
    let shared = Arc::new(Shared {
        mask: slots.len().wrapping_sub(1),
        slots,
        frame_capacity,
        head: Padded(AtomicUsize::new(start)),
        tail: Padded(AtomicUsize::new(start)),
        sleep: Padded(AtomicUsize::new(0)),
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: start,
        head_seen: start,
        woken: 0,
    };
    let consumer = Consumer {
        shared,
        head: start,
        tail_seen: start,
        sleep: 0,
    };
    Ok((producer, consumer))
}

/// The sending half of a ring: the shard that read frames from its TUN queue.
///
/// `Send` but not `Clone`: there is exactly one producer per ring.
///
/// ```compile_fail
/// let (producer, _consumer) = weft_handoff::channel(2, 64).unwrap();
/// let second = producer.clone(); // a ring has exactly one producer
/// ```
pub struct Producer {
    shared: Arc<Shared>,
    /// Our own copy of `shared.tail` (only we write it).
    tail: usize,
    /// The last `shared.head` we loaded; re-read only when the ring looks full.
    head_seen: usize,
    /// The last value of `shared.sleep` (odd) we reported [`Wake::Needed`] for.
    woken: usize,
}

impl Producer {
    /// Copies `frame` into the ring under `tag`, behind every frame pushed before.
    ///
    /// Returns whether the consumer must now be signalled ([`Wake`]). Fails without copying
    /// if the ring is full ([`PushError::Full`]; the caller counts a drop) or the frame does
    /// not fit a slot ([`PushError::Oversize`]). Never blocks and never allocates.
    pub fn push(&mut self, tag: u64, frame: &[u8]) -> Result<Wake, PushError> {
        let shared = &*self.shared;
        if frame.len() > shared.frame_capacity {
            return Err(PushError::Oversize {
                len: frame.len(),
                capacity: shared.frame_capacity,
            });
        }
        if self.tail.wrapping_sub(self.head_seen) >= shared.slot_count() {
            // Acquire: the consumer's use of the slot it freed happens before our reuse.
            self.head_seen = shared.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_seen) >= shared.slot_count() {
                return Err(PushError::Full);
            }
        }
        let index = self.tail & shared.mask;
        let mut slot = match shared.slots.get(index).map(Mutex::try_lock) {
            Some(Ok(slot)) => slot,
            // A panic elsewhere while the lock was held; the slot is plain bytes, and we
            // overwrite all of it.
            Some(Err(TryLockError::Poisoned(poisoned))) => poisoned.into_inner(),
            Some(Err(TryLockError::WouldBlock)) | None => {
                return Err(PushError::SlotBusy { index });
            }
        };
        slot.frame.clear();
        // Within capacity (checked above), so this copies without reallocating.
        slot.frame.extend_from_slice(frame);
        slot.tag = tag;
        drop(slot);
        self.tail = self.tail.wrapping_add(1);
        // Release: the frame's bytes happen before the consumer's Acquire load of `tail`.
        shared.tail.0.store(self.tail, Ordering::Release);
        // Store `tail`, fence, load `sleep`; the consumer does the mirror image (store
        // `sleep`, fence, load `tail`). The fences are totally ordered, so at least one side
        // sees the other's store: no lost wake-up.
        fence(Ordering::SeqCst);
        let sleep = shared.sleep.0.load(Ordering::Relaxed);
        if sleep & 1 == 1 && sleep != self.woken {
            self.woken = sleep;
            Ok(Wake::Needed)
        } else {
            Ok(Wake::NotNeeded)
        }
    }

    /// Number of frames queued and not yet popped (the consumer may be popping right now).
    pub fn len(&self) -> usize {
        let head = self.shared.head.0.load(Ordering::Acquire);
        self.tail.wrapping_sub(head).min(self.shared.slot_count())
    }

    /// `true` if no frame is queued (the consumer may have taken them all).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots: the most frames the ring holds at once.
    pub fn capacity(&self) -> usize {
        self.shared.slot_count()
    }

    /// The longest frame a slot holds, in bytes.
    pub fn frame_capacity(&self) -> usize {
        self.shared.frame_capacity
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("frame_capacity", &self.frame_capacity())
            .finish()
    }
}

/// The receiving half of a ring: the shard that owns the frames' destination peers.
///
/// `Send` but not `Clone`: there is exactly one consumer per ring.
///
/// ```compile_fail
/// let (_producer, consumer) = weft_handoff::channel(2, 64).unwrap();
/// let second = consumer.clone(); // a ring has exactly one consumer
/// ```
pub struct Consumer {
    shared: Arc<Shared>,
    /// Our own copy of `shared.head` (only we write it).
    head: usize,
    /// The last `shared.tail` we loaded; re-read only when the ring looks empty.
    tail_seen: usize,
    /// Our own copy of `shared.sleep` (only we write it).
    sleep: usize,
}

impl Consumer {
    /// Lends the oldest frame and its tag to `f`, then frees its slot, and returns what `f`
    /// returned.
    ///
    /// Fails without calling `f` if the ring is empty ([`PopError::Empty`]). Never blocks and
    /// never allocates. If `f` panics, the frame stays in the ring.
    pub fn pop_with<R>(&mut self, f: impl FnOnce(u64, &[u8]) -> R) -> Result<R, PopError> {
        let shared = &*self.shared;
        if self.head == self.tail_seen {
            // Acquire: the producer's copy into the slot happens before our read of it.
            self.tail_seen = shared.tail.0.load(Ordering::Acquire);
            if self.head == self.tail_seen {
                return Err(PopError::Empty);
            }
        }
        let index = self.head & shared.mask;
        let slot = match shared.slots.get(index).map(Mutex::try_lock) {
            Some(Ok(slot)) => slot,
            // Only `f` can panic while a slot is locked, and it has then left the frame
            // unread; lend it again.
            Some(Err(TryLockError::Poisoned(poisoned))) => poisoned.into_inner(),
            Some(Err(TryLockError::WouldBlock)) | None => {
                return Err(PopError::SlotBusy { index });
            }
        };
        let result = f(slot.tag, &slot.frame);
        drop(slot);
        self.head = self.head.wrapping_add(1);
        // Release: our reads of the slot happen before the producer reuses it.
        shared.head.0.store(self.head, Ordering::Release);
        Ok(result)
    }

    /// Announces that the consumer is about to block until signalled, then re-checks the
    /// ring.
    ///
    /// Returns `true` if the ring is still empty: the caller may block; the next
    /// [`Producer::push`] returns [`Wake::Needed`] so that its caller signals this consumer.
    /// Returns `false` if frames arrived meanwhile: the announcement is withdrawn and the
    /// caller must pop them instead of blocking. After waking (for whatever reason), call
    /// [`Consumer::end_sleep`].
    pub fn prepare_sleep(&mut self) -> bool {
        self.announce_sleep();
        // Mirror image of the fence in `Producer::push`.
        fence(Ordering::SeqCst);
        self.tail_seen = self.shared.tail.0.load(Ordering::Acquire);
        if self.tail_seen == self.head {
            true
        } else {
            self.end_sleep();
            false
        }
    }

    /// Raises the sleeping flag with a value no earlier sleep used (the first half of
    /// [`Consumer::prepare_sleep`]).
    fn announce_sleep(&mut self) {
        // Awake values are even, sleeping values odd.
        self.sleep = (self.sleep | 1).wrapping_add(2);
        self.shared.sleep.0.store(self.sleep, Ordering::Relaxed);
    }

    /// Withdraws the announcement of [`Consumer::prepare_sleep`], so producers stop reporting
    /// [`Wake::Needed`]. Call it after waking up, for whatever reason.
    pub fn end_sleep(&mut self) {
        if self.sleep & 1 == 1 {
            self.sleep = self.sleep.wrapping_add(1);
            self.shared.sleep.0.store(self.sleep, Ordering::Relaxed);
        }
    }

    /// Number of frames queued (the producer may be pushing more right now).
    pub fn len(&self) -> usize {
        let tail = self.shared.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(self.head).min(self.shared.slot_count())
    }

    /// `true` if no frame is queued (the producer may be pushing one right now).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots: the most frames the ring holds at once.
    pub fn capacity(&self) -> usize {
        self.shared.slot_count()
    }

    /// The longest frame a slot holds, in bytes.
    pub fn frame_capacity(&self) -> usize {
        self.shared.frame_capacity
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("frame_capacity", &self.frame_capacity())
            .finish()
    }
}
