//! The io_uring driver against the real kernel: it must deliver what `recvmmsg` delivers,
//! survive an empty buffer ring, read the TUN, wake, and send with GSO (and without, after EIO).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use common::{ip, ipv4_udp, next_id, segment, subnet, unique_name, LinkGuard, VethPair};
use weft_sys::{
    poll_readable, RecvBatch, RecvMeta, SysError, Transmit, Tun, UdpBatch, UdpFeatures,
    UringConfig, UringEvent, UringUdp, Waker, RECVMSG_OVERHEAD,
};

/// What a test keeps of a received message.
type Got = (RecvMeta, Vec<u8>);

fn nonblocking(addr: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Runs the ring until `done` holds for the UDP messages received (at most 100 waits of
/// 100 ms), collecting every event's essentials.
fn uring_until(ring: &mut UringUdp, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let mut got = Vec::new();
    for _ in 0..100 {
        ring.submit_and_wait(1, Some(Duration::from_millis(100)))
            .unwrap();
        ring.drain(|ev| match ev {
            UringEvent::Udp { meta, payload } => got.push((meta, payload.to_vec())),
            UringEvent::RecvFailed { source, error } => panic!("{source:?} failed: {error}"),
            UringEvent::SendFailed { dst, error } => panic!("send to {dst} failed: {error}"),
            _ => {}
        })
        .unwrap();
        if done(&got) {
            break;
        }
    }
    got
}

/// Receives with `recvmmsg` until `done` holds (at most ~5 s).
fn mmsg_until(udp: &UdpBatch, sock: &UdpSocket, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let mut batch = RecvBatch::new(32, 65535).unwrap();
    let mut got = Vec::new();
    let mut ready = [false];
    for _ in 0..50 {
        while udp.recv_batch(sock, &mut batch).unwrap() > 0 {
            got.extend(batch.iter().map(|(m, p)| (*m, p.to_vec())));
        }
        if done(&got) {
            break;
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

fn total_segments(got: &[Got]) -> usize {
    got.iter().map(|(m, _)| m.segments()).sum()
}

#[test]
fn drivers_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<UringUdp>();
    assert_send_sync::<UdpBatch>();
    assert_send::<RecvBatch>();
}

#[test]
fn bad_sizes_are_refused() {
    let sock = nonblocking((Ipv4Addr::LOCALHOST, 0).into());
    for config in [
        UringConfig {
            udp_buffers: 3,
            ..UringConfig::default()
        },
        UringConfig {
            udp_buffer_len: RECVMSG_OVERHEAD as u32,
            ..UringConfig::default()
        },
        UringConfig {
            send_slots: 0,
            ..UringConfig::default()
        },
    ] {
        assert!(matches!(
            UringUdp::new(&sock, &config),
            Err(SysError::BadConfig { .. })
        ));
    }
}

#[test]
fn netns_uring_receives_what_recvmmsg_receives() {
    let net = VethPair::new();
    let (a, b) = (net.v4_a, net.v4_b);
    let rx_mmsg = net.b.run(move || nonblocking((b, 0).into()));
    let rx_uring = net.b.run(move || nonblocking((b, 0).into()));
    let senders: Vec<UdpSocket> = (0..2)
        .map(|_| net.a.run(move || nonblocking((a, 0).into())))
        .collect();
    for s in [&rx_mmsg, &rx_uring] {
        weft_sys::set_socket_buffers(s.as_fd(), 4 << 20).unwrap();
    }
    let mmsg = UdpBatch::new(&rx_mmsg, UdpFeatures::default()).unwrap();
    let mut ring = UringUdp::new(&rx_uring, &UringConfig::default()).unwrap();
    assert!(mmsg.features().gro && ring.gro_enabled());
    // Arm the receive before any traffic.
    ring.submit_and_wait(0, None).unwrap();

    // The same traffic to both: singles of many sizes, and GSO runs (one with a short tail).
    let singles: Vec<Vec<u8>> = (0..20).map(|i| segment(1, i, 8 + i * 61)).collect();
    let run_a: Vec<u8> = (0..20).flat_map(|i| segment(2, i, 1400)).collect();
    let mut run_b: Vec<u8> = (0..5).flat_map(|i| segment(3, i, 1400)).collect();
    run_b.extend_from_slice(&segment(3, 5, 700));
    let mut want_segments = 0;
    for dst in [
        rx_mmsg.local_addr().unwrap(),
        rx_uring.local_addr().unwrap(),
    ] {
        for (k, s) in senders.iter().enumerate() {
            let udp = UdpBatch::new(s, UdpFeatures::default()).unwrap();
            let mut ts: Vec<Transmit<'_>> = singles
                .iter()
                .map(|p| Transmit {
                    dst,
                    contents: p,
                    segment_size: None,
                })
                .collect();
            let run = if k == 0 { &run_a } else { &run_b };
            ts.push(Transmit {
                dst,
                contents: run,
                segment_size: Some(1400),
            });
            assert_eq!(udp.send_batch(s, &ts).unwrap(), ts.len());
        }
        want_segments = 2 * 20 + 20 + 6;
    }
    let by_mmsg = mmsg_until(&mmsg, &rx_mmsg, |g| total_segments(g) >= want_segments);
    let by_uring = uring_until(&mut ring, |g| total_segments(g) >= want_segments);
    assert_eq!(total_segments(&by_mmsg), want_segments);
    // Same sources, sizes, strides and bytes, in the same order.
    assert_eq!(by_uring.len(), by_mmsg.len());
    for (u, m) in by_uring.iter().zip(&by_mmsg) {
        assert_eq!(u.0, m.0);
        assert_eq!(u.1, m.1);
    }
    // The GSO runs arrived whole, with their segment size.
    assert!(by_uring
        .iter()
        .any(|(m, _)| m.len == 20 * 1400 && m.stride == 1400));
    assert!(by_uring
        .iter()
        .any(|(m, _)| m.len == 5 * 1400 + 700 && m.stride == 1400));
    assert_eq!(ring.stats().udp_received, by_uring.len() as u64);
    assert_eq!(ring.udp_buffers_available(), 64, "every buffer is back");
}

#[test]
fn empty_buffer_ring_rearms_without_losing_datagrams() {
    let rx = nonblocking((Ipv6Addr::LOCALHOST, 0).into());
    let dst = rx.local_addr().unwrap();
    let config = UringConfig {
        udp_buffers: 4,
        udp_buffer_len: (2048 + RECVMSG_OVERHEAD) as u32,
        ..UringConfig::default()
    };
    let mut ring = UringUdp::new(&rx, &config).unwrap();
    assert_eq!(ring.udp_buffers_available(), 4);
    // 64 datagrams queue up in the socket before the receive is even armed.
    let tx = nonblocking((Ipv6Addr::LOCALHOST, 0).into());
    let udp = UdpBatch::new(&tx, UdpFeatures::default()).unwrap();
    let payloads: Vec<Vec<u8>> = (0..64).map(|i| segment(9, i, 100)).collect();
    let ts: Vec<Transmit<'_>> = payloads
        .iter()
        .map(|p| Transmit {
            dst,
            contents: p,
            segment_size: None,
        })
        .collect();
    assert_eq!(udp.send_batch(&tx, &ts).unwrap(), 64);
    let got = uring_until(&mut ring, |g| g.len() >= 64);
    let got: Vec<Vec<u8>> = got
        .into_iter()
        .map(|(m, p)| {
            assert_eq!(m.addr, tx.local_addr().unwrap());
            p
        })
        .collect();
    assert_eq!(got, payloads, "all 64, in order");
    let stats = ring.stats();
    assert!(stats.out_of_buffers >= 1, "{stats:?}");
    assert!(stats.rearmed >= 2, "{stats:?}");
    assert_eq!(ring.udp_buffers_available(), 4, "no buffer lost");
    // And it still receives afterwards.
    assert_eq!(udp.send_batch(&tx, &ts[..3]).unwrap(), 3);
    assert_eq!(uring_until(&mut ring, |g| g.len() >= 3).len(), 3);
}

#[test]
fn reads_the_tun_and_wakes_in_the_same_ring() {
    let id = next_id();
    let name = unique_name(id);
    let tun = Tun::create(&name).unwrap();
    let _guard = LinkGuard(name.clone());
    let (local, peer) = subnet(id);
    tun.set_up().unwrap();
    ip(&["addr", "add", &format!("{local}/30"), "dev", &name]);

    let udp = nonblocking((Ipv4Addr::LOCALHOST, 0).into());
    let mut ring = UringUdp::new(&udp, &UringConfig::default()).unwrap();
    ring.attach_tun(&tun).unwrap();
    assert!(matches!(
        ring.attach_tun(&tun),
        Err(SysError::BadConfig { .. })
    ));
    let waker = Arc::new(Waker::new().unwrap());
    ring.attach_waker(&waker).unwrap();
    ring.submit_and_wait(0, None).unwrap();

    let sock = UdpSocket::bind((local, 0)).unwrap();
    sock.send_to(b"into the ring", (peer, 9)).unwrap();
    let waker2 = waker.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        waker2.wake().unwrap();
    });
    let (mut saw_packet, mut woken) = (false, 0);
    for _ in 0..50 {
        ring.submit_and_wait(1, Some(Duration::from_millis(100)))
            .unwrap();
        ring.drain(|ev| match ev {
            UringEvent::Tun { packet } => {
                if packet.len() >= 28 && packet[0] >> 4 == 4 && packet[9] == 17 {
                    assert_eq!(&packet[28..], b"into the ring");
                    saw_packet = true;
                }
            }
            UringEvent::Woken => woken += 1,
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
        if saw_packet && woken > 0 {
            break;
        }
    }
    t.join().unwrap();
    assert!(
        saw_packet && woken == 1,
        "packet {saw_packet}, woken {woken}"
    );
    assert_eq!(ring.tun_buffers_available(), 64);
    // The waker was drained by the ring and re-armed: a second wake is seen too.
    waker.wake().unwrap();
    let mut woken_again = false;
    for _ in 0..20 {
        ring.submit_and_wait(1, Some(Duration::from_millis(100)))
            .unwrap();
        ring.drain(|ev| woken_again |= matches!(ev, UringEvent::Woken))
            .unwrap();
        if woken_again {
            break;
        }
    }
    assert!(woken_again);
    // Packets written back into the TUN still use the plain write path.
    let inbound = ipv4_udp(
        peer,
        5000,
        local,
        sock.local_addr().unwrap().port(),
        b"back",
    );
    tun.write(&inbound).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"back");
}

#[test]
fn netns_uring_sends_gso_and_falls_back_after_eio() {
    let net = VethPair::new();
    let (a, b) = (net.v4_a, net.v4_b);
    let tx = net.a.run(move || nonblocking((a, 0).into()));
    let rx = net.b.run(move || nonblocking((b, 0).into()));
    weft_sys::set_socket_buffers(rx.as_fd(), 4 << 20).unwrap();
    let rx_udp = UdpBatch::new(&rx, UdpFeatures::default()).unwrap();
    let mut ring = UringUdp::new(&tx, &UringConfig::default()).unwrap();
    assert!(ring.gso_enabled());
    let dst = rx.local_addr().unwrap();
    let run: Vec<u8> = (0..30).flat_map(|i| segment(7, i, 1400)).collect();
    let t = Transmit {
        dst,
        contents: &run,
        segment_size: Some(1400),
    };
    let send = |ring: &mut UringUdp| {
        assert_eq!(ring.send_batch(&[t]).unwrap(), 1);
        // One round: submit, wait for the send's completion, handle it.
        uring_until(ring, |_| true);
    };
    // With GSO: one send, received whole by the GRO socket.
    send(&mut ring);
    let got = mmsg_until(&rx_udp, &rx, |g| total_segments(g) >= 30);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.len, got[0].0.stride), (30 * 1400, 1400));
    assert_eq!(ring.stats().sent, 1);

    // After an EIO: GSO off, the run resent as 30 datagrams, now and later.
    ring.inject_gso_eio();
    send(&mut ring);
    assert!(!ring.gso_enabled());
    assert_eq!(ring.stats().gso_eio, 1);
    let got = mmsg_until(&rx_udp, &rx, |g| total_segments(g) >= 30);
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|(m, _)| m.len == 1400));
    send(&mut ring);
    let got = mmsg_until(&rx_udp, &rx, |g| total_segments(g) >= 30);
    assert_eq!(got.len(), 30);
    assert_eq!(ring.send_slots_free(), 64, "every send slot is back");
}

