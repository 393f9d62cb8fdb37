// SPDX-License-Identifier: MIT
/*
 * The Teredo server's kernel fast path (XDP): plain qualification Router Solicitations are
 * answered with a Router Advertisement right at the driver, everything else goes on to the
 * Python server (teredonode/roles/server.py) unchanged.
 *
 * Answered here: an IPv4/UDP datagram to port 3544 of the primary or secondary address
 * carrying, optionally behind an authentication indicator with no client identifier and no
 * authentication value (ID-len = AU-len = 0, i.e. not secure qualification), an IPv6 packet
 * and nothing after it:
 *   - version 6, payload length 8, next header 58, hop limit 255 (RFC 4861 section 6.1.1),
 *   - source fe80::/10, destination ff02::2 (SV-IN-4),
 *   - ICMPv6 type 133 code 0 with a valid checksum and no options,
 * from a global unicast source (SV-IN-3, the ranges the control plane fills in, hardened or
 * not) that is not one of our own addresses at port 3544 (SV-IN-8), on a server not
 * configured for secure qualification.  Those are exactly the checks the Python server
 * makes before its rate limit, in the same order, so anything this program answers the
 * Python server would have answered with the same bytes (the differential test in
 * tests/system/test_fastpath_server.py holds both to that).
 *
 * Everything else returns XDP_PASS untouched: IPv4 options, fragments, a bad IPv4 or UDP
 * checksum (the kernel drops those itself), an origin indication, trailers, options in the
 * RS, secure qualification, bubbles, echo, anything malformed.  The Python path then counts
 * it or answers it exactly as without this program.
 *
 * The answer (SV-RA-01..11): [authentication indicator echoing the nonce, confirmation 0]
 * origin indication of the RS's outer source, then the RA the control plane encoded once
 * (teredonode.fastpath.config builds it with the Python server's own encoder), with the
 * RS's link-local source as destination and the checksums completed here.  It leaves from
 * the address the RS reached, or from the other one when the RS's source has the cone bit
 * (RFC 4380 section 5.3.2, SV-RA-06), toward the RS's source address and port.
 *
 * Rate limits, as teredonode.security.RateLimiter states them: a token bucket per source
 * address (or its /24, rs-limit-prefix) in an LRU hash; a new key starts with rs-initial
 * tokens; an RS refused by its key takes nothing from the global RA budget; an RS that
 * passes its key then needs a token of the global budget.  Tokens are counted in
 * nano-tokens and rates in milli-tokens per second (the control plane refuses rates it
 * cannot express exactly enough).
 */

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "teredo_common.h"
#define TEREDO_PORT 3544
#define AUTH_LEN 13
#define ORIGIN_LEN 8
#define RS_LEN 48 /* IPv6 header + 8-byte RS */
#define RA_LEN 96 /* IPv6 header + RA 16 + prefix information 32 + MTU 8 */
#define GROWTH (ORIGIN_LEN + RA_LEN - RS_LEN)
#define MAX_RANGES 16

/*
 * Counter indices.  The names are teredonode.fastpath.COUNTERS, in this order (a unit test
 * compares the two); the first five are the Python server's own counter and drop names.
 */
enum {
	C_RECEIVED,               /* "received" */
	C_RS,                     /* "rs" */
	C_RA,                     /* "ra" */
	C_RATE_LIMITED_RS,        /* drop "rate-limited-rs" */
	C_RATE_LIMITED_RA_BUDGET, /* drop "rate-limited-ra-budget" */
	C_PASSED,                 /* to port 3544 of ours, handed on to the Python server */
	C_COUNT,
};

struct range {
	__u32 net;  /* host order */
	__u32 mask; /* host order */
};

/* Filled by the control plane from ServerSettings; enabled = 0 passes everything. */
struct fp_config {
	__u32 enabled;
	__u32 primary;   /* network order */
	__u32 secondary; /* network order */
	__u32 rs_mask;   /* host order: the bits of the source keying its RS bucket */
	__u64 rs_rate;   /* milli-tokens per second */
	__u64 rs_burst;  /* nano-tokens */
	__u64 rs_initial;
	__u64 rs_fill;   /* ns to fill an empty bucket: longer idle means full */
	__u64 ra_rate;
	__u64 ra_burst;
	__u64 ra_fill;
	__u32 ra_pseudo_sum; /* ICMPv6 sum of the RA: pseudo-header without dst, body, csum 0 */
	__u32 ra_packet_sum; /* sum of the 96 RA bytes with dst and checksum zero */
	__u32 n_ranges;      /* non-global IPv4 ranges in use */
	__u32 secure;        /* secure qualification: every RS goes to the Python server */
	struct range ranges[MAX_RANGES];
	__u8 ra[RA_LEN]; /* the RA, destination and checksum zero */
};

