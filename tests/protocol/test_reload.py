"""
Reload (SIGHUP, L{teredonode.service.TeredoNode.reload}): a running server takes a new rate
limit and new secure-qualification keys without losing a qualified client; what cannot change
live keeps its value and is named in one log line; a broken file changes nothing.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import ClientSettings, parse_config
from teredonode.errors import ConfigError
from teredonode.logs import logFilter, setLogLevel
from teredonode.roles.client import TeredoClient
from teredonode.roles.server import TeredoServer
from teredonode.service import TeredoNode
from teredonode.testing import FakeInternet, FakeNetworkConfigurator, FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import CLIENT_LINK_LOCAL_RESTRICTED
from teredonode.wire.teredo import AuthIndicator, encode_payload

PRIMARY, SECONDARY = "203.0.113.10", "203.0.113.11"
BASE = f"""
[node]
status-socket = "/nonexistent/status.sock"
log-level = "{{level}}"
[server]
enabled = true
primary = "{PRIMARY}"
rs-rate = {{rate}}
rs-burst = {{burst}}
rs-initial = {{initial}}
{{extra}}
"""


def makeRole(settings: Any, node: Any, reactor: Any) -> TeredoServer:
    """
    The role module the node loads in these tests: a server on the in-memory network (the
    node's "reactor" is a fake host).
    """
    return TeredoServer(settings, reactor)


def text(rate: float = 1.0, burst: int = 10, initial: int = 3, level: str = "info", extra: str = "") -> str:
    return BASE.format(rate=rate, burst=burst, initial=initial, level=level, extra=extra)


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.file = text()
        self.node = TeredoNode(
            parse_config(self.file, "teredo.toml"), self.net.host(PRIMARY, SECONDARY),
            registry={"server": __name__}, loader=lambda: parse_config(self.file, "teredo.toml"),
        )
        self.server: TeredoServer = self.node.roles["server"]
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.addCleanup(setLogLevel, "info")
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def client(self) -> TeredoClient:
        nat = self.net.nat("port-restricted", rng=random.Random(1))
        rng = random.Random(1)
        client = TeredoClient(
            ClientSettings(server=PRIMARY, secondary=SECONDARY), nat.host("10.0.0.2"), FakeTunDevice("t"),
            FakeNetworkConfigurator(), rng=rng, randbytes=rng.randbytes,
        )
        client.privilegedStartService()
        client.startService()
        self.addCleanup(client.stopService)
        self.net.run(10)
        self.assertEqual(client.state, "qualified")
        return client

    def reloadLines(self) -> list[str]:
        return [e["log_format"].format(**e) for e in self.events if e.get("log_format", "").startswith("reload:")]

    def test_rate_limit_changes_client_stays_qualified(self) -> None:
        client = self.client()
        address, qualifications = client.address, client.counters["qualifications"]
        rs_before = self.server.status()["counters"]["rs"]
        self.file = text(rate=0.01, burst=1, initial=1)
        applied, restart = self.node.reload()
        self.assertEqual(
            (sorted(applied), restart), (["[server] rs-burst", "[server] rs-initial", "[server] rs-rate"], [])
        )
        self.assertEqual(self.server.settings.rs_rate, 0.01)
        # The client refreshes (one RS, in the new bucket's one-token burst), still qualified.
        self.net.run(40)
        self.assertEqual((client.state, client.address), ("qualified", address))
        self.assertEqual(client.counters["qualifications"], qualifications)
        self.assertGreater(self.server.status()["counters"]["rs"], rs_before)
        # The new limit is in force: a second RS from one source right away is refused.
        probe = self.net.host("192.0.2.99")
        sock = probe.listenUDP(4000, _Sink())
        rs = encode_payload(
            ipv6.icmpv6_packet(CLIENT_LINK_LOCAL_RESTRICTED, ipv6.ALL_ROUTERS, ipv6.RouterSolicitation(), 255),
            AuthIndicator(b"12345678"),
        )
        limited = self.server.status()["drops"]["rate-limited-rs"]
        sock.write(rs, (PRIMARY, 3544))
        sock.write(rs, (PRIMARY, 3544))
        self.net.flush()
        self.assertEqual(self.server.status()["drops"]["rate-limited-rs"], limited + 1)
        self.assertEqual(len(self.reloadLines()), 1)

    def test_what_cannot_change_live_is_named_once(self) -> None:
        self.file = text(level="debug", extra='mtu = 1400\nprefix = "3ffe::/32"').replace(
            'status-socket = "/nonexistent/status.sock"', 'status-socket = "/nonexistent/other.sock"'
        )
        applied, restart = self.node.reload()
        self.assertEqual(applied, ["[node] log-level"])
        self.assertEqual(sorted(restart), ["[node] status-socket", "[server] mtu", "[server] prefix"])
        self.assertEqual(self.server.settings.mtu, 1280)  # kept
        self.assertEqual(self.node.config.node.log_level, "debug")
        self.assertEqual(self.node.config.roles["server"].prefix, "2001::/32")
        self.assertEqual(logFilter.logLevelForNamespace("teredonode.roles.server").name, "debug")
        [line] = self.reloadLines()
        self.assertIn("needs a restart to change: [node] status-socket", line)
        self.assertIn("[server] mtu", line)

    def test_secure_keys_live(self) -> None:
        self.file = text(extra='secure = true\nclients = { "alice" = "0123456789abcdef" }')
        applied, _ = self.node.reload()
        self.assertEqual(sorted(applied), ["[server] clients", "[server] secure"])
        self.assertIn(b"alice", self.server._secrets)

    def test_broken_file_changes_nothing(self) -> None:
        self.file = "[server\n"
        self.assertEqual(self.node.reload(), ([], []))
        self.assertEqual(self.server.settings.rs_rate, 1.0)
        errors = [e for e in self.events if e.get("log_format", "").startswith("reload: {error}")]
        self.assertEqual(len(errors), 1)

    def test_metrics_turned_on_by_reload(self) -> None:
        self.assertIsNone(self.node.metricsService)
        self.file = text().replace("[server]", 'metrics = "127.0.0.1:9544"\n[server]')
        applied, _ = self.node.reload()
        self.assertEqual(applied, ["[node] metrics"])
        self.assertEqual(self.node.metricsService.portNumber, 9544)

    def test_without_a_file(self) -> None:
        node = TeredoNode(parse_config(self.file, "(no config file)"), Clock(), registry={"server": __name__})
        self.assertRaises(ConfigError, node._readAgain)


class _Sink:
    def makeConnection(self, transport: Any) -> None:
        pass

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        pass
