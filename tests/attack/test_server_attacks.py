"""
Attacks on our Teredo server over real sockets in lab namespaces: what an operator fears from
a server on the public Internet (docs/security.md).

  - open relay: junk appended to a bubble must not reach the IPv4:port a Teredo destination
    embeds, while well-formed RFC 6081 trailers still do;
  - RA reflection: spoofed Router Solicitations (raw IPv4 with IP_HDRINCL) from many ports of
    one victim address, or from many addresses of its /24, yield a bounded number of RA
    bytes toward it;
  - secure qualification: an unknown client identifier gets no RA.

The attacker is the lab's public host "dualhost"; victims are the public host "relay" (a
UDP socket or tcpdump there) or, for addresses that no host owns, tcpdump on the server's
own interface (what leaves the server toward them).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
import time
from typing import Any

from twisted.trial import unittest

from teredonode.lab.topology import BRIDGE
from teredonode.wire import ipv6
from teredonode.wire.address import CLIENT_LINK_LOCAL_RESTRICTED, TeredoAddress
from teredonode.wire.teredo import (
    MAX_FORWARDED_TRAILERS,
    AuthIndicator,
    NonceTrailer,
    RandomPortTrailer,
    classify,
    encode_payload,
    encode_trailers,
)
from tests.system.lab_fixture import LabAssertions, use_lab

ATTACKER = "dualhost"
VICTIM = "relay"
#: A Router Advertisement as our server sends it: auth 13 + origin 8 + IPv6 40 + RA 16 +
#: prefix option 32 + MTU option 8 bytes of UDP payload.
RA_BYTES = 117

#: Sends UDP datagrams with forged IPv4 sources through a raw socket (IP_HDRINCL).
#: argv: destination ip, destination port, payload hex, then "ip:port" sources (or a file
#: of them with "@path"), and "--rate N" to pace (packets per second, 0: as fast as possible).
RAW_SENDER = textwrap.dedent(
    """
    import socket, struct, sys, time

    def checksum(data):
        if len(data) % 2:
            data += b"\\0"
        total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    def datagram(src, sport, dst, dport, payload):
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                             socket.inet_aton(src), socket.inet_aton(dst))
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return header + udp

    dst, dport, payload = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
    sources = [s.rsplit(":", 1) for s in sys.argv[4].split(",")]
    packets = [datagram(ip, int(port), dst, dport, payload) for ip, port in sources]
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    target = (dst, 0)
    for i, packet in enumerate(packets):
        sock.sendto(packet, target)
        if i % 50 == 49:
            time.sleep(0.002)  # keep within the server's socket buffer: count its decisions
    print(len(packets))
    """
)

#: A UDP socket that sends one payload per argument to the server and collects what comes
#: back for a while.  argv: bind ip, bind port, server ip, seconds, payload hex...
UDP_PEER = textwrap.dedent(
    """
    import json, socket, sys, time
    ip, port, server, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, port))
    for payload in sys.argv[5:]:
        sock.sendto(bytes.fromhex(payload), (server, 3544))
    sock.settimeout(0.1)
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, source = sock.recvfrom(65535)
        except socket.timeout:
            continue
        got.append([data.hex(), source[0], source[1]])
    print(json.dumps(got))
    """
)

#: A UDP socket recording everything it receives for a while.  argv: ip, port, seconds.
UDP_LISTENER = textwrap.dedent(
    """
    import json, socket, sys, time
    ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, port))
    sock.settimeout(0.1)
    print("ready", flush=True)
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, source = sock.recvfrom(65535)
        except socket.timeout:
            continue
        got.append([data.hex(), source[0], source[1]])
    print(json.dumps(got), flush=True)
    """
)


def rs_payload(client_id: bytes = b"", nonce: bytes = b"ATTACK!!") -> bytes:
    packet = ipv6.icmpv6_packet(CLIENT_LINK_LOCAL_RESTRICTED, ipv6.ALL_ROUTERS, ipv6.RouterSolicitation(), 255)
    return encode_payload(packet, AuthIndicator(nonce, client_id))


def teredo(mapping: tuple[str, int], server: str) -> bytes:
    return TeredoAddress(b"\x20\x01\x00\x00", server, 0, mapping[1], mapping[0]).to_bytes()


def udp_lengths(capture: subprocess.Popen[Any]) -> list[int]:
    """
    Stop a L{Lab.capture} and return the UDP payload length of every packet it printed.
    """
    capture.terminate()
    out, _ = capture.communicate(timeout=10)
    return [int(m.group(1)) for m in re.finditer(r"UDP, length (\d+)", out)]


class ServerAttackTestCase(LabAssertions, unittest.TestCase):
    """
    A lab with our server (settings per test) and helpers to attack it.
    """

    settings: dict[str, object] = {}

    def setUp(self) -> None:
        self.lab = use_lab(self, "default")
        self.server_ip = self.lab.host("server").ipv4[0]
        for host in ("server", ATTACKER):
            self.lab.exec(
                host,
                ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                 "net.ipv4.conf.eth0.rp_filter=0"],
            )
        self.lab.start_teredonode("our-server", "server", "server", settings={"interface": "", **self.settings})
        self.waitStatus("our-server", lambda s: s["server"]["state"] == "serving", 15, "serving")
        self.assertTrue(self.lab.wait_udp_listening("server", 3544, 10))

    def python(self, host: str, script: str, *args: str, timeout: float = 30.0) -> str:
        result = self.lab.exec(host, [sys.executable, "-c", script, *args], timeout=timeout)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def spoof(self, sources: list[tuple[str, int]], payload: bytes) -> None:
        """
        Send C{payload} to the server's primary address once from each forged source.
        """
        spec = ",".join(f"{ip}:{port}" for ip, port in sources)
        out = self.python(ATTACKER, RAW_SENDER, self.server_ip, "3544", payload.hex(), spec)
        self.assertEqual(int(out), len(sources))

    def serverStatus(self) -> dict[str, Any]:
        server: dict[str, Any] = self.lab.node_status("our-server")["server"]
        return server


class OpenRelayTests(ServerAttackTestCase):
    def relay_through(self, payload_for: list[bytes], port: int, seconds: float = 2.0) -> list[bytes]:
        """
        The attacker sends each payload (built for its own mapping) to the server; return
        what the victim's UDP socket on C{port} received.
        """
        victim_ip = self.lab.ipv4(VICTIM)
        listener = self.lab.popen(
            VICTIM,
            [sys.executable, "-c", UDP_LISTENER, victim_ip, str(port), str(seconds + 1.0)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: listener.kill() if listener.poll() is None else None)
        assert listener.stdout is not None
        self.assertEqual(listener.stdout.readline().strip(), "ready")
        self.python(ATTACKER, UDP_PEER, self.lab.ipv4(ATTACKER), "40000", self.server_ip, "0.2",
                    *(p.hex() for p in payload_for))
        out, _ = listener.communicate(timeout=seconds + 10)
        return [bytes.fromhex(d) for d, _, _ in json.loads(out)]

    def bubble_to_victim(self, port: int) -> bytes:
        attacker = teredo((self.lab.ipv4(ATTACKER), 40000), self.server_ip)
        return ipv6.bubble(attacker, teredo((self.lab.ipv4(VICTIM), port), self.server_ip))

    def test_junk_after_bubble_not_relayed(self) -> None:
        """
        A bubble with 1000 bytes of junk, to a Teredo destination embedding the victim's
        IPv4:port: nothing larger than origin indication + bubble + the longest forwardable
        trailers (8 + 40 + MAX_FORWARDED_TRAILERS bytes) reaches the victim, and never the junk.
        """
        bubble = self.bubble_to_victim(7000)
        # Four "unknown, skippable" trailers (type 0x80) of 248 bytes: the decoder accepts
        # them, so the packet is not simply discarded as malformed.
        junk = b"".join(bytes((0x80, 248)) + (b"ATTACKER-DATA-" * 18)[:248] for _ in range(4))
        received = self.relay_through([bubble + junk] * 3, 7000)
        self.assertTrue(received, f"the bubble itself should still be forwarded: {self.serverStatus()}")
        for data in received:
            self.assertLessEqual(len(data), 8 + 40 + MAX_FORWARDED_TRAILERS)
            self.assertNotIn(b"ATTACKER-DATA", data)
        self.assertGreaterEqual(self.serverStatus()["trailers-stripped"]["invalid"], 1)

    def test_legitimate_trailers_still_relayed(self) -> None:
        """
        A bubble with a Nonce and a Random Port trailer arrives with them intact.
        """
        bubble = self.bubble_to_victim(7001)
        trailers = encode_trailers([NonceTrailer(b"\x11\x22\x33\x44"), RandomPortTrailer(4321)])
        [data] = self.relay_through([bubble + trailers], 7001)
        packet = classify(data)
        self.assertEqual(packet.ipv6, bubble)
        self.assertEqual(packet.trailer_bytes, trailers)


class ReflectionTestCase(ServerAttackTestCase):
    #: What one source key may get (the server's defaults): rs-initial RAs at once, then
    #: rs-rate a second while the attack lasts.
    RS_INITIAL, RS_RATE = 4, 0.5

    def bound_ras(self, elapsed: float) -> int:
        """
        The RAs the limiter allows toward one victim in an attack of C{elapsed} seconds
        (about 7 for the 2 to 6 s these take), plus one for a refill during the last RAs.
        """
        return self.RS_INITIAL + math.ceil(self.RS_RATE * elapsed) + 1

    def ra_bytes_toward(self, dst: str, sources: list[tuple[str, int]]) -> tuple[int, float]:
        """
        Spoof an RS from each source; return the RA bytes the server sent toward C{dst}
        (a host or a net) and the seconds the attack took.  tcpdump listens on the lab's
        Internet bridge, not on the server: RAs the XDP fast path sends never pass the
        server's own capture point.
        """
        capture = self.lab.capture(
            "inet", ["udp", "and", "src", "port", "3544", "and", "dst", *dst.split()],
            interface=BRIDGE, seconds=30, count=5000,
        )
        started = time.monotonic()
        self.spoof(sources, rs_payload())
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # the last RAs leave
        return sum(udp_lengths(capture)), elapsed


class ReflectionTests(ReflectionTestCase):
    def test_many_ports_one_address(self) -> None:
        """
        2000 RSs forged from 2000 ports of one victim address: at most rs-initial + rs-rate x
        t RAs reach it (keys of address and port gave each port a full burst).
        """
        victim = self.lab.ipv4(VICTIM)
        sources = [(victim, port) for port in range(20000, 22000)]
        total, elapsed = self.ra_bytes_toward(f"host {victim}", sources)
        bound = self.bound_ras(elapsed)
        self.assertGreater(total, 0, "the first RSs are answered")
        self.assertLessEqual(total, bound * RA_BYTES, f"{elapsed:.1f} s")
        self.assertGreaterEqual(self.serverStatus()["drops"]["rate-limited-rs"], 2000 - bound)


class SlashTwentyFourReflectionTests(ReflectionTestCase):
    settings = {"rs-limit-prefix": 24}

    def test_many_addresses_of_one_slash_24(self) -> None:
        """
        rs-limit-prefix = 24: RSs forged from 250 addresses x 4 ports of the victim's /24
        (198.51.100.0/24, the NATs' side) reflect at most rs-initial + rs-rate x t RAs toward
        that /24.
        """
        sources = [(f"198.51.100.{host}", 30000 + port) for port in range(4) for host in range(2, 252)]
        total, elapsed = self.ra_bytes_toward("net 198.51.100.0/24", sources)
        self.assertGreater(total, 0)
        self.assertLessEqual(total, self.bound_ras(elapsed) * RA_BYTES, f"{elapsed:.1f} s")


class SecureQualificationAttackTests(ServerAttackTestCase):
    settings = {"secure": True, "clients.alice": "correct horse battery staple"}

    def test_unknown_identifier_gets_no_ra(self) -> None:
        """
        An RS with an unknown client identifier gets nothing back, and is counted.
        """
        out = self.python(ATTACKER, UDP_PEER, self.lab.ipv4(ATTACKER), "40001", self.server_ip, "2.0",
                          rs_payload(b"mallory").hex())
        self.assertEqual(json.loads(out), [])
        self.assertEqual(self.serverStatus()["drops"]["auth-failed"], 1)
        self.assertEqual(self.serverStatus()["counters"]["ra"], 0)


del ServerAttackTestCase, ReflectionTestCase
