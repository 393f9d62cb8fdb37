"""
Local client discovery (RFC 4380 section 5.2.8) on a real LAN: two of our clients behind one
port-restricted NAT that does not hairpin find each other through 224.0.0.253 and talk over
the LAN, never through the NAT.
"""

from __future__ import annotations


from twisted.trial import unittest

from teredonode.wire.address import TeredoAddress
from tests.system.lab_fixture import LabAssertions, use_lab


class SharedLanDiscoveryTests(LabAssertions, unittest.TestCase):
    def test_clients_on_one_lan_talk_directly(self) -> None:
        self.lab = lab = use_lab(self, "shared-lan")
        lab.start_teredonode("server", "server", "server")
        self.waitStatus("server", lambda s: s["server"]["state"] == "serving", 15, "serving")
        addresses: dict[str, str] = {}
        for client in ("client1", "client2"):
            lab.start_teredonode(client, client, "client")
        for client in ("client1", "client2"):
            address = lab.wait_teredo_address(client, 20)
            assert address is not None, lab.nodes[client].log_tail(10)
            addresses[client] = address
        # Both sit behind the same NAT: the same mapped IPv4 in their addresses.
        mapped = {c: TeredoAddress.parse(a).client for c, a in addresses.items()}
        self.assertEqual(mapped["client1"], mapped["client2"])

        # Capture, in client2, UDP arriving straight from client1's LAN address.
        capture = lab.capture(
            "client2", ["udp and src host 10.1.0.2 and not dst host 224.0.0.253"], seconds=20, count=3
        )
        self.addCleanup(lambda: capture.kill() if capture.poll() is None else None)
        self.assertPings("client1", addresses["client2"], count=6, logs=("client1", "client2"))
        out, _ = capture.communicate(timeout=25)
        self.assertGreaterEqual(len([l for l in out.splitlines() if "10.1.0.2." in l]), 3, out)
        s1 = lab.node_status("client1")["client"]
        self.assertGreaterEqual(s1["local-discovery"]["local-peers"], 1, s1["local-discovery"])
        # The server never had to relay a bubble between them.
        self.assertEqual(lab.node_status("server")["server"]["counters"]["forwarded"], 0)
