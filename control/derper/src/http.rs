//! The TCP listener: TLS (or plain HTTP in test mode), the first request head, and hyper for
//! the HTTP endpoints and the ordinary `/derp` upgrade.
//!
//! Endpoints: `/derp` (DERP over an HTTP/1.1 upgrade, `Upgrade: DERP`; fast start when the
//! client sends `Derp-Fast-Start: 1`; over WebSocket with the `derp` subprotocol),
//! `/derp/probe` and `/derp/latency-check` (netcheck's HTTPS probes), `/generate_204`
//! (captive-portal check with the challenge echo), `/metrics`, `/` and `/robots.txt`. A
//! plain-HTTP listener drops TLS ClientHellos (clients probe with them) by closing the
//! connection at once, counted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use weft_derp::server::ConnOptions;

use crate::relay::{bump, Relay, HANDSHAKE_TIMEOUT};
use crate::request::{challenge_response, parse_head, Rewind};

const HOME_PAGE: &str = "weft-derper: a DERP relay and STUN server for weft and Tailscale \
clients.\n\nDERP is served on /derp over an HTTP upgrade; see /metrics for counters.\n";

type Body = Full<Bytes>;

/// Accepts connections forever.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    relay: Arc<Relay>,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let relay = relay.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_conn(relay, stream, remote).await,
                        _ => bump(&relay.counters.tls_failures),
                    }
                }
                None => {
                    let mut first = [0u8; 1];
                    let peeked =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
                    let Ok(peeked) = peeked else {
                        return; // silent for the whole handshake time
                    };
                    if matches!(peeked, Ok(1) if first[0] == 0x16) {
                        // A TLS ClientHello on the plain port: close cleanly.
                        bump(&relay.counters.tls_probes_dropped);
                        return;
                    }
                    serve_conn(relay, tcp, remote).await;
                }
            }
        });
    }
}

/// Reads the first request head; fast-start DERP is served directly, everything else by hyper.
async fn serve_conn<S>(relay: Arc<Relay>, mut stream: S, remote: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match parse_head(&buf) {
                Ok(Some(h)) => return Some(h),
                Ok(None) => {}
                Err(_) => return None,
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
    })
    .await;
    let Ok(Some(head)) = head else {
        return;
    };
    if head.is_derp_upgrade() && head.fast_start {
        bump(&relay.counters.http_requests);
        let rest = buf.split_off(head.len.min(buf.len()));
        let opts = ConnOptions {
            remote: Some(remote),
            not_ideal: head.not_ideal,
        };
        relay.serve(stream, Some(remote), opts, rest).await;
        return;
    }
    let io = TokioIo::new(Rewind::new(buf, stream));
    let svc = hyper::service::service_fn(move |req| {
        let relay = relay.clone();
        async move { Ok::<_, Infallible>(route(relay, remote, req)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .title_case_headers(true)
        .serve_connection(io, svc)
        .with_upgrades()
        .await;
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn route(relay: Arc<Relay>, remote: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    bump(&relay.counters.http_requests);
    match req.uri().path() {
        "/derp" => derp_upgrade(relay, remote, req),
        "/derp/probe" | "/derp/latency-check" => {
            let mut r = if matches!(*req.method(), Method::GET | Method::HEAD) {
                text(StatusCode::OK, "")
            } else {
                text(StatusCode::METHOD_NOT_ALLOWED, "bogus probe method\n")
            };
            r.headers_mut()
                .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            r
        }
        "/generate_204" => {
            let mut r = text(StatusCode::NO_CONTENT, "");
            let h = r.headers_mut();
            h.remove(CONTENT_TYPE);
            h.insert(
                CACHE_CONTROL,
                HeaderValue::from_static(
                    "no-cache, no-store, must-revalidate, no-transform, max-age=0",
                ),
            );
            let answer = req
                .headers()
                .get("x-tailscale-challenge")
                .and_then(|v| challenge_response(v.as_bytes()))
                .and_then(|a| HeaderValue::from_str(&a).ok());
            if let Some(a) = answer {
                h.insert("X-Tailscale-Response", a);
            }
            r
        }
        "/metrics" => {
            let body = relay.with_server(|s| crate::metrics::render(s.stats(), &relay.counters));
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/robots.txt" => text(StatusCode::OK, "User-agent: *\nDisallow: /\n"),
        "/" => text(StatusCode::OK, HOME_PAGE),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/derp` through hyper: answer 101 and serve the upgraded stream.
fn derp_upgrade(
    relay: Arc<Relay>,
    remote: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let opts = ConnOptions {
        remote: Some(remote),
        not_ideal: req.headers().contains_key("ideal-node"),
    };
    if upgrade.as_deref() == Some("websocket") && wants_derp_subprotocol(&req) {
        return websocket_upgrade(relay, remote, opts, req);
    }
    if upgrade.as_deref() != Some("derp") {
        return text(
            StatusCode::UPGRADE_REQUIRED,
            "DERP requires connection upgrade\n",
        );
    }
    let key = relay.with_server(|s| s.public_key().to_hex());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            relay
                .serve(TokioIo::new(upgraded), Some(remote), opts, Vec::new())
                .await;
        }
    });
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.remove(CONTENT_TYPE);
    h.insert(hyper::header::UPGRADE, HeaderValue::from_static("DERP"));
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert("Derp-Version", HeaderValue::from_static("2"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert("Derp-Public-Key", v);
    }
    r
}

fn wants_derp_subprotocol(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "derp")
}

/// `/derp` with `Upgrade: websocket` and the `derp` subprotocol: 101, then DERP in binary
/// messages (no compression).
fn websocket_upgrade(
    relay: Arc<Relay>,
    remote: SocketAddr,
    opts: ConnOptions,
    mut req: Request<Incoming>,
) -> Response<Body> {
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};
    let Some(accept) = req
        .headers()
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .and_then(|a| HeaderValue::from_str(&a).ok())
    else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            relay
                .serve(crate::ws::WsBytes::new(ws), Some(remote), opts, Vec::new())
                .await;
        }
    });
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.remove(CONTENT_TYPE);
    h.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
    h.insert(
        hyper::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("derp"),
    );
    r
}
