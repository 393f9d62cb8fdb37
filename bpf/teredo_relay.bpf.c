// SPDX-License-Identifier: MIT
/*
 * The Teredo relay's kernel fast path: the per-packet work for *trusted* peers, in two
 * programs sharing one peer map that the Python relay (teredonode/roles/relay.py, through
 * teredonode/fastpath/relay.py) fills and empties as its peer states change.
 *
 * Where each half sits, and why:
 *
 *   - teredo_relay_rx, XDP on the interfaces holding the relay's IPv4 addresses and on its
 *     native side (those holding its global IPv6 addresses), two branches by EtherType:
 *
 *     from_teredo: a Teredo datagram from a trusted peer's proven mapping is decapsulated
 *     and forwarded toward the native side at the driver (bpf_fib_lookup, then
 *     XDP_TX/XDP_REDIRECT), before the kernel allocates a socket buffer, queues it on the
 *     relay's socket, wakes Python and takes the packet back through the TUN.  The
 *     forwarding lookup is made as if the packet came in on the relay's TUN (that is where
 *     the Python path writes it), so the route, the forwarding switch, the MTU and the
 *     neighbour are the ones the kernel would use; anything the lookup does not answer
 *     with a complete next hop goes on to Python, which writes it to the TUN as before.
 *
 *     from_native: a native IPv6 packet to a trusted peer is encapsulated as it arrives,
 *     where the kernel would otherwise forward it into the TUN for teredo_relay_tx: the
 *     lookup the kernel makes for it (route, forwarding switch, the TUN's MTU) must
 *     answer "the TUN", and what the kernel answers itself (Time Exceeded for a hop limit
 *     of 1, Packet Too Big beyond the TUN's MTU, a hop-by-hop header) is left to it.  The
 *     hop limit is decremented as forwarding does, so the datagram is the one
 *     teredo_relay_tx (or Python) would have sent; the IPv4 route and neighbour toward the
 *     peer's mapping come from a second lookup, made as for a packet from the TUN (the
 *     control plane turns IPv4 forwarding on for the TUN alone, which the kernel requires
 *     for it; cfg->native says it did).  This skips the kernel's forwarding, the TUN's
 *     queue and the TC hook (docs/performance.md measures it), and, like from_teredo, the
 *     forward chain of netfilter.  A packet whose inner checksum is still partial (from
 *     a veth) goes on to the kernel and teredo_relay_tx, which can leave its completion
 *     to the outgoing interface.
 *
 *   - teredo_relay_tx, TC (tcx) egress on the relay's TUN: a native IPv6 packet the
 *     kernel has already forwarded into the TUN (hop limit decremented, MTU checked,
 *     netfilter's forward chain passed) is encapsulated toward its trusted peer's mapping
 *     and sent on with bpf_redirect_neigh instead of being read by Python.  It sees
 *     exactly the bytes Python would read from the TUN: what from_native leaves to the
 *     kernel, and everything where that branch does not run (an interface without the
 *     XDP program, a relay host sending itself).
 *
 * The checks, in the Python path's order (RFC 4380 section 5.4, the relay's RL-RX and
 * RL-TX rules; roles/relay.py datagramReceived, roles/tunnel.py fromPeer and fromHost):
 *
 *   rx: IPv4 without options, not a fragment, valid header checksum, UDP to the relay's
 *       port on one of its addresses, valid or absent UDP checksum (the kernel drops the
 *       rest before the socket); a bare IPv6 packet (no authentication or origin
 *       indication, no RFC 6081 trailers: the UDP payload is exactly the IPv6 packet),
 *       no hop-by-hop header (the kernel would act on it); a source in the Teredo prefix
 *       with a map entry whose mapping is the datagram's source address and port
 *       (RL-RX-02/03/04, case 1 of section 5.2.3); a destination the relay serves
 *       (RL-RX-05).  The entry is then heard, as the Python relay marks it for the same
 *       packets; a bubble goes on to Python from here, and so does a hop limit of 1 or
 *       less (the kernel answers it with Time Exceeded).
 *   tx: version 6, the packet exactly as long as its header says, a source the relay
 *       serves (host-foreign-source otherwise), a destination in the Teredo prefix with a
 *       map entry heard within the entry's validity (section 5.2.4 case 1, RL-TX-03).
 *       A super-packet (GRO on the native side merges a TCP flow's segments, and the
 *       kernel forwards them merged) is TCP with each segment within the TUN's MTU; it is
 *       encapsulated whole as a UDP tunnel packet (encapsulate_tunnel), and cut into the
 *       datagrams Python would have sent one by one where it leaves, under the condition
 *       the client's program states (teredo_client.bpf.c, "Segmentation": cfg->segments).
 *       Without it, the TUN cuts it and Python reads every segment.
 *   native (from_native): the tx checks, and the packet one the TUN would take (at most
 *       its MTU, hop limit above 1, no hop-by-hop header, routed into the TUN), with a
 *       complete inner checksum and a route and resolved neighbour toward the mapping.
 *
 * Everything else goes on untouched (XDP_PASS; on the TC hook to the next program, then the
 * kernel: NEXT), and the Python relay counts or answers it exactly as without these
 * programs: bubbles, unknown and untrusted peers, queues, mapping mismatches, ICMPv6 errors,
 * trailers, anything malformed.
 *
 * The encapsulated datagram is the one the relay's socket sends: from the relay's address
 * and port, TTL 64, DF clear (G-07), UDP checksum set.  Only the IPv4 identification
 * differs, as it differs between any two datagrams the kernel sends with DF clear.
 */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_PACKET 1280 /* the TUN's MTU (RELAY_MTU); longer never reaches the TUN */
