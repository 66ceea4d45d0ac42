//! The synchronization primitives the ring uses: std's, or loom's models of them in the
//! crate's own tests built with `--cfg loom` (scripts/loom.sh), so the same code is
//! model-checked. (loom is a dev-dependency: a non-test build with `--cfg loom` uses std.)

#[cfg(all(loom, test))]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicUsize, Ordering},
    Arc, Mutex,
};

#[cfg(not(all(loom, test)))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicUsize, Ordering},
    Arc, Mutex,
};

// Both Mutex flavours report a failed `try_lock` with std's error type.
pub(crate) use std::sync::TryLockError;
