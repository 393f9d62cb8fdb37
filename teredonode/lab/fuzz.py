"""
Fuzzing a running node in the lab: hostile datagrams on real sockets, then four checks.

One module serves both the benchmark (C{benchmarks/fuzz.py}, a million datagrams per role)
and the attack test (C{tests/attack/test_fuzz.py}, a sample), so both measure the same thing:

  1. the node process is still alive;
  2. its resident memory grew by less than L{RSS_GROWTH_LIMIT};
  3. every datagram is accounted for: what the node took in (UDP C{received} plus the
     packets it read from its TUN, which the kernel counts as the TUN's C{tx_packets}) equals
     the sum of its outcomes (drops by reason, answers, deliveries, sends, and packets still
     queued) -- see L{account};
  4. a legitimate client still qualifies and pings through it afterwards (the caller).

Generation is cheap by design: a corpus of every message kind (built once with the wire
codec in L{teredonode.wire}, so the valid ones really are valid) is expanded into a pool of
structure-aware mutations, and the send loop only picks from the pool and flips one byte.
The sender runs in its own process inside the fuzzer host's namespace
(C{python -m teredonode.lab.fuzz send ...}), paced at a bounded rate and bounded in count
and time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from teredonode.wire import ipv4
from teredonode.wire.address import (
    CLIENT_LINK_LOCAL_CONE,
    CLIENT_LINK_LOCAL_RESTRICTED,
    GLOBAL_PREFIX,
    TEREDO_PORT,
    TeredoAddress,
    server_link_local,
)
from teredonode.wire.ipv6 import (
    ALL_NODES,
    ALL_ROUTERS,
    NH_ICMPV6,
    NH_NONE,
    EchoReply,
    EchoRequest,
    NDOption,
    PacketTooBig,
    PrefixInformation,
    RouterAdvertisement,
    RouterSolicitation,
    UnknownICMPv6,
    bubble,
    build_ipv6,
    icmpv6_packet,
)
from teredonode.wire.teredo import (
    TRAILER_ALTERNATE_ADDRESS,
    TRAILER_NEIGHBOR_DISCOVERY,
    TRAILER_NONCE,
    TRAILER_RANDOM_PORT,
    TRAILER_RANDOM_PORT_RFC,
    AlternateAddressTrailer,
    AuthIndicator,
    NeighborDiscoveryTrailer,
    NonceTrailer,
    OriginIndication,
    RandomPortTrailer,
    UnknownTrailer,
    encode_payload,
    encode_trailers,
)

__all__ = [
    "ROLES",
    "RSS_GROWTH_LIMIT",
    "DEFAULT_RATE",
    "FuzzTarget",
    "seed_messages",
    "build_pool",
    "send_datagrams",
    "account",
    "Accounting",
    "rss_bytes",
    "FuzzReport",
    "start_nodes",
    "fuzz_role",
    "legit_check",
    "tun_tx_packets",
    "udp_rcvbuf_errors",
]

#: The roles the harness can fuzz.
ROLES = ("server", "relay", "client", "host-relay")
#: Property 2: resident memory may grow by less than this over a run.
RSS_GROWTH_LIMIT = 50 * 1024 * 1024
#: Datagrams per second offered by default: below what one node process handles on a
#: shared 2-CPU machine, so the kernel's receive queue does not overflow and every datagram
#: sent reaches the node's accounting (overflows are still measured and reported).
DEFAULT_RATE = 8000.0
#: Largest datagram sent (oversize cases): above the 1500-byte path MTU (fragmented on the
#: wire), below the UDP maximum.
OVERSIZE = 9000
#: Entries in the mutation pool; the send loop cycles through it.
POOL_SIZE = 20000
#: Sends between two looks at the clock.
SEND_BATCH = 64
#: When spoofing a client's server, one datagram in this many is spoofed ...
SPOOF_EVERY = 4
#: ... if it fits one unfragmented packet (a raw socket does not fragment).
SPOOF_MAX = 1400


# ============================================================================ what to fuzz


@dataclass(frozen=True)
class FuzzTarget:
    """
    What the generator needs to know to build messages the target might accept.

    @ivar role: one of L{ROLES}.
    @ivar mapping: the fuzzer's own endpoint as the target sees it (no NAT on its side), so
        Teredo sources can embed it and pass the anti-spoofing checks.
    @ivar server: the Teredo server's primary IPv4 (the prefix's server field).
    @ivar own: 16-byte IPv6 addresses the target stands for (its Teredo address, the native
        addresses it serves); destinations are picked from them.
    @ivar native: 16-byte native IPv6 addresses of the lab (v6host, ...).
    """

    role: str
    mapping: tuple[str, int]
    server: str
    own: tuple[bytes, ...] = ()
    native: tuple[bytes, ...] = ()


def _teredo(server: str, ip: str, port: int, flags: int = 0) -> bytes:
    return TeredoAddress(GLOBAL_PREFIX, server, flags, port, ip).to_bytes()


def _trailer_sets(rng: random.Random, mapping: tuple[str, int]) -> list[bytes]:
    """
    RFC 6081 trailers, valid and not: each known type, unknown types with each top-bit
    action (00 skip, 01 discard, 10 and 11 skip), wrong lengths, truncated.
    """
    ip, port = mapping
    valid = [
        encode_trailers([NonceTrailer(rng.randbytes(4))]),
        encode_trailers([RandomPortTrailer(port, TRAILER_RANDOM_PORT)]),
        encode_trailers([RandomPortTrailer(port, TRAILER_RANDOM_PORT_RFC)]),
        encode_trailers([AlternateAddressTrailer(((ip, port),))]),
        encode_trailers([AlternateAddressTrailer(tuple(("198.51.100.%d" % i, 1000 + i) for i in range(1, 5)))]),
        encode_trailers([NeighborDiscoveryTrailer(0)]),
        encode_trailers([NeighborDiscoveryTrailer(1)]),
        encode_trailers([NonceTrailer(b"abcd"), RandomPortTrailer(port), NeighborDiscoveryTrailer(1)]),
    ]
    for top in (0x00, 0x40, 0x80, 0xC0):
        ttype = top | 0x3A
        valid.append(encode_trailers([UnknownTrailer(ttype, rng.randbytes(rng.randrange(0, 20)))]))
        valid.append(encode_trailers([NonceTrailer(b"wxyz"), UnknownTrailer(ttype, b"")]))
    bad = [
        bytes((TRAILER_NONCE, 3)) + b"abc",  # wrong length for the type
        bytes((TRAILER_NONCE, 8)) + b"ab",  # truncated value
        bytes((TRAILER_RANDOM_PORT, 4)) + b"\x00\x00\x00\x00",
        bytes((TRAILER_RANDOM_PORT_RFC, 1)) + b"\x00",
        bytes((TRAILER_ALTERNATE_ADDRESS, 8)) + b"\x00\x00" + ipv4.pack(ip) + b"\x00\x00",  # port 0
        bytes((TRAILER_ALTERNATE_ADDRESS, 7)) + b"\x00" * 7,
        bytes((TRAILER_ALTERNATE_ADDRESS, 32)) + b"\x00" * 32,
        bytes((TRAILER_NEIGHBOR_DISCOVERY, 4, 9, 0, 0, 0)),
        bytes((TRAILER_NEIGHBOR_DISCOVERY, 2, 0, 0)),
        bytes((0x7F,)),  # one byte: not even a header
        bytes((0x41, 200)) + b"x",  # discard-type, truncated: processing stops first
        bytes((0x41, 0)),  # discard-type, empty
        b"\x00\x00" * 10,  # type 0 length 0, repeated
        bytes((TRAILER_NONCE, 255)),
    ]
    return valid + bad


def seed_messages(target: FuzzTarget, rng: random.Random) -> list[bytes]:
    """
    One or more of every message kind, built with the wire codec; most are valid Teredo
    payloads, each aimed at something the target parses.
    """
    ip, port = target.mapping
    server = target.server
    me = _teredo(server, ip, port)
    me_cone = _teredo(server, ip, port, 0x8000)
    stranger = _teredo(server, "198.51.100.200", 5555)
    private = _teredo(server, "10.9.8.7", 1234)
    server_ll = server_link_local(server)
    own = list(target.own) or [rng.randbytes(16)]
    native = list(target.native) or [bytes.fromhex("20010db8000000000000000000000030")]
    dsts = own + native + [stranger, ALL_NODES, b"\xfe\x80" + bytes(13) + b"\x01", bytes(16)]
    srcs = [me, me_cone, stranger, private, native[0], b"\xfe\x80" + bytes(13) + b"\x02", server_ll]
    nonce = rng.randbytes(8)
    out: list[bytes] = []

    # Router Solicitations: restricted/cone source, with/without auth, bad hop limit/checksum.
    for ll in (CLIENT_LINK_LOCAL_RESTRICTED, CLIENT_LINK_LOCAL_CONE):
        rs = icmpv6_packet(ll, ALL_ROUTERS, RouterSolicitation(), 255)
        out.append(rs)
        out.append(encode_payload(rs, AuthIndicator(nonce)))
        out.append(encode_payload(rs, AuthIndicator(nonce, b"alice", rng.randbytes(20), 0)))
        out.append(encode_payload(rs, AuthIndicator(nonce, b"x" * 255, b"y" * 255, 255)))
        out.append(icmpv6_packet(ll, ALL_ROUTERS, RouterSolicitation(), 64))
        out.append(rs[:42] + b"\xde\xad" + rs[44:])  # bad checksum
        out.append(icmpv6_packet(ll, ALL_ROUTERS, RouterSolicitation((NDOption(1, b"\x00" * 6),)), 255))
        out.append(encode_payload(rs, AuthIndicator(nonce), OriginIndication(ip, port)))
    # Router Advertisements, as a server would send them, and broken ones.
    prefix = GLOBAL_PREFIX + ipv4.pack(server) + bytes(8)
    for ra in (
        RouterAdvertisement(retrans_timer=2000, prefixes=(PrefixInformation(prefix, 64),), mtu=1280),
        RouterAdvertisement(prefixes=(PrefixInformation(prefix, 64), PrefixInformation(prefix, 48))),
        RouterAdvertisement(prefixes=(PrefixInformation(rng.randbytes(16), 64),), mtu=100),
        RouterAdvertisement(),
    ):
        for dst in (CLIENT_LINK_LOCAL_RESTRICTED, CLIENT_LINK_LOCAL_CONE):
            packet = icmpv6_packet(server_ll, dst, ra, 255)
            out.append(encode_payload(packet, AuthIndicator(nonce), OriginIndication(ip, port)))
            out.append(encode_payload(packet, None, OriginIndication("10.0.0.1", port)))
            out.append(packet)
    # Bubbles, with and without origin indications and trailers.
    trailers = _trailer_sets(rng, target.mapping)
    for src in srcs:
        for dst in dsts:
            b = bubble(src, dst)
            out.append(b)
            out.append(encode_payload(b, None, OriginIndication(ip, port)))
            out.append(encode_payload(b, None, OriginIndication("192.168.1.1", 1)))
            out.append(b + rng.choice(trailers))
    for t in trailers:
        out.append(bubble(me, own[0]) + t)
        out.append(encode_payload(bubble(me, ALL_NODES, 1), None, None, t))
    # ICMPv6 echo and other ICMPv6, to each destination, with trailers.
    for src in srcs:
        for dst in dsts:
            req = icmpv6_packet(src, dst, EchoRequest(rng.randrange(65536), 1, rng.randbytes(rng.randrange(0, 64))))
            out.append(req)
            out.append(req + rng.choice(trailers))
            out.append(encode_payload(req, None, OriginIndication(ip, port)))
            out.append(icmpv6_packet(src, dst, EchoReply(7, 7, rng.randbytes(8))))
            out.append(icmpv6_packet(src, dst, PacketTooBig(1280, req[:48])))
            out.append(icmpv6_packet(src, dst, UnknownICMPv6(200, 0, rng.randbytes(12))))
            out.append(build_ipv6(src, dst, 17, rng.randbytes(16)))  # UDP: not ICMPv6
    echo_server = icmpv6_packet(me, server_ll, EchoRequest(1, 1, b"ping"))
    out.append(echo_server)
    # Auth headers with bad lengths, origin indications cut short, bad envelopes.
    rs = icmpv6_packet(CLIENT_LINK_LOCAL_RESTRICTED, ALL_ROUTERS, RouterSolicitation(), 255)
    for idlen, aulen in ((255, 0), (0, 255), (10, 10), (1, 0), (0, 1)):
        out.append(struct.pack("!HBB", 1, idlen, aulen) + b"z" * 5 + nonce + b"\x00" + rs)
    out.append(b"\x00\x01\x00")
    out.append(b"\x00\x01\x00\x00" + nonce)
    out.append(b"\x00\x00" + b"\x12\x34")
    out.append(OriginIndication(ip, port).to_bytes())
    out.append(OriginIndication(ip, port).to_bytes() + AuthIndicator(nonce).to_bytes() + rs)  # wrong order
    out.append(AuthIndicator(nonce).to_bytes() + b"\x00\x07" + rs)
    out.append(b"\x00\x02" + rs)
    # Bad IPv6 payload lengths, versions; zero-length, tiny and oversize datagrams.
    good = icmpv6_packet(me, own[0], EchoRequest(1, 2, b"x" * 32))
    for plen in (0, 1, 39, 41, 0xFFFF, len(good) - 40 + 1):
        out.append(good[:4] + plen.to_bytes(2, "big") + good[6:])
    out.append(b"\x40" + good[1:])
    out.append(good[:39])
    out += [b"", b"\x60", b"\x00", b"\x00\x01", bytes(40)]
    big = rng.randbytes(OVERSIZE - 40)
    out.append(build_ipv6(me, own[0], NH_ICMPV6, big))
    out.append(build_ipv6(me, own[0], NH_NONE, big[:1400]))
    out.append(icmpv6_packet(me, own[0], EchoRequest(9, 9, big[:1500])))
    out.append(rng.randbytes(OVERSIZE))
    # Plain random bytes.
    for _ in range(64):
        out.append(rng.randbytes(rng.randrange(0, 200)))
    return out


def _mutate(data: bytes, rng: random.Random, donors: list[bytes]) -> bytes:
    """
    One structure-aware mutation: keep most of a valid message, break one thing.
    """
    n = len(data)
    choice = rng.randrange(9)
    if n == 0 or choice == 0:
        return rng.randbytes(rng.randrange(0, 80))
    if choice == 1:  # flip bits of one byte
        i = rng.randrange(n)
        return data[:i] + bytes((data[i] ^ (1 << rng.randrange(8)),)) + data[i + 1 :]
    if choice == 2:  # set an interesting byte
        i = rng.randrange(n)
        return data[:i] + bytes((rng.choice((0, 1, 0x40, 0x60, 0x7F, 0x80, 0xFF)),)) + data[i + 1 :]
    if choice == 3:  # truncate
        return data[: rng.randrange(n)]
    if choice == 4:  # append garbage (looks like trailers)
        return data + rng.randbytes(rng.randrange(1, 40))
    if choice == 5:  # splice two messages
        other = rng.choice(donors)
        return data[: rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1) :]
    if choice == 6:  # rewrite the IPv6 payload length wherever the packet starts
        start = data.find(b"\x60")
        if 0 <= start <= n - 6:
            return data[: start + 4] + rng.randrange(65536).to_bytes(2, "big") + data[start + 6 :]
        return data[::-1]
    if choice == 7:  # duplicate a slice
        i = rng.randrange(n)
        return data[:i] + data[i : i + 16] + data[i:]
    i = rng.randrange(n)  # overwrite a 16-byte window (an address) with random bytes
    return data[:i] + rng.randbytes(16) + data[i + 16 :]


def build_pool(target: FuzzTarget, seed: int, size: int = POOL_SIZE) -> list[bytes]:
    """
    The seeds, each also once unmutated, then mutations up to C{size} entries, shuffled.
    """
    rng = random.Random(seed)
    seeds = seed_messages(target, rng)
    pool = list(seeds)
    while len(pool) < size:
        pool.append(_mutate(rng.choice(seeds), rng, seeds))
    pool = [p[:OVERSIZE] for p in pool]
    rng.shuffle(pool)
    return pool


# ============================================================================ sending


def udp4(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """
    An IPv4/UDP packet for a raw socket (C{IP_HDRINCL}): the kernel fills in the header
    checksum and identification; a UDP checksum of zero means "none" in IPv4.
    """
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, ipv4.pack(src[0]), ipv4.pack(dst[0])
    )
    return header + udp


def send_datagrams(
    sock: socket.socket,
    dst: tuple[str, int],
    pool: list[bytes],
    count: int,
    rate: float,
    max_seconds: float,
    spoof: tuple[str, int] | None = None,
    spoof_every: int = SPOOF_EVERY,
) -> dict[str, Any]:
    """
    Send C{count} datagrams to C{dst}, paced at C{rate} per second, stopping early after
    C{max_seconds}.  Even passes through the pool send entries as built; odd passes flip one
    byte per datagram (its position and value vary with the pass), so a million datagrams
    from a pool of thousands are still mostly distinct.

    With C{spoof}, every C{spoof_every}-th datagram (up to L{SPOOF_MAX} bytes) leaves from
    a raw socket with C{spoof} as its source: an off-path attacker posing as the client's
    server, which is the only sender whose Router Advertisements and origin indications a
    client reads.
    """
    sendto = sock.sendto
    raw = None
    if spoof is not None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    npool = len(pool)
    sent = errors = spoofed = 0
    t0 = time.perf_counter()
    deadline = t0 + max_seconds
    perf = time.perf_counter
    while sent < count:
        now = perf()
        if now >= deadline:
            break
        due = min(count, int((now - t0) * rate) + 1)
        if due <= sent:
            time.sleep(min(0.01, (sent + 1) / rate - (now - t0)))
            continue
        stop = min(due, sent + SEND_BATCH)
        for i in range(sent, stop):
            data = pool[i % npool]
            turn = i // npool
            if turn & 1 and data:
                k = (i * 2654435761 + turn) % len(data)
                data = data[:k] + bytes(((data[k] + turn) & 0xFF,)) + data[k + 1 :]
            try:
                if raw is not None and i % spoof_every == 0 and len(data) <= SPOOF_MAX:
                    raw.sendto(udp4(spoof, dst, data), (dst[0], 0))  # type: ignore[arg-type]
                    spoofed += 1
                else:
                    sendto(data, dst)
            except OSError:
                errors += 1
        sent = stop
    elapsed = perf() - t0
    if raw is not None:
        raw.close()
    return {"sent": sent - errors, "send_errors": errors, "spoofed": spoofed, "seconds": elapsed}


def _send_main(argv: list[str]) -> int:
    """
    C{python -m teredonode.lab.fuzz send --target IP:PORT --bind IP:PORT --spec JSON ...}:
    build the pool, send, print one JSON line with the figures.
    """
    parser = argparse.ArgumentParser(prog="teredonode.lab.fuzz send")
    parser.add_argument("--target", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--spec", required=True, help="FuzzTarget as JSON (addresses in hex)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spoof", default="", help="IP:PORT to pose as for a share of the datagrams")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    target = FuzzTarget(
        role=spec["role"],
        mapping=(spec["mapping"][0], int(spec["mapping"][1])),
        server=spec["server"],
        own=tuple(bytes.fromhex(a) for a in spec["own"]),
        native=tuple(bytes.fromhex(a) for a in spec["native"]),
    )
    host, _, port = args.target.rpartition(":")
    bind_host, _, bind_port = args.bind.rpartition(":")
    t0 = time.perf_counter()
    pool = build_pool(target, args.seed)
    build_seconds = time.perf_counter() - t0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((bind_host, int(bind_port)))
    spoof = None
    if args.spoof:
        spoof_host, _, spoof_port = args.spoof.rpartition(":")
        spoof = (spoof_host, int(spoof_port))
    result = send_datagrams(sock, (host, int(port)), pool, args.count, args.rate, args.max_seconds, spoof)
    result["pool"] = len(pool)
    result["build_seconds"] = build_seconds
    print(json.dumps(result), flush=True)
    return 0


def target_spec(target: FuzzTarget) -> str:
    """
    L{FuzzTarget} as the JSON the C{send} command takes.
    """
    return json.dumps(
        {
            "role": target.role,
            "mapping": list(target.mapping),
            "server": target.server,
            "own": [a.hex() for a in target.own],
            "native": [a.hex() for a in target.native],
        }
    )


# ============================================================================ checks


@dataclass
class Accounting:
    """
    Property 3 for one status document.

    @ivar taken_in: datagrams received on the role's UDP port plus packets read from its TUN.
    @ivar accounted: the sum of every outcome (see L{account}).
    @ivar outcomes: the non-zero terms of C{accounted}, by name.
    """

    taken_in: int
    accounted: int
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.taken_in == self.accounted


#: Outcomes counted once per input, besides the drops, per role.  For the tunnel roles a
#: queued packet gets a second count when its fate is known (sent, delivered or dropped), so
#: the packets still queued balance the equation at any instant:
#:   received + TUN reads == drops + delivered + bubbles-received + echo-tests-ok + sent
#:                           (+ ra-accepted for a client) + packets queued now.
_OUTCOMES = {
    "server": ("rs", "forwarded", "forwarded-ipv6", "echo-replies"),
    "client": ("delivered", "bubbles-received", "echo-tests-ok", "sent", "ra-accepted"),
    "relay": ("delivered", "bubbles-received", "echo-tests-ok", "sent"),
    "host-relay": ("delivered", "bubbles-received", "echo-tests-ok", "sent"),
}


#: Drop reasons that count something other than packets, left out of the sum: a relay's
#: C{unreachable-peer} counts peer entries removed after unanswered bubbles (RL-TX-05); the
#: packets queued for them are counted once each as C{peer-unreachable}.
#: A client's C{non-global-origin} counts origin indications from its server that it did not
#: answer with a bubble; the packet carrying one goes on and is counted by its own outcome.
NOT_PACKETS = frozenset({"unreachable-peer", "non-global-origin"})


def account(role: str, status: dict[str, Any], tun_reads: int) -> Accounting:
    """
    Balance C{role}'s table of a node status document: inputs against outcomes.

    C{tun_reads} is the role TUN's C{tx_packets} (L{tun_tx_packets}): the kernel counts a
    packet there when the node reads it, so it is exactly the node's input from its TUN.
    """
    table = status[role]
    counters = table["counters"]
    outcomes = {f"drop:{k}": v for k, v in table["drops"].items() if v and k not in NOT_PACKETS}
    for key in _OUTCOMES[role]:
        if counters.get(key):
            outcomes[key] = counters[key]
    if role != "server":
        queued = table["peers"]["queued-packets"]
        if queued:
            outcomes["still-queued"] = queued
    return Accounting(counters["received"] + tun_reads, sum(outcomes.values()), outcomes)


def rss_bytes(pid: int) -> int:
    """
    Resident set size of C{pid} from C{/proc/<pid>/status} (VmRSS).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def tun_tx_packets(lab: Any, host: str, interface: str) -> int:
    """
    Packets the kernel handed to the node through TUN C{interface} on C{host}.
    """
    out = lab.exec(host, ["ip", "-s", "-j", "link", "show", "dev", interface], timeout=10, check=True).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


