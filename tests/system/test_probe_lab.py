"""
C{teredo probe} in the lab: from a host behind each of the lab's NAT modes, against our server
and against miredo-server, the NAT kind, mapping and server answers come out as the NAT is
built (teredonode/lab/nat.py).  No interface is configured: the probe is a UDP socket.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial import unittest

from teredonode.lab.nodes import REPO_ROOT
from tests.system.lab_fixture import LabAssertions, use_lab

#: The "nat-modes" scenario's clients, and what the probe must say behind each.
EXPECTED = {
    "client1": "none",  # on the Internet directly
    "client2": "cone",
    "client3": "port-restricted",
    "client4": "port-restricted",  # plain masquerade: unsolicited inbound goes nowhere
    "client5": "symmetric",
}


class ProbeLabTests(LabAssertions, unittest.TestCase):
    serverImpl = "ours"

    def setUp(self) -> None:
        self.lab = use_lab(self, "nat-modes", need_miredo=True)
        if self.serverImpl == "ours":
            self.lab.start_teredonode("server-node", "server", "server")
        else:
            self.lab.start_miredo("server-node", "server", "server")
        if not self.lab.wait_udp_listening("server", 3544, 15):
            self.fail(f"server does not listen: {self.lab.nodes['server-node'].log_tail(10)}")

    def probe(self, host: str) -> dict[str, Any]:
        primary, secondary = self.lab.host("server").ipv4[:2]
        out = self.lab.exec(
            host,
            ["env", f"PYTHONPATH={REPO_ROOT}", "python3", "-m", "teredonode.cli", "probe",
             f"{primary},{secondary}", "--timeout", "1", "--json"],
            timeout=60,
        )
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def test_every_nat_mode(self) -> None:
        primary = self.lab.host("server").ipv4[0]
        for host, kind in EXPECTED.items():
            report = self.probe(host)
            self.assertEqual(report["nat"], kind, f"{host}: {report}")
            [server] = report["servers"]
            self.assertEqual(server["server"], primary)
            self.assertTrue(server["answers"] and server["secondary-answers"], server)
            self.assertGreater(server["rtt-ms"], 0.0)
            self.assertEqual(report["mapped"].split(":")[0], self.lab.public_ipv4(host), f"{host}: {report}")
            if kind == "symmetric":
                self.assertTrue(server["mapping-per-destination"], server)
                self.assertNotEqual(server["mapped"], server["mapped-secondary"])
            else:
                self.assertFalse(server["mapping-per-destination"], server)
                self.assertTrue(report["port-preserving"], report)  # masquerade keeps ports


class ProbeMiredoServerTests(ProbeLabTests):
    serverImpl = "miredo"
