"""
The fast path's control plane, without the kernel: the program's counter names, the config
map's precomputed checksum parts, the C{fast-path} setting and the one log line on which
path serves Router Solicitations.  (The program itself is tested against the Python server
in tests/system/test_fastpath_server.py.)
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any, cast

from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from teredonode import fastpath
from teredonode.config import ServerSettings, parse_config
from teredonode.errors import ConfigError
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
