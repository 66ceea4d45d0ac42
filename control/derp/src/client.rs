//! The DERP client as a sans-IO state machine: the handshake, sending and receiving packets,
//! answering pings and noticing a dead server.
//!
//! It serves both the node side (weft's magicsock equivalent, later in `weft-nat`) and a
//! server's mesh links to the other servers of its region (ClientInfo with the mesh key, then
//! WatchConns and ForwardPacket), so that the server binary links only this crate.
//!
//! # Calling contract
//! * Feed everything read from the connection (after the HTTP upgrade) to
//!   [`Client::handle_input`]; keep the bytes it did not consume.
//! * After every call, write what [`Client::poll_transmit`] appends, and drain
//!   [`Client::poll_event`].
//! * Call [`Client::handle_timeout`] at [`Client::poll_timeout`]: a server that sent nothing for
//!   120 s (it sends keep-alives every 60 s) is dead, as in the official client.
//! * Any error is fatal for the connection: close it and make a new `Client` to reconnect.
//!
//! Behaviour follows `derp_client.go`: the ClientInfo goes out as soon as the server's key is
//! known (on the ServerKey frame, or at once when the key is pinned, for "fast start"), without
//! waiting for ServerInfo; frames too short for their type are skipped (counted), unknown types
//! ignored; a bad greeting or an unopenable ServerInfo is fatal.

use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use weft_keys::{PrivateKey, PublicKey};

use crate::frame::{
    self, frame_type as ft, EncodeError, Frame, FrameError, PeerEndpoint, PeerGoneReason,
    CLIENT_MAX_FRAME_LEN,
};
use crate::handshake::{self, ClientInfo, HandshakeError, MeshKey, ServerInfo};

/// How long the client waits for any frame before declaring the server dead.
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes the client buffers for writing before refusing more packets.
pub const MAX_BUFFERED: usize = 1 << 20;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The node private key (its public half is the client's DERP address).
    pub private_key: PrivateKey,
    /// The server's key when known in advance (pinned, or from the TLS meta certificate); the
    /// greeting must then match it.
    pub server_key: Option<PublicKey>,
    /// The region's mesh key, for a server's mesh links.
    pub mesh_key: Option<MeshKey>,
    /// Declare that pings are answered (the client always answers them).
    pub can_ack_pings: bool,
    /// Declare a prober.
    pub is_prober: bool,
    /// Optional application name for the server's statistics.
    pub app_name: Option<String>,
}

impl ClientConfig {
    /// A regular node client.
    pub fn new(private_key: PrivateKey) -> Self {
        Self {
            private_key,
            server_key: None,
            mesh_key: None,
            can_ack_pings: true,
            is_prober: false,
            app_name: None,
        }
    }
}

/// What the server told the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The server's key arrived and ClientInfo was queued: packets may be sent.
    Connected {
        /// The server's public key.
        server_key: PublicKey,
    },
    /// The server's ServerInfo (rate limit hints).
    ServerInfo(ServerInfo),
    /// A relayed packet.
    Packet {
        /// Sender's node key.
        src: PublicKey,
        /// The packet.
        packet: Vec<u8>,
    },
    /// A peer left the server (or is unknown to it).
    PeerGone {
        /// The peer.
        peer: PublicKey,
        /// Why.
        reason: PeerGoneReason,
    },
    /// A client connected to the server (only for watchers).
    PeerPresent {
        /// The client.
        peer: PublicKey,
        /// Its address and flags, when sent.
        endpoint: Option<PeerEndpoint>,
    },
    /// A keep-alive.
    KeepAlive,
    /// The server pinged (already answered).
    Ping([u8; 8]),
    /// The answer to one of our pings.
    Pong([u8; 8]),
    /// A health problem text; empty clears it.
    Health(String),
    /// The server is restarting.
    Restarting {
        /// Wait this long before reconnecting.
        reconnect_in: Duration,
        /// Keep trying this long.
        try_for: Duration,
    },
}

/// Why the client gave up on the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The stream broke (oversize frame).
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The ServerInfo did not open or parse, or ClientInfo could not be sealed.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The first frame was not a valid ServerKey greeting.
    #[error("invalid server greeting")]
    BadGreeting,
    /// The server's key is not the pinned one.
    #[error("server key does not match the pinned key")]
    ServerKeyMismatch,
    /// Sending before the server's key is known.
    #[error("not connected yet")]
    NotConnected,
    /// More than [`MAX_BUFFERED`] bytes wait to be written; the packet was not queued.
    #[error("send buffer full")]
    BufferFull,
    /// A packet above the frame limit.
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// Nothing heard from the server for [`READ_TIMEOUT`].
    #[error("server silent for {READ_TIMEOUT:?}")]
    Timeout,
}

