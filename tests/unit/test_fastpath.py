"""
The fast path's control plane, without the kernel: the program's counter names, the config
map's precomputed checksum parts, the C{fast-path} and C{xdp-mode} settings, how each
interface is attached, and the one log line on which path serves Router Solicitations.
(The program itself is tested against the Python server in
tests/system/test_fastpath_server.py.)
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any, Callable, cast

from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from teredonode import fastpath
from teredonode.config import ServerSettings, parse_config
from teredonode.errors import ConfigError
from teredonode.fastpath.libbpf import BPFError
from teredonode.fastpath.program import CONFIG, FastPathUnavailable, pack_config
from teredonode.roles.server import DROP_REASONS
from teredonode.wire import ipv6
from teredonode.wire.address import server_link_local

SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "teredo_server.bpf.c"
def settings(**overrides: Any) -> ServerSettings:
    return ServerSettings(primary="203.0.113.10", secondary="203.0.113.11", **overrides)


SETTINGS = settings()


def ra_for(settings: Any, dst: bytes) -> bytes:
    """
    The RA the Python server sends (the same construction as TeredoServer._raFor).
    """
    advertised = settings.prefix_bytes + bytes(map(int, settings.primary.split("."))) + bytes(8)
    ra = ipv6.RouterAdvertisement(
        retrans_timer=2000, prefixes=(ipv6.PrefixInformation(advertised, 64),), mtu=settings.mtu
    )
    return ipv6.icmpv6_packet(server_link_local(settings.primary), dst, ra, 255)


def fold(value: int) -> int:
    while value >> 16:
        value = (value & 0xFFFF) + (value >> 16)
    return value


class ProgramInterfaceTests(SynchronousTestCase):
    def test_counterNamesMatchTheProgram(self) -> None:
        """
        The C enum's order, with each entry's name in its comment, is L{fastpath.COUNTERS};
        the drops among them are server drop reasons.
        """
        entries = re.findall(r"^\s*C_[A-Z_]+,\s*/\* (?:drop )?\"([a-z-]+)\"", SOURCE.read_text(), re.M)
        self.assertEqual(tuple(entries), fastpath.COUNTERS[: len(entries)])
        self.assertEqual(len(entries), 5)
        self.assertTrue(fastpath.DROPS <= set(DROP_REASONS))

    def test_configIsTheProgramsStructSize(self) -> None:
        """
        312 bytes: 4 words, 7 quads, 4 words, 16 ranges, the 96-byte RA.
        """
        self.assertEqual(CONFIG.size, 16 + 56 + 16 + 128 + 96)
        self.assertEqual(len(pack_config(SETTINGS, ra_for(SETTINGS, bytes(16)))), CONFIG.size)

    def test_precomputedSumsGiveTheServersChecksum(self) -> None:
        """
        The program completes the RA's checksum as fold(pseudo sum + destination words):
        for any destination it equals what the Python encoder writes.
        """
        value = pack_config(SETTINGS, ra_for(SETTINGS, bytes(16)))
        fields = CONFIG.unpack(value)
        pseudo_sum, packet_sum, template = fields[11], fields[12], fields[-1]
        self.assertEqual(template[24:40], bytes(16))
        self.assertEqual(template[42:44], b"\x00\x00")
        for dst in (bytes.fromhex("fe80000000000000800054455245444f"), bytes.fromhex("fe80" + "ff" * 14)):
            words = sum(struct.unpack("!8H", dst))
            expected = ra_for(SETTINGS, dst)
            self.assertEqual((~fold(pseudo_sum + words) & 0xFFFF).to_bytes(2, "big"), expected[42:44])
            whole = sum(struct.unpack("!48H", expected))
            self.assertEqual(fold(whole), fold(packet_sum + words + int.from_bytes(expected[42:44], "big")))

    def test_rangesFollowHardened(self) -> None:
        soft = CONFIG.unpack(pack_config(settings(hardened=False), ra_for(SETTINGS, bytes(16))))
        hard = CONFIG.unpack(pack_config(SETTINGS, ra_for(SETTINGS, bytes(16))))
        self.assertEqual((soft[13], hard[13]), (9, 13))

    def test_secureIsPassedOn(self) -> None:
        secure = CONFIG.unpack(pack_config(settings(secure=True), ra_for(SETTINGS, bytes(16))))
        self.assertEqual(secure[14], 1)

    def test_rateTooSmallForTheProgram(self) -> None:
        with self.assertRaises(FastPathUnavailable):
            pack_config(settings(rs_rate=0.0001), ra_for(SETTINGS, bytes(16)))


class SettingTests(SynchronousTestCase):
    def test_default(self) -> None:
        config = parse_config('[server]\nenabled = true\nprimary = "192.0.2.1"\n', "x.toml")
        server = config.roles["server"]
        assert isinstance(server, ServerSettings)
        self.assertEqual(server.fast_path, "auto")

    def test_refused(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config('[server]\nenabled = true\nprimary = "192.0.2.1"\nfast-path = "yes"\n', "x.toml")
        self.assertIn("fast-path", str(caught.exception))


class XdpModeSettingTests(SynchronousTestCase):
    """
    C{[server] xdp-mode}: exactly C{"auto"}, C{"native"} or C{"generic"}, else one line
    naming the table and the key.
    """

    def parse(self, value: str) -> ServerSettings:
        text = f'[server]\nenabled = true\nprimary = "192.0.2.1"\nxdp-mode = {value}\n'
        server = parse_config(text, "x.toml").roles["server"]
        assert isinstance(server, ServerSettings)
        return server

    def test_default(self) -> None:
        config = parse_config('[server]\nenabled = true\nprimary = "192.0.2.1"\n', "x.toml")
        server = config.roles["server"]
        assert isinstance(server, ServerSettings)
        self.assertEqual(server.xdp_mode, "auto")

    def test_accepted(self) -> None:
        for mode in ("auto", "native", "generic"):
            self.assertEqual(self.parse(f'"{mode}"').xdp_mode, mode)

    def test_refused(self) -> None:
        for value in ('"Native"', '"skb"', '"drv"', '""', '"on"', "true", "1", '["native"]', '{ mode = "native" }'):
            with self.assertRaises(ConfigError, msg=value) as caught:
                self.parse(value)
            message = str(caught.exception)
            self.assertNotIn("\n", message)
            self.assertTrue(message.startswith("x.toml: [server] xdp-mode: "), message)
            self.assertIn('"auto", "native" or "generic"', message)


class AttachModeTests(SynchronousTestCase):
    """
    L{fastpath.attach_generic}: C{"native"} and C{"generic"} apply to every interface;
    C{"auto"} asks L{fastpath.is_veth} of each.
    """

    def test_native(self) -> None:
        generic = fastpath.attach_generic("native")
        self.assertEqual([generic(i) for i in (1, 2, 3)], [False, False, False])

    def test_generic(self) -> None:
        generic = fastpath.attach_generic("generic")
        self.assertEqual([generic(i) for i in (1, 2, 3)], [True, True, True])

    def test_autoAsksIsVeth(self) -> None:
        asked: list[int] = []

        def is_veth(index: int) -> bool:
            asked.append(index)
            return index == 2

        self.patch(fastpath, "is_veth", is_veth)
        generic = fastpath.attach_generic("auto")
        self.assertEqual([generic(i) for i in (1, 2, 3)], [False, True, False])
        self.assertEqual(asked, [1, 2, 3])

    def test_fixedModesAskNothing(self) -> None:
        """
        An explicit mode needs no netlink query (it works where the interface's kind cannot
        be read).
        """

        def is_veth(index: int) -> bool:
            raise AssertionError("asked for the interface's kind")

        self.patch(fastpath, "is_veth", is_veth)
        self.assertFalse(fastpath.attach_generic("native")(4))
        self.assertTrue(fastpath.attach_generic("generic")(4))


class StartTests(SynchronousTestCase):
    """
    L{fastpath.start}: one log line, whatever happens; "on" refuses, "auto" falls back.
    """

    def setUp(self) -> None:
        self.lines: list[str] = []

        def observer(event: dict[str, Any]) -> None:
            if event.get("log_namespace", "").startswith("teredonode.fastpath"):
                from twisted.logger import formatEvent

                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(cast(ILogObserver, observer))
        self.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))

    def settings(self, mode: str) -> ServerSettings:
        return settings(fast_path=mode)

    def test_off(self) -> None:
        def never(addresses: tuple[str, ...]) -> list[tuple[str, int]]:
            raise AssertionError("looked for interfaces")

        self.assertIsNone(fastpath.start(self.settings("off"), b"", interfaces=never))
        self.assertEqual(len(self.lines), 1)
        self.assertIn("Python path", self.lines[0])

    def test_autoFallsBackWithOneLine(self) -> None:
        self.assertIsNone(fastpath.start(self.settings("auto"), b"", interfaces=lambda a: []))
        self.assertEqual(len(self.lines), 1)
        self.assertIn("no interface holds 203.0.113.10", self.lines[0])

    def test_onRefuses(self) -> None:
        with self.assertRaises(FastPathUnavailable):
            fastpath.start(self.settings("on"), b"", interfaces=lambda a: [])
        self.assertEqual(self.lines, [])

    def attached(self, mode: str) -> list[tuple[str, bool]]:
        """
        Start with C{xdp-mode = mode} on a veth (index 7) and another interface (index 3),
        with a fake program: how each interface was attached (C{True}: generic).
        """
        made: list[FakeFastPath] = []

        def make(settings: Any, ra_packet: bytes) -> FakeFastPath:
            made.append(FakeFastPath(settings, ra_packet))
            return made[-1]

        self.patch(fastpath, "FastPath", make)
        self.patch(fastpath, "is_veth", lambda index: index == 7)
        found = [("veth0", 7), ("eth0", 3)]
        fast = fastpath.start(settings(fast_path="on", xdp_mode=mode), b"RA", interfaces=lambda a: found)
        self.assertIs(fast, made[0])
        self.assertEqual(self.lines, ["Router Solicitations: XDP fast path on veth0, eth0, the rest on the Python path"])
        return made[0].attached

    def test_xdpModeNative(self) -> None:
        self.assertEqual(self.attached("native"), [("veth0", False), ("eth0", False)])

    def test_xdpModeGeneric(self) -> None:
        self.assertEqual(self.attached("generic"), [("veth0", True), ("eth0", True)])

    def test_xdpModeAuto(self) -> None:
        """
        Generic on the veth only.
        """
        self.assertEqual(self.attached("auto"), [("veth0", True), ("eth0", False)])

    def test_attachFailureFallsBack(self) -> None:
        """
        A mode the interface refuses (native XDP where the driver has none...) is an
        attach error: C{auto} falls back in one line and the program is closed.
        """
        made: list[FakeFastPath] = []

        def make(settings: Any, ra_packet: bytes) -> FakeFastPath:
            made.append(FakeFastPath(settings, ra_packet, refuse=True))
            return made[-1]

        self.patch(fastpath, "FastPath", make)
        found = [("eth0", 3)]
        self.assertIsNone(fastpath.start(settings(xdp_mode="native"), b"RA", interfaces=lambda a: found))
        self.assertTrue(made[0].closed)
        self.assertEqual(len(self.lines), 1)
        self.assertIn("XDP fast path unavailable: ", self.lines[0])
        self.assertIn("attaching XDP to ifindex 3: Operation not supported", self.lines[0])


class FakeFastPath:
    """
    Stands for L{fastpath.FastPath} in L{StartTests}: records how it was attached.
    """

    def __init__(self, settings: Any, ra_packet: bytes, refuse: bool = False) -> None:
        self.refuse = refuse
        self.interfaces: list[str] = []
        self.attached: list[tuple[str, bool]] = []
        self.closed = False

    def attach(self, interfaces: list[tuple[str, int]], generic: Callable[[int], bool] | None = None) -> None:
        # The real default: ask whether each is a veth.
        generic = generic or fastpath.is_veth
        for name, index in interfaces:
            if self.refuse:
                raise BPFError(95, f"attaching XDP to ifindex {index}: Operation not supported")
            self.attached.append((name, generic(index)))
            self.interfaces.append(name)

    def close(self) -> None:
        self.closed = True


class ObjectTests(SynchronousTestCase):
    """
    Without clang and without a prebuilt object the fast path is unavailable, in one line.
    """

    def test_noClang(self) -> None:
        import tempfile

        import shutil

        from teredonode.fastpath import program

        self.patch(shutil, "which", lambda name: None)
        cache = Path(tempfile.mkdtemp(prefix="teredo-fastpath-unit-"))
        self.addCleanup(__import__("shutil").rmtree, cache, True)
        if (Path(program.__file__).parent / program.OBJECT_NAME).is_file():
            self.skipTest("a prebuilt object is installed")
        with self.assertRaises(FastPathUnavailable) as caught:
            program.object_path(cache)
        self.assertIn("clang is not installed", str(caught.exception))
        self.assertEqual(list(cache.iterdir()), [])


class CacheDirectoryTests(SynchronousTestCase):
    """
    A compiled object goes where systemd's C{CacheDirectory=} points, since a unit under
    C{ProtectSystem=strict} can write nowhere else.
    """

    def test_systemdCacheDirectory(self) -> None:
        from teredonode.fastpath import program

        self.patch(os, "environ", {"CACHE_DIRECTORY": "/var/cache/teredonode/relay:/elsewhere"})
        self.assertEqual(program.default_cache_dir(), Path("/var/cache/teredonode/relay"))

    def test_rootWithoutSystemd(self) -> None:
        from teredonode.fastpath import program

        self.patch(os, "environ", {})
        self.patch(os, "geteuid", lambda: 0)
        self.assertEqual(program.default_cache_dir(), Path("/var/cache/teredonode"))

    def test_userWithoutSystemd(self) -> None:
        from teredonode.fastpath import program

        self.patch(os, "environ", {"XDG_CACHE_HOME": "/home/u/.cache"})
        self.patch(os, "geteuid", lambda: 1000)
        self.assertEqual(program.default_cache_dir(), Path("/home/u/.cache/teredonode"))
