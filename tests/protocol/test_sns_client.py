"""
The client side of RFC 6081's Symmetric NAT Support Extension (section 5.2; requirements
digest X-SNS-03 .. X-SNS-10) on the in-memory network.

  - RFC 6081 section 6.1 packet by packet: A behind a port-symmetric NAT, B behind an
    address-restricted one, one server (defect D11: through two servers B's server would
    drop A's indirect bubble under RFC 4380 section 5.3.1 rule 5).  The RFC's text has slips
    (the digest's D3-D5 list those of section 6: "Nonce Advertised", "the status of the
    Teredo client"); where it says Packet 5 "is exactly the same as" Packet 1, section
    5.2.4.2 (normative) makes Packet 5 carry B's nonce and Packet 1 none, which is what is
    checked here.
  - every drop rule (X-SNS-09): no nonce, a wrong one, a stale one; unsolicited bubbles
    from unknown mappings create nothing.
  - X-SNS-06: an indirect bubble without a nonce clears Nonce Received.
  - the switch: with C{symmetric-nat-support} off, bubbles carry no trailer and section
    6.1's exchange fails, as RFC 4380 alone says it must.

RFC 6081 section 6.2 needs the UPnP-Enabled Symmetric NAT Extension (5.3), which this
project does not implement; its SNS half (nonces on bubbles between two symmetric NATs)
is covered by L{TwoSymmetricNATsTests}: nothing is learned without the nonce.
"""

from __future__ import annotations

from typing import Any

from teredonode.roles.client import TeredoClient
from teredonode.wire import ipv6
from teredonode.wire.address import GLOBAL_PREFIX, TeredoAddress, mapping_of
from teredonode.wire.teredo import NonceTrailer, TeredoPacket, classify, encode_trailers, origin_indication
from tests.protocol.test_client import PRIMARY, ClientTestCase, echo, raw

SERVER = (PRIMARY, 3544)


def nonceOf(packet: TeredoPacket) -> bytes | None:
    for trailer in packet.trailers:
        if isinstance(trailer, NonceTrailer):
            return trailer.nonce
    return None


def teredo(ip: str, port: int) -> bytes:
    return TeredoAddress(GLOBAL_PREFIX, PRIMARY, 0, port, ip).to_bytes()


def nonceTrailer(nonce: bytes) -> bytes:
    return encode_trailers((NonceTrailer(nonce),))


class SNSTestCase(ClientTestCase):
    def pair(self, **overrides: Any) -> tuple[TeredoClient, TeredoClient]:
        """
        A behind a port-symmetric NAT (qualified with allow-symmetric), B behind an
        address-restricted one, both on our server.
        """
        a = self.makeClient("symmetric", seed=1, allow_symmetric=True, **overrides)
        b = self.makeClient("address-restricted", seed=2, **overrides)
        self.net.flush()
        self.assertEqual((a.state, a.nat), ("qualified", "symmetric"))
        self.assertEqual(b.state, "qualified")
        return a, b

    def bubbles(self, since: int, a: TeredoClient, b: TeredoClient) -> list[tuple[str, str, str, bytes | None]]:
        """
        The bubbles on the Internet since capture index C{since}, as (from, to, kind, nonce):
        from and to are "A" (A's public address, any port), "B" (B's embedded mapping) or
        "S" (the server); kind is "indirect" for a bubble to or from the server.
        """
        aPublic = mapping_of(raw(a.address))[0]
        bMapping = mapping_of(raw(b.address))
        out = []
        for d in self.net.capture[since:]:
            try:
                packet = classify(d.data)
            except Exception:
                continue
            if not packet.is_bubble:
                continue
            who = "A" if d.src[0] == aPublic else "B" if d.src == bMapping else "S" if d.src == SERVER else "?"
            to = "A" if d.dst[0] == aPublic else "B" if d.dst == bMapping else "S" if d.dst == SERVER else "?"
            kind = "indirect" if SERVER in (d.src, d.dst) else "direct"
            out.append((who, to, kind, nonceOf(packet)))
        return out


