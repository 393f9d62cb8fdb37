"""
RFC 6081 Hairpinning (section 5.6; requirements digest X-HP-03..07, SEC-17) and the bubble
rules of the UPnP-Enabled Symmetric NAT Extension (section 5.3.4: X-UPNP-10..12), client
side, on the in-memory network with a Clock.

  - two clients behind one NAT that does not hairpin (local discovery off, as on two
    subnets) reach each other through their local addresses; with C{hairpinning} off they
    do not;
  - RFC 6081 section 6.5 packet by packet: A and B behind UPnP NATs F and G, both behind NAT
    E, which does not hairpin.  The digest's D2-D5 concern sections 6.3, 6.4 and 5.4-5.5,
    not 6.5; in its spirit, step 9's "mapped address status field" is read as the peer
    entry's state (D5), and step 11's "only one direct bubble" to a peer already trusted is
    D10's order (RFC 4380 case 1 before the RFC 6081 rule);
  - every drop rule: a malformed Alternate Address trailer drops the indirect bubble
    (X-HP-06a: bad length, multicast, loopback, "this network", broadcast, port 0);
    hostile entries (our own endpoints, repeated, more than 4, a peer not behind our NAT, no
    nonce, a flood) are refused and counted, never bubbled; a direct bubble from an
    alternate address without our nonce is dropped (X-HP-07c);
  - X-UPNP-10..12: RFC 6081 section 6.2 between two UPnP-enabled port-symmetric NATs, and
    its failure without the port mappings.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.peers import PeerList
from teredonode.portmap.base import Mapping
from teredonode.roles import hairpin
from teredonode.roles.client import RFC6081_EXTENSIONS, TeredoClient
from teredonode.roles.tunnel import TeredoTunnel, TunnelPolicy
from teredonode.testing import FakeHost, FakeNAT
from teredonode.wire import ipv6
from teredonode.wire.address import GLOBAL_PREFIX, TeredoAddress, mapping_of
from teredonode.wire.teredo import (
    AlternateAddressTrailer,
    NonceTrailer,
    TeredoPacket,
    classify,
    encode_trailers,
    origin_indication,
    scan_trailers,
)
from tests.protocol.test_client import PRIMARY, ClientTestCase, Endpoint, FakePortMapping, echo, raw

SERVER = (PRIMARY, 3544)


def trailersOf(data: bytes) -> tuple[Any, ...]:
    try:
        return classify(data).trailers
    except Exception:
        return ()


def nonceOf(packet: TeredoPacket | bytes) -> bytes | None:
    trailers = packet.trailers if isinstance(packet, TeredoPacket) else trailersOf(packet)
    return next((t.nonce for t in trailers if isinstance(t, NonceTrailer)), None)


def alternatesOf(data: bytes) -> tuple[tuple[str, int], ...] | None:
    return next((t.addresses for t in trailersOf(data) if isinstance(t, AlternateAddressTrailer)), None)


def isBubble(data: bytes) -> bool:
    try:
        return classify(data).is_bubble
    except Exception:
        return False


class HairpinTestCase(ClientTestCase):
    def clientOn(self, host: FakeHost, seed: int, **overrides: Any) -> TeredoClient:
        overrides.setdefault("local_discovery", False)
        return self.makeClient(
            host=host, seed=seed, localAddress=lambda server: host.addresses[0], **overrides
        )

    def sameNat(self, **overrides: Any) -> tuple[TeredoClient, TeredoClient, FakeNAT]:
        """
        A and B behind one port-restricted NAT that does not hairpin; local discovery off
        (as when they are on two subnets, which its multicast does not cross).
        """
        nat = self.net.nat("port-restricted", public="198.51.100.50", rng=random.Random(5))
        a = self.clientOn(nat.host("10.0.0.2"), 1, **overrides)
        b = self.clientOn(nat.host("10.0.0.3"), 2, **overrides)
        self.net.flush()
        self.assertEqual((a.state, b.state), ("qualified", "qualified"))
        return a, b, nat


class SameNATTests(HairpinTestCase):
    def test_reachEachOther(self) -> None:
        """
        X-HP-05: A's indirect bubble to B carries its nonce, then an Alternate Address
        trailer with A's local endpoint.  X-HP-06: B answers at the embedded mapping (the
        NAT drops it: no hairpinning) and at A's local endpoint, echoing A's nonce; X-HP-07:
        A accepts that bubble from B's local endpoint by the nonce and trusts B there.  B's
        own indirect bubble gets A's answer at that endpoint, and B trusts A.  The first echo
        request, sent before B trusted A, is lost; every later one goes both ways.
        """
        a, b, nat = self.sameNat()
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.assertEqual(a.status()["hairpinning"]["alternates"], [f"10.0.0.2:{a.localPort()}"])
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"one"))
        self.net.flush()
        toServer = [d for d in self.net.capture[start:] if d.dst == SERVER and isBubble(d.data)]
        first = toServer[0]
        self.assertEqual([type(t) for t in trailersOf(first.data)], [NonceTrailer, AlternateAddressTrailer])
        self.assertEqual(alternatesOf(first.data), (("10.0.0.2", a.localPort()),))
        self.assertGreaterEqual(nat.dropped["hairpin"], 2)  # A's and B's bubbles to mappings
        peerB, peerA = a.tunnel.peers.get(bAddr), b.tunnel.peers.get(aAddr)
        assert peerB is not None and peerA is not None
        self.assertEqual((peerB.trusted, peerB.mapping), (True, ("10.0.0.3", b.localPort())))
        self.assertEqual((peerA.trusted, peerA.mapping), (True, ("10.0.0.2", a.localPort())))
        self.assertEqual(peerA.alternates, (("10.0.0.2", a.localPort()),))
        self.assertEqual((b.counters["hp-bubbles"], a.counters["hp-learned"], b.counters["hp-learned"]), (1, 1, 1))
        self.assertEqual(a.counters["hp-advertised"] + b.counters["hp-advertised"], 2)
        for n in range(3):
            self.tunOf(a).inject(echo(aAddr, bAddr, b"again %d" % n))
            self.tunOf(b).inject(echo(bAddr, aAddr, b"back %d" % n, reply=True))
            self.net.flush()
            self.assertIn(echo(aAddr, bAddr, b"again %d" % n), self.tunOf(b).written)
            self.assertIn(echo(bAddr, aAddr, b"back %d" % n, reply=True), self.tunOf(a).written)

    def test_offNoWay(self) -> None:
        """
        With C{hairpinning} off on both: no Alternate Address trailer, every bubble to a
        mapping dies in the NAT, the exchange runs out within section 5.2.6's limits.
        """
        a, b, nat = self.sameNat(hairpinning=False)
        aAddr, bAddr = raw(a.address), raw(b.address)
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"one"))
        self.net.run(10)
        self.assertTrue(all(alternatesOf(d.data) is None for d in self.net.capture[start:]))
        self.assertEqual(self.tunOf(b).written, [])
        self.assertEqual(a.counters["probes-failed"], 1)
        self.assertEqual(a.status()["hairpinning"], {"state": "off", "alternates": [], "upnp-symmetric": False})
        self.assertIn("HP", RFC6081_EXTENSIONS)

    def test_needsSymmetricNatSupport(self) -> None:
        """
        Hairpinning's acceptance is the nonce rule (X-HP-05d, X-HP-07): without Symmetric
        NAT Support it is off too.
        """
        a, b, nat = self.sameNat(symmetric_nat_support=False)
        self.assertFalse(a.tunnel.hairpinning)
        self.assertEqual(a.status()["hairpinning"]["state"], "off")

    def test_directBubbleFromAlternateNeedsOurNonce(self) -> None:
        """
        X-HP-07c: a bubble from B's local endpoint without our nonce, or with another one,
        is dropped (the SNS rule), and moves nothing.
        """
        a, b, nat = self.sameNat()
        aAddr, bAddr = raw(a.address), raw(b.address)
        b.stopService()  # B says nothing itself
        self.tunOf(a).inject(echo(aAddr, bAddr, b"one"))
        self.net.flush()
        peer = a.tunnel.peers.get(bAddr)
        assert peer is not None and peer.nonce_sent is not None
        sender = nat.host("10.0.0.9")
        port = sender.listenUDP(40000, Endpoint())
        local = ("10.0.0.2", a.localPort())
        port.write(ipv6.bubble(bAddr, aAddr), local)
        port.write(ipv6.bubble(bAddr, aAddr) + encode_trailers((NonceTrailer(bytes(4)),)), local)
        self.net.flush()
        self.assertDropped(a, "nonce-mismatch", 2)
        self.assertFalse(peer.trusted)
        port.write(ipv6.bubble(bAddr, aAddr) + encode_trailers((NonceTrailer(peer.nonce_sent),)), local)
        self.net.flush()
        self.assertEqual((peer.trusted, peer.mapping), (True, ("10.0.0.9", 40000)))
        self.assertEqual(a.counters["hp-learned"], 1)

    def test_noTrailerOnceEstablished(self) -> None:
        """
        X-HP-05a: only while communication is not established: no trailer for a valid
        trusted peer.
        """
        a, b, nat = self.sameNat()
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr))
        self.net.flush()
        peer = a.tunnel.peers.get(bAddr)
        assert peer is not None and peer.trusted
        advertised = a.counters["hp-advertised"]
        for n in range(3):
            self.tunOf(a).inject(echo(aAddr, bAddr, b"again %d" % n))
            self.net.flush()
        self.assertEqual(a.counters["hp-advertised"], advertised)
        self.assertEqual(a.tunnel.alternateTrailerFor(peer), b"")
        self.net.run(31)  # no longer valid: the trailer again
        peer = a.tunnel.peers.get(bAddr) or a.tunnel.peers.create(bAddr)
        self.assertEqual(alternatesOf(ipv6.bubble(aAddr, bAddr) + a.tunnel.alternateTrailerFor(peer)),
                         (("10.0.0.2", a.localPort()),))


class Section65Tests(HairpinTestCase):
    """
    RFC 6081 section 6.5 (Figure 3): A behind UPnP NAT F (192.168.1.0), B behind UPnP NAT G
    (192.168.1.1), F and G on the LAN of NAT E (198.51.100.118), which does not hairpin.
    UPnP-mapped ports: A 4095, B 4096 (the local ports, X-UPNP-04).
    """

    def setUp(self) -> None:
        super().setUp()
        self.e = self.net.nat("port-restricted", public="198.51.100.118", rng=random.Random(7))
        self.f = self.e.nat("port-restricted", "192.168.1.0", rng=random.Random(8))
        self.g = self.e.nat("port-restricted", "192.168.1.1", rng=random.Random(9))
        self.f.forward(4095, ("10.0.1.2", 4095))
        self.g.forward(4096, ("10.0.2.2", 4096))
        self.a = self.clientOn(
            self.f.host("10.0.1.2"), 1, port=4095, portMapping=FakePortMapping(Mapping("192.168.1.0", 4095, 0, "upnp"))
        )
        self.b = self.clientOn(
            self.g.host("10.0.2.2"), 2, port=4096, portMapping=FakePortMapping(Mapping("192.168.1.1", 4096, 0, "upnp"))
        )
        self.net.flush()

    def test_qualification(self) -> None:
        """
        X-HP-03: the UPnP mapping was made before qualifying; X-HP-04: it differs from the
        server's (E's), so it is kept and advertised after the local endpoint.
        """
        for client, local, upnp in ((self.a, "10.0.1.2:4095", "192.168.1.0:4095"), (self.b, "10.0.2.2:4096", "192.168.1.1:4096")):
            status = client.status()
            self.assertEqual(status["state"], "qualified")
            self.assertTrue(status["mapping"].startswith("198.51.100.118:"))
            self.assertFalse(status["port-mapping"]["same-as-server"])
            self.assertEqual(status["hairpinning"]["alternates"], [local, upnp])

    def test_packetByPacket(self) -> None:
        a, b = self.a, self.b
        aAddr, bAddr = raw(a.address), raw(b.address)
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"one"))
        self.net.flush()
        internet = self.net.capture[start:]
        bubbles = [d for d in internet if isBubble(d.data)]
        # Packet 2 (A -> B's server) and its forwarded copy: nonce nA, then A's alternates.
        packet2 = [d for d in bubbles if d.dst == SERVER and nonceOf(d.data) is not None][0]
        nA = nonceOf(packet2.data)
        self.assertEqual(alternatesOf(packet2.data), (("10.0.1.2", 4095), ("192.168.1.0", 4095)))
        forwarded = [d for d in bubbles if d.src == SERVER and nonceOf(d.data) == nA]
        self.assertEqual(len(forwarded), 1)
        self.assertEqual(alternatesOf(forwarded[0].data), (("10.0.1.2", 4095), ("192.168.1.0", 4095)))
        # Packets 1 and 3: to the embedded mappings, dropped by E (no hairpinning).
        self.assertEqual(self.e.dropped["hairpin"], 2)
        # Packet 4: B -> A's local endpoint, with nA; it leaves E toward nowhere.
        packet4 = [d for d in internet if d.dst == ("10.0.1.2", 4095)]
        self.assertEqual([nonceOf(d.data) for d in packet4], [nA])
        self.assertEqual(self.net.undeliverable["no-route"], 1)
        # Packet 5: B -> A's UPnP mapping, through G, E's LAN and F's forward: A trusts B at
        # B's G mapping (step 9), which is B's UPnP mapping (G forwards it both ways).
        peerB = a.tunnel.peers.get(bAddr)
        assert peerB is not None
        self.assertEqual((peerB.trusted, peerB.mapping), (True, ("192.168.1.1", 4096)))
        self.assertEqual(b.counters["hp-bubbles"], 2)  # packets 4 and 5
        # Packet 6: B's indirect bubble, nonce nB and B's alternates; packet 7: A's one
        # direct bubble, to the trusted mapping only (step 11), echoing nB.
        packet6 = [d for d in bubbles if d.dst == SERVER and d.data != packet2.data]
        self.assertEqual(len(packet6), 1)
        nB = nonceOf(packet6[0].data)
        self.assertNotIn(nB, (None, nA))
        self.assertEqual(alternatesOf(packet6[0].data), (("10.0.2.2", 4096), ("192.168.1.1", 4096)))
        self.assertEqual(a.counters["hp-bubbles"], 0)
        self.assertEqual(a.counters["bubbles-answered"], 1)
        peerA = b.tunnel.peers.get(aAddr)
        assert peerA is not None
        self.assertEqual(peerA.alternates, (("10.0.1.2", 4095), ("192.168.1.0", 4095)))
        # Step 12: B trusts A at A's UPnP mapping.
        self.assertEqual((peerA.trusted, peerA.mapping), (True, ("192.168.1.0", 4095)))
        self.assertEqual((a.counters["hp-learned"], b.counters["hp-learned"]), (1, 1))
        # A's first packet left once A trusted B (step 9), before packet 7 proved A's UPnP
        # mapping to B: B held it and delivered it on that proof (not mapping-mismatch).
        self.assertEqual(self.tunOf(b).written.count(echo(aAddr, bAddr, b"one")), 1)
        self.assertEqual(b.counters["held-for-proof"], 1)
        self.assertDropped(b, "mapping-mismatch", 0)
        # From then on both ways, inside E.
        before = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"two"))
        self.tunOf(b).inject(echo(bAddr, aAddr, b"back", reply=True))
        self.net.flush()
        self.assertIn(echo(aAddr, bAddr, b"two"), self.tunOf(b).written)
        self.assertIn(echo(bAddr, aAddr, b"back", reply=True), self.tunOf(a).written)
        self.assertEqual(self.net.capture[before:], [])  # nothing crossed the Internet

    def test_withoutHairpinningNoWay(self) -> None:
        """
        The same topology, both clients with C{hairpinning} off: nothing arrives.
        """
        for client in (self.a, self.b):
            client.tunnel.hairpinning = False
        aAddr, bAddr = raw(self.a.address), raw(self.b.address)
        self.tunOf(self.a).inject(echo(aAddr, bAddr, b"one"))
        self.net.run(10)
        self.assertEqual(self.tunOf(self.b).written, [])
        self.assertEqual(self.a.counters["probes-failed"], 1)


class ForgedPeerTestCase(HairpinTestCase):
    """
    Forged indirect bubbles through our server's endpoint to C (behind a full-cone NAT so
    that they reach it), from "peers" whose Teredo address embeds C's own public address
    unless said otherwise.
    """

    def setUp(self) -> None:
        super().setUp()
        self.nat = nat = self.net.nat("full-cone", public="198.51.100.60", rng=random.Random(3))
        self.c = self.clientOn(nat.host("10.0.0.2"), 4, inbound_probe_burst=100, inbound_probe_rate=100.0)
        self.net.flush()
        self.cMapping = mapping_of(raw(self.c.address))
        self.peers = 0

    def peer(self, ip: str | None = None) -> bytes:
        self.peers += 1
        return TeredoAddress(GLOBAL_PREFIX, PRIMARY, 0, 30000 + self.peers, ip or self.cMapping[0]).to_bytes()

    def indirect(self, src: bytes, trailers: bytes, nonce: bytes | None = b"\x01\x02\x03\x04") -> list[Any]:
        """
        Inject the bubble; what C sent because of it (beyond our server).
        """
        before = len(self.net.capture)
        data = origin_indication(*mapping_of(src)) + ipv6.bubble(src, raw(self.c.address))
        if nonce is not None:
            data += encode_trailers((NonceTrailer(nonce),))
        self.net.inject(SERVER, self.cMapping, data + trailers)
        self.net.flush()
        return [d for d in self.net.capture[before:] if d.src == self.cMapping and d.dst != SERVER]

    def alternates(self, *entries: tuple[str, int]) -> bytes:
        return encode_trailers((AlternateAddressTrailer(tuple(entries)),))


class HostileAlternatesTests(ForgedPeerTestCase):
    """
    Only the bubbles C sends are looked at; its answers to such a peer's origin go to its
    own NAT, which does not hairpin (C{self.nat.dropped}).
    """

    @staticmethod
    def raw(entries: list[tuple[bytes, int]]) -> bytes:
        body = b"".join(ip + port.to_bytes(2, "big") for ip, port in entries)
        return bytes((3, 2 + len(body), 0, 0)) + body

    def test_wellFormed(self) -> None:
        """
        X-HP-06b, X-HP-06c, X-HP-06d: each advertised address gets a direct bubble with the
        peer's nonce,
        besides the answer to the origin; the list is kept in the entry.
        """
        src = self.peer()
        sent = self.indirect(src, self.alternates(("10.0.0.7", 5000), ("192.168.5.5", 6000)))
        self.assertEqual(
            sorted(d.dst for d in sent if isBubble(d.data) and nonceOf(d.data) == b"\x01\x02\x03\x04"),
            [("10.0.0.7", 5000), ("192.168.5.5", 6000)],
        )
        self.assertEqual(self.nat.dropped["hairpin"], 1)  # the answer to the origin
        entry = self.c.tunnel.peers.get(src)
        assert entry is not None
        self.assertEqual(entry.alternates, (("10.0.0.7", 5000), ("192.168.5.5", 6000)))
        self.assertEqual(self.c.counters["hp-bubbles"], 2)

    def test_malformedDropsTheBubble(self) -> None:
        """
        X-HP-06a, SEC-17: a length that is not 8, 14, 20 or 26, a multicast, loopback,
        "this network" or broadcast entry, or port 0: the bubble is dropped, unanswered,
        and leaves no entry; it is counted once, by the drop alone (not also as a bubble
        received: the fuzz test's accounting balances every datagram).
        """
        received = self.c.counters["bubbles-received"]
        cases = [
            bytes((3, 9, 0, 0)) + bytes((10, 0, 0, 7, 0x13, 0x88, 0)),  # length 9
            bytes((3, 6, 0, 0, 10, 0, 0, 7)),  # no whole entry
            self.raw([(bytes((224, 0, 0, 1)), 5000)]),
            self.raw([(bytes((239, 1, 2, 3)), 5000)]),
            self.raw([(bytes((127, 0, 0, 1)), 5000)]),
            self.raw([(bytes((0, 0, 0, 0)), 5000)]),
            self.raw([(bytes((255, 255, 255, 255)), 5000)]),
            self.raw([(bytes((10, 0, 0, 7)), 5000), (bytes((10, 0, 0, 8)), 0)]),
            bytes((3, 20, 0, 0)) + bytes(6),  # truncated
        ]
        for n, trailer in enumerate(cases, start=1):
            src = self.peer()
            self.assertEqual(self.indirect(src, trailer), [], trailer.hex())
            self.assertDropped(self.c, "alternate-malformed", n)
            self.assertIsNone(self.c.tunnel.peers.get(src))
        self.assertEqual(self.c.counters["hp-bubbles"], 0)
        self.assertEqual(self.c.counters["bubbles-received"], received)

    def test_ownEndpointsRefused(self) -> None:
        """
        Our own local endpoint and mapping, the peer's embedded mapping and repeats are not
        bubbled, and counted.
        """
        src = self.peer()
        own = ("10.0.0.2", self.c.localPort())
        received = self.c.counters["received"]
        sent = self.indirect(src, self.alternates(own, self.cMapping, mapping_of(src), ("10.0.0.7", 5000)))
        sent += self.indirect(self.peer(), self.alternates(("10.0.0.8", 5000), ("10.0.0.8", 5000)))
        self.assertEqual(sorted(d.dst for d in sent), [("10.0.0.7", 5000), ("10.0.0.8", 5000)])
        self.assertEqual(self.c.counters["received"], received + 2)  # nothing to ourselves
        self.assertEqual(self.nat.dropped["hairpin"], 2)  # one answer to each origin, no more
        self.assertEqual(self.c.counters["hp-refused"], 4)
        self.assertEqual(self.c.counters["hp-bubbles"], 2)

    def test_atMostFour(self) -> None:
        """
        Two trailers of four entries each: four bubbles, four refused (the format's bound,
        6081 section 7), whatever the number of trailers.
        """
        entries = [(f"10.0.1.{k}", 5000) for k in range(1, 9)]
        sent = self.indirect(self.peer(), self.alternates(*entries[:4]) + self.alternates(*entries[4:]))
        self.assertEqual(sorted(d.dst for d in sent if d.dst in entries), entries[:4])
        self.assertEqual((self.c.counters["hp-bubbles"], self.c.counters["hp-refused"]), (4, 4))

    def test_foreignPeerRefused(self) -> None:
        """
        A peer whose address embeds another public IPv4 is not behind our NAT: its
        alternates are refused (the answer to its origin still goes).
        """
        src = self.peer("192.0.2.44")
        sent = self.indirect(src, self.alternates(("10.0.0.7", 5000), ("10.0.0.8", 5000)))
        self.assertEqual([d.dst for d in sent if isBubble(d.data) and d.dst != mapping_of(src)], [])
        self.assertEqual((self.c.counters["hp-bubbles"], self.c.counters["hp-refused"]), (0, 2))

    def test_noNonceRefused(self) -> None:
        sent = self.indirect(self.peer(), self.alternates(("10.0.0.7", 5000)), nonce=None)
        self.assertNotIn(("10.0.0.7", 5000), [d.dst for d in sent])
        self.assertEqual(self.c.counters["hp-refused"], 1)

    def test_floodPaced(self) -> None:
        """
        The same victim endpoint advertised by 20 forged peers within a second gets one
        bubble; after 2 s one more.  The rest is counted.
        """
        victim = ("10.0.0.99", 22)
        total = 0
        for _ in range(20):
            total += sum(1 for d in self.indirect(self.peer(), self.alternates(victim)) if d.dst == victim)
        self.assertEqual(total, 1)
        self.assertEqual(self.c.counters["hp-refused"], 19)
        self.clock.advance(2)
        self.assertEqual(sum(1 for d in self.indirect(self.peer(), self.alternates(victim)) if d.dst == victim), 1)

    def test_inboundBudget(self) -> None:
        """
        SEC-19: every bubble to an alternate address is paid from the inbound probe budget.
        """
        nat = self.net.nat("full-cone", public="198.51.100.61", rng=random.Random(4))
        c = self.clientOn(nat.host("10.0.0.2"), 5, inbound_probe_burst=3, inbound_probe_rate=0.001)
        self.net.flush()
        self.c, self.cMapping = c, mapping_of(raw(c.address))
        entries = [(f"10.0.2.{k}", 5000) for k in range(1, 5)]
        sent = self.indirect(self.peer(), self.alternates(*entries))
        # The answer, two alternates; the indirect bubble of our own and two more refused.
        self.assertEqual(len([d for d in sent if d.dst in entries]), 2)
        self.assertEqual(c.counters["hp-refused"], 2)

    def test_offIgnoresTrailer(self) -> None:
        """
        With C{hairpinning} off the trailer means nothing: even a malformed one is not a
        reason to drop, and no address gets a bubble.
        """
        self.c.tunnel.hairpinning = False
        src = self.peer()
        sent = self.indirect(src, self.raw([(bytes((224, 0, 0, 1)), 5000)]) + self.alternates(("10.0.0.7", 5000)))
        self.assertEqual([d.dst for d in sent if isBubble(d.data)], [])
        self.assertEqual(self.nat.dropped["hairpin"], 1)  # the answer to the origin, only
        self.assertDropped(self.c, "alternate-malformed", 0)


class FirstPacketTests(ForgedPeerTestCase):
    """
    The first data packet of a Hairpinning exchange (RFC 6081 section 6.5): it leaves the
    peer as soon as the peer trusts us (step 9), one bubble before the one that proves its
    endpoint with our nonce (step 12), so it arrives from an endpoint not proven yet.  It is
    held, and delivered only if our nonce then proves that very endpoint; nothing about it
    creates an entry, changes trust or mapping, or makes us send anything.  C is the target,
    as in L{HostileAlternatesTests}; the "peer" advertises two LAN endpoints.
    """

    ALT1, ALT2 = ("10.0.0.7", 5000), ("10.0.0.8", 5000)

    def pending(self) -> tuple[bytes, bytes]:
        """A peer bubbled at its alternates, our nonce outstanding: (its address, nonce)."""
        src = self.peer()
        self.indirect(src, self.alternates(self.ALT1, self.ALT2))
        entry = self.c.tunnel.peers.get(src)
        assert entry is not None and entry.nonce_sent is not None and not entry.trusted
        return src, entry.nonce_sent

    def data(self, src: bytes, text: bytes, sender: tuple[str, int]) -> bytes:
        packet = echo(src, raw(self.c.address), text)
        self.c.datagramReceived(packet, sender)
        return packet

    def proof(self, src: bytes, nonce: bytes, sender: tuple[str, int]) -> None:
        self.c.datagramReceived(ipv6.bubble(src, raw(self.c.address)) + encode_trailers((NonceTrailer(nonce),)), sender)

    def test_heldThenDeliveredOnProof(self) -> None:
        src, nonce = self.pending()
        entry = self.c.tunnel.peers.get(src)
        assert entry is not None
        before = (entry.trusted, entry.mapping, len(self.net.capture))
        first = self.data(src, b"first", self.ALT1)
        self.net.flush()
        self.assertNotIn(first, self.tunOf(self.c).written)
        self.assertEqual((entry.trusted, entry.mapping, len(self.net.capture)), before, "no state, nothing sent")
        self.assertDropped(self.c, "mapping-mismatch", 0)
        self.assertEqual(self.c.counters["held-for-proof"], 1)
        self.proof(src, nonce, self.ALT1)
        self.assertEqual((entry.trusted, entry.mapping), (True, self.ALT1))
        self.assertEqual(self.tunOf(self.c).written.count(first), 1)

    def test_provenElsewhereDropped(self) -> None:
        """Our nonce proves another endpoint: the held packet is dropped, never delivered."""
        src, nonce = self.pending()
        first = self.data(src, b"first", self.ALT1)
        self.proof(src, nonce, self.ALT2)
        self.assertNotIn(first, self.tunOf(self.c).written)
        self.assertDropped(self.c, "unverified-source", 1)

    def test_onlyBubbledEndpointsOneAtATime(self) -> None:
        """
        From an endpoint we did not bubble for the peer, or a second packet while one is
        held: dropped as before (C{mapping-mismatch}).
        """
        src, nonce = self.pending()
        self.data(src, b"elsewhere", ("10.0.0.9", 5000))
        self.assertDropped(self.c, "mapping-mismatch", 1)
        first = self.data(src, b"first", self.ALT1)
        second = self.data(src, b"second", self.ALT2)
        self.assertDropped(self.c, "mapping-mismatch", 2)
        self.assertEqual(self.c.counters["held-for-proof"], 1)
        self.proof(src, nonce, self.ALT1)
        written = self.tunOf(self.c).written
        self.assertEqual((first in written, second in written), (True, False))

    def test_nothingWithoutOutstandingNonce(self) -> None:
        """
        No entry, or an entry without our nonce outstanding: nothing held, no entry made.
        """
        stranger = self.peer()
        self.data(stranger, b"x", self.ALT1)
        self.assertIsNone(self.c.tunnel.peers.get(stranger))
        src, nonce = self.pending()
        self.proof(src, nonce, self.ALT1)  # proven: the nonce is spent
        self.data(src, b"y", self.ALT2)
        self.assertDropped(self.c, "mapping-mismatch", 2)
        self.assertEqual(self.c.counters["held-for-proof"], 0)

    def test_offNoHold(self) -> None:
        """Without Symmetric NAT Support there is no proof to wait for: dropped."""
        src, _ = self.pending()
        self.c.tunnel.symmetricNat = False
        self.data(src, b"first", self.ALT1)
        self.assertDropped(self.c, "mapping-mismatch", 1)


class RelayNeverAdvertisesTests(SynchronousTestCase):
    def test_unnumberedInterface(self) -> None:
        """
        X-TRL-06: only a client's indirect bubbles carry the trailer: an unnumbered
        interface (a relay) is never hairpinning, whatever it is told.
        """
        sent: list[tuple[bytes, Any]] = []
        policy = TunnelPolicy("relay", native_destinations=False, native_sources=False, learn_unsolicited=False)
        tunnel = TeredoTunnel(
            Clock(), policy, PeerList(lambda: 0.0), lambda d, e: sent.append((d, e)), lambda p: None,
            random.Random(1).randbytes, serves=lambda a: True, hairpinning=True,
        )
        tunnel.setUnnumbered(bytes.fromhex("fe80" + "00" * 13 + "01"))
        tunnel.setAlternates(("10.0.0.2", 4000), ("192.168.1.1", 4000))
        self.assertFalse(tunnel.hairpinning)
        dst = TeredoAddress(GLOBAL_PREFIX, PRIMARY, 0, 4000, "192.0.2.5").to_bytes()
        tunnel.fromHost(ipv6.icmpv6_packet(bytes.fromhex("20010db8" + "00" * 11 + "05"), dst, ipv6.EchoRequest(1, 1, b"x"), 64))
        self.assertTrue(sent)
        self.assertTrue(all(alternatesOf(d) is None for d, _ in sent))


class PureTests(SynchronousTestCase):
    def test_advertised(self) -> None:
        """
        X-HP-05b/c, X-TRL-09: local first, then the UPnP mapping; at most two entries (14
        bytes); invalid ones left out.
        """
        trailer = hairpin.advertised(("10.0.0.2", 4000), ("192.168.1.1", 4000))
        assert trailer is not None
        self.assertEqual(len(encode_trailers((trailer,))), 2 + 14)
        self.assertEqual(hairpin.advertised(("10.0.0.2", 4000), None), AlternateAddressTrailer((("10.0.0.2", 4000),)))
        self.assertIsNone(hairpin.advertised(("0.0.0.0", 4000), None))
        self.assertIsNone(hairpin.advertised(None, None))

    def test_readFromTheCodec(self) -> None:
        """
        The alternates come from the codec's scan: entries of well-formed trailers only, a
        malformed or truncated Alternate Address trailer reported, other truncated framing
        not.
        """
        def read(data: bytes) -> hairpin.Alternates:
            return hairpin.read_alternates(*scan_trailers(data))

        self.assertEqual(read(b"\x01"), hairpin.Alternates())
        self.assertEqual(read(b"\x01\x04\x00"), hairpin.Alternates())
        self.assertEqual(read(bytes((0x80, 9, 0))), hairpin.Alternates())
        good = encode_trailers((AlternateAddressTrailer((("10.0.0.7", 5000),)),))
        more = encode_trailers((AlternateAddressTrailer((("10.0.0.8", 5001),)),))
        self.assertEqual(read(good + more), hairpin.Alternates((("10.0.0.7", 5000), ("10.0.0.8", 5001))))
        self.assertEqual(read(good + bytes((3, 20, 0, 0))), hairpin.Alternates((("10.0.0.7", 5000),), True))
        loopback = HostileAlternatesTests.raw([(bytes((127, 0, 0, 1)), 1)])
        self.assertEqual(read(loopback + good), hairpin.Alternates((("10.0.0.7", 5000),), True))


class UPnPSymmetricTests(ClientTestCase):
    """
    RFC 6081 section 6.2: A and B each behind a UPnP-enabled port-symmetric NAT that
    reserved their service port (inbound from anyone; outbound still a new port per
    destination, except the first, which keeps the port).  Both qualify as symmetric with
    the UPnP mapping the server saw, so it is zeroed (X-UPNP-09).
    """

    def pair(self, portMapping: bool = True) -> tuple[TeredoClient, TeredoClient]:
        clients = []
        for n, port in ((1, 40001), (2, 40002)):
            nat = self.net.nat("symmetric-port-preserving", public=f"198.51.100.{70 + n}", rng=random.Random(n))
            nat.forward(port, ("10.0.0.2", port), outbound=False)
            mapper = FakePortMapping(Mapping(f"198.51.100.{70 + n}", port, 0, "upnp")) if portMapping else None
            clients.append(
                self.makeClient(
                    host=nat.host("10.0.0.2"), seed=n, port=port, allow_symmetric=True, portMapping=mapper,
                    port_mapping=portMapping,
                )
            )
        self.net.flush()
        a, b = clients
        for client in clients:
            self.assertEqual((client.state, client.nat), ("qualified", "symmetric"))
        return a, b

    def test_section62(self) -> None:
        """
        X-UPNP-10: each side sees the other's bubbles come from a mapping its address does
        not embed (Symmetric Peer); X-UPNP-11/12: bubbles and data then go to the embedded
        mapping, the reserved one, and pass: both ways.
        """
        a, b = self.pair()
        for client in (a, b):
            self.assertTrue(client.status()["port-mapping"]["same-as-server"])
            self.assertTrue(client.status()["hairpinning"]["upnp-symmetric"])
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"one"))
        self.net.run(4)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"two"))
        self.tunOf(b).inject(echo(bAddr, aAddr, b"back", reply=True))
        self.net.run(1)
        self.assertIn(echo(aAddr, bAddr, b"two"), self.tunOf(b).written)
        self.assertIn(echo(bAddr, aAddr, b"back", reply=True), self.tunOf(a).written)
        for client, other in ((a, bAddr), (b, aAddr)):
            peer = client.tunnel.peers.get(other)
            assert peer is not None
            self.assertTrue(peer.symmetric_peer)
            self.assertGreaterEqual(client.counters["upnp-symmetric-peers"], 1)
            self.assertGreaterEqual(client.counters["upnp-embedded"], 1)

    def test_X_UPNP_12_dataToTheEmbeddedMapping(self) -> None:
        """
        X-UPNP-12: with the Symmetric NAT flag, a UPnP-enabled NAT, a zeroed UPnP mapping and
        a peer flagged Symmetric Peer, data packets go to the mapping the peer's address
        embeds, not to the one learned from its bubbles; once the peer is not flagged, to
        the learned one.
        """
        a, b = self.pair()
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"one"))
        self.net.run(4)
        peer = a.tunnel.peers.get(bAddr)
        assert peer is not None and peer.trusted and peer.mapping is not None
        embedded, learned = mapping_of(bAddr), peer.mapping
        self.assertNotEqual(learned, embedded)
        self.assertTrue(peer.symmetric_peer)

        def sentTo(text: bytes) -> list[Any]:
            start = len(self.net.capture)
            self.tunOf(a).inject(echo(aAddr, bAddr, text))
            self.net.flush()
            return [d.dst for d in self.net.capture[start:] if d.data == echo(aAddr, bAddr, text)]

        before = a.counters["upnp-embedded"]
        self.assertEqual(sentTo(b"two"), [embedded])
        self.assertEqual(a.counters["upnp-embedded"], before + 1)
        self.assertIn(echo(aAddr, bAddr, b"two"), self.tunOf(b).written)
        peer.symmetric_peer = False
        self.assertEqual(sentTo(b"three"), [learned])

    def test_withoutPortMappingNoWay(self) -> None:
        """
        The same NATs, the clients not told of the mappings (C{port-mapping} off): the SNS
        mappings they learn lead into the other NAT's filter, nothing passes.
        """
        a, b = self.pair(portMapping=False)
        self.assertFalse(a.status()["hairpinning"]["upnp-symmetric"])
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"one"))
        self.net.run(4)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"two"))
        self.net.run(10)
        self.assertEqual(self.tunOf(b).written, [])

    def test_symmetricPeerFlag(self) -> None:
        """
        X-UPNP-10: set by a direct bubble from a global mapping the source does not embed,
        even one then dropped; not by one from the embedded mapping, nor from a LAN endpoint.
        """
        b = self.makeClient("full-cone", seed=2)
        self.net.flush()
        bMapping = mapping_of(raw(b.address))
        entries = []
        for n, src in enumerate((("192.0.2.70", 40000), ("192.0.2.71", 40001), ("10.9.9.9", 40002))):
            peerAddr = TeredoAddress(GLOBAL_PREFIX, PRIMARY, 0, 40000 + n, f"192.0.2.{70 + n}").to_bytes()
            entries.append(b.tunnel.peers.create(peerAddr))
            sender = src if n != 1 else ("192.0.2.71", 50000)
            self.net.inject(sender, bMapping, ipv6.bubble(peerAddr, raw(b.address)))
        self.net.flush()
        self.assertEqual([p.symmetric_peer for p in entries], [False, True, False])
        self.assertEqual(b.counters["upnp-symmetric-peers"], 1)

