//! Unit, property and stress tests on std's primitives (the loom models are in
//! `loom_tests.rs`).

use std::collections::VecDeque;
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use std::sync::atomic::AtomicBool;

use super::*;

/// Pops one frame as (tag, bytes).
fn pop(c: &mut Consumer) -> Result<(u64, Vec<u8>), PopError> {
    c.pop_with(|tag, frame| (tag, frame.to_vec()))
}

#[test]
fn halves_are_send() {
    fn send<T: Send + 'static>() {}
    send::<Producer>();
    send::<Consumer>();
}

#[test]
fn slot_count_must_be_a_power_of_two() {
    for bad in [0, 3, 5, 6, 7, 12, 1000] {
        assert_eq!(
            channel(bad, 16).map(|_| ()),
            Err(ChannelError::SlotCount(bad))
        );
    }
    for good in [1, 2, 4, 8, 1024] {
        let (p, c) = channel(good, 16).unwrap();
        assert_eq!((p.capacity(), c.capacity()), (good, good));
        assert_eq!((p.frame_capacity(), c.frame_capacity()), (16, 16));
    }
}

#[test]
fn fifo_order_with_tags() {
    let (mut p, mut c) = channel(8, 64).unwrap();
    assert!(p.is_empty() && c.is_empty());
    for i in 0..5u8 {
        assert_eq!(p.push(u64::from(i) * 10, &[i; 3]), Ok(Wake::NotNeeded));
    }
    assert_eq!((p.len(), c.len()), (5, 5));
    for i in 0..5u8 {
        assert_eq!(pop(&mut c), Ok((u64::from(i) * 10, vec![i; 3])));
    }
    assert!(p.is_empty() && c.is_empty());
}

#[test]
fn pop_returns_the_closures_value() {
    let (mut p, mut c) = channel(2, 8).unwrap();
    let _ = p.push(7, b"abc").unwrap();
    assert_eq!(c.pop_with(|tag, frame| tag + frame.len() as u64), Ok(10));
}

#[test]
fn empty_pops_do_not_call_the_closure() {
    let (mut p, mut c) = channel(4, 8).unwrap();
    for _ in 0..3 {
        assert_eq!(
            c.pop_with(|_, _| panic!("called on an empty ring")),
            Err(PopError::Empty)
        );
    }
    let _ = p.push(1, b"x").unwrap();
    assert_eq!(pop(&mut c), Ok((1, b"x".to_vec())));
    assert_eq!(pop(&mut c), Err(PopError::Empty));
}

#[test]
fn full_ring_refuses_until_a_pop() {
    let (mut p, mut c) = channel(4, 8).unwrap();
    for i in 0..4 {
        let _ = p.push(i, &[i as u8]).unwrap();
    }
    assert_eq!(p.push(9, b"drop"), Err(PushError::Full));
    assert_eq!(p.push(9, b"drop"), Err(PushError::Full));
    assert_eq!((p.len(), c.len()), (4, 4));
    assert_eq!(pop(&mut c), Ok((0, vec![0])));
    let _ = p.push(4, &[4]).unwrap();
    assert_eq!(p.push(9, b"drop"), Err(PushError::Full));
    for i in 1..5 {
        assert_eq!(pop(&mut c), Ok((i, vec![i as u8])));
    }
    assert_eq!(pop(&mut c), Err(PopError::Empty));
}

#[test]
fn one_slot_ring() {
    let (mut p, mut c) = channel(1, 4).unwrap();
    for i in 0..10u64 {
        let _ = p.push(i, &i.to_le_bytes()[..4]).unwrap();
        assert_eq!(p.push(i, b""), Err(PushError::Full));
        assert_eq!(pop(&mut c), Ok((i, i.to_le_bytes()[..4].to_vec())));
    }
}

#[test]
fn oversize_frames_are_refused_and_exact_fit_accepted() {
    let (mut p, mut c) = channel(2, 10).unwrap();
    assert_eq!(
        p.push(1, &[0; 11]),
        Err(PushError::Oversize {
            len: 11,
            capacity: 10
        })
    );
    assert!(p.is_empty());
    let _ = p.push(2, &[7; 10]).unwrap();
    let _ = p.push(3, b"").unwrap();
    assert_eq!(pop(&mut c), Ok((2, vec![7; 10])));
    assert_eq!(pop(&mut c), Ok((3, vec![])));
}

