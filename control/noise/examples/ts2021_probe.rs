//! A one-shot ts2021 server for checking `weft-controlbase` against an official Tailscale
//! client: it serves `GET /key`, answers the `POST /ts2021` upgrade with a weft Noise
//! response, then decrypts the client's first records and checks that they start with the
//! HTTP/2 connection preface — which only happens if the client accepted weft's handshake and
//! both sides derived the same keys and nonces. Blocking, one connection at a time: a probe,
//! not a server. See `scripts/ts2021-probe.sh` for the run inside the real-client sandbox.
//!
//! Usage: `ts2021_probe ADDR:PORT` (exits 0 after a verified preface, 1 on any failure, after
//! at most 60 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use weft_controlbase::{accept, RecordReader};
use weft_keys::PrivateKey;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn random_key() -> PrivateKey {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    PrivateKey::from_bytes(b)
}

/// Reads an HTTP/1.1 request head; returns (request line, headers).
fn read_head(s: &mut TcpStream) -> Option<(String, Vec<(String, String)>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 || buf.len() > 65536 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next()?.to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((first, headers))
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let server = random_key();
    let listener = TcpListener::bind(&addr).expect("bind");
    listener.set_nonblocking(true).unwrap();
    eprintln!("ts2021-probe: listening on {addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let Some((line, headers)) = read_head(&mut s) else {
            continue;
        };
        eprintln!("ts2021-probe: {line}");
        let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if line.starts_with("GET /key") {
            let body = format!(
                r#"{{"legacyPublicKey":"mkey:{}","publicKey":"mkey:{}"}}"#,
                "0".repeat(64),
                server.public_key().to_hex()
            );
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            continue;
        }
        if !line.contains("/ts2021") {
            let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        use base64::Engine as _;
        let Some(init) = header("x-tailscale-handshake")
            .and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok())
        else {
            eprintln!("ts2021-probe: no handshake header");
            std::process::exit(1);
        };
        let acc = match accept(&server, &init, &random_key()) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("ts2021-probe: handshake refused: {e}");
                std::process::exit(1);
            }
        };
        eprintln!(
            "ts2021-probe: handshake from machine key {} (protocol version {})",
            acc.machine.to_hex(),
            acc.version
        );
        let mut out = Vec::new();
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n",
        );
        out.extend_from_slice(&acc.response);
        s.write_all(&out).unwrap();
        let mut transport = acc.transport;
        let mut reader = RecordReader::new();
        let mut plain = Vec::new();
        let mut buf = [0u8; 4096];
        while plain.len() < PREFACE.len() && Instant::now() < deadline {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            reader.push(&buf[..n]);
            loop {
                match reader.next(&mut transport) {
                    Ok(Some(p)) => plain.extend_from_slice(&p),
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("ts2021-probe: record refused: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
        if plain.starts_with(PREFACE) {
            println!(
                "ts2021-probe: OK — the official client's first records decrypt to the HTTP/2 preface ({} plaintext bytes)",
                plain.len()
            );
            std::process::exit(0);
        }
        eprintln!("ts2021-probe: got {:?}", String::from_utf8_lossy(&plain));
        std::process::exit(1);
    }
    eprintln!("ts2021-probe: no ts2021 connection within 60 s");
    std::process::exit(1);
}