struct bucket {
	__u64 tokens; /* nano-tokens */
	__u64 stamp;  /* ns, bpf_ktime_get_ns */
};

/*
 * The global budget is shared by every CPU, so it is updated under a lock; the kernel
 * allows no lock in an LRU hash, and a per-source bucket raced by two CPUs at once can at
 * worst let one extra RS of that source through.
 */
struct locked_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	struct bucket b;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Per-source RS buckets; max_entries is set from max-sources before loading. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct bucket);
} rs_buckets SEC(".maps");

/* The global RA budget, one bucket, full when the control plane loads it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct locked_bucket);
} ra_budget SEC(".maps");

/* Sum of 16-bit big-endian words of n bytes (n even, known at compile time). */
#define WORDS(p, n)                                                                        \
	({                                                                                 \
		__u64 _s = 0;                                                              \
		_Pragma("unroll") for (int _i = 0; _i < (n); _i += 2)                      \
			_s += ((__u32)((const __u8 *)(p))[_i] << 8) | ((const __u8 *)(p))[_i + 1]; \
		_s;                                                                        \
	})

static __always_inline __u32 swap16(__u32 v)
{
	return ((v & 0xff) << 8) | (v >> 8);
}

/*
 * Refill a bucket lazily (tokens = min(burst, tokens + elapsed * rate)) and take a token
 * when one is there; the stamp moves to now either way, as in RateLimiter.check.
 */
static __always_inline int take(struct bucket *b, __u64 now, __u64 rate, __u64 burst, __u64 fill)
{
	__u64 tokens = b->tokens;

	if (now > b->stamp) {
		__u64 elapsed = now - b->stamp;

		if (elapsed >= fill)
			tokens = burst;
		else
			tokens += elapsed * rate / 1000;
		if (tokens > burst)
			tokens = burst;
	}
	if (now > b->stamp)
		b->stamp = now;
	if (tokens < 1000000000ULL) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - 1000000000ULL;
	return 1;
}

static __always_inline int global_unicast(const struct fp_config *cfg, __u32 ip)
{
	__u32 n = cfg->n_ranges;

	for (int i = 0; i < MAX_RANGES; i++) {
		if (i >= n)
			break;
		if ((ip & cfg->ranges[i].mask) == cfg->ranges[i].net)
			return 0;
	}
	return 1;
}

/* 0: pass, 1: over the source's limit, 2: over the global budget. */
static __always_inline int rs_limit(const struct fp_config *cfg, __u32 source)
{
	__u32 key = source & cfg->rs_mask;
	__u32 zero = 0;
	__u64 now = bpf_ktime_get_ns();
	struct bucket *b = bpf_map_lookup_elem(&rs_buckets, &key);
	struct locked_bucket *budget;
	int ok;

	if (!b) {
		struct bucket fresh = {};

		fresh.tokens = cfg->rs_initial;
		fresh.stamp = now;
		bpf_map_update_elem(&rs_buckets, &key, &fresh, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&rs_buckets, &key);
		if (!b)
			return 1;
	}
	if (!take(b, now, cfg->rs_rate, cfg->rs_burst, cfg->rs_fill))
		return 1;
	budget = bpf_map_lookup_elem(&ra_budget, &zero);
	if (!budget)
		return 2;
	bpf_spin_lock(&budget->lock);
	ok = take(&budget->b, now, cfg->ra_rate, cfg->ra_burst, cfg->ra_fill);
	bpf_spin_unlock(&budget->lock);
	return ok ? 0 : 2;
}

