"""
Tests for L{teredonode.testing}: the fakes are only useful if they behave like the real
network, so each NAT kind's mapping and filtering is pinned down here.
"""

from __future__ import annotations

import errno
import random

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IListeningPort,
    IMulticastTransport,
    IReactorMulticast,
    IReactorTime,
    IReactorUDP,
    IUDPTransport,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from teredonode.errors import NetConfigError
from teredonode.interfaces import IDatagramSender, INetworkConfigurator, ITunDevice
from teredonode.testing import (
    NAT_KINDS,
    Datagram,
    FakeDatagramSender,
    FakeInternet,
    FakeLink,
    FakeMulticastPort,
    FakeNetworkConfigurator,
    FakeTunDevice,
)

SERVER = "203.0.113.5"
SERVER2 = "203.0.113.6"
OTHER = "203.0.113.99"
NAT_IP = "198.51.100.1"


class Recorder(DatagramProtocol):
    """
    Records datagrams; optionally answers each one (to test re-entrant sends).
    """

    transport: IUDPTransport  # set by listenUDP before any use

    def __init__(self, echo: bool = False) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.started = 0
        self.stopped = 0
        self.echo = echo

    def startProtocol(self) -> None:
        self.started += 1

    def stopProtocol(self) -> None:
        self.stopped += 1

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))
        if self.echo:
            self.transport.write(data, addr)


class World:
    """
    A server with a listening socket and a client behind a NAT of the given kind.
    """

    def __init__(self, kind: str, **natArgs) -> None:
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.server = self.net.host(SERVER)
        self.serverProto = Recorder()
        self.server.listenUDP(3544, self.serverProto)
        self.other = self.net.host(OTHER)
        self.otherProto = Recorder()
        self.other.listenUDP(3544, self.otherProto)
        self.otherProto2 = Recorder()
        self.other.listenUDP(4000, self.otherProto2)
        self.nat = self.net.nat(kind, public=NAT_IP, **natArgs)
        self.client = self.nat.host("10.0.0.2")
        self.clientProto = Recorder()
        self.clientPort = self.client.listenUDP(5000, self.clientProto)

    def clientSends(self, dst, data=b"out"):
        self.clientProto.transport.write(data, dst)
        self.net.flush()
        return self.net.capture[-1].src

    def reachable(self, proto, dst, data=b"in") -> bool:
        before = len(self.clientProto.received)
        proto.transport.write(data, dst)
        self.net.flush()
        return len(self.clientProto.received) > before


class VerifyFakesTests(SynchronousTestCase):
    """
    Each fake provides, method for method, the interface its production twin provides.
    """

    def test_host_and_port(self):
        net = FakeInternet(Clock())
        host = net.host(SERVER)
        self.assertTrue(verifyObject(IReactorUDP, host))
        self.assertTrue(verifyObject(IReactorTime, host))
        port = host.listenUDP(0, Recorder())
        self.assertTrue(verifyObject(IUDPTransport, port))
        self.assertTrue(verifyObject(IListeningPort, port))

    def test_multicast(self):
        net = FakeInternet(Clock())
        host = net.host(SERVER)
        self.assertTrue(verifyObject(IReactorMulticast, host))
        port = host.listenMulticast(3544, Recorder(), listenMultiple=True)
        self.assertTrue(verifyObject(IMulticastTransport, port))
        self.assertTrue(verifyObject(IUDPTransport, port))

    def test_tun(self):
        self.assertTrue(verifyObject(ITunDevice, FakeTunDevice("teredo")))

    def test_configurator(self):
        self.assertTrue(verifyObject(INetworkConfigurator, FakeNetworkConfigurator()))

    def test_sender(self):
        self.assertTrue(verifyObject(IDatagramSender, FakeDatagramSender()))


class PublicHostTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.a = self.net.host("192.0.2.1")
        self.b = self.net.host(SERVER, SERVER2)

    def test_listenConnectsProtocol(self):
        """
        listenUDP calls makeConnection, so the protocol has its transport and started.
        """
        proto = Recorder()
        port = self.a.listenUDP(0, proto, interface="192.0.2.1")
        self.assertIs(proto.transport, port)
        self.assertEqual(proto.started, 1)
        self.assertEqual(port.getHost(), IPv4Address("UDP", "192.0.2.1", 32768))
        self.assertEqual(self.a.listenUDP(0, Recorder()).getHost().port, 32769)
        self.assertFalse(hasattr(port, "socket"))

    def test_deliveryIsScheduledNotSynchronous(self):
        """
        A write delivers nothing until the clock runs; then the receiver sees the
        sender's address and the capture records it.
        """
        pa, pb = Recorder(), Recorder()
        self.a.listenUDP(1111, pa)
        self.b.listenUDP(3544, pb)
        pa.transport.write(b"hello", (SERVER, 3544))
        self.assertEqual(pb.received, [])
        self.net.flush()
        self.assertEqual(pb.received, [(b"hello", ("192.0.2.1", 1111))])
        self.assertEqual(self.net.capture, [Datagram(("192.0.2.1", 1111), (SERVER, 3544), b"hello")])

    def test_twoAddressesOnOneHost(self):
        """
        A host with two addresses can bind one port per address; each socket receives only
        what is sent to its address and sends from it (the Teredo server's layout).
        """
        primary, secondary, client = Recorder(echo=True), Recorder(echo=True), Recorder()
        self.b.listenUDP(3544, primary, interface=SERVER)
        self.b.listenUDP(3544, secondary, interface=SERVER2)
        self.a.listenUDP(1111, client)
        client.transport.write(b"1", (SERVER, 3544))
        client.transport.write(b"2", (SERVER2, 3544))
        self.net.flush()
        self.assertEqual([d for d, _ in primary.received], [b"1"])
        self.assertEqual([d for d, _ in secondary.received], [b"2"])
        self.assertEqual(client.received, [(b"1", (SERVER, 3544)), (b"2", (SERVER2, 3544))])

    def test_wildcardSendsFromFirstAddress(self):
        proto = Recorder()
        self.b.listenUDP(7, proto)
        proto.transport.write(b"x", ("192.0.2.1", 9))
        self.assertEqual(self.net.capture[0].src, (SERVER, 7))

    def test_bindErrors(self):
        self.b.listenUDP(3544, Recorder(), interface=SERVER)
        self.assertRaises(error.CannotListenError, self.b.listenUDP, 3544, Recorder())
        self.assertRaises(
            error.CannotListenError, self.b.listenUDP, 3544, Recorder(), interface=SERVER
        )
        self.assertRaises(
            error.CannotListenError, self.b.listenUDP, 1, Recorder(), interface="192.0.2.1"
        )
        self.b.listenUDP(3544, Recorder(), interface=SERVER2)

    def test_stopListening(self):
        """
        stopListening stops the protocol, frees the port and later datagrams are counted
        as port-unreachable.
        """
        pa, pb = Recorder(), Recorder()
        self.a.listenUDP(1111, pa)
        port = self.b.listenUDP(3544, pb)
        d = port.stopListening()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(pb.stopped, 1)
        pa.transport.write(b"x", (SERVER, 3544))
        self.net.flush()
        self.assertEqual(pb.received, [])
        self.assertEqual(self.net.undeliverable["port-unreachable"], 1)
        self.b.listenUDP(3544, Recorder())
        self.assertRaises(RuntimeError, port.write, b"x", ("192.0.2.1", 1111))

    def test_noRoute(self):
        proto = Recorder()
        self.a.listenUDP(1, proto)
        proto.transport.write(b"x", ("192.0.2.200", 1))
        self.net.flush()
        self.assertEqual(self.net.undeliverable["no-route"], 1)

    def test_writeValidatesLikeTwisted(self):
        proto = Recorder()
        self.a.listenUDP(1, proto)
        self.assertRaises(error.InvalidAddressError, proto.transport.write, b"x", ("example.com", 1))
        self.assertRaises(error.MessageLengthError, proto.transport.write, b"x" * 65508, (SERVER, 1))
        self.assertEqual(self.net.capture, [])

    def test_maxPacketSizeTruncates(self):
        pa, pb = Recorder(), Recorder()
        self.a.listenUDP(1, pa)
        self.b.listenUDP(2, pb, maxPacketSize=4)
        pa.transport.write(b"abcdefgh", (SERVER, 2))
        self.net.flush()
        self.assertEqual(pb.received[0][0], b"abcd")

    def test_connected(self):
        """
        A connected port sends to its peer without an address and ignores other sources.
        """
        pa, pb = Recorder(), Recorder()
        self.a.listenUDP(1, pa)
        self.b.listenUDP(2, pb)
        pb.transport.connect("192.0.2.1", 99)
        pa.transport.write(b"x", (SERVER, 2))
        pb.transport.write(b"y")  # type: ignore[call-arg]  # connected: no address, as udp.Port.write allows
        self.net.flush()
        self.assertEqual(pb.received, [])
        self.assertEqual(self.net.capture[-1].dst, ("192.0.2.1", 99))

    def test_duplicateAddressRejected(self):
        self.assertRaises(ValueError, self.net.host, SERVER)
        self.assertRaises(ValueError, self.net.nat, "full-cone", public="192.0.2.1")
        self.assertRaises(ValueError, self.net.host, "not-an-ip")
        self.assertRaises(ValueError, self.net.nat, "cone")

    def test_hostIsAClock(self):
        calls: list[int] = []
        self.a.callLater(5, calls.append, 1)
        self.assertEqual(len(self.a.getDelayedCalls()), 1)
        self.clock.advance(5)
        self.assertEqual((calls, self.a.seconds()), ([1], 5))


