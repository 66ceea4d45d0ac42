//! The tailnet packet filter: the rules a control server sends in a netmap's `PacketFilter`,
//! and the verdict on each packet a peer sends to this node.
//!
//! This crate is the specification of weft's filter: the data plane runs it in userspace
//! wherever the eBPF program is not loaded, and the eBPF program must give the same verdict
//! on every packet (the same table of crafted packets runs through both). Its semantics are
//! those of the official client (`wgengine/filter` and `net/packet` in tailscale, and
//! `../shared/docs/tailscale-protocol.md` §9.2), so a tailnet that mixes weft and official
//! nodes behaves the same on both; the deliberate differences are listed below.
//!
//! Like every weft core it does no I/O, reads no clock, holds no lock and cannot be made to
//! panic by any input. It depends on `weft-packet` (the IP and transport header views), `serde`
//! and `thiserror` only; shells (`weft-dataplane`) depend on it, never the reverse.
//!
//! # Use
//! [`rules::compile`] turns the wire [`FilterRule`]s into [`Rule`]s (how bad entries are
//! handled is in [`rules`]); [`Filter::new`] takes them with the node's *local nets* (its own
//! addresses and the routes it serves); [`Filter::check_inbound_with`] gives a [`Verdict`] for
//! one decrypted IP packet from a peer, with a [`DropReason`] for the counters, and
//! [`Filter::check_outbound`] records the UDP and SCTP flows this node sends in a
//! [`FlowTable`] (the reverse-flow cache) so that their replies are accepted.
//! [`Filter::check_inbound`] is the same verdict without a cache.
//!
//! # Outbound packets and the reverse-flow cache
//! Outbound packets (this node to a peer) are never dropped. One that decodes (step 1 and 2
//! below), whose destination is neither multicast nor link-local (step 3), that is not a
//! later fragment and whose protocol is UDP or SCTP is *recorded*: the flow (protocol, remote
//! address and port = the packet's destination, local address and port = its source) becomes
//! the most recently used entry of the [`FlowTable`], a bounded LRU of
//! [`FLOW_TABLE_CAPACITY`] (512) flows as in the official client; the 513th distinct flow
//! evicts the least recently used one. An inbound UDP or SCTP packet whose (protocol, source
//! address and port, destination address and port) equals a recorded flow is a *reply*: it is
//! accepted without a rule (step 6) and refreshes the flow. Addresses compare in their 16-byte
//! form, an IPv4 address as `::ffff:a.b.c.d` (the official client's flow tuple), and ports
//! exactly. TCP, ICMP and every other protocol neither record nor consult the cache. The
//! cache outlives rule changes (the official client shares it between filters), so the data
//! plane keeps the [`FlowTable`] apart from the [`Filter`].
//!
//! # Semantics (inbound)
//! In this order:
//! 1. An empty packet is accepted (the official client's keep-alive case; weft never writes
//!    one to the TUN). Fewer than 20 bytes, a version other than 4 or 6, a packet shorter
//!    than its IP length field, or a transport header that does not fit are dropped
//!    ([`DropReason::TooShort`], [`DropReason::BadVersion`], [`DropReason::Truncated`],
//!    [`DropReason::Malformed`]). Bytes after the IP length are ignored.
//! 2. Protocol 0 (IPv6 Hop-by-Hop), 255 and a fragmented TSMP packet are dropped
//!    ([`DropReason::UnknownProtocol`]); so is a non-first fragment whose offset is below 80
//!    bytes, which could overlap a transport header (RFC 1858; [`DropReason::FragmentOverlap`]).
//! 3. A multicast destination (`224.0.0.0/4`, `ff00::/8`) or a link-local unicast one
//!    (`169.254.0.0/16` except `169.254.169.254`, `fe80::/10`) is dropped.
//! 4. A non-first fragment is accepted (its transport header is in the first fragment, which
//!    was checked; the receiving kernel drops fragments it cannot reassemble). Like the
//!    official client, this happens before the local-nets check.
//! 5. The destination must be in the local nets ([`DropReason::NotLocal`]).
//! 6. By protocol (a rule *matches* when the protocol is in its set, the source in one of its
//!    source prefixes and the destination address and port in one of its destinations):
//!    * ICMP (ICMPv4 in IPv4, ICMPv6 in IPv6; 4 bytes of header required): echo replies
//!      (code 0) and errors are accepted when the full 8-byte header is there; anything else
//!      is accepted if *any* rule, whatever its protocols and ports, has the source and the
//!      destination address ("if any port is open, ICMP is too"). ICMPv4 inside IPv6 and
//!      ICMPv6 inside IPv4 are "anything else" below.
//!    * TCP: a segment without SYN, or with SYN and ACK, is accepted (return traffic of
//!      outbound connections; a connection cannot be opened without a bare SYN). A bare SYN
//!      needs a matching rule.
//!    * UDP and SCTP: a reply to a recorded flow is accepted (see above); anything else needs
//!      a matching rule.
//!    * TSMP (99): accepted.
//!    * anything else: accepted if a rule for that protocol has the source and the
//!      destination with *all* ports (0–65535).
//!
//!    Otherwise [`DropReason::NoRule`].
//!
//! IPv6 extension headers are handled as the official client handles them: only a Fragment
//! header directly after the fixed header is walked (first fragment: the transport header
//! behind it is checked as in an unfragmented packet; later fragments: step 4). Hop-by-Hop
//! (next header 0) is dropped in step 2; any other extension header (Routing, Destination
//! Options, AH, ESP, a second Fragment header) is taken as the protocol of the packet, so it
//! is dropped unless a rule names that protocol number with all ports.
//!
//! # Deliberate differences from the official client
//! * **Outbound packets are not dropped.** The official client's pre-checks also refuse
//!   outbound packets (too short, multicast or link-local destination, unknown protocol);
//!   weft sends them, and they record no flow. The kernel or the peer drops them anyway.
//! * **`cap:` sources never match** (they need the peer-capability map of the netmap).
//!   They are parsed and kept in [`Rule::src_caps`]. Not yet done.
//! * **Stricter header checks.** An IPv4 header length below 5 words is dropped (the official
//!   client then reads the transport header from inside the IP header); the transport header
//!   must fit inside the IP length, not merely inside the buffer; a TCP data offset below 5 or
//!   past the packet is dropped. Every such packet is refused by the receiving stack anyway,
//!   and these checks keep a parser's view of the packet equal to the kernel's.
//! * **ICMPv4 errors are types 3, 11, 12 and 18.** The official client lists Parameter
//!   Problem as `0x12` (18, Address Mask Reply) instead of 12; weft accepts type 12 as the
//!   error it is and keeps 18 so that it never drops what an official node accepts.
//! * No ingress or link-local hooks (extensions of the official client); no logging.
//!
//! # eBPF maps
//! Rules are kept in a form a tc program can look up without loops over rules: per family,
//! every source prefix and every destination prefix is already a CIDR (`*` is `0/0` and
//! `::/0`, ranges are split into their minimal CIDR cover), ports are one inclusive range per
//! destination and protocols a 256-bit set ([`ProtoSet::words`]). [`tc_tables`] (module
//! [`ebpf`]) compiles them into the maps of weft's tc program (`ebpf/progs/acl_tc.c`, loaded
//! by `weft-ebpf`): each (rule, destination) pair is a slot holding the protocols and ports;
//! a source LPM trie maps each source prefix to the slots of the rules that list a prefix
//! containing it, a destination trie maps each destination prefix to the slots whose
//! destination contains it, and a third trie holds the local nets. A packet's candidate slots
//! are the AND of its two bitmaps; a bounded loop checks protocol and port. A rule set larger
//! than the program's limits is a [`TablesError`], never a different verdict: the caller
//! keeps enforcing with this matcher. `tests/ebpf_parity.rs` runs the table, the fuzz corpus
//! and generated cases through both and requires identical verdicts and drop reasons.
//!
//! The reverse-flow cache is a kernel LRU hash keyed by the same [`FlowKey`] layout, filled by
//! the tc program on the TUN's egress (packets the host routes into the tunnel) and consulted
//! by the one on its ingress. The kernel's LRU eviction is approximate (per-CPU free lists),
//! so its map holds more than 512 flows; the two paths agree on every packet while fewer than
//! 512 flows are live, and beyond that the kernel path may still accept a reply to a flow the
//! userspace table has already evicted.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod decode;
pub mod ebpf;
mod flows;
#[doc(hidden)]
pub mod fuzzing;
mod matcher;
pub mod rules;

pub use decode::{Decoded, L4};
pub use ebpf::{tc_tables, TablesError};
pub use flows::{FlowKey, FlowTable, FLOW_TABLE_CAPACITY};
pub use matcher::{DropReason, Filter, Verdict};
pub use rules::{
    compile, Compiled, Dst, EntryError, FilterRule, IpNet, IpSetError, PortRange, ProtoSet, Rule,
    RuleError,
};
