// SPDX-License-Identifier: MIT OR Apache-2.0
/* weft's XDP program for the underlay interface: datagrams to the WireGuard listen port that
 * cannot be mesh traffic are dropped before they reach the socket, and while the data plane
 * says it is under load, handshake initiations are rate-limited per source address.
 *
 * What shares the port (tailscale-protocol.md §7.3 and §8): STUN (top two bits of byte 0
 * zero, byte 1 = 0x01, magic cookie at 4..8), disco (the 6-byte magic, at least 38 bytes),
 * and WireGuard (type 1-4 then three zero bytes; 148, 92 and 64 bytes exactly for types 1-3,
 * at least 32 for type 4). Everything else to the port is junk. Everything not UDP to the
 * port, fragments, IPv6 with extension headers, VLAN frames: passed, not looked at.
 * A datagram whose UDP length is past the frame (GSO super-datagram, multi-buffer frame) or
 * whose payload is at least WEFT_XDP_LARGE bytes is passed untouched: no valid handshake or
 * control message is that large, and data messages must never pay for this program.
 *
 * The rate limiter follows the kernel WireGuard module's (drivers/net/wireguard/ratelimiter.c):
 * a token bucket per source (/32 or /64) worth WEFT_RL_BURST initiations, refilled at
 * WEFT_RL_PER_SECOND, in an LRU hash so that a spoofed flood only evicts old entries.
 * Updates from several CPUs for one source may race; the cost is a few extra initiations.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "weft_maps.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* UDP payloads this large are passed untouched (well above every handshake and STUN size). */
#define WEFT_XDP_LARGE 1200

#define NS_PER_SEC 1000000000ULL
#define RL_COST (NS_PER_SEC / WEFT_RL_PER_SECOND)
#define RL_MAX (RL_COST * WEFT_RL_BURST)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct weft_xdp_config);
} weft_xdp_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_RL_ENTRIES);
	__type(key, struct weft_rl_key);
	__type(value, struct weft_rl_entry);
} weft_rl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WEFT_XDP_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} weft_xdp_stats SEC(".maps");

static __always_inline int finish(__u32 counter)
{
	__u64 *c = bpf_map_lookup_elem(&weft_xdp_stats, &counter);

	if (c)
		*c += 1;
	return counter >= WEFT_XDP_DROP_JUNK ? XDP_DROP : XDP_PASS;
}

static __always_inline __u16 be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

/* Whether an initiation from `key` is within its rate; charges it if so. */
static __always_inline int rate_ok(const struct weft_rl_key *key)
{
	__u64 now = bpf_ktime_get_ns();
	struct weft_rl_entry *e = bpf_map_lookup_elem(&weft_rl, key);
	struct weft_rl_entry fresh;
	__u64 tokens;

	if (!e) {
		fresh.last_ns = now;
		fresh.tokens_ns = RL_MAX - RL_COST;
		bpf_map_update_elem(&weft_rl, key, &fresh, BPF_ANY);
		return 1;
	}
	/* Another CPU may have stored a later time since `now` was read: then nothing has
	 * elapsed (an unsigned `now - last` would wrap and refill the bucket). */
	tokens = e->tokens_ns;
	if (now > e->last_ns)
		tokens += now - e->last_ns;
	if (tokens > RL_MAX)
		tokens = RL_MAX;
	if (now > e->last_ns)
		e->last_ns = now;
	if (tokens < RL_COST) {
		e->tokens_ns = tokens;
		return 0;
	}
	e->tokens_ns = tokens - RL_COST;
	return 1;
}

/* Whether the initiation at `p` (148 bytes) carries no mac2, i.e. no cookie: under load the
 * device answers it with a cookie reply only. Those are what this program rate-limits per
 * source; an initiation with a mac2 goes to userspace, which checks the cookie and then
 * rate-limits per *proven* source, as the kernel's WireGuard does. Limiting it here would let a
 * flood spoofing a peer's address drain that peer's bucket and lock it out. */
static __always_inline int mac2_zero(const __u8 *p, void *end)
{
	const __u8 *m = p + 132;
	__u8 any = 0;

	if ((void *)(m + 16) > end)
		return 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		any |= m[i];
	return any == 0;
}

/* The counter for one datagram to the listen port: `p` is its payload, `len` the payload
 * length from the UDP header (already known to lie inside the frame). */