#[test]
fn drain_up_to_leaves_the_rest_in_the_completion_queue() {
    let rx = nonblocking((Ipv4Addr::LOCALHOST, 0).into());
    let dst = rx.local_addr().unwrap();
    let config = UringConfig {
        features: UdpFeatures {
            gro: false,
            ..UdpFeatures::default()
        },
        ..UringConfig::default()
    };
    let mut ring = UringUdp::new(&rx, &config).unwrap();
    let tx = nonblocking((Ipv4Addr::LOCALHOST, 0).into());
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| segment(3, i, 50)).collect();
    for p in &payloads {
        tx.send_to(p, dst).unwrap();
    }
    // Arm the receive and let it complete all ten (bounded wait).
    let mut got: Vec<Vec<u8>> = Vec::new();
    for _ in 0..50 {
        ring.submit_and_wait(1, Some(Duration::from_millis(100)))
            .unwrap();
        let n = ring
            .drain_up_to(3, |ev| {
                if let UringEvent::Udp { payload, .. } = ev {
                    got.push(payload.to_vec());
                }
            })
            .unwrap();
        assert!(n <= 3, "drain_up_to(3) handled {n}");
        if got.len() >= 10 {
            break;
        }
    }
    assert_eq!(got, payloads, "all ten, in order, three at a time at most");
}

