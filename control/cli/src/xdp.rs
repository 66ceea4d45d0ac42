//! `--xdp-interface IFNAME`: the XDP program of `weft-ebpf` on the underlay interface, which
//! drops datagrams to the listen port that are neither WireGuard, STUN nor disco before they
//! reach the socket, and — while the device reports handshake load — rate-limits handshake
//! initiations per source address.
//!
//! The program must follow the device: the listen port changes with the UAPI and the load
//! state with the handshake queue, so this is a [`DeviceObserver`] of the engine. Without the
//! program the device's own checks do the same work later (in userspace, after the socket):
//! a failure to attach is said once and is not fatal.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{anyhow, Result};
use weft_dataplane::DeviceObserver;
use weft_ebpf::{XdpAttachMode, XdpFilter};
use weft_ebpf_common::xdp_counter;

/// The attached program; detached when dropped.
pub(crate) struct Xdp {
    filter: Mutex<XdpFilter>,
    ifname: String,
}

impl Xdp {
    /// Loads the program and attaches it to `ifname` (driver mode where the driver has it,
    /// else generic).
    pub(crate) fn attach(ifname: &str) -> Result<Arc<Self>> {
        let ifindex = weft_sys::interface_index(ifname)
            .ok_or_else(|| anyhow!("no interface {ifname:?} in this network namespace"))?;
        let mut filter = XdpFilter::load(0)?;
        let mode = filter.attach(ifindex)?;
        tracing::info!(
            interface = ifname,
            mode = match mode {
                XdpAttachMode::Driver => "driver",
                XdpAttachMode::Generic => "generic",
            },
            "XDP junk and handshake-flood filter attached"
        );
        Ok(Arc::new(Self {
            filter: Mutex::new(filter),
            ifname: ifname.to_owned(),
        }))
    }

    /// Logs the program's counters (at exit).
    pub(crate) fn log_counters(&self) {
        let filter = self.filter.lock().unwrap_or_else(PoisonError::into_inner);
        match filter.counters() {
            Ok(c) => tracing::info!(
                interface = self.ifname,
                passed_wireguard = c.get(xdp_counter::PASS_WIREGUARD),
                passed_stun = c.get(xdp_counter::PASS_STUN),
                passed_disco = c.get(xdp_counter::PASS_DISCO),
                passed_large = c.get(xdp_counter::PASS_LARGE),
                passed_other = c.get(xdp_counter::PASS_OTHER),
                dropped_junk = c.get(xdp_counter::DROP_JUNK),
                dropped_rate_limited = c.get(xdp_counter::DROP_RATE_LIMIT),
                "XDP filter counters"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read the XDP counters"),
        }
    }
}

impl DeviceObserver for Xdp {
    fn listen_port_changed(&self, port: u16) {
        let mut filter = self.filter.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = filter.set_listen_port(port) {
            tracing::warn!(error = %e, port, "cannot give the XDP filter the listen port");
        }
    }

    fn load_changed(&self, under_load: bool) {
        let mut filter = self.filter.lock().unwrap_or_else(PoisonError::into_inner);
        match filter.set_under_load(under_load) {
            Ok(()) => tracing::info!(
                under_load,
                "XDP filter: per-source initiation rate limit {}",
                if under_load { "on" } else { "off" }
            ),
            Err(e) => tracing::warn!(error = %e, "cannot switch the XDP rate limit"),
        }
    }
}
