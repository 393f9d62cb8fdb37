"""
The client's qualification machine (L{teredonode.roles.qualification}): one test per row
of its transition table, by plain calls (no network, no clock), and the RA validator's
verdicts (CL-Q-05, CL-SQ-03..07).
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from teredonode.roles.qualification import (
    QUALIFICATION_ATTEMPTS,
    RESTART_DELAYS,
    Accepted,
    Answer,
    Configure,
    Dormant,
    Drop,
    JitteredBackoff,
    KeyExpired,
    MappingPort,
    PORT_MAPPING_TIMEOUT,
    RequestPortMapping,
    Offline,
    Policy,
    Qualification,
    Qualified,
    Refreshing,
    Rejected,
    Resolve,
    Resolving,
    SecondarySilent,
    SendSolicitation,
    ServerLost,
    SolicitingPrimary,
    SolicitingSecondary,
    Stopped,
    SymmetricNat,
    Unconfigure,
    WentDormant,
    WentOffline,
    validate_ra,
)
from teredonode.security import teredo_auth_value
from teredonode.wire import ipv6
from teredonode.wire.address import CLIENT_LINK_LOCAL_RESTRICTED, server_link_local
from teredonode.wire.teredo import AuthIndicator, OriginIndication, TeredoPacket, classify

SERVER, SECONDARY = "203.0.113.10", "203.0.113.11"
MAPPING = ("198.51.100.7", 40000)
OTHER = ("198.51.100.7", 40001)
PREFIX = b"\x20\x01\x00\x00" + ipaddress.IPv4Address(SERVER).packed


def ra_packet(
    nonce: bytes,
    mapping: tuple[str, int] = MAPPING,
    server: str = SERVER,
    prefixes: int = 1,
    mtu: int | None = 1280,
    origin: bool = True,
    hop_limit: int = 255,
    dst: bytes = CLIENT_LINK_LOCAL_RESTRICTED,
    secret: bytes | None = None,
    confirmation: int = 0,
    client_id: bytes = b"",
    auth_value: bytes | None = None,
) -> TeredoPacket:
    """An RA as a Teredo server sends it (every field adjustable to break one check)."""
    prefix = b"\x20\x01\x00\x00" + ipaddress.IPv4Address(server).packed + b"\x00" * 8
    pio = ipv6.PrefixInformation(prefix, 64, 0xC0, 86400, 86400)
    msg = ipv6.RouterAdvertisement(
        cur_hop_limit=0, flags=0, router_lifetime=0, reachable_time=0, retrans_timer=0,
        prefixes=tuple([pio] * prefixes), mtu=mtu,
    )
    packet = ipv6.icmpv6_packet(server_link_local(server), dst, msg, hop_limit)
    indication = OriginIndication(*mapping)
    if auth_value is None:
        auth_value = b""
        if secret is not None:
            auth_value = teredo_auth_value(secret, nonce, confirmation, indication.to_bytes(), packet)
    head = AuthIndicator(nonce, client_id, auth_value, confirmation).to_bytes()
    if origin:
        head += indication.to_bytes()
    return classify(head + packet)


class Recorder:
    """Injected sources: counting nonces, a fixed jitter, a settable clock and IPv6 check."""

    def __init__(self) -> None:
        self._count = itertools.count(1)
        self.now = 0.0
        self.native = False

    def nonce(self) -> bytes:
        return next(self._count).to_bytes(8, "big")

    def uniform(self, low: float, high: float) -> float:
        return high


class MachineTestCase(SynchronousTestCase):
    def machine(self, **policy: Any) -> Qualification:
        self.src = Recorder()
        return Qualification(
            Policy(**{"server": SERVER, "secondary": SECONDARY, **policy}),
            nonce=self.src.nonce,
            uniform=self.src.uniform,
            now=lambda: self.src.now,
            native_ipv6=lambda: self.src.native,
        )

    def answer(self, m: Qualification, mapping: tuple[str, int] = MAPPING) -> list[Any]:
        state = m.state
        assert isinstance(state, (SolicitingPrimary, SolicitingSecondary, Refreshing))
        return m.router_advertisement(ra_packet(state.nonce, mapping))

    def qualified(self, **policy: Any) -> Qualification:
        m = self.machine(**policy)
        m.start()
        self.answer(m)
        self.answer(m)
        assert isinstance(m.state, Qualified)
        return m


class StartTests(MachineTestCase):
    def test_startWithAddressSolicitsPrimary(self) -> None:
        """Stopped --start--> SolicitingPrimary: CL-Q-02, the RS to the primary address."""
        m = self.machine()
        self.assertIsInstance(m.state, Stopped)
        self.assertEqual(m.state.shown, "offline")
        effects = m.start()
        self.assertIsInstance(m.state, SolicitingPrimary)
        self.assertEqual(m.state.shown, "probing")
        self.assertEqual(effects, [SendSolicitation(SERVER, (1).to_bytes(8, "big"))])
        self.assertEqual(m.state.timeout, 4.0)

    def test_startWithNameResolves(self) -> None:
        """Stopped --start--> Resolving when the server is a name."""
        m = self.machine(server="teredo.example")
        self.assertEqual(m.start(), [Resolve("teredo.example")])
        self.assertIsInstance(m.state, Resolving)
        self.assertIsNone(m.state.timeout)

    def test_resolvedSolicitsWithDerivedSecondary(self) -> None:
        """Resolving --resolved--> SolicitingPrimary; the secondary is primary + 1 (SA-04)."""
        m = self.machine(server="teredo.example", secondary=None)
        m.start()
        self.assertEqual(m.resolved(SERVER), [SendSolicitation(SERVER, (1).to_bytes(8, "big"))])
        state = m.state
        assert isinstance(state, SolicitingPrimary)
        self.assertEqual((state.server, state.secondary), (SERVER, SECONDARY))

    def test_resolveFailedGoesOffline(self) -> None:
        """Resolving --resolve_failed--> Offline, first backoff step."""
        m = self.machine(server="teredo.example")
        m.start()
        effects = m.resolve_failed()
        self.assertEqual(effects, [Unconfigure(), WentOffline("cannot resolve teredo.example", RESTART_DELAYS[0])])
        self.assertIsInstance(m.state, Offline)
        self.assertEqual(m.state.timeout, RESTART_DELAYS[0])

    def test_lateResolutionIgnored(self) -> None:
        """An answer from the resolver after the machine moved on changes nothing."""
        m = self.machine()
        m.start()
        before = m.state
        self.assertEqual(m.resolved("192.0.2.1"), [])
        self.assertEqual(m.resolve_failed(), [])
        self.assertIs(m.state, before)

    def test_stop(self) -> None:
        """* --stop--> Stopped, the interface unconfigured."""
        m = self.qualified()
        self.assertEqual(m.stop(), [Unconfigure()])
        self.assertIsInstance(m.state, Stopped)


class PortMappingTests(MachineTestCase):
    def test_startAsksForMapping(self) -> None:
        """Stopped --start, port-mapping--> MappingPort (X-UPNP-04): nothing sent yet."""
        m = self.machine(port_mapping=True)
        self.assertEqual(m.start(), [RequestPortMapping()])
        self.assertIsInstance(m.state, MappingPort)
        self.assertEqual((m.state.shown, m.state.timeout), ("probing", PORT_MAPPING_TIMEOUT))

    def test_mappedQualifies(self) -> None:
        """MappingPort --port_mapped--> SolicitingPrimary (made or refused: X-UPNP-05)."""
        m = self.machine(port_mapping=True)
        m.start()
        self.assertEqual(m.port_mapped(), [SendSolicitation(SERVER, (1).to_bytes(8, "big"))])
        self.assertIsInstance(m.state, SolicitingPrimary)
        self.assertEqual(m.port_mapped(), [])

    def test_noAnswerQualifiesAnyway(self) -> None:
        """MappingPort --timer--> SolicitingPrimary: a silent router delays by at most 10 s."""
        m = self.machine(port_mapping=True)
        m.start()
        self.assertIsInstance(m.timer()[0], SendSolicitation)


class SolicitingTests(MachineTestCase):
    def test_retryWithFreshNonce(self) -> None:
        """Soliciting --timer, tries < 3--> the same phase, attempt + 1, a new nonce (CL-Q-03)."""
        m = self.machine()
        m.start()
        effects = m.timer()
        state = m.state
        assert isinstance(state, SolicitingPrimary)
        self.assertEqual(state.attempt, 1)
        self.assertEqual(effects, [SendSolicitation(SERVER, (2).to_bytes(8, "big"))])

    def test_staleNonceAfterRetryDropped(self) -> None:
        """CL-SQ-03: the answer to an earlier attempt's nonce no longer counts."""
        m = self.machine()
        m.start()
        m.timer()
        self.assertEqual(m.router_advertisement(ra_packet((1).to_bytes(8, "big"))), [Drop("ra-bad-nonce")])

    def test_primaryUnansweredGoesOffline(self) -> None:
        """Primary --timer, tries = 3--> Offline (CL-Q-04 phase B fails)."""
        m = self.machine()
        m.start()
        for _ in range(QUALIFICATION_ATTEMPTS - 1):
            m.timer()
        effects = m.timer()
        self.assertEqual(
            effects, [Unconfigure(), WentOffline(f"no answer from server {SERVER}", RESTART_DELAYS[0])]
        )
        self.assertIsInstance(m.state, Offline)

    def test_primaryAnswerAsksSecondary(self) -> None:
        """Primary --valid RA--> SolicitingSecondary (CL-Q-08), the first answer kept."""
        m = self.machine()
        m.start()
        effects = self.answer(m)
        state = m.state
        assert isinstance(state, SolicitingSecondary)
        self.assertEqual(effects, [SendSolicitation(SECONDARY, (2).to_bytes(8, "big"))])
        self.assertEqual(state.primary, Answer(MAPPING, PREFIX, 1280))
        self.assertEqual(state.attempt, 0)

    def test_sameMappingQualifies(self) -> None:
        """Secondary --RA, same mapping--> Qualified, restricted-or-cone."""
        m = self.machine()
        m.start()
        self.answer(m)
        effects = self.answer(m)
        self.assertEqual(effects, [Configure(SERVER, Answer(MAPPING, PREFIX, 1280), "restricted-or-cone", True)])
        state = m.state
        assert isinstance(state, Qualified)
        self.assertEqual(state.shown, "qualified")
        self.assertEqual(state.timeout, 30.0)

    def test_otherMappingIsSymmetricAndOffline(self) -> None:
        """Secondary --RA, other mapping--> Offline unless allow-symmetric."""
        m = self.machine()
        m.start()
        self.answer(m)
        effects = self.answer(m, OTHER)
        self.assertEqual(effects[0], SymmetricNat(MAPPING, OTHER))
        self.assertIsInstance(effects[-1], WentOffline)
        self.assertIsInstance(m.state, Offline)

    def test_otherMappingAllowed(self) -> None:
        """Secondary --RA, other mapping, allow-symmetric--> Qualified with the primary mapping."""
        m = self.machine(allow_symmetric=True)
        m.start()
        self.answer(m)
        effects = self.answer(m, OTHER)
        self.assertEqual(effects, [SymmetricNat(MAPPING, OTHER), Configure(SERVER, Answer(MAPPING, PREFIX, 1280), "symmetric", True)])

    def test_silentSecondaryQualifiesUnknown(self) -> None:
        """Secondary --timer, tries = 3--> Qualified, NAT unknown (lenient reading)."""
        m = self.machine()
        m.start()
        self.answer(m)
        for _ in range(QUALIFICATION_ATTEMPTS - 1):
            m.timer()
        effects = m.timer()
        self.assertEqual(effects, [SecondarySilent(SECONDARY), Configure(SERVER, Answer(MAPPING, PREFIX, 1280), "unknown", True)])

    def test_silentSecondaryStrictGoesOffline(self) -> None:
        """Secondary --timer, tries = 3, strict-secondary--> Offline (CL-Q-08 as written)."""
        m = self.machine(strict_secondary=True)
        m.start()
        self.answer(m)
        for _ in range(QUALIFICATION_ATTEMPTS):
            effects = m.timer()
        self.assertEqual(effects[0], SecondarySilent(SECONDARY))
        self.assertIsInstance(effects[-1], WentOffline)
        self.assertIsInstance(m.state, Offline)

    def test_keyExpiredReported(self) -> None:
        """CL-SQ-07: a confirmation byte in a valid RA is reported before the transition."""
        m = self.machine(secret=b"k")
        m.start()
        state = m.state
        assert isinstance(state, SolicitingPrimary)
        effects = m.router_advertisement(ra_packet(state.nonce, secret=b"k", confirmation=1))
        self.assertEqual(effects[0], KeyExpired())
        self.assertIsInstance(m.state, SolicitingSecondary)

    def test_raWhenNothingOutstandingDropped(self) -> None:
        """not Soliciting --RA--> unchanged, ra-unexpected."""
        m = self.qualified()
        before = m.state
        self.assertEqual(m.router_advertisement(ra_packet(b"\x00" * 8)), [Drop("ra-unexpected")])
        self.assertIs(m.state, before)
        offline = self.machine()
        self.assertEqual(offline.router_advertisement(ra_packet(b"\x00" * 8)), [Drop("ra-unexpected")])


