//! The DERP connection of a benchmark peer: `weft-derphttp`'s client (TCP, TLS pinned by
//! `sha256-raw` or plain HTTP, the `/derp` upgrade, admission), seen as a packet counter on
//! one side and a packet pump on the other.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use weft_derphttp::{ClientEvent, DerpClient, DerpSender, DerpUrl, DialConfig, Events};
use weft_keys::{PrivateKey, PublicKey};

/// The receiving half.
pub(crate) struct DerpReader {
    events: Events,
}

/// The sending half.
pub(crate) struct DerpWriter {
    sender: DerpSender,
}

/// Connects and returns once the relay admitted the client.
pub(crate) async fn connect(
    addr: SocketAddr,
    pin: Option<&str>,
    me: PrivateKey,
) -> Result<(DerpReader, DerpWriter)> {
    let url = match pin {
        Some(p) => format!("https://{addr}/derp#{p}"),
        None => format!("http://{addr}/derp"),
    };
    let url = DerpUrl::parse(&url).with_context(|| format!("DERP URL {url}"))?;
    let client = DerpClient::connect(DialConfig::new(url, me))
        .await
        .context("connecting to the relay")?;
    let (sender, events) = client.into_parts();
    Ok((DerpReader { events }, DerpWriter { sender }))
}

impl DerpReader {
    /// Waits for the next event; returns 1 and the payload length for a relayed packet, zeros
    /// for anything else.
    pub(crate) async fn recv_counts(&mut self) -> Result<(u64, u64)> {
        match self.events.recv().await.context("relay connection")? {
            ClientEvent::Packet { packet, .. } => Ok((1, packet.len() as u64)),
            _ => Ok((0, 0)),
        }
    }
}

impl DerpWriter {
    /// Queues `count` copies of `packet` for `dst`, waiting whenever the client's outgoing
    /// buffer is full (so the sender runs exactly as fast as the connection drains).
    pub(crate) async fn send_batch(
        &mut self,
        dst: PublicKey,
        packet: &[u8],
        count: usize,
    ) -> Result<()> {
        for _ in 0..count {
            self.sender
                .send(dst, packet)
                .await
                .context("sending to the relay")?;
        }
        Ok(())
    }
}