def udp_rcvbuf_errors(lab: Any, host: str) -> int:
    """
    UDP datagrams the kernel of C{host} dropped for a full receive buffer (never reached
    any socket, so no node can count them).
    """
    text = lab.exec(host, ["cat", "/proc/net/snmp"], timeout=10, check=True).stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


# ============================================================================ one run in a lab

#: Node names, hosts and TUN names the harness uses in the lab's C{default} scenario.
NODES = {
    "server": ("server", "server", "teredo-srv"),
    "relay": ("relay", "relay", "teredo-relay"),
    "client": ("client2", "client2", "teredo"),
    "host-relay": ("hostrelay", "dualhost", "teredo-hr"),
}
#: The legitimate client, restarted after every run to show the node still serves.
LEGIT_CLIENT = "client1"
#: The client under test listens on a fixed port behind the lab's cone NAT (which keeps the
#: port), without local discovery (its multicast socket is not the service port).
CLIENT_SETTINGS = {"port": 40001, "local-discovery": False}
FUZZER_PORT = 41000
READY_TIMEOUT = 20.0
SETTLE_SECONDS = 0.5
PING_COUNT = 5


def fuzzer_host(role: str) -> str:
    """
    Where the datagrams come from: a public host with no NAT in between, running nothing
    of the role under test.
    """
    return "relay" if role == "host-relay" else "dualhost"


