//! One DERP connection: the handshake, then a reader task and a writer task around the shared
//! `weft_derp::client::Client`, a sender handle and an event receiver.
//!
//! # Why this shape
//! The state machine sits behind one std mutex shared by the reader task, the writer task and
//! every [`DerpSender`]. Sending a packet is then: lock, encode the frame straight into the
//! core's outgoing buffer, unlock, `notify_one` the writer — no channel, no allocation, no
//! task wake-up unless the writer was idle. The writer swaps the core's whole buffer out in one
//! call ([`Client::poll_transmit`]) and writes it with one `write_all`, so under load one write
//! carries hundreds of frames, and the buffers are swapped back and forth rather than
//! reallocated. The core refuses to buffer more than [`weft_derp::client::MAX_BUFFERED`]
//! unwritten bytes: that is the send bound ([`SendError::Full`]).
//!
//! The reader reads up to 256 KiB at a time, runs every complete frame through the core under
//! the lock, and passes the events of one read as one batch through a bounded channel to
//! [`Events`]; when the consumer falls behind, the reader stops reading and TCP pushes back on
//! the server (which then drops for this client alone, as its queues are bounded). The reader
//! also owns the core's timer (no frame for 120 s means a dead server).
//!
//! The connection ends on the first error of either task, on [`DerpClient::close`], or when
//! [`Events`] is dropped; [`Events::recv`] then returns the reason once, and every send
//! returns [`SendError::Closed`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};
use weft_derp::client::{Client, ClientConfig, ClientError, ClientEvent};
use weft_keys::PublicKey;

use crate::dial::{dial, DialConfig, Io};
use crate::error::{DerpError, SendError};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 256 << 10;
/// Below this much free room at the end of the read buffer, it is compacted (or grown).
const MIN_READ_ROOM: usize = 64 << 10;

#[allow(clippy::disallowed_methods)] // the shell's clock
fn now() -> Instant {
    Instant::now()
}

/// Counters of one connection (a snapshot from [`DerpSender::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Packets queued by `send`/`forward_packet`.
    pub packets_sent: u64,
    /// Packets refused because the outgoing buffer was full.
    pub send_full: u64,
    /// Packets received.
    pub packets_received: u64,
    /// Bytes written to the connection (DERP framing included, TLS excluded).
    pub bytes_written: u64,
    /// Write calls (`bytes_written / writes` is the batch size).
    pub writes: u64,
    /// Bytes read from the connection.
    pub bytes_read: u64,
    /// Read calls.
    pub reads: u64,
}

#[derive(Debug, Default)]
struct Counters {
    packets_sent: AtomicU64,
    send_full: AtomicU64,
    packets_received: AtomicU64,
    bytes_written: AtomicU64,
    writes: AtomicU64,
    bytes_read: AtomicU64,
    reads: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct Shared {
    client: Mutex<Client>,
    /// Raised when the core has bytes to write.
    wake_writer: Notify,
    /// Raised when the writer took the core's buffer (room for `send` waiters) or on close.
    space: Notify,
    closed: AtomicBool,
    stop: watch::Sender<bool>,
    error: Mutex<Option<DerpError>>,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Client> {
        // The core is left consistent between calls; a panicking holder does not corrupt it.
        match self.client.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Ends the connection with `e` (the first reason wins).
    fn fail(&self, e: DerpError) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        match self.error.lock() {
            Ok(mut g) => *g = Some(e),
            Err(p) => *p.into_inner() = Some(e),
        }
        self.stop.send_replace(true);
        self.space.notify_waiters();
        self.wake_writer.notify_one();
    }

    fn take_error(&self) -> DerpError {
        let e = match self.error.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        e.unwrap_or(DerpError::Closed)
    }

    fn queue(
        &self,
        f: impl FnOnce(&mut Client) -> Result<(), ClientError>,
    ) -> Result<(), SendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let r = f(&mut self.lock());
        match r {
            Ok(()) => {
                self.wake_writer.notify_one();
                Ok(())
            }
            Err(e) => {
                let e = SendError::from(e);
                if e == SendError::Full {
                    add(&self.counters.send_full, 1);
                }
                Err(e)
            }
        }
    }
}

