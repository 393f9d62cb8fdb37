"""
The tunnel's peer states (the table in L{teredonode.roles.tunnel}'s docstring): every change
goes through one method that refuses what the table does not list, and the counters the
tunnel fills are the ones its owner hands it.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import teredonode.roles.tunnel
from teredonode.peers import PeerList
from teredonode.roles import relay
from teredonode.roles.tunnel import (
    CLIENT_POLICY,
    COUNTERS,
    LOCAL,
    NUMBERED_COUNTERS,
    UNNUMBERED_COUNTERS,
    PEER_TRANSITIONS,
    PROBE_INTERVAL,
    PROBE_REPEATS,
    PROBING,
    REMOVED,
    TRUSTED,
    UNTRUSTED,
    PeerStateError,
    TeredoTunnel,
    peerState,
)
from teredonode.wire.address import GLOBAL_PREFIX, TeredoAddress
from teredonode.wire.ipv6 import bubble, build_ipv6
from teredonode.wire.teredo import classify

SERVER = ("203.0.113.10", 3544)


def teredo(client: str, port: int) -> bytes:
    return TeredoAddress(GLOBAL_PREFIX, SERVER[0], 0, port, client).to_bytes()


OWN = teredo("198.51.100.1", 5000)
PEER = teredo("192.0.2.45", 40000)
PEER_MAPPING = ("192.0.2.45", 40000)


class PeerStateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.sent: list[tuple[bytes, Any]] = []
        self.delivered: list[bytes] = []
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.peers = PeerList(self.clock.seconds)
        self.tunnel = TeredoTunnel(
            self.clock, CLIENT_POLICY, self.peers, lambda d, a: self.sent.append((d, a)),
            self.delivered.append, lambda n: b"\x01" * n, counters=self.counters, drops=self.drops,
        )
        self.tunnel.setIdentity(OWN, SERVER)

    def fromHost(self, dst: bytes) -> None:
        self.tunnel.fromHost(build_ipv6(OWN, dst, 17, b"payload!"))

    def state(self, address: bytes) -> str:
        peer = self.peers.get(address)
        return REMOVED if peer is None else peerState(peer)

    def test_ownersCounters(self) -> None:
        """
        The tunnel counts into the Counters it was given, and owns its peer list's removals.
        """
        self.assertIs(self.tunnel.counters, self.counters)
        self.assertIs(self.tunnel.drops, self.drops)
        self.assertEqual(self.peers.on_remove, self.tunnel._peerRemoved)
        self.fromHost(PEER)
        self.assertEqual(self.counters["bubbles-direct"], 1)
        plain = TeredoTunnel(self.clock, CLIENT_POLICY, PeerList(self.clock.seconds), print, print, bytes)
        self.assertEqual((plain.counters, plain.drops), (Counter(), Counter()))

    def test_probingThenTrusted(self) -> None:
        """
        Untrusted -> probing (bubbles) -> trusted (a bubble from the embedded mapping, case 3):
        the queued packet leaves for the proven mapping and the exchange stops.
        """
        self.fromHost(PEER)
        self.assertEqual(self.state(PEER), PROBING)
        self.assertEqual(self.counters["queued"], 1)
        self.tunnel.fromPeer(classify(bubble(PEER, OWN)), PEER_MAPPING)
        self.assertEqual(self.state(PEER), TRUSTED)
        self.assertEqual(self.sent[-1], (build_ipv6(OWN, PEER, 17, b"payload!"), PEER_MAPPING))
        bubbles = self.counters["bubbles-direct"]
        self.clock.advance(PROBE_INTERVAL * (PROBE_REPEATS + 2))
        self.assertEqual(self.counters["bubbles-direct"], bubbles)

    def test_probesRunOut(self) -> None:
        """
        Probing -> untrusted once the retries run out; the entry stays (a client's), its
        queued packet is dropped.
        """
        self.fromHost(PEER)
        for _ in range(PROBE_REPEATS):
            self.clock.advance(PROBE_INTERVAL)
            self.assertEqual(self.state(PEER), PROBING)
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(self.state(PEER), UNTRUSTED)
        self.assertEqual(self.drops["peer-unreachable"], 1)
        self.assertEqual(self.counters["probes-failed"], 1)

    def test_localDiscovery(self) -> None:
        """
        A trusted peer heard by local discovery at another endpoint is local (no longer
        trusted); its unicast bubble from that endpoint then trusts it there (case 5).
        """
        self.tunnel.fromPeer(classify(bubble(PEER, OWN)), PEER_MAPPING)
        self.assertEqual(self.state(PEER), TRUSTED)
        lan = ("10.0.0.7", 40000)
        self.tunnel.fromLocalPeer(PEER, lan)
        self.assertEqual(self.state(PEER), LOCAL)
        self.tunnel.fromPeer(classify(bubble(PEER, OWN)), lan)
        self.assertEqual(self.state(PEER), TRUSTED)
        known = self.peers.get(PEER)
        assert known is not None
        self.assertEqual(known.mapping, lan)

    def test_refused(self) -> None:
        """
        A change missing from the table is refused, and so is one that would not reach the
        state it names.
        """
        self.fromHost(PEER)
        self.tunnel.reset()
        self.assertEqual(self.state(PEER), REMOVED)
        fresh = self.peers.create(PEER)
        self.assertNotIn((UNTRUSTED, UNTRUSTED), PEER_TRANSITIONS)
        self.assertRaises(PeerStateError, self.tunnel._setState, fresh, UNTRUSTED)
        # Allowed by the table, but without a retry timer the entry would not be probing.
        self.assertIn((UNTRUSTED, PROBING), PEER_TRANSITIONS)
        self.assertRaises(PeerStateError, self.tunnel._setState, fresh, PROBING)
        self.assertEqual(peerState(fresh), UNTRUSTED)

    def test_tableIsTheDocstrings(self) -> None:
        """
        PEER_TRANSITIONS is exactly the table of the module docstring: the documentation
        cannot drift from what is enforced.
        """
        doc = teredonode.roles.tunnel.__doc__ or ""
        lines = doc.splitlines()
        rules = [i for i, line in enumerate(lines) if line.strip().startswith("====")]
        self.assertEqual(len(rules), 3)
        spans = [m.span() for m in re.finditer(r"=+", lines[rules[0]])]
        documented = set()
        for line in lines[rules[1] + 1 : rules[2]]:
            origin, target = (line[a:b].strip() for a, b in spans[:2])
            if not origin or origin == "(none)":
                continue
            for old in origin.split(", "):
                for new in target.split(", "):
                    documented.add((old, new))
        self.assertEqual(documented, set(PEER_TRANSITIONS))

    def test_everyStateReachesRemoved(self) -> None:
        for state in (UNTRUSTED, PROBING, LOCAL, TRUSTED):
            self.assertIn((state, REMOVED), PEER_TRANSITIONS)
        self.assertFalse({new for old, new in PEER_TRANSITIONS if old == REMOVED})


class CounterNamesTests(SynchronousTestCase):
    def test_declaredOnce(self) -> None:
        """
        Every counter the tunnel increments is in exactly one of its three lists, which the
        relay's status is built from (the relay keeps no copy of its own).
        """
        source = Path(teredonode.roles.tunnel.__file__).read_text()
        incremented = set(re.findall(r'counters\["([a-z0-9-]+)"\]\s*\+=', source))
        incremented |= set(re.findall(r'"([a-z]+-suppressed)"\)', source))  # through _suppress
        declared = COUNTERS + NUMBERED_COUNTERS + UNNUMBERED_COUNTERS
        self.assertEqual(len(declared), len(set(declared)))
        self.assertEqual(incremented, set(declared))
        self.assertEqual(relay._COUNTERS, relay.RELAY_COUNTERS + COUNTERS + UNNUMBERED_COUNTERS)
