//! Layer-3 TUN devices (`/dev/net/tun`, `IFF_TUN | IFF_NO_PI`) and the interface ioctls around
//! them. Opening with a virtio-net header, offloads and several queues is in `tun_offload`.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;

use crate::error::short_io;
use crate::SysError;

/// Longest interface name the kernel accepts, in bytes (`IFNAMSIZ` minus the NUL).
pub const MAX_INTERFACE_NAME_LEN: usize = libc::IFNAMSIZ - 1;

// The SIOC* constants are `c_ulong` in libc while `ioctl` takes `libc::Ioctl`, which is `c_int`
// on musl. The casts are no-ops on glibc.
#[allow(clippy::unnecessary_cast)]
const SIOCGIFFLAGS: libc::Ioctl = libc::SIOCGIFFLAGS as libc::Ioctl;
#[allow(clippy::unnecessary_cast)]
const SIOCSIFFLAGS: libc::Ioctl = libc::SIOCSIFFLAGS as libc::Ioctl;
#[allow(clippy::unnecessary_cast)]
const SIOCGIFMTU: libc::Ioctl = libc::SIOCGIFMTU as libc::Ioctl;
#[allow(clippy::unnecessary_cast)]
const SIOCSIFMTU: libc::Ioctl = libc::SIOCSIFMTU as libc::Ioctl;
#[allow(clippy::unnecessary_cast)]
const SIOCGIFINDEX: libc::Ioctl = libc::SIOCGIFINDEX as libc::Ioctl;

/// An open layer-3 TUN interface (or one queue of a multi-queue one): one IP packet per
/// `read`/`write`, no packet-information prefix; opened with [`Tun::create`], no virtio-net
/// header; opened with [`Tun::create_with`](crate::Tun::create_with) and
/// [`TunOptions::vnet_hdr`](crate::TunOptions), each packet is preceded by a
/// [`VNET_HDR_LEN`](crate::VNET_HDR_LEN)-byte `virtio_net_hdr` in both directions.
///
/// The descriptor is non-blocking and close-on-exec. The interface is not persistent: the kernel
/// deletes it when the last descriptor attached to it is closed (dropping the `Tun`), unless it
/// was made persistent by someone else beforehand.
#[derive(Debug)]
pub struct Tun {
    /// `/dev/net/tun` after `TUNSETIFF`. A `File` only so that `read`/`write` need no `unsafe`.
    file: File,
    /// The name the kernel gave the interface.
    name: String,
    /// Whether every read and write carries a virtio-net header (`IFF_VNET_HDR`).
    vnet_hdr: bool,
}

/// What happened to a packet handed to [`Tun::write`]. Only `Written` means the kernel took it;
/// the others mean it was dropped and the caller should count it and move on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// The kernel accepted the whole packet.
    Written,
    /// The kernel could not take it now (`EAGAIN`); the packet was not written.
    WouldBlock,
    /// The interface is administratively down (the kernel answers `EIO`); the packet was not
    /// written. Not fatal: writes succeed again once the link is set up.
    LinkDown,
    /// The kernel refused this packet as malformed (`EINVAL`, e.g. the first nibble is neither
    /// 4 nor 6); nothing was written and the interface is unaffected.
    Rejected,
}

impl Tun {
    /// Creates the TUN interface `name`, or attaches to it if a TUN interface of that name already
    /// exists and is free (e.g. a persistent one made by `ip tuntap add`).
    ///
    /// The flags are `IFF_TUN | IFF_NO_PI`: each read or write is exactly one IPv4 or IPv6
    /// packet. The descriptor is non-blocking and close-on-exec. The interface starts down and
    /// without addresses.
    ///
    /// A name containing `%d` is a template the kernel fills in (`weft%d` → `weft0`); [`Tun::name`]
    /// returns the result.
    ///
    /// # Errors
    ///
    /// [`SysError::BadInterfaceName`] if `name` is not a valid interface name (1 to 15 bytes, not
    /// `.` or `..`, no `/`, `:`, whitespace or NUL). [`SysError::Io`] if `/dev/net/tun` cannot be
    /// opened (no `tun` module, no `CAP_NET_ADMIN`) or `TUNSETIFF` fails (`EBUSY`: another
    /// process holds the interface; `EINVAL`: a non-TUN interface has that name; `EPERM`).
    pub fn create(name: &str) -> Result<Tun, SysError> {
        Tun::open(name, libc::IFF_TUN | libc::IFF_NO_PI)
    }

