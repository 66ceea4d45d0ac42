// SPDX-License-Identifier: MIT OR Apache-2.0
/* weft's tailnet packet filter as a tc program (clsact ingress or tcx on the weft TUN).
 *
 * It gives exactly the verdict of weft-filter's Filter::check_inbound (that crate's doc is the
 * specification; read decode.rs and matcher.rs there next to this file). Packets are read with
 * bpf_skb_load_bytes so that non-linear skbs (GSO packets written into the TUN) need no pull.
 *
 * Rules live in maps built by weft-filter's ebpf module (see ebpf/README.md):
 *   weft_src    LPM: source prefix   -> bitmap of the slots whose rule lists a containing prefix
 *   weft_dst    LPM: dest prefix     -> bitmap of the slots whose destination contains it
 *   weft_slots  array: slot          -> the rule's protocols and the destination's ports
 *   weft_local  LPM: local net       -> present
 * A packet's candidate slots are the AND of its two bitmaps; a bounded loop over those slots
 * checks protocol and port. Every key and index carries a generation; the active one is read
 * once per packet from weft_tc_cfg, so a rule update is one array write.
 *
 * weft_acl_out, on the TUN's egress (this node's outbound packets), records UDP and SCTP
 * flows in the LRU hash weft_flows; weft_acl accepts their replies without a rule
 * (Filter::check_outbound / check_inbound_with in weft-filter).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "weft_maps.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Bytes before the IP header: 0 on a TUN, 14 behind an Ethernet header. Set at load time. */
volatile const __u32 weft_l2_offset = 0;

/* The three tries differ only in their value type. */
#define WEFT_LPM_TRIE(value_type)                              \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);           \
		__uint(map_flags, BPF_F_NO_PREALLOC);          \
		__uint(max_entries, WEFT_LPM_ENTRIES);         \
		__type(key, struct weft_lpm_key);              \
		__type(value, value_type);                     \
	}

WEFT_LPM_TRIE(struct weft_slot_bits) weft_src SEC(".maps");
WEFT_LPM_TRIE(struct weft_slot_bits) weft_dst SEC(".maps");
WEFT_LPM_TRIE(struct weft_local) weft_local SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WEFT_SLOTS * WEFT_GENERATIONS);
	__type(key, __u32);
	__type(value, struct weft_slot);
} weft_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct weft_tc_config);
} weft_tc_cfg SEC(".maps");

/* Grace-period barrier; no program reads it. After each generation switch the loader stores
 * weft_barrier_token into its one slot: the kernel returns from an update of a map-of-maps only
 * after every BPF program that was running has finished (kernel/bpf/syscall.c,
 * maybe_wait_bpf_programs). So when an install returns, no packet is still being judged
 * against the previous generation, and the next install may clear it. */
#define WEFT_BARRIER_MAP                    \
	struct {                            \
		__uint(type, BPF_MAP_TYPE_ARRAY);   \
		__uint(max_entries, 1);     \
		__type(key, __u32);         \
		__type(value, __u32);       \
	}

WEFT_BARRIER_MAP weft_barrier_token SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, WEFT_BARRIER_MAP);
} weft_barrier SEC(".maps");

/* The reverse-flow cache: UDP and SCTP flows this node sent (recorded by weft_acl_out on
 * the TUN's egress), whose replies weft_acl accepts without a rule. An LRU hash: the kernel
 * evicts approximately least recently used entries when it needs room. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_FLOW_ENTRIES);
	__type(key, struct weft_flow_key);
	__type(value, struct weft_flow);
} weft_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WEFT_TC_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} weft_tc_stats SEC(".maps");

#define PROTO_ICMP 1
#define PROTO_IGMP 2
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_FRAGMENT 44
#define PROTO_ICMPV6 58
#define PROTO_TSMP 99
#define PROTO_SCTP 132

#define TCP_SYN 0x02
#define TCP_ACK 0x10

/* Smallest non-first fragment offset, in 8-byte blocks (RFC 1858: 60-byte IPv4 header plus
 * a 20-byte TCP header). */