class TimeTests(SynchronousTestCase):
    def test_latency(self):
        """
        With latency, flush() delivers nothing early; run() delivers at the right time and
        interleaves deliveries with timers in time order.
        """
        clock = Clock()
        net = FakeInternet(clock, latency=0.5)
        a, b = net.host("192.0.2.1"), net.host(SERVER)
        pa, pb = Recorder(), Recorder(echo=True)
        a.listenUDP(1, pa)
        b.listenUDP(2, pb)
        events = []
        clock.callLater(0.7, lambda: events.append(("timer", clock.seconds(), len(pa.received))))
        pa.transport.write(b"ping", (SERVER, 2))
        net.flush()
        self.assertEqual(pb.received, [])
        net.run(0.5)
        self.assertEqual(len(pb.received), 1)
        self.assertEqual(pa.received, [])
        net.run(1)
        self.assertEqual(pa.received, [(b"ping", (SERVER, 2))])
        self.assertEqual(events, [("timer", 0.7, 0)])
        self.assertEqual(clock.seconds(), 1.5)

    def test_pingPongGuard(self):
        """
        Two echoing protocols at zero latency would loop forever; flush() says so.
        """
        net = FakeInternet(Clock(), maxDeliveries=50)
        pa, pb = Recorder(echo=True), Recorder(echo=True)
        net.host("192.0.2.1").listenUDP(1, pa)
        net.host(SERVER).listenUDP(2, pb)
        pa.transport.write(b"x", (SERVER, 2))
        self.assertRaises(RuntimeError, net.flush)


class CaptureInjectLossTests(SynchronousTestCase):
    def setUp(self):
        self.net = FakeInternet(Clock())
        self.pa, self.pb = Recorder(), Recorder()
        self.net.host("192.0.2.1").listenUDP(1, self.pa)
        self.net.host(SERVER).listenUDP(3544, self.pb)

    def test_injectSpoofed(self):
        self.net.inject(("192.0.2.77", 53), (SERVER, 3544), b"spoof")
        self.net.flush()
        self.assertEqual(self.pb.received, [(b"spoof", ("192.0.2.77", 53))])
        self.assertEqual(self.net.capture, [Datagram(("192.0.2.77", 53), (SERVER, 3544), b"spoof")])

    def test_dropNext(self):
        """
        dropNext loses exactly the next matching datagram; it is still captured, and a
        retransmission gets through.
        """
        self.net.dropNext(1, match=lambda d: d.data == b"b")
        for data in (b"a", b"b", b"b"):
            self.pa.transport.write(data, (SERVER, 3544))
        self.net.flush()
        self.assertEqual([d for d, _ in self.pb.received], [b"a", b"b"])
        self.assertEqual(len(self.net.capture), 3)
        self.assertEqual(self.net.dropped, [Datagram(("192.0.2.1", 1), (SERVER, 3544), b"b")])

    def test_dropFilter(self):
        remove = self.net.addDropFilter(lambda d: d.dst[1] == 3544)
        self.pa.transport.write(b"lost", (SERVER, 3544))
        self.net.flush()
        remove()
        self.pa.transport.write(b"kept", (SERVER, 3544))
        self.net.flush()
        self.assertEqual(self.pb.received, [(b"kept", ("192.0.2.1", 1))])


class NATBehaviourTableTests(SynchronousTestCase):
    """
    One table for every kind: after the client sends to SERVER:3544, who can reach it back,
    and does a second destination see the same external endpoint?
    """

    #: kind -> (contacted endpoint, same address other port, other address, same mapping)
    TABLE = {
        "none": (True, True, True, True),
        "full-cone": (True, True, True, True),
        "address-restricted": (True, True, False, True),
        "port-restricted": (True, False, False, True),
        "symmetric": (True, False, False, False),
        "symmetric-port-preserving": (True, False, False, False),
        "symmetric-sequential": (True, False, False, False),
    }

    def test_tableCoversEveryKind(self):
        self.assertEqual(set(self.TABLE), set(NAT_KINDS))

    def test_behaviour(self):
        for kind, expected in self.TABLE.items():
            w = World(kind)
            mapped = w.clientSends((SERVER, 3544))
            # a same-address, other-port peer: a second socket on the server host
            serverOtherPort = Recorder()
            w.server.listenUDP(4000, serverOtherPort)
            actual = (
                w.reachable(w.serverProto, mapped),
                w.reachable(serverOtherPort, mapped),
                w.reachable(w.otherProto, mapped),
                w.clientSends((OTHER, 3544)) == mapped,
            )
            self.assertEqual(actual, expected, kind)