/// A cheap, cloneable handle that queues frames on one connection. No method blocks on the
/// network: the `try_*` methods return [`SendError::Full`] when the outgoing buffer is at its
/// bound (the packet is not queued, and counted), and the `async` ones wait for room, which
/// the writer makes within the connection's write timeout or the connection ends.
#[derive(Clone)]
pub struct DerpSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DerpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerpSender")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl DerpSender {
    /// Queues `packet` for the client with key `dst`, or refuses at once.
    ///
    /// # Errors
    /// [`SendError::Full`] (not queued, counted), [`SendError::TooLarge`] (above 64 KiB),
    /// [`SendError::Closed`].
    pub fn try_send(&self, dst: PublicKey, packet: &[u8]) -> Result<(), SendError> {
        self.shared.queue(|c| c.send_packet(dst, packet))?;
        add(&self.shared.counters.packets_sent, 1);
        Ok(())
    }

    /// Queues `packet` for `dst`, waiting while the outgoing buffer is full.
    ///
    /// # Errors
    /// [`SendError::TooLarge`], [`SendError::Closed`] (also when the connection ends while
    /// waiting).
    pub async fn send(&self, dst: PublicKey, packet: &[u8]) -> Result<(), SendError> {
        self.wait_for_room(|s| s.try_send(dst, packet)).await
    }

    /// Queues a packet another server's client `src` sent to `dst` (mesh links only), or
    /// refuses at once.
    ///
    /// # Errors
    /// As [`DerpSender::try_send`].
    pub fn try_forward_packet(
        &self,
        src: PublicKey,
        dst: PublicKey,
        packet: &[u8],
    ) -> Result<(), SendError> {
        self.shared.queue(|c| c.forward_packet(src, dst, packet))?;
        add(&self.shared.counters.packets_sent, 1);
        Ok(())
    }

    /// As [`DerpSender::try_forward_packet`], waiting while the buffer is full.
    ///
    /// # Errors
    /// As [`DerpSender::send`].
    pub async fn forward_packet(
        &self,
        src: PublicKey,
        dst: PublicKey,
        packet: &[u8],
    ) -> Result<(), SendError> {
        self.wait_for_room(|s| s.try_forward_packet(src, dst, packet))
            .await
    }

    async fn wait_for_room(
        &self,
        mut attempt: impl FnMut(&Self) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        loop {
            let room = self.shared.space.notified();
            tokio::pin!(room);
            // Registered before trying, so room made in between is not missed.
            room.as_mut().enable();
            match attempt(self) {
                Err(SendError::Full) => room.await,
                r => return r,
            }
        }
    }

    /// Subscribes to the server's connects and disconnects: PeerPresent for every client
    /// already there, then PeerPresent/PeerGone as they come and go. Needs the mesh key (the
    /// server closes the connection otherwise).
    ///
    /// # Errors
    /// As [`DerpSender::try_send`].
    pub fn watch_conns(&self) -> Result<(), SendError> {
        self.shared.queue(Client::watch_conns)
    }

    /// Asks the server to close `peer`'s connections (mesh key required).
    ///
    /// # Errors
    /// As [`DerpSender::try_send`].
    pub fn close_peer(&self, peer: PublicKey) -> Result<(), SendError> {
        self.shared.queue(|c| c.close_peer(peer))
    }

    /// Sends a ping; the answer arrives as [`ClientEvent::Pong`] with the same bytes.
    ///
    /// # Errors
    /// As [`DerpSender::try_send`].
    pub fn send_ping(&self, data: [u8; 8]) -> Result<(), SendError> {
        self.shared.queue(|c| c.send_ping(data))
    }

    /// Tells the server whether it is this client's home.
    ///
    /// # Errors
    /// As [`DerpSender::try_send`].
    pub fn note_preferred(&self, preferred: bool) -> Result<(), SendError> {
        self.shared.queue(|c| c.note_preferred(preferred))
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Ends the connection ([`Events::recv`] then reports [`DerpError::Closed`]).
    pub fn close(&self) {
        self.shared.fail(DerpError::Closed);
    }

    /// A snapshot of the connection's counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            packets_sent: l(&c.packets_sent),
            send_full: l(&c.send_full),
            packets_received: l(&c.packets_received),
            bytes_written: l(&c.bytes_written),
            writes: l(&c.writes),
            bytes_read: l(&c.bytes_read),
            reads: l(&c.reads),
        }
    }
}