/// A GSO run whose datagrams exceed the path MTU (they need IP fragmentation, which a GSO
/// send cannot do): the kernel answers `EMSGSIZE`, the run is resent datagram by datagram
/// (fragmented by the kernel), and GSO stays on for the next run.
#[test]
fn netns_uring_resends_runs_that_need_fragmentation() {
    let net = VethPair::new();
    net.a.ip(&["link", "set", &net.ifa, "mtu", "1400"]);
    net.b.ip(&["link", "set", &net.ifb, "mtu", "1400"]);
    let (a, b) = (net.v4_a, net.v4_b);
    let tx = net.a.run(move || nonblocking((a, 0).into()));
    let rx = net.b.run(move || nonblocking((b, 0).into()));
    weft_sys::set_socket_buffers(rx.as_fd(), 4 << 20).unwrap();
    let rx_udp = UdpBatch::new(&rx, UdpFeatures::default()).unwrap();
    let mut ring = UringUdp::new(&tx, &UringConfig::default()).unwrap();
    let dst = rx.local_addr().unwrap();
    let run: Vec<u8> = (0..10).flat_map(|i| segment(5, i, 1450)).collect();
    let t = Transmit {
        dst,
        contents: &run,
        segment_size: Some(1450),
    };
    for round in 1..=2u64 {
        assert_eq!(ring.send_batch(&[t]).unwrap(), 1);
        uring_until(&mut ring, |_| true);
        let got = mmsg_until(&rx_udp, &rx, |g| total_segments(g) >= 10);
        assert_eq!(got.len(), 10, "round {round}: every datagram, reassembled");
        assert!(got.iter().all(|(m, _)| m.len == 1450));
        assert_eq!(ring.stats().gso_emsgsize, round);
        assert!(ring.gso_enabled(), "EMSGSIZE does not turn GSO off");
    }
    assert_eq!(ring.send_slots_free(), 64, "every send slot is back");
}

/// A single-issuer ring is set up on one thread and driven by another, which enables it
/// first; a second enable is refused.
#[test]
fn single_issuer_ring_is_enabled_by_the_thread_that_drives_it() {
    let rx = nonblocking((Ipv4Addr::LOCALHOST, 0).into());
    let dst = rx.local_addr().unwrap();
    let config = UringConfig {
        single_issuer: true,
        features: UdpFeatures {
            gro: false,
            ..UdpFeatures::default()
        },
        ..UringConfig::default()
    };
    let mut ring = UringUdp::new(&rx, &config).unwrap();
    let got = std::thread::spawn(move || {
        ring.enable().unwrap();
        assert!(ring.enable().is_err(), "a second enable is refused");
        let tx = nonblocking((Ipv4Addr::LOCALHOST, 0).into());
        for i in 0..5 {
            tx.send_to(&segment(4, i, 64), dst).unwrap();
        }
        uring_until(&mut ring, |g| g.len() >= 5)
    })
    .join()
    .unwrap();
    let want: Vec<Vec<u8>> = (0..5).map(|i| segment(4, i, 64)).collect();
    assert_eq!(got.into_iter().map(|(_, p)| p).collect::<Vec<_>>(), want);
}
