"""
Hostile datagrams for fuzzing a node: the corpus, its mutations, and the paced sender.

Pure apart from the sender's sockets, so the unit tests run the corpus through the parsers;
L{teredonode.lab.fuzzrun} drives a run in the lab and checks the node afterwards.

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
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

from teredonode.wire import ipv4
from teredonode.wire.address import (
    CLIENT_LINK_LOCAL_CONE,
    CLIENT_LINK_LOCAL_RESTRICTED,
    FLAG_CONE,
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
    "DEFAULT_RATE",
    "FuzzTarget",
    "seed_messages",
    "build_pool",
    "send_datagrams",
    "target_spec",
    "udp4",
    "teredo_address",
]

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

    @ivar role: one of L{teredonode.lab.fuzzrun.ROLES}.
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


def teredo_address(server: str, ip: str, port: int, flags: int = 0) -> bytes:
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
    me = teredo_address(server, ip, port)
    me_cone = teredo_address(server, ip, port, FLAG_CONE)
    stranger = teredo_address(server, "198.51.100.200", 5555)
    private = teredo_address(server, "10.9.8.7", 1234)
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["send"]:
        return _send_main(argv[1:])
    print("usage: python -m teredonode.lab.fuzz send ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
