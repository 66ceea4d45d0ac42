//! Ancillary data (`cmsg`) encoded and decoded over plain byte buffers, without `unsafe`.
//!
//! The layout is the kernel's (`include/linux/socket.h`): each message is a header
//! `{ size_t cmsg_len; int cmsg_level; int cmsg_type; }` followed by the data, and both the
//! header and each message are padded to a multiple of `sizeof(long)`. Working on bytes instead
//! of `CMSG_FIRSTHDR`/`CMSG_NXTHDR` pointers lets the same parser read a `recvmsg` control
//! buffer and the control area inside an io_uring multishot `RECVMSG` buffer.

use std::mem::size_of;

/// Alignment of a control message and of its data: `sizeof(long)`.
const ALIGN: usize = size_of::<libc::c_long>();

/// `CMSG_ALIGN(len)`.
pub(crate) const fn align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// Bytes of the aligned header: `CMSG_ALIGN(sizeof(struct cmsghdr))`.
pub(crate) const HDR_LEN: usize = align(size_of::<libc::cmsghdr>());

/// `CMSG_LEN(data_len)`: the value of `cmsg_len` for `data_len` bytes of data.
pub(crate) const fn cmsg_len(data_len: usize) -> usize {
    HDR_LEN + data_len
}

/// `CMSG_SPACE(data_len)`: the room one message with `data_len` bytes of data takes.
pub(crate) const fn cmsg_space(data_len: usize) -> usize {
    HDR_LEN + align(data_len)
}

/// Room for one `UDP_SEGMENT` message (a `u16`).
pub(crate) const SEGMENT_SPACE: usize = cmsg_space(size_of::<u16>());

/// Room reserved per received datagram: a `UDP_GRO` message (an `int`) plus spare room for
/// one more `int`- or address-sized message the kernel may add. A control area that is too
/// small is not an error: the kernel sets `MSG_CTRUNC` and drops what does not fit.
pub(crate) const RECV_SPACE: usize = 64;

/// A control buffer aligned like `struct cmsghdr`, as `msg_control` wants.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> CmsgBuf<N> {
    pub(crate) const fn zeroed() -> Self {
        CmsgBuf([0; N])
    }
}

/// Writes one `UDP_SEGMENT` control message carrying `gso_size` at the start of `buf` and
/// returns its length (`msg_controllen`).
pub(crate) fn write_udp_segment(buf: &mut CmsgBuf<SEGMENT_SPACE>, gso_size: u16) -> usize {
    let bytes = &mut buf.0;
    bytes.fill(0);
    let len = cmsg_len(size_of::<u16>());
    let (head, rest) = bytes.split_at_mut(size_of::<usize>());
    head.copy_from_slice(&len.to_ne_bytes());
    let (level, rest) = rest.split_at_mut(size_of::<libc::c_int>());
    level.copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    let (kind, _) = rest.split_at_mut(size_of::<libc::c_int>());
    kind.copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    if let Some(data) = bytes.get_mut(HDR_LEN..HDR_LEN + size_of::<u16>()) {
        data.copy_from_slice(&gso_size.to_ne_bytes());
    }
    SEGMENT_SPACE
}

/// What this crate reads from a received datagram's control messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecvCmsgs {
    /// The `UDP_GRO` segment size: the datagram is a coalesced run of segments of this size
    /// (the last may be shorter).
    pub(crate) gro_size: Option<usize>,
}

/// Parses the control messages in `control` (the `msg_controllen` bytes the kernel filled).
/// Malformed or truncated trailing data ends the walk; unknown messages are skipped.
pub(crate) fn parse_recv(control: &[u8]) -> RecvCmsgs {
    let mut out = RecvCmsgs::default();
    let mut rest = control;
    while rest.len() >= HDR_LEN {
        let Some(len) = read_usize(rest, 0) else {
            break;
        };
        let Some(level) = read_int(rest, size_of::<usize>()) else {
            break;
        };
        let Some(kind) = read_int(rest, size_of::<usize>() + size_of::<libc::c_int>()) else {
            break;
        };
        if len < HDR_LEN || len > rest.len() {
            break;
        }
        let data = rest.get(HDR_LEN..len).unwrap_or(&[]);
        if level == libc::SOL_UDP && kind == libc::UDP_GRO {
            // The kernel puts an `int` here (udp_cmsg_recv); older kernels used a u16, which
            // this also reads.
            let size = match data.len() {
                4.. => read_int(data, 0).and_then(|v| usize::try_from(v).ok()),
                2 | 3 => read_u16(data).map(usize::from),
                _ => None,
            };
            out.gro_size = size.filter(|&s| s > 0);
        }
        let step = align(len);
        if step >= rest.len() {
            break;
        }
        rest = rest.get(step..).unwrap_or(&[]);
    }
    out
}

