//! The tc packet filter: load, attach (ingress filter and egress flow recorder), install rule
//! generations, counters, the reverse-flow map, test runs.

use std::os::fd::{AsFd, OwnedFd};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, ArrayOfMaps, HashMap, MapData};
use aya::programs::tc::{self, SchedClassifier, TcAttachType};
use aya::{include_bytes_aligned, Ebpf, EbpfLoader};
use weft_ebpf_common::{
    tc_counter, Local, LpmKeyData, TcConfig, TcTables, LPM_ENTRIES_PER_GEN, SLOTS,
};

use crate::pod::{PodBits, PodFlowKey, PodKey, PodLocal, PodSlot, PodTcConfig};
use crate::{if_name, run_program, sum_counters, Error};

static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/acl_tc.o"));
const PROGRAM: &str = "weft_acl";
/// The egress program that records outbound UDP/SCTP flows.
const PROGRAM_OUT: &str = "weft_acl_out";

/// The tc program's counters, summed over CPUs: passes, and drops by reason (the reasons of
/// `weft-filter`'s `DropReason`, indexed by [`tc_counter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcCounters(pub [u64; tc_counter::COUNT as usize]);

impl TcCounters {
    /// Packets accepted.
    pub fn passed(&self) -> u64 {
        self.0.first().copied().unwrap_or(0)
    }

    /// Packets dropped, all reasons.
    pub fn dropped(&self) -> u64 {
        self.0.iter().skip(1).sum()
    }

    /// The counter at `index` ([`tc_counter`]).
    pub fn get(&self, index: u32) -> u64 {
        self.0.get(index as usize).copied().unwrap_or(0)
    }
}

/// Runs the tc program with `BPF_PROG_TEST_RUN` from any thread ([`TcFilter::test_runner`]).
#[derive(Debug)]
pub struct TestRunner {
    fd: OwnedFd,
}

impl TestRunner {
    /// As [`TcFilter::test_run`].
    ///
    /// # Errors
    /// [`Error::TestPacketSize`] or [`Error::Syscall`].
    pub fn run(&self, frame: &[u8]) -> Result<u32, Error> {
        run_program(self.fd.as_fd(), frame, 1).map(|(ret, _)| ret)
    }
}

/// The trie keys one generation holds, so that they can be removed before the generation is
/// rebuilt.
#[derive(Debug, Default)]
struct Written {
    src: Vec<(u32, LpmKeyData)>,
    dst: Vec<(u32, LpmKeyData)>,
    local: Vec<(u32, LpmKeyData)>,
}

/// The loaded tc packet filter.
#[derive(Debug)]
pub struct TcFilter {
    ebpf: Ebpf,
    active: u8,
    /// The keys of the live generation.
    live: Written,
    /// The keys of the other generation (the previous rule set, removed at the next install).
    standby: Written,
    /// The map stored into `weft_barrier` after each switch (see [`Self::wait_for_readers`]).
    barrier_token: MapData,
    /// Whether the last switch's wait for readers failed (the standby generation may still
    /// be read, so the next install waits before clearing it).
    readers_pending: bool,
}

