//! The I/O shell of the UAPI: the Unix socket at `/var/run/wireguard/IFNAME.sock`.
//!
//! # Design
//!
//! * **Thread per connection, bounded.** `wg` opens a connection, sends one request and reads
//!   one reply, so connections are short and rare; a blocking thread each is the simplest thing
//!   that works. At most [`UapiServer::with_max_connections`] run at once (extra connections are
//!   closed at once), and every read and write has a timeout, so a stalled client cannot pin a
//!   thread or make the server hoard them.
//! * **The handler is the device.** The server knows nothing about devices: for each complete
//!   request it calls the handler and writes back what it returns. The handler is called from
//!   several connection threads at once and must serialize changes itself (wireguard-go takes an
//!   IPC lock around each request).
//! * **Race-free permissions.** The socket is the only access control (`wg` needs no other
//!   credentials), so it must never be reachable with looser permissions than 0600, not even
//!   briefly. `umask` is process-wide and would race with other threads, so instead the socket
//!   is bound inside a fresh 0700 directory, chmodded to 0600 there, and then renamed into
//!   place. The rename also atomically replaces a stale socket file left by a crashed process;
//!   a socket that still accepts connections is never replaced.
//! * **Clean exit.** Dropping the [`UapiHandle`] stops the accept loop, closes live connections,
//!   joins every thread and removes the socket file, but only if the path still names our
//!   socket (another instance may have taken it over).
//!
//! Not done here: wireguard-go also shuts the whole device down when its socket file is deleted;
//! that policy belongs to whoever owns the device.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, info, warn};
use zeroize::Zeroize;

use super::proto::{
    write_errno, write_get_reply, DeviceSnapshot, ParserConfig, Request, RequestParser, UapiError,
};

/// Where `wg` looks for userspace interfaces' sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// Default bound on concurrently served connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// Default read and write timeout per connection.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the UAPI socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UapiServerError {
    /// The interface name cannot name a socket file (empty, longer than 15 bytes, or containing
    /// `/` or NUL, or `.`/`..`).
    #[error("invalid interface name {name:?}")]
    InvalidInterfaceName {
        /// The rejected name.
        name: String,
    },
    /// The socket path has no file name.
    #[error("invalid socket path {path:?}")]
    InvalidPath {
        /// The rejected path.
        path: PathBuf,
    },
    /// The socket directory could not be created.
    #[error("cannot create {path:?}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another process is accepting connections on the socket path.
    #[error("UAPI socket {path:?} is already in use")]
    AlreadyInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket exists at the socket path; it is left alone.
    #[error("{path:?} exists and is not a socket")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Binding the socket failed.
    #[error("cannot bind {path:?}: {source}")]
    Bind {
        /// The path that was being bound.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A filesystem step around the bind failed.
    #[error("cannot {step} {path:?}: {source}")]
    Setup {
        /// What was being done.
        step: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The accept thread could not be started.
    #[error("cannot start the UAPI thread: {source}")]
    Spawn {
        /// The underlying error.
        source: io::Error,
    },
}

/// The socket file we created, identified by device and inode so we never delete a file that
/// someone else has since put at the same path.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn is_ours(&self) -> bool {
        fs::symlink_metadata(&self.path)
            .map(|m| m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.is_ours() {
            if let Err(error) = fs::remove_file(&self.path) {
                warn!(path = ?self.path, %error, "cannot remove UAPI socket");
            }
        }
    }
}

/// A bound, not yet serving, UAPI socket. Removes its socket file when dropped.
#[derive(Debug)]
pub struct UapiServer {
    listener: UnixListener,
    file: SocketFile,
    max_connections: usize,
    io_timeout: Duration,
    parser: ParserConfig,
}

/// Unique names for the private bind directories of concurrent binds in one process.
static BIND_COUNTER: AtomicU64 = AtomicU64::new(0);

