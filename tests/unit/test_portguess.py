"""
The port-guessing plan (L{teredonode.roles.portguess}): pacing, bounds, what counts as a hit,
and whole searches simulated against a model of a random port-symmetric NAT facing a
port-restricted one.
"""

from __future__ import annotations

import heapq
import itertools
import random

from twisted.trial import unittest

from teredonode.interfaces import Endpoint
from teredonode.roles.portguess import (
    LOWEST_PORT,
    CloseSockets,
    Effect,
    Found,
    GaveUp,
    GuessLimits,
    Opener,
    OpenSockets,
    Prober,
    SendBubble,
    SetTimer,
    hit_probability,
    probes_for,
)

S_IP = "192.0.2.50"  # the opener's public address (random port-symmetric NAT)
R_MAPPING: Endpoint = ("198.51.100.7", 40000)  # the prober's fixed mapping
S_EMBEDDED = 5000  # the opener's mapping toward its server (in its Teredo address)


def sends(effects: list[Effect]) -> list[SendBubble]:
    return [e for e in effects if isinstance(e, SendBubble)]


def timers(effects: list[Effect]) -> list[SetTimer]:
    return [e for e in effects if isinstance(e, SetTimer)]


class ProbabilityTests(unittest.TestCase):
    def assertClose(self, value: float, expected: float, tolerance: float) -> None:
        self.assertTrue(abs(value - expected) <= tolerance, f"{value} not within {tolerance} of {expected}")

    def test_table(self) -> None:
        """
        The figures docs/nat-traversal.md gives: n = m = 256 about 63 %, n = 64 and m =
        1024 about 63 %, n = m = 1024 above 99.9 %.
        """
        self.assertClose(hit_probability(256, 256, space=65536), 0.633, 0.001)
        self.assertClose(hit_probability(64, 1024, space=65536), 0.635, 0.001)
        self.assertClose(hit_probability(256, 256), 0.639, 0.001)  # ports 1024..65535 only
        self.assertGreater(hit_probability(1024, 1024), 0.999)
        self.assertEqual(hit_probability(0, 100), 0.0)
        self.assertEqual(hit_probability(100, 0), 0.0)
        self.assertEqual(hit_probability(40000, 40000), 1.0)

    def test_probesFor(self) -> None:
        """The probes needed for 90 % against 256 open ports: the doc's m = 589 (drawn with replacement)."""
        m = probes_for(0.9, 256, space=65536)
        self.assertClose(m, 589, 5)  # 589 with replacement, 586 without
        self.assertGreaterEqual(hit_probability(256, m, space=65536), 0.9)
        self.assertLess(hit_probability(256, m - 1, space=65536), 0.9)
        self.assertRaises(ValueError, probes_for, 1.0, 256)


class LimitsTests(unittest.TestCase):
    def test_bounds(self) -> None:
        """Out-of-range limits are refused, so no setting can make a search unbounded."""
        for bad in ({"sockets": 0}, {"sockets": 1025}, {"probes": 4097}, {"rate": 0},
                    {"rate": 5000}, {"deadline": 0}, {"deadline": 601}, {"batch": 0}):
            self.assertRaises(ValueError, GuessLimits, **bad)

    def test_openingTime(self) -> None:
        self.assertEqual(GuessLimits(sockets=100, rate=50).openingTime, 2.0)


class OpenerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.limits = GuessLimits(sockets=20, rate=10, deadline=10, batch=5)
        self.opener = Opener(R_MAPPING, self.limits)

    def test_startOpensAndSends(self) -> None:
        """Start opens every socket at once and sends the first bubble, from socket 0."""
        effects = self.opener.start(0.0)
        self.assertEqual(effects[0], OpenSockets(20))
        self.assertEqual(sends(effects), [SendBubble(R_MAPPING, 0)])
        self.assertEqual(self.opener.start(0.0), [])  # a second start does nothing

    def test_paced(self) -> None:
        """
        Ticks send what is due at C{rate}, at most a batch at a time, each socket once, in
        order; after the last one the timer waits for the deadline.
        """
        now, sent = 0.0, sends(self.opener.start(0.0))
        for _ in range(100):
            effects = self.opener.tick(now)
            sent += sends(effects)
            self.assertLessEqual(len(sends(effects)), self.limits.batch)
            self.assertLessEqual(len(sent), int(now * self.limits.rate) + 1)
            if len(sent) == 20:
                break
            now += timers(effects)[0].delay
        self.assertEqual([s.socket for s in sent], list(range(20)))
        self.assertTrue(1.8 <= now <= 2.0, now)
        self.assertEqual(timers(effects), [SetTimer(10 - now)])

    def test_deadline(self) -> None:
        """At the deadline every socket is closed and the search gives up."""
        self.opener.start(0.0)
        effects = self.opener.tick(10.0)
        self.assertEqual(effects, [CloseSockets(None), GaveUp(1, 10.0)])
        self.assertFalse(self.opener.active)
        self.assertEqual(self.opener.tick(11.0), [])
        self.assertEqual(self.opener.received(0, R_MAPPING, 11.0), [])

    def test_hit(self) -> None:
        """
        A bubble from the peer on a socket that has sent: answer from that socket, keep
        it, close the rest.
        """
        self.opener.start(0.0)
        self.opener.tick(0.5)
        effects = self.opener.received(3, R_MAPPING, 0.6)
        self.assertEqual(effects[:2], [SendBubble(R_MAPPING, 3), CloseSockets(3)])
        found = effects[2]
        assert isinstance(found, Found)
        self.assertEqual((found.mapping, found.socket), (R_MAPPING, 3))
        self.assertFalse(self.opener.active)

    def test_notAHit(self) -> None:
        """
        Another sender, or a socket that never sent (no NAT mapping could exist for it), or
        a socket number out of range, is not a hit.
        """
        self.opener.start(0.0)
        self.assertEqual(self.opener.received(0, ("198.51.100.7", 40001), 0.1), [])
        self.assertEqual(self.opener.received(0, ("203.0.113.9", 40000), 0.1), [])
        self.assertEqual(self.opener.received(5, R_MAPPING, 0.1), [])
        self.assertEqual(self.opener.received(-1, R_MAPPING, 0.1), [])
        self.assertTrue(self.opener.active)

    def test_tickBeforeStart(self) -> None:
        self.assertEqual(Opener(R_MAPPING).tick(0.0), [])
        self.assertEqual(Opener(R_MAPPING).received(0, R_MAPPING, 0.0), [])


class ProberTests(unittest.TestCase):
    def setUp(self) -> None:
        self.limits = GuessLimits(probes=300, rate=100, deadline=10, batch=10)
        self.prober = Prober(S_IP, S_EMBEDDED, self.limits, random.Random(7))

    def run_all(self, start: float = 0.0) -> list[SendBubble]:
        now, sent = start, []
        effects = self.prober.start(now)
        for _ in range(1000):
            sent += sends(effects)
            if self.prober.sent == self.limits.probes:
                break
            now += timers(effects)[0].delay
            effects = self.prober.tick(now)
        return sent

    def test_ports(self) -> None:
        """
        Every probe goes to the peer's address, to a distinct port in the dynamic range,
        never to the port its address embeds, from the client's own socket.
        """
        sent = self.run_all()
        self.assertEqual(len(sent), 300)
        ports = [s.dst[1] for s in sent]
        self.assertEqual(len(set(ports)), 300)
        self.assertTrue(all(LOWEST_PORT <= p < 65536 and p != S_EMBEDDED for p in ports))
        self.assertEqual({s.dst[0] for s in sent}, {S_IP})
        self.assertEqual({s.socket for s in sent}, {None})

    def test_waitsForOpener(self) -> None:
        """Probing starts only after the opener's announced opening time."""
        effects = self.prober.start(0.0, readyIn=2.5)
        self.assertEqual(effects, [SetTimer(2.5)])
        self.assertEqual(sends(self.prober.tick(1.0)), [])
        self.assertEqual(len(sends(self.prober.tick(2.5))), 1)

    def test_readyInCapped(self) -> None:
        """A peer cannot park a search beyond the deadline."""
        self.assertEqual(self.prober.start(0.0, readyIn=1e9), [SetTimer(10.0)])

    def test_hitOnlyFromProbedPort(self) -> None:
        """
        Only a bubble from the peer's address on a probed port is a hit: a third party, or
        the peer on a port never probed, cannot end the search.
        """
        sent = self.run_all()
        probed = sent[17].dst
        unprobed = next(p for p in range(LOWEST_PORT, 65536) if (S_IP, p) not in {s.dst for s in sent})
        self.assertEqual(self.prober.received(("203.0.113.1", probed[1]), 3.0), [])
        self.assertEqual(self.prober.received((S_IP, unprobed), 3.0), [])
        effects = self.prober.received(probed, 3.0)
        self.assertEqual(len(effects), 1)
        found = effects[0]
        assert isinstance(found, Found)
        self.assertEqual((found.mapping, found.socket, found.sent), (probed, None, 300))
        self.assertEqual(self.prober.received(probed, 3.1), [])

    def test_deadline(self) -> None:
        self.prober.start(0.0)
        self.assertEqual(self.prober.tick(10.0), [GaveUp(1, 10.0)])
        self.assertFalse(self.prober.active)


