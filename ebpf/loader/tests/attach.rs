//! Attaching both programs to real interfaces, in a network namespace of the test's own (the
//! test thread unshares its network namespace, so nothing outside it is touched): tc ingress
//! and XDP on one end of a veth pair (XDP in driver mode, which veth has) and XDP on a TUN
//! (generic mode: TUN has no native XDP). Frames sent out of the other end reach both
//! programs, whose counters rise. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use weft_ebpf::common::{tc_counter, xdp_counter};
use weft_ebpf::{TcFilter, TcTables, XdpAttachMode, XdpFilter};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ifindex(name: &str) -> u32 {
    // /sys/class/net shows the namespace sysfs was mounted in, not this thread's: ask a socket.
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "{name}: {}", std::io::Error::last_os_error());
    index
}

fn own_netns() {
    // SAFETY: unshare(CLONE_NEWNET) takes no pointers; it moves this thread alone into a new
    // network namespace, which the test thread keeps until it ends.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn programs_attach_and_see_traffic() {
    own_netns();
    ip(&["link", "add", "wa", "type", "veth", "peer", "name", "wb"]);
    ip(&["tuntap", "add", "mode", "tun", "name", "wt"]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", "wa"]);
    for dev in ["lo", "wa", "wb", "wt"] {
        ip(&["link", "set", dev, "up"]);
    }

    let mut tc = TcFilter::load(14).unwrap();
    tc.install(&TcTables::default()).unwrap();
    tc.attach(ifindex("wb")).unwrap();
    let mut xdp = XdpFilter::load(41641).unwrap();
    assert_eq!(xdp.attach(ifindex("wb")).unwrap(), XdpAttachMode::Driver);
    let mut generic = XdpFilter::load(41641).unwrap();
    assert_eq!(
        generic.attach(ifindex("wt")).unwrap(),
        XdpAttachMode::Generic
    );
    assert!(tc.attach(u32::MAX).is_err());

    // A datagram to an absent neighbour makes wa send ARP requests out to wb: not IP, so the
    // tc program drops them as a bad version and XDP passes them as not for the port.
    let sock = UdpSocket::bind("10.99.0.1:0").unwrap();
    for _ in 0..3 {
        let _ = sock.send_to(b"x", "10.99.0.3:41641");
        std::thread::sleep(Duration::from_millis(300));
        if tc.counters().unwrap().get(tc_counter::DROP_BAD_VERSION) > 0 {
            break;
        }
    }
    let t = tc.counters().unwrap();
    let x = xdp.counters().unwrap();
    assert!(
        t.get(tc_counter::DROP_BAD_VERSION) >= 1,
        "tc counters {t:?}"
    );
    assert!(x.get(xdp_counter::PASS_OTHER) >= 1, "xdp counters {x:?}");
}
