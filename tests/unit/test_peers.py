"""
The peer list (RFC 4380 section 5.2): LRU bound, queues bounded by count and bytes, the
bubble limits of section 5.2.6, validity and expiry per section 5.2.4 and defect D6.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.peers import Peer, PeerList, Queued


def addr(n: int) -> bytes:
    return b"\x20\x01" + b"\x00" * 12 + n.to_bytes(2, "big")


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
