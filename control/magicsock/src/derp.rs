//! The node's relay links: one to its home region, kept for the node's life, and one to each
//! other region a peer calls home, dialled on the first packet for it and closed after
//! [`IDLE_CLOSE`] without sends. A peer sends to *our* home region, so a link to another
//! region only carries our packets out; once nothing goes out it is dead weight (Tailscale
//! clients close such links on the same kind of timer).
//!
//! A link takes packets before it is up: up to [`HELD_WHILE_DIALLING`] are held and written on
//! connect. Dropping them instead would lose the first WireGuard initiation to a peer homed
//! elsewhere, and WireGuard retries only after 5 s. A held packet older than [`HELD_MAX_AGE`]
//! is dropped instead (counted): after a long outage, minutes-old packets are only noise.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use weft_derphttp::{Backoff, ClientEvent, DerpClient, DerpSender, DerpUrl, DialConfig};
use weft_keys::{PrivateKey, PublicKey};
use weft_nat::node::RegionId;

use crate::ShellStats;

/// A link to a region other than home closes after this long without a packet sent on it.
pub const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// Packets held per link while it is (re)connecting; beyond it they are dropped and counted.
pub const HELD_WHILE_DIALLING: usize = 32;
/// A held packet older than this is dropped rather than sent (WireGuard has retried by then).
pub const HELD_MAX_AGE: Duration = Duration::from_secs(5);

/// One relay of the DERP map.
#[derive(Debug, Clone)]
pub struct DerpRegion {
    /// Its region id.
    pub region: RegionId,
    /// `https://host:port#sha256-raw:…` or `http://…` (test mode).
    pub url: DerpUrl,
    /// Dial this address instead of resolving the URL's host.
    pub addr: Option<SocketAddr>,
}

/// A packet relayed to this node, and the region whose link carried it.
pub(crate) struct DerpIn {
    pub(crate) region: RegionId,
    pub(crate) src: PublicKey,
    pub(crate) bytes: Vec<u8>,
}

/// What a link's task and the shell share.
#[derive(Default)]
struct Shared {
    /// Set while connected.
    sender: Option<DerpSender>,
    /// Packets accepted while not connected, with when they were, written on connect.
    held: VecDeque<(Instant, PublicKey, Vec<u8>)>,
}

impl Shared {
    /// Drops held packets older than [`HELD_MAX_AGE`]; returns how many.
    fn expire(&mut self, now: Instant) -> u64 {
        let before = self.held.len();
        while self
            .held
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= HELD_MAX_AGE)
        {
            self.held.pop_front();
        }
        (before - self.held.len()) as u64
    }
}

struct Link {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
    last_send: Instant,
}

impl Link {
    /// Stops the link; returns how many held packets that dropped.
    fn close(&self) -> u64 {
        self.task.abort();
        let Ok(s) = self.shared.lock() else {
            return 0;
        };
        if let Some(sender) = &s.sender {
            sender.close();
        }
        s.held.len() as u64
    }
}

/// The links, and the DERP map they are dialled from.
pub(crate) struct Links {
    home: Option<RegionId>,
    map: BTreeMap<RegionId, DerpRegion>,
    links: BTreeMap<RegionId, Link>,
    key: PrivateKey,
    tx: mpsc::Sender<DerpIn>,
    stats: Arc<Mutex<ShellStats>>,
}

impl Links {
    /// Dials the home region (if any); the others wait for their first packet.
    pub(crate) fn new(
        home: Option<DerpRegion>,
        others: Vec<DerpRegion>,
        key: PrivateKey,
        tx: mpsc::Sender<DerpIn>,
        stats: Arc<Mutex<ShellStats>>,
        now: Instant,
    ) -> Self {
        let mut map: BTreeMap<RegionId, DerpRegion> =
            others.into_iter().map(|r| (r.region, r)).collect();
        let home_id = home.as_ref().map(|h| h.region);
        if let Some(h) = home {
            map.insert(h.region, h);
        }
        let mut me = Self {
            home: home_id,
            map,
            links: BTreeMap::new(),
            key,
            tx,
            stats,
        };
        if let Some(id) = home_id {
            me.open(id, now);
        }
        me
    }

