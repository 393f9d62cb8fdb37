/* SPDX-License-Identifier: MIT */
/*
 * What the fast paths (teredo_server.bpf.c, teredo_relay.bpf.c, teredo_client.bpf.c) share,
 * written once: header sizes, the ones' complement arithmetic of their checksums, their
 * counters, and, for the relay's and the client's, the local-address check, the peer entry
 * their control planes read and write (teredonode.fastpath.relay.PEER), the encapsulation
 * of their TC egress programs and those programs' verdict for what is not theirs.  A program
 * that sums whole packets (sum_bytes) defines MAX_PACKET, the longest IPv6 packet it
 * carries, before including this file.
 *
 * Built with each program (teredonode/fastpath/build.py compiles the .bpf.c, which finds
 * this file beside it); a wheel ships it beside the sources, and the cached object's name
 * hashes it with them (teredonode/fastpath/program.py), so a change here rebuilds all three.
 */

#ifndef TEREDO_COMMON_H
#define TEREDO_COMMON_H

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IP_HLEN 20
#define UDP_HLEN 8
#define V6_HLEN 40
#define ENCAP (IP_HLEN + UDP_HLEN)
#define MAX_LOCALS 8 /* IPv4 addresses a relay's or client's socket receives on */

/*
 * A TC program's verdict for a packet that is not its own: on to the next program on the
 * hook, then the kernel (TCX_NEXT, the value every header has as TC_ACT_UNSPEC).  TC_ACT_OK would
 * end the tcx chain there, so a host's other TC programs (container networking, firewalls)
 * attached after ours would never see the packet.
 */
#define NEXT TC_ACT_UNSPEC

/*
 * Add n (count: one) to entry index of a per-CPU counter array.  The map is each program's own (its
 * size is its counter enum), so it is passed in; inlined, the verifier sees the map itself.
 */
static __always_inline void count_n(void *counters, __u32 index, __u64 n)
{
	__u64 *value = bpf_map_lookup_elem(counters, &index);

	if (value)
		*value += n;
}

static __always_inline void count(void *counters, __u32 index)
{
	count_n(counters, index, 1);
}

/* Is daddr (network order) one of the first n of locals, the addresses the socket receives on? */
static __always_inline int local_address(const __u32 *locals, __u32 n, __u32 daddr)
{
	for (int i = 0; i < MAX_LOCALS; i++) {
		if (i >= n)
			break;
		if (locals[i] == daddr)
			return 1;
	}
	return 0;
}

/* A trusted peer of the relay or the client: the peer map's key and value. */
struct peer_key {
	__u8 address[16];
};

struct peer {
	__u32 ip;   /* network order */
	__u16 port; /* network order */
	__u16 pad;
	__u64 last_rx; /* bpf_ktime_get_ns */
	__u64 last_tx;
	__u64 synced; /* the later of the two when the control plane last read them */
};

/*
 * Move one of a peer's times (last_rx, last_tx) up to now, but at most once per
 * TIME_GRAIN_NS.  Every write takes the entry's cache line away from the other CPUs, and a
 * busy peer may be served on several at once (a NIC spreads datagrams over queues): written
 * for every packet, the line would move between those CPUs with each one.  (On the
 * two-vCPU machine of benchmarks/fastpath_scaling.py the difference is within its noise.)
 * The times only ever decide 30 s and 3 s validities, where a millisecond does not count.
 */
#define TIME_GRAIN_NS 1000000ULL

static __always_inline void refresh(__u64 *time, __u64 now)
{
	if (now >= *time + TIME_GRAIN_NS)
		*time = now;
}

/* End-around carry to 16 bits: the result is in [1, 0xffff] for any non-zero input. */
static __always_inline __u32 fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u32)sum;
}

#ifdef MAX_PACKET
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
#endif

/* The same sum for n bytes (a multiple of 4, known at compile time) already bounds-checked. */
#define SUM_FIXED(p, n)                                                          \
	({                                                                       \
		__u64 _s = 0;                                                    \
		_Pragma("unroll") for (int _i = 0; _i < (n); _i += 4)            \
			_s += *(__u32 *)((const __u8 *)(p) + _i);                \
		_s;                                                              \
	})

/* What encapsulate() did: the packet is sent on, left for the Python path, or broken. */
enum { ENCAP_DONE, ENCAP_UNTOUCHED, ENCAP_BROKEN };

/*
 * Fill the IPv4 and UDP headers at ip (ENCAP bytes the caller checked) of an encapsulated
 * datagram: from source:sport to dst:dport (network order), TTL ttl, DF clear (G-07), a
 * random identification, UDP length ulen and checksum csum (as stored).
 */
