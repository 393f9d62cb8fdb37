"""
RFC 6081 Hairpinning in the lab (X-HP-05..07): two of our clients behind ONE port-restricted
NAT (Linux masquerade, which does not hairpin: a packet from the LAN to the router's own WAN
address is not sent back inside), on two subnets the router forwards between (10.1.0.0/24
and 10.1.1.0/24), so local discovery's multicast does not cross either.

With C{hairpinning} on (the default) they ping each other both ways, every echo answered
(the first one included), each trusting the other at its *local* endpoint; with it
off on both, nothing at all gets through: their only way is the NAT, which drops it.

Every wait is a poll with a deadline; pings are bounded in time.
"""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from teredonode.wire.address import TeredoAddress
from tests.system.lab_fixture import LabAssertions, use_lab

QUALIFY_TIMEOUT = 20.0
COUNT = 5


class HairpinningLabTests(LabAssertions, unittest.TestCase):
    def setUp(self) -> None:
        self.lab = use_lab(self, "hairpin")
        self.lab.start_teredonode("our-server", "server", "server")
        if not self.lab.wait_udp_listening("server", 3544, 15):
            self.fail(f"our server does not listen: {self.lab.nodes['our-server'].log_tail(10)}")

    def start(self, settings: dict[str, Any]) -> dict[str, str]:
        addresses: dict[str, str] = {}
        for host in ("client1", "client2"):
            self.lab.start_teredonode(f"ours-{host}", host, "client", settings=settings)
        for host in ("client1", "client2"):
            text = self.lab.wait_teredo_address(host, QUALIFY_TIMEOUT)
            assert text is not None, f"{host} did not qualify: {self.lab.nodes['ours-' + host].log_tail(10)}"
            addresses[host] = str(TeredoAddress.parse(text))
        # Both behind the one NAT: one public address.
        self.assertEqual(
            TeredoAddress.parse(addresses["client1"]).client, TeredoAddress.parse(addresses["client2"]).client
        )
        return addresses

    def tails(self) -> dict[str, list[str]]:
        return {n: self.lab.nodes[n].log_tail(15) for n in ("our-server", "ours-client1", "ours-client2")}

    def test_hairpinning_carries_both_ways(self) -> None:
        addresses = self.start({})
        # Not even the first echo is lost: it leaves client1 before its proof reaches client2,
        # which holds it until the proof comes (held-for-proof) instead of dropping it.
        received, output = self.lab.ping6("client1", addresses["client2"], COUNT)
        self.assertEqual(received, COUNT, f"client1 -> client2 {received}/{COUNT}\n{output}\n{self.tails()}")
        received, output = self.lab.ping6("client2", addresses["client1"], COUNT)
        self.assertEqual(received, COUNT, f"client2 -> client1 {received}/{COUNT}\n{output}\n{self.tails()}")
        one = self.lab.node_status("ours-client1")["client"]
        two = self.lab.node_status("ours-client2")["client"]
        self.assertEqual(one["hairpinning"]["alternates"][0].split(":")[0], "10.1.0.2", one["hairpinning"])
        self.assertEqual(two["hairpinning"]["alternates"][0].split(":")[0], "10.1.1.2", two["hairpinning"])
        self.assertEqual(one["local-discovery"]["local-peers"] + two["local-discovery"]["local-peers"], 0)
        for status in (one, two):
            counters = status["counters"]
            self.assertGreaterEqual(counters["hp-learned"], 1, counters)
            self.assertEqual(status["drops"]["mapping-mismatch"], 0, status["drops"])
        self.assertGreaterEqual(one["counters"]["hp-advertised"] + two["counters"]["hp-advertised"], 1)
        self.assertGreaterEqual(one["counters"]["hp-bubbles"] + two["counters"]["hp-bubbles"], 1)

    def test_without_hairpinning_no_way(self) -> None:
        addresses = self.start({"hairpinning": False})
        received, output = self.lab.ping6("client1", addresses["client2"], COUNT)
        self.assertEqual(received, 0, f"client1 -> client2 {received}/{COUNT}\n{output}")
        received, output = self.lab.ping6("client2", addresses["client1"], COUNT)
        self.assertEqual(received, 0, f"client2 -> client1 {received}/{COUNT}\n{output}")
        for node in ("ours-client1", "ours-client2"):
            status = self.lab.node_status(node)["client"]
            self.assertEqual(status["state"], "qualified")
            self.assertEqual(status["hairpinning"]["state"], "off")