SEC("xdp")
int teredo_server(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	const struct fp_config *cfg;
	__u8 *eth = data, *ip, *udp, *payload, *v6;
	__u8 mac_dst[6], mac_src[6], nonce[8], llsrc[16];
	__u32 saddr, daddr, out_addr, plen, udp_len;
	__u16 sport;
	int index, has_auth, verdict, cone;

	if ((void *)(eth + ETH_HLEN + IP_HLEN + UDP_HLEN) > data_end)
		return XDP_PASS;
	if (eth[12] != (ETH_P_IP >> 8) || eth[13] != (ETH_P_IP & 0xff) || (eth[0] & 1))
		return XDP_PASS;
	ip = eth + ETH_HLEN;
	if (ip[0] != 0x45 || ip[9] != 17)
		return XDP_PASS;
	if ((ip[6] & 0x3f) || ip[7]) /* MF or a fragment offset */
		return XDP_PASS;
	udp = ip + IP_HLEN;
	if (udp[2] != (TEREDO_PORT >> 8) || udp[3] != (TEREDO_PORT & 0xff))
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !cfg->enabled)
		return XDP_PASS;
	__builtin_memcpy(&daddr, ip + 16, 4);
	if (daddr == cfg->primary)
		index = 0;
	else if (daddr == cfg->secondary)
		index = 1;
	else
		return XDP_PASS;

	/* From here on the datagram is ours: answered, dropped by a limit, or passed on. */
	payload = udp + UDP_HLEN;
	udp_len = ((__u32)udp[4] << 8) | udp[5];
	if (((__u32)ip[2] << 8 | ip[3]) != IP_HLEN + udp_len)
		goto pass;
	if (udp_len == UDP_HLEN + AUTH_LEN + RS_LEN)
		has_auth = 1;
	else if (udp_len == UDP_HLEN + RS_LEN)
		has_auth = 0;
	else
		goto pass;
	if (ctx->data_end - ctx->data != ETH_HLEN + IP_HLEN + udp_len)
		goto pass;
	/* The verifier wants constant bounds: check the longer form, then pick. */
	if (has_auth) {
		if ((void *)(payload + AUTH_LEN + RS_LEN) > data_end)
			goto pass;
		/* 00 01, ID-len 0, AU-len 0: a nonce only (no secure qualification). */
		if (payload[0] != 0 || payload[1] != 1 || payload[2] != 0 || payload[3] != 0)
			goto pass;
		__builtin_memcpy(nonce, payload + 4, 8);
		v6 = payload + AUTH_LEN;
	} else {
		if ((void *)(payload + RS_LEN) > data_end)
			goto pass;
		v6 = payload;
	}
	if ((void *)(v6 + RS_LEN) > data_end)
		goto pass;
	/* IPv4 header checksum (the stack would drop a bad one). */
	if (fold(WORDS(ip, IP_HLEN)) != 0xffff)
		goto pass;
	/* UDP checksum, when there is one. */
	if (udp[6] | udp[7]) {
		__u64 s = WORDS(ip + 12, 8) + 17 + udp_len + WORDS(udp, UDP_HLEN);

		if (has_auth) /* 61 bytes: 60 as words, the last one padded */
			s += WORDS(payload, AUTH_LEN + RS_LEN - 1) + ((__u32)payload[AUTH_LEN + RS_LEN - 1] << 8);
		else
			s += WORDS(payload, RS_LEN);
		if (fold(s) != 0xffff)
			goto pass;
	}
	/* The IPv6 RS (SV-IN-4, RFC 4861 section 6.1.1). */
	if ((v6[0] >> 4) != 6 || v6[4] != 0 || v6[5] != 8 || v6[6] != 58 || v6[7] != 255)
		goto pass;
	if (v6[8] != 0xfe || (v6[9] & 0xc0) != 0x80)
		goto pass;
	if (v6[24] != 0xff || v6[25] != 0x02 || v6[39] != 0x02)
		goto pass;
