"""
L{teredonode.fastpath.libbpf.BpfObject.detach_xdp}: the relay lets go of the XDP link of an
interface that is gone (L{teredonode.fastpath.relay.RelayFastPath.followNatives}), and of
one that is still there, in either attachment mode.

Root, clang and libbpf; a veth pair of the test's own in the root namespace, never brought
up (no traffic), always removed.
"""

from __future__ import annotations

import os
import socket
import subprocess

from twisted.trial import unittest

from tests.system.bpf_support import fast_path_skip_reason


def xdp_shown(name: str) -> str:
    """What C{ip link} shows of C{name}'s XDP attachment ("" for none)."""
    out = subprocess.run(["ip", "-d", "link", "show", "dev", name], capture_output=True, text=True, check=True).stdout
    for word in ("xdpgeneric", "xdpdrv", "xdp"):
        if f" {word}" in out or f"{word}/" in out:
            return word
    return ""


class DetachXdpTests(unittest.TestCase):
    skip = fast_path_skip_reason()

    def setUp(self) -> None:
        from teredonode.fastpath import relay
        from teredonode.fastpath.libbpf import BpfObject, load_libbpf
        from teredonode.fastpath.program import object_path

        self.name = f"tdx{os.getpid() % 100000}"
        subprocess.run(
            ["ip", "link", "add", self.name, "type", "veth", "peer", "name", f"{self.name}p"], check=True
        )
        self.addCleanup(subprocess.run, ["ip", "link", "del", self.name], capture_output=True, check=False)
        self.index = socket.if_nametoindex(self.name)
        self.obj = BpfObject(load_libbpf(), str(object_path(source_name=relay.SOURCE_NAME)), {"peers": 16})
        self.addCleanup(self.obj.close)
        self.program = relay.RX

    def fds(self) -> int:
        return len(os.listdir("/proc/self/fd"))

    def test_detachInEitherMode(self) -> None:
        """
        Detaching takes the program off an interface that is still there (a generic link's
        descriptor, or native XDP's libbpf link), once; a second call does nothing.
        """
        for generic, shown in ((True, "xdpgeneric"), (False, "xdp")):
            before = self.fds()
            self.obj.attach_xdp(self.program, self.index, generic)
            self.assertEqual(xdp_shown(self.name), shown)
            self.obj.detach_xdp(self.index)
            self.assertEqual(xdp_shown(self.name), "")
            self.assertEqual(self.fds(), before)
            self.obj.detach_xdp(self.index)
            self.assertEqual(self.fds(), before)

    def test_detachGone(self) -> None:
        """
        An interface deleted under the program: its link's descriptor is released, and
        closing the object afterwards has nothing left to release twice.
        """
        before = self.fds()
        self.obj.attach_xdp(self.program, self.index, True)
        subprocess.run(["ip", "link", "del", self.name], check=True)
        self.obj.detach_xdp(self.index)
        self.assertEqual(self.fds(), before)
        self.obj.close()
