//! TUN with the virtio-net header, offload negotiation and multiple queues, against the real
//! kernel (root, /dev/net/tun, network namespaces).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ip, ipv4_udp, next_id, subnet, unique_name, LinkGuard, Netns};
use weft_sys::{
    interface_exists, poll_readable, Offloads, Tun, TunOptions, TunQueues, WriteOutcome,
    VNET_HDR_LEN,
};

fn tun_flags(name: &str) -> u32 {
    let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags")).unwrap();
    u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn vnet_tun_accepts_all_five_offloads_on_this_kernel() {
    let name = unique_name(next_id());
    let TunQueues { queues, offloads } = Tun::create_with(&name, TunOptions::default()).unwrap();
    let _guard = LinkGuard(name.clone());
    // machine-facts 4b: CSUM|TSO4|TSO6|USO4|USO6 (0x67) is accepted on this kernel (6.18).
    assert_eq!(offloads, Offloads::ALL, "accepted {offloads:?}");
    assert_eq!(queues.len(), 1);
    let tun = &queues[0];
    assert!(tun.has_vnet_hdr());
    assert_eq!(tun.vnet_hdr_len().unwrap(), VNET_HDR_LEN);
    let flags = tun_flags(&name);
    assert_ne!(flags & libc::IFF_VNET_HDR as u32, 0);
    assert_ne!(flags & libc::IFF_NO_PI as u32, 0);
    assert_eq!(flags & libc::IFF_MULTI_QUEUE as u32, 0);
    common::assert_nonblocking_cloexec(tun.as_fd());
    // The kernel shows the offloads as device features.
    let out = std::process::Command::new("ethtool")
        .args(["-k", &name])
        .output()
        .unwrap();
    let features = String::from_utf8_lossy(&out.stdout);
    assert!(
        features.contains("tcp-segmentation-offload: on"),
        "{features}"
    );
}

#[test]
fn without_vnet_hdr_nothing_is_negotiated() {
    let name = unique_name(next_id());
    let opened = Tun::create_with(
        &name,
        TunOptions {
            vnet_hdr: false,
            multi_queue: false,
            queues: 1,
        },
    )
    .unwrap();
    let _guard = LinkGuard(name.clone());
    assert_eq!(opened.offloads, Offloads::NONE);
    assert!(!opened.queues[0].has_vnet_hdr());
    assert_eq!(tun_flags(&name) & libc::IFF_VNET_HDR as u32, 0);
}

#[test]
fn multi_queue_opens_one_descriptor_per_queue() {
    let name = unique_name(next_id());
    let opened = Tun::create_with(
        &name,
        TunOptions {
            vnet_hdr: true,
            multi_queue: true,
            queues: 4,
        },
    )
    .unwrap();
    let _guard = LinkGuard(name.clone());
    assert_eq!(opened.queues.len(), 4);
    assert_eq!(opened.offloads, Offloads::ALL);
    assert!(opened.queues.iter().all(|q| q.name() == name));
    assert_ne!(tun_flags(&name) & libc::IFF_MULTI_QUEUE as u32, 0);
    let mut rx: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rx-"))
        .collect();
    rx.sort();
    assert_eq!(rx, ["rx-0", "rx-1", "rx-2", "rx-3"]);
    // A name template is resolved once and shared by all queues.
    let template = format!("wts{}_%d", std::process::id());
    let opened2 = Tun::create_with(
        &template,
        TunOptions {
            vnet_hdr: false,
            multi_queue: true,
            queues: 2,
        },
    )
    .unwrap();
    let _guard2 = LinkGuard(opened2.queues[0].name().to_owned());
    assert_eq!(opened2.queues[0].name(), opened2.queues[1].name());
    assert!(!opened2.queues[0].name().contains('%'));
    let kept = opened2.queues[0].name().to_owned();
    drop(opened2);
    assert!(!interface_exists(&kept), "closing every queue deletes it");
}

#[test]
fn vnet_header_precedes_packets_both_ways() {
    let id = next_id();
    let name = unique_name(id);
    let opened = Tun::create_with(&name, TunOptions::default()).unwrap();
    let _guard = LinkGuard(name.clone());
    let tun = &opened.queues[0];
    let (local, peer) = subnet(id);
    tun.set_up().unwrap();
    ip(&["addr", "add", &format!("{local}/30"), "dev", &name]);
    let sock = std::net::UdpSocket::bind((local, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();

    // In: a zero header (no offload) and the packet, gathered from two buffers.
    let port = sock.local_addr().unwrap().port();
    let pkt = ipv4_udp(peer, 7000, local, port, b"vnet in");
    let hdr = [0u8; VNET_HDR_LEN];
    assert_eq!(
        tun.write_vectored(&[IoSlice::new(&hdr), IoSlice::new(&pkt)])
            .unwrap(),
        WriteOutcome::Written
    );
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"vnet in"[..], (peer, 7000).into()));

    // Out: the header comes first; scatter it into its own buffer.
    sock.send_to(b"vnet out", (peer, 9)).unwrap();
    let mut h = [0u8; VNET_HDR_LEN];
    let mut p = vec![0u8; 65535];
    let mut ready = [false];
    for _ in 0..30 {
        poll_readable(&[tun.as_fd()], Some(Duration::from_millis(100)), &mut ready).unwrap();
        while let Some(n) = tun
            .read_vectored(&mut [IoSliceMut::new(&mut h), IoSliceMut::new(&mut p)])
            .unwrap()
        {
            let pkt = &p[..n - VNET_HDR_LEN];
            if pkt.len() >= 28 && pkt[0] >> 4 == 4 && pkt[9] == 17 {
                assert_eq!(&pkt[28..], b"vnet out");
                // gso_type NONE; with CSUM offered, the UDP checksum may be left partial.
                assert_eq!(h[1], 0, "gso_type");
                return;
            }
        }
    }
    panic!("the datagram never came out of the TUN");
}

/// Copies frames between two vnet TUNs (A → B and B → A) until stopped, and reports the
/// largest frame read from A and whether a TCPv4 GSO frame was among them. This is the
/// userspace relay of machine-facts 4c with the header left as the kernel wrote it.
fn relay(a: Tun, b: Tun, stop: Arc<AtomicBool>) -> (usize, bool) {
    let mut buf = vec![0u8; VNET_HDR_LEN + 65535];
    let mut ready = [false; 2];
    let mut largest = 0;
    let mut saw_tso = false;
    // At most ~30 s.
    for _ in 0..3000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        poll_readable(
            &[a.as_fd(), b.as_fd()],
            Some(Duration::from_millis(10)),
            &mut ready,
        )
        .unwrap();
        for _ in 0..256 {
            let Some(n) = a.read(&mut buf).unwrap() else {
                break;
            };
            largest = largest.max(n - VNET_HDR_LEN);
            // virtio_net_hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 (1).
            saw_tso |= buf[1] == 1;
            let _ = b.write(&buf[..n]).unwrap();
        }
        for _ in 0..256 {
            let Some(n) = b.read(&mut buf).unwrap() else {
                break;
            };
            let _ = a.write(&buf[..n]).unwrap();
        }
    }
    (largest, saw_tso)
}

