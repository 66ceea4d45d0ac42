//! `weft-derphttp`: an async DERP client — TCP, TLS, the `/derp` HTTP upgrade and a driver
//! around the sans-IO `weft_derp::client::Client`.
//!
//! Why a crate of its own: three programs need the same client shell — a node agent relaying
//! WireGuard and disco packets through its home and other regions, the relay itself for its
//! mesh links to the other servers of its region (`weft-derper --mesh-with`), and the relay
//! throughput benchmark. The protocol rules stay in `weft-derp` (this crate frames nothing
//! itself); what is here is only what needs a runtime: sockets, TLS, timers, tasks.
//!
//! # Using it
//! ```no_run
//! # async fn demo(key: weft_keys::PrivateKey, peer: weft_keys::PublicKey) -> Result<(), Box<dyn std::error::Error>> {
//! use weft_derphttp::{DerpClient, DerpUrl, DialConfig};
//! use weft_derp::client::ClientEvent;
//! // The pin rides in the fragment, as in a DERP map's CertName.
//! let url = DerpUrl::parse("https://10.0.0.2:3340#sha256-raw:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")?;
//! let mut c = DerpClient::connect(DialConfig::new(url, key)).await?;
//! c.sender().try_send(peer, b"hello")?;
//! loop {
//!     match c.recv().await? {
//!         ClientEvent::Packet { src, packet } => println!("{} bytes from {src}", packet.len()),
//!         ClientEvent::PeerGone { peer, reason } => println!("{peer} gone: {reason:?}"),
//!         _ => {}
//!     }
//! }
//! # }
//! ```
//!
//! * [`DerpClient::connect`] returns once the server has admitted the client (its ServerInfo
//!   arrived), so a packet sent right after is routed.
//! * [`DerpSender`] is the cloneable send handle. `try_send` never waits: when the outgoing
//!   buffer is at its bound (1 MiB of unwritten frames) it returns [`SendError::Full`] and
//!   counts it; `send().await` waits for room instead. Mesh commands (`try_forward_packet`,
//!   `watch_conns`, `close_peer`), `send_ping` and `note_preferred` are there too.
//! * [`Events::recv`] yields the server's frames as `weft_derp::client::ClientEvent`s; when the
//!   connection ends it returns the reason ([`DerpError`]) once. Nothing reconnects by itself:
//!   the caller dials again, with [`Backoff`] for the delays. Events must be drained: a
//!   consumer that stops reading stops the connection's reader (and, after 120 s without a
//!   processed frame, the core declares the server dead).
//!
//! # Throughput
//! Sending encodes straight into the core's buffer under a short lock; one writer task swaps
//! that whole buffer out and writes it in one call, so a busy connection writes hundreds of
//! frames per syscall (see [`ClientStats::writes`]). Reads take up to 256 KiB; the events of
//! one read travel as one batch. Per packet, the only allocation is the core's copy of each
//! received packet. Details in the `conn` module.
//!
//! # TLS
//! rustls with the ring provider, as `weft-derper`. [`TlsVerify::Pin`] trusts one certificate
//! by its `sha256-raw` hash ([`cert_pin`], the DERP map's `CertName`); [`TlsVerify::Roots`]
//! verifies a chain against roots the caller supplies; `http://` URLs are plain TCP (tests and
//! labs).
//!
//! Not here: WebSocket transport, fast start via the TLS meta certificate, HTTP proxies.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod backoff;
mod conn;
mod dial;
mod error;
pub mod tls;
mod url;

pub use backoff::{Backoff, MAX_BACKOFF};
pub use conn::{ClientStats, DerpClient, DerpSender, Events};
pub use dial::DialConfig;
pub use error::{DerpError, SendError};
pub use tls::{cert_pin, TlsVerify};
pub use url::{DerpUrl, Scheme, UrlError};
pub use weft_derp::client::ClientEvent;
