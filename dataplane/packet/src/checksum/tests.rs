use proptest::prelude::*;

use super::*;

/// RFC 1071 by the book: big-endian words, 32-bit accumulator folded at the end.
pub(crate) fn naive_sum(bytes: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let hi = u32::from(bytes[i]);
        let lo = bytes.get(i + 1).copied().map_or(0, u32::from);
        acc += (hi << 8) | lo;
        acc = (acc & 0xffff) + (acc >> 16);
        i += 2;
    }
    acc as u16
}

#[test]
fn rfc1071_example() {
    // RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
    let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    let mut c = Checksum::new();
    c.add_bytes(&data);
    assert_eq!(c.fold(), 0xddf2);
    assert_eq!(checksum(&data), !0xddf2);
}

#[test]
fn ipv4_header_example() {
    // A classic worked example: the header checksum of this IPv4 header is b861.
    let mut h = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(checksum(&h), 0xb861);
    h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
    let mut c = Checksum::new();
    c.add_bytes(&h);
    assert!(c.is_valid());
}

#[test]
fn empty_and_odd() {
    assert_eq!(checksum(&[]), 0xffff);
    assert_eq!(naive_sum(&[0xab]), 0xab00);
    let mut c = Checksum::new();
    c.add_bytes(&[0xab]);
    assert_eq!(c.fold(), 0xab00);
}

#[test]
fn all_ones_does_not_fold_to_zero() {
    let data = [0xffu8; 1500];
    let mut c = Checksum::new();
    c.add_bytes(&data);
    assert_eq!(c.fold(), naive_sum(&data));
    assert_eq!(c.fold(), 0xffff);
}

#[test]
fn pseudo_headers_match_byte_layout() {
    let src4 = [10, 0, 0, 1];
    let dst4 = [10, 0, 0, 2];
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&src4);
    bytes.extend_from_slice(&dst4);
    bytes.extend_from_slice(&[0, 6]);
    bytes.extend_from_slice(&1234u16.to_be_bytes());
    assert_eq!(
        pseudo_header_v4(&src4, &dst4, 6, 1234).fold(),
        naive_sum(&bytes)
    );

    let src6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst6 = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd, 0, 2];
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&src6);
    bytes.extend_from_slice(&dst6);
    bytes.extend_from_slice(&70000u32.to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 17]);
    assert_eq!(
        pseudo_header_v6(&src6, &dst6, 17, 70000).fold(),
        naive_sum(&bytes)
    );
}

proptest! {
    #[test]
    fn fast_sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let mut c = Checksum::new();
        c.add_bytes(&data);
        prop_assert_eq!(c.fold(), naive_sum(&data));
    }

    #[test]
    fn split_sums_add_up(data in proptest::collection::vec(any::<u8>(), 0..3000), cut in 0usize..1500) {
        let cut = (cut.min(data.len())) & !1;
        let mut whole = Checksum::new();
        whole.add_bytes(&data);
        let mut parts = Checksum::new();
        parts.add_bytes(&data[..cut]);
        let mut tail = Checksum::new();
        tail.add_bytes(&data[cut..]);
        parts.add(tail);
        prop_assert_eq!(whole.fold(), parts.fold());
    }

    #[test]
    fn incremental_update_verifies(
        mut data in proptest::collection::vec(any::<u8>(), 6..200),
        at in any::<prop::sample::Index>(),
        new in any::<u16>(),
        new32 in any::<u32>(),
    ) {
        // Word 0 holds the checksum, words 1..n-1 may be patched, and the last word is a fixed
        // non-zero value: real headers are never all zero, the one case where RFC 1624 eqn. 3
        // yields +0 instead of -0.
        if data.len() % 2 == 1 { data.push(0); }
        data[0] = 0;
        data[1] = 0;
        data.extend_from_slice(&[0x45, 0x00]);
        let check = checksum(&data);
        data[..2].copy_from_slice(&check.to_be_bytes());
        let patchable = data.len() / 2 - 2;
        let w = 1 + at.index(patchable);
        let old = u16::from_be_bytes([data[2 * w], data[2 * w + 1]]);
        data[2 * w..2 * w + 2].copy_from_slice(&new.to_be_bytes());
        let check = update_u16(check, old, new);
        data[..2].copy_from_slice(&check.to_be_bytes());
        let mut c = Checksum::new();
        c.add_bytes(&data);
        prop_assert!(c.is_valid());

        let w = 1 + at.index(patchable - 1);
        let old = u32::from_be_bytes([data[2 * w], data[2 * w + 1], data[2 * w + 2], data[2 * w + 3]]);
        data[2 * w..2 * w + 4].copy_from_slice(&new32.to_be_bytes());
        let check = update_u32(check, old, new32);
        data[..2].copy_from_slice(&check.to_be_bytes());
        let mut c = Checksum::new();
        c.add_bytes(&data);
        prop_assert!(c.is_valid());
    }
}
