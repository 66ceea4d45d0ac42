//! A small safe wrapper over `ppoll(2)` for the simple (non-io_uring) event loop.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;
use std::time::Duration;

use crate::SysError;

/// Most descriptors one [`poll_readable`] call accepts. The `pollfd` array lives on the stack so
/// that polling never allocates; a data plane polls a handful (TUN, one or two UDP sockets, a
/// [`Waker`](crate::Waker)).
pub const MAX_POLL_FDS: usize = 16;

/// Readiness bits that mean "a read will not block": data, or an error/hang-up condition that the
/// read will report. A deleted TUN interface, for one, polls as `POLLERR`, and a loop that did not
/// treat it as ready would spin without ever learning why.
const READABLE: libc::c_short = libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;

/// Waits until at least one of `fds` is readable or `timeout` passes (`None`: wait forever), and
/// returns how many are.
///
/// On return `ready[i]` says whether `fds[i]` is ready; entries of `ready` past `fds.len()` are
/// set to `false`. "Ready" includes error and hang-up conditions, so that the next read reports
/// them. A signal interrupting the wait (`EINTR`) returns `Ok(0)` with nothing ready, as does an
/// expired timeout. `Some(Duration::ZERO)` checks without waiting. Timeouts have nanosecond
/// resolution (this is `ppoll`); absurdly long ones are capped at `time_t::MAX` seconds.
///
/// # Errors
///
/// [`SysError::TooManyPollFds`] for more than [`MAX_POLL_FDS`] descriptors;
/// [`SysError::ReadySliceTooShort`] if `ready` is shorter than `fds`; [`SysError::Io`] if `ppoll`
/// fails (e.g. `ENOMEM`).
pub fn poll_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
    ready: &mut [bool],
) -> Result<usize, SysError> {
    if fds.len() > MAX_POLL_FDS {
        return Err(SysError::TooManyPollFds {
            count: fds.len(),
            max: MAX_POLL_FDS,
        });
    }
    if ready.len() < fds.len() {
        return Err(SysError::ReadySliceTooShort {
            fds: fds.len(),
            ready: ready.len(),
        });
    }
    ready.fill(false);

    let mut pollfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX_POLL_FDS];
    for (slot, fd) in pollfds.iter_mut().zip(fds) {
        slot.fd = fd.as_raw_fd();
        slot.events = libc::POLLIN;
    }
    let ts = timeout.map(to_timespec);
    let ts_ptr = ts.as_ref().map_or(ptr::null(), ptr::from_ref);
    // `fds.len() <= MAX_POLL_FDS`, so this cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    let nfds = fds.len() as libc::nfds_t;

    // SAFETY: `pollfds` is a live array of MAX_POLL_FDS >= nfds initialised `pollfd`s that ppoll
    // may write `revents` into; `ts_ptr` is null or points at `ts`, which outlives the call; a null
    // sigmask means the signal mask is left alone. The descriptors are borrowed for the call, so
    // they stay open.
    let rc = unsafe { libc::ppoll(pollfds.as_mut_ptr(), nfds, ts_ptr, ptr::null()) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(SysError::io("ppoll", err));
    }

    let mut count = 0;
    for (slot, flag) in pollfds.iter().zip(ready.iter_mut()).take(fds.len()) {
        if slot.revents & READABLE != 0 {
            *flag = true;
            count += 1;
        }
    }
    Ok(count)
}

fn to_timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 1e9, so the cast is lossless for every `c_long` width.
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_conversion() {
        let ts = to_timespec(Duration::new(3, 999_999_999));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (3, 999_999_999));
        let ts = to_timespec(Duration::MAX);
        assert_eq!(ts.tv_sec, libc::time_t::MAX);
    }
}
