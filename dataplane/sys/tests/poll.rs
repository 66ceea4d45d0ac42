//! `poll_readable` and `Waker`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// Measuring elapsed time is what these tests are about.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_sys::{poll_readable, SysError, Waker, MAX_POLL_FDS};

#[test]
fn waker_is_send_sync_nonblocking_cloexec() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Waker>();
    let waker = Waker::new().unwrap();
    common::assert_nonblocking_cloexec(waker.as_fd());
}

#[test]
fn times_out_with_nothing_ready() {
    let waker = Waker::new().unwrap();
    let mut ready = [true; 3];
    let start = Instant::now();
    let n = poll_readable(
        &[waker.as_fd()],
        Some(Duration::from_millis(50)),
        &mut ready,
    )
    .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(n, 0);
    assert_eq!(ready, [false; 3]);
    // Zero timeout: a non-waiting check.
    let n = poll_readable(&[waker.as_fd()], Some(Duration::ZERO), &mut ready).unwrap();
    assert_eq!(n, 0);
}

#[test]
fn wake_from_another_thread_interrupts_an_endless_poll() {
    let waker = Arc::new(Waker::new().unwrap());
    let other = Waker::new().unwrap();
    let w = Arc::clone(&waker);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.wake().unwrap();
    });
    let mut ready = [false; 2];
    let n = poll_readable(&[other.as_fd(), waker.as_fd()], None, &mut ready).unwrap();
    t.join().unwrap();
    assert_eq!(n, 1);
    assert_eq!(ready, [false, true]);
}

#[test]
fn wakes_coalesce_and_drain_resets() {
    let waker = Waker::new().unwrap();
    assert!(!waker.drain().unwrap());
    for _ in 0..5 {
        waker.wake().unwrap();
    }
    let mut ready = [false];
    assert_eq!(
        poll_readable(&[waker.as_fd()], Some(Duration::ZERO), &mut ready).unwrap(),
        1
    );
    assert!(waker.drain().unwrap());
    assert!(!waker.drain().unwrap());
    let n = poll_readable(
        &[waker.as_fd()],
        Some(Duration::from_millis(10)),
        &mut ready,
    )
    .unwrap();
    assert_eq!((n, ready), (0, [false]));
}

#[test]
fn bad_arguments_are_errors() {
    let waker = Waker::new().unwrap();
    let fds = vec![waker.as_fd(); MAX_POLL_FDS + 1];
    let mut ready = vec![false; MAX_POLL_FDS + 1];
    assert!(matches!(
        poll_readable(&fds, Some(Duration::ZERO), &mut ready),
        Err(SysError::TooManyPollFds { count, max }) if count == MAX_POLL_FDS + 1 && max == MAX_POLL_FDS
    ));
    let mut short = [false; 1];
    assert!(matches!(
        poll_readable(&fds[..2], Some(Duration::ZERO), &mut short),
        Err(SysError::ReadySliceTooShort { fds: 2, ready: 1 })
    ));
    // Exactly MAX_POLL_FDS is fine, and the same descriptor may appear twice.
    waker.wake().unwrap();
    let n = poll_readable(&fds[..MAX_POLL_FDS], Some(Duration::ZERO), &mut ready).unwrap();
    assert_eq!(n, MAX_POLL_FDS);
    assert!(ready[..MAX_POLL_FDS].iter().all(|&r| r));
    assert!(!ready[MAX_POLL_FDS]);
    // No descriptors at all is just a sleep.
    assert_eq!(
        poll_readable(&[], Some(Duration::from_millis(1)), &mut []).unwrap(),
        0
    );
}