/// What the server sends, in order. Dropping it closes the connection.
pub struct Events {
    rx: mpsc::Receiver<Vec<ClientEvent>>,
    pending: std::collections::VecDeque<ClientEvent>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Events {
    /// The next event: packets, PeerGone, PeerPresent (watchers), Pong, Health, Restarting,
    /// KeepAlive, Ping (already answered). [`ClientEvent::Connected`] and the first
    /// [`ClientEvent::ServerInfo`] were consumed by [`DerpClient::connect`].
    ///
    /// # Errors
    /// The reason the connection ended, once; afterwards [`DerpError::Closed`].
    pub async fn recv(&mut self) -> Result<ClientEvent, DerpError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            match self.rx.recv().await {
                Some(batch) => self.pending = batch.into(),
                None => return Err(self.shared.take_error()),
            }
        }
    }

    /// Ends the connection.
    pub fn close(&self) {
        self.shared.fail(DerpError::Closed);
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.shared.fail(DerpError::Closed);
    }
}

/// A connected, admitted DERP client (see the module documentation of the crate).
#[derive(Debug)]
pub struct DerpClient {
    sender: DerpSender,
    events: Events,
    server_key: PublicKey,
    public_key: PublicKey,
    local_addr: Option<SocketAddr>,
    remote_addr: SocketAddr,
}

impl DerpClient {
    /// Dials `cfg.url`, upgrades to DERP, completes the handshake and waits until the server
    /// admitted the client (its ServerInfo arrived), all within `cfg.connect_timeout`; then
    /// starts the connection's reader and writer tasks on the current tokio runtime.
    ///
    /// # Errors
    /// [`DerpError`]: resolution, TCP, TLS (a wrong pin is [`DerpError::PinMismatch`]), the
    /// upgrade, a server key other than `cfg.server_key`, [`DerpError::ClosedByServer`] when
    /// the server refuses admission, [`DerpError::Timeout`].
    pub async fn connect(cfg: DialConfig) -> Result<Self, DerpError> {
        match tokio::time::timeout(cfg.connect_timeout, connect_inner(&cfg)).await {
            Ok(r) => r,
            Err(_) => Err(DerpError::Timeout("connect")),
        }
    }

    /// A handle for sending (clone it freely).
    pub fn sender(&self) -> DerpSender {
        self.sender.clone()
    }

    /// Splits into the sender and the event receiver, e.g. to move them to different tasks.
    pub fn into_parts(self) -> (DerpSender, Events) {
        (self.sender, self.events)
    }

    /// The next event; see [`Events::recv`].
    ///
    /// # Errors
    /// As [`Events::recv`].
    pub async fn recv(&mut self) -> Result<ClientEvent, DerpError> {
        self.events.recv().await
    }

    /// As [`DerpSender::send`].
    ///
    /// # Errors
    /// As [`DerpSender::send`].
    pub async fn send(&self, dst: PublicKey, packet: &[u8]) -> Result<(), SendError> {
        self.sender.send(dst, packet).await
    }

    /// The server's DERP key.
    pub fn server_key(&self) -> PublicKey {
        self.server_key
    }

