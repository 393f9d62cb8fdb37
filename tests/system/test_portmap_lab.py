"""
The port-mapping client against a real router: miniupnpd (Debian's miniupnpd-nftables) in
the NAT namespace of the lab's UPnP NAT kinds, which speaks UPnP IGD, NAT-PMP and PCP.

Each protocol is driven through the operator's command, C{teredo portmap}, run on the client
host; the mapping it reports must let a datagram from an Internet host that the client never
contacted reach the client's socket (the NAT is port-restricted or port-symmetric, so
nothing unsolicited gets in without it), and C{--delete} must remove it again.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack

from twisted.trial import unittest

from teredonode.lab import nodes
from teredonode.lab.proc import which
from teredonode.lab.lab import Lab

from tests.system.lab_fixture import LabAssertions, use_lab

LOCAL_PORT = 41000


class PortmapLabTests(unittest.TestCase):
    """
    One mapping per protocol, each on its own local port, in one lab per NAT kind.
    """

    def build(self, kind: str) -> None:
        if which("miniupnpd") is None:
            raise unittest.SkipTest("miniupnpd not installed (apt-get install miniupnpd-nftables)")
        self.lab: Lab = use_lab(self, f"nat:{kind}")
        self.wan = self.lab.ipv4("nat1")
        self.stack = ExitStack()
        self.addCleanup(self.stack.close)
        self.sender = self.stack.enter_context(self.lab.agent("dualhost", 6001, 60))
        # After a deletion, from another source: a flow already let in stays in conntrack.
        self.other = self.stack.enter_context(self.lab.agent("server", 5001, 60))

    def portmap(self, *args: str) -> tuple[int, str, str]:
        """
        C{teredo portmap ARGS --json} on the client host: exit status, stdout, stderr.
        """
        code = f"import sys; sys.path.insert(0, {str(nodes.REPO_ROOT)!r}); from teredonode.cli import main; sys.exit(main())"
        argv = [sys.executable, "-c", code, "portmap", *args]
        result = self.lab.exec("client1", argv, timeout=60)
        return result.returncode, result.stdout, result.stderr

    def mapThrough(self, protocol: str, port: int) -> None:
        """
        Map C{port} by C{protocol}, see a datagram come in through the mapping, delete it.
        """
        client = self.stack.enter_context(self.lab.agent("client1", port, 60))
        client.recv(0.1)  # answered: the agent runs, its socket is bound
        public = (self.wan, port)
        self.sender.send(*public, "before")
        self.assertIsNone(client.recv(1.0), f"{protocol}: unsolicited traffic got in without a mapping")
        status, out, err = self.portmap("--protocol", protocol, "--port", str(port), "--json")
        self.assertEqual(status, 0, f"{protocol}: {err}")
        mapping = json.loads(out)
        self.assertEqual(mapping["protocol"], protocol)
        self.assertEqual(mapping["external-address"], self.wan)
        if protocol == "upnp":
            # X-UPNP-04/-06: the external port is the local port, the lease 0 (until deleted).
            self.assertEqual((mapping["external-port"], mapping["lifetime"]), (port, 0))
        else:
            self.assertTrue(0 < mapping["lifetime"] <= 3600, mapping)
        self.sender.send(self.wan, mapping["external-port"], f"via {protocol}")
        got = client.recv(3.0)
        self.assertEqual(got, ((self.lab.ipv4("dualhost"), 6001), f"via {protocol}"), f"{protocol}: {mapping}")
        nonce = ["--nonce", mapping["pcp-nonce"]] if protocol == "pcp" else []
        status, out, err = self.portmap("--protocol", protocol, "--port", str(port), "--delete", *nonce)
        self.assertEqual(status, 0, f"{protocol} --delete: {err}")
        self.other.send(self.wan, mapping["external-port"], "after")
        self.assertIsNone(client.recv(1.0), f"{protocol}: the mapping outlived its deletion")

    def test_port_restricted_all_protocols(self) -> None:
        """
        PCP, NAT-PMP and UPnP IGD each map a port through a UPnP port-restricted NAT.
        """
        self.build("upnp-port-restricted")
        for offset, protocol in enumerate(("pcp", "natpmp", "upnp")):
            self.mapThrough(protocol, LOCAL_PORT + offset)

    def test_port_symmetric_auto(self) -> None:
        """
        The combinator through a UPnP port-symmetric NAT: PCP is tried first and answers.
        """
        self.build("upnp-port-symmetric")
        port = LOCAL_PORT + 10
        client = self.stack.enter_context(self.lab.agent("client1", port, 60))
        client.recv(0.1)
        status, out, err = self.portmap("--port", str(port), "--json")
        self.assertEqual(status, 0, err)
        mapping = json.loads(out)
        self.assertEqual(mapping["protocol"], "pcp")
        self.sender.send(self.wan, mapping["external-port"], "via auto")
        self.assertEqual(client.recv(3.0), ((self.lab.ipv4("dualhost"), 6001), "via auto"))


class AgentHttpTests(unittest.TestCase):
    """
    The production HTTP client of UPnP (twisted.web's Agent, bounded) against a real server
    on 127.0.0.1: a body within the limit is read, one over it is refused (declared or not).
    """

    def setUp(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.address import IPv4Address
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Body(Resource):
            isLeaf = True

            def render_GET(self, request):
                size = int(request.path.strip(b"/") or 0)
                if request.args.get(b"chunked"):
                    for _ in range(size // 1000):
                        request.write(b"x" * 1000)
                    request.finish()
                    return NOT_DONE_YET
                return b"x" * size

            def render_POST(self, request):
                return request.getHeader(b"soapaction") + b" " + request.content.read()

        from twisted.web.server import NOT_DONE_YET

        self.reactor = reactor
        self.port = reactor.listenTCP(0, Site(Body()), interface="127.0.0.1")  # type: ignore[arg-type]  # Twisted types the factory narrower than Site
        self.addCleanup(self.port.stopListening)
        address = self.port.getHost()
        assert isinstance(address, IPv4Address)
        self.base = f"http://127.0.0.1:{address.port}"

    def http(self, limit: int = 1000):
        from teredonode.portmap.mappers import AgentHttp

        return AgentHttp(self.reactor, limit=limit, timeout=10)  # Agent's default pool: not persistent

    async def test_within_limit(self) -> None:
        status, body = await self.http()(b"GET", f"{self.base}/1000", {}, None)
        self.assertEqual((status, body), (200, b"x" * 1000))
        status, body = await self.http()(b"POST", f"{self.base}/", {"SOAPAction": '"urn:x#A"'}, b"<a/>")
        self.assertEqual((status, body), (200, b'"urn:x#A" <a/>'))

    async def test_declared_over_limit(self) -> None:
        from teredonode.portmap.base import PortMapError

        with self.assertRaises(PortMapError) as caught:
            await self.http()(b"GET", f"{self.base}/1001", {}, None)
        self.assertEqual(str(caught.exception), "upnp: HTTP body of 1001 bytes, over 1000")

    async def test_chunked_over_limit(self) -> None:
        from teredonode.portmap.base import PortMapError

        with self.assertRaises(PortMapError) as caught:
            await self.http()(b"GET", f"{self.base}/5000?chunked=1", {}, None)
        self.assertEqual(str(caught.exception), "upnp: HTTP body over 1000 bytes")


class ClientPortMappingLabTests(LabAssertions, unittest.TestCase):
    """
    RFC 6081 X-UPNP-04..07, -13 for real: our client behind a UPnP-enabled NAT (miniupnpd)
    maps its service port before qualifying, and deletes the mapping when it stops.
    """

    def test_client_maps_its_port(self) -> None:
        if which("miniupnpd") is None:
            raise unittest.SkipTest("miniupnpd not installed (apt-get install miniupnpd-nftables)")
        self.lab = use_lab(self, "nat:upnp-port-restricted")
        self.lab.start_teredonode("our-server", "server", "server")
        self.assertTrue(self.lab.wait_udp_listening("server", 3544, 10))
        self.lab.start_teredonode("our-client", "client1", "client", settings={"port": LOCAL_PORT + 7})
        address = self.lab.wait_teredo_address("client1", 30)
        self.assertIsNotNone(address, "client did not qualify: " + "\n".join(self.lab.nodes["our-client"].log_tail(30)))
        status = self.lab.node_status("our-client")["client"]
        mapping = status["port-mapping"]
        self.assertEqual(mapping["state"], "mapped", mapping)
        self.assertEqual(mapping["external"], f"{self.lab.ipv4('nat1')}:{LOCAL_PORT + 7}", mapping)
        self.assertEqual(status["counters"]["port-mappings"], 1)
        print(f"\nclient behind upnp-port-restricted: {status['nat']}, port mapping {mapping}")
        port = str(LOCAL_PORT + 7)
        self.assertIn(port, self.lab.exec("nat1", ["nft", "list", "ruleset"], timeout=10).stdout)
        # Stopping the client deletes the mapping (X-UPNP-13) before the process ends.
        self.lab.stop_node("our-client")
        self.assertNotIn(port, self.lab.exec("nat1", ["nft", "list", "ruleset"], timeout=10).stdout)

    def test_upnp_symmetric_both_ways(self) -> None:
        """
        RFC 6081 section 6.2 for real: two of our clients, each behind the lab's UPnP-enabled
        port-symmetric NAT (the server sees the reserved port, other destinations random
        ones), qualify as symmetric with a port mapping equal to the server's (single NAT,
        X-UPNP-09) and reach each other both ways through the embedded mappings
        (X-UPNP-10..12).
        """
        if which("miniupnpd") is None:
            raise unittest.SkipTest("miniupnpd not installed (apt-get install miniupnpd-nftables)")
        self.lab = use_lab(self, "nat:upnp-port-symmetric,upnp-port-symmetric")
        self.lab.start_teredonode("our-server", "server", "server")
        self.assertTrue(self.lab.wait_udp_listening("server", 3544, 10))
        addresses: dict[str, str] = {}
        for n, host in enumerate(("client1", "client2"), start=1):
            port = LOCAL_PORT + 10 + n
            self.lab.start_teredonode(f"our-{host}", host, "client", settings={"port": port})
            address = self.lab.wait_teredo_address(host, 30)
            if address is None:
                self.fail(f"{host} did not qualify: {self.lab.nodes[f'our-{host}'].log_tail(30)}")
            addresses[host] = address
            status = self.lab.node_status(f"our-{host}")["client"]
            external = f"{self.lab.ipv4(f'nat{n}')}:{port}"
            self.assertEqual(status["nat"], "symmetric", status)
            self.assertEqual(status["port-mapping"]["state"], "mapped", status["port-mapping"])
            self.assertEqual(status["port-mapping"]["external"], external, status["port-mapping"])
            self.assertTrue(status["port-mapping"]["same-as-server"], status["port-mapping"])
            self.assertEqual(status["mapping"], external, "the server reflects the reserved port")
            self.assertTrue(status["hairpinning"]["upnp-symmetric"], status["hairpinning"])
        # The first echoes may wait for (or be lost behind) a round of bubbles: most must come back.
        for src, dst in (("client1", "client2"), ("client2", "client1")):
            received, output = self.lab.ping6(src, addresses[dst], count=10, interval=0.5)
            self.assertGreaterEqual(received, 5, f"{src} -> {dst}:\n{output}")
        for host in ("client1", "client2"):
            counters = self.lab.node_status(f"our-{host}")["client"]["counters"]
            self.assertGreaterEqual(counters["upnp-symmetric-peers"], 1, (host, counters))
            self.assertGreaterEqual(counters["upnp-embedded"], 1, (host, counters))

    def test_crash_leftover_deleted_at_restart(self) -> None:
        """
        X-UPNP-02, X-UPNP-03 for real: the client, running unprivileged, persists its mapping
        in its state directory; killed (no deletion), it leaves the mapping on the router and
        the record behind; started again, it deletes that mapping first, maps anew and
        qualifies; a clean stop then deletes the mapping and the record.
        """
        if which("miniupnpd") is None:
            raise unittest.SkipTest("miniupnpd not installed (apt-get install miniupnpd-nftables)")
        self.lab = use_lab(self, "nat:upnp-port-restricted")
        self.lab.start_teredonode("our-server", "server", "server")
        self.assertTrue(self.lab.wait_udp_listening("server", 3544, 10))
        settings: dict[str, object] = {"port": LOCAL_PORT + 8}
        port = str(LOCAL_PORT + 8)
        record = self.lab.state.path / "state" / "our-client" / "client-port-mapping.json"

        def ruleset() -> str:
            return self.lab.exec("nat1", ["nft", "list", "ruleset"], timeout=10).stdout

        def start() -> dict[str, object]:
            self.lab.start_teredonode("our-client", "client1", "client", settings=settings)
            address = self.lab.wait_teredo_address("client1", 40)
            self.assertIsNotNone(address, "client did not qualify: " + "\n".join(self.lab.nodes["our-client"].log_tail(30)))
            mapping: dict[str, object] = self.lab.node_status("our-client")["client"]["port-mapping"]
            self.assertEqual(mapping["state"], "mapped", mapping)
            return mapping

        first = start()
        persisted = json.loads(record.read_bytes())
        self.assertEqual((persisted["protocol"], persisted["local-port"]), (first["protocol"], LOCAL_PORT + 8), persisted)
        self.assertIn(port, ruleset())
        self.lab.kill_node("our-client")
        self.assertTrue(record.exists(), "a crash leaves the record")
        self.assertIn(port, ruleset(), "and the mapping")
        self.lab.stop_node("our-client")  # forgets the dead process's record
        second = start()
        log = "\n".join(self.lab.nodes["our-client"].log_tail(60))
        self.assertIn(f"Deleted the port mapping left by an earlier run ({persisted['protocol']} port {persisted['port']})", log)
        print(f"\nafter a crash: first {first}, then {second}")
        self.assertIn(port, ruleset())
        self.lab.stop_node("our-client")
        self.assertNotIn(port, ruleset())
        self.assertFalse(record.exists(), "a clean stop zeroes the persisted port")