class NATKindTests(SynchronousTestCase):
    def test_none(self):
        """
        Hosts "behind" a none NAT are public: no translation at all.
        """
        w = World("none")
        self.assertEqual(w.clientSends((SERVER, 3544)), ("10.0.0.2", 5000))
        self.assertIsNone(w.nat.public)
        self.assertEqual(w.nat.externalFor(("10.0.0.2", 5000)), ("10.0.0.2", 5000))

    def test_unsolicitedDropped(self):
        """
        Before any outbound traffic nothing gets in, even through a full cone; the drop is
        counted.
        """
        w = World("full-cone")
        self.assertFalse(w.reachable(w.serverProto, (NAT_IP, 5000)))
        self.assertEqual(w.nat.dropped["no-mapping"], 1)

    def test_fullConeAcceptsAnyone(self):
        w = World("full-cone")
        mapped = w.clientSends((SERVER, 3544))
        self.assertEqual(mapped[0], NAT_IP)
        self.assertNotEqual(mapped[1], 5000, "cone NATs use random ports by default")
        self.assertTrue(w.reachable(w.otherProto, mapped))
        self.assertEqual(w.clientProto.received[-1], (b"in", (OTHER, 3544)))
        self.assertEqual(w.nat.dropped, {})

    def test_portRestrictedExactEndpointOnly(self):
        w = World("port-restricted")
        mapped = w.clientSends((SERVER, 3544))
        self.assertFalse(w.reachable(w.otherProto, mapped))
        self.assertEqual(w.nat.dropped["filtered"], 1)
        self.assertTrue(w.reachable(w.serverProto, mapped))
        # contacting OTHER:3544 opens exactly that endpoint, not OTHER:4000
        w.clientSends((OTHER, 3544))
        self.assertTrue(w.reachable(w.otherProto, mapped))
        self.assertFalse(w.reachable(w.otherProto2, mapped))

    def test_addressRestrictedAnyPortOfContactedAddress(self):
        w = World("address-restricted")
        mapped = w.clientSends((OTHER, 3544))
        self.assertTrue(w.reachable(w.otherProto2, mapped))
        self.assertFalse(w.reachable(w.serverProto, mapped))

    def test_symmetricPortPerDestination(self):
        """
        A symmetric NAT gives each destination its own random port; each peer can reply
        on its own mapping only.
        """
        w = World("symmetric", rng=random.Random(7))
        toServer = w.clientSends((SERVER, 3544))
        toOther = w.clientSends((OTHER, 3544))
        self.assertNotEqual(toServer, toOther)
        self.assertEqual(w.nat.externalFor(("10.0.0.2", 5000), (SERVER, 3544)), toServer)
        self.assertTrue(w.reachable(w.serverProto, toServer))
        self.assertTrue(w.reachable(w.otherProto, toOther))
        self.assertFalse(w.reachable(w.otherProto, toServer))
        # the same seed gives the same ports: runs are reproducible
        again = World("symmetric", rng=random.Random(7))
        self.assertEqual(again.clientSends((SERVER, 3544)), toServer)

    def test_portPreserving(self):
        """
        The first destination sees the internal port; a second destination gets another
        port, as does another host using the same internal port; once the first binding
        has expired the internal port is preserved again.
        """
        w = World("symmetric-port-preserving", timeout=30)
        self.assertEqual(w.clientSends((SERVER, 3544)), (NAT_IP, 5000))
        second = w.clientSends((OTHER, 3544))
        self.assertNotEqual(second[1], 5000)
        neighbour = Recorder()
        w.nat.host("10.0.0.3").listenUDP(5000, neighbour)
        neighbour.transport.write(b"n", (SERVER, 3544))
        w.net.flush()
        self.assertNotIn(w.net.capture[-1].src[1], (5000, second[1]))
        w.net.run(30)
        self.assertEqual(w.nat.mappings(), [])
        self.assertEqual(w.clientSends((OTHER, 3544)), (NAT_IP, 5000))

    def test_sequential(self):
        w = World("symmetric-sequential", firstPort=40000)
        ports = [w.clientSends((host, port))[1] for host, port in
                 [(SERVER, 3544), (OTHER, 3544), (OTHER, 4000)]]
        self.assertEqual(ports, [40000, 40001, 40002])
        self.assertEqual(w.clientSends((SERVER, 3544))[1], 40000)

    def test_portAllocationOverride(self):
        w = World("full-cone", portAllocation="preserve")
        self.assertEqual(w.clientSends((SERVER, 3544)), (NAT_IP, 5000))
        self.assertRaises(ValueError, FakeInternet(Clock()).nat, "full-cone", portAllocation="x")

    def test_defaultPublicAddress(self):
        net = FakeInternet(Clock())
        self.assertEqual(net.nat("full-cone").public, "198.51.100.1")
        self.assertEqual(net.nat("symmetric").public, "198.51.100.2")


