//! The parse error shared by the header views ([`crate::ip`], [`crate::tcp`], [`crate::udp`]).
//!
//! One small enum rather than one per protocol: the callers (GSO, GRO, the engine's counters)
//! only need to know *which* check failed, and the views are checked in sequence.

/// Why a header view could not be built over some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer bytes than the header needs (its fixed part, or the length its own length field
    /// announces).
    #[error("truncated header: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The IP version nibble is neither 4 nor 6, or not the one the caller expected.
    #[error("IP version {0} where another was expected")]
    Version(u8),
    /// An IPv4 IHL below 5 (a header shorter than 20 bytes).
    #[error("IPv4 header length field {0} is below the minimum of 5 words")]
    Ipv4HeaderLen(u8),
    /// A TCP data offset below 5 (a header shorter than 20 bytes).
    #[error("TCP data offset {0} is below the minimum of 5 words")]
    TcpDataOffset(u8),
    /// An IPv6 extension header this crate does not walk (routing, fragment, ESP, AH, or an
    /// unknown value), or a chain longer than the crate's bound.
    #[error("unsupported IPv6 extension header {0}")]
    Ipv6ExtensionHeader(u8),
}
