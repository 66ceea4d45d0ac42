//! The seam between the coordinator and its database.

use crate::records::{Snapshot, StoreOp};

/// Why a store could not load or write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed (I/O, corruption, constraint).
    #[error("database: {0}")]
    Backend(String),
    /// The database was written by a newer weft (schema version above what this build knows).
    #[error("database schema version {found} is newer than this build's {supported}")]
    TooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A stored value could not be read back (e.g. a malformed key or address).
    #[error("stored {what} is malformed: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// Durable storage of [`crate::records`]. Implementations: SQLite (`weft-coordstore`), and an
/// in-memory one for tests ([`MemoryStore`]).
pub trait Store: Send {
    /// Everything stored, with the next free ids.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be read.
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// Applies `ops` in order, in one transaction: all or none, durable (fsynced) before this
    /// returns. Puts of ids at or above the next free id move it past them.
    ///
    /// # Errors
    /// [`StoreError`]; then nothing was applied.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
}

/// A store in memory (tests, and `weft-coordd --ephemeral-db` demos). Same semantics as a
/// database, without durability.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    snapshot: Snapshot,
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(self.snapshot.clone())
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let s = &mut self.snapshot;
        for op in ops {
            match op {
                StoreOp::PutUser(u) => {
                    s.users.retain(|x| x.id != u.id);
                    s.users.push(u.clone());
                    s.next_ids.user = s.next_ids.user.max(u.id.0 + 1);
                }
                StoreOp::DeleteUser(id) => s.users.retain(|x| x.id != *id),
                StoreOp::PutKey(k) => {
                    s.keys.retain(|x| x.id != k.id);
                    s.keys.push(k.clone());
                    s.next_ids.key = s.next_ids.key.max(k.id.0 + 1);
                }
                StoreOp::DeleteKey(id) => s.keys.retain(|x| x.id != *id),
                StoreOp::PutNode(n) => {
                    s.nodes.retain(|x| x.id != n.id);
                    s.nodes.push(n.clone());
                    s.next_ids.node = s.next_ids.node.max(n.id.0 + 1);
                }
                StoreOp::DeleteNode(id) => s.nodes.retain(|x| x.id != *id),
                StoreOp::PutApiKey(k) => {
                    s.api_keys.retain(|x| x.id != k.id);
                    s.api_keys.push(k.clone());
                    s.next_ids.api_key = s.next_ids.api_key.max(k.id.0 + 1);
                }
                StoreOp::DeleteApiKey(id) => s.api_keys.retain(|x| x.id != *id),
            }
        }
        s.users.sort_by_key(|u| u.id);
        s.keys.sort_by_key(|k| k.id);
        s.nodes.sort_by_key(|n| n.id);
        s.api_keys.sort_by_key(|k| k.id);
        Ok(())
    }
}