    /// Opens `/dev/net/tun` and attaches it with `TUNSETIFF` and `flags` (`IFF_*`, 16 bits).
    pub(crate) fn open(name: &str, flags: libc::c_int) -> Result<Tun, SysError> {
        let mut req = ifreq_for(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| SysError::io("open /dev/net/tun", e))?;
        req.ifr_ifru.ifru_flags =
            libc::c_short::try_from(flags).map_err(|_| SysError::BadConfig {
                reason: "TUN flags do not fit 16 bits",
            })?;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is a fully initialised
        // ifreq that outlives the call, and `file` is an open /dev/net/tun descriptor.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
        if rc < 0 {
            return Err(SysError::last_os("TUNSETIFF"));
        }
        let actual = name_from_ifreq(&req);
        Ok(Tun {
            file,
            name: actual,
            vnet_hdr: flags & libc::IFF_VNET_HDR != 0,
        })
    }

    /// Whether each read and write carries a [`VNET_HDR_LEN`](crate::VNET_HDR_LEN)-byte
    /// virtio-net header before the packet.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The interface's name as the kernel reports it after creation.
    ///
    /// This is the name at creation time; if someone renames the interface later, the ioctl
    /// methods below fail with [`SysError::InterfaceGone`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index (`SIOCGIFINDEX`), as used in routes and `ip -d link`.
    ///
    /// # Errors
    ///
    /// [`SysError::InterfaceGone`] if the interface no longer exists under its name;
    /// [`SysError::Io`] for other ioctl failures.
    pub fn ifindex(&self) -> Result<u32, SysError> {
        let mut req = self.ifreq()?;
        self.ioctl(SIOCGIFINDEX, &mut req, "SIOCGIFINDEX")?;
        // SAFETY: reading a plain `c_int` union member of an ifreq that was zero-initialised and
        // then filled by the kernel; every bit pattern is a valid c_int.
        let index = unsafe { req.ifr_ifru.ifru_ifindex };
        u32::try_from(index).map_err(|_| {
            SysError::io(
                "SIOCGIFINDEX",
                io::Error::new(io::ErrorKind::InvalidData, "negative interface index"),
            )
        })
    }

    /// Sets the interface's MTU (`SIOCSIFMTU`).
    ///
    /// # Errors
    ///
    /// [`SysError::MtuOutOfRange`] above `i32::MAX`; [`SysError::Io`] with `EINVAL` if the
    /// kernel refuses the value (TUN accepts 68..=65535); [`SysError::InterfaceGone`] if the
    /// interface no longer exists.
    pub fn set_mtu(&self, mtu: u32) -> Result<(), SysError> {
        let value = libc::c_int::try_from(mtu).map_err(|_| SysError::MtuOutOfRange { mtu })?;
        let mut req = self.ifreq()?;
        req.ifr_ifru.ifru_mtu = value;
        self.ioctl(SIOCSIFMTU, &mut req, "SIOCSIFMTU")
    }