    /// This client's DERP address (its node public key).
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The local TCP address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The address dialled.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// Ends the connection.
    pub fn close(&self) {
        self.sender.close();
    }
}

/// The read side's buffer: reads land after what is still unparsed.
struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    fn new(initial: Vec<u8>) -> Self {
        let end = initial.len();
        let mut buf = initial;
        buf.resize(end.max(READ_SIZE), 0);
        Self { buf, start: 0, end }
    }

    fn data(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    async fn read_from<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        r: &mut R,
    ) -> std::io::Result<usize> {
        if self.buf.len() - self.end < MIN_READ_ROOM {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < MIN_READ_ROOM {
                // A frame larger than the buffer (the core bounds frames at 1 MiB).
                self.buf.resize(self.end + READ_SIZE, 0);
            }
        }
        let room = self.buf.get_mut(self.end..).unwrap_or_default();
        let n = r.read(room).await?;
        self.end += n;
        Ok(n)
    }
}

fn random_seed() -> Result<[u8; 32], DerpError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| DerpError::Random(e.to_string()))?;
    Ok(b)
}

fn protocol(e: ClientError) -> DerpError {
    match e {
        ClientError::ServerKeyMismatch => DerpError::ServerKeyMismatch,
        e => DerpError::Protocol(e),
    }
}

async fn connect_inner(cfg: &DialConfig) -> Result<DerpClient, DerpError> {
    let up = dial(cfg).await?;
    let mut ccfg = ClientConfig::new(cfg.private_key.clone());
    ccfg.server_key = cfg.server_key;
    ccfg.mesh_key = cfg.mesh_key.clone();
    ccfg.can_ack_pings = cfg.can_ack_pings;
    ccfg.app_name = cfg.app_name.clone();
    let mut client = Client::new(ccfg, now(), random_seed()?).map_err(protocol)?;
    let mut stream = up.stream;
    let mut rbuf = RecvBuf::new(up.leftover);
    let mut out = Vec::new();
    let mut early = Vec::new();
    let server_key = loop {
        let used = client.handle_input(now(), rbuf.data()).map_err(protocol)?;
        rbuf.consume(used);
        let mut admitted = false;
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::ServerInfo(_) => admitted = true,
                ClientEvent::Connected { .. } => {}
                ev => early.push(ev),
            }
        }
        if client.poll_transmit(&mut out) {
            stream.write_all(&out).await.map_err(DerpError::Io)?;
            stream.flush().await.map_err(DerpError::Io)?;
            out.clear();
        }
        if admitted {
            if let Some(k) = client.server_key() {
                break k;
            }
        }
        if rbuf.read_from(&mut stream).await.map_err(DerpError::Io)? == 0 {
            return Err(DerpError::ClosedByServer);
        }
    };
    if cfg.note_preferred {
        client.note_preferred(true).map_err(protocol)?;
    }
    let public_key = client.public_key();
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        client: Mutex::new(client),
        wake_writer: Notify::new(),
        space: Notify::new(),
        closed: AtomicBool::new(false),
        stop,
        error: Mutex::new(None),
        counters: Counters::default(),
    });
    let (tx, rx) = mpsc::channel(cfg.event_batches.max(1));
    if !early.is_empty() {
        let _ = tx.try_send(early);
    }
    let (rd, wr) = tokio::io::split(stream);
    tokio::spawn(read_loop(shared.clone(), rd, rbuf, tx, stop_rx.clone()));
    tokio::spawn(write_loop(shared.clone(), wr, stop_rx, cfg.write_timeout));
    // Whatever the handshake left queued (NotePreferred, a Pong) goes out now.
    shared.wake_writer.notify_one();
    Ok(DerpClient {
        sender: DerpSender {
            shared: shared.clone(),
        },
        events: Events {
            rx,
            pending: Default::default(),
            shared,
        },
        server_key,
        public_key,
        local_addr: up.local_addr,
        remote_addr: up.remote_addr,
    })
}

