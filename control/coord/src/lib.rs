//! weft's coordination server, first part: the ts2021 control channel official Tailscale
//! clients open — `GET /key`, the `POST /ts2021` upgrade answered with weft's Noise response
//! (`weft-controlbase`), then HTTP/2 over the Noise records. Every `/machine/*` request on a
//! connection is authenticated as the machine key the handshake proved.
//!
//! Status: the channel works end to end (tests with weft's own client; the official client's
//! first HTTP/2 request arrives decrypted); the endpoints behind it (registration, map
//! streaming) answer `501 Not Implemented` until they exist, so a client gets a clear status,
//! never a hang. Storage, policy and map streaming come next (issue "coordination server").

mod noise_io;
mod server;

pub use noise_io::NoiseStream;
pub use server::{
    channel_body, full, serve_connection, text, Body, ControlKey, Handler, MachineRequest, Reply,
    MAX_REQUEST_BODY,
};
