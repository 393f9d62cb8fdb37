"""
L{teredonode.metrics.MetricsService}: C{GET /metrics} over HTTP on 127.0.0.1, and the
C{[node] metrics} setting turning it on.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.internet.threads import deferToThread
from typing import Any

from teredonode.config import NodeConfig, NodeSettings, parse_config
from teredonode.errors import ConfigError
from teredonode.metrics import MetricsService
from teredonode.service import TeredoNode
from teredonode.status import StaticStatus


def _get(url: str) -> tuple[int, str, bytes]:
    """
    A plain blocking HTTP GET (run in a thread): what a scraper sees.
    """
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


class MetricsHTTPTests(TestCase):
    @inlineCallbacks
    def test_scrape_sees_counters_change(self):
        document: dict[str, dict[str, Any]] = {
            "server": {"state": "serving", "counters": {"rs": 1}, "drops": {"malformed": 0}}
        }
        service = MetricsService("127.0.0.1:0", StaticStatus(document), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        url = f"http://{service.address}/metrics"
        code, kind, body = yield deferToThread(_get, url)
        self.assertEqual(code, 200)
        self.assertIn("text/plain", kind)
        self.assertIn(b"teredonode_server_rs_total 1.0", body)
        document["server"]["counters"]["rs"] = 5
        document["server"]["drops"]["malformed"] = 2
        _, _, body = yield deferToThread(_get, url)
        self.assertIn(b"teredonode_server_rs_total 5.0", body)
        self.assertIn(b'teredonode_server_drops_total{reason="malformed"} 2.0', body)
        code, _, _ = yield deferToThread(_get, url.replace("/metrics", "/other"))
        self.assertEqual(code, 404)

    def test_node_serves_metrics_only_when_configured(self) -> None:
        off = TeredoNode(NodeConfig(source="t", node=NodeSettings()), Clock(), registry={})
        self.assertIsNone(off.metricsService)
        on = TeredoNode(NodeConfig(source="t", node=NodeSettings(metrics="127.0.0.1:9544")), Clock(), registry={})
        self.assertEqual((on.metricsService.host, on.metricsService.portNumber), ("127.0.0.1", 9544))
        self.assertIs(on.getServiceNamed("metrics"), on.metricsService)

    def test_setting_is_checked(self) -> None:
        base = '[server]\nenabled = true\nprimary = "192.0.2.1"\n[node]\n'
        self.assertEqual(parse_config(base + 'metrics = "[::1]:9544"\n', "t").node.metrics, "[::1]:9544")
        self.assertEqual(parse_config(base, "t").node.metrics, "")
        for bad in ('"localhost:9544"', '"127.0.0.1"', '"127.0.0.1:0"', '"127.0.0.1:99999"', "9544"):
            error = self.assertRaises(ConfigError, parse_config, base + f"metrics = {bad}\n", "t")
            self.assertIn("[node] metrics", str(error))