#include "teredo_common.h"
#define MAX_LONGER 8
#define AF_INET 2
#define AF_INET6 10

/* Counter indices: teredonode.fastpath.relay.COUNTERS, in this order. */
enum {
	C_RECEIVED,  /* "received": datagrams on the relay's port handled here */
	C_DELIVERED, /* "delivered": decapsulated toward the native side */
	C_SENT,      /* "sent": encapsulated to a trusted peer */
	C_PASSED_RX, /* datagrams to the relay's port handed on to Python */
	C_PASSED_TX, /* TUN packets handed on to Python */
	C_SUPER,     /* super-packets: segmentation-offload packets encapsulated whole */
	C_NATIVE,    /* of "sent", encapsulated by the XDP program as they arrived (from_native) */
	C_COUNT,
};

struct longer {
	__u64 mask[2];
	__u64 net[2];
};

/* Filled by the control plane from RelaySettings and the host; enabled = 0 passes all. */
struct relay_config {
	__u32 enabled;
	__u32 tun_ifindex;
	__u32 out_ifindex; /* where encapsulated datagrams leave (the IPv4 route's device) */
	__u32 source;      /* network order: their IPv4 source */
	__u32 port;        /* network order in the low 16 bits: the relay's UDP port */
	__u32 prefix;      /* the Teredo prefix, as its 4 bytes lie in memory */
	__u64 valid_ns;    /* a trusted entry is valid this long after it was heard */
	__u32 n_locals;
	__u32 n_longer;
	__u32 locals[MAX_LOCALS]; /* network order: addresses the relay's socket receives on */
	__u8 first_byte[256];     /* served networks of at most 8 bits, by first byte */
	struct longer longer[MAX_LONGER];
	__u32 segments; /* out_ifindex completes partial checksums, and super-packets' segments */
	__u32 native;   /* from_native may encapsulate (the TUN forwards IPv4 for its lookups) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct relay_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/*
 * The interfaces carrying teredo_relay_rx, by ifindex: each one's MAC address (in the low six
 * bytes, as they lie in memory), written by the control plane as it attaches.  A frame is
 * the program's only when it is addressed to the interface it arrived on (the kernel drops
 * the others: another host's frames seen in promiscuous mode or through a macvlan), and a
 * forwarded one leaves only through one of these (Ethernet interfaces that take the
 * program's frames), never an L3 device or one without XDP.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} ifaces SEC(".maps");

/* Is ifindex one of the interfaces the programs' frames may leave by (ifaces)? */
static __always_inline int our_interface(__u32 ifindex)
{
	return bpf_map_lookup_elem(&ifaces, &ifindex) != NULL;
}

/* Trusted peers; max_entries is set from max-peers before loading. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct peer);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} peers SEC(".maps");

/*
 * The trusted peer a native packet (IPv6 header at v6, checked) is for, when heard within the
 * entry's validity at now (section 5.2.4 case 1, RL-TX-03); NULL otherwise.
 */
static __always_inline struct peer *heard_peer(const struct relay_config *cfg, const __u8 *v6, __u64 now)
{
	struct peer_key key;
	struct peer *peer;

	__builtin_memcpy(key.address, v6 + 24, 16);
	peer = bpf_map_lookup_elem(&peers, &key);
	if (!peer || now - peer->last_rx >= cfg->valid_ns)
		return NULL;
	return peer;
}

/* RL-RX-05 (tunnel serves): teredonode.roles.relay.servedBy, the same table and masks. */
static __always_inline int served(const struct relay_config *cfg, const __u8 *a)
{
	__u32 head;
	__u64 hi, lo;

	__builtin_memcpy(&head, a, 4);
	if (head == cfg->prefix || a[0] >= 0xfe)
		return 0;
	if (cfg->first_byte[a[0]])
		return 1;
	__builtin_memcpy(&hi, a, 8);
	__builtin_memcpy(&lo, a + 8, 8);
	for (int i = 0; i < MAX_LONGER; i++) {
		if (i >= cfg->n_longer)
			break;
		if ((hi & cfg->longer[i].mask[0]) == cfg->longer[i].net[0] &&
		    (lo & cfg->longer[i].mask[1]) == cfg->longer[i].net[1])
			return 1;
	}
	return 0;
}

/*
 * Up: a Teredo datagram to the relay's port (see the opening comment, "rx").
 */
static __always_inline int from_teredo(struct xdp_md *ctx, const struct relay_config *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *eth = data, *ip, *udp, *v6;
	struct bpf_fib_lookup fib = {};
	struct peer_key key;
	struct peer *peer;
	__u32 saddr, daddr, udp_len, plen, head;
	__u16 sport, dport;
	__u64 now;
	int rc, bubble;

	if ((void *)(eth + ETH_HLEN + IP_HLEN + UDP_HLEN + V6_HLEN) > data_end)
		return XDP_PASS;
	if (eth[12] != (ETH_P_IP >> 8) || eth[13] != (ETH_P_IP & 0xff) || (eth[0] & 1))
		return XDP_PASS;
	ip = eth + ETH_HLEN;
	if (ip[0] != 0x45 || ip[9] != 17 || (ip[6] & 0x3f) || ip[7])
		return XDP_PASS;
	udp = ip + IP_HLEN;
	__builtin_memcpy(&dport, udp + 2, 2);
	if (dport != (__u16)cfg->port)
		return XDP_PASS;
	__builtin_memcpy(&daddr, ip + 16, 4);
	if (!local_address(cfg->locals, cfg->n_locals, daddr))
		return XDP_PASS;

	/* To the relay's socket: from here on, handled here or counted as passed on. */
	udp_len = ((__u32)udp[4] << 8) | udp[5];
	if (((__u32)ip[2] << 8 | ip[3]) != IP_HLEN + udp_len)
		goto pass;
	if (ctx->data_end - ctx->data != ETH_HLEN + IP_HLEN + udp_len)
		goto pass;
	if (udp_len > MAX_PACKET + UDP_HLEN)
		goto pass;
	v6 = udp + UDP_HLEN;
	/* A bare IPv6 packet, nothing before (indicators) or after it (trailers). */
	plen = ((__u32)v6[4] << 8) | v6[5];
	if ((v6[0] >> 4) != 6 || udp_len != UDP_HLEN + V6_HLEN + plen)
		goto pass;
	if (v6[6] == 0) /* a hop-by-hop header */
		goto pass;
	bubble = plen == 0 && v6[6] == 59;
	if (fold(SUM_FIXED(ip, IP_HLEN)) != 0xffff)
		goto pass;
	if (udp[6] | udp[7]) {
		__u64 s = sum_bytes(udp, data_end, udp_len);

		if (s == ~0ULL)
			goto pass;
		s += *(__u32 *)(ip + 12) + *(__u32 *)(ip + 16) + bpf_htons(17) + bpf_htons(udp_len);
		if (fold(s) != 0xffff)
			goto pass;
	}
	/*
	 * Section 5.2.3 case 1: a trusted peer, from its proven mapping, to what we serve (a
	 * bubble's destination is not checked: it is never delivered).
	 */
	__builtin_memcpy(&head, v6 + 8, 4);
	if (head != cfg->prefix)
		goto pass;
	if (!bubble && !served(cfg, v6 + 24))
		goto pass;
	__builtin_memcpy(key.address, v6 + 8, 16);
	peer = bpf_map_lookup_elem(&peers, &key);
	if (!peer)
		goto pass;
	__builtin_memcpy(&saddr, ip + 12, 4);
	__builtin_memcpy(&sport, udp, 2);
	if (peer->ip != saddr || peer->port != sport)
		goto pass;
	/*
	 * Heard: the Python relay marks the peer heard for all of this, bubbles and what goes on
	 * to Python below included, so the entry's time moves here too: the tx half carries the
	 * peer's downstream packets only while it is recent, and the Python relay's own time
	 * never reaches the map.
	 */
	now = bpf_ktime_get_ns();
	refresh(&peer->last_rx, now);
	if (bubble)
		goto pass;
	if (v6[7] <= 1) /* the kernel sends Time Exceeded */
		goto pass;

	/* Forward as the kernel would from the TUN. */
	fib.family = AF_INET6;
	fib.l4_protocol = v6[6];
	fib.tot_len = V6_HLEN + plen;
	fib.ifindex = cfg->tun_ifindex;
	fib.flowinfo = *(__u32 *)v6 & bpf_htonl(0x0fffffff);
	__builtin_memcpy(fib.ipv6_src, v6 + 8, 16);
	__builtin_memcpy(fib.ipv6_dst, v6 + 24, 16);
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || fib.ifindex == cfg->tun_ifindex || !our_interface(fib.ifindex))
		goto pass;