type ReadHalf = tokio::io::ReadHalf<Pin<Box<dyn Io>>>;
type WriteHalf = tokio::io::WriteHalf<Pin<Box<dyn Io>>>;

async fn read_loop(
    shared: Arc<Shared>,
    mut rd: ReadHalf,
    mut rbuf: RecvBuf,
    tx: mpsc::Sender<Vec<ClientEvent>>,
    mut stop: watch::Receiver<bool>,
) {
    let first = shared.lock().poll_timeout();
    let deadline = |t: Option<Instant>| match t {
        Some(t) => tokio::time::Instant::from_std(t),
        None => tokio::time::Instant::now() + std::time::Duration::from_secs(3600),
    };
    let timer = tokio::time::sleep_until(deadline(first));
    tokio::pin!(timer);
    loop {
        if !rbuf.data().is_empty() {
            let mut batch = Vec::new();
            let r = {
                let mut c = shared.lock();
                let r = c.handle_input(now(), rbuf.data());
                while let Some(ev) = c.poll_event() {
                    batch.push(ev);
                }
                r
            };
            match r {
                Ok(used) => rbuf.consume(used),
                Err(e) => return shared.fail(DerpError::Protocol(e)),
            }
            let mut packets = 0;
            let mut pinged = false;
            for ev in &batch {
                match ev {
                    ClientEvent::Packet { .. } => packets += 1,
                    ClientEvent::Ping(_) => pinged = true,
                    _ => {}
                }
            }
            add(&shared.counters.packets_received, packets);
            if pinged {
                shared.wake_writer.notify_one(); // the core queued the Pong
            }
            if !batch.is_empty() {
                tokio::select! {
                    r = tx.send(batch) => if r.is_err() {
                        return shared.fail(DerpError::Closed);
                    },
                    _ = stop.changed() => return,
                }
            }
        }
        tokio::select! {
            r = rbuf.read_from(&mut rd) => match r {
                Ok(0) => return shared.fail(DerpError::ClosedByServer),
                Ok(n) => {
                    add(&shared.counters.bytes_read, n as u64);
                    add(&shared.counters.reads, 1);
                }
                Err(e) => return shared.fail(DerpError::Io(e)),
            },
            () = &mut timer => {
                let mut c = shared.lock();
                if let Err(e) = c.handle_timeout(now()) {
                    drop(c);
                    return shared.fail(DerpError::Protocol(e));
                }
                let next = c.poll_timeout();
                drop(c);
                timer.as_mut().reset(deadline(next));
            }
            () = tx.closed() => return shared.fail(DerpError::Closed),
            _ = stop.changed() => return,
        }
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    mut wr: WriteHalf,
    mut stop: watch::Receiver<bool>,
    write_timeout: std::time::Duration,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_SIZE);
    loop {
        let had = shared.lock().poll_transmit(&mut buf);
        if had {
            shared.space.notify_waiters();
            let written = tokio::time::timeout(write_timeout, async {
                wr.write_all(&buf).await?;
                wr.flush().await
            })
            .await;
            match written {
                Ok(Ok(())) => {
                    add(&shared.counters.bytes_written, buf.len() as u64);
                    add(&shared.counters.writes, 1);
                }
                Ok(Err(e)) => return shared.fail(DerpError::Io(e)),
                Err(_) => return shared.fail(DerpError::WriteTimeout),
            }
            buf.clear();
            continue;
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            () = shared.wake_writer.notified() => {}
            _ = stop.changed() => break,
        }
    }
    // Closed: what was queued before the close still goes out (a ClosePeer, a last packet),
    // within one write timeout; after a broken connection this fails at once.
    buf.clear();
    let _ = shared.lock().poll_transmit(&mut buf);
    let _ = tokio::time::timeout(write_timeout, async {
        if !buf.is_empty() {
            wr.write_all(&buf).await?;
        }
        wr.shutdown().await
    })
    .await;
}
