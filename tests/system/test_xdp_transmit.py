"""
L{teredonode.fastpath.libbpf.BpfObject.transmit} (live frames) and the benchmarks' kernel load
generator built on it (C{benchmarks/xdpgen.py}): the frames it stamps leave with correct
checksums, as many as asked, and the sink counts exactly the answers of the current tag.

Two namespaces of their own joined by a veth: "gen" runs the generator and its sink, "peer"
a plain UDP socket that echoes every datagram it receives.  The kernel verifies the UDP
checksum before the socket sees a datagram, so an echo per frame proves every incremental
checksum update right; the echoes come back to the sink, which counts them by tag.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from tests.system.bpf_support import fast_path_skip_reason

SOURCE = Path(__file__).resolve().parents[2]
GEN_ADDRESS, PEER_ADDRESS, PORT = "198.51.100.2", "198.51.100.3", 9000
#: Frames per run: enough to go round every varied port and wrap the low sequence byte.
FRAMES = 1000
PORTS = 16

_GENERATOR = f"""
import json, socket, sys, time
sys.path[:0] = [{str(SOURCE)!r}, {str(SOURCE / "benchmarks")!r}]
from xdpgen import ETH_IPV4, XdpGenerator, ethernet, mac_of
from teredonode.lab.usernat import udp_packet
ifname, peer_mac = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", ""))
gen = XdpGenerator(ifname)
frame = ethernet(peer_mac, mac_of(ifname), ETH_IPV4,
                 udp_packet(({GEN_ADDRESS!r}, 40000), ({PEER_ADDRESS!r}, {PORT}), bytes(64)))
data = 14 + 20 + 8
gen.configure(frame, tag_offset=data, seq_offset=data + 4, vary_offset=14 + 20, vary_base=40000,
              vary_span={PORTS}, csum_offset=14 + 20 + 6, csum_udp=True, answer_ethertype=ETH_IPV4,
              answer_sport={PORT}, answer_tag_offset=data, answer_proto_offset=14 + 9, answer_proto=17)
results = []
for _ in range(2):
    tag = gen.new_tag()
    before = gen.counts()
    for _ in range({FRAMES} // 20):  # a veth's ring holds 256: paced, as the benchmarks do
        gen.send(20)
        time.sleep(0.002)
    deadline = time.monotonic() + 5
    while gen.counts()["answered"] - before["answered"] < {FRAMES} and time.monotonic() < deadline:
        time.sleep(0.05)
    after = gen.counts()
    sample = gen.sample() or b""
    results.append({{"answered": after["answered"] - before["answered"],
                     "stale": after["stale"] - before["stale"],
                     "sample_tag_ok": sample[data:data + 4] == tag}})
gen.close()
print(json.dumps(results))
"""

_ECHO = f"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(({PEER_ADDRESS!r}, {PORT}))
s.settimeout(3)
seen, ports = 0, set()
print("ready", flush=True)
try:
    while True:
        data, sender = s.recvfrom(2048)
        seen += 1
        ports.add(sender[1])
        s.sendto(data, sender)
except socket.timeout:
    pass
print(json.dumps({{"seen": seen, "ports": sorted(ports)}}), flush=True)
"""


def _ip(*argv: str) -> str:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=20)
    if result.returncode != 0:
        raise AssertionError(f"ip {' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


class LiveTransmitTests(unittest.TestCase):
    def setUp(self) -> None:
        reason = fast_path_skip_reason("ip")
        if reason:
            raise unittest.SkipTest(reason)
        suffix = secrets.token_hex(3)
        self.gen_ns, self.peer_ns = f"tnxt-{suffix}-g", f"tnxt-{suffix}-p"
        self.gen_dev, self.peer_dev = f"txg{suffix}", f"txp{suffix}"
        for ns in (self.gen_ns, self.peer_ns):
            _ip("netns", "add", ns)
            self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], capture_output=True, timeout=20)
        _ip("-n", self.gen_ns, "link", "add", self.gen_dev, "type", "veth", "peer", "name", self.peer_dev,
            "netns", self.peer_ns)
        for ns, dev, addr in ((self.gen_ns, self.gen_dev, GEN_ADDRESS), (self.peer_ns, self.peer_dev, PEER_ADDRESS)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        # The generator's frames arrive as XDP frames, which a veth takes only through NAPI
        # (GRO on); the echoes return through the generator's side, whose sink runs XDP.
        subprocess.run(["ip", "netns", "exec", self.peer_ns, sys.executable, "-c",
                        "import sys; sys.path.insert(0, sys.argv[1]); from teredonode.lab.offload import "
                        "set_offloads; set_offloads([sys.argv[2]], tx_checksum=False, gro=True)",
                        str(SOURCE), self.peer_dev], check=True, timeout=20)

    def stop(self, popen: subprocess.Popen[str]) -> None:
        if popen.poll() is None:
            popen.kill()
            popen.wait()

    def test_everyFrameLeavesWithACorrectChecksumAndIsCounted(self) -> None:
        """
        Two runs of 1000 frames over 16 source ports: the peer's kernel accepts every one
        (each checksum was fixed right), and the sink counts exactly the 1000 echoes of each
        run's tag, none as stale, and keeps a sample carrying the tag.
        """
        echo = subprocess.Popen(["ip", "netns", "exec", self.peer_ns, sys.executable, "-c", _ECHO],
                                stdout=subprocess.PIPE, text=True)
        self.addCleanup(self.stop, echo)
        assert echo.stdout is not None
        self.assertEqual(echo.stdout.readline().strip(), "ready")
        peer_mac = json.loads(_ip("-n", self.peer_ns, "-j", "link", "show", "dev", self.peer_dev))[0]["address"]
        gen = subprocess.run(["ip", "netns", "exec", self.gen_ns, sys.executable, "-c", _GENERATOR,
                              self.gen_dev, peer_mac], capture_output=True, text=True, timeout=60)
        self.assertEqual(gen.returncode, 0, gen.stderr)
        runs = json.loads(gen.stdout.strip().splitlines()[-1])
        peer = json.loads(echo.communicate(timeout=20)[0].strip().splitlines()[-1])
        self.assertEqual(peer["seen"], 2 * FRAMES)
        self.assertEqual(peer["ports"], list(range(40000, 40000 + PORTS)))
        for run in runs:
            self.assertEqual(run, {"answered": FRAMES, "stale": 0, "sample_tag_ok": True})
