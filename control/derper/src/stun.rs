//! The STUN responder: binding requests as Tailscale clients send them, answered with the
//! sender's address (XOR-MAPPED-ADDRESS) by the `weft_derp::stun` codec. Anything else on the
//! port is ignored, counted, as upstream's server does.

use std::sync::Arc;

use tokio::net::UdpSocket;
use weft_derp::stun;

use crate::relay::{bump, Relay};

/// Answers binding requests forever.
pub(crate) async fn serve(socket: UdpSocket, relay: Arc<Relay>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier answers surface here on some kernels; keep serving.
                tracing::debug!("stun recv: {e}");
                continue;
            }
        };
        match stun::parse_binding_request(buf.get(..n).unwrap_or_default()) {
            Ok(tx) => {
                let resp = stun::binding_response(tx, from);
                // Counted before sending, so a client that got the answer sees the count.
                bump(&relay.counters.stun_answered);
                if let Err(e) = socket.send_to(resp.as_bytes(), from).await {
                    tracing::debug!("stun send: {e}");
                }
            }
            Err(_) => bump(&relay.counters.stun_ignored),
        }
    }
}