    /// The interface's current MTU (`SIOCGIFMTU`).
    ///
    /// # Errors
    ///
    /// [`SysError::InterfaceGone`] if the interface no longer exists; [`SysError::Io`] otherwise.
    pub fn mtu(&self) -> Result<u32, SysError> {
        let mut req = self.ifreq()?;
        self.ioctl(SIOCGIFMTU, &mut req, "SIOCGIFMTU")?;
        // SAFETY: reading a plain `c_int` union member of an ifreq that was zero-initialised and
        // then filled by the kernel; every bit pattern is a valid c_int.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        u32::try_from(mtu).map_err(|_| {
            SysError::io(
                "SIOCGIFMTU",
                io::Error::new(io::ErrorKind::InvalidData, "negative MTU"),
            )
        })
    }

    /// Sets the interface administratively up (`SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with
    /// `IFF_UP` added). For tests and demos; `wg-quick` and friends do this themselves.
    ///
    /// # Errors
    ///
    /// [`SysError::InterfaceGone`] if the interface no longer exists; [`SysError::Io`] otherwise.
    pub fn set_up(&self) -> Result<(), SysError> {
        let mut req = self.ifreq()?;
        self.ioctl(SIOCGIFFLAGS, &mut req, "SIOCGIFFLAGS")?;
        // SAFETY: reading a plain `c_short` union member of an ifreq that was zero-initialised and
        // then filled by the kernel; every bit pattern is a valid c_short.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        // IFF_UP is 1; it fits the 16-bit flags field.
        #[allow(clippy::cast_possible_truncation)]
        let up = libc::IFF_UP as libc::c_short;
        req.ifr_ifru.ifru_flags = flags | up;
        self.ioctl(SIOCSIFFLAGS, &mut req, "SIOCSIFFLAGS")
    }

    /// Reads one IP packet into `buf` and returns its length, or `Ok(None)` if no packet is
    /// queued (the descriptor is non-blocking; wait with [`poll_readable`](crate::poll_readable)).
    ///
    /// `buf` should hold at least the interface MTU, plus [`VNET_HDR_LEN`](crate::VNET_HDR_LEN)
    /// with a virtio-net header; with offloads accepted, `VNET_HDR_LEN + 65535` (super-packets
    /// are up to 64 KiB whatever the MTU). If the packet is longer than `buf`, the
    /// kernel copies what fits, returns `buf.len()` and discards the rest of the packet, so a
    /// return value equal to `buf.len()` may mean a truncated packet (check the IP length field).
    ///
    /// # Errors
    ///
    /// [`SysError::InterfaceGone`] once the interface has been deleted (the kernel answers
    /// `EBADFD`); [`SysError::Io`] for anything else.
    pub fn read(&self, buf: &mut [u8]) -> Result<Option<usize>, SysError> {
        loop {
            match (&self.file).read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(None),
                    Some(libc::EINTR) => continue,
                    Some(libc::EBADFD) => return Err(self.gone()),
                    _ => return Err(SysError::io("read TUN", e)),
                },
            }
        }
    }

    /// Writes one IP packet (IPv4 or IPv6, no prefix) into the interface, as if it had arrived
    /// on it.
    ///
    /// Per-packet failures are not errors: see [`WriteOutcome`].
    ///
    /// # Errors
    ///
    /// [`SysError::InterfaceGone`] once the interface has been deleted (the kernel answers
    /// `EBADFD`); [`SysError::Io`] for anything else.
    pub fn write(&self, pkt: &[u8]) -> Result<WriteOutcome, SysError> {
        loop {
            match (&self.file).write(pkt) {
                Ok(n) if n == pkt.len() => return Ok(WriteOutcome::Written),
                // TUN writes are all-or-nothing; a partial one would be a kernel change.
                Ok(n) => return Err(short_io("write TUN", n, pkt.len())),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(WriteOutcome::WouldBlock),
                    Some(libc::EIO) => return Ok(WriteOutcome::LinkDown),
                    Some(libc::EINVAL) => return Ok(WriteOutcome::Rejected),
                    Some(libc::EINTR) => continue,
                    Some(libc::EBADFD) => return Err(self.gone()),
                    _ => return Err(SysError::io("write TUN", e)),
                },
            }
        }
    }

    /// Like [`Tun::read`], scattering one packet over `bufs` (`readv`): e.g. the virtio-net
    /// header into one buffer and the packet into another. Returns the total length.
    ///
    /// # Errors
    ///
    /// As [`Tun::read`].
    pub fn read_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> Result<Option<usize>, SysError> {
        loop {
            match (&self.file).read_vectored(bufs) {
                Ok(n) => return Ok(Some(n)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(None),
                    Some(libc::EINTR) => continue,
                    Some(libc::EBADFD) => return Err(self.gone()),
                    _ => return Err(SysError::io("readv TUN", e)),
                },
            }
        }
    }

    /// Like [`Tun::write`], gathering one packet from `bufs` (`writev`): e.g. a virtio-net header
    /// and the packet from separate buffers.
    ///
    /// # Errors
    ///
    /// As [`Tun::write`].
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> Result<WriteOutcome, SysError> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        loop {
            match (&self.file).write_vectored(bufs) {
                Ok(n) if n == want => return Ok(WriteOutcome::Written),
                Ok(n) => return Err(short_io("writev TUN", n, want)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(WriteOutcome::WouldBlock),
                    Some(libc::EIO) => return Ok(WriteOutcome::LinkDown),
                    Some(libc::EINVAL) => return Ok(WriteOutcome::Rejected),
                    Some(libc::EINTR) => continue,
                    Some(libc::EBADFD) => return Err(self.gone()),
                    _ => return Err(SysError::io("writev TUN", e)),
                },
            }
        }
    }

    fn gone(&self) -> SysError {
        SysError::InterfaceGone {
            name: self.name.clone(),
        }
    }

    fn ifreq(&self) -> Result<libc::ifreq, SysError> {
        ifreq_for(&self.name)
    }

    /// Runs an interface ioctl on a throwaway `AF_INET` datagram socket (these ioctls act on the
    /// interface named in the ifreq, not on the socket; the TUN descriptor does not accept them).
    fn ioctl(
        &self,
        request: libc::Ioctl,
        req: &mut libc::ifreq,
        op: &'static str,
    ) -> Result<(), SysError> {
        let sock = control_socket()?;
        // SAFETY: `request` is one of the SIOC[GS]IF* requests, each of which reads and/or writes
        // exactly one `struct ifreq`; `req` is a fully initialised ifreq borrowed mutably for the
        // duration of the call, and `sock` is an open socket.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, std::ptr::from_mut(req)) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENODEV) {
                return Err(self.gone());
            }
            return Err(SysError::io(op, err));
        }
        Ok(())
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl From<Tun> for OwnedFd {
    fn from(tun: Tun) -> OwnedFd {
        tun.file.into()
    }
}

