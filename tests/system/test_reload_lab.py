"""
Reload in the lab: SIGHUP to our running server (twistd) after its rate limit is edited in
its configuration file; the new limit is reported applied in one log line, and the Miredo
client qualified before keeps its address and goes on reaching v6host through a relay.
"""

from __future__ import annotations

import os
import signal
import time

from twisted.trial import unittest

from tests.system.lab_fixture import LabAssertions, use_lab


class ReloadLabTests(LabAssertions, unittest.TestCase):
    def test_sighup_changes_rate_limit_client_stays(self) -> None:
        self.lab = use_lab(self, "default", need_miredo=True)
        node = self.lab.start_teredonode("our-server", "server", "server")
        self.waitStatus("our-server", lambda s: s["server"]["state"] == "serving", 15, "serving")
        self.lab.exec("relay", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.lab.start_miredo("miredo-relay", "relay", "relay")
        self.lab.start_miredo("miredo-client1", "client1", "client")
        address = self.lab.wait_teredo_address("client1", 25.0)
        self.assertIsNotNone(address, "client1 did not qualify")

        conf = self.lab.state.path / "conf" / "our-server.toml"
        conf.write_text(conf.read_text() + "rs-rate = 0.25\nmtu = 1400\n")
        os.kill(node.record.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        line = None
        while line is None and time.monotonic() < deadline:
            line = next((l for l in node.log_tail(20) if "reload:" in l), None)
            time.sleep(0.1)
        self.assertIsNotNone(line, node.log_tail(20))
        self.assertIn("applied [server] rs-rate", line)
        self.assertIn("needs a restart to change: [server] mtu", line)
        self.assertIsNone(node.exit_code(), node.log_tail(20))

        self.assertEqual(self.lab.wait_teredo_address("client1", 5.0), address)
        received, output = self.lab.ping6("client1", self.lab.ipv6("v6host"), count=4)
        self.assertGreater(received, 0, output)
        self.assertEqual(self.lab.node_status("our-server")["server"]["state"], "serving")