	v6[7] -= 1;
	if (bpf_xdp_adjust_head(ctx, ENCAP))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + ETH_HLEN) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(eth, fib.dmac, 6);
	__builtin_memcpy(eth + 6, fib.smac, 6);
	eth[12] = ETH_P_IPV6 >> 8;
	eth[13] = ETH_P_IPV6 & 0xff;
	count(&counters, C_RECEIVED);
	count(&counters, C_DELIVERED);
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib.ifindex, 0);

pass:
	count(&counters, C_PASSED_RX);
	return XDP_PASS;
}

/*
 * Down, at once: a native IPv6 packet to a trusted peer, encapsulated as it arrives (see the
 * opening comment, "native"), or left to the kernel (XDP_PASS), which forwards it into the
 * TUN where teredo_relay_tx or Python takes it as before.  Nothing is counted as passed
 * here: what goes on is counted where it ends.
 */
static __always_inline int from_native(struct xdp_md *ctx, const struct relay_config *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *eth = data, *v6 = eth + ETH_HLEN;
	struct bpf_fib_lookup fib = {};
	struct peer *peer;
	__u32 head, plen, len, dst;
	__u64 now, s;
	__u16 csum;

	if ((void *)(v6 + V6_HLEN) > data_end || (eth[0] & 1))
		return XDP_PASS;
	__builtin_memcpy(&head, v6 + 24, 4);
	if (head != cfg->prefix)
		return XDP_PASS;
	plen = ((__u32)v6[4] << 8) | v6[5];
	len = V6_HLEN + plen;
	/* Longer than the TUN's MTU: the kernel answers Packet Too Big. */
	if ((v6[0] >> 4) != 6 || len > MAX_PACKET || ctx->data_end - ctx->data != ETH_HLEN + len)
		return XDP_PASS;
	/* A hop-by-hop header (the kernel acts on it); a hop limit the kernel answers. */
	if (v6[6] == 0 || v6[7] <= 1)
		return XDP_PASS;
	/*
	 * fromHost: a source we serve, then section 5.2.4 case 1, as teredo_relay_tx.  Sources in
	 * ::/8 (loopback, IPv4-mapped) the kernel drops on input before forwarding: its call.
	 */
	if (v6[8] == 0 || !served(cfg, v6 + 8))
		return XDP_PASS;
	now = bpf_ktime_get_ns();
	peer = heard_peer(cfg, v6, now);
	if (!peer)
		return XDP_PASS;

	/*
	 * Would the kernel forward it into the TUN?  The same lookup it makes for the packet as
	 * received here: route, forwarding switch, the TUN's MTU.
	 */
	fib.family = AF_INET6;
	fib.l4_protocol = v6[6];
	fib.tot_len = len;
	fib.ifindex = ctx->ingress_ifindex;
	fib.flowinfo = *(__u32 *)v6 & bpf_htonl(0x0fffffff);
	__builtin_memcpy(fib.ipv6_src, v6 + 8, 16);
	__builtin_memcpy(fib.ipv6_dst, v6 + 24, 16);
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) != BPF_FIB_LKUP_RET_SUCCESS ||
	    fib.ifindex != cfg->tun_ifindex)
		return XDP_PASS;
	/* Forwarded: the hop limit the Python path would read from the TUN. */
	v6[7] -= 1;
	s = sum_bytes(v6, data_end, len);
	if (s == ~0ULL || inner_checksum(v6, data_end, plen, &s) != INNER_COMPLETE) {
		v6[7] += 1;
		return XDP_PASS;
	}

	/*
	 * Where the relay's socket would send the datagram: the IPv4 route and neighbour toward
	 * the peer's mapping, looked up as for a packet from the TUN (which needs IPv4
	 * forwarding on the TUN, never on the relay's real interfaces: the control plane sets
	 * it there; the TUN never carries IPv4).
	 */
	__builtin_memcpy(&dst, &peer->ip, 4);
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AF_INET;
	fib.l4_protocol = 17;
	fib.tot_len = ENCAP + len;
	fib.ifindex = cfg->tun_ifindex;
	fib.ipv4_src = cfg->source;
	fib.ipv4_dst = dst;
	fib.sport = (__u16)cfg->port;
	fib.dport = peer->port;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS || fib.ifindex == cfg->tun_ifindex ||
	    !our_interface(fib.ifindex)) {
		v6[7] += 1;
		return XDP_PASS;
	}
	csum = udp_checksum(len, s, cfg->source, dst, (__u16)cfg->port, peer->port);
	if (bpf_xdp_adjust_head(ctx, -(int)ENCAP)) {
		/* No room: nothing moved, but the packet pointers must be read again. */
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		v6 = (__u8 *)data + ETH_HLEN;
		if ((void *)(v6 + V6_HLEN) <= data_end)
			v6[7] += 1;
		return XDP_PASS;
	}
	refresh(&peer->last_tx, now);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + ETH_HLEN + ENCAP) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(eth, fib.dmac, 6);
	__builtin_memcpy(eth + 6, fib.smac, 6);
	eth[12] = ETH_P_IP >> 8;
	eth[13] = ETH_P_IP & 0xff;
	fill_headers(eth + ETH_HLEN, UDP_HLEN + len, csum, cfg->source, dst, (__u16)cfg->port, peer->port, 64);
	count(&counters, C_SENT);
	count(&counters, C_NATIVE);
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib.ifindex, 0);
}

