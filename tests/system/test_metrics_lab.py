"""
Metrics in the lab: our server with C{[node] metrics} on its namespace's loopback, scraped over
HTTP while a Miredo client qualifies and pings v6host; the counters move as traffic flows, the
live output passes C{promtool check metrics}, and every status counter is a series.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from twisted.trial import unittest

from tests.system.lab_fixture import LabAssertions, use_lab

ADDRESS = "127.0.0.1:9544"
SCRAPE = (
    "import sys, urllib.request; "
    f"sys.stdout.write(urllib.request.urlopen('http://{ADDRESS}/metrics', timeout=5).read().decode())"
)


def value(text: str, series: str) -> float:
    match = re.search(rf"(?m)^{re.escape(series)} (\S+)$", text)
    if match is None:
        raise AssertionError(f"{series} not in the metrics")
    return float(match.group(1))


class MetricsLabTests(LabAssertions, unittest.TestCase):
    def setUp(self) -> None:
        self.lab = use_lab(self, "default", need_miredo=True)
        self.lab.start_teredonode("our-server", "server", "server", node_settings={"metrics": ADDRESS})
        self.waitStatus("our-server", lambda s: s["server"]["state"] == "serving", 15, "serving")

    def scrape(self, host: str = "server") -> str:
        out = self.lab.exec(host, ["python3", "-c", SCRAPE], timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout

    def test_counters_move_with_traffic(self) -> None:
        before = self.scrape()
        self.assertEqual(value(before, "teredonode_server_rs_total"), 0.0)
        self.lab.exec("relay", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.lab.start_miredo("miredo-relay", "relay", "relay")
        self.lab.start_miredo("miredo-client1", "client1", "client")
        self.assertIsNotNone(self.lab.wait_teredo_address("client1", 25.0), "client1 did not qualify")
        received, output = self.lab.ping6("client1", self.lab.ipv6("v6host"), count=4)
        self.assertGreater(received, 0, output)
        after = self.scrape()
        self.assertGreater(value(after, "teredonode_server_rs_total"), 0.0)
        self.assertGreater(value(after, "teredonode_server_ra_total"), 0.0)
        self.assertGreater(value(after, "teredonode_server_forwarded_ipv6_total"), 0.0)
        self.assertGreater(value(after, "teredonode_server_received_total"), value(before, "teredonode_server_received_total"))
        # Every counter and drop reason of the live status is a series.
        status = self.lab.node_status("our-server")["server"]
        for name in status["counters"]:
            self.assertIn(f"teredonode_server_{name.replace('-', '_')}_total ", after)
        for reason in status["drops"]:
            self.assertIn(f'teredonode_server_drops_total{{reason="{reason}"}} ', after)
        promtool = shutil.which("promtool")
        if promtool is not None:
            check = subprocess.run([promtool, "check", "metrics"], input=after.encode(), capture_output=True, timeout=60)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_our_client_latencies_and_state(self) -> None:
        """
        Our client's metrics: qualified with its NAT type as labels, and the qualification
        and RS->RA histograms observed.
        """
        self.lab.start_teredonode("ours-client1", "client1", "client", node_settings={"metrics": ADDRESS})
        self.waitStatus("ours-client1", lambda s: s["client"]["state"] == "qualified", 25, "qualified")
        text = self.scrape("client1")
        self.assertRegex(text, r'teredonode_client_info\{[^}]*nat="restricted-or-cone"[^}]*state="qualified"')
        self.assertGreaterEqual(value(text, "teredonode_client_qualification_seconds_count"), 1.0)
        self.assertGreaterEqual(value(text, "teredonode_client_rs_ra_seconds_count"), 2.0)
        self.assertLess(value(text, "teredonode_client_rs_ra_seconds_sum"), 2.0 * value(text, "teredonode_client_rs_ra_seconds_count"))
