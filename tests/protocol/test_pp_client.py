"""
The client side of RFC 6081's Port-Preserving Symmetric NAT Extension (section 5.4;
requirements digest X-PP-03 .. X-PP-16) on the in-memory network.

  - RFC 6081 section 6.3 packet by packet: A and B behind port-preserving symmetric NATs,
    one server (defect D11 would need the server's relaxation otherwise).  The example's
    slips (the digest's D4: "Nonce Advertised" is Nonce Received, the port advertised goes
    to Peer Random Port; D5: it is the peer entry that becomes trusted) are read as the
    normative text says; the retries' own direct bubbles, which the figure leaves out, are
    checked too;
  - the Figure 1 cells this extension opens, both ways: port-restricted <-> port-preserving
    symmetric (with the module docstring's two [INFERRED] variants), and the switch off;
  - every rule: X-PP-06 (flags), X-PP-07, -08, -09 (both trailer types, D1), -10, -11 (store,
    ignore, replace), -12 .. -16, the Peer Refresh Timer (X-PP-03, -04, -05) on a Clock;
  - bounds and hostile input: the cap on open random ports, ports closed with their peer
    and at shutdown, strangers and garbage on a random port.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from teredonode.interfaces import IRandomPort, IRandomPorts
from teredonode.peers import Peer, PeerList
from teredonode.roles.client import RFC6081_EXTENSIONS, TeredoClient
from teredonode.roles.randomport import MAX_REFRESHES, PEER_REFRESH_INTERVAL, RANDOM_PORT_RANGE
from teredonode.roles.tunnel import CLIENT_POLICY, TeredoTunnel
from teredonode.testing import FakeRandomPorts
from teredonode.wire import ipv6
from teredonode.wire.address import mapping_of
from teredonode.wire.teredo import (
    TRAILER_RANDOM_PORT_RFC,
    NonceTrailer,
    RandomPortTrailer,
    classify,
    encode_trailers,
    origin_indication,
)
from tests.protocol.test_client import ClientTestCase, echo, raw
from tests.protocol.test_sns_client import SERVER, teredo

PP = "symmetric-port-preserving"


def trailersOf(data: bytes) -> tuple[bytes | None, int | None]:
    """(nonce, random port) of a captured payload's trailers."""
    packet = classify(data)
    nonce = port = None
    for t in packet.trailers:
        if isinstance(t, NonceTrailer):
            nonce = t.nonce
        elif isinstance(t, RandomPortTrailer):
            port = t.port
    return nonce, port


def randomPortTrailer(port: int, type: int = 2) -> bytes:
    return encode_trailers((RandomPortTrailer(port, type),))


class PPTestCase(ClientTestCase):
    def pair(self, kindA: str = PP, kindB: str = PP, **overrides: Any) -> tuple[TeredoClient, TeredoClient]:
        a = self.makeClient(kindA, seed=1, **overrides)
        b = self.makeClient(kindB, seed=2, **overrides)
        self.net.flush()
        self.assertEqual((a.state, b.state), ("qualified", "qualified"))
        return a, b

    def peerOf(self, client: TeredoClient, other: TeredoClient | bytes) -> Peer:
        address = other if isinstance(other, bytes) else raw(other.address)
        peer = client.tunnel.peers.get(address)
        assert peer is not None
        return peer

    def boundPorts(self, client: TeredoClient) -> set[int]:
        return {port for (_, port) in self.hostOf(client).ports}

    def randomPortHandle(self, client: TeredoClient, peer: bytes) -> Any:
        pp = client.tunnel.portPreserving
        assert pp is not None
        handle = pp.portFor(peer)
        assert handle is not None
        return handle

    def onRandomPort(self, client: TeredoClient, peer: bytes, data: bytes, src: Any) -> None:
        """C{data} arriving from C{src} on the random port C{client} opened for C{peer}."""
        number = self.randomPortHandle(client, peer).port
        socket = next(p for (_, n), p in self.hostOf(client).ports.items() if n == number)
        socket.receive(data, src)
        self.net.flush()

    def exchange(self, a: TeredoClient, b: TeredoClient, seconds: float = 6) -> tuple[bool, bool]:
        """A pings B, B answers: did each arrive?"""
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"there"))
        self.net.run(seconds)
        there = echo(aAddr, bAddr, b"there") in self.tunOf(b).written
        self.tunOf(b).inject(echo(bAddr, aAddr, b"back", reply=True))
        self.net.run(seconds)
        back = echo(bAddr, aAddr, b"back", reply=True) in self.tunOf(a).written
        return there, back


