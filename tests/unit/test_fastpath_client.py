"""
The client fast path's control plane, without the kernel: the programs' counter names and
config layout, which peers it carries, the config following the client's address, the
C{fast-path} setting's one log line and the client's one-line refusal.  The programs
themselves are tested against the Python client in tests/system/test_fastpath_client.py.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import ClientSettings
from teredonode.fastpath import client as fastclient
from teredonode.fastpath.offloads import Offloads
from teredonode.fastpath.program import FastPathUnavailable
from teredonode.fastpath.relay import PEER
from teredonode.peers import PeerList
from teredonode.roles.client import COUNTERS as CLIENT_COUNTERS

SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "teredo_client.bpf.c"
OWN = bytes.fromhex("20010000cb00710a000063bf39cc9bf4")
PEER6 = bytes.fromhex("20010000cb00710a00001234b8ff3cf4")
NATIVE = socket.inet_pton(socket.AF_INET6, "2001:db8::30")
MAPPING = ("198.51.100.11", 40000)


def settings(**kw: Any) -> ClientSettings:
    return ClientSettings(server="203.0.113.10", **kw)


class ProgramInterfaceTests(SynchronousTestCase):
    def test_counterNamesMatchTheProgram(self) -> None:
        """
        The C enum's named entries are the first of L{COUNTERS}, in order, and the ones
        folded into the client's counters are client counters.
        """
        text = SOURCE.read_text()
        entries = re.findall(r"^\s*C_[A-Z_]+,\s*/\* \"([a-z-]+)\"", text, re.M)
        self.assertEqual(tuple(entries), fastclient.MERGED)
        every = re.findall(r"^\s*(C_[A-Z_]+),", text, re.M)
        self.assertEqual(len([e for e in every if e != "C_COUNT"]), len(fastclient.COUNTERS))
        self.assertTrue(set(fastclient.MERGED) <= set(CLIENT_COUNTERS))

    def test_configLayout(self) -> None:
        """
        104 bytes: eight words, two quads, the address, a word, 8 addresses and a word,
        which ends on the quads' alignment; fields where the program reads them.
        """
        self.assertEqual(fastclient.CONFIG.size, 32 + 16 + 16 + 4 + 32 + 4)
        value = fastclient.pack_config(7, 9, "203.0.113.20", 40100, OWN, ["203.0.113.20"], 63)
        self.assertEqual(len(value), fastclient.CONFIG.size)
        self.assertEqual(value[:4], (1).to_bytes(4, "little"))
        self.assertEqual(value[4:8], (7).to_bytes(4, "little"))
        self.assertEqual(value[8:12], (9).to_bytes(4, "little"))
        self.assertEqual(value[12:16], socket.inet_aton("203.0.113.20"))
        self.assertEqual(value[16:18], (40100).to_bytes(2, "big"))
        self.assertEqual(value[20:24], bytes.fromhex("20010000"))
        self.assertEqual(value[24:28], (63).to_bytes(4, "little"))
        self.assertEqual(int.from_bytes(value[32:40], "little"), 30 * 10**9)
        self.assertEqual(int.from_bytes(value[40:48], "little"), 3 * 10**9)  # RELAY_SILENCE
        self.assertEqual(value[48:64], OWN)
        self.assertEqual(value[64:68], (1).to_bytes(4, "little"))
        self.assertEqual(value[68:72], socket.inet_aton("203.0.113.20"))
        self.assertEqual(value[100:104], bytes(4))
        self.assertEqual(len(value), 104)
        value = fastclient.pack_config(7, 9, "203.0.113.20", 40100, OWN, [], segments=True)
        self.assertEqual(value[100:104], (1).to_bytes(4, "little"))

    def test_disabledWithoutAddress(self) -> None:
        value = fastclient.pack_config(7, 9, "0.0.0.0", 40100, None, [])
        self.assertEqual(value[:4], bytes(4))

    def test_tooManyAddresses(self) -> None:
        with self.assertRaises(FastPathUnavailable):
            fastclient.pack_config(1, 2, "203.0.113.20", 1, OWN, [f"10.0.0.{i}" for i in range(9)])


class FakeObject:
    """The maps as dicts, behind L{teredonode.fastpath.libbpf.BpfObject}'s calls."""

    FDS = {"config": 0, "counters": 1, "peers": 2}

    def __init__(self) -> None:
        self.maps: dict[int, dict[bytes, bytes]] = {fd: {} for fd in self.FDS.values()}
        self.attached: list[tuple[str, int, bool]] = []

    def map_fd(self, name: str) -> int:
        return self.FDS[name]

    def value_size(self, name: str) -> int:
        return {"config": fastclient.CONFIG.size, "peers": PEER.size}[name]

    def possible_cpus(self) -> int:
        return 1

    def lookup(self, fd: int, key: bytes, size: int) -> bytes | None:
        return self.maps[fd].get(key)

    def update(self, fd: int, key: bytes, value: bytes) -> None:
        self.maps[fd][key] = value

    def delete(self, fd: int, key: bytes) -> bool:
        return self.maps[fd].pop(key, None) is not None

    def items(self, fd: int, key_size: int, value_size: int) -> list[tuple[bytes, bytes]]:
        return list(self.maps[fd].items())

    def attach_tcx(self, program: str, ifindex: int, egress: bool) -> None:
        self.attached.append((program, ifindex, egress))

    def close(self) -> None:
        pass


