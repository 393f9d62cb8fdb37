"""
The XDP fast path against the Python server, packet for packet (differential test).

Each datagram is given both to the BPF program (BPF_PROG_TEST_RUN: the kernel runs the
loaded program once on a frame we build, nothing is attached anywhere) and to a Python
server on the in-memory network.  Then:

  - where the program answers (XDP_TX), its frame carries byte for byte the datagram the
    Python server sends (UDP payload, source and destination address and port), with valid
    IPv4 and UDP checksums and the Ethernet addresses swapped;
  - where it drops (XDP_DROP), the Python server drops the datagram under the same reason;
  - everything else is XDP_PASS with the frame untouched, and a second Python server, the
    one behind the fast path, gets exactly those; its status (its own counters with the
    program's merged in, as C{teredo status} shows them) then equals the status of the
    reference server that saw everything.

Root only (loading a BPF program needs CAP_BPF and CAP_NET_ADMIN), with clang and libbpf.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from teredonode.config import ServerSettings
from teredonode.roles.server import TeredoServer
from teredonode.testing import FakeInternet
from teredonode.wire import ipv6
from teredonode.wire.address import CLIENT_LINK_LOCAL_CONE, CLIENT_LINK_LOCAL_RESTRICTED
from teredonode.wire.teredo import AuthIndicator, OriginIndication, encode_payload
from tests.system.bpf_support import fast_path_skip_reason

PRIMARY, SECONDARY = "203.0.113.10", "203.0.113.11"
MAC_SERVER, MAC_PEER = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = 0, 1, 2, 3
#: The repository holding this test (not the working directory: trial runs in _trial_temp).
SOURCE = Path(__file__).resolve().parents[2]


def csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    checksum: int = ~total & 0xFFFF
    return checksum


def frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes, udp_checksum: bool = True) -> bytes:
    """
    Ethernet + IPv4 + UDP around C{payload}, as the server's NIC would receive it.
    """
    length = 8 + len(payload)
    udp = struct.pack("!HHHH", src[1], dst[1], length, 0)
    if udp_checksum:
        pseudo = socket.inet_aton(src[0]) + socket.inet_aton(dst[0]) + struct.pack("!BBH", 0, 17, length)
        udp = udp[:6] + struct.pack("!H", csum(pseudo + udp + payload) or 0xFFFF)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0x1234, 0, 57, 17, 0, socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    )
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return MAC_SERVER + MAC_PEER + b"\x08\x00" + ip + udp + payload


def rs(src: bytes = CLIENT_LINK_LOCAL_RESTRICTED, nonce: bytes | None = None, **kw: Any) -> bytes:
    hop = kw.pop("hop_limit", 255)
    packet = ipv6.icmpv6_packet(src, ipv6.ALL_ROUTERS, kw.pop("message", ipv6.RouterSolicitation()), hop)
    auth = kw.pop("auth", AuthIndicator(nonce) if nonce is not None else None)
    return encode_payload(packet, auth, **kw)


class FastPathDifferentialTests(unittest.TestCase):
    skip = fast_path_skip_reason()

    def setUp(self) -> None:
        self.objectPath: Path | None = None

    def build(self, **overrides: Any) -> None:
        """
        The program (compiled into this test's temporary directory) and two Python servers
        with C{overrides}: the reference, and the one behind the fast path.
        """
        from teredonode.fastpath import FastPath
        from teredonode.fastpath.program import object_path

        if self.objectPath is None:
            cache = tempfile.mkdtemp(prefix="teredo-fastpath-test-")
            self.addCleanup(shutil.rmtree, cache, True)
            self.objectPath = object_path(Path(cache))
        settings = ServerSettings(primary=PRIMARY, secondary=SECONDARY, **overrides)
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.reference = self.serve(settings, self.net.host(PRIMARY, SECONDARY), None)
        self.behindNet = FakeInternet(self.clock)
        path = self.objectPath
        self.fast: Any = None

        def starter(s: Any, ra: bytes) -> Any:
            self.fast = FastPath(s, ra, path)
            return self.fast

        self.behind = self.serve(settings, self.behindNet.host(PRIMARY, SECONDARY), starter)

    def serve(self, settings: ServerSettings, host: Any, starter: Any) -> TeredoServer:
        server = TeredoServer(settings, host, fastpath=starter)
        server.privilegedStartService()
        server.startService()
        self.addCleanup(server.stopService)
        return server

    def send(self, src: tuple[str, int], payload: bytes, to: str = PRIMARY, **kw: Any) -> tuple[int, bytes | None]:
        """
        One datagram through both paths: the program's verdict and what the reference
        server sent (C{None}: nothing).
        """
        dst = (to, 3544)
        data = frame(src, dst, payload, **kw)
        verdict, out = self.fast.obj.test_run("teredo_server", data)
        before = len(self.net.capture)
        self.net.inject(src, dst, payload)
        self.clock.advance(0)
        sent = [d for d in self.net.capture[before:] if d.src[1] == 3544 and d.src[0] in (PRIMARY, SECONDARY)]
        self.assertLessEqual(len(sent), 1)
        expected = sent[0] if sent else None
        if verdict == XDP_PASS:
            self.assertEqual(out, data, "XDP_PASS changed the frame")
            self.behindNet.inject(src, dst, payload)
            self.clock.advance(0)
        elif verdict == XDP_TX:
            self.assertIsNotNone(expected, "the program answered what the Python server did not")
            assert expected is not None
            self.assertFrame(out, expected.src, expected.dst, expected.data)
        else:
            self.assertEqual(verdict, XDP_DROP)
            self.assertIsNone(expected, "the program dropped what the Python server answered")
        return verdict, expected.data if expected else None

    def assertFrame(self, out: bytes, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        self.assertEqual(out[:14], MAC_PEER + MAC_SERVER + b"\x08\x00")
        ip, udp = out[14:34], out[34:42]
        self.assertEqual(out[42:], payload)
        self.assertEqual((ip[0], ip[9], ip[8], ip[6] & 0x40), (0x45, 17, 64, 0x40))
        self.assertEqual(struct.unpack("!H", ip[2:4])[0], len(out) - 14)
        self.assertEqual(csum(ip), 0, "IPv4 header checksum")
        self.assertEqual((socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])), (src[0], dst[0]))
        self.assertEqual(struct.unpack("!HHH", udp[:6]), (src[1], dst[1], len(out) - 34))
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(out) - 34)
        self.assertNotEqual(udp[6:8], b"\x00\x00")
        self.assertEqual(csum(pseudo + out[34:]), 0, "UDP checksum")

    def assertOneTruth(self) -> None:
        """
        The server behind the fast path, with the program's counters merged, reports what
        the reference server reports.
        """
        ref, merged = self.reference.status(), self.behind.status()
        self.assertEqual(merged["counters"], ref["counters"])
        self.assertEqual(merged["drops"], ref["drops"])
        self.assertIsNotNone(merged["fast-path"])

    # -- answered ----------------------------------------------------------------------------

    def test_plainAndNonce(self) -> None:
        """
        RS without and with a nonce-only authentication indicator, restricted and cone
        link-local sources, to the primary and the secondary: the cone bit answers from the
        other address (RFC 4380 section 5.3.2).
        """
        self.build()
        n = 0
        for to in (PRIMARY, SECONDARY):
            for src in (CLIENT_LINK_LOCAL_RESTRICTED, CLIENT_LINK_LOCAL_CONE, bytes.fromhex("fe80" + "5a" * 14)):
                for nonce in (None, b"N0NCE123", b"\x00" * 8):
                    n += 1
                    verdict, sent = self.send((f"198.51.100.{n}", 40000 + n), rs(src, nonce), to)
                    self.assertEqual(verdict, XDP_TX)
        self.assertEqual(self.fast.counts()["ra"], n)
        self.assertOneTruth()

    def test_noUdpChecksumAndOtherMtu(self) -> None:
        """
        A datagram without a UDP checksum is answered too; the MTU option follows C{mtu}.
        """
        self.build(mtu=1400)
        verdict, _ = self.send(("192.0.2.77", 1024), rs(nonce=b"abcdefgh"), udp_checksum=False)
        self.assertEqual(verdict, XDP_TX)
        self.assertOneTruth()

    # -- passed on -----------------------------------------------------------------------------

    def test_everythingElseIsPassed(self) -> None:
        """
        Malformed, unusual and non-RS datagrams go to the Python server untouched, which
        counts (or answers) them as without the program.
        """
        self.build()
        bad_sum = bytearray(rs(nonce=b"N0NCE123"))
        bad_sum[-1] ^= 0xFF
        ll = CLIENT_LINK_LOCAL_RESTRICTED
        options = ipv6.RouterSolicitation((ipv6.NDOption(1, bytes(6)),))
        cases = {
            "bad icmpv6 checksum": bytes(bad_sum),
            "hop limit 254": rs(nonce=b"N0NCE123", hop_limit=254),
            "rs with an option": rs(message=options),
            "client identifier": rs(auth=AuthIndicator(b"N0NCE123", b"alice")),
            "authentication value": rs(auth=AuthIndicator(b"N0NCE123", b"", b"x" * 20)),
            "origin indication": rs(origin=OriginIndication("192.0.2.1", 5)),
            "trailer": rs(nonce=b"N0NCE123", trailers=b"\x01\x04abcd"),
            "truncated": rs()[:47],
            "bubble": ipv6.bubble(ll, ipv6.ALL_ROUTERS),
            "echo request": ipv6.icmpv6_packet(ll, ipv6.ALL_ROUTERS, ipv6.EchoRequest(1, 2, b"x"), 255),
            "router advertisement": ipv6.icmpv6_packet(ll, ipv6.ALL_ROUTERS, ipv6.RouterAdvertisement(), 255),
            "not teredo": b"\x45" + bytes(60),
        }
        for n, (name, payload) in enumerate(cases.items(), 1):
            verdict, _ = self.send((f"198.51.100.{n}", 2000 + n), payload)
            self.assertEqual(verdict, XDP_PASS, name)
        for src in (("10.1.2.3", 4000), ("100.64.0.1", 4000), ("224.0.0.1", 4000), (PRIMARY, 3544), (SECONDARY, 3544)):
            verdict, _ = self.send(src, rs(nonce=b"N0NCE123"))
            self.assertEqual(verdict, XDP_PASS, src)
        self.assertEqual(self.fast.counts()["passed"], len(cases) + 5)
        self.assertEqual(self.fast.counts()["received"], 0)
        self.assertOneTruth()

    def test_softenedAcceptsSharedSpace(self) -> None:
        """
        C{hardened = false}: 100.64.0.0/10 is a global source again, in both paths.
        """
        self.build(hardened=False)
        self.assertEqual(self.send(("100.64.0.1", 4000), rs())[0], XDP_TX)
        self.assertEqual(self.send(("10.0.0.1", 4000), rs())[0], XDP_PASS)
        self.assertOneTruth()

    def test_secureIsPythons(self) -> None:
        """
        With secure qualification every RS is the Python server's, plain or not.
        """
        self.build(secure=True, clients=(("alice", "correct horse", None),))
        for n, payload in enumerate((rs(), rs(nonce=b"N0NCE123")), 1):
            self.assertEqual(self.send((f"198.51.100.{n}", 40000), payload)[0], XDP_PASS)
        self.assertOneTruth()

    def test_reload(self) -> None:
        """
        A reload reaches the program: secure qualification makes every RS the Python
        server's, a rate it cannot express passes everything on, and back.
        """
        self.build()
        self.assertEqual(self.send(("198.51.100.1", 1000), rs())[0], XDP_TX)
        for overrides, verdict in (({"secure": True}, XDP_PASS), ({"rs_rate": 0.0001}, XDP_PASS), ({}, XDP_TX)):
            settings = ServerSettings(primary=PRIMARY, secondary=SECONDARY, **overrides)
            self.reference.reconfigure(settings)
            self.behind.reconfigure(settings)
            self.assertEqual(self.send(("198.51.100.2", 1000), rs())[0], verdict, overrides)
        self.assertOneTruth()

    def test_badUdpChecksumIsLeftToTheStack(self) -> None:
        """
        A corrupt UDP checksum: the kernel would discard the datagram, so the program must
        not answer it.
        """
        self.build()
        data = bytearray(frame(("198.51.100.1", 40000), (PRIMARY, 3544), rs(nonce=b"N0NCE123")))
        data[40] ^= 0x01
        verdict, out = self.fast.obj.test_run("teredo_server", bytes(data))
        self.assertEqual((verdict, out), (XDP_PASS, bytes(data)))

    # -- rate limits ---------------------------------------------------------------------------

    def test_perSourceBurst(self) -> None:
        """
        A new source gets C{rs-initial} RAs, then C{rate-limited-rs}, whatever its port;
        another source is not affected.
        """
        self.build()
        verdicts = [self.send(("198.51.100.9", 1000 + i), rs(nonce=b"N0NCE123"))[0] for i in range(12)]
        self.assertEqual(verdicts, [XDP_TX] * 4 + [XDP_DROP] * 8)
        self.assertEqual(self.send(("198.51.100.10", 1000), rs())[0], XDP_TX)
        self.assertEqual(self.fast.counts()["rate-limited-rs"], 8)
        self.assertOneTruth()

    def test_perSlash24(self) -> None:
        """
        C{rs-limit-prefix = 24}: the whole /24 shares one bucket.
        """
        self.build(rs_limit_prefix=24, rs_initial=3)
        verdicts = [self.send((f"198.51.100.{i}", 1000), rs())[0] for i in range(1, 6)]
        self.assertEqual(verdicts, [XDP_TX] * 3 + [XDP_DROP] * 2)
        self.assertEqual(self.send(("198.51.101.1", 1000), rs())[0], XDP_TX)
        self.assertOneTruth()

    def test_globalBudget(self) -> None:
        """
        Past C{ra-burst}, RSs that passed their source's bucket are dropped as
        C{rate-limited-ra-budget}; an RS over its source's limit takes no budget.
        """
        self.build(ra_rate=0.001, ra_burst=3, rs_initial=1, rs_burst=1)
        verdicts = [self.send(("198.51.100.1", 1000), rs())[0] for _ in range(3)]
        self.assertEqual(verdicts, [XDP_TX, XDP_DROP, XDP_DROP])
        verdicts = [self.send((f"198.51.100.{i}", 1000), rs())[0] for i in range(2, 6)]
        self.assertEqual(verdicts, [XDP_TX, XDP_TX, XDP_DROP, XDP_DROP])
        counts = self.fast.counts()
        self.assertEqual((counts["rate-limited-rs"], counts["rate-limited-ra-budget"]), (2, 2))
        self.assertOneTruth()


CLIENT_SCRIPT = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 40000))
sock.settimeout(float(sys.argv[5]))
payload = bytes.fromhex(sys.argv[3])
for _ in range(int(sys.argv[4])):
    sock.sendto(payload, (sys.argv[2], 3544))
    try:
        data, addr = sock.recvfrom(2048)
    except socket.timeout:
        continue
    print(addr[0], data.hex())
    break
else:
    print("none")
"""

#: C{ip -j link show}'s C{xdp} C{mode} (the kernel's XDP_ATTACHED_* values).
XDP_ATTACHED = {1: "native", 2: "generic", 3: "offloaded", 4: "multiple"}


class FastPathServiceTests(unittest.TestCase):
    """
    The real server (twistd) with C{fast-path = "on"} in a namespace, a client in another,
    joined by a veth: the program attaches as C{xdp-mode} says (C{auto}: generic, since it
    is a veth), answers an RS with what the Python server would send, and the server's
    status counts it.
    """

    skip = fast_path_skip_reason("ip", "twistd")

    def setUp(self) -> None:
        import secrets

        suffix = secrets.token_hex(3)
        self.server_ns, self.client_ns = f"tnfp-{suffix}-s", f"tnfp-{suffix}-c"
        self.tmp = Path(tempfile.mkdtemp(prefix="teredo-fastpath-svc-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        for ns in (self.server_ns, self.client_ns):
            self.run_ok("ip", "netns", "add", ns)
            self.addCleanup(subprocess.run, ["ip", "netns", "del", ns], capture_output=True)
        self.run_ok("ip", "-n", self.server_ns, "link", "add", "fps", "type", "veth", "peer", "name", "fpc",
                    "netns", self.client_ns)
        for ns, dev, addrs in ((self.server_ns, "fps", (PRIMARY, SECONDARY)), (self.client_ns, "fpc", ("203.0.113.50",))):
            for addr in addrs:
                self.run_ok("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            self.run_ok("ip", "-n", ns, "link", "set", dev, "up")
            self.run_ok("ip", "-n", ns, "link", "set", "lo", "up")
        # Frames from a local socket on a veth carry only a partial UDP checksum, which the
        # program leaves to the stack; a wire's frames carry a full one.
        self.offload("--tx", "off")

    def run_ok(self, *argv: str) -> str:
        # The tree under test, whatever the runner's working directory (trial's is _trial_temp).
        env = dict(os.environ, PYTHONPATH=str(SOURCE))
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(result.returncode, 0, f"{argv}: {result.stderr}")
        return result.stdout

    def offload(self, *options: str) -> None:
        """
        Set the client veth's offloads (L{teredonode.lab.offload}, in its namespace).
        """
        self.run_ok("ip", "netns", "exec", self.client_ns, sys.executable, "-m", "teredonode.lab.offload",
                    *options, "fpc")

    def status(self) -> dict[str, Any]:
        code = f"import sys; sys.path.insert(0, {str(SOURCE)!r}); from teredonode.cli import main; sys.exit(main())"
        out = self.run_ok(sys.executable, "-c", code, "status", "--json", "--socket", str(self.tmp / "status.sock"))
        return json.loads(out)["server"]  # type: ignore[no-any-return]

    def serve(self, xdp_mode: str | None = None) -> None:
        """
        Start the server with C{fast-path = "on"} (and C{xdp-mode} when given), stopped by
        PID at cleanup; return once it serves with the program attached to C{fps}.
        """
        conf = self.tmp / "teredo.toml"
        conf.write_text(
            "[node]\n"
            f'status-socket = "{self.tmp}/status.sock"\n'
            f'state-dir = "{self.tmp}/state"\n'
            "[server]\nenabled = true\n"
            f'primary = "{PRIMARY}"\nsecondary = "{SECONDARY}"\ninterface = ""\nfast-path = "on"\n'
            + (f'xdp-mode = "{xdp_mode}"\n' if xdp_mode is not None else "")
        )
        log = open(self.tmp / "server.log", "wb")
        self.addCleanup(log.close)
        env = dict(os.environ, PYTHONPATH=str(SOURCE))
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.server_ns, shutil.which("twistd") or "twistd", "-n", "--pidfile=",
             "teredo", "--config", str(conf)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(self.tmp),
        )

        def stop() -> None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

        self.addCleanup(stop)
        for _ in range(100):
            if (self.tmp / "status.sock").exists():
                try:
                    if self.status()["state"] == "serving":
                        break
                except AssertionError:
                    pass
            server.poll()
            self.assertIsNone(server.returncode, (self.tmp / "server.log").read_text())
            subprocess.run(["sleep", "0.1"])
        else:
            self.fail("the server did not start serving: " + (self.tmp / "server.log").read_text())
        self.assertIn("XDP fast path on fps", (self.tmp / "server.log").read_text())

    def attach_mode(self) -> str:
        """
        How the program is attached to C{fps}, as the kernel reports it.
        """
        [link] = json.loads(self.run_ok("ip", "-n", self.server_ns, "-j", "link", "show", "dev", "fps"))
        self.assertIn("xdp", link, "no XDP program on fps")
        return XDP_ATTACHED.get(link["xdp"]["mode"], str(link["xdp"]["mode"]))

    def ask(self, payload: bytes, tries: int = 3, timeout: float = 5) -> list[str]:
        """
        Send C{payload} to the primary from the client namespace, up to C{tries} times:
        C{[source, answer hex]}, or C{["none"]}.
        """
        return self.run_ok("ip", "netns", "exec", self.client_ns, sys.executable, "-c", CLIENT_SCRIPT,
                           "203.0.113.50", PRIMARY, payload.hex(), str(tries), str(timeout)).split()

    def assertAnsweredInTheKernel(self) -> None:
        """
        An RS from the client namespace gets the Python server's answer, byte for byte,
        from the program: the status counts it as answered and nothing was handed to Python.
        """
        payload = rs(CLIENT_LINK_LOCAL_CONE, b"N0NCE123")
        out = self.ask(payload)
        self.assertNotEqual(out, ["none"], (self.tmp / "server.log").read_text())
        # What the Python server sends for this RS, on the in-memory network.
        net = FakeInternet(Clock())
        reference = TeredoServer(ServerSettings(primary=PRIMARY, secondary=SECONDARY), net.host(PRIMARY, SECONDARY))
        reference.privilegedStartService()
        net.inject(("203.0.113.50", 40000), (PRIMARY, 3544), payload)
        net.clock.advance(0)
        [expected] = [d for d in net.capture if d.src[1] == 3544]
        self.assertEqual((out[0], bytes.fromhex(out[1])), (expected.src[0], expected.data))
        status = self.status()
        self.assertEqual(status["fast-path"]["interfaces"], ["fps"])
        self.assertEqual(status["fast-path"]["passed-to-python"], 0, "the Python path answered")
        self.assertEqual(status["fast-path"]["answered"], 1)
        self.assertGreaterEqual(status["counters"]["ra"], 1)
        self.assertEqual(status["counters"]["rs"], status["counters"]["ra"])

    def test_answersInTheKernel(self) -> None:
        """
        C{xdp-mode = "auto"} (the default) on a veth: generic XDP.
        """
        self.serve()
        self.assertEqual(self.attach_mode(), "generic")
        self.assertAnsweredInTheKernel()

    def test_generic(self) -> None:
        self.serve("generic")
        self.assertEqual(self.attach_mode(), "generic")
        self.assertAnsweredInTheKernel()

    def test_nativeWithAnXdpPeer(self) -> None:
        """
        C{xdp-mode = "native"} on a veth whose peer runs an XDP program (one passing
        everything): native XDP, and its C{XDP_TX} answers reach the peer.

        The peer's program is what makes it work: a veth's native C{XDP_TX} puts the frame
        in the peer's ring but wakes the peer's NAPI only when the peer has an XDP program.
        GRO on the peer gives it a ring, not that wakeup: the answer then waits there until
        other traffic happens to poll it, which on an idle link is never.
        """
        self.attach_pass_program()
        self.serve("native")
        self.assertEqual(self.attach_mode(), "native")
        self.assertAnsweredInTheKernel()

    def attach_pass_program(self) -> None:
        """
        Attach an XDP program returning C{XDP_PASS} to the client veth (native; the
        namespace's removal removes it).
        """
        source = self.tmp / "pass.bpf.c"
        source.write_text(PASS_PROGRAM)
        obj = self.tmp / "pass.bpf.o"
        self.run_ok("clang", "-O2", "-target", "bpf", "-c", str(source), "-o", str(obj))
        self.run_ok("ip", "-n", self.client_ns, "link", "set", "dev", "fpc", "xdpdrv", "obj", str(obj), "sec", "xdp")
        [link] = json.loads(self.run_ok("ip", "-n", self.client_ns, "-j", "link", "show", "dev", "fpc"))
        self.assertEqual(link.get("xdp", {}).get("mode"), 1, link)


#: The client veth's XDP program for L{FastPathServiceTests.test_nativeWithAnXdpPeer}:
#: passes every frame (2 is XDP_PASS; no headers needed).
PASS_PROGRAM = """
__attribute__((section("xdp"), used)) int pass(void *ctx) { return 2; }
char _license[] __attribute__((section("license"), used)) = "GPL";
"""
