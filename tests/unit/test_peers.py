"""
The peer list (RFC 4380 section 5.2): LRU bound, queues bounded by count and bytes, the
bubble limits of section 5.2.6, validity and expiry per section 5.2.4 and defect D6.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode import peers as peers_module
from teredonode.peers import NO_ITEMS, Peer, PeerList, Queued
from teredonode.roles.relay import RELAY_POLICY
from teredonode.roles.tunnel import EXPIRY_INTERVAL, TeredoTunnel
from teredonode.wire.ipv6 import NH_NONE, bubble, build_ipv6
from teredonode.wire.teredo import classify


def addr(n: int) -> bytes:
    return b"\x20\x01" + b"\x00" * 12 + n.to_bytes(2, "big")


def fields(peer: Peer) -> dict[str, object]:
    """
    Every field of an entry, with the types of its values.
    """
    return {name: (getattr(peer, name), type(getattr(peer, name))) for name in Peer.__slots__}


class PeerListTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.removed: list[Peer] = []
        self.peers = PeerList(
            self.clock.seconds, max_peers=3, queue_packets=2, queue_bytes=100,
            on_remove=self.removed.append,
        )

    def test_newEntryStartsThirtySecondsAgo(self) -> None:
        """
        CL-B-01 / CL-RX-06: a new entry's last reception and transmission are now - 30 s,
        bubble count zero, untrusted; so it is not valid and may be bubbled at once.
        """
        peer = self.peers.create(addr(1))
        self.assertEqual((peer.last_rx, peer.last_tx), (970.0, 970.0))
        self.assertFalse(peer.trusted)
        self.assertEqual(len(peer.bubbles), 0)
        self.assertFalse(self.peers.is_valid(peer))
        self.assertTrue(peer.may_bubble(self.clock.seconds()))

    def test_lruEviction(self) -> None:
        """
        CL-CFG-07: beyond max_peers the least recently used entry goes (get() refreshes).
        """
        for n in (1, 2, 3):
            self.peers.create(addr(n))
        self.peers.get(addr(1))
        self.peers.create(addr(4))
        self.assertNotIn(addr(2), self.peers)
        self.assertIn(addr(1), self.peers)
        self.assertEqual(len(self.peers), 3)
        self.assertEqual([p.address for p in self.removed], [addr(2)])
        self.assertEqual(self.peers.evicted, 1)

    def test_oneOwner(self) -> None:
        """
        The removal callback has one owner: given to the constructor or set once later
        (an owner built after its list), never replaced by another one.
        """
        self.assertEqual(self.peers.on_remove, self.removed.append)
        self.peers.on_remove = self.removed.append  # the same owner again: harmless
        self.assertRaises(ValueError, setattr, self.peers, "on_remove", print)
        later = PeerList(self.clock.seconds)
        seen: list[Peer] = []
        later.on_remove = seen.append
        later.create(addr(1))
        later.remove(addr(1))
        self.assertEqual([p.address for p in seen], [addr(1)])

    def test_createTwiceRefused(self) -> None:
        self.peers.create(addr(1))
        self.assertRaises(KeyError, self.peers.create, addr(1))
        self.assertIs(self.peers.get_or_create(addr(1)), self.peers.get(addr(1)))

    def test_queueBoundByCount(self) -> None:
        peer = self.peers.create(addr(1))
        self.assertTrue(self.peers.enqueue(peer, b"a" * 10))
        self.assertTrue(self.peers.enqueue(peer, b"b" * 10, ("192.0.2.1", 5)))
        self.assertFalse(self.peers.enqueue(peer, b"c"))
        self.assertEqual(
            self.peers.drain(peer), [Queued(b"a" * 10), Queued(b"b" * 10, ("192.0.2.1", 5))]
        )
        self.assertEqual((len(peer.queue), peer.queued_bytes), (0, 0))

    def test_queueBoundByBytes(self) -> None:
        peer = self.peers.create(addr(1))
        self.assertTrue(self.peers.enqueue(peer, b"a" * 60))
        self.assertFalse(self.peers.enqueue(peer, b"b" * 41))
        self.assertTrue(self.peers.enqueue(peer, b"b" * 40))
        self.assertEqual(peer.queued_bytes, 100)

    def test_zeroQueue(self) -> None:
        peers = PeerList(self.clock.seconds, queue_packets=0)
        self.assertFalse(peers.enqueue(peers.create(addr(1)), b"x"))

    def test_bubbleMinimumInterval(self) -> None:
        """
        CL-B-03: no bubble within 2 s of the last transmission.
        """
        peer = self.peers.create(addr(1))
        now = self.clock.seconds()
        peer.bubble_sent(now)
        self.assertFalse(peer.may_bubble(now + 1.999))
        self.assertTrue(peer.may_bubble(now + 2))

    def test_fourUnansweredBubblesPer300s(self) -> None:
        """
        CL-B-04: after 4 unanswered bubbles in 300 s, none until the first is 300 s old;
        CL-B-05 [INFERRED]: an answer resets the count.
        """
        peer = self.peers.create(addr(1))
        t = self.clock.seconds()
        for i in range(4):
            self.assertTrue(peer.may_bubble(t + 2 * i))
            peer.bubble_sent(t + 2 * i)
        self.assertFalse(peer.may_bubble(t + 100))
        self.assertFalse(peer.may_bubble(t + 299.9))
        self.assertTrue(peer.may_bubble(t + 300))
        peer.heard(t + 101)
        self.assertTrue(peer.may_bubble(t + 101))

    def test_trust(self) -> None:
        peer = self.peers.create(addr(1))
        peer.nonce = b"12345678"
        peer.bubble_sent(self.clock.seconds())
        peer.trust(("192.0.2.9", 4000), self.clock.seconds())
        self.assertTrue(peer.trusted)
        self.assertIsNone(peer.nonce)
        self.assertEqual(peer.mapping, ("192.0.2.9", 4000))
        self.assertTrue(self.peers.is_valid(peer))
        self.assertEqual(len(peer.bubbles), 0)

    def test_validity30sNonLocal600sLocal(self) -> None:
        """
        CL-TX-00 and D6: valid while heard within 30 s (600 s for a local peer).
        """
        far = self.peers.create(addr(1))
        near = self.peers.create(addr(2))
        near.local = True
        far.heard(self.clock.seconds())
        near.heard(self.clock.seconds())
        self.clock.advance(29.9)
        self.assertTrue(self.peers.is_valid(far))
        self.clock.advance(0.1)
        self.assertFalse(self.peers.is_valid(far))
        self.assertTrue(self.peers.is_valid(near))
        self.clock.advance(570)
        self.assertFalse(self.peers.is_valid(near))

    def test_expiry(self) -> None:
        """
        Entries neither heard from nor sent to within their window go, with their queues;
        local entries last 600 s.
        """
        far = self.peers.create(addr(1))
        far.trust(("192.0.2.9", 4000), self.clock.seconds())
        self.peers.enqueue(far, b"x")
        near = self.peers.create(addr(2))
        near.local = True
        near.heard(self.clock.seconds())
        self.clock.advance(29)
        self.assertEqual(self.peers.expire(), 0)
        self.clock.advance(1)
        self.assertEqual(self.peers.expire(), 1)
        self.assertEqual([p.address for p in self.removed], [addr(1)])
        self.assertEqual(far.queued_bytes, 0)
        self.clock.advance(570)
        self.assertEqual(self.peers.expire(), 1)
        self.assertEqual(len(self.peers), 0)
        self.assertEqual(self.peers.expired, 2)

    def test_expiryKeepsBubbleLimitedEntry(self) -> None:
        """
        An entry whose bubble limit is in force is kept until it lifts, so that forgetting
        it cannot reset the 4-per-300-s limit.
        """
        peer = self.peers.create(addr(1))
        t = self.clock.seconds()
        for i in range(4):
            peer.bubble_sent(t + 2 * i)
        self.clock.advance(200)
        self.assertEqual(self.peers.expire(), 0)
        self.clock.advance(100)
        self.assertEqual(self.peers.expire(), 1)

    def test_removeCallsBack(self) -> None:
        self.peers.create(addr(1))
        self.assertIsNotNone(self.peers.remove(addr(1)))
        self.assertIsNone(self.peers.remove(addr(1)))
        self.assertEqual(len(self.removed), 1)

    def test_badBounds(self) -> None:
        self.assertRaises(ValueError, PeerList, self.clock.seconds, max_peers=0)


class IdleMemoryTests(SynchronousTestCase):
    """
    What keeps an idle entry small: no list of its own while it has nothing to hold, and
    the sweep's packing of entries untouched for a sweep interval -- each without any
    change of behaviour.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.removed: list[Peer] = []
        self.peers = PeerList(
            self.clock.seconds, max_peers=3, queue_packets=2, queue_bytes=100,
            on_remove=self.removed.append,
        )

    def trusted(self, n: int) -> Peer:
        peer = self.peers.create(addr(n))
        peer.trust((f"192.0.2.{n}", 40000 + n), self.clock.seconds())
        return peer

    def sweepTwice(self) -> None:
        """
        Two sweeps a sweep interval apart: what was untouched since the first is packed.
        """
        self.peers.expire()
        self.clock.advance(EXPIRY_INTERVAL)
        self.peers.expire()

    def test_nonceHoldersStayUnpacked(self) -> None:
        """
        An entry holding an RFC 6081 nonce (sent or received) is never packed: a record has
        no room for it, and losing it would break the peer's symmetric-NAT exchange.
        """
        sent, received = self.trusted(1), self.trusted(2)
        sent.nonce_sent = b"\x01\x02\x03\x04"
        received.nonce_received = b"\x05\x06\x07\x08"
        self.sweepTwice()
        self.sweepTwice()
        self.assertEqual(self.peers.tally().packed, 0)
        one, two = self.peers.get(addr(1)), self.peers.get(addr(2))
        assert one is not None and two is not None
        self.assertEqual(one.nonce_sent, b"\x01\x02\x03\x04")
        self.assertEqual(two.nonce_received, b"\x05\x06\x07\x08")

    def test_randomPortHoldersStayUnpacked(self) -> None:
        """
        X-PP-08..15: an entry holding any of the Port-Preserving extension's fields is never
        packed (a record has no room for them; its random port would be leaked), and an
        entry without them unpacks with every one at its default.
        """
        fields = {
            "random_port": 41000,
            "peer_random_port": 52000,
            "direct_rx_primary": True,
            "direct_rx_random": True,
            "refresh_count": 3,
            "last_data_tx": 1000.0,
        }
        for n, (name, value) in enumerate(fields.items(), 1):
            setattr(self.trusted(n), name, value)
            self.sweepTwice()
            self.sweepTwice()
            self.assertEqual(self.peers.tally().packed, 0, name)
            peer = self.peers.get(addr(n))
            assert peer is not None
            self.assertEqual(getattr(peer, name), value)
            self.peers.remove(addr(n))
        plain = self.trusted(9)
        self.sweepTwice()
        self.sweepTwice()
        self.assertEqual(self.peers.tally().packed, 1)
        view = next(iter(self.peers))
        back = self.peers.get(addr(9))
        assert back is not None
        for name in fields:
            self.assertEqual(getattr(view, name), getattr(Peer(addr(9), 0.0), name), name)
            self.assertEqual(getattr(back, name), getattr(Peer(addr(9), 0.0), name), name)
        self.assertIsNot(back, plain)

    def test_newEntryHoldsNoLists(self) -> None:
        """
        A new or just trusted entry shares NO_ITEMS for its queue and bubbles.
        """
        peer = self.trusted(1)
        self.assertIs(peer.queue, NO_ITEMS)
        self.assertIs(peer.bubbles, NO_ITEMS)
        self.assertEqual(peer.bubbles, [])

    def test_listsComeAndGo(self) -> None:
        """
        A queue or a bubble record exists while it holds something; draining the queue and
        hearing from the peer give NO_ITEMS back; no entry ever fills another's.
        """
        one, two = self.peers.create(addr(1)), self.peers.create(addr(2))
        self.assertTrue(self.peers.enqueue(one, b"x" * 10))
        self.assertEqual(one.queue, [Queued(b"x" * 10)])
        self.assertIs(two.queue, NO_ITEMS)
        self.assertEqual(self.peers.drain(one), [Queued(b"x" * 10)])
        self.assertIs(one.queue, NO_ITEMS)
        drained = self.peers.drain(two)
        self.assertEqual(drained, [])
        self.assertIsNot(drained, NO_ITEMS)
        one.bubble_sent(self.clock.seconds())
        self.assertEqual(one.bubbles, [1000.0])
        self.assertIs(two.bubbles, NO_ITEMS)
        one.heard(self.clock.seconds())
        self.assertIs(one.bubbles, NO_ITEMS)

    def test_removalLeavesNoQueue(self) -> None:
        peer = self.peers.create(addr(1))
        self.peers.enqueue(peer, b"x")
        self.peers.remove(addr(1))
        self.assertEqual([len(p.queue) for p in self.removed], [0])
        self.assertIs(peer.queue, NO_ITEMS)

    def test_noItemsRefusesToGrow(self) -> None:
        for grow in (
            lambda: NO_ITEMS.append(1),
            lambda: NO_ITEMS.extend([1]),
            lambda: NO_ITEMS.insert(0, 1),
            lambda: NO_ITEMS.__setitem__(slice(None), [1]),
            lambda: NO_ITEMS.__iadd__([1]),
        ):
            self.assertRaises(TypeError, grow)
        self.assertEqual(NO_ITEMS, [])

    def test_sweepPacksIdleEntries(self) -> None:
        """
        An idle entry untouched since the previous sweep is packed; get() gives back a
        Peer equal field for field (values and their types), listed again as an object.
        """
        peer = self.trusted(1)
        self.clock.advance(1.5)
        peer.last_tx = self.clock.seconds()
        before = fields(peer)
        self.peers.expire()
        self.assertEqual(self.peers.tally().packed, 0, "touched since the list was made")
        self.clock.advance(EXPIRY_INTERVAL)
        self.peers.expire()
        self.assertEqual(self.peers.tally().packed, 1)
        again = self.peers.get(addr(1))
        assert again is not None
        self.assertEqual(fields(again), before)
        self.assertEqual(self.peers.tally().packed, 0)
        self.assertIs(self.peers.get(addr(1)), again)

    def test_untrustedUnmappedEntryPacked(self) -> None:
        """
        An entry with no mapping yet, sent to (so not expired at once), packs too.
        """
        peer = self.peers.create(addr(1))
        peer.last_tx = self.clock.seconds()
        before = fields(peer)
        self.sweepTwice()
        self.assertEqual(self.peers.tally().packed, 1)
        again = self.peers.get(addr(1))
        assert again is not None
        self.assertEqual(fields(again), before)

    def test_busyEntriesNotPacked(self) -> None:
        """
        Anything a record cannot hold keeps the entry an object: queued packets, a timer,
        a pending test, bubbles, local discovery, a retry count, a mapping that is not a
        dotted-quad IPv4 endpoint.
        """
        busy = [
            lambda p: self.peers.enqueue(p, b"x"),
            lambda p: setattr(p, "timer", object()),
            lambda p: setattr(p, "nonce", b"12345678"),
            lambda p: p.bubble_sent(p.last_tx),
            lambda p: setattr(p, "local", True),
            lambda p: setattr(p, "attempts", 1),
            lambda p: setattr(p, "mapping", ("2001:db8::1", 3544)),
            lambda p: setattr(p, "mapping", ("192.0.2.01", 3544)),
            lambda p: setattr(p, "mapping", ("192.0.2.1", 70000)),
        ]
        peers = PeerList(self.clock.seconds, max_peers=len(busy))
        made = []
        for n, makeBusy in enumerate(busy):
            peer = peers.create(addr(n))
            peer.trust(("192.0.2.1", 3544), self.clock.seconds())
            makeBusy(peer)
            made.append(peer)
        peers.expire()
        self.clock.advance(EXPIRY_INTERVAL)
        peers.expire()
        self.assertEqual(peers.tally().packed, 0)
        self.assertEqual([peers.get(addr(n)) for n in range(len(busy))], made)

    def test_packedEntryExpiresOnTime(self) -> None:
        """
        Packed or not, an entry goes once neither heard from nor sent to within 30 s, and
        the owner hears of it with an equal Peer.
        """
        peer = self.trusted(1)
        before = fields(peer)
        self.sweepTwice()
        self.assertEqual(self.peers.tally().packed, 1)
        self.clock.advance(30 - EXPIRY_INTERVAL - 0.5)
        self.assertEqual(self.peers.expire(), 0)
        self.clock.advance(0.5)
        self.assertEqual(self.peers.expire(), 1)
        self.assertEqual([fields(p) for p in self.removed], [before])
        self.assertEqual(self.peers.expired, 1)

    def test_packedEntryLaterSentTo(self) -> None:
        """
        The later of the two times decides, whichever it is.
        """
        peer = self.trusted(1)
        self.clock.advance(5)
        peer.last_tx = self.clock.seconds()
        self.clock.advance(0.5)
        self.sweepTwice()
        self.assertEqual(self.peers.tally().packed, 1)
        self.clock.advance(30 - EXPIRY_INTERVAL - 1)
        self.assertEqual(self.peers.expire(), 0)
        self.clock.advance(0.5)
        self.assertEqual(self.peers.expire(), 1)

    def test_negativeTimesNotPacked(self) -> None:
        """
        A clock starting at zero gives new entries negative times (30 s in the past):
        such an entry stays an object, and expires as ever; from zero on it packs.
        """
        clock = Clock()
        peers = PeerList(clock.seconds)
        peer = peers.create(addr(1))
        peer.last_tx = -10.0
        peers.expire()
        clock.advance(EXPIRY_INTERVAL)
        peers.expire()
        self.assertEqual(peers.tally().packed, 0)
        self.assertIs(peers.get(addr(1)), peer)
        clock.advance(9.5)
        self.assertEqual((peers.expire(), len(peers)), (0, 1))
        clock.advance(0.5)
        self.assertEqual(peers.expire(), 1)
        zero = PeerList(Clock().seconds).create(addr(2))
        self.assertIsNone(peers_module.pack_record(zero))
        zero.last_rx = zero.last_tx = -0.0
        record = peers_module.pack_record(zero)
        assert record is not None
        self.assertEqual(fields(peers_module.unpack_record(addr(2), record)), fields(zero))
        self.assertLessEqual(record, peers_module.record_cutoff(0.0))
        self.assertGreater(record, peers_module.record_cutoff(-1e-300))

    def test_lruAcrossPackedEntries(self) -> None:
        """
        Packing changes neither the LRU order nor what eviction and remove() report.
        """
        for n in (1, 2, 3):
            self.trusted(n)
        expected = {n: fields(self.peers.get(addr(n))) for n in (1, 2, 3)}  # type: ignore[arg-type]
        self.sweepTwice()
        self.assertEqual(self.peers.tally().packed, 3)
        self.peers.get(addr(1))
        self.peers.create(addr(4))
        self.assertEqual([fields(p) for p in self.removed], [expected[2]])
        self.assertEqual(self.peers.evicted, 1)
        removed = self.peers.remove(addr(3))
        assert removed is not None
        self.assertEqual(fields(removed), expected[3])
        self.assertEqual(sorted(p.address for p in self.peers), [addr(1), addr(4)])

    def test_iterationLeavesEntriesPacked(self) -> None:
        for n in (1, 2):
            self.trusted(n)
        self.sweepTwice()
        self.assertEqual(
            [(p.address, p.trusted, p.mapping) for p in self.peers],
            [(addr(1), True, ("192.0.2.1", 40001)), (addr(2), True, ("192.0.2.2", 40002))],
        )
        self.assertEqual(self.peers.tally().packed, 2)

    def test_iteratedPackedEntryReadOnly(self) -> None:
        """
        What iteration yields for a packed entry reads as the entry and refuses changes,
        which could not reach the list.
        """
        peer = self.trusted(1)
        before = fields(peer)
        self.sweepTwice()
        (view,) = list(self.peers)
        self.assertIsInstance(view, Peer)
        self.assertEqual(fields(view), before)
        self.assertTrue(view.may_bubble(self.clock.seconds()))
        for name in Peer.__slots__:
            self.assertRaises(AttributeError, setattr, view, name, None)
        self.assertEqual(self.peers.tally().packed, 1)

    def test_tally(self) -> None:
        """
        Entries, trusted, packed, queued packets and bytes, packed entries included.
        """
        for n in (1, 2):
            self.trusted(n)
        untrusted = self.peers.create(addr(3))
        untrusted.last_tx = self.clock.seconds()
        self.sweepTwice()
        self.assertEqual(self.peers.tally(), (3, 2, 3, 0, 0))
        peer = self.peers.get(addr(1))
        assert peer is not None
        self.peers.enqueue(peer, b"x" * 7)
        self.peers.enqueue(peer, b"y" * 5)
        self.assertEqual(self.peers.tally(), (3, 2, 2, 2, 12))

    @given(
        st.floats(min_value=0.0, allow_infinity=False),
        st.floats(min_value=0.0, allow_infinity=False),
        st.floats(allow_nan=False),
        st.booleans(),
    )
    def test_recordAgainstCutoff(self, rx: float, tx: float, cutoff: float, trusted: bool) -> None:
        """
        The sweep compares records as bytes: a record is at or below the cut-off exactly
        when both its times are, and unpacks to its fields.
        """
        peer = Peer(addr(1), 0.0, ("192.0.2.1", 3544) if trusted else None)
        peer.trusted, peer.last_rx, peer.last_tx = trusted, rx, tx
        record = peers_module.pack_record(peer)
        assert record is not None
        self.assertEqual(fields(peers_module.unpack_record(addr(1), record)), fields(peer))
        self.assertEqual(
            record <= peers_module.record_cutoff(cutoff), rx <= cutoff and tx <= cutoff
        )


