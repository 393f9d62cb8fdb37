"""
The shipped systemd units grant what the kernel fast paths need, and no more than that.

Each unit with a fast path (server: XDP; relay: XDP and TC; client: TC) lists its capabilities in
C{CapabilityBoundingSet=}.  Here the real node (twistd, in a namespace of its own) starts
with exactly that bounding set (C{setpriv}, as root without the rest of root's
capabilities, which is what the kernel checks when a program is loaded and attached) and
must log that the fast path is on; with the same set minus C{CAP_BPF} and C{CAP_PERFMON}
it must fall back to the Python path with its one log line, so the two capabilities in the
unit are both needed.  Systemd itself is not run: the test machine's PID 1 is not systemd.

Root only, with clang, libbpf, setpriv and twistd.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from twisted.trial import unittest

from tests.system.bpf_support import fast_path_skip_reason

#: The repository holding this test (trial runs in _trial_temp, not the tree).
SOURCE = Path(__file__).resolve().parents[2]
UNITS = SOURCE / "etc" / "systemd"
ADDRESS = "203.0.113.10"
FAST_PATH_OFF = ("CAP_BPF", "CAP_PERFMON")


def unit_capabilities(role: str) -> list[str]:
    """
    The capabilities the role's shipped unit leaves the service (C{CapabilityBoundingSet=}).
    """
    text = (UNITS / f"teredo-{role}.service").read_text()
    [line] = re.findall(r"^CapabilityBoundingSet=(.*)$", text, re.M)
    caps: list[str] = line.split()
    return caps


class UnitTextTests(unittest.SynchronousTestCase):
    """
    The unit of every role with a fast path lets it load and run: the capabilities, the
    bpf(2) system call through the seccomp filter, and a writable cache for a compiled
    object under C{ProtectSystem=strict}.
    """

    def test_fastPathUnits(self) -> None:
        for role in ("server", "relay", "client"):
            text = (UNITS / f"teredo-{role}.service").read_text()
            for cap in ("CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"):
                self.assertIn(cap, unit_capabilities(role), role)
                [ambient] = re.findall(r"^AmbientCapabilities=(.*)$", text, re.M)
                self.assertIn(cap, ambient.split(), role)
            self.assertIn("bpf", re.findall(r"^SystemCallFilter=([^~].*)$", text, re.M), role)
            self.assertRegex(text, rf"(?m)^CacheDirectory=teredonode/{role}$")


class UnitCapabilityTests(unittest.TestCase):
    skip = fast_path_skip_reason("setpriv", "twistd", "ip")

    def setUp(self) -> None:
        self.ns = f"tncap-{secrets.token_hex(3)}"
        self.tmp = Path(tempfile.mkdtemp(prefix="teredo-fastpath-caps-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.run_ok("ip", "netns", "add", self.ns)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.ns], capture_output=True)
        self.run_ok("ip", "-n", self.ns, "link", "add", "cap0", "type", "veth", "peer", "name", "cap1")
        self.run_ok("ip", "-n", self.ns, "addr", "add", f"{ADDRESS}/24", "dev", "cap0")
        self.run_ok("ip", "-n", self.ns, "addr", "add", "203.0.113.11/24", "dev", "cap0")
        self.run_ok("ip", "-n", self.ns, "addr", "add", "2001:db8::1/64", "dev", "cap0")
        for dev in ("cap0", "cap1", "lo"):
            self.run_ok("ip", "-n", self.ns, "link", "set", dev, "up")

    def run_ok(self, *argv: str) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, f"{argv}: {result.stderr}")
        return result.stdout

    def start(self, role: str, section: str, caps: list[str]) -> str:
        """
        The node's log once its role is up, started with bounding set C{caps}.
        """
        run = self.tmp / f"{role}-{len(caps)}"
        run.mkdir()
        conf = run / "teredo.toml"
        conf.write_text(
            f'[node]\nstatus-socket = "{run}/status.sock"\nstate-dir = "{run}/state"\n'
            f"[{role}]\nenabled = true\n{section}fast-path = \"auto\"\n"
        )
        setcaps = ",".join(["-all"] + ["+" + cap[len("CAP_"):].lower() for cap in caps])
        log = run / "node.log"
        with open(log, "wb") as out:
            node = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "setpriv", f"--bounding-set={setcaps}", "--inh-caps=-all",
                 shutil.which("twistd") or "twistd", "-n", "--pidfile=", "teredo", "--config", str(conf)],
                stdout=out, stderr=subprocess.STDOUT, cwd=str(run), env=dict(os.environ, PYTHONPATH=str(SOURCE)),
            )
        try:
            for _ in range(150):
                text = log.read_text()
                if "fast path" in text or node.poll() is not None:
                    break
                subprocess.run(["sleep", "0.1"])
        finally:
            node.terminate()
            try:
                node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        return log.read_text()

    def check(self, role: str, section: str, on: str, off: str) -> None:
        caps = unit_capabilities(role)
        self.assertIn(on, self.start(role, section, caps))
        without = [cap for cap in caps if cap not in FAST_PATH_OFF]
        text = self.start(role, section, without)
        self.assertIn(off, text)
        self.assertNotIn(on, text)

    def test_server(self) -> None:
        self.check(
            "server", f'primary = "{ADDRESS}"\nsecondary = "203.0.113.11"\ninterface = ""\n',
            "XDP fast path on cap0", "Python path (XDP fast path unavailable",
        )

    def test_relay(self) -> None:
        self.check(
            "relay", f'bind = "{ADDRESS}"\ninterface = "tncap-relay"\n',
            "kernel fast path (XDP on cap0", "Python path (kernel fast path unavailable",
        )

    def test_client(self) -> None:
        self.check(
            "client", f'server = "203.0.113.99"\nbind = "{ADDRESS}"\ninterface = "tncap-client"\n'
            "local-discovery = false\nport-mapping = false\n",
            "kernel fast path (TC on cap0", "Python path (kernel fast path unavailable",
        )
