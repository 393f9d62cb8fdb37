"""
The far side of tests/system/test_fastpath_relay.py, run inside its "world" namespace: it
plays a Teredo client (198.51.100.11:40000 and its neighbours) and a native IPv6 host
(2001:db8::30) by writing frames straight onto the relay's link, and records every frame
the relay sends back, step by step.

    python3 _relay_driver.py IFACE RELAY_MAC  ->  JSON {"steps": [[name, [hex frame, ...]], ...]}

Frames are built here, byte by byte, so both relay runs (Python path, fast path) get the
very same input; nothing is addressed to this namespace's own stack, so its kernel never
answers in between.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

from teredonode.wire import ipv6
from teredonode.wire.address import make_address
from teredonode.wire.teredo import NonceTrailer, OriginIndication, encode_payload, encode_trailers

RELAY4, GATEWAY4 = "203.0.113.20", "203.0.113.1"
SERVER4 = "203.0.113.10"
MAPPING = ("198.51.100.11", 40000)
V6HOST = socket.inet_pton(socket.AF_INET6, "2001:db8::30")
ULA = socket.inet_pton(socket.AF_INET6, "fd00::30")
CLIENT = make_address(SERVER4, MAPPING[0], MAPPING[1], randbits=lambda n: 0).to_bytes()
#: A second client, never reached by the relay (no entry): stateless forwarding.
STRANGER = make_address(SERVER4, MAPPING[0], 40002, randbits=lambda n: 1).to_bytes()
#: A Teredo address the relay has never heard of, to make it bubble.
UNKNOWN = make_address(SERVER4, "198.51.100.12", 40000, randbits=lambda n: 0).to_bytes()
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


def udp6(src: bytes, dst: bytes, payload: bytes, hop: int = 64, corrupt: bool = False) -> bytes:
    length = 8 + len(payload)
    header = struct.pack("!HHHH", 5000, 6000, length, 0)
    pseudo = src + dst + struct.pack("!IxxxB", length, 17)
    check = csum(pseudo + header + payload) or 0xFFFF
    if corrupt:
        check ^= 0x0101
    segment = header[:6] + struct.pack("!H", check) + payload
    return ipv6.build_ipv6(src, dst, 17, segment, hop)


def frame_v4(mac: bytes, own: bytes, src: tuple[str, int], payload: bytes, dst: tuple[str, int] = (RELAY4, 3544),
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


def frame_v6(mac: bytes, own: bytes, packet: bytes) -> bytes:
    return mac + own + b"\x86\xdd" + packet


def wanted(frame: bytes) -> bool:
    """
    What the relay sends toward the world that the test compares: IPv4 and unicast IPv6
    (not ARP, neighbour discovery, MLD or router solicitations).
    """
    kind = frame[12:14]
    if kind == b"\x08\x00":
        return True
    if kind == b"\x86\xdd" and len(frame) >= 54:
        if frame[38] == 0xFF:  # multicast destination
            return False
        if frame[20] == 58 and frame[54] in (133, 134, 135, 136, 143):  # ND, MLD
            return False
        return True
    return False


def main() -> None:
    iface, relay_mac = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", ""))
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    raw.bind((iface, 0))
    own = bytes.fromhex(open(f"/sys/class/net/{iface}/address").read().strip().replace(":", ""))
    steps: list[tuple[str, list[str]]] = []

    def collect(seconds: float = SETTLE) -> list[bytes]:
        """
        What the relay sends within C{seconds}, and for as long after as it keeps sending
        (frames less than QUIET apart, at most 3 s more): a loaded machine may be slow.
        """
        out: list[bytes] = []
        start = time.monotonic()
        deadline = start + seconds
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return out
            if not select.select([raw], [], [], left)[0]:
                continue
            data, address = raw.recvfrom(65535)
            if address[2] == socket.PACKET_OUTGOING:
                continue
            if wanted(data):
                out.append(data)
                deadline = max(deadline, min(time.monotonic() + QUIET, start + seconds + 3))

    def step(name: str, *frames: bytes, settle: float = SETTLE) -> list[bytes]:
        collect(0.05)  # whatever was late from the step before is not this step's
        for f in frames:
            raw.send(f)
        got = collect(settle)
        steps.append((name, [g.hex() for g in got]))
        return got

    def up(packet: bytes, source: tuple[str, int] = MAPPING, **kw: object) -> bytes:
        return frame_v4(relay_mac, own, source, packet, **kw)  # type: ignore[arg-type]

    def down(packet: bytes) -> bytes:
        return frame_v6(relay_mac, own, packet)

    # Trust: the host sends to the client, the relay bubbles through the client's server,
    # the client answers with a bubble from its mapping, the relay releases the queue.
    echo = ipv6.icmpv6_packet(V6HOST, CLIENT, ipv6.EchoRequest(7, 1, b"trust"), 63)
    got = step("setup-queue", down(echo), settle=1.0)
    source = None
    for f in got:
        if f[12:14] == b"\x08\x00" and f[23] == 17 and socket.inet_ntoa(f[30:34]) == SERVER4:
            source = f[42 + 8 : 42 + 24]
    if source is None:
        raise SystemExit(f"no indirect bubble from the relay: {[g.hex() for g in got]}")
    step("setup-bubble", up(ipv6.bubble(CLIENT, source)), settle=1.0)

    payload = bytes(range(64))
    step("up-udp", up(udp6(CLIENT, V6HOST, payload)))
    step("up-echo", up(ipv6.icmpv6_packet(CLIENT, V6HOST, ipv6.EchoRequest(1, 2, payload))))
    step("up-udp-burst", *(up(udp6(CLIENT, V6HOST, payload + bytes([i]))) for i in range(20)))
    step("up-hop-limit-1", up(udp6(CLIENT, V6HOST, payload, hop=1)))
    step("up-hop-limit-2", up(udp6(CLIENT, V6HOST, payload, hop=2)))
    step("up-other-port", up(udp6(CLIENT, V6HOST, payload), source=(MAPPING[0], 40001)))
    step("up-bad-udp-checksum", up(udp6(CLIENT, V6HOST, payload), bad_udp=True))
    step("up-no-udp-checksum", up(udp6(CLIENT, V6HOST, payload), zero_udp=True))
    step("up-link-local-destination", up(udp6(CLIENT, b"\xfe\x80" + bytes(13) + b"\x01", payload)))
    step("up-teredo-destination", up(udp6(CLIENT, UNKNOWN, payload)))
    step("up-unserved-destination", up(udp6(CLIENT, ULA, payload)))
    step("up-trailer", up(udp6(CLIENT, V6HOST, payload) + encode_trailers((NonceTrailer(b"abcd"),))))
    step("up-origin", up(encode_payload(udp6(CLIENT, V6HOST, payload), origin=OriginIndication("198.51.100.11", 40000))))
    step("up-short", up(udp6(CLIENT, V6HOST, payload)[:60]))
    step("up-long", up(udp6(CLIENT, V6HOST, payload) + b"\x00\x00\x00"))
    step("up-bubble", up(ipv6.bubble(CLIENT, V6HOST)))
    step("up-stateless", up(udp6(STRANGER, V6HOST, payload), source=(MAPPING[0], 40002)))
    step("up-hop-by-hop", up(ipv6.build_ipv6(CLIENT, V6HOST, 0, b"\x3b\x00" + bytes(6))))
    step("up-not-ipv6", up(b"\x45" + bytes(60)))

    step("down-udp", down(udp6(V6HOST, CLIENT, payload, hop=64)))
    step("down-echo", down(ipv6.icmpv6_packet(V6HOST, CLIENT, ipv6.EchoRequest(1, 3, payload), 64)))
    step("down-udp-burst", *(down(udp6(V6HOST, CLIENT, payload + bytes([i]))) for i in range(20)))
    step("down-corrupt-inner-checksum", down(udp6(V6HOST, CLIENT, payload, corrupt=True)))
    step("down-hop-limit-1", down(udp6(V6HOST, CLIENT, payload, hop=1)))
    step("down-too-big", down(udp6(V6HOST, CLIENT, bytes(1300))))
    step("down-unserved-source", down(udp6(ULA, CLIENT, payload)))
    step("down-fragment", down(ipv6.build_ipv6(V6HOST, CLIENT, 44, b"\x11\x00\x00\x01\x00\x00\x00\x07" + payload)))
    step("down-unknown-peer", down(udp6(V6HOST, UNKNOWN, payload)), settle=0.6)
    json.dump({"steps": steps}, sys.stdout)


if __name__ == "__main__":
    main()