class FakeTunnel:
    def __init__(self) -> None:
        self.address: bytes | None = OWN
        self.prefix = bytes.fromhex("20010000")
        self.portGuessing: Any = None
        self.upnpSymmetric = False
        self.peerObserver: Any = None
        self.peers = PeerList(time.time)


class FakeOffloads:
    def __init__(self, checksumming: bool) -> None:
        self.offloading = checksumming
        self.device = False

    def checksumming(self, index: int) -> bool:
        return self.offloading

    def completesSegments(self, index: int) -> bool:
        return bool(index) and (not self.offloading or self.device)


class FakeClient:
    def __init__(self) -> None:
        self.settings = settings()
        self.tunnel = FakeTunnel()
        self.server = "203.0.113.10"
        self.secondary = "203.0.113.11"

    def localPort(self) -> int:
        return 40100


class ObserverTests(SynchronousTestCase):
    """
    Which trusted peers the client's fast path carries, and the config it writes first.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.peers = PeerList(self.clock.seconds)
        self.obj = FakeObject()
        self.fast = fastclient.ClientFastPath(self.obj, self.clock, self.peers)
        self.offloads = FakeOffloads(True)
        self.fast.offloads = self.offloads
        self.client = FakeClient()
        self.plans: list[tuple[str, str | None]] = []

        def plan(bind: str, server: str | None) -> tuple[list[str], str, int]:
            self.plans.append((bind, server))
            return ["203.0.113.20"], "203.0.113.20", 5

        self.patch(socket, "if_nametoindex", lambda name: 11)
        started = self.fast.startClient(self.client, "tun0", plan=plan, rxInterfaces=lambda bind: [("eth0", 5)])
        self.assertTrue(started)
        self.map = self.obj.maps[2]

    def trusted(self, address: bytes = PEER6, mapping: tuple[str, int] = MAPPING) -> Any:
        peer = self.peers.create(address)
        peer.trust(mapping, self.clock.seconds())
        self.fast.peerChanged(peer, "trusted")
        return peer

    def test_attached(self) -> None:
        self.assertEqual(
            self.obj.attached, [(fastclient.RX, 5, False), (fastclient.TX, 11, True)]
        )
        self.assertEqual(self.fast.interfaces, ["eth0", "tun0"])

    def test_teredoAndNativePeers(self) -> None:
        """Both Teredo peers and native peers behind a relay are carried."""
        self.trusted()
        self.trusted(NATIVE, ("198.51.100.50", 3544))
        self.clock.advance(0)
        self.assertEqual(set(self.map), {PEER6, NATIVE})

    def test_configFollowsTheAddress(self) -> None:
        """
        Before entries are written the config holds the client's address, port and route
        (looked up once per address).
        """
        self.trusted()
        self.clock.advance(0)
        config = self.obj.maps[0][(0).to_bytes(4, "little")]
        self.assertEqual(config[:4], (1).to_bytes(4, "little"))
        self.assertEqual(config[4:8], (11).to_bytes(4, "little"))
        self.assertEqual(config[48:64], OWN)
        self.assertEqual(config[16:18], (40100).to_bytes(2, "big"))
        self.trusted(NATIVE, ("198.51.100.50", 3544))
        self.clock.advance(0)
        self.assertEqual(self.plans, [("0.0.0.0", "203.0.113.10")])
        other = bytes.fromhex("20010000cb00710a000063bf39cc9bf5")
        self.client.tunnel.address = other
        self.trusted(PEER6[:15] + b"\x09")
        self.clock.advance(0)
        self.assertEqual(self.obj.maps[0][(0).to_bytes(4, "little")][48:64], other)

    def test_noRoute(self) -> None:
        """
        No route toward the server: the config stays disabled (every packet to Python), and
        nothing is raised into the reactor.
        """

        def plan(bind: str, server: str | None) -> tuple[list[str], str, int]:
            raise FastPathUnavailable("no route toward the server 203.0.113.10")

        self.fast.close()
        self.obj.maps[0].clear()
        self.fast.startClient(self.client, "tun0", plan=plan, rxInterfaces=lambda bind: [("eth0", 5)])
        self.trusted()
        self.clock.advance(0)
        self.assertEqual(self.obj.maps[0][(0).to_bytes(4, "little")], bytes(fastclient.CONFIG.size))

    def segments(self) -> int:
        """The config's segments flag."""
        config = self.obj.maps[0][(0).to_bytes(4, "little")]
        return int.from_bytes(config[100:104], "little")

    def newAddress(self, last: str) -> None:
        self.client.tunnel.address = bytes.fromhex("20010000cb00710a000063bf39cc9b" + last)
        self.trusted(NATIVE[:15] + bytes.fromhex(last), ("198.51.100.50", 3544))
        self.clock.advance(0)

    def test_partialChecksums(self) -> None:
        """
        Packets with partial checksums and TCP super-packets are carried only when the
        outgoing interface completes checksums in software or is a device (which completes
        the inner checksums of what it sends as a UDP tunnel packet), not over a veth that
        offloads.
        """
        self.trusted()
        self.clock.advance(0)
        self.assertEqual(self.segments(), 0)
        self.offloads.offloading = False
        self.newAddress("f5")
        self.assertEqual(self.segments(), 1)
        self.offloads.offloading = True
        self.offloads.device = True
        self.newAddress("f6")
        self.assertEqual(self.segments(), 1)
        self.offloads.device = False
        self.newAddress("f7")
        self.assertEqual(self.segments(), 0)
        self.assertEqual(fastclient.CONFIG.size, 104)

    def test_followsOffloads(self) -> None:
        """
        At each sweep the outgoing interface's offloads are read again: switched (ethtool -K)
        while the client runs, the config's segments flag follows, with one log line, and
        the route is looked up again for it.
        """
        lines: list[str] = []
        observer = cast(ILogObserver, lambda event: lines.append(formatEvent(event)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.trusted()
        self.clock.advance(0)
        self.fast.sweeping()
        self.assertEqual((self.segments(), len(self.plans), lines), (0, 1, []))
        self.offloads.offloading = False
        self.fast.sweeping()
        self.assertEqual((self.segments(), len(self.plans)), (1, 2))
        self.assertEqual(len(lines), 1)
        self.assertIn("checksum offload changed", lines[0])
        self.assertIn("now carried by the kernel fast path", lines[0])
        self.fast.sweeping()
        self.assertEqual((self.segments(), len(self.plans), len(lines)), (1, 2, 1))
        self.offloads.offloading = True
        self.fast.sweeping()
        self.assertEqual(self.segments(), 0)
        self.assertIn("now handed to the Python path", lines[-1])

    def test_followsOffloadsNotAfterAFailedPlan(self) -> None:
        """
        When the route toward the server cannot be found the config stays disabled and the
        sweeps have nothing to follow: no log line every 10 s.
        """
        lines: list[str] = []
        observer = cast(ILogObserver, lambda event: lines.append(formatEvent(event)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        def plan(bind: str, server: str | None) -> tuple[list[str], str, int]:
            raise FastPathUnavailable("no route toward the server 203.0.113.10")

        self.fast.close()
        self.fast.startClient(self.client, "tun0", plan=plan, rxInterfaces=lambda bind: [("eth0", 5)])
        self.trusted()
        self.clock.advance(0)
        del lines[:]
        self.offloads.offloading = False
        for _ in range(3):
            self.fast.sweeping()
        self.assertEqual(lines, [])

    def test_notCarried(self) -> None:
        """
        Peers the Python client sends to differently stay on the Python path: one at the
        server's endpoint, one reached from a random port, one with a relay re-check
        pending, a symmetric peer sent to at its embedded mapping, a local peer.
        """
        self.trusted(mapping=("203.0.113.10", 3544))
        random = self.peers.create(PEER6[:15] + b"\x01")
        random.trust(MAPPING, self.clock.seconds())
        random.random_port = 50000
        self.fast.peerChanged(random, "trusted")
        checking = self.peers.create(NATIVE)
        checking.trust(("198.51.100.50", 3544), self.clock.seconds())
        checking.nonce = b"12345678"
        self.fast.peerChanged(checking, "trusted")
        local = self.peers.create(PEER6[:15] + b"\x02")
        local.trust(MAPPING, self.clock.seconds())
        local.local = True
        self.fast.peerChanged(local, "trusted")
        self.client.tunnel.upnpSymmetric = True
        symmetric = self.peers.create(PEER6[:15] + b"\x03")
        symmetric.trust(MAPPING, self.clock.seconds())
        symmetric.symmetric_peer = True
        self.fast.peerChanged(symmetric, "trusted")
        self.clock.advance(0)
        self.assertEqual(self.map, {})

    def test_stopForDetaches(self) -> None:
        self.client.tunnel.peerObserver = self.fast
        self.fast.stopFor(self.client)
        self.assertNotEqual(self.client.tunnel.peerObserver, self.fast)
        self.assertEqual(self.fast.interfaces, [])

    def test_merged(self) -> None:
        counters = {name: 1 for name in CLIENT_COUNTERS}
        self.obj.maps[1] = {i.to_bytes(4, "little"): (10 + i).to_bytes(8, "little") for i in range(5)}
        merged, status = fastclient.merged(self.fast, dict(counters))
        self.assertEqual((merged["received"], merged["delivered"], merged["sent"]), (11, 12, 13))
        assert status is not None
        self.assertEqual(status["carried"], 11 + 12)
        self.assertEqual(status["passed-to-python"], 13 + 14)
        self.assertEqual(fastclient.merged(None, dict(counters)), (counters, None))


class StartTests(SynchronousTestCase):
    """
    One log line says which path carries trusted peers' packets; C{"on"} that cannot run
    stops the client with one line.
    """

    def setUp(self) -> None:
        self.lines: list[str] = []

        def observer(event: dict[str, Any]) -> None:
            if event.get("log_namespace", "").startswith("teredonode.fastpath"):
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(cast(ILogObserver, observer))
        self.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))

    def load(self, mode: str, loads: bool = True) -> Any:
        class Loaded(fastclient.ClientFastPath):
            def __init__(self) -> None:
                self.interfaces = []

            @classmethod
            def load(cls, settings: Any, clock: Any, peers: Any, path: Any = None) -> Any:
                if not loads:
                    raise FastPathUnavailable("clang is not installed")
                return cls()

        self.patch(fastclient, "ClientFastPath", Loaded)
        return fastclient.load(settings(fast_path=mode), Clock(), PeerList(time.time))

    def test_default(self) -> None:
        self.assertEqual(settings().fast_path, "auto")

    def test_off(self) -> None:
        self.assertIsNone(self.load("off"))
        self.assertEqual(len(self.lines), 1)
        self.assertIn('Python path (fast-path = "off")', self.lines[0])

    def test_autoWithoutPrograms(self) -> None:
        self.assertIsNone(self.load("auto", loads=False))
        self.assertEqual(len(self.lines), 1)
        self.assertIn("kernel fast path unavailable: clang is not installed", self.lines[0])

    def test_onWithoutPrograms(self) -> None:
        with self.assertRaises(FastPathUnavailable):
            self.load("on", loads=False)
        self.assertEqual(self.lines, [])

    def test_loadForOnExits(self) -> None:
        """The client's refusal is one line naming the setting and the reason."""

        def loader(settings: Any, clock: Any, peers: Any) -> Any:
            raise FastPathUnavailable("clang is not installed")

        with self.assertRaises(SystemExit) as caught:
            fastclient.loadFor(FakeClient(), loader, Clock())
        self.assertEqual(str(caught.exception), 'teredo: client: fast-path = "on" but clang is not installed')
        self.assertIsNone(fastclient.loadFor(FakeClient(), None, Clock()))


class OffloadsTests(SynchronousTestCase):
    """
    The interface facts the control planes read (teredonode.fastpath.offloads).
    """

    def test_loopback(self) -> None:
        """
        The loopback interface offloads checksums and is no device, so segments cut from a
        super-packet sent there would keep partial checksums.
        """
        offloads = Offloads()
        index = socket.if_nametoindex("lo")
        self.assertFalse(offloads.hardware(index))
        self.assertTrue(offloads.checksumming(index))
        self.assertFalse(offloads.completesSegments(index))
        self.assertFalse(offloads.completesSegments(0))

    def test_unknown(self) -> None:
        """An interface that is gone counts as offloading and as no device."""
        offloads = Offloads()
        self.assertTrue(offloads.checksumming(2**31 - 1))
        self.assertFalse(offloads.hardware(2**31 - 1))
