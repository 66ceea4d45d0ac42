//! The XDP junk and flood filter: load, attach, configure, counters, test runs.

use std::os::fd::AsFd;

use aya::maps::{Array, MapData};
use aya::programs::{Xdp, XdpMode};
use aya::{include_bytes_aligned, Ebpf};
use weft_ebpf_common::{xdp_counter, XdpConfig};

use crate::pod::PodXdpConfig;
use crate::{run_program, sum_counters, Error};

static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/acl_xdp.o"));
const PROGRAM: &str = "weft_xdp";

/// How the XDP program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// In the driver (native XDP).
    Driver,
    /// In the generic (SKB) path: the driver has no native XDP.
    Generic,
}

/// The XDP program's counters, summed over CPUs (indexed by [`xdp_counter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XdpCounters(pub [u64; xdp_counter::COUNT as usize]);

impl XdpCounters {
    /// The counter at `index` ([`xdp_counter`]).
    pub fn get(&self, index: u32) -> u64 {
        self.0.get(index as usize).copied().unwrap_or(0)
    }
}

/// The loaded XDP filter.
#[derive(Debug)]
pub struct XdpFilter {
    ebpf: Ebpf,
    config: XdpConfig,
}

impl XdpFilter {
    /// Loads the program; datagrams to `listen_port` are checked. Not under load.
    ///
    /// # Errors
    /// [`Error::Load`] or [`Error::Program`].
    pub fn load(listen_port: u16) -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing("xdp program"))?
            .try_into()?;
        prog.load()?;
        let mut me = Self {
            ebpf,
            config: XdpConfig {
                listen_port,
                ..XdpConfig::default()
            },
        };
        me.write_config()?;
        Ok(me)
    }

    /// Attaches to interface `ifindex` in driver mode, or in generic mode if the driver has no
    /// native XDP. It stays attached while `self` lives.
    ///
    /// # Errors
    /// [`Error::Program`] if neither mode attaches.
    pub fn attach(&mut self, ifindex: u32) -> Result<XdpAttachMode, Error> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing("xdp program"))?
            .try_into()?;
        if prog.attach_to_if_index(ifindex, XdpMode::Driver).is_ok() {
            return Ok(XdpAttachMode::Driver);
        }
        prog.attach_to_if_index(ifindex, XdpMode::Skb)?;
        Ok(XdpAttachMode::Generic)
    }

    /// Sets the "under load" flag: while set, handshake initiations are rate-limited per
    /// source address.
    ///
    /// # Errors
    /// [`Error::Map`].
    pub fn set_under_load(&mut self, under_load: bool) -> Result<(), Error> {
        self.config.under_load = u8::from(under_load);
        self.write_config()
    }

    /// Changes the listen port.
    ///
    /// # Errors
    /// [`Error::Map`].
    pub fn set_listen_port(&mut self, port: u16) -> Result<(), Error> {
        self.config.listen_port = port;
        self.write_config()
    }

    fn write_config(&mut self) -> Result<(), Error> {
        let map = self
            .ebpf
            .map_mut("weft_xdp_cfg")
            .ok_or(Error::Missing("weft_xdp_cfg"))?;
        let mut cfg: Array<&mut MapData, PodXdpConfig> = Array::try_from(map)?;
        cfg.set(0, PodXdpConfig(self.config), 0)?;
        Ok(())
    }

    /// The counters, summed over CPUs.
    ///
    /// # Errors
    /// [`Error::Map`] or [`Error::Missing`].
    pub fn counters(&self) -> Result<XdpCounters, Error> {
        sum_counters(&self.ebpf, "weft_xdp_stats").map(XdpCounters)
    }

    /// Runs the loaded program once on `frame` (an Ethernet frame) with `BPF_PROG_TEST_RUN`
    /// and returns its return value (1: drop, 2: pass).
    ///
    /// # Errors
    /// [`Error::TestPacketSize`] or [`Error::Syscall`].
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, Error> {
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or(Error::Missing("xdp program"))?
            .try_into()?;
        run_program(prog.fd()?.as_fd(), frame, 1).map(|(ret, _)| ret)
    }
}
