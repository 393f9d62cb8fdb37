# -*- test-case-name: tests.protocol.test_portguess_client -*-
"""
Port guessing beyond RFC 6081 (birthday-paradox hole punching) for a client's
L{teredonode.roles.tunnel.TeredoTunnel}: the sans-IO machines of
L{teredonode.roles.portguess} driven with real sockets, timers and the tunnel's trust rules.

Two sides (docs/nat-traversal.md, "Beyond the RFC: birthday-paradox port guessing"):

  - B{the opener} (our NAT is symmetric and neither preserves ports nor hands them out in
    sequence): our indirect bubble to an untrusted Teredo peer carries a Port Guess trailer
    (L{teredonode.wire.teredo.PortGuessTrailer}: how many sockets, how long their opening
    takes) and an L{Opener} opens that many sockets toward the mapping the peer's address
    embeds.  The peer's packets come from that mapping (RFC 4380's own rule, section 5.2.3
    case 3): the socket a bubble from it reaches is kept, the others closed, the peer
    trusted there, and our traffic to it leaves from that socket (its NAT lets only that
    mapping's packets in);
  - B{the prober} (our NAT is not symmetric: one mapping for every destination): an
    indirect bubble with the trailer from an untrusted Teredo peer, through our server and
    with its nonce, starts a L{Prober} from our service port to random ports of the IPv4
    address the peer's address embeds (which the server checked against the real sender),
    never its embedded port.  The peer's answer comes from a mapping its address does not
    embed: the tunnel trusts it only with the proof of RFC 6081's Symmetric NAT Support
    (our nonce, X-SNS-08), and tells us (L{PortGuessing.learned}) to stop probing.

Bounds (every byte from the network is hostile): at most C{maxSearches} searches at once
and one started per L{SEARCH_INTERVAL} (a burst of L{SEARCH_BURST}), whichever side; each
search bounded by its L{GuessLimits} (sockets, probes, rate, deadline); a search ends with
its peer (removed, trusted another way) and at shutdown; a socket of the opener accepts only
the peer's packets, from the peer's embedded mapping, to our address.  Off unless both
clients set C{port-guessing}: the probes are far beyond RFC 4380 section 5.2.6's rate.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from teredonode.interfaces import Endpoint, IGuessSockets, IRandomPort
from teredonode.roles.portguess import (
    CloseSockets,
    Effect,
    Found,
    GaveUp,
    GuessLimits,
    OpenSockets,
    Opener,
    Prober,
    SendBubble,
    SetTimer,
)
from teredonode.security import TokenBucket
from teredonode.wire import ipv4
from teredonode.wire.address import mapping_of
from teredonode.wire.ipv6 import bubble
from teredonode.wire.teredo import NonceTrailer, PortGuessTrailer, TeredoPacket, Trailer, encode_trailers

if TYPE_CHECKING:
    from teredonode.peers import Peer
    from teredonode.roles.tunnel import TeredoTunnel

__all__ = ["PortGuessing", "Search", "SEARCH_INTERVAL", "SEARCH_BURST", "COUNTERS", "DROP_REASONS"]

#: Seconds between search starts, on average (either side): a peer's trailer (or a spoofed
#: one: the server checks the embedded IPv4 against a UDP source) buys at most this.
SEARCH_INTERVAL = 60.0
SEARCH_BURST = 2

#: What port guessing counts (in the tunnel's counters; the client lists them).
COUNTERS = (
    "pg-searches",  # searches started (opener or prober)
    "pg-found",  # searches that reached the peer
    "pg-gave-up",  # searches ended without a hit: the deadline, or the peer's entry went
    "pg-refused",  # searches not started: one already running, the start rate spent, or a request whose origin is not the address its source embeds
    "pg-probes",  # bubbles sent by searches (the opener's and the prober's)
    "pg-sockets-opened",  # sockets the opener opened
    "pg-sockets-failed",  # sockets the opener asked for and could not open
)
#: Drops on an opener's socket.
DROP_REASONS = (
    "guess-socket-refused",  # not the peer, not from its embedded mapping, not to us
)


class Search:
    """One running search: its machine, its peer, its sockets and timer."""

    __slots__ = ("machine", "address", "sockets", "timer", "kept")

    def __init__(self, machine: Opener | Prober, address: bytes) -> None:
        self.machine = machine
        self.address = address
        self.sockets: list[IRandomPort | None] = []
        self.timer: Any = None
        #: The opener's socket that reached the peer, kept for its traffic.
        self.kept: IRandomPort | None = None


class PortGuessing:
    """
    Port guessing for one client tunnel.

    @param tunnel: the tunnel it extends (peers, counters, trust rules, sends).
    @param host: opens the opener's sockets (the client).
    @param clock: C{IReactorTime}.
    @param limits: this side's bounds (sockets announced when opening; probes, rate and
        deadline when probing).
    @param rng: the ports the prober draws (a seeded C{random.Random} in tests).
    @param maxSearches: searches running at once, at most.
    """

    def __init__(
        self,
        tunnel: TeredoTunnel,
        host: IGuessSockets,
        clock: Any,
        limits: GuessLimits,
        rng: random.Random | None = None,
        maxSearches: int = 1,
    ) -> None:
        self._tunnel = tunnel
        self._host = host
        self._clock = clock
        self.limits = limits
        self._rng = rng or random.SystemRandom()
        self.maxSearches = maxSearches
        self._starts = TokenBucket(clock, 1.0 / SEARCH_INTERVAL, SEARCH_BURST)
        #: Running searches, and finished openers' kept sockets, by peer address.
        self._searches: dict[bytes, Search] = {}
        #: Set from qualification (L{setNat}); neither side runs before.
        self.symmetric: bool | None = None
        self.preserving = False

    # -- life cycle --------------------------------------------------------------------------

    def setNat(self, symmetric: bool | None, preserving: bool) -> None:
        """What qualification found: C{None} while the NAT type is unknown."""
        self.symmetric = symmetric
        self.preserving = preserving

    def stop(self) -> None:
        for address in list(self._searches):
            self._end(address)

    def searches(self) -> list[Search]:
        """The searches now known (running, or ended with a kept socket)."""
        return list(self._searches.values())

    def searchFor(self, address: bytes) -> Search | None:
        """The search toward the peer at C{address}, if any."""
        return self._searches.get(address)

    def running(self) -> int:
        return sum(1 for s in self._searches.values() if s.machine.active)

    def status(self) -> dict[str, Any]:
        return {
            "state": "on",
            "running": self.running(),
            "kept": sum(1 for s in self._searches.values() if s.kept is not None),
            "max": self.maxSearches,
        }

    def _may(self, address: bytes) -> bool:
        """A new search for C{address}: within the caps, counted when refused."""
        if address in self._searches:
            return False  # one per peer: its bubbles repeat the trailer
        if self.running() >= self.maxSearches or not self._starts.allow():
            self._tunnel.counters["pg-refused"] += 1
            return False
        return True

    def _end(self, address: bytes) -> None:
        search = self._searches.pop(address, None)
        if search is None:
            return
        if search.timer is not None and search.timer.active():
            search.timer.cancel()
        search.timer = None
        for handle in search.sockets:
            if handle is not None:
                handle.close()
        search.sockets = []
        search.kept = None

    def peerRemoved(self, peer: Peer) -> None:
        """The entry left the list: its search (or kept socket) goes with it."""
        search = self._searches.get(peer.address)
        if search is not None and search.machine.active:
            self._tunnel.counters["pg-gave-up"] += 1
        self._end(peer.address)

    # -- the opener --------------------------------------------------------------------------

    @property
    def _opens(self) -> bool:
        """Our NAT gives every destination a new, unpredictable port."""
        return self.symmetric is True and not self.preserving

    def indirectTrailers(self, peer: Peer) -> tuple[Trailer, ...]:
        """
        Our indirect bubble to C{peer} is going: behind a random port-symmetric NAT, to an
        untrusted Teredo peer, it asks for a search (and ours starts) unless the Sequential
        extension's Echo Test saw ports in sequence.
        """
        tunnel = self._tunnel
        address = peer.address
        if not self._opens or peer.trusted or address[:4] != tunnel.prefix:
            return ()
        if self._sequentialLooking(peer):
            return ()
        search = self._searches.get(address)
        if search is None:
            if not self._may(address):
                return ()
            opener = Opener(mapping_of(address), self.limits)
            search = Search(opener, address)
            self._searches[address] = search
            tunnel.counters["pg-searches"] += 1
            self._apply(search, opener.start(self._clock.seconds()))
        elif not search.machine.active:
            return ()
        limits = self.limits
        return (PortGuessTrailer(limits.sockets, min(int(limits.openingTime * 100), 60000)),)

    def _sequentialLooking(self, peer: Peer) -> bool:
        """
        The Sequential extension predicted the peer's Random Port from two ports close
        together: that NAT is its case, not ours.
        """
        pp = self._tunnel.portPreserving
        test = pp.echoTestFor(peer.address) if pp is not None else None
        return test is not None and test.lower > 0 and test.upper > 0 and abs(test.upper - test.lower) <= 16

    def _socketReceived(self, address: bytes, index: int, packet: TeredoPacket, addr: Endpoint) -> None:
        """
        A packet on socket C{index} of the search for C{address}: only the peer, from the
        mapping its address embeds (RFC 4380 section 5.2.3 case 3), to our address.
        """
        tunnel = self._tunnel
        search = self._searches.get(address)
        header = packet.header
        if (
            search is None
            or not isinstance(search.machine, Opener)
            or addr != mapping_of(address)
            or header.src != address
            or header.dst != tunnel.address
            or (search.kept is not None and search.sockets[index] is not search.kept)
        ):
            tunnel.drops["guess-socket-refused"] += 1
            return
        peer = tunnel.peers.get(address)
        if peer is None:
            tunnel.drops["guess-socket-refused"] += 1
            return
        now = self._clock.seconds()
        if search.kept is not None:
            # The search is over: this is the peer's traffic on the kept socket.
            if peer.trusted and peer.mapping == addr:
                peer.heard(now)
                tunnel.release(peer)
            else:
                from teredonode.roles.tunnel import TRUSTED

                tunnel.setState(peer, TRUSTED, now, mapping=addr, timer=None)
                tunnel.release(peer)
            tunnel.accept(packet, packet.is_bubble)
            return
        if not packet.is_bubble:
            tunnel.drops["guess-socket-refused"] += 1
            return
        self._apply(search, search.machine.received(index, addr, now))

    def sendFor(self, peer: Peer, data: bytes, endpoint: Endpoint) -> bool:
        """Traffic to a peer reached by our search leaves from the kept socket."""
        search = self._searches.get(peer.address)
        if search is None or search.kept is None or endpoint != peer.mapping:
            return False
        search.kept.sendto(data, endpoint)
        return True

    # -- the prober --------------------------------------------------------------------------

    def indirectReceived(self, src: bytes, packet: TeredoPacket, nonce: bytes | None) -> None:
        """
        An indirect bubble from C{src} through our server: with a Port Guess trailer and
        its nonce, from an untrusted Teredo peer, and our NAT known not to be symmetric, a
        search probes the IPv4 address its address embeds -- only when our server saw the
        bubble come from that same address (the origin indication), so that a sender whose
        server relays forged sources (C{relax-bubble-source}) cannot aim a few hundred
        probes at a third party.
        """
        trailer = next((t for t in packet.trailers if isinstance(t, PortGuessTrailer)), None)
        if trailer is None:
            return
        tunnel = self._tunnel
        peer = tunnel.peers.get(src)
        if (
            self.symmetric is not False
            or nonce is None
            or peer is None
            or peer.trusted
            or src[:4] != tunnel.prefix
            or tunnel.address is None
        ):
            return
        ip, port = mapping_of(src)
        origin = packet.origin
        if origin is None or origin.ip != ip:
            tunnel.counters["pg-refused"] += 1
            return
        if not ipv4.is_global_unicast(ip, tunnel.hardened) or not self._may(src):
            return
        prober = Prober(ip, port, self.limits, self._rng)
        search = Search(prober, src)
        self._searches[src] = search
        tunnel.counters["pg-searches"] += 1
        self._apply(search, prober.start(self._clock.seconds(), trailer.openingSeconds))

    def learned(self, peer: Peer, addr: Endpoint) -> None:
        """
        The tunnel trusted C{peer} at C{addr} on our nonce's proof: a probe hit when it is one
        of the search's ports; the search ends either way (the peer is reached).
        """
        search = self._searches.get(peer.address)
        if search is None or not isinstance(search.machine, Prober):
            return
        effects = search.machine.received(addr, self._clock.seconds())
        if effects:
            self._apply(search, effects)
        else:
            self._end(peer.address)

    # -- effects -----------------------------------------------------------------------------

    def _tick(self, address: bytes) -> None:
        search = self._searches.get(address)
        if search is None:
            return
        search.timer = None
        self._apply(search, search.machine.tick(self._clock.seconds()))

    def _apply(self, search: Search, effects: list[Effect]) -> None:
        tunnel = self._tunnel
        counters = tunnel.counters
        address = search.address
        for effect in effects:
            if isinstance(effect, OpenSockets):
                handles = self._host.openGuessSockets(
                    effect.count,
                    lambda index, packet, addr: self._socketReceived(address, index, packet, addr),
                )
                search.sockets = list(handles)
                opened = sum(1 for h in handles if h is not None)
                counters["pg-sockets-opened"] += opened
                counters["pg-sockets-failed"] += effect.count - opened
            elif isinstance(effect, SendBubble):
                self._send(search, effect)
            elif isinstance(effect, CloseSockets):
                for index, handle in enumerate(search.sockets):
                    if handle is not None and index != effect.keep:
                        handle.close()
                        search.sockets[index] = None
            elif isinstance(effect, SetTimer):
                if search.timer is not None and search.timer.active():
                    search.timer.cancel()
                search.timer = self._clock.callLater(effect.delay, self._tick, address)
            elif isinstance(effect, Found):
                self._found(search, effect)
            elif isinstance(effect, GaveUp):
                counters["pg-gave-up"] += 1
                tunnel.logChange("port guessing for {peer} gave up after {sent} bubbles",
                                  peer=_text(address), sent=effect.sent)
                self._end(address)

    def _send(self, search: Search, effect: SendBubble) -> None:
        tunnel = self._tunnel
        source = tunnel.address
        peer = tunnel.peers.get(search.address)
        if source is None or peer is None:
            return
        data = bubble(source, search.address)
        if peer.nonce_received is not None:
            data += encode_trailers((NonceTrailer(peer.nonce_received),))  # X-SNS-04
        if effect.socket is None:
            tunnel.send(data, effect.dst)
        else:
            handle = search.sockets[effect.socket] if effect.socket < len(search.sockets) else None
            if handle is None:
                return
            handle.sendto(data, effect.dst)
        tunnel.counters["pg-probes"] += 1

    def _found(self, search: Search, effect: Found) -> None:
        tunnel = self._tunnel
        tunnel.counters["pg-found"] += 1
        tunnel.logChange(
            "port guessing reached {peer} at {mapping} after {sent} bubbles, {elapsed:.1f} s",
            peer=_text(search.address), mapping=f"{effect.mapping[0]}:{effect.mapping[1]}",
            sent=effect.sent, elapsed=effect.elapsed,
        )
        if search.timer is not None and search.timer.active():
            search.timer.cancel()
        search.timer = None
        if effect.socket is None:
            # The prober: the tunnel already trusted the peer on our nonce's proof.
            self._end(search.address)
            return
        from teredonode.roles.tunnel import TRUSTED

        search.kept = search.sockets[effect.socket]
        peer = tunnel.peers.get(search.address)
        if peer is None or search.kept is None:
            self._end(search.address)
            return
        tunnel.setState(peer, TRUSTED, self._clock.seconds(), mapping=effect.mapping, timer=None)
        tunnel.release(peer)


def _text(address: bytes) -> str:
    from teredonode.wire.ipv6 import ipv6_text

    return ipv6_text(address)
