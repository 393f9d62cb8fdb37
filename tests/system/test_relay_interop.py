"""
Our relay and host-specific relay in the lab (issue 6).

  - a Miredo client and our client, each behind a port-restricted NAT, reach v6host through
    our relay and v6host reaches them (ping both ways, TCP both ways with iperf3);
  - 10 000 random and mutated datagrams at the relay leave it forwarding;
  - dualhost, running our host-specific relay, pings a Miredo client and our client, and a
    capture on dualhost shows the traffic went over UDP/IPv4 straight to the client's NAT,
    never as IPv6 through the relay.

Every wait is a poll with a deadline; pings, iperf3 and tcpdump are bounded in time.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from typing import Any

from twisted.trial import unittest

from teredonode.lab.nodes import REPO_ROOT
from teredonode.wire.address import TeredoAddress
from tests.system.lab_fixture import LabAssertions, use_lab

QUALIFY_TIMEOUT = 20.0


class LabRoles(LabAssertions, unittest.TestCase):
    """
    Starting and watching nodes; every test gets a fresh default lab with our server.
    """

    def setUp(self) -> None:
        self.lab = use_lab(self, "default", need_miredo=True)
        self.lab.exec("server", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.lab.start_teredonode("our-server", "server", "server")
        self.waitListening("server", 3544, "our-server")

    def waitListening(self, host: str, port: int, node: str) -> None:
        if not self.lab.wait_udp_listening(host, port, 15):
            self.fail(f"{node} does not listen: {self.lab.nodes[node].log_tail(10)}")

    def status(self, node: str) -> dict[str, Any]:
        return self.lab.node_status(node)

    def startOurRelay(self) -> None:
        self.lab.start_teredonode("our-relay", "relay", "relay")
        self.waitStatus("our-relay", lambda s: s["relay"]["state"] == "relaying", 15, "relaying")

    def startClient(self, impl: str, host: str) -> str:
        """
        Our client or Miredo's on C{host}; returns its Teredo address once qualified.
        """
        if impl == "miredo":
            node = f"miredo-{host}"
            self.lab.start_miredo(node, host, "client")
        else:
            node = f"ours-{host}"
            self.lab.start_teredonode(node, host, "client")
        text = self.lab.wait_teredo_address(host, QUALIFY_TIMEOUT)
        assert text is not None, f"{node} did not qualify: {self.lab.nodes[node].log_tail(10)}"
        return str(TeredoAddress.parse(text))

    def iperf(self, server: str, client: str, target: str, reverse: bool = False, seconds: int = 2) -> float:
        """
        A bounded iperf3 TCP run from C{client} to the iperf3 server on C{server} at
        C{target}; returns the receiver's bits per second.
        """
        proc = self.lab.popen(server, ["iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(_reap, proc)
        deadline = time.monotonic() + 10
        while not self.lab.exec(server, ["ss", "-Hntl", "sport", "=", ":5201"], timeout=10).stdout.strip():
            if time.monotonic() > deadline:
                self.fail(f"iperf3 server on {server} does not listen")
            time.sleep(0.1)
        argv = ["iperf3", "-6", "-c", target, "-p", "5201", "-t", str(seconds), "-J", "--connect-timeout", "5000"]
        if reverse:
            argv.append("-R")
        out = self.lab.exec(client, argv, timeout=seconds + 30)
        try:
            result = json.loads(out.stdout)
            bps = float(result["end"]["sum_received"]["bits_per_second"])
        except (ValueError, KeyError) as e:
            self.fail(f"iperf3 {client} -> {target}: {e}: {out.stdout[-800:]} {out.stderr[-400:]}")
        _reap(proc)
        return bps


def _reap(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class RelayInteropTests(LabRoles):
    def setUp(self) -> None:
        super().setUp()
        self.startOurRelay()

    def _bothWays(self, impl: str) -> None:
        address = self.startClient(impl, "client1")
        v6host = self.lab.ipv6("v6host")
        logs = ("our-relay", "our-server", f"{'miredo' if impl == 'miredo' else 'ours'}-client1")
        self.assertPings("client1", v6host, logs=logs)
        self.assertPings("v6host", address, logs=logs)
        up = self.iperf("v6host", "client1", v6host)
        down = self.iperf("v6host", "client1", v6host, reverse=True)
        back = self.iperf("client1", "v6host", address)
        self.assertGreater(min(up, down, back), 1e5, (up, down, back))
        status = self.status("our-relay")["relay"]
        self.assertGreater(status["counters"]["sent"], 100, status)
        self.assertGreater(status["counters"]["delivered"], 100, status)
        self.assertEqual(status["drops"]["mapping-mismatch"], 0, status)

    def test_miredo_client_through_our_relay(self) -> None:
        """
        A Miredo client reaches v6host through our relay (ping and TCP, both ways).
        """
        self._bothWays("miredo")

    def test_our_client_through_our_relay(self) -> None:
        """
        Our client does the same.
        """
        self._bothWays("ours")

    def test_fuzz_then_relay(self) -> None:
        """
        10 000 random and mutated datagrams (some with Teredo sources that embed the very
        sender, so they pass the anti-spoofing check and hit the unsolicited-traffic rule)
        leave the relay forwarding for a Miredo client.
        """
        address = self.startClient("miredo", "client1")
        v6host = self.lab.ipv6("v6host")
        self.assertPings("client1", v6host)
        target = self.lab.ipv4("relay")
        me = self.lab.ipv4("dualhost")
        script = textwrap.dedent(
            f"""
            import os, random, socket, sys, time
            sys.path.insert(0, {str(REPO_ROOT)!r})
            from teredonode.wire import ipv6, teredo, address
            rng = random.Random(6)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(({me!r}, 41000))
            mine = address.TeredoAddress(address.GLOBAL_PREFIX, "203.0.113.10", 0, 41000, {me!r}).to_bytes()
            v6 = bytes.fromhex("20010db8000000000000000000000030")
            seeds = [
                ipv6.bubble(mine, bytes(16)),
                ipv6.icmpv6_packet(mine, v6, ipv6.EchoRequest(1, 1, b"x" * 32)),
                b"\\x00\\x00" + bytes(6) + ipv6.bubble(mine, v6),
                teredo.encode_payload(ipv6.bubble(mine, v6), teredo.AuthIndicator(b"12345678")),
            ]
            sent = 0
            for i in range(10000):
                if i % 3 == 0:
                    data = os.urandom(rng.randint(0, 1400))
                elif i % 3 == 1:
                    data = rng.choice(seeds)
                    if rng.random() < 0.5:
                        data = data + os.urandom(rng.randint(1, 20))
                else:
                    data = bytearray(rng.choice(seeds))
                    for _ in range(rng.randint(1, 4)):
                        data[rng.randrange(len(data))] = rng.randrange(256)
                    data = bytes(data)
                try:
                    s.sendto(data, ({target!r}, 3544))
                    sent += 1
                except OSError:
                    pass
                if i % 50 == 49:
                    time.sleep(0.005)  # bounded pace: robustness, not load
            print(sent)
            """
        )
        out = self.lab.exec("dualhost", ["python3", "-c", script], timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(int(out.stdout.strip()), 10000)
        self.assertIsNone(self.lab.nodes["our-relay"].exit_code(), self.lab.nodes["our-relay"].log_tail(20))
        status = self.status("our-relay")["relay"]
        self.assertGreater(status["counters"]["received"], 9000, status)
        self.assertGreater(sum(status["drops"].values()), 5000, status)
        # No state from the fuzz itself: entries come only from v6host's answers to what was
        # forwarded statelessly (sources embedding the sender), at most one per such packet,
        # as any native traffic toward a client creates them; they expire as usual.
        stateless = status["counters"]["delivered-stateless"]
        self.assertLessEqual(status["peers"]["peers"], 2 + stateless, status)
        self.assertLess(stateless, 1000, status)
        self.assertPings("client1", v6host)
        self.assertPings("v6host", address)


class HostRelayInteropTests(LabRoles):
    """
    dualhost with our host-specific relay, our relay also running (so a relay path exists
    and the test can show it is not taken).
    """

    def setUp(self) -> None:
        super().setUp()
        self.startOurRelay()
        self.lab.start_teredonode("our-hr", "dualhost", "host-relay")
        self.waitStatus("our-hr", lambda s: s["host-relay"]["state"] == "relaying", 15, "relaying")

    def relayTraffic(self) -> tuple[int, int, int]:
        counters = self.status("our-relay")["relay"]["counters"]
        return counters["sent"], counters["delivered"], counters["queued"]

    def capture(self, seconds: int = 30) -> subprocess.Popen[Any]:
        """
        tcpdump on dualhost's only link, bounded in time and packets.
        """
        proc = self.lab.capture("dualhost", seconds=seconds)
        self.addCleanup(_reap, proc)
        return proc

    def test_dualhost_reaches_clients_directly(self) -> None:
        """
        HR-04/06/08: dualhost pings a Miredo client and our client (and each pings it
        back); the capture shows UDP/IPv4 between dualhost and each client's NAT, nothing
        sent to a Teredo address over IPv6, and the relay's tunnel untouched.
        """
        miredo = self.startClient("miredo", "client1")
        ours = self.startClient("ours", "client2")
        relayBefore = self.relayTraffic()
        cap = self.capture()
        logs = ("our-hr", "our-server", "miredo-client1", "ours-client2")
        self.assertPings("dualhost", miredo, logs=logs)
        self.assertPings("dualhost", ours, logs=logs)
        self.assertPings("client1", self.lab.ipv6("dualhost"), logs=logs)
        self.assertPings("client2", self.lab.ipv6("dualhost"), logs=logs)
        time.sleep(0.5)
        cap.terminate()
        out, _ = cap.communicate(timeout=10)
        me = self.lab.ipv4("dualhost")
        for host in ("client1", "client2"):
            nat = self.lab.public_ipv4(host)
            direct = [
                line for line in out.splitlines()
                if " IP " in line and "UDP" in line and f"{me}." in line and f"{nat}." in line
            ]
            # 2 x 5 echoes each way, each a request and a reply.
            self.assertGreaterEqual(len(direct), 16, f"{host}: {len(direct)} direct datagrams\n{out[-3000:]}")
        toTeredo = [line for line in out.splitlines() if " IP6 " in line and "> 2001:0:" in line]
        self.assertEqual(toTeredo, [], out[-3000:])
        # The relay carried nothing (its TUN counters would also count the kernel's own MLD
        # reports on the link, so its Teredo counters are the evidence).
        self.assertEqual(self.relayTraffic(), relayBefore)
        status = self.status("our-hr")["host-relay"]
        self.assertGreaterEqual(status["counters"]["sent"], 18, status)
        self.assertEqual(status["addresses"], [self.lab.ipv6("dualhost")])

    def test_refuses_without_native_ipv6(self) -> None:
        """
        G-03/G-05: on client1 (IPv4 only) the host-specific relay exits with one line.
        """
        node = self.lab.start_teredonode("hr-client1", "client1", "host-relay")
        deadline = time.monotonic() + 20
        while node.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(node.exit_code(), 1, node.log_tail(10))
        tail = node.log_tail(3)
        self.assertIn("no native IPv6", tail[-1])
        self.assertFalse(any("Traceback" in line for line in node.log_tail(50)), node.log_tail(50))


class RelayHostCheckTests(LabRoles):
    def test_relay_refuses_without_ipv6_route(self) -> None:
        """
        On client1 (IPv4 only: no IPv6 route anywhere) our relay exits with one line naming
        the missing route, instead of starting and dropping every client packet.
        """
        node = self.lab.start_teredonode("relay-client1", "client1", "relay")
        deadline = time.monotonic() + 20
        while node.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(node.exit_code(), 1, node.log_tail(10))
        self.assertIn("no IPv6 route to native hosts", node.log_tail(3)[-1])
        self.assertFalse(any("Traceback" in line for line in node.log_tail(50)), node.log_tail(50))