def start_nodes(lab: Any) -> None:
    """
    Our server, relay, client2 (the client under test), host-specific relay and client1.
    """
    lab.start_teredonode("server", "server", "server")
    if not lab.wait_udp_listening("server", TEREDO_PORT, READY_TIMEOUT):
        raise RuntimeError("server not listening")
    lab.start_teredonode("relay", "relay", "relay")
    lab.start_teredonode("client2", "client2", "client", settings=dict(CLIENT_SETTINGS))
    lab.start_teredonode("hostrelay", "dualhost", "host-relay")
    lab.start_teredonode(LEGIT_CLIENT, LEGIT_CLIENT, "client")
    for node, ready in (
        ("server", lambda s: s["server"]["state"] == "serving"),
        ("relay", lambda s: s["relay"]["state"] == "relaying"),
        ("hostrelay", lambda s: s["host-relay"]["state"] == "relaying"),
        ("client2", lambda s: s["client"]["state"] == "qualified"),
        (LEGIT_CLIENT, lambda s: s["client"]["state"] == "qualified"),
    ):
        status, ok = lab.wait_node_status(node, ready, READY_TIMEOUT)
        if not ok:
            raise RuntimeError(f"{node} not ready: {status}; log {lab.nodes[node].log_tail(10)}")


def _ipv6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text.split("/")[0])


