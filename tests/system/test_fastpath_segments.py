"""
TCP through the client's and the relay's kernel fast paths as whole super-packets
(segmentation offload).

The host's TCP hands the client's TUN super-packets of many segments, and a relay that
receives a flow's segments merged (GRO on its NIC) forwards super-packets into its TUN.  Where the
outgoing interface completes the checksums of what it cuts (here: in software, as a NIC
without offload does), the fast paths encapsulate such a super-packet whole (a UDP tunnel
packet) and the interface cuts it into the datagrams the Python path would have sent one by
one.  In the default lab (our server, our relay with its fast path, client1 behind nat1),
4 MiB go over TCP from client1 to v6host (up), then from v6host to client1 (down; the
lab's bridge hands the relay v6host's super-packets whole, as a NIC's GRO would):

  - the receiver gets every byte, in order (its TCP checks each segment's checksum, which
    the segmentation completed);
  - on nat1, every datagram of the flow fits the path: IPv4 length at most 1308 (the TUN's
    1280 plus 28);
  - most of them come from the super-packet path, which alone sends datagrams without a UDP
    checksum (the Python path's socket and the one-packet fast path set it);
  - the sender's status shows them carried by its fast path, and the super-packets it
    encapsulated whole (fewer than half as many as their segments);
  - the receiver's acknowledgements, single packets whose checksum its TCP leaves partial
    (v6host's cross the bridge that way to the relay, as from a container's veth), are
    carried by the relay's fast path as UDP tunnel packets too (the interface completes the
    inner checksum), not handed to Python: the transfer itself shows them valid.

Root only, with clang, libbpf, tcpdump and the lab's tools.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.trial import unittest

from tests.system.bpf_support import fast_path_skip_reason
from tests.system.lab_fixture import use_lab

SIZE = 4 * 1024 * 1024
PORT = 5399
TUN_MTU = 1280

SINK = r"""
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(1)
s.settimeout(60)
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(60)
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest(), flush=True)
"""

SOURCE = r"""
import socket, sys
data = bytes(range(256)) * (int(sys.argv[3]) // 256)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
"""


def _datagrams(pcap: Path) -> list[tuple[int, int]]:
    """(IPv4 total length, UDP checksum) of each Ethernet/IPv4/UDP frame in a pcap file."""
    data = pcap.read_bytes()
    out, at = [], 24
    while at + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, at + 8)[0]
        frame = data[at + 16 : at + 16 + caplen]
        at += 16 + caplen
        if len(frame) >= 42 and frame[12:14] == b"\x08\x00" and frame[23] == 17:
            ihl = (frame[14] & 15) * 4
            total = struct.unpack_from("!H", frame, 16)[0]
            out.append((total, struct.unpack_from("!H", frame, 14 + ihl + 6)[0]))
    return out


class SuperPacketTests(unittest.TestCase):
    def setUp(self) -> None:
        reason = fast_path_skip_reason("tcpdump")
        if reason:
            raise unittest.SkipTest(reason)
        self.lab = use_lab(self)

    def started(self, node: str, host: str, role: str, settings: dict[str, object] | None = None) -> None:
        self.lab.start_teredonode(node, host, role, settings)
        if role != "client" and not self.lab.wait_udp_listening(host, 3544, 15):
            self.fail(f"{node} does not listen: {self.lab.nodes[node].log_tail(10)}")

    def path(self) -> tuple[str, str]:
        """
        Server, relay and client, all ours, the fast paths on, trusted both ways; the
        client's and the relay's links compute checksums in software, and the relay
        receives v6host's super-packets whole.  Returns the client's address and v6host's.
        """
        lab = self.lab
        offload = [sys.executable, "-m", "teredonode.lab.offload"]
        lab.exec("client1", [*offload, "--tx", "off", "eth0"], check=True)
        lab.exec("relay", [*offload, "--tx", "off", "eth0"], check=True)
        # The bridge hands v6host's super-packets to the relay whole, as GRO on a NIC would.
        lab.exec("inet", [*offload, "--tx", "on", "to-relay"], check=True)
        lab.exec("server", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.started("server-node", "server", "server")
        self.started("relay-node", "relay", "relay", {"fast-path": "on"})
        self.started("client-node", "client1", "client", {"fast-path": "on"})
        address = lab.wait_teredo_address("client1", 20)
        self.assertIsNotNone(address, lab.nodes["client-node"].log_tail(10))
        assert address is not None
        v6host = lab.ipv6("v6host")
        # Trust both ways: the client's echo test through the relay, the relay's bubbles.
        self.assertGreater(lab.ping6("client1", v6host, count=3)[0], 0)
        self.assertGreater(lab.ping6("v6host", address, count=3)[0], 0)
        return address, v6host

    def fastPath(self, node: str, role: str) -> dict[str, int]:
        """The fast path's counters in C{node}'s status."""
        block = self.lab.node_status(node)[role].get("fast-path") or {}
        return {k: int(v) for k, v in block.items() if isinstance(v, int)}

    def carried(self, node: str, role: str) -> tuple[int, int]:
        """The fast path's C{carried} and C{super-packets} in C{node}'s status."""
        block = self.fastPath(node, role)
        return block.get("carried", 0), block.get("super-packets", 0)

    def transfer(self, source: str, sink: str, to: str, interface: str, sender: str) -> list[tuple[int, int]]:
        """
        SIZE bytes over TCP from C{source} to C{sink} (address C{to}), checked; returns the
        datagrams from C{sender} (an IPv4 address) captured on nat1's C{interface}.
        """
        lab = self.lab
        proc = lab.popen(sink, [sys.executable, "-c", SINK, str(PORT)], stdout=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        assert proc.stdout is not None
        self.assertEqual(proc.stdout.readline().strip(), "listening")
        pcap = Path(tempfile.mkdtemp(prefix="teredo-segments-")) / "nat1.pcap"
        self.addCleanup(shutil.rmtree, pcap.parent, True)
        os.chmod(pcap.parent, 0o777)  # tcpdump may drop to its own user
        capture = lab.popen(
            "nat1",
            ["timeout", "60", "tcpdump", "-i", interface, "-nn", "-s", "64", "-c", "20000", "-w", str(pcap),
             "-Z", "root", "udp", "and", "src", "host", sender],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.addCleanup(capture.kill)
        assert capture.stderr is not None
        for line in capture.stderr:
            if "listening on" in line:
                break
        sent = lab.exec(source, [sys.executable, "-c", SOURCE, to, str(PORT), str(SIZE)], timeout=90)
        self.assertEqual(sent.returncode, 0, sent.stderr)
        received = proc.stdout.readline().split()
        expected = hashlib.sha256(bytes(range(256)) * (SIZE // 256)).hexdigest()
        self.assertEqual(received, [str(SIZE), expected])
        time.sleep(0.5)  # the capture's last packets reach its file
        capture.terminate()
        capture.wait(10)
        return _datagrams(pcap)

    def assertSentWhole(
        self, datagrams: list[tuple[int, int]], before: tuple[int, int], after: tuple[int, int]
    ) -> None:
        segments = SIZE // (TUN_MTU - 60)
        self.assertGreater(len(datagrams), segments * 0.9)
        self.assertEqual([d for d in datagrams if d[0] > TUN_MTU + 28], [])
        whole = [d for d in datagrams if d[1] == 0]
        self.assertGreater(len(whole), segments // 2, f"{len(whole)} of {len(datagrams)} without a UDP checksum")
        self.assertGreater(after[0] - before[0], segments * 0.9)
        # Each super-packet holds several segments; the status counts both.
        self.assertGreater(after[1] - before[1], 0)
        self.assertLess(after[1] - before[1], len(whole) // 2)

    def test_clientSendsSuperPacketsWhole(self) -> None:
        address, v6host = self.path()
        before = self.carried("client-node", "client")
        relay0 = self.fastPath("relay-node", "relay")
        datagrams = self.transfer("client1", "v6host", v6host, "lan", self.lab.ipv4("client1"))
        self.assertSentWhole(datagrams, before, self.carried("client-node", "client"))
        # v6host's acknowledgements left through the relay's fast path, not Python.
        relay1 = self.fastPath("relay-node", "relay")
        acks = relay1["from-tun"] - relay0["from-tun"]
        passed = relay1["passed-to-python"] - relay0["passed-to-python"]
        self.assertGreater(acks, 50)
        self.assertLess(passed, acks // 10, f"{passed} passed to Python, {acks} carried")

    def test_relaySendsSuperPacketsWhole(self) -> None:
        address, v6host = self.path()
        before = self.carried("relay-node", "relay")
        datagrams = self.transfer("v6host", "client1", address, "wan", self.lab.public_ipv4("relay"))
        self.assertSentWhole(datagrams, before, self.carried("relay-node", "relay"))