/// The DERP client state machine. See the module documentation for the calling contract.
pub struct Client {
    config: ClientConfig,
    server_key: Option<PublicKey>,
    greeted: bool,
    info_sent: bool,
    rng: rand_chacha::ChaCha20Rng,
    out: Vec<u8>,
    events: std::collections::VecDeque<ClientEvent>,
    last_recv: Instant,
    malformed: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server_key", &self.server_key)
            .field("info_sent", &self.info_sent)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a connection at `now`. `seed` seeds the ClientInfo nonce (the shell passes OS
    /// randomness). With a pinned server key the ClientInfo is queued at once.
    ///
    /// # Errors
    /// [`ClientError::Handshake`] if the ClientInfo cannot be sealed (not expected).
    pub fn new(config: ClientConfig, now: Instant, seed: [u8; 32]) -> Result<Self, ClientError> {
        let mut c = Self {
            server_key: config.server_key,
            config,
            greeted: false,
            info_sent: false,
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
            out: Vec::new(),
            events: std::collections::VecDeque::new(),
            last_recv: now,
            malformed: 0,
        };
        if let Some(k) = c.server_key {
            c.send_client_info(k)?;
        }
        Ok(c)
    }

    /// The client's own public key.
    pub fn public_key(&self) -> PublicKey {
        self.config.private_key.public_key()
    }

    /// The server's key, once known.
    pub fn server_key(&self) -> Option<PublicKey> {
        self.server_key
    }

    /// Whether packets may be sent (ClientInfo is queued).
    pub fn is_connected(&self) -> bool {
        self.info_sent
    }

    /// Frames skipped because they were too short for their type.
    pub fn malformed_frames(&self) -> u64 {
        self.malformed
    }

    fn send_client_info(&mut self, server_key: PublicKey) -> Result<(), ClientError> {
        let info = ClientInfo {
            mesh_key: self.config.mesh_key.clone(),
            version: frame::PROTOCOL_VERSION,
            can_ack_pings: self.config.can_ack_pings,
            is_prober: self.config.is_prober,
            app_name: self.config.app_name.clone(),
        };
        let mut nonce = [0u8; frame::NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        handshake::write_client_info(
            &self.config.private_key,
            &server_key,
            &info,
            nonce,
            &mut self.out,
        )?;
        self.info_sent = true;
        self.events.push_back(ClientEvent::Connected { server_key });
        Ok(())
    }

    /// Handles every complete frame at the front of `buf`; returns the bytes used.
    ///
    /// # Errors
    /// Any [`ClientError`] is fatal for the connection.
    pub fn handle_input(&mut self, now: Instant, buf: &[u8]) -> Result<usize, ClientError> {
        let mut used = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            let limit = if self.greeted {
                CLIENT_MAX_FRAME_LEN
            } else {
                1 << 10 // the official client reads the greeting with a 1 KiB limit
            };
            let Some((raw, n)) = frame::next_frame(rest, limit).map_err(|e| match e {
                FrameError::TooLarge { .. } if !self.greeted => ClientError::BadGreeting,
                e => ClientError::Frame(e),
            })?
            else {
                return Ok(used);
            };
            used += n;
            self.last_recv = now;
            if self.greeted {
                self.handle_frame(raw)?;
            } else {
                self.handle_greeting(raw)?;
            }
        }
    }

    fn handle_greeting(&mut self, raw: frame::RawFrame<'_>) -> Result<(), ClientError> {
        if raw.frame_type != ft::SERVER_KEY {
            return Err(ClientError::BadGreeting);
        }
        let Ok(Frame::ServerKey { key }) = raw.parse() else {
            return Err(ClientError::BadGreeting);
        };
        self.greeted = true;
        match self.server_key {
            Some(pinned) if pinned != key => Err(ClientError::ServerKeyMismatch),
            Some(_) => Ok(()),
            None => {
                self.server_key = Some(key);
                self.send_client_info(key)
            }
        }
    }

    fn handle_frame(&mut self, raw: frame::RawFrame<'_>) -> Result<(), ClientError> {
        let frame = match raw.parse() {
            Ok(f) => f,
            Err(_) if raw.frame_type == ft::SERVER_INFO => {
                return Err(ClientError::Handshake(HandshakeError::BadLength {
                    len: raw.payload.len(),
                }))
            }
            Err(_) => {
                // Too short for its type: the official client logs and skips it.
                self.malformed += 1;
                return Ok(());
            }
        };
        let ev = match frame {
            Frame::ServerInfo { sealed } => {
                let Some(server_key) = self.server_key else {
                    return Err(ClientError::NotConnected);
                };
                ClientEvent::ServerInfo(handshake::open_server_info(
                    &self.config.private_key,
                    &server_key,
                    sealed,
                )?)
            }
            Frame::RecvPacket { src, packet } => ClientEvent::Packet {
                src,
                packet: packet.to_vec(),
            },
            Frame::KeepAlive => ClientEvent::KeepAlive,
            Frame::PeerGone { peer, reason } => ClientEvent::PeerGone { peer, reason },
            Frame::PeerPresent { peer, endpoint } => ClientEvent::PeerPresent { peer, endpoint },
            Frame::Ping(data) => {
                let _ = Frame::Pong(data).encode_to_vec(&mut self.out);
                ClientEvent::Ping(data)
            }
            Frame::Pong(data) => ClientEvent::Pong(data),
            Frame::Health { problem } => {
                ClientEvent::Health(String::from_utf8_lossy(problem).into_owned())
            }
            Frame::Restarting {
                reconnect_in_ms,
                try_for_ms,
            } => ClientEvent::Restarting {
                reconnect_in: Duration::from_millis(reconnect_in_ms.into()),
                try_for: Duration::from_millis(try_for_ms.into()),
            },
            _ => return Ok(()), // unknown, or a frame only servers receive: ignored
        };
        self.events.push_back(ev);
        Ok(())
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Moves the bytes waiting to be written to the end of `out`; returns whether there were any.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.out.is_empty() {
            return false;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut self.out);
        } else {
            out.append(&mut self.out);
        }
        true
    }

