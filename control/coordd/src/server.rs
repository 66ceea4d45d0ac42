//! The shell around [`weft_tailnet::Coordinator`]: one lock around the coordinator and its
//! store, the ts2021 endpoints (`/machine/register`, `/machine/map`), the plain ones
//! (`/verify`, `/register/<id>`, `/health`), map streams with keep-alives, and housekeeping.
//!
//! Every coordinator call runs under the lock together with writing its store ops, so what a
//! client is told has been made durable first. If the store refuses a write, the in-memory
//! state is rebuilt from the store and every stream is closed (clients re-poll and get full
//! maps): memory never runs ahead of disk. The lock is a `std` mutex held for microseconds to
//! milliseconds and never across an `await`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::{Response, StatusCode};
use tokio::sync::{broadcast, mpsc};
use weft_coord::{channel_body, full, text, Handler, MachineRequest, Reply};
use weft_tailcfg::{
    capver, frame, DerpAdmitClientRequest, DerpAdmitClientResponse, MachinePublic, MapRequest,
    MapResponse, RegisterRequest, RegisterResponse, Time,
};
use weft_tailnet::{
    Config, Coordinator, MapReply, RegisterReply, SessionId, Store, StoreOp, Update,
    AUTH_ID_ENTROPY,
};

/// Timing of the server.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Base keep-alive interval on map streams (the client drops a stream after 120 s of
    /// silence).
    pub keepalive: Duration,
    /// Up to this much random time is added to each keep-alive interval (9 s, as Headscale
    /// does), so that streams opened together do not wake together.
    pub keepalive_jitter: Duration,
    /// How long a registration follow-up waits for an admin before the AuthURL is repeated.
    pub followup_wait: Duration,
    /// Housekeeping period (ephemeral nodes, key expiry, pending logins).
    pub tick: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(50),
            keepalive_jitter: Duration::from_secs(9),
            followup_wait: Duration::from_secs(300),
            tick: Duration::from_secs(5),
        }
    }
}

/// Messages a slow stream may have queued before it is closed (its client re-polls and
/// gets a full map, which is cheaper than an unbounded queue).
const SESSION_QUEUE: usize = 256;

struct Inner {
    coord: Coordinator,
    store: Box<dyn Store>,
    sessions: BTreeMap<SessionId, mpsc::Sender<Box<MapResponse>>>,
}

/// The coordination server's shared state.
pub struct Server {
    inner: Mutex<Inner>,
    cfg: Config,
    policy_text: Mutex<String>,
    approved: broadcast::Sender<String>,
    timing: Timing,
    policy_path: Option<PathBuf>,
}

/// The current time as the protocol carries it (the shell is where the clock is read).
#[allow(clippy::disallowed_methods)]
pub fn now() -> Time {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Time::from_unix(i64::try_from(d.as_secs()).unwrap_or(0), d.subsec_nanos()).unwrap_or(Time::ZERO)
}

/// Fresh random bytes; `None` (logged) if the system generator fails — callers refuse the
/// request rather than use predictable bytes.
fn random<const N: usize>() -> Option<[u8; N]> {
    let mut b = [0u8; N];
    match getrandom::getrandom(&mut b) {
        Ok(()) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "system random number generator failed");
            None
        }
    }
}

