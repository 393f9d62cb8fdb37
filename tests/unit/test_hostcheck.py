"""
L{teredonode.hostcheck}: reading the kernel's route table and forwarding flag.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from teredonode.hostcheck import forwardingSettable, nativeRoutes

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

    def test_forwarding_settable(self) -> None:
        root = os.path.join(self.dir, "sys")
        self.assertFalse(forwardingSettable(root))  # unreadable: cannot tell, cannot set
        os.makedirs(os.path.join(root, "net/ipv6/conf/all"))
        path = os.path.join(root, "net/ipv6/conf/all/forwarding")
        with open(path, "w") as f:
            f.write("1\n")
        os.chmod(path, 0o444)
        self.assertTrue(forwardingSettable(root))  # already on
        os.chmod(path, 0o644)
        with open(path, "w") as f:
            f.write("0\n")
        self.assertTrue(forwardingSettable(root))  # off, writable

    def test_read_only_proc_sys(self) -> None:
        """
        In a mount namespace whose /proc/sys is read-only (a container), forwarding that is
        off cannot be turned on: the relay's start check says so.
        """
        import subprocess
        import sys
        import unittest

        if os.geteuid() != 0 or shutil.which("unshare") is None:
            raise unittest.SkipTest("needs root and unshare (a private mount namespace)")
        with open("/proc/sys/net/ipv6/conf/all/forwarding") as f:
            if f.read().strip() == "1":
                raise unittest.SkipTest("this host forwards IPv6 already")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        script = (
            "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
            f"{sys.executable} -c 'from teredonode.hostcheck import forwardingSettable as f; print(f())'"
        )
        out = subprocess.run(
            ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30,
            env={**os.environ, "PYTHONPATH": root},
        )
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "False"), out.stderr)