class RelaySweepTests(SynchronousTestCase):
    """
    A relay's entry through the tunnel's own sweep (task.Clock): packed while idle, used
    again as it was, expired as before.
    """

    def test_relayEntryPackedAndUsed(self) -> None:
        clock = Clock()
        clock.advance(1000)
        sent: list[tuple[bytes, tuple[str, int]]] = []
        peers = PeerList(clock.seconds, max_peers=8)
        tunnel = TeredoTunnel(
            clock, RELAY_POLICY, peers, lambda data, to: sent.append((data, to)),
            lambda packet: None, lambda n: b"\x01" * n, serves=lambda address: True,
        )
        host = bytes.fromhex("20010db8000000000000000000000001")
        tunnel.setUnnumbered(host)
        tunnel.start()
        # 2001:0:1e00:1:0:63bf:d7ff:fefe: server 30.0.0.1, mapping 40.0.0.1:40000.
        peer = bytes.fromhex("200100001e000001000063bfd7fffffe")
        mapping = ("40.0.0.1", 40000)
        tunnel.fromHost(build_ipv6(host, peer, NH_NONE, b""))
        tunnel.fromPeer(classify(bubble(peer, host)), mapping)
        self.assertEqual(sent[-1][1], mapping)
        clock.advance(EXPIRY_INTERVAL)
        clock.advance(EXPIRY_INTERVAL)
        self.assertEqual(peers.tally().packed, 1)
        del sent[:]
        tunnel.fromHost(build_ipv6(host, peer, NH_NONE, b"data"))
        self.assertEqual(sent, [(build_ipv6(host, peer, NH_NONE, b"data"), mapping)])
        self.assertEqual(peers.tally().packed, 0)
        clock.advance(EXPIRY_INTERVAL)
        clock.advance(EXPIRY_INTERVAL)
        self.assertEqual((peers.tally().packed, tunnel.status()["trusted-peers"]), (1, 1))
        clock.advance(EXPIRY_INTERVAL)
        self.assertEqual((len(peers), peers.expired), (0, 1))
        tunnel.stop()
