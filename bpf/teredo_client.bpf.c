// SPDX-License-Identifier: MIT
/*
 * The Teredo client's kernel fast path: the per-packet work for *trusted* peers, in two
 * programs sharing one peer map that the Python client (teredonode/roles/client.py, through
 * teredonode/fastpath/client.py) fills and empties as its peer states change.  The relay's
 * programs (teredo_relay.bpf.c) are the model; what differs is where a decapsulated packet
 * goes (to this host, not onward) and whose address the checks use (the client's own
 * Teredo address, not the networks a relay serves).
 *
 * Where each half sits, and why:
 *
 *   - teredo_client_rx, TC (tcx) ingress on the interfaces holding the client's IPv4
 *     address: a datagram from a trusted peer's proven mapping to the client's port is
 *     decapsulated and redirected into the *ingress* of the client's TUN
 *     (bpf_redirect(tun, BPF_F_INGRESS)).  The host's stack then receives it exactly as it
 *     receives what the Python client writes to the TUN: same bytes, same input interface
 *     (the firewall's "iif", the socket's IPV6_PKTINFO, rp checks), same local delivery,
 *     without the socket queue, the Python wake-up, and the TUN write.  XDP would save the
 *     socket buffer's allocation, but cannot hand a packet to another device's ingress:
 *     an XDP rewrite passed up the IPv4 interface would reach the stack as received there,
 *     which a firewall matching the TUN would see differently.  What does differ: the
 *     TUN's own rx counters (the kernel counts a TUN's rx in its write path, which the
 *     redirect skips), and the packet's mark and priority are cleared as for any
 *     packet crossing devices.
 *
 *   - teredo_client_tx, TC (tcx) egress on the client's TUN: a packet the host sends from
 *     the client's Teredo address to a trusted peer heard within the entry's validity is
 *     encapsulated toward the peer's mapping from the client's own address and port (the
 *     5-tuple the NAT already maps for the Python socket) and sent out of the interface
 *     toward the server with bpf_redirect_neigh, instead of being read by Python.
 *
 * The checks, in the Python path's order (RFC 4380 sections 5.2.3 and 5.2.4; roles/client.py
 * datagramReceived, roles/tunnel.py fromPeer and fromHost):
 *
 *   rx: IPv4 without options, not a fragment, valid header checksum, UDP to the client's
 *       port on one of its addresses, a UDP checksum that is valid, absent, or the partial
 *       one a local sender leaves to offload (what the kernel's socket accepts); a bare IPv6
 *       packet (no authentication or origin indication, no RFC 6081 trailers), no
 *       hop-by-hop header; a destination that is the client's own Teredo address
 *       (CL-RX-02); a source with a map entry whose mapping is the datagram's source
 *       address and port (section 5.2.3 case 1): the entry is then heard, as the Python
 *       client marks it for anything from there.  Bubbles go on to Python, and so do
 *       ICMPv6 echo replies from native peers: they may answer a pending relay re-check.
 *   tx: version 6, the packet exactly as long as its header says and at most the map's MTU
 *       (a segmentation-offload super-packet: TCP, each segment within it), a source that is the client's address
 *       (host-foreign-source otherwise), a destination with a map entry heard within the
 *       entry's validity (section 5.2.4 case 1): 30 s, or the relay silence after which
 *       the Python client re-checks a native peer's relay.
 *
 * Everything else goes on untouched (to the next TC program, then the kernel), and the
 * Python client counts or answers it exactly as without these programs.
 *
 * The encapsulated datagram is the one the client's socket sends: from its address and
 * port, the host's default TTL, DF clear (G-07), UDP checksum set.  Only the IPv4
 * identification differs, as it differs between any two datagrams the kernel sends with DF
 * clear.
 *
 * Partial checksums.  A TCP segment the host sends still carries the partial checksum (the
 * pseudo-header's sum) that the kernel completes after this program, when the TUN, which
 * does no offload, transmits it.  Encapsulated as an ordinary packet, it would keep that
 * state with nothing to say it is the *inner* checksum's: everything on the way would
 * treat it as the outer UDP checksum's (a NAT it crosses before anything completes it would
 * rewrite a complete one as if it were partial; a device would complete the wrong one).  So such a packet is
 * encapsulated as a UDP tunnel packet (encapsulate_tunnel), as the kernel's own tunnels send
 * it: marked encapsulated, with the UDP checksum computed over the value the inner
 * checksum will have, which the outgoing device completes (or the kernel, in software,
 * where the device cannot).  That holds where the datagram leaves through the outgoing
 * interface itself, the same condition as for super-packets below (cfg->segments): over
 * a veth that offloads checksums nothing would complete it, and such a packet takes the
 * Python path, which reads it completed from the TUN.
 *
 * Segmentation.  The host's TCP hands the TUN super-packets of many segments (software GSO,
 * whatever the device offers), which the kernel would cut into segments only after this
 * program, when the TUN transmits.  A super-packet to a trusted peer is encapsulated whole
 * as a UDP tunnel packet (encapsulate_tunnel), marked as such, so that the outgoing
 * interface, or the next device that cannot take it whole, cuts it into exactly the
 * datagrams the Python path would send one by one: the host pays for one packet's way
 * through its stack per super-packet instead of one per segment.  Each segment's inner
 * checksum is completed where it is cut, in hardware or software, except by a veth that
 * offloads checksums: it hands the segments to another stack on the host still partial.
 * So super-packets are carried when the control plane found the outgoing interface
 * computing checksums in software or backed by a device (cfg->segments,
 * teredonode.fastpath.offloads).  Those datagrams carry no UDP checksum (see
 * encapsulate_tunnel); "sent" counts each of them.
 */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_PACKET 1500 /* the largest TUN MTU a Router Advertisement sets */
