"""
What the relay and the host-specific relay both do, because both are the shared tunnel core
(L{teredonode.roles.tunnel}) in its unnumbered form: anti-spoofing of the Teredo source
(RL-RX-03, SEC-01), no state from unsolicited traffic (RL-RX-04), bubbles, their retries and
their limits (RL-TX-05..08, RL-04), trust through a bubble (RL-RX-06), queue and peer-list
bounds (RL-TX-06), ICMPv6 errors and their rate, and the status and stop every role shares.

L{UnnumberedTestBed} is what both roles' test beds share (our server, clients, bare UDP
endpoints playing clients), without tests of its own.  L{UnnumberedTunnelBehaviour} is a
plain class, never collected by itself: each role's test module mixes it into a test case
of its own test bed, which supplies the hooks the class lists, so that every behaviour here
runs once per role.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast
from weakref import WeakKeyDictionary

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import ClientSettings, ServerSettings
from teredonode.roles.client import TeredoClient
from teredonode.roles.relay import DROP_REASONS, TeredoRelay
from teredonode.roles.server import TeredoServer
from teredonode.testing import Datagram, FakeInternet, FakeIPv6Network, FakeNetworkConfigurator, FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import GLOBAL_PREFIX, TeredoAddress
from teredonode.wire.teredo import OriginIndication, classify
from tests.protocol.test_client import Endpoint, echo

R = TypeVar("R")

PRIMARY, SECONDARY = "203.0.113.10", "203.0.113.11"
#: The public endpoint of the bare UDP socket that plays a Teredo client.
FAKE_CLIENT = ("192.0.2.50", 40000)
#: A link-local source, which no Teredo client has (RL-RX-03).
LINK_LOCAL = bytes.fromhex("fe80" + "00" * 13 + "01")


def teredo(server: str, ip: str, port: int, flags: int = 0) -> bytes:
    """
    The Teredo address of server C{server} embedding the mapping C{ip}:C{port}.
    """
    return TeredoAddress(GLOBAL_PREFIX, server, flags, port, ip).to_bytes()


#: The fakes each role of these test beds was given, kept by the tests that made it (a role
#: holds them privately, as an L{ITunDevice} and an L{INetworkConfigurator}).
_injected: WeakKeyDictionary[Any, tuple[FakeTunDevice, FakeNetworkConfigurator]] = WeakKeyDictionary()


def withFakes(name: str, make: Callable[[FakeTunDevice, FakeNetworkConfigurator], R]) -> R:
    """
    C{make(tun, netconfig)} with a new fake TUN called C{name} and a new fake configurator,
    remembered for L{fakeTun} and L{fakeNetconfig}.
    """
    tun, conf = FakeTunDevice(name), FakeNetworkConfigurator()
    role = make(tun, conf)
    _injected[role] = (tun, conf)
    return role


def fakeTun(role: Any) -> FakeTunDevice:
    """
    The fake TUN a role of these test beds was given (L{withFakes}).
    """
    return _injected[role][0]


def fakeNetconfig(role: Any) -> FakeNetworkConfigurator:
    """
    The fake network configurator a role of these test beds was given (L{withFakes}).
    """
    return _injected[role][1]


class UnnumberedTestBed(SynchronousTestCase):
    """
    What the relay's and the host-specific relay's test beds share: our server at
    L{PRIMARY}/L{SECONDARY} with its TUN on the native side, the role under test (started
    by the subclass's C{setUp}), clients behind NATs and bare UDP endpoints playing clients.

    A subclass provides C{role}, C{roleEndpoint}, C{hostAddress} (a native address the role
    serves), C{ipv6Network} (the native side, pumped by L{settle}) and C{hostReceived};
    C{tun} is the role's TUN; C{roleSettings}, the settings the role under test is started
    with (its table's defaults otherwise).  No test here: only its subclasses run.
    """

    tun: FakeTunDevice
    roleSettings: dict[str, Any] = {}

    def setUp(self) -> None:
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.serverTun = FakeTunDevice("teredo-srv")
        host = self.net.host(PRIMARY, SECONDARY)
        self.server = TeredoServer(ServerSettings(primary=PRIMARY, secondary=SECONDARY), host, tun=self.serverTun)
        self.server.privilegedStartService()
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self._nats = 0

    @property
    def role(self) -> TeredoRelay:
        raise NotImplementedError()

    @property
    def roleEndpoint(self) -> tuple[str, int]:
        raise NotImplementedError()

    @property
    def hostAddress(self) -> bytes:
        raise NotImplementedError()

    @property
    def ipv6Network(self) -> FakeIPv6Network:
        raise NotImplementedError()

    @property
    def hostReceived(self) -> list[bytes]:
        raise NotImplementedError()

    def makeClient(self, kind: str = "port-restricted", seed: int = 1) -> TeredoClient:
        """
        Our client, qualified, behind a NAT of C{kind} of its own.
        """
        self._nats += 1
        nat = self.net.nat(kind, public=f"198.51.100.{self._nats}", rng=random.Random(seed))
        host = nat.host("10.0.0.2")
        rng = random.Random(seed)
        client = withFakes("teredo", lambda tun, conf: TeredoClient(
            ClientSettings(server=PRIMARY, secondary=SECONDARY), host, tun, conf, rng=rng,
            randbytes=rng.randbytes,
        ))
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
            if not self.ipv6Network.pump():
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
        udp = self.net.host(ip).listenUDP(port, endpoint, interface=ip)
        return endpoint, udp, teredo(PRIMARY, ip, port)

    def bubbleSource(self) -> bytes:
        source = self.role.tunnel.bubbleSource
        assert source is not None
        return source

    def trustedFakeClient(self) -> tuple[Endpoint, Any, bytes]:
        """
        A fake client the role trusts: the host sent to it, so the role bubbled it, and it
        answered with a bubble, which released the host's packet.
        """
        endpoint, udp, address = self.fakeClient()
        first = echo(self.hostAddress, address, b"first")
        self.tun.inject(first)
        self.settle()
        udp.write(ipv6.bubble(address, self.bubbleSource()), self.roleEndpoint)
        self.settle()
        self.assertIn((first, self.roleEndpoint), endpoint.received)
        del endpoint.received[:]
        return endpoint, udp, address

    def drops(self) -> dict[str, int]:
        return {k: v for k, v in self.role.status()["drops"].items() if v}

    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self.role.status()["counters"]
        return counters


if TYPE_CHECKING:
    _Base = UnnumberedTestBed
else:
    _Base = object


class UnnumberedTunnelBehaviour(_Base):
    """
    The behaviours of the unnumbered tunnel, written against hooks each role's test case
    provides (most of them L{UnnumberedTestBed}'s):

      - C{role}: the started role under test; C{makeRole(ip, **settings)}: another one,
        started, on the public IPv4 address C{ip}, with the role's settings overridden;
      - C{roleEndpoint}: the IPv4 endpoint its clients talk to;
      - C{hostAddress}: a native address the role serves, whose packets it carries;
        C{hostReceived}: the packets that reached the native side;
        C{silenceHost()}: the native side stops answering echo requests;
      - C{fakeClient(ip, port)}: a bare UDP endpoint and the Teredo address embedding it;
        C{trustedFakeClient()}: one the role has bubbled and heard a bubble from;
      - C{server}: the test bed's Teredo server (at L{PRIMARY});
      - C{settle()}, C{advance(seconds, step)}, C{drops()}, C{counters()}.

    C{forwardsUnsolicited} says whether the role carries a packet from a client it never
    sent to (the relay statelessly, RL-RX-07) or drops it (the host-specific relay).
    """

    forwardsUnsolicited: bool

    if TYPE_CHECKING:

        def silenceHost(self) -> None: ...

        def makeRole(self, ip: str, **overrides: Any) -> TeredoRelay: ...

    def sendFromHost(self, packet: bytes) -> None:
        """
        The host (or the IPv6 side) routes C{packet} into the role's TUN.
        """
        self.tun.inject(packet)

    def deliverFromPeer(self, udp: Any, data: bytes) -> None:
        """
        A client's socket C{udp} sends C{data} to the role's endpoint.
        """
        udp.write(data, self.roleEndpoint)

    # Status and stop.

    def test_statusAndStop(self) -> None:
        """
        RL-01/HR-02: 2001::/32 is routed to an unnumbered TUN; the status names every drop
        reason; stopping removes the route and cancels every timer.
        """
        conf = fakeNetconfig(self.role)
        tunName = self.tun.name
        self.assertIn((tunName, "2001::/32", 1024), conf.routes)
        self.assertEqual(conf.addresses[tunName], set())
        status = self.role.status()
        self.assertEqual(status["state"], "relaying")
        self.assertEqual(list(status["drops"]), list(DROP_REASONS))
        self.role.stopService()
        self.server.stopService()
        self.assertEqual(conf.routes, set())
        self.assertTrue(self.tun.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    # Transmission: from the native side toward Teredo clients.

    def test_onlyTeredoDestinations(self) -> None:
        """
        RL-TX-01: a native destination routed to the role is dropped, with an ICMPv6
        address unreachable (from the unreachable address) back to the sender.
        """
        other = ipaddress.IPv6Address("2001:db8:1::9").packed
        self.sendFromHost(echo(self.hostAddress, other))
        self.assertEqual(self.drops(), {"native-destination": 1})
        [error] = self.tun.written
        self.assertEqual((error[8:24], error[24:40], error[40], error[41]), (other, self.hostAddress, 1, 3))

    def test_globalUnicastCheck(self) -> None:
        """
        RL-TX-02: a Teredo destination embedding a non-global mapping or server is
        silently discarded; nothing leaves.
        """
        sent = len(self.net.capture)
        self.sendFromHost(echo(self.hostAddress, teredo(PRIMARY, "10.1.2.3", 4000)))
        self.sendFromHost(echo(self.hostAddress, teredo("192.168.1.1", "192.0.2.50", 4000)))
        self.sendFromHost(echo(self.hostAddress, teredo(PRIMARY, "127.0.0.1", 4000)))
        self.settle()
        self.assertEqual(self.drops(), {"non-global-destination": 3})
        self.assertEqual(len(self.net.capture), sent)
        self.assertEqual(len(self.role.tunnel.peers), 0)

    def test_bubbleRetriesThenEntryRemoved(self) -> None:
        """
        RL-TX-05/06/07, RL-04: toward a silent client, a direct bubble to its mapping and an
        indirect one to its server:3544 at once and every 2 s, 4 pairs in all; then the
        entry and its queue are removed and the sender hears address unreachable; no more
        bubbles to it until 300 s after the first.
        """
        self.role.tunnel.policy = replace(self.role.tunnel.policy, direct_bubbles=True)
        silent = teredo(PRIMARY, "192.0.2.99", 4000)
        times: dict[tuple[str, int], list[float]] = {}

        def record(d: Datagram) -> bool:
            if d.src == self.roleEndpoint and d.dst in (("192.0.2.99", 4000), (PRIMARY, 3544)):
                times.setdefault(d.dst, []).append(self.clock.seconds())
                return True
            return False

        self.net.addDropFilter(record)
        self.sendFromHost(echo(self.hostAddress, silent, b"1"))
        self.sendFromHost(echo(self.hostAddress, silent, b"2"))
        peer = self.role.tunnel.peers.get(silent)
        assert peer is not None
        self.assertFalse(peer.trusted)
        self.assertEqual(len(peer.queue), 2)
        self.advance(7.5, step=0.25)
        self.assertEqual(times[("192.0.2.99", 4000)], [0.0, 2.0, 4.0, 6.0])
        self.assertEqual(times[(PRIMARY, 3544)], [0.0, 2.0, 4.0, 6.0])
        self.assertIn(silent, self.role.tunnel.peers)
        self.advance(1)
        self.assertNotIn(silent, self.role.tunnel.peers)
        self.assertEqual(self.drops(), {"peer-unreachable": 2, "unreachable-peer": 1})
        errors = [p for p in self.tun.written if p[40] == 1]
        self.assertEqual(len(errors), 2)
        self.assertEqual(errors[0][8:24], silent)
        # RL-04 (5.2.6 by analogy): the entry is gone but its bubble limit is not: for 300 s
        # after the first bubble, packets to that client are refused at once.
        self.sendFromHost(echo(self.hostAddress, silent, b"3"))
        self.advance(10, step=1)
        self.assertEqual(len(times[(PRIMARY, 3544)]), 4)
        self.assertNotIn(silent, self.role.tunnel.peers)
        self.assertEqual(self.drops()["probe-limited"], 1)
        self.clock.advance(300)
        self.sendFromHost(echo(self.hostAddress, silent, b"4"))
        self.settle()
        self.assertEqual(len(times[(PRIMARY, 3544)]), 5)

    def test_bubbleFormat(self) -> None:
        """
        W-BUB-6: the role's bubble comes from a local (link-local) IPv6 address to the
        client's Teredo address; our server forwards the indirect one with an origin
        indication carrying the role's endpoint.
        """
        self.role.tunnel.policy = replace(self.role.tunnel.policy, direct_bubbles=True)
        endpoint, udp, address = self.fakeClient()
        self.sendFromHost(echo(self.hostAddress, address))
        self.settle()
        direct = [classify(d) for d, s in endpoint.received if s == self.roleEndpoint]
        indirect = [classify(d) for d, s in endpoint.received if s == (PRIMARY, 3544)]
        self.assertEqual(len(direct), 1)
        self.assertEqual(len(indirect), 1)
        for packet in direct + indirect:
            self.assertTrue(packet.is_bubble)
            # The indirect one carries its RFC 6081 nonce in the last 4 bytes (test_sns_relay).
            self.assertEqual(packet.header.src[:12], self.bubbleSource()[:12])
            self.assertEqual(packet.header.dst, address)
            self.assertTrue(ipv6.is_link_local(packet.header.src))
        self.assertEqual(direct[0].header.src, self.bubbleSource())
        self.assertEqual(indirect[0].origin, OriginIndication(*self.roleEndpoint))

    def test_coneBitIgnored(self) -> None:
        """
        RL-TX-04/08, RFC 5991: a destination with the cone bit set is bubbled like any
        other; no data goes out before the client answers.
        """
        endpoint, udp, address = self.fakeClient()
        cone = teredo(PRIMARY, *FAKE_CLIENT, flags=0x8000)
        data = echo(self.hostAddress, cone, b"data")
        self.sendFromHost(data)
        self.settle()
        self.assertTrue(endpoint.received)
        self.assertTrue(all(classify(d).is_bubble for d, _ in endpoint.received))
        known = self.role.tunnel.peers.get(cone)
        assert known is not None
        self.assertFalse(known.trusted)

    def test_trustedPeerSentAtOnceUntilInvalid(self) -> None:
        """
        RL-TX-03: a valid trusted entry is sent to directly; 30 s without hearing from the
        client makes it invalid and the role bubbles again before sending.
        """
        endpoint, udp, address = self.trustedFakeClient()
        data = echo(self.hostAddress, address, b"direct")
        self.sendFromHost(data)
        self.settle()
        self.assertEqual(endpoint.received, [(data, self.roleEndpoint)])
        self.advance(31, step=1)
        del endpoint.received[:]
        self.sendFromHost(data)
        self.settle()
        self.assertTrue(all(classify(d).is_bubble for d, _ in endpoint.received))
        self.deliverFromPeer(udp, ipv6.bubble(address, self.bubbleSource()))
        self.settle()
        self.assertEqual(endpoint.received[-1], (data, self.roleEndpoint))

    def test_queueBounds(self) -> None:
        """
        RL-TX-06: queued packets are bounded per peer, in packets and in bytes.
        """
        role = self.makeRole("203.0.113.21", peer_queue=3, peer_queue_bytes=100000)
        silent = teredo(PRIMARY, "192.0.2.99", 4000)
        for i in range(5):
            fakeTun(role).inject(echo(self.hostAddress, silent, b"%d" % i))
        self.assertEqual(role.drops["queue-full"], 2)
        small = self.makeRole("203.0.113.22", peer_queue=100, peer_queue_bytes=200)
        for i in range(5):
            fakeTun(small).inject(echo(self.hostAddress, silent, b"x" * 40))
        peer = small.tunnel.peers.get(silent)
        assert peer is not None
        self.assertLessEqual(peer.queued_bytes, 200)
        self.assertEqual(small.drops["queue-full"], 5 - len(peer.queue))

    def test_peerBoundLRU(self) -> None:
        """
        The peer list is bounded: beyond max-peers the least recently used entry goes,
        with its queue.
        """
        role = self.makeRole("203.0.113.21", max_peers=2)
        tun = fakeTun(role)
        addresses = [teredo(PRIMARY, "192.0.2.99", 4000 + i) for i in range(3)]
        for address in addresses:
            tun.inject(echo(self.hostAddress, address))
        self.assertEqual(len(role.tunnel.peers), 2)
        self.assertNotIn(addresses[0], role.tunnel.peers)
        self.assertEqual(role.status()["peers"]["evicted-peers"], 1)
        self.assertEqual(role.drops["evicted"], 1)

    def test_icmpErrorRate(self) -> None:
        """
        ICMPv6 errors toward the native side are rate limited (icmp-rate per second).
        """
        role = self.makeRole("203.0.113.21", icmp_rate=2.0)
        tun = fakeTun(role)
        for i in range(10):
            tun.inject(echo(self.hostAddress, ipaddress.IPv6Address(f"2001:db8:1::{i + 1}").packed))
        self.assertEqual(len(tun.written), 2)
        self.assertEqual(role.counters["icmp-errors-limited"], 8)
        self.clock.advance(1)
        tun.inject(echo(self.hostAddress, ipaddress.IPv6Address("2001:db8:1::99").packed))
        self.assertEqual(len(tun.written), 3)

    def test_hostSourcesMustBeServed(self) -> None:
        """
        RL-TX, HR-04: packets from the native side must come from what the role serves: a
        Teredo or link-local source is dropped (a relay does not carry Teredo to Teredo),
        and so is a native source outside the served addresses, if the role has one.
        """
        _, _, address = self.fakeClient()
        self.sendFromHost(echo(teredo(PRIMARY, "192.0.2.7", 5), address))
        self.sendFromHost(echo(LINK_LOCAL, address))
        self.sendFromHost(b"\x60garbage")
        expected = {"host-foreign-source": 2, "host-malformed": 1}
        for source in self.unservedNative():
            self.sendFromHost(echo(source, address, b"forwarded"))
            expected["host-foreign-source"] += 1
        self.assertEqual(self.drops(), expected)
        self.assertEqual(len(self.role.tunnel.peers), 0)

    def unservedNative(self) -> list[bytes]:
        """
        Global native addresses the role does not serve (none for a relay serving 2000::/3).
        """
        return []

    # Reception: from Teredo clients toward the native side.

    def test_invalidPayloadsDropped(self) -> None:
        """
        RL-RX-02: anything but a valid IPv6 packet (optionally after an origin or auth
        header) is silently discarded.
        """
        endpoint, udp, address = self.trustedFakeClient()
        for junk in (b"", b"\x00", b"\x45" + bytes(39), b"\x60" + bytes(10), b"\x00\x02" + bytes(60)):
            self.deliverFromPeer(udp, junk)
        good = echo(address, self.hostAddress)
        self.deliverFromPeer(udp, good[:-1])
        self.settle()
        self.assertEqual(self.drops(), {"malformed": 6})
        self.assertEqual(self.hostReceived, [])

    def test_spoofedSourcesDropped(self) -> None:
        """
        RL-RX-03 (SEC-01), HR-05: the IPv6 source must be a Teredo address embedding the
        very endpoint the datagram came from: a trusted client's address sent from
        elsewhere, a native source, a link-local source are all dropped, and the trusted
        entry keeps its mapping.
        """
        endpoint, udp, address = self.trustedFakeClient()
        attacker, audp, _ = self.fakeClient("192.0.2.66", 5555)
        self.deliverFromPeer(audp, echo(address, self.hostAddress, b"spoof"))
        self.deliverFromPeer(audp, echo(ipaddress.IPv6Address("2001:db8::66").packed, self.hostAddress))
        self.deliverFromPeer(audp, echo(LINK_LOCAL, self.hostAddress))
        self.settle()
        self.assertEqual(
            self.drops(), {"mapping-mismatch": 1, "native-source": 1, "link-local-source": 1}
        )
        self.assertEqual(self.hostReceived, [])
        self.assertEqual(len(self.role.tunnel.peers), 1)
        known = self.role.tunnel.peers.get(address)
        assert known is not None
        self.assertEqual(known.mapping, FAKE_CLIENT)
        self.assertEqual(attacker.received, [])

    def test_unsolicitedCreatesNoState(self) -> None:
        """
        RL-RX-04, RL-RX-07, HR-05: a well-formed packet from a Teredo client the role never
        sent to leaves no entry and gets nothing back; its bubble is dropped.  The relay
        forwards the packet statelessly (its source embeds its endpoint; see
        tests/protocol/test_relay_restart.py); the host-specific relay drops it.
        """
        self.silenceHost()  # a reply would make the role create an entry itself
        endpoint, udp, address = self.fakeClient("192.0.2.66", 5555)
        self.deliverFromPeer(udp, echo(address, self.hostAddress, b"unsolicited"))
        self.deliverFromPeer(udp, ipv6.bubble(address, self.bubbleSource()))
        self.settle()
        if self.forwardsUnsolicited:
            self.assertEqual(self.drops(), {"unknown-peer": 1})
            self.assertEqual([p[48:] for p in self.hostReceived], [b"unsolicited"])
        else:
            self.assertEqual(self.drops(), {"unknown-peer": 2})
            self.assertEqual(self.hostReceived, [])
        self.assertEqual(len(self.role.tunnel.peers), 0)
        self.assertEqual(endpoint.received, [])

    def test_destinationsOutsideServedRangeDropped(self) -> None:
        """
        RL-RX-05, HR-05: from a trusted client, only destinations the role serves are
        forwarded: not Teredo addresses, not unique-local, not multicast, not link-local
        (nor, for the host-specific relay, another host's native address).
        """
        endpoint, udp, address = self.trustedFakeClient()
        unserved = [ipaddress.IPv6Address(d).packed for d in ("2001:0:cb00:710a::1", "fd00::1", "ff02::1", "fe80::1")]
        unserved += self.unservedNative()
        for dst in unserved:
            self.deliverFromPeer(udp, echo(address, dst, b"not ours"))
        self.deliverFromPeer(udp, echo(address, self.hostAddress, b"ok"))
        self.settle()
        self.assertEqual(self.drops(), {"wrong-destination": len(unserved)})
        self.assertEqual([p[48:] for p in self.hostReceived], [b"ok"])

    def test_bubblesUpdateStateNeverForwarded(self) -> None:
        """
        RL-RX-06: a bubble from a trusted client refreshes its entry (last reception) and
        is not written to the TUN.
        """
        endpoint, udp, address = self.trustedFakeClient()
        written = len(self.tun.written)
        self.clock.advance(20)
        self.deliverFromPeer(udp, ipv6.bubble(address, self.bubbleSource()))
        self.settle()
        self.assertEqual(len(self.tun.written), written)
        known = self.role.tunnel.peers.get(address)
        assert known is not None
        self.assertEqual(known.last_rx, self.clock.seconds())
        self.assertGreaterEqual(self.counters()["bubbles-received"], 2)

    def test_originIndicationStripped(self) -> None:
        """
        RL-RX-02: a packet carrying an origin indication is accepted like a simple one.
        """
        endpoint, udp, address = self.trustedFakeClient()
        self.deliverFromPeer(udp, OriginIndication("192.0.2.1", 1).to_bytes() + echo(address, self.hostAddress, b"o"))
        self.settle()
        self.assertEqual([p[48:] for p in self.hostReceived], [b"o"])

    def test_dataPathLogsNothing(self) -> None:
        """
        The hot path never logs: thousands of forwarded, dropped and bubbled packets
        produce no log event from the role or the tunnel core.
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
            self.sendFromHost(echo(self.hostAddress, address, b"%d" % i))
            self.deliverFromPeer(udp, echo(address, self.hostAddress, b"%d" % i))
            self.deliverFromPeer(udp, b"junk")
            self.sendFromHost(echo(self.hostAddress, teredo(PRIMARY, "10.0.0.1", i + 1)))
        self.settle()
        self.assertEqual(len(self.hostReceived), 1000)
        self.assertEqual(events, [])