def make_target(lab: Any, role: str) -> tuple[FuzzTarget, tuple[str, int]]:
    """
    The generator's view of C{role} in C{lab}, and the endpoint to send to.
    """
    server = lab.ipv4("server")
    mapping = (lab.ipv4(fuzzer_host(role)), FUZZER_PORT)
    native = (_ipv6(lab.ipv6("v6host")), _ipv6(lab.ipv6("dualhost")))
    stranger = _teredo(server, "198.51.100.77", 4242)
    if role == "server":
        return FuzzTarget(role, mapping, server, (stranger, server_link_local(server)), native), (server, TEREDO_PORT)
    if role == "relay":
        return FuzzTarget(role, mapping, server, native + (stranger,), native), (lab.ipv4("relay"), TEREDO_PORT)
    if role == "client":
        table = lab.node_status("client2")["client"]
        ip, port = table["mapping"].rsplit(":", 1)
        return FuzzTarget(role, mapping, server, (_ipv6(table["address"]),), native), (ip, int(port))
    table = lab.node_status("hostrelay")["host-relay"]
    port = int(table["local"].rsplit(":", 1)[1])
    return FuzzTarget(role, mapping, server, (_ipv6(lab.ipv6("dualhost")),), native), (lab.ipv4("dualhost"), port)


