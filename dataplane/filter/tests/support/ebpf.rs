//! The tc program's counters as the userspace matcher's verdicts, for the parity tests.

use weft_ebpf::common::tc_counter;
use weft_filter::{DropReason, Verdict};

/// The matcher's verdict for counter `index` of the tc program.
pub fn verdict_of(index: u32) -> Verdict {
    let reason = match index {
        tc_counter::PASS => return Verdict::Accept,
        tc_counter::DROP_TOO_SHORT => DropReason::TooShort,
        tc_counter::DROP_BAD_VERSION => DropReason::BadVersion,
        tc_counter::DROP_TRUNCATED => DropReason::Truncated,
        tc_counter::DROP_MALFORMED => DropReason::Malformed,
        tc_counter::DROP_UNKNOWN_PROTOCOL => DropReason::UnknownProtocol,
        tc_counter::DROP_FRAGMENT_OVERLAP => DropReason::FragmentOverlap,
        tc_counter::DROP_MULTICAST => DropReason::Multicast,
        tc_counter::DROP_LINK_LOCAL => DropReason::LinkLocal,
        tc_counter::DROP_NOT_LOCAL => DropReason::NotLocal,
        tc_counter::DROP_NO_RULE => DropReason::NoRule,
        other => panic!("no counter {other}"),
    };
    Verdict::Drop(reason)
}
