"""
The relay fast path's control plane, without the kernel: the programs' counter names and
config layout, the served-network tables, the C{fast-path} setting's one log line, and the
peer observer (what it writes to and removes from the peer map, when, and how it folds the
programs' times back into the peer list).  The programs themselves are tested against the
Python relay in tests/system/test_fastpath_relay.py.
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
from zope.interface.verify import verifyObject

from teredonode.config import RelaySettings
from teredonode.fastpath import relay as fastrelay
from teredonode.fastpath.libbpf import BPFError
from teredonode.fastpath.program import FastPathUnavailable
from teredonode.interfaces import IPeerObserver
from teredonode.peers import PeerList
from teredonode.roles.relay import COUNTERS as RELAY_COUNTERS, servedBy, servedTables

SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "teredo_relay.bpf.c"
CLIENT = bytes.fromhex("20010000cb00710a000063bf39cc9bf4")
MAPPING = ("198.51.100.11", 40000)


class ProgramInterfaceTests(SynchronousTestCase):
    def test_counterNamesMatchTheProgram(self) -> None:
        """
        The C enum's named entries are the first of L{COUNTERS}, in order, and the ones
        folded into the relay's counters are relay counters.
        """
        entries = re.findall(r"^\s*C_[A-Z_]+,\s*/\* \"([a-z-]+)\"", SOURCE.read_text(), re.M)
        self.assertEqual(tuple(entries), fastrelay.COUNTERS[: len(entries)])
        self.assertEqual(tuple(entries), fastrelay.MERGED)
        every = re.findall(r"^\s*(C_[A-Z_]+),", SOURCE.read_text(), re.M)
        self.assertEqual(len([e for e in every if e != "C_COUNT"]), len(fastrelay.COUNTERS))
        self.assertTrue(set(fastrelay.MERGED) <= set(RELAY_COUNTERS))

    def test_configLayout(self) -> None:
        """
        592 bytes: six words, a quad, two words, 8 addresses, the 256-byte table, 8
        (mask, network) pairs of 32 bytes and two words; fields where the program reads
        them.
        """
        self.assertEqual(fastrelay.CONFIG.size, 24 + 8 + 8 + 32 + 256 + 256 + 8)
        value = fastrelay.pack_config(RelaySettings(), 7, 9, "203.0.113.20", 3544, ["203.0.113.20"])
        self.assertEqual(len(value), fastrelay.CONFIG.size)
        self.assertEqual(value[4:8], (7).to_bytes(4, "little"))
        self.assertEqual(value[12:16], socket.inet_aton("203.0.113.20"))
        self.assertEqual(value[16:18], (3544).to_bytes(2, "big"))
        self.assertEqual(value[20:24], bytes.fromhex("20010000"))
        self.assertEqual(value[584:588], bytes(4))
        self.assertEqual(value[588:592], bytes(4))
        value = fastrelay.pack_config(RelaySettings(), 7, 9, "203.0.113.20", 3544, [], segments=True)
        self.assertEqual(value[584:592], (1).to_bytes(4, "little") + bytes(4))
        value = fastrelay.pack_config(RelaySettings(), 7, 9, "203.0.113.20", 3544, [], native=True)
        self.assertEqual(value[584:592], bytes(4) + (1).to_bytes(4, "little"))
        self.assertEqual(fastrelay.PEER.size, 32)

    def test_tablesDecideAsServedBy(self) -> None:
        """
        RL-RX-05: the table and masks the program gets decide as the Python relay does.
        """
        networks = ("2000::/3", "fc00::/7", "2a00:1234::/32")
        serves = servedBy(networks, bytes.fromhex("20010000"))
        table, longer = servedTables(networks)
        for text in ("2001:db8::1", "2001:0:1::1", "fd00::1", "fe80::1", "ff02::1", "2a00:1234::5", "4000::1"):
            address = socket.inet_pton(socket.AF_INET6, text)
            value = int.from_bytes(address, "big")
            program = (
                address[:4] != bytes.fromhex("20010000")
                and address[0] < 0xFE
                and (table[address[0]] or any(value & mask == net for mask, net in longer))
            )
            self.assertEqual(program, serves(address), text)

    def test_tooManyLongerNetworks(self) -> None:
        settings = RelaySettings(serve=tuple(f"2a00:{i}::/32" for i in range(9)))
        with self.assertRaises(FastPathUnavailable):
            fastrelay.pack_config(settings, 1, 2, "203.0.113.20", 3544, ["203.0.113.20"])


class StartTests(SynchronousTestCase):
    """
    One log line says which path carries trusted peers' packets, and why: when the programs
    cannot load, or cannot attach.
    """

    def setUp(self) -> None:
        self.lines: list[str] = []

        def observer(event: dict[str, Any]) -> None:
            if event.get("log_namespace", "").startswith("teredonode.fastpath"):
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(cast(ILogObserver, observer))
        self.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))

    def load(self, mode: str, loads: bool = True) -> Any:
        closed: list[bool] = []

        class Loaded(fastrelay.RelayFastPath):
            def __init__(self) -> None:
                self.interfaces = []

            @classmethod
            def load(cls, settings: Any, clock: Any, peers: Any, path: Any = None) -> Any:
                if not loads:
                    raise FastPathUnavailable("clang is not installed")
                return cls()

            def close(self) -> None:
                closed.append(True)

        self.closed = closed
        self.patch(fastrelay, "RelayFastPath", Loaded)
        return fastrelay.load(RelaySettings(fast_path=mode), Clock(), PeerList(time.time))

    def noHost(self, bind: str) -> Any:
        raise FastPathUnavailable("the host has no IPv4 address")

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

    def test_autoCannotAttach(self) -> None:
        fast = self.load("auto")
        self.assertEqual(self.lines, [])
        self.assertFalse(fast.start(RelaySettings(), "tun0", 3544, plan=self.noHost))
        self.assertEqual(self.closed, [True])
        self.assertEqual(len(self.lines), 1)
        self.assertIn("kernel fast path unavailable: the host has no IPv4 address", self.lines[0])

    def test_onCannotAttach(self) -> None:
        fast = self.load("on")
        with self.assertRaises(FastPathUnavailable):
            fast.start(RelaySettings(), "tun0", 3544, plan=self.noHost)
        self.assertEqual(self.closed, [True])
        self.assertEqual(self.lines, [])


class FakeObject:
    """
    The peer map as a dict, behind L{teredonode.fastpath.libbpf.BpfObject}'s calls.
    """

    FDS = {"config": 0, "counters": 1, "peers": 2, "ifaces": 3}

    def __init__(self) -> None:
        self.maps: dict[int, dict[bytes, bytes]] = {fd: {} for fd in self.FDS.values()}
        #: The interfaces carrying XDP, the ones that refuse it, and every try.
        self.xdp: set[int] = set()
        self.refusing: set[int] = set()
        self.tried: list[int] = []

    def map_fd(self, name: str) -> int:
        return self.FDS[name]

    def value_size(self, name: str) -> int:
        return {"config": fastrelay.CONFIG.size, "peers": fastrelay.PEER.size}[name]

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

    def attach_xdp(self, name: str, index: int, generic: bool) -> None:
        self.tried.append(index)
        if index in self.refusing:
            raise BPFError(95, f"attaching XDP to ifindex {index}: Operation not supported")
        self.xdp.add(index)

    def detach_xdp(self, index: int) -> None:
        self.xdp.discard(index)

    def attach_tcx(self, name: str, index: int, egress: bool) -> None:
        pass


class ObserverTests(SynchronousTestCase):
    """
    The fast path learns trusted peers from the tunnel's state changes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.peers = PeerList(self.clock.seconds)
        obj = FakeObject()
        self.fast = fastrelay.RelayFastPath(obj, self.clock, self.peers, bytes.fromhex("20010000"))
        self.fast.macOf = lambda name: bytes.fromhex("02000000000" + str(len(name)))
        # The interfaces the tests attach to, whatever this host has.
        self.fast.nameOf = {2: "eth0", 3: "eth1"}.get
        self.map = obj.maps[obj.map_fd("peers")]

    def trusted(self) -> Any:
        peer = self.peers.create(CLIENT)
        peer.trust(MAPPING, self.clock.seconds())
        peer.last_tx = self.clock.seconds()
        return peer

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IPeerObserver, self.fast))

    def test_nativeNeedsForwardingOnTheTun(self) -> None:
        """
        Native packets are encapsulated in XDP only once IPv4 forwarding is on for the TUN
        (the program's route lookup needs it); when it cannot be set, the config says so
        and the one log line says why.
        """
        lines: list[str] = []
        observer = cast(ILogObserver, lambda event: lines.append(formatEvent(event)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        config = self.fast.obj.maps[self.fast.obj.map_fd("config")]

        def refuse(tun: str) -> None:
            raise PermissionError(13, "Permission denied")

        plan = lambda bind: (["203.0.113.20"], [("eth0", 2)], "203.0.113.20", 2)  # noqa: E731
        self.assertTrue(self.fast.start(RelaySettings(), "lo", 3544, plan=plan, natives=lambda tun: [], forward=refuse))
        self.assertEqual(config[(0).to_bytes(4, "little")][-4:], bytes(4))
        self.assertEqual(len(lines), 1)
        self.assertIn("native packets through the TUN (IPv4 forwarding on lo: Permission denied)", lines[0])

    def test_interfaceFacts(self) -> None:
        """
        Loopback is no Ethernet interface (the XDP program is never attached to one), though
        its address reads as six bytes; an interface that is gone has neither.
        """
        self.assertFalse(fastrelay.isEthernet(socket.if_nametoindex("lo")))
        self.assertFalse(fastrelay.isEthernet(2**31 - 1))
        self.assertEqual(fastrelay.hardwareAddress("lo"), bytes(6))
        with self.assertRaises(OSError):
            fastrelay.hardwareAddress("no-such-if")

    def test_forwardOnTun(self) -> None:
        """IPv4 forwarding is turned on for the TUN alone."""
        root = Path(self.mktemp())
        (root / "net/ipv4/conf/teredo").mkdir(parents=True)
        (root / "net/ipv4/conf/teredo/forwarding").write_text("0")
        fastrelay.forwardOnTun("teredo", str(root))
        self.assertEqual((root / "net/ipv4/conf/teredo/forwarding").read_text(), "1")
        with self.assertRaises(OSError):
            fastrelay.forwardOnTun("other", str(root))

    def test_followsOffloads(self) -> None:
        """
        The config's segments flag is read from the outgoing interface at start, and again at
        each sweep: switched while the relay runs (ethtool -K), it follows, with one log line.
        """

        class Offloads:
            completes = False

            def completesSegments(self, index: int) -> bool:
                return bool(index) and self.completes

        lines: list[str] = []
        observer = cast(ILogObserver, lambda event: lines.append(formatEvent(event)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        offloads = self.fast.offloads = Offloads()
        config = self.fast.obj.maps[self.fast.obj.map_fd("config")]

        def segments() -> int:
            return int.from_bytes(config[(0).to_bytes(4, "little")][-8:-4], "little")

        plan = lambda bind: (["203.0.113.20"], [("eth0", 2)], "203.0.113.20", 2)  # noqa: E731
        started = self.fast.start(
            RelaySettings(), "lo", 3544, plan=plan, natives=lambda tun: [("eth1", 3)], forward=lambda tun: None
        )
        self.assertTrue(started)
        self.assertEqual(self.fast.interfaces, ["eth0", "eth1", "lo"])
        # Each XDP interface's MAC address, by ifindex, for the program's frame checks.
        self.assertEqual(
            self.fast.obj.maps[self.fast.obj.map_fd("ifaces")],
            {(2).to_bytes(4, "little"): bytes.fromhex("020000000004") + bytes(2),
             (3).to_bytes(4, "little"): bytes.fromhex("020000000004") + bytes(2)},
        )
        self.assertEqual(int.from_bytes(config[(0).to_bytes(4, "little")][-4:], "little"), 1)  # native
        self.assertEqual(segments(), 0)
        del lines[:]
        self.fast.sweeping()
        self.assertEqual((segments(), lines), (0, []))
        offloads.completes = True
        self.fast.sweeping()
        self.assertEqual(segments(), 1)
        self.assertEqual(len(lines), 1)
        self.assertIn("checksum offload changed", lines[0])
        self.assertIn("now carried by the kernel fast path", lines[0])
        self.fast.sweeping()
        self.assertEqual(len(lines), 1)
        offloads.completes = False
        self.fast.sweeping()
        self.assertEqual(segments(), 0)
        self.assertIn("now handed to the Python path", lines[-1])

    def test_followsNatives(self) -> None:
        """
        A native-side interface that appears while the relay runs (an IPv6 address that
        came after the daemon) gets the XDP program at the next sweep, its MAC address in the
        ifaces map, with one log line; one that refuses it is logged once and tried again
        quietly every few sweeps; one that is gone, renamed or re-numbered is let go (map
        entry, link, status); a changed MAC address is written to the map.
        """
        lines: list[str] = []
        observer = cast(ILogObserver, lambda event: lines.append(formatEvent(event)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        obj = cast(FakeObject, self.fast.obj)
        ifaces = obj.maps[obj.map_fd("ifaces")]
        natives = [("eth1", 3)]
        names = {2: "eth0", 3: "eth1", 4: "eth2", 5: "eth3"}
        macs = {name: bytes.fromhex(f"0200000000{index:02x}") for index, name in names.items()}
        self.fast.nameOf = names.get
        self.fast.macOf = lambda name: macs[name]
        plan = lambda bind: (["203.0.113.20"], [("eth0", 2)], "203.0.113.20", 2)  # noqa: E731
        started = self.fast.start(
            RelaySettings(xdp_mode="generic"), "lo", 3544, plan=plan, natives=lambda tun: list(natives),
            forward=lambda tun: None,
        )
        self.assertTrue(started)
        self.assertEqual((self.fast.interfaces, obj.xdp), (["eth0", "eth1", "lo"], {2, 3}))
        del lines[:]
        self.fast.sweeping()
        self.assertEqual(lines, [])

        natives += [("eth2", 4), ("eth3", 5)]
        obj.refusing.add(5)
        self.fast.sweeping()
        self.assertEqual((self.fast.interfaces, obj.xdp), (["eth0", "eth1", "eth2", "lo"], {2, 3, 4}))
        self.assertEqual(ifaces, {(i).to_bytes(4, "little"): macs[names[i]] + bytes(2) for i in (2, 3, 4)})
        self.assertEqual(len(lines), 2)
        self.assertIn("XDP now also on eth2", lines[0])
        self.assertIn("XDP not attached to eth3 (attaching XDP to ifindex 5: Operation not supported)", lines[1])
        self.assertIn("its native packets take the TUN", lines[1])
        # Tried again, quietly, once every RETRY_SWEEPS sweeps; taken once it accepts.
        tries = len(obj.tried)
        for _ in range(fastrelay.RETRY_SWEEPS):
            self.fast.sweeping()
        self.assertEqual((len(obj.tried), len(lines)), (tries, 2))
        self.fast.sweeping()
        self.assertEqual((len(obj.tried), len(lines)), (tries + 1, 2))
        obj.refusing.clear()
        for _ in range(fastrelay.RETRY_SWEEPS + 1):
            self.fast.sweeping()
        self.assertIn(5, obj.xdp)
        self.assertIn("XDP now also on eth3", lines[-1])

        # eth1 is gone; eth2 was renamed (or its index now names another interface, with
        # the address); eth0's MAC changed.
        del names[3]
        natives.remove(("eth1", 3))
        names[4] = "veth9"
        macs["veth9"] = bytes.fromhex("029999999999")
        natives[natives.index(("eth2", 4))] = ("veth9", 4)
        macs["eth0"] = bytes.fromhex("02aaaaaaaaaa")
        del lines[:]
        self.fast.sweeping()
        self.assertEqual((self.fast.interfaces, obj.xdp), (["eth0", "eth3", "veth9", "lo"], {2, 4, 5}))
        self.assertEqual(ifaces, {(i).to_bytes(4, "little"): macs[names[i]] + bytes(2) for i in (2, 4, 5)})
        self.assertEqual(len(lines), 3)
        self.assertIn("eth1 is gone", lines[0])
        self.assertIn("eth2 is gone", lines[1])
        self.assertIn("XDP now also on veth9", lines[2])

    def test_sweepOutlivesTheHost(self) -> None:
        """
        Whatever reading the host raises, the sweep goes on (peers still expire), and the
        failure is logged once, not at every sweep.
        """
        lines: list[str] = []
        observer = cast(ILogObserver, lambda event: lines.append(formatEvent(event)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        calls: list[str] = []

        def broken(tun: str) -> list[tuple[str, int]]:
            calls.append(tun)
            if len(calls) > 1:
                raise ValueError("a netlink message that does not decode")
            return []

        plan = lambda bind: (["203.0.113.20"], [("eth0", 2)], "203.0.113.20", 2)  # noqa: E731
        self.fast.nameOf = {2: "eth0"}.get
        self.assertTrue(self.fast.start(
            RelaySettings(xdp_mode="generic"), "lo", 3544, plan=plan, natives=broken, forward=lambda tun: None,
        ))
        # An entry the peer list no longer holds, heard since: the sweep removes it.
        self.map[CLIENT] = fastrelay.PEER.pack(bytes(4), bytes(2), 5, 0, 1)
        del lines[:]
        self.fast.sweeping()
        self.fast.sweeping()
        self.assertEqual(len(calls), 3)
        self.assertEqual(self.map, {})
        self.assertEqual(len([line for line in lines if "reading the host failed" in line]), 1)

    def test_installedOnceTheTurnEnds(self) -> None:
        """
        A peer that becomes trusted is written when the tunnel is done with the packet
        that proved it (its queue released first), with its mapping and times.
        """
        peer = self.trusted()
        self.fast.peerChanged(peer, "trusted")
        self.assertEqual(self.map, {})
        self.clock.advance(0)
        ip, port, rx, tx, synced = fastrelay.PEER.unpack(self.map[CLIENT])
        self.assertEqual((socket.inet_ntoa(ip), int.from_bytes(port, "big")), MAPPING)
        offset = self.clock.seconds() - time.monotonic()
        self.assertLess(abs(rx / 1e9 + offset - (peer.last_rx)), 0.01)
        self.assertEqual(synced, max(rx, tx))

    def test_notInstalled(self) -> None:
        """
        Untrusted, probing, local peers, native peers and queued ones stay on the Python path.
        """
        peer = self.peers.create(CLIENT[:15] + b"\x01")
        self.fast.peerChanged(peer, "untrusted")
        trusted = self.trusted()
        trusted.local = True
        self.fast.peerChanged(trusted, "trusted")
        native = self.peers.create(socket.inet_pton(socket.AF_INET6, "2001:db8::1"))
        native.trust(MAPPING, self.clock.seconds())
        self.fast.peerChanged(native, "trusted")
        self.clock.advance(0)
        self.assertEqual(self.map, {})

    def test_removedAtOnce(self) -> None:
        """
        Any other change takes the peer out before the tunnel goes on, folding what the
        program heard into the entry.
        """
        peer = self.trusted()
        self.fast.peerChanged(peer, "trusted")
        self.clock.advance(0)
        ip, port, rx, tx, synced = fastrelay.PEER.unpack(self.map[CLIENT])
        self.map[CLIENT] = fastrelay.PEER.pack(ip, port, rx + 5_000_000_000, tx, synced)
        before = peer.last_rx
        peer.trusted = False
        self.fast.peerChanged(peer, "untrusted")
        self.assertEqual(self.map, {})
        self.assertLess(abs(peer.last_rx - (before + 5)), 0.01)

    def test_removedPeerNotInstalledLater(self) -> None:
        peer = self.trusted()
        self.fast.peerChanged(peer, "trusted")
        self.peers.remove(CLIENT)
        self.fast.peerChanged(peer, "removed")
        self.clock.advance(0)
        self.assertEqual(self.map, {})

    def test_sweepFoldsTimes(self) -> None:
        """
        Before the sweep, entries whose program times moved are brought up to date in the
        peer list (so busy fast-path peers do not expire); the others are left alone, and
        entries the list no longer has are dropped from the map.
        """
        peer = self.trusted()
        self.fast.peerChanged(peer, "trusted")
        self.clock.advance(0)
        ip, port, rx, tx, synced = fastrelay.PEER.unpack(self.map[CLIENT])
        self.map[CLIENT] = fastrelay.PEER.pack(ip, port, rx + 20_000_000_000, tx + 25_000_000_000, synced)
        self.map[b"\x20\x01\x00\x00" + bytes(12)] = self.map[CLIENT]
        self.fast.sweeping()
        self.assertLess(abs(peer.last_rx - (1000 + 20)), 0.01)
        self.assertLess(abs(peer.last_tx - (1000 + 25)), 0.01)
        self.assertEqual(list(self.map), [CLIENT])
        _, _, rx2, tx2, synced2 = fastrelay.PEER.unpack(self.map[CLIENT])
        self.assertEqual(synced2, max(rx2, tx2))
        peer.last_rx = 0.0
        self.fast.sweeping()  # nothing moved since: the entry is not touched
        self.assertEqual(peer.last_rx, 0.0)

    def test_kernelCarriedPeerLivesAsLongAsItsTraffic(self) -> None:
        """
        RFC 4380 section 5.2.4 through the fast path: a peer whose packets only the programs
        see stays listed, and in the map, while they keep hearing it (each sweep folds their
        times in before expiring, as the tunnel's sweep does), and expires, leaving the map,
        once 30 s pass without it.
        """
        clock = Clock()
        clock.advance(1000)
        obj = FakeObject()
        peers = PeerList(clock.seconds)
        fast = fastrelay.RelayFastPath(obj, clock, peers, bytes.fromhex("20010000"))
        peers.on_remove = lambda peer: fast.peerChanged(peer, "removed")
        table = obj.maps[obj.map_fd("peers")]
        peer = peers.create(CLIENT)
        peer.trust(MAPPING, clock.seconds())
        fast.peerChanged(peer, "trusted")
        clock.advance(0)

        def sweep() -> None:
            fast.sweeping()
            peers.expire()

        for _ in range(12):  # two minutes of traffic carried by the programs alone
            clock.advance(10)
            ip, port, _, tx, synced = fastrelay.PEER.unpack(table[CLIENT])
            table[CLIENT] = fastrelay.PEER.pack(ip, port, time.monotonic_ns(), tx, synced)
            sweep()
            self.assertIn(CLIENT, peers)
            self.assertIn(CLIENT, table)
        heard = peers.get(CLIENT)
        assert heard is not None
        self.assertLess(abs(heard.last_rx - clock.seconds()), 0.5)
        for _ in range(2):  # then silence: still valid for 30 s
            clock.advance(10)
            sweep()
            self.assertIn(CLIENT, table)
        clock.advance(10)
        sweep()
        self.assertNotIn(CLIENT, peers)
        self.assertNotIn(CLIENT, table)
