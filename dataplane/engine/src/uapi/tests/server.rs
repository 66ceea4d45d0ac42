//! Socket-level tests: the server in a temporary directory, and `wg` itself against the server.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_keys::{PresharedKey, PrivateKey, PublicKey};

use crate::uapi::proto::*;
use crate::uapi::server::{UapiHandle, UapiServer, UapiServerError, SOCKET_DIR};

/// An in-memory device applying [`SetRequest`]s with the documented semantics.
#[derive(Debug, Default)]
struct FakeDevice {
    private_key: Option<PrivateKey>,
    listen_port: u16,
    fwmark: u32,
    peers: Vec<PeerSnapshot>,
    /// Ports the fake refuses to bind, to test error replies.
    busy_port: Option<u16>,
}

impl FakeDevice {
    fn apply(&mut self, set: SetRequest) -> Result<(), UapiError> {
        if let (Some(port), Some(busy)) = (set.listen_port, self.busy_port) {
            if port == busy {
                return Err(UapiError::AddressInUse {
                    reason: format!("port {port}"),
                });
            }
        }
        if let Some(key) = set.private_key {
            self.private_key = (!key.is_zero()).then_some(key);
        }
        if let Some(port) = set.listen_port {
            self.listen_port = port;
        }
        if let Some(mark) = set.fwmark {
            self.fwmark = mark;
        }
        if set.replace_peers {
            self.peers.clear();
        }
        let own = self.private_key.as_ref().map(PrivateKey::public_key);
        for update in set.peers {
            if Some(update.public_key) == own {
                continue;
            }
            let index = self
                .peers
                .iter()
                .position(|p| p.public_key == update.public_key);
            if update.remove {
                if let Some(i) = index {
                    self.peers.remove(i);
                }
                continue;
            }
            let i = match index {
                Some(i) => i,
                None if update.update_only => continue,
                None => {
                    self.peers.push(PeerSnapshot {
                        public_key: update.public_key,
                        preshared_key: PresharedKey::default(),
                        endpoint: None,
                        last_handshake: None,
                        tx_bytes: 0,
                        rx_bytes: 0,
                        persistent_keepalive_interval: 0,
                        allowed_ips: Vec::new(),
                    });
                    self.peers.len() - 1
                }
            };
            for prefix in &update.allowed_ips {
                for other in &mut self.peers {
                    other.allowed_ips.retain(|p| p != prefix);
                }
            }
            let peer = &mut self.peers[i];
            if let Some(psk) = update.preshared_key {
                peer.preshared_key = psk;
            }
            if let Some(endpoint) = update.endpoint {
                peer.endpoint = Some(endpoint);
            }
            if let Some(interval) = update.persistent_keepalive_interval {
                peer.persistent_keepalive_interval = interval;
            }
            if update.replace_allowed_ips {
                peer.allowed_ips.clear();
            }
            peer.allowed_ips
                .retain(|p| !update.remove_allowed_ips.contains(p));
            peer.allowed_ips.extend(update.allowed_ips);
        }
        Ok(())
    }

    fn snapshot(&self) -> DeviceSnapshot {
        DeviceSnapshot {
            private_key: self.private_key.clone(),
            listen_port: self.listen_port,
            fwmark: self.fwmark,
            peers: self.peers.clone(),
        }
    }
}

type Device = Arc<Mutex<FakeDevice>>;

fn serve(server: UapiServer, device: &Device) -> UapiHandle {
    let device = Arc::clone(device);
    server
        .spawn(move |request| {
            let mut device = device.lock().unwrap();
            match request {
                Request::Get => Ok(Some(device.snapshot())),
                Request::Set(set) => device.apply(set).map(|()| None),
            }
        })
        .unwrap()
}

/// A temporary directory removed on drop (even when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-uapi-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads one reply: everything up to and including the empty line after `errno=`.
fn read_reply(stream: &mut UnixStream) -> String {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            // A server closing with our request unread resets the connection: also "closed".
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Ok(_) => reply.push(byte[0]),
            Err(e) => panic!(
                "read failed: {e}; got so far {:?}",
                String::from_utf8_lossy(&reply)
            ),
        }
        let text = String::from_utf8_lossy(&reply);
        if text.ends_with("\n\n") && text.lines().any(|l| l.starts_with("errno=")) {
            break;
        }
    }
    String::from_utf8(reply).unwrap()
}

fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn sample_device() -> Device {
    let mut device = FakeDevice {
        private_key: Some(PrivateKey::from_bytes([3; 32])),
        listen_port: 51820,
        ..FakeDevice::default()
    };
    device.peers.push(PeerSnapshot {
        public_key: PublicKey::from_bytes([9; 32]),
        preshared_key: PresharedKey::default(),
        endpoint: Some("192.0.2.1:1".parse().unwrap()),
        last_handshake: Some(Duration::new(1_700_000_000, 5)),
        tx_bytes: 10,
        rx_bytes: 20,
        persistent_keepalive_interval: 0,
        allowed_ips: vec![("10.0.0.0".parse().unwrap(), 8)],
    });
    Arc::new(Mutex::new(device))
}

fn expected_get(device: &Device) -> String {
    let mut out = String::new();
    write_get_reply(&device.lock().unwrap().snapshot(), &mut out);
    write_errno(0, &mut out);
    out
}

#[test]
fn get_over_a_socket_with_mode_0600() {
    let dir = TempDir::new();
    let path = dir.0.join("wgtest0.sock");
    let server = UapiServer::bind_path(&path).unwrap();
    assert_eq!(server.path(), path);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    // Only the socket is left in the directory: the private bind directory is gone.
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("wgtest0.sock")]);

    let device = sample_device();
    let handle = serve(server, &device);
    let mut stream = connect(&path);
    stream.write_all(b"get=1\n\n").unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(reply, expected_get(&device));
    assert!(reply.starts_with(&format!("private_key={}\n", "03".repeat(32))));

    handle.shutdown();
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[test]
fn several_requests_on_one_connection_and_error_replies() {
    let dir = TempDir::new();
    let path = dir.0.join("wgtest1.sock");
    let device = sample_device();
    device.lock().unwrap().busy_port = Some(1);
    let _handle = serve(UapiServer::bind_path(&path).unwrap(), &device);

    let mut stream = connect(&path);
    // Split across writes at awkward points.
    for part in [&b"set=1\nlisten_"[..], b"port=7\n", b"\nget=1\n", b"\n"] {
        stream.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(read_reply(&mut stream), "errno=0\n\n");
    assert_eq!(read_reply(&mut stream), expected_get(&device));
    assert_eq!(device.lock().unwrap().listen_port, 7);

    // A bad request gets an errno and leaves the connection usable and the device unchanged.
    stream
        .write_all(b"set=1\nlisten_port=9\nfoo=bar\n\n")
        .unwrap();
    assert_eq!(read_reply(&mut stream), "errno=-22\n\n");
    assert_eq!(device.lock().unwrap().listen_port, 7);
    stream.write_all(b"set=1\nbogus\n\n").unwrap();
    assert_eq!(
        read_reply(&mut stream),
        format!("errno={}\n\n", -libc::EPROTO)
    );
    // Handler errors are reported with their errno.
    stream.write_all(b"set=1\nlisten_port=1\n\n").unwrap();
    assert_eq!(
        read_reply(&mut stream),
        format!("errno={}\n\n", -libc::EADDRINUSE)
    );

    // A fatal error is answered, then the connection is closed.
    stream.write_all(b"get=1\nx\n").unwrap();
    assert_eq!(read_reply(&mut stream), "errno=-22\n\n");
    assert_eq!(read_reply(&mut stream), "", "connection closed");

    // An unknown operation closes the connection without a reply, like wireguard-go.
    let mut stream = connect(&path);
    stream.write_all(b"hello\n").unwrap();
    assert_eq!(read_reply(&mut stream), "");

    // An unterminated set is applied at EOF.
    let mut stream = connect(&path);
    stream.write_all(b"set=1\nfwmark=5").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_reply(&mut stream), "errno=0\n\n");
    assert_eq!(device.lock().unwrap().fwmark, 5);
}

