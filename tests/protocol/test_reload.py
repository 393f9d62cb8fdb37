"""
Reload (SIGHUP, L{teredonode.service.TeredoNode.reload}): a running server takes a new rate
limit and new secure-qualification keys without losing a qualified client; a relay and a
host-specific relay take new bubble budgets (RL-RX-07, SEC-19), direct bubbles and queue
bounds without losing a trusted peer; a client takes a new inbound probe budget (SEC-19)
without requalifying.  What cannot change live keeps its value and is named in one log line;
a broken file changes nothing.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import ClientSettings, HostRelaySettings, RelaySettings, ServerSettings, parse_config
from teredonode.errors import ConfigError
from teredonode.logs import logFilter, setLogLevel
from teredonode.roles.client import TeredoClient
from teredonode.roles.hostrelay import HostSpecificRelay
from teredonode.roles.relay import TeredoRelay
from teredonode.roles.tunnel import ProbeBudget
from teredonode.roles.server import TeredoServer
from teredonode.service import TeredoNode
from teredonode.testing import FakeInternet, FakeNetworkConfigurator, FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import CLIENT_LINK_LOCAL_RESTRICTED
from teredonode.wire.teredo import AuthIndicator, OriginIndication, encode_payload
from tests.protocol import test_hostrelay, test_relay
from tests.protocol.tunnelroles import UnnumberedTestBed, withFakes
from tests.protocol.test_client import Endpoint, echo
from tests.protocol.test_relay import RELAY_IP, teredo
from tests.protocol.test_server import secure_rs

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


def makeRole(settings: Any, reactor: Any) -> Any:
    """
    The role module the node loads in these tests: each role on the in-memory network (the
    node's "reactor" is a fake host), with fake TUNs and network configuration.
    """
    rng = random.Random(7)
    if isinstance(settings, ServerSettings):
        return TeredoServer(settings, reactor)
    if isinstance(settings, RelaySettings):
        return withFakes("teredo-relay", lambda tun, conf: TeredoRelay(
            settings, reactor, tun, conf, randbytes=rng.randbytes
        ))
    if isinstance(settings, HostRelaySettings):
        return withFakes("teredo-hr", lambda tun, conf: HostSpecificRelay(
            settings, reactor, tun, conf, lambda: {test_hostrelay.DUAL6}, randbytes=rng.randbytes,
        ))
    assert isinstance(settings, ClientSettings)
    return withFakes("teredo", lambda tun, conf: TeredoClient(
        settings, reactor, tun, conf, rng=rng, randbytes=rng.randbytes
    ))


def roleNode(test: Any, role: str, table: str, reactor: Any) -> TeredoNode:
    """
    A node running C{role} from the TOML C{table} (test.file is read again on reload), its
    role started on C{reactor}; log events collected in test.events.
    """
    test.file = table

    def read() -> Any:
        return parse_config(f'[node]\nstatus-socket = "/nonexistent/status.sock"\n[{role}]\nenabled = true\n{test.file}', "teredo.toml")

    node = TeredoNode(read(), reactor, registry={role: __name__}, loader=read)
    started = node.roles[role]
    started.privilegedStartService()
    started.startService()
    test.addCleanup(started.stopService)
    test.addCleanup(setLogLevel, "info")
    test.events = []
    globalLogPublisher.addObserver(test.events.append)
    test.addCleanup(globalLogPublisher.removeObserver, test.events.append)
    return node


def reloadLines(events: list[dict[str, Any]]) -> list[str]:
    return [e["log_format"].format(**e) for e in events if e.get("log_format", "").startswith("reload:")]


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
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

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
        return reloadLines(self.events)

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
        server = self.node.config.roles["server"]
        assert isinstance(server, ServerSettings)
        self.assertEqual(server.prefix, "2001::/32")
        self.assertEqual(logFilter.logLevelForNamespace("teredonode.roles.server").name, "debug")
        [line] = self.reloadLines()
        self.assertIn("needs a restart to change: [node] status-socket", line)
        self.assertIn("[server] mtu", line)

    def test_secure_keys_live(self) -> None:
        self.file = text(extra='secure = true\nclients = { "alice" = "0123456789abcdef" }')
        applied, _ = self.node.reload()
        self.assertEqual(sorted(applied), ["[server] clients", "[server] secure"])
        endpoint = Endpoint()
        client = self.net.host("192.0.2.45").listenUDP(4000, endpoint)
        client.write(secure_rs(b"alice", b"wrong secret"), (PRIMARY, 3544))
        self.net.flush()
        self.assertEqual(endpoint.received, [])  # secure now: a wrong key gets no RA
        client.write(secure_rs(b"alice", b"0123456789abcdef"), (PRIMARY, 3544))
        self.net.flush()
        self.assertEqual(len(endpoint.received), 1)  # the new key does

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

    def test_role_failing_to_reconfigure(self) -> None:
        """
        A role whose reconfigure fails keeps running on what it had: its settings are
        reported as needing a restart, the node's level is still applied.
        """

        def broken(settings: Any) -> None:
            raise RuntimeError("bug")

        self.server.reconfigure = broken  # type: ignore[method-assign]  # a failing reconfigure on purpose
        self.file = text(rate=0.01, level="debug")
        applied, restart = self.node.reload()
        self.assertEqual((applied, restart), (["[node] log-level"], ["[server] rs-rate"]))
        server = self.node.config.roles["server"]
        assert isinstance(server, ServerSettings)
        self.assertEqual(server.rs_rate, 1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [line] = self.reloadLines()[-1:]
        self.assertIn("needs a restart to change: [server] rs-rate", line)

    def test_without_a_file(self) -> None:
        node = TeredoNode(parse_config(self.file, "(no config file)"), Clock(), registry={"server": __name__})
        self.assertRaises(ConfigError, node.loader)


class ProbeBudgetTests(SynchronousTestCase):
    def test_set_rates_renews_only_what_changed(self) -> None:
        """
        New per-key rates leave the spent global bucket spent (a reload is no way around
        it); a new global rate starts that bucket afresh, full.
        """
        budget = ProbeBudget(Clock(), 0.001, 2, 1.0, 5)
        self.assertEqual([budget.charge(b"k") for _ in range(3)], [None, None, "global-budget"])
        budget.setRates(0.001, 2, 1.0, 1)
        self.assertEqual(budget.charge(b"other"), "global-budget")
        budget.setRates(0.001, 3, 1.0, 1)
        self.assertEqual([budget.charge(b"k"), budget.charge(b"k")], [None, "ipv4-budget"])


if TYPE_CHECKING:
    _Base = UnnumberedTestBed
else:
    _Base = object


class UnnumberedReloadBehaviour(_Base):
    """
    Reload of an unnumbered role (relay, host-specific relay), mixed into its test bed
    whose role under test a node runs from a configuration file (L{roleNode}).

    C{restartOnly}: a key of the role's table that only a restart changes, and a new value
    in TOML.
    """

    file: str  # set by roleNode
    events: list[dict[str, Any]]  # set by roleNode
    node: TeredoNode
    restartOnly: tuple[str, str]

    def keys(self, *names: str) -> list[str]:
        """
        C{names} as the reload reports them, C{[role] key}.
        """
        return [f"[{self.role.roleName}] {name}" for name in names]

    def test_budgets_change_trusted_peer_stays(self) -> None:
        """
        RL-RX-07: after a reload lowering the per-IPv4 bubble burst to 1 and turning direct
        bubbles over (on for the relay, off for the host-specific relay: each one's
        default changed), a second new exchange toward one IPv4 is refused (the old burst
        of 8 would let it go) and the first sends a direct bubble only if they are now on;
        a client trusted before is still trusted and sent to at once.
        """
        endpoint, udp, address = self.trustedFakeClient()
        peers = len(self.role.tunnel.peers)
        direct = not self.role.settings.direct_bubbles
        self.file = (
            "bubble-rate-per-ipv4 = 0.01\nbubble-burst-per-ipv4 = 1\n"
            f"direct-bubbles = {str(direct).lower()}\npeer-queue = 2\n"
        )
        applied, restart = self.node.reload()
        self.assertEqual(
            (sorted(applied), restart),
            (self.keys("bubble-burst-per-ipv4", "bubble-rate-per-ipv4", "direct-bubbles", "peer-queue"), []),
        )
        self.assertEqual(self.role.tunnel.peers.queue_packets, 2)
        # The trusted client: same entry, packets go at once.
        self.assertEqual(len(self.role.tunnel.peers), peers)
        known = self.role.tunnel.peers.get(address)
        assert known is not None
        self.assertTrue(known.trusted)
        data = echo(self.hostAddress, address, b"after reload")
        self.tun.inject(data)
        self.settle()
        self.assertIn((data, self.roleEndpoint), endpoint.received)
        # The new budget: one IPv4 behind two Teredo addresses, one new exchange only.
        before = self.counters()["bubbles-direct"]
        for port in (1024, 1025):
            self.tun.inject(echo(self.hostAddress, teredo(test_relay.PRIMARY, "192.0.2.99", port)))
        self.settle()
        self.assertEqual(self.drops(), {"budget-ipv4": 1})
        self.assertEqual(self.counters()["bubbles-direct"], before + int(direct))
        self.assertEqual(len(reloadLines(self.events)), 1)

    def test_global_budget_changes_trusted_peer_stays(self) -> None:
        """
        SEC-19: after a reload lowering the global bubble budget to a burst of 1, a second
        new exchange (toward another IPv4 address) is refused as budget-global; the client
        trusted before is sent to at once.
        """
        endpoint, udp, address = self.trustedFakeClient()
        self.file = "bubble-rate = 0.01\nbubble-burst = 1\n"
        applied, restart = self.node.reload()
        self.assertEqual((sorted(applied), restart), (self.keys("bubble-burst", "bubble-rate"), []))
        data = echo(self.hostAddress, address, b"after reload")
        self.tun.inject(data)
        self.settle()
        self.assertIn((data, self.roleEndpoint), endpoint.received)
        for ip in ("192.0.2.98", "192.0.2.99"):
            self.tun.inject(echo(self.hostAddress, teredo(test_relay.PRIMARY, ip, 1024)))
        self.settle()
        self.assertEqual(self.drops(), {"budget-global": 1})
        known = self.role.tunnel.peers.get(address)
        assert known is not None
        self.assertTrue(known.trusted)

    def test_what_needs_a_restart_is_named(self) -> None:
        """
        Settings the role cannot change while running keep their value and are named in
        the reload's one line, next to those applied.
        """
        key, value = self.restartOnly
        attribute = key.replace("-", "_")
        kept = getattr(self.role.settings, attribute)
        table = self.node.config.roles[self.role.roleName]
        port = getattr(table, "port")
        self.file = f"icmp-rate = 1.0\n{key} = {value}\nport = 4000\nbubble-rate = 10.0\n"
        applied, restart = self.node.reload()
        self.assertEqual(applied, self.keys("bubble-rate"))
        self.assertEqual(sorted(restart), sorted(self.keys("icmp-rate", "port", key)))
        self.assertEqual(getattr(self.role.settings, attribute), kept)
        self.assertEqual(self.role.settings.bubble_rate, 10.0)
        self.assertEqual(getattr(self.node.config.roles[self.role.roleName], "port"), port)
        [line] = reloadLines(self.events)
        name = self.role.roleName
        self.assertIn(f"applied [{name}] bubble-rate; needs a restart to change: [{name}] ", line)
        self.assertIn(f"[{name}] {key}", line)


class RelayReloadTests(UnnumberedReloadBehaviour, test_relay.RelayTestCase):
    """
    The relay of L{test_relay}'s test bed, run by a node from a configuration file.
    """

    restartOnly = ("serve", '["2001:db8::/32"]')

    def makeRelay(self, **overrides: Any) -> TeredoRelay:
        self.node = roleNode(self, "relay", "", self.net.host(RELAY_IP))
        relay: TeredoRelay = self.node.roles["relay"]
        return relay


class HostRelayReloadTests(UnnumberedReloadBehaviour, test_hostrelay.HostRelayTestCase):
    """
    The host-specific relay of L{test_hostrelay}'s test bed, run by a node.
    """

    restartOnly = ("interface", '"teredo-other"')

    def makeHostRelay(self, start: bool = True, ip: str = test_hostrelay.DUAL_IP, **overrides: Any) -> HostSpecificRelay:
        self.node = roleNode(self, "host-relay", "", self.net.host(ip))
        hr: HostSpecificRelay = self.node.roles["host-relay"]
        return hr

    def test_live_settings_are_settings(self) -> None:
        """
        Every role's live settings are fields of its table (a misspelt one would never be
        applied); the host-specific relay has no drain time.
        """
        roles: list[tuple[type[TeredoServer | TeredoRelay | HostSpecificRelay | TeredoClient], type[Any]]] = [
            (TeredoServer, ServerSettings),
            (TeredoRelay, RelaySettings),
            (HostSpecificRelay, HostRelaySettings),
            (TeredoClient, ClientSettings),
        ]
        for role, table in roles:
            self.assertLessEqual(set(role.liveSettings), {f.name for f in dataclasses.fields(table)}, role)
        self.assertNotIn("drain_time", self.hr.liveSettings)


class ClientReloadTests(test_relay.RelayTestCase):
    """
    A client run by a node, qualified with the test bed's server.
    """

    file: str  # set by roleNode

    def test_inbound_budget_changes_client_stays_qualified(self) -> None:
        """
        SEC-19: after a reload lowering inbound-probe-burst to 1, two indirect bubbles with
        different origins get one answer (the old burst of 20 would answer both); the
        client keeps its address and qualification.
        """
        nat = self.net.nat("full-cone", public="198.51.100.1", rng=random.Random(1))
        node = roleNode(
            self, "client", f'server = "{PRIMARY}"\nsecondary = "{SECONDARY}"\n', nat.host("10.0.0.2")
        )
        client: TeredoClient = node.roles["client"]
        self.settle()
        self.assertEqual(client.state, "qualified")
        address, qualifications = client.address, client.counters["qualifications"]
        self.file += "inbound-probe-rate = 0.01\ninbound-probe-burst = 1\n"
        applied, restart = node.reload()
        self.assertEqual(
            (sorted(applied), restart), (["[client] inbound-probe-burst", "[client] inbound-probe-rate"], [])
        )
        assert client.address is not None and client.mapping is not None
        me = client.address.to_bytes()
        for i in (1, 2):
            payload = encode_payload(
                ipv6.bubble(teredo(PRIMARY, f"192.0.2.{i}", 5000), me), origin=OriginIndication(f"192.0.2.{i}", 5000)
            )
            self.net.inject((PRIMARY, 3544), client.mapping, payload)
        self.settle()
        self.assertEqual(client.status()["counters"]["bubbles-answered"], 1)
        self.assertEqual(client.status()["peers"]["probes-suppressed"]["global-budget"], 1)
        self.advance(60)
        self.assertEqual((client.state, client.address), ("qualified", address))
        self.assertEqual(client.counters["qualifications"], qualifications)


class _Sink(DatagramProtocol):
    def makeConnection(self, transport: Any) -> None:
        pass

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        pass
