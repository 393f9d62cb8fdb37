"""
Tests for L{teredonode.netconfig}: netlink requests with an injected session, and the
real thing as root inside a throw-away network namespace.

Also home of L{runIsolated}, the helper the root-only TUN tests use too: it runs a Python
script in a fresh network namespace (C{unshare --net}), which the kernel destroys when the
script exits however it exits, so these tests can never change the host's network.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from teredonode.errors import NetConfigError
from teredonode.interfaces import INetworkConfigurator
from teredonode.netconfig import NetlinkConfigurator

REPO = Path(__file__).resolve().parents[2]


def rootSkipReason(needTun: bool = False) -> str | None:
    """
    Why a test needing a private network namespace cannot run here, or L{None}.
    """
    if os.geteuid() != 0:
        return "needs root (CAP_SYS_ADMIN/CAP_NET_ADMIN) to create a network namespace"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux / iproute2)"
    if needTun and not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    probe = subprocess.run(["unshare", "--net", "--", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


def runIsolated(script: str, timeout: float = 60) -> dict[str, Any]:
    """
    Run C{script} with this interpreter in a new, empty network namespace and return the
    JSON object it prints last.  The namespace has no name and dies with the process, so
    nothing needs removing even if the script crashes or times out.
    """
    result = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"isolated script failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    document: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return document


class KernelRefusal(Exception):
    """
    Like pyroute2's C{NetlinkError}: the kernel's errno as C{code}.
    """

    def __init__(self, code: int) -> None:
        Exception.__init__(self, code, os.strerror(code))
        self.code = code


class Recorder:
    """
    Stands in for both the netlink session and the sysctl writer, logging both in order.
    Links named in C{links} exist (index 7); C{refusals} are raised by the next requests.
    """

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.refusals: list[int] = []
        self.links = {"teredo": 7}

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.log.append(("close",))
        return False

    def link_lookup(self, ifname):
        return [self.links[ifname]] if ifname in self.links else []

    def _request(self, kind, command, **kwargs):
        self.log.append((kind, command, tuple(sorted(kwargs.items()))))
        if self.refusals:
            raise KernelRefusal(self.refusals.pop(0))

    def link(self, command, **kwargs):
        self._request("link", command, **kwargs)

    def addr(self, command, **kwargs):
        self._request("addr", command, **kwargs)

    def route(self, command, **kwargs):
        self._request("route", command, **kwargs)

    def write(self, path, value):
        self.log.append(("write", path, value))


class RequestTests(SynchronousTestCase):
    def setUp(self):
        self.rec = Recorder()
        self.cfg = NetlinkConfigurator(netlink=self.rec, writeFile=self.rec.write)

    def requests(self):
        return [entry for entry in self.rec.log if entry[0] != "close"]

    def test_provides(self):
        self.assertTrue(verifyObject(INetworkConfigurator, self.cfg))

    def test_linkUpSysctlsFirst(self):
        """
        addr_gen_mode and accept_dad are written before the link comes up, or the kernel
        would already have sent a Router Solicitation into the tunnel.
        """
        self.cfg.linkUp("teredo", 1280)
        self.assertEqual(
            self.requests(),
            [
                ("write", "/proc/sys/net/ipv6/conf/teredo/addr_gen_mode", "1"),
                ("write", "/proc/sys/net/ipv6/conf/teredo/accept_dad", "0"),
                ("link", "set", (("index", 7), ("mtu", 1280), ("state", "up"))),
            ],
        )

    def test_addressesAndRoutes(self):
        """
        Addresses are added without duplicate address detection; each request closes its
        netlink session.
        """
        v6 = socket.AF_INET6
        self.cfg.addAddress("teredo", "2001:0:4136:E378:8000:63BF:3FFF:FDD2", 32)
        self.cfg.removeAddress("teredo", "fe80::1", 64)
        self.cfg.addRoute("teredo", "2001:0000::/32", 1029)
        self.cfg.removeRoute("teredo", "::/0")
        self.assertEqual(
            self.requests(),
            [
                ("addr", "add", (("address", "2001:0:4136:e378:8000:63bf:3fff:fdd2"),
                                 ("family", v6), ("flags", 0x02), ("index", 7), ("prefixlen", 32))),
                ("addr", "del", (("address", "fe80::1"), ("family", v6), ("index", 7),
                                 ("prefixlen", 64))),
                ("route", "add", (("dst", "2001::/32"), ("family", v6), ("oif", 7),
                                  ("priority", 1029))),
                ("route", "del", (("dst", "::/0"), ("family", v6), ("oif", 7))),
            ],
        )
        self.assertEqual(self.rec.log.count(("close",)), 4)

    def test_forwarding(self):
        self.cfg.setForwarding(True)
        self.cfg.setForwarding(False)
        path = "/proc/sys/net/ipv6/conf/all/forwarding"
        self.assertEqual(self.rec.log, [("write", path, "1"), ("write", path, "0")])

    def test_failureIsOneLine(self):
        """
        A refusal is one line: the operation in ip's words and the kernel's reason.
        """
        self.rec.refusals.append(errno.EEXIST)
        exc = self.assertRaises(NetConfigError, self.cfg.addAddress, "teredo", "2001:db8::1", 64)
        self.assertEqual(str(exc), "ip -6 addr add 2001:db8::1/64 dev teredo nodad: File exists")
        self.rec.refusals.append(errno.EPERM)
        exc = self.assertRaises(NetConfigError, self.cfg.linkUp, "teredo", 1280)
        self.assertEqual(str(exc), "ip link set dev teredo mtu 1280 up: Operation not permitted")
        exc = self.assertRaises(NetConfigError, self.cfg.addRoute, "nosuch0", "2001::/32", 1)
        self.assertEqual(str(exc), 'ip -6 route add 2001::/32 dev nosuch0 metric 1: Cannot find device "nosuch0"')

    def test_absentIsNotAnErrorOnRemove(self):
        """
        Removing what is not there succeeds (no such address, route or device), and so
        does a removal refused for want of CAP_NET_ADMIN (the route goes with the TUN);
        any other failure still raises, and an add is never excused.
        """
        for code in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.EPERM):
            self.rec.refusals.append(code)
            self.cfg.removeAddress("teredo", "2001:db8::1", 64)
        self.rec.refusals.append(errno.ESRCH)
        self.cfg.removeRoute("teredo", "2001::/32")
        self.cfg.removeRoute("gone0", "2001::/32")
        self.rec.refusals.append(errno.EINVAL)
        self.assertRaises(NetConfigError, self.cfg.removeRoute, "teredo", "2001::/32")
        self.rec.refusals.append(errno.ESRCH)
        self.assertRaises(NetConfigError, self.cfg.addRoute, "teredo", "2001::/32", 1)

    def test_bugPropagates(self):
        """
        An exception that is not a kernel refusal is not dressed up as one.
        """

        def broken():
            raise TypeError("bad call")

        cfg = NetlinkConfigurator(netlink=broken, writeFile=self.rec.write)
        self.assertRaises(TypeError, cfg.addRoute, "teredo", "2001::/32", 1)

    def test_validationRequestsNothing(self):
        for call in [
            lambda: self.cfg.linkUp("../../x", 1280),
            lambda: self.cfg.linkUp("a-name-that-is-too-long", 1280),
            lambda: self.cfg.linkUp("teredo", 1000),
            lambda: self.cfg.addAddress("teredo", "192.0.2.1", 24),
            lambda: self.cfg.addAddress("teredo", "2001:db8::1", 129),
            lambda: self.cfg.addRoute("teredo", "2001::/33x", 1),
            lambda: self.cfg.addRoute("teredo", "2001::/32", -1),
        ]:
            self.assertRaises(NetConfigError, call)
        self.assertEqual(self.rec.log, [])

    def test_sysctlErrors(self):
        def readonly(path, value):
            raise PermissionError(13, "Permission denied")

        cfg = NetlinkConfigurator(netlink=self.rec, writeFile=readonly)
        exc = self.assertRaises(NetConfigError, cfg.setForwarding, True)
        self.assertEqual(
            str(exc), "cannot write 1 to /proc/sys/net/ipv6/conf/all/forwarding: Permission denied"
        )


_NAMESPACE_SCRIPT = r"""
import json, subprocess
from teredonode.errors import NetConfigError
from teredonode.netconfig import NetlinkConfigurator

