/* SPDX-License-Identifier: MIT */
/*
 * The benchmarks' load generator and sink (benchmarks/xdpgen.py), two XDP programs.
 *
 * xdpgen_tx runs under BPF_PROG_TEST_RUN in live-frames mode: the kernel repeats it on
 * copies of one template frame and transmits what it returns XDP_TX for out of the
 * interface named in the run's context, with no socket and no socket buffer.  Per frame
 * it writes a step tag and a sequence number (so answers can be told from late ones) and,
 * optionally, varies a 16-bit field (a source port) over a span, fixing one ones'
 * complement checksum that covers them incrementally (RFC 1624).  Frames are recycled
 * without being re-initialised, so every update reads the field's current value.
 *
 * xdpgen_sink is attached (native XDP) to the generator's interface: it counts and drops
 * the answers (frames of the configured kind), telling this step's from late ones by the
 * tag, keeps one sample for the benchmark to decode, and passes everything else (ARP, ND)
 * to the stack.  Being an XDP program on that veth, it also lets the peer's native XDP_TX
 * reach this side (a veth receives XDP frames only where NAPI runs).
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_OFFSET 1024
#define SAMPLE 256
#define TEMPLATE 256

struct gen_config {
	__u32 tag;         /* network order, written at tag_offset */
	__u16 tag_offset;  /* 0: none */
	__u16 seq_offset;  /* 4-byte big-endian sequence number; 0: none */
	__u16 vary_offset; /* 16-bit field set to vary_base + seq % vary_span; 0: none */
	__u16 vary_base;   /* host order */
	__u16 vary_span;   /* 0: not varied */
	__u16 csum_offset; /* checksum covering tag, seq and vary fields; 0: none */
	__u16 csum_udp;    /* 1: a UDP checksum (0 is written as 0xffff) */
	__u16 restore;     /* 1: rewrite each frame from this CPU's template first */
};

/*
 * The frame to restore, per CPU.  A recycled frame holds whatever its last user left: the
 * generator's own stamps (harmless), or, when the answers come back to the test run's
 * page pool while the run goes on (the receiver's NAPI on the same CPU), the receiving
 * program's rewrite of it (an RA in place of the RS, a decapsulated datagram).
 */
struct template {
	__u32 len;
	__u8 data[TEMPLATE];
};

struct sink_config {
	__u16 ethertype;    /* network order: the kind of frame that is an answer */
	__u16 udp_sport;    /* network order; 0: any (for IPv4 UDP answers) */
	__u16 tag_offset;   /* where an answer carries the tag; 0: every answer is current */
	__u16 proto_offset; /* a byte an answer must hold (a next header); 0: no such check */
	__u32 tag;
	__u32 proto;        /* the byte's value */
};

struct sample {
	__u32 len;
	__u32 taken;
	__u8 data[SAMPLE];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} gen_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_config);
} sink_config SEC(".maps");

/* 0: sequence number (generator); 1: answers of this step; 2: stale answers; 3: passed */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sample);
} sample SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct template);
} template SEC(".maps");