impl TcFilter {
    /// Loads the program for packets with `l2_offset` bytes before the IP header (0 on a TUN,
    /// 14 behind Ethernet). No rules are installed: until [`install`](Self::install) every
    /// packet that needs a local destination is dropped, so install before attaching.
    ///
    /// # Errors
    /// [`Error::Load`] or [`Error::Program`] (no privilege, no BTF, verifier refusal).
    pub fn load(l2_offset: u32) -> Result<Self, Error> {
        let mut ebpf = EbpfLoader::new()
            .override_global("weft_l2_offset", &l2_offset, true)
            .load(OBJECT)?;
        for name in [PROGRAM, PROGRAM_OUT] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(Error::Missing("tc program"))?
                .try_into()?;
            prog.load()?;
        }
        let barrier_token = match ebpf.take_map("weft_barrier_token") {
            Some(aya::maps::Map::Array(data)) => data,
            _ => return Err(Error::Missing("weft_barrier_token")),
        };
        Ok(Self {
            ebpf,
            active: 0,
            live: Written::default(),
            standby: Written::default(),
            barrier_token,
            readers_pending: false,
        })
    }

    /// Attaches the filter to the ingress of interface `ifindex` and the flow recorder to its
    /// egress (tcx where the kernel has it, otherwise a clsact qdisc, added if missing). The
    /// recorder goes first, so that no reply can arrive before its flow could be recorded.
    /// Both stay attached while `self` lives.
    ///
    /// # Errors
    /// [`Error::NoInterface`] or [`Error::Program`].
    pub fn attach(&mut self, ifindex: u32) -> Result<(), Error> {
        let name = if_name(ifindex)?;
        // An existing clsact qdisc is fine; tcx needs none at all.
        let _ = tc::qdisc_add_clsact(&name);
        for (program, direction) in [
            (PROGRAM_OUT, TcAttachType::Egress),
            (PROGRAM, TcAttachType::Ingress),
        ] {
            let prog: &mut SchedClassifier = self
                .ebpf
                .program_mut(program)
                .ok_or(Error::Missing("tc program"))?
                .try_into()?;
            prog.attach(&name, direction)?;
        }
        Ok(())
    }

    /// Makes `tables` the live rule set: writes it into the generation that is not live, then
    /// switches the generation with one write of the config array. Packets see the old rule set
    /// or the new one, never a mix and never an empty one. Returns once no packet is still
    /// judged against the previous rule set (an RCU grace period, a few milliseconds); the
    /// previous generation's entries stay until the next install clears them.
    ///
    /// # Errors
    /// [`Error::TooLarge`] before anything is written if `tables` exceeds the maps;
    /// [`Error::Map`] if a write fails (before the switch the live generation is then
    /// unchanged; if only the wait after the switch failed, the new rules are live and the
    /// next install waits again before clearing the old ones).
    pub fn install(&mut self, tables: &TcTables) -> Result<(), Error> {
        check_fits(tables)?;
        let next = 1 - self.active;
        if self.readers_pending {
            self.wait_for_readers()?;
        }
        // Clear the standby generation; on failure, what is left stays tracked.
        let mut old = std::mem::take(&mut self.standby);
        let cleared = self.remove_keys(&mut old);
        if let Err(e) = cleared {
            self.standby = old;
            return Err(e);
        }
        let mut written = Written::default();
        if let Err(e) = self.write_generation(next, tables, &mut written) {
            // Not live: the next install clears it.
            self.standby = written;
            return Err(e);
        }
        let mut cfg: Array<&mut MapData, PodTcConfig> = self.map("weft_tc_cfg")?;
        let switched = cfg.set(
            0,
            PodTcConfig(TcConfig {
                active_gen: u32::from(next),
                pad: 0,
            }),
            0,
        );
        if let Err(e) = switched {
            self.standby = written;
            return Err(e.into());
        }
        self.active = next;
        self.standby = std::mem::replace(&mut self.live, written);
        self.readers_pending = true;
        self.wait_for_readers()
    }

    /// Returns once every BPF program that was running when it was called has finished, so
    /// that no packet is still judged against the generation that was live before the last
    /// switch. Without this, a packet that read the old generation number just before a switch
    /// could still be looking it up (its CPU preempted, or its vCPU descheduled by the host)
    /// while the next install clears that generation — a mix of two rule sets, which the rule
    /// swap test caught in CI (2 of 33 650 packets). Updating a map-of-maps makes the kernel
    /// wait for an RCU grace period before the syscall returns (`maybe_wait_bpf_programs`);
    /// the barrier map exists only for that.
    ///
    /// If this fails the switch has still happened; the error is returned so the caller knows
    /// the old generation may still have readers, and the next install tries again before it
    /// clears anything.
    fn wait_for_readers(&mut self) -> Result<(), Error> {
        let map = self
            .ebpf
            .map_mut("weft_barrier")
            .ok_or(Error::Missing("weft_barrier"))?;
        let mut barrier: ArrayOfMaps<&mut MapData, MapData> = ArrayOfMaps::try_from(map)?;
        let waited = barrier.set(0, &self.barrier_token, 0);
        self.readers_pending = waited.is_err();
        Ok(waited?)
    }

    /// Removes the trie entries in `keys`, dropping each from `keys` as it goes.
    fn remove_keys(&mut self, keys: &mut Written) -> Result<(), Error> {
        {
            let mut trie = self.lpm_bits("weft_src")?;
            while let Some((len, k)) = keys.src.last().copied() {
                remove(trie.remove(&Key::new(len, PodKey(k))))?;
                keys.src.pop();
            }
        }
        {
            let mut trie = self.lpm_bits("weft_dst")?;
            while let Some((len, k)) = keys.dst.last().copied() {
                remove(trie.remove(&Key::new(len, PodKey(k))))?;
                keys.dst.pop();
            }
        }
        let mut trie = self.lpm_local()?;
        while let Some((len, k)) = keys.local.last().copied() {
            remove(trie.remove(&Key::new(len, PodKey(k))))?;
            keys.local.pop();
        }
        Ok(())
    }

    /// Writes `tables` as generation `gen`, recording every trie key in `written` before it is
    /// inserted.
    fn write_generation(
        &mut self,
        gen: u8,
        tables: &TcTables,
        written: &mut Written,
    ) -> Result<(), Error> {
        {
            let mut slots: Array<&mut MapData, PodSlot> = self.map("weft_slots")?;
            let base = u32::from(gen) * SLOTS as u32;
            for i in 0..SLOTS {
                let slot = tables.slots.get(i).copied().unwrap_or_default();
                slots.set(base + i as u32, PodSlot(slot), 0)?;
            }
        }
        {
            let mut trie = self.lpm_bits("weft_src")?;
            for (p, bits) in &tables.src {
                let (len, k) = p.key(gen);
                written.src.push((len, k));
                trie.insert(&Key::new(len, PodKey(k)), PodBits(*bits), 0)?;
            }
        }
        {
            let mut trie = self.lpm_bits("weft_dst")?;
            for (p, bits) in &tables.dst {
                let (len, k) = p.key(gen);
                written.dst.push((len, k));
                trie.insert(&Key::new(len, PodKey(k)), PodBits(*bits), 0)?;
            }
        }
        let mut trie = self.lpm_local()?;
        for p in &tables.local {
            let (len, k) = p.key(gen);
            written.local.push((len, k));
            trie.insert(&Key::new(len, PodKey(k)), PodLocal(Local { present: 1 }), 0)?;
        }
        Ok(())
    }

    /// The generation packets are checked against (0 or 1).
    pub fn active_generation(&self) -> u8 {
        self.active
    }

    /// The counters, summed over CPUs.
    ///
    /// # Errors
    /// [`Error::Map`] or [`Error::Missing`].
    pub fn counters(&self) -> Result<TcCounters, Error> {
        sum_counters(&self.ebpf, "weft_tc_stats").map(TcCounters)
    }

    /// Runs the loaded program once on `frame` with `BPF_PROG_TEST_RUN` and returns its
    /// return value (0: pass, 2: drop). The kernel puts an skb's data at the start of `frame`
    /// and requires more than 14 bytes, whatever the L2 offset.
    ///
    /// # Errors
    /// [`Error::TestPacketSize`] or [`Error::Syscall`].
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, Error> {
        run_program(self.prog()?.fd()?.as_fd(), frame, 1).map(|(ret, _)| ret)
    }

    /// Runs the egress program (the flow recorder) once on `frame`, an outbound packet with the
    /// load-time L2 offset, and returns its return value (always 0: pass).
    ///
    /// # Errors
    /// As [`test_run`](Self::test_run).
    pub fn test_run_egress(&self, frame: &[u8]) -> Result<u32, Error> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(PROGRAM_OUT)
            .ok_or(Error::Missing("tc program"))?
            .try_into()?;
        run_program(prog.fd()?.as_fd(), frame, 1).map(|(ret, _)| ret)
    }

    /// The flows the reverse-flow map holds (counted by walking its keys).
    ///
    /// # Errors
    /// [`Error::Map`] or [`Error::Missing`].
    pub fn flow_count(&self) -> Result<usize, Error> {
        let map = self
            .ebpf
            .map("weft_flows")
            .ok_or(Error::Missing("weft_flows"))?;
        let flows: HashMap<&MapData, PodFlowKey, u32> = HashMap::try_from(map)?;
        let mut n = 0;
        for key in flows.keys() {
            key?;
            n += 1;
        }
        Ok(n)
    }

    /// Forgets every recorded flow (for tests that need a fresh cache).
    ///
    /// # Errors
    /// [`Error::Map`] or [`Error::Missing`].
    pub fn clear_flows(&mut self) -> Result<(), Error> {
        let map = self
            .ebpf
            .map_mut("weft_flows")
            .ok_or(Error::Missing("weft_flows"))?;
        let mut flows: HashMap<&mut MapData, PodFlowKey, u32> = HashMap::try_from(map)?;
        let keys: Vec<PodFlowKey> = flows.keys().collect::<Result<_, _>>()?;
        for k in &keys {
            remove(flows.remove(k))?;
        }
        Ok(())
    }

    /// Runs the program `repeat` times on `frame` and returns the kernel's mean time per run in
    /// nanoseconds (for benchmarks; the counters move by `repeat`).
    ///
    /// # Errors
    /// As [`test_run`](Self::test_run).
    pub fn time_per_run(&self, frame: &[u8], repeat: u32) -> Result<u32, Error> {
        run_program(self.prog()?.fd()?.as_fd(), frame, repeat).map(|(_, ns)| ns)
    }

    fn prog(&self) -> Result<&SchedClassifier, Error> {
        Ok(self
            .ebpf
            .program(PROGRAM)
            .ok_or(Error::Missing("tc program"))?
            .try_into()?)
    }

    /// A handle that test-runs this program from another thread (a duplicate of the program's
    /// file descriptor), for tests that swap rules while packets are being judged.
    ///
    /// # Errors
    /// [`Error::Program`] or [`Error::Syscall`] (the descriptor could not be duplicated).
    pub fn test_runner(&self) -> Result<TestRunner, Error> {
        let fd = self
            .prog()?
            .fd()?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| Error::Syscall {
                call: "dup",
                source,
            })?;
        Ok(TestRunner { fd })
    }

    fn map<V: aya::Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>, Error> {
        let map = self.ebpf.map_mut(name).ok_or(Error::Missing(name))?;
        Ok(Array::try_from(map)?)
    }

    fn lpm_bits(
        &mut self,
        name: &'static str,
    ) -> Result<LpmTrie<&mut MapData, PodKey, PodBits>, Error> {
        let map = self.ebpf.map_mut(name).ok_or(Error::Missing(name))?;
        Ok(LpmTrie::try_from(map)?)
    }

    fn lpm_local(&mut self) -> Result<LpmTrie<&mut MapData, PodKey, PodLocal>, Error> {
        let map = self
            .ebpf
            .map_mut("weft_local")
            .ok_or(Error::Missing("weft_local"))?;
        Ok(LpmTrie::try_from(map)?)
    }
}