class NATExpiryTests(SynchronousTestCase):
    def test_expiresAfterTimeout(self):
        w = World("port-restricted", timeout=30)
        mapped = w.clientSends((SERVER, 3544))
        w.net.run(29)
        self.assertTrue(w.reachable(w.serverProto, mapped))
        w.net.run(1)
        self.assertFalse(w.reachable(w.serverProto, mapped))
        self.assertEqual(w.nat.dropped["no-mapping"], 1)
        self.assertEqual(w.nat.expired, 1)
        self.assertEqual(w.clock.getDelayedCalls(), [])

    def test_outboundRefreshesInboundDoesNot(self):
        w = World("full-cone", timeout=30)
        mapped = w.clientSends((SERVER, 3544))
        w.net.run(20)
        self.assertEqual(w.clientSends((SERVER, 3544)), mapped)  # refresh at t=20
        w.net.run(20)
        self.assertTrue(w.reachable(w.serverProto, mapped))       # t=40: inbound only
        w.net.run(9.5)
        self.assertTrue(w.reachable(w.serverProto, mapped))
        w.net.run(0.5)                                            # t=50: 30 s after refresh
        self.assertFalse(w.reachable(w.serverProto, mapped))
        self.assertNotEqual(w.clientSends((SERVER, 3544)), mapped, "a new binding, new port")

    def test_filterPermissionExpiresSeparately(self):
        """
        A binding kept alive toward one peer does not keep another peer's permission alive.
        """
        w = World("port-restricted", timeout=30)
        mapped = w.clientSends((OTHER, 3544))
        w.net.run(15)
        w.clientSends((SERVER, 3544))
        w.net.run(15)
        self.assertTrue(w.reachable(w.serverProto, mapped))
        self.assertFalse(w.reachable(w.otherProto, mapped))


class HairpinAndLanTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.server = self.net.host(SERVER)
        self.server.listenUDP(3544, Recorder())

    def _pair(self, hairpin):
        nat = self.net.nat("full-cone", public=NAT_IP, hairpin=hairpin)
        a, b = Recorder(), Recorder()
        nat.host("10.0.0.2").listenUDP(5000, a)
        nat.host("10.0.0.3").listenUDP(6000, b)
        for proto in (a, b):
            proto.transport.write(b"qualify", (SERVER, 3544))
        self.net.flush()
        aMapped, bMapped = (nat.externalFor(ep) for ep in [("10.0.0.2", 5000), ("10.0.0.3", 6000)])
        return nat, a, b, aMapped, bMapped

    def test_hairpinOff(self):
        nat, a, b, aMapped, bMapped = self._pair(hairpin=False)
        captured = len(self.net.capture)
        a.transport.write(b"hi", bMapped)
        self.net.flush()
        self.assertEqual(b.received, [])
        self.assertEqual(nat.dropped["hairpin"], 1)
        self.assertEqual(len(self.net.capture), captured)

    def test_hairpinOn(self):
        """
        With hairpinning the peer sees the sender's public endpoint, and nothing crosses
        the Internet.
        """
        nat, a, b, aMapped, bMapped = self._pair(hairpin=True)
        captured = len(self.net.capture)
        a.transport.write(b"hi", bMapped)
        self.net.flush()
        self.assertEqual(b.received, [(b"hi", aMapped)])
        self.assertEqual(nat.hairpinned, 1)
        self.assertEqual(len(self.net.capture), captured)

    def test_lanTrafficStaysLocal(self):
        nat, a, b, _, _ = self._pair(hairpin=False)
        captured = len(self.net.capture)
        a.transport.write(b"lan", ("10.0.0.3", 6000))
        self.net.flush()
        self.assertEqual(b.received, [(b"lan", ("10.0.0.2", 5000))])
        self.assertEqual(len(self.net.capture), captured)

    def test_sameInternalAddressOnTwoLans(self):
        """
        Private addresses are per NAT: two LANs may both have 10.0.0.2.
        """
        n1, n2 = self.net.nat("full-cone"), self.net.nat("full-cone")
        n1.host("10.0.0.2")
        n2.host("10.0.0.2")
        self.assertRaises(ValueError, n1.host, "10.0.0.2")