#[test]
fn tun_frame_capacity_holds_a_super_packet() {
    let (mut p, mut c) = channel(2, TUN_FRAME_CAPACITY).unwrap();
    let frame: Vec<u8> = (0..TUN_FRAME_CAPACITY).map(|i| i as u8).collect();
    let _ = p.push(42, &frame).unwrap();
    assert!(matches!(
        p.push(42, &[0; TUN_FRAME_CAPACITY + 1]),
        Err(PushError::Oversize { .. })
    ));
    assert_eq!(c.pop_with(|tag, f| tag == 42 && f == frame), Ok(true));
}

#[test]
fn shorter_frame_after_longer_one_has_its_own_length() {
    let (mut p, mut c) = channel(1, 16).unwrap();
    let _ = p.push(0, &[1; 16]).unwrap();
    assert_eq!(pop(&mut c), Ok((0, vec![1; 16])));
    let _ = p.push(0, &[2; 3]).unwrap();
    assert_eq!(pop(&mut c), Ok((0, vec![2; 3])));
}

#[test]
fn wraps_around_many_times() {
    let (mut p, mut c) = channel(4, 32).unwrap();
    let mut next_pop = 0u64;
    for round in 0..1000u64 {
        // Vary the fill level so every slot is pushed and popped at every offset.
        let batch = round % 4 + 1;
        let first = next_pop;
        for seq in first..first + batch {
            let _ = p.push(seq, &seq.to_le_bytes()).unwrap();
        }
        for _ in 0..batch {
            assert_eq!(pop(&mut c), Ok((next_pop, next_pop.to_le_bytes().to_vec())));
            next_pop += 1;
        }
        assert!(c.is_empty());
    }
}

#[test]
fn counters_wrap_around_usize_max() {
    let (mut p, mut c) = channel_at(4, 8, usize::MAX - 5).unwrap();
    for seq in 0..40u64 {
        let _ = p.push(seq, &seq.to_le_bytes()).unwrap();
        if seq % 3 == 2 {
            // Keep the ring partly full across the wrap.
            assert!(p.len() <= 4);
            while let Ok((tag, frame)) = pop(&mut c) {
                assert_eq!(frame, tag.to_le_bytes());
            }
        }
    }
    let (mut p, mut c) = channel_at(4, 8, usize::MAX - 1).unwrap();
    for seq in 0..4u64 {
        let _ = p.push(seq, &[seq as u8]).unwrap();
    }
    assert_eq!(p.push(4, b""), Err(PushError::Full));
    assert_eq!((p.len(), c.len()), (4, 4));
    for seq in 0..4u64 {
        assert_eq!(pop(&mut c), Ok((seq, vec![seq as u8])));
    }
    assert!(c.is_empty() && p.is_empty());
}

#[test]
fn a_slot_found_locked_is_reported_not_waited_for() {
    // The protocol never lets this happen; simulate the bug by holding a slot's lock.
    let (mut p, mut c) = channel(2, 8).unwrap();
    let shared = Arc::clone(&p.shared);
    {
        let _held = shared.slots[0].lock().unwrap();
        assert_eq!(p.push(1, b"a"), Err(PushError::SlotBusy { index: 0 }));
    }
    assert!(p.is_empty());
    let _ = p.push(1, b"a").unwrap();
    {
        let _held = shared.slots[0].lock().unwrap();
        assert_eq!(pop(&mut c), Err(PopError::SlotBusy { index: 0 }));
    }
    assert_eq!(pop(&mut c), Ok((1, b"a".to_vec())));
}

#[test]
fn a_panicking_consumer_closure_leaves_the_frame_queued() {
    let (mut p, mut c) = channel(2, 8).unwrap();
    let _ = p.push(5, b"keep").unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = c.pop_with(|_, _| -> () { panic!("consumer bug") });
    }));
    assert!(caught.is_err());
    assert_eq!(c.len(), 1);
    // The slot's lock is poisoned; the frame is lent again and the ring keeps working.
    assert_eq!(pop(&mut c), Ok((5, b"keep".to_vec())));
    for seq in 0..6u64 {
        let _ = p.push(seq, &[seq as u8]).unwrap();
        assert_eq!(pop(&mut c), Ok((seq, vec![seq as u8])));
    }
}

