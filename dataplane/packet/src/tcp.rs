//! A TCP header view: what segmentation rewrites and what coalescing compares.
//!
//! Why so little: GSO advances the sequence number and masks flags per segment, GRO compares
//! ports, sequence and acknowledgment numbers, the flag word (data offset, flags, window) and the
//! option bytes. Nothing here interprets options or tracks connection state.
//!
//! # The no-panic guarantee
//! [`TcpHeader::parse`] checks the fixed 20 bytes and the data offset against the input before
//! it builds a view of a `&[u8; 20]` plus the bounded options slice; accessors read at constant
//! offsets, so once `parse` returned `Ok` no accessor can panic.

use crate::HeaderError;

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;
/// Offset of the checksum field in the TCP header (the virtio `csum_offset` for TCP).
pub const TCP_CHECKSUM_OFFSET: usize = 16;
/// Offset of the flags byte in the TCP header.
pub const TCP_FLAGS_OFFSET: usize = 13;

/// TCP flag bits (byte 13 of the header).
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// A checked view of a TCP header (options included).
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader<'a> {
    fixed: &'a [u8; TCP_HEADER_LEN],
    options: &'a [u8],
}

impl<'a> TcpHeader<'a> {
    /// Checks and views the TCP header at the start of `segment`.
    ///
    /// # Errors
    /// [`HeaderError::Truncated`] or [`HeaderError::TcpDataOffset`].
    pub fn parse(segment: &'a [u8]) -> Result<Self, HeaderError> {
        let (fixed, rest) =
            segment
                .split_first_chunk::<TCP_HEADER_LEN>()
                .ok_or(HeaderError::Truncated {
                    needed: TCP_HEADER_LEN,
                    have: segment.len(),
                })?;
        let doff = fixed[12] >> 4;
        if doff < 5 {
            return Err(HeaderError::TcpDataOffset(doff));
        }
        let options_len = usize::from(doff - 5) * 4;
        let options = rest.get(..options_len).ok_or(HeaderError::Truncated {
            needed: TCP_HEADER_LEN + options_len,
            have: segment.len(),
        })?;
        Ok(Self { fixed, options })
    }

    /// Header length in bytes (20–60).
    pub fn header_len(&self) -> usize {
        TCP_HEADER_LEN + self.options.len()
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.fixed[0], self.fixed[1]])
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.fixed[2], self.fixed[3]])
    }

    /// The sequence number.
    pub fn seq(&self) -> u32 {
        u32::from_be_bytes([self.fixed[4], self.fixed[5], self.fixed[6], self.fixed[7]])
    }

    /// The acknowledgment number.
    pub fn ack(&self) -> u32 {
        u32::from_be_bytes([self.fixed[8], self.fixed[9], self.fixed[10], self.fixed[11]])
    }

    /// The flags byte ([`flags`]).
    pub fn flags(&self) -> u8 {
        self.fixed[13]
    }

    /// The 32-bit word at offset 12: data offset, reserved bits, flags and window — the
    /// kernel's `tcp_flag_word`, which GRO compares as a whole.
    pub fn flag_word(&self) -> u32 {
        u32::from_be_bytes([
            self.fixed[12],
            self.fixed[13],
            self.fixed[14],
            self.fixed[15],
        ])
    }

    /// The window field.
    pub fn window(&self) -> u16 {
        u16::from_be_bytes([self.fixed[14], self.fixed[15]])
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.fixed[16], self.fixed[17]])
    }

    /// The urgent pointer.
    pub fn urgent(&self) -> u16 {
        u16::from_be_bytes([self.fixed[18], self.fixed[19]])
    }

    /// The option bytes (empty for a 20-byte header).
    pub fn options(&self) -> &'a [u8] {
        self.options
    }
}