class NestedAndForwardTests(SynchronousTestCase):
    """
    L{FakeNAT.nat} (a NAT on another NAT's LAN) and L{FakeNAT.forward} (a static mapping, as
    UPnP IGD, NAT-PMP or PCP make one), which the RFC 6081 section 6.5 tests build on.
    """

    def setUp(self):
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.server = Recorder()
        self.net.host(SERVER).listenUDP(3544, self.server)
        self.outer = self.net.nat("port-restricted", public=NAT_IP)
        self.inner = self.outer.nat("port-restricted", "192.168.1.1")

    def test_nestedGoesOutThroughBoth(self):
        """
        A host behind the inner NAT reaches the Internet from the outer NAT's address; the
        answer comes back in through both.
        """
        proto = Recorder(echo=False)
        self.inner.host("10.0.0.2").listenUDP(5000, proto)
        proto.transport.write(b"out", (SERVER, 3544))
        self.net.flush()
        [(data, src)] = self.server.received
        self.assertEqual(src[0], NAT_IP)
        self.server.transport.write(b"back", src)
        self.net.flush()
        self.assertEqual(proto.received, [(b"back", (SERVER, 3544))])
        external = self.inner.externalFor(("10.0.0.2", 5000))
        assert external is not None
        self.assertEqual(external[0], "192.168.1.1")

    def test_innerNATsMeetOnTheOuterLan(self):
        """
        Two inner NATs on one outer LAN reach each other's public (LAN) endpoints without
        the outer NAT, which does not hairpin, ever seeing its own address.
        """
        other = self.outer.nat("full-cone", "192.168.1.2")
        a, b = Recorder(), Recorder()
        self.inner.host("10.0.1.2").listenUDP(5000, a)
        other.host("10.0.2.2").listenUDP(6000, b)
        b.transport.write(b"open", (SERVER, 3544))
        self.net.flush()
        bOuter = other.externalFor(("10.0.2.2", 6000))
        a.transport.write(b"hi", bOuter)
        self.net.flush()
        self.assertEqual([d for d, _ in b.received], [b"hi"])
        self.assertEqual(b.received[0][1][0], "192.168.1.1")
        self.assertEqual(self.outer.dropped["hairpin"], 0)
        self.assertRaises(ValueError, self.outer.nat, "full-cone", "192.168.1.2")

    def test_forwardFromAnyone(self):
        """
        A forwarded port lets any source in (no filtering), and by default the forwarded
        endpoint's own datagrams leave from it.
        """
        proto = Recorder()
        self.outer.host("10.0.0.2").listenUDP(4000, proto)
        self.outer.forward(4500, ("10.0.0.2", 4000))
        self.net.inject((OTHER, 9), (NAT_IP, 4500), b"in")
        self.net.flush()
        self.assertEqual(proto.received, [(b"in", (OTHER, 9))])
        proto.transport.write(b"out", (SERVER, 3544))
        self.net.flush()
        self.assertEqual(self.server.received[-1], (b"out", (NAT_IP, 4500)))

    def test_forwardInboundOnly(self):
        """
        C{outbound=False}: a port-preserving symmetric NAT still maps per destination, the
        first destination keeping the (forwarded) port; other hosts never get that port.
        """
        nat = self.net.nat("symmetric-port-preserving", public="198.51.100.9")
        nat.forward(4000, ("10.0.0.2", 4000), outbound=False)
        proto, other = Recorder(), Recorder()
        nat.host("10.0.0.2").listenUDP(4000, proto)
        nat.host("10.0.0.3").listenUDP(4000, other)
        other.transport.write(b"x", (SERVER, 3544))
        proto.transport.write(b"first", (SERVER, 3544))
        proto.transport.write(b"second", (OTHER, 9))
        self.net.flush()
        sources = {data: src for data, src in self.server.received}
        self.assertEqual(sources[b"first"], ("198.51.100.9", 4000))
        self.assertNotEqual(sources[b"x"], ("198.51.100.9", 4000))
        self.assertNotEqual(nat.externalFor(("10.0.0.2", 4000), (OTHER, 9)), ("198.51.100.9", 4000))


GROUP = "224.0.0.253"


