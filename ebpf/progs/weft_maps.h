/* Map layouts shared by weft's eBPF programs and their loader.
 *
 * The Rust side mirrors every struct and constant here in crate weft-ebpf-common
 * (ebpf/common/src/lib.rs); its tests check the sizes and offsets, and build.rs checks the
 * constants below against the same numbers. Change both together.
 */
#ifndef WEFT_MAPS_H
#define WEFT_MAPS_H

#include <linux/types.h>

/* ---- tc packet filter (acl_tc.c) ---------------------------------------------------- */

/* (rule, destination) slots per generation: one bit each in the LPM values. */
#define WEFT_SLOTS 256
#define WEFT_SLOT_WORDS (WEFT_SLOTS / 64)
/* Rule generations: one is live, the other is being built. */
#define WEFT_GENERATIONS 2
/* Capacity of each LPM trie (both generations together). */
#define WEFT_LPM_ENTRIES 16384

#define WEFT_FAMILY_V4 4
#define WEFT_FAMILY_V6 6
/* Bits of the LPM key before the address: generation and family. */
#define WEFT_KEY_HEADER_BITS 16

/* Key of the source, destination and local-net tries. The generation and family bytes are
 * part of every stored prefix, so one trie holds both families of both generations and a
 * lookup never crosses into another generation. IPv4 addresses take the first 4 bytes. */
struct weft_lpm_key {
	__u32 prefixlen; /* WEFT_KEY_HEADER_BITS + prefix length */
	__u8 gen;
	__u8 family;
	__u8 addr[16];
	__u8 pad[2]; /* zero; past every prefix length */
};

/* Value of the source and destination tries: a bitmap of slots. */
struct weft_slot_bits {
	__u64 w[WEFT_SLOT_WORDS];
};

/* One (rule, destination) slot: the rule's protocols and the destination's port range.
 * Index gen * WEFT_SLOTS + slot in the slot array. */
struct weft_slot {
	__u64 protos[4]; /* bit p % 64 of word p / 64: protocol p */
	__u16 port_first;
	__u16 port_last;
	__u32 pad;
};

/* Value of the local-nets trie. */
struct weft_local {
	__u32 present;
};

/* The tc program's configuration (array index 0). */
struct weft_tc_config {
	__u32 active_gen; /* 0 or 1: the generation packets are checked against */
	__u32 pad;
};

/* Capacity of the reverse-flow LRU hash (weft_flows). The userspace table holds 512; the
 * kernel's LRU evicts approximately (per-CPU free lists), so the map is four times larger to
 * keep at least the 512 most recent flows. */
#define WEFT_FLOW_ENTRIES 2048

/* Key of the reverse-flow map, as an inbound reply carries it: remote = the reply's source
 * (the outbound packet's destination), local = this node's side. Addresses are 16 bytes,
 * IPv4 written IPv4-mapped (::ffff:a.b.c.d); ports in host byte order. weft-filter's
 * FlowTable uses the same layout (weft-ebpf-common FlowKey). */
struct weft_flow_key {
	__u8 remote[16];
	__u8 local[16];
	__u16 remote_port;
	__u16 local_port;
	__u8 proto; /* 17 (UDP) or 132 (SCTP) */
	__u8 pad[3];
};

/* Value of the reverse-flow map (presence is what counts). */
struct weft_flow {
	__u32 seen;
};

/* Per-CPU counters of the tc program (array index). */
#define WEFT_TC_PASS 0
#define WEFT_TC_DROP_TOO_SHORT 1
#define WEFT_TC_DROP_BAD_VERSION 2
#define WEFT_TC_DROP_TRUNCATED 3
#define WEFT_TC_DROP_MALFORMED 4
#define WEFT_TC_DROP_UNKNOWN_PROTOCOL 5
#define WEFT_TC_DROP_FRAGMENT_OVERLAP 6
#define WEFT_TC_DROP_MULTICAST 7
#define WEFT_TC_DROP_LINK_LOCAL 8
#define WEFT_TC_DROP_NOT_LOCAL 9
#define WEFT_TC_DROP_NO_RULE 10
#define WEFT_TC_COUNTERS 11

/* ---- XDP junk and flood filter (acl_xdp.c) ------------------------------------------ */

/* The XDP program's configuration (array index 0). */
struct weft_xdp_config {
	__u16 listen_port; /* host order; 0: every datagram passes */
	__u8 under_load;   /* non-zero: rate-limit handshake initiations */
	__u8 pad[5];
};

/* Rate-limiter key: an IPv4 /32 or an IPv6 /64. */
struct weft_rl_key {
	__u8 family;
	__u8 pad[7];
	__u8 addr[16];
};

/* Rate-limiter state: a token bucket in nanoseconds of credit. */
struct weft_rl_entry {
	__u64 last_ns;
	__u64 tokens_ns;
};

/* Kernel WireGuard's ratelimiter: 20 initiations per second, bursts of 5. */
#define WEFT_RL_PER_SECOND 20
#define WEFT_RL_BURST 5
#define WEFT_RL_ENTRIES 8192

/* Per-CPU counters of the XDP program (array index). */
#define WEFT_XDP_PASS_OTHER 0     /* not UDP to the listen port, or not parsed */
#define WEFT_XDP_PASS_WIREGUARD 1
#define WEFT_XDP_PASS_STUN 2
#define WEFT_XDP_PASS_DISCO 3
#define WEFT_XDP_PASS_LARGE 4     /* GSO super-datagram or full-MTU datagram, untouched */
#define WEFT_XDP_DROP_JUNK 5      /* to the listen port but none of the above */
#define WEFT_XDP_DROP_RATE_LIMIT 6
#define WEFT_XDP_COUNTERS 7

/* The layouts weft-ebpf-common asserts too (sizes and offsets, in bytes). */
_Static_assert(sizeof(struct weft_lpm_key) == 24, "weft_lpm_key");
_Static_assert(__builtin_offsetof(struct weft_lpm_key, gen) == 4, "weft_lpm_key.gen");
_Static_assert(__builtin_offsetof(struct weft_lpm_key, addr) == 6, "weft_lpm_key.addr");
_Static_assert(sizeof(struct weft_slot_bits) == 32, "weft_slot_bits");
_Static_assert(sizeof(struct weft_slot) == 40, "weft_slot");
_Static_assert(__builtin_offsetof(struct weft_slot, port_first) == 32, "weft_slot.port_first");
_Static_assert(sizeof(struct weft_local) == 4, "weft_local");
_Static_assert(sizeof(struct weft_tc_config) == 8, "weft_tc_config");
_Static_assert(sizeof(struct weft_xdp_config) == 8, "weft_xdp_config");
_Static_assert(sizeof(struct weft_flow_key) == 40, "weft_flow_key");
_Static_assert(__builtin_offsetof(struct weft_flow_key, local) == 16, "weft_flow_key.local");
_Static_assert(__builtin_offsetof(struct weft_flow_key, remote_port) == 32,
	       "weft_flow_key.remote_port");
_Static_assert(__builtin_offsetof(struct weft_flow_key, proto) == 36, "weft_flow_key.proto");
_Static_assert(sizeof(struct weft_rl_key) == 24, "weft_rl_key");
_Static_assert(__builtin_offsetof(struct weft_rl_key, addr) == 8, "weft_rl_key.addr");
_Static_assert(sizeof(struct weft_rl_entry) == 16, "weft_rl_entry");

#endif