class FlagsTests(PPTestCase):
    def test_flagsFromQualification(self) -> None:
        """
        X-PP-05, X-PP-06: the flags start FALSE; behind a port-preserving symmetric NAT
        qualification sets both, behind a random-port symmetric NAT only Symmetric, behind a
        port-restricted one neither Symmetric nor (random ports) Port-Preserving.
        """
        client = self.makeClient(PP, start=False)
        pp = client.tunnel.portPreserving
        assert pp is not None
        self.assertEqual((pp.symmetric, pp.preserving), (False, False))
        client.privilegedStartService()
        client.startService()
        self.addCleanup(client.stopService)
        self.net.flush()
        self.assertEqual((pp.symmetric, pp.preserving), (True, True))
        self.assertEqual(client.status()["nat-flags"], {"symmetric": True, "port-preserving": True})
        for kind, flags in (("symmetric", (True, False)), ("port-restricted", (False, False))):
            other = self.makeClient(kind, seed=5)
            self.net.flush()
            opp = other.tunnel.portPreserving
            assert opp is not None
            self.assertEqual((opp.symmetric, opp.preserving), flags, kind)

    def test_extensionsDeclared(self) -> None:
        """The matrix holds the cells needing PP to working (teredo lab matrix)."""
        self.assertIn("PP", RFC6081_EXTENSIONS)

    def test_interfaces(self) -> None:
        """The client and the fake offer the same random-port seam (IRandomPorts)."""
        client = self.makeClient(PP)
        self.net.flush()
        verifyObject(IRandomPorts, client)
        verifyObject(IRandomPorts, FakeRandomPorts())
        handle = client.openRandomPort(40000, lambda packet, addr: None)
        assert handle is not None
        verifyObject(IRandomPort, handle)
        self.assertIsNone(client.openRandomPort(40000, lambda packet, addr: None))  # in use
        handle.close()
        handle.close()
        self.assertNotIn(40000, self.boundPorts(client))