class MulticastTests(SynchronousTestCase):
    """
    LAN-local multicast: what Teredo local discovery (RFC 4380 section 5.2.8) needs.
    """

    def setUp(self):
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.server = self.net.host(SERVER)
        self.serverMember = Recorder()
        self.net.host(OTHER).listenMulticast(3544, self.serverMember).joinGroup(GROUP)
        self.nat = self.net.nat("full-cone", public=NAT_IP)
        self.hosts = [self.nat.host(f"10.0.0.{i}") for i in (2, 3, 4)]
        self.members = []
        for host in self.hosts:
            member = Recorder()
            port = host.listenMulticast(3544, member, interface=GROUP, listenMultiple=True)
            self.assertEqual(self.successResultOf(port.joinGroup(GROUP, host.addresses[0])), None)
            self.members.append(member)
        self.sender = Recorder()
        self.senderPort = self.hosts[0].listenMulticast(5000, self.sender)

    def test_deliveredToLanMembersOnly(self):
        """
        Every joined socket on the LAN gets one copy with the sender's private source;
        nothing reaches the Internet or its hosts, nothing is captured.
        """
        self.senderPort.setLoopbackMode(0)
        self.senderPort.write(b"hello", (GROUP, 3544))
        self.net.flush()
        self.assertEqual(self.members[0].received, [])
        for member in self.members[1:]:
            self.assertEqual(member.received, [(b"hello", ("10.0.0.2", 5000))])
        self.assertEqual(self.serverMember.received, [])
        self.assertEqual(self.net.capture, [])
        self.assertEqual(self.net.multicasts, 2)

    def test_loopbackOnByDefault(self):
        self.assertTrue(self.senderPort.getLoopbackMode())
        self.assertEqual(self.senderPort.getTTL(), 1)
        self.senderPort.write(b"hello", (GROUP, 3544))
        self.net.flush()
        self.assertEqual(self.members[0].received, [(b"hello", ("10.0.0.2", 5000))])

    def test_ttlZeroStaysOnHost(self):
        self.senderPort.setTTL(0)
        self.senderPort.write(b"x", (GROUP, 3544))
        self.net.flush()
        self.assertEqual([len(m.received) for m in self.members], [1, 0, 0])
        self.assertRaises(ValueError, self.senderPort.setTTL, 256)

    def test_plainUdpSocketCanSend(self):
        """
        Any UDP socket may send to a group (as on Linux): from its own port.
        """
        plain = Recorder()
        self.hosts[1].listenUDP(6000, plain)
        plain.transport.write(b"x", (GROUP, 3544))
        self.net.flush()
        self.assertEqual(self.members[2].received, [(b"x", ("10.0.0.3", 6000))])

    def test_membershipPortAndGroupRequired(self):
        """
        Not joined, another port, another group: nothing.  Leaving stops delivery.
        """
        other = Recorder()
        port = self.hosts[1].listenMulticast(3545, other)
        port.joinGroup(GROUP)
        notJoined = Recorder()
        self.hosts[2].listenMulticast(3544, notJoined)
        self.senderPort.write(b"x", ("224.0.0.1", 3544))
        self.senderPort.write(b"y", (GROUP, 3546))
        self.net.flush()
        self.assertEqual([m.received for m in self.members], [[], [], []])
        self.assertEqual((other.received, notJoined.received), ([], []))
        joined = self.members[1].transport
        assert isinstance(joined, FakeMulticastPort)
        joined.leaveGroup(GROUP)
        self.senderPort.write(b"z", (GROUP, 3544))
        self.net.flush()
        self.assertEqual(self.members[1].received, [])
        self.assertEqual(len(self.members[2].received), 1)

    def test_groupBoundSocketGetsNoUnicast(self):
        """
        A socket bound to the group address (as Linux allows) never sees unicast, so
        "received over a unicast address" cannot reach it; a wildcard one does.
        """
        self.sender.transport.write(b"u", ("10.0.0.3", 3544))
        self.net.flush()
        self.assertEqual(self.members[1].received, [])
        self.assertEqual(self.net.undeliverable["port-unreachable"], 1)
        wildcard = Recorder()
        self.hosts[1].listenMulticast(4000, wildcard)
        self.sender.transport.write(b"u", ("10.0.0.3", 4000))
        self.net.flush()
        self.assertEqual(wildcard.received, [(b"u", ("10.0.0.2", 5000))])
        self.assertRaises(
            error.InvalidAddressError, self.members[1].transport.write, b"x", ("10.0.0.2", 5000)
        )

    def test_outgoingInterfaceAndJoinErrors(self):
        host = self.nat.host("10.0.1.2", "10.0.1.3")
        port = host.listenMulticast(0, Recorder())
        self.successResultOf(port.setOutgoingInterface("10.0.1.3"))
        self.assertEqual(port.getOutgoingInterface(), "10.0.1.3")
        port.write(b"x", (GROUP, 3544))
        self.net.flush()
        self.assertEqual(self.members[1].received, [(b"x", ("10.0.1.3", port.port))])
        self.failureResultOf(port.joinGroup("10.0.0.1"), error.MulticastJoinError)
        self.failureResultOf(port.joinGroup(GROUP, "192.0.2.1"), error.MulticastJoinError)
        self.failureResultOf(port.setOutgoingInterface("192.0.2.1"), error.MulticastJoinError)

    def test_bindingRules(self):
        """
        Group and wildcard bindings of one port coexist (as with SO_REUSEADDR); the same
        group binding twice does not.
        """
        host = self.hosts[1]
        host.listenUDP(3544, Recorder())
        self.assertRaises(
            error.CannotListenError, host.listenMulticast, 3544, Recorder(), interface=GROUP
        )
        self.assertRaises(
            error.CannotListenError, host.listenMulticast, 1, Recorder(), interface="10.9.9.9"
        )

    def test_publicHostLoopsBackOnly(self):
        """
        A host on the Internet has no LAN: its group traffic reaches only itself.
        """
        member, sender = Recorder(), Recorder()
        self.server.listenMulticast(3544, member).joinGroup(GROUP)
        self.server.listenUDP(7000, sender)
        sender.transport.write(b"x", (GROUP, 3544))
        self.net.flush()
        self.assertEqual(member.received, [(b"x", (SERVER, 7000))])
        self.assertEqual(self.serverMember.received, [])
        self.assertEqual(self.net.capture, [])


class FakeTunDeviceTests(SynchronousTestCase):
    def test_openFailure(self):
        tun = FakeTunDevice("teredo", openError=OSError(errno.EPERM, "Operation not permitted"))
        self.assertRaises(OSError, tun.open)
        self.assertFalse(tun.opened)

    def test_readWriteLifecycle(self):
        tun = FakeTunDevice("teredo")
        self.assertRaises(RuntimeError, tun.inject, b"x")
        tun.open()
        tun.inject(b"queued")
        got: list[bytes] = []
        tun.startReading(got.append)
        tun.inject(b"live")
        self.assertEqual(got, [b"queued", b"live"])
        tun.write(b"out")
        tun.writeErrno = errno.EIO
        tun.write(b"lost")
        self.assertEqual(tun.written, [b"out"])
        tun.close()
        tun.write(b"late")
        self.assertEqual(dict(tun.drops), {"eio": 1, "closed": 1})
        self.assertTrue(tun.closed)
        self.assertRaises(RuntimeError, tun.inject, b"x")


