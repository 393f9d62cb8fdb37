"""
The client side of RFC 6081's Sequential Port-Symmetric NAT Extension (section 5.5;
requirements digest X-SEQ-03 .. X-SEQ-09, the Echo Test) on the in-memory network.

  - RFC 6081 section 6.4 packet by packet: A behind a sequential port-symmetric NAT (delta
    1), B behind a port-restricted one.  The example's slips (the digest's D3: the RAs are
    those answering the Echo Test's RSs, the predicted port is the direct bubble's) and D2
    (the port is the mean of the lower and upper ones, rounded down) are read as section
    5.5 (normative) says;
  - the other Figure 1 cells that need it: port-restricted -> sequential and
    port-preserving symmetric -> sequential; the switch off;
  - the Echo Test's rules with the fake opener: three packets in order, nonces, the
    prediction (D2), the Failover Timer (X-SEQ-04), the test ended by a direct bubble on
    the service port (X-SEQ-08), stray and forged RAs.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.peers import PeerList
from teredonode.roles.client import RFC6081_EXTENSIONS
from teredonode.roles.tunnel import CLIENT_POLICY, TeredoTunnel
from teredonode.testing import FakeRandomPorts
from teredonode.wire import ipv6
from teredonode.wire.address import mapping_of
from teredonode.wire.teredo import AuthIndicator, classify, origin_indication
from tests.protocol.test_client import PRIMARY, SECONDARY, echo, raw
from tests.protocol.test_pp_client import PP, PPTestCase, trailersOf
from tests.protocol.test_sns_client import SERVER, teredo

SEQ = "symmetric-sequential"
SECONDARY_SERVER = (SECONDARY, 3544)


class Section64Tests(PPTestCase):
    def test_packetByPacket(self) -> None:
        """
        RFC 6081 section 6.4, A sequential (its NAT hands out 20000, 20001, ... in order: its
        qualification took 20000 and 20001), B port-restricted; A's host sends B a packet.

        A: a direct bubble from its service port (20002, dropped by B's NAT); then, instead
        of the indirect bubble (X-SEQ-05), from a new random port the Echo Test (X-SEQ-06):
        an RS to the server (20003), a direct bubble to B (20004, dropped, but it opens A's
        NAT toward B), an RS to the secondary address (20005).  The two RAs tell 20003 and
        20005 (X-SEQ-09): Random Port = 20004 (D2), and the indirect bubble goes with it
        (X-SEQ-07).  B: a direct bubble to A's embedded mapping (dropped), the second one
        from its service port to A's IPv4 : 20004, which passes: A trusts B on its random
        port (X-SEQ-08, as X-PP-15); B's indirect bubble; A's answer from the random port
        passes B's NAT: B learns A's mapping, 20004, from its nonce (X-SNS-08).
        """
        a, b = self.pair(SEQ, "port-restricted")
        aAddr, bAddr = raw(a.address), raw(b.address)
        aIP, bMapping = mapping_of(aAddr)[0], mapping_of(bAddr)
        self.assertEqual(mapping_of(aAddr), (aIP, 20000))
        self.assertEqual((a.nat, a.portPreserving), ("symmetric", False))
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"hello"))
        self.net.flush()

        def label(endpoint: Any) -> str:
            if endpoint == SERVER:
                return "S"
            if endpoint == SECONDARY_SERVER:
                return "S2"
            if endpoint == bMapping:
                return "B"
            if endpoint[0] == aIP:
                return f"A:{endpoint[1]}"
            return "?"

        def kind(data: bytes) -> str:
            packet = classify(data)
            if packet.is_bubble:
                return "bubble"
            return "RA" if packet.origin is not None else "RS" if packet.auth is not None else "data"

        seen = [(label(d.src), label(d.dst), kind(d.data), trailersOf(d.data)[1]) for d in self.net.capture[start:]]
        self.assertEqual(
            seen[:8],
            [
                ("A:20002", "B", "bubble", None),  # A's direct bubble
                ("A:20003", "S", "RS", None),  # the Echo Test: RS 1,
                ("A:20004", "B", "bubble", None),  # the bubble,
                ("A:20005", "S2", "RS", None),  # RS 2
                ("S", "A:20003", "RA", None),
                ("S2", "A:20005", "RA", None),
                ("A:20000", "S", "bubble", 20004),  # the indirect bubble, predicted port
                ("S", "B", "bubble", 20004),
            ],
        )
        peer = self.peerOf(a, b)
        self.assertEqual(peer.random_port, 20004)
        self.assertEqual((a.counters["seq-echo-tests"], a.counters["seq-predicted"]), (1, 1))
        self.assertEqual(
            seen[8:12],
            [
                ("B", "A:20000", "bubble", None),  # B -> A's embedded mapping: dropped
                ("B", "A:20004", "bubble", None),  # B's second bubble: passes
                ("B", "S", "bubble", None),  # B's indirect bubble
                ("A:20004", "B", "data", None),  # A trusts B (random port): the packet goes
            ],
        )
        self.assertEqual((peer.trusted, peer.direct_rx_random, peer.mapping), (True, True, bMapping))
        # B's own indirect bubble reaches A, whose answer from 20004 teaches B A's mapping.
        bPeer = self.peerOf(b, a)
        self.assertEqual((bPeer.trusted, bPeer.mapping), (True, (aIP, 20004)))
        # The first packet left A (step 7's trust) before A's answer to B's indirect bubble
        # proved 20004 to B: B held it (an endpoint it bubbled, its nonce outstanding) and
        # delivered it once the nonce proved that endpoint, instead of dropping it.
        self.assertEqual(self.tunOf(b).written.count(echo(aAddr, bAddr, b"hello")), 1)
        self.assertEqual(b.counters["held-for-proof"], 1)
        self.assertDropped(b, "mapping-mismatch", 0)
        self.assertEqual(self.exchange(a, b, 2), (True, True))

    def test_extensionsDeclared(self) -> None:
        self.assertIn("SS", RFC6081_EXTENSIONS)


class CellTests(PPTestCase):
    """RFC 6081 Figure 1's SNS+SS cells, on the in-memory NATs."""

    def test_portRestrictedToSequential(self) -> None:
        a, b = self.pair("port-restricted", SEQ)
        self.assertEqual(self.exchange(a, b, 3), (True, True))
        self.assertEqual(b.counters["seq-predicted"], 1)

    def test_sequentialToPortRestricted(self) -> None:
        a, b = self.pair(SEQ, "port-restricted")
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"one"))
        self.net.run(1)
        self.assertEqual(self.exchange(a, b, 2), (True, True))

    def test_portPreservingToSequential(self) -> None:
        a, b = self.pair(PP, SEQ)
        self.assertEqual(self.exchange(a, b, 3), (True, True))
        bPeer = self.peerOf(b, a)
        self.assertEqual(bPeer.direct_rx_random, True)

    def test_randomSymmetricStillSNS(self) -> None:
        """
        Behind a symmetric NAT with random ports, qualification cannot tell it from a
        sequential one (X-SEQ-05): the Echo Test runs and predicts a wrong port, which costs
        one useless bubble; Symmetric NAT Support still reaches cone and address-restricted
        peers both ways (Figure 1's SNS cells).
        """
        for kind in ("full-cone", "address-restricted"):
            for kinds in (("symmetric", kind), (kind, "symmetric")):
                a, b = self.pair(*kinds)
                self.assertEqual(self.exchange(a, b, 4), (True, True), kinds)

    def test_offFails(self) -> None:
        """sequential-port = false: Symmetric NAT Support alone, Figure 1's "No"."""
        for kinds in (("port-restricted", SEQ), (SEQ, "port-restricted")):
            a, b = self.pair(*kinds, sequential_port=False)
            self.assertEqual(self.exchange(a, b), (False, False), kinds)
            self.assertEqual(a.counters["seq-echo-tests"] + b.counters["seq-echo-tests"], 0)