class Section63Tests(PPTestCase):
    def test_packetByPacket(self) -> None:
        """
        RFC 6081 section 6.3: A and B behind port-preserving symmetric NATs; A's host sends B
        a packet.  Ra, Rb: the random ports.

        1: A, service port -> B's embedded mapping, no trailer (X-SNS-05), dropped.  2: the
        indirect bubble with Nonce nA and Random Port Ra (X-PP-08, X-PP-09).  3: B, service
        port -> A's embedded mapping [nA], dropped.  4: B, from Rb (opened now, step 11) ->
        A's IPv4 : Ra [nA][Rb] (X-PP-10), dropped, but B's NAT now lets A:Ra in.  5: B's
        indirect bubble [nB][Rb].  6: A, service port -> B's embedded mapping [nB],
        dropped.  7: A, from Ra -> B's IPv4 : Rb [nB][Ra]: passes; B trusts A at A:Ra on its
        random port (X-PP-15).  After 2 s, A's retry: its direct bubbles again and 8, the
        indirect bubble [nA'][Ra]; 9: B answers from Rb (A is trusted there) [nA'], which
        passes: A trusts B at B:Rb (X-PP-15) and the queued packet goes from Ra.
        """
        a, b = self.pair()
        aAddr, bAddr = raw(a.address), raw(b.address)
        aMapping, bMapping = mapping_of(aAddr), mapping_of(bAddr)
        aIP, bIP = aMapping[0], bMapping[0]
        start = len(self.net.capture)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"hello"))
        self.net.flush()
        aPeer, bPeer = self.peerOf(a, b), self.peerOf(b, a)
        ra, rb = aPeer.random_port, bPeer.random_port
        low, high = RANDOM_PORT_RANGE
        self.assertTrue(low <= ra <= high and low <= rb <= high)
        self.assertIn(ra, self.boundPorts(a))  # listening on it (X-PP-08)
        self.assertIn(rb, self.boundPorts(b))

        def label(endpoint: Any, local: bool = False) -> str:
            ip, port = endpoint
            if endpoint == SERVER:
                return "S"
            who = "A" if ip == aIP else "B" if ip == bIP else "?"
            if endpoint in (aMapping, bMapping):
                return who
            if port == (ra if who == "A" else rb):
                return who + "r"
            return who + "*"  # another mapping of the service port (symmetric NAT)

        def packets(since: int) -> list[tuple[str, str, bytes | None, int | None]]:
            return [(label(d.src), label(d.dst), *trailersOf(d.data)) for d in self.net.capture[since:]]

        first = packets(start)
        nA, nB = first[1][2], first[5][2]
        assert nA is not None and nB is not None
        self.assertEqual(
            first,
            [
                ("A*", "B", None, None),  # 1
                ("A", "S", nA, ra),  # 2
                ("S", "B", nA, ra),
                ("B*", "A", nA, None),  # 3
                ("Br", "Ar", nA, rb),  # 4
                ("B", "S", nB, rb),  # 5
                ("S", "A", nB, rb),
                ("A*", "B", nB, None),  # 6
                ("Ar", "Br", nB, ra),  # 7
            ],
        )
        # D4: B kept A's nonce as Nonce Received and its port as Peer Random Port (and A B's).
        self.assertEqual((aPeer.nonce_received, aPeer.peer_random_port), (nB, rb))
        self.assertEqual(bPeer.peer_random_port, ra)
        # What the NATs did: 1, 3, 4 and 6 dropped; 7 passed; B trusts A on its random port.
        self.assertEqual(
            (bPeer.trusted, bPeer.mapping, bPeer.direct_rx_random, bPeer.direct_rx_primary),
            (True, (aIP, ra), True, False),
        )
        self.assertEqual(b.counters["pp-learned"], 1)
        self.assertFalse(aPeer.trusted)
        self.assertEqual(self.tunOf(b).written, [])
        # The retry: 8 and 9.
        mark = len(self.net.capture)
        self.net.run(2)
        retry = packets(mark)
        nA2 = retry[1][2]
        assert nA2 is not None and nA2 not in (nA, nB)
        self.assertEqual(
            retry,
            [
                ("A*", "B", nB, None),  # the retry's direct bubble (X-SNS-04)
                ("A", "S", nA2, ra),  # 8
                ("Ar", "Br", nB, ra),  # the retry's second direct bubble (X-PP-10)
                ("S", "B", nA2, ra),
                ("Br", "Ar", nA2, None),  # 9, from B's random port
                ("Ar", "Br", None, None),  # the queued packet, from A's random port
            ],
        )
        self.assertEqual(
            (aPeer.trusted, aPeer.mapping, aPeer.direct_rx_random), (True, (bIP, rb), True)
        )
        self.assertEqual(self.tunOf(b).written, [echo(aAddr, bAddr, b"hello")])
        # And back, from B's random port to A's.
        mark = len(self.net.capture)
        self.tunOf(b).inject(echo(bAddr, aAddr, b"back", reply=True))
        self.net.flush()
        self.assertEqual(packets(mark), [("Br", "Ar", None, None)])
        self.assertIn(echo(bAddr, aAddr, b"back", reply=True), self.tunOf(a).written)
        # X-PP-07: the Last Data Packet Sent Timestamp of each.
        self.assertIsNotNone(aPeer.last_data_tx)
        self.assertEqual(bPeer.last_data_tx, self.clock.seconds())

    def test_withoutExtensionNoWay(self) -> None:
        """
        port-preserving = false on both: no Random Port trailer, no random port, nothing
        arrives (RFC 6081 Figure 1: two symmetric NATs without it are "No").
        """
        a, b = self.pair(port_preserving=False)
        start = len(self.net.capture)
        self.assertEqual(self.exchange(a, b), (False, False))
        self.assertTrue(all(trailersOf(d.data)[1] is None for d in self.net.capture[start:]))
        self.assertIsNone(a.tunnel.portPreserving)
        self.assertEqual(a.counters["pp-ports-opened"] + b.counters["pp-ports-opened"], 0)

    def test_trailerType5(self) -> None:
        """D1: random-port-type = 5 sends the type section 4.5 prints; the peer reads both."""
        a, b = self.pair(random_port_type=5)
        start = len(self.net.capture)
        self.assertEqual(self.exchange(a, b), (True, True))
        types = {
            t.type
            for d in self.net.capture[start:]
            for t in classify(d.data).trailers
            if isinstance(t, RandomPortTrailer)
        }
        self.assertEqual(types, {TRAILER_RANDOM_PORT_RFC})