static __always_inline __u32 classify(struct xdp_md *ctx, const __u8 *p, __u32 len,
				      const struct weft_rl_key *src, int under_load)
{
	void *end = (void *)(long)ctx->data_end;

	if (len >= WEFT_XDP_LARGE)
		return WEFT_XDP_PASS_LARGE;
	if (len < 20 || (void *)(p + 20) > end)
		return WEFT_XDP_DROP_JUNK;
	/* STUN binding request or success response. */
	if ((p[0] & 0xc0) == 0 && p[1] == 0x01 && p[4] == 0x21 && p[5] == 0x12 && p[6] == 0xa4 &&
	    p[7] == 0x42)
		return WEFT_XDP_PASS_STUN;
	/* Disco: "TS" then U+1F4AC, at least magic and sender key. */
	if (len >= 38 && p[0] == 'T' && p[1] == 'S' && p[2] == 0xf0 && p[3] == 0x9f &&
	    p[4] == 0x92 && p[5] == 0xac)
		return WEFT_XDP_PASS_DISCO;
	if (p[1] || p[2] || p[3])
		return WEFT_XDP_DROP_JUNK;
	switch (p[0]) {
	case 1:
		if (len != 148)
			return WEFT_XDP_DROP_JUNK;
		if (under_load && mac2_zero(p, end) && !rate_ok(src))
			return WEFT_XDP_DROP_RATE_LIMIT;
		return WEFT_XDP_PASS_WIREGUARD;
	case 2:
		return len == 92 ? WEFT_XDP_PASS_WIREGUARD : WEFT_XDP_DROP_JUNK;
	case 3:
		return len == 64 ? WEFT_XDP_PASS_WIREGUARD : WEFT_XDP_DROP_JUNK;
	case 4:
		return len >= 32 ? WEFT_XDP_PASS_WIREGUARD : WEFT_XDP_DROP_JUNK;
	default:
		return WEFT_XDP_DROP_JUNK;
	}
}

static __always_inline __u32 check(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct weft_rl_key src = {};
	struct weft_xdp_config *cfg;
	__u32 zero = 0;
	__u8 *eth = data;
	__u8 *udp;
	__u16 proto, udp_len;

	cfg = bpf_map_lookup_elem(&weft_xdp_cfg, &zero);
	if (!cfg || !cfg->listen_port)
		return WEFT_XDP_PASS_OTHER;
	if ((void *)(eth + ETH_HLEN) > end)
		return WEFT_XDP_PASS_OTHER;
	proto = be16(eth + 12);
	if (proto == ETH_P_IP) {
		__u8 *ip = eth + ETH_HLEN;
		__u32 hl;

		if ((void *)(ip + 20) > end)
			return WEFT_XDP_PASS_OTHER;
		if (ip[9] != 17 || (be16(ip + 6) & 0x3fff))
			return WEFT_XDP_PASS_OTHER; /* not UDP, or a fragment */
		hl = (__u32)(ip[0] & 0x0f) * 4;
		if (hl < 20 || hl > 60)
			return WEFT_XDP_PASS_OTHER;
		udp = ip + hl;
		src.family = WEFT_FAMILY_V4;
		__builtin_memcpy(src.addr, ip + 12, 4);
	} else if (proto == ETH_P_IPV6) {
		__u8 *ip = eth + ETH_HLEN;

		if ((void *)(ip + 40) > end)
			return WEFT_XDP_PASS_OTHER;
		if (ip[6] != 17)
			return WEFT_XDP_PASS_OTHER; /* not UDP, or extension headers */
		udp = ip + 40;
		src.family = WEFT_FAMILY_V6;
		__builtin_memcpy(src.addr, ip + 8, 8); /* the /64 */
	} else {
		return WEFT_XDP_PASS_OTHER;
	}
	if ((void *)(udp + 8) > end)
		return WEFT_XDP_PASS_OTHER;
	if (be16(udp + 2) != cfg->listen_port)
		return WEFT_XDP_PASS_OTHER;
	udp_len = be16(udp + 4);
	if (udp_len < 8)
		return WEFT_XDP_DROP_JUNK;
	/* A UDP length past this frame: a GSO super-datagram or a multi-buffer frame. */
	if ((void *)(udp + udp_len) > end || udp_len > 0xffff - 8)
		return WEFT_XDP_PASS_LARGE;
	return classify(ctx, udp + 8, udp_len - 8, &src, cfg->under_load);
}

SEC("xdp")
int weft_xdp(struct xdp_md *ctx)
{
	return finish(check(ctx));
}
