//! Clients and servers of this crate talking to each other in memory: the byte streams a shell
//! would carry are passed directly, so handshake, relaying and meshing are tested end to end
//! through the public API only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    missing_docs
)]

use std::collections::BTreeMap;
use std::time::Instant;

use weft_derp::client::{Client, ClientConfig, ClientEvent};
use weft_derp::frame::PeerGoneReason;
use weft_derp::handshake::MeshKey;
use weft_derp::server::{ConnId, ConnOptions, Event, MeshLinkId, Server, ServerConfig};
use weft_keys::{PrivateKey, PublicKey};

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

/// One server and the clients connected to it, with the pending bytes in each direction.
struct Net {
    server: Server,
    now: Instant,
    clients: BTreeMap<ConnId, (Client, Vec<u8>)>,
    events: Vec<Event>,
}

impl Net {
    fn new(server_key: u8, mesh: Option<MeshKey>) -> Self {
        let mut cfg = ServerConfig::new(key(server_key));
        cfg.mesh_key = mesh;
        Self {
            server: Server::new(cfg, [server_key; 32]),
            now: Instant::now(),
            clients: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Runs the handshake as a shell would and returns the connection id.
    fn connect(&mut self, cfg: ClientConfig) -> ConnId {
        let mut client = Client::new(cfg, self.now, [7; 32]).unwrap();
        let mut to_client = Vec::new();
        self.server.write_server_key(&mut to_client);
        assert_eq!(
            client.handle_input(self.now, &to_client).unwrap(),
            to_client.len()
        );
        let mut to_server = Vec::new();
        client.poll_transmit(&mut to_server);
        let (k, info, used) = self.server.read_client_info(&to_server).unwrap().unwrap();
        to_server.drain(..used);
        let id = self
            .server
            .accept(self.now, k, &info, ConnOptions::default());
        self.clients.insert(id, (client, to_server));
        self.pump();
        id
    }

    /// Moves bytes until nothing is left to move; collects Forward/Close events.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            let ids: Vec<ConnId> = self.clients.keys().copied().collect();
            for id in ids {
                let (client, pending) = self.clients.get_mut(&id).unwrap();
                client.poll_transmit(pending);
                if !pending.is_empty() {
                    let used = self.server.handle_input(id, self.now, pending).unwrap();
                    pending.drain(..used);
                    moved |= used > 0;
                }
            }
            while let Some(ev) = self.server.poll_event() {
                match ev {
                    Event::Wake(id) => {
                        let mut out = Vec::new();
                        while self.server.poll_transmit(id, &mut out, 64 << 10) {}
                        if let Some((client, _)) = self.clients.get_mut(&id) {
                            let used = client.handle_input(self.now, &out).unwrap();
                            assert_eq!(used, out.len());
                            moved = true;
                        }
                    }
                    other => self.events.push(other),
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn client(&mut self, id: ConnId) -> &mut Client {
        &mut self.clients.get_mut(&id).unwrap().0
    }

    fn events_of(&mut self, id: ConnId) -> Vec<ClientEvent> {
        let c = self.client(id);
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    fn packets_of(&mut self, id: ConnId) -> Vec<(PublicKey, Vec<u8>)> {
        self.events_of(id)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Packet { src, packet } => Some((src, packet)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn two_nodes_relay_through_one_server() {
    let mut net = Net::new(100, None);
    let a = net.connect(ClientConfig::new(key(1)));
    let b = net.connect(ClientConfig::new(key(2)));
    let evs = net.events_of(a);
    assert!(matches!(evs[0], ClientEvent::Connected { .. }));
    assert!(matches!(&evs[1], ClientEvent::ServerInfo(si) if si.version == 2));
    net.events_of(b);

    net.client(a).note_preferred(true).unwrap();
    net.client(a)
        .send_packet(key(2).public_key(), b"ping over derp")
        .unwrap();
    net.pump();
    assert_eq!(
        net.packets_of(b),
        vec![(key(1).public_key(), b"ping over derp".to_vec())]
    );
    net.client(b)
        .send_packet(key(1).public_key(), b"reply")
        .unwrap();
    net.client(b).send_ping([8; 8]).unwrap();
    net.pump();
    assert_eq!(
        net.packets_of(a),
        vec![(key(2).public_key(), b"reply".to_vec())]
    );
    assert_eq!(net.events_of(b), vec![ClientEvent::Pong([8; 8])]);
    assert_eq!(net.server.stats().current_home_clients, 1);

    // The server's keep-alive reaches the client.
    let t = net.server.poll_timeout().unwrap();
    net.server.handle_timeout(t);
    net.pump();
    assert_eq!(net.events_of(a), vec![ClientEvent::KeepAlive]);

    // A leaves: B, who received from A, hears it.
    net.server.disconnect(a);
    net.clients.remove(&a);
    net.pump();
    assert_eq!(
        net.events_of(b),
        vec![ClientEvent::PeerGone {
            peer: key(1).public_key(),
            reason: PeerGoneReason::Disconnected
        }]
    );
}

/// Two servers of one region: each has a mesh link (a Client with the mesh key) to the other,
/// watching its connections; a packet from a node on server 1 reaches a node on server 2.
#[test]
fn a_region_of_two_meshed_servers() {
    let mesh = MeshKey::from_bytes([0x11; 32]);
    let mut s1 = Net::new(101, Some(mesh.clone()));
    let mut s2 = Net::new(102, Some(mesh.clone()));
    let a = s1.connect(ClientConfig::new(key(1)));
    let b = s2.connect(ClientConfig::new(key(2)));

    // Server 1's mesh link into server 2 uses server 1's own key.
    let mut link_cfg = ClientConfig::new(key(101));
    link_cfg.mesh_key = Some(mesh);
    let link_conn = s2.connect(link_cfg);
    s2.client(link_conn).watch_conns().unwrap();
    s2.pump();
    let link = MeshLinkId(1);
    for ev in s2.events_of(link_conn) {
        match ev {
            ClientEvent::PeerPresent { peer, .. } => s1.server.mesh_peer_present(link, peer),
            ClientEvent::PeerGone { peer, .. } => s1.server.mesh_peer_gone(link, peer),
            _ => {}
        }
    }

    s1.client(a)
        .send_packet(key(2).public_key(), b"cross-server")
        .unwrap();
    s1.pump();
    let forwards: Vec<Event> = std::mem::take(&mut s1.events);
    assert_eq!(forwards.len(), 1);
    let Event::Forward {
        link: l,
        src,
        dst,
        packet,
    } = &forwards[0]
    else {
        panic!("expected a forward, got {forwards:?}");
    };
    assert_eq!(*l, link);
    s2.client(link_conn)
        .forward_packet(*src, *dst, packet)
        .unwrap();
    s2.pump();
    assert_eq!(
        s2.packets_of(b),
        vec![(key(1).public_key(), b"cross-server".to_vec())]
    );

    // B leaves server 2: the watch reports it, server 1 stops forwarding.
    s2.server.disconnect(b);
    s2.clients.remove(&b);
    s2.pump();
    let gone: Vec<ClientEvent> = s2.events_of(link_conn);
    assert!(gone.contains(&ClientEvent::PeerGone {
        peer: key(2).public_key(),
        reason: PeerGoneReason::Disconnected
    }));
    s1.server.mesh_peer_gone(link, key(2).public_key());
    s1.client(a)
        .send_packet(key(2).public_key(), b"late")
        .unwrap();
    s1.pump();
    assert!(s1.events.is_empty());
    assert_eq!(s1.server.stats().drops.total_packets(), 1);
}