class PortRestrictedTests(PPTestCase):
    """
    RFC 6081 Figure 1: port-restricted <-> port-preserving symmetric, "SNS+PP", both ways
    (the module docstring's [INFERRED] variants of X-PP-10), within the first retry.
    """

    def test_portRestrictedToPortPreserving(self) -> None:
        a, b = self.pair("port-restricted", PP)
        self.assertEqual(self.exchange(a, b, 3), (True, True))
        bPeer = self.peerOf(b, a)
        self.assertEqual((bPeer.direct_rx_random, bPeer.mapping), (True, mapping_of(raw(a.address))))
        aPeer = self.peerOf(a, b)
        self.assertEqual(aPeer.mapping, (mapping_of(raw(b.address))[0], bPeer.random_port))
        self.assertEqual(a.counters["pp-ports-opened"], 0)  # a cone mapping needs none

    def test_portPreservingToPortRestricted(self) -> None:
        a, b = self.pair(PP, "port-restricted")
        self.assertEqual(self.exchange(a, b, 3), (True, True))
        aPeer = self.peerOf(a, b)
        self.assertEqual((aPeer.direct_rx_random, aPeer.mapping), (True, mapping_of(raw(b.address))))
        self.assertEqual(self.peerOf(b, a).mapping, (mapping_of(raw(a.address))[0], aPeer.random_port))

    def test_offFails(self) -> None:
        for kinds in (("port-restricted", PP), (PP, "port-restricted")):
            a, b = self.pair(*kinds, port_preserving=False)
            self.assertEqual(self.exchange(a, b), (False, False), kinds)

    def test_symmetricNotPreservingOpensNone(self) -> None:
        """
        Behind a symmetric NAT with random ports (not port-preserving), X-PP-08 does not
        apply: no random port, no trailer (that NAT is the Sequential extension's, off here).
        """
        a, b = self.pair("symmetric", "port-restricted", sequential_port=False)
        start = len(self.net.capture)
        self.exchange(a, b)
        self.assertEqual(a.counters["pp-ports-opened"], 0)
        sent = [d for d in self.net.capture[start:] if d.src[0] == mapping_of(raw(a.address))[0]]
        self.assertTrue(sent)
        self.assertTrue(all(trailersOf(d.data)[1] is None for d in sent))


