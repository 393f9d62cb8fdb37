# -*- test-case-name: tests.unit.test_qualification -*-
"""
The client's qualification and maintenance (RFC 4380 sections 5.2.1, 5.2.2, 5.2.5, 5.5;
RFC 5991; requirements digest CL-Q-*, CL-SQ-*, CL-M-*, G-03) as a sans-IO state machine.

Why a table of immutable states and not Automat: every state here carries data that only
makes sense in that state (the nonce of the outstanding Router Solicitation, the primary
server's answer while the secondary is asked, the current mapping while a refresh is
outstanding, the failure count that drives the backoff).  Automat keeps such data on the
machine's owner, where it outlives its state -- the flags this module replaces.  Here each
state is a frozen dataclass holding exactly its own data and its own time-out; an input is a
method that returns the next state and a list of effects (data: "send this RS", "configure
this mapping", "say the server is lost"), and the client role
(L{teredonode.roles.client}) carries the effects out.  Nothing here touches a socket, a clock
or a logger, so every transition is tested by a plain function call
(C{tests/unit/test_qualification.py}, one test per row below).  RFC 6081 adds states as new
rows.

The table (C{timer} is the state's own time-out, armed on entry, cancelled on exit; "probing"
and the others in brackets are what C{teredo status} shows):

  ================  ===============  ===================================  ==========================
  state             input            next state                           effects
  ================  ===============  ===================================  ==========================
  Stopped [off]     start            Resolving or SolicitingPrimary       Resolve / SendRS
  Resolving [prob]  resolved(ip)     SolicitingPrimary                    SendRS
  Resolving         resolve_failed   Offline                              Unconfigure, WentOffline
  *                 start while      Dormant                              Unconfigure, WentDormant
                    native IPv6
  Dormant [dorm]    timer            Dormant / Resolving / Primary        (checks native IPv6)
  Offline [off]     timer            Resolving or SolicitingPrimary       Resolve / SendRS
  Soliciting*       timer, tries<3   same state, attempt+1, new nonce     SendRS
  Primary           timer, tries=3   Offline                              Unconfigure, WentOffline
  Primary           valid RA         SolicitingSecondary                  SendRS (secondary)
  Secondary         timer, tries=3   Qualified (NAT unknown)              SecondarySilent, Configure
                                     or Offline (strict)                  WentOffline
  Secondary         RA, same map     Qualified (restricted-or-cone)       Configure
  Secondary         RA, other map    Qualified (symmetric, when allowed)  SymmetricNat, Configure
                                     or Offline                           SymmetricNat, WentOffline
  Qualified [qual]  timer            Refreshing, or Qualified again when  SendRS / nothing (CL-M-02)
                                     the server was heard from within the
                                     last refresh interval
  Qualified         timer, native    Dormant                              Unconfigure, WentDormant
  Refreshing [qual] valid RA         Qualified                            Configure
  Refreshing        timer, tries=3   SolicitingPrimary (from scratch)     ServerLost, Unconfigure,
                                                                          SendRS
  not Soliciting*   RA               unchanged                            Drop("ra-unexpected")
  *                 stop             Stopped                              Unconfigure
  ================  ===============  ===================================  ==========================

RAs are judged by L{validate_ra}, a pure function returning L{Accepted} or L{Rejected} with
the drop reason; the machine only decides what an accepted answer means for its state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable, Protocol, Union

from teredonode.interfaces import Endpoint
from teredonode.security import auth_matches
from teredonode.wire import ipv4
from teredonode.wire.address import CLIENT_LINK_LOCAL_RESTRICTED, GLOBAL_PREFIX
from teredonode.wire.errors import ParseError
from teredonode.wire.ipv6 import RouterAdvertisement, decode_icmpv6
from teredonode.wire.teredo import TeredoPacket

__all__ = [
    "QUALIFICATION_TIMEOUT",
    "QUALIFICATION_ATTEMPTS",
    "RESTART_DELAYS",
    "NATIVE_CHECK_INTERVAL",
    "DEFAULT_MTU",
    "RA_DROPS",
    "Answer",
    "Accepted",
    "Rejected",
    "validate_ra",
    "Backoff",
    "JitteredBackoff",
    "Stopped",
    "Dormant",
    "Resolving",
    "Offline",
    "SolicitingPrimary",
    "SolicitingSecondary",
    "Qualified",
    "Refreshing",
    "State",
    "Resolve",
    "SendSolicitation",
    "Configure",
    "Unconfigure",
    "WentOffline",
    "WentDormant",
    "ServerLost",
    "SymmetricNat",
    "SecondarySilent",
    "KeyExpired",
    "Drop",
    "Effect",
    "Policy",
    "Qualification",
]

#: Section 5.2.1: T = 4 s, N = 3 attempts per phase (D7).
QUALIFICATION_TIMEOUT = 4.0
QUALIFICATION_ATTEMPTS = 3
#: Offline -> next attempt after these many seconds (x [0.75, 1] jitter), the last one
#: repeating forever.  RFC 4380 says nothing (CL-Q-10 [GAP]); Miredo waits 100 s.
RESTART_DELAYS = (10.0, 20.0, 40.0, 80.0, 160.0, 300.0)
#: G-03: how often a dormant (or qualified) client looks again for native IPv6.
NATIVE_CHECK_INTERVAL = 60.0
#: CL-M-02: a maintenance check postponed by server traffic waits at least this long.
MIN_REFRESH_WAIT = 1.0
#: An RA's MTU option outside [1280, 65535] is ignored for this.
DEFAULT_MTU = 1280

#: What an RA can be dropped for, in the order the checks run.
RA_DROPS = (
    "ra-unexpected",  # an RA while no RS is outstanding
    "ra-bad-nonce",  # CL-SQ-03: no auth indicator, or not our current nonce
    "ra-no-origin",  # CL-Q-05 (a)
    "ra-invalid",  # CL-Q-05 (b)(c): RFC 4861 validity, destination, checksum
    "ra-prefix",  # CL-Q-05 (d)(e): not exactly one /64 PIO in our server's Teredo prefix
    "ra-auth-rejected",  # secure qualification: the server does not know our identifier
    "ra-auth-failed",  # CL-SQ-05: wrong authentication value
    "ra-non-global-mapping",  # the mapping could not make a global Teredo address (G-10)
)


# -- the RA validator (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """
    What a valid RA tells the client (CL-Q-06): its mapped endpoint, the /64 prefix, the MTU.
    """

    mapping: Endpoint
    prefix: bytes
    mtu: int


@dataclass(frozen=True)
class Accepted:
    answer: Answer
    #: CL-SQ-07: the server says our secure-qualification key has expired.
    key_expired: bool = False


@dataclass(frozen=True)
class Rejected:
    reason: str


def validate_ra(
    packet: TeredoPacket, nonce: bytes, server: str, secret: bytes | None
) -> Accepted | Rejected:
    """
    CL-Q-05 / CL-M-04 / CL-SQ-03..07: is C{packet} a valid answer to the RS we sent to
    C{server} with C{nonce}?  Every check the RFC lists, in an order that costs least on
    forged input (the nonce first: an off-path attacker cannot know it).
    """
    auth = packet.auth
    if auth is None or auth.nonce != nonce:
        return Rejected("ra-bad-nonce")
    origin = packet.origin
    if origin is None:
        return Rejected("ra-no-origin")
    header = packet.header
    if header.hop_limit != 255 or header.dst != CLIENT_LINK_LOCAL_RESTRICTED:
        return Rejected("ra-invalid")
    try:
        ra = decode_icmpv6(packet.ipv6[40:], header.src, header.dst)
    except ParseError:
        return Rejected("ra-invalid")
    if not isinstance(ra, RouterAdvertisement):
        return Rejected("ra-invalid")
    if secret is not None:
        if auth.confirmation and not auth.auth_value:
            return Rejected("ra-auth-rejected")
        if not auth_matches(
            secret, auth.auth_value, auth.nonce, auth.confirmation, origin.to_bytes(), packet.ipv6
        ):
            return Rejected("ra-auth-failed")
    if len(ra.prefixes) != 1:
        return Rejected("ra-prefix")
    pio = ra.prefixes[0]
    if (
        pio.prefix_length != 64
        or pio.prefix[:4] != GLOBAL_PREFIX
        or pio.prefix[4:8] != ipv4.pack(server)
    ):
        return Rejected("ra-prefix")
    if not ipv4.is_global_unicast(origin.ip):
        return Rejected("ra-non-global-mapping")
    mtu = ra.mtu if ra.mtu is not None and 1280 <= ra.mtu <= 65535 else DEFAULT_MTU
    answer = Answer((origin.ip, origin.port), pio.prefix[:8], mtu)
    return Accepted(answer, key_expired=secret is not None and bool(auth.confirmation))


# -- policies ---------------------------------------------------------------------------------


class Backoff(Protocol):
    """How long an offline client waits before it tries again (CL-Q-10 [GAP])."""

    def delay(self, failures: int) -> float:
        """The wait after C{failures} consecutive failed qualifications (1 or more)."""


class JitteredBackoff:
    """
    Exponential steps (L{RESTART_DELAYS}), the last repeating forever, each drawn in
    [0.75, 1] of its step so that clients that failed together do not retry together.
    """

    def __init__(
        self,
        uniform: Callable[[float, float], float],
        delays: tuple[float, ...] = RESTART_DELAYS,
    ) -> None:
        self._uniform = uniform
        self._delays = delays

    def delay(self, failures: int) -> float:
        step = self._delays[min(max(failures, 1), len(self._delays)) - 1]
        return step * self._uniform(0.75, 1.0)


@dataclass(frozen=True)
class Policy:
    """
    The settings the machine reads (from C{[client]}), and its injected sources of
    randomness, so that tests replay exactly.

    @ivar server: the primary server, an IPv4 address or a name.
    @ivar secondary: the secondary address, or C{None} for primary + 1 (SA-04).
    @ivar allow_symmetric: qualify behind a symmetric NAT anyway.
    @ivar strict_secondary: CL-Q-08 as written: a silent secondary address makes the service
        unusable (offline) instead of qualifying with NAT type "unknown".
    @ivar refresh: CL-M-06 refresh interval, drawn in [0.75, 1] of it each time.
    @ivar dormant_with_native: G-03 / SEC-20: no Teredo while the host has native IPv6.
    @ivar secret: the secure-qualification key (CL-SQ-*), or C{None}.
    """

    server: str
    secondary: str | None = None
    allow_symmetric: bool = False
    strict_secondary: bool = False
    refresh: float = 30.0
    dormant_with_native: bool = False
    secret: bytes | None = None


# -- states -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stopped:
    shown = "offline"
    timeout = None


@dataclass(frozen=True)
class Dormant:
    """G-03: the host has native IPv6; look again every L{NATIVE_CHECK_INTERVAL}."""

    shown = "dormant"
    timeout = NATIVE_CHECK_INTERVAL


@dataclass(frozen=True)
class Resolving:
    """The server is a name; its address is being looked up (again at every attempt)."""

    name: str
    failures: int
    shown = "probing"
    timeout = None


@dataclass(frozen=True)
class Offline:
    """CL-Q-10: address removed, TUN up; the next attempt after the backoff."""

    reason: str
    failures: int
    retry_in: float
    shown = "offline"

    @property
    def timeout(self) -> float:
        return self.retry_in


@dataclass(frozen=True)
class _Soliciting:
    """An RS is outstanding to C{target} with C{nonce}; C{attempt} counts from 0."""

    server: str  # the primary address (resolved)
    secondary: str
    target: str
    nonce: bytes
    attempt: int
    timeout = QUALIFICATION_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class SolicitingPrimary(_Soliciting):
    """CL-Q-02/03, RFC 5991: the restricted-phase RS to the primary address."""

    failures: int
    shown = "probing"


@dataclass(frozen=True, kw_only=True)
class SolicitingSecondary(_Soliciting):
    """CL-Q-08: the same RS to the secondary address, to compare mappings."""

    primary: Answer
    failures: int
    shown = "probing"


@dataclass(frozen=True)
class Qualified:
    """
    Holding an address; the next maintenance check after C{refresh_in} (CL-M-01/06).
    C{interval} is the randomized refresh interval drawn on entry: CL-M-02 asks for an RS
    only when nothing came from the server for that long.
    """

    server: str
    secondary: str
    answer: Answer
    nat: str
    interval: float
    refresh_in: float
    shown = "qualified"

    @property
    def timeout(self) -> float:
        return self.refresh_in


@dataclass(frozen=True, kw_only=True)
class Refreshing(_Soliciting):
    """CL-M-03: a maintenance RS to the primary address; the address stays in use."""

    current: Answer
    nat: str
    shown = "qualified"


State = Union[
    Stopped, Dormant, Resolving, Offline, SolicitingPrimary, SolicitingSecondary, Qualified,
    Refreshing,
]


# -- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolve:
    name: str


@dataclass(frozen=True)
class SendSolicitation:
    target: str
    nonce: bytes


@dataclass(frozen=True)
class Configure:
    """
    Qualified or refreshed: use this mapping (CL-Q-09, CL-M-05); C{first} after probing.
    C{port_preserving}: the mapped port is our local port (X-PP-06, CL-Q-11), which RFC 6081
    section 5.4 uses behind a symmetric NAT.
    """

    server: str
    answer: Answer
    nat: str
    first: bool
    port_preserving: bool = False


@dataclass(frozen=True)
class Unconfigure:
    """Back to an address-less, still-up interface."""


@dataclass(frozen=True)
class WentOffline:
    reason: str
    retry_in: float


@dataclass(frozen=True)
class WentDormant:
    """G-03: native IPv6 is there; Teredo steps aside."""


@dataclass(frozen=True)
class ServerLost:
    server: str


@dataclass(frozen=True)
class SymmetricNat:
    primary: Endpoint
    secondary: Endpoint


@dataclass(frozen=True)
class SecondarySilent:
    secondary: str


@dataclass(frozen=True)
class KeyExpired:
    """CL-SQ-07."""


@dataclass(frozen=True)
class Drop:
    reason: str


Effect = Union[
    Resolve, SendSolicitation, Configure, Unconfigure, WentOffline, WentDormant, ServerLost,
    SymmetricNat, SecondarySilent, KeyExpired, Drop,
]


# -- the machine ------------------------------------------------------------------------------


class Qualification:
    """
    The state machine: C{state} is the current state; each input method returns the effects
    to carry out, in order.  The caller arms C{state.timeout} after every input (cancelling
    the previous timer) and calls L{timer} when it fires.

    @param policy: the settings.
    @param nonce: a fresh 8-byte nonce per RS (CSPRNG in production).
    @param uniform: jitter (C{random.uniform}).
    @param backoff: the wait after failures.
    @param now: the clock, for CL-M-02 ("heard from the server recently").
    @param native_ipv6: does the host have IPv6 by other means (G-03)?
    @param local_port: the service port's local number (X-PP-06), known once it is bound.
    """

    def __init__(
        self,
        policy: Policy,
        nonce: Callable[[], bytes],
        uniform: Callable[[float, float], float] = random.uniform,
        backoff: Backoff | None = None,
        now: Callable[[], float] = lambda: 0.0,
        native_ipv6: Callable[[], bool] = lambda: False,
        local_port: Callable[[], int] = lambda: 0,
    ) -> None:
        self.policy = policy
        self._nonce = nonce
        self._uniform = uniform
        self._backoff: Backoff = backoff if backoff is not None else JitteredBackoff(uniform)
        self._now = now
        self._native = native_ipv6
        self._localPort = local_port
        self._heard: float | None = None
        self.state: State = Stopped()

    # -- inputs -----------------------------------------------------------------------------

    def start(self) -> list[Effect]:
        """Begin (or, after a stop, begin again)."""
        return self._attempt(0)

    def stop(self) -> list[Effect]:
        self.state = Stopped()
        return [Unconfigure()]

    def resolved(self, address: str) -> list[Effect]:
        """The server's name resolved to C{address}."""
        state = self.state
        if not isinstance(state, Resolving):
            return []
        return self._solicitPrimary(address, state.failures)

    def resolve_failed(self) -> list[Effect]:
        state = self.state
        if not isinstance(state, Resolving):
            return []
        return self._offline(f"cannot resolve {state.name}", state.failures)

    def heard_from_server(self) -> None:
        """CL-M-02: a well-formed packet came from the server's address."""
        self._heard = self._now()

    def timer(self) -> list[Effect]:
        """The current state's time-out expired."""
        state = self.state
        if isinstance(state, (Dormant, Offline)):
            return self._attempt(state.failures if isinstance(state, Offline) else 0)
        if isinstance(state, Qualified):
            return self._maintain(state)
        if isinstance(state, (SolicitingPrimary, SolicitingSecondary, Refreshing)):
            if state.attempt + 1 < QUALIFICATION_ATTEMPTS:
                return self._resend(state)
            return self._unanswered(state)
        return []

    def router_advertisement(self, packet: TeredoPacket) -> list[Effect]:
        """An RA from the server's address (CL-RX-12: never for the IPv6 stack)."""
        state = self.state
        if not isinstance(state, (SolicitingPrimary, SolicitingSecondary, Refreshing)):
            return [Drop("ra-unexpected")]
        verdict = validate_ra(packet, state.nonce, state.server, self.policy.secret)
        if isinstance(verdict, Rejected):
            return [Drop(verdict.reason)]
        effects: list[Effect] = [KeyExpired()] if verdict.key_expired else []
        answer = verdict.answer
        if isinstance(state, SolicitingPrimary):
            self.state = SolicitingSecondary(
                state.server, state.secondary, state.secondary, self._nonce(), 0,
                primary=answer, failures=state.failures,
            )
            return effects + [SendSolicitation(state.secondary, self.state.nonce)]
        if isinstance(state, SolicitingSecondary):
            primary = state.primary
            if answer.mapping == primary.mapping:
                return effects + self._qualified(state.server, state.secondary, primary, "restricted-or-cone", True)
            effects.append(SymmetricNat(primary.mapping, answer.mapping))
            if not self.policy.allow_symmetric:
                return effects + self._offline(
                    "symmetric NAT (set allow-symmetric to go online anyway)", state.failures
                )
            return effects + self._qualified(state.server, state.secondary, primary, "symmetric", True)
        return effects + self._qualified(state.server, state.secondary, answer, state.nat, False)

    # -- transitions ------------------------------------------------------------------------

    def _attempt(self, failures: int) -> list[Effect]:
        """Start a qualification attempt, unless the host has native IPv6 (G-03)."""
        if self.policy.dormant_with_native and self._native():
            was_dormant = isinstance(self.state, Dormant)
            self.state = Dormant()
            return [] if was_dormant else [Unconfigure(), WentDormant()]
        name = self.policy.server
        try:
            ipv4.pack(name)
        except ParseError:
            self.state = Resolving(name, failures)
            return [Resolve(name)]
        return self._solicitPrimary(name, failures)

    def _solicitPrimary(self, server: str, failures: int) -> list[Effect]:
        secondary = self.policy.secondary
        if secondary is None:
            secondary = ipv4.following(server) or server
        self.state = SolicitingPrimary(server, secondary, server, self._nonce(), 0, failures=failures)
        return [SendSolicitation(server, self.state.nonce)]

    def _resend(self, state: SolicitingPrimary | SolicitingSecondary | Refreshing) -> list[Effect]:
        """CL-Q-03: the same phase again, with a fresh nonce (an old answer is stale)."""
        self.state = replace(state, nonce=self._nonce(), attempt=state.attempt + 1)
        return [SendSolicitation(state.target, self.state.nonce)]

    def _unanswered(self, state: SolicitingPrimary | SolicitingSecondary | Refreshing) -> list[Effect]:
        if isinstance(state, SolicitingPrimary):
            return self._offline(f"no answer from server {state.server}", state.failures)
        if isinstance(state, SolicitingSecondary):
            # The RFC calls the service unusable (CL-Q-08); a silent secondary address is far
            # more often a firewall than a symmetric NAT, so by default we qualify and say we
            # do not know.  strict-secondary keeps the RFC's reading.
            effects: list[Effect] = [SecondarySilent(state.secondary)]
            if self.policy.strict_secondary:
                return effects + self._offline(
                    f"secondary address {state.secondary} does not answer (strict-secondary)",
                    state.failures,
                )
            return effects + self._qualified(state.server, state.secondary, state.primary, "unknown", True)
        # CL-M-03 [GAP]: the mapping is lost; qualify again from scratch at once.
        effects = [ServerLost(state.server), Unconfigure()]
        return effects + self._solicitPrimary(state.server, 0)

    def _maintain(self, state: Qualified) -> list[Effect]:
        """
        CL-M-02/03: refresh only when the server has been silent for the last randomized
        interval; G-03: step aside when native IPv6 has appeared.
        """
        if self.policy.dormant_with_native and self._native():
            self.state = Dormant()
            return [Unconfigure(), WentDormant()]
        heard, now = self._heard, self._now()
        if heard is not None:
            left = heard + state.interval - now
            # Less than a second left: refresh now (and no timer ever re-arms for ~0 s).
            if left >= MIN_REFRESH_WAIT:
                self.state = replace(state, refresh_in=left)
                return []
        self.state = Refreshing(
            state.server, state.secondary, state.server, self._nonce(), 0,
            current=state.answer, nat=state.nat,
        )
        return [SendSolicitation(state.server, self.state.nonce)]

    def _qualified(self, server: str, secondary: str, answer: Answer, nat: str, first: bool) -> list[Effect]:
        interval = self._refreshInterval()
        self.state = Qualified(server, secondary, answer, nat, interval, interval)
        preserving = answer.mapping[1] == self._localPort()
        return [Configure(server, answer, nat, first, preserving)]

    def _offline(self, reason: str, failures: int) -> list[Effect]:
        delay = self._backoff.delay(failures + 1)
        self.state = Offline(reason, failures + 1, delay)
        return [Unconfigure(), WentOffline(reason, delay)]

    def _refreshInterval(self) -> float:
        """CL-M-06: uniform in [0.75, 1] of the configured interval."""
        return self.policy.refresh * self._uniform(0.75, 1.0)