class EchoTestRuleTests(SynchronousTestCase):
    """The Echo Test on the tunnel core with the fake opener."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[bytes, Any]] = []
        self.opener = FakeRandomPorts()
        self.tunnel = TeredoTunnel(
            self.clock, CLIENT_POLICY, PeerList(self.clock.seconds), lambda d, e: self.sent.append((d, e)),
            lambda p: None, random.Random(3).randbytes, randomPorts=self.opener, sequentialPort=True,
        )
        self.me = teredo("198.51.100.1", 20000)
        self.peer = teredo("192.0.2.60", 40001)
        self.tunnel.setIdentity(self.me, SERVER)
        pp = self.tunnel.portPreserving
        assert pp is not None
        pp.setNat(True, False, SECONDARY_SERVER)
        self.tunnel.fromHost(echo(self.me, self.peer))

    def indirect(self) -> list[Any]:
        return [classify(d) for d, e in self.sent if e == SERVER]

    def nonces(self, handle: Any) -> list[bytes]:
        return [d[2:] for d, e in handle.sent if d[:2] == b"RS"]

    def ra(self, nonce: bytes, port: int) -> Any:
        return classify(
            AuthIndicator(nonce).to_bytes() + origin_indication("198.51.100.1", port) + ipv6.bubble(self.peer, self.me)
        )

    def test_X_SEQ_05_06_order(self) -> None:
        """
        X-SEQ-05: no indirect bubble yet; X-SEQ-06: from the random port, RS 1 to the
        server, a direct bubble to the peer's embedded mapping, RS 2 to the secondary
        address, two fresh 8-byte nonces; the Failover Timer armed for 1 s.
        """
        self.assertEqual(self.indirect(), [])
        [handle] = self.opener.opened
        self.assertEqual([e for _, e in handle.sent], [SERVER, mapping_of(self.peer), SECONDARY_SERVER])
        self.assertTrue(classify(handle.sent[1][0]).is_bubble)
        n1, n2 = self.nonces(handle)
        self.assertEqual((len(n1), len(n2)), (8, 8))
        self.assertNotEqual(n1, n2)
        peer = self.tunnel.peers.get(self.peer)
        assert peer is not None
        self.assertEqual(peer.random_port, 0)  # the local port is not the prediction

    def test_X_SEQ_09_prediction_D2(self) -> None:
        """
        X-SEQ-09 and D2: the RAs' origin ports 1200 and 1203 (delta 1.5, say) give Random
        Port 1201, the mean rounded down, and the indirect bubble goes with it (X-SEQ-07).
        A second copy of an RA changes nothing; an RA with a nonce of neither is refused.
        """
        [handle] = self.opener.opened
        n1, n2 = self.nonces(handle)
        handle.deliver(self.ra(b"\x00" * 8, 1100), SERVER)
        self.assertEqual(self.tunnel.drops["random-port-refused"], 1)
        handle.deliver(self.ra(n1, 1200), SERVER)
        handle.deliver(self.ra(n1, 1250), SERVER)  # lower is kept
        self.assertEqual(self.indirect(), [])
        handle.deliver(self.ra(n2, 1203), SECONDARY_SERVER)
        [bubbleOut] = self.indirect()
        self.assertEqual(trailersOf(bubbleOut.to_bytes())[1], 1201)
        self.assertEqual(self.tunnel.counters["seq-predicted"], 1)
        handle.deliver(self.ra(n2, 1203), SECONDARY_SERVER)  # the test is over
        self.assertEqual(self.tunnel.drops["random-port-refused"], 2)
        self.clock.advance(5)
        self.assertEqual(self.tunnel.counters["seq-echo-tests"], 1)

    def test_X_SEQ_04_failover(self) -> None:
        """
        X-SEQ-04: no RA within 1 s: a second Echo Test (fresh nonces); none within 2 s more:
        the indirect bubble without a Random Port trailer (the extension gives up for this
        exchange; retries send plain ones).
        """
        [handle] = self.opener.opened
        first = self.nonces(handle)
        self.clock.advance(1)
        self.assertEqual(self.tunnel.counters["seq-echo-tests"], 2)
        second = self.nonces(handle)[2:]
        self.assertEqual(len(second), 2)
        self.assertFalse(set(first) & set(second))
        self.assertEqual(self.indirect(), [])
        self.clock.advance(2)
        [plain] = self.indirect()
        self.assertEqual(trailersOf(plain.to_bytes())[1], None)
        self.assertEqual(self.tunnel.counters["seq-fallbacks"], 1)
        self.clock.advance(2)  # the RFC 4380 retry: another plain indirect bubble, no test
        self.assertEqual(len(self.indirect()), 2)
        self.assertEqual(self.tunnel.counters["seq-echo-tests"], 2)

    def test_X_SEQ_08_primaryEndsTest(self) -> None:
        """
        X-SEQ-08: a direct bubble accepted on the service port (from the peer's embedded
        mapping) ends the test: timer cancelled, random port closed, no indirect bubble.
        """
        [handle] = self.opener.opened
        self.tunnel.fromPeer(classify(ipv6.bubble(self.peer, self.me)), mapping_of(self.peer))
        peer = self.tunnel.peers.get(self.peer)
        assert peer is not None
        self.assertEqual((peer.trusted, peer.direct_rx_primary), (True, True))
        self.assertTrue(handle.closed)
        self.clock.advance(5)
        self.assertEqual(self.tunnel.counters["seq-echo-tests"], 1)
        self.assertEqual(self.indirect(), [])

    def test_RAFromElsewhereRefused(self) -> None:
        """An RA with the right nonce from anywhere but the two server addresses: refused."""
        [handle] = self.opener.opened
        n1, n2 = self.nonces(handle)
        handle.deliver(self.ra(n1, 1200), ("192.0.2.66", 3544))
        handle.deliver(self.ra(n2, 1202), ("192.0.2.66", 3544))
        self.assertEqual(self.indirect(), [])
        self.assertEqual(self.tunnel.drops["random-port-refused"], 2)

    def test_peerRefreshZeroesFinishedTests(self) -> None:
        """X-SEQ-03: the Peer Refresh Timer zeroes a finished test's ports and counter."""
        self.tunnel.start()
        self.clock.advance(3)  # both tests failed over
        pp = self.tunnel.portPreserving
        assert pp is not None
        test = pp.echoTestFor(self.peer)
        assert test is not None
        self.assertEqual(test.retries, 2)
        self.clock.advance(27)
        self.assertEqual((test.lower, test.upper, test.retries), (0, 0, 0))
        self.tunnel.stop()


