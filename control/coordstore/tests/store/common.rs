//! Records and a temporary database shared by the tests.

use std::path::PathBuf;

use weft_coordstore::SqliteStore;
use weft_tailcfg::{DiscoPublic, MachinePublic, NodePublic, Time};
use weft_tailnet::{KeyId, NodeId, NodeRecord, PreAuthKeyRecord, UserId, UserRecord};

/// A database file in a fresh temporary directory, removed (with the directory) on drop.
pub struct TempDb {
    // Kept for its Drop.
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TempDb {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("weft-coordstore-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("coord.db");
        Self { _dir: dir, path }
    }

    pub fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.path).unwrap()
    }
}

pub fn t(secs: i64, nanos: u32) -> Time {
    Time::from_unix(secs, nanos).unwrap()
}

/// A user whose name is derived from its id (so names never collide across ids).
pub fn user(id: i64) -> UserRecord {
    UserRecord {
        id: UserId(id),
        name: format!("user{id}"),
        display_name: format!("User {id}"),
        created: t(1_700_000_000 + id, 0),
    }
}

/// A key whose prefix is derived from its id.
pub fn key(id: i64, user: i64) -> PreAuthKeyRecord {
    PreAuthKeyRecord {
        id: KeyId(id),
        prefix: format!("pfx{id}"),
        secret_hash: [0xa5; 32],
        user: UserId(user),
        reusable: false,
        ephemeral: false,
        tags: Vec::new(),
        created: t(1_700_000_100, 0),
        expiration: Time::ZERO,
        used: false,
        revoked: false,
    }
}

/// 32 key bytes unique to (`kind`, `id`, `variant`).
pub fn key_bytes(kind: u8, id: i64, variant: u8) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = kind;
    b[1..9].copy_from_slice(&id.to_le_bytes());
    b[9] = variant;
    b
}

/// A minimal node: keys derived from its id, nothing optional set.
pub fn node(id: i64, user: i64) -> NodeRecord {
    NodeRecord {
        id: NodeId(id),
        machine: MachinePublic::from_bytes(key_bytes(1, id, 0)),
        node_key: NodePublic::from_bytes(key_bytes(2, id, 0)),
        disco_key: DiscoPublic::ZERO,
        user: UserId(user),
        tags: Vec::new(),
        hostname: format!("host{id}"),
        given_name: format!("host{id}"),
        ipv4: None,
        ipv6: None,
        hostinfo: None,
        endpoints: Vec::new(),
        key_expiry: Time::ZERO,
        created: t(1_700_000_200, 0),
        last_seen: None,
        approved_routes: Vec::new(),
        ephemeral: false,
        auth_key: None,
    }
}