class OfflineTests(MachineTestCase):
    def test_offlineRetries(self) -> None:
        """Offline --timer--> SolicitingPrimary, failures kept for the next backoff step."""
        m = self.machine()
        m.start()
        for _ in range(QUALIFICATION_ATTEMPTS):
            m.timer()
        effects = m.timer()
        self.assertEqual(effects, [SendSolicitation(SERVER, (4).to_bytes(8, "big"))])
        state = m.state
        assert isinstance(state, SolicitingPrimary)
        self.assertEqual(state.failures, 1)
        for _ in range(QUALIFICATION_ATTEMPTS):
            m.timer()
        self.assertEqual(m.state.timeout, RESTART_DELAYS[1])

    def test_backoffPolicy(self) -> None:
        """The injected backoff: steps in [0.75, 1] of each, the last one forever."""
        backoff = JitteredBackoff(lambda low, high: low)
        self.assertEqual(backoff.delay(1), RESTART_DELAYS[0] * 0.75)
        self.assertEqual(backoff.delay(2), RESTART_DELAYS[1] * 0.75)
        self.assertEqual(backoff.delay(100), RESTART_DELAYS[-1] * 0.75)

    def test_injectedBackoffUsed(self) -> None:
        class Fixed:
            def delay(self, failures: int) -> float:
                return 7.0 * failures

        src = Recorder()
        m = Qualification(Policy(server=SERVER), src.nonce, src.uniform, backoff=Fixed())
        m.start()
        for _ in range(QUALIFICATION_ATTEMPTS):
            effects = m.timer()
        self.assertEqual(effects[-1], WentOffline(f"no answer from server {SERVER}", 7.0))