class Section61Tests(SNSTestCase):
    def test_packetByPacket(self) -> None:
        """
        RFC 6081 section 6.1, A port-symmetric, B address-restricted; A's host sends B a packet.

        Packet 1: A's direct bubble to B's embedded mapping, no nonce (X-SNS-05), from a new
        port (dropped by B's NAT).  Packet 2: A's indirect bubble through the server, a
        fresh nonce NA (X-SNS-03).  Packet 3: B's direct bubble echoing NA (X-SNS-04) to the
        origin, dropped by A's NAT.  Packet 4: B's indirect bubble with its own nonce NB.
        Packet 5: A's answer from the same new port, echoing NB: B's NAT lets it in, B
        accepts it (X-SNS-08) and records that port (X-SNS-10).  Packet 6 (A's retry, 2 s
        later): another indirect bubble; packet 7: B's answer to the learned mapping passes
        A's NAT; A trusts B, and the queued packet flows, answered both ways.  (A's NAT gives
        random ports: with the Sequential extension on, A would run its Echo Test first;
        section 6.1 is Symmetric NAT Support alone.)
        """
        a, b = self.pair(sequential_port=False)
        aAddr, bAddr = raw(a.address), raw(b.address)
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"hello"))
        self.net.flush()
        first = self.bubbles(start, a, b)
        # 1, 2 (to the server and on to B), 3, 4 (to the server and on to A), 5
        kinds = [(w, t, k) for w, t, k, _ in first]
        self.assertEqual(
            kinds,
            [
                ("A", "B", "direct"),  # 1
                ("A", "S", "indirect"),  # 2
                ("S", "B", "indirect"),
                ("B", "A", "direct"),  # 3
                ("B", "S", "indirect"),  # 4
                ("S", "A", "indirect"),
                ("A", "B", "direct"),  # 5
            ],
        )
        nA, nB = first[1][3], first[4][3]
        assert nA is not None and nB is not None
        self.assertEqual([n for *_, n in first], [None, nA, nA, nA, nB, nB, nB])
        self.assertNotEqual(nA, nB)
        # What the NATs did: 1 and 3 dropped, 5 let in.
        captured = [d for d in self.net.capture[start:] if d.data[:1] == b"\x60" or d.data[:2] == b"\x00\x00"]
        aToB = [d for d in captured if d.dst == mapping_of(bAddr)]
        self.assertEqual(aToB[0].src, aToB[-1].src)  # 1 and 5: one port toward B ...
        self.assertNotEqual(aToB[0].src, mapping_of(aAddr))  # ... not the embedded one
        bPeerA = b.tunnel.peers.get(aAddr)
        assert bPeerA is not None
        self.assertTrue(bPeerA.trusted)
        self.assertEqual(bPeerA.mapping, aToB[0].src)
        self.assertEqual(b.counters["sns-learned"], 1)
        aPeerB = a.tunnel.peers.get(bAddr)
        assert aPeerB is not None
        self.assertFalse(aPeerB.trusted)  # one way only so far (step 8)
        self.assertEqual(aPeerB.nonce_received, nB)
        self.assertEqual(self.tunOf(b).written, [])
        # Packets 6 and 7.
        mark = len(self.net.capture)
        self.net.run(2)
        retry = self.bubbles(mark, a, b)
        self.assertEqual(
            [(w, t, k) for w, t, k, _ in retry],
            [
                ("A", "B", "direct"),  # the retry's direct bubble, echoing NB (X-SNS-04)
                ("A", "S", "indirect"),  # 6
                ("S", "B", "indirect"),
                ("B", "A", "direct"),  # 7, to the learned mapping
            ],
        )
        nA2 = retry[1][3]
        self.assertEqual([n for *_, n in retry], [nB, nA2, nA2, nA2])
        self.assertNotEqual(nA2, nA)
        seven = [d for d in self.net.capture[mark:] if d.src == mapping_of(bAddr)][-1]
        self.assertEqual(seven.dst, bPeerA.mapping)
        self.assertTrue(aPeerB.trusted)
        self.assertEqual(aPeerB.mapping, mapping_of(bAddr))
        self.assertEqual(self.tunOf(b).written, [echo(aAddr, bAddr, b"hello")])
        # And back.
        self.tunOf(b).inject(echo(bAddr, aAddr, b"back", reply=True))
        self.net.flush()
        self.assertIn(echo(bAddr, aAddr, b"back", reply=True), self.tunOf(a).written)

    def test_withoutExtensionNoWay(self) -> None:
        """
        With symmetric-nat-support off on both, no bubble carries a trailer and A's
        answers, from a port its address does not embed, are dropped by B as spoofed:
        nothing goes through (RFC 4380 section 5.2.1: no service behind a symmetric NAT).
        """
        a, b = self.pair(symmetric_nat_support=False)
        aAddr, bAddr = raw(a.address), raw(b.address)
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"hello"))
        self.net.run(10)
        self.assertTrue(all(n is None for *_, n in self.bubbles(start, a, b)))
        self.assertEqual(self.tunOf(b).written, [])
        self.assertEqual(b.counters["sns-learned"], 0)


