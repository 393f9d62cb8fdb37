"""
Bubble and probe budgets of the shared tunnel core (RL-RX-07, RL-TX-07/08, SEC-19), on the
in-memory network with a Clock.

  - relay: one IPv6 packet toward a Teredo address costs one bubble round from the budget
    of the IPv4 address embedded in it (whatever its flags, server and port) and from a
    global one; a new entry exists only if its first round may go; retries are paid too;
    every suppressed round is counted by reason;
  - relay: direct bubbles only when configured (RFC 4380 section 5.4.1: a relay behind a
    non-cone NAT), and peers behind other IPv4 addresses are unaffected;
  - client: echo tests that packets from native sources start, and answers to indirect
    bubbles, are paid from one global budget, while a few sources at a time are not
    throttled.

The relay's budget tests are mixins (L{BudgetBehaviour} and its subclasses) run once on the
relay's test bed and once on the host-specific relay's, both started with the same budgets
(L{BUDGETS}), so that each budget is proven for each unnumbered role.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from teredonode.roles.client import TeredoClient
from teredonode.roles.tunnel import SUPPRESSION_REASONS
from teredonode.wire import ipv6
from teredonode.wire.teredo import OriginIndication, classify, encode_payload
from tests.protocol.tunnelroles import UnnumberedTestBed
from tests.protocol.test_client import Endpoint, echo
from tests.protocol.test_hostrelay import HostRelayTestCase
from tests.protocol.test_relay import PRIMARY, V6HOST, RelayTestCase, fakeTun, teredo

VICTIM = "192.0.2.99"
#: Servers an attacker may write into the destinations (any global IPv4 will do).
SERVERS = ("203.0.113.10", "203.0.113.77", "198.51.100.200", "192.0.2.250")


def victimAddresses(count: int, victim: str = VICTIM) -> list[bytes]:
    """
    C{count} distinct Teredo addresses embedding C{victim}: flags, server and port vary.
    """
    return [
        teredo(SERVERS[i % len(SERVERS)], victim, 1024 + i, flags=(i * 0x0101) & 0x3CFF)
        for i in range(count)
    ]


#: The relay's default budgets, given to both roles (the host-specific relay's defaults are
#: smaller) so that the same numbers hold for each.
BUDGETS: dict[str, Any] = {
    "bubble_rate_per_ipv4": 2.0,
    "bubble_burst_per_ipv4": 8,
    "bubble_rate_per_server": 50.0,
    "bubble_burst_per_server": 100,
    "bubble_rate": 1000.0,
    "bubble_burst": 2000,
    "direct_bubbles": False,
}

if TYPE_CHECKING:
    _Base = UnnumberedTestBed
else:
    _Base = object


class BudgetBehaviour(_Base):
    """
    Mixed into an unnumbered role's test bed (L{UnnumberedTestBed}): the role under test
    started with L{BUDGETS}, or the subclass's C{roleSettings}.
    """

    roleSettings: dict[str, Any] = BUDGETS

    def bubblesTo(self, ip: str) -> list[Any]:
        """
        Bubbles the role put on the Internet toward C{ip} (any port).
        """
        return [
            d for d in self.net.capture
            if d.src == self.roleEndpoint and d.dst[0] == ip and classify(d.data).is_bubble
        ]

    def roleBubbles(self) -> int:
        return sum(
            1 for d in self.net.capture
            if d.src == self.roleEndpoint and classify(d.data).is_bubble
        )

    def suppressed(self) -> dict[str, int]:
        suppressed: dict[str, int] = self.role.status()["peers"]["probes-suppressed"]
        return suppressed


class PerIPv4BudgetBehaviour(BudgetBehaviour):
    roleSettings = {**BUDGETS, "direct_bubbles": True}

    def test_oneVictimManyAddresses(self) -> None:
        """
        RL-RX-07: 500 packets toward 500 Teredo addresses that all embed one victim IPv4
        create 8 entries (the per-IPv4 burst) and 8 direct bubbles to the victim at once;
        the rest are dropped as budget-ipv4 and counted as suppressed rounds.  Over the
        next 10 s the retries stay within 2 rounds a second.
        """
        for dst in victimAddresses(500):
            self.tun.inject(echo(self.hostAddress, dst))
        self.settle()
        self.assertEqual(len(self.role.tunnel.peers), 8)
        self.assertEqual(len(self.bubblesTo(VICTIM)), 8)
        self.assertEqual(self.drops(), {"budget-ipv4": 492})
        self.assertEqual(self.suppressed()["ipv4-budget"], 492)
        self.advance(10, step=0.5)
        # 8 at once, then at most 2 rounds a second: each round one direct bubble.
        self.assertLessEqual(len(self.bubblesTo(VICTIM)), 8 + 2 * 10)
        status = self.role.status()
        self.assertEqual(
            status["counters"]["bubbles-suppressed"], sum(self.suppressed().values())
        )
        self.assertGreater(self.suppressed()["ipv4-budget"], 492)  # retries paid too

    def test_otherIPv4Unaffected(self) -> None:
        """
        With the victim's budget spent, a client behind another IPv4 address is bubbled,
        answers and gets its packet at once.
        """
        for dst in victimAddresses(50):
            self.tun.inject(echo(self.hostAddress, dst))
        self.settle()
        endpoint, udp, address = self.fakeClient()
        data = echo(self.hostAddress, address, b"legit")
        self.tun.inject(data)
        self.settle()
        # The direct bubble and the indirect one our server forwards.
        self.assertEqual(len([r for r in endpoint.received if classify(r[0]).is_bubble]), 2)
        assert self.role.tunnel.bubbleSource is not None
        udp.write(ipv6.bubble(address, self.role.tunnel.bubbleSource), self.roleEndpoint)
        self.settle()
        self.assertIn((data, self.roleEndpoint), endpoint.received)

    def test_trustedPeersNeedNoBudget(self) -> None:
        """
        A trusted entry is sent to directly (case 1), however spent the budgets are.
        """
        endpoint, udp, address = self.trustedFakeClient()
        known = self.role.tunnel.peers.get(address)
        assert known is not None and known.mapping is not None
        ip = known.mapping[0]
        for dst in victimAddresses(50, victim=ip):
            self.tun.inject(echo(self.hostAddress, dst))
        self.settle()
        data = echo(self.hostAddress, address, b"after")
        self.tun.inject(data)
        self.settle()
        self.assertIn((data, self.roleEndpoint), endpoint.received)


class PerServerBudgetBehaviour(BudgetBehaviour):
    def test_victimNamedAsServer(self) -> None:
        """
        The indirect bubble goes to the destination's server field, which the sender also
        chooses: 500 packets toward 500 Teredo addresses behind 500 different clients but
        naming one victim as their server get at most 100 rounds (the per-server burst) at
        once and 50 a second after; the rest are dropped as budget-server.
        """
        for i in range(500):
            client = str(ipaddress.IPv4Address(0x0B000000 + i))  # 11.0.0.0/8: global
            self.tun.inject(echo(self.hostAddress, teredo(VICTIM, client, 4000)))
        self.settle()
        self.assertEqual(len(self.bubblesTo(VICTIM)), 100)
        self.assertEqual(self.drops(), {"budget-server": 400})
        self.assertEqual(self.suppressed()["server-budget"], 400)
        self.advance(6, step=0.5)
        self.assertLessEqual(len(self.bubblesTo(VICTIM)), 100 + 50 * 6)


class GlobalBudgetBehaviour(BudgetBehaviour):
    roleSettings = {**BUDGETS, "bubble_rate": 1.0, "bubble_burst": 5}

    def test_globalBudget(self) -> None:
        """
        50 packets toward 50 different IPv4 addresses: 5 rounds (the global burst), 5
        entries, 45 drops as budget-global; then one round a second at most.
        """
        for i in range(50):
            self.tun.inject(echo(self.hostAddress, teredo(PRIMARY, f"192.0.2.{i + 1}", 4000)))
        self.settle()
        self.assertEqual(len(self.role.tunnel.peers), 5)
        self.assertEqual(self.roleBubbles(), 5)
        self.assertEqual(self.drops(), {"budget-global": 45})
        self.assertEqual(self.suppressed()["global-budget"], 45)
        self.advance(10, step=0.5)
        self.assertLessEqual(self.roleBubbles(), 5 + 10)

    def test_statusListsReasons(self) -> None:
        """
        Status shows every suppression reason (zeros included) and both budget drops.
        """
        status = self.role.status()
        self.assertEqual(tuple(status["peers"]["probes-suppressed"]), SUPPRESSION_REASONS)
        self.assertIn("budget-ipv4", status["drops"])
        self.assertIn("budget-global", status["drops"])


class RelayPerIPv4BudgetTests(PerIPv4BudgetBehaviour, RelayTestCase):
    pass


class HostRelayPerIPv4BudgetTests(PerIPv4BudgetBehaviour, HostRelayTestCase):
    pass


class RelayPerServerBudgetTests(PerServerBudgetBehaviour, RelayTestCase):
    pass


class HostRelayPerServerBudgetTests(PerServerBudgetBehaviour, HostRelayTestCase):
    pass


class RelayGlobalBudgetTests(GlobalBudgetBehaviour, RelayTestCase):
    pass


class HostRelayGlobalBudgetTests(GlobalBudgetBehaviour, HostRelayTestCase):
    pass


class DirectBubbleTests(BudgetBehaviour, RelayTestCase):
    """
    The relay's own default (the host-specific relay's is the opposite): no direct bubbles.
    """

    roleSettings: dict[str, Any] = {}

    def test_noDirectBubbleByDefault(self) -> None:
        """
        RFC 4380 section 5.4.1 case 3: the bubble goes to the client's server; a direct one
        only from a relay behind a non-cone NAT (direct-bubbles, off by default).  Nothing
        goes to the mapping embedded in the address until the client has answered.
        """
        silent = teredo(PRIMARY, VICTIM, 4000)
        self.tun.inject(echo(V6HOST, silent))
        self.advance(8, step=0.5)
        self.assertEqual(self.bubblesTo(VICTIM), [])
        self.assertEqual(len(self.bubblesTo(PRIMARY)), 4)
        self.assertEqual(self.counters()["bubbles-direct"], 0)

    def test_directBubbleWhenConfigured(self) -> None:
        """
        With direct-bubbles (RL-TX-07/08), each round also bubbles the mapping.
        """
        relay = self.makeRelayOn("203.0.113.21", direct_bubbles=True)
        fakeTun(relay).inject(echo(V6HOST, teredo(PRIMARY, VICTIM, 4000)))
        self.settle()
        direct = [d for d in self.net.capture if d.src[0] == "203.0.113.21" and d.dst == (VICTIM, 4000)]
        self.assertEqual(len(direct), 1)

    def test_legitimateExchangeWithoutDirectBubble(self) -> None:
        """
        A real client behind a port-restricted NAT answers the indirect bubble, which
        opens its NAT: v6host's packet reaches it through a default relay.
        """
        client = self.makeClient("port-restricted")
        assert client.address is not None
        packet = echo(V6HOST, client.address.to_bytes(), b"hello")
        self.tun.inject(packet)
        self.advance(1)
        self.assertIn(packet, fakeTun(client).written)
        self.assertEqual(self.counters()["bubbles-direct"], 0)


class ClientEchoBudgetTests(RelayTestCase):
    """
    SEC-19 (CVE-2006-6266): packets from native sources start echo tests through our
    server; one global budget bounds them.
    """

    def flood(self, client: TeredoClient, sources: int) -> None:
        attacker = self.net.host("192.0.2.66").listenUDP(5000, Endpoint(), interface="192.0.2.66")
        assert client.address is not None and client.mapping is not None
        me = client.address.to_bytes()
        for i in range(sources):
            src = ipaddress.IPv6Address(f"2001:db8:bad::{i + 1:x}").packed
            attacker.write(echo(src, me, b"x"), client.mapping)
        self.settle()

    def echoTests(self, client: TeredoClient) -> int:
        """
        Echo requests the client sent through its server (as seen on the Internet).
        """
        count = 0
        for d in self.net.capture:
            if d.src == client.mapping and d.dst == (PRIMARY, 3544):
                packet = classify(d.data)
                if packet.header.next_header == 58 and packet.ipv6[40] == 128:
                    count += 1
        return count

    def test_echoTestBudget(self) -> None:
        """
        200 spoofed native sources: 20 echo tests (inbound-probe-burst), 180 drops as
        budget-global, then at most 5 tests a second (inbound-probe-rate, retries included)
        while the flood's tests run out.
        """
        client = self.makeClient("full-cone")
        self.flood(client, 200)
        self.assertEqual(self.echoTests(client), 20)
        self.assertEqual(client.status()["drops"]["budget-global"], 180)
        self.assertEqual(client.status()["peers"]["probes-suppressed"]["global-budget"], 180)
        self.assertLessEqual(len(client.tunnel.peers), 20)
        self.advance(10, step=0.5)
        self.assertLessEqual(self.echoTests(client), 20 + 5 * 10)

    def test_fewSourcesNotThrottled(self) -> None:
        """
        Three native sources at once each get their whole test (4 requests, 2 s apart):
        nothing is suppressed by the budget.
        """
        client = self.makeClient("full-cone")
        self.flood(client, 3)
        self.advance(8, step=0.5)
        self.assertEqual(self.echoTests(client), 12)
        suppressed = client.status()["peers"]["probes-suppressed"]
        self.assertEqual((suppressed["global-budget"], client.status()["drops"]["budget-global"]), (0, 0))

    def test_indirectBubbleAnswersBudget(self) -> None:
        """
        Indirect bubbles through our server (forged here) carrying 100 different origins:
        20 direct answers (the burst), the rest suppressed as global-budget.
        """
        client = self.makeClient("full-cone")
        assert client.address is not None and client.mapping is not None
        me = client.address.to_bytes()
        for i in range(100):
            peer = teredo(PRIMARY, f"192.0.2.{i + 1}", 5000)
            payload = encode_payload(
                ipv6.bubble(peer, me), origin=OriginIndication(f"192.0.2.{i + 1}", 5000)
            )
            self.net.inject((PRIMARY, 3544), client.mapping, payload)
        self.settle()
        self.assertEqual(client.status()["counters"]["bubbles-answered"], 20)
        self.assertEqual(client.status()["peers"]["probes-suppressed"]["global-budget"], 80)