class EchoTestRateTests(SynchronousTestCase):
    def test_echoTestRate(self) -> None:
        """
        echo-test-rate: Echo Tests (two RSs to our server each) start at most at that rate
        after a burst of 2, whoever asks; beyond it the indirect bubble goes at once,
        without a predicted port (seq-echo-limited).
        """
        clock = Clock()
        sent: list[tuple[bytes, Any]] = []
        opener = FakeRandomPorts()
        tunnel = TeredoTunnel(
            clock, CLIENT_POLICY, PeerList(clock.seconds), lambda d, e: sent.append((d, e)),
            lambda p: None, random.Random(3).randbytes, randomPorts=opener, sequentialPort=True,
            echoTestRate=0.1,
        )
        me = teredo("198.51.100.1", 20000)
        tunnel.setIdentity(me, SERVER)
        assert tunnel.portPreserving is not None
        tunnel.portPreserving.setNat(True, False, SECONDARY_SERVER)
        for i in range(4):
            tunnel.fromHost(echo(me, teredo("192.0.2.60", 40000 + i)))
        self.assertEqual(tunnel.counters["seq-echo-tests"], 2)
        self.assertEqual(tunnel.counters["seq-echo-limited"], 2)
        plain = [classify(d) for d, e in sent if e == SERVER]
        self.assertEqual([trailersOf(p.to_bytes())[1] for p in plain], [None, None])
        self.assertEqual(len(opener.open), 2)
        clock.advance(10)
        tunnel.fromHost(echo(me, teredo("192.0.2.61", 40000)))
        self.assertEqual(tunnel.counters["seq-echo-tests"], 2 + 2 + 1)  # 2 failovers + 1 new