static __always_inline void fill_headers(__u8 *ip, __u32 ulen, __u16 csum, __u32 source, __u32 dst, __u16 sport,
					 __u16 dport, __u8 ttl)
{
	__u8 *udp = ip + IP_HLEN;

	ip[0] = 0x45;
	ip[1] = 0;
	ip[2] = (IP_HLEN + ulen) >> 8;
	ip[3] = (IP_HLEN + ulen) & 0xff;
	*(__u16 *)(ip + 4) = (__u16)bpf_get_prandom_u32();
	ip[6] = 0; /* G-07: DF clear */
	ip[7] = 0;
	ip[8] = ttl;
	ip[9] = 17;
	ip[10] = 0;
	ip[11] = 0;
	*(__u32 *)(ip + 12) = source;
	*(__u32 *)(ip + 16) = dst;
	*(__u16 *)(ip + 10) = ~fold(SUM_FIXED(ip, IP_HLEN)) & 0xffff;
	*(__u16 *)udp = sport;
	*(__u16 *)(udp + 2) = dport;
	*(__u16 *)(udp + 4) = bpf_htons(ulen);
	*(__u16 *)(udp + 6) = csum;
}

/*
 * The Ethernet type and fill_headers() of the datagram skb now holds behind room for an
 * Ethernet header.  0 when the headers are not in the packet.
 */
static __always_inline int write_headers(struct __sk_buff *skb, __u32 ulen, __u16 csum, __u32 source,
					 __u32 dst, __u16 sport, __u16 dport, __u8 ttl)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;

	if (data + ETH_HLEN + ENCAP > data_end)
		return 0;
	((__u8 *)data)[12] = ETH_P_IP >> 8;
	((__u8 *)data)[13] = ETH_P_IP & 0xff;
	fill_headers(data + ETH_HLEN, ulen, csum, source, dst, sport, dport, ttl);
	return 1;
}

/*
 * The UDP checksum (as stored: 0 written as 0xffff) of the datagram from source:sport to
 * dst:dport (network order) carrying len bytes whose sum_bytes is sum.
 */
static __always_inline __u16 udp_checksum(__u32 len, __u64 sum, __u32 source, __u32 dst, __u16 sport,
					  __u16 dport)
{
	__u32 ulen = UDP_HLEN + len, csum;

	sum += source + dst + bpf_htons(17) + bpf_htons(ulen); /* pseudo-header */
	sum += sport + dport + bpf_htons(ulen);                 /* UDP header */
	csum = ~fold(sum) & 0xffff;
	return csum ? (__u16)csum : 0xffff;
}

/* What inner_checksum() found. */
enum { INNER_BAD, INNER_COMPLETE, INNER_PARTIAL };

#ifdef MAX_PACKET
/*
 * The IPv6 packet's own checksum (v6 its header, plen its payload length, *sum the
 * sum_bytes of the whole packet, all in the packet): INNER_COMPLETE when it is valid, or
 * for fragments and ESP, which carry none; INNER_PARTIAL when the field still holds only
 * the pseudo-header's sum that the kernel leaves to checksum offload, to be completed after
 * the program (a packet the host sends itself, or one that crossed a veth), and *sum is
 * then the sum the packet will have once it is; INNER_BAD otherwise (really corrupt, or a
 * next header that may hide a checksum behind an extension header), for the Python path,
 * which sends exactly what it reads.
 */
static __always_inline int inner_checksum(const __u8 *v6, void *data_end, __u32 plen, __u64 *sum)
{
	__u8 nh = v6[6];
	__u64 payload, pseudo;
	__u32 at, final;
	__u16 field;

	if (nh == 44 || nh == 50)
		return INNER_COMPLETE;
	if (nh != 6 && nh != 17 && nh != 58)
		return INNER_BAD;
	at = nh == 6 ? 16 : nh == 17 ? 6 : 2;
	if (plen < at + 2 || (void *)(v6 + V6_HLEN + at + 2) > data_end)
		return INNER_BAD;
	payload = *sum - SUM_FIXED(v6, V6_HLEN);
	pseudo = SUM_FIXED(v6 + 8, 32) + bpf_htons(nh) + bpf_htonl(plen);
	if (fold(payload + pseudo) == 0xffff)
		return INNER_COMPLETE;
	field = *(__u16 *)(v6 + V6_HLEN + at);
	if (field != (__u16)fold(pseudo))
		return INNER_BAD;
	final = ~fold(payload - field + pseudo) & 0xffff;
	if (!final)
		final = 0xffff; /* as the kernel completes it (equal to 0 in any ones' complement sum) */
	*sum = *sum - field + final;
	return INNER_PARTIAL;
}
#endif

