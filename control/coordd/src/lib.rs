//! `weft-coordd`'s library half: the HTTP shell around [`weft_tailnet::Coordinator`]
//! ([`server`]), its flags and files ([`config`]) and the admin socket ([`admin`]). The binary
//! (`src/main.rs`) wires them up; the integration tests drive them directly.

pub mod admin;
pub mod config;
pub mod server;
