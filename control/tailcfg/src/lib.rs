//! Tailscale's control-protocol wire types, as official clients encode and decode them.
//!
//! Why a crate of its own: the coordination server (`weft-coordd`) and weft's node agent both
//! speak this protocol, and official clients must accept what weft sends, so the JSON shapes are
//! defined once, checked by golden tests against the exact field names and omission rules of Go's
//! `tailcfg`, and shared. Facts (field names, `omitempty`/`omitzero` behaviour, key text forms,
//! capability versions, frame layout) come from Tailscale's Go sources; the code is weft's.
//!
//! What it holds:
//! - [`keys`]: `mkey:`/`nodekey:`/`discokey:`/`chalpub:` typed keys over [`weft_keys::PublicKey`];
//! - [`capver`]: which capability versions weft serves (113 = Tailscale 1.80 and up);
//! - the messages of `/key`, ts2021's early payload, `/machine/register`, `/machine/map`, `/verify`
//!   ([`register`], [`map`], [`node`], [`hostinfo`], [`derpmap`], [`dns`], [`ssh`]); packet filters
//!   are [`weft_filter::FilterRule`], the same type the data plane enforces;
//! - [`frame`]: the map stream's little-endian length + zstd framing;
//! - [`time`]: Go's `time.Time`/`time.Duration` JSON forms.
//!
//! Conventions: field names are Go's (PascalCase, with the few lower-case exceptions Go tags);
//! fields Go omits when empty are skipped when empty; unknown fields are ignored on input; Go's
//! `null` for a nil collection reads as empty. This is a sans-IO core: no sockets, no runtime, no
//! clock reads (times are passed in), no filesystem.

pub mod capver;
pub mod derpmap;
pub mod dns;
pub mod frame;
pub mod fuzzing;
pub mod hostinfo;
pub mod keys;
pub mod map;
pub mod node;
pub mod register;
pub mod ssh;
pub mod time;
pub mod wire;

pub use capver::CapabilityVersion;
pub use derpmap::{
    DerpAdmitClientRequest, DerpAdmitClientResponse, DerpHomeParams, DerpMap, DerpNode, DerpRegion,
    RegionId,
};
pub use dns::{DnsConfig, DnsRecord, DnsResolver};
pub use frame::{FrameDecoder, FrameError, Limits};
pub use hostinfo::{Hostinfo, Location, NetInfo, Service};
pub use keys::{ChallengePublic, DiscoPublic, KeyTextError, MachinePublic, NodePublic};
pub use map::{Debug, MapRequest, MapResponse, PeerChange};
pub use node::{CapMap, Login, Node, NodeId, User, UserId, UserProfile};
pub use register::{
    EarlyNoise, OverTLSPublicKeyResponse, RegisterRequest, RegisterResponse, RegisterResponseAuth,
};
pub use ssh::{SshAction, SshPolicy, SshPrincipal, SshRule};
pub use time::{GoDuration, Time, TimeError};
pub use weft_filter::FilterRule;
pub use wire::{Base64Bytes, IpPrefix, PrefixError};