class MaintenanceTests(MachineTestCase):
    def test_refreshSolicitsPrimary(self) -> None:
        """Qualified --timer--> Refreshing (CL-M-03): the RS to the primary, still qualified."""
        m = self.qualified()
        self.src.now = 30.0
        effects = m.timer()
        state = m.state
        assert isinstance(state, Refreshing)
        self.assertEqual(state.shown, "qualified")
        self.assertEqual(effects, [SendSolicitation(SERVER, state.nonce)])

    def test_heardFromServerSkipsRefresh(self) -> None:
        """Qualified --timer, server heard within the interval--> Qualified (CL-M-02), no RS."""
        m = self.qualified()
        self.src.now = 20.0
        m.heard_from_server()
        self.src.now = 30.0
        self.assertEqual(m.timer(), [])
        state = m.state
        assert isinstance(state, Qualified)
        self.assertEqual(state.timeout, 20.0)  # 30 s after the last contact
        self.src.now = 50.0
        self.assertIsInstance(m.timer()[0], SendSolicitation)

    def test_refreshAnswered(self) -> None:
        """Refreshing --valid RA--> Qualified, not a first qualification."""
        m = self.qualified()
        m.timer()
        effects = self.answer(m, OTHER)
        self.assertEqual(effects, [Configure(SERVER, Answer(OTHER, PREFIX, 1280), "restricted-or-cone", False)])
        self.assertIsInstance(m.state, Qualified)

    def test_refreshUnansweredLosesServer(self) -> None:
        """Refreshing --timer, tries = 3--> SolicitingPrimary from scratch (CL-M-03 [GAP])."""
        m = self.qualified()
        m.timer()
        for _ in range(QUALIFICATION_ATTEMPTS - 1):
            m.timer()
        effects = m.timer()
        self.assertEqual(effects[:2], [ServerLost(SERVER), Unconfigure()])
        self.assertIsInstance(effects[2], SendSolicitation)
        state = m.state
        assert isinstance(state, SolicitingPrimary)
        self.assertEqual(state.failures, 0)