def _balance(lab: Any, role: str) -> tuple[Accounting, dict[str, Any]]:
    """
    A status document and TUN count read consistently (no TUN packet read in between).
    """
    node, host, tun = NODES[role]
    for _ in range(20):
        before = tun_tx_packets(lab, host, tun)
        status = lab.node_status(node)
        if tun_tx_packets(lab, host, tun) == before:
            return account(role, status, before), status
    return account(role, status, before), status


def _settle(lab: Any, role: str, timeout: float = 30.0) -> None:
    """
    Wait until the node has read everything sent (its C{received} stops moving).
    """
    node = NODES[role][0]
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        received = lab.node_status(node)[role]["counters"]["received"]
        if received == last:
            return
        last = received
        time.sleep(SETTLE_SECONDS)


def legit_check(lab: Any) -> dict[str, tuple[int, int]]:
    """
    Property 4: a fresh client qualifies, and every path of the lab pings (through the
    server, the relay, the client under test and the host-specific relay).
    """
    lab.stop_node(LEGIT_CLIENT)
    lab.start_teredonode(LEGIT_CLIENT, LEGIT_CLIENT, "client")
    status, ok = lab.wait_node_status(LEGIT_CLIENT, lambda s: s["client"]["state"] == "qualified", READY_TIMEOUT)
    if not ok:
        return {"qualify": (0, 1)}
    address2 = lab.node_status("client2")["client"]["address"]
    paths = {
        "client1 -> v6host": (LEGIT_CLIENT, lab.ipv6("v6host")),
        "client2 -> v6host": ("client2", lab.ipv6("v6host")),
        "client1 -> client2": (LEGIT_CLIENT, address2),
        "dualhost -> client1": ("dualhost", status["client"]["address"]),
    }
    result = {"qualify": (1, 1)}
    for name, (src, dst) in paths.items():
        received, _ = lab.ping6(src, dst, PING_COUNT, interval=0.2)
        result[name] = (received, PING_COUNT)
    return result