impl UapiServer {
    /// Creates [`SOCKET_DIR`] (mode 0755) if needed and binds `IFNAME.sock` in it with mode 0600.
    ///
    /// A stale socket file (nothing accepting on it) is replaced; a live one is an error.
    ///
    /// # Errors
    /// [`UapiServerError::InvalidInterfaceName`], [`UapiServerError::CreateDir`], and every error
    /// of [`UapiServer::bind_path`].
    pub fn bind(ifname: &str) -> Result<Self, UapiServerError> {
        let valid = !ifname.is_empty()
            && ifname.len() <= 15
            && ifname != "."
            && ifname != ".."
            && !ifname.contains(['/', '\0']);
        if !valid {
            return Err(UapiServerError::InvalidInterfaceName {
                name: ifname.to_owned(),
            });
        }
        let dir = Path::new(SOCKET_DIR);
        if !dir.is_dir() {
            let create = |path: &Path| -> io::Result<()> {
                DirBuilder::new().recursive(true).mode(0o755).create(path)?;
                // The mode above is filtered by the umask; make it exact.
                fs::set_permissions(path, Permissions::from_mode(0o755))
            };
            create(dir).map_err(|source| UapiServerError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        Self::bind_path(&dir.join(format!("{ifname}.sock")))
    }

    /// Binds a UAPI socket at `path` with mode 0600; [`UapiServer::bind`] without the naming
    /// rules, for tests and unusual layouts.
    ///
    /// # Errors
    /// [`UapiServerError::AlreadyInUse`] if something accepts connections at `path`,
    /// [`UapiServerError::NotASocket`] if a non-socket file is there,
    /// [`UapiServerError::Bind`]/[`UapiServerError::Setup`] if a filesystem step fails.
    pub fn bind_path(path: &Path) -> Result<Self, UapiServerError> {
        if path.file_name().is_none() {
            return Err(UapiServerError::InvalidPath {
                path: path.to_owned(),
            });
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        check_existing(path)?;

        let private_dir = make_private_dir(parent)?;
        let staged = private_dir.join("s");
        let bound = (|| {
            let listener = UnixListener::bind(&staged).map_err(|source| UapiServerError::Bind {
                path: staged.clone(),
                source,
            })?;
            fs::set_permissions(&staged, Permissions::from_mode(0o600)).map_err(|source| {
                UapiServerError::Setup {
                    step: "chmod",
                    path: staged.clone(),
                    source,
                }
            })?;
            // Re-check right before the rename to keep the window for a racing instance small.
            check_existing(path)?;
            fs::rename(&staged, path).map_err(|source| UapiServerError::Setup {
                step: "rename the socket to",
                path: path.to_owned(),
                source,
            })?;
            Ok(listener)
        })();
        if bound.is_err() {
            let _ = fs::remove_file(&staged);
        }
        if let Err(error) = fs::remove_dir(&private_dir) {
            warn!(path = ?private_dir, %error, "cannot remove private bind directory");
        }
        let listener = bound?;

        let meta = fs::symlink_metadata(path).map_err(|source| UapiServerError::Setup {
            step: "stat",
            path: path.to_owned(),
            source,
        })?;
        info!(path = ?path, "UAPI socket bound");
        Ok(Self {
            listener,
            file: SocketFile {
                path: path.to_owned(),
                dev: meta.dev(),
                ino: meta.ino(),
            },
            max_connections: DEFAULT_MAX_CONNECTIONS,
            io_timeout: DEFAULT_IO_TIMEOUT,
            parser: default_parser_config(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Sets the bound on concurrently served connections (at least 1).
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Sets the read/write timeout of each connection (at least 1 ms).
    #[must_use]
    pub fn with_io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets the parser limits (by default: [`ParserConfig::default`] plus, on Linux, zone names
    /// resolved through `/sys/class/net`).
    #[must_use]
    pub fn with_parser_config(mut self, config: ParserConfig) -> Self {
        self.parser = config;
        self
    }

    /// Starts serving: a thread accepts connections and one thread per connection parses
    /// requests, calls `handler` for each and writes the reply (`Ok(Some(snapshot))` is
    /// reported for `get`; for `set` only success matters).
    ///
    /// # Errors
    /// [`UapiServerError::Spawn`] if the accept thread cannot be started.
    pub fn spawn<H>(self, handler: H) -> Result<UapiHandle, UapiServerError>
    where
        H: Fn(Request) -> Result<Option<DeviceSnapshot>, UapiError> + Send + Sync + 'static,
    {
        let Self {
            listener,
            file,
            max_connections,
            io_timeout,
            parser,
        } = self;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            listener,
            live: Mutex::new(BTreeMap::new()),
            active: AtomicUsize::new(0),
        });
        let settings = Settings {
            max_connections,
            io_timeout,
            parser,
        };
        let handler = Arc::new(handler);
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("uapi-accept".into())
            .spawn(move || accept_loop(&accept_shared, &handler, settings))
            .map_err(|source| UapiServerError::Spawn { source })?;
        Ok(UapiHandle {
            shared,
            accept: Some(accept),
            file,
        })
    }
}

/// A running UAPI server. Dropping it (or [`UapiHandle::shutdown`]) stops it and removes the
/// socket file.
#[derive(Debug)]
pub struct UapiHandle {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    // Declared last: dropped after the threads are joined.
    file: SocketFile,
}

impl UapiHandle {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Stops accepting, closes live connections and waits for every server thread to exit.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        // On Linux, shutting a listening socket down wakes a blocked accept(). Elsewhere a
        // connection does; only connect if the path is still ours.
        let _ = socket2::SockRef::from(&self.shared.listener).shutdown(Shutdown::Read);
        if self.file.is_ours() {
            let _ = UnixStream::connect(&self.file.path);
        }
        if accept.join().is_err() {
            warn!("UAPI accept thread panicked");
        }
        info!(path = ?self.file.path, "UAPI server stopped");
    }
}

impl Drop for UapiHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    listener: UnixListener,
    /// Clones of live connections, so shutdown can unblock their reads.
    live: Mutex<BTreeMap<u64, UnixStream>>,
    active: AtomicUsize,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    max_connections: usize,
    io_timeout: Duration,
    parser: ParserConfig,
}

/// Decrements the connection count and forgets the connection even if the handler panics.
struct ConnectionGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop<H>(shared: &Arc<Shared>, handler: &Arc<H>, settings: Settings)
where
    H: Fn(Request) -> Result<Option<DeviceSnapshot>, UapiError> + Send + Sync + 'static,
{
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id: u64 = 0;
    loop {
        let accepted = shared.listener.accept();
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!(%error, "UAPI accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        threads.retain(|t| !t.is_finished());
        if shared.active.load(Ordering::Acquire) >= settings.max_connections {
            warn!(
                max = settings.max_connections,
                "too many UAPI connections; closing a new one"
            );
            continue;
        }
        let (Ok(()), Ok(()), Ok(registered)) = (
            stream.set_read_timeout(Some(settings.io_timeout)),
            stream.set_write_timeout(Some(settings.io_timeout)),
            stream.try_clone(),
        ) else {
            warn!("cannot configure a UAPI connection; closing it");
            continue;
        };
        let id = next_id;
        next_id = next_id.wrapping_add(1);
        shared.active.fetch_add(1, Ordering::AcqRel);
        shared
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, registered);
        let conn_shared = Arc::clone(shared);
        let conn_handler = Arc::clone(handler);
        let spawned = std::thread::Builder::new()
            .name(format!("uapi-conn-{id}"))
            .spawn(move || {
                let _guard = ConnectionGuard {
                    shared: &conn_shared,
                    id,
                };
                serve_connection(stream, &*conn_handler, settings.parser, &conn_shared.stop);
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(error) => {
                warn!(%error, "cannot start a UAPI connection thread");
                shared
                    .live
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                shared.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    // Unblock every connection thread, then wait for them.
    for stream in shared
        .live
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
    {
        let _ = stream.shutdown(Shutdown::Both);
    }
    for thread in threads {
        if thread.join().is_err() {
            warn!("UAPI connection thread panicked");
        }
    }
}

/// Serves one connection until EOF, an error, a fatal protocol error or shutdown.
fn serve_connection<H>(mut stream: UnixStream, handler: &H, config: ParserConfig, stop: &AtomicBool)
where
    H: Fn(Request) -> Result<Option<DeviceSnapshot>, UapiError>,
{
    let mut parser = RequestParser::with_config(config);
    let mut buf = [0u8; 4096];
    let mut reply = String::new();
    'conn: loop {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                if let Some(outcome) = parser.finish() {
                    respond(&mut stream, handler, outcome, &mut reply);
                }
                break;
            }
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                debug!(%error, "UAPI connection closed");
                break;
            }
        };
        let mut input = buf.get(..n).unwrap_or_default();
        while !input.is_empty() {
            let fed = parser.feed(input);
            input = input.get(fed.consumed..).unwrap_or_default();
            if let Some(outcome) = fed.output {
                if !respond(&mut stream, handler, outcome, &mut reply) {
                    break 'conn;
                }
            }
            if parser.is_closed() {
                break 'conn;
            }
        }
    }
    buf.zeroize();
}

/// Runs one request (or reports one parse error) and writes the reply. Returns whether the
/// connection should stay open.
fn respond<H>(
    stream: &mut UnixStream,
    handler: &H,
    outcome: Result<Request, UapiError>,
    reply: &mut String,
) -> bool
where
    H: Fn(Request) -> Result<Option<DeviceSnapshot>, UapiError>,
{
    reply.clear();
    let keep_open = match outcome {
        Ok(request) => {
            let is_get = matches!(request, Request::Get);
            match handler(request) {
                Ok(snapshot) => {
                    if let (true, Some(snapshot)) = (is_get, snapshot) {
                        write_get_reply(&snapshot, reply);
                    }
                    write_errno(0, reply);
                }
                Err(error) => {
                    warn!(%error, errno = error.errno(), "UAPI request failed");
                    write_errno(error.errno(), reply);
                }
            }
            true
        }
        Err(error) if !error.is_replied() => {
            debug!(%error, "closing UAPI connection");
            return false;
        }
        Err(error) => {
            warn!(%error, errno = error.errno(), "bad UAPI request");
            write_errno(error.errno(), reply);
            !error.is_fatal()
        }
    };
    let written = stream
        .write_all(reply.as_bytes())
        .and_then(|()| stream.flush());
    reply.zeroize();
    if let Err(error) = written {
        debug!(%error, "cannot write UAPI reply");
        return false;
    }
    keep_open
}

/// Refuses to touch a live socket or a non-socket at `path`; a stale socket is fine.
fn check_existing(path: &Path) -> Result<(), UapiServerError> {
    match fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UapiServerError::Setup {
            step: "stat",
            path: path.to_owned(),
            source,
        }),
        Ok(meta) if !meta.file_type().is_socket() => Err(UapiServerError::NotASocket {
            path: path.to_owned(),
        }),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(UapiServerError::AlreadyInUse {
                path: path.to_owned(),
            }),
            Err(_) => {
                info!(path = ?path, "replacing stale UAPI socket");
                Ok(())
            }
        },
    }
}

