"""
Clients behind a port-symmetric NAT through our relay, in the lab (RFC 6081 symmetric NATs).

A port-symmetric NAT gives the client a new external port per destination, so its answer to
our relay's bubble comes from a mapping its Teredo address does not embed.  The relay takes
that mapping only from an answer proving it received the relay's indirect bubble: a Miredo
client answers to the bubble's source, which carries the nonce (X-SNS-08, X-SNS-10); our
client also echoes the Nonce Trailer.  Both then ping v6host and are pinged back through
our relay, 5/5.

Every wait is a poll with a deadline; pings are bounded in time.
"""

from __future__ import annotations

from twisted.trial import unittest

from teredonode.wire.address import TeredoAddress
from tests.system.lab_fixture import LabAssertions, use_lab

QUALIFY_TIMEOUT = 20.0
COUNT = 5


class SymmetricNATThroughOurRelayTests(LabAssertions, unittest.TestCase):
    def setUp(self) -> None:
        self.lab = use_lab(self, "nat:port-symmetric", need_miredo=True)
        self.lab.exec("server", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.lab.start_teredonode("our-server", "server", "server")
        if not self.lab.wait_udp_listening("server", 3544, 15):
            self.fail(f"our server does not listen: {self.lab.nodes['our-server'].log_tail(10)}")
        self.lab.start_teredonode("our-relay", "relay", "relay")
        self.waitStatus("our-relay", lambda s: s["relay"]["state"] == "relaying", 15, "relaying")

    def qualify(self, node: str) -> str:
        text = self.lab.wait_teredo_address("client1", QUALIFY_TIMEOUT)
        assert text is not None, f"{node} did not qualify: {self.lab.nodes[node].log_tail(10)}"
        return str(TeredoAddress.parse(text))

    def assertBothWays(self, client: str, address: str) -> None:
        """
        client1 pings v6host and v6host pings client1, every echo answered; the relay
        learned the client's mapping toward it from a nonce-proving bubble (C{sns-learned}).
        """
        v6host = self.lab.ipv6("v6host")
        logs = ("our-relay", "our-server", client)
        received, output = self.lab.ping6("client1", v6host, COUNT)
        if received < COUNT:
            # The first echo may wait behind the bubbles: a second run must be perfect.
            received, output = self.lab.ping6("client1", v6host, COUNT)
        self.assertEqual(received, COUNT, f"client1 -> v6host {received}/{COUNT}\n{output}\n{self.tails(logs)}")
        received, output = self.lab.ping6("v6host", address, COUNT)
        self.assertEqual(received, COUNT, f"v6host -> client1 {received}/{COUNT}\n{output}\n{self.tails(logs)}")
        status = self.lab.node_status("our-relay")["relay"]
        self.assertGreaterEqual(status["counters"]["sns-learned"], 1, status)
        self.assertGreaterEqual(status["counters"]["delivered"], 2 * COUNT, status)

    def tails(self, logs: tuple[str, ...]) -> dict[str, list[str]]:
        return {n: self.lab.nodes[n].log_tail(15) for n in logs if n in self.lab.nodes}

    def test_miredo_client_behind_port_symmetric_nat(self) -> None:
        """
        Miredo's client qualifies behind the port-symmetric NAT (it never tests for one) and
        reaches v6host through our relay both ways, 5/5.
        """
        self.lab.start_miredo("miredo-client1", "client1", "client")
        address = self.qualify("miredo-client1")
        self.assertBothWays("miredo-client1", address)

    def test_our_client_behind_port_symmetric_nat(self) -> None:
        """
        Our client (allow-symmetric, symmetric-nat-support on) does the same.
        """
        self.lab.start_teredonode("ours-client1", "client1", "client", settings={"allow-symmetric": True})
        address = self.qualify("ours-client1")
        self.assertBothWays("ours-client1", address)


class SymmetricToRestrictedClientTests(LabAssertions, unittest.TestCase):
    """
    RFC 6081 section 6.1 on real NATs: our client behind the port-symmetric NAT and our
    client behind the address-restricted one, on our server, reach each other directly
    (with symmetric-nat-support off on both, 0 of 5: RFC 4380 alone cannot).
    """

    def setUp(self) -> None:
        self.lab = use_lab(self, "nat:port-symmetric,address-restricted")
        self.lab.start_teredonode("our-server", "server", "server")
        if not self.lab.wait_udp_listening("server", 3544, 15):
            self.fail(f"our server does not listen: {self.lab.nodes['our-server'].log_tail(10)}")

    def test_clients_reach_each_other(self) -> None:
        self.lab.start_teredonode("ours-client1", "client1", "client", settings={"allow-symmetric": True})
        self.lab.start_teredonode("ours-client2", "client2", "client")
        addresses: dict[str, str] = {}
        for host in ("client1", "client2"):
            text = self.lab.wait_teredo_address(host, QUALIFY_TIMEOUT)
            assert text is not None, f"{host} did not qualify: {self.lab.nodes['ours-' + host].log_tail(10)}"
            addresses[host] = str(TeredoAddress.parse(text))
        logs = ("our-server", "ours-client1", "ours-client2")
        tails = {n: self.lab.nodes[n].log_tail(15) for n in logs}
        received, output = self.lab.ping6("client1", addresses["client2"], COUNT)
        if received < COUNT:
            received, output = self.lab.ping6("client1", addresses["client2"], COUNT)
        self.assertEqual(received, COUNT, f"client1 -> client2 {received}/{COUNT}\n{output}\n{tails}")
        received, output = self.lab.ping6("client2", addresses["client1"], COUNT)
        self.assertEqual(received, COUNT, f"client2 -> client1 {received}/{COUNT}\n{output}\n{tails}")
