# -*- test-case-name: tests.unit.test_peers -*-
"""
The list of recent peers (RFC 4380 section 5.2), pure of I/O.

Every Teredo interface (client, relay, host-specific relay) remembers, per IPv6 peer, how to
reach it (the mapped IPv4 endpoint), whether that mapping has been proven (trusted), the
nonce of a pending direct connectivity test, when it last heard from and sent to the peer,
and the bubbles sent without an answer.  Packets wait in a per-peer queue while the mapping
is being proven.

Why it is bounded everywhere: the table is filled by what strangers send and by what the
host asks to reach, so without bounds either can exhaust memory.  The list keeps at most
C{max_peers} entries and evicts the least recently used one (section 5.2 suggests LRU); each
queue holds at most C{queue_packets} packets and C{queue_bytes} bytes.

Time comes only from the injected C{clock} callable (seconds), so the whole module is
driven by a test's C{Clock} and never reads the wall clock.

Validity (section 5.2.4 and defect D6): a non-local entry is valid while its last
reception is less than C{valid_for} (30 s) old, a local one (local discovery) while less
than C{local_valid_for} (600 s) old.  Expiry removes entries that are neither valid nor
busy: see L{PeerList.expire}.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator, NamedTuple

from teredonode.interfaces import Endpoint

__all__ = [
    "Peer",
    "PeerList",
    "Queued",
    "BUBBLE_MIN_INTERVAL",
    "BUBBLE_WINDOW",
    "BUBBLE_MAX_UNANSWERED",
    "VALID_FOR",
    "LOCAL_VALID_FOR",
]

#: Section 5.2.6: no bubble if the last transmission to the peer was less than 2 s ago ...
BUBBLE_MIN_INTERVAL = 2.0
#: ... nor if 4 bubbles were sent to it in the last 300 s without a direct response.
BUBBLE_WINDOW = 300.0
BUBBLE_MAX_UNANSWERED = 4
#: Section 5.2.4 and D6: validity of non-local and local entries.
VALID_FOR = 30.0
LOCAL_VALID_FOR = 600.0


class Queued(NamedTuple):
    """
    One packet waiting for a peer's mapping to be proven.

    @ivar packet: the IPv6 packet.
    @ivar source: L{None} for a packet from the host to the peer (outbound); for a packet
        received from the peer (inbound, section 5.2.3 case 6) the IPv4 endpoint it came
        from, so it is delivered only if that endpoint turns out to be the proven mapping.
    """

    packet: bytes
    source: Endpoint | None = None


class Peer:
    """
    One entry of the peer list (section 5.2's "list of recent peers").

    @ivar address: the peer's IPv6 address, 16 raw bytes (the key).
    @ivar mapping: the IPv4 endpoint packets to the peer are sent to, once known.
    @ivar trusted: the mapping was proven by a direct packet (or an echo reply).
    @ivar nonce: the nonce of a pending direct IPv6 connectivity test, or L{None}.
    @ivar last_rx: when the peer was last heard from directly.
    @ivar last_tx: when something (data or bubble) was last sent to it.
    @ivar bubbles: when each of the (at most four) most recent unanswered bubbles was sent.
    @ivar attempts: retries of the current bubble or echo exchange (the owner's counter).
    @ivar local: learned by local discovery (section 5.2.8); C{local_endpoint} is then the
        LAN endpoint.
    @ivar queue: packets waiting, oldest first; C{queued_bytes} their total size.
    @ivar timer: the owner's pending retry (an C{IDelayedCall}), cancelled on removal.
    @ivar nonce_sent: RFC 6081 section 5.2.1 (X-SNS-03): the 4-byte nonce of the last
        indirect bubble sent to the peer, until a direct bubble proves it (then L{None}).
    @ivar nonce_received: RFC 6081 section 5.2.1 (X-SNS-06): the nonce of the last indirect
        bubble received from the peer, echoed in our direct bubbles (X-SNS-04).
    """

    __slots__ = (
        "address",
        "mapping",
        "trusted",
        "nonce",
        "last_rx",
        "last_tx",
        "bubbles",
        "attempts",
        "local",
        "local_endpoint",
        "queue",
        "queued_bytes",
        "timer",
        "nonce_sent",
        "nonce_received",
    )

    def __init__(self, address: bytes, now: float, mapping: Endpoint | None = None) -> None:
        self.address = address
        self.mapping = mapping
        self.trusted = False
        self.nonce: bytes | None = None
        # Section 5.2.6 / 5.2.3 case 3: a new entry starts 30 s in the past for both, so it
        # is invalid (nothing heard) and a first bubble may go at once.
        self.last_rx = now - VALID_FOR
        self.last_tx = now - VALID_FOR
        # Plain lists, not deques: an empty deque costs about 600 bytes, and a relay keeps up
        # to a million entries, nearly all with both of these empty or short.
        self.bubbles: list[float] = []
        self.attempts = 0
        self.local = False
        self.local_endpoint: Endpoint | None = None
        self.queue: list[Queued] = []
        self.queued_bytes = 0
        self.timer: Any = None
        self.nonce_sent: bytes | None = None
        self.nonce_received: bytes | None = None

    def __repr__(self) -> str:
        state = "trusted" if self.trusted else "untrusted"
        return f"<Peer {self.address.hex()} {state} {self.mapping}>"

    # -- bubbles (section 5.2.6) -----------------------------------------------------------

    def may_bubble(self, now: float) -> bool:
        """
        May a bubble go to this peer now?  Not within 2 s of the last transmission (MUST
        NOT), nor after 4 unanswered bubbles within the last 300 s (MUST NOT).
        """
        if now - self.last_tx < BUBBLE_MIN_INTERVAL:
            return False
        return not self.probe_limited(now)

    def probe_limited(self, now: float) -> bool:
        """
        Is the 4-unanswered-bubbles-in-300-s limit in force (so that no probe may go for a
        while, whatever the 2-s rule says)?
        """
        bubbles = self.bubbles
        return len(bubbles) == BUBBLE_MAX_UNANSWERED and now - bubbles[0] < BUBBLE_WINDOW

    def bubble_sent(self, now: float) -> None:
        """
        Section 5.2.6 MUST: update the last transmission and count the bubble.
        """
        self.last_tx = now
        bubbles = self.bubbles
        if len(bubbles) >= BUBBLE_MAX_UNANSWERED:
            del bubbles[0]
        bubbles.append(now)

    def heard(self, now: float) -> None:
        """
        A direct packet from the peer: it is alive, so its bubble count starts again.
        """
        self.last_rx = now
        self.bubbles.clear()

    def trust(self, mapping: Endpoint, now: float) -> None:
        """
        The mapping is proven (section 5.2.3 cases 1-3, 5): trusted, heard now, no test
        pending.
        """
        self.mapping = mapping
        self.trusted = True
        self.nonce = None
        self.attempts = 0
        self.heard(now)


class PeerList:
    """
    The bounded, expiring peer list.

    @param clock: returns the current time in seconds (a reactor's C{seconds}).
    @param max_peers: entries kept; the least recently used one is evicted beyond.
    @param queue_packets: packets queued per peer.
    @param queue_bytes: bytes queued per peer.
    @param on_remove: called with every entry removed (evicted, expired or removed), with
        its queue still in place, so the owner can cancel timers and count lost packets.
        Also settable once as L{on_remove}, for an owner built after the list.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        max_peers: int = 1024,
        queue_packets: int = 8,
        queue_bytes: int = 10240,
        valid_for: float = VALID_FOR,
        local_valid_for: float = LOCAL_VALID_FOR,
        on_remove: Callable[[Peer], None] | None = None,
    ) -> None:
        if max_peers < 1 or queue_packets < 0 or queue_bytes < 0:
            raise ValueError("max_peers must be positive, queue bounds not negative")
        self._clock = clock
        self.max_peers = max_peers
        self.queue_packets = queue_packets
        self.queue_bytes = queue_bytes
        self.valid_for = valid_for
        self.local_valid_for = local_valid_for
        self._on_remove: Callable[[Peer], None] | None = None
        self.on_remove = on_remove
        self._peers: OrderedDict[bytes, Peer] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    @property
    def on_remove(self) -> Callable[[Peer], None] | None:
        """
        The owner's callback for removed entries (see the C{on_remove} parameter).
        """
        return self._on_remove

    @on_remove.setter
    def on_remove(self, callback: Callable[[Peer], None] | None) -> None:
        # One owner: a second one would silently take the first one's removals away
        # (its timers left running, its lost packets uncounted).
        if self._on_remove is not None and callback != self._on_remove:
            raise ValueError("the peer list already has an owner")
        self._on_remove = callback

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._peers.values()))

    def __contains__(self, address: bytes) -> bool:
        return address in self._peers

    def get(self, address: bytes) -> Peer | None:
        """
        The entry for C{address}, marked as most recently used; L{None} if absent.
        """
        peer = self._peers.get(address)
        if peer is not None:
            self._peers.move_to_end(address)
        return peer

    def create(self, address: bytes, mapping: Endpoint | None = None) -> Peer:
        """
        A new entry for C{address} (replacing none: call L{get} first), evicting the least
        recently used entry when the list is full.
        """
        peers = self._peers
        if address in peers:
            raise KeyError("peer already listed")
        while len(peers) >= self.max_peers:
            _, old = peers.popitem(last=False)
            self.evicted += 1
            self._removed(old)
        peer = Peer(address, self._clock(), mapping)
        peers[address] = peer
        return peer

    def get_or_create(self, address: bytes) -> Peer:
        """
        L{get}, or L{create} when absent.
        """
        peer = self.get(address)
        return peer if peer is not None else self.create(address)

    def remove(self, address: bytes) -> Peer | None:
        """
        Drop the entry for C{address}, if any (its queue goes with it).
        """
        peer = self._peers.pop(address, None)
        if peer is not None:
            self._removed(peer)
        return peer

    def _removed(self, peer: Peer) -> None:
        if self._on_remove is not None:
            self._on_remove(peer)
        peer.queue.clear()
        peer.queued_bytes = 0

    def is_valid(self, peer: Peer) -> bool:
        """
        Section 5.2.4 (CL-TX-00, D6): heard from within 30 s, or 600 s for a local peer.
        """
        window = self.local_valid_for if peer.local else self.valid_for
        return self._clock() - peer.last_rx < window

    # -- queues ----------------------------------------------------------------------------

    def enqueue(self, peer: Peer, packet: bytes, source: Endpoint | None = None) -> bool:
        """
        Queue C{packet} for C{peer}; C{False} (and nothing queued) if either bound would be
        exceeded.  The newest packet is the one refused: the oldest ones started the
        exchange that will release the queue, and TCP retransmits what is lost.
        """
        size = len(packet)
        if len(peer.queue) >= self.queue_packets or peer.queued_bytes + size > self.queue_bytes:
            return False
        peer.queue.append(Queued(packet, source))
        peer.queued_bytes += size
        return True

    def drain(self, peer: Peer) -> list[Queued]:
        """
        Take every packet queued for C{peer}, oldest first.
        """
        out = list(peer.queue)
        peer.queue.clear()
        peer.queued_bytes = 0
        return out

    # -- expiry ----------------------------------------------------------------------------

    def expire(self) -> int:
        """
        Remove the entries that are no use any more, and return how many went.

        An entry stays while it is valid (heard within its window), while something was
        sent to it within the same window (a bubble or echo exchange may still be
        answered), and while its bubble limit is in force (four unanswered bubbles within
        300 s), because forgetting it would let a fresh entry bubble again at once.
        """
        now = self._clock()
        # One pass over what may be a million entries (a relay's): comparisons against
        # precomputed cut-offs, the bubble check only where bubbles were sent, removal after.
        cutoff = now - self.valid_for
        localCutoff = now - self.local_valid_for
        doomed = []
        for address, peer in self._peers.items():
            limit = localCutoff if peer.local else cutoff
            if peer.last_rx > limit or peer.last_tx > limit:
                continue
            if peer.bubbles and peer.probe_limited(now):
                continue
            doomed.append(address)
        peers = self._peers
        for address in doomed:
            self._removed(peers.pop(address))
        self.expired += len(doomed)
        return len(doomed)