#define MIN_FRAGMENT_BLOCKS 10

enum l4_kind {
	L4_LATER_FRAGMENT,
	L4_TCP,
	L4_PORTS,
	L4_ICMP,
	L4_TSMP,
	L4_OTHER,
};

/* What the filter reads from a packet (weft-filter's Decoded). */
struct decoded {
	__u8 family;
	__u8 protocol;
	__u8 kind;
	__u8 tcp_flags;
	__u8 icmp_full; /* the 8-byte ICMP header is there */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 pad;
	__u16 src_port;
	__u16 dst_port;
	__u8 src[16];
	__u8 dst[16];
};

static __always_inline int finish(__u32 counter)
{
	__u64 *c = bpf_map_lookup_elem(&weft_tc_stats, &counter);

	if (c)
		*c += 1;
	return counter == WEFT_TC_PASS ? TC_ACT_OK : TC_ACT_SHOT;
}

static __always_inline __u16 be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

/* The transport part shared by both families (weft-filter decode.rs `transport`).
 * Returns 0 or a drop counter. */
static __always_inline __u32 transport(struct __sk_buff *skb, struct decoded *d, __u32 body,
				       __u32 body_len)
{
	__u8 t[20];

	switch (d->protocol) {
	case 0:
	case 255:
		return WEFT_TC_DROP_UNKNOWN_PROTOCOL;
	case PROTO_TCP:
		if (body_len < 20)
			return WEFT_TC_DROP_TRUNCATED;
		if (bpf_skb_load_bytes(skb, body, t, 20))
			return WEFT_TC_DROP_TRUNCATED;
		if ((t[12] >> 4) < 5)
			return WEFT_TC_DROP_MALFORMED;
		if ((__u32)(t[12] >> 4) * 4 > body_len)
			return WEFT_TC_DROP_TRUNCATED;
		d->kind = L4_TCP;
		d->dst_port = be16(&t[2]);
		d->tcp_flags = t[13];
		return 0;
	case PROTO_UDP:
	case PROTO_SCTP:
		if (body_len < (d->protocol == PROTO_UDP ? 8 : 12))
			return WEFT_TC_DROP_TRUNCATED;
		if (bpf_skb_load_bytes(skb, body, t, 4))
			return WEFT_TC_DROP_TRUNCATED;
		d->kind = L4_PORTS;
		d->src_port = be16(&t[0]);
		d->dst_port = be16(&t[2]);
		return 0;
	case PROTO_TSMP:
		if (body_len < 7)
			return WEFT_TC_DROP_TRUNCATED;
		d->kind = L4_TSMP;
		return 0;
	default:
		d->kind = L4_OTHER;
		return 0;
	}
}

/* ICMPv4 in IPv4, ICMPv6 in IPv6: 4 bytes required, type and code read when all 8 are there. */
static __always_inline __u32 icmp(struct __sk_buff *skb, struct decoded *d, __u32 body,
				  __u32 body_len)
{
	__u8 t[2];

	if (body_len < 4)
		return WEFT_TC_DROP_TRUNCATED;
	d->kind = L4_ICMP;
	if (body_len >= 8) {
		if (bpf_skb_load_bytes(skb, body, t, 2))
			return WEFT_TC_DROP_TRUNCATED;
		d->icmp_full = 1;
		d->icmp_type = t[0];
		d->icmp_code = t[1];
	}
	return 0;
}

static __always_inline __u32 later_fragment(struct decoded *d, __u16 offset)
{
	if (offset < MIN_FRAGMENT_BLOCKS)
		return WEFT_TC_DROP_FRAGMENT_OVERLAP;
	d->kind = L4_LATER_FRAGMENT;
	return 0;
}

