"""
Metrics (L{teredonode.metrics}) from the real status documents of every role on the in-memory
network: valid Prometheus text (C{promtool check metrics}), every counter and drop reason the
role code increments present in status and in metrics, and the client's latency histograms.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from unittest import SkipTest

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import teredonode.roles
from teredonode.config import ClientSettings, HostRelaySettings, RelaySettings, ServerSettings
from teredonode.metrics import LATENCIES, render_metrics
from teredonode.roles.client import TeredoClient
from teredonode.roles.hostrelay import HostSpecificRelay
from teredonode.roles.relay import TeredoRelay
from teredonode.roles.server import TeredoServer
from teredonode.status import StaticStatus
from teredonode.testing import FakeInternet, FakeNetworkConfigurator, FakeTunDevice

PRIMARY, SECONDARY = "203.0.113.10", "203.0.113.11"
ROLES_DIR = Path(teredonode.roles.__file__).parent

#: Which status tables each role module's counters and drop reasons must show in (any of).
MODULE_TABLES = {
    "server.py": ("server",),
    "client.py": ("client",),
    "discovery.py": ("client",),
    "relay.py": ("relay",),
    "hostrelay.py": ("host-relay",),
    "tunnel.py": ("client", "relay", "host-relay"),
    "randomport.py": ("client",),
    "portguessing.py": ("client",),
}


_INCREMENT = re.compile(r'\b(counters|drops)\["([a-z0-9-]+)"\]\s*\+=')


def incremented() -> set[tuple[str, str, str]]:
    """
    (module file, "counters" or "drops", name) for every literal counter the roles increment.
    """
    found = set()
    for module in MODULE_TABLES:
        for kind, name in _INCREMENT.findall((ROLES_DIR / module).read_text()):
            found.add((module, kind, name))
    return found


def keysUnder(table: Any, field: str) -> set[str]:
    """
    Every key of every C{field} dict anywhere in C{table}.
    """
    keys: set[str] = set()
    if isinstance(table, dict):
        for key, value in table.items():
            if key == field and isinstance(value, dict):
                keys.update(value)
            keys |= keysUnder(value, field)
    return keys


class AllRoles(SynchronousTestCase):
    """
    A server, a qualified client, a relay and a host-specific relay, started.
    """

    def setUp(self) -> None:
        clock = Clock()
        self.net = net = FakeInternet(clock)
        self.server = self.start(
            TeredoServer(ServerSettings(primary=PRIMARY, secondary=SECONDARY), net.host(PRIMARY, SECONDARY), tun=FakeTunDevice("s"))
        )
        nat = net.nat("port-restricted", public="198.51.100.1", rng=random.Random(1))
        rng = random.Random(1)
        self.client = self.start(
            TeredoClient(
                ClientSettings(server=PRIMARY, secondary=SECONDARY), nat.host("10.0.0.2"), FakeTunDevice("c"),
                FakeNetworkConfigurator(), rng=rng, randbytes=rng.randbytes,
            )
        )
        for _ in range(10):
            net.flush()
            clock.advance(1)
        self.assertEqual(self.client.state, "qualified")
        self.relay = self.start(
            TeredoRelay(RelaySettings(), net.host("192.0.2.20"), FakeTunDevice("r"), FakeNetworkConfigurator(), randbytes=rng.randbytes)
        )
        self.hostRelay = self.start(
            HostSpecificRelay(
                HostRelaySettings(), net.host("192.0.2.30"), FakeTunDevice("h"), FakeNetworkConfigurator(),
                lambda: {bytes.fromhex("20010db8" + "0" * 22 + "30")}, randbytes=rng.randbytes,
            )
        )

    def start(self, role: Any) -> Any:
        role.privilegedStartService()
        role.startService()
        self.addCleanup(role.stopService)
        return role

    def document(self) -> dict[str, Any]:
        return {
            "node": {"version": "test", "pid": 1, "roles": ["server", "client", "relay", "host-relay"], "uptime": 1.0, "running": True},
            "server": self.server.status(),
            "client": self.client.status(),
            "relay": self.relay.status(),
            "host-relay": self.hostRelay.status(),
        }


class MetricsTests(AllRoles):
    def test_promtool_accepts_the_output(self) -> None:
        promtool = shutil.which("promtool")
        if promtool is None:
            raise SkipTest("promtool not installed (apt-get install prometheus)")
        text = render_metrics(StaticStatus(self.document()))
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_every_incremented_counter_in_status_and_metrics(self) -> None:
        document = self.document()
        text = render_metrics(StaticStatus(document)).decode()
        found = incremented()
        self.assertGreater(len(found), 60)  # the scan itself works
        missing = []
        for module, kind, name in sorted(found):
            tables = MODULE_TABLES[module]
            if not any(name in keysUnder(document[t], kind) for t in tables):
                missing.append(f"{module}: {kind}[{name!r}] not in the status of {'/'.join(tables)}")
                continue
            metric = name.replace("-", "_")
            if kind == "drops":
                pattern = rf'^teredonode_\w+_drops_total\{{reason="{re.escape(name)}"\}}'
            else:
                pattern = rf"^teredonode_\w*_{metric}_total "
            if not re.search(pattern, text, re.M):
                missing.append(f"{module}: {kind}[{name!r}] not in the metrics")
        self.assertEqual(missing, [])

    def test_every_status_number_is_a_series(self) -> None:
        """
        Every number of every role's status (counters, drops, gauges) is in the output, and
        the state and NAT type are labels.
        """
        text = render_metrics(StaticStatus(self.document())).decode()
        self.assertIn('teredonode_server_drops_total{reason="no-ipv6-side"} 0.0', text)
        self.assertRegex(text, r'teredonode_client_info\{[^}]*nat="[a-z-]+"[^}]*state="qualified"')
        self.assertRegex(text, r"(?m)^teredonode_client_peers_peers \d")
        self.assertRegex(text, r"(?m)^teredonode_relay_received_total 0\.0$")
        self.assertRegex(text, r"(?m)^teredonode_server_ra_total 2\.0$")  # primary and secondary
        server = self.server.status()
        for reason in server["drops"]:
            self.assertIn(f'teredonode_server_drops_total{{reason="{reason}"}}', text)

    def test_latency_histograms(self) -> None:
        """
        The client reported its RS->RA round trips and its qualification time.
        """
        text = render_metrics(StaticStatus(self.document())).decode()
        for name in LATENCIES.values():
            [described] = name.describe()
            self.assertIn(f"# TYPE {described.name} histogram", text)
        count = re.search(r"(?m)^teredonode_client_rs_ra_seconds_count (\S+)$", text)
        assert count is not None
        self.assertGreaterEqual(float(count.group(1)), 2.0)  # primary and secondary phase
        qualification = re.search(r"(?m)^teredonode_client_qualification_seconds_count (\S+)$", text)
        assert qualification is not None
        self.assertGreaterEqual(float(qualification.group(1)), 1.0)
        self.assertNotIn("_created", text)

    def test_histograms_only_with_a_client(self) -> None:
        document = self.document()
        del document["client"]
        self.assertNotIn(b"_seconds", render_metrics(StaticStatus(document)))

    def test_docs_list_every_series(self) -> None:
        """
        docs/metrics.md names every series (the relay's table stands for host-relay's too;
        a row may abbreviate a name to its suffix after C{teredonode_<role>}).
        """
        text = render_metrics(StaticStatus(self.document())).decode()
        docs = (ROLES_DIR.parent.parent / "docs" / "metrics.md").read_text()
        missing = []
        for family in re.findall(r"(?m)^# TYPE (\S+) ", text):
            name = family.replace("teredonode_host_relay_", "teredonode_relay_")
            role = re.match(r"teredonode_(server|client|relay|node)", name)
            assert role is not None, family
            suffix = name[role.end():]
            if f"`{name}" not in docs and f"`{suffix}`" not in docs:
                missing.append(family)
        self.assertEqual(missing, [])

    def test_dashboard_uses_real_series(self) -> None:
        """
        The sample Grafana dashboard's queries name only series the node exports.
        """
        import json

        text = render_metrics(StaticStatus(self.document())).decode()
        families = set(re.findall(r"(?m)^# TYPE (\S+) ", text))
        dashboard = json.loads((ROLES_DIR.parent.parent / "etc" / "grafana-teredonode.json").read_text())
        used = {
            re.sub(r"_bucket$", "", name)
            for panel in dashboard["panels"]
            for target in panel["targets"]
            for name in re.findall(r"teredonode_\w+", target["expr"])
        }
        self.assertGreater(len(used), 10)
        self.assertEqual(used - families, set())