/// Runs `f` where blocking is allowed: store writes fsync under the lock, and must not stall
/// the runtime's other tasks meanwhile.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Describes a JSON error without quoting the input (which may hold a pre-auth key).
fn json_error(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

pub(crate) fn json_response<T: serde::Serialize>(
    status: StatusCode,
    v: &T,
) -> Response<weft_coord::Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl Server {
    /// Loads the store and the policy and builds the server.
    ///
    /// # Errors
    /// When the store cannot be read or the policy is refused.
    pub fn new(
        cfg: Config,
        mut store: Box<dyn Store>,
        policy_text: String,
        policy_path: Option<PathBuf>,
        timing: Timing,
    ) -> anyhow::Result<Arc<Self>> {
        let snapshot = store.load()?;
        let coord = Coordinator::new(cfg.clone(), snapshot, &policy_text)?;
        let (approved, _) = broadcast::channel(64);
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                coord,
                store,
                sessions: BTreeMap::new(),
            }),
            cfg,
            policy_text: Mutex::new(policy_text),
            approved,
            timing,
            policy_path,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the coordinator half-updated in a way
        // the store disagrees with (ops are written after each call): keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Persists `ops`, then delivers the coordinator's queued updates. On a store failure the
    /// coordinator is rebuilt from the store and every stream is closed.
    fn commit(&self, inner: &mut Inner, ops: &[StoreOp]) -> Result<(), String> {
        if !ops.is_empty() {
            if let Err(e) = inner.store.apply(ops) {
                tracing::error!(error = %e, "store write failed; reloading state from the store");
                inner.coord.take_updates();
                inner.sessions.clear();
                let text = self
                    .policy_text
                    .lock()
                    .map(|t| t.clone())
                    .unwrap_or_default();
                match inner.store.load().map_err(|e| e.to_string()).and_then(|s| {
                    Coordinator::new(self.cfg.clone(), s, &text).map_err(|e| e.to_string())
                }) {
                    Ok(mut c) => {
                        // Ids of streams still winding down must not be handed out again.
                        c.continue_sessions_from(inner.coord.next_session_id());
                        inner.coord = c;
                    }
                    Err(e2) => tracing::error!(error = %e2, "reload after a store failure failed"),
                }
                return Err("storage failure; try again".into());
            }
        }
        for u in inner.coord.take_updates() {
            match u {
                Update::Send(sid, m) => {
                    let keep = inner
                        .sessions
                        .get(&sid)
                        .is_some_and(|tx| tx.try_send(m).is_ok());
                    if !keep && inner.sessions.remove(&sid).is_some() {
                        tracing::info!(session = sid.0, "map stream too slow; closing it");
                    }
                }
                Update::Close(sid) => {
                    inner.sessions.remove(&sid);
                }
                Update::Approved(id) => {
                    let _ = self.approved.send(id);
                }
            }
        }
        Ok(())
    }

    /// Runs an admin or housekeeping call under the lock and commits its ops.
    ///
    /// # Errors
    /// The call's error, or the store's.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Coordinator, Time) -> Result<(T, Vec<StoreOp>), String>,
    ) -> Result<T, String> {
        let mut inner = self.lock();
        let (v, ops) = f(&mut inner.coord, now())?;
        self.commit(&mut inner, &ops)?;
        Ok(v)
    }

    /// Whether `key` is a valid API key of the HTTP admin API.
    pub fn api_key_valid(&self, key: &str) -> bool {
        blocking(|| self.lock().coord.api_key_valid(key, now()))
    }

    /// Reads the policy file again and makes it live if it is accepted.
    ///
    /// # Errors
    /// Why the file was not read or the policy refused (the old one stays).
    pub fn reload_policy(&self) -> Result<(), String> {
        let Some(path) = &self.policy_path else {
            return Err("no policy file configured".into());
        };
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.with(|c, now| {
            c.set_policy(now, &text)
                .map(|()| ((), Vec::new()))
                .map_err(|e| e.to_string())
        })?;
        if let Ok(mut t) = self.policy_text.lock() {
            *t = text;
        }
        Ok(())
    }

    /// Checks `text`, makes it live, and writes it to the policy file (atomically: a
    /// temporary file, fsync, rename), so that a restart keeps it.
    ///
    /// # Errors
    /// Why it was refused (the old policy stays, in force and on disk).
    pub fn set_policy(&self, text: &str) -> Result<(), String> {
        let Some(path) = &self.policy_path else {
            return Err("no policy file configured".into());
        };
        self.with(|c, _| {
            c.check_policy(text)
                .map(|()| ((), Vec::new()))
                .map_err(|e| e.to_string())
        })?;
        write_atomically(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        self.with(|c, now| {
            c.set_policy(now, text)
                .map(|()| ((), Vec::new()))
                .map_err(|e| e.to_string())
        })?;
        if let Ok(mut t) = self.policy_text.lock() {
            text.clone_into(&mut t);
        }
        Ok(())
    }

    /// Housekeeping every `timing.tick` until the runtime stops.
    pub async fn run_housekeeping(self: Arc<Self>) {
        let mut t = tokio::time::interval(self.timing.tick);
        loop {
            t.tick().await;
            blocking(|| {
                let _ = self.with(|c, now| Ok(((), c.tick(now))));
            });
        }
    }

    async fn register(
        self: Arc<Self>,
        machine: MachinePublic,
        body: Bytes,
    ) -> Response<weft_coord::Body> {
        let req: RegisterRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %json_error(&e), "unreadable register request");
                return text(StatusCode::BAD_REQUEST, "malformed RegisterRequest\n");
            }
        };
        if let Err(e) = capver::check(req.version) {
            return json_response(
                StatusCode::BAD_REQUEST,
                &RegisterResponse {
                    error: e.to_string(),
                    ..RegisterResponse::default()
                },
            );
        }
        // Subscribe before asking, so an approval between the two cannot be missed.
        let mut approved = self.approved.subscribe();
        let deadline = tokio::time::Instant::now() + self.timing.followup_wait;
        loop {
            let Some(entropy) = random::<AUTH_ID_ENTROPY>() else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "no randomness\n");
            };
            let reply = blocking(|| {
                let mut inner = self.lock();
                match inner.coord.register(now(), machine, &req, &entropy) {
                    Ok((reply, ops)) => self.commit(&mut inner, &ops).map(|()| reply),
                    Err(e) => Err(e.to_string()),
                }
            });
            let (auth_id, auth_url) = match reply {
                Ok(RegisterReply::Done(resp)) => return json_response(StatusCode::OK, &*resp),
                Ok(RegisterReply::Wait { auth_id, auth_url }) => (auth_id, auth_url),
                Err(e) => {
                    tracing::info!(error = %e, "registration refused");
                    return json_response(
                        StatusCode::OK,
                        &RegisterResponse {
                            error: e,
                            ..RegisterResponse::default()
                        },
                    );
                }
            };
            // Wait for this login's approval, or the deadline.
            let waited = tokio::time::timeout_at(deadline, async {
                loop {
                    match approved.recv().await {
                        // Lagged: approvals were missed, maybe ours; ask again.
                        Ok(id) if id == auth_id => return true,
                        Err(broadcast::error::RecvError::Lagged(_)) => return true,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Closed) => return false,
                    }
                }
            })
            .await;
            if waited != Ok(true) {
                return json_response(
                    StatusCode::OK,
                    &RegisterResponse {
                        auth_url,
                        ..RegisterResponse::default()
                    },
                );
            }
        }
    }

    async fn map(
        self: Arc<Self>,
        machine: MachinePublic,
        body: Bytes,
    ) -> Response<weft_coord::Body> {
        let req: MapRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %json_error(&e), "unreadable map request");
                return text(StatusCode::BAD_REQUEST, "malformed MapRequest\n");
            }
        };
        if let Err(e) = capver::check(req.version) {
            tracing::info!(error = %e, "map request refused");
            return text(
                StatusCode::BAD_REQUEST,
                "client too old for this server (needs Tailscale 1.80 or newer)\n",
            );
        }
        let (updates_tx, updates_rx) = mpsc::channel(SESSION_QUEUE);
        let opened = blocking(|| {
            let mut inner = self.lock();
            let (reply, ops) = match inner.coord.map_request(now(), machine, &req) {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(error = %e, "map request refused");
                    let status = match e {
                        weft_tailnet::MapError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                        weft_tailnet::MapError::KeyExpired => StatusCode::FORBIDDEN,
                        _ => StatusCode::UNAUTHORIZED,
                    };
                    return Err(Box::new(text(
                        status,
                        "node not registered, not yours, or expired\n",
                    )));
                }
            };
            let out = match reply {
                MapReply::Lite => None,
                MapReply::Single(m) => Some((None, m)),
                MapReply::Stream { session, first } => {
                    inner.sessions.insert(session, updates_tx);
                    Some((Some(session), first))
                }
            };
            if let Err(e) = self.commit(&mut inner, &ops) {
                tracing::error!(error = %e, "map request not persisted");
                return Err(Box::new(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage failure\n",
                )));
            }
            Ok(out)
        });
        let (session, first) = match opened {
            Err(resp) => return *resp,
            Ok(None) => return Response::new(full(Bytes::new())),
            Ok(Some(x)) => x,
        };
        let mut first_frame = Vec::new();
        if let Err(e) = frame::encode(&first, &mut first_frame) {
            tracing::error!(error = %e, "map response not encodable");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "map encoding failed\n");
        }
        let Some(session) = session else {
            return Response::new(full(first_frame));
        };
        let (body_tx, body_rx) = mpsc::channel::<Bytes>(4);
        let _ = body_tx.try_send(Bytes::from(first_frame));
        tokio::spawn(Arc::clone(&self).stream(session, updates_rx, body_tx));
        Response::new(channel_body(body_rx))
    }

    /// Feeds one map stream: queued updates as they come, keep-alives in between, until the
    /// coordinator closes the session or the client goes away; then the node goes offline.
    async fn stream(
        self: Arc<Self>,
        session: SessionId,
        mut updates: mpsc::Receiver<Box<MapResponse>>,
        body: mpsc::Sender<Bytes>,
    ) {
        let keepalive = frame::keep_alive_frame().unwrap_or_default();
        loop {
            let spread = u64::try_from(self.timing.keepalive_jitter.as_millis()).unwrap_or(0);
            let jitter = Duration::from_millis(
                u64::from(u16::from_le_bytes(random::<2>().unwrap_or_default()))
                    .checked_rem(spread)
                    .unwrap_or(0),
            );
            let next = tokio::select! {
                m = updates.recv() => match m {
                    Some(m) => {
                        let mut out = Vec::new();
                        match frame::encode(&m, &mut out) {
                            Ok(()) => out,
                            Err(e) => {
                                tracing::error!(error = %e, "map delta not encodable; closing the stream");
                                break;
                            }
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep(self.timing.keepalive + jitter) => keepalive.clone(),
                () = body.closed() => break,
            };
            // A client that stops reading (zero window) is dropped after two keep-alive
            // periods, so it does not stay "online" forever.
            match tokio::time::timeout(self.timing.keepalive * 2, body.send(Bytes::from(next)))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::info!(session = session.0, "map stream stalled; closing it");
                    break;
                }
            }
        }
        blocking(|| {
            let _ = self.with(|c, now| Ok(((), c.map_close(now, session))));
            self.lock().sessions.remove(&session);
        });
    }

    fn verify(&self, body: &[u8]) -> Response<weft_coord::Body> {
        let Ok(req) = serde_json::from_slice::<DerpAdmitClientRequest>(body) else {
            return text(
                StatusCode::BAD_REQUEST,
                "malformed DERPAdmitClientRequest\n",
            );
        };
        let allow = blocking(|| self.lock().coord.admits(&req.node_public, now()));
        json_response(StatusCode::OK, &DerpAdmitClientResponse { allow })
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one, never a
/// mix.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The [`Handler`] the HTTP layer calls.
pub struct Endpoints(pub Arc<Server>);

impl Handler for Endpoints {
    fn machine(&self, req: MachineRequest, body: Bytes) -> Reply {
        let server = Arc::clone(&self.0);
        let machine = MachinePublic::new(req.machine);
        Box::pin(async move {
            match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/machine/register") => server.register(machine, body).await,
                ("POST", "/machine/map") => server.map(machine, body).await,
                _ => text(
                    StatusCode::NOT_IMPLEMENTED,
                    "not supported by weft-coordd\n",
                ),
            }
        })
    }

    fn plain(&self, method: &str, path: &str, headers: &hyper::HeaderMap, body: Bytes) -> Reply {
        let server = Arc::clone(&self.0);
        let (method, path) = (method.to_owned(), path.to_owned());
        let bearer = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        Box::pin(async move {
            match (method.as_str(), path.as_str()) {
                ("POST", crate::admin::HTTP_PATH) => crate::admin::http(server, bearer, body).await,
                ("POST", "/verify") => server.verify(&body),
                ("GET", "/health") => text(StatusCode::OK, "ok\n"),
                ("GET", p) if p.starts_with("/register/") => {
                    let id: String = p
                        .trim_start_matches("/register/")
                        .chars()
                        .filter(char::is_ascii_hexdigit)
                        .collect();
                    let page = format!(
                        "This device is waiting to join the tailnet.\n\nAn administrator approves it with:\n\n    weft-coordd nodes register --user USER {id}\n"
                    );
                    let mut r = Response::new(full(page));
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    r
                }
                _ => text(StatusCode::NOT_FOUND, "not found\n"),
            }
        })
    }
}