    /// Sends (or holds, while the link connects) `bytes` for `dst` through `region`'s relay.
    /// False when it was dropped: an unknown region, a full relay queue or a full hold.
    pub(crate) fn send(
        &mut self,
        region: RegionId,
        dst: PublicKey,
        bytes: &[u8],
        now: Instant,
    ) -> bool {
        if !self.links.contains_key(&region) {
            if !self.map.contains_key(&region) {
                self.count(|s| s.derp_unknown_region += 1);
                return false;
            }
            self.open(region, now);
        }
        let Some(link) = self.links.get_mut(&region) else {
            return false;
        };
        link.last_send = now;
        let Ok(mut shared) = link.shared.lock() else {
            return false;
        };
        if let Some(sender) = shared.sender.as_ref().filter(|s| !s.is_closed()) {
            return sender.try_send(dst, bytes).is_ok();
        }
        let expired = shared.expire(now);
        let held = shared.held.len() < HELD_WHILE_DIALLING;
        if held {
            shared.held.push_back((now, dst, bytes.to_vec()));
        }
        drop(shared);
        if expired > 0 {
            self.count(|s| s.derp_send_drops += expired);
        }
        held
    }

    /// True while the home link is up.
    pub(crate) fn home_connected(&self) -> bool {
        self.home.is_some_and(|h| self.connected(h))
    }

    /// The regions with a link, and whether each is up, in region order.
    pub(crate) fn linked(&self) -> Vec<(RegionId, bool)> {
        let mut v: Vec<_> = self.links.keys().map(|&r| (r, self.connected(r))).collect();
        v.sort_unstable();
        v
    }

