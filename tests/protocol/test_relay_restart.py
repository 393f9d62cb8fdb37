"""
A relay restarted, or replaced by another relay of an anycast group, on the in-memory network:
traffic must not wait ~30 s for peer entries to expire, in either direction.

  - the relay forwards a packet from a client it has no entry for when the packet's Teredo
    source embeds the very endpoint it came from (RFC 4380 section 5.4.2 allows dropping it,
    does not require it), creating no entry, subject to the served-range checks;
  - a client that keeps sending to a native peer through a relay that has gone silent re-runs
    the direct IPv6 connectivity test (section 5.2.9) after L{RELAY_SILENCE}, so the reply
    comes back through whichever relay now serves it and the entry moves there.

The IPv6 side routes 2001::/32 to the first relay in C{AnycastSide.live} (a router whose
ECMP set shrank to the survivors).
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import RelaySettings, ServerSettings
from teredonode.roles.client import TeredoClient
from teredonode.roles.relay import TeredoRelay
from teredonode.roles.server import TeredoServer
from teredonode.roles.tunnel import PROBE_INTERVAL, RELAY_RECHECKS, RELAY_SILENCE
from teredonode.testing import FakeInternet, FakeIPv6Network, FakeNetworkConfigurator, FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import GLOBAL_PREFIX
from tests.protocol.test_client import Endpoint, echo, raw
from tests.protocol.test_relay import PRIMARY, SECONDARY, V6HOST, RelayTestCase, fakeTun, teredo, withFakes

RELAY_A, RELAY_B = "203.0.113.20", "203.0.113.21"


class AnycastSide(FakeIPv6Network):
    """
    The native IPv6 network: 2001::/32 goes to the first live relay's TUN (C{live}, a list
    the test edits), v6host answers echo requests and records what it received.
    """

    def __init__(self, *tuns: FakeTunDevice) -> None:
        super().__init__(*tuns)
        self.live: list[FakeTunDevice] = []
        self.received: list[bytes] = []

    def add(self, tun: FakeTunDevice) -> None:
        self.tuns = (*self.tuns, tun)
        self._seen[id(tun)] = 0

    def route(self, packet: bytes) -> None:
        dst = packet[24:40]
        if dst[:4] == GLOBAL_PREFIX:
            if self.live:
                self.live[0].inject(packet)
        elif dst == V6HOST:
            self.received.append(packet)
            reply = self.echoReply(packet)
            if reply is not None:
                self.route(reply)


class RestartTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        serverTun = FakeTunDevice("teredo-srv")
        self.server = TeredoServer(
            ServerSettings(primary=PRIMARY, secondary=SECONDARY), self.net.host(PRIMARY, SECONDARY), tun=serverTun
        )
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.side = AnycastSide(serverTun)
        self.hosts = {ip: self.net.host(ip) for ip in (RELAY_A, RELAY_B)}
        self.relays: dict[str, TeredoRelay] = {}

    def startRelay(self, ip: str, seed: int = 7) -> TeredoRelay:
        relay = withFakes("teredo-relay", lambda tun, conf: TeredoRelay(
            RelaySettings(), self.hosts[ip], tun, conf, randbytes=random.Random(seed).randbytes,
        ))
        tun = fakeTun(relay)
        relay.privilegedStartService()
        relay.startService()
        self.addCleanup(lambda: relay.running and relay.stopService())
        self.side.add(tun)
        self.side.live.append(tun)
        self.relays[ip] = relay
        return relay

    def stopRelay(self, ip: str) -> None:
        relay = self.relays.pop(ip)
        self.side.live.remove(fakeTun(relay))
        relay.stopService()

    def makeClient(self) -> tuple[TeredoClient, bytes]:
        """
        Our client behind a port-restricted NAT (the relay tests' own), qualified.
        """
        self._nats = 0
        client = RelayTestCase.makeClient(self)  # type: ignore[arg-type]
        return client, raw(client.address)

    def settle(self) -> None:
        while True:
            self.net.flush()
            if not self.side.pump():
                return

    def advance(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.net.run(step)
            self.settle()

    def clientPing(self, client: TeredoClient, caddr: bytes, data: bytes) -> None:
        fakeTun(client).inject(echo(caddr, V6HOST, data))
        self.settle()

    def repliesTo(self, client: TeredoClient) -> list[bytes]:
        written = fakeTun(client).written
        return [p[48:] for p in written if p[6] == ipv6.NH_ICMPV6 and p[40] == ipv6.ICMP_ECHO_REPLY]

    def requestsTo(self, client: TeredoClient) -> list[bytes]:
        written = fakeTun(client).written
        return [p[48:] for p in written if p[6] == ipv6.NH_ICMPV6 and p[40] == ipv6.ICMP_ECHO_REQUEST]

    def pingUntilAnswered(self, client: TeredoClient, caddr: bytes, limit: float, step: float = 0.2) -> float:
        """
        The client pings v6host every C{step} s; how long until a reply arrives.
        """
        elapsed = 0.0
        n = 0
        before = len(self.repliesTo(client))
        while elapsed <= limit:
            n += 1
            self.clientPing(client, caddr, b"p%d" % n)
            if len(self.repliesTo(client)) > before:
                return elapsed
            self.advance(step)
            elapsed += step
        self.fail(f"no reply within {limit} s")


class StatelessForwardingTests(RestartTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.relay = self.startRelay(RELAY_A)

    def test_unknownClientForwardedWithoutState(self) -> None:
        """
        A packet from a client the relay never sent to, whose source embeds the endpoint it
        came from, reaches the IPv6 side; no entry is created, it is counted.
        """
        self.side.live.clear()  # v6host's replies go nowhere: only the inbound path counts
        endpoint = Endpoint()
        udp = self.net.host("192.0.2.50").listenUDP(40000, endpoint, interface="192.0.2.50")
        address = teredo(PRIMARY, "192.0.2.50", 40000)
        for n in range(50):
            udp.write(echo(address, V6HOST, b"%d" % n), (RELAY_A, 3544))
        self.settle()
        self.assertEqual(len(self.side.received), 50)
        self.assertEqual(len(self.relay.tunnel.peers), 0)
        status = self.relay.status()
        self.assertEqual(status["counters"]["delivered-stateless"], 50)
        self.assertEqual(status["counters"]["delivered"], 50)
        self.assertEqual({k: v for k, v in status["drops"].items() if v}, {})

    def test_statelessStillChecked(self) -> None:
        """
        Stateless forwarding keeps every other check: a spoofed mapping, a destination
        outside the served range, a link-local source are dropped; a bubble from an unknown
        client is dropped (there is nothing to refresh) and creates nothing; many clients
        create no entries.
        """
        self.side.live.clear()
        udp = self.net.host("192.0.2.50").listenUDP(40000, Endpoint(), interface="192.0.2.50")
        mine = teredo(PRIMARY, "192.0.2.50", 40000)
        other = teredo(PRIMARY, "192.0.2.51", 40000)
        udp.write(echo(other, V6HOST), (RELAY_A, 3544))
        udp.write(echo(mine, bytes.fromhex("fd00" + "00" * 13 + "01")), (RELAY_A, 3544))
        udp.write(echo(mine, teredo(PRIMARY, "192.0.2.9", 9)), (RELAY_A, 3544))
        assert self.relay.tunnel.bubbleSource is not None
        udp.write(ipv6.bubble(mine, self.relay.tunnel.bubbleSource), (RELAY_A, 3544))
        for n in range(20):
            host = self.net.host(f"192.0.2.{100 + n}")
            port = host.listenUDP(5000 + n, Endpoint(), interface=f"192.0.2.{100 + n}")
            port.write(echo(teredo(PRIMARY, f"192.0.2.{100 + n}", 5000 + n), V6HOST), (RELAY_A, 3544))
        self.settle()
        drops = {k: v for k, v in self.relay.status()["drops"].items() if v}
        self.assertEqual(drops, {"mapping-mismatch": 1, "wrong-destination": 2, "unknown-peer": 1})
        self.assertEqual(len(self.side.received), 20)
        self.assertEqual(len(self.relay.tunnel.peers), 0)

    def test_hostRelayStillDrops(self) -> None:
        """
        The host-specific relay keeps the strict rule (its few peers re-learn it by echo
        tests): only the network relay forwards statelessly.
        """
        from teredonode.roles.hostrelay import HOST_RELAY_POLICY
        from teredonode.roles.relay import RELAY_POLICY

        self.assertTrue(RELAY_POLICY.forward_stateless)
        self.assertFalse(HOST_RELAY_POLICY.forward_stateless)


class RestartTests(RestartTestCase):
    """
    The same relay (address and port) restarted under a client talking to v6host.
    """

    def setUp(self) -> None:
        super().setUp()
        self.startRelay(RELAY_A)
        self.client, self.caddr = self.makeClient()
        self.pingUntilAnswered(self.client, self.caddr, 2)

    def restart(self, downtime: float = 2.5) -> None:
        """
        Stop the relay and start a new one on the same endpoint C{downtime} s later (a real
        restart takes longer than the client's 2-s pace of answers to indirect bubbles).
        """
        self.stopRelay(RELAY_A)
        self.advance(downtime)
        self.startRelay(RELAY_A, seed=8)

    def test_clientToV6HostAtOnce(self) -> None:
        """
        The client's entry for v6host still names the relay's endpoint; the restarted relay
        forwards its packets statelessly, v6host's replies make it bubble the client, and
        the first ping after the restart is answered without any wait for expiry.
        """
        self.restart()
        waited = self.pingUntilAnswered(self.client, self.caddr, 1)
        self.assertEqual(waited, 0.0)
        counters = self.relays[RELAY_A].status()["counters"]
        self.assertEqual(counters["delivered-stateless"], 1)
        self.assertEqual(self.relays[RELAY_A].status()["drops"]["unknown-peer"], 0)

    def test_v6HostToClientAtOnce(self) -> None:
        """
        v6host's first packet after the restart makes the new relay bubble the client (it
        has no entry), the client answers through its server, the packet and the client's
        reply flow: no packet is lost.
        """
        self.restart()
        v6 = self.side
        for n in range(5):
            v6.live[0].inject(echo(V6HOST, self.caddr, b"down%d" % n))
            self.advance(0.2)
        self.assertEqual(self.requestsTo(self.client)[-5:], [b"down%d" % n for n in range(5)])


class FailoverTests(RestartTestCase):
    """
    Two relays with their own IPv4 addresses behind one anycast IPv6 route: the one the
    client uses is withdrawn (stopped), the route now leads to the other.
    """

    def setUp(self) -> None:
        super().setUp()
        self.startRelay(RELAY_A)
        self.startRelay(RELAY_B, seed=9)
        self.client, self.caddr = self.makeClient()
        self.pingUntilAnswered(self.client, self.caddr, 2)
        known = self.client.tunnel.peers.get(V6HOST)
        assert known is not None
        self.assertEqual(known.mapping, (RELAY_A, 3544))

    def test_clientOnlyTrafficMovesAfterSilence(self) -> None:
        """
        Only the client sends (v6host's replies are the only way back): after RELAY_SILENCE
        without a reply it re-runs the echo test through its server, the reply comes back
        through relay B, and the entry moves there; bounded by RELAY_SILENCE plus a probe
        interval.
        """
        self.stopRelay(RELAY_A)
        waited = self.pingUntilAnswered(self.client, self.caddr, RELAY_SILENCE + PROBE_INTERVAL + 1)
        self.assertGreaterEqual(waited, RELAY_SILENCE - 0.5)
        self.assertLessEqual(waited, RELAY_SILENCE + 1.0)
        known = self.client.tunnel.peers.get(V6HOST)
        assert known is not None
        self.assertEqual(known.mapping, (RELAY_B, 3544))
        self.assertEqual(self.client.status()["counters"]["relay-rechecks"], 1)
        # From now on every ping is answered at once.
        before = len(self.repliesTo(self.client))
        for n in range(10):
            self.clientPing(self.client, self.caddr, b"after%d" % n)
            self.advance(0.2)
        self.assertEqual(len(self.repliesTo(self.client)), before + 10)

    def test_v6HostTrafficMovesWithoutLoss(self) -> None:
        """
        v6host pings the client through relay B: B bubbles the client, the client sees
        v6host from a new relay and proves it by an echo test (section 5.2.6's 2-s rule may
        hold it one probe interval, as the client has just sent to v6host); the packets wait
        in the queue meanwhile, none is lost, and the client's own traffic follows.
        """
        self.stopRelay(RELAY_A)
        for n in range(5):
            self.side.live[0].inject(echo(V6HOST, self.caddr, b"down%d" % n))
            self.advance(0.2)
        self.advance(PROBE_INTERVAL)
        self.assertEqual(self.requestsTo(self.client)[-5:], [b"down%d" % n for n in range(5)])
        known = self.client.tunnel.peers.get(V6HOST)
        assert known is not None
        self.assertEqual(known.mapping, (RELAY_B, 3544))
        self.assertEqual(self.pingUntilAnswered(self.client, self.caddr, 1), 0.0)


    def test_bothWaysContinuous(self) -> None:
        """
        The system test's traffic: the client pings v6host and v6host pings the client every
        0.2 s (the client's host answering), relay A dies.  Both directions recover within
        RELAY_SILENCE plus a probe interval, and nothing is lost after that.
        """
        answered = 0
        tick = 0.2

        def step(n: int) -> None:
            nonlocal answered
            self.clientPing(self.client, self.caddr, b"up%d" % n)
            self.side.live[0].inject(echo(V6HOST, self.caddr, b"down%d" % n))
            self.settle()
            requests = [p for p in fakeTun(self.client).written if p[40] == ipv6.ICMP_ECHO_REQUEST]
            for request in requests[answered:]:
                reply = self.side.echoReply(request)
                assert reply is not None
                fakeTun(self.client).inject(reply)
            answered = len(requests)
            self.advance(tick)

        self.stopRelay(RELAY_A)
        upSeen = len(self.repliesTo(self.client))
        downSeen = len([p for p in self.side.received if p[40] == ipv6.ICMP_ECHO_REPLY])
        limit = RELAY_SILENCE + PROBE_INTERVAL
        for n in range(round(limit / tick) + 1):
            step(n)
        up = self.repliesTo(self.client)[upSeen:]
        down = [p[48:] for p in self.side.received if p[40] == ipv6.ICMP_ECHO_REPLY][downSeen:]
        self.assertTrue(up and down, (up, down))
        # From here on nothing is lost.
        first = n + 1
        for n in range(first, first + 25):
            step(n)
        up = self.repliesTo(self.client)
        down = [p[48:] for p in self.side.received if p[40] == ipv6.ICMP_ECHO_REPLY]
        for m in range(first, first + 24):
            self.assertIn(b"up%d" % m, up)
            self.assertIn(b"down%d" % m, down)


class RecheckTests(RestartTestCase):
    """
    The client's re-check of a silent relay, when the relay is in fact alive or when no
    relay answers at all.
    """

    def setUp(self) -> None:
        super().setUp()
        self.relay = self.startRelay(RELAY_A)
        self.client, self.caddr = self.makeClient()
        self.pingUntilAnswered(self.client, self.caddr, 2)

    def oneWay(self, seconds: float) -> None:
        """
        UDP to v6host's discard port, every 0.2 s: nothing ever comes back.
        """
        for _ in range(round(seconds / 0.2)):
            packet = bytearray(echo(self.caddr, V6HOST, b"x"))
            packet[40] = 1  # not an echo request: v6host answers nothing
            fakeTun(self.client).inject(bytes(packet))
            self.advance(0.2)

    def test_liveRelayAnswersRecheck(self) -> None:
        """
        One-way traffic through a live relay: one re-check after RELAY_SILENCE, answered
        through the same relay, consumed (never handed to the host), the entry stays.
        """
        replies = len(self.repliesTo(self.client))
        self.oneWay(RELAY_SILENCE + 1)
        counters = self.client.status()["counters"]
        self.assertEqual(counters["relay-rechecks"], 1)
        self.assertEqual(len(self.repliesTo(self.client)), replies)
        peer = self.client.tunnel.peers.get(V6HOST)
        assert peer is not None
        self.assertEqual(peer.mapping, (RELAY_A, 3544))
        self.assertIsNone(peer.nonce)
        self.assertEqual(peer.bubbles, [])

    def test_rechecksBounded(self) -> None:
        """
        No relay at all: at most RELAY_RECHECKS re-checks, a probe interval apart, however
        long the host keeps sending; the entry then simply expires as before.
        """
        self.stopRelay(RELAY_A)
        self.oneWay(20)
        self.assertEqual(self.client.status()["counters"]["relay-rechecks"], RELAY_RECHECKS)


class FakeHealthRoute:
    """
    Records what the relay does with its health route; C{present} is the kernel's view.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.present = False
        self.failing: str | None = None
        self.closed = False

    def refresh(self, ifname: str) -> None:
        if self.failing:
            raise RuntimeError(self.failing)
        self.calls.append(f"refresh {ifname}")
        self.present = True

    def withdraw(self) -> None:
        self.calls.append("withdraw")
        self.present = False

    def lookup(self) -> dict[str, Any] | None:
        return {"expires": 3.0} if self.present else None

    def close(self) -> None:
        self.closed = True


class HealthTests(RestartTestCase):
    """
    The health route a BGP daemon announces (docs/anycast.md): refreshed from the event
    loop while the relay is healthy, withdrawn first on a graceful stop, which then keeps
    relaying for drain-time.
    """

    def setUp(self) -> None:
        super().setUp()
        self.route = FakeHealthRoute()
        tun = FakeTunDevice("teredo-relay")
        self.relay = TeredoRelay(
            RelaySettings(health_table=100, health_interval=1, health_lifetime=3, drain_time=4),
            self.hosts[RELAY_A], tun, FakeNetworkConfigurator(),
            randbytes=random.Random(7).randbytes, healthRoute=self.route,
        )
        self.relay.privilegedStartService()
        self.relay.startService()
        self.addCleanup(self.stopFully)
        self.side.add(tun)
        self.side.live.append(tun)

    def stopFully(self) -> None:
        """
        Stop the relay through its public stop, finishing a drain on the clock.
        """
        if self.relay.running:
            self.relay.stopService()
        if self.relay.state == "draining":
            self.clock.advance(self.relay.settings.drain_time)
        self.assertEqual(self.relay.state, "stopped")

    def test_refreshedEveryInterval(self) -> None:
        """
        At start and then every health-interval; status reads the kernel's view.
        """
        self.assertEqual(self.route.calls, ["refresh teredo-relay"])
        self.advance(3.05, step=0.05)
        self.assertEqual(self.route.calls, ["refresh teredo-relay"] * 4)
        health = self.relay.status()["health"]
        self.assertEqual(health["state"], "announced")
        self.assertEqual(health["table"], 100)
        self.assertEqual(health["kernel-route"], {"present": True, "expires": 3.0})
        self.route.present = False  # e.g. someone deleted it: status says so
        self.assertFalse(self.relay.status()["health"]["kernel-route"]["present"])

    def test_failureReportedAndRetried(self) -> None:
        """
        A refresh the kernel refuses is shown in status and tried again next interval.
        """
        self.route.failing = "no interface teredo-relay"
        self.advance(1.0, step=0.05)
        health = self.relay.status()["health"]
        self.assertEqual((health["state"], health["error"]), ("withdrawn", "no interface teredo-relay"))
        self.route.failing = None
        self.advance(1.0, step=0.05)
        self.assertEqual(self.relay.status()["health"]["state"], "announced")

    def test_drainWithdrawsFirstThenStops(self) -> None:
        """
        stopService withdraws the route at once, keeps relaying (a client's packet still
        reaches v6host) for drain-time, then stops and the Deferred fires.
        """
        done: list[object] = []
        d = self.relay.stopService()
        d.addCallback(done.append)
        self.assertEqual(self.route.calls[-1], "withdraw")
        self.assertEqual(self.relay.state, "draining")
        self.assertEqual(self.relay.status()["health"]["state"], "withdrawn")
        udp = self.net.host("192.0.2.50").listenUDP(40000, Endpoint(), interface="192.0.2.50")
        udp.write(echo(teredo(PRIMARY, "192.0.2.50", 40000), V6HOST, b"late"), (RELAY_A, 3544))
        self.advance(3.9, step=0.1)
        self.assertIn(b"late", [p[48:] for p in self.side.received])
        self.assertEqual(done, [])
        self.assertNotIn("refresh teredo-relay", self.route.calls[-1:])
        self.advance(0.2, step=0.1)
        self.assertEqual(len(done), 1)
        self.assertEqual(self.relay.state, "stopped")
        self.assertTrue(self.route.closed)

    def test_noDrainWithoutHealthRoute(self) -> None:
        """
        A relay without a health route (the default) stops at once, as before.
        """
        relay = self.startRelay(RELAY_B)
        self.assertEqual(relay.status()["health"], {"state": "off"})
        relay.stopService()
        self.assertEqual(relay.state, "stopped")