class ExtensionDependencyTests(PPTestCase):
    """
    X-HP-01, X-PP-01a/b, X-SEQ-01a/b: the extensions are implemented and on by default, and
    each runs only with what it depends on (Symmetric NAT Support for all three; the
    Sequential one also needs Port-Preserving), whatever the settings ask.
    """

    def runs(self, **overrides: Any) -> tuple[bool, bool, bool]:
        """(Port-Preserving, Sequential, Hairpinning) as the tunnel of a new client runs them."""
        client = self.makeClient("port-restricted", start=False, **overrides)
        pp = client.tunnel.portPreserving
        return pp is not None, pp is not None and pp.sequential, client.tunnel.hairpinning

    def test_X_HP_01_X_PP_01a_X_SEQ_01a_onByDefault(self) -> None:
        """X-HP-01, X-PP-01a, X-SEQ-01a: implemented, and on unless turned off."""
        self.assertEqual(self.runs(), (True, True, True))
        self.assertTrue({"SNS", "PP", "SS", "HP"} <= RFC6081_EXTENSIONS)

    def test_X_PP_01b_X_SEQ_01b_X_HP_01_needSymmetricNatSupport(self) -> None:
        """
        X-PP-01b, X-SEQ-01b, X-HP-01: without Symmetric NAT Support none of the three runs
        (their proofs are its nonces).
        """
        self.assertEqual(self.runs(symmetric_nat_support=False), (False, False, False))

    def test_X_SEQ_01b_needsPortPreserving(self) -> None:
        """X-SEQ-01b: the Sequential extension runs only with Port-Preserving; each can be off."""
        self.assertEqual(self.runs(port_preserving=False), (False, False, True))
        self.assertEqual(self.runs(sequential_port=False), (True, False, True))
        self.assertEqual(self.runs(hairpinning=False), (True, True, False))