class DormantTests(MachineTestCase):
    def test_startWithNativeIPv6IsDormant(self) -> None:
        """* --start, native IPv6--> Dormant (G-03 / SEC-20): no RS, no address."""
        m = self.machine(dormant_with_native=True)
        self.src.native = True
        self.assertEqual(m.start(), [Unconfigure(), WentDormant()])
        self.assertIsInstance(m.state, Dormant)
        self.assertEqual(m.state.shown, "dormant")

    def test_dormantStaysWhileNative(self) -> None:
        """Dormant --timer, still native--> Dormant (a fresh state: the timer re-arms)."""
        m = self.machine(dormant_with_native=True)
        self.src.native = True
        m.start()
        before = m.state
        self.assertEqual(m.timer(), [])
        self.assertIsInstance(m.state, Dormant)
        self.assertIsNot(m.state, before)

    def test_dormantQualifiesWhenNativeGoes(self) -> None:
        """Dormant --timer, native gone--> SolicitingPrimary."""
        m = self.machine(dormant_with_native=True)
        self.src.native = True
        m.start()
        self.src.native = False
        self.assertIsInstance(m.timer()[0], SendSolicitation)
        self.assertIsInstance(m.state, SolicitingPrimary)

    def test_qualifiedStepsAsideForNative(self) -> None:
        """Qualified --timer, native appeared--> Dormant, address removed."""
        m = self.qualified(dormant_with_native=True)
        self.src.native = True
        self.assertEqual(m.timer(), [Unconfigure(), WentDormant()])
        self.assertIsInstance(m.state, Dormant)

    def test_nativeIgnoredWhenOff(self) -> None:
        """dormant-with-native off: native IPv6 does not stop qualification."""
        m = self.machine(dormant_with_native=False)
        self.src.native = True
        m.start()
        self.assertIsInstance(m.state, SolicitingPrimary)


