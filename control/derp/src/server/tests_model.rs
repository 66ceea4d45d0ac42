//! Random operation sequences against the server's invariants: every packet received is
//! delivered, queued, forwarded or counted as dropped (never lost silently), and the key,
//! connection and watcher tables stay consistent with each other.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Connect(u8),
    ConnectMesh,
    Disconnect(usize),
    Send {
        from: usize,
        to: u8,
        disco: bool,
        len: u8,
    },
    Forward {
        to: u8,
        len: u8,
    },
    Drain(usize, u16),
    Watch(usize),
    MeshPresent(u8, u8),
    MeshGone(u8, u8),
    LinkLost(u8),
    Ping(usize),
    Tick(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..5).prop_map(Op::Connect),
        1 => Just(Op::ConnectMesh),
        2 => any::<usize>().prop_map(Op::Disconnect),
        8 => (any::<usize>(), 0u8..6, any::<bool>(), any::<u8>())
            .prop_map(|(from, to, disco, len)| Op::Send { from, to, disco, len }),
        2 => (0u8..6, any::<u8>()).prop_map(|(to, len)| Op::Forward { to, len }),
        4 => (any::<usize>(), 1u16..2000).prop_map(|(i, b)| Op::Drain(i, b)),
        1 => any::<usize>().prop_map(Op::Watch),
        2 => (0u8..2, 0u8..6).prop_map(|(l, k)| Op::MeshPresent(l, k)),
        1 => (0u8..2, 0u8..6).prop_map(|(l, k)| Op::MeshGone(l, k)),
        1 => (0u8..2).prop_map(Op::LinkLost),
        1 => any::<usize>().prop_map(Op::Ping),
        1 => any::<u8>().prop_map(Op::Tick),
    ]
}

fn pick(open: &[ConnId], i: usize) -> Option<ConnId> {
    (!open.is_empty()).then(|| open[i % open.len()])
}

fn check(s: &Server) -> Result<(), TestCaseError> {
    let st = s.stats();
    let queued: u64 = s
        .conns
        .values()
        .map(|c| (c.packets.len() + c.disco.len()) as u64)
        .sum();
    prop_assert_eq!(
        st.packets_received + st.packets_forwarded_in,
        st.packets_sent + st.drops.total_packets() + queued + st.packets_forwarded_out,
        "packet conservation"
    );
    prop_assert_eq!(st.current_clients, s.conns.len() as u64);
    let mut in_sets = 0;
    for (key, set) in &s.clients {
        prop_assert!(!set.conns.is_empty());
        in_sets += set.conns.len();
        for c in &set.conns {
            prop_assert_eq!(&s.conns[c].key, key);
        }
        if let Some(a) = set.active {
            prop_assert!(set.conns.contains(&a));
        }
        if set.conns.len() == 1 {
            prop_assert_eq!(set.active, Some(set.conns[0]));
        }
    }
    prop_assert_eq!(in_sets, s.conns.len());
    let dup_conns: usize = s
        .clients
        .values()
        .filter(|set| set.conns.len() > 1)
        .map(|set| set.conns.len())
        .sum();
    prop_assert_eq!(st.duplicate_client_conns, dup_conns as u64);
    for (src, watchers) in &s.peer_gone_watchers {
        for w in watchers {
            prop_assert!(s.conns[w].saw_src.contains(src));
        }
    }
    for w in &s.watchers {
        prop_assert!(s.conns.contains_key(w));
    }
    for c in s.conns.values() {
        prop_assert!(c.packets.len() <= 3 && c.disco.len() <= 3);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn server_invariants_hold(ops in prop::collection::vec(op(), 1..120)) {
        let mut h = Harness::with_queue_depth(3);
        let mut open: Vec<ConnId> = Vec::new();
        let mut mesh: Vec<ConnId> = Vec::new();
        let mut clock = h.t0;
        for op in ops {
            match op {
                Op::Connect(k) => open.push(h.connect(k + 1)),
                Op::ConnectMesh => {
                    let id = h.connect_mesh(60 + mesh.len() as u8);
                    open.push(id);
                    mesh.push(id);
                }
                Op::Disconnect(i) => {
                    if let Some(c) = pick(&open, i) {
                        h.s.disconnect(c);
                        open.retain(|x| *x != c);
                        mesh.retain(|x| *x != c);
                    }
                }
                Op::Send { from, to, disco, len } => {
                    if let Some(c) = pick(&open, from) {
                        let p = if disco { disco_packet(len) } else { vec![len; usize::from(len)] };
                        let mut b = Vec::new();
                        Frame::SendPacket { dst: pk(to + 1), packet: &p }.encode_to_vec(&mut b).unwrap();
                        h.s.handle_input(c, clock, &b).unwrap();
                    }
                }
                Op::Forward { to, len } => {
                    if let Some(m) = mesh.first().copied() {
                        let p = vec![len; usize::from(len)];
                        h.send(m, Frame::ForwardPacket { src: pk(40), dst: pk(to + 1), packet: &p }).unwrap();
                    }
                }
                Op::Drain(i, budget) => {
                    if let Some(c) = pick(&open, i) {
                        let mut out = Vec::new();
                        h.s.poll_transmit(c, &mut out, usize::from(budget));
                        let mut rest = &out[..];
                        while let Some((f, used)) = frame::decode(rest, CLIENT_MAX_FRAME_LEN).unwrap() {
                            let unknown = matches!(f, Frame::Unknown { .. });
                            prop_assert!(!unknown);
                            rest = &rest[used..];
                        }
                        prop_assert!(rest.is_empty());
                    }
                }
                Op::Watch(i) => {
                    if let Some(m) = pick(&mesh, i) {
                        h.send(m, Frame::WatchConns).unwrap();
                    }
                }
                Op::MeshPresent(l, k) => h.s.mesh_peer_present(MeshLinkId(l.into()), pk(k + 1)),
                Op::MeshGone(l, k) => h.s.mesh_peer_gone(MeshLinkId(l.into()), pk(k + 1)),
                Op::LinkLost(l) => h.s.mesh_link_lost(MeshLinkId(l.into())),
                Op::Ping(i) => {
                    if let Some(c) = pick(&open, i) {
                        h.send(c, Frame::Ping([1; 8])).unwrap();
                    }
                }
                Op::Tick(secs) => {
                    clock += Duration::from_secs(u64::from(secs));
                    h.s.handle_timeout(clock);
                }
            }
            // Forward events are the shell's; Wake/Close need no action here.
            while h.s.poll_event().is_some() {}
            check(&h.s)?;
        }
    }
}