#: Counters of what a node sends on its own account (answers, bubbles, errors): shown so a
#: reader sees how much a flood of hostile datagrams made it send (amplification).
ANSWERS = (
    "ra", "echo-replies", "forwarded", "bubbles-answered", "bubbles-suppressed", "bubbles-direct",
    "bubbles-indirect", "echo-tests", "echo-suppressed", "icmp-errors", "icmp-errors-limited",
)


@dataclass
class FuzzReport:
    """
    The figures of one role's run and its four properties.
    """

    role: str
    target: str
    sent: int
    send_errors: int
    spoofed: int
    seconds: float
    rate: float
    received: int
    kernel_rcvbuf_drops: int
    rss_before: int
    rss_after: int
    alive: bool
    accounting: Accounting
    drops: dict[str, int]
    legit: dict[str, tuple[int, int]]
    counters: dict[str, int] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> int:
        return self.rss_after - self.rss_before

    @property
    def legit_ok(self) -> bool:
        return all(got >= want - 1 and got > 0 for got, want in self.legit.values()) and self.legit.get("qualify") == (1, 1)

    @property
    def ok(self) -> bool:
        return (
            self.alive
            and self.rss_growth < RSS_GROWTH_LIMIT
            and self.accounting.balanced
            and self.legit_ok
            and not self.log_errors
        )

    def lines(self) -> list[str]:
        mib = 1024 * 1024
        acc = self.accounting
        out = [
            f"{self.role}: {self.sent} datagrams to {self.target} in {self.seconds:.1f} s "
            f"({self.rate:.0f}/s), {self.send_errors} send errors"
            + (f", {self.spoofed} of them spoofed from the server" if self.spoofed else ""),
            f"  node received {self.received} on UDP (kernel receive-buffer drops {self.kernel_rcvbuf_drops})",
            f"  RSS {self.rss_before / mib:.1f} MiB -> {self.rss_after / mib:.1f} MiB "
            f"(growth {self.rss_growth / mib:+.1f} MiB, limit {RSS_GROWTH_LIMIT // mib})",
            f"  alive: {self.alive}; accounting: taken in {acc.taken_in}, accounted {acc.accounted}"
            f" -> {'balanced' if acc.balanced else 'UNBALANCED'}",
            "  drops: " + ", ".join(f"{k} {v}" for k, v in sorted(self.drops.items(), key=lambda kv: -kv[1]) if v),
            "  other outcomes: " + ", ".join(f"{k} {v}" for k, v in acc.outcomes.items() if not k.startswith("drop:")),
            "  packets the node sent in answer (whole run): "
            + (", ".join(f"{k} {self.counters[k]}" for k in ANSWERS if self.counters.get(k)) or "none"),
            "  legitimate traffic after: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in self.legit.items()),
            f"  tracebacks in the node's log: {len(self.log_errors)}"
            + (f" (first: {self.log_errors[0]})" if self.log_errors else ""),
            f"  => {'PASS' if self.ok else 'FAIL'}",
        ]
        return out


