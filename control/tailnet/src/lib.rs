//! The coordination server's core (issue 6): users, pre-auth keys, nodes, registration,
//! addressing, MagicDNS names and netmaps — a sans-IO state machine.
//!
//! Why sans-IO: registration and map streaming are where control servers go wrong (Headscale
//! rebuilds every node's map on every change and stalls near 500 nodes), and the only way to
//! test those decisions exhaustively is without sockets, clocks or a database. The shell
//! (`weft-coordd`) feeds requests, the time and fresh random bytes in, writes the returned
//! [`StoreOp`]s to its [`Store`] *before* it answers, and delivers the [`Update`]s that
//! [`Coordinator::take_updates`] hands out to the open map streams.
//!
//! Modules: [`records`] (what is persisted), [`store`] (the database seam), [`coordinator`]
//! (state, policy, housekeeping), `register` (registration, enrolment, logout), `admin` (admin
//! commands and API keys), [`mapper`] (full maps, deltas, primary routers), [`authkey`] (pre-auth key text), [`addr`] (address allocation),
//! [`dnsname`] (MagicDNS labels), [`config`].

pub mod addr;
mod admin;
pub mod authkey;
pub mod config;
pub mod coordinator;
pub mod dnsname;
#[doc(hidden)]
pub mod fuzzing;
pub mod mapper;
pub mod records;
mod register;
pub mod store;

pub use config::{Config, DnsSettings};
pub use coordinator::{
    CoordError, Coordinator, KeyView, NodeView, RegisterReply, SessionId, Update, AUTH_ID_ENTROPY,
};
pub use mapper::{MapError, MapReply};
pub use records::{
    ApiKeyRecord, KeyId, NextIds, NodeId, NodeRecord, PreAuthKeyRecord, Snapshot, StoreOp, UserId,
    UserRecord,
};
pub use store::{MemoryStore, Store, StoreError};