static __always_inline __u32 decode4(struct __sk_buff *skb, struct decoded *d, __u32 ip,
				     __u32 len)
{
	__u8 h[20];
	__u32 hl, total, body, body_len;
	__u16 frag;

	if (bpf_skb_load_bytes(skb, ip, h, 20))
		return WEFT_TC_DROP_TOO_SHORT;
	if ((h[0] & 0x0f) < 5)
		return WEFT_TC_DROP_MALFORMED;
	hl = (__u32)(h[0] & 0x0f) * 4;
	if (hl > len)
		return WEFT_TC_DROP_TRUNCATED;
	total = be16(&h[2]);
	if (total > len)
		return WEFT_TC_DROP_TRUNCATED;
	if (hl > total)
		return WEFT_TC_DROP_MALFORMED;
	body = ip + hl;
	body_len = total - hl;
	d->family = WEFT_FAMILY_V4;
	d->protocol = h[9];
	__builtin_memcpy(d->src, &h[12], 4);
	__builtin_memcpy(d->dst, &h[16], 4);
	frag = be16(&h[6]);
	if (frag & 0x1fff)
		return later_fragment(d, frag & 0x1fff);
	switch (d->protocol) {
	case PROTO_ICMP:
		return icmp(skb, d, body, body_len);
	case PROTO_IGMP:
		if (body_len < 8)
			return WEFT_TC_DROP_TRUNCATED;
		break;
	case PROTO_TSMP:
		if (frag & 0x2000)
			return WEFT_TC_DROP_UNKNOWN_PROTOCOL;
		break;
	}
	return transport(skb, d, body, body_len);
}

static __always_inline __u32 decode6(struct __sk_buff *skb, struct decoded *d, __u32 ip,
				     __u32 len)
{
	__u8 h[40];
	__u8 f[8];
	__u32 body, body_len;
	__u16 offset;

	if (len < 40)
		return WEFT_TC_DROP_TRUNCATED;
	if (bpf_skb_load_bytes(skb, ip, h, 40))
		return WEFT_TC_DROP_TRUNCATED;
	body_len = be16(&h[4]);
	if (40 + body_len > len)
		return WEFT_TC_DROP_TRUNCATED;
	body = ip + 40;
	d->family = WEFT_FAMILY_V6;
	d->protocol = h[6];
	__builtin_memcpy(d->src, &h[8], 16);
	__builtin_memcpy(d->dst, &h[24], 16);
	if (d->protocol == PROTO_FRAGMENT) {
		if (body_len < 8)
			return WEFT_TC_DROP_TRUNCATED;
		if (bpf_skb_load_bytes(skb, body, f, 8))
			return WEFT_TC_DROP_TRUNCATED;
		d->protocol = f[0];
		offset = be16(&f[2]) >> 3;
		body += 8;
		body_len -= 8;
		if (offset)
			return later_fragment(d, offset);
	}
	if (d->protocol == PROTO_ICMPV6)
		return icmp(skb, d, body, body_len);
	return transport(skb, d, body, body_len);
}

/* Step 3 of the specification: multicast and link-local destinations. */
static __always_inline __u32 destination_kind(const struct decoded *d)
{
	const __u8 *a = d->dst;
	int exempt = 1;

	if (d->family == WEFT_FAMILY_V6) {
		int mapped = a[10] == 0xff && a[11] == 0xff;

#pragma unroll
		for (int i = 0; i < 10; i++)
			if (a[i])
				mapped = 0;
		if (!mapped) {
			if (a[0] == 0xff)
				return WEFT_TC_DROP_MULTICAST;
			if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
				return WEFT_TC_DROP_LINK_LOCAL;
			return 0;
		}
		/* IPv4-mapped: judged as the IPv4 address, without the metadata exemption. */
		a = &d->dst[12];
		exempt = 0;
	}
	if ((a[0] & 0xf0) == 0xe0)
		return WEFT_TC_DROP_MULTICAST;
	if (a[0] == 169 && a[1] == 254 && !(exempt && a[2] == 169 && a[3] == 254))
		return WEFT_TC_DROP_LINK_LOCAL;
	return 0;
}