#include "teredo_common.h"

/* Counter indices: teredonode.fastpath.client.COUNTERS, in this order. */
enum {
	C_RECEIVED,  /* "received": datagrams on the client's port handled here */
	C_DELIVERED, /* "delivered": decapsulated to the host */
	C_SENT,      /* "sent": encapsulated to a trusted peer */
	C_PASSED_RX, /* datagrams to the client's port handed on to Python */
	C_PASSED_TX, /* TUN packets handed on to Python */
	C_SUPER,     /* super-packets: segmentation-offload packets encapsulated whole */
	C_COUNT,
};

/* Filled by the control plane; enabled = 0 passes all. */
struct client_config {
	__u32 enabled;
	__u32 tun_ifindex;
	__u32 out_ifindex; /* where encapsulated datagrams leave (the route toward the server) */
	__u32 source;      /* network order: their IPv4 source */
	__u32 port;        /* network order in the low 16 bits: the client's UDP port */
	__u32 prefix;      /* the Teredo prefix, as its 4 bytes lie in memory */
	__u32 ttl;         /* the host's default TTL, as the socket sends */
	__u32 mtu;         /* the TUN's MTU: longer packets are not carried */
	__u64 valid_ns;    /* a trusted entry is valid this long after it was heard */
	__u64 native_ns;   /* a native peer's, until its relay is re-checked */
	__u8 address[16];  /* the client's Teredo address */
	__u32 n_locals;
	__u32 locals[MAX_LOCALS]; /* network order: addresses the client's socket receives on */
	__u32 segments;           /* out_ifindex completes partial checksums, and super-packets */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct client_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Trusted peers; max_entries is set from max-peers before loading. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct peer_key);
	__type(value, struct peer);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} peers SEC(".maps");