/// Creates a fresh 0700 directory next to the socket path to bind in.
fn make_private_dir(parent: &Path) -> Result<PathBuf, UapiServerError> {
    let pid = std::process::id();
    let mut last_error = None;
    for _ in 0..16 {
        let n = BIND_COUNTER.fetch_add(1, Ordering::Relaxed);
        // Hidden and without a ".sock" suffix, so `wg` never mistakes it for an interface.
        let dir = parent.join(format!(".weft-{pid}-{n}"));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last_error = Some(error),
            Err(source) => {
                return Err(UapiServerError::Setup {
                    step: "create a private directory in",
                    path: parent.to_owned(),
                    source,
                })
            }
        }
    }
    Err(UapiServerError::Setup {
        step: "create a private directory in",
        path: parent.to_owned(),
        source: last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    })
}

/// The server's parser settings: defaults, plus zone names resolved where we know how.
fn default_parser_config() -> ParserConfig {
    ParserConfig {
        resolve_scope: if cfg!(target_os = "linux") {
            Some(sysfs_ifindex)
        } else {
            None
        },
        ..ParserConfig::default()
    }
}

/// Resolves an interface name to its index through sysfs (Linux).
pub(crate) fn sysfs_ifindex(name: &str) -> Option<u32> {
    let plausible = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0']);
    if !plausible {
        return None;
    }
    let text = fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifindex")).ok()?;
    text.trim().parse().ok()
}