static __always_inline void lpm_key(struct weft_lpm_key *k, __u8 gen, const struct decoded *d,
				    const __u8 *addr)
{
	k->gen = gen;
	k->family = d->family;
	if (d->family == WEFT_FAMILY_V4) {
		k->prefixlen = WEFT_KEY_HEADER_BITS + 32;
		__builtin_memcpy(k->addr, addr, 4);
	} else {
		k->prefixlen = WEFT_KEY_HEADER_BITS + 128;
		__builtin_memcpy(k->addr, addr, 16);
	}
}

/* An address in its 16-byte flow-key form: IPv6 as is, IPv4 as ::ffff:a.b.c.d. */
static __always_inline void flow_addr(__u8 *out, const struct decoded *d, const __u8 *addr)
{
	if (d->family == WEFT_FAMILY_V4) {
		__builtin_memset(out, 0, 10);
		out[10] = 0xff;
		out[11] = 0xff;
		__builtin_memcpy(&out[12], addr, 4);
	} else {
		__builtin_memcpy(out, addr, 16);
	}
}

/* The flow key of a UDP or SCTP packet; `inbound`: the remote side is the source. */
static __always_inline void flow_key(struct weft_flow_key *k, const struct decoded *d,
				     int inbound)
{
	flow_addr(k->remote, d, inbound ? d->src : d->dst);
	flow_addr(k->local, d, inbound ? d->dst : d->src);
	k->remote_port = inbound ? d->src_port : d->dst_port;
	k->local_port = inbound ? d->dst_port : d->src_port;
	k->proto = d->protocol;
}

enum match_mode {
	MATCH_ANY,      /* ICMP: any rule with the source and the destination address */
	MATCH_PORT,     /* the protocol, and the port in range */
	MATCH_ALL_PORTS /* the protocol, and a destination with every port */
};

/* Whether a slot among `cand` (the AND of the source and destination bitmaps) allows the
 * packet. A bounded loop: WEFT_SLOTS iterations at most. */
static __always_inline int slots_allow(__u32 gen, const struct weft_slot_bits *cand, __u8 proto,
				       int mode, __u16 port)
{
#pragma unroll
	for (int w = 0; w < WEFT_SLOT_WORDS; w++) {
		__u64 bits = cand->w[w];

		if (!bits)
			continue;
		if (mode == MATCH_ANY)
			return 1;
		for (__u32 b = 0; b < 64; b++) {
			__u32 idx;
			struct weft_slot *s;

			if (!((bits >> b) & 1))
				continue;
			idx = gen * WEFT_SLOTS + (__u32)w * 64 + b;
			s = bpf_map_lookup_elem(&weft_slots, &idx);
			if (!s)
				continue;
			if (!((s->protos[(proto >> 6) & 3] >> (proto & 63)) & 1))
				continue;
			if (mode == MATCH_PORT) {
				if (s->port_first <= port && port <= s->port_last)
					return 1;
			} else if (s->port_first == 0 && s->port_last == 0xffff) {
				return 1;
			}
		}
	}
	return 0;
}