#pragma unroll
	for (int i = 26; i < 39; i++)
		if (v6[i])
			goto pass;
	if (v6[40] != 133 || v6[41] != 0)
		goto pass;
	if (fold(WORDS(v6 + 8, 32) + 8 + 58 + WORDS(v6 + 40, 8)) != 0xffff)
		goto pass;
	/* SV-IN-8 and SV-IN-3, in the Python server's order. */
	__builtin_memcpy(&saddr, ip + 12, 4);
	__builtin_memcpy(&sport, udp, 2);
	if ((saddr == cfg->primary || saddr == cfg->secondary) && sport == bpf_htons(TEREDO_PORT))
		goto pass;
	if (!global_unicast(cfg, bpf_ntohl(saddr)))
		goto pass;
	/* Secure qualification is the Python server's (keys, HMAC, expiry). */
	if (cfg->secure)
		goto pass;

	count(&counters, C_RECEIVED);
	verdict = rs_limit(cfg, bpf_ntohl(saddr));
	if (verdict) {
		count(&counters, verdict == 1 ? C_RATE_LIMITED_RS : C_RATE_LIMITED_RA_BUDGET);
		return XDP_DROP;
	}
	count(&counters, C_RS);

	__builtin_memcpy(llsrc, v6 + 8, 16);
	__builtin_memcpy(mac_dst, eth, 6);
	__builtin_memcpy(mac_src, eth + 6, 6);
	cone = llsrc[8] & 0x80;
	out_addr = (cone ? 1 - index : index) ? cfg->secondary : cfg->primary;

	/*
	 * Every byte of the answer is written anew, so the frame grows at its head: drivers
	 * with native XDP guarantee XDP_PACKET_HEADROOM (256 bytes) there, while room at the
	 * tail depends on the driver (veth has little for frames from local sockets).
	 */
	if (bpf_xdp_adjust_head(ctx, -GROWTH))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + ETH_HLEN + IP_HLEN + UDP_HLEN) > data_end)
		return XDP_ABORTED;
	ip = eth + ETH_HLEN;
	udp = ip + IP_HLEN;
	payload = udp + UDP_HLEN;
	plen = (has_auth ? AUTH_LEN : 0) + ORIGIN_LEN + RA_LEN;

	/* The RA: template, destination, ICMPv6 checksum. */
	{
		__u8 *ra, *origin;
		__u32 dst_sum = (__u32)WORDS(llsrc, 16), icmp, body;

		if (has_auth) {
			if ((void *)(payload + AUTH_LEN + ORIGIN_LEN + RA_LEN) > data_end)
				return XDP_ABORTED;
			payload[0] = 0;
			payload[1] = 1;
			payload[2] = 0;
			payload[3] = 0;
			__builtin_memcpy(payload + 4, nonce, 8);
			payload[12] = 0;
			origin = payload + AUTH_LEN;
		} else {
			if ((void *)(payload + ORIGIN_LEN + RA_LEN) > data_end)
				return XDP_ABORTED;
			origin = payload;
		}
		if ((void *)(origin + ORIGIN_LEN + RA_LEN) > data_end)
			return XDP_ABORTED;
		origin[0] = 0;
		origin[1] = 0;
		origin[2] = ((__u8 *)&sport)[0] ^ 0xff;
		origin[3] = ((__u8 *)&sport)[1] ^ 0xff;
		origin[4] = ((__u8 *)&saddr)[0] ^ 0xff;
		origin[5] = ((__u8 *)&saddr)[1] ^ 0xff;
		origin[6] = ((__u8 *)&saddr)[2] ^ 0xff;
		origin[7] = ((__u8 *)&saddr)[3] ^ 0xff;
		ra = origin + ORIGIN_LEN;
		__builtin_memcpy(ra, cfg->ra, RA_LEN);
		__builtin_memcpy(ra + 24, llsrc, 16);
		icmp = ~fold((__u64)cfg->ra_pseudo_sum + dst_sum) & 0xffff;
		ra[42] = icmp >> 8;
		ra[43] = icmp & 0xff;

		/* The UDP checksum, from the parts' sums. */
		body = fold((__u64)WORDS(origin, ORIGIN_LEN) + cfg->ra_packet_sum + dst_sum + icmp);
		{
			__u32 udp_total = UDP_HLEN + plen, csum;
			__u64 s = WORDS(&out_addr, 4) + WORDS(&saddr, 4) + 17 + udp_total;
			s += TEREDO_PORT + bpf_ntohs(sport) + udp_total;
			if (has_auth)
				s += 0x0001 + WORDS(nonce, 8) + swap16(body);
			else
				s += body;
			csum = ~fold(s) & 0xffff;
			if (!csum)
				csum = 0xffff;
			udp[0] = TEREDO_PORT >> 8;
			udp[1] = TEREDO_PORT & 0xff;
			__builtin_memcpy(udp + 2, &sport, 2);
			udp[4] = udp_total >> 8;
			udp[5] = udp_total & 0xff;
			udp[6] = csum >> 8;
			udp[7] = csum & 0xff;

			/* IPv4: DF, TTL 64, from the answering address to the RS's source. */
			ip[0] = 0x45;
			ip[1] = 0;
			ip[2] = (IP_HLEN + udp_total) >> 8;
			ip[3] = (IP_HLEN + udp_total) & 0xff;
			ip[4] = 0;
			ip[5] = 0;
			ip[6] = 0x40;
			ip[7] = 0;
			ip[8] = 64;
			ip[9] = 17;
			ip[10] = 0;
			ip[11] = 0;
			__builtin_memcpy(ip + 12, &out_addr, 4);
			__builtin_memcpy(ip + 16, &saddr, 4);
			csum = ~fold(WORDS(ip, IP_HLEN)) & 0xffff;
			ip[10] = csum >> 8;
			ip[11] = csum & 0xff;
		}
	}
	__builtin_memcpy(eth, mac_src, 6);
	__builtin_memcpy(eth + 6, mac_dst, 6);
	eth[12] = ETH_P_IP >> 8;
	eth[13] = ETH_P_IP & 0xff;
	count(&counters, C_RA);
	return XDP_TX;

pass:
	count(&counters, C_PASSED);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
