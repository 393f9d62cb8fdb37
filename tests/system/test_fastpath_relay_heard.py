"""
The relay's rx program and a trusted peer's "heard" time (RFC 4380 section 5.2.3 case 1).

The Python relay marks a trusted peer heard for whatever comes from its proven mapping and
is accepted: a bubble (never delivered, but heard), or a packet to a destination it serves,
even one it then hands to the kernel's own errors (hop limit 1).  The tx program carries a
peer's downstream packets only while the map's entry was heard within 30 s, so the rx
program moves that time for the same packets, including those it passes on to Python
(a peer that keeps its mapping alive with bubbles while a native host sends to it stays on
the fast path).  What the Python relay does not hear (a mapping mismatch, a corrupt
checksum the kernel drops, a destination it does not serve) moves nothing.

Runs the program on single frames (BPF_PROG_TEST_RUN); root, clang and libbpf only.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.trial import unittest
from tests.system.bpf_support import fast_path_skip_reason

PEER_IP, PEER_PORT = "198.51.100.7", 40000
RELAY_IP, RELAY_PORT = "192.0.2.1", 3544
PREFIX = bytes.fromhex("20010000")
#: A Teredo peer (server 192.0.2.10, mapping PEER_IP:PEER_PORT embedded, flags 0).
PEER = PREFIX + bytes.fromhex("c000020a") + b"\x00\x00" + (PEER_PORT ^ 0xFFFF).to_bytes(2, "big") + bytes(
    b ^ 0xFF for b in socket.inet_aton(PEER_IP)
)
SERVED = bytes.fromhex("20010db8000000000000000000000030")  # 2000::/8 is served
UNSERVED = bytes.fromhex("3fff0000000000000000000000000001")
XDP_PASS = 2


def _sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return int(s)


def frame(
    dst: bytes = SERVED,
    next_header: int = 59,
    payload: bytes = b"",
    hop_limit: int = 64,
    sport: int = PEER_PORT,
    corrupt: bool = False,
) -> bytes:
    """
    An Ethernet frame carrying the Teredo datagram from the peer's mapping to the relay.
    """
    v6 = struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit) + PEER + dst + payload
    udp_len = 8 + len(v6)
    src, dst4 = socket.inet_aton(PEER_IP), socket.inet_aton(RELAY_IP)
    pseudo = src + dst4 + struct.pack("!BBH", 0, 17, udp_len)
    csum = 0xFFFF - _sum(pseudo + struct.pack("!HHHH", sport, RELAY_PORT, udp_len, 0) + v6)
    if corrupt:
        csum ^= 0x0101
    udp = struct.pack("!HHHH", sport, RELAY_PORT, udp_len, csum or 0xFFFF)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 1, 0, 64, 17, 0, src, dst4)
    ip = ip[:10] + (0xFFFF - _sum(ip)).to_bytes(2, "big") + ip[12:]
    return bytes.fromhex("020000000001020000000002") + b"\x08\x00" + ip + udp + v6


class RelayHeardTests(unittest.TestCase):
    skip = fast_path_skip_reason()

    def setUp(self) -> None:
        from teredonode.fastpath import relay
        from teredonode.fastpath.libbpf import BpfObject, load_libbpf
        from teredonode.fastpath.program import object_path

        self.obj: Any = BpfObject(load_libbpf(), str(object_path(source_name=relay.SOURCE_NAME)), {"peers": 16})
        self.addCleanup(self.obj.close)
        table = bytearray(256)
        table[0x20] = 1
        config = relay.CONFIG.pack(
            1, 1, 1, socket.inet_aton(RELAY_IP), RELAY_PORT.to_bytes(2, "big"), PREFIX, int(30e9),
            1, 0, socket.inet_aton(RELAY_IP), bytes(table), b"", 0, 0,
        )
        self.obj.update(self.obj.map_fd("config"), (0).to_bytes(4, "little"), config)
        # The test run's frames arrive on loopback, addressed to 02:00:00:00:00:01.
        self.obj.update(
            self.obj.map_fd("ifaces"), socket.if_nametoindex("lo").to_bytes(4, "little"),
            bytes.fromhex("020000000001") + bytes(2),
        )
        self.peers = self.obj.map_fd("peers")
        self.PEER = relay.PEER
        self.obj.update(
            self.peers, PEER, relay.PEER.pack(socket.inet_aton(PEER_IP), PEER_PORT.to_bytes(2, "big"), 1, 0, 1)
        )

    def heard(self, data: bytes) -> bool:
        """
        Run the rx program on C{data}: did it leave the frame to the stack, and move the
        peer's time?  (It must pass every frame these tests send.)
        """
        verdict, _ = self.obj.test_run("teredo_relay_rx", data)
        self.assertEqual(verdict, XDP_PASS)
        raw = self.obj.lookup(self.peers, PEER, self.PEER.size)
        assert raw is not None
        last_rx = int(self.PEER.unpack(raw)[2])
        return last_rx > 1

    def test_bubble(self) -> None:
        """
        A bubble from the peer's mapping goes to Python, and the entry is heard.
        """
        self.assertTrue(self.heard(frame()))

    def test_bubbleToAnyDestination(self) -> None:
        """
        A bubble's destination is not checked (the Python relay takes any), so it is heard.
        """
        self.assertTrue(self.heard(frame(dst=UNSERVED)))

    def test_hopLimitOne(self) -> None:
        """
        A packet the kernel answers with Time Exceeded goes to Python, which hears it.
        """
        self.assertTrue(self.heard(frame(next_header=17, payload=bytes(8), hop_limit=1)))

    def test_anotherHostsFrame(self) -> None:
        """
        A frame addressed to another host's MAC (seen in promiscuous mode, or through a
        macvlan) is the kernel's to drop: the program leaves it alone, not heard.
        """
        self.assertTrue(self.heard(frame()))
        self.obj.update(self.peers, PEER, self.PEER.pack(socket.inet_aton(PEER_IP), PEER_PORT.to_bytes(2, "big"), 1, 0, 1))
        other = bytearray(frame())
        other[5] ^= 0x10
        self.assertFalse(self.heard(bytes(other)))

    def test_otherPort(self) -> None:
        """
        Not from the proven mapping: not heard.
        """
        self.assertFalse(self.heard(frame(sport=PEER_PORT + 1)))

    def test_corruptChecksum(self) -> None:
        """
        The kernel drops it before the relay's socket: not heard.
        """
        self.assertFalse(self.heard(frame(corrupt=True)))

    def test_unservedDestination(self) -> None:
        """
        A packet (not a bubble) to a destination the relay does not serve is dropped
        (wrong-destination) before the Python relay hears the peer.
        """
        self.assertFalse(self.heard(frame(dst=UNSERVED, next_header=17, payload=bytes(8))))
