//! Loom models of the ring (scripts/loom.sh): the interleavings, and the values the memory
//! model lets each load return, of a producer and a consumer thread on a tiny ring; all of
//! them for the smaller models, those with a bounded number of preemptions for the larger
//! ones (see [`model`]).
//!
//! Each model checks that no frame is lost or duplicated, that frames (bytes, length and tag)
//! arrive in order, and that `try_lock` never finds a slot locked (a `SlotBusy` error fails
//! the model). The wake-up models block the consumer on a modelled eventfd, so a lost wake-up
//! is a deadlock, which loom reports; two broken consumers show that it does.

use loom::model::Builder;
use loom::sync::{Condvar, Mutex};
use loom::thread;

use super::*;

/// Frame `seq`: `seq + 1` bytes of value `seq`, tagged `100 + seq`.
fn frame(seq: u64) -> Vec<u8> {
    vec![seq as u8; seq as usize + 1]
}

/// Pushes frames `0..frames`, retrying while the ring is full; calls `wake` on each
/// `Wake::Needed`.
fn produce(p: &mut Producer, frames: u64, mut wake: impl FnMut()) {
    for seq in 0..frames {
        loop {
            match p.push(100 + seq, &frame(seq)) {
                Ok(Wake::Needed) => {
                    wake();
                    break;
                }
                Ok(Wake::NotNeeded) => break,
                Err(PushError::Full) => thread::yield_now(),
                Err(e) => panic!("push {seq}: {e}"),
            }
        }
    }
}

/// Pops every queued frame, checking each is the next one expected; returns how many.
fn drain(c: &mut Consumer, next: &mut u64) -> u64 {
    let mut popped = 0;
    loop {
        let want = *next;
        match c.pop_with(|tag, bytes| {
            assert_eq!(tag, 100 + want, "frame out of order");
            assert_eq!(bytes, frame(want), "frame corrupt");
        }) {
            Ok(()) => {
                *next += 1;
                popped += 1;
            }
            Err(PopError::Empty) => return popped,
            Err(e) => panic!("pop {want}: {e}"),
        }
    }
}

/// Explores `f` under loom: every execution (`preemptions` `None`), or those with at most
/// `preemptions` preemptions, a bound that keeps the larger models to seconds (an
/// exhaustive run of them takes minutes). `LOOM_MAX_PREEMPTIONS` in the environment
/// overrides the bound.
fn model(preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = preemptions;
    }
    builder.check(f);
}

/// A spinning consumer (no sleeping) receives `frames` frames through `slots` slots.
fn spin_model(slots: usize, frames: u64, preemptions: Option<usize>) {
    model(preemptions, move || {
        let (mut p, mut c) = channel(slots, 8).unwrap();
        let producer = thread::spawn(move || produce(&mut p, frames, || {}));
        let mut next = 0;
        while next < frames {
            if drain(&mut c, &mut next) == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(drain(&mut c, &mut next), 0, "duplicate or extra frame");
        assert!(c.is_empty());
    });
}

#[test]
fn spsc_one_slot_three_frames() {
    spin_model(1, 3, None);
}

#[test]
fn spsc_two_slots_three_frames() {
    spin_model(2, 3, None);
}

#[test]
fn spsc_two_slots_four_frames_wraps_twice() {
    spin_model(2, 4, Some(4));
}

/// The consumer's eventfd, modelled: a counter the producer bumps and the consumer waits on
/// (a write before the read makes the read return at once).
#[derive(Default)]
struct EventFd {
    count: Mutex<u64>,
    ready: Condvar,
}

impl EventFd {
    fn write(&self) {
        *self.count.lock().unwrap() += 1;
        self.ready.notify_one();
    }

    /// Blocks until the counter is nonzero, then resets it.
    fn read(&self) {
        let mut count = self.count.lock().unwrap();
        while *count == 0 {
            count = self.ready.wait(count).unwrap();
        }
        *count = 0;
    }
}

/// How the consumer decides to block.
#[derive(Clone, Copy)]
enum Sleep {
    /// `Consumer::prepare_sleep`: announce, fence, re-check.
    Correct,
    /// Broken: checks emptiness first and announces afterwards, with no re-check.
    CheckThenAnnounce,
    /// Broken: announces, then re-checks, but without the SeqCst fence, which lets both
    /// sides miss each other's store.
    NoFence,
}

/// A consumer that blocks on the eventfd whenever the ring is empty receives `frames`
/// frames through `slots` slots.
fn sleep_model(slots: usize, frames: u64, sleep: Sleep, preemptions: Option<usize>) {
    model(preemptions, move || {
        let (mut p, mut c) = channel(slots, 8).unwrap();
        let eventfd = Arc::new(EventFd::default());
        let producer = {
            let eventfd = Arc::clone(&eventfd);
            thread::spawn(move || produce(&mut p, frames, || eventfd.write()))
        };
        let mut next = 0;
        while next < frames {
            if drain(&mut c, &mut next) > 0 {
                continue;
            }
            let block = match sleep {
                Sleep::Correct => c.prepare_sleep(),
                Sleep::CheckThenAnnounce => {
                    c.announce_sleep();
                    true
                }
                Sleep::NoFence => {
                    c.announce_sleep();
                    let empty = c.shared.tail.0.load(Ordering::Acquire) == c.head;
                    if !empty {
                        c.end_sleep();
                    }
                    empty
                }
            };
            if block {
                // A lost wake-up blocks here forever: loom reports a deadlock.
                eventfd.read();
                c.end_sleep();
            }
        }
        producer.join().unwrap();
        assert_eq!(drain(&mut c, &mut next), 0, "duplicate or extra frame");
    });
}

#[test]
fn no_lost_wakeup_one_slot_two_frames() {
    sleep_model(1, 2, Sleep::Correct, Some(5));
}

#[test]
fn no_lost_wakeup_two_slots_two_frames() {
    sleep_model(2, 2, Sleep::Correct, None);
}

#[test]
fn no_lost_wakeup_two_slots_three_frames() {
    sleep_model(2, 3, Sleep::Correct, Some(4));
}

#[test]
#[should_panic(expected = "deadlock")]
fn loom_catches_check_then_announce() {
    sleep_model(2, 2, Sleep::CheckThenAnnounce, None);
}

#[test]
#[should_panic(expected = "deadlock")]
fn loom_catches_a_missing_fence() {
    sleep_model(2, 2, Sleep::NoFence, None);
}
