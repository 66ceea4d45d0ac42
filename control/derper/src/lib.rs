//! `weft-derper`: the DERP relay and STUN server, a thin tokio shell over the sans-IO
//! `weft-derp` core.
//!
//! Why a separate crate: the relay's rules (routing, duplicate connections, queues, PeerGone,
//! mesh privileges, keep-alives) live and are tested in `weft_derp::server::Server` without
//! sockets or clocks; what is left is I/O that only makes sense with a runtime — TLS, HTTP,
//! sockets, timers, signals, the admission HTTP call — and it is kept here, out of the core,
//! and out of client code (this crate links no dataplane crate; `scripts/check-deps.sh`).
//!
//! Pieces:
//! * [`tls`] — the certificate (given, or self-signed into the state directory), its
//!   `sha256-raw` pin, reload without restart.
//! * `http` — listener, TLS or plain HTTP, the endpoints, the `/derp` upgrade (and fast start).
//! * [`request`] — the first request head, read before hyper (fast start needs it).
//! * [`relay`] — the shared core behind a mutex, one reader and one writer task per connection,
//!   the keep-alive timer.
//! * [`verify`] — admission through a verify URL.
//! * `stun` — the UDP STUN responder.
//! * [`metrics`] — `/metrics` text.
//! * [`ws`] — DERP over WebSocket (a byte stream over binary messages).
//! * [`mesh`] — links to the other servers of the region (`--mesh-with`), over
//!   `weft-derphttp`, feeding the core's forwarder table.
//!
//! Not here yet: the TLS "meta certificate" that lets official clients fast-start.
//!
//! [`Derper::start`] runs everything on the current tokio runtime; the binary and the tests use
//! the same entry point.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use weft_derp::handshake::MeshKey;
use weft_derp::server::{MeshLinkId, Server, ServerConfig};
use weft_derphttp::DerpUrl;
use weft_keys::{PrivateKey, PublicKey};

mod http;
pub mod mesh;
pub mod metrics;
pub mod relay;
pub mod request;
mod stun;
pub mod tls;
pub mod verify;
pub mod ws;

pub use relay::{Relay, ShellCounters};

#[doc(hidden)]
pub mod fuzzing;

/// File in the state directory holding the relay's DERP private key (hex, mode 0600).
pub const NODE_KEY_FILE: &str = "derper-node.key";
/// Restarting frame sent on shutdown: clients reconnect after this long ...
pub const RESTART_RECONNECT_IN: Duration = Duration::from_secs(1);
/// ... and keep trying for this long.
pub const RESTART_TRY_FOR: Duration = Duration::from_secs(60);

/// How the DERP port speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP (test mode; official clients need a debug knob to use it).
    PlainHttp,
    /// A self-signed certificate kept in the state directory.
    SelfSigned,
    /// These PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// Everything [`Derper::start`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// DERP (HTTP/HTTPS) listen address.
    pub listen: SocketAddr,
    /// STUN (UDP) listen address; `None` disables STUN.
    pub stun_listen: Option<SocketAddr>,
    /// Where the node key and a self-signed certificate are kept; `None` makes the node key
    /// ephemeral (and self-signed TLS impossible).
    pub state_dir: Option<PathBuf>,
    /// TLS mode.
    pub tls: TlsMode,
    /// The region's mesh key: clients presenting it are trusted mesh peers.
    pub mesh_key: Option<MeshKey>,
    /// Admission URL (`http://` only).
    pub verify_url: Option<String>,
    /// The other servers of the region to dial (needs `mesh_key`; `https` URLs need a
    /// `#sha256-raw:` pin). A URL that reaches this relay itself is skipped.
    pub mesh_with: Vec<DerpUrl>,
    /// How often a failed or broken mesh link is dialled again ([`mesh::MESH_RETRY`]).
    pub mesh_retry: Duration,
}

impl Config {
    /// A configuration listening on `listen` with STUN off, no state directory, plain HTTP,
    /// no mesh and no admission check; set the fields that differ.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            stun_listen: None,
            state_dir: None,
            tls: TlsMode::PlainHttp,
            mesh_key: None,
            verify_url: None,
            mesh_with: Vec::new(),
            mesh_retry: mesh::MESH_RETRY,
        }
    }
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The certificate could not be loaded or made.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Self-signed TLS without a state directory.
    #[error("a self-signed certificate needs --state-dir (or give --cert and --key)")]
    NoStateDir,
    /// The node key file is unreadable or malformed.
    #[error("node key {0}: {1}")]
    NodeKey(PathBuf, String),
    /// The verify URL is unusable.
    #[error(transparent)]
    Verify(#[from] verify::VerifyError),
    /// The OS gave no randomness.
    #[error("no OS randomness: {0}")]
    Random(String),
    /// Mesh peers were given without a mesh key.
    #[error("--mesh-with needs --mesh-key-file")]
    MeshWithoutKey,
    /// An `https` mesh URL without a certificate pin (no CA roots are bundled).
    #[error("mesh peer {0}: https needs a #sha256-raw:<hex> pin (or use http://)")]
    MeshWithoutPin(String),
}

fn random32() -> Result<[u8; 32], StartError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| StartError::Random(e.to_string()))?;
    Ok(b)
}