    /// When the next link other than home falls idle.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter(|(r, _)| Some(**r) != self.home)
            .map(|(_, l)| l.last_send + IDLE_CLOSE)
            .min()
    }

    /// Closes the links other than home that sent nothing for [`IDLE_CLOSE`].
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let home = self.home;
        let idle: Vec<RegionId> = self
            .links
            .iter()
            .filter(|(r, l)| Some(**r) != home && now >= l.last_send + IDLE_CLOSE)
            .map(|(r, _)| *r)
            .collect();
        for region in idle {
            if let Some(link) = self.links.remove(&region) {
                let dropped = link.close();
                tracing::debug!("DERP link to region {region} closed: idle");
                self.count(|s| {
                    s.derp_links_closed_idle += 1;
                    s.derp_send_drops += dropped;
                });
            }
        }
    }

    fn connected(&self, region: RegionId) -> bool {
        self.links.get(&region).is_some_and(|l| {
            l.shared
                .lock()
                .is_ok_and(|s| s.sender.as_ref().is_some_and(|d| !d.is_closed()))
        })
    }

    fn open(&mut self, region: RegionId, now: Instant) {
        let Some(relay) = self.map.get(&region).cloned() else {
            return;
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(run_link(
            relay,
            self.home == Some(region),
            self.key.clone(),
            shared.clone(),
            self.tx.clone(),
            self.stats.clone(),
        ));
        if self.home != Some(region) {
            self.count(|s| s.derp_links_opened += 1);
        }
        self.links.insert(
            region,
            Link {
                shared,
                task,
                last_send: now,
            },
        );
    }

    fn count(&self, f: impl FnOnce(&mut ShellStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for link in self.links.values() {
            let _ = link.close();
        }
    }
}

/// Keeps one relay connection up, with backoff, and forwards what it relays.
async fn run_link(
    relay: DerpRegion,
    home: bool,
    key: PrivateKey,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::Sender<DerpIn>,
    stats: Arc<Mutex<ShellStats>>,
) {
    let mut backoff = Backoff::default();
    let region = relay.region;
    loop {
        let mut cfg = DialConfig::new(relay.url.clone(), key.clone());
        cfg.addr = relay.addr;
        cfg.note_preferred = home;
        cfg.app_name = Some("weft-magicsock".into());
        match DerpClient::connect(cfg).await {
            Ok(client) => {
                backoff.reset();
                if let Ok(mut s) = stats.lock() {
                    s.derp_connects += 1;
                }
                let (sender, mut events) = client.into_parts();
                if let Ok(mut s) = shared.lock() {
                    let mut dropped = s.expire(crate::now());
                    for (_, dst, bytes) in s.held.drain(..) {
                        if sender.try_send(dst, &bytes).is_err() {
                            dropped += 1;
                        }
                    }
                    s.sender = Some(sender);
                    if dropped > 0 {
                        if let Ok(mut st) = stats.lock() {
                            st.derp_send_drops += dropped;
                        }
                    }
                }
                loop {
                    match events.recv().await {
                        Ok(ClientEvent::Packet { src, packet }) => {
                            let msg = DerpIn {
                                region,
                                src,
                                bytes: packet,
                            };
                            if tx.send(msg).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!("DERP link to {} lost: {e}", relay.url.host);
                            break;
                        }
                    }
                }
                if let Ok(mut s) = shared.lock() {
                    s.sender = None;
                }
            }
            Err(e) => tracing::warn!("DERP connect to {} failed: {e}", relay.url.host),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A relay nobody listens on: its link keeps dialling and never comes up, so every packet
    /// sent to it is held.
    fn unreachable(region: RegionId) -> DerpRegion {
        DerpRegion {
            region,
            url: DerpUrl::parse("http://127.0.0.1:9").unwrap(),
            addr: None,
        }
    }

    fn links(now: Instant) -> (Links, Arc<Mutex<ShellStats>>) {
        let (tx, _rx) = mpsc::channel(8);
        let stats = Arc::new(Mutex::new(ShellStats::default()));
        let l = Links::new(
            Some(unreachable(1)),
            vec![unreachable(2), unreachable(3)],
            PrivateKey::from_bytes([7; 32]),
            tx,
            stats.clone(),
            now,
        );
        (l, stats)
    }

    fn peer() -> PublicKey {
        PrivateKey::from_bytes([9; 32]).public_key()
    }

    #[tokio::test]
    async fn other_regions_are_dialled_on_first_use_and_unknown_ones_counted() {
        let t0 = crate::now();
        let (mut l, stats) = links(t0);
        assert_eq!(l.linked(), [(1, false)]);
        assert!(l.poll_timeout().is_none(), "the home link never idles");
        assert!(!l.send(4, peer(), b"x", t0));
        assert_eq!(stats.lock().unwrap().derp_unknown_region, 1);
        assert!(l.send(2, peer(), b"x", t0));
        assert!(l.send(2, peer(), b"y", t0));
        assert_eq!(l.linked(), [(1, false), (2, false)]);
        assert_eq!(stats.lock().unwrap().derp_links_opened, 1);
    }

    #[tokio::test]
    async fn a_link_that_is_not_up_holds_a_bounded_number_of_packets() {
        let t0 = crate::now();
        let (mut l, _) = links(t0);
        for i in 0..HELD_WHILE_DIALLING {
            assert!(l.send(3, peer(), &[1; 40], t0), "packet {i}");
        }
        assert!(!l.send(3, peer(), &[1; 40], t0), "hold full");
        assert!(
            l.send(1, peer(), &[1; 40], t0),
            "the home link holds its own"
        );
    }

    #[tokio::test]
    async fn held_packets_expire() {
        let t0 = crate::now();
        let (mut l, stats) = links(t0);
        for _ in 0..HELD_WHILE_DIALLING {
            assert!(l.send(2, peer(), b"x", t0));
        }
        // Still full just before they age out; room again once they have.
        assert!(!l.send(
            2,
            peer(),
            b"y",
            t0 + HELD_MAX_AGE - Duration::from_millis(1)
        ));
        assert!(l.send(2, peer(), b"y", t0 + HELD_MAX_AGE));
        assert_eq!(
            stats.lock().unwrap().derp_send_drops,
            HELD_WHILE_DIALLING as u64
        );
    }

    #[tokio::test]
    async fn idle_links_close_a_minute_after_their_last_send_and_home_never() {
        let t0 = crate::now();
        let (mut l, stats) = links(t0);
        l.send(2, peer(), b"x", t0);
        let t1 = t0 + Duration::from_secs(30);
        l.send(3, peer(), b"x", t1);
        l.send(1, peer(), b"x", t1);
        assert_eq!(l.poll_timeout(), Some(t0 + IDLE_CLOSE));
        l.handle_timeout(t0 + IDLE_CLOSE - Duration::from_millis(1));
        assert_eq!(l.linked().len(), 3, "nothing idle yet");
        l.handle_timeout(t0 + IDLE_CLOSE);
        assert_eq!(l.linked(), [(1, false), (3, false)]);
        assert_eq!(l.poll_timeout(), Some(t1 + IDLE_CLOSE));
        l.handle_timeout(t1 + IDLE_CLOSE + Duration::from_secs(600));
        assert_eq!(l.linked(), [(1, false)]);
        assert_eq!(stats.lock().unwrap().derp_links_closed_idle, 2);
        assert_eq!(
            stats.lock().unwrap().derp_send_drops,
            2,
            "their held packets went with them"
        );
        // A closed region is dialled again when a packet needs it.
        assert!(l.send(2, peer(), b"x", t1 + Duration::from_secs(700)));
        assert_eq!(stats.lock().unwrap().derp_links_opened, 3);
    }
}
