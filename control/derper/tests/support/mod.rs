//! Test helpers: a relay started in-process on loopback, and a DERP client over tokio TCP (and
//! TLS pinned to the relay's certificate) driving `weft_derp::client::Client`.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_derp::client::{Client, ClientConfig, ClientEvent};
use weft_derper::{Config, Derper, TlsMode};
use weft_derphttp::tls::PinVerifier;
use weft_keys::{PrivateKey, PublicKey};

pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "weft-derper-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Starts a relay on ephemeral loopback ports.
pub async fn start(tls: TlsMode, verify_url: Option<String>) -> (Derper, PathBuf) {
    let dir = temp_dir("state");
    let d = Derper::start(Config {
        listen: loopback(),
        stun_listen: Some(loopback()),
        state_dir: Some(dir.clone()),
        tls,
        mesh_key: None,
        verify_url,
        mesh_with: Vec::new(),
        mesh_retry: weft_derper::mesh::MESH_RETRY,
    })
    .await
    .unwrap();
    (d, dir)
}

pub fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A TCP connection to the relay, TLS-wrapped when `pin` is given.
pub async fn dial(addr: SocketAddr, pin: Option<&str>) -> Result<Pin<Box<dyn Io>>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).unwrap();
    let Some(pin) = pin else {
        return Ok(Box::pin(tcp));
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier::new(pin, provider)))
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Box::pin(tls))
}

/// Sends one HTTP/1.1 request and reads the whole response (Connection: close).
pub async fn http_get(
    addr: SocketAddr,
    pin: Option<&str>,
    path: &str,
    extra_headers: &str,
) -> String {
    let mut s = dial(addr, pin).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A DERP client over a real socket.
pub struct DerpConn {
    pub stream: Pin<Box<dyn Io>>,
    pub client: Client,
    buf: Vec<u8>,
}

#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

impl DerpConn {
    /// Dials, upgrades (`fast_start`: skip the 101, the server key pinned in the client) and
    /// starts the DERP handshake. Fails with the reason as text.
    pub async fn connect(
        addr: SocketAddr,
        pin: Option<&str>,
        me: PrivateKey,
        fast_start: Option<PublicKey>,
    ) -> Result<Self, String> {
        let mut stream = dial(addr, pin).await?;
        let mut req = String::from(
            "GET /derp HTTP/1.1\r\nHost: localhost\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n",
        );
        if fast_start.is_some() {
            req.push_str("Derp-Fast-Start: 1\r\n");
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        if fast_start.is_none() {
            let mut chunk = [0u8; 1024];
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    if !head.starts_with("HTTP/1.1 101") {
                        return Err(format!("no upgrade: {head}"));
                    }
                    buf.drain(..end + 4);
                    break;
                }
                let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                    .await
                    .map_err(|_| "timeout".to_string())?
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("eof before 101".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        let mut cfg = ClientConfig::new(me);
        cfg.server_key = fast_start;
        let client = Client::new(cfg, now(), [9; 32]).map_err(|e| e.to_string())?;
        let mut c = Self {
            stream,
            client,
            buf,
        };
        c.flush().await?;
        Ok(c)
    }

    /// Starts the DERP handshake on an already upgraded byte stream.
    pub async fn over(stream: Pin<Box<dyn Io>>, me: PrivateKey) -> Result<Self, String> {
        let client =
            Client::new(ClientConfig::new(me), now(), [9; 32]).map_err(|e| e.to_string())?;
        let mut c = Self {
            stream,
            client,
            buf: Vec::new(),
        };
        c.flush().await?;
        Ok(c)
    }

    pub async fn flush(&mut self) -> Result<(), String> {
        let mut out = Vec::new();
        if self.client.poll_transmit(&mut out) {
            self.stream
                .write_all(&out)
                .await
                .map_err(|e| e.to_string())?;
            self.stream.flush().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The next client event; `Err` on EOF, error or timeout.
    pub async fn next_event(&mut self) -> Result<ClientEvent, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if !self.buf.is_empty() {
                let used = self
                    .client
                    .handle_input(now(), &self.buf)
                    .map_err(|e| e.to_string())?;
                self.buf.drain(..used);
                self.flush().await?;
            }
            if let Some(ev) = self.client.poll_event() {
                return Ok(ev);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("eof".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Skips events until `pred` matches one.
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&ClientEvent) -> bool,
    ) -> Result<ClientEvent, String> {
        loop {
            let ev = self.next_event().await?;
            if pred(&ev) {
                return Ok(ev);
            }
        }
    }

    /// Waits until the server's ServerInfo arrived (the client was admitted).
    pub async fn admitted(&mut self) -> Result<(), String> {
        self.wait_for(|e| matches!(e, ClientEvent::ServerInfo(_)))
            .await
            .map(|_| ())
    }

    pub async fn send(&mut self, dst: PublicKey, packet: &[u8]) {
        self.client.send_packet(dst, packet).unwrap();
        self.flush().await.unwrap();
    }
}

/// The value of a metric line `name{labels} value` (or `name value`) in `/metrics` text.
pub fn metric(text: &str, name_and_labels: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Sends `payload` from `from` to `to` every 50 ms until `to` receives it (a mesh learns of a
/// new client asynchronously: PeerPresent crosses the link after the client connects).
pub async fn deliver(
    from: &weft_derphttp::DerpClient,
    to: &mut weft_derphttp::DerpClient,
    payload: &[u8],
) {
    let dst = to.public_key();
    let src = from.public_key();
    let tx = from.sender();
    let recv = async {
        loop {
            match to.recv().await.unwrap() {
                ClientEvent::Packet { src: s, packet } if packet == payload => {
                    assert_eq!(s, src);
                    return;
                }
                _ => {}
            }
        }
    };
    tokio::pin!(recv);
    let deadline = tokio::time::sleep(WAIT);
    tokio::pin!(deadline);
    loop {
        tx.try_send(dst, payload).unwrap();
        tokio::select! {
            () = &mut recv => return,
            () = &mut deadline => panic!("{payload:?} never arrived"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}
