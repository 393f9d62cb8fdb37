# -*- test-case-name: tests.unit.test_interval -*-
"""
The optional refresh interval determination procedure (RFC 4380 section 5.2.7, digest
CL-I-01..05), sans-IO like L{teredonode.roles.qualification}.

Why it is worth having: a NAT that keeps an idle UDP mapping for two minutes does not need a
Router Solicitation every 30 s; each one avoided is a packet less from every client to a
shared server.  The procedure measures how long the NAT really keeps a mapping, with a
second UDP port (the I{secondary port}, used for nothing else, CL-I-05):

  1. qualify the secondary port against the primary server (its own mapping and address);
  2. leave it idle for the I{candidate} interval, then send a bubble to the secondary
     port's Teredo address I{through the server} (an indirect bubble from the service port:
     the server forwards it from its own address, which the secondary port's filter lets in
     only while its mapping lives);
  3. heard on the secondary port within 2 s (3 tries): the NAT keeps mappings at least that
     long -- refresh = candidate, next candidate = min(2 x refresh, (refresh + max) / 2);
     not heard: max = candidate; stop once refresh >= 75 % of max, else candidate =
     (refresh + max) / 2;
  4. re-qualify the secondary port (a fresh mapping, maybe a new address) and go to 2.

Bounds: the refresh never exceeds the maximum (120 s) and never drops below the configured
C{refresh}; a failure anywhere ends the procedure with the configured value.

The table (the glue in L{teredonode.roles.client} arms C{state.timeout} on entry):

  =================  ======================  ============================  ===================
  state              input                   next state                    effects
  =================  ======================  ============================  ===================
  Idle               start                   Qualifying (attempt 0)        SolicitSecondary
  Qualifying         valid RA                Waiting (candidate after RA)  --
  Qualifying         timer, tries < 3        Qualifying (attempt + 1)      SolicitSecondary
  Qualifying         timer, tries = 3        Done (configured refresh)     Conclude
  Waiting            timer                   Listening (attempt 0)           SendBubble
  Listening            bubble received         Waiting/Qualifying or Done    UseRefresh, Conclude
  Listening            timer, tries < 3        Listening (attempt + 1)         SendBubble
  Listening            timer, tries = 3        (the candidate failed) as     UseRefresh?, Conclude?
                                             above
  *                  stop                    Done                          Conclude
  =================  ======================  ============================  ===================
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Union

__all__ = [
    "MAXIMUM",
    "FIRST_CANDIDATE_FACTOR",
    "BUBBLE_TIMEOUT",
    "BUBBLE_ATTEMPTS",
    "RS_TIMEOUT",
    "RS_ATTEMPTS",
    "Search",
    "Idle",
    "Qualifying",
    "Waiting",
    "Listening",
    "Done",
    "SolicitSecondary",
    "SendBubble",
    "UseRefresh",
    "Conclude",
    "IntervalProbe",
]

#: CL-I-03: the maximum refresh interval to start from, and the first candidate (2 x 30 s).
MAXIMUM = 120.0
FIRST_CANDIDATE_FACTOR = 2.0
#: CL-I-04 (3): wait 2 s for the bubble, at most 3 sends.
BUBBLE_TIMEOUT = 2.0
BUBBLE_ATTEMPTS = 3
#: The secondary port's qualification: RFC 4380 section 5.2.1's T and N.
RS_TIMEOUT = 4.0
RS_ATTEMPTS = 3


@dataclass(frozen=True)
class Search:
    """
    CL-I-04 (4)(5): the refresh interval known to work, the candidate being tried, and the
    maximum (a candidate known to fail, or 120 s).
    """

    refresh: float
    candidate: float
    maximum: float = MAXIMUM

    @classmethod
    def starting(cls, refresh: float) -> Search:
        """CL-I-03: max 120 s, candidate twice the configured interval (at most the max)."""
        return cls(refresh, min(refresh * FIRST_CANDIDATE_FACTOR, MAXIMUM), MAXIMUM)

    def succeeded(self) -> Search:
        refresh = self.candidate
        return replace(self, refresh=refresh, candidate=min(2 * refresh, (refresh + self.maximum) / 2))

    def failed(self) -> Search:
        maximum = self.candidate
        return replace(self, maximum=maximum, candidate=(self.refresh + maximum) / 2)

    @property
    def concluded(self) -> bool:
        """Refresh within 75 % of the maximum, or nothing left to try."""
        return self.refresh >= 0.75 * self.maximum or self.candidate <= self.refresh


# -- states -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Idle:
    search: Search
    timeout = None


@dataclass(frozen=True)
class Qualifying:
    """An RS is out from the secondary port with C{nonce}."""

    search: Search
    nonce: bytes
    attempt: int
    timeout = RS_TIMEOUT


@dataclass(frozen=True)
class Waiting:
    """The secondary port's mapping (C{mapping}) is left idle until the candidate elapses."""

    search: Search
    mapping: tuple[str, int]
    prefix: bytes
    wait: float

    @property
    def timeout(self) -> float:
        return self.wait


