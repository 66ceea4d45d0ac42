//! Batched UDP (`recvmmsg`/`sendmmsg`, GSO, GRO) against the real kernel: loopback for the
//! batching and addresses, two network namespaces joined by veth for GSO/GRO (machine-facts 2b).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use common::{segment, VethPair};
use weft_sys::{
    bind_udp, gro_enabled, poll_readable, supports_gso, RecvBatch, RecvMeta, SysError, Transmit,
    UdpBatch, UdpFeatures,
};

/// Receives until `done` says so over what arrived, waiting at most ~5 s (50 polls of 100 ms).
fn recv_until(
    udp: &UdpBatch,
    sock: &UdpSocket,
    batch: &mut RecvBatch,
    done: impl Fn(&[(RecvMeta, Vec<u8>)]) -> bool,
) -> Vec<(RecvMeta, Vec<u8>)> {
    let mut got = Vec::new();
    let mut ready = [false];
    for _ in 0..50 {
        loop {
            let n = udp.recv_batch(sock, batch).unwrap();
            if n == 0 {
                break;
            }
            got.extend(batch.iter().map(|(m, p)| (*m, p.to_vec())));
        }
        if done(&got) {
            return got;
        }
        poll_readable(
            &[sock.as_fd()],
            Some(Duration::from_millis(100)),
            &mut ready,
        )
        .unwrap();
    }
    got
}

