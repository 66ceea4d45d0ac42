//! The cross-platform WireGuard configuration protocol ("UAPI"): the text protocol that `wg(8)`
//! speaks to userspace implementations over `/var/run/wireguard/IFNAME.sock`.
//!
//! # Why it is split in two
//!
//! [`proto`] is sans-IO: it turns bytes into [`Request`]s and device snapshots into reply text,
//! with no sockets, threads or clock. Everything that can be wrong about the protocol (framing,
//! key names, value syntax, limits) lives there and is tested byte-for-byte, by property tests
//! and by a fuzz target, without touching the filesystem. [`server`] is the thin I/O shell: it
//! owns the Unix socket, reads bytes, feeds the parser, calls the device through a handler
//! closure and writes replies. Keeping the shell dumb keeps the part that needs a socket (and
//! root, for the real path) small enough to test with a handful of integration tests.
//!
//! # Compatibility target
//!
//! The reference is wireguard-go (`device/uapi.go`, `ipc/uapi_*.go`) and the parser in
//! wireguard-tools (`src/ipc-uapi.h`): key names, their order in `get` replies, which keys are
//! valid before and after the first `public_key`, and the (negative) errno values written in
//! replies all follow wireguard-go, so `wg` and `wg-quick` cannot tell the difference. Where we
//! deliberately differ, the difference is documented on the item concerned; the main one is that
//! a `set` request is parsed and validated completely before anything is applied, so a request
//! with a bad line changes nothing (wireguard-go applies lines as it reads them).

mod format;
mod parse;
pub mod proto;
pub mod server;

pub use proto::{
    parse_requests, write_errno, write_get_reply, write_request, DeviceSnapshot, Feed,
    ParserConfig, PeerSnapshot, PeerUpdate, Request, RequestParser, ScopeResolver, SetRequest,
    UapiError,
};
pub use server::{UapiHandle, UapiServer, UapiServerError};

#[cfg(test)]
mod tests;

/// Checks the parser's invariants on arbitrary input; panics (via `assert!`) when one is broken.
///
/// Shared by the cargo-fuzz target `dataplane/fuzz/fuzz_targets/uapi_request.rs` and by an
/// ordinary test that replays the committed corpus, so a crash found by the fuzzer becomes a
/// regression test by dropping the input into `dataplane/fuzz/corpus/uapi_request/`.
///
/// Invariants:
/// 1. parsing never panics, whatever the bytes;
/// 2. the result does not depend on how the input is split into reads (checked for a split
///    point derived from the input and for byte-at-a-time feeding);
/// 3. every successfully parsed request, written back out with [`write_request`] and parsed
///    again, is identical.
#[doc(hidden)]
pub fn fuzz_uapi_request(data: &[u8]) {
    let whole = parse_requests(data);

    // Split once at a point chosen by the input itself, so the fuzzer can steer it.
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % data.len().max(1));
    let (head, tail) = data.split_at(split.min(data.len()));
    let mut parser = RequestParser::new();
    let mut chunked = Vec::new();
    feed_all(&mut parser, head, &mut chunked);
    feed_all(&mut parser, tail, &mut chunked);
    chunked.extend(parser.finish());
    assert_eq!(whole, chunked, "splitting the input changed the result");

    // Byte at a time (bounded so the fuzzer stays fast on large inputs).
    if data.len() <= 4096 {
        let mut parser = RequestParser::new();
        let mut bytewise = Vec::new();
        for byte in data.chunks(1) {
            feed_all(&mut parser, byte, &mut bytewise);
        }
        bytewise.extend(parser.finish());
        assert_eq!(whole, bytewise, "byte-at-a-time feeding changed the result");
    }

    for request in whole.iter().flatten() {
        let mut text = String::new();
        write_request(request, &mut text);
        let again = parse_requests(text.as_bytes());
        assert_eq!(
            again.as_slice(),
            std::slice::from_ref(&Ok(request.clone())),
            "re-serialized request did not parse back to itself"
        );
    }
}

fn feed_all(
    parser: &mut RequestParser,
    mut input: &[u8],
    out: &mut Vec<Result<Request, UapiError>>,
) {
    while !input.is_empty() {
        let fed = parser.feed(input);
        out.extend(fed.output);
        input = input.get(fed.consumed..).unwrap_or_default();
        if fed.consumed == 0 {
            break;
        }
    }
}