#[test]
fn wake_is_needed_once_per_sleep() {
    let (mut p, mut c) = channel(4, 8).unwrap();
    assert_eq!(p.push(0, b"a"), Ok(Wake::NotNeeded));
    // Not empty: the consumer must not sleep, and the announcement is withdrawn.
    assert!(!c.prepare_sleep());
    assert_eq!(p.push(1, b"b"), Ok(Wake::NotNeeded));
    while pop(&mut c).is_ok() {}
    assert!(c.prepare_sleep());
    assert_eq!(p.push(2, b"c"), Ok(Wake::Needed));
    // The first push reported it; the rest of the batch need not.
    assert_eq!(p.push(3, b"d"), Ok(Wake::NotNeeded));
    c.end_sleep();
    while pop(&mut c).is_ok() {}
    // Woken by something else: end_sleep withdraws the announcement.
    assert!(c.prepare_sleep());
    c.end_sleep();
    assert_eq!(p.push(4, b"e"), Ok(Wake::NotNeeded));
    assert!(Wake::Needed.is_needed() && !Wake::NotNeeded.is_needed());
}

#[test]
fn debug_shows_occupancy() {
    let (mut p, c) = channel(4, 8).unwrap();
    let _ = p.push(0, b"a").unwrap();
    assert_eq!(
        format!("{p:?}"),
        "Producer { len: 1, capacity: 4, frame_capacity: 8 }"
    );
    assert_eq!(
        format!("{c:?}"),
        "Consumer { len: 1, capacity: 4, frame_capacity: 8 }"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Push { tag: u64, len: usize, fill: u8 },
    Pop,
    Sleep,
}

fn op(frame_capacity: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u64>(), 0..=frame_capacity + 2, any::<u8>())
            .prop_map(|(tag, len, fill)| Op::Push { tag, len, fill }),
        3 => Just(Op::Pop),
        1 => Just(Op::Sleep),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, usize, usize, Vec<Op>)> {
    (
        0u32..4,
        0usize..8,
        prop_oneof![Just(0), Just(usize::MAX - 20)],
    )
        .prop_flat_map(|(log_slots, frame_capacity, start)| {
            (
                Just(1 << log_slots),
                Just(frame_capacity),
                Just(start),
                prop::collection::vec(op(frame_capacity), 0..200),
            )
        })
}

proptest! {
    /// Single-threaded, the ring behaves exactly like a bounded VecDeque, and a wake-up is
    /// reported exactly for the first push after a successful `prepare_sleep`.
    #[test]
    fn matches_a_bounded_vecdeque((slots, frame_capacity, start, ops) in scenario()) {
        let (mut p, mut c) = channel_at(slots, frame_capacity, start).unwrap();
        let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut asleep = false;
        for op in ops {
            match op {
                Op::Push { tag, len, fill } => {
                    let frame: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                    let got = p.push(tag, &frame);
                    if len > frame_capacity {
                        prop_assert_eq!(got, Err(PushError::Oversize { len, capacity: frame_capacity }));
                    } else if model.len() == slots {
                        prop_assert_eq!(got, Err(PushError::Full));
                    } else {
                        let wake = if std::mem::take(&mut asleep) { Wake::Needed } else { Wake::NotNeeded };
                        prop_assert_eq!(got, Ok(wake));
                        model.push_back((tag, frame));
                    }
                }
                Op::Pop => {
                    let want = model.pop_front().ok_or(PopError::Empty);
                    prop_assert_eq!(pop(&mut c), want);
                }
                Op::Sleep => {
                    let may_sleep = c.prepare_sleep();
                    prop_assert_eq!(may_sleep, model.is_empty());
                    asleep = may_sleep;
                }
            }
            prop_assert_eq!(p.len(), model.len());
            prop_assert_eq!(c.len(), model.len());
            prop_assert_eq!(p.is_empty(), model.is_empty());
            prop_assert_eq!(c.is_empty(), model.is_empty());
        }
    }
}

/// Length of frame `seq` of the stress test: varies with `seq`, between 9 and `max_len`.
fn stress_len(seq: u64, max_len: usize) -> usize {
    9 + (seq as usize).wrapping_mul(7919) % (max_len - 8)
}

/// Fills `buf` (of the ring's frame capacity) for the stress test: a fixed pattern that
/// frames carry between their 8-byte sequence header and 1-byte sequence trailer.
fn stress_pattern(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(i);
    }
}

/// Byte `i` of the stress test's pattern.
fn pattern_byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(31)
}

/// Frame `seq` of the stress test, built in `buf` (filled by [`stress_pattern`]): its length
/// and its first 8 and last byte encode `seq`. Undo the trailer with [`restore_pattern`].
fn stress_frame(seq: u64, buf: &mut [u8]) -> &[u8] {
    let len = stress_len(seq, buf.len());
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[len - 1] = seq as u8;
    &buf[..len]
}

