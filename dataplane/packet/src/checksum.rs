//! The Internet checksum (RFC 1071): full sums, pseudo-header sums and incremental updates.
//!
//! Why a module of its own: GSO split computes one full TCP/UDP checksum per segment (up to 64
//! per TUN read) and GRO merge verifies one per arriving segment, so at line rate this loop runs
//! over every byte the tunnel carries. It is the one place in the crate where speed matters more
//! than brevity.
//!
//! # How the fast sum works
//! RFC 1071 §2 gives the two facts it relies on. The one's-complement sum is *byte-order
//! independent*: summing 16-bit words in the machine's native order and swapping the bytes of
//! the folded result gives the same value as summing big-endian words. And it can be computed
//! with *deferred carries*: add words into a wider accumulator and fold the carries back in at
//! the end. [`Checksum::add_bytes`] reads 8 bytes at a time as a native `u64`, adds its two
//! 32-bit halves into a `u64` accumulator (so no carry is ever lost and the loop has no
//! carry-flag dependency, which lets the compiler vectorize it), and folds once per call. A
//! naive big-endian word-at-a-time model in the tests checks it on random data.
//!
//! # Conventions
//! A [`Checksum`] holds a running sum in big-endian word semantics. [`Checksum::fold`] is the
//! folded one's-complement sum (what a `CHECKSUM_PARTIAL` packet stores in its checksum field
//! for the pseudo-header); [`Checksum::finish`] is its complement (what a complete packet
//! stores). A packet verifies when the sum over the pseudo-header and the whole L4 segment,
//! checksum field included, folds to `0xffff` ([`Checksum::is_valid`]).
//!
//! Nothing here can panic, allocate or read past a slice.

/// A running Internet checksum: the one's-complement sum of big-endian 16-bit words, with the
/// carries not yet folded.
///
/// Every [`add_bytes`](Self::add_bytes) call treats its slice as starting at an even offset of
/// the summed data; only the last piece may have an odd length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    acc: u64,
}

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Self {
        Self { acc: 0 }
    }

    /// A sum seeded with a 16-bit value (for example the partial sum a `NEEDS_CSUM` packet
    /// carries in its checksum field).
    pub const fn from_u16(word: u16) -> Self {
        Self { acc: word as u64 }
    }

    /// Adds `bytes` as big-endian 16-bit words; an odd last byte is padded with a zero byte.
    pub fn add_bytes(&mut self, bytes: &[u8]) {
        // Fold per 64 KiB block, so the u64 accumulator cannot overflow whatever the length.
        for block in bytes.chunks(1 << 16) {
            self.acc += u64::from(sum_be(block));
        }
    }

    /// Adds one big-endian 16-bit word.
    pub fn add_u16(&mut self, word: u16) {
        self.acc += u64::from(word);
    }

    /// Adds a 32-bit value as two big-endian 16-bit words.
    pub fn add_u32(&mut self, word: u32) {
        self.acc += u64::from(word >> 16) + u64::from(word & 0xffff);
    }

    /// Adds another running sum (computed over data that starts at an even offset).
    pub fn add(&mut self, other: Checksum) {
        self.acc += u64::from(other.fold());
    }

    /// Returns the folded one's-complement sum, not complemented.
    pub const fn fold(self) -> u16 {
        fold(self.acc)
    }

    /// Returns the checksum to store in a header: the complement of [`fold`](Self::fold).
    pub const fn finish(self) -> u16 {
        !fold(self.acc)
    }

    /// Whether a sum taken over data that includes its checksum field verifies (folds to
    /// `0xffff`, one's-complement negative zero).
    pub const fn is_valid(self) -> bool {
        fold(self.acc) == 0xffff
    }
}

/// Returns the Internet checksum of `bytes`: the complement of their one's-complement sum.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut c = Checksum::new();
    c.add_bytes(bytes);
    c.finish()
}

/// Returns the pseudo-header sum of RFC 793/768 for IPv4: source, destination, zero byte,
/// protocol and the length of the TCP/UDP segment.
pub fn pseudo_header_v4(src: &[u8; 4], dst: &[u8; 4], protocol: u8, l4_len: u16) -> Checksum {
    let mut c = Checksum::new();
    c.add_bytes(src);
    c.add_bytes(dst);
    c.add_u16(u16::from(protocol));
    c.add_u16(l4_len);
    c
}

/// Returns the pseudo-header sum of RFC 8200 §8.1 for IPv6: source, destination, the 32-bit
/// upper-layer length and the next-header value.
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> Checksum {
    let mut c = Checksum::new();
    c.add_bytes(src);
    c.add_bytes(dst);
    c.add_u32(l4_len);
    c.add_u16(u16::from(next_header));
    c
}

/// Updates a stored checksum after a 16-bit field changed from `old` to `new`, without
/// re-reading the data (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
pub const fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u64 + (!old) as u64 + new as u64)
}

/// Updates a stored checksum after a 32-bit field (two adjacent words) changed.
pub const fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let c = update_u16(check, (old >> 16) as u16, (new >> 16) as u16);
    update_u16(c, old as u16, new as u16)
}

/// Folds a deferred-carry sum into 16 bits with end-around carries.
const fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The folded sum of `bytes` in big-endian word semantics (see the module doc).
fn sum_be(bytes: &[u8]) -> u16 {
    let native = fold(sum_native(bytes));
    if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    }
}

/// The unfolded sum of `bytes` read as native-endian words. Callers keep `bytes` under 2^32
/// bytes so the accumulator cannot overflow (each 8-byte step adds less than 2^33).
fn sum_native(bytes: &[u8]) -> u64 {
    let mut acc0: u64 = 0;
    let mut acc1: u64 = 0;
    let mut wide = bytes.chunks_exact(16);
    for c in &mut wide {
        let (a, b) = c.split_at(8);
        let a = u64::from_ne_bytes(<[u8; 8]>::try_from(a).unwrap_or_default());
        let b = u64::from_ne_bytes(<[u8; 8]>::try_from(b).unwrap_or_default());
        acc0 += (a & 0xffff_ffff) + (a >> 32);
        acc1 += (b & 0xffff_ffff) + (b >> 32);
    }
    let mut narrow = wide.remainder().chunks_exact(2);
    for c in &mut narrow {
        acc0 += u64::from(u16::from_ne_bytes(
            <[u8; 2]>::try_from(c).unwrap_or_default(),
        ));
    }
    if let [last] = narrow.remainder() {
        // The odd byte is the high-order byte of a big-endian word padded with zero.
        acc0 += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    acc0 + acc1
}

#[cfg(test)]
mod tests;
