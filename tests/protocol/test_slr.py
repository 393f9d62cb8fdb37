"""
RFC 6081's Server Load Reduction Extension on the client (section 5.7; requirements digest
X-SLR-01 .. X-SLR-05) on the in-memory network: two clients behind port-restricted NATs,
one server.

  - an idle path (nothing either way for 30 s) is refreshed by a direct solicitation
    bubble, answered by an advertisement, without the server (X-SLR-03, X-SLR-05);
  - a peer whose NAT forgot us gets three solicitations 2 s apart, then the RFC 4380
    bubbles through the server, and the exchange recovers (X-SLR-04);
  - with C{server-load-reduction} off, the RFC 4380 bubbles as before;
  - a flood of solicitations buys no more advertisements than the probe limits allow.
"""

from __future__ import annotations

from typing import Any

from teredonode.roles.client import TeredoClient
from teredonode.roles.tunnel import PEER_TRANSITIONS, PROBING, SLR_MEMORY, TRUSTED, peerState
from teredonode.wire import ipv6
from teredonode.wire.address import GLOBAL_PREFIX, TeredoAddress, mapping_of
from teredonode.wire.teredo import (
    DISCOVERY_ADVERTISEMENT,
    DISCOVERY_SOLICITATION,
    NeighborDiscoveryTrailer,
    TeredoPacket,
    classify,
    encode_trailers,
)
from tests.protocol.test_client import PRIMARY, ClientTestCase, Endpoint, echo, raw

SERVER = (PRIMARY, 3544)


def discoveryOf(packet: TeredoPacket) -> int | None:
    for trailer in packet.trailers:
        if isinstance(trailer, NeighborDiscoveryTrailer):
            return trailer.discovery_type
    return None


class SLRTestCase(ClientTestCase):
    def pair(self, **overrides: Any) -> tuple[TeredoClient, TeredoClient, bytes, bytes]:
        """
        A and B behind port-restricted NATs on our server, having exchanged an echo request
        and its reply (both trusted), then silent both ways for 31 s.
        """
        a = self.makeClient("port-restricted", seed=1, **overrides)
        b = self.makeClient("port-restricted", seed=2, **overrides)
        self.net.flush()
        self.assertEqual((a.state, b.state), ("qualified", "qualified"))
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"hello"))
        self.net.flush()
        self.assertEqual(len(self.tunOf(b).written), 1)
        self.tunOf(b).inject(echo(bAddr, aAddr, b"hello", reply=True))
        self.net.flush()
        self.assertEqual(len(self.tunOf(a).written), 1)
        for client, peer in ((a, bAddr), (b, aAddr)):
            entry = client.tunnel.peers.get(peer)
            assert entry is not None
            self.assertEqual(peerState(entry), TRUSTED)
        self.net.run(31)
        return a, b, aAddr, bAddr

    def bubbles(self, since: int, a: TeredoClient, b: TeredoClient) -> list[tuple[str, str, int | None]]:
        """
        The bubbles on the Internet since capture index C{since}, as (from, to, discovery
        type): from and to are "A", "B" (their public addresses, any port) or "S" (the
        server).
        """
        aPublic = mapping_of(raw(a.address))[0]
        bPublic = mapping_of(raw(b.address))[0]

        def name(endpoint: tuple[str, int]) -> str:
            if endpoint == SERVER:
                return "S"
            return {aPublic: "A", bPublic: "B"}.get(endpoint[0], "?")

        out = []
        for d in self.net.capture[since:]:
            try:
                packet = classify(d.data)
            except Exception:
                continue
            if packet.is_bubble:
                out.append((name(d.src), name(d.dst), discoveryOf(packet)))
        return out


    def countTo(self, since: int, sender: bytes, peer: bytes) -> int:
        """
        Datagrams from C{sender}'s public address to C{peer}'s embedded mapping since capture
        index C{since}.
        """
        public = mapping_of(sender)[0]
        return sum(1 for d in self.net.capture[since:] if d.src[0] == public and d.dst == mapping_of(peer))