fn read_usize(buf: &[u8], at: usize) -> Option<usize> {
    let bytes = buf.get(at..at + size_of::<usize>())?;
    Some(usize::from_ne_bytes(bytes.try_into().ok()?))
}

fn read_int(buf: &[u8], at: usize) -> Option<libc::c_int> {
    let bytes = buf.get(at..at + size_of::<libc::c_int>())?;
    Some(libc::c_int::from_ne_bytes(bytes.try_into().ok()?))
}

fn read_u16(buf: &[u8]) -> Option<u16> {
    let bytes = buf.get(..2)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_libc_macros() {
        for n in [0usize, 1, 2, 4, 8, 13, 16] {
            let n32 = u32::try_from(n).unwrap();
            // SAFETY: CMSG_SPACE is arithmetic on its argument; it touches no memory.
            let space = unsafe { libc::CMSG_SPACE(n32) };
            // SAFETY: CMSG_LEN is arithmetic on its argument; it touches no memory.
            let len = unsafe { libc::CMSG_LEN(n32) };
            assert_eq!(cmsg_space(n), space as usize, "space {n}");
            assert_eq!(cmsg_len(n), len as usize, "len {n}");
        }
        assert_eq!(SEGMENT_SPACE, 24);
    }

    #[test]
    fn udp_segment_round_trips_through_the_layout() {
        let mut buf = CmsgBuf::<SEGMENT_SPACE>::zeroed();
        let len = write_udp_segment(&mut buf, 1400);
        assert_eq!(len, SEGMENT_SPACE);
        assert_eq!(read_usize(&buf.0, 0), Some(cmsg_len(2)));
        assert_eq!(read_int(&buf.0, 8), Some(libc::SOL_UDP));
        assert_eq!(read_int(&buf.0, 12), Some(libc::UDP_SEGMENT));
        assert_eq!(read_u16(&buf.0[HDR_LEN..]), Some(1400));
    }

    fn gro_cmsg(value: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&cmsg_len(4).to_ne_bytes());
        v.extend_from_slice(&libc::SOL_UDP.to_ne_bytes());
        v.extend_from_slice(&libc::UDP_GRO.to_ne_bytes());
        v.extend_from_slice(&value.to_ne_bytes());
        v.resize(cmsg_space(4), 0);
        v
    }

    #[test]
    fn gro_size_is_found_after_other_messages() {
        let mut control = Vec::new();
        // An unrelated message first (IP_TOS, one byte of data).
        control.extend_from_slice(&cmsg_len(1).to_ne_bytes());
        control.extend_from_slice(&libc::IPPROTO_IP.to_ne_bytes());
        control.extend_from_slice(&libc::IP_TOS.to_ne_bytes());
        control.push(0x10);
        control.resize(cmsg_space(1), 0);
        control.extend_from_slice(&gro_cmsg(1400));
        assert_eq!(parse_recv(&control).gro_size, Some(1400));
        assert_eq!(parse_recv(&gro_cmsg(0)).gro_size, None);
        assert_eq!(parse_recv(&[]).gro_size, None);
    }

    #[test]
    fn malformed_control_data_is_ignored() {
        let mut control = gro_cmsg(1200);
        // A cmsg_len beyond the buffer, a cmsg_len below the header, and truncation.
        control[0] = 200;
        assert_eq!(parse_recv(&control).gro_size, None);
        let mut control = gro_cmsg(1200);
        control[..8].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(parse_recv(&control).gro_size, None);
        let control = gro_cmsg(1200);
        for cut in 0..control.len() {
            let _ = parse_recv(&control[..cut]);
        }
    }
}