/// The relay's DERP key: read from the state directory, or made (and kept there).
fn node_key(state_dir: Option<&Path>) -> Result<PrivateKey, StartError> {
    let Some(dir) = state_dir else {
        return Ok(PrivateKey::from_bytes(random32()?));
    };
    let path = dir.join(NODE_KEY_FILE);
    let bad = |e: &dyn std::fmt::Display| StartError::NodeKey(path.clone(), e.to_string());
    match std::fs::read_to_string(&path) {
        Ok(text) => PrivateKey::from_hex(text.trim()).map_err(|e| bad(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| bad(&e))?;
            let key = PrivateKey::from_bytes(random32()?);
            tls::write_private_file(&path, format!("{}\n", key.to_hex()).as_bytes(), 0o600)?;
            Ok(key)
        }
        Err(e) => Err(bad(&e)),
    }
}

/// A running relay.
#[derive(Debug)]
pub struct Derper {
    addr: SocketAddr,
    stun_addr: Option<SocketAddr>,
    relay: Arc<Relay>,
    certs: Option<Arc<tls::CertStore>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Derper {
    /// Binds the listeners and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// [`StartError`] when a port cannot be bound, the certificate or node key cannot be
    /// loaded, or the verify URL is unusable.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        if !config.mesh_with.is_empty() && config.mesh_key.is_none() {
            return Err(StartError::MeshWithoutKey);
        }
        if let Some(u) = config
            .mesh_with
            .iter()
            .find(|u| u.is_tls() && u.pin.is_none())
        {
            return Err(StartError::MeshWithoutPin(u.to_string()));
        }
        let private_key = node_key(config.state_dir.as_deref())?;
        let certs = match &config.tls {
            TlsMode::PlainHttp => None,
            TlsMode::Files { cert, key } => {
                Some(Arc::new(tls::CertStore::load(cert.clone(), key.clone())?))
            }
            TlsMode::SelfSigned => {
                let dir = config.state_dir.as_deref().ok_or(StartError::NoStateDir)?;
                let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
                let ip = config.listen.ip();
                if !ip.is_unspecified() && !ip.is_loopback() {
                    names.push(ip.to_string());
                }
                let (cert, key) = tls::ensure_self_signed(dir, &names)?;
                Some(Arc::new(tls::CertStore::load(cert, key)?))
            }
        };
        let acceptor = match &certs {
            Some(c) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                c.server_config()?,
            ))),
            None => None,
        };
        let verifier = config
            .verify_url
            .as_deref()
            .map(verify::Verifier::new)
            .transpose()?;

        let mut server_config = ServerConfig::new(private_key.clone());
        server_config.mesh_key = config.mesh_key.clone();
        let relay = Arc::new(Relay::new(
            Server::new(server_config, random32()?),
            private_key.clone(),
            verifier,
        ));

        let bind_err = |addr| move |source| StartError::Bind { addr, source };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(bind_err(config.listen))?;
        let addr = listener.local_addr().map_err(bind_err(config.listen))?;
        let mut tasks = vec![
            tokio::spawn(http::accept_loop(listener, relay.clone(), acceptor)),
            tokio::spawn(relay.clone().run_timers()),
        ];
        let mut stun_addr = None;
        if let Some(sa) = config.stun_listen {
            let sock = UdpSocket::bind(sa).await.map_err(bind_err(sa))?;
            stun_addr = Some(sock.local_addr().map_err(bind_err(sa))?);
            tasks.push(tokio::spawn(stun::serve(sock, relay.clone())));
        }
        if let Some(mesh_key) = &config.mesh_key {
            for (i, url) in config.mesh_with.iter().enumerate() {
                tasks.push(tokio::spawn(mesh::run_link(
                    relay.clone(),
                    MeshLinkId(i as u64),
                    url.clone(),
                    private_key.clone(),
                    mesh_key.clone(),
                    config.mesh_retry,
                )));
            }
        }
        Ok(Self {
            addr,
            stun_addr,
            relay,
            certs,
            tasks,
        })
    }

    /// The DERP listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The STUN socket's address.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// The relay's DERP public key.
    pub fn public_key(&self) -> PublicKey {
        self.relay.with_server(Server::public_key)
    }

    /// `sha256-raw:<hex>` of the certificate in force (`None` in plain-HTTP mode).
    pub fn cert_pin(&self) -> Option<String> {
        self.certs.as_ref().map(|c| c.pin())
    }

    /// Re-reads the certificate files (SIGHUP); the old certificate stays on failure.
    ///
    /// # Errors
    /// [`tls::TlsError`] from loading.
    pub fn reload_certs(&self) -> Result<(), tls::TlsError> {
        match &self.certs {
            Some(c) => c.reload(),
            None => Ok(()),
        }
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        self.relay
            .with_server(|s| metrics::render(s.stats(), &self.relay.counters))
    }

    /// The shared relay (counters, the core).
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// How many mesh links to other servers are up.
    pub fn mesh_links_up(&self) -> usize {
        self.relay.mesh_links_up()
    }

    /// Stops: the listeners, timers and mesh links end, every client gets a Restarting frame,
    /// the writers have `grace` to flush it, then every connection is closed.
    pub async fn shutdown(self, grace: Duration) {
        for t in &self.tasks {
            t.abort();
        }
        self.relay.shutdown(RESTART_RECONNECT_IN, RESTART_TRY_FOR);
        tokio::time::sleep(grace).await;
        self.relay.close_all();
    }
}

/// The address STUN binds to by default: the DERP listener's IP with port 3478.
pub fn default_stun_addr(listen: SocketAddr) -> SocketAddr {
    SocketAddr::new(listen.ip(), 3478)
}