static __always_inline void bump(__u32 index)
{
	__u64 *n = bpf_map_lookup_elem(&counts, &index);

	if (n)
		*n += 1;
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), on 16-bit words in memory order. */
static __always_inline __u16 csum_replace(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + (__u32) new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* Write a 16-bit word at off; the checksum's new value. */
static __always_inline int put16(void *data, void *data_end, __u32 off, __u16 value, __u16 *check)
{
	__u16 *p;

	off &= MAX_OFFSET - 1;
	p = data + off;
	if ((void *)(p + 1) > data_end)
		return -1;
	*check = csum_replace(*check, *p, value);
	*p = value;
	return 0;
}

SEC("xdp")
int xdpgen_tx(struct xdp_md *ctx)
{
	void *data, *data_end;
	__u32 zero = 0, seq;
	struct gen_config *c = bpf_map_lookup_elem(&gen_config, &zero);
	__u64 *counter = bpf_map_lookup_elem(&counts, &zero);
	__u16 check = 0, *ck = 0;

	if (!c || !counter)
		return XDP_ABORTED;
	if (c->restore) {
		struct template *t = bpf_map_lookup_elem(&template, &zero);
		__u64 len;

		if (!t)
			return XDP_ABORTED;
		len = t->len;
		if (len > TEMPLATE)
			len = TEMPLATE;
		/* Keep the clamped value in the register passed on, so the verifier sees its bound. */
		asm volatile("" : "+r"(len));
		if (len < 1 || len > TEMPLATE || bpf_xdp_store_bytes(ctx, 0, t->data, len))
			return XDP_ABORTED;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	seq = (__u32)*counter;
	*counter += 1;
	if (c->csum_offset) {
		ck = data + (c->csum_offset & (MAX_OFFSET - 1));
		if ((void *)(ck + 1) > data_end)
			return XDP_ABORTED;
		check = *ck;
	}
	if (c->tag_offset) {
		if (put16(data, data_end, c->tag_offset, c->tag & 0xffff, &check) ||
		    put16(data, data_end, c->tag_offset + 2, c->tag >> 16, &check))
			return XDP_ABORTED;
	}
	if (c->seq_offset) {
		__u32 be = bpf_htonl(seq);

		if (put16(data, data_end, c->seq_offset, be & 0xffff, &check) ||
		    put16(data, data_end, c->seq_offset + 2, be >> 16, &check))
			return XDP_ABORTED;
	}
	if (c->vary_offset && c->vary_span) {
		if (put16(data, data_end, c->vary_offset, bpf_htons(c->vary_base + seq % c->vary_span), &check))
			return XDP_ABORTED;
	}
	if (ck) {
		ck = data + (c->csum_offset & (MAX_OFFSET - 1));
		if ((void *)(ck + 1) > data_end)
			return XDP_ABORTED;
		if (c->csum_udp && check == 0)
			check = 0xffff;
		*ck = check;
	}
	return XDP_TX;
}

SEC("xdp")
int xdpgen_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	struct sink_config *c = bpf_map_lookup_elem(&sink_config, &zero);
	struct sample *s;
	__u64 len;

	if (!c || (void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != c->ethertype)
		return XDP_PASS;
	if (c->udp_sport) {
		/* IPv4 without options, UDP: the source port at 14 + 20. */
		__u8 *ip = (void *)(eth + 1);
		__u16 *sport = (void *)(ip + 20);

		if ((void *)(sport + 1) > data_end || ip[0] != 0x45 || ip[9] != 17 || *sport != c->udp_sport) {
			bump(3);
			return XDP_PASS;
		}
	}
	if (c->proto_offset) {
		__u8 *proto = data + (c->proto_offset & (MAX_OFFSET - 1));

		/* Not an answer (a bubble, neighbour discovery): the stack's. */
		if ((void *)(proto + 1) > data_end || *proto != c->proto) {
			bump(3);
			return XDP_PASS;
		}
	}
	if (c->tag_offset) {
		__u32 off = c->tag_offset & (MAX_OFFSET - 1);
		__u32 *tag = data + off;

		if ((void *)(tag + 1) > data_end) {
			bump(3);
			return XDP_PASS;
		}
		if (*tag != c->tag) {
			bump(2);
			return XDP_DROP;
		}
	}
	bump(1);
	s = bpf_map_lookup_elem(&sample, &zero);
	if (s && !s->taken) {
		len = data_end - data;
		if (len > SAMPLE)
			len = SAMPLE;
		/* Keep the clamped value in the register passed on, so the verifier sees its bound. */
		asm volatile("" : "+r"(len));
		if (len >= 1 && len <= SAMPLE && bpf_xdp_load_bytes(ctx, 0, s->data, len) == 0) {
			s->len = len;
			s->taken = 1;
		}
	}
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
