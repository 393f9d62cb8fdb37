"""
The client's kernel fast path against its Python path, frame for frame (differential
test), and its fallback.

Two namespaces joined by a veth: "client" runs our client (twistd, as in production) with
C{fast-path = "off"}, then again with C{"on"}; "world" runs our server (for qualification)
and tests/system/_client_driver.py, which writes the very same frames onto the link each
time (a Teredo peer and a native host behind a relay, both trusted; untrusted peers,
bubbles, wrong mappings, wrong destinations, trailers, malformed datagrams), sends the very
same packets from the client host (a UDP socket on its Teredo address, raw packets into its
TUN), and records, step by step, every frame the client sends toward the world and every
packet its host's stack receives through the TUN.  Then:

  - every step's frames and packets are byte for byte the same in both runs, after setting
    aside what differs between any two runs: the IPv4 identification and header checksum
    of the datagrams the client sends (DF is clear), and the nonces and trailers of its
    bubbles;
  - the client's status counters and drop reasons (the fast path's folded in) are the same;
  - in the fast run the programs carried the trusted traffic;
  - a TCP SYN (whose checksum the kernel leaves partial until after the TC program) leaves
    with valid inner and outer checksums.

Root only, with clang, libbpf and twistd.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import struct
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
DRIVER = Path(__file__).resolve().with_name("_client_driver.py")
PORT = 40100

#: Steps whose packets the programs must carry in the fast run.
TRUSTED_UP = ("up-udp", "up-udp-burst", "up-echo", "up-native-udp", "up-no-udp-checksum", "up-hop-limit-1")
TRUSTED_DOWN = ("down-udp", "down-udp-burst", "down-native-udp", "down-raw")


def _ip(*argv: str, ns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run(prefix + ["ip", *argv], check=True, capture_output=True, timeout=20)


def _csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    folded: int = total
    return folded


def _inner(packet: bytearray, address: bytes) -> None:
    """
    An IPv6 packet (in place): the client's Teredo address (random flag bits, RFC 5991, so
    another one each run) replaced by zeros, and the checksum it enters replaced by how far
    it is from the right one (zero when right; the ones' complement difference, which
    depends on the corruption only, not on the address).
    """
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return
    nh, plen = packet[6], int.from_bytes(packet[4:6], "big")
    at = {6: 16, 17: 6, 58: 2}.get(nh)
    if at is not None and len(packet) == 40 + plen and plen >= at + 2:
        pseudo = bytes(packet[8:40]) + struct.pack("!IxxxB", plen, nh)
        field = int.from_bytes(packet[40 + at : 42 + at], "big")
        packet[40 + at : 42 + at] = b"\x00\x00"
        right = ~_csum(pseudo + bytes(packet[40:])) & 0xFFFF
        # How far from right it is (0: right; the other representation of zero counts too).
        off = field + (~right & 0xFFFF)  # ones' complement difference: what the corruption added
        off = (off & 0xFFFF) + (off >> 16)
        off = 0 if off == 0xFFFF else off
        packet[40 + at : 42 + at] = off.to_bytes(2, "big")
    for where in (8, 24):
        if packet[where : where + 16] == address:
            packet[where : where + 16] = bytes(16)


def normalized(hexframe: str, address: bytes) -> bytes:
    """
    A frame with what legitimately differs between two runs set aside: the IPv4
    identification and header checksum; the client's address and the checksums it enters
    (after checking them); in a bubble (an IPv6 packet with no payload, next header 59), its
    trailers; in an echo test sent through the server, everything after the ICMPv6 type
    and code (random identifier, sequence and nonce).
    """
    frame = bytearray(bytes.fromhex(hexframe))
    if frame[12:14] != b"\x08\x00":
        return bytes(frame)
    frame[18:20] = b"\x00\x00"
    frame[24:26] = b"\x00\x00"
    if frame[23] == 17 and len(frame) >= 42:
        if frame[40:42] != b"\x00\x00":
            pseudo = bytes(frame[26:34]) + struct.pack("!BBH", 0, 17, len(frame) - 34)
            if _csum(pseudo + bytes(frame[34:])) == 0xFFFF:
                frame[40:42] = b"\xc0\xc0"  # checked and valid
        v6 = 42
        if len(frame) >= v6 + 40 and frame[v6] >> 4 == 6:
            inner = frame[v6:]
            _inner(inner, address)
            frame[v6:] = inner
            if frame[v6 + 4 : v6 + 6] == b"\x00\x00" and frame[v6 + 6] == 59:
                del frame[v6 + 40 :]
            elif frame[36:38] == b"\x0d\xd8" and frame[v6 + 6] == 58 and frame[v6 + 40] == 0x80:
                frame[v6 + 42 :] = bytes(len(frame) - v6 - 42)
    if frame[23] == 1:  # an ICMP error quoting a datagram to the client
        frame[36:38] = b"\x00\x00"
        if len(frame) >= 42 + 28 + 48:  # the quoted datagram's UDP and inner L4 checksums
            frame[42 + 26 : 42 + 28] = b"\x00\x00"
            frame[42 + 28 + 46 : 42 + 28 + 48] = b"\x00\x00"
        return bytes(frame).replace(address, bytes(16))
    return bytes(frame)


def delivered(hexpacket: str, address: bytes) -> bytes:
    """A packet the host received through the TUN, normalized as L{normalized} does."""
    packet = bytearray(bytes.fromhex(hexpacket))
    _inner(packet, address)
    return bytes(packet)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))


class _Namespaces(unittest.TestCase):
    skip = fast_path_skip_reason("twistd", "ip", "ethtool")

    def setUp(self) -> None:
        tag = secrets.token_hex(3)
        self.clientNs, self.worldNs = f"tfc{tag}-c", f"tfc{tag}-w"
        self.tmp = Path(tempfile.mkdtemp(prefix="teredo-fastclient-test-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        for ns in (self.clientNs, self.worldNs):
            _ip("netns", "add", ns)
            self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], capture_output=True)
        c, w = self.clientNs, self.worldNs
        _ip("link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "w0", "netns", w)
        for ns, dev in ((c, "c0"), (w, "w0")):
            _ip("link", "set", "lo", "up", ns=ns)
            _ip("link", "set", dev, "up", ns=ns)
        # The kernel leaves UDP checksums over veth to an offload that never happens: have
        # the client's kernel complete them, as it does for a NIC without offload.
        subprocess.run(
            ["ip", "netns", "exec", c, "ethtool", "-K", "c0", "tx", "off"], check=True, capture_output=True, timeout=20
        )
        # The host's flow labels are a keyed hash, another key in each namespace: none.
        subprocess.run(
            ["ip", "netns", "exec", c, "sysctl", "-qw", "net.ipv6.auto_flowlabels=0"], check=True,
            capture_output=True, timeout=20,
        )
        _ip("addr", "add", "203.0.113.20/24", "dev", "c0", ns=c)
        _ip("route", "add", "default", "via", "203.0.113.1", ns=c)
        for a in ("203.0.113.1/24", "203.0.113.10/24", "203.0.113.11/24"):
            _ip("addr", "add", a, "dev", "w0", ns=w)
        mac = self._mac(w, "w0")
        for v4 in ("203.0.113.1", "203.0.113.10", "203.0.113.11"):
            _ip("neigh", "replace", v4, "lladdr", mac, "dev", "c0", "nud", "permanent", ns=c)
        self.clientMac = self._mac(c, "c0")
        _ip("neigh", "replace", "203.0.113.20", "lladdr", self.clientMac, "dev", "w0", "nud", "permanent", ns=w)

    @staticmethod
    def _mac(ns: str, dev: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/address"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def _twistd(self, ns: str, conf: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, shutil.which("twistd") or "twistd", "-n",
                 f"--pidfile={self.tmp / (name + '.pid')}", "teredo", "--config", str(conf)],
                stdout=out, stderr=subprocess.STDOUT, env=_env(),
            )
        self.addCleanup(stop_popen, proc)
        return proc, log

    def startServer(self) -> None:
        conf = self.tmp / "server.toml"
        conf.write_text(
            "[node]\n"
            f'status-socket = "{self.tmp / "server.sock"}"\n'
            f'state-dir = "{self.tmp / "state-server"}"\n'
            '[server]\nenabled = true\nprimary = "203.0.113.10"\nsecondary = "203.0.113.11"\n'
            'interface = ""\nfast-path = "off"\n'
        )
        self._twistd(self.worldNs, conf, "server")

    def clientConf(self, fast: str) -> tuple[Path, Path]:
        status = self.tmp / f"{fast}.sock"
        conf = self.tmp / f"{fast}.toml"
        conf.write_text(
            "[node]\n"
            f'status-socket = "{status}"\n'
            f'state-dir = "{self.tmp / ("state-" + fast)}"\n'
            "[client]\nenabled = true\n"
            f'server = "203.0.113.10"\ninterface = "tfc-tun"\nport = {PORT}\nrefresh = 3600\n'
            "local-discovery = false\nport-mapping = false\n"
            f'fast-path = "{fast}"\n'
        )
        return conf, status


class ClientFastPathDifferentialTests(_Namespaces):
    def run_client(self, fast: str) -> tuple[dict[str, Any], dict[str, Any], str]:
        """
        One client run: start it, wait for qualification, drive the world, read its status,
        stop it.  The driver's steps, the client's status and its log.
        """
        from teredonode.status import read_status

        conf, status = self.clientConf(fast)
        proc, log = self._twistd(self.clientNs, conf, fast)
        try:
            deadline = time.monotonic() + 60
            address = None
            while address is None:
                try:
                    current = read_status(str(status), timeout=2)["client"]
                    if current["state"] == "qualified":
                        address = current["address"]
                        break
                except Exception:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.fail(f"the client did not qualify: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            time.sleep(1.0)  # the address leaves its tentative state
            driven = subprocess.run(
                ["ip", "netns", "exec", self.worldNs, sys.executable, str(DRIVER), "w0", self.clientMac,
                 self.clientNs, "tfc-tun", address, str(PORT)],
                capture_output=True, text=True, env=_env(), timeout=180,
            )
            if driven.returncode != 0:
                self.fail(f"driver failed: {driven.stderr[-2000:]} client log: {log.read_text()[-2000:]}")
            result = read_status(str(status), timeout=5)["client"]
            return json.loads(driven.stdout), result, log.read_text()
        finally:
            stop_popen(proc)

    def test_same_output(self) -> None:
        """
        Both paths send and deliver the same packets and count the same, and the fast path
        carried the trusted traffic.
        """
        self.startServer()
        slow, slowStatus, _ = self.run_client("off")
        fast, fastStatus, fastLog = self.run_client("on")
        self.assertIn("Trusted peers: kernel fast path", fastLog)
        self.assertIsNone(slowStatus["fast-path"])
        slowSteps = {name: (out, up) for name, out, up in slow["steps"]}
        fastSteps = {name: (out, up) for name, out, up in fast["steps"]}
        self.assertEqual(list(slowSteps), list(fastSteps))
        sa = socket.inet_pton(socket.AF_INET6, slowStatus["address"])
        fa = socket.inet_pton(socket.AF_INET6, fastStatus["address"])
        for name in slowSteps:
            a = [normalized(f, sa) for f in slowSteps[name][0]]
            b = [normalized(f, fa) for f in fastSteps[name][0]]
            self.assertEqual(a, b, f"step {name}: the two paths sent different frames")
            a = [delivered(p, sa) for p in slowSteps[name][1]]
            b = [delivered(p, fa) for p in fastSteps[name][1]]
            self.assertEqual(a, b, f"step {name}: the host received different packets")
        # The steps mean something: trusted traffic went through, drops stayed dropped.
        self.assertEqual(len(slowSteps["up-udp"][1]), 1)
        self.assertEqual(len(slowSteps["up-udp-burst"][1]), 20)
        self.assertEqual(len(slowSteps["up-native-udp"][1]), 1)
        self.assertEqual(len(slowSteps["down-udp-burst"][0]), 20)
        self.assertEqual(len(slowSteps["down-native-udp"][0]), 1)
        for name in ("up-wrong-mapping", "up-wrong-destination", "up-other-port", "up-bad-udp-checksum"):
            self.assertEqual(slowSteps[name][1], [], name)
        self.assertEqual(slowSteps["down-foreign-source"][0], [])
        self.assertEqual(slowStatus["counters"], fastStatus["counters"])
        self.assertEqual(slowStatus["drops"], fastStatus["drops"])
        carried = fastStatus["fast-path"]["carried"]
        trusted = sum(len(slowSteps[n][1]) for n in TRUSTED_UP) + sum(len(slowSteps[n][0]) for n in TRUSTED_DOWN)
        self.assertGreaterEqual(carried, trusted, fastStatus["fast-path"])
        # ... the SYN among them: its partial checksum is carried (the client's interface
        # completes checksums in software here, see setUp).
        down = sum(len(slowSteps[n][0]) for n in TRUSTED_DOWN) + 1
        self.assertGreaterEqual(fastStatus["fast-path"]["from-tun"], down, fastStatus["fast-path"])
        # The SYN's partial checksum was completed, and the UDP checksum covers it.
        for run in (slow, fast):
            self.assertEqual(len(run["tcp"]), 1, run["tcp"])
            frame = bytes.fromhex(run["tcp"][0])
            udp, v6 = frame[34:42], frame[42:]
            pseudo4 = frame[26:34] + struct.pack("!BBH", 0, 17, len(frame) - 34)
            self.assertEqual(_csum(pseudo4 + frame[34:]), 0xFFFF, "outer UDP checksum")
            self.assertNotEqual(udp[6:8], b"\x00\x00")
            pseudo6 = v6[8:40] + struct.pack("!IxxxB", len(v6) - 40, 6)
            self.assertEqual(_csum(pseudo6 + v6[40:]), 0xFFFF, "inner TCP checksum")


class ClientFastPathFallbackTests(_Namespaces):
    def test_on_refuses(self) -> None:
        """
        C{fast-path = "on"} where the programs cannot attach (no Ethernet interface holds
        the address the client binds): the client refuses to start, with one line.
        """
        conf, _ = self.clientConf("on")
        conf.write_text(conf.read_text().replace("[client]\n", '[client]\nbind = "127.0.0.1"\n'))
        proc, log = self._twistd(self.clientNs, conf, "on")
        proc.wait(timeout=60)
        text = log.read_text()
        self.assertIn('teredo: client: fast-path = "on" but no Ethernet interface holds', text)

    def test_auto_falls_back(self) -> None:
        """
        C{"auto"} where the programs cannot attach: the Python path, one log line saying so.
        """
        from teredonode.status import read_status

        conf, status = self.clientConf("auto")
        conf.write_text(conf.read_text().replace("[client]\n", '[client]\nbind = "127.0.0.1"\n'))
        proc, log = self._twistd(self.clientNs, conf, "auto")
        deadline = time.monotonic() + 60
        while True:
            try:
                current = read_status(str(status), timeout=2)["client"]
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.fail(f"the client did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        self.assertIsNone(current["fast-path"])
        lines = [line for line in log.read_text().splitlines() if "Trusted peers:" in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("Python path (kernel fast path unavailable", lines[0])