/* Steps 5 and 6: local nets, then the rules by protocol. Returns a counter. */
static __always_inline __u32 decide(const struct decoded *d)
{
	__u32 zero = 0;
	__u32 gen = 0;
	struct weft_tc_config *cfg;
	struct weft_lpm_key k = {};
	struct weft_slot_bits *sb, *db;
	struct weft_slot_bits cand;
	int mode = MATCH_PORT;

	cfg = bpf_map_lookup_elem(&weft_tc_cfg, &zero);
	if (cfg)
		gen = cfg->active_gen & 1;

	lpm_key(&k, gen, d, d->dst);
	if (!bpf_map_lookup_elem(&weft_local, &k))
		return WEFT_TC_DROP_NOT_LOCAL;

	switch (d->kind) {
	case L4_TSMP:
		return WEFT_TC_PASS;
	case L4_TCP:
		if ((d->tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
			return WEFT_TC_PASS;
		break;
	case L4_ICMP:
		if (d->icmp_full) {
			__u8 t = d->icmp_type;

			if (d->family == WEFT_FAMILY_V6) {
				if ((t == 129 && d->icmp_code == 0) || (t >= 1 && t <= 4))
					return WEFT_TC_PASS;
			} else if ((t == 0 && d->icmp_code == 0) || t == 3 || t == 11 || t == 12 ||
				   t == 18) {
				return WEFT_TC_PASS;
			}
		}
		mode = MATCH_ANY;
		break;
	case L4_OTHER:
		mode = MATCH_ALL_PORTS;
		break;
	case L4_PORTS: {
		/* A reply to a flow this node sent needs no rule (the lookup refreshes it). */
		struct weft_flow_key fk = {};

		flow_key(&fk, d, 1);
		if (bpf_map_lookup_elem(&weft_flows, &fk))
			return WEFT_TC_PASS;
		break;
	}
	default:
		break;
	}

	/* The destination bitmap is looked up with the same key (destination address). */
	db = bpf_map_lookup_elem(&weft_dst, &k);
	if (!db)
		return WEFT_TC_DROP_NO_RULE;
	lpm_key(&k, gen, d, d->src);
	sb = bpf_map_lookup_elem(&weft_src, &k);
	if (!sb)
		return WEFT_TC_DROP_NO_RULE;
#pragma unroll
	for (int w = 0; w < WEFT_SLOT_WORDS; w++)
		cand.w[w] = sb->w[w] & db->w[w];
	if (slots_allow(gen, &cand, d->protocol, mode, d->dst_port))
		return WEFT_TC_PASS;
	return WEFT_TC_DROP_NO_RULE;
}

/* No IP packet at all (nothing past the L2 offset): the empty-packet case, passed. */
#define NO_PACKET 0xffffffffu

/* Decodes the IP packet at `weft_l2_offset` into `d`: 0, NO_PACKET, or a drop counter. Shared
 * by the ingress judge and the egress flow recorder, so both see packets alike. */
static __always_inline __u32 decode_packet(struct __sk_buff *skb, struct decoded *d)
{
	__u32 ip = weft_l2_offset;
	__u32 len;
	__u8 b0;

	if (skb->len <= ip)
		return NO_PACKET;
	len = skb->len - ip;
	if (len < 20)
		return WEFT_TC_DROP_TOO_SHORT;
	if (bpf_skb_load_bytes(skb, ip, &b0, 1))
		return WEFT_TC_DROP_TOO_SHORT;
	switch (b0 >> 4) {
	case 4:
		return decode4(skb, d, ip, len);
	case 6:
		return decode6(skb, d, ip, len);
	default:
		return WEFT_TC_DROP_BAD_VERSION;
	}
}

static __always_inline __u32 check(struct __sk_buff *skb)
{
	struct decoded d = {};
	__u32 r = decode_packet(skb, &d);

	if (r == NO_PACKET)
		return WEFT_TC_PASS;
	if (r)
		return r;
	r = destination_kind(&d);
	if (r)
		return r;
	if (d.kind == L4_LATER_FRAGMENT)
		return WEFT_TC_PASS;
	return decide(&d);
}

SEC("classifier/weft_acl")
int weft_acl(struct __sk_buff *skb)
{
	return finish(check(skb));
}

/* The TUN's egress: packets the host routes into the tunnel, i.e. this node's outbound
 * traffic. Nothing is dropped or counted; a UDP or SCTP packet that decodes, is not a later
 * fragment and goes to neither a multicast nor a link-local destination records its flow
 * (weft-filter's Filter::check_outbound). */
SEC("classifier/weft_acl_out")
int weft_acl_out(struct __sk_buff *skb)
{
	struct decoded d = {};
	struct weft_flow_key fk = {};
	struct weft_flow seen = { .seen = 1 };
	__u32 r = decode_packet(skb, &d);

	if (r || destination_kind(&d) || d.kind != L4_PORTS)
		return TC_ACT_OK;
	flow_key(&fk, &d, 0);
	bpf_map_update_elem(&weft_flows, &fk, &seen, BPF_ANY);
	return TC_ACT_OK;
}
