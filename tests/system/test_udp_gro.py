"""
Receive batching (L{teredonode.udpbatch}) on a real link: the kernel's GRO coalesces, the
port splits, and a L{ServicePort} sees every datagram as sent.

Two namespaces joined by a veth with GRO and threaded NAPI on at the receiving end (as in
benchmarks/relay_rate.py): "tx" sends bursts with one C{sendto} per datagram, "rx" runs
tests/system/_gro_receiver.py.  Checked: every datagram arrives, byte for byte, from its
sender, in its flow's order; and the port read fewer buffers than datagrams (the kernel did
coalesce, so the splitting was exercised).  The control burst mixes two flows and changing
sizes, which GRO must never merge into one datagram.

Root only.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial import unittest

REPO = Path(__file__).resolve().parents[2]
RECEIVER = Path(__file__).resolve().with_name("_gro_receiver.py")
RX_IP, TX_IP, PORT = "10.213.0.2", "10.213.0.1", 3544

#: The sender: bursts as JSON [[source port, hex payload], ...], one sendto each, back to back.
SENDER = """
import json, socket, sys
socks = {}
for sport, payload in json.loads(sys.stdin.read()):
    s = socks.get(sport)
    if s is None:
        s = socks[sport] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sys.argv[1], sport))
    s.sendto(bytes.fromhex(payload), (sys.argv[2], int(sys.argv[3])))
"""


def _ip(*argv: str, ns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run(prefix + ["ip", *argv], check=True, capture_output=True, timeout=20)


def skipReason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "ip not installed"
    return None


class UdpGroTests(unittest.TestCase):
    skip = skipReason()

    def setUp(self) -> None:
        tag = secrets.token_hex(3)
        self.rx, self.tx = f"tgro-rx-{tag}", f"tgro-tx-{tag}"
        self.rxDev, self.txDev = f"tgr{tag}", f"tgt{tag}"
        self.processes: list[subprocess.Popen[str]] = []
        self.addCleanup(self._down)
        _ip("netns", "add", self.rx)
        _ip("netns", "add", self.tx)
        _ip("link", "add", self.txDev, "type", "veth", "peer", "name", self.rxDev, "netns", self.rx, ns=self.tx)
        _ip("addr", "add", f"{TX_IP}/24", "dev", self.txDev, ns=self.tx)
        _ip("addr", "add", f"{RX_IP}/24", "dev", self.rxDev, ns=self.rx)
        _ip("link", "set", self.txDev, "up", ns=self.tx)
        _ip("link", "set", self.rxDev, "up", ns=self.rx)
        # A static neighbour: while ARP resolves, the kernel queues a flow's first datagrams
        # and can send later ones past them, which would be a reordering no port made.
        shown = subprocess.run(
            ["ip", "-n", self.rx, "-j", "link", "show", self.rxDev],
            check=True, capture_output=True, text=True, timeout=20,
        )
        mac = json.loads(shown.stdout)[0]["address"]
        _ip("neigh", "replace", RX_IP, "lladdr", mac, "dev", self.txDev, "nud", "permanent", ns=self.tx)
        env = self._env()
        # A veth hands what it sends to its peer's GRO only when it does not offload
        # segmentation (else it could pass a whole TSO packet): the sending end completes
        # checksums itself, which also switches its segmentation offload off.
        for ns, dev, option in ((self.rx, self.rxDev, "--gro"), (self.tx, self.txDev, "--tx")):
            subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "teredonode.lab.offload", option,
                 "on" if option == "--gro" else "off", dev],
                check=True, capture_output=True, timeout=20, env=env,
            )
        subprocess.run(
            ["ip", "netns", "exec", self.rx, "sh", "-c", f"echo 1 > /sys/class/net/{self.rxDev}/threaded"],
            check=False, capture_output=True, timeout=20,
        )

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO)
        return env

    def _down(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        for ns in (self.rx, self.tx):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)

    def exchange(self, burst: list[tuple[int, bytes]]) -> dict[str, Any]:
        """
        Start the receiver, send C{burst} ((source port, payload), in order) from the
        other namespace, and return the receiver's record.
        """
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", self.rx, sys.executable, str(RECEIVER), str(PORT), str(len(burst))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self._env(),
        )
        self.processes.append(receiver)
        assert receiver.stdout is not None
        self.assertEqual(receiver.stdout.readline().strip(), "ready")
        subprocess.run(
            ["ip", "netns", "exec", self.tx, sys.executable, "-c", SENDER, TX_IP, RX_IP, str(PORT)],
            input=json.dumps([[sport, payload.hex()] for sport, payload in burst]),
            check=True, capture_output=True, text=True, timeout=60,
        )
        out, err = receiver.communicate(timeout=60)
        self.assertEqual(receiver.returncode, 0, err)
        record: dict[str, Any] = json.loads(out)
        self.assertIsNone(record["batching"])
        return record

    def assertFlowsIntact(self, burst: list[tuple[int, bytes]], record: dict[str, Any]) -> None:
        """
        Every datagram arrived whole, from its sender, each flow in its order.
        """
        got: dict[int, list[bytes]] = {}
        for hexdata, host, sport in record["received"]:
            self.assertEqual(host, TX_IP)
            got.setdefault(sport, []).append(bytes.fromhex(hexdata))
        sent: dict[int, list[bytes]] = {}
        for sport, payload in burst:
            sent.setdefault(sport, []).append(payload)
        self.assertEqual(got, sent)
        self.assertEqual(record["datagrams"], len(burst))

    def test_oneFlowBurst(self) -> None:
        """
        200 datagrams of one flow arrive intact and in order, in fewer reads than
        datagrams (sent again, up to five bursts, until the kernel coalesced some).
        """
        burst = [(40000, i.to_bytes(4, "big") * 25) for i in range(200)]
        for _ in range(5):
            record = self.exchange(burst)
            self.assertFlowsIntact(burst, record)
            if record["reads"] < record["datagrams"]:
                break
        self.assertLess(record["reads"], record["datagrams"])

    def test_flowsAndSizesNotMerged(self) -> None:
        """
        Two interleaved flows with changing sizes (a shorter datagram ends a coalesced
        train, a longer one starts a new one): nothing merged across flows or sizes.
        """
        burst: list[tuple[int, bytes]] = []
        for i in range(200):
            sport = 40001 + (i % 2 if i % 7 else 0)
            size = (100, 100, 100, 60, 140, 1, 100)[i % 7]
            burst.append((sport, bytes([i % 251]) * size))
        record = self.exchange(burst)
        self.assertFlowsIntact(burst, record)
