"""
L{teredonode.hostcheck}: reading the kernel's route table and forwarding flag.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from teredonode.hostcheck import nativeRoutes

_ROUTE = "{net} {plen:02x} {zero} 00 {zero} 00000100 00000001 00000000 {flags:08x} {dev:>8}\n"
_ZERO = "0" * 32


def route(net: str, plen: int, dev: str, flags: int = 1) -> str:
    return _ROUTE.format(net=net, plen=plen, zero=_ZERO, flags=flags, dev=dev)


class NativeRoutesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, True)

    def table(self, *lines: str) -> str:
        path = os.path.join(self.dir, "ipv6_route")
        with open(path, "w") as f:
            f.write("".join(lines))
        return path

    def test_default_and_global_routes_count(self) -> None:
        path = self.table(
            route(_ZERO, 0, "eth0"),
            route("20010db8" + "0" * 24, 64, "eth1"),
        )
        self.assertEqual(nativeRoutes("teredo", path), ["::/0 dev eth0", "2001:db8::/64 dev eth1"])

    def test_own_tun_loopback_link_local_ula_and_reject_do_not(self) -> None:
        path = self.table(
            route("20010000" + "0" * 24, 32, "teredo"),
            route("0" * 31 + "1", 128, "lo"),
            route("fe80" + "0" * 28, 64, "eth0"),
            route("fd00" + "0" * 28, 8, "eth0"),
            route(_ZERO, 0, "eth0", flags=0x0200),
        )
        self.assertEqual(nativeRoutes("teredo", path), [])

    def test_unreadable_table_is_empty(self) -> None:
        self.assertEqual(nativeRoutes("teredo", os.path.join(self.dir, "absent")), [])
