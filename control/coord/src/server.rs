//! One TCP connection of the control server: HTTP/1.1 for `GET /key` and the `/ts2021`
//! upgrade (hyper), then HTTP/2 over the Noise stream (hyper again), each request handed to
//! the caller's handler with the machine key the handshake proved.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use weft_keys::{PrivateKey, PublicKey};

use crate::NoiseStream;

/// The server's ts2021 Noise key (served by `GET /key`).
pub struct ControlKey(PrivateKey);

impl ControlKey {
    /// Wraps the server's private Noise key.
    pub fn new(key: PrivateKey) -> Self {
        Self(key)
    }

    /// The public half, as `/key` serves it.
    pub fn public(&self) -> PublicKey {
        self.0.public_key()
    }
}

/// One request on an authenticated ts2021 connection.
#[derive(Debug, Clone)]
pub struct MachineRequest {
    /// The machine key the Noise handshake proved.
    pub machine: PublicKey,
    /// The protocol (capability) version the client announced.
    pub version: u16,
    /// Method and path, e.g. `POST /machine/register`.
    pub method: String,
    /// The request path.
    pub path: String,
}

/// A response body: whole, or streamed (map polls).
pub type Body = BoxBody<Bytes, Infallible>;

/// A boxed response future.
pub type Reply = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Largest request body read (the client's register and map requests are a few KiB).
pub const MAX_REQUEST_BODY: usize = 256 << 10;

/// A client must send its request head within this long (no slow-loris connections).
pub(crate) const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// HTTP/2 pings on an idle ts2021 connection, so that a vanished client is noticed (and its
/// map stream closed, the node shown offline) in about a minute, not at TCP's timeout.
pub(crate) const H2_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long an HTTP/2 ping may go unanswered.
pub(crate) const H2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Concurrent requests on one ts2021 connection (a client uses a handful).
pub(crate) const H2_MAX_STREAMS: u32 = 16;

/// What the server does with requests. The shell (`weft-coordd`) implements it; the
/// channel's own tests use a closure, which answers `501` to every ts2021 request.
pub trait Handler: Send + Sync + 'static {
    /// A request over ts2021, authenticated as `req.machine`, with its whole body.
    fn machine(&self, req: MachineRequest, body: Bytes) -> Reply;

    /// A plain HTTP request other than `/key` and `/ts2021` (for example `/verify`, the page
    /// behind an AuthURL, or an admin API call, which needs `headers` for its credentials).
    fn plain(&self, method: &str, path: &str, headers: &hyper::HeaderMap, body: Bytes) -> Reply {
        let _ = (method, path, headers, body);
        Box::pin(async { text(StatusCode::NOT_FOUND, "not found\n") })
    }
}

impl<F: Fn(MachineRequest) + Send + Sync + 'static> Handler for F {
    fn machine(&self, req: MachineRequest, _body: Bytes) -> Reply {
        self(req);
        Box::pin(async { text(StatusCode::NOT_IMPLEMENTED, "weft-coord: not implemented\n") })
    }
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// A body streamed from a channel: each message is sent as it arrives (hyper flushes every
/// data frame on HTTP/2), and the body ends when every sender is gone.
pub fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    ChannelBody { rx }.boxed()
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// Reads a request body, refusing more than [`MAX_REQUEST_BODY`] bytes.
async fn read_body(body: Incoming) -> Option<Bytes> {
    Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
        .ok()
        .map(http_body_util::Collected::to_bytes)
}

/// Serves one TCP connection: `/key` and the `/ts2021` upgrade here, everything else through
/// `handler`.
///
/// # Errors
/// hyper's error when the HTTP/1.1 connection fails.
pub async fn serve_connection<S>(
    io: S,
    key: Arc<ControlKey>,
    handler: Arc<dyn Handler>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let key = Arc::clone(&key);
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(route(req, key, handler).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
}

async fn route(
    req: Request<Incoming>,
    key: Arc<ControlKey>,
    handler: Arc<dyn Handler>,
) -> Response<Body> {
    match req.uri().path() {
        "/key" => {
            let body = format!(
                r#"{{"legacyPublicKey":"mkey:{}","publicKey":"mkey:{}"}}"#,
                "0".repeat(64),
                key.public().to_hex()
            );
            let mut r = Response::new(full(body));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/ts2021" => upgrade(req, key, handler),
        _ => {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let (parts, body) = req.into_parts();
            match read_body(body).await {
                Some(body) => handler.plain(&method, &path, &parts.headers, body).await,
                None => text(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n"),
            }
        }
    }
}

/// The `/ts2021` upgrade (§2.2): 400 for a missing or wrong `Upgrade` or handshake header,
/// else 101 followed by the Noise response, then HTTP/2 over the records.
fn upgrade(
    req: Request<Incoming>,
    key: Arc<ControlKey>,
    handler: Arc<dyn Handler>,
) -> Response<Body> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if header("upgrade").as_deref() != Some("tailscale-control-protocol") {
        return text(StatusCode::BAD_REQUEST, "missing next protocol\n");
    }
    let Some(init) = header("x-tailscale-handshake")
        .and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok())
    else {
        return text(StatusCode::BAD_REQUEST, "bad handshake header\n");
    };
    let mut eph = [0u8; 32];
    if getrandom::getrandom(&mut eph).is_err() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "no randomness\n");
    }
    let accepted = match weft_controlbase::accept(&key.0, &init, &PrivateKey::from_bytes(eph)) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, "ts2021 handshake refused");
            return text(StatusCode::BAD_REQUEST, "handshake refused\n");
        }
    };
    let machine = accepted.machine;
    let version = accepted.version;
    let response = accepted.response;
    let transport = accepted.transport;
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "ts2021 upgrade failed");
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        if io.write_all(&response).await.is_err() {
            return;
        }
        let noise = NoiseStream::new(io, transport, &[]);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let r = MachineRequest {
                machine,
                version,
                method: req.method().to_string(),
                path: req.uri().path().to_owned(),
            };
            tracing::debug!(method = r.method, path = r.path, "control request");
            let handler = Arc::clone(&handler);
            async move {
                let reply = match read_body(req.into_body()).await {
                    Some(body) => handler.machine(r, body).await,
                    None => text(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n"),
                };
                Ok::<_, Infallible>(reply)
            }
        });
        if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(H2_KEEPALIVE))
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .serve_connection(TokioIo::new(noise), service)
            .await
        {
            tracing::debug!(error = %e, "ts2021 connection ended");
        }
    });
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("tailscale-control-protocol"),
    );
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("upgrade"),
    );
    r
}
