"""
C{teredo probe} (L{teredonode.probe}) on the in-memory network: our server, a client host
behind each NAT kind of L{teredonode.testing}, the verdict in RFC 6081 terms.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import ServerSettings
from teredonode.probe import Prober, format_probe
from teredonode.roles.server import TeredoServer
from teredonode.testing import FakeInternet

SERVERS = [("203.0.113.10", "203.0.113.11"), ("203.0.113.20", "203.0.113.21")]


class ProbeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = FakeInternet(Clock())
        self.servers = []
        for primary, secondary in SERVERS:
            server = TeredoServer(ServerSettings(primary=primary, secondary=secondary), self.net.host(primary, secondary))
            server.privilegedStartService()
            server.startService()
            self.addCleanup(server.stopService)
            self.servers.append(server)

    def probe(self, kind: str, servers: list[tuple[str, str]] = SERVERS, **natArgs: Any) -> dict[str, Any]:
        if kind == "none":
            host = self.net.host("192.0.2.77")
        else:
            host = self.net.nat(kind, rng=random.Random(5), **natArgs).host("10.0.0.2")
        rng = random.Random(9)
        prober = Prober(host, timeout=2.0, attempts=2, randbytes=rng.randbytes, localAddress=lambda s: host.addresses[0])
        d = prober.run(servers)
        self.net.run(60)
        report = self.successResultOf(d)
        format_probe(report)  # the text output works for every report
        return report

    def test_full_cone(self) -> None:
        report = self.probe("full-cone")
        self.assertEqual(report["nat"], "cone")
        self.assertTrue(all(s["cone-test"] for s in report["servers"]))

    def test_address_restricted(self) -> None:
        report = self.probe("address-restricted")
        self.assertEqual(report["nat"], "restricted")
        self.assertEqual(report["servers"][0]["filtering"], "address-dependent")

    def test_port_restricted(self) -> None:
        report = self.probe("port-restricted")
        self.assertEqual(report["nat"], "port-restricted")
        first = report["servers"][0]
        self.assertFalse(first["cone-test"])
        self.assertFalse(first["mapping-per-destination"])
        self.assertEqual(first["mapped"], first["mapped-secondary"])
        self.assertTrue(first["mapped"].startswith("198.51.100."))

    def test_symmetric_random(self) -> None:
        report = self.probe("symmetric")
        self.assertEqual(report["nat"], "symmetric")
        self.assertFalse(report["sequential"])
        self.assertTrue(report["servers"][0]["mapping-per-destination"])

    def test_symmetric_sequential(self) -> None:
        report = self.probe("symmetric-sequential")
        self.assertEqual(report["nat"], "symmetric")
        self.assertTrue(report["sequential"], report)
        self.assertEqual(report["port-delta"], 1)
        self.assertIn("sequential", report["detail"])

    def test_symmetric_port_preserving(self) -> None:
        report = self.probe("symmetric-port-preserving")
        self.assertEqual(report["nat"], "symmetric")
        self.assertTrue(report["port-preserving"])
        self.assertIn("port-preserving", report["detail"])

    def test_port_preservation_on_a_cone_nat(self) -> None:
        self.assertTrue(self.probe("port-restricted", portAllocation="preserve")["port-preserving"])
        self.assertFalse(self.probe("port-restricted", portAllocation="sequential", firstPort=30000)["port-preserving"])

    def test_no_nat(self) -> None:
        report = self.probe("none")
        self.assertEqual(report["nat"], "none")
        self.assertEqual(report["mapped"].split(":")[0], "192.0.2.77")

    def test_ranking_and_silent_servers(self) -> None:
        """
        A server that does not answer ranks last; one whose secondary is silent ranks below
        one whose secondary answers; RS->RA round trips are measured.
        """
        silent = ("203.0.113.30", "203.0.113.31")
        noSecondary = ("203.0.113.10", "203.0.113.99")  # nobody at the secondary named
        report = self.probe("port-restricted", [silent, noSecondary, SERVERS[1]])
        order = [s["server"] for s in report["servers"]]
        self.assertEqual(order, ["203.0.113.20", "203.0.113.10", "203.0.113.30"])
        self.assertEqual(report["best"], "203.0.113.20")
        first, second, third = report["servers"]
        self.assertEqual((first["secondary-answers"], second["secondary-answers"], third["answers"]), (True, False, False))
        self.assertIsNone(second["mapping-per-destination"])
        self.assertIsNotNone(first["rtt-ms"])
        self.assertEqual(report["nat"], "port-restricted")

    def test_nobody_answers(self) -> None:
        self.servers[0].stopService()
        report = self.probe("port-restricted", [SERVERS[0]])
        self.assertEqual((report["nat"], report["best"], report["mapped"]), ("unknown", None, None))
        self.assertIn("no server answered", report["detail"])