/*
 * Turn the IPv6 packet skb holds (len bytes, sum its sum_bytes) into the UDP datagram the
 * role's socket would send for it: from source:sport to dst:dport (network order), TTL ttl,
 * DF clear (G-07), a random identification, the UDP checksum set, behind an Ethernet header
 * for bpf_redirect_neigh (which strips it and lets the neighbour code write the real one;
 * the TUN's packets have none).  ENCAP_UNTOUCHED: no room could be made, the packet is as
 * it was; ENCAP_BROKEN: it is no longer whole and can only be dropped.
 */
static __always_inline int encapsulate(struct __sk_buff *skb, __u32 len, __u64 sum, __u32 source,
				       __u32 dst, __u16 sport, __u16 dport, __u8 ttl)
{
	__u16 csum = udp_checksum(len, sum, source, dst, sport, dport);

	/* Room for IPv4 and UDP: 48 bytes in front, then 20 taken back as IPv6 becomes IPv4. */
	if (bpf_skb_adjust_room(skb, ENCAP + (V6_HLEN - IP_HLEN), BPF_ADJ_ROOM_MAC, 0))
		return ENCAP_UNTOUCHED;
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0))
		return ENCAP_BROKEN; /* the room is there but the packet is no longer whole */
	if (bpf_skb_change_head(skb, ETH_HLEN, 0))
		return ENCAP_BROKEN;
	if (!write_headers(skb, UDP_HLEN + len, csum, source, dst, sport, dport, ttl))
		return ENCAP_BROKEN;
	return ENCAP_DONE;
}

/*
 * The longest segmentation-offload packet (a "super-packet" of several TCP segments) that
 * encapsulate_tunnel() takes: the outer IPv4 length field must still hold it.
 */
#define MAX_SUPER (0xffff - ENCAP)

/*
 * The number of segments of the super-packet skb holds (v6 its IPv6 header, plen its
 * payload length, both checked, and at least V6_HLEN + 20 bytes pulled), when it is one
 * encapsulate_tunnel() takes: TCP with no extension header, each segment within mtu.
 * 0 otherwise.
 */
static __always_inline __u32 super_segments(struct __sk_buff *skb, const __u8 *v6, void *data_end, __u32 plen,
					    __u32 mtu)
{
	__u32 gso = skb->gso_size, segs = skb->gso_segs, thl;

	if (v6[6] != 6 || (void *)(v6 + V6_HLEN + 20) > data_end)
		return 0;
	thl = (v6[V6_HLEN + 12] >> 4) * 4;
	if (thl < 20 || plen < thl || V6_HLEN + thl + gso > mtu)
		return 0;
	return segs ? segs : (plen - thl + gso - 1) / gso;
}

/*
 * Encapsulate the way encapsulate() does, but as a UDP tunnel packet: the kernel marks it
 * encapsulated (BPF_F_ADJ_ROOM_ENCAP_*: inner headers, skb->encapsulation and, for a
 * segmentation-offload packet, SKB_GSO_UDP_TUNNEL), so that what is left to offload is done
 * on the *inner* packet where the datagram leaves, by the device or in software, as for
 * the kernel's own UDP tunnels.  Two cases, len bytes each:
 *
 *   - a TCP super-packet (csum 0): cut into the datagrams the socket would have sent for
 *     each segment, each with its own IPv4 length, identification and checksum and its
 *     inner checksum completed.  The segment size is kept (FIXED_GSO): the caller checked
 *     that each segment fits the TUN's MTU, which is what the Python path would have sent
 *     one by one.  Only the UDP checksum differs from the socket's: segmentation of a
 *     plain UDP tunnel leaves it as written, so it is absent (0), which IPv4 allows
 *     (RFC 768) and every receiver's socket accepts.
 *   - one packet whose inner checksum is still partial (inner_checksum(): INNER_PARTIAL):
 *     csum is the UDP checksum over the packet as it will be once that is completed (the
 *     kernel's own tunnels' "local checksum offload"), so the datagram leaves exactly as the
 *     socket would have sent the completed packet.
 */
static __always_inline int encapsulate_tunnel(struct __sk_buff *skb, __u32 len, __u16 csum, __u32 source,
					      __u32 dst, __u16 sport, __u16 dport, __u8 ttl)
{
	if (bpf_skb_adjust_room(skb, ENCAP, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
					BPF_F_ADJ_ROOM_FIXED_GSO))
		return ENCAP_UNTOUCHED;
	if (bpf_skb_change_head(skb, ETH_HLEN, 0))
		return ENCAP_BROKEN;
	if (!write_headers(skb, UDP_HLEN + len, csum, source, dst, sport, dport, ttl))
		return ENCAP_BROKEN;
	return ENCAP_DONE;
}

#endif
