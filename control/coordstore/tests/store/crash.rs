//! Durability across a crash: a child process applies batches and acknowledges each one on
//! stdout; the parent SIGKILLs it mid-stream. Every acknowledged batch must be in the reopened
//! database, and the database must be exactly the state after some whole number of batches
//! (a batch is never half there).
//!
//! This kills the process, not the machine: it checks the commit protocol (a batch is in the
//! WAL before `apply` returns, recovery replays whole transactions), not the disk's fsync.
//! For PostgreSQL the killed process is the client: a batch must be committed on the server
//! before `apply` returns, and the server must abort the transaction the client died in.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use weft_tailcfg::Time;
use weft_tailnet::{MemoryStore, NodeId, Store, StoreOp};

use crate::common::{both_backends, node, user, Backend};

/// Tells the child test which store to open (a `weft_coordstore::open` spec); without it the
/// child test does nothing.
const CHILD_ENV: &str = "WEFT_COORDSTORE_CRASH_CHILD_DB";
/// The child's full test name (for `--exact`).
const CHILD_TEST: &str = "crash::crash_child";
/// Batches the parent waits to see acknowledged before it kills the child: enough that the WAL
/// is checkpointed into the main file at least once (every 1000 pages, about 320 batches here)
/// before the kill.
const ACKED_BEFORE_KILL: i64 = 500;
/// Upper bound on the child's work, should the parent never kill it.
const MAX_BATCHES: i64 = 20_000;
/// Longest wait for one acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);

/// Batch `i`: a new user and its node, an update of the previous node, and the delete of the
/// one before (so a replayed or torn batch would show as a wrong state, not only a count).
fn batch(i: i64) -> Vec<StoreOp> {
    let mut ops = vec![StoreOp::PutUser(user(i)), StoreOp::PutNode(node(i, i))];
    if i > 1 {
        let mut prev = node(i - 1, i - 1);
        prev.last_seen = Some(Time::from_unix(1_700_000_000 + i, 0).unwrap());
        ops.push(StoreOp::PutNode(prev));
    }
    if i > 2 {
        ops.push(StoreOp::DeleteNode(NodeId(i - 2)));
    }
    ops
}

/// The child: applies batches until killed, printing `applied N` after each one returns.
#[test]
#[ignore = "helper process of crash_keeps_every_acknowledged_batch"]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut store = weft_coordstore::open(&spec).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 1..=MAX_BATCHES {
        store.apply(&batch(i)).unwrap();
        // A write error means the parent is gone: stop.
        if writeln!(out, "applied {i}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Kills and reaps the child however the test ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

both_backends!(crash_keeps_every_acknowledged_batch);

fn crash_keeps_every_acknowledged_batch<B: Backend>() {
    // Declared first, dropped last: the child is dead before its database is removed.
    let db = B::fresh();
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, db.spec())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("applied ") {
                if tx.send(n.parse::<i64>().unwrap()).is_err() {
                    break;
                }
            }
        }
    });
    let mut acked = 0;
    while acked < ACKED_BEFORE_KILL {
        acked = rx
            .recv_timeout(ACK_TIMEOUT)
            .unwrap_or_else(|e| panic!("child stopped acknowledging after {acked}: {e}"));
    }
    // SIGKILL, while the child is (most likely) inside its next transaction.
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "the child ran to its end: {status}");

    let mut store = db.open();
    let loaded = store.load().unwrap();
    let committed = loaded.next_ids.user - 1;
    eprintln!("crash: {acked} batches acknowledged, {committed} committed");
    assert!(
        committed >= acked,
        "{acked} batches acknowledged, {committed} in the database"
    );
    let mut expected = MemoryStore::default();
    for i in 1..=committed {
        expected.apply(&batch(i)).unwrap();
    }
    assert_eq!(loaded, expected.load().unwrap());
    // And the store takes writes again after recovery.
    store.apply(&batch(committed + 1)).unwrap();
}
