"""
The relay role on the in-memory network (requirements digest section 3.3: RL-01..04,
RL-TX-01..08, RL-RX-01..07), against our server and our client behind NATs, plus bare
UDP endpoints playing clients and attackers.  The IPv6 side is L{IPv6Side}: 2001::/32
routed to the relay's TUN, v6host answering echo requests.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from teredonode.config import ClientSettings, RelaySettings, ServerSettings, parse_config
from teredonode.interfaces import ITeredoRole
from teredonode.roles import relay as relay_module
from teredonode.roles.client import TeredoClient
from teredonode.roles.relay import DROP_REASONS, TeredoRelay, servedBy
from teredonode.roles.server import TeredoServer
from teredonode.testing import Datagram, FakeInternet, FakeIPv6Network, FakeNetworkConfigurator, FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import GLOBAL_PREFIX, TeredoAddress
from teredonode.wire.teredo import OriginIndication, classify
from tests.protocol.test_client import Endpoint, echo, raw

PRIMARY, SECONDARY = "203.0.113.10", "203.0.113.11"
RELAY_IP = "203.0.113.20"
V6HOST = ipaddress.IPv6Address("2001:db8::30").packed
FAKE_CLIENT = ("192.0.2.50", 40000)


def teredo(server: str, ip: str, port: int, flags: int = 0) -> bytes:
    return TeredoAddress(GLOBAL_PREFIX, server, flags, port, ip).to_bytes()


def fakeTun(role: Any) -> FakeTunDevice:
    """
    The fake TUN a role of this test bed was given (roles hold it as an L{ITunDevice}).
    """
    tun = role._tun
    assert isinstance(tun, FakeTunDevice), tun
    return tun


class IPv6Side(FakeIPv6Network):
    """
    The native IPv6 network between our server's TUN, the relay's TUN and v6host:
    2001::/32 is routed to the relay; v6host answers echo requests when C{answer} is set.
    """

    def __init__(self, relayTun: FakeTunDevice, *others: FakeTunDevice) -> None:
        super().__init__(relayTun, *others)
        self.relayTun = relayTun
        self.received: list[bytes] = []
        self.answer = True

    def route(self, packet: bytes) -> None:
        dst = packet[24:40]
        if dst[:4] == GLOBAL_PREFIX:
            self.relayTun.inject(packet)
        elif dst == V6HOST:
            self.received.append(packet)
            reply = self.echoReply(packet) if self.answer else None
            if reply is not None:
                self.relayTun.inject(reply)


class RelayTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.serverTun = FakeTunDevice("teredo-srv")
        host = self.net.host(PRIMARY, SECONDARY)
        self.server = TeredoServer(ServerSettings(primary=PRIMARY, secondary=SECONDARY), host, tun=self.serverTun)
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.relay = self.makeRelay()
        self.tun = fakeTun(self.relay)
        self.side = IPv6Side(self.tun, self.serverTun)
        self._nats = 0

    def makeRelayOn(self, ip: str, **overrides: Any) -> TeredoRelay:
        relay = TeredoRelay(
            RelaySettings(**overrides), self.net.host(ip), FakeTunDevice("teredo-relay"),
            FakeNetworkConfigurator(), randbytes=random.Random(1).randbytes,
        )
        relay.privilegedStartService()
        relay.startService()
        self.addCleanup(relay.stopService)
        return relay

    def makeRelay(self, **overrides: Any) -> TeredoRelay:
        settings = RelaySettings(**overrides)
        rng = random.Random(7)
        relay = TeredoRelay(
            settings, self.net.host(RELAY_IP), FakeTunDevice("teredo-relay"),
            FakeNetworkConfigurator(), randbytes=rng.randbytes,
        )
        relay.privilegedStartService()
        relay.startService()
        self.addCleanup(relay.stopService)
        return relay

    def makeClient(self, kind: str = "port-restricted", seed: int = 1) -> TeredoClient:
        self._nats += 1
        nat = self.net.nat(kind, public=f"198.51.100.{self._nats}", rng=random.Random(seed))
        host = nat.host("10.0.0.2")
        rng = random.Random(seed)
        client = TeredoClient(
            ClientSettings(server=PRIMARY, secondary=SECONDARY), host, FakeTunDevice("teredo"),
            FakeNetworkConfigurator(), rng=rng, randbytes=rng.randbytes,
        )
        client.privilegedStartService()
        client.startService()
        self.addCleanup(client.stopService)
        self.settle()
        self.assertEqual(client.state, "qualified")
        return client

    def settle(self) -> None:
        """
        Deliver everything due now, on both the IPv4 and the IPv6 side.
        """
        while True:
            self.net.flush()
            if not self.side.pump():
                return

    def advance(self, seconds: float, step: float = 0.5) -> None:
        elapsed = 0.0
        while elapsed < seconds:
            self.net.run(step)
            self.settle()
            elapsed += step

    def fakeClient(self, ip: str = FAKE_CLIENT[0], port: int = FAKE_CLIENT[1]) -> tuple[Endpoint, Any, bytes]:
        """
        A bare public UDP endpoint with the Teredo address that embeds it.
        """
        endpoint = Endpoint()
        host = self.net.host(ip)
        udp = host.listenUDP(port, endpoint, interface=ip)
        return endpoint, udp, teredo(PRIMARY, ip, port)

    def trustedFakeClient(self) -> tuple[Endpoint, Any, bytes]:
        """
        A fake client the relay trusts: the relay bubbles it, it answers with a bubble.
        """
        endpoint, udp, address = self.fakeClient()
        first = echo(V6HOST, address, b"first")
        self.tun.inject(first)
        self.settle()
        assert self.relay.tunnel.bubbleSource is not None
        udp.write(ipv6.bubble(address, self.relay.tunnel.bubbleSource), (RELAY_IP, 3544))
        self.settle()
        self.assertIn((first, (RELAY_IP, 3544)), endpoint.received)
        del endpoint.received[:]
        return endpoint, udp, address

    def drops(self) -> dict[str, int]:
        return {k: v for k, v in self.relay.status()["drops"].items() if v}

    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self.relay.status()["counters"]
        return counters


class ServiceTests(RelayTestCase):
    def test_startConfiguresRelay(self) -> None:
        """
        RL-01, RL-03: the TUN is up with MTU 1280 and the prefix's route, forwarding is on,
        UDP 3544 is bound; stopping removes the route and cancels every timer.
        """
        conf = self.relay._netconfig
        assert isinstance(conf, FakeNetworkConfigurator)
        self.assertEqual(conf.links["teredo-relay"].mtu, 1280)
        self.assertIn(("teredo-relay", "2001::/32", 1024), conf.routes)
        self.assertTrue(conf.forwarding)
        self.assertEqual(conf.addresses["teredo-relay"], set())
        status = self.relay.status()
        self.assertEqual(status["state"], "relaying")
        self.assertEqual(status["local"], "0.0.0.0:3544")
        self.assertEqual(list(status["drops"]), list(DROP_REASONS))
        self.assertTrue(status["bubble-source"].startswith("fe80::"))
        self.relay.stopService()
        self.server.stopService()
        self.assertEqual(conf.routes, set())
        self.assertTrue(self.tun.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_makeRoleAndConfig(self) -> None:
        """
        The production wiring, and the bounds' defaults (1 M peers, LRU; 1280 bytes queued).
        """
        config = parse_config("[relay]\nenabled = true\n", "x.toml", None, None)
        settings = config.roles["relay"]
        assert isinstance(settings, RelaySettings)
        self.assertEqual((settings.max_peers, settings.peer_queue_bytes, settings.icmp_rate, settings.serve),
                         (1_048_576, 1280, 10.0, ("2000::/3",)))
        role = relay_module.makeRole(settings, Clock())
        self.assertTrue(verifyObject(ITeredoRole, role))
        self.assertEqual(role.roleName, "relay")


class EndToEndTests(RelayTestCase):
    def test_ourClientReachesV6Host(self) -> None:
        """
        Our client's echo test goes through our server to v6host; the reply is routed to the
        relay, which bubbles the client (through its server and directly), gets its answer,
        releases the reply; the client adopts the relay and its queued packet flows through
        it; v6host's answer comes back through the relay.  RL-TX-03/05/06, RL-RX-03/04/05.
        """
        client = self.makeClient()
        caddr = raw(client.address)
        ping = echo(caddr, V6HOST, b"hello")
        fakeTun(client).inject(ping)
        self.advance(1)
        self.assertIn(ping, self.side.received)
        replies = [p for p in fakeTun(client).written if p[40] == ipv6.ICMP_ECHO_REPLY]
        self.assertEqual([r[48:] for r in replies], [b"hello"])
        peer = client.tunnel.peers.get(V6HOST)
        assert peer is not None
        self.assertEqual(peer.mapping, (RELAY_IP, 3544))
        counters = self.counters()
        self.assertGreaterEqual(counters["bubbles-indirect"], 1)
        self.assertGreaterEqual(counters["released"], 1)
        self.assertGreaterEqual(counters["delivered"], 1)
        self.assertEqual(self.drops(), {})
        # From now on, straight through the relay, nothing through the server.
        forwarded = self.server.status()["counters"]["forwarded"]
        fakeTun(client).inject(echo(caddr, V6HOST, b"again"))
        self.settle()
        self.assertEqual(self.side.received[-1][48:], b"again")
        self.assertEqual(self.server.status()["counters"]["forwarded"], forwarded)

    def test_dataPathLogsNothing(self) -> None:
        """
        The hot path never logs: thousands of forwarded, dropped and bubbled packets
        produce no log event from the relay or the tunnel core.
        """
        from twisted.logger import ILogObserver, globalLogPublisher

        events: list[dict[str, Any]] = []

        def observer(event: dict[str, Any]) -> None:
            if str(event.get("log_namespace", "")).startswith("teredonode.roles"):
                events.append(event)

        globalLogPublisher.addObserver(cast(ILogObserver, observer))
        self.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))
        endpoint, udp, address = self.trustedFakeClient()
        for i in range(1000):
            self.tun.inject(echo(V6HOST, address, b"%d" % i))
            udp.write(echo(address, V6HOST, b"%d" % i), (RELAY_IP, 3544))
            udp.write(b"junk", (RELAY_IP, 3544))
            self.tun.inject(echo(V6HOST, teredo(PRIMARY, "10.0.0.1", i + 1)))
        self.settle()
        self.assertEqual(len(self.side.received), 1000)
        self.assertEqual(events, [])

    def test_v6HostReachesOurClient(self) -> None:
        """
        v6host first: the relay queues its packet and bubbles; the client answers, gets
        the packet from a native source, verifies that relay by its own echo test (through
        our server, answered through the relay) and delivers it.
        """
        client = self.makeClient("address-restricted", seed=2)
        caddr = raw(client.address)
        hello = echo(V6HOST, caddr, b"from v6host")
        self.tun.inject(hello)
        self.advance(1)
        self.assertIn(hello, fakeTun(client).written)
        known = self.relay.tunnel.peers.get(caddr)
        assert known is not None
        self.assertEqual(known.mapping, client.mapping)

    def test_echoRepliesOfDirectTestsFlowBack(self) -> None:
        """
        A client's direct connectivity test: the echo reply reaches it from the relay's
        endpoint, carrying its nonce, which is how it discovers the relay.
        """
        endpoint, udp, address = self.fakeClient()
        request = echo(address, V6HOST, b"nonce-64", ident=9)
        # As our server would forward it to the IPv6 side.
        self.side.route(request)
        self.settle()
        # The relay bubbled the client first (indirectly through its server: an origin).
        [(bubbled, src)] = [(d, s) for d, s in endpoint.received if s[0] == PRIMARY]
        packet = classify(bubbled)
        self.assertTrue(packet.is_bubble)
        self.assertEqual(packet.origin, OriginIndication(RELAY_IP, 3544))
        udp.write(ipv6.bubble(address, packet.header.src), (RELAY_IP, 3544))
        self.settle()
        [reply] = [d for d, s in endpoint.received if s == (RELAY_IP, 3544) and d[6] == ipv6.NH_ICMPV6]
        self.assertEqual(reply[8:24], V6HOST)
        self.assertEqual(reply[48:], b"nonce-64")


class TransmissionTests(RelayTestCase):
    def test_onlyTeredoDestinations(self) -> None:
        """
        RL-TX-01: a native destination routed to the relay is dropped, with an ICMPv6
        address unreachable (from the unreachable address) back to the sender.
        """
        other = ipaddress.IPv6Address("2001:db8:1::9").packed
        self.tun.inject(echo(V6HOST, other))
        self.assertEqual(self.drops(), {"native-destination": 1})
        [error] = self.tun.written
        self.assertEqual((error[8:24], error[24:40], error[40], error[41]), (other, V6HOST, 1, 3))

    def test_globalUnicastCheck(self) -> None:
        """
        RL-TX-02: a Teredo destination embedding a non-global mapping or server is
        silently discarded; nothing leaves.
        """
        sent = len(self.net.capture)
        self.tun.inject(echo(V6HOST, teredo(PRIMARY, "10.1.2.3", 4000)))
        self.tun.inject(echo(V6HOST, teredo("192.168.1.1", "192.0.2.50", 4000)))
        self.tun.inject(echo(V6HOST, teredo(PRIMARY, "127.0.0.1", 4000)))
        self.settle()
        self.assertEqual(self.drops(), {"non-global-destination": 3})
        self.assertEqual(len(self.net.capture), sent)
        self.assertEqual(len(self.relay.tunnel.peers), 0)

    def test_bubbleRetriesThenEntryRemoved(self) -> None:
        """
        RL-TX-05/06/07, RL-04: toward a silent client, a direct bubble to its mapping and an
        indirect one to its server:3544 at once and every 2 s, 4 pairs in all; then the
        entry and its queue are removed and the sender hears address unreachable; no more
        bubbles to it until 300 s after the first.
        """
        self.relay.tunnel.policy = replace(self.relay.tunnel.policy, direct_bubbles=True)
        silent = teredo(PRIMARY, "192.0.2.99", 4000)
        times: dict[tuple[str, int], list[float]] = {}

        def record(d: Datagram) -> bool:
            if d.src == (RELAY_IP, 3544) and d.dst in (("192.0.2.99", 4000), (PRIMARY, 3544)):
                times.setdefault(d.dst, []).append(self.clock.seconds())
                return True
            return False

        self.net.addDropFilter(record)
        self.tun.inject(echo(V6HOST, silent, b"1"))
        self.tun.inject(echo(V6HOST, silent, b"2"))
        peer = self.relay.tunnel.peers.get(silent)
        assert peer is not None
        self.assertFalse(peer.trusted)
        self.assertEqual(len(peer.queue), 2)
        self.advance(7.5, step=0.25)
        self.assertEqual(times[("192.0.2.99", 4000)], [0.0, 2.0, 4.0, 6.0])
        self.assertEqual(times[(PRIMARY, 3544)], [0.0, 2.0, 4.0, 6.0])
        self.assertIn(silent, self.relay.tunnel.peers)
        self.advance(1)
        self.assertNotIn(silent, self.relay.tunnel.peers)
        self.assertEqual(self.drops(), {"peer-unreachable": 2, "unreachable-peer": 1})
        errors = [p for p in self.tun.written if p[40] == 1]
        self.assertEqual(len(errors), 2)
        self.assertEqual(errors[0][8:24], silent)
        # RL-04 (5.2.6 by analogy): the entry is gone but its bubble limit is not: for 300 s
        # after the first bubble, packets to that client are refused at once.
        self.tun.inject(echo(V6HOST, silent, b"3"))
        self.advance(10, step=1)
        self.assertEqual(len(times[(PRIMARY, 3544)]), 4)
        self.assertNotIn(silent, self.relay.tunnel.peers)
        self.assertEqual(self.drops()["probe-limited"], 1)
        self.clock.advance(300)
        self.tun.inject(echo(V6HOST, silent, b"4"))
        self.settle()
        self.assertEqual(len(times[(PRIMARY, 3544)]), 5)

    def test_bubbleFormat(self) -> None:
        """
        W-BUB-6: the relay's bubble comes from a local (link-local) IPv6 address to the
        client's Teredo address; our server forwards the indirect one with an origin
        indication carrying the relay's endpoint.
        """
        self.relay.tunnel.policy = replace(self.relay.tunnel.policy, direct_bubbles=True)
        endpoint, udp, address = self.fakeClient()
        self.tun.inject(echo(V6HOST, address))
        self.settle()
        direct = [classify(d) for d, s in endpoint.received if s == (RELAY_IP, 3544)]
        indirect = [classify(d) for d, s in endpoint.received if s == (PRIMARY, 3544)]
        self.assertEqual(len(direct), 1)
        self.assertEqual(len(indirect), 1)
        for packet in direct + indirect:
            self.assertTrue(packet.is_bubble)
            # The indirect one carries its RFC 6081 nonce in the last 4 bytes (test_sns_relay).
            assert self.relay.tunnel.bubbleSource is not None
            self.assertEqual(packet.header.src[:12], self.relay.tunnel.bubbleSource[:12])
            self.assertEqual(packet.header.dst, address)
            self.assertTrue(ipv6.is_link_local(packet.header.src))
        self.assertEqual(direct[0].header.src, self.relay.tunnel.bubbleSource)
        self.assertEqual(indirect[0].origin, OriginIndication(RELAY_IP, 3544))

    def test_coneBitIgnored(self) -> None:
        """
        RL-TX-04/08, RFC 5991: a destination with the cone bit set is bubbled like any
        other; no data goes out before the client answers.
        """
        endpoint, udp, _ = self.fakeClient()
        cone = teredo(PRIMARY, FAKE_CLIENT[0], FAKE_CLIENT[1], flags=0x8000)
        data = echo(V6HOST, cone, b"data")
        self.tun.inject(data)
        self.settle()
        self.assertTrue(all(classify(d).is_bubble for d, _ in endpoint.received))
        known = self.relay.tunnel.peers.get(cone)
        assert known is not None
        self.assertFalse(known.trusted)

    def test_trustedPeerSentAtOnceUntilInvalid(self) -> None:
        """
        RL-TX-03: a valid trusted entry is sent to directly; 30 s without hearing from the
        client makes it invalid and the relay bubbles again before sending.
        """
        endpoint, udp, address = self.trustedFakeClient()
        data = echo(V6HOST, address, b"direct")
        self.tun.inject(data)
        self.settle()
        self.assertEqual(endpoint.received, [(data, (RELAY_IP, 3544))])
        self.advance(31, step=1)
        del endpoint.received[:]
        self.tun.inject(data)
        self.settle()
        self.assertTrue(all(classify(d).is_bubble for d, _ in endpoint.received))
        assert self.relay.tunnel.bubbleSource is not None
        udp.write(ipv6.bubble(address, self.relay.tunnel.bubbleSource), (RELAY_IP, 3544))
        self.settle()
        self.assertEqual(endpoint.received[-1], (data, (RELAY_IP, 3544)))

    def test_queueBounds(self) -> None:
        """
        RL-TX-06: queued packets are bounded per peer, in packets and in bytes.
        """
        relay = self.makeRelayOn("203.0.113.21", peer_queue=3, peer_queue_bytes=100000)
        silent = teredo(PRIMARY, "192.0.2.99", 4000)
        for i in range(5):
            fakeTun(relay).inject(echo(V6HOST, silent, b"%d" % i))
        self.assertEqual(relay.drops["queue-full"], 2)
        small = self.makeRelayOn("203.0.113.22", peer_queue=100, peer_queue_bytes=200)
        for i in range(5):
            fakeTun(small).inject(echo(V6HOST, silent, b"x" * 40))
        peer = small.tunnel.peers.get(silent)
        assert peer is not None
        self.assertLessEqual(peer.queued_bytes, 200)
        self.assertEqual(small.drops["queue-full"], 5 - len(peer.queue))

    def test_peerBoundLRU(self) -> None:
        """
        The peer list is bounded: beyond max-peers the least recently used entry goes,
        with its queue.
        """
        relay = self.makeRelayOn("203.0.113.21", max_peers=2)
        tun = fakeTun(relay)
        addresses = [teredo(PRIMARY, "192.0.2.99", 4000 + i) for i in range(3)]
        for address in addresses:
            tun.inject(echo(V6HOST, address))
        self.assertEqual(len(relay.tunnel.peers), 2)
        self.assertNotIn(addresses[0], relay.tunnel.peers)
        self.assertEqual(relay.status()["peers"]["evicted-peers"], 1)
        self.assertEqual(relay.drops["evicted"], 1)

    def test_icmpErrorRate(self) -> None:
        """
        ICMPv6 errors toward the IPv6 side are rate limited (icmp-rate per second).
        """
        relay = self.makeRelayOn("203.0.113.21", icmp_rate=2.0)
        tun = fakeTun(relay)
        for i in range(10):
            tun.inject(echo(V6HOST, ipaddress.IPv6Address(f"2001:db8:1::{i + 1}").packed))
        self.assertEqual(len(tun.written), 2)
        self.assertEqual(relay.counters["icmp-errors-limited"], 8)
        self.clock.advance(1)
        tun.inject(echo(V6HOST, ipaddress.IPv6Address("2001:db8:1::99").packed))
        self.assertEqual(len(tun.written), 3)

    def test_hostSourcesMustBeServed(self) -> None:
        """
        Packets from the IPv6 side must come from the served native ranges: a Teredo or
        link-local source is dropped (a relay does not carry Teredo to Teredo).
        """
        _, _, address = self.fakeClient()
        self.tun.inject(echo(teredo(PRIMARY, "192.0.2.7", 5), address))
        self.tun.inject(echo(bytes.fromhex("fe80" + "00" * 13 + "01"), address))
        self.tun.inject(b"\x60garbage")
        self.assertEqual(self.drops(), {"host-foreign-source": 2, "host-malformed": 1})
        self.assertEqual(len(self.relay.tunnel.peers), 0)


class ReceptionTests(RelayTestCase):
    def test_invalidPayloadsDropped(self) -> None:
        """
        RL-RX-02: anything but a valid IPv6 packet (optionally after an origin or auth
        header) is silently discarded.
        """
        endpoint, udp, address = self.trustedFakeClient()
        for junk in (b"", b"\x00", b"\x45" + bytes(39), b"\x60" + bytes(10), b"\x00\x02" + bytes(60)):
            udp.write(junk, (RELAY_IP, 3544))
        good = echo(address, V6HOST)
        udp.write(good[:-1], (RELAY_IP, 3544))
        self.settle()
        self.assertEqual(self.drops(), {"malformed": 6})
        self.assertEqual(self.side.received, [])

    def test_spoofedSourcesDropped(self) -> None:
        """
        RL-RX-03 (SEC-01): the IPv6 source must be a Teredo address embedding the very
        endpoint the datagram came from: a trusted client's address sent from elsewhere, a
        native source, a link-local source are all dropped.
        """
        endpoint, udp, address = self.trustedFakeClient()
        attacker, audp, _ = self.fakeClient("192.0.2.66", 5555)
        audp.write(echo(address, V6HOST, b"spoof"), (RELAY_IP, 3544))
        audp.write(echo(ipaddress.IPv6Address("2001:db8::66").packed, V6HOST), (RELAY_IP, 3544))
        audp.write(echo(bytes.fromhex("fe80" + "00" * 13 + "01"), V6HOST), (RELAY_IP, 3544))
        self.settle()
        self.assertEqual(
            self.drops(), {"mapping-mismatch": 1, "native-source": 1, "link-local-source": 1}
        )
        self.assertEqual(self.side.received, [])
        known = self.relay.tunnel.peers.get(address)
        assert known is not None
        self.assertEqual(known.mapping, FAKE_CLIENT)

    def test_unsolicitedCreatesNoState(self) -> None:
        """
        RL-RX-04, RL-RX-07: a well-formed packet from a Teredo client the relay never sent
        to leaves no entry: it is forwarded statelessly (its source embeds its endpoint; see
        tests/protocol/test_relay_restart.py), its bubble dropped.
        """
        self.side.answer = False  # a reply would make the relay create an entry itself
        endpoint, udp, address = self.fakeClient()
        udp.write(echo(address, V6HOST), (RELAY_IP, 3544))
        assert self.relay.tunnel.bubbleSource is not None
        udp.write(ipv6.bubble(address, self.relay.tunnel.bubbleSource), (RELAY_IP, 3544))
        self.settle()
        self.assertEqual(self.drops(), {"unknown-peer": 1})
        self.assertEqual(len(self.relay.tunnel.peers), 0)
        self.assertEqual(len(self.side.received), 1)
        self.assertEqual(endpoint.received, [])

    def test_destinationsOutsideServedRangeDropped(self) -> None:
        """
        RL-RX-05: from a trusted client, only destinations in the served ranges are
        forwarded: not Teredo addresses, not unique-local, not multicast.
        """
        endpoint, udp, address = self.trustedFakeClient()
        for dst in ("2001:0:cb00:710a::1", "fd00::1", "ff02::1", "fe80::1"):
            udp.write(echo(address, ipaddress.IPv6Address(dst).packed), (RELAY_IP, 3544))
        udp.write(echo(address, V6HOST, b"ok"), (RELAY_IP, 3544))
        self.settle()
        self.assertEqual(self.drops(), {"wrong-destination": 4})
        self.assertEqual([p[48:] for p in self.side.received], [b"ok"])

    def test_servedRangeConfigurable(self) -> None:
        """
        RL-RX-07: an operator may narrow the served range (here to 2001:db8::/48).
        """
        relay = TeredoRelay(
            RelaySettings(serve=("2001:db8::/48",)), self.net.host("203.0.113.21"),
            FakeTunDevice("teredo-relay"), FakeNetworkConfigurator(),
        )
        self.assertTrue(relay.serves(V6HOST))
        self.assertFalse(relay.serves(ipaddress.IPv6Address("2001:db8:1::1").packed))

    def test_bubblesUpdateStateNeverForwarded(self) -> None:
        """
        RL-RX-06: a bubble from a trusted client refreshes its entry (last reception) and
        is not written to the TUN.
        """
        endpoint, udp, address = self.trustedFakeClient()
        written = len(self.tun.written)
        self.clock.advance(20)
        assert self.relay.tunnel.bubbleSource is not None
        udp.write(ipv6.bubble(address, self.relay.tunnel.bubbleSource), (RELAY_IP, 3544))
        self.settle()
        self.assertEqual(len(self.tun.written), written)
        known = self.relay.tunnel.peers.get(address)
        assert known is not None
        self.assertEqual(known.last_rx, self.clock.seconds())
        self.assertGreaterEqual(self.counters()["bubbles-received"], 2)

    def test_originIndicationStripped(self) -> None:
        """
        RL-RX-02: a packet carrying an origin indication is accepted like a simple one.
        """
        endpoint, udp, address = self.trustedFakeClient()
        udp.write(OriginIndication("192.0.2.1", 1).to_bytes() + echo(address, V6HOST, b"o"), (RELAY_IP, 3544))
        self.settle()
        self.assertEqual([p[48:] for p in self.side.received], [b"o"])


class ServedByTests(SynchronousTestCase):
    def test_default(self) -> None:
        serves = servedBy(("2000::/3",), GLOBAL_PREFIX)
        yes = ("2001:db8::1", "2a00::1", "3fff::1", "2002:c000:201::1")
        no = ("2001::1", "2001:0:ffff::1", "fd00::1", "fe80::1", "ff02::1", "::1", "4000::1")
        for text in yes:
            self.assertTrue(serves(ipaddress.IPv6Address(text).packed), text)
        for text in no:
            self.assertFalse(serves(ipaddress.IPv6Address(text).packed), text)

    def test_longerPrefixes(self) -> None:
        serves = servedBy(("2001:db8::/32", "2a00::/12"), GLOBAL_PREFIX)
        self.assertTrue(serves(ipaddress.IPv6Address("2001:db8:5::1").packed))
        self.assertTrue(serves(ipaddress.IPv6Address("2a0f::1").packed))
        self.assertFalse(serves(ipaddress.IPv6Address("2a10::1").packed))
        self.assertFalse(serves(ipaddress.IPv6Address("2001:0:1::1").packed))
        everything = servedBy(("::/0",), GLOBAL_PREFIX)
        self.assertFalse(everything(ipaddress.IPv6Address("ff02::1").packed))
        self.assertFalse(everything(ipaddress.IPv6Address("2001::1").packed))
