"""
L{teredonode.fastpath.libbpf.BpfObject.detach_xdp}: the relay lets go of the XDP link of an
interface that is gone (L{teredonode.fastpath.relay.RelayFastPath.followNatives}), and of
one that is still there, in either attachment mode.

Root, clang and libbpf.  The links are made by a child process in a network namespace of
the test's own, on a veth pair there that is never brought up (no traffic); the namespace,
and the pair with it, is always removed.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.system.bpf_support import fast_path_skip_reason

SOURCE = Path(__file__).resolve().parents[2]

#: Run in the namespace: attach and detach in both modes, then attach and delete the
#: interface before detaching; print what C{ip link} showed and the descriptor counts.
_CHILD = r"""
import json, os, socket, subprocess, sys
sys.path.insert(0, sys.argv[1])
from teredonode.fastpath import relay
from teredonode.fastpath.libbpf import BpfObject, load_libbpf
from teredonode.fastpath.program import object_path

def shown():
    out = subprocess.run(["ip", "-d", "link", "show", "dev", "x0"], capture_output=True, text=True).stdout
    return next((w for w in ("xdpgeneric", "xdp") if f" {w} " in out or f"{w}/" in out), "")

def fds():
    return len(os.listdir("/proc/self/fd"))

obj = BpfObject(load_libbpf(), str(object_path(source_name=relay.SOURCE_NAME)), {"peers": 16})
index = socket.if_nametoindex("x0")
result = {}
for generic in (True, False):
    before = fds()
    obj.attach_xdp(relay.RX, index, generic)
    attached = shown()
    obj.detach_xdp(index)
    detached, after = shown(), fds()
    obj.detach_xdp(index)
    result["generic" if generic else "native"] = [attached, detached, before, after, fds()]
before = fds()
obj.attach_xdp(relay.RX, index, True)
subprocess.run(["ip", "link", "del", "x0"], check=True)
obj.detach_xdp(index)
result["gone"] = [before, fds()]
obj.close()
print(json.dumps(result))
"""


class DetachXdpTests(unittest.TestCase):
    skip = fast_path_skip_reason()

    def test_detach(self) -> None:
        """
        Detaching takes the program off an interface that is still there (a generic link's
        descriptor, or native XDP's libbpf link) and releases the link, once; a second call
        does nothing.  An interface deleted under the program: its link's descriptor is
        released.
        """
        ns = f"tdx{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "x0", "type", "veth", "peer", "name", "x1"], check=True, timeout=20
        )
        child = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _CHILD, str(SOURCE)],
            capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(SOURCE)),
        )
        self.assertEqual(child.returncode, 0, child.stderr[-2000:])
        result: dict[str, Any] = json.loads(child.stdout)
        for mode, attached in (("generic", "xdpgeneric"), ("native", "xdp")):
            shown, gone, before, after, again = result[mode]
            self.assertEqual((shown, gone), (attached, ""), mode)
            self.assertEqual((after, again), (before, before), mode)
        before, after = result["gone"]
        self.assertEqual(after, before)