def fuzz_role(
    lab: Any,
    role: str,
    count: int,
    rate: float = DEFAULT_RATE,
    seed: int = 0,
    max_seconds: float = 600.0,
) -> FuzzReport:
    """
    Fuzz C{role}'s node (started by L{start_nodes}) with C{count} datagrams at C{rate}/s
    from L{fuzzer_host}, then measure the four properties.
    """
    import subprocess

    from teredonode.lab.nodes import REPO_ROOT

    node, host, _ = NODES[role]
    handle = lab.nodes[node]
    pid = handle.record.pid
    target, dst = make_target(lab, role)
    rss_before = rss_bytes(pid)
    received_before = lab.node_status(node)[role]["counters"]["received"]
    rcvbuf_before = udp_rcvbuf_errors(lab, host)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    argv = [
        sys.executable, "-m", "teredonode.lab.fuzz", "send",
        "--target", f"{dst[0]}:{dst[1]}",
        "--bind", f"{target.mapping[0]}:{target.mapping[1]}",
        "--spec", target_spec(target),
        "--count", str(count), "--rate", str(rate), "--max-seconds", str(max_seconds), "--seed", str(seed),
    ]
    if role == "client":
        # A share of the datagrams poses as the client's server (RAs, origin indications).
        argv += ["--spoof", f"{target.server}:{TEREDO_PORT}"]
    proc = lab.popen(fuzzer_host(role), argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        out, err = proc.communicate(timeout=max_seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"fuzz sender failed: {err.strip().splitlines()[-1:] or proc.returncode}")
    sent = json.loads(out.strip().splitlines()[-1])
    alive = handle.exit_code() is None
    if alive:
        _settle(lab, role)
        accounting, status = _balance(lab, role)
        alive = handle.exit_code() is None
    else:
        accounting, status = Accounting(-1, 0), {role: {"drops": {}, "counters": {"received": 0}}}
    rss_after = rss_bytes(pid) if alive else 0
    received = status[role]["counters"]["received"] - received_before
    legit = legit_check(lab) if alive else {}
    log_errors = log_tracebacks(handle.record.log)
    return FuzzReport(
        role=role,
        target=f"{dst[0]}:{dst[1]}",
        sent=sent["sent"],
        send_errors=sent["send_errors"],
        spoofed=sent.get("spoofed", 0),
        seconds=sent["seconds"],
        rate=sent["sent"] / sent["seconds"] if sent["seconds"] else 0.0,
        received=received,
        kernel_rcvbuf_drops=udp_rcvbuf_errors(lab, host) - rcvbuf_before,
        rss_before=rss_before,
        rss_after=rss_after,
        alive=alive,
        accounting=accounting,
        drops=dict(status[role]["drops"]),
        legit=legit,
        counters=dict(status[role]["counters"]),
        log_errors=log_errors,
    )


def log_tracebacks(path: str) -> list[str]:
    """
    The line after each traceback in a node's log (Twisted's "Unhandled Error" has one): an exception in any
    handler (UDP, TUN, timers) shows there even where the accounting cannot see it.
    """
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return []
    found = []
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            found.append(lines[i + 1].strip() if i + 1 < len(lines) else line.strip())
    return found


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["send"]:
        return _send_main(argv[1:])
    print("usage: python -m teredonode.lab.fuzz send ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
