//! One TCP connection of the control server: HTTP/1.1 for `GET /key` and the `/ts2021`
//! upgrade (hyper), then HTTP/2 over the Noise stream (hyper again), each request handed to
//! the caller's handler with the machine key the handshake proved.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
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

type Body = Full<Bytes>;

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Serves one TCP connection. `on_request` sees every request that arrives over ts2021; until
/// the endpoints exist they are answered `501 Not Implemented`.
///
/// # Errors
/// hyper's error when the HTTP/1.1 connection fails.
pub async fn serve_connection<S>(
    io: S,
    key: Arc<ControlKey>,
    on_request: Arc<dyn Fn(MachineRequest) + Send + Sync>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let key = Arc::clone(&key);
        let on_request = Arc::clone(&on_request);
        async move { Ok::<_, Infallible>(route(req, key, on_request)) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
}

fn route(
    req: Request<Incoming>,
    key: Arc<ControlKey>,
    on_request: Arc<dyn Fn(MachineRequest) + Send + Sync>,
) -> Response<Body> {
    match req.uri().path() {
        "/key" => {
            let body = format!(
                r#"{{"legacyPublicKey":"mkey:{}","publicKey":"mkey:{}"}}"#,
                "0".repeat(64),
                key.public().to_hex()
            );
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/ts2021" => upgrade(req, key, on_request),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The `/ts2021` upgrade (§2.2): 400 for a missing or wrong `Upgrade` or handshake header,
/// else 101 followed by the Noise response, then HTTP/2 over the records.
fn upgrade(
    req: Request<Incoming>,
    key: Arc<ControlKey>,
    on_request: Arc<dyn Fn(MachineRequest) + Send + Sync>,
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
            on_request(r);
            async move {
                Ok::<_, Infallible>(text(
                    StatusCode::NOT_IMPLEMENTED,
                    "weft-coord: not implemented yet\n",
                ))
            }
        });
        if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
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