class RefreshTests(SLRTestCase):
    def test_idlePathSolicited(self) -> None:
        """
        X-SLR-03, X-SLR-05: after 31 s of silence A's next packet waits while a direct
        bubble soliciting an answer goes to B's mapping; B answers with an advertisement,
        which releases the packet.  The server forwards nothing.
        """
        a, b, aAddr, bAddr = self.pair()
        forwarded = self.server.status()["counters"]["forwarded"]
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"again"))
        self.net.flush()
        self.assertEqual(
            self.bubbles(start, a, b),
            [("A", "B", DISCOVERY_SOLICITATION), ("B", "A", DISCOVERY_ADVERTISEMENT)],
        )
        self.assertEqual(self.server.status()["counters"]["forwarded"], forwarded)
        self.assertEqual(len(self.tunOf(b).written), 2)
        self.assertEqual(self.tunOf(b).written[-1], echo(aAddr, bAddr, b"again"))
        self.assertEqual((a.counters["slr-solicitations"], b.counters["slr-advertisements"]), (1, 1))
        self.assertEqual((a.counters["slr-fallbacks"], a.counters["bubbles-indirect"]), (0, 1))
        entry = a.tunnel.peers.get(bAddr)
        assert entry is not None
        self.assertEqual(peerState(entry), TRUSTED)
        self.assertIsNone(entry.timer)
        # The reply flows straight back: B heard A just now.
        self.tunOf(b).inject(echo(bAddr, aAddr, b"again", reply=True))
        self.net.flush()
        self.assertEqual(self.tunOf(a).written[-1], echo(bAddr, aAddr, b"again", reply=True))
        self.assertEqual(self.server.status()["counters"]["forwarded"], forwarded)
        status = a.status()["counters"]
        self.assertEqual(status["slr-solicitations"], 1)

    def test_holeClosedFallback(self) -> None:
        """
        X-SLR-04: B's NAT forgot A (its timeout, 20 s, is shorter than the silence): three
        solicitations 2 s apart are lost; 2 s after the third the entry is no longer trusted
        and the RFC 4380 bubbles go (one direct, one through the server); B's answer to the
        indirect one proves the path, and the packet flows.
        """
        a, b, aAddr, bAddr = self.pair(natTimeout=20, refresh=10)
        forwarded = self.server.status()["counters"]["forwarded"]
        bNat = self.hostOf(b).nat
        assert bNat is not None
        filtered = bNat.dropped["filtered"]
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"again"))
        self.net.flush()
        entry = a.tunnel.peers.get(bAddr)
        assert entry is not None
        toB = [self.countTo(start, aAddr, bAddr)]
        for _ in range(3):
            self.assertEqual(peerState(entry), TRUSTED)
            self.net.run(1.99)
            toB.append(self.countTo(start, aAddr, bAddr))
            self.net.run(0.01)
        # One bubble toward B's mapping at 0, 2, 4 and 6 s, never two within 2 s; B's NAT
        # dropped the three solicitations.
        self.assertEqual(toB, [1, 1, 2, 3])
        self.assertEqual(bNat.dropped["filtered"] - filtered, 3 + 1)  # and the direct bubble
        self.assertEqual(a.counters["slr-solicitations"], 3)
        self.assertEqual(a.counters["slr-fallbacks"], 1)
        self.assertEqual(
            self.bubbles(start, a, b),
            [
                ("A", "B", DISCOVERY_SOLICITATION),
                ("A", "B", DISCOVERY_SOLICITATION),
                ("A", "B", DISCOVERY_SOLICITATION),
                ("A", "B", None),  # RFC 4380 direct bubble, dropped by B's NAT
                ("A", "S", None),  # indirect
                ("S", "B", None),
                ("B", "A", None),  # B's answer to the origin
                ("B", "S", None),  # B forgot A: its own nonce (RFC 6081 6.1 packet 4) ...
                ("S", "A", None),
                ("A", "B", None),  # ... answered directly
            ],
        )
        self.assertEqual(self.server.status()["counters"]["forwarded"], forwarded + 2)
        self.assertEqual(b.counters["slr-advertisements"], 0)
        self.assertEqual(self.tunOf(b).written[-1], echo(aAddr, bAddr, b"again"))
        self.assertEqual(peerState(entry), TRUSTED)
        self.assertIsNone(entry.timer)
        self.assertEqual(a.counters["probes-failed"], 0)

    def test_forgottenPeerRecalled(self) -> None:
        """
        The sweep forgets an entry 30-40 s after its last traffic; within SLR_MEMORY (RFC
        4787 REQ-5's 2 minutes) the host's next packet still goes with a solicitation to the
        mapping the entry had, not through the server.
        """
        a, b, aAddr, bAddr = self.pair()
        self.net.run(60)
        self.assertNotIn(bAddr, a.tunnel.peers)
        forwarded = self.server.status()["counters"]["forwarded"]
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"again"))
        self.net.flush()
        self.assertEqual(
            self.bubbles(start, a, b),
            [("A", "B", DISCOVERY_SOLICITATION), ("B", "A", DISCOVERY_ADVERTISEMENT)],
        )
        self.assertEqual(self.server.status()["counters"]["forwarded"], forwarded)
        self.assertEqual(self.tunOf(b).written[-1], echo(aAddr, bAddr, b"again"))

    def test_forgottenTooLong(self) -> None:
        """
        Past SLR_MEMORY the mapping is no longer worth soliciting: RFC 4380 bubbles at once.
        """
        a, b, aAddr, bAddr = self.pair()
        self.net.run(SLR_MEMORY)
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"again"))
        self.net.flush()
        self.assertEqual(self.bubbles(start, a, b)[:2], [("A", "B", None), ("A", "S", None)])
        self.assertEqual(a.counters["slr-solicitations"], 0)
        self.assertEqual(self.tunOf(b).written[-1], echo(aAddr, bAddr, b"again"))

    def test_fallbackIsATransition(self) -> None:
        """
        The fallback is a row of the state table: trusted -> probing.
        """
        self.assertIn((TRUSTED, PROBING), PEER_TRANSITIONS)

    def test_switchOff(self) -> None:
        """
        X-SLR-01 off (C{server-load-reduction = false}): RFC 4380 alone, the bubble pair
        (direct to B's embedded mapping, indirect through the server), no trailer; and a
        solicitation received is a plain bubble, not answered.
        """
        a, b, aAddr, bAddr = self.pair(server_load_reduction=False)
        forwarded = self.server.status()["counters"]["forwarded"]
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"again"))
        self.net.flush()
        self.assertEqual(
            self.bubbles(start, a, b),
            [("A", "B", None), ("A", "S", None), ("S", "B", None), ("B", "A", None)],
        )
        self.assertEqual(self.server.status()["counters"]["forwarded"], forwarded + 1)
        self.assertEqual(self.tunOf(b).written[-1], echo(aAddr, bAddr, b"again"))
        for name in ("slr-solicitations", "slr-advertisements", "slr-fallbacks"):
            self.assertEqual(a.counters[name] + b.counters[name], 0)
        # A solicitation from A's mapping to B: accepted, not answered.
        aMapping = b.tunnel.peers.get(aAddr)
        assert aMapping is not None and aMapping.mapping is not None
        self.net.run(3)
        start = len(self.net.capture)
        self.socketOf(a).write(
            ipv6.bubble(aAddr, bAddr) + encode_trailers((NeighborDiscoveryTrailer(DISCOVERY_SOLICITATION),)),
            mapping_of(bAddr),
        )
        self.net.flush()
        self.assertEqual(self.bubbles(start, a, b), [("A", "B", DISCOVERY_SOLICITATION)])


