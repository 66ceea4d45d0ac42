//! Memory shared with the kernel: anonymous mappings, and provided-buffer rings on top of them.
//!
//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19) is an array of
//! `struct io_uring_buf { u64 addr; u32 len; u16 bid; u16 resv; }` whose tail (a `u16` that
//! overlays `resv` of entry 0) the application advances after filling entries; the kernel takes
//! buffers from the head, and reports the buffer id it used in each completion's flags. As
//! machine-facts 1c says, liburing 2.3 lacks `io_uring_setup_buf_ring`, so the ring is mapped
//! here and registered with the raw call.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// An anonymous private read/write mapping, unmapped on drop unless leaked.
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    /// Set when the kernel might still write into the mapping: then it is never unmapped, so
    /// the address cannot be reused for something else.
    leaked: bool,
}

// SAFETY: a `Region` owns its mapping exclusively (like a `Box<[u8]>`); the pointer is not
// shared with other threads by this type, so moving it to another thread is sound.
unsafe impl Send for Region {}

impl Region {
    /// Maps `len` zeroed bytes (rounded up to pages by the kernel).
    pub(crate) fn new(len: usize) -> io::Result<Region> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
        // no existing memory; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Region {
            ptr,
            len,
            leaked: false,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keeps the mapping forever (see `leaked`).
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }

    /// `len` bytes at `offset`, or `None` if out of range.
    ///
    /// The caller must own that range: no in-flight kernel operation may write to it while the
    /// slice lives (buffer rings guarantee this for a buffer between its completion and its
    /// return to the ring).
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        let start = self.ptr.as_ptr().wrapping_add(offset);
        // SAFETY: `offset + len` is within the mapping, which is readable, initialised (anonymous
        // memory is zero-filled; the kernel only ever writes bytes into it) and lives as long as
        // `self`; the caller guarantees no concurrent writer for the range (see above).
        Some(unsafe { std::slice::from_raw_parts(start, len) })
    }

    /// Like [`Region::bytes`], writable. Same ownership rule.
    pub(crate) fn bytes_mut(&mut self, offset: usize, len: usize) -> Option<&mut [u8]> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        let start = self.ptr.as_ptr().wrapping_add(offset);
        // SAFETY: as in `bytes`, and `&mut self` excludes other slices of this region created
        // through it.
        Some(unsafe { std::slice::from_raw_parts_mut(start, len) })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: `ptr`/`len` describe a mapping this value created and still owns; nothing
        // borrows it any more (drop has `&mut self`), and the kernel no longer uses it (else it
        // would have been leaked).
        let _ = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Bytes of one `struct io_uring_buf`.
const ENTRY_LEN: usize = 16;

/// A provided-buffer ring with `entries` buffers of `buf_len` bytes each.
pub(crate) struct BufRing {
    ring: Region,
    bufs: Region,
    entries: u16,
    buf_len: usize,
    bgid: u16,
    /// The tail as last published.
    tail: u16,
    /// Buffers currently in the ring (given to the kernel and not yet reported back).
    available: usize,
}

impl BufRing {
    /// Maps a ring of `entries` (a power of two, at most 32768) buffers of `buf_len` bytes for
    /// buffer group `bgid`, all of them in the ring. Register it before use.
    pub(crate) fn new(entries: u16, buf_len: usize, bgid: u16) -> io::Result<BufRing> {
        let ring = Region::new(usize::from(entries) * ENTRY_LEN)?;
        let bufs = Region::new(usize::from(entries) * buf_len)?;
        let mut this = BufRing {
            ring,
            bufs,
            entries,
            buf_len,
            bgid,
            tail: 0,
            available: 0,
        };
        for bid in 0..entries {
            this.push(bid);
        }
        Ok(this)
    }

    pub(crate) fn ring_addr(&self) -> u64 {
        self.ring.as_ptr() as u64
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    pub(crate) fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// Buffers currently in the ring, for accounting and tests.
    pub(crate) fn available(&self) -> usize {
        self.available
    }

    /// Notes that the kernel used buffer `bid` (a completion carried it).
    pub(crate) fn taken(&mut self) {
        self.available = self.available.saturating_sub(1);
    }

    /// The first `len` bytes of buffer `bid`, which the kernel has handed back.
    pub(crate) fn buf(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || len > self.buf_len {
            return None;
        }
        self.bufs.bytes(usize::from(bid) * self.buf_len, len)
    }

    /// Returns buffer `bid` to the ring and publishes the new tail.
    pub(crate) fn push(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let mask = self.entries - 1;
        let index = usize::from(self.tail & mask);
        let entry = self.ring.as_ptr().wrapping_add(index * ENTRY_LEN);
        let addr = self
            .bufs
            .as_ptr()
            .wrapping_add(usize::from(bid) * self.buf_len) as u64;
        // Buffer lengths are checked against u32 when the ring is configured.
        let len = u32::try_from(self.buf_len).unwrap_or(u32::MAX);
        // SAFETY: `entry` is the start of entry `index` (< entries) of the ring mapping, 16-byte
        // aligned (page-aligned base); `addr` is its first field. The kernel does not read an
        // entry beyond the published tail, so writing it now races with nothing.
        unsafe { entry.cast::<u64>().write(addr) };
        // SAFETY: as above; `len` is the u32 at offset 8 of the same entry.
        unsafe { entry.wrapping_add(8).cast::<u32>().write(len) };
        // SAFETY: as above; `bid` is the u16 at offset 12 of the same entry. Offset 14 (`resv`)
        // is not written: in entry 0 it is the ring's tail.
        unsafe { entry.wrapping_add(12).cast::<u16>().write(bid) };
        self.tail = self.tail.wrapping_add(1);
        let tail_ptr = self.ring.as_ptr().wrapping_add(14).cast::<u16>();
        // SAFETY: offset 14 of the ring is the 2-byte aligned `tail` the kernel reads with
        // acquire semantics; it lives as long as the ring mapping, and all accesses to it (ours
        // and the kernel's) are atomic.
        let tail = unsafe { AtomicU16::from_ptr(tail_ptr) };
        // Release: the entry written above is visible before the tail that exposes it.
        tail.store(self.tail, Ordering::Release);
        self.available += 1;
    }

    /// Never unmaps the buffers (the kernel might still write into them).
    pub(crate) fn leak(&mut self) {
        self.ring.leak();
        self.bufs.leak();
    }

    /// The total bytes mapped (ring plus buffers), for diagnostics.
    #[allow(dead_code)]
    pub(crate) fn mapped(&self) -> usize {
        self.ring.len() + self.bufs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_entries_hold_the_buffers_and_tail() {
        let ring = BufRing::new(4, 100, 3).unwrap();
        assert_eq!(ring.available(), 4);
        assert_eq!(ring.bgid(), 3);
        let raw = ring.ring.bytes(0, 64).unwrap();
        for bid in 0..4u16 {
            let e = &raw[usize::from(bid) * 16..][..16];
            let addr = u64::from_ne_bytes(e[..8].try_into().unwrap());
            assert_eq!(addr, ring.bufs.as_ptr() as u64 + u64::from(bid) * 100);
            assert_eq!(u32::from_ne_bytes(e[8..12].try_into().unwrap()), 100);
            assert_eq!(u16::from_ne_bytes(e[12..14].try_into().unwrap()), bid);
        }
        // The tail overlays entry 0's `resv`.
        assert_eq!(u16::from_ne_bytes(raw[14..16].try_into().unwrap()), 4);
        assert!(ring.buf(4, 1).is_none());
        assert!(ring.buf(0, 101).is_none());
        assert_eq!(ring.buf(3, 100).unwrap().len(), 100);
    }
}
