//! Cross-thread wakeup of a poll loop, backed by an `eventfd`.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};

use crate::error::short_io;
use crate::SysError;

/// Wakes a thread blocked in [`poll_readable`](crate::poll_readable) from any other thread.
///
/// Put [`Waker::as_fd`] among the polled descriptors; another thread calls [`Waker::wake`] and the
/// poll returns with the waker readable; the polling thread then calls [`Waker::drain`] and looks
/// at whatever it was woken for (a command queue, a shutdown flag). Wakes coalesce: many `wake`s
/// before one `drain` are a single wakeup.
///
/// `Waker` is `Send + Sync`; share it with an `Arc`.
#[derive(Debug)]
pub struct Waker {
    /// The eventfd (non-blocking, close-on-exec). A `File` only so that reading and writing its
    /// 8-byte counter needs no `unsafe`.
    file: File,
}

impl Waker {
    /// Creates a waker in the "not woken" state.
    ///
    /// # Errors
    ///
    /// [`SysError::Io`] if `eventfd` fails (descriptor or memory limits).
    pub fn new() -> Result<Waker, SysError> {
        // SAFETY: eventfd takes no pointers; any flags are memory-safe.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(SysError::last_os("eventfd"));
        }
        // SAFETY: `raw` is a descriptor eventfd just returned to us; nothing else owns it, so
        // handing it to an OwnedFd (which will close it exactly once) is sound.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Waker {
            file: File::from(fd),
        })
    }

    /// Makes the waker readable, waking a thread polling it (now or at its next poll).
    ///
    /// # Errors
    ///
    /// [`SysError::Io`] if the write to the eventfd fails. A saturated counter (`EAGAIN`) is not
    /// an error: the waker is already readable.
    pub fn wake(&self) -> Result<(), SysError> {
        loop {
            match (&self.file).write(&1u64.to_ne_bytes()) {
                Ok(8) => return Ok(()),
                Ok(n) => return Err(short_io("write eventfd", n, 8)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => return Err(SysError::io("write eventfd", e)),
                },
            }
        }
    }

    /// Resets the waker to "not woken" without blocking; returns whether it had been woken.
    ///
    /// # Errors
    ///
    /// [`SysError::Io`] if the read from the eventfd fails for a reason other than "not woken"
    /// (`EAGAIN`).
    pub fn drain(&self) -> Result<bool, SysError> {
        let mut counter = [0u8; 8];
        loop {
            match (&self.file).read(&mut counter) {
                Ok(8) => return Ok(true),
                Ok(n) => return Err(short_io("read eventfd", n, 8)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(false),
                    Some(libc::EINTR) => continue,
                    _ => return Err(SysError::io("read eventfd", e)),
                },
            }
        }
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
