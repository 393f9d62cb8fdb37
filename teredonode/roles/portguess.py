# -*- test-case-name: tests.unit.test_portguess -*-
"""
Port guessing beyond RFC 6081: birthday-paradox hole punching between a client behind a
random port-symmetric NAT ("S", the opener) and a client whose mapping toward it is fixed
("R", the prober: cone, restricted, UPnP-mapped, or port-preserving on a fresh port).

RFC 6081 Figure 1 marks port-restricted <-> port-symmetric "No": S's NAT gives every
destination a new, unpredictable port, so R never knows where to send, and R's NAT only lets
in what R sent to first.  Both can be beaten by numbers (docs/nat-traversal.md, "Beyond the
RFC"):

  - S opens C{n} sockets and sends one bubble from each to R's fixed mapping C{Mr}.  R's NAT
    drops them, but each opens a mapping C{S_ip:x_i} in S's NAT that lets C{Mr} in.
  - R then sends C{m} bubbles from C{Mr} to random ports of S's public address.  Each opens
    R's NAT toward the port it was sent to; one that lands on some C{x_i} reaches S's socket
    C{s_i}, whose answer (from C{x_i}, to C{Mr}) now passes R's NAT.

With ports drawn uniformly from C{space} candidates, P(hit) = 1 - (1 - n/space)^m
(L{hit_probability}); n = m = 256 gives about 63 %.

This module is the plan only, as sans-IO machines in the style of
L{teredonode.roles.qualification}: L{Opener} (S's side) and L{Prober} (R's side) take the
time and what arrived, and return effects (open sockets, send a bubble, close sockets, a
timer, the outcome).  Nothing here touches a socket or a clock, so the pacing, the bounds and
the outcome are tested by plain calls, and a whole search is simulated against a model of a
random NAT (C{tests/unit/test_portguess.py}).  Both sides are bounded: at most
L{GuessLimits.sockets} sockets and L{GuessLimits.probes} probes, paced at
L{GuessLimits.rate} packets per second, over at most L{GuessLimits.deadline} seconds.

Why this is off unless enabled: the probes are bubbles to one peer far beyond RFC 4380
section 5.2.6's four bubbles in 300 seconds (CL-TX-05), so the search only runs between two
clients that both ask for it, with its own rate and caps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Union

from teredonode.interfaces import Endpoint

__all__ = [
    "GuessLimits",
    "OpenSockets",
    "SendBubble",
    "CloseSockets",
    "SetTimer",
    "Found",
    "GaveUp",
    "Effect",
    "Opener",
    "Prober",
    "hit_probability",
    "probes_for",
    "LOWEST_PORT",
]

#: Ports below this are not guessed: NATs allocate from the dynamic range, and probing
#: well-known ports of a shared (carrier-grade) address would look like a port scan.
LOWEST_PORT = 1024


@dataclass(frozen=True)
class GuessLimits:
    """
    The bounds of one search, agreed by both sides (the opener announces C{sockets} and
    when it will be ready; the prober uses its own C{probes}, C{rate} and C{deadline}).
    """

    sockets: int = 256
    probes: int = 256
    rate: float = 50.0  # packets per second, each side
    deadline: float = 30.0  # seconds from start to giving up
    batch: int = 5  # packets per timer tick: fewer wake-ups at the same average rate

    def __post_init__(self) -> None:
        if not 1 <= self.sockets <= 1024:
            raise ValueError("sockets must be within 1..1024")
        if not 1 <= self.probes <= 4096:
            raise ValueError("probes must be within 1..4096")
        if not 0 < self.rate <= 1000:
            raise ValueError("rate must be within (0, 1000] packets/s")
        if not 0 < self.deadline <= 600:
            raise ValueError("deadline must be within (0, 600] s")
        if not 1 <= self.batch <= 64:
            raise ValueError("batch must be within 1..64")

    @property
    def openingTime(self) -> float:
        """Seconds the opener needs to send its C{sockets} bubbles at C{rate}."""
        return self.sockets / self.rate


@dataclass(frozen=True)
class OpenSockets:
    """Open C{count} UDP sockets on fresh local ports (numbered 0..count-1 from now on)."""

    count: int


@dataclass(frozen=True)
class SendBubble:
    """Send a bubble to C{dst}, from socket C{socket} (C{None}: the client's own socket)."""

    dst: Endpoint
    socket: int | None = None


@dataclass(frozen=True)
class CloseSockets:
    """Close every socket opened for this search except C{keep} (C{None}: close all)."""

    keep: int | None = None


@dataclass(frozen=True)
class SetTimer:
    """Call C{tick} again after C{delay} seconds (replaces any earlier timer)."""

    delay: float


@dataclass(frozen=True)
class Found:
    """
    The search hit: the peer is reached at C{mapping}; on the opener's side through socket
    C{socket}, on the prober's through its own socket (C{socket} is C{None}).
    """

    mapping: Endpoint
    socket: int | None
    sent: int  # packets this side sent for the search
    elapsed: float


@dataclass(frozen=True)
class GaveUp:
    """The deadline passed without a hit; every socket of the search is closed."""

    sent: int
    elapsed: float


Effect = Union[OpenSockets, SendBubble, CloseSockets, SetTimer, Found, GaveUp]


def hit_probability(sockets: int, probes: int, space: int = 65536 - LOWEST_PORT) -> float:
    """
    The chance that C{probes} distinct random ports out of C{space} hit at least one of
    C{sockets} open ones: 1 - C(space - n, m) / C(space, m), close to 1 - (1 - n/space)^m.
    """
    if sockets <= 0 or probes <= 0:
        return 0.0
    if sockets + probes > space:
        return 1.0
    miss = 1.0
    for i in range(probes):
        miss *= (space - sockets - i) / (space - i)
    return 1.0 - miss


def probes_for(target: float, sockets: int, space: int = 65536 - LOWEST_PORT) -> int:
    """The fewest probes that reach C{target} probability against C{sockets} open ports."""
    if not 0 < target < 1:
        raise ValueError("target must be within (0, 1)")
    miss, probes = 1.0, 0
    while 1.0 - miss < target:
        if probes >= space - sockets:
            return probes
        miss *= (space - sockets - probes) / (space - probes)
        probes += 1
    return probes


@dataclass
class _Pacing:
    """Send-as-due bookkeeping shared by both sides: packet i is due at start + i / rate."""

    limits: GuessLimits
    start: float
    total: int
    sent: int = 0

    def due(self, now: float) -> int:
        """How many more packets may go now (at most one batch)."""
        allowed = min(self.total, int((now - self.start) * self.limits.rate) + 1)
        return max(0, min(allowed - self.sent, self.limits.batch))

    def nextTick(self, now: float) -> float:
        """Delay until the next batch is due (or to the deadline when all are sent)."""
        if self.sent >= self.total:
            return max(0.0, self.start + self.limits.deadline - now)
        # Wake when a whole batch is due (or the last packet), not for every packet.
        last = min(self.sent + self.limits.batch, self.total) - 1
        return max(self.start + last / self.limits.rate - now, 1.0 / self.limits.rate)


class _Search:
    """
    What both sides share: the pacing of their packets from a start time, the deadline, and
    being done once (a hit or giving up).
    """

    def __init__(self, limits: GuessLimits) -> None:
        self.limits = limits
        self._pacing: _Pacing | None = None
        self._done = False

    @property
    def active(self) -> bool:
        return self._pacing is not None and not self._done

    @property
    def sent(self) -> int:
        return 0 if self._pacing is None else self._pacing.sent

    def tick(self, now: float) -> list[Effect]:
        """The timer fired: send what is due, or give up at the deadline."""
        pacing = self._pacing
        if pacing is None or self._done:
            return []
        if now >= pacing.start + self.limits.deadline:
            self._done = True
            return self._closing() + [GaveUp(pacing.sent, now - pacing.start)]
        if now < pacing.start:
            return [SetTimer(pacing.start - now)]
        effects: list[Effect] = []
        for _ in range(pacing.due(now)):
            effects.append(self._packet(pacing.sent))
            pacing.sent += 1
        effects.append(SetTimer(pacing.nextTick(now)))
        return effects

    def _packet(self, index: int) -> SendBubble:
        """The C{index}-th packet of the search."""
        raise NotImplementedError

    def _closing(self) -> list[Effect]:
        """What giving up undoes besides stopping."""
        return []

    def _hit(self, effects: list[Effect]) -> list[Effect]:
        self._done = True
        return effects


class Opener(_Search):
    """
    S's side: open L{GuessLimits.sockets} sockets, send one bubble from each to the peer's
    fixed mapping, then wait for a bubble from that mapping on any of them.

    Only a packet from exactly C{peer} counts as a hit (whoever else may know one of the
    sockets' ports, the NAT lets only C{peer} in, and the tunnel still applies its own
    checks to what the socket receives).
    """

    def __init__(self, peer: Endpoint, limits: GuessLimits | None = None) -> None:
        super().__init__(limits or GuessLimits())
        self.peer = peer

    def start(self, now: float) -> list[Effect]:
        """Open the sockets and send the first batch."""
        if self._pacing is not None:
            return []
        self._pacing = _Pacing(self.limits, now, self.limits.sockets)
        return [OpenSockets(self.limits.sockets)] + self.tick(now)

    def _packet(self, index: int) -> SendBubble:
        return SendBubble(self.peer, index)

    def _closing(self) -> list[Effect]:
        return [CloseSockets(None)]

    def received(self, socket: int, source: Endpoint, now: float) -> list[Effect]:
        """
        Socket C{socket} received a bubble from C{source}: a hit when it is the peer and the
        socket is one of ours.  The answer goes back from that socket, which the search
        keeps; the others are closed.
        """
        pacing = self._pacing
        if pacing is None or self._done or source != self.peer or not 0 <= socket < pacing.sent:
            return []
        return self._hit(
            [
                SendBubble(self.peer, socket),
                CloseSockets(socket),
                Found(source, socket, pacing.sent + 1, now - pacing.start),
            ]
        )


class Prober(_Search):
    """
    R's side: once the opener is ready, send L{GuessLimits.probes} bubbles from the client's
    own socket to distinct random ports of the peer's public address.

    A hit is a bubble from that address on one of the probed ports; anything else (another
    address, a port never probed) is not, so a third party cannot end or steer the search.
    The tunnel accepts the peer at that mapping only with the nonce proof of RFC 6081's
    Symmetric NAT Support, as for any mapping its address does not embed.

    @param exclude: the port the peer's Teredo address embeds (its mapping toward its
        server), never probed.
    """

    def __init__(
        self,
        address: str,
        exclude: int,
        limits: GuessLimits | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(limits or GuessLimits())
        self.address = address
        self.exclude = exclude
        self._rng = rng or random.SystemRandom()
        self._ports: list[int] = []
        self._probed: set[int] = set()

    def start(self, now: float, readyIn: float = 0.0) -> list[Effect]:
        """
        Draw the ports and wait C{readyIn} seconds (the opener's announced opening time,
        capped by the deadline) before the first probe, so probes find mappings already open.
        """
        if self._pacing is not None:
            return []
        space = range(LOWEST_PORT, 65536)
        count = min(self.limits.probes, len(space) - 1)
        self._ports = [p for p in self._rng.sample(space, count + 1) if p != self.exclude][:count]
        wait = min(max(readyIn, 0.0), self.limits.deadline)
        self._pacing = _Pacing(self.limits, now + wait, len(self._ports))
        return self.tick(now)

    def _packet(self, index: int) -> SendBubble:
        port = self._ports[index]
        self._probed.add(port)
        return SendBubble((self.address, port))

    def received(self, source: Endpoint, now: float) -> list[Effect]:
        """A bubble from C{source}: a hit when it comes from a probed port of the peer."""
        pacing = self._pacing
        if pacing is None or self._done:
            return []
        ip, port = source
        if ip != self.address or port not in self._probed:
            return []
        return self._hit([Found(source, None, pacing.sent, now - pacing.start)])