class DropRuleTests(SNSTestCase):
    """
    X-SNS-09 at a client: B has sent A an indirect bubble (Nonce Sent); direct bubbles from
    a mapping A's address does not embed must echo exactly that nonce.
    """

    def setUpPending(self) -> tuple[TeredoClient, bytes, bytes, Any]:
        """
        B (behind a full-cone NAT so the test's bubbles reach it) has a packet queued for a
        fake A and has bubbled it; returns B, A's address, B's Nonce Sent and an endpoint
        on A's public address but another port.
        """
        b = self.makeClient("full-cone", seed=2)
        self.net.flush()
        aIP, aPort = "192.0.2.70", 40000
        aAddr = teredo(aIP, aPort)
        self.tunOf(b).inject(echo(raw(b.address), aAddr, b"to A"))
        self.net.flush()
        peer = b.tunnel.peers.get(aAddr)
        assert peer is not None and peer.nonce_sent is not None
        return b, aAddr, peer.nonce_sent, (aIP, aPort + 1)

    def sendToB(self, b: TeredoClient, src: Any, data: bytes) -> None:
        self.net.inject(src, mapping_of(raw(b.address)), data)
        self.net.flush()

    def assertNotMoved(self, b: TeredoClient, aAddr: bytes, reason: str = "nonce-mismatch", count: int = 1) -> None:
        self.assertDropped(b, reason, count)
        peer = b.tunnel.peers.get(aAddr)
        assert peer is not None
        self.assertFalse(peer.trusted)
        self.assertEqual(b.counters["sns-learned"], 0)
        self.assertEqual(b.counters["released"], 0)

    def test_rightNonceAccepted(self) -> None:
        b, aAddr, nonce, other = self.setUpPending()
        self.sendToB(b, other, ipv6.bubble(aAddr, raw(b.address)) + nonceTrailer(nonce))
        peer = b.tunnel.peers.get(aAddr)
        assert peer is not None
        self.assertEqual((peer.trusted, peer.mapping, peer.nonce_sent), (True, other, None))
        self.assertEqual(b.counters["sns-learned"], 1)
        self.assertEqual(b.counters["released"], 1)

    def test_noNonce(self) -> None:
        b, aAddr, nonce, other = self.setUpPending()
        self.sendToB(b, other, ipv6.bubble(aAddr, raw(b.address)))
        self.assertNotMoved(b, aAddr)

    def test_wrongNonce(self) -> None:
        b, aAddr, nonce, other = self.setUpPending()
        self.sendToB(b, other, ipv6.bubble(aAddr, raw(b.address)) + nonceTrailer(bytes(x ^ 0x80 for x in nonce)))
        self.assertNotMoved(b, aAddr)

    def test_staleNonce(self) -> None:
        """
        After B's retry sent a new nonce, the first one no longer counts.
        """
        b, aAddr, nonce, other = self.setUpPending()
        self.net.run(2)
        peer = b.tunnel.peers.get(aAddr)
        assert peer is not None and peer.nonce_sent not in (None, nonce)
        self.sendToB(b, other, ipv6.bubble(aAddr, raw(b.address)) + nonceTrailer(nonce))
        self.assertNotMoved(b, aAddr)

    def test_destinationEchoIsNoProofForAClient(self) -> None:
        """
        A client's bubbles come from its Teredo address: a bubble to anything else is not
        for it (C{wrong-destination}); the source-echo proof is a relay's alone.
        """
        b, aAddr, nonce, other = self.setUpPending()
        self.sendToB(b, other, ipv6.bubble(aAddr, raw(b.address)[:12] + nonce))
        self.assertNotMoved(b, aAddr, "wrong-destination")

    def test_dataWithNonceProvesNothing(self) -> None:
        b, aAddr, nonce, other = self.setUpPending()
        self.sendToB(b, other, echo(aAddr, raw(b.address), b"data") + nonceTrailer(nonce))
        self.assertNotMoved(b, aAddr, "mapping-mismatch")
        self.assertEqual(self.tunOf(b).written, [])

    def test_unsolicitedCreatesNothing(self) -> None:
        """
        Bubbles with nonces from mappings that Teredo sources do not embed, for peers B
        never bubbled: dropped as spoofed, no entry, nothing sent back.
        """
        b = self.makeClient("full-cone", seed=2)
        self.net.flush()
        before = len(self.net.capture)
        for i in range(20):
            src = teredo("192.0.2.80", 30000 + i)
            self.sendToB(b, ("192.0.2.80", 50000 + i), ipv6.bubble(src, raw(b.address)) + nonceTrailer(bytes(4)))
        self.assertDropped(b, "mapping-mismatch", 20)
        self.assertEqual(len(b.tunnel.peers), 0)
        self.assertEqual([d for d in self.net.capture[before:] if d.src == mapping_of(raw(b.address))], [])