    /// When [`Client::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.last_recv + READ_TIMEOUT)
    }

    /// Checks the read deadline.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when nothing arrived for [`READ_TIMEOUT`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        if now >= self.last_recv + READ_TIMEOUT {
            return Err(ClientError::Timeout);
        }
        Ok(())
    }

    fn queue(&mut self, frame: &Frame<'_>) -> Result<(), ClientError> {
        if !self.info_sent {
            return Err(ClientError::NotConnected);
        }
        if self.out.len() + frame.encoded_len() > MAX_BUFFERED {
            return Err(ClientError::BufferFull);
        }
        frame.encode_to_vec(&mut self.out)?;
        Ok(())
    }

    /// Queues a packet for `dst`.
    ///
    /// # Errors
    /// [`ClientError::NotConnected`] before the handshake, [`ClientError::BufferFull`] when the
    /// writer is behind, [`ClientError::Encode`] for a packet above 64 KiB. None is fatal.
    pub fn send_packet(&mut self, dst: PublicKey, packet: &[u8]) -> Result<(), ClientError> {
        self.queue(&Frame::SendPacket { dst, packet })
    }

    /// Queues a packet received for another server's client (mesh links only).
    ///
    /// # Errors
    /// As [`Client::send_packet`].
    pub fn forward_packet(
        &mut self,
        src: PublicKey,
        dst: PublicKey,
        packet: &[u8],
    ) -> Result<(), ClientError> {
        self.queue(&Frame::ForwardPacket { src, dst, packet })
    }

    /// Queues a ping; the server answers with a Pong event.
    ///
    /// # Errors
    /// As [`Client::send_packet`].
    pub fn send_ping(&mut self, data: [u8; 8]) -> Result<(), ClientError> {
        self.queue(&Frame::Ping(data))
    }

    /// Tells the server whether it is this client's home.
    ///
    /// # Errors
    /// As [`Client::send_packet`].
    pub fn note_preferred(&mut self, preferred: bool) -> Result<(), ClientError> {
        self.queue(&Frame::NotePreferred { preferred })
    }

    /// Subscribes to the server's connects and disconnects (mesh key required).
    ///
    /// # Errors
    /// As [`Client::send_packet`].
    pub fn watch_conns(&mut self) -> Result<(), ClientError> {
        self.queue(&Frame::WatchConns)
    }

    /// Asks the server to close `peer`'s connections (mesh key required).
    ///
    /// # Errors
    /// As [`Client::send_packet`].
    pub fn close_peer(&mut self, peer: PublicKey) -> Result<(), ClientError> {
        self.queue(&Frame::ClosePeer { peer })
    }
}

#[cfg(test)]
mod tests;