class ReceiveRuleTests(PPTestCase):
    def established(self) -> tuple[TeredoClient, TeredoClient]:
        a, b = self.pair()
        self.assertEqual(self.exchange(a, b, 3), (True, True))
        return a, b

    def test_X_PP_11_storeIgnoreReplace(self) -> None:
        """
        X-PP-11: the first advertised port is stored; the same one, or another while there
        was traffic in the last 30 s, is ignored; another after 30 s of silence replaces it,
        and (Port-Preserving flag) our own random port is given up.
        """
        b = self.makeClient(PP, seed=2)
        self.net.flush()
        peerAddr = teredo("192.0.2.90", 40000)
        bMapping = mapping_of(raw(b.address))

        def indirect(port: int) -> None:
            packet = origin_indication(*mapping_of(peerAddr)) + ipv6.bubble(peerAddr, raw(b.address))
            nonce = encode_trailers((NonceTrailer(port.to_bytes(4, "big")),))
            self.net.inject(SERVER, bMapping, packet + nonce + randomPortTrailer(port))
            self.net.flush()

        indirect(41000)
        peer = self.peerOf(b, peerAddr)
        self.assertEqual(peer.peer_random_port, 41000)
        self.assertNotEqual(peer.random_port, 0)  # B opened its own to answer (section 6.3 packet 4)
        own = peer.random_port
        self.clock.advance(3)
        indirect(41001)  # within 30 s of our bubbles: ignored
        self.assertEqual((peer.peer_random_port, peer.random_port), (41000, own))
        now = self.clock.seconds()
        peer.last_tx = peer.last_rx = now - 31
        peer.bubbles = []
        indirect(41001)
        self.assertEqual(peer.peer_random_port, 41001)
        self.assertNotIn(own, self.boundPorts(b))
        self.assertGreaterEqual(b.counters["pp-ports-closed"], 1)

    def test_X_PP_12_primaryClosesRandomPort(self) -> None:
        """
        X-PP-12: behind a port-preserving symmetric NAT, toward a full-cone peer, Symmetric
        NAT Support alone gets through: the peer's bubble arrives on the service port, the
        peer becomes trusted there (Direct Receive on Primary) and the random port closes.
        """
        a, b = self.pair(PP, "full-cone")
        self.assertEqual(self.exchange(a, b, 3), (True, True))
        peer = self.peerOf(a, b)
        self.assertEqual((peer.direct_rx_primary, peer.direct_rx_random, peer.random_port), (True, False, 0))
        self.assertEqual((a.counters["pp-ports-opened"], a.counters["pp-ports-closed"]), (1, 1))
        self.assertEqual(a.tunnel.portPreserving.openPorts(), 0)  # type: ignore[union-attr]

    def test_X_PP_13_changedMappingAfterSilence(self) -> None:
        """
        X-PP-13: a peer trusted on the service port sends a bubble from another, unproven
        mapping: within 30 s of traffic it is dropped; after 30 s of silence both ways the
        peer is trusted no more and gets an indirect bubble.
        """
        a, b = self.pair(PP, "full-cone")
        self.exchange(a, b, 3)
        peer = self.peerOf(a, b)
        aAddr, bAddr = raw(a.address), raw(b.address)
        other = (mapping_of(bAddr)[0], 50001)
        a.datagramReceived(ipv6.bubble(bAddr, aAddr), other)
        self.assertTrue(peer.trusted)
        self.assertDropped(a, "mapping-mismatch")
        now = self.clock.seconds()
        peer.last_tx = peer.last_rx = now - 31
        before = a.counters["bubbles-indirect"]
        a.datagramReceived(ipv6.bubble(bAddr, aAddr), other)
        self.assertFalse(peer.trusted)
        self.assertEqual((peer.direct_rx_primary, a.counters["pp-resets"]), (False, 1))
        self.assertEqual(a.counters["bubbles-indirect"], before + 1)
        self.assertDropped(a, "mapping-mismatch")  # not counted again

    def test_X_PP_14_movesToPrimary(self) -> None:
        """
        X-PP-14: a peer trusted on our random port reaches our service port from its
        mapping: Direct Receive on Primary, the random port closes, traffic leaves from the
        service port from then on.
        """
        a, b = self.established()
        peer = self.peerOf(a, b)
        mapping, ra = peer.mapping, peer.random_port
        assert mapping is not None
        a.datagramReceived(ipv6.bubble(raw(b.address), raw(a.address)), mapping)
        self.assertEqual(
            (peer.trusted, peer.direct_rx_primary, peer.direct_rx_random, peer.random_port),
            (True, True, False, 0),
        )
        self.assertEqual(a.counters["pp-moved"], 1)
        mark = len(self.net.capture)
        self.tunOf(a).inject(echo(raw(a.address), raw(b.address), b"now"))
        self.net.flush()
        out = [d for d in self.net.capture[mark:] if d.dst == mapping]
        self.assertEqual(len(out), 1)
        self.assertNotEqual(out[0].src[1], ra)  # from the service port now

    def test_X_PP_15_needsProof(self) -> None:
        """
        X-PP-15 (with the proof the module requires): on a random port, an untrusted peer's
        bubble from an unembedded mapping must carry our last nonce; the wrong peer, a wrong
        nonce, a data packet: refused, nothing learned.
        """
        a, b = self.pair()
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"hello"))
        self.net.flush()
        # Before A's retry: A's entry for B is untrusted, with a pending nonce.
        peer = self.peerOf(a, b)
        self.assertFalse(peer.trusted)
        nonce = peer.nonce_sent
        assert nonce is not None
        src = ("192.0.2.99", 5555)
        stranger = teredo("192.0.2.99", 5555)
        for data in (
            ipv6.bubble(bAddr, aAddr),  # no nonce
            ipv6.bubble(bAddr, aAddr) + encode_trailers((NonceTrailer(bytes(4)),)),  # wrong
            ipv6.bubble(stranger, aAddr) + encode_trailers((NonceTrailer(nonce),)),  # not B
            ipv6.bubble(bAddr, stranger) + encode_trailers((NonceTrailer(nonce),)),  # not to A
            echo(bAddr, aAddr) + encode_trailers((NonceTrailer(nonce),)),  # data proves nothing
        ):
            self.onRandomPort(a, bAddr, data, src)
        self.assertDropped(a, "random-port-refused", 5)
        self.assertFalse(peer.trusted)
        self.assertEqual(a.counters["pp-learned"], 0)
        self.onRandomPort(a, bAddr, ipv6.bubble(bAddr, aAddr) + encode_trailers((NonceTrailer(nonce),)), src)
        self.assertEqual((peer.trusted, peer.mapping, peer.direct_rx_random), (True, src, True))
        self.assertEqual(a.counters["pp-learned"], 1)

    def test_X_PP_16_changedMappingOnRandomPort(self) -> None:
        """
        X-PP-16: a peer trusted on our random port, heard there from another mapping: within
        30 s of traffic refused; after 30 s of silence (X-PP-16b) our random port is given up
        (closed, Random Port zeroed), the peer is trusted no more, and a new indirect bubble
        advertises a new random port.
        """
        a, b = self.established()
        peer = self.peerOf(a, b)
        aAddr, bAddr = raw(a.address), raw(b.address)
        old = peer.random_port
        other = (mapping_of(bAddr)[0], 50002)
        self.onRandomPort(a, bAddr, ipv6.bubble(bAddr, aAddr), other)
        self.assertDropped(a, "random-port-refused")
        self.assertTrue(peer.trusted)
        now = self.clock.seconds()
        peer.last_tx = peer.last_rx = now - 31
        mark = len(self.net.capture)
        self.onRandomPort(a, bAddr, ipv6.bubble(bAddr, aAddr), other)
        self.assertFalse(peer.trusted)
        self.assertEqual(a.counters["pp-resets"], 1)
        self.assertNotIn(old, self.boundPorts(a))
        aIP = mapping_of(aAddr)[0]
        indirect = [d for d in self.net.capture[mark:] if d.dst == SERVER and d.src[0] == aIP]
        self.assertEqual(len(indirect), 1)
        self.assertEqual(trailersOf(indirect[0].data)[1], peer.random_port)
        self.assertNotIn(peer.random_port, (0, old))


