//! DERP, Tailscale's relay protocol, as a sans-IO core: the frame codec, the sealed handshake,
//! and client and server state machines; plus the STUN codec a DERP host answers with.
//!
//! DERP relays WireGuard and disco packets between nodes addressed by their node public keys,
//! over one long-lived TCP/TLS (or WebSocket) stream per node. Official Tailscale clients must
//! be able to use a weft relay unchanged, so everything here follows the official client and
//! server byte for byte (see `tailscale-protocol.md` §6 and §8, and the module docs for the
//! places where upstream behaviour was checked in its source).
//!
//! Why sans-IO: the server's rules (where a packet goes, which duplicate connection is live,
//! who must hear that a peer left, when to drop) are the hard part, and they are tested here
//! with a fake clock and in-memory byte streams, hostile input included, without sockets or
//! threads. The `weft-derper` binary is a thin shell: TLS, the HTTP upgrade and WebSocket,
//! admission checks, reader/writer tasks that pass bytes to [`server::Server`] and write what
//! it returns, a UDP socket answering [`stun`], and `/metrics` from [`server::ServerStats`].
//! This crate therefore contains no networking code, reads no clock (`now` is always an
//! argument) and draws no OS randomness (generators are seeded by the caller); it is a core
//! crate under rule 1 of the architecture (checked by `scripts/check-deps.sh`).
//!
//! Modules:
//! * [`frame`] — frame header and every frame type, encode/decode, size limits.
//! * [`handshake`] — ClientInfo/ServerInfo JSON, NaCl box sealing, the mesh key.
//! * [`server`] — the relay state machine (queues, duplicates, mesh, PeerGone/PeerPresent).
//! * [`client`] — the client state machine, for nodes and for servers' mesh links.
//! * [`stun`] — STUN binding request/response (here because `weft-derper` links only this crate).
//!
//! Keys are `weft_keys::PublicKey`/`PrivateKey`: DERP addresses are node keys, the same
//! Curve25519 keys WireGuard uses.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod client;
pub mod frame;
pub mod handshake;
pub mod server;
pub mod stun;

#[doc(hidden)]
pub mod fuzzing;
