# -*- test-case-name: tests.protocol.test_pp_client -*-
"""
RFC 6081 section 5.4, the Port-Preserving Symmetric NAT Extension (requirements digest
X-PP-01a .. X-PP-16b), for a client's L{teredonode.roles.tunnel.TeredoTunnel}.

Behind a symmetric NAT every destination gets its own external port, so a peer cannot send
to the mapping our address embeds.  A NAT that keeps the local port number in a fresh
mapping (port-preserving, X-PP-06) lets us predict the external port of a port we never
used: we open a random local port for the peer (its "Random Port", X-PP-08) and tell it in
the Random Port trailer of our indirect bubbles (X-PP-09); it sends a second direct bubble
to that port at our embedded IPv4 (X-PP-10), and the two random ports meet (section 6.3).

The tunnel calls in here from a handful of hooks (sending indirect and direct bubbles,
answering indirect bubbles, accepting direct ones on the service port, sending to a peer,
removing one); the random ports themselves are opened by the client through
L{teredonode.interfaces.IRandomPorts}, so this module touches no socket.  What arrives on a
random port comes back through L{PortPreserving._received}.

Bounds (every byte from the network is hostile):

  - at most C{maxPorts} random ports are open at once (C{random-ports}); past it a peer gets
    none (C{pp-ports-refused}) and the exchange goes on as Symmetric NAT Support alone;
  - a port is opened for one peer and closed when the peer proves itself on the service
    port (X-PP-12, X-PP-14), when the peer changes its own (X-PP-11), when a mapping changes
    (X-PP-16) and whenever the entry leaves the peer list (evicted, expired, reset);
  - a random port accepts only packets whose source is the peer it was opened for and whose
    destination is our address; an untrusted peer's bubble there must come from the mapping
    its address embeds or prove our last nonce (X-SNS-08), so a stranger who guessed the
    port cannot become a peer ([INFERRED]: X-PP-15 names no proof, but the exchange of
    section 6.3 always carries one);
  - what an incoming indirect bubble makes us send (the second direct bubble, and the port
    opened for it) is paid from the inbound probe budget and paced per destination like
    the answer itself, and goes only to the IPv4 address the peer's Teredo address embeds,
    which its server checked against the real sender (RFC 4380 section 5.3.1).

RFC 6081 section 5.5, the Sequential Port-Symmetric NAT Extension (X-SEQ-01a .. X-SEQ-09),
runs here too: behind a symmetric NAT that does not preserve ports, the indirect bubble to a
peer waits for an Echo Test from the random port (an RS to the server, a direct bubble to the
peer, an RS to the server's secondary address), and carries the port midway between the two
the server saw (defect D2), which a NAT handing out ports in sequence gave the bubble.  Its
RAs come back on the random port, accepted only from the server's two addresses with one of
the test's nonces.

Two choices beyond the RFC text, both [INFERRED] from Figure 1, which says port-restricted
<-> port-preserving symmetric works with this extension although section 5.4.4.3 states the
second direct bubble only for a client behind a symmetric NAT:

  - a client whose NAT is not symmetric (its one mapping serves every destination) sends the
    second direct bubble from its service port to the peer's random port (section 6.3 step
    11: "port-restricted NAT or a symmetric NAT");
  - a client behind a symmetric NAT whose peer spoke to it (an indirect bubble came) without
    advertising a random port sends the second bubble from its random port to the mapping
    the peer's address embeds, which for such a peer serves every destination.  Not before
    the peer spoke: a port-preserving NAT preserves a port for its first destination only,
    so the random port must not be spent on the embedded mapping of a peer that turns out
    to have a random port of its own.
"""

from __future__ import annotations

from hmac import compare_digest
from typing import TYPE_CHECKING, Any

from twisted.internet.task import LoopingCall

from teredonode.interfaces import Endpoint, IRandomPort, IRandomPorts
from teredonode.security import TokenBucket
from teredonode.wire import ipv4
from teredonode.wire.address import mapping_of
from teredonode.wire.ipv6 import bubble
from teredonode.wire.teredo import (
    RANDOM_PORT_SEND_TYPE,
    NonceTrailer,
    RandomPortTrailer,
    TeredoPacket,
    Trailer,
    encode_trailers,
)