class FakeNetworkConfiguratorTests(SynchronousTestCase):
    def test_finalState(self):
        cfg = FakeNetworkConfigurator()
        cfg.linkUp("teredo", 1280)
        cfg.addAddress("teredo", "2001:0:4136:E378:8000:63BF:3FFF:FDD2", 32)
        cfg.addAddress("teredo", "fe80::8000:63bf:3fff:fdd2", 64)
        cfg.removeAddress("teredo", "fe80::8000:63bf:3fff:fdd2", 64)
        cfg.removeAddress("teredo", "2001:db8::1", 64)  # absent: fine
        cfg.addRoute("teredo", "2001:0::/32", 1029)
        cfg.addRoute("teredo", "::/0", 1029)
        cfg.removeRoute("teredo", "::/0")
        cfg.removeRoute("teredo", "2000::/3")  # absent: fine
        cfg.setForwarding(True)
        self.assertEqual(cfg.links, {"teredo": FakeLink(mtu=1280, up=True)})
        self.assertEqual(cfg.addresses, {"teredo": {("2001:0:4136:e378:8000:63bf:3fff:fdd2", 32)}})
        self.assertEqual(cfg.routes, {("teredo", "2001::/32", 1029)})
        self.assertTrue(cfg.forwarding)
        self.assertEqual(cfg.calls[0], ("linkUp", "teredo", 1280))
        self.assertEqual(len(cfg.calls), 10)

    def test_strictLikeIp(self):
        cfg = FakeNetworkConfigurator()
        self.assertRaises(NetConfigError, cfg.addAddress, "teredo", "2001:db8::1", 64)
        self.assertRaises(NetConfigError, cfg.addRoute, "teredo", "2001::/32", 1)
        self.assertRaises(NetConfigError, cfg.linkUp, "teredo", 1000)
        cfg.linkUp("teredo", 1280)
        cfg.addAddress("teredo", "2001:db8::1", 64)
        self.assertRaises(NetConfigError, cfg.addAddress, "teredo", "2001:db8:0::1", 64)
        self.assertRaises(NetConfigError, cfg.addAddress, "teredo", "192.0.2.1", 24)
        self.assertRaises(NetConfigError, cfg.addRoute, "teredo", "nonsense", 1)

    def test_failureInjection(self):
        cfg = FakeNetworkConfigurator()
        cfg.failNext("linkUp", "boom")
        exc = self.assertRaises(NetConfigError, cfg.linkUp, "teredo", 1280)
        self.assertEqual(str(exc), "boom")
        self.assertEqual(cfg.links, {})
        cfg.linkUp("teredo", 1280)
        cfg.failures["setForwarding"] = NetConfigError("nope")
        self.assertRaises(NetConfigError, cfg.setForwarding, True)
        self.assertRaises(NetConfigError, cfg.setForwarding, True)
        self.assertFalse(cfg.forwarding)
        self.assertEqual(cfg.calls.count(("setForwarding", True)), 2)


class FakeDatagramSenderTests(SynchronousTestCase):
    def test_records(self):
        sender = FakeDatagramSender(("203.0.113.5", 3544))
        sender.sendto(bytearray(b"x"), ("192.0.2.1", 1))  # type: ignore[arg-type]  # recorded as bytes
        self.assertEqual(sender.sent, [(b"x", ("192.0.2.1", 1))])
        self.assertEqual(sender.local, ("203.0.113.5", 3544))


class FakeIPv6NetworkTests(SynchronousTestCase):
    """
    The native IPv6 network between fake TUNs: pump what was written, route it, answer pings.
    """

    def test_pump_routes_once_and_answers_echo(self) -> None:
        import ipaddress

        from teredonode.testing import FakeIPv6Network
        from teredonode.wire import ipv6

        a = ipaddress.IPv6Address("2001:db8::1").packed
        b = ipaddress.IPv6Address("2001:db8::2").packed
        tun = FakeTunDevice("t0")
        tun.open()
        routed: list[bytes] = []

        class Net(FakeIPv6Network):
            def route(self, packet: bytes) -> None:
                routed.append(packet)

        net = Net(tun)
        request = ipv6.icmpv6_packet(a, b, ipv6.EchoRequest(7, 9, b"data"))
        tun.write(request)
        tun.write(ipv6.bubble(a, b))
        self.assertEqual(net.pump(), 2)
        self.assertEqual(net.pump(), 0)
        self.assertEqual(routed[0], request)
        self.assertEqual(net.echoReply(request), ipv6.icmpv6_packet(b, a, ipv6.EchoReply(7, 9, b"data"), 64))
        self.assertIsNone(net.echoReply(routed[1]))
        self.assertRaises(NotImplementedError, FakeIPv6Network(tun).route, request)
