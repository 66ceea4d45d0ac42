//! Invariants checked on arbitrary bytes, shared by the corpus replay test
//! (`tests/corpus.rs`) and any future cargo-fuzz target.
//!
//! Not part of the API: hidden from the docs, may change at any time.

use std::time::{Duration, Instant};

use weft_keys::PrivateKey;

use crate::client::{Client, ClientConfig};
use crate::frame::{self, Frame, CLIENT_MAX_FRAME_LEN, SERVER_MAX_FRAME_LEN};
use crate::handshake::ClientInfo;
use crate::server::{ConnOptions, Server, ServerConfig};
use crate::stun;

/// DERP frames: for both sides' limits, every frame cut from `data` that parses re-encodes to
/// bytes that parse to the same frame, cutting never reports more bytes than it was given, and a
/// server connection and a greeted client fed `data` return (an error or not) without panicking.
///
/// # Errors
/// A description of the broken invariant.
pub fn check_frames(data: &[u8], now: Instant) -> Result<(), String> {
    for limit in [SERVER_MAX_FRAME_LEN, CLIENT_MAX_FRAME_LEN] {
        let mut rest = data;
        while let Ok(Some((raw, used))) = frame::next_frame(rest, limit) {
            if used < frame::FRAME_HEADER_LEN || used > rest.len() {
                return Err(format!("cut {used} bytes of {}", rest.len()));
            }
            if let Ok(f) = raw.parse() {
                round_trip(&f)?;
            }
            rest = rest.get(used..).unwrap_or_default();
        }
    }

    let mut server = Server::new(ServerConfig::new(PrivateKey::from_bytes([1; 32])), [0; 32]);
    let peer = PrivateKey::from_bytes([2; 32]).public_key();
    let conn = server.accept(now, peer, &ClientInfo::default(), ConnOptions::default());
    if let Ok(used) = server.handle_input(conn, now, data) {
        if used > data.len() {
            return Err("server consumed more than it was given".into());
        }
    }
    let mut out = Vec::new();
    while server.poll_transmit(conn, &mut out, 1 << 16) {}
    server.handle_timeout(now + Duration::from_secs(3600));
    server.disconnect(conn);
    // The handshake reader too.
    let _ = server.read_client_info(data);

    let mut client = Client::new(
        ClientConfig::new(PrivateKey::from_bytes([3; 32])),
        now,
        [0; 32],
    )
    .map_err(|e| e.to_string())?;
    let mut hello = Vec::new();
    server.write_server_key(&mut hello);
    client
        .handle_input(now, &hello)
        .map_err(|e| format!("greeting refused: {e}"))?;
    if let Ok(used) = client.handle_input(now, data) {
        if used > data.len() {
            return Err("client consumed more than it was given".into());
        }
    }
    while client.poll_event().is_some() {}
    // An ungreeted client sees `data` as its first frames.
    if let Ok(mut fresh) = Client::new(
        ClientConfig::new(PrivateKey::from_bytes([3; 32])),
        now,
        [0; 32],
    ) {
        let _ = fresh.handle_input(now, data);
    }
    Ok(())
}

fn round_trip(f: &Frame<'_>) -> Result<(), String> {
    let mut bytes = Vec::new();
    f.encode_to_vec(&mut bytes)
        .map_err(|e| format!("{f:?} parsed but does not encode: {e}"))?;
    if bytes.len() != f.encoded_len() {
        return Err(format!("{f:?}: encoded_len disagrees"));
    }
    match frame::decode(&bytes, CLIENT_MAX_FRAME_LEN) {
        Ok(Some((g, used))) if g == *f && used == bytes.len() => Ok(()),
        other => Err(format!("{f:?} re-encoded and decoded as {other:?}")),
    }
}

/// STUN: whatever parses as a request or a response is rebuilt by the encoders into a message
/// that parses to the same values.
///
/// # Errors
/// A description of the broken invariant.
pub fn check_stun(data: &[u8]) -> Result<(), String> {
    if let Ok(tx) = stun::parse_binding_request(data) {
        let again = stun::parse_binding_request(&stun::binding_request(tx));
        if again != Ok(tx) {
            return Err(format!("request for {tx:?} re-parsed as {again:?}"));
        }
    }
    if let Ok((tx, addr)) = stun::parse_response(data) {
        let again = stun::parse_response(stun::binding_response(tx, addr).as_bytes());
        if again != Ok((tx, addr)) {
            return Err(format!("response {tx:?} {addr} re-parsed as {again:?}"));
        }
    }
    let _ = stun::is_stun(data);
    Ok(())
}
