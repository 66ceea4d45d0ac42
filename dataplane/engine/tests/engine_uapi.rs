//! The engine end to end on this host: a real TUN, the real UAPI socket, driven by the real `wg`
//! tool. Checks that every setting `wg` can make lands in the device and comes back in `wg show`,
//! and that deleting the interface stops the engine cleanly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weft_dataplane::{Engine, EngineConfig};

fn unique_ifname() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "wte{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn wg(args: &[&str]) -> String {
    let out = Command::new("wg").args(args).output().expect("run wg");
    assert!(
        out.status.success(),
        "wg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn genkey() -> (String, String) {
    let private = String::from_utf8(Command::new("wg").arg("genkey").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let public = String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    (private, public)
}

/// Deletes the interface when dropped, so a failed assertion leaves nothing behind.
struct LinkGuard(String);
impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

#[test]
fn wg_set_and_show_round_trip_then_interface_deletion_stops_the_engine() {
    let ifname = unique_ifname();
    let engine = Engine::start(&EngineConfig::new(ifname.clone())).expect("start engine");
    let guard = LinkGuard(ifname.clone());
    let sock = format!("/var/run/wireguard/{ifname}.sock");
    let mode = std::fs::metadata(&sock).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o600, "UAPI socket must be private");
    let runner = std::thread::spawn(move || engine.run());

    let dir = std::env::temp_dir().join(format!("weft-engine-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = genkey();
    let (_, peer1) = genkey();
    let (_, peer2) = genkey();
    let (psk, _) = genkey();
    let key_file = dir.join("key");
    let psk_file = dir.join("psk");
    std::fs::write(&key_file, &private).unwrap();
    std::fs::write(&psk_file, &psk).unwrap();

    wg(&[
        "set",
        &ifname,
        "private-key",
        key_file.to_str().unwrap(),
        "listen-port",
        "0",
        "fwmark",
        "0x42",
        "peer",
        &peer1,
        "preshared-key",
        psk_file.to_str().unwrap(),
        "endpoint",
        "127.0.0.1:51000",
        "persistent-keepalive",
        "25",
        "allowed-ips",
        "10.9.0.0/24,fd09::/64",
        "peer",
        &peer2,
        "endpoint",
        "[::1]:51001",
        "allowed-ips",
        "10.9.1.7/32",
    ]);
    let dump = wg(&["show", &ifname, "dump"]);
    let lines: Vec<Vec<&str>> = dump.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 3, "device line and two peers: {dump}");
    assert_eq!(lines[0][0], private);
    assert_eq!(lines[0][1], public);
    let port: u16 = lines[0][2].parse().unwrap();
    assert_ne!(port, 0, "listen-port 0 means a random port, reported back");
    assert_eq!(lines[0][3], "0x42");
    let p1 = lines.iter().find(|l| l[0] == peer1).expect("peer1 listed");
    assert_eq!(p1[1], psk);
    assert_eq!(p1[2], "127.0.0.1:51000");
    assert_eq!(p1[3], "10.9.0.0/24,fd09::/64");
    assert_eq!(p1[7], "25");
    let p2 = lines.iter().find(|l| l[0] == peer2).expect("peer2 listed");
    assert_eq!(p2[2], "[::1]:51001");
    assert_eq!(p2[4], "0", "no handshake yet");

    // A prefix moves between peers; removing a peer removes its routes.
    wg(&[
        "set",
        &ifname,
        "peer",
        &peer2,
        "allowed-ips",
        "10.9.1.7/32,10.9.0.0/24",
    ]);
    let ips = wg(&["show", &ifname, "allowed-ips"]);
    assert!(ips.contains(&format!("{peer1}\tfd09::/64")), "{ips}");
    wg(&["set", &ifname, "peer", &peer2, "remove"]);
    let dump = wg(&["show", &ifname, "dump"]);
    assert_eq!(dump.lines().count(), 2, "{dump}");
    // The port can be changed to a fixed one and the mark cleared.
    wg(&["set", &ifname, "listen-port", "51877", "fwmark", "0"]);
    assert_eq!(wg(&["show", &ifname, "listen-port"]).trim(), "51877");
    assert_eq!(wg(&["show", &ifname, "fwmark"]).trim(), "off");

    drop(guard); // ip link del: the engine must notice and return cleanly.
    let result = wait_join(runner, Duration::from_secs(10));
    assert!(result.is_ok(), "engine stopped with {result:?}");
    assert!(
        !std::path::Path::new(&sock).exists(),
        "UAPI socket removed on stop"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn wait_join(
    handle: std::thread::JoinHandle<Result<(), weft_dataplane::EngineError>>,
    limit: Duration,
) -> Result<(), String> {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while !handle.is_finished() {
        assert!(
            waited < limit,
            "engine did not stop within {limit:?} of interface deletion"
        );
        std::thread::sleep(step);
        waited += step;
    }
    handle
        .join()
        .map_err(|_| "engine thread panicked".to_string())?
        .map_err(|e| e.to_string())
}
