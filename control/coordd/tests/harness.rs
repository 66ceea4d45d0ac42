//! The server in-process with fake clients: weft's own ts2021 client (Noise IK + HTTP/2 over
//! the records, as official clients speak it) against `weft-coordd`'s endpoints on loopback
//! TCP, with an in-memory store. Covers what the real-client tests cannot provoke: refusals
//! (old capability versions, malformed and oversized bodies, foreign node keys), the exact
//! framing of the map stream (little-endian length + zstd), deltas as frames, keep-alives,
//! and the plain endpoints (`/verify`, `/register/<id>`, `/health`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_controlbase::ClientHandshake;
use weft_coord::{serve_connection, ControlKey, NoiseStream};
use weft_coordd::server::{Endpoints, Server, Timing};
use weft_keys::PrivateKey;
use weft_tailcfg::frame::{FrameDecoder, Limits};
use weft_tailcfg::{
    Hostinfo, MapRequest, MapResponse, NodePublic, RegisterRequest, RegisterResponse,
    RegisterResponseAuth,
};
use weft_tailnet::{Config, MemoryStore};

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from_bytes([seed; 32])
}

struct Harness {
    addr: std::net::SocketAddr,
    server: Arc<Server>,
    control: PrivateKey,
    auth_key: String,
}

async fn start() -> Harness {
    let server = Server::new(
        Config::new("http://127.0.0.1:1", "tail.weft"),
        Box::new(MemoryStore::default()),
        weft_policy::DEFAULT_POLICY.to_owned(),
        None,
        Timing {
            keepalive: Duration::from_millis(300),
            keepalive_jitter: Duration::from_millis(200),
            followup_wait: Duration::from_secs(2),
            tick: Duration::from_secs(3600),
        },
    )
    .unwrap();
    server
        .with(|c, now| Ok(((), c.create_user(now, "alice").map_err(|e| e.to_string())?)))
        .unwrap();
    let auth_key = server
        .with(|c, now| {
            let (k, ops) = c
                .create_key(now, "alice", true, false, vec![], 3600, &[5; 30])
                .map_err(|e| e.to_string())?;
            Ok((k.text, ops))
        })
        .unwrap();
    let control = key(200);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ck = Arc::new(ControlKey::new(key(200)));
    let endpoints: Arc<dyn weft_coord::Handler> = Arc::new(Endpoints(Arc::clone(&server)));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve_connection(s, Arc::clone(&ck), Arc::clone(&endpoints)));
        }
    });
    Harness {
        addr,
        server,
        control,
        auth_key,
    }
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// A fake client: a machine key and an HTTP/2 connection over ts2021 to the harness.
struct Client {
    send: Sender,
    node: NodePublic,
}

impl Client {
    async fn connect(h: &Harness, machine: u8, version: u16) -> Client {
        let (hs, init) = ClientHandshake::start(
            &key(machine),
            &h.control.public_key(),
            version,
            &key(machine.wrapping_add(1)),
        )
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(init);
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(format!(
            "POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {b64}\r\n\r\n"
        ).as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        let mut response = [0u8; weft_controlbase::RESPONSE_LEN];
        s.read_exact(&mut response).await.unwrap();
        let transport = hs.finish(&response).unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            TokioIo::new(NoiseStream::new(s, transport, &[])),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        Client {
            send,
            node: NodePublic::new(key(machine.wrapping_add(2)).public_key()),
        }
    }

    async fn post(&mut self, path: &str, body: Vec<u8>) -> hyper::Response<Incoming> {
        let req = hyper::Request::post(format!("https://control{path}"))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.send.send_request(req))
            .await
            .unwrap()
            .unwrap()
    }

    async fn register(&mut self, auth: Option<&str>, version: i64) -> (u16, Vec<u8>) {
        let req = RegisterRequest {
            version,
            node_key: self.node,
            auth: auth.map(|a| RegisterResponseAuth {
                auth_key: a.to_owned(),
            }),
            hostinfo: Some(Hostinfo {
                hostname: "fake".into(),
                ..Hostinfo::default()
            }),
            ..RegisterRequest::default()
        };
        let resp = self
            .post("/machine/register", serde_json::to_vec(&req).unwrap())
            .await;
        let status = resp.status().as_u16();
        (
            status,
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    }

    fn map_request(&self, stream: bool) -> MapRequest {
        MapRequest {
            version: 133,
            node_key: self.node,
            stream,
            keep_alive: true,
            compress: "zstd".into(),
            ..MapRequest::default()
        }
    }
}

/// Reads map frames from a streaming body.
struct Stream {
    body: Incoming,
    frames: FrameDecoder,
}

impl Stream {
    async fn next(&mut self) -> MapResponse {
        loop {
            if let Some(m) = self.frames.next_response().unwrap() {
                return m;
            }
            // Keep-alives come every 0.3–0.5 s: 15 s leaves room for a loaded CI machine.
            let frame = tokio::time::timeout(Duration::from_secs(15), self.body.frame())
                .await
                .expect("a frame within 15 s")
                .expect("stream open")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.frames.push(&data);
            }
        }
    }