@dataclass(frozen=True)
class Listening:
    """A bubble toward the secondary port's address is out (CL-I-04 (2)(3))."""

    search: Search
    mapping: tuple[str, int]
    prefix: bytes
    attempt: int
    timeout = BUBBLE_TIMEOUT


@dataclass(frozen=True)
class Done:
    """Concluded (or given up): C{refresh} is what the client uses from now on."""

    refresh: float
    reason: str
    timeout = None


State = Union[Idle, Qualifying, Waiting, Listening, Done]


# -- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolicitSecondary:
    """Send an RS with C{nonce} from the secondary port to the primary server."""

    nonce: bytes


@dataclass(frozen=True)
class SendBubble:
    """
    Send an indirect bubble from the service port (through the server) to the Teredo address
    made of C{prefix} and the secondary port's C{mapping}.
    """

    prefix: bytes
    mapping: tuple[str, int]


@dataclass(frozen=True)
class UseRefresh:
    """The NAT keeps mappings at least this long: refresh the server mapping this often."""

    refresh: float


@dataclass(frozen=True)
class Conclude:
    """The procedure is over; close the secondary port (CL-I-05)."""

    refresh: float
    reason: str


Effect = Union[SolicitSecondary, SendBubble, UseRefresh, Conclude]


class IntervalProbe:
    """
    The procedure's machine.  C{start} after the service port qualified; C{answer} when an
    RA to the current nonce arrived on the secondary port (already validated by
    L{teredonode.roles.qualification.validate_ra}); C{bubble} when a bubble arrived there
    from the server; C{timer} when C{state.timeout} expired.

    @param refresh: the configured refresh interval (the floor).
    @param nonce: fresh nonces for the secondary port's RSs.
    """

    def __init__(self, refresh: float, nonce: Callable[[], bytes]) -> None:
        self._floor = refresh
        self._nonce = nonce
        self.state: State = Idle(Search.starting(refresh))

    @property
    def refresh(self) -> float:
        """The refresh interval established so far."""
        state = self.state
        return state.refresh if isinstance(state, Done) else state.search.refresh

    def start(self) -> list[Effect]:
        state = self.state
        if not isinstance(state, Idle):
            return []
        return self._qualify(state.search)

    def stop(self) -> list[Effect]:
        if isinstance(self.state, Done):
            return []
        return self._done(self.refresh, "stopped")

    def answer(self, nonce: bytes, mapping: tuple[str, int], prefix: bytes) -> list[Effect]:
        state = self.state
        if not isinstance(state, Qualifying) or nonce != state.nonce:
            return []
        self.state = Waiting(state.search, mapping, prefix, state.search.candidate)
        return []

    def bubble(self) -> list[Effect]:
        state = self.state
        if not isinstance(state, Listening):
            return []
        return self._judged(state.search.succeeded(), True)

    def timer(self) -> list[Effect]:
        state = self.state
        if isinstance(state, Qualifying):
            if state.attempt + 1 < RS_ATTEMPTS:
                self.state = replace(state, nonce=self._nonce(), attempt=state.attempt + 1)
                return [SolicitSecondary(self.state.nonce)]
            return self._done(state.search.refresh, "secondary port not qualified")
        if isinstance(state, Waiting):
            self.state = Listening(state.search, state.mapping, state.prefix, 0)
            return [SendBubble(state.prefix, state.mapping)]
        if isinstance(state, Listening):
            if state.attempt + 1 < BUBBLE_ATTEMPTS:
                self.state = replace(state, attempt=state.attempt + 1)
                return [SendBubble(state.prefix, state.mapping)]
            return self._judged(state.search.failed(), False)
        return []

    def _judged(self, search: Search, success: bool) -> list[Effect]:
        effects: list[Effect] = [UseRefresh(search.refresh)] if success else []
        if search.concluded:
            return effects + self._done(search.refresh, "concluded")
        # CL-I-04 (6): maintenance on the secondary port resets its last interaction.
        return effects + self._qualify(search)

    def _qualify(self, search: Search) -> list[Effect]:
        self.state = Qualifying(search, self._nonce(), 0)
        return [SolicitSecondary(self.state.nonce)]

    def _done(self, refresh: float, reason: str) -> list[Effect]:
        refresh = max(self._floor, min(refresh, MAXIMUM))
        self.state = Done(refresh, reason)
        return [Conclude(refresh, reason)]
