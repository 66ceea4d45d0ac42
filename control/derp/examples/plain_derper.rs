//! A minimal plain-HTTP DERP relay over `weft_derp::server::Server`, with std threads and
//! blocking sockets. It exists to check the core against real Tailscale clients (`tailcat` with
//! `TS_DEBUG_USE_DERP_HTTP=1`, inside `shared/realclients/sandbox.sh`) before the real
//! `weft-derper` shell (tokio, TLS, WebSocket, STUN, metrics) is written; it is not that shell.
//!
//! Usage: `cargo run -p weft-derp --example plain_derper -- 127.0.0.1:3340`
//!
//! Shape of a shell: one reader thread per connection feeds bytes to the server under a mutex,
//! one writer thread per connection writes what `poll_transmit` returns when woken, and a ticker
//! thread drives keep-alives. TLS probes (first byte 0x16) and other requests are closed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    missing_docs
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_derp::server::{ConnId, ConnOptions, Event, Server, ServerConfig};
use weft_keys::PrivateKey;

struct Shared {
    server: Server,
    writers: BTreeMap<ConnId, (Sender<()>, TcpStream)>,
}

type State = Arc<Mutex<Shared>>;

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    b
}

/// Carries out the server's events; call with the lock held.
fn dispatch(sh: &mut Shared) {
    while let Some(ev) = sh.server.poll_event() {
        match ev {
            Event::Wake(id) => {
                if let Some((tx, _)) = sh.writers.get(&id) {
                    let _ = tx.send(());
                }
            }
            Event::Close(id) => {
                if let Some((_, s)) = sh.writers.get(&id) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
            Event::Forward { .. } => {} // no mesh in this example
            _ => {}
        }
    }
}

fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.first() == Some(&0x16) {
            return None; // a TLS ClientHello (netcheck's HTTPS probe): not served here
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > 16 << 10 {
            return None;
        }
    }
}

fn serve(state: State, mut s: TcpStream) {
    let peer = s.peer_addr().ok();
    let Some((head, mut pending)) = read_request(&mut s) else {
        return;
    };
    let first = head.lines().next().unwrap_or_default().to_owned();
    let upgrade_derp = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("upgrade:") && l.contains("derp")
    });
    if !(first.starts_with("GET /derp ") && upgrade_derp) {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let mut hello = Vec::new();
    {
        let sh = state.lock().unwrap();
        hello.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\
                 Derp-Version: 2\r\nDerp-Public-Key: {}\r\n\r\n",
                sh.server.public_key().to_hex()
            )
            .as_bytes(),
        );
        sh.server.write_server_key(&mut hello);
    }
    if s.write_all(&hello).is_err() {
        return;
    }
    let mut chunk = vec![0u8; 64 << 10];
    let (key, info) = loop {
        match state.lock().unwrap().server.read_client_info(&pending) {
            Ok(Some((k, info, used))) => {
                pending.drain(..used);
                break (k, info);
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("plain_derper: {peer:?}: handshake: {e}");
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    };
    let (tx, rx) = channel::<()>();
    let id = {
        let mut sh = state.lock().unwrap();
        let id = sh.server.accept(
            Instant::now(),
            key,
            &info,
            ConnOptions {
                remote: peer,
                not_ideal: false,
            },
        );
        sh.writers.insert(id, (tx, s.try_clone().unwrap()));
        dispatch(&mut sh);
        id
    };
    eprintln!("plain_derper: {peer:?} connected as conn {}", id.0);

    let wstate = state.clone();
    let mut ws = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while rx.recv().is_ok() {
            loop {
                out.clear();
                let more = wstate
                    .lock()
                    .unwrap()
                    .server
                    .poll_transmit(id, &mut out, 256 << 10);
                if !out.is_empty() && ws.write_all(&out).is_err() {
                    return;
                }
                if !more {
                    break;
                }
            }
        }
    });

    loop {
        if !pending.is_empty() {
            let mut sh = state.lock().unwrap();
            let r = sh.server.handle_input(id, Instant::now(), &pending);
            dispatch(&mut sh);
            match r {
                Ok(used) => {
                    pending.drain(..used);
                }
                Err(e) => {
                    eprintln!("plain_derper: conn {}: {e}", id.0);
                    break;
                }
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
    let mut sh = state.lock().unwrap();
    sh.server.disconnect(id);
    sh.writers.remove(&id); // drops the waker: the writer thread ends
    dispatch(&mut sh);
    let _ = s.shutdown(Shutdown::Both);
    eprintln!("plain_derper: conn {} closed", id.0);
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3340".into());
    let config = ServerConfig::new(PrivateKey::from_bytes(random32()));
    let state: State = Arc::new(Mutex::new(Shared {
        server: Server::new(config, random32()),
        writers: BTreeMap::new(),
    }));
    let ticker = state.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let mut sh = ticker.lock().unwrap();
        sh.server.handle_timeout(Instant::now());
        dispatch(&mut sh);
        let st = sh.server.stats();
        if st.packets_received > 0 {
            eprintln!(
                "plain_derper: clients={} recv={} sent={} dropped={}",
                st.current_clients,
                st.packets_received,
                st.packets_sent,
                st.drops.total_packets()
            );
        }
    });
    let listener = TcpListener::bind(&addr).expect("bind");
    eprintln!("plain_derper: listening on {addr} (plain HTTP, test use only)");
    for s in listener.incoming().flatten() {
        let st = state.clone();
        std::thread::spawn(move || serve(st, s));
    }
}
