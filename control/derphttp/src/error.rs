//! Errors: why a connection could not be made or ended, and why a packet was not queued.

use std::net::SocketAddr;

use weft_derp::client::ClientError;

/// Why [`crate::DerpClient::connect`] failed, or why an established connection ended (the
/// last thing [`crate::Events::recv`] returns). Every variant ends the connection; the caller
/// reconnects (see [`crate::Backoff`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DerpError {
    /// The URL's host name did not resolve.
    #[error("resolving {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The host name resolved to no address.
    #[error("{0}: no address")]
    NoAddress(String),
    /// The TCP connection failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server's certificate is not the pinned one.
    #[error("TLS: certificate pin mismatch: expected {expected}, server presented {presented}")]
    PinMismatch {
        /// The pin asked for.
        expected: String,
        /// The pin of the certificate the server presented.
        presented: String,
    },
    /// The TLS handshake failed for another reason (untrusted chain, wrong name, protocol).
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The TLS configuration was refused (not expected with the built-in provider).
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    /// The URL's host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The server answered the `/derp` upgrade with another status.
    #[error("upgrade refused: HTTP {status}")]
    UpgradeRefused {
        /// The status code.
        status: u16,
    },
    /// The response to the upgrade was not HTTP/1.1 or too long.
    #[error("bad HTTP response to the upgrade: {0}")]
    BadResponse(&'static str),
    /// The `Derp-Public-Key` header or the ServerKey frame named another key than the
    /// configured `server_key`.
    #[error("server key does not match the configured one")]
    ServerKeyMismatch,
    /// The connection, TLS, upgrade and DERP handshake did not finish in time.
    #[error("timed out during {0}")]
    Timeout(&'static str),
    /// A write stalled longer than the write timeout.
    #[error("write timed out")]
    WriteTimeout,
    /// The DERP state machine refused the stream (bad greeting, bad frame, 120 s of silence).
    #[error("DERP: {0}")]
    Protocol(#[from] ClientError),
    /// Reading or writing the connection failed.
    #[error("connection: {0}")]
    Io(#[source] std::io::Error),
    /// The server closed the connection.
    #[error("closed by the server")]
    ClosedByServer,
    /// The connection was closed by this side ([`crate::DerpClient::close`] or dropping the
    /// [`crate::Events`]), or its end was already reported.
    #[error("connection closed")]
    Closed,
    /// The OS gave no randomness for the handshake nonce.
    #[error("no OS randomness: {0}")]
    Random(String),
}

/// Why a packet or command was not queued. None of these ends the connection except
/// [`SendError::Closed`], which reports that it has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The outgoing buffer holds its limit ([`weft_derp::client::MAX_BUFFERED`] bytes); the
    /// packet was not queued (and is counted in [`crate::ClientStats::send_full`]).
    #[error("send buffer full")]
    Full,
    /// The connection has ended; take the reason from [`crate::Events::recv`].
    #[error("connection closed")]
    Closed,
    /// The packet is above the 64 KiB frame limit.
    #[error("packet too large")]
    TooLarge,
}

impl From<ClientError> for SendError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::BufferFull => Self::Full,
            ClientError::Encode(_) => Self::TooLarge,
            _ => Self::Closed,
        }
    }
}
