//! STUN (RFC 5389) binding requests and responses, exactly the subset Tailscale uses.
//!
//! A Tailscale node asks a DERP host "what is my address?" with a 40-byte Binding Request: the
//! header (type 0x0001, magic cookie, 12-byte transaction id), a SOFTWARE attribute `tailnode`
//! and a FINGERPRINT (CRC-32 of everything before it, XOR `0x5354554e`). The server answers with
//! a Binding Success Response carrying only XOR-MAPPED-ADDRESS: the request's UDP source, XORed
//! with the cookie (and, for IPv6, the transaction id).
//!
//! This module has both sides: [`parse_binding_request`] + [`binding_response`] for the server,
//! [`binding_request`] + [`parse_response`] for the client (which also accepts the
//! `0x8020` variant some servers send and falls back to MAPPED-ADDRESS). The codec is hand
//! written because it is a handful of fixed attributes and the server side must refuse exactly
//! what the official server refuses (non-Tailscale software, a missing or wrong fingerprint).
//!
//! It lives in `weft-derp` for now because the relay binary (`weft-derper`) may link only this
//! crate; the client side will be used by `weft-nat`.
//!
//! Guarantee: no function here panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The RFC 5389 magic cookie.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// The SOFTWARE value Tailscale clients send (8 bytes, so no padding).
pub const SOFTWARE: [u8; 8] = *b"tailnode";
/// Length of a Tailscale binding request: header 20, SOFTWARE 4 + 8, FINGERPRINT 4 + 4.
pub const REQUEST_LEN: usize = 40;
/// STUN header length.
pub const HEADER_LEN: usize = 20;

const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_XOR_MAPPED_ADDRESS_ALT: u16 = 0x8020;
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const FINGERPRINT_ATTR_LEN: usize = 8;

/// A STUN transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub [u8; 12]);

/// Why bytes are not the STUN message expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Not a STUN message (short, high bits set, or no magic cookie).
    #[error("not a STUN packet")]
    NotStun,
    /// A STUN message, but not a Binding Request.
    #[error("not a binding request")]
    NotBindingRequest,
    /// A STUN message, but not a Binding Success Response.
    #[error("not a success response")]
    NotSuccessResponse,
    /// Attributes overrun the message or an address attribute is malformed.
    #[error("malformed attributes")]
    MalformedAttrs,
    /// The request does not carry SOFTWARE `tailnode`.
    #[error("request is not from Tailscale software")]
    WrongSoftware,
    /// The request does not end with FINGERPRINT.
    #[error("request does not end in a fingerprint")]
    NoFingerprint,
    /// The FINGERPRINT does not match.
    #[error("request fingerprint is wrong")]
    WrongFingerprint,
}

fn fingerprint(b: &[u8]) -> u32 {
    crc32fast::hash(b) ^ FINGERPRINT_XOR
}

/// Whether `b` looks like a STUN message: at least a header, top two bits zero, magic cookie.
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN
        && b.first().is_some_and(|t| t & 0xc0 == 0)
        && b.get(4..8) == Some(&MAGIC_COOKIE[..])
}

fn tx_id(b: &[u8]) -> Option<TxId> {
    let t: [u8; 12] = b.get(8..20)?.try_into().ok()?;
    Some(TxId(t))
}

/// Calls `f(type, value)` for each attribute, honouring 4-byte padding.
fn for_each_attr(mut b: &[u8], mut f: impl FnMut(u16, &[u8])) -> Result<(), StunError> {
    while !b.is_empty() {
        let Some((hdr, rest)) = b.split_first_chunk::<4>() else {
            return Err(StunError::MalformedAttrs);
        };
        let typ = u16::from_be_bytes([hdr[0], hdr[1]]);
        let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        let padded = (len + 3) & !3;
        if padded > rest.len() {
            return Err(StunError::MalformedAttrs);
        }
        f(typ, rest.get(..len).ok_or(StunError::MalformedAttrs)?);
        b = rest.get(padded..).ok_or(StunError::MalformedAttrs)?;
    }
    Ok(())
}

/// The 40-byte binding request a Tailscale node sends.
pub fn binding_request(tx: TxId) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(dst) = b.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(&[0x00, 0x01]);
    put(&((REQUEST_LEN - HEADER_LEN) as u16).to_be_bytes());
    put(&MAGIC_COOKIE);
    put(&tx.0);
    put(&ATTR_SOFTWARE.to_be_bytes());
    put(&(SOFTWARE.len() as u16).to_be_bytes());
    put(&SOFTWARE);
    put(&ATTR_FINGERPRINT.to_be_bytes());
    put(&4u16.to_be_bytes());
    // The CRC covers everything before the FINGERPRINT attribute (whose length the header
    // already counts).
    let fp = fingerprint(
        b.get(..REQUEST_LEN - FINGERPRINT_ATTR_LEN)
            .unwrap_or_default(),
    );
    if let Some(dst) = b.get_mut(REQUEST_LEN - 4..) {
        dst.copy_from_slice(&fp.to_be_bytes());
    }
    b
}