/// Puts the pattern back where [`stress_frame`] wrote frame `seq`'s trailer.
fn restore_pattern(seq: u64, buf: &mut [u8]) {
    let last = stress_len(seq, buf.len()) - 1;
    buf[last] = pattern_byte(last);
}

/// Checks that `frame` is frame `next` of the stress test; `pattern` is as
/// [`stress_pattern`] fills it.
fn check_stress_frame(next: u64, frame: &[u8], pattern: &[u8], check_body: bool) {
    assert_eq!(
        frame.len(),
        stress_len(next, pattern.len()),
        "frame {next}: length"
    );
    assert_eq!(frame[..8], next.to_le_bytes(), "frame {next}: out of order");
    assert_eq!(frame[frame.len() - 1], next as u8, "frame {next}: trailer");
    if check_body {
        assert_eq!(
            frame[8..frame.len() - 1],
            pattern[8..frame.len() - 1],
            "frame {next}: body"
        );
    }
}

/// Runs `frames` frames of up to `max_len` bytes through a ring of `slots` between two
/// threads, checks every one arrives once, in order, intact (the body only if `check_body`),
/// and returns the frames per second. Each thread gives up (failing the test) after 20 s, and
/// the producer as soon as the consumer has failed.
#[allow(clippy::disallowed_methods)] // the test bounds its own run time
fn stress(slots: usize, max_len: usize, frames: u64, check_body: bool) -> f64 {
    /// Raises its flag when dropped: when the consumer thread ends, normally or not.
    struct Gone(Arc<AtomicBool>);
    impl Drop for Gone {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    let limit = Duration::from_secs(20);
    let (mut p, mut c) = channel(slots, max_len).unwrap();
    let consumer_gone = Arc::new(AtomicBool::new(false));
    let gone = Gone(Arc::clone(&consumer_gone));
    let start = Instant::now();
    let producer = thread::spawn(move || {
        let mut buf = vec![0u8; max_len];
        stress_pattern(&mut buf);
        let mut full = 0u64;
        for seq in 0..frames {
            let frame = stress_frame(seq, &mut buf);
            loop {
                match p.push(seq, frame) {
                    Ok(_) => break,
                    Err(PushError::Full) => {
                        full += 1;
                        assert!(start.elapsed() < limit, "producer stuck at {seq}");
                        assert!(!consumer_gone.load(Ordering::Acquire), "consumer failed");
                        thread::yield_now();
                    }
                    Err(e) => panic!("push {seq}: {e}"),
                }
            }
            restore_pattern(seq, &mut buf);
        }
        full
    });
    let consumer = thread::spawn(move || {
        let _gone = gone;
        let mut pattern = vec![0u8; max_len];
        stress_pattern(&mut pattern);
        let mut next = 0u64;
        let mut empty = 0u64;
        while next < frames {
            let got = c.pop_with(|tag, frame| {
                assert_eq!(tag, next, "tag out of order");
                check_stress_frame(next, frame, &pattern, check_body);
            });
            match got {
                Ok(()) => next += 1,
                Err(PopError::Empty) => {
                    empty += 1;
                    assert!(start.elapsed() < limit, "consumer stuck at {next}");
                    thread::yield_now();
                }
                Err(e) => panic!("pop {next}: {e}"),
            }
        }
        assert_eq!(c.pop_with(|_, _| ()), Err(PopError::Empty));
        empty
    });
    let full = producer.join().unwrap();
    let empty = consumer.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let rate = frames as f64 / secs;
    eprintln!(
        "stress: {frames} frames of 9..={max_len} B through {slots} slots in {:.1} ms: \
         {:.2} M frames/s (producer saw full {full}x, consumer saw empty {empty}x)",
        secs * 1e3,
        rate / 1e6
    );
    rate
}

#[test]
fn stress_two_threads_small_frames() {
    stress(64, 1500, 100_000, true);
}

#[test]
fn stress_two_threads_tiny_ring() {
    // Two slots: the producer and the consumer chase each other through the same slots.
    stress(2, 64, 100_000, true);
}

#[test]
fn stress_two_threads_super_packets() {
    // Frames up to 64 KiB; the body is not compared, so the consumer keeps up.
    stress(256, TUN_FRAME_CAPACITY, 20_000, false);
}