#[test]
fn netns_tcp_super_packets_come_out_of_a_vnet_tun() {
    let ns_a = Netns::new("ta");
    let ns_b = Netns::new("tb");
    let id = next_id();
    let (addr_a, addr_b) = subnet(id);
    let name = unique_name(id);
    let open = |ns: &Netns| {
        let name = name.clone();
        ns.run(move || Tun::create_with(&name, TunOptions::default()).unwrap())
    };
    let ta = open(&ns_a);
    let tb = open(&ns_b);
    assert_eq!(ta.offloads, Offloads::ALL);
    for (ns, addr) in [(&ns_a, addr_a), (&ns_b, addr_b)] {
        ns.ip(&["link", "set", &name, "mtu", "1420"]);
        ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", &name]);
        ns.ip(&["link", "set", &name, "up"]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let relay_thread = {
        let stop = stop.clone();
        let a = ta.queues.into_iter().next().unwrap();
        let b = tb.queues.into_iter().next().unwrap();
        std::thread::spawn(move || relay(a, b, stop))
    };
    // A TCP server in B reads 4 MiB; a client in A writes it in 64 KiB chunks, through the TUNs.
    const TOTAL: usize = 4 << 20;
    let listener = ns_b.run(move || TcpListener::bind((addr_b, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < TOTAL {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    let sent = ns_a.run(move || {
        let mut conn =
            TcpStream::connect_timeout(&(addr_b, port).into(), Duration::from_secs(5)).unwrap();
        conn.set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let chunk = vec![0x42u8; 1 << 16];
        let mut sent = 0;
        while sent < TOTAL {
            conn.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
        sent
    });
    let received = server.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (largest, saw_tso) = relay_thread.join().unwrap();
    assert_eq!((sent, received), (TOTAL, TOTAL));
    assert!(saw_tso, "no TCPv4 GSO frame came out of the TUN");
    assert!(
        largest > 1420,
        "largest frame {largest} is not above the MTU"
    );
}
