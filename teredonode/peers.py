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

Memory (a relay keeps up to 1 048 576 entries): an entry holds no per-peer container while
it has nothing to hold (L{NO_ITEMS} stands for an empty queue and an empty bubble record),
and the periodic sweep packs every entry that has been left untouched since the previous
sweep, and has nothing but its mapping, trust and times to remember, into one 23-byte
record; L{PeerList.get} unpacks it again, equal field for field.  docs/performance.md
("Memory per idle peer") has the method and the figures.
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator, NamedTuple, SupportsIndex

from teredonode.interfaces import Endpoint

__all__ = [
    "Peer",
    "PeerList",
    "Queued",
    "Tally",
    "NO_ITEMS",
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


class _NoItems(list[Any]):
    """
    The one empty list that every entry without queued packets or unanswered bubbles
    shares: an empty list costs 56 bytes, and a relay has up to a million entries with two
    each.  It refuses to grow, so that no caller fills every entry's queue at once: the owner
    replaces it with a list of its own instead.
    """

    __slots__ = ()

    def _refuse(self) -> None:
        raise TypeError("NO_ITEMS is shared by every peer: replace it, do not fill it")

    def append(self, item: Any) -> None:
        self._refuse()

    def extend(self, items: Iterable[Any]) -> None:
        self._refuse()

    def insert(self, index: SupportsIndex, item: Any) -> None:
        self._refuse()

    def __setitem__(self, index: Any, value: Any) -> None:
        self._refuse()

    def __iadd__(self, items: Iterable[Any]) -> _NoItems:  # type: ignore[misc]
        self._refuse()
        return self


#: The shared empty L{Peer.queue} and L{Peer.bubbles} (equal to C{[]}, never filled).
NO_ITEMS: list[Any] = _NoItems()


class Tally(NamedTuple):
    """
    L{PeerList.tally}: entries, trusted ones, packed ones (idle, see L{PeerList.expire}),
    packets queued and their bytes.
    """

    entries: int
    trusted: int
    packed: int
    queued_packets: int
    queued_bytes: int


class Peer:
    """
    One entry of the peer list (section 5.2's "list of recent peers").

    @ivar address: the peer's IPv6 address, 16 raw bytes (the key).
    @ivar mapping: the IPv4 endpoint packets to the peer are sent to, once known.
    @ivar trusted: the mapping was proven by a direct packet (or an echo reply).
    @ivar nonce: the nonce of a pending direct IPv6 connectivity test, or L{None}.
    @ivar last_rx: when the peer was last heard from directly.
    @ivar last_tx: when something (data or bubble) was last sent to it.
    @ivar bubbles: when each of the (at most four) most recent unanswered bubbles was sent
        (L{NO_ITEMS} when none).
    @ivar attempts: retries of the current bubble or echo exchange (the owner's counter).
    @ivar local: learned by local discovery (section 5.2.8); C{local_endpoint} is then the
        LAN endpoint.
    @ivar queue: packets waiting, oldest first (L{NO_ITEMS} when none); C{queued_bytes}
        their total size.  Read them, never fill them: L{PeerList.enqueue} and
        L{bubble_sent} do.
    @ivar timer: the owner's pending retry (an C{IDelayedCall}), cancelled on removal.
    @ivar nonce_sent: RFC 6081 section 5.2.1 (X-SNS-03): the 4-byte nonce of the last
        indirect bubble sent to the peer, until a direct bubble proves it (then L{None}).
    @ivar nonce_received: RFC 6081 section 5.2.1 (X-SNS-06): the nonce of the last indirect
        bubble received from the peer, echoed in our direct bubbles (X-SNS-04).
    @ivar alternates: RFC 6081 section 5.6.1 (X-HP-06): the Alternate Address/Port list the
        peer advertised in its last indirect bubble (at most 4 endpoints), C{()} when none.
    @ivar symmetric_peer: RFC 6081 section 5.3.1 (X-UPNP-10): a direct bubble from the peer
        came from a mapping its address does not embed (it is behind a symmetric NAT).
    @ivar random_port: RFC 6081 section 5.4.1 (X-PP-08): the local port we opened for this
        peer, which a port-preserving NAT maps to the same external port; 0 when none.
    @ivar peer_random_port: the random port the peer advertised in its indirect bubble's
        Random Port trailer (X-PP-11); 0 when none.
    @ivar direct_rx_primary: a direct bubble from the peer was accepted on our service port
        (X-PP-12, X-PP-14).
    @ivar direct_rx_random: one was accepted on our random port (X-PP-15): packets to the
        peer then go from that port.
    @ivar refresh_count: the Connection Refresh Count (X-PP-03): direct bubbles sent by the
        Peer Refresh Timer since data was last sent.
    @ivar last_data_tx: the Last Data Packet Sent Timestamp (X-PP-07), kept for peers with
        a random port (the only ones the Peer Refresh Timer reads it for); L{None} before.
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
        "alternates",
        "symmetric_peer",
        "random_port",
        "peer_random_port",
        "direct_rx_primary",
        "direct_rx_random",
        "refresh_count",
        "last_data_tx",
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
        # Lists only once there is something to hold (an empty deque costs about 600 bytes,
        # an empty list 56), and a relay keeps up to a million entries, nearly all idle.
        self.bubbles: list[float] = NO_ITEMS
        self.attempts = 0
        self.local = False
        self.local_endpoint: Endpoint | None = None
        self.queue: list[Queued] = NO_ITEMS
        self.queued_bytes = 0
        self.timer: Any = None
        self.nonce_sent: bytes | None = None
        self.nonce_received: bytes | None = None
        self.alternates: tuple[Endpoint, ...] = ()
        self.symmetric_peer = False
        self.random_port = 0
        self.peer_random_port = 0
        self.direct_rx_primary = False
        self.direct_rx_random = False
        self.refresh_count = 0
        self.last_data_tx: float | None = None

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
        if bubbles is NO_ITEMS:
            self.bubbles = [now]
            return
        if len(bubbles) >= BUBBLE_MAX_UNANSWERED:
            del bubbles[0]
        bubbles.append(now)

    def heard(self, now: float) -> None:
        """
        A direct packet from the peer: it is alive, so its bubble count starts again.
        """
        self.last_rx = now
        if self.bubbles:
            self.bubbles = NO_ITEMS

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


# -- idle entries, packed --------------------------------------------------------------------
#
# A record is 23 bytes: the later of the two times, the other one, the mapping's IPv4
# address and port, and flags.  Only times not below zero are packed (the daemon's are
# seconds since 1970), whose big-endian IEEE 754 encodings sort as the times do: so the
# sweep compares whole records against one cut-off, without unpacking them.

_RECORD = struct.Struct("!dd4sHB")
_TRUSTED = 1
_MAPPED = 2
_TX_LATER = 4
#: Padding after a cut-off's 8 bytes: a record is at or below it when its time is.
_TAIL = b"\xff" * (_RECORD.size - 8)
_TIME = struct.Struct("!d")


def record_cutoff(time: float) -> bytes:
    """
    The greatest record whose later time is C{time}: records at or below it are older.
    Below zero, none is (b"").
    """
    return _TIME.pack(time + 0.0) + _TAIL if time >= 0 else b""


def pack_record(peer: Peer) -> bytes | None:
    """
    The record of an idle entry, or L{None} if it holds more than a record can: anything
    queued, a test or retry in progress, bubbles, RFC 6081 nonces, local discovery, a time
    below zero, or
    values of other types than the daemon stores (so that unpacking gives back equal
    values of the same types).
    """
    rx, tx = peer.last_rx, peer.last_tx
    if (
        peer.timer is not None
        or peer.queue
        or peer.bubbles
        or peer.nonce is not None
        or peer.nonce_sent is not None
        or peer.nonce_received is not None
        or peer.alternates
        or peer.symmetric_peer is not False
        or peer.random_port != 0
        or peer.peer_random_port != 0
        or peer.direct_rx_primary is not False
        or peer.direct_rx_random is not False
        or peer.refresh_count != 0
        or peer.last_data_tx is not None
        or peer.local is not False
        or peer.local_endpoint is not None
        or peer.attempts != 0
        or peer.queued_bytes != 0
        or type(peer.attempts) is not int
        or type(peer.trusted) is not bool
        or type(rx) is not float
        or type(tx) is not float
        or not (rx >= 0.0 and tx >= 0.0)
    ):
        return None
    flags = _TRUSTED if peer.trusted else 0
    mapping = peer.mapping
    if mapping is None:
        ip, port = b"\0\0\0\0", 0
    else:
        if type(mapping) is not tuple or len(mapping) != 2:
            return None
        host, port = mapping
        if type(host) is not str or type(port) is not int or not 0 <= port <= 0xFFFF:
            return None
        try:
            ip = socket.inet_aton(host)
        except OSError:
            return None
        if socket.inet_ntoa(ip) != host:
            return None
        flags |= _MAPPED
    # + 0.0: -0.0 (equal to 0.0) has the sign bit set, so would sort above every time.
    if tx > rx:
        return _RECORD.pack(tx + 0.0, rx, ip, port, flags | _TX_LATER)
    return _RECORD.pack(rx + 0.0, tx, ip, port, flags)


def unpack_record(address: bytes, record: bytes) -> Peer:
    """
    The entry a record stands for, equal field for field to the one it was packed from.
    """
    later, other, ip, port, flags = _RECORD.unpack(record)
    peer = Peer.__new__(Peer)
    peer.address = address
    peer.mapping = (socket.inet_ntoa(ip), port) if flags & _MAPPED else None
    peer.trusted = bool(flags & _TRUSTED)
    peer.nonce = None
    if flags & _TX_LATER:
        peer.last_rx, peer.last_tx = other, later
    else:
        peer.last_rx, peer.last_tx = later, other
    peer.bubbles = NO_ITEMS
    peer.attempts = 0
    peer.local = False
    peer.local_endpoint = None
    peer.queue = NO_ITEMS
    peer.queued_bytes = 0
    peer.timer = None
    peer.nonce_sent = None
    peer.nonce_received = None
    peer.alternates = ()
    peer.symmetric_peer = False
    peer.random_port = 0
    peer.peer_random_port = 0
    peer.direct_rx_primary = False
    peer.direct_rx_random = False
    peer.refresh_count = 0
    peer.last_data_tx = None
    return peer


class _PackedView(Peer):
    """
    A packed entry as iteration yields it: read-only, its fields decoded from the record
    as they are read, so that a pass over a million entries (status) unpacks none.  The
    fields a packed entry cannot have set are class constants here; assigning any field
    raises L{AttributeError} instead of changing a copy that is not listed.
    """

    __slots__ = ("_record",)
    _record: bytes

    nonce = None
    bubbles = NO_ITEMS
    attempts = 0
    local = False
    local_endpoint = None
    queue = NO_ITEMS
    queued_bytes = 0
    timer = None
    nonce_sent = None
    nonce_received = None
    alternates: tuple[Endpoint, ...] = ()
    symmetric_peer = False
    random_port = 0
    peer_random_port = 0
    direct_rx_primary = False
    direct_rx_random = False
    refresh_count = 0
    last_data_tx = None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{name}: a packed entry seen by iteration is read-only")

    @property
    def mapping(self) -> Endpoint | None:  # type: ignore[override]
        return unpack_record(self.address, self._record).mapping

    @property
    def last_rx(self) -> float:  # type: ignore[override]
        return unpack_record(self.address, self._record).last_rx

    @property
    def last_tx(self) -> float:  # type: ignore[override]
        return unpack_record(self.address, self._record).last_tx


class _TrustedView(_PackedView):
    __slots__ = ()
    trusted = True


class _UntrustedView(_PackedView):
    __slots__ = ()
    trusted = False


# Slot setters that bypass _PackedView's refusal: building a view costs no Python call.
_newView = _PackedView.__new__
_setAddress = Peer.__dict__["address"].__set__
_setRecord = _PackedView.__dict__["_record"].__set__


def _view(address: bytes, record: bytes) -> Peer:
    view = _newView(_TrustedView if record[-1] & _TRUSTED else _UntrustedView)
    _setAddress(view, address)
    _setRecord(view, record)
    return view


class PeerList:
    """
    The bounded, expiring peer list.

    An entry untouched since the previous L{expire} and idle (see L{pack_record}) is kept packed
    until L{get} asks for it: a L{Peer} with its times and mapping costs about 330 bytes,
    the record 56 (the list's own slot and the address, about 140, stay either way).  So a
    L{Peer} obtained before a sweep and kept across it may no longer be the listed one;
    only a probe's timer holds one that long, and an entry with a timer is never packed.
    Iteration yields packed entries as read-only views (still L{Peer}s), leaving them
    packed.

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
        # Each value is a Peer, or the record of an idle one (bytes).
        self._peers: OrderedDict[bytes, Peer | bytes] = OrderedDict()
        self._swept = clock()
        self.evicted = 0
        self.expired = 0
        #: The owner's say on an entry the sweep would remove: C{True} keeps it listed (a
        #: client's random-port peer, kept alive by the Peer Refresh Timer of RFC 6081
        #: section 5.4.2); L{None}: no say.  Asked only about entries about to go.
        self.keep: Callable[[Peer], bool] | None = None

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
        view = _view
        return iter(
            [view(a, p) if type(p) is bytes else p for a, p in self._peers.items()]  # type: ignore[misc]
        )

    def __contains__(self, address: bytes) -> bool:
        return address in self._peers

    def tally(self) -> Tally:
        """
        The counts status reports, in one pass that unpacks nothing (a relay's million
        entries cost about 0.3 s to iterate, packed ones three times that).
        """
        trusted = packed = packets = size = 0
        for peer in self._peers.values():
            if type(peer) is bytes:
                packed += 1
                trusted += peer[-1] & _TRUSTED
            else:
                trusted += peer.trusted  # type: ignore[union-attr]
                packets += len(peer.queue)  # type: ignore[union-attr]
                size += peer.queued_bytes  # type: ignore[union-attr]
        return Tally(len(self._peers), trusted, packed, packets, size)

    def get(self, address: bytes) -> Peer | None:
        """
        The entry for C{address}, marked as most recently used; L{None} if absent.
        """
        peers = self._peers
        peer = peers.get(address)
        if peer is None:
            return None
        peers.move_to_end(address)
        if type(peer) is bytes:
            peer = peers[address] = unpack_record(address, peer)
        return peer  # type: ignore[return-value]

    def create(self, address: bytes, mapping: Endpoint | None = None) -> Peer:
        """
        A new entry for C{address} (replacing none: call L{get} first), evicting the least
        recently used entry when the list is full.
        """
        peers = self._peers
        if address in peers:
            raise KeyError("peer already listed")
        while len(peers) >= self.max_peers:
            old = peers.popitem(last=False)
            self.evicted += 1
            self._dropped(*old)
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
        if peer is None:
            return None
        if type(peer) is bytes:
            peer = unpack_record(address, peer)
        self._removed(peer)  # type: ignore[arg-type]
        return peer  # type: ignore[return-value]

    def _dropped(self, address: bytes, peer: Peer | bytes) -> None:
        """
        An entry left the list: tell the owner (a packed one has nothing to clear).
        """
        if type(peer) is not bytes:
            self._removed(peer)  # type: ignore[arg-type]
        elif self._on_remove is not None:
            self._on_remove(unpack_record(address, peer))

    def _removed(self, peer: Peer) -> None:
        if self._on_remove is not None:
            self._on_remove(peer)
        peer.queue = NO_ITEMS
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
        queue = peer.queue
        if len(queue) >= self.queue_packets or peer.queued_bytes + size > self.queue_bytes:
            return False
        if queue is NO_ITEMS:
            peer.queue = [Queued(packet, source)]
        else:
            queue.append(Queued(packet, source))
        peer.queued_bytes += size
        return True

    def drain(self, peer: Peer) -> list[Queued]:
        """
        Take every packet queued for C{peer}, oldest first.
        """
        out = peer.queue
        peer.queue = NO_ITEMS
        peer.queued_bytes = 0
        return [] if out is NO_ITEMS else out

    # -- expiry ----------------------------------------------------------------------------

    def expire(self) -> int:
        """
        Remove the entries that are no use any more, and return how many went; pack the
        idle ones untouched since the previous call.

        An entry stays while it is valid (heard within its window), while something was
        sent to it within the same window (a bubble or echo exchange may still be
        answered), and while its bubble limit is in force (four unanswered bubbles within
        300 s), because forgetting it would let a fresh entry bubble again at once.
        """
        now = self._clock()
        # One pass over what may be a million entries (a relay's): comparisons against
        # precomputed cut-offs, the bubble check only where bubbles were sent, removal and
        # packing after.  A packed entry is neither local nor bubbled: one comparison of
        # its record with the record-shaped cut-off decides.
        cutoff = now - self.valid_for
        localCutoff = now - self.local_valid_for
        recordCutoff = record_cutoff(cutoff)
        swept = self._swept
        doomed = []
        idle = []
        for address, peer in self._peers.items():
            if type(peer) is bytes:
                if peer <= recordCutoff:
                    doomed.append(address)
                continue
            limit = localCutoff if peer.local else cutoff  # type: ignore[union-attr]
            rx, tx = peer.last_rx, peer.last_tx  # type: ignore[union-attr]
            if rx > limit or tx > limit:
                if rx <= swept and tx <= swept:
                    idle.append(address)
                continue
            if peer.bubbles and peer.probe_limited(now):  # type: ignore[union-attr]
                continue
            if self.keep is not None and self.keep(peer):  # type: ignore[arg-type]
                continue
            doomed.append(address)
        peers = self._peers
        for address in doomed:
            self._dropped(address, peers.pop(address))
        for address in idle:
            record = pack_record(peers[address])  # type: ignore[arg-type]
            if record is not None:
                peers[address] = record
        self._swept = now
        self.expired += len(doomed)
        return len(doomed)