if TYPE_CHECKING:
    from teredonode.peers import Peer
    from teredonode.roles.tunnel import TeredoTunnel

__all__ = [
    "PortPreserving",
    "PEER_REFRESH_INTERVAL",
    "MAX_REFRESHES",
    "IDLE",
    "RANDOM_PORT_RANGE",
    "OPEN_ATTEMPTS",
    "ECHO_TEST_BURST",
    "COUNTERS",
    "DROP_REASONS",
]

#: X-PP-04, X-PP-05: the Peer Refresh Timer's period.
PEER_REFRESH_INTERVAL = 30.0
#: X-PP-03: direct bubbles the timer sends an idle random-port peer before giving up.
MAX_REFRESHES = 20
#: X-PP-11, X-PP-13, X-PP-16: "the last 30 seconds" of traffic that keeps a mapping.
IDLE = 30.0
#: Where random ports are drawn from: above the privileged ports, below 49152, where NATs
#: (and the lab's port-preserving one) take the ports they hand out on their own, so a port
#: from there is more often taken on the NAT and then not preserved.
RANDOM_PORT_RANGE = (1024, 49151)
#: Ports tried when the one drawn is in use on the host.
OPEN_ATTEMPTS = 3
#: Echo Tests that may start at once before `echo-test-rate` paces them.
ECHO_TEST_BURST = 2

#: What this extension counts (in the tunnel's counters; the client lists them).
COUNTERS = (
    "pp-ports-opened",  # X-PP-08: random ports opened for a peer
    "pp-ports-closed",  # X-PP-11/12/14/16, or the entry went
    "pp-ports-refused",  # none opened: `random-ports` already open, or no port could be bound
    "pp-bubbles",  # X-PP-10: second direct bubbles, toward a peer's random port
    "pp-learned",  # X-PP-15: a peer trusted from a direct bubble on its random port
    "pp-moved",  # X-PP-14: a random-port peer reached us on the service port
    "pp-resets",  # X-PP-13/16: a peer's mapping changed after 30 s of silence: bubbles again
    "pp-refreshes",  # X-PP-03: Peer Refresh Timer bubbles to idle random-port peers
    "seq-echo-tests",  # X-SEQ-06: Echo Tests run (each: two RSs and a bubble)
    "seq-predicted",  # X-SEQ-09: external ports predicted from both RAs
    "seq-fallbacks",  # X-SEQ-04: two tests unanswered, the indirect bubble without a port
    "seq-echo-limited",  # no Echo Test: `echo-test-rate` spent; the indirect bubble goes plain
)
#: Drops on a random port.
DROP_REASONS = (
    "random-port-refused",  # not from the peer the port was opened for, not to us, or unproven
)