SEC("xdp")
int teredo_relay_rx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct relay_config *cfg;
	__u32 zero = 0, ifindex;
	__u64 *mac, own, to = 0;
	__u8 *eth = data;

	if ((void *)(eth + ETH_HLEN) > data_end)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !cfg->enabled)
		return XDP_PASS;
	/* Addressed to this interface (ifaces), as the kernel takes a frame. */
	ifindex = ctx->ingress_ifindex;
	mac = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!mac)
		return XDP_PASS;
	__builtin_memcpy(&own, mac, 8);
	__builtin_memcpy(&to, eth, 6);
	if (to != (own & 0xffffffffffffULL))
		return XDP_PASS;
	if (eth[12] == (ETH_P_IPV6 >> 8) && eth[13] == (ETH_P_IPV6 & 0xff))
		return cfg->native ? from_native(ctx, cfg) : XDP_PASS;
	return from_teredo(ctx, cfg);
}

SEC("tc")
int teredo_relay_tx(struct __sk_buff *skb)
{
	void *data, *data_end;
	__u8 *v6;
	const struct relay_config *cfg;
	struct peer *peer;
	__u32 zero = 0, len = skb->len, head, plen, pull = len, gso = skb->gso_size, segs = 1;
	__u64 now, s = 0;
	int rc, inner = INNER_COMPLETE;

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return NEXT;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !cfg->enabled)
		return NEXT;
	if (len < V6_HLEN)
		goto pass;
	if (gso) {
		/* A super-packet (see the opening comment): only its headers are read. */
		if (!cfg->segments || len > MAX_SUPER)
			goto pass;
		pull = V6_HLEN + 20;
	} else if (len > MAX_PACKET) {
		goto pass;
	}
	if (skb->data_end - skb->data < pull && bpf_skb_pull_data(skb, pull))
		goto pass;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	v6 = data;
	if ((void *)(v6 + V6_HLEN) > data_end)
		goto pass;
	plen = ((__u32)v6[4] << 8) | v6[5];
	if ((v6[0] >> 4) != 6 || len != V6_HLEN + plen)
		goto pass;
	/* fromHost: a source we serve, then section 5.2.4 case 1. */
	if (!served(cfg, v6 + 8))
		goto pass;
	__builtin_memcpy(&head, v6 + 24, 4);
	if (head != cfg->prefix)
		goto pass;
	now = bpf_ktime_get_ns();
	peer = heard_peer(cfg, v6, now);
	if (!peer)
		goto pass;

	if (gso) {
		segs = super_segments(skb, v6, data_end, plen, MAX_PACKET);
		if (!segs)
			goto pass;
		goto encapsulate;
	}

	/* The UDP checksum's sum over the IPv6 packet, before the headers move. */
	s = sum_bytes(v6, data_end, len);
	if (s == ~0ULL)
		goto pass;
	/*
	 * The inner checksum must be complete, or completed where the datagram leaves.  A packet
	 * the relay host sends itself, or one that crossed a veth, may still carry a partial one
	 * (checksum offload) that the kernel completes only after this program: it is carried
	 * as the client's program carries its own host's (teredo_client.bpf.c, "Partial
	 * checksums"), under the same condition as super-packets (cfg->segments); elsewhere it
	 * takes the Python path, which reads it completed from the TUN.  The sum over the whole
	 * packet is already here, so checking costs one header's sum.  "Partial" is judged by
	 * the field (the program cannot read the socket buffer's checksum state): a native
	 * sender that writes the pseudo-header's sum there itself gets a datagram whose UDP
	 * checksum its peer rejects, where the Python path would have delivered the same bad
	 * segment in a valid datagram; either way the segment is dropped.
	 */
	inner = inner_checksum(v6, data_end, plen, &s);
	if (inner == INNER_BAD || (inner == INNER_PARTIAL && !cfg->segments))
		goto pass;
encapsulate:
	refresh(&peer->last_tx, now);
	if (gso || inner == INNER_PARTIAL)
		rc = encapsulate_tunnel(skb, len, gso ? 0 : udp_checksum(len, s, cfg->source, peer->ip, (__u16)cfg->port, peer->port),
					cfg->source, peer->ip, (__u16)cfg->port, peer->port, 64);
	else
		rc = encapsulate(skb, len, s, cfg->source, peer->ip, (__u16)cfg->port, peer->port, 64);
	switch (rc) {
	case ENCAP_DONE:
		break;
	case ENCAP_UNTOUCHED:
		goto pass;
	default:
		return TC_ACT_SHOT;
	}
	count_n(&counters, C_SENT, segs);
	if (gso)
		count(&counters, C_SUPER);
	return bpf_redirect_neigh(cfg->out_ifindex, NULL, 0, 0);

pass:
	count(&counters, C_PASSED_TX);
	return NEXT;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
