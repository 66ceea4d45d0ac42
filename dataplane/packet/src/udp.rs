//! A UDP header view: ports for the flow key, the length GSO rewrites and GRO checks, and the
//! checksum field.
//!
//! # The no-panic guarantee
//! [`UdpHeader::parse`] checks for 8 bytes and views them as a `&[u8; 8]`; accessors read at
//! constant offsets, so once `parse` returned `Ok` no accessor can panic. The length field is
//! not checked against the input here; GRO and GSO compare it where it matters.

use crate::HeaderError;

/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Offset of the checksum field in the UDP header (the virtio `csum_offset` for UDP).
pub const UDP_CHECKSUM_OFFSET: usize = 6;

/// A checked view of a UDP header.
#[derive(Debug, Clone, Copy)]
pub struct UdpHeader<'a> {
    fixed: &'a [u8; UDP_HEADER_LEN],
}

impl<'a> UdpHeader<'a> {
    /// Checks and views the UDP header at the start of `datagram`.
    ///
    /// # Errors
    /// [`HeaderError::Truncated`] if fewer than 8 bytes are given.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, HeaderError> {
        let (fixed, _) =
            datagram
                .split_first_chunk::<UDP_HEADER_LEN>()
                .ok_or(HeaderError::Truncated {
                    needed: UDP_HEADER_LEN,
                    have: datagram.len(),
                })?;
        Ok(Self { fixed })
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.fixed[0], self.fixed[1]])
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.fixed[2], self.fixed[3]])
    }

    /// The length field (header plus payload).
    pub fn length(&self) -> u16 {
        u16::from_be_bytes([self.fixed[4], self.fixed[5]])
    }

    /// The checksum field (0 means "no checksum" over IPv4).
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.fixed[6], self.fixed[7]])
    }
}