class PortPreserving:
    """
    The Port-Preserving Symmetric NAT Extension of one client tunnel, and with
    C{sequential} the Sequential Port-Symmetric NAT Extension built on it.

    @param tunnel: the tunnel it extends (its peers, counters, sends, state changes).
    @param host: opens the random ports (the client).
    @param clock: C{IReactorTime}, for the Peer Refresh Timer.
    @param maxPorts: random ports open at once, at most.
    @param trailerType: the Random Port trailer's type on the wire (defect D1: 0x02, the
        IANA value, by default; 0x05 as section 4.5 prints it).
    @param sequential: the Sequential Port-Symmetric NAT Extension too.
    @param echoTestRate: Echo Tests started per second, at most (bursts of
        L{ECHO_TEST_BURST}).
    """

    def __init__(
        self,
        tunnel: TeredoTunnel,
        host: IRandomPorts,
        clock: Any,
        maxPorts: int,
        trailerType: int = RANDOM_PORT_SEND_TYPE,
        sequential: bool = False,
        echoTestRate: float = 0.2,
    ) -> None:
        self._tunnel = tunnel
        #: Echo Tests started (each costs two RSs of our address's budget at the server).
        self._echoLimit = TokenBucket(clock, echoTestRate, ECHO_TEST_BURST)
        #: X-SEQ-01a: the Sequential Port-Symmetric NAT Extension runs too.
        self.sequential = sequential
        #: Its Echo Tests, by peer address (each holds a random port: bounded by maxPorts).
        self._echo: dict[bytes, EchoTest] = {}
        #: The server's secondary address, the Echo Test's second RS goes to.
        self._secondary: Endpoint | None = None
        self._host = host
        self._clock = clock
        self.maxPorts = maxPorts
        self._trailerType = trailerType
        #: The open random ports, by the address of the peer each was opened for.
        self._open: dict[bytes, IRandomPort] = {}
        #: X-PP-05: the NAT flags start FALSE; qualification sets them (L{setNat}).
        self.symmetric = False
        self.preserving = False
        self._refresh = LoopingCall(self._refreshPeers)
        self._refresh.clock = clock

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """X-PP-05: the Peer Refresh Timer runs every 30 s from the start."""
        if not self._refresh.running:
            self._refresh.start(PEER_REFRESH_INTERVAL, now=False)

    def stop(self) -> None:
        if self._refresh.running:
            self._refresh.stop()
        self.closeAll()

    def setNat(self, symmetric: bool, preserving: bool, secondary: Endpoint | None = None) -> None:
        """
        The Symmetric and Port-Preserving NAT flags qualification found (X-PP-06), and the
        server's secondary address (for the Echo Test).
        """
        self.symmetric = symmetric
        self.preserving = preserving
        self._secondary = secondary

    @property
    def _sequentialNat(self) -> bool:
        """
        X-SEQ-01b, X-SEQ-05: symmetric but not port-preserving: assumed sequential, with the
        extension on (the client turns it on only with Port-Preserving, X-PP-01b).
        """
        return self.sequential and self.symmetric and not self.preserving and self._secondary is not None

    @property
    def _rules(self) -> bool:
        """Section 5.4.4.5's receive rules apply (X-SEQ-08: "as if" Port-Preserving)."""
        return self.preserving or self._sequentialNat

    def keeps(self, peer: Peer) -> bool:
        """
        Does the peer list keep C{peer} past its 30 s?  A peer we reach through our random
        port while the Peer Refresh Timer still refreshes it (X-PP-03: 20 times, 10 min):
        the timer's 30 s period would otherwise find it gone.  (The peer's own refreshes
        keep the entry valid too; without them, data after a silence waits for the RFC 4380
        bubbles, which the peer answers on the random port.)
        """
        return (
            peer.trusted
            and peer.direct_rx_random
            and peer.refresh_count < MAX_REFRESHES
            and peer.address in self._open
        )

    def closeAll(self) -> None:
        for address in list(self._open):
            self._close(address)

    def openPorts(self) -> int:
        return len(self._open)

    def portFor(self, address: bytes) -> IRandomPort | None:
        """The random port open for the peer at C{address}, if any."""
        return self._open.get(address)

    def echoTestFor(self, address: bytes) -> EchoTest | None:
        """The Echo Test (X-SEQ-06) of the peer at C{address}, if one ran."""
        return self._echo.get(address)

    @property
    def refreshing(self) -> bool:
        """Is the Peer Refresh Timer (X-PP-04/05) running?"""
        return self._refresh.running

    # -- ports -------------------------------------------------------------------------------

    def _allocate(self, peer: Peer, predict: bool = True) -> bool:
        """
        X-PP-08: choose a random local port, listen on it, keep it as the peer's Random Port
        (external == local: the NAT preserves ports; C{predict} false for the Echo Test,
        which predicts the external port instead, X-SEQ-05).  Within L{maxPorts}.
        """
        if peer.address in self._open:
            return True
        tunnel = self._tunnel
        if len(self._open) >= self.maxPorts:
            tunnel.counters["pp-ports-refused"] += 1
            return False
        low, high = RANDOM_PORT_RANGE
        address = peer.address
        for _ in range(OPEN_ATTEMPTS):
            port = low + int.from_bytes(tunnel.randbytes(2), "big") % (high - low + 1)
            handle = self._host.openRandomPort(
                port, lambda packet, addr: self._received(address, packet, addr)
            )
            if handle is not None:
                self._open[address] = handle
                if predict:
                    peer.random_port = port
                tunnel.counters["pp-ports-opened"] += 1
                return True
        tunnel.counters["pp-ports-refused"] += 1
        return False

    def _close(self, address: bytes) -> None:
        self._stopEcho(address)
        handle = self._open.pop(address, None)
        if handle is not None:
            handle.close()
            self._tunnel.counters["pp-ports-closed"] += 1

    def _release(self, peer: Peer) -> None:
        """Random Port = 0 and stop listening on it (X-PP-11, -12, -14, -16)."""
        peer.random_port = 0
        self._close(peer.address)

    def peerRemoved(self, peer: Peer) -> None:
        """The entry left the list: its port goes with it (no socket outlives its peer)."""
        self._close(peer.address)

    # -- sending -----------------------------------------------------------------------------

    def indirectTrailers(self, peer: Peer) -> tuple[Trailer, ...]:
        """
        X-PP-08, X-PP-09: the trailers our indirect bubble to C{peer} carries besides the
        nonce: with both NAT flags set and the peer not trusted, a random port is opened for
        it first if it has none; then, while it has one, a Random Port trailer.
        """
        if self.preserving:
            if self.symmetric and not peer.trusted and not peer.random_port:
                self._allocate(peer)
        elif not self._sequentialNat:
            return ()
        # X-SEQ-07: a sequential NAT's Random Port is the predicted external port.
        if peer.random_port:
            return (RandomPortTrailer(peer.random_port, self._trailerType),)
        return ()

    def secondBubble(self, peer: Peer, inbound: bool) -> None:
        """
        X-PP-10: besides the direct bubble to the peer's embedded mapping, an untrusted
        peer with a random port gets a second one there, at its embedded IPv4, from our
        random port with our Random Port trailer (and its nonce, X-SNS-04).  See the module
        docstring for the two [INFERRED] variants (not symmetric: from the service port;
        a peer without a random port: to its embedded mapping).  C{inbound}: an incoming
        indirect bubble made us send it, so it is paid and paced as the answer is.
        """
        tunnel = self._tunnel
        source = tunnel.address
        if source is None or peer.trusted or peer.address[:4] != tunnel.prefix:
            return
        ip, embeddedPort = mapping_of(peer.address)
        if self.symmetric:
            if not self.preserving:
                return
            if peer.peer_random_port:
                target: Endpoint = (ip, peer.peer_random_port)
            elif peer.nonce_received is not None:
                target = (ip, embeddedPort)
            else:
                return
        elif peer.peer_random_port:
            target = (ip, peer.peer_random_port)
        else:
            return
        if not ipv4.is_global_unicast(ip, tunnel.hardened):
            return
        # Paced apart from the answer to the same endpoint (it leaves from another port).
        if inbound and not (tunnel.answerLimit.allow(("pp", target)) and tunnel.inboundBubbleAllowed()):
            return
        if self.symmetric and not self._allocate(peer):
            return
        trailers: list[Trailer] = []
        if peer.nonce_received is not None and tunnel.symmetricNat:
            trailers.append(NonceTrailer(peer.nonce_received))
        if peer.random_port:
            trailers.append(RandomPortTrailer(peer.random_port, self._trailerType))
        data = bubble(source, peer.address) + encode_trailers(tuple(trailers))
        handle = self._open.get(peer.address) if self.symmetric else None
        if handle is not None:
            handle.sendto(data, target)
        else:
            tunnel.send(data, target)
        tunnel.counters["pp-bubbles"] += 1

    def sendFor(self, peer: Peer, data: bytes, endpoint: Endpoint) -> bool:
        """
        A peer trusted on our random port (X-PP-15) is reached from it: its NAT let in
        that port's packets only.  C{True} when C{data} went that way.
        """
        if not peer.direct_rx_random or endpoint != peer.mapping:
            return False
        handle = self._open.get(peer.address)
        if handle is None:
            return False
        handle.sendto(data, endpoint)
        return True

    def dataSent(self, peer: Peer, now: float) -> None:
        """X-PP-07: the Last Data Packet Sent Timestamp, for a peer with a random port."""
        if peer.random_port:
            peer.last_data_tx = now

    # -- receiving ---------------------------------------------------------------------------

    def indirectReceived(self, peer: Peer, packet: TeredoPacket) -> None:
        """
        X-PP-11: an indirect bubble from C{peer} advertising a random port.  Kept when we
        know none; the same one, or traffic either way in the last 30 s, and it is ignored;
        otherwise (SHOULD) the new one replaces it, and our own random port is given up so
        that both sides start afresh.
        """
        port = 0
        for trailer in packet.trailers:
            if isinstance(trailer, RandomPortTrailer):
                port = trailer.port
                break
        if not port:
            return
        if not peer.peer_random_port:
            peer.peer_random_port = port
            return
        now = self._clock.seconds()
        if port == peer.peer_random_port or now - peer.last_tx < IDLE or now - peer.last_rx < IDLE:
            return
        peer.peer_random_port = port
        if self._rules:
            self._release(peer)

    def primaryAccepted(self, peer: Peer) -> None:
        """
        A direct bubble from the peer was accepted on the service port (the tunnel's own
        rules proved it: the embedded mapping, or our nonce), the peer now trusted at its
        source.  X-PP-12 (it was not trusted) and X-PP-14 (it was, through our random port):
        Direct Receive on Primary, and the random port is given up.
        """
        if not self._rules:
            return
        self._stopEcho(peer.address)  # X-SEQ-08
        if peer.direct_rx_random:
            self._tunnel.counters["pp-moved"] += 1
        peer.direct_rx_primary = True
        peer.direct_rx_random = False
        self._release(peer)

    def primaryMismatch(self, peer: Peer, addr: Endpoint) -> bool:
        """
        X-PP-13: a direct bubble on the service port from a trusted peer (Direct Receive on
        Primary) at another mapping than the one we know, which nothing proves: after 30 s
        of silence both ways the peer's NAT has likely changed its mapping, so the peer is
        no longer trusted and gets an indirect bubble.  C{True} when so handled.
        """
        if not (self._rules and peer.trusted and peer.direct_rx_primary and addr != peer.mapping):
            return False
        return self._reestablish(peer)

    def _reestablish(self, peer: Peer, release: bool = False) -> bool:
        """
        X-PP-13, X-PP-16: after 30 s of silence both ways, a trusted peer heard at another
        mapping is trusted no more and gets an indirect bubble (within section 5.2.6's
        limits, the inbound budget paying); inside those 30 s the traffic proves the known
        mapping and the bubble is refused.
        """
        from teredonode.roles.tunnel import PROBE_INTERVAL, PROBING

        tunnel = self._tunnel
        now = self._clock.seconds()
        if now - peer.last_tx < IDLE or now - peer.last_rx < IDLE or peer.timer is not None:
            return False
        source = tunnel.address
        if source is None or not peer.may_bubble(now) or not tunnel.inboundBubbleAllowed():
            return False
        if release:
            self._release(peer)
        # Trusted no more: an exchange starts with the indirect bubble, and goes on (its
        # retries, then the end) as for a peer never reached.
        peer.attempts = 0
        probe = tunnel.bubble
        retry = self._clock.callLater(PROBE_INTERVAL, tunnel.retry, peer, probe)
        tunnel.setState(peer, PROBING, timer=retry)
        peer.direct_rx_primary = peer.direct_rx_random = False
        tunnel.counters["pp-resets"] += 1
        tunnel.sendIndirect(peer, source)
        peer.bubble_sent(now)
        return True

    def _received(self, address: bytes, packet: TeredoPacket, addr: Endpoint) -> None:
        """
        A packet on the random port opened for the peer C{address} (X-PP-15, X-PP-16; data
        from the peer's proven mapping is delivered as on the service port).
        """
        from teredonode.roles.tunnel import TRUSTED

        tunnel = self._tunnel
        if addr == tunnel.server or addr == self._secondary:
            self._echoAnswer(address, packet)
            return
        header = packet.header
        peer = tunnel.peers.get(address) if address in self._open else None
        if peer is None or header.src != address or header.dst != tunnel.address:
            tunnel.drops["random-port-refused"] += 1
            return
        now = self._clock.seconds()
        isBubble = packet.is_bubble
        if peer.trusted and peer.mapping == addr:
            # X-PP-16, the same mapping: accepted (and a data packet delivered).
            peer.heard(now)
            tunnel.release(peer)
            tunnel.accept(packet, isBubble)
            if isBubble:
                tunnel.advertise(peer, packet, addr)
            return
        if not isBubble:
            tunnel.drops["random-port-refused"] += 1
            return
        if not peer.trusted:
            # X-PP-15, with the proof the module docstring explains.
            if addr != mapping_of(address) and not tunnel.provesNonce(peer, packet):
                tunnel.drops["random-port-refused"] += 1
                return
            tunnel.setState(peer, TRUSTED, now, mapping=addr, timer=None)
            peer.direct_rx_random = True
            tunnel.counters["pp-learned"] += 1
            tunnel.logChange(
                "peer {peer} reached through random port {port} at {mapping}",
                peer=_text(address), port=peer.random_port, mapping=f"{addr[0]}:{addr[1]}",
            )
            tunnel.release(peer)
            tunnel.counters["bubbles-received"] += 1
            return
        if not peer.direct_rx_primary:
            # X-PP-16 (SHOULD), another mapping: our port is given up, the peer bubbled again.
            if self._reestablish(peer, release=True):
                return
        tunnel.drops["random-port-refused"] += 1

    # -- the Echo Test (X-SEQ-04 .. X-SEQ-09) ------------------------------------------------

    def deferIndirect(self, peer: Peer) -> bool:
        """
        X-SEQ-05: an indirect bubble is due for C{peer}.  Behind a (presumed) sequential NAT,
        with the peer untrusted and no Random Port predicted yet, an Echo Test runs first
        and its end sends the bubble (X-SEQ-09, or X-SEQ-04's fallback): C{True}, the
        caller sends nothing now.  A test already running holds the bubble the same way.
        """
        if not self._sequentialNat or peer.trusted or peer.random_port:
            return False
        test = self._echo.get(peer.address)
        if test is not None:
            return test.timer is not None  # running; after a fallback, bubbles go plain
        if not self._echoLimit.allow():
            self._tunnel.counters["seq-echo-limited"] += 1
            return False
        if not self._allocate(peer, predict=False):
            return False
        self._echo[peer.address] = test = EchoTest()
        self._echoTest(peer, test)
        return True

    def _echoTest(self, peer: Peer, test: EchoTest) -> None:
        """
        X-SEQ-06: from the random port, an RS to the server (nonce 1), a direct bubble to the
        peer (at its random port when it advertised one, as section 5.4.4.3's second bubble
        goes), an RS to the server's secondary address (nonce 2); then the Failover Timer,
        for as many seconds as tests were run.
        """
        tunnel = self._tunnel
        handle = self._open.get(peer.address)
        source, server, secondary = tunnel.address, tunnel.server, self._secondary
        if handle is None or source is None or server is None or secondary is None:
            return
        draw = tunnel.randbytes
        test.nonce1, test.nonce2 = draw(8), draw(8)
        handle.sendto(self._host.echoSolicitation(test.nonce1), server)
        ip, port = mapping_of(peer.address)
        data = bubble(source, peer.address)
        if peer.nonce_received is not None and tunnel.symmetricNat:
            data += encode_trailers((NonceTrailer(peer.nonce_received),))
        handle.sendto(data, (ip, peer.peer_random_port or port))
        handle.sendto(self._host.echoSolicitation(test.nonce2), secondary)
        test.retries += 1
        test.timer = self._clock.callLater(test.retries, self._failover, peer.address)
        tunnel.counters["seq-echo-tests"] += 1

    def _failover(self, address: bytes) -> None:
        """
        X-SEQ-04: the Echo Test Failover Timer.  After the first test, another; after the
        second, the indirect bubble goes as it would have without this extension.
        """
        test = self._echo.get(address)
        tunnel = self._tunnel
        peer = tunnel.peers.get(address) if test is not None else None
        if test is None or peer is None:
            return
        test.timer = None
        if test.retries == 1:
            self._echoTest(peer, test)
            return
        tunnel.counters["seq-fallbacks"] += 1
        if tunnel.address is not None and not peer.trusted:
            tunnel.sendIndirect(peer, tunnel.address)

    def _echoAnswer(self, address: bytes, packet: TeredoPacket) -> None:
        """
        X-SEQ-09: an RA on the random port opened for C{address}, from the server or its
        secondary address.  Its nonce names the RS it answers; its origin indication, the
        external port the NAT gave that RS.  Both known: the Random Port is predicted
        midway (D2: the lower and upper ports' mean, rounded down) and the indirect bubble
        goes, with it in its Random Port trailer (X-SEQ-07).
        """
        tunnel = self._tunnel
        test = self._echo.get(address)
        auth, origin = packet.auth, packet.origin
        if test is None or test.timer is None or auth is None or origin is None or not origin.port:
            tunnel.drops["random-port-refused"] += 1
            return
        if compare_digest(auth.nonce, test.nonce1):
            if not test.lower:
                test.lower = origin.port
        elif compare_digest(auth.nonce, test.nonce2):
            if not test.upper:
                test.upper = origin.port
        else:
            tunnel.drops["random-port-refused"] += 1
            return
        peer = tunnel.peers.get(address)
        if peer is None or not (test.lower and test.upper):
            return
        test.timer.cancel()
        test.timer = None
        peer.random_port = (test.lower + test.upper) // 2
        tunnel.counters["seq-predicted"] += 1
        if tunnel.address is not None and not peer.trusted:
            tunnel.sendIndirect(peer, tunnel.address)

    def _stopEcho(self, address: bytes) -> None:
        """X-SEQ-08 (and the port closed): the test ends, its timer cancelled."""
        test = self._echo.pop(address, None)
        if test is not None and test.timer is not None:
            test.timer.cancel()
            test.timer = None

    # -- the Peer Refresh Timer (X-PP-03, X-PP-04) -------------------------------------------

    def _refreshPeers(self) -> None:
        """
        Every 30 s, each peer we reach through our random port: data sent in the last 30 s
        resets its Connection Refresh Count; otherwise, below 20, a direct bubble keeps the
        NATs' mappings alive (and the entry listed), and the count goes up.  The pass also
        gives back the ports of untrusted peers with no exchange running.
        """
        tunnel = self._tunnel
        source = tunnel.address
        now = self._clock.seconds()
        for test in self._echo.values():
            if test.timer is None:  # X-SEQ-03 (a running test keeps its own)
                test.lower = test.upper = test.retries = 0
        for address, handle in list(self._open.items()):
            peer = tunnel.peers.get(address)
            if peer is None:
                continue
            if not peer.trusted and peer.timer is None:
                # [INFERRED] Its exchange ended unanswered: the port goes back (a failed
                # entry stays listed up to 300 s under section 5.2.6); a new exchange
                # opens another.
                self._release(peer)
                continue
            if source is None or not (peer.trusted and peer.direct_rx_random):
                continue
            mapping = peer.mapping
            if mapping is None:
                continue
            sent = peer.last_data_tx
            if sent is not None and now - sent < IDLE:
                peer.refresh_count = 0
                continue
            if peer.refresh_count >= MAX_REFRESHES:
                continue
            trailer = encode_trailers((RandomPortTrailer(peer.random_port, self._trailerType),))
            handle.sendto(bubble(source, address) + trailer, mapping)
            # A transmission (RFC 4380 section 5.2), not an unanswered probe: the peer does
            # not answer these, and they must not use up section 5.2.6's probe allowance.
            peer.last_tx = now
            peer.refresh_count += 1
            tunnel.counters["pp-refreshes"] += 1



class EchoTest:
    """
    One peer's Echo Test (RFC 6081 section 5.5.1): the two RSs' nonces, the external ports
    the server saw them from (0 until known), the tests run, the Failover Timer.
    """

    __slots__ = ("nonce1", "nonce2", "lower", "upper", "retries", "timer")

    def __init__(self) -> None:
        self.nonce1 = self.nonce2 = b""
        self.lower = self.upper = self.retries = 0
        self.timer: Any = None


def _text(address: bytes) -> str:
    from teredonode.wire.ipv6 import ipv6_text

    return ipv6_text(address)