class FloodTests(SLRTestCase):
    def test_solicitationFlood(self) -> None:
        """
        X-SLR-05 within section 5.2.6 and SEC-19: an attacker sending 100 solicitations a
        second for 10 s, from one endpoint under 50 Teredo addresses embedding it, gets at
        most one advertisement per 2 s (6 in all): under 1 % of the bytes it sent come back.
        """
        b = self.makeClient("port-restricted", seed=2)
        self.net.flush()
        bAddr = raw(b.address)
        attacker = Endpoint()
        self.net.host("192.0.2.66").listenUDP(4000, attacker, interface="192.0.2.66")
        sources = [
            TeredoAddress(GLOBAL_PREFIX, PRIMARY, flags, 4000, "192.0.2.66").to_bytes()
            for flags in range(0, 0x8000, 0x8000 // 50)
        ][:50]
        trailer = encode_trailers((NeighborDiscoveryTrailer(DISCOVERY_SOLICITATION),))
        bMapping = mapping_of(bAddr)
        # The attacker needs B's NAT open toward it: B talks to it first.
        self.tunOf(b).inject(echo(bAddr, sources[0], b"hi"))
        self.net.flush()
        sent = 0
        for tick in range(1000):
            data = ipv6.bubble(sources[tick % len(sources)], bAddr) + trailer
            self.net.inject(("192.0.2.66", 4000), bMapping, data)
            sent += len(data)
            self.net.run(0.01)
        answers = [d for d, _ in attacker.received if discoveryOf(classify(d)) == DISCOVERY_ADVERTISEMENT]
        self.assertGreater(len(answers), 0)
        self.assertLessEqual(len(answers), 6)
        self.assertEqual(b.counters["slr-advertisements"], len(answers))
        self.assertLess(sum(len(d) for d, _ in attacker.received) * 100, sent)
        self.assertGreater(b.tunnel.suppressed["peer-rate"], 900)
