/* SPDX-License-Identifier: MIT */
/*
 * What the relay's and the client's fast paths (teredo_relay.bpf.c, teredo_client.bpf.c)
 * share: header sizes and the ones' complement arithmetic of their checksums.  The
 * including program defines MAX_PACKET (the longest IPv6 packet it carries) first.
 *
 * Built with each program (teredonode/fastpath/build.py compiles the .bpf.c, which finds
 * this file beside it); a wheel ships it beside the sources, and the cached object's name
 * hashes it with them (teredonode/fastpath/program.py), so a change here rebuilds both.
 */

#ifndef TEREDO_COMMON_H
#define TEREDO_COMMON_H

#ifndef MAX_PACKET
#error "define MAX_PACKET before including teredo_common.h"
#endif

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IP_HLEN 20
#define UDP_HLEN 8
#define V6_HLEN 40
#define ENCAP (IP_HLEN + UDP_HLEN)

static __always_inline __u32 fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u32)sum;
}

/*
 * The ones' complement sum of len bytes at start (len at most MAX_PACKET + UDP_HLEN),
 * loaded in host order: folded, it is the byte-swapped network-order sum, which is what a
 * host-order store of its complement writes correctly.  ~0 when the bytes are not all
 * inside the packet.
 */
static __always_inline __u64 sum_bytes(void *start, void *data_end, __u32 len)
{
	__u64 s = 0;
	__u32 off, rem;

	for (__u32 i = 0; i < (MAX_PACKET + UDP_HLEN) / 4; i++) {
		off = i * 4;
		if (off + 4 > len)
			break;
		if (start + off + 4 > data_end)
			return ~0ULL;
		s += *(__u32 *)(start + off);
	}
	off = len & ~3U & 0x7ff;
	rem = len & 3;
	if (rem >= 2) {
		if (start + off + 2 > data_end)
			return ~0ULL;
		s += *(__u16 *)(start + off);
		off += 2;
	}
	if (rem & 1) {
		off &= 0x7ff;
		if (start + off + 1 > data_end)
			return ~0ULL;
		s += *(__u8 *)(start + off); /* [b, 0] as a host-order word */
	}
	return s;
}

/* The same sum for n bytes (a multiple of 4, known at compile time) already bounds-checked. */
#define SUM_FIXED(p, n)                                                          \
	({                                                                       \
		__u64 _s = 0;                                                    \
		_Pragma("unroll") for (int _i = 0; _i < (n); _i += 4)            \
			_s += *(__u32 *)((const __u8 *)(p) + _i);                \
		_s;                                                              \
	})

#endif