/// Accepts a binding request as the official server does: SOFTWARE `tailnode` present,
/// FINGERPRINT last and correct. Returns its transaction id.
///
/// # Errors
/// [`StunError`] naming the first check that failed.
pub fn parse_binding_request(b: &[u8]) -> Result<TxId, StunError> {
    if !is_stun(b) {
        return Err(StunError::NotStun);
    }
    if b.get(..2) != Some(&[0x00, 0x01][..]) {
        return Err(StunError::NotBindingRequest);
    }
    let tx = tx_id(b).ok_or(StunError::NotStun)?;
    let (mut software_ok, mut last_attr, mut got_fp) = (false, 0u16, None);
    for_each_attr(b.get(HEADER_LEN..).unwrap_or_default(), |typ, value| {
        last_attr = typ;
        if typ == ATTR_SOFTWARE && value == SOFTWARE {
            software_ok = true;
        }
        if typ == ATTR_FINGERPRINT {
            got_fp = <[u8; 4]>::try_from(value).ok().map(u32::from_be_bytes);
        }
    })?;
    if !software_ok {
        return Err(StunError::WrongSoftware);
    }
    if last_attr != ATTR_FINGERPRINT {
        return Err(StunError::NoFingerprint);
    }
    let signed = b
        .get(..b.len().saturating_sub(FINGERPRINT_ATTR_LEN))
        .unwrap_or_default();
    if got_fp != Some(fingerprint(signed)) {
        return Err(StunError::WrongFingerprint);
    }
    Ok(tx)
}

/// A binding response: at most 44 bytes, kept inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunResponse {
    buf: [u8; 44],
    len: usize,
}

impl StunResponse {
    /// The encoded message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// The Binding Success Response telling the requester its address `addr` (the request's UDP
/// source as the socket reported it; an IPv4-mapped IPv6 source is sent as IPv6, as upstream).
pub fn binding_response(tx: TxId, addr: SocketAddr) -> StunResponse {
    let (family, ip): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(v4) => (1, v4.octets().to_vec()),
        IpAddr::V6(v6) => (2, v6.octets().to_vec()),
    };
    let attr_len = 4 + ip.len();
    let mut r = StunResponse {
        buf: [0u8; 44],
        len: 0,
    };
    let mut put = |bytes: &[u8]| {
        if let Some(dst) = r.buf.get_mut(r.len..r.len + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        r.len += bytes.len();
    };
    put(&[0x01, 0x01]);
    put(&((4 + attr_len) as u16).to_be_bytes());
    put(&MAGIC_COOKIE);
    put(&tx.0);
    put(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    put(&(attr_len as u16).to_be_bytes());
    put(&[0, family]);
    put(&(addr.port() ^ 0x2112).to_be_bytes());
    let mask = MAGIC_COOKIE.iter().chain(tx.0.iter());
    let xored: Vec<u8> = ip.iter().zip(mask).map(|(a, m)| a ^ m).collect();
    put(&xored);
    r
}

fn address(value: &[u8], xor: Option<TxId>) -> Result<SocketAddr, StunError> {
    let Some((hdr, rest)) = value.split_first_chunk::<4>() else {
        return Err(StunError::MalformedAttrs);
    };
    let mut port = u16::from_be_bytes([hdr[2], hdr[3]]);
    let len = match hdr[1] {
        1 => 4,
        2 => 16,
        _ => return Err(StunError::MalformedAttrs),
    };
    let raw = rest.get(..len).ok_or(StunError::MalformedAttrs)?;
    let mut ip = [0u8; 16];
    for (i, b) in raw.iter().enumerate() {
        let m = match xor {
            None => 0,
            Some(tx) => MAGIC_COOKIE
                .iter()
                .chain(tx.0.iter())
                .nth(i)
                .copied()
                .unwrap_or(0),
        };
        if let Some(dst) = ip.get_mut(i) {
            *dst = b ^ m;
        }
    }
    if xor.is_some() {
        port ^= 0x2112;
    }
    let ip = if len == 4 {
        IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
    } else {
        let v6 = Ipv6Addr::from(ip);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    };
    Ok(SocketAddr::new(ip, port))
}

/// Reads a Binding Success Response: its transaction id and the mapped address
/// (XOR-MAPPED-ADDRESS, or its `0x8020` variant, else MAPPED-ADDRESS). IPv4-mapped IPv6
/// addresses come back as IPv4; bytes past the declared length are ignored.
///
/// # Errors
/// [`StunError::NotStun`], [`StunError::NotSuccessResponse`], or
/// [`StunError::MalformedAttrs`] (also when no address attribute is present).
pub fn parse_response(b: &[u8]) -> Result<(TxId, SocketAddr), StunError> {
    if !is_stun(b) {
        return Err(StunError::NotStun);
    }
    let tx = tx_id(b).ok_or(StunError::NotStun)?;
    if b.get(..2) != Some(&[0x01, 0x01][..]) {
        return Err(StunError::NotSuccessResponse);
    }
    let declared = b
        .get(2..4)
        .and_then(|l| <[u8; 2]>::try_from(l).ok())
        .map_or(0, |l| usize::from(u16::from_be_bytes(l)));
    let attrs = b.get(HEADER_LEN..).unwrap_or_default();
    let attrs = attrs.get(..declared).ok_or(StunError::MalformedAttrs)?;
    let (mut xor_addr, mut plain_addr, mut err) = (None, None, None);
    for_each_attr(attrs, |typ, value| match typ {
        ATTR_XOR_MAPPED_ADDRESS | ATTR_XOR_MAPPED_ADDRESS_ALT => match address(value, Some(tx)) {
            Ok(a) => xor_addr = Some(a),
            Err(e) => err = Some(e),
        },
        ATTR_MAPPED_ADDRESS => match address(value, None) {
            Ok(a) => plain_addr = Some(a),
            Err(e) => err = Some(e),
        },
        _ => {}
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    xor_addr
        .or(plain_addr)
        .map(|a| (tx, a))
        .ok_or(StunError::MalformedAttrs)
}

#[cfg(test)]
#[path = "stun_tests.rs"]
mod tests;
