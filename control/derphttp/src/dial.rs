//! Dialling: TCP (no Nagle), TLS when the URL says `https`, then the `/derp` HTTP upgrade.
//!
//! The upgrade is written and read by hand rather than through an HTTP library: it is one
//! fixed request and one response head, after which the connection is a raw DERP byte stream
//! (the server "hijacks" it). Bytes the server sent after the head (its ServerKey frame often
//! arrives in the same segment) are handed on, not lost.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_derp::handshake::MeshKey;
use weft_keys::{PrivateKey, PublicKey};

use crate::error::DerpError;
use crate::tls::{client_config, TlsVerify};
use crate::url::DerpUrl;

/// The longest response head accepted for the upgrade.
const MAX_HEAD: usize = 16 << 10;

/// Everything [`crate::DerpClient::connect`] needs. Make one with [`DialConfig::new`] and set
/// the fields that differ.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DialConfig {
    /// The server.
    pub url: DerpUrl,
    /// Dial this address instead of resolving the URL's host (the host still names the server
    /// in TLS and the `Host` header).
    pub addr: Option<SocketAddr>,
    /// How the certificate is checked (`https` only).
    pub tls: TlsVerify,
    /// The client's node key: its public half is its DERP address.
    pub private_key: PrivateKey,
    /// The region's mesh key (a server's mesh link).
    pub mesh_key: Option<MeshKey>,
    /// The server's DERP key when known in advance: the upgrade's `Derp-Public-Key` header and
    /// the ServerKey frame must match it.
    pub server_key: Option<PublicKey>,
    /// Declare in ClientInfo that pings are answered (they always are).
    pub can_ack_pings: bool,
    /// Application name for the server's statistics.
    pub app_name: Option<String>,
    /// Send NotePreferred(true) once connected: this server is the client's home.
    pub note_preferred: bool,
    /// Time allowed for TCP, TLS, the upgrade and the DERP handshake together.
    pub connect_timeout: Duration,
    /// A write that makes no progress for this long ends the connection.
    pub write_timeout: Duration,
    /// Received batches buffered for [`crate::Events`] before the reader stops reading (one
    /// batch is what one socket read produced).
    pub event_batches: usize,
}

impl DialConfig {
    /// Defaults for `url`: the pin from its fragment if it has one, else WebPKI with an empty
    /// root store (set [`DialConfig::tls`] for an `https` URL without a pin), no mesh key,
    /// pings acknowledged, not preferred, 10 s to connect, 10 s per write, 64 batches.
    pub fn new(url: DerpUrl, private_key: PrivateKey) -> Self {
        let tls = match &url.pin {
            Some(p) => TlsVerify::Pin(p.clone()),
            None => TlsVerify::Roots(Arc::new(rustls::RootCertStore::empty())),
        };
        Self {
            url,
            addr: None,
            tls,
            private_key,
            mesh_key: None,
            server_key: None,
            can_ack_pings: true,
            app_name: None,
            note_preferred: false,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            event_batches: 64,
        }
    }
}

/// A byte stream after the upgrade: TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What the upgrade produced.
pub(crate) struct Upgraded {
    pub(crate) stream: Pin<Box<dyn Io>>,
    /// Bytes read past the response head.
    pub(crate) leftover: Vec<u8>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) remote_addr: SocketAddr,
}

async fn resolve(cfg: &DialConfig) -> Result<SocketAddr, DerpError> {
    if let Some(a) = cfg.addr {
        return Ok(a);
    }
    let host = cfg.url.host.clone();
    let mut addrs = tokio::net::lookup_host((cfg.url.host.as_str(), cfg.url.port))
        .await
        .map_err(|source| DerpError::Resolve {
            host: host.clone(),
            source,
        })?;
    let first = addrs.next();
    first.ok_or(DerpError::NoAddress(host))
}

/// TCP, TLS and the upgrade (no deadline here; the caller applies one).
pub(crate) async fn dial(cfg: &DialConfig) -> Result<Upgraded, DerpError> {
    let addr = resolve(cfg).await?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| DerpError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    let local_addr = tcp.local_addr().ok();
    let mut stream: Pin<Box<dyn Io>> = if cfg.url.is_tls() {
        let (tls_cfg, seen) = client_config(&cfg.tls)?;
        let name = ServerName::try_from(cfg.url.host.clone())
            .map_err(|_| DerpError::ServerName(cfg.url.host.clone()))?;
        match tokio_rustls::TlsConnector::from(Arc::new(tls_cfg))
            .connect(name, tcp)
            .await
        {
            Ok(s) => Box::pin(s),
            Err(e) => {
                let presented = seen.and_then(|s| s.lock().ok().and_then(|mut g| g.take()));
                return Err(match (presented, &cfg.tls) {
                    (Some(presented), TlsVerify::Pin(expected)) => DerpError::PinMismatch {
                        expected: expected.clone(),
                        presented,
                    },
                    _ => DerpError::Tls(e),
                });
            }
        }
    } else {
        Box::pin(tcp)
    };
    let req = format!(
        "GET /derp HTTP/1.1\r\nHost: {}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nUser-Agent: weft-derphttp\r\n\r\n",
        cfg.url.host_header()
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(DerpError::Io)?;
    stream.flush().await.map_err(DerpError::Io)?;
    let leftover = read_head(&mut stream, cfg.server_key).await?;
    Ok(Upgraded {
        stream,
        leftover,
        local_addr,
        remote_addr: addr,
    })
}

/// Reads the response head and checks it is a 101 (and, when the server key is known, that
/// `Derp-Public-Key` names it); returns the bytes read past the head.
async fn read_head(
    stream: &mut Pin<Box<dyn Io>>,
    expect_key: Option<PublicKey>,
) -> Result<Vec<u8>, DerpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                if resp.version != Some(1) {
                    return Err(DerpError::BadResponse("not HTTP/1.1"));
                }
                let status = resp.code.unwrap_or(0);
                if status != 101 {
                    return Err(DerpError::UpgradeRefused { status });
                }
                let key = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("Derp-Public-Key"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| PublicKey::from_hex(v.trim()).ok());
                if let (Some(want), Some(got)) = (expect_key, key) {
                    if want != got {
                        return Err(DerpError::ServerKeyMismatch);
                    }
                }
                buf.drain(..len.min(buf.len()));
                return Ok(buf);
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(DerpError::BadResponse("unparsable head")),
        }
        if buf.len() > MAX_HEAD {
            return Err(DerpError::BadResponse("head too long"));
        }
        let n = stream.read(&mut chunk).await.map_err(DerpError::Io)?;
        if n == 0 {
            return Err(DerpError::ClosedByServer);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}