class RefreshTimerTests(PPTestCase):
    def test_X_PP_03_04_refreshes(self) -> None:
        """
        X-PP-03, X-PP-04: every 30 s each random-port peer without data sent in the last
        30 s gets a direct bubble from the random port, at most 20 in a row; data sent
        resets the count.  The refreshes keep the entry (and the NATs' mappings) alive past
        its 30 s; after the 20th it goes, with its port.
        """
        a, b = self.pair()
        self.assertEqual(self.exchange(a, b, 3), (True, True))  # data until t = 3
        peer = self.peerOf(a, b)
        ra, mapping = peer.random_port, peer.mapping

        def refreshes(seconds: float) -> int:
            mark = len(self.net.capture)
            self.net.run(seconds)
            mine = [
                d
                for d in self.net.capture[mark:]
                if d.src[1] == ra and d.dst == mapping and classify(d.data).is_bubble
            ]
            self.assertTrue(all(trailersOf(d.data)[1] == ra for d in mine))
            return len(mine)

        self.assertEqual(self.clock.seconds(), 6)
        self.assertEqual(refreshes(24), 0)  # t = 30: data 27 s ago (X-PP-03c)
        self.assertEqual(refreshes(5), 0)
        self.tunOf(a).inject(echo(raw(a.address), raw(b.address), b"more"))  # t = 35
        self.assertEqual(refreshes(25), 0)  # t = 60: data 25 s ago
        self.assertEqual(peer.refresh_count, 0)
        self.assertEqual(refreshes(30), 1)  # t = 90
        self.assertEqual((peer.refresh_count, a.counters["pp-refreshes"]), (1, 1))
        self.assertIs(a.tunnel.peers.get(raw(b.address)), peer)  # kept past its 30 s
        self.assertEqual(refreshes(30 * (MAX_REFRESHES - 1)), MAX_REFRESHES - 1)
        self.assertEqual(peer.refresh_count, MAX_REFRESHES)
        self.assertEqual(refreshes(60), 0)
        self.assertIsNone(a.tunnel.peers.get(raw(b.address)))
        self.assertNotIn(ra, self.boundPorts(a))
        # Talking again starts afresh.
        self.assertEqual(self.exchange(a, b, 3), (True, True))

    def test_idleDataAfterSilence(self) -> None:
        """
        Each side's refreshes keep the other's entry valid: after a silence data goes
        straight from the random port.  Without the peer's refreshes (lost), the entry,
        kept by our own, is no longer valid: data waits for the RFC 4380 bubbles (our
        refreshes are transmissions, so Server Load Reduction's "silent both ways" does not
        hold), whose indirect one the peer answers from its random port: the same ports,
        no new one.
        """
        a, b = self.pair()
        self.assertEqual(self.exchange(a, b, 3), (True, True))
        peer = self.peerOf(a, b)
        self.net.run(70)
        self.assertTrue(a.tunnel.peers.is_valid(peer))
        sent = a.counters["sent"]
        self.tunOf(a).inject(echo(raw(a.address), raw(b.address), b"still"))
        self.net.flush()
        self.assertEqual(a.counters["sent"], sent + 1)
        self.assertIn(echo(raw(a.address), raw(b.address), b"still"), self.tunOf(b).written)
        bMapping = peer.mapping
        remove = self.net.addDropFilter(lambda d: d.src == bMapping)
        self.net.run(70)
        remove()
        self.assertFalse(a.tunnel.peers.is_valid(peer))
        indirect = a.counters["bubbles-indirect"]
        self.tunOf(a).inject(echo(raw(a.address), raw(b.address), b"later"))
        self.net.flush()
        self.assertIn(echo(raw(a.address), raw(b.address), b"later"), self.tunOf(b).written)
        self.assertEqual(a.counters["bubbles-indirect"], indirect + 1)
        self.assertEqual(a.counters["pp-ports-opened"], 1)
        self.assertEqual(peer.mapping, bMapping)

    def test_X_PP_05_timerRunsFromStart(self) -> None:
        client = self.makeClient(PP)
        pp = client.tunnel.portPreserving
        assert pp is not None
        self.assertTrue(pp.refreshing)
        client.stopService()
        self.assertFalse(pp.refreshing)