static __always_inline int same16(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

SEC("tc")
int teredo_client_rx(struct __sk_buff *skb)
{
	void *data, *data_end;
	__u8 *eth, *ip, *udp, *v6;
	struct peer_key key;
	struct peer *peer;
	const struct client_config *cfg;
	__u32 zero = 0, saddr, daddr, udp_len, plen, head, len = skb->len;
	__u16 sport, dport;
	__u64 now;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return NEXT;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !cfg->enabled)
		return NEXT;
	if (len < ETH_HLEN + ENCAP + V6_HLEN || len > ETH_HLEN + ENCAP + MAX_PACKET)
		return NEXT;
	if (skb->data_end - skb->data < len && bpf_skb_pull_data(skb, len))
		return NEXT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + ETH_HLEN + ENCAP + V6_HLEN) > data_end)
		return NEXT;
	if (eth[12] != (ETH_P_IP >> 8) || eth[13] != (ETH_P_IP & 0xff))
		return NEXT;
	ip = eth + ETH_HLEN;
	if (ip[0] != 0x45 || ip[9] != 17 || (ip[6] & 0x3f) || ip[7])
		return NEXT;
	udp = ip + IP_HLEN;
	__builtin_memcpy(&dport, udp + 2, 2);
	if (dport != (__u16)cfg->port)
		return NEXT;
	__builtin_memcpy(&daddr, ip + 16, 4);
	if (!local_address(cfg->locals, cfg->n_locals, daddr))
		return NEXT;

	/* To the client's socket: from here on, handled here or counted as passed on. */
	udp_len = ((__u32)udp[4] << 8) | udp[5];
	if (((__u32)ip[2] << 8 | ip[3]) != IP_HLEN + udp_len)
		goto pass;
	if (len != ETH_HLEN + IP_HLEN + udp_len)
		goto pass;
	v6 = udp + UDP_HLEN;
	/* A bare IPv6 packet, nothing before (indicators) or after it (trailers). */
	plen = ((__u32)v6[4] << 8) | v6[5];
	if ((v6[0] >> 4) != 6 || udp_len != UDP_HLEN + V6_HLEN + plen)
		goto pass;
	if (v6[6] == 0) /* a hop-by-hop header */
		goto pass;
	if (fold(SUM_FIXED(ip, IP_HLEN)) != 0xffff)
		goto pass;
	if (udp[6] | udp[7]) {
		__u64 s = sum_bytes(udp, data_end, udp_len), pseudo;

		if (s == ~0ULL)
			goto pass;
		pseudo = *(__u32 *)(ip + 12) + *(__u32 *)(ip + 16) + bpf_htons(17) + bpf_htons(udp_len);
		if (fold(s + pseudo) != 0xffff) {
			/*
			 * A sender on this host or across a veth leaves the checksum to an offload
			 * that never runs: the field holds the pseudo-header's sum, and the
			 * kernel's socket accepts the datagram unverified.  So do we.
			 */
			if (*(__u16 *)(udp + 6) != (__u16)fold(pseudo))
				goto pass;
		}
	}
	/* CL-RX-02: to our own address; section 5.2.3 case 1: a trusted peer, from its mapping. */
	if (!same16(v6 + 24, cfg->address))
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
	 * Heard: the Python client marks a trusted peer heard for whatever comes from its
	 * mapping (case 1), so the entry's time moves here even for what goes on to Python.
	 */
	now = bpf_ktime_get_ns();
	refresh(&peer->last_rx, now);
	if (plen == 0 && v6[6] == 59) /* a bubble */
		goto pass;
	__builtin_memcpy(&head, v6 + 8, 4);
	if (head != cfg->prefix && v6[6] == 58 && plen > 0) {
		/* An echo reply from a native peer: maybe the answer to our relay re-check. */
		if ((void *)(v6 + V6_HLEN + 1) > data_end || v6[V6_HLEN] == 129)
			goto pass;
	}

	/* IPv4 becomes IPv6 (20 bytes more after the Ethernet header), then 48 go. */
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0))
		goto pass;
	if (bpf_skb_adjust_room(skb, -(ENCAP + V6_HLEN - IP_HLEN), BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT; /* the packet is no longer whole */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN > data_end)
		return TC_ACT_SHOT;
	((__u8 *)data)[12] = ETH_P_IPV6 >> 8;
	((__u8 *)data)[13] = ETH_P_IPV6 & 0xff;
	count(&counters, C_RECEIVED);
	count(&counters, C_DELIVERED);
	return bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS);

pass:
	count(&counters, C_PASSED_RX);
	return NEXT;
}

SEC("tc")
int teredo_client_tx(struct __sk_buff *skb)
{
	void *data, *data_end;
	__u8 *v6;
	const struct client_config *cfg;
	struct peer_key key;
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
		/* A TCP super-packet (see the opening comment): only its headers are read. */
		if (!cfg->segments || len > MAX_SUPER)
			goto pass;
		pull = V6_HLEN + 20;
	} else if (len > MAX_PACKET || len > cfg->mtu) {
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
	/* fromHost: our own source, then section 5.2.4 case 1. */
	if (!same16(v6 + 8, cfg->address))
		goto pass;
	__builtin_memcpy(key.address, v6 + 24, 16);
	peer = bpf_map_lookup_elem(&peers, &key);
	if (!peer)
		goto pass;
	now = bpf_ktime_get_ns();
	__builtin_memcpy(&head, v6 + 24, 4);
	if (now - peer->last_rx >= (head == cfg->prefix ? cfg->valid_ns : cfg->native_ns))
		goto pass;

	if (gso) {
		segs = super_segments(skb, v6, data_end, plen, cfg->mtu);
		if (!segs)
			goto pass;
		goto encapsulate;
	}

	s = sum_bytes(v6, data_end, len);
	if (s == ~0ULL)
		goto pass;
	/*
	 * The inner checksum, complete or about to be (see the opening comment on partial
	 * checksums): a partial one is carried where the outgoing interface completes it.
	 */
	inner = inner_checksum(v6, data_end, plen, &s);
	if (inner == INNER_BAD || (inner == INNER_PARTIAL && !cfg->segments))
		goto pass;
encapsulate:
	refresh(&peer->last_tx, now);
	if (gso || inner == INNER_PARTIAL)
		rc = encapsulate_tunnel(skb, len, gso ? 0 : udp_checksum(len, s, cfg->source, peer->ip, (__u16)cfg->port, peer->port),
					cfg->source, peer->ip, (__u16)cfg->port, peer->port, (__u8)cfg->ttl);
	else
		rc = encapsulate(skb, len, s, cfg->source, peer->ip, (__u16)cfg->port, peer->port, (__u8)cfg->ttl);
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
