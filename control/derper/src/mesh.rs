//! Mesh links: this relay dials every other server of its region (`--mesh-with`) as a DERP
//! client with the region's mesh key, watches its connections, and forwards packets for the
//! clients it reports (`tailscale-protocol.md` §6.8).
//!
//! One task per peer URL keeps one `weft_derphttp` connection: the relay's own DERP key as the
//! client key, the mesh key in ClientInfo, then WatchConns. Each PeerPresent registers the
//! link as a forwarder for that key in the core ([`weft_derp::server::Server::mesh_peer_present`]),
//! each PeerGone removes it, and losing the link forgets everything learnt through it (so
//! clients that received from those keys hear PeerGone). The core decides when a packet goes
//! to a mesh link (`Event::Forward`); [`crate::relay`] writes it as a ForwardPacket through the
//! link's sender, and when the link is full the sending client waits (is not read) until it
//! has room, as upstream's blocking ForwardPacket makes it. A failed dial or a broken link
//! is retried every `retry` (5 s, as upstream). A URL that turns out to be this relay (the
//! server key is our own) is dropped for good: upstream ignores itself the same way, which lets
//! every server of a region run with the same `--mesh-with` list.
//!
//! The link's TLS is per URL: a `#sha256-raw:<hex>` fragment pins the peer's certificate (the
//! pin `weft-derper` prints); `http://` URLs are plain (labs and tests).

use std::sync::Arc;
use std::time::Duration;

use weft_derp::client::ClientEvent;
use weft_derp::handshake::MeshKey;
use weft_derp::server::MeshLinkId;
use weft_derphttp::{DerpClient, DerpError, DerpUrl, DialConfig};
use weft_keys::PrivateKey;

use crate::relay::{bump, Relay};

/// How often a failed or broken mesh link is dialled again (upstream: 5 s).
pub const MESH_RETRY: Duration = Duration::from_secs(5);

/// Keeps the link to `url` up until the task is aborted.
pub(crate) async fn run_link(
    relay: Arc<Relay>,
    link: MeshLinkId,
    url: DerpUrl,
    private_key: PrivateKey,
    mesh_key: MeshKey,
    retry: Duration,
) {
    let me = private_key.public_key();
    let mut cfg = DialConfig::new(url.clone(), private_key);
    cfg.mesh_key = Some(mesh_key);
    cfg.app_name = Some("weft-derper-mesh".to_owned());
    let mut failures = 0u64;
    loop {
        match DerpClient::connect(cfg.clone()).await {
            Ok(c) if c.server_key() == me => {
                tracing::info!(%url, "mesh: this URL is this relay; not meshing with itself");
                return;
            }
            Ok(c) => {
                failures = 0;
                let e = serve_link(&relay, link, c).await;
                bump(&relay.counters.mesh_failures);
                tracing::warn!(%url, "mesh link lost: {e}; retrying in {retry:?}");
            }
            Err(e) => {
                bump(&relay.counters.mesh_failures);
                failures += 1;
                // Say it once, then only now and then: a peer that is down is not news.
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(%url, failures, "mesh dial failed: {e}; retrying every {retry:?}");
                }
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// Runs one established link until it ends; returns why.
async fn serve_link(relay: &Arc<Relay>, link: MeshLinkId, mut c: DerpClient) -> DerpError {
    let sender = c.sender();
    if let Err(e) = sender.watch_conns() {
        return DerpError::Io(std::io::Error::other(format!("queueing WatchConns: {e}")));
    }
    let me = relay.with_server(weft_derp::server::Server::public_key);
    relay.mesh_link_up(link, sender);
    tracing::info!(url = %c.remote_addr(), server = %c.server_key(), "mesh link up");
    let err = loop {
        match c.recv().await {
            // Our own mesh client, as the peer sees it: never a forwarding target.
            Ok(ClientEvent::PeerPresent { peer, .. }) if peer == me => {}
            Ok(ClientEvent::PeerPresent { peer, .. }) => relay.mesh_peer_present(link, peer),
            Ok(ClientEvent::PeerGone { peer, .. }) => relay.mesh_peer_gone(link, peer),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    relay.mesh_link_down(link);
    err
}
