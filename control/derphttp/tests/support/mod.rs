//! Test helpers: the real relay in-process on loopback, and dial configurations for it.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weft_derp::client::ClientEvent;
use weft_derp::handshake::MeshKey;
use weft_derper::{Config, Derper, TlsMode};
use weft_derphttp::{DerpClient, DerpUrl, DialConfig, TlsVerify};
use weft_keys::PrivateKey;

pub const WAIT: Duration = Duration::from_secs(10);

/// A relay and its state directory (removed on drop).
pub struct Relay {
    pub derper: Option<Derper>,
    dir: PathBuf,
}

impl Relay {
    pub fn d(&self) -> &Derper {
        self.derper.as_ref().unwrap()
    }

    /// The URL clients dial: `https://localhost:PORT#pin` or `http://127.0.0.1:PORT`.
    pub fn url(&self) -> DerpUrl {
        let d = self.d();
        let port = d.local_addr().port();
        match d.cert_pin() {
            Some(pin) => DerpUrl::parse(&format!("https://localhost:{port}#{pin}")).unwrap(),
            None => DerpUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        }
    }

    pub fn dial(&self, key: &PrivateKey) -> DialConfig {
        let mut cfg = DialConfig::new(self.url(), key.clone());
        cfg.addr = Some(self.d().local_addr());
        cfg
    }

    pub async fn connect(&self, key: &PrivateKey) -> DerpClient {
        DerpClient::connect(self.dial(key)).await.unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "weft-derphttp-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts a relay on an ephemeral loopback port (no STUN).
pub async fn start(tls: TlsMode, mesh_key: Option<MeshKey>) -> Relay {
    let dir = temp_dir();
    let derper = Derper::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        stun_listen: None,
        state_dir: Some(dir.clone()),
        tls,
        mesh_key,
        verify_url: None,
        mesh_with: Vec::new(),
        mesh_retry: weft_derper::mesh::MESH_RETRY,
    })
    .await
    .unwrap();
    Relay {
        derper: Some(derper),
        dir,
    }
}

pub fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

/// Skips events until `pred` matches one (within [`WAIT`]).
pub async fn wait_for(
    c: &mut DerpClient,
    mut pred: impl FnMut(&ClientEvent) -> bool,
) -> ClientEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = c.recv().await.unwrap();
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

pub fn insecure(mut cfg: DialConfig) -> DialConfig {
    cfg.tls = TlsVerify::InsecureForTests;
    cfg
}
