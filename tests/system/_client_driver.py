"""
The far side of tests/system/test_fastpath_client.py, started inside its "world" namespace:
it plays Teredo peers and a relay by writing frames straight onto the client's link, plays
the client host's applications from inside the client's namespace (a UDP socket on the
client's Teredo address, raw packets into its TUN), and records, step by step, every frame
the client sends toward the world and every packet that reaches the client host's stack
through its TUN.

    python3 _client_driver.py IFACE CLIENT_MAC CLIENT_NS TUN TEREDO_ADDRESS CLIENT_PORT
        ->  JSON {"steps": [[name, [hex frame, ...], [hex packet, ...]], ...], "tcp": hex frame}

Frames are built here, byte by byte, so both client runs (Python path, fast path) get the
very same input.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import socket
import struct
import sys
import time
from typing import Sequence

from teredonode.wire import ipv6
from teredonode.wire.address import make_address
from teredonode.wire.teredo import NonceTrailer, OriginIndication, encode_payload, encode_trailers

CLIENT4, GATEWAY4 = "203.0.113.20", "203.0.113.1"
SERVER4 = "203.0.113.10"
PEER = ("198.51.100.11", 40000)
RELAY = ("198.51.100.50", 3544)
V6HOST = socket.inet_pton(socket.AF_INET6, "2001:db8::30")
PEER6 = make_address(SERVER4, PEER[0], PEER[1], randbits=lambda n: 0).to_bytes()
#: A Teredo peer never heard of before its step.
STRANGER = make_address(SERVER4, "198.51.100.12", 40000, randbits=lambda n: 0).to_bytes()
#: One the client is made to bubble (last step: its retries would spill over).
UNKNOWN = make_address(SERVER4, "198.51.100.13", 40000, randbits=lambda n: 0).to_bytes()
APP_PORT = 6000
SETTLE = 0.4
QUIET = 0.3


def csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    checksum: int = ~total & 0xFFFF
    return checksum


def udp6(src: bytes, dst: bytes, payload: bytes, hop: int = 64, dport: int = APP_PORT) -> bytes:
    length = 8 + len(payload)
    header = struct.pack("!HHHH", 5000, dport, length, 0)
    pseudo = src + dst + struct.pack("!IxxxB", length, 17)
    check = csum(pseudo + header + payload) or 0xFFFF
    return ipv6.build_ipv6(src, dst, 17, header[:6] + struct.pack("!H", check) + payload, hop)


def frame_v4(mac: bytes, own: bytes, src: tuple[str, int], dst: tuple[str, int], payload: bytes,
             bad_udp: bool = False, zero_udp: bool = False) -> bytes:
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src[0]) + socket.inet_aton(dst[0]) + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", src[1], dst[1], length, 0)
    check = csum(pseudo + udp + payload) or 0xFFFF
    if bad_udp:
        check ^= 0x0F0F
    udp = udp[:6] + struct.pack("!H", 0 if zero_udp else check)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0x4242, 0, 50, 17, 0,
                     socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return mac + own + b"\x08\x00" + ip + udp + payload


def enter(ns: str) -> None:
    """Move this thread into network namespace C{ns} (sockets made before stay where they were)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def main() -> None:
    iface, client_mac, client_ns, tun, address_text, port_text = sys.argv[1:7]
    mac = bytes.fromhex(client_mac.replace(":", ""))
    address = socket.inet_pton(socket.AF_INET6, address_text)
    port = int(port_text)
    wire = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    wire.bind((iface, 0))
    own = bytes.fromhex(open(f"/sys/class/net/{iface}/address").read().strip().replace(":", ""))
    enter(client_ns)
    tap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))
    tap.bind((tun, 0))
    inject = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x86DD))
    inject.bind((tun, 0x86DD))
    app = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    app.bind((address_text, APP_PORT))
    steps: list[tuple[str, list[str], list[str]]] = []

    def collect(seconds: float = SETTLE) -> tuple[list[bytes], list[bytes]]:
        """
        What the client sends to the world, and what its host's stack receives through the
        TUN, within C{seconds} and for as long after as either keeps coming (at most 3 s more).
        """
        out: list[bytes] = []
        up: list[bytes] = []
        start = time.monotonic()
        deadline = start + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out, up
            ready = select.select([wire, tap, app], [], [], left)[0]
            for sock in ready:
                if sock is app:
                    app.recvfrom(65535)  # delivered to the application: drained, recorded by the tap
                    continue
                data, where = sock.recvfrom(65535)
                if where[2] == socket.PACKET_OUTGOING:
                    continue
                if sock is wire:
                    if data[12:14] != b"\x08\x00":
                        continue  # ARP, IPv6 neighbour traffic of the link itself
                    out.append(data)
                else:
                    up.append(data)
                deadline = max(deadline, min(time.monotonic() + QUIET, start + seconds + 3))

    def step(name: str, *frames: bytes, send: Sequence[tuple[bytes, bytes]] = (), packets: Sequence[bytes] = (),
             settle: float = SETTLE) -> tuple[list[bytes], list[bytes]]:
        collect(0.05)
        for f in frames:
            wire.send(f)
        for data, dst in send:
            app.sendto(data, (socket.inet_ntop(socket.AF_INET6, dst), APP_PORT))
        for p in packets:
            inject.send(p)
        out, up = collect(settle)
        steps.append((name, [f.hex() for f in out], [p.hex() for p in up]))
        return out, up

    def up(packet: bytes, source: tuple[str, int] = PEER, dport: int | None = None, **kw: object) -> bytes:
        return frame_v4(mac, own, source, (CLIENT4, port if dport is None else dport), packet, **kw)  # type: ignore[arg-type]

    payload = bytes(range(64))
    # Trust: a bubble from the Teredo peer's own mapping (section 5.2.3 case 3).
    step("setup-peer-bubble", up(ipv6.bubble(PEER6, address)), settle=0.6)
    # Trust through a relay: the host's first packet to a native host makes the client test
    # the path through its server; the relay answers the echo request with its nonce.
    out, _ = step("setup-native-queue", send=[(b"native", V6HOST)], settle=1.0)
    reply = None
    for f in out:
        if socket.inet_ntoa(f[30:34]) == SERVER4 and len(f) > 42 + 41 and f[42 + 6] == 58 and f[42 + 40] == 128:
            request = f[42:]
            ident, seq = struct.unpack("!HH", request[44:48])
            reply = ipv6.icmpv6_packet(V6HOST, address, ipv6.EchoReply(ident, seq, request[48:]), 64)
    if reply is None:
        raise SystemExit(f"no echo test through the server: {[g.hex() for g in out]}")
    step("setup-native-reply", up(reply, source=RELAY), settle=0.8)

    # From the world to the host.
    step("up-udp", up(udp6(PEER6, address, payload)))
    step("up-udp-burst", *(up(udp6(PEER6, address, payload + bytes([i]))) for i in range(20)))
    step("up-echo", up(ipv6.icmpv6_packet(PEER6, address, ipv6.EchoRequest(1, 2, payload), 64)))
    step("up-native-udp", up(udp6(V6HOST, address, payload), source=RELAY))
    step("up-native-echo-reply", up(ipv6.icmpv6_packet(V6HOST, address, ipv6.EchoReply(9, 9, payload), 64), source=RELAY))
    step("up-no-udp-checksum", up(udp6(PEER6, address, payload), zero_udp=True))
    step("up-hop-limit-1", up(udp6(PEER6, address, payload, hop=1)))
    step("up-wrong-mapping", up(udp6(PEER6, address, payload), source=(PEER[0], 40001)))
    step("up-native-wrong-relay", up(udp6(V6HOST, address, payload), source=("198.51.100.51", 3544)))
    step("up-wrong-destination", up(udp6(PEER6, STRANGER, payload)))
    step("up-other-port", up(udp6(PEER6, address, payload), dport=port + 1))
    step("up-bad-udp-checksum", up(udp6(PEER6, address, payload), bad_udp=True))
    step("up-trailer", up(udp6(PEER6, address, payload) + encode_trailers((NonceTrailer(b"abcd"),))))
    step("up-origin", up(encode_payload(udp6(PEER6, address, payload), origin=OriginIndication(PEER[0], PEER[1]))))
    step("up-short", up(udp6(PEER6, address, payload)[:60]))
    step("up-long", up(udp6(PEER6, address, payload) + b"\x00\x00\x00"))
    step("up-bubble", up(ipv6.bubble(PEER6, address)))
    step("up-hop-by-hop", up(ipv6.build_ipv6(PEER6, address, 0, b"\x3b\x00" + bytes(6))))
    step("up-link-local-source", up(udp6(b"\xfe\x80" + bytes(13) + b"\x01", address, payload)))
    step("up-not-ipv6", up(b"\x45" + bytes(60)))
    step("up-stranger", up(udp6(STRANGER, address, payload), source=("198.51.100.12", 40000)))
    step("up-stranger-again", up(udp6(STRANGER, address, payload + b"!"), source=("198.51.100.12", 40000)))

    # From the host to the world.
    step("down-udp", send=[(payload, PEER6)])
    step("down-udp-burst", send=[(payload + bytes([i]), PEER6) for i in range(20)])
    step("down-native-udp", send=[(payload, V6HOST)])
    step("down-stranger", send=[(payload, STRANGER)])
    step("down-raw", packets=[udp6(address, PEER6, payload)])
    step("down-raw-corrupt", packets=[udp6(address, PEER6, payload)[:-1] + b"\xee"])
    step("down-foreign-source", packets=[udp6(STRANGER, PEER6, payload)])
    step("down-fragment", packets=[ipv6.build_ipv6(address, PEER6, 44, b"\x11\x00\x00\x01\x00\x00\x00\x07" + payload)])
    step("down-short", packets=[udp6(address, PEER6, payload)[:44]])

    # A TCP SYN: its checksum is left partial by the kernel (compared for validity only).
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp.setblocking(False)
    tcp.bind((address_text, 0))
    collect(0.05)
    try:
        tcp.connect((socket.inet_ntop(socket.AF_INET6, PEER6), 6001))
    except OSError as e:
        if e.errno != errno.EINPROGRESS:
            raise
    syn, _ = collect(0.5)
    tcp.close()

    step("down-unknown-peer", send=[(payload, UNKNOWN)], settle=0.6)
    json.dump({"steps": steps, "tcp": [f.hex() for f in syn]}, sys.stdout)


if __name__ == "__main__":
    main()