class Simulation:
    """
    Both sides run against a model of the two NATs, with a one-way delay:
      - S's NAT is port-symmetric with random ports, address-and-port-dependent filtering
        (the lab's C{symmetric} mode): socket i's first packet to R's mapping gets a fresh
        random public port x_i, and x_i lets in only that mapping;
      - R's NAT is port-restricted with the fixed mapping C{R_MAPPING}: it lets in a source
        only after R sent to that exact source.
    """

    def __init__(self, seed: int, limits: GuessLimits, delay: float = 0.02) -> None:
        self.rng = random.Random(seed)
        self.limits = limits
        self.delay = delay
        self.opener = Opener(R_MAPPING, limits)
        self.prober = Prober(S_IP, S_EMBEDDED, limits, random.Random(seed + 1))
        self.sMappings: dict[int, int] = {}  # socket -> public port
        self.rOpened: set[Endpoint] = set()
        self.events: list[tuple[float, int, str, tuple[object, ...]]] = []
        self.seq = itertools.count()
        self.result: dict[str, Found | GaveUp] = {}
        self.packets = 0

    def at(self, when: float, what: str, *args: object) -> None:
        heapq.heappush(self.events, (when, next(self.seq), what, args))

    def run(self) -> dict[str, Found | GaveUp]:
        self.apply("S", 0.0, self.opener.start(0.0))
        self.apply("R", self.delay, self.prober.start(self.delay, readyIn=self.limits.openingTime))
        while self.events and len(self.result) < 2:
            now, _, what, args = heapq.heappop(self.events)
            if what == "tickS":
                self.apply("S", now, self.opener.tick(now))
            elif what == "tickR":
                self.apply("R", now, self.prober.tick(now))
            elif what == "toR":
                (source,) = args
                if source in self.rOpened:  # R's NAT: only where R sent to
                    self.apply("R", now, self.prober.received(source, now))
            elif what == "toS":
                port, source = args
                sockets = [s for s, x in self.sMappings.items() if x == port]
                if sockets and source == R_MAPPING:  # S's NAT: only the mapping's destination
                    self.apply("S", now, self.opener.received(sockets[0], source, now))
        return self.result

    def apply(self, side: str, now: float, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SetTimer):
                self.at(now + effect.delay, "tick" + side)
            elif isinstance(effect, SendBubble):
                self.packets += 1
                if side == "S":
                    assert effect.socket is not None
                    port = self.sMappings.setdefault(effect.socket, self.rng.randrange(LOWEST_PORT, 65536))
                    self.at(now + self.delay, "toR", (S_IP, port))
                else:
                    self.rOpened.add(effect.dst)
                    self.at(now + self.delay, "toS", effect.dst[1], R_MAPPING)
            elif isinstance(effect, (Found, GaveUp)):
                self.result[side] = effect


class SimulationTests(unittest.TestCase):
    def test_rateMatchesFormula(self) -> None:
        """
        Over 200 searches with n = m = 256, both sides find each other as often as the
        birthday formula says (63.5 %; here within 3.5 standard deviations), both agree on
        the mapping when they do, and each side stays within its bounds.
        """
        limits = GuessLimits(sockets=256, probes=256, rate=100, deadline=8)
        hits = 0
        for seed in range(200):
            sim = Simulation(seed, limits)
            result = sim.run()
            self.assertLessEqual(sim.opener.sent, 256)
            self.assertLessEqual(sim.prober.sent, 256)
            self.assertLessEqual(sim.packets, 256 + 256 + 1)
            if isinstance(result.get("S"), Found) and isinstance(result.get("R"), Found):
                hits += 1
                s, r = result["S"], result["R"]
                assert isinstance(s, Found) and isinstance(r, Found)
                self.assertEqual(s.mapping, R_MAPPING)
                self.assertEqual(r.mapping, (S_IP, sim.sMappings[s.socket]))  # type: ignore[index]
                self.assertLess(r.elapsed, 8)
            else:
                self.assertNotIsInstance(result.get("R"), Found)
        self.assertTrue(0.52 <= hits / 200 <= 0.75, hits)

    def test_manySocketsAlwaysHit(self) -> None:
        """With n = m = 1024 (P > 99.9 %) every one of 20 searches hits."""
        limits = GuessLimits(sockets=1024, probes=1024, rate=1000, deadline=8, batch=50)
        for seed in range(20):
            result = Simulation(seed, limits).run()
            self.assertIsInstance(result.get("R"), Found)
            self.assertIsInstance(result.get("S"), Found)