fn nonblocking(addr: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Three senders each send a batch of 10 distinct datagrams; the receiver gets all 30 with the
/// right source for each, in one or more batches.
fn batch_with_sources(local: SocketAddr, features: UdpFeatures) {
    let rx = nonblocking(local);
    let dst = rx.local_addr().unwrap();
    let rx_udp = UdpBatch::new(&rx, features).unwrap();
    let mut batch = RecvBatch::new(16, 2048).unwrap();
    assert_eq!(
        rx_udp.recv_batch(&rx, &mut batch).unwrap(),
        0,
        "nothing queued yet"
    );

    let mut expected = Vec::new();
    let senders: Vec<UdpSocket> = (0..3)
        .map(|_| nonblocking(SocketAddr::new(local.ip(), 0)))
        .collect();
    for (s, sock) in senders.iter().enumerate() {
        let udp = UdpBatch::new(sock, features).unwrap();
        let payloads: Vec<Vec<u8>> = (0..10).map(|i| segment(s as u8, i, 100 + i * 7)).collect();
        let transmits: Vec<Transmit<'_>> = payloads
            .iter()
            .map(|p| Transmit {
                dst,
                contents: p,
                segment_size: None,
            })
            .collect();
        assert_eq!(udp.send_batch(sock, &transmits).unwrap(), 10);
        for p in payloads {
            expected.push((sock.local_addr().unwrap(), p));
        }
    }
    let got = recv_until(&rx_udp, &rx, &mut batch, |g| g.len() >= 30);
    assert_eq!(got.len(), 30);
    let mut got: Vec<(SocketAddr, Vec<u8>)> = got
        .into_iter()
        .map(|(m, p)| {
            assert_eq!(m.len, p.len());
            assert_eq!(m.stride, m.len, "no coalescing of distinct sizes");
            assert!(!m.truncated);
            (m.addr, p)
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

#[test]
fn batches_carry_ipv4_source_addresses() {
    batch_with_sources((Ipv4Addr::LOCALHOST, 0).into(), UdpFeatures::default());
}

#[test]
fn batches_carry_ipv6_source_addresses() {
    batch_with_sources((Ipv6Addr::LOCALHOST, 0).into(), UdpFeatures::default());
}

#[test]
fn one_syscall_per_datagram_fallback_gives_the_same_result() {
    batch_with_sources((Ipv4Addr::LOCALHOST, 0).into(), UdpFeatures::NONE);
    batch_with_sources((Ipv6Addr::LOCALHOST, 0).into(), UdpFeatures::NONE);
}

#[test]
fn dual_stack_socket_sends_to_ipv4_and_sees_it_mapped() {
    let sock = bind_udp(0, None).unwrap();
    let port = sock.local_addr().unwrap().port();
    let udp = UdpBatch::new(&sock, UdpFeatures::default()).unwrap();
    let peer = nonblocking((Ipv4Addr::LOCALHOST, 0).into());
    let peer_udp = UdpBatch::new(&peer, UdpFeatures::default()).unwrap();
    // The peer sends to the dual-stack socket over IPv4...
    let t = Transmit {
        dst: (Ipv4Addr::LOCALHOST, port).into(),
        contents: b"to dual",
        segment_size: None,
    };
    assert_eq!(peer_udp.send_batch(&peer, &[t]).unwrap(), 1);
    let mut batch = RecvBatch::new(4, 256).unwrap();
    let got = recv_until(&udp, &sock, &mut batch, |g| !g.is_empty());
    let (meta, payload) = &got[0];
    assert_eq!(payload, b"to dual");
    let SocketAddr::V6(from) = meta.addr else {
        panic!("expected a v4-mapped source, got {}", meta.addr)
    };
    assert_eq!(from.ip().to_ipv4_mapped(), Some(Ipv4Addr::LOCALHOST));
    // ...and the dual-stack socket answers with a plain IPv4 destination.
    let reply = Transmit {
        dst: peer.local_addr().unwrap(),
        contents: b"from dual",
        segment_size: None,
    };
    assert_eq!(udp.send_batch(&sock, &[reply]).unwrap(), 1);
    let got = recv_until(&peer_udp, &peer, &mut batch, |g| !g.is_empty());
    assert_eq!(got[0].1, b"from dual");
    assert_eq!(got[0].0.addr.port(), port);
}

#[test]
fn invalid_transmits_stop_the_batch_and_are_reported_first() {
    let sock = nonblocking((Ipv4Addr::LOCALHOST, 0).into());
    let dst = sock.local_addr().unwrap();
    let udp = UdpBatch::new(&sock, UdpFeatures::default()).unwrap();
    let big = vec![0u8; 6401];
    let ok = Transmit {
        dst,
        contents: b"ok",
        segment_size: None,
    };
    let too_many = Transmit {
        dst,
        contents: &big,
        segment_size: Some(100),
    };
    let zero = Transmit {
        dst,
        contents: b"x",
        segment_size: Some(0),
    };
    let v6 = Transmit {
        dst: "[2001:db8::1]:9".parse().unwrap(),
        contents: b"x",
        segment_size: None,
    };
    // The valid first one is sent; the call stops before the invalid second one.
    assert_eq!(udp.send_batch(&sock, &[ok, too_many]).unwrap(), 1);
    // Called again from the invalid one, it reports it; nothing of that call was sent.
    for bad in [too_many, zero, v6] {
        match udp.send_batch(&sock, &[bad, ok]) {
            Err(SysError::BadTransmit { .. }) => {}
            other => panic!("expected BadTransmit, got {other:?}"),
        }
    }
}

const SEG: usize = 1400;

/// The sender in namespace `a`, the receiver in `b`, both over IPv4 or IPv6.
struct GsoSetup {
    _net: VethPair,
    tx: UdpSocket,
    rx: UdpSocket,
    dst: SocketAddr,
}

fn gso_setup(v6: bool) -> GsoSetup {
    let net = VethPair::new();
    let (src, dst_ip) = if v6 {
        (
            SocketAddr::from((net.v6_a, 0)),
            std::net::IpAddr::from(net.v6_b),
        )
    } else {
        (
            SocketAddr::from((net.v4_a, 0)),
            std::net::IpAddr::from(net.v4_b),
        )
    };
    let tx = net.a.run(move || nonblocking(src));
    let rx = net.b.run(move || nonblocking(SocketAddr::new(dst_ip, 0)));
    // A generous receive buffer so 64 KiB bursts are not dropped.
    weft_sys::set_socket_buffers(rx.as_fd(), 4 << 20).unwrap();
    let dst = rx.local_addr().unwrap();
    GsoSetup {
        _net: net,
        tx,
        rx,
        dst,
    }
}

/// `n` segments of [`SEG`] bytes, each naming its index, concatenated.
fn run(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| segment(0x5a, i, SEG)).collect()
}

/// Splits received messages back into segments (by their stride) and checks they are the
/// `n` segments in order.
fn assert_segments(got: &[(RecvMeta, Vec<u8>)], n: usize) {
    let segs: Vec<&[u8]> = got
        .iter()
        .flat_map(|(m, p)| p.chunks(m.stride.max(1)))
        .collect();
    assert_eq!(segs.len(), n);
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(*s, &segment(0x5a, i, SEG)[..], "segment {i}");
    }
}

fn netns_gso_to_gro(v6: bool) {
    let s = gso_setup(v6);
    let tx = UdpBatch::new(&s.tx, UdpFeatures::default()).unwrap();
    assert!(supports_gso(&s.tx));
    assert!(tx.features().gso);
    let rx = UdpBatch::new(&s.rx, UdpFeatures::default()).unwrap();
    assert!(rx.features().gro && gro_enabled(&s.rx));
    let n = 40;
    let payload = run(n);
    let t = Transmit {
        dst: s.dst,
        contents: &payload,
        segment_size: Some(SEG as u16),
    };
    assert_eq!(tx.send_batch(&s.tx, &[t]).unwrap(), 1);
    let mut batch = RecvBatch::new(8, 65535).unwrap();
    let got = recv_until(&rx, &s.rx, &mut batch, |g| {
        g.iter().map(|(m, _)| m.len).sum::<usize>() >= n * SEG
    });
    // veth hands the GSO skb over unsegmented: a GRO socket gets it whole (machine-facts 2b).
    assert_eq!(
        got.len(),
        1,
        "{:?}",
        got.iter().map(|g| g.0).collect::<Vec<_>>()
    );
    let meta = got[0].0;
    assert_eq!((meta.len, meta.stride, meta.segments()), (n * SEG, SEG, n));
    assert!(!meta.truncated);
    assert_eq!(meta.addr, s.tx.local_addr().unwrap());
    assert_segments(&got, n);
}

#[test]
fn netns_gso_send_arrives_whole_with_gro_ipv4() {
    netns_gso_to_gro(false);
}

#[test]
fn netns_gso_send_arrives_whole_with_gro_ipv6() {
    netns_gso_to_gro(true);
}

#[test]
fn netns_gso_send_arrives_as_datagrams_without_gro() {
    let s = gso_setup(false);
    let tx = UdpBatch::new(&s.tx, UdpFeatures::default()).unwrap();
    let rx = UdpBatch::new(
        &s.rx,
        UdpFeatures {
            gro: false,
            ..UdpFeatures::default()
        },
    )
    .unwrap();
    assert!(!gro_enabled(&s.rx));
    let n = 40;
    let payload = run(n);
    let t = Transmit {
        dst: s.dst,
        contents: &payload,
        segment_size: Some(SEG as u16),
    };
    assert_eq!(tx.send_batch(&s.tx, &[t]).unwrap(), 1);
    let mut batch = RecvBatch::new(64, 2048).unwrap();
    let got = recv_until(&rx, &s.rx, &mut batch, |g| g.len() >= n);
    assert_eq!(got.len(), n);
    assert!(got.iter().all(|(m, _)| m.len == SEG && m.stride == SEG));
    assert_segments(&got, n);
}

#[test]
fn netns_gso_off_splits_runs_into_datagrams() {
    let s = gso_setup(false);
    let tx = UdpBatch::new(
        &s.tx,
        UdpFeatures {
            gso: false,
            ..UdpFeatures::default()
        },
    )
    .unwrap();
    assert!(!tx.features().gso);
    let rx = UdpBatch::new(&s.rx, UdpFeatures::default()).unwrap();
    // Two runs (64 and 10 segments, the first one full) and a single datagram in one call.
    let first = run(64);
    let second = run(10);
    let ts = [
        Transmit {
            dst: s.dst,
            contents: &first,
            segment_size: Some(SEG as u16),
        },
        Transmit {
            dst: s.dst,
            contents: &second,
            segment_size: Some(SEG as u16),
        },
        Transmit {
            dst: s.dst,
            contents: b"single",
            segment_size: Some(SEG as u16),
        },
    ];
    assert_eq!(tx.send_batch(&s.tx, &ts).unwrap(), 3);
    let mut batch = RecvBatch::new(64, 65535).unwrap();
    let got = recv_until(&rx, &s.rx, &mut batch, |g| {
        g.iter().map(|(m, _)| m.segments()).sum::<usize>() >= 75
    });
    // Separately sent datagrams are not coalesced by veth here (machine-facts 2c).
    let total: usize = got.iter().map(|(m, _)| m.segments()).sum();
    assert_eq!(total, 75);
    assert!(got.iter().any(|(_, p)| p == b"single"));
}

#[test]
fn netns_gso_eio_falls_back_to_datagrams_for_good() {
    let s = gso_setup(false);
    let tx = UdpBatch::new(&s.tx, UdpFeatures::default()).unwrap();
    let rx = UdpBatch::new(
        &s.rx,
        UdpFeatures {
            gro: false,
            ..UdpFeatures::default()
        },
    )
    .unwrap();
    assert!(tx.features().gso);
    tx.inject_gso_eio();
    let n = 20;
    let payload = run(n);
    let t = Transmit {
        dst: s.dst,
        contents: &payload,
        segment_size: Some(SEG as u16),
    };
    // The same call resends the run as plain datagrams after the (injected) EIO.
    assert_eq!(tx.send_batch(&s.tx, &[t]).unwrap(), 1);
    assert!(!tx.features().gso, "GSO must stay off after EIO");
    let mut batch = RecvBatch::new(64, 2048).unwrap();
    let got = recv_until(&rx, &s.rx, &mut batch, |g| g.len() >= n);
    assert_eq!(got.len(), n);
    assert_segments(&got, n);
    // Later runs go out split too.
    assert_eq!(tx.send_batch(&s.tx, &[t]).unwrap(), 1);
    let got = recv_until(&rx, &s.rx, &mut batch, |g| g.len() >= n);
    assert_eq!(got.len(), n);
}

#[test]
fn netns_gso_segment_too_big_for_the_mtu_is_an_error() {
    let s = gso_setup(false);
    let tx = UdpBatch::new(&s.tx, UdpFeatures::default()).unwrap();
    // 1480 + 28 > 1500: the kernel refuses the GSO send (it does not fragment one).
    let payload = vec![1u8; 1480 * 3];
    let t = Transmit {
        dst: s.dst,
        contents: &payload,
        segment_size: Some(1480),
    };
    match tx.send_batch(&s.tx, &[t]) {
        Err(SysError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EMSGSIZE)),
        other => panic!("expected EMSGSIZE, got {other:?}"),
    }
    assert!(
        tx.features().gso,
        "EMSGSIZE is the caller's mistake, not a reason to drop GSO"
    );
}