#[test]
fn live_sockets_are_never_replaced_and_stale_ones_are() {
    let dir = TempDir::new();
    let path = dir.0.join("wgtest2.sock");
    let first = UapiServer::bind_path(&path).unwrap();
    assert!(matches!(
        UapiServer::bind_path(&path),
        Err(UapiServerError::AlreadyInUse { .. })
    ));
    drop(first);
    assert!(!path.exists());

    // A socket file nobody listens on is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = UapiServer::bind_path(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(server);

    // Anything else is left alone.
    std::fs::write(&path, b"not a socket").unwrap();
    assert!(matches!(
        UapiServer::bind_path(&path),
        Err(UapiServerError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");

    // Drop never removes a file that is no longer ours.
    let other = dir.0.join("wgtest3.sock");
    let server = UapiServer::bind_path(&other).unwrap();
    std::fs::remove_file(&other).unwrap();
    std::fs::write(&other, b"someone else's").unwrap();
    drop(server);
    assert_eq!(std::fs::read(&other).unwrap(), b"someone else's");
}

#[test]
fn interface_names_are_validated() {
    for bad in ["", "a/b", "..", ".", "0123456789abcdef", "a\0b"] {
        assert!(
            matches!(
                UapiServer::bind(bad),
                Err(UapiServerError::InvalidInterfaceName { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn connections_are_bounded_and_time_out() {
    let dir = TempDir::new();
    let path = dir.0.join("wgtest4.sock");
    let device = sample_device();
    let server = UapiServer::bind_path(&path)
        .unwrap()
        .with_max_connections(1)
        .with_io_timeout(Duration::from_millis(300));
    let _handle = serve(server, &device);

    let mut first = connect(&path);
    first.write_all(b"get=1\n\n").unwrap();
    assert_eq!(read_reply(&mut first), expected_get(&device));
    // The only slot is taken: a second connection is closed at once.
    let mut second = connect(&path);
    let _ = second.write_all(b"get=1\n\n");
    assert_eq!(read_reply(&mut second), "");
    // The idle first connection times out, freeing the slot.
    assert_eq!(read_reply(&mut first), "");
    std::thread::sleep(Duration::from_millis(100));
    let mut third = connect(&path);
    third.write_all(b"get=1\n\n").unwrap();
    assert_eq!(read_reply(&mut third), expected_get(&device));
}

#[test]
fn shutdown_is_prompt_with_idle_clients() {
    let dir = TempDir::new();
    let path = dir.0.join("wgtest5.sock");
    let device = sample_device();
    let handle = serve(UapiServer::bind_path(&path).unwrap(), &device);
    let mut idle = connect(&path);
    idle.write_all(b"set=1\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        handle.shutdown();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(3))
        .expect("shutdown took too long");
    assert_eq!(read_reply(&mut idle), "");
    assert!(!path.exists());
}

// ---------------------------------------------------------------------------------------------
// End to end: the real `wg` tool against our server at /var/run/wireguard.

const WG: &str = "/usr/bin/wg";

/// Binds `/var/run/wireguard/NAME.sock` for a unique name. The tests need the real `wg` tool
/// (installed by scripts/setup.sh) and root: without them they fail, they do not skip.
fn bind_real() -> Option<(String, UapiServer)> {
    static N: AtomicU32 = AtomicU32::new(0);
    assert!(
        Path::new(WG).exists(),
        "{WG} not installed: run scripts/setup.sh"
    );
    let name = format!(
        "wtuapi{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    );
    match UapiServer::bind(&name) {
        Ok(server) => Some((name, server)),
        Err(e) => panic!("cannot bind in {SOCKET_DIR} (tests run as root): {e}"),
    }
}

fn wg(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(WG).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn wg_set_and_show_against_the_server() {
    let Some((name, server)) = bind_real() else {
        return;
    };
    let device: Device = Arc::new(Mutex::new(FakeDevice {
        busy_port: Some(1),
        ..FakeDevice::default()
    }));
    let path = server.path().to_owned();
    let handle = serve(server, &device);
    let dir = TempDir::new();

    let private = PrivateKey::from_bytes([0x42; 32]);
    let key_file = dir.0.join("private.key");
    std::fs::write(&key_file, format!("{}\n", base64_of(private.as_bytes()))).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let peer = PublicKey::from_bytes([0x17; 32]);
    let peer_b64 = peer.to_base64();

    let (ok, _, err) = wg(&[
        "set",
        &name,
        "private-key",
        key_file.to_str().unwrap(),
        "listen-port",
        "51999",
        "peer",
        &peer_b64,
        "allowed-ips",
        "10.0.0.0/24,fd00::/64",
        "endpoint",
        "127.0.0.1:1234",
        "persistent-keepalive",
        "25",
    ]);
    assert!(ok, "wg set failed: {err}");
    {
        let d = device.lock().unwrap();
        assert_eq!(d.listen_port, 51999);
        assert!(d.private_key.as_ref().unwrap().ct_eq(&private));
        assert_eq!(d.peers.len(), 1);
        let expected: Vec<(IpAddr, u8)> = vec![
            ("10.0.0.0".parse().unwrap(), 24),
            ("fd00::".parse().unwrap(), 64),
        ];
        assert_eq!(d.peers[0].allowed_ips, expected);
        assert_eq!(
            d.peers[0].endpoint,
            Some("127.0.0.1:1234".parse::<SocketAddr>().unwrap())
        );
    }
    // Pretend some traffic happened.
    {
        let mut d = device.lock().unwrap();
        d.peers[0].tx_bytes = 1000;
        d.peers[0].rx_bytes = 2000;
        d.peers[0].last_handshake = Some(Duration::new(1_700_000_000, 0));
    }

    let (ok, dump, err) = wg(&["show", &name, "dump"]);
    assert!(ok, "wg show failed: {err}");
    let expected = format!(
        "{}\t{}\t51999\toff\n{}\t(none)\t127.0.0.1:1234\t10.0.0.0/24,fd00::/64\t1700000000\t2000\t1000\t25\n",
        base64_of(private.as_bytes()),
        private.public_key().to_base64(),
        peer_b64,
    );
    assert_eq!(dump, expected);

    // `wg show interfaces` finds us.
    let (ok, interfaces, _) = wg(&["show", "interfaces"]);
    assert!(ok);
    assert!(
        interfaces.split_whitespace().any(|i| i == name),
        "{interfaces}"
    );

    // Errors reach the user with the right errno (wg negates what wireguard-go sends).
    let (ok, _, err) = wg(&["set", &name, "listen-port", "1"]);
    assert!(!ok);
    assert!(err.contains("Address already in use"), "{err}");

    // Removal, fwmark and a preshared key, then show again.
    let psk_file = dir.0.join("psk");
    std::fs::write(&psk_file, format!("{}\n", base64_of(&[0x55; 32]))).unwrap();
    let other = PublicKey::from_bytes([0x18; 32]).to_base64();
    let (ok, _, err) = wg(&[
        "set",
        &name,
        "fwmark",
        "0x10",
        "peer",
        &peer_b64,
        "remove",
        "peer",
        &other,
        "preshared-key",
        psk_file.to_str().unwrap(),
        "endpoint",
        "[2001:db8::1]:443",
    ]);
    assert!(ok, "{err}");
    let (ok, dump, err) = wg(&["show", &name, "dump"]);
    assert!(ok, "{err}");
    let expected = format!(
        "{}\t{}\t51999\t0x10\n{}\t{}\t[2001:db8::1]:443\t(none)\t0\t0\t0\toff\n",
        base64_of(private.as_bytes()),
        private.public_key().to_base64(),
        other,
        base64_of(&[0x55; 32]),
    );
    assert_eq!(dump, expected);

    handle.shutdown();
    assert!(!path.exists());
}

#[test]
fn wg_setconf_with_a_link_local_endpoint() {
    let Some((name, server)) = bind_real() else {
        return;
    };
    assert!(
        crate::uapi::server::sysfs_ifindex("lo").is_some(),
        "no /sys/class/net/lo"
    );
    let device: Device = Arc::default();
    let _handle = serve(server, &device);
    let dir = TempDir::new();
    let conf = dir.0.join("wg.conf");
    let text = std::str::from_utf8(include_bytes!("testdata/setconf.conf")).unwrap();
    std::fs::write(&conf, text).unwrap();
    let (ok, _, err) = wg(&["setconf", &name, conf.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, dump, err) = wg(&["show", &name, "dump"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(lines.len(), 3, "{dump}");
    assert!(lines[0].ends_with("\t51820\t0xca6c"), "{}", lines[0]);
    assert!(
        lines[1].contains("\t[fe80::1%lo]:51820\t10.1.0.0/16,192.168.7.7/32,fd01:2:3::/48,::/0\t"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("\t192.0.2.10:65535\t0.0.0.0/0\t"),
        "{}",
        lines[2]
    );
}

fn base64_of(bytes: &[u8; 32]) -> String {
    PublicKey::from_bytes(*bytes).to_base64()
}