class BoundsTests(PPTestCase):
    def test_capOnOpenPorts(self) -> None:
        """
        random-ports = 2: a third peer being reached gets no random port (pp-ports-refused)
        and no Random Port trailer; ports close when their entries go, and at shutdown.
        """
        a = self.makeClient(PP, seed=1, random_ports=2)
        self.net.flush()
        aAddr = raw(a.address)
        start = len(self.net.capture)
        for i in range(3):
            self.tunOf(a).inject(echo(aAddr, teredo("192.0.2.50", 40000 + i)))
        self.net.flush()
        pp = a.tunnel.portPreserving
        assert pp is not None
        self.assertEqual(pp.openPorts(), 2)
        self.assertEqual(a.counters["pp-ports-refused"], 1)
        ports = [trailersOf(d.data)[1] for d in self.net.capture[start:] if d.dst == SERVER]
        self.assertEqual(len(ports), 3)
        self.assertEqual(ports[2], None)
        self.assertEqual(a.status()["random-ports"], {"state": "on", "open": 2, "max": 2})
        # The exchanges fail; the entries expire; no port outlives them.
        self.net.run(60)
        self.assertEqual(pp.openPorts(), 0)
        self.assertEqual(a.counters["pp-ports-closed"], 2)
        self.tunOf(a).inject(echo(aAddr, teredo("192.0.2.51", 40000)))
        self.net.flush()
        self.assertEqual(pp.openPorts(), 1)
        a.stopService()
        self.assertEqual(pp.openPorts(), 0)
        self.assertEqual(self.boundPorts(a), set())

    def test_indirectFloodBounded(self) -> None:
        """
        Forged indirect bubbles advertising random ports from 50 Teredo sources: the random
        ports opened to answer them stay within random-ports and the inbound budget; the
        second direct bubbles go only to each source's embedded IPv4; everything closes
        when the entries expire.
        """
        b = self.makeClient(PP, seed=2, random_ports=4, inbound_probe_rate=0.5, inbound_probe_burst=10)
        self.net.flush()
        bMapping = mapping_of(raw(b.address))
        mark = len(self.net.capture)
        for i in range(50):
            src = teredo(f"192.0.2.{100 + i}", 20000 + i)
            packet = origin_indication(*mapping_of(src)) + ipv6.bubble(src, raw(b.address))
            trailers = encode_trailers((NonceTrailer(i.to_bytes(4, "big")), RandomPortTrailer(30000 + i)))
            self.net.inject(SERVER, bMapping, packet + trailers)
        self.net.flush()
        pp = b.tunnel.portPreserving
        assert pp is not None
        self.assertLessEqual(pp.openPorts(), 4)
        sent = [d for d in self.net.capture[mark:] if d.src[0] == bMapping[0]]
        self.assertLessEqual(len(sent), 10)
        for d in sent:
            if d.dst != SERVER:
                self.assertTrue(d.dst[0].startswith("192.0.2."))
        self.net.run(60)
        self.assertEqual(pp.openPorts(), 0)

    def test_garbageOnRandomPort(self) -> None:
        """Random bytes and truncated packets on a random port: counted, nothing else."""
        a, b = self.pair()
        aAddr, bAddr = raw(a.address), raw(b.address)
        self.tunOf(a).inject(echo(aAddr, bAddr, b"hello"))
        self.net.flush()
        rng = random.Random(7)
        good = ipv6.bubble(bAddr, aAddr) + randomPortTrailer(1)
        for n in range(300):
            if n % 2:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 120)))
            else:
                flipped = bytearray(good)
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
                data = bytes(flipped[: rng.randint(0, len(flipped))])
            self.onRandomPort(a, bAddr, data, ("192.0.2.7", rng.randint(1, 65535)))
        drops = a.status()["drops"]
        self.assertGreater(drops["malformed"] + drops["random-port-refused"], 0)
        self.assertEqual(a.counters["pp-learned"], 0)