    /// The next message that is not a keep-alive.
    async fn next_change(&mut self) -> MapResponse {
        loop {
            let m = self.next().await;
            if !m.keep_alive {
                return m;
            }
        }
    }
}

async fn open_stream(c: &mut Client) -> Stream {
    let resp = c
        .post(
            "/machine/map",
            serde_json::to_vec(&c.map_request(true)).unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    Stream {
        body: resp.into_body(),
        frames: FrameDecoder::new(Limits::default()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_stream_and_deltas_over_ts2021() {
    let h = start().await;
    let mut a = Client::connect(&h, 1, 133).await;
    let (status, body) = a.register(Some(&h.auth_key), 133).await;
    assert_eq!(status, 200);
    let r: RegisterResponse = serde_json::from_slice(&body).unwrap();
    assert!(r.machine_authorized && r.error.is_empty(), "{r:?}");
    assert_eq!(r.login.login_name, "alice");

    let mut sa = open_stream(&mut a).await;
    let first = sa.next().await;
    let me = first.node.expect("the first message carries Node");
    assert_eq!(me.name, "fake.tail.weft.");
    assert!(first.peers.is_empty());
    assert!(first.derp_map.is_some() && first.dns_config.is_some());
    assert!(first.debug.unwrap().disable_log_tail);

    // A keep-alive arrives within the (shortened) interval + jitter.
    let ka = tokio::time::timeout(Duration::from_secs(15), sa.next())
        .await
        .unwrap();
    assert!(ka.keep_alive);

    // A second node joins and opens its stream: a sees it as a delta, online.
    let mut b = Client::connect(&h, 10, 133).await;
    assert_eq!(b.register(Some(&h.auth_key), 133).await.0, 200);
    let joined = sa.next_change().await;
    assert_eq!(joined.peers_changed.len(), 1);
    assert_eq!(joined.peers_changed[0].name, "fake-1.tail.weft.");
    let mut sb = open_stream(&mut b).await;
    assert_eq!(sb.next().await.peers.len(), 1);
    let online = sa.next_change().await;
    assert_eq!(online.peers_changed[0].online, Some(true));

    // b's lite update (new endpoints) reaches a; the lite request itself gets an empty 200.
    let lite = MapRequest {
        omit_peers: true,
        endpoints: vec!["192.0.2.7:41641".parse().unwrap()],
        ..b.map_request(false)
    };
    let resp = b
        .post("/machine/map", serde_json::to_vec(&lite).unwrap())
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    let moved = sa.next_change().await;
    assert_eq!(
        moved.peers_changed[0].endpoints,
        vec!["192.0.2.7:41641".parse().unwrap()]
    );

    // b's stream ends (the client goes away): a is told b is offline.
    drop(sb);
    drop(b);
    let offline = sa.next_change().await;
    assert_eq!(offline.peers_changed[0].online, Some(false));
    assert!(offline.peers_changed[0].last_seen.is_some());
    let nodes = h.server.with(|c, now| Ok((c.nodes(now), vec![]))).unwrap();
    assert!(!nodes[1].online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_never_hang() {
    let h = start().await;
    let mut old = Client::connect(&h, 1, 100).await;
    // Capability version 100 (before Tailscale 1.80): refused with a reason, on both
    // endpoints.
    let (status, body) = old.register(Some(&h.auth_key), 100).await;
    assert_eq!(status, 400);
    let r: RegisterResponse = serde_json::from_slice(&body).unwrap();
    assert!(!r.error.is_empty());
    let mut req = old.map_request(true);
    req.version = 100;
    let resp = old
        .post("/machine/map", serde_json::to_vec(&req).unwrap())
        .await;
    assert_eq!(resp.status(), 400);

    let mut c = Client::connect(&h, 20, 133).await;
    // Malformed and oversized bodies.
    assert_eq!(
        c.post("/machine/register", b"{nope".to_vec())
            .await
            .status(),
        400
    );
    assert_eq!(c.post("/machine/map", b"[]".to_vec()).await.status(), 400);
    assert_eq!(
        c.post("/machine/map", vec![b' '; 300 << 10]).await.status(),
        413
    );
    // A bad key gets an answer in the body, not a hang.
    let (status, body) = c.register(Some("wkey-auth-000000000000-00"), 133).await;
    assert_eq!(status, 200);
    let r: RegisterResponse = serde_json::from_slice(&body).unwrap();
    assert!(r.error.contains("pre-auth key"), "{r:?}");
    assert!(!r.machine_authorized);
    // Polling before registering: 401.
    let resp = c
        .post(
            "/machine/map",
            serde_json::to_vec(&c.map_request(true)).unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 401);
    // Someone else's node key from another machine: 401 as well.
    assert_eq!(c.register(Some(&h.auth_key), 133).await.0, 200);
    let mut thief = Client::connect(&h, 30, 133).await;
    thief.node = c.node;
    let resp = thief
        .post(
            "/machine/map",
            serde_json::to_vec(&thief.map_request(true)).unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 401);
    // Endpoints weft does not serve: a status, not a hang.
    assert_eq!(
        c.post("/machine/set-dns", b"{}".to_vec()).await.status(),
        501
    );
    // Interactive login without an admin: the follow-up is answered with the AuthURL again
    // when the wait ends.
    let mut i = Client::connect(&h, 40, 133).await;
    let (_, body) = i.register(None, 133).await;
    let r: RegisterResponse = serde_json::from_slice(&body).unwrap();
    assert!(r.auth_url.contains("/register/"), "{r:?}");
    let follow = RegisterRequest {
        version: 133,
        node_key: i.node,
        followup: r.auth_url.clone(),
        ..RegisterRequest::default()
    };
    let resp = i
        .post("/machine/register", serde_json::to_vec(&follow).unwrap())
        .await;
    let again: RegisterResponse =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(again.auth_url, r.auth_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_endpoints() {
    let h = start().await;
    let mut c = Client::connect(&h, 1, 133).await;
    c.register(Some(&h.auth_key), 133).await;
    let plain = |req: String| async move {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let verify = |node: NodePublic| {
        let body = format!(r#"{{"NodePublic":"{node}","Source":"127.0.0.1"}}"#);
        format!(
            "POST /verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert!(plain(verify(c.node)).await.contains(r#"{"Allow":true}"#));
    let stranger = NodePublic::new(key(99).public_key());
    assert!(plain(verify(stranger)).await.contains(r#"{"Allow":false}"#));
    let page =
        plain("GET /register/abcdef HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await;
    assert!(
        page.contains("weft-coordd nodes register --user USER abcdef"),
        "{page}"
    );
    assert!(
        plain("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into())
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_admin_api_needs_a_valid_api_key() {
    let h = start().await;
    let api_key = h
        .server
        .with(|c, now| {
            let (k, ops) = c
                .create_api_key(now, 3600, &[8; 30])
                .map_err(|e| e.to_string())?;
            Ok((k.text, ops))
        })
        .unwrap();
    let call = |bearer: Option<String>, body: String| async move {
        let auth = bearer.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        let req = format!(
            "POST /api/v1/command HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let create = r#"{"cmd":"users-create","name":"bob"}"#.to_owned();
    assert!(call(None, create.clone()).await.starts_with("HTTP/1.1 401"));
    assert!(
        call(Some("wkey-api-000000000000-00".into()), create.clone())
            .await
            .starts_with("HTTP/1.1 401")
    );
    // A pre-auth key is not an API key.
    assert!(call(Some(h.auth_key.clone()), create.clone())
        .await
        .starts_with("HTTP/1.1 401"));
    let ok = call(Some(api_key.clone()), create.clone()).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let again = call(Some(api_key.clone()), create).await;
    assert!(
        again.starts_with("HTTP/1.1 422") && again.contains("exists already"),
        "{again}"
    );
    let users = call(Some(api_key.clone()), r#"{"cmd":"users-list"}"#.into()).await;
    assert!(users.contains(r#""name":"bob""#), "{users}");
    assert!(call(
        Some(api_key.clone()),
        r#"{"cmd":"apikeys-create","valid_secs":60}"#.into()
    )
    .await
    .starts_with("HTTP/1.1 403"));
    assert!(call(Some(api_key.clone()), "{nope".into())
        .await
        .starts_with("HTTP/1.1 400"));
    let prefix = api_key.split('-').nth(2).unwrap().to_owned();
    h.server
        .with(|c, _| Ok(((), c.revoke_api_key(&prefix).map_err(|e| e.to_string())?)))
        .unwrap();
    assert!(call(Some(api_key), r#"{"cmd":"users-list"}"#.into())
        .await
        .starts_with("HTTP/1.1 401"));
}