class ValidatorTests(SynchronousTestCase):
    nonce = b"12345678"

    def verdict(self, secret: bytes | None = None, **kw: Any) -> Accepted | Rejected:
        return validate_ra(ra_packet(self.nonce, **kw), self.nonce, SERVER, secret)

    def test_valid(self) -> None:
        self.assertEqual(self.verdict(), Accepted(Answer(MAPPING, PREFIX, 1280)))

    def test_mtuOutOfRangeIgnored(self) -> None:
        self.assertEqual(self.verdict(mtu=1000), Accepted(Answer(MAPPING, PREFIX, 1280)))
        self.assertEqual(self.verdict(mtu=1400), Accepted(Answer(MAPPING, PREFIX, 1400)))

    def test_eachCheck(self) -> None:
        """CL-Q-05 (a)-(e), CL-SQ-03: one broken field, one drop reason."""
        cases = {
            "ra-bad-nonce": validate_ra(ra_packet(b"87654321"), self.nonce, SERVER, None),
            "ra-no-origin": self.verdict(origin=False),
            "ra-invalid": self.verdict(hop_limit=64),
            "ra-prefix": self.verdict(prefixes=2),
            "ra-non-global-mapping": self.verdict(mapping=("10.0.0.1", 4000)),
        }
        for reason, verdict in cases.items():
            self.assertEqual(verdict, Rejected(reason), reason)
        self.assertEqual(self.verdict(dst=ipv6.ALL_NODES), Rejected("ra-invalid"))
        self.assertEqual(validate_ra(ra_packet(self.nonce, server="203.0.113.99"), self.nonce, SERVER, None), Rejected("ra-prefix"))

    def test_secure(self) -> None:
        """CL-SQ-05: the HMAC must match; an empty one with a confirmation is a refusal."""
        unsigned = validate_ra(ra_packet(self.nonce), self.nonce, SERVER, b"k")
        self.assertEqual(unsigned, Rejected("ra-auth-failed"))
        good = validate_ra(ra_packet(self.nonce, secret=b"k"), self.nonce, SERVER, b"k")
        self.assertEqual(good, Accepted(Answer(MAPPING, PREFIX, 1280)))
        wrong = validate_ra(ra_packet(self.nonce, secret=b"other"), self.nonce, SERVER, b"k")
        self.assertEqual(wrong, Rejected("ra-auth-failed"))
        refused = validate_ra(ra_packet(self.nonce, confirmation=1), self.nonce, SERVER, b"k")
        self.assertEqual(refused, Rejected("ra-auth-rejected"))