def sh(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

def read(path):
    with open(path) as f:
        return f.read().strip()

sh("ip", "tuntap", "add", "dev", "tn0", "mode", "tun")
cfg = NetlinkConfigurator()
cfg.linkUp("tn0", 1280)
cfg.addAddress("tn0", "2001:db8::1", 64)
cfg.addAddress("tn0", "2001:db8:1::5", 128)
cfg.removeAddress("tn0", "2001:db8:1::5", 128)
cfg.removeAddress("tn0", "2001:db8:1::5", 128)
cfg.addRoute("tn0", "2001::/32", 1029)
cfg.addRoute("tn0", "2002::/16", 7)
cfg.removeRoute("tn0", "2002::/16")
cfg.removeRoute("tn0", "2002::/16")
cfg.setForwarding(True)
errors = []
try:
    cfg.addAddress("tn0", "2001:db8::1", 64)
except NetConfigError as e:
    errors.append(str(e))
try:
    cfg.linkUp("nosuch0", 1280)
except NetConfigError as e:
    errors.append(str(e))
link = json.loads(sh("ip", "-j", "link", "show", "dev", "tn0"))[0]
state = {
    "mtu": link["mtu"],
    "up": "UP" in link["flags"],
    "addr_gen_mode": read("/proc/sys/net/ipv6/conf/tn0/addr_gen_mode"),
    "accept_dad": read("/proc/sys/net/ipv6/conf/tn0/accept_dad"),
    "forwarding": read("/proc/sys/net/ipv6/conf/all/forwarding"),
    "addresses": sorted(
        "%s/%s" % (a["local"], a["prefixlen"])
        for a in json.loads(sh("ip", "-j", "-6", "addr", "show", "dev", "tn0"))[0]["addr_info"]
    ),
    "routes": sorted(
        "%s %s" % (r["dst"], r.get("metric"))
        for r in json.loads(sh("ip", "-j", "-6", "route", "show", "dev", "tn0"))
    ),
    "errors": errors,
}
sh("ip", "tuntap", "del", "dev", "tn0", "mode", "tun")
cfg.removeAddress("tn0", "2001:db8::1", 64)
cfg.removeRoute("tn0", "2001::/32")
state["removedAfterDeviceGone"] = True
print(json.dumps(state))
"""


class NamespaceTests(SynchronousTestCase):
    """
    Real netlink, in a private network namespace.
    """

    skip = rootSkipReason(needTun=True)

    def test_configureRealLink(self):
        state = runIsolated(_NAMESPACE_SCRIPT)
        self.assertEqual(state["mtu"], 1280)
        self.assertTrue(state["up"])
        self.assertEqual((state["addr_gen_mode"], state["accept_dad"]), ("1", "0"))
        self.assertEqual(state["forwarding"], "1")
        # no kernel-generated fe80:: address: only ours
        self.assertEqual(state["addresses"], ["2001:db8::1/64"])
        self.assertIn("2001::/32 1029", state["routes"])
        self.assertFalse(any(r.startswith("2002::") for r in state["routes"]))
        self.assertEqual(len(state["errors"]), 2)
        self.assertTrue(state["errors"][0].startswith("ip -6 addr add 2001:db8::1/64 dev tn0 nodad: "))
        self.assertIn("File exists", state["errors"][0])
        self.assertIn("nosuch0", state["errors"][1])
        self.assertTrue(state["removedAfterDeviceGone"])

    def test_hostNamespaceUntouched(self):
        """
        The helper really isolates: a link made inside is not visible outside.
        """
        state = runIsolated(
            "import json, subprocess\n"
            "subprocess.run(['ip', 'tuntap', 'add', 'dev', 'tnleak0', 'mode', 'tun'], check=True)\n"
            "print(json.dumps({'ok': True}))\n"
        )
        self.assertTrue(state["ok"])
        outside = subprocess.run(["ip", "link", "show", "dev", "tnleak0"], capture_output=True)
        self.assertNotEqual(outside.returncode, 0)