class NonceReceivedTests(SNSTestCase):
    def test_indirectWithoutNonceClears(self) -> None:
        """
        X-SNS-06: a nonce-bearing indirect bubble sets Nonce Received, echoed by our direct
        bubbles (X-SNS-04); a later one without a nonce clears it, and the answer carries none.
        """
        b = self.makeClient("full-cone", seed=2)
        self.net.flush()
        peerAddr = teredo("192.0.2.90", 40000)
        src = mapping_of(peerAddr)
        endpoint = self.publicEndpoint(src[0], src[1])
        bubbleIn = origin_indication(*src) + ipv6.bubble(peerAddr, raw(b.address))
        self.net.inject(SERVER, mapping_of(raw(b.address)), bubbleIn + nonceTrailer(b"\x01\x02\x03\x04"))
        self.net.flush()
        peer = b.tunnel.peers.get(peerAddr)
        assert peer is not None
        self.assertEqual(peer.nonce_received, b"\x01\x02\x03\x04")
        answers = [classify(d) for d, s in endpoint.received if s != SERVER]
        self.assertEqual([nonceOf(p) for p in answers], [b"\x01\x02\x03\x04"])
        # Section 6.1 packet 4: our own indirect bubble, with our nonce, came through the server.
        ours = [classify(d) for d, s in endpoint.received if s == SERVER]
        self.assertEqual([nonceOf(p) for p in ours], [peer.nonce_sent])
        self.clock.advance(3)
        self.net.inject(SERVER, mapping_of(raw(b.address)), bubbleIn)
        self.net.flush()
        self.assertIsNone(peer.nonce_received)
        answers = [classify(d) for d, s in endpoint.received if s != SERVER]
        self.assertEqual(len(answers), 2)
        self.assertIsNone(nonceOf(answers[-1]))


class TwoSymmetricNATsTests(SNSTestCase):
    def test_noLearningWithoutTheNonce(self) -> None:
        """
        Both clients behind port-symmetric NATs, no UPnP (section 6.2 without its UPnP
        half): the nonces are exchanged through the server, but every direct bubble is
        dropped by the other side's NAT, so nothing is learned and no data flows; the
        exchange ends within section 5.2.6's limits.
        """
        a = self.makeClient("symmetric", seed=1, allow_symmetric=True)
        b = self.makeClient("symmetric", seed=2, allow_symmetric=True)
        self.net.flush()
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"hello"))
        self.net.run(20)
        self.assertEqual(self.tunOf(b).written, [])
        self.assertEqual(a.counters["sns-learned"] + b.counters["sns-learned"], 0)
        self.assertEqual(a.counters["probes-failed"], 1)
        self.assertLessEqual(a.counters["bubbles-indirect"], 4)
        self.assertLessEqual(b.counters["bubbles-indirect"], 4)


class BudgetTests(SNSTestCase):
    def test_extraIndirectBubblesPaidFromInboundBudget(self) -> None:
        """
        Forged nonce-bearing indirect bubbles from 20 Teredo sources, through our server's
        endpoint: the answers and our own indirect bubbles together stay within the
        inbound probe budget (burst 4: two answers, two indirect bubbles), and the rest is
        counted as suppressed.
        """
        b = self.makeClient("full-cone", seed=2, inbound_probe_rate=0.001, inbound_probe_burst=4)
        self.net.flush()
        bMapping = mapping_of(raw(b.address))
        before = len(self.net.capture)
        for i in range(20):
            src = teredo("192.0.2.100", 20000 + i)
            packet = origin_indication(*mapping_of(src)) + ipv6.bubble(src, raw(b.address))
            self.net.inject(SERVER, bMapping, packet + nonceTrailer(i.to_bytes(4, "big")))
        self.net.flush()
        sent = [d for d in self.net.capture[before:] if d.src == bMapping]
        self.assertEqual(len(sent), 4)
        self.assertEqual((b.counters["bubbles-answered"], b.counters["bubbles-indirect"]), (2, 2))
        self.assertEqual(b.status()["peers"]["probes-suppressed"]["global-budget"], 18)
        self.assertEqual(len(b.tunnel.peers), 2)
