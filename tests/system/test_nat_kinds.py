"""
Each NAT kind of RFC 6081 Figure 1 (teredonode.lab.nat.FIGURE1) behaves as its name says,
observed with UDP probe agents: the mapping the Internet sees toward several destinations
(same or different external address and port), the port the NAT chooses (preserved,
previous + 1, random), and which unsolicited inbound packets get through.  The UPnP kinds
also open a port mapping through miniupnpd (UPnP IGD with upnpc, and NAT-PMP) and see
inbound traffic arrive through it.

Every test builds its own lab ("nat:KIND": one client behind one router of that kind), so
no state of one test leaks into another; the lab fixture removes it, processes first.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

from twisted.trial import unittest

from teredonode.lab import nat
from teredonode.lab.proc import which
from teredonode.lab.lab import Lab
from teredonode.lab.probe import Agent
from teredonode.lab.topology import namespace_pids

from tests.system.lab_fixture import use_lab

LOCAL_PORT = 40000

# Probe agents on the Internet side: (host, port).  relay:5002 is a second port of a host
# the client talks to; dualhost:6001 and server:5001 are never contacted unless a test says so.
INTERNET = (("relay", 5000), ("relay", 5002), ("server", 5001), ("dualhost", 6000), ("dualhost", 6001))


class NatKindTests(unittest.TestCase):
    """
    One test per NAT kind; each starts its agents, then asks and probes.
    """

    def build(self, kind: str, *, need: tuple[str, ...] = ()) -> None:
        for tool in need:
            if which(tool) is None:
                raise unittest.SkipTest(f"{tool} not installed (apt-get install miniupnpd-nftables miniupnpc)")
        self.lab: Lab = use_lab(self, f"nat:{kind}")
        self.wan = self.lab.ipv4("nat1")
        stack = ExitStack()
        self.addCleanup(stack.close)
        self.client = stack.enter_context(self.lab.agent("client1", LOCAL_PORT, 60))
        self.internet: dict[tuple[str, int], Agent] = {
            (host, port): stack.enter_context(self.lab.agent(host, port, 60)) for host, port in INTERNET
        }
        self.stack = stack

    def seen(self, host: str, port: int, agent: Agent | None = None) -> tuple[str, int]:
        """
        The client's mapping as C{host:port} sees it (asking again while agents start).
        """
        agent = agent or self.client
        for _ in range(20):
            mapping = agent.mapping_seen_by(self.lab.ipv4(host), port, timeout=0.5)
            if mapping:
                return mapping
        self.fail(f"no answer from {host}:{port}")

    def reaches(self, host: str, port: int, to: tuple[str, int]) -> bool:
        """
        Whether a datagram that C{host:port} sends to C{to} reaches the client's agent.
        """
        text = f"from {host}:{port}"
        self.internet[(host, port)].send(to[0], to[1], text)
        while True:
            got = self.client.recv(1.0)
            if got is None:
                return False
            if got[1] == text:
                return True

    def upnpc(self, *args: str) -> str:
        """
        Run miniupnpc's C{upnpc} on the client; C{-i}: the IGD's external address is a
        documentation address, which upnpc otherwise refuses to use.
        """
        result = self.lab.exec("client1", ["upnpc", "-i", *args], timeout=30)
        return result.stdout + result.stderr

    # ------------------------------------------------------------ kernel kinds

    def test_cone(self) -> None:
        """
        Endpoint-independent mapping (the port kept) and filtering: anyone gets in.
        """
        self.build("cone")
        public = (self.wan, LOCAL_PORT)
        self.assertEqual(self.seen("relay", 5000), public)
        self.assertEqual(self.seen("dualhost", 6000), public)
        self.assertTrue(self.reaches("server", 5001, public), "a cone NAT lets any host reach the mapping")

    def test_address_restricted(self) -> None:
        """
        Endpoint-independent mapping; inbound from a contacted address, any port, only.
        """
        self.build("address-restricted")
        public = (self.wan, LOCAL_PORT)
        self.assertEqual(self.seen("relay", 5000), public)
        self.assertTrue(self.reaches("relay", 5002, public), "another port of a contacted host gets in")
        self.assertFalse(self.reaches("server", 5001, public), "a host never contacted must be dropped")
        # The dropped packet left no state: the mapping toward that host is still the same.
        self.assertEqual(self.seen("server", 5001), public)
        self.assertEqual(self.seen("dualhost", 6000), public)
        self.assertTrue(self.reaches("dualhost", 6001, public))

    def test_port_restricted(self) -> None:
        """
        Endpoint-independent mapping; inbound only from the very address and port contacted.
        """
        self.build("port-restricted")
        public = (self.wan, LOCAL_PORT)
        self.assertEqual(self.seen("relay", 5000), public)
        self.assertFalse(self.reaches("relay", 5002, public), "another port of a contacted host is dropped")
        self.assertFalse(self.reaches("server", 5001, public))
        self.assertEqual(self.seen("relay", 5002), public)
        self.assertEqual(self.seen("server", 5001), public)
        self.assertTrue(self.reaches("relay", 5002, public), "once contacted, that port gets in")

    def test_port_preserving_symmetric(self) -> None:
        """
        The first mapping of an inside port keeps it; every further destination gets
        another port, from the high range; filtering is per address and port.
        """
        self.build("port-preserving-symmetric")
        first = self.seen("relay", 5000)
        self.assertEqual(first, (self.wan, LOCAL_PORT), "the first mapping preserves the port")
        second = self.seen("relay", 5002)
        third = self.seen("dualhost", 6000)
        ports = {first[1], second[1], third[1]}
        self.assertEqual(len(ports), 3, f"one mapping per destination expected: {first} {second} {third}")
        low, high = nat.PP_OTHER_PORTS
        self.assertTrue(low <= second[1] <= high and low <= third[1] <= high, (second, third))
        self.assertEqual(self.seen("relay", 5000), first, "the same destination keeps its mapping")
        self.assertFalse(self.reaches("server", 5001, first))
        self.assertFalse(self.reaches("dualhost", 6001, third), "filtering is per address and port")
        # Preservation is the rule, not luck: another inside port is preserved too.
        other = self.stack.enter_context(self.lab.agent("client1", LOCAL_PORT + 1, 60))
        self.assertEqual(self.seen("dualhost", 6000, other), (self.wan, LOCAL_PORT + 1))

    def test_sequential_symmetric(self) -> None:
        """
        Each new destination gets the previous external port + 1.
        """
        self.build("sequential-symmetric")
        first = self.seen("relay", 5000)
        self.assertIn(first[1], nat.SEQUENTIAL_PORTS)
        self.assertEqual(self.seen("relay", 5002), (self.wan, first[1] + 1))
        self.assertEqual(self.seen("dualhost", 6000), (self.wan, first[1] + 2))
        self.assertEqual(self.seen("server", 5001), (self.wan, first[1] + 3))
        self.assertEqual(self.seen("relay", 5000), first, "the same destination keeps its mapping")
        self.assertFalse(self.reaches("dualhost", 6001, (self.wan, first[1] + 2)))

    def test_port_symmetric(self) -> None:
        """
        A random port per destination (address and port), one external address.
        """
        self.build("port-symmetric")
        mappings = [self.seen("relay", 5000), self.seen("relay", 5002), self.seen("dualhost", 6000)]
        self.assertEqual({m[0] for m in mappings}, {self.wan})
        self.assertEqual(len({m[1] for m in mappings}), 3, f"one port per destination expected: {mappings}")
        self.assertEqual(self.seen("relay", 5000), mappings[0])
        self.assertFalse(self.reaches("server", 5001, mappings[0]))
        self.assertFalse(self.reaches("relay", 5002, mappings[0]), "filtering is per address and port")

    def test_symmetric_is_port_symmetric(self) -> None:
        """
        The older mode name still builds, with the port-symmetric rules.
        """
        self.build("symmetric")
        self.assertNotEqual(self.seen("relay", 5000)[1], self.seen("relay", 5002)[1])
        rules = self.lab.exec("nat1", ["nft", "list", "table", "ip", nat.TABLE], timeout=10).stdout
        self.assertIn("fully-random", rules)

    def test_address_symmetric(self) -> None:
        """
        One mapping per destination host, whatever its port; another host gets another
        external address and port; filtering is per address and port.
        """
        self.build("address-symmetric")
        pool = nat.address_pool(self.wan)
        first = self.seen("relay", 5000)
        self.assertEqual(self.seen("relay", 5002), first, "every port of one host shares the mapping")
        second = self.seen("dualhost", 6000)
        third = self.seen("server", 5001)
        self.assertEqual(len({first[0], second[0], third[0]}), 3, f"an address per host: {first} {second} {third}")
        self.assertEqual(len({first[1], second[1], third[1]}), 3, f"a port per host: {first} {second} {third}")
        self.assertTrue({first[0], second[0], third[0]} <= set(pool), pool)
        self.assertEqual(self.seen("relay", 5000), first)
        self.assertTrue(self.reaches("relay", 5002, first), "a contacted endpoint gets in")
        self.assertFalse(self.reaches("dualhost", 6001, second), "filtering is per address and port")
        self.assertFalse(self.reaches("server", 5001, first), "another host's mapping is not this one")

    # ------------------------------------------------------------ UPnP kinds

    def test_upnp_port_restricted(self) -> None:
        """
        A port-restricted NAT until the client asks miniupnpd (UPnP IGD) for a mapping;
        then anyone reaches the mapped port.
        """
        self.build("upnp-port-restricted", need=("miniupnpd", "upnpc"))
        public = (self.wan, LOCAL_PORT)
        self.assertEqual(self.seen("relay", 5000), public)
        self.assertFalse(self.reaches("dualhost", 6001, public), "no mapping yet: unsolicited is dropped")
        client = self.lab.ipv4("client1")
        # RFC 6081 section 5.3.3's AddPortMapping: external port = internal port, lease 0.
        out = self.upnpc("-e", "TEREDO", "-a", client, str(LOCAL_PORT), str(LOCAL_PORT), "UDP", "0")
        self.assertIn(f"ExternalIPAddress = {self.wan}", out)
        self.assertIn(f"external {self.wan}:{LOCAL_PORT} UDP is redirected to internal {client}:{LOCAL_PORT}", out)
        self.assertTrue(self.reaches("dualhost", 6001, public), "the UPnP mapping lets anyone in")
        self.assertTrue(self.reaches("server", 5001, public))
        self.assertEqual(self.seen("dualhost", 6000), public, "outbound mappings still keep the port")
        self.upnpc("-d", str(LOCAL_PORT), "UDP")
        # Flows already let in stay in conntrack; a new source is dropped again.
        self.assertFalse(self.reaches("relay", 5002, public), "mapping deleted: unsolicited is dropped again")

    def test_upnp_port_symmetric(self) -> None:
        """
        RFC 6081 section 3.2's UPnP-enabled symmetric NAT: outbound mappings are per
        destination (random ports), except that the Teredo server (its primary address, port
        3544) sees the reserved port; a UPnP mapping of the local port makes it reachable
        from anyone at the WAN address and that port.
        """
        self.build("upnp-port-symmetric", need=("miniupnpd", "upnpc"))
        primary, secondary = self.lab.host("server").ipv4[:2]
        for address in (primary, secondary):  # the Teredo server's two addresses, as agents
            self.stack.enter_context(self.lab.agent("server", nat.TEREDO_PORT, 60, address=address))
        public = (self.wan, LOCAL_PORT)
        self.assertFalse(self.reaches("dualhost", 6001, public), "no mapping yet: unsolicited is dropped")
        client = self.lab.ipv4("client1")
        # RFC 6081 section 5.3.3's AddPortMapping: external port = internal port, lease 0.
        out = self.upnpc("-e", "TEREDO", "-a", client, str(LOCAL_PORT), str(LOCAL_PORT), "UDP", "0")
        self.assertIn(f"external {self.wan}:{LOCAL_PORT} UDP is redirected", out)
        # The server reflects the reserved port; qualification's second server address and
        # every other destination see random ports, one per destination.
        self.assertEqual(self.seen("server", nat.TEREDO_PORT), public, "the server sees the reserved port")
        others = [
            self.client.mapping_seen_by(secondary, nat.TEREDO_PORT, timeout=5.0),
            self.seen("relay", 5000),
            self.seen("dualhost", 6000),
            self.seen("server", 5001),
        ]
        self.assertNotIn(None, others, "the server's secondary address did not answer")
        ports = {m[1] for m in others if m is not None}
        self.assertEqual(len(ports), len(others), f"symmetric: one port per destination: {others}")
        self.assertNotIn(LOCAL_PORT, ports, f"only the server sees the reserved port: {others}")
        self.assertEqual(self.seen("server", nat.TEREDO_PORT), public, "the server's mapping is stable")
        # The reservation is forwarded from anyone, whatever the client sent to them.
        self.assertTrue(self.reaches("dualhost", 6001, public), "the UPnP mapping lets anyone in")
        self.assertTrue(self.reaches("relay", 5002, public))

    def test_upnp_natpmp_mapping(self) -> None:
        """
        miniupnpd also answers NAT-PMP (RFC 6886) on the LAN: the public address is the WAN
        address, and a UDP mapping it grants lets inbound traffic through.
        """
        self.build("upnp-port-restricted", need=("miniupnpd",))
        gateway = self.lab.host("nat1").lan_ipv4
        assert gateway is not None
        answer = self.natpmp(gateway, LOCAL_PORT + 5, LOCAL_PORT + 5)
        self.assertEqual(answer["address"], self.wan)
        self.assertEqual(answer["result"], 0, answer)
        self.assertEqual(answer["internal"], LOCAL_PORT + 5)
        assert isinstance(answer["external"], int), answer
        mapped = (self.wan, answer["external"])
        other = self.stack.enter_context(self.lab.agent("client1", LOCAL_PORT + 5, 60))
        other.recv(0.1)  # answered: the agent runs, its socket is bound
        self.internet[("dualhost", 6001)].send(mapped[0], mapped[1], "via natpmp")
        got = other.recv(3.0)
        self.assertIsNotNone(got, "nothing arrived through the NAT-PMP mapping")
        assert got is not None
        self.assertEqual(got, ((self.lab.ipv4("dualhost"), 6001), "via natpmp"))

    def natpmp(self, gateway: str, internal: int, external: int) -> dict[str, int | str]:
        """
        Ask NAT-PMP from the client: public address (opcode 0), then a UDP mapping
        (opcode 1, lifetime 3600 s); the answers' fields as JSON.
        """
        script = (
            "import json, socket, struct\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
            f"gw = ({gateway!r}, {nat.NATPMP_PORT})\n"
            "s.sendto(struct.pack('!BB', 0, 0), gw)\n"
            "d = s.recv(64); address = socket.inet_ntoa(d[8:12])\n"
            f"s.sendto(struct.pack('!BBHHHI', 0, 1, 0, {internal}, {external}, 3600), gw)\n"
            "d = s.recv(64)\n"
            "op, result, epoch, internal, external, life = struct.unpack('!xBHIHHI', d[:16])\n"
            "print(json.dumps(dict(address=address, op=op, result=result, internal=internal,"
            " external=external, lifetime=life)))\n"
        )
        result = self.lab.exec("client1", ["python3", "-c", script], timeout=20)
        self.assertEqual(result.returncode, 0, result.stderr)
        answer: dict[str, int | str] = json.loads(result.stdout)
        return answer


class NatKindSwitchTests(unittest.TestCase):
    """
    A router switched to a kind that needs processes gets them, and loses them again.
    """

    def test_switch_to_address_symmetric_and_back(self) -> None:
        lab = use_lab(self, "nat:port-restricted")
        lab.set_nat_mode("nat1", "address-symmetric")
        self.assertIn("nat1-usernat", lab.nodes)
        with lab.agent("client1", LOCAL_PORT, 60) as c, lab.agent("relay", 5000, 60), lab.agent("dualhost", 6000, 60):
            seen = []
            for host, port in (("relay", 5000), ("dualhost", 6000)):
                for _ in range(20):
                    mapping = c.mapping_seen_by(lab.ipv4(host), port, timeout=0.5)
                    if mapping:
                        seen.append(mapping)
                        break
            self.assertEqual(len(seen), 2, seen)
            self.assertNotEqual(seen[0][0], seen[1][0], "an external address per destination host")
        pid = lab.nodes["nat1-usernat"].record.pid
        lab.set_nat_mode("nat1", "port-restricted")
        self.assertNotIn("nat1-usernat", lab.nodes)
        self.assertNotIn(pid, namespace_pids(lab.ns("nat1")), "the userspace NAT was stopped")
