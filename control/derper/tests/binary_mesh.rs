//! Two `weft-derper` processes meshed by `--mesh-with` (TLS, each pinning the other's
//! certificate, both given the same list with themselves in it): a client on each exchanges
//! packets both ways through the mesh.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use support::{deliver, key, temp_dir};
use weft_derper::tls;
use weft_derphttp::{DerpClient, DerpUrl, DialConfig};

/// Kills the process when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn state_with_pin() -> (PathBuf, String) {
    let dir = temp_dir("binmesh");
    let (cert, key) =
        tls::ensure_self_signed(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    let ck = tls::load_certified_key(&cert, &key).unwrap();
    (dir, tls::cert_pin(ck.cert[0].as_ref()))
}

#[tokio::test]
async fn two_binaries_mesh_with_each_other() {
    let (dir1, pin1) = state_with_pin();
    let (dir2, pin2) = state_with_pin();
    let (addr1, addr2) = (free_port(), free_port());
    let mesh_key = dir1.join("mesh.key");
    std::fs::write(&mesh_key, format!("{}\n", "4d".repeat(32))).unwrap();
    let list = format!("https://{addr1}#{pin1},https://{addr2}#{pin2}");
    let spawn = |addr: SocketAddr, dir: &PathBuf| {
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        Proc(
            Command::new(env!("CARGO_BIN_EXE_weft-derper"))
                .args(["serve", "--listen", &addr.to_string(), "--no-stun"])
                .arg("--state-dir")
                .arg(dir)
                .arg("--mesh-key-file")
                .arg(&mesh_key)
                .args(["--mesh-with", &list])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let p1 = spawn(addr1, &dir1);
    let p2 = spawn(addr2, &dir2);

    let connect = |addr: SocketAddr, pin: &str, n: u8| {
        let mut cfg = DialConfig::new(
            DerpUrl::parse(&format!("https://{addr}#{pin}")).unwrap(),
            key(n),
        );
        cfg.addr = Some(addr);
        async move {
            // The binaries need a moment to listen.
            for _ in 0..100 {
                if let Ok(c) = DerpClient::connect(cfg.clone()).await {
                    return c;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("relay at {addr} never answered");
        }
    };
    let mut a = connect(addr1, &pin1, 1).await;
    let mut b = connect(addr2, &pin2, 2).await;
    deliver(&a, &mut b, b"binary a to b").await;
    deliver(&b, &mut a, b"binary b to a").await;

    drop((a, b, p1, p2));
    for dir in [&dir1, &dir2] {
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
        assert!(log.contains("mesh link up"), "{log}");
        assert!(log.contains("not meshing with itself"), "{log}");
    }
    let _ = std::fs::remove_dir_all(dir1);
    let _ = std::fs::remove_dir_all(dir2);
}
