//! Send slots: buffers and message headers that stay put while a `SENDMSG` is in flight.
//!
//! A transmit is copied into a free slot (one copy; the receive side copies nothing), its
//! `msghdr` points at the slot's name, iovec and control areas, and the slot stays busy until
//! the completion arrives. The data lives in an anonymous mapping so that no Rust reference
//! covers a slot the kernel is reading.

use std::net::SocketAddr;
use std::ptr;

use super::buf_ring::Region;
use crate::cmsg::{self, CmsgBuf, SEGMENT_SPACE};
use crate::sockaddr::{Family, RawAddr};

/// The header side of one slot.
struct SlotHdr {
    msg: libc::msghdr,
    iov: libc::iovec,
    name: RawAddr,
    control: CmsgBuf<SEGMENT_SPACE>,
    /// Bytes of data in the slot.
    len: usize,
    dst: SocketAddr,
    /// The GSO segment size if this is a GSO send.
    gso: Option<u16>,
    /// Submitted and not yet completed.
    busy: bool,
    /// For tests: this "send" was a no-op standing in for one the kernel answered with `EIO`.
    fake_eio: bool,
}

/// What a slot held when its send completed.
pub(crate) struct Done {
    pub(crate) dst: SocketAddr,
    pub(crate) gso: Option<u16>,
    pub(crate) fake_eio: bool,
}

pub(crate) struct SendPool {
    data: Region,
    slot_len: usize,
    hdrs: Box<[SlotHdr]>,
    free: Vec<u16>,
}

// SAFETY: the raw pointers inside the headers point only into `data` and into the headers
// themselves (boxed, so they do not move), both owned by the pool; nothing else shares them,
// so the pool may move to another thread as a whole.
unsafe impl Send for SendPool {}

impl SendPool {
    pub(crate) fn new(slots: u16, slot_len: usize) -> std::io::Result<SendPool> {
        let data = Region::new(usize::from(slots) * slot_len)?;
        let hdrs = (0..slots)
            .map(|_| SlotHdr {
                msg: crate::udp_batch::zeroed_mmsghdr().msg_hdr,
                iov: libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                },
                name: RawAddr::zeroed(),
                control: CmsgBuf::zeroed(),
                len: 0,
                dst: SocketAddr::from(([0, 0, 0, 0], 0)),
                gso: None,
                busy: false,
                fake_eio: false,
            })
            .collect();
        Ok(SendPool {
            data,
            slot_len,
            hdrs,
            // Popped from the end: slot 0 first.
            free: (0..slots).rev().collect(),
        })
    }

    pub(crate) fn slot_len(&self) -> usize {
        self.slot_len
    }

    pub(crate) fn free_slots(&self) -> usize {
        self.free.len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.hdrs.len() - self.free.len()
    }

    /// Copies `contents` into a free slot and prepares its header for `dst` (encoded for a
    /// socket of `family`), with a `UDP_SEGMENT` control message if `gso` is set. Returns the
    /// slot and a pointer to its `msghdr`, valid until the slot is released; `None` if no slot
    /// is free, the contents do not fit, or the address cannot be sent from this family.
    pub(crate) fn fill(
        &mut self,
        contents: &[u8],
        dst: SocketAddr,
        family: Family,
        gso: Option<u16>,
    ) -> Option<(u16, *const libc::msghdr)> {
        if contents.len() > self.slot_len {
            return None;
        }
        let slot = *self.free.last()?;
        let offset = usize::from(slot) * self.slot_len;
        let base = self.data.as_ptr().wrapping_add(offset);
        self.data
            .bytes_mut(offset, contents.len())?
            .copy_from_slice(contents);
        let hdr = self.hdrs.get_mut(usize::from(slot))?;
        let namelen = hdr.name.encode(dst, family)?;
        self.free.pop();
        hdr.iov.iov_base = base.cast();
        hdr.iov.iov_len = contents.len();
        hdr.msg.msg_name = hdr.name.0.as_mut_ptr().cast();
        hdr.msg.msg_namelen = libc::socklen_t::try_from(namelen).unwrap_or(0);
        hdr.msg.msg_iov = ptr::from_mut(&mut hdr.iov);
        hdr.msg.msg_iovlen = 1;
        if let Some(seg) = gso {
            let len = cmsg::write_udp_segment(&mut hdr.control, seg);
            hdr.msg.msg_control = hdr.control.0.as_mut_ptr().cast();
            hdr.msg.msg_controllen = len as _;
        } else {
            hdr.msg.msg_control = ptr::null_mut();
            hdr.msg.msg_controllen = 0;
        }
        hdr.len = contents.len();
        hdr.dst = dst;
        hdr.gso = gso;
        hdr.busy = true;
        hdr.fake_eio = false;
        Some((slot, ptr::from_ref(&hdr.msg)))
    }

    /// Marks `slot` as a stand-in for a send the kernel answered with `EIO` (tests).
    pub(crate) fn mark_fake_eio(&mut self, slot: u16) {
        if let Some(hdr) = self.hdrs.get_mut(usize::from(slot)) {
            hdr.fake_eio = true;
        }
    }

    /// The data of a completed (or never submitted) slot.
    pub(crate) fn data(&self, slot: u16) -> Option<&[u8]> {
        let hdr = self.hdrs.get(usize::from(slot))?;
        self.data.bytes(usize::from(slot) * self.slot_len, hdr.len)
    }

    /// What `slot` held, once its completion has arrived; the slot stays reserved until
    /// [`SendPool::release`].
    pub(crate) fn done(&mut self, slot: u16) -> Option<Done> {
        let hdr = self.hdrs.get_mut(usize::from(slot))?;
        if !hdr.busy {
            return None;
        }
        hdr.busy = false;
        Some(Done {
            dst: hdr.dst,
            gso: hdr.gso,
            fake_eio: hdr.fake_eio,
        })
    }

    /// Puts `slot` back on the free list.
    pub(crate) fn release(&mut self, slot: u16) {
        if usize::from(slot) < self.hdrs.len() && !self.free.contains(&slot) {
            self.free.push(slot);
        }
    }

    /// Never unmaps the data (the kernel might still read it; reading a stale mapping is
    /// harmless, but a reused address could leak other data onto the wire).
    pub(crate) fn leak(&mut self) {
        self.data.leak();
    }
}