/// Whether a network interface called `name` exists in this network namespace
/// (`if_nametoindex` returns non-zero). Invalid names never exist.
pub fn interface_exists(name: &str) -> bool {
    interface_index(name).is_some()
}

/// The index of the network interface called `name` in this network namespace, if it exists
/// (`if_nametoindex`). Invalid names never exist.
pub fn interface_index(name: &str) -> Option<u32> {
    let raw = name_bytes(name).ok()?;
    let cname = CStr::from_bytes_until_nul(&raw).ok()?;
    // SAFETY: `cname` is a NUL-terminated string that outlives the call; if_nametoindex only
    // reads it.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    (index != 0).then_some(index)
}

/// A close-on-exec `AF_INET` datagram socket, the conventional handle for interface ioctls.
fn control_socket() -> Result<socket2::Socket, SysError> {
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| SysError::io("socket(AF_INET, SOCK_DGRAM)", e))
}

/// Checks `name` against the kernel's `dev_valid_name` and returns it NUL-padded to `IFNAMSIZ`.
pub(crate) fn name_bytes(name: &str) -> Result<[u8; libc::IFNAMSIZ], SysError> {
    let bad = |reason| SysError::BadInterfaceName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_INTERFACE_NAME_LEN {
        return Err(bad("longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("`.` and `..` are reserved"));
    }
    if name.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if name.contains(['/', ':']) {
        return Err(bad("contains `/` or `:`"));
    }
    // The kernel's isspace() also treats \v and byte 0xA0 (Latin-1 no-break space, which
    // appears inside UTF-8 sequences such as "à") as whitespace.
    if name.chars().any(char::is_whitespace) || name.bytes().any(|b| b == 0x0b || b == 0xa0) {
        return Err(bad("contains whitespace"));
    }
    let mut out = [0u8; libc::IFNAMSIZ];
    for (dst, src) in out.iter_mut().zip(name.bytes()) {
        *dst = src;
    }
    Ok(out)
}

/// A zeroed `ifreq` with `ifr_name` set to the validated `name`.
fn ifreq_for(name: &str) -> Result<libc::ifreq, SysError> {
    let bytes = name_bytes(name)?;
    // SAFETY: `ifreq` is a C struct of integer arrays and a union of integers, integer arrays,
    // `sockaddr`s and a raw pointer; the all-zero bit pattern is a valid value of each (a null
    // pointer for `ifru_data`).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        // Reinterpreting each byte as `c_char` (i8 on x86) is the intent.
        #[allow(clippy::cast_possible_wrap)]
        let c = src as libc::c_char;
        *dst = c;
    }
    Ok(req)
}

/// The NUL-terminated name the kernel left in `req.ifr_name`.
fn name_from_ifreq(req: &libc::ifreq) -> String {
    // Reinterpreting each `c_char` as a byte is the intent.
    #[allow(clippy::cast_sign_loss)]
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernel_rules() {
        for good in ["a", "wg0", "weft%d", "abcdefghijklmno", "tun-1_x.y", "été"] {
            assert!(name_bytes(good).is_ok(), "{good:?} should be accepted");
        }
        for bad in [
            "",
            "abcdefghijklmnop",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\nb",
            "a\u{0b}b",
            "a\0b",
            "a\u{2003}b",
            "à", // UTF-8 C3 A0: the kernel's isspace(0xA0) rejects it
        ] {
            assert!(
                matches!(name_bytes(bad), Err(SysError::BadInterfaceName { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn ifreq_round_trips_the_name() {
        let req = ifreq_for("wg7").unwrap();
        assert_eq!(name_from_ifreq(&req), "wg7");
        let req = ifreq_for("abcdefghijklmno").unwrap();
        assert_eq!(name_from_ifreq(&req), "abcdefghijklmno");
    }
}
