//! Loads weft's eBPF programs (built from `ebpf/progs` by this crate's build script) with aya,
//! fills their maps, swaps rule generations atomically and reads their per-CPU counters.
//!
//! * [`TcFilter`]: the tailnet packet filter as a tc program for the weft TUN. Its verdicts are
//!   those of `weft-filter`'s `Filter::check_inbound`; the maps come from `weft-filter`'s
//!   `ebpf` module as [`TcTables`]. [`TcFilter::install`] writes a whole rule set into the
//!   generation that is not live and then makes it live with one array write, so a packet is
//!   always checked against one complete rule set, old or new.
//! * [`XdpFilter`]: the junk and handshake-flood filter for the underlay interface.
//!
//! Both can run a packet through the loaded program with `BPF_PROG_TEST_RUN`
//! ([`TcFilter::test_run`], [`XdpFilter::test_run`]), which is how their verdicts are tested
//! without a network namespace. Everything here needs `CAP_BPF` (root in practice); a caller
//! that gets an error from `load` keeps enforcing in userspace.
//!
//! This crate depends on nothing in `dataplane/` or `control/` (`STYLE.md` rule 6): the rule
//! compiler lives in `weft-filter`, the layouts in `weft-ebpf-common`.

mod pod;
mod sys;
mod tc;
mod xdp;

pub use tc::{TcCounters, TcFilter, TestRunner};
pub use weft_ebpf_common::{self as common, Prefix, Slot, SlotBits, TcTables};
pub use xdp::{XdpAttachMode, XdpCounters, XdpFilter};

/// What went wrong loading, attaching or updating a program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// aya could not load the object (no privilege, no BTF, verifier refusal, …).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// aya refused a program operation (load, attach).
    #[error("eBPF program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// A map operation failed.
    #[error("eBPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// The object lacks a program or map this crate expects (a build mismatch).
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// A rule set exceeds what the program's maps hold.
    #[error("rule set too large for the eBPF maps: {0}")]
    TooLarge(&'static str),
    /// No interface has this index.
    #[error("no interface with index {0}")]
    NoInterface(u32),
    /// A raw `bpf()` call failed.
    #[error("bpf({call}): {source}")]
    Syscall {
        /// Which command.
        call: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A test-run packet was smaller than an Ethernet header or larger than a page.
    #[error("test-run packet of {0} bytes (the kernel takes 15 to 3500)")]
    TestPacketSize(usize),
}

/// Runs the program behind `fd` `repeat` times on `frame` with `BPF_PROG_TEST_RUN`: its last
/// return value and the kernel's mean time per run in nanoseconds.
fn run_program(
    fd: std::os::fd::BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
) -> Result<(u32, u32), Error> {
    use std::os::fd::AsRawFd;
    if !(15..=3500).contains(&frame.len()) {
        return Err(Error::TestPacketSize(frame.len()));
    }
    sys::test_run(fd.as_raw_fd(), frame, repeat).map_err(|source| Error::Syscall {
        call: "BPF_PROG_TEST_RUN",
        source,
    })
}

/// The per-CPU `u64` counter array `name`, summed over CPUs.
fn sum_counters<const N: usize>(ebpf: &aya::Ebpf, name: &'static str) -> Result<[u64; N], Error> {
    let map = ebpf.map(name).ok_or(Error::Missing(name))?;
    let stats: aya::maps::PerCpuArray<&aya::maps::MapData, u64> =
        aya::maps::PerCpuArray::try_from(map)?;
    let mut out = [0; N];
    for (i, c) in out.iter_mut().enumerate() {
        *c = stats.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}

/// The name of the interface with index `ifindex`.
fn if_name(ifindex: u32) -> Result<String, Error> {
    sys::if_name(ifindex).ok_or(Error::NoInterface(ifindex))
}
