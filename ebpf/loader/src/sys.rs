//! The two system calls aya does not wrap: `bpf(BPF_PROG_TEST_RUN)` and `if_indextoname`.

use std::io;
use std::os::fd::RawFd;

/// `BPF_PROG_TEST_RUN` from `linux/bpf.h`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (the kernel takes a shorter attr than its own and
/// zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// Runs program `prog_fd` `repeat` times on `data`; returns the last return value and the
/// kernel's mean time per run in nanoseconds.
pub(crate) fn test_run(prog_fd: RawFd, data: &[u8], repeat: u32) -> io::Result<(u32, u32)> {
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog_fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        data_size_in: u32::try_from(data.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        data_in: data.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    let size = std::mem::size_of::<TestRunAttr>();
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of `size` bytes that lives for
    // the call; `data_in` points at `data`, which the kernel only reads (`data_out` is null,
    // so nothing is written back but `retval` and `duration` inside `attr`).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            std::ptr::addr_of_mut!(attr),
            size,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((attr.retval, attr.duration))
}

/// The name of interface `ifindex`, if there is one.
pub(crate) fn if_name(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write, including the NUL.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.get(..end)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}