class TunnelWithFakeTests(SynchronousTestCase):
    """The tunnel core with the fake opener: no socket anywhere (X-PP-08 refusals)."""

    def test_busyPortsRefused(self) -> None:
        clock = Clock()
        sent: list[Any] = []
        # Every port the tunnel may draw is busy: after OPEN_ATTEMPTS draws it gives up.
        opener = FakeRandomPorts(busy=range(0, 65536))
        tunnel = TeredoTunnel(
            clock, CLIENT_POLICY, PeerList(clock.seconds), lambda d, e: sent.append((d, e)), lambda p: None,
            random.Random(1).randbytes, randomPorts=opener,
        )
        a = teredo("198.51.100.1", 40000)
        tunnel.setIdentity(a, SERVER)
        assert tunnel.portPreserving is not None
        tunnel.portPreserving.setNat(True, True)
        tunnel.fromHost(echo(a, teredo("192.0.2.60", 40001)))
        self.assertEqual(tunnel.counters["pp-ports-refused"], 1)
        self.assertEqual(opener.opened, [])
        opener.busy = set()
        clock.advance(2)
        self.assertEqual(len(opener.open), 1)
        handle = opener.opened[0]
        indirect = [classify(d) for d, e in sent if e == SERVER]
        self.assertEqual([t for t in indirect[-1].trailers if isinstance(t, RandomPortTrailer)][0].port, handle.port)
        tunnel.stop()
        self.assertTrue(handle.closed)
        self.assertEqual(opener.open, {})

    def test_packetAfterCloseIgnored(self) -> None:
        """A datagram delivered to a port after its peer went changes nothing."""
        clock = Clock()
        opener = FakeRandomPorts()
        tunnel = TeredoTunnel(
            clock, CLIENT_POLICY, PeerList(clock.seconds), lambda d, e: None, lambda p: None,
            random.Random(1).randbytes, randomPorts=opener,
        )
        a, b = teredo("198.51.100.1", 40000), teredo("192.0.2.60", 40001)
        tunnel.setIdentity(a, SERVER)
        assert tunnel.portPreserving is not None
        tunnel.portPreserving.setNat(True, True)
        tunnel.fromHost(echo(a, b))
        handle = opener.opened[0]
        tunnel.peers.remove(b)
        self.assertTrue(handle.closed)
        handle.deliverLate(classify(ipv6.bubble(b, a)), ("192.0.2.60", 40001))  # late delivery
        self.assertEqual(tunnel.drops["random-port-refused"], 1)