/// A removal's result, with "no such key" counted as done.
fn remove(r: Result<(), aya::maps::MapError>) -> Result<(), Error> {
    match r {
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Whether `tables` fits one generation of the maps.
fn check_fits(tables: &TcTables) -> Result<(), Error> {
    if tables.slots.len() > SLOTS {
        return Err(Error::TooLarge(
            "more (rule, destination) slots than WEFT_SLOTS",
        ));
    }
    if tables.src.len() > LPM_ENTRIES_PER_GEN
        || tables.dst.len() > LPM_ENTRIES_PER_GEN
        || tables.local.len() > LPM_ENTRIES_PER_GEN
    {
        return Err(Error::TooLarge(
            "more prefixes than one generation of a trie holds",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_ebpf_common::{Prefix, Slot, SlotBits};

    #[test]
    fn limits_are_checked_before_writing() {
        let mut t = TcTables {
            slots: vec![Slot::default(); SLOTS],
            ..TcTables::default()
        };
        assert!(check_fits(&t).is_ok());
        t.slots.push(Slot::default());
        assert!(matches!(check_fits(&t), Err(Error::TooLarge(_))));
        t.slots.pop();
        t.src = vec![(Prefix::default(), SlotBits::default()); LPM_ENTRIES_PER_GEN + 1];
        assert!(matches!(check_fits(&t), Err(Error::TooLarge(_))));
    }
}
