"""
The relay's kernel fast path against its Python path, frame for frame (differential test).

Two namespaces joined by a veth: "relay" runs our relay (twistd, as in production) with
C{fast-path = "off"}, then again with C{"on"}; "world" runs tests/system/_relay_driver.py,
which writes the very same frames onto the link each time (a trusted client's traffic both
ways, untrusted and unknown peers, bubbles, and every kind of packet each path must drop or
hand to the kernel) and records every frame the relay sends back, step by step.  Then:

  - every step's frames are byte for byte the same in both runs, after setting aside what
    differs between any two runs of the same relay: the IPv4 identification and header
    checksum of the datagrams it sends (DF is clear, so the kernel draws a fresh
    identification per datagram), and the random source and nonce of its bubbles;
  - the relay's status counters and drop reasons (the fast path's folded in) are the same;
  - in the fast run the programs carried the trusted traffic (so the comparison is not
    between two Python paths), the native packets to the trusted client encapsulated by the
    XDP program as they arrived (before the kernel's forwarding and the TUN).

A second test adds an interface with a global IPv6 address to the relay's namespace while
it runs: the XDP program follows it there at the next sweep, and lets it go once deleted.

Root only, with clang, libbpf and twistd.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial import unittest
from teredonode.lab.nodes import stop_popen
from tests.system.bpf_support import fast_path_skip_reason

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().with_name("_relay_driver.py")

#: Steps whose output in the fast run must come (at least partly) from the programs.
TRUSTED_UP = ("up-udp", "up-echo", "up-udp-burst", "up-hop-limit-2", "up-no-udp-checksum")
TRUSTED_DOWN = ("down-udp", "down-echo", "down-udp-burst")


def _ip(*argv: str, ns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run(prefix + ["ip", *argv], check=True, capture_output=True, timeout=20)


def normalized(hexframe: str, bubbleSources: set[bytes]) -> bytes:
    """
    A frame with what legitimately differs between two runs zeroed: the IPv4
    identification and header checksum; in a bubble (a datagram whose IPv6 packet has no
    payload, next header 59), the relay's random bubble source, its trailers and the UDP
    checksum covering them.
    """
    frame = bytearray(bytes.fromhex(hexframe))
    if frame[12:14] != b"\x08\x00":
        for source in bubbleSources:  # an answer to our bubble source (none expected)
            if frame[38:54] == source:
                frame[38:54] = bytes(16)
        return bytes(frame)
    frame[18:20] = b"\x00\x00"
    frame[24:26] = b"\x00\x00"
    if frame[23] == 17 and len(frame) >= 42 + 40 and frame[42] >> 4 == 6:
        v6 = 42
        if frame[v6 + 4 : v6 + 6] == b"\x00\x00" and frame[v6 + 6] == 59:
            frame[v6 + 8 : v6 + 24] = bytes(16)
            del frame[v6 + 40 :]
            frame[40:42] = b"\x00\x00"
    return bytes(frame)


class RelayFastPathDifferentialTests(unittest.TestCase):
    skip = fast_path_skip_reason("twistd", "ip", "ethtool")

    def setUp(self) -> None:
        tag = secrets.token_hex(3)
        self.relayNs, self.worldNs = f"tfr{tag}-r", f"tfr{tag}-w"
        self.tmp = Path(tempfile.mkdtemp(prefix="teredo-fastrelay-test-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        for ns in (self.relayNs, self.worldNs):
            _ip("netns", "add", ns)
            self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], capture_output=True)
        r, w = self.relayNs, self.worldNs
        _ip("link", "add", "r0", "netns", r, "type", "veth", "peer", "name", "w0", "netns", w)
        for ns, dev in ((r, "r0"), (w, "w0")):
            _ip("link", "set", "lo", "up", ns=ns)
            _ip("link", "set", dev, "up", ns=ns)
        # Over veth the kernel leaves UDP checksums to an offload that never happens, so the
        # world would see partial checksums from the Python path's socket: have the relay's
        # kernel complete them, as it does for a NIC without checksum offload.
        subprocess.run(
            ["ip", "netns", "exec", r, "ethtool", "-K", "r0", "tx", "off"], check=True, capture_output=True, timeout=20
        )
        _ip("addr", "add", "203.0.113.20/24", "dev", "r0", ns=r)
        _ip("-6", "addr", "add", "2001:db8::20/64", "dev", "r0", "nodad", ns=r)
        _ip("route", "add", "default", "via", "203.0.113.1", ns=r)
        _ip("-6", "route", "add", "default", "via", "2001:db8::1", "dev", "r0", ns=r)
        _ip("addr", "add", "203.0.113.1/24", "dev", "w0", ns=w)
        mac = subprocess.run(
            ["ip", "netns", "exec", w, "cat", "/sys/class/net/w0/address"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for v6 in ("2001:db8::30", "2001:db8::1"):
            _ip("-6", "neigh", "add", v6, "lladdr", mac, "dev", "r0", "nud", "permanent", ns=r)
        for v4 in ("203.0.113.1", "203.0.113.10"):  # the gateway, the clients' server
            _ip("neigh", "add", v4, "lladdr", mac, "dev", "r0", "nud", "permanent", ns=r)
        self.relayMac = subprocess.run(
            ["ip", "netns", "exec", r, "cat", "/sys/class/net/r0/address"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def start_relay(self, fast: str, node: str = "") -> tuple[subprocess.Popen[bytes], Path, Path]:
        """
        Start the relay with C{fast-path = fast} (and C{node}'s lines in its C{[node]}
        section); wait until it answers on its status socket.  Its process (stopped at
        cleanup), status socket and log.
        """
        from teredonode.status import read_status

        status = self.tmp / f"{fast}.sock"
        conf = self.tmp / f"{fast}.toml"
        conf.write_text(
            f"[node]\n{node}"
            f'status-socket = "{status}"\n'
            f'state-dir = "{self.tmp / ("state-" + fast)}"\n'
            "[relay]\nenabled = true\n"
            'interface = "tfr-tun"\nbind = "203.0.113.20"\nport = 3544\n'
            f'fast-path = "{fast}"\n'
        )
        log = self.tmp / f"{fast}.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.relayNs, "twistd", "-n", f"--pidfile={self.tmp / (fast + '.pid')}",
                 "teredo", "--config", str(conf)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        self.addCleanup(stop_popen, proc)
        deadline = time.monotonic() + 60
        while True:
            try:
                read_status(str(status), timeout=2)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.fail(f"the relay did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        return proc, status, log

    def run_relay(self, fast: str) -> tuple[dict[str, Any], dict[str, Any], str]:
        """
        One relay run: start it, drive the world, read its status, stop it.  The driver's
        steps, the relay's status and its log.
        """
        from teredonode.status import read_status

        proc, status, log = self.start_relay(fast)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
        try:
            driven = subprocess.run(
                ["ip", "netns", "exec", self.worldNs, sys.executable, str(DRIVER), "w0", self.relayMac],
                capture_output=True, text=True, env=env, timeout=120,
            )
            if driven.returncode != 0:
                self.fail(f"driver failed: {driven.stderr[-2000:]} relay log: {log.read_text()[-2000:]}")
            result = read_status(str(status), timeout=5)["relay"]
            return json.loads(driven.stdout), result, log.read_text()
        finally:
            stop_popen(proc)

    def test_same_output(self) -> None:
        """
        Both paths send the same frames and count the same, and the fast path carried the
        trusted traffic.
        """
        slow, slowStatus, slowLog = self.run_relay("off")
        fast, fastStatus, fastLog = self.run_relay("on")
        self.assertIn("Trusted peers: kernel fast path", fastLog)
        self.assertIsNone(slowStatus["fast-path"])
        # Receive batching: off behind the fast path; without it, as the start log said.
        self.assertEqual(
            fastStatus["receive-batching"],
            {"on": False, "reason": "the kernel fast path reads first", "reads": 0, "datagrams": 0},
        )
        batching = slowStatus["receive-batching"]
        if "Receive batching (UDP GRO): on" in slowLog:
            self.assertTrue(batching["on"], batching)
            self.assertGreaterEqual(batching["datagrams"], batching["reads"], batching)
            self.assertGreater(batching["reads"], 0, batching)
        else:
            self.assertFalse(batching["on"], batching)
            self.assertIn(f"Receive batching (UDP GRO): off ({batching['reason']})", slowLog)
        sources: set[bytes] = set()
        slowSteps, fastSteps = dict(slow["steps"]), dict(fast["steps"])
        self.assertEqual(list(slowSteps), list(fastSteps))
        for name in slowSteps:
            a = [normalized(f, sources) for f in slowSteps[name]]
            b = [normalized(f, sources) for f in fastSteps[name]]
            self.assertEqual(a, b, f"step {name}: the two paths sent different frames")
        # The steps mean something: trusted traffic went through, drops stayed dropped.
        self.assertEqual(len(slowSteps["up-udp"]), 1)
        self.assertEqual(len(slowSteps["up-udp-burst"]), 20)
        self.assertEqual(len(slowSteps["down-udp-burst"]), 20)
        self.assertEqual(slowSteps["up-other-port"], [])
        self.assertEqual(slowSteps["up-bad-udp-checksum"], [])
        self.assertEqual(len(slowSteps["down-corrupt-inner-checksum"]), 1)
        self.assertEqual(slowStatus["counters"], fastStatus["counters"])
        self.assertEqual(slowStatus["drops"], fastStatus["drops"])
        carried = fastStatus["fast-path"]["carried"]
        trusted = sum(len(slowSteps[n]) for n in TRUSTED_UP + TRUSTED_DOWN)
        self.assertGreaterEqual(carried, trusted, fastStatus["fast-path"])
        down = sum(len(slowSteps[n]) for n in TRUSTED_DOWN)
        self.assertGreaterEqual(fastStatus["fast-path"]["from-native"], down, fastStatus["fast-path"])

    def test_followsTheNativeSide(self) -> None:
        """
        An interface that gains a global IPv6 address while the relay runs gets the XDP
        program at the next sweep (10 s), with one log line, and shows in the status; once
        deleted it is let go, with one line.
        """
        from teredonode.status import read_status

        # As the shipped units run it: narrowed to an unprivileged user and no capability
        # once started.  The attachment goes through the program's descriptor, held since
        # start, for which the kernel asks no capability.
        os.chmod(self.tmp, 0o755)
        proc, status, log = self.start_relay("on", 'user = "nobody"\n')
        self.assertIn("capabilities kept: none", log.read_text())

        def interfaces() -> list[str]:
            return list(read_status(str(status), timeout=5)["relay"]["fast-path"]["interfaces"])

        def waitFor(want: bool, line: str) -> None:
            deadline = time.monotonic() + 25  # two sweeps and then some
            while ("r1" in interfaces()) != want or line not in log.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.fail(f"{line!r} not seen; interfaces {interfaces()}; log: {log.read_text()[-1500:]}")
                time.sleep(0.5)

        self.assertEqual(interfaces(), ["r0", "tfr-tun"])
        r, w = self.relayNs, self.worldNs
        _ip("link", "add", "r1", "netns", r, "type", "veth", "peer", "name", "w1", "netns", w)
        _ip("-6", "addr", "add", "2001:db8:1::20/64", "dev", "r1", "nodad", ns=r)
        _ip("link", "set", "r1", "up", ns=r)
        waitFor(True, "Fast path: XDP now also on r1 (a native-side interface)")
        self.assertEqual(interfaces(), ["r0", "r1", "tfr-tun"])
        shown = subprocess.run(
            ["ip", "netns", "exec", r, "ip", "-d", "link", "show", "dev", "r1"], capture_output=True, text=True, check=True
        ).stdout
        self.assertIn("xdpgeneric", shown)
        _ip("link", "del", "r1", ns=r)
        waitFor(False, "Fast path: r1 is gone; XDP no longer on it")
        self.assertEqual(interfaces(), ["r0", "tfr-tun"])
        self.assertEqual(proc.poll(), None)
