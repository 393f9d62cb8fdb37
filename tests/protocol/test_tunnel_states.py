"""
The tunnel's peer states (the table in L{teredonode.roles.tunnel}'s docstring): every change
goes through one method that refuses what the table does not list, and the counters the
tunnel fills are the ones its owner hands it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import teredonode.roles.tunnel
from teredonode.counters import CounterSet
from teredonode.peers import PeerList
from teredonode.roles import client, relay
from teredonode.roles.tunnel import (
    CLIENT_POLICY,
    COUNTERS,
    EXPIRY_INTERVAL,
    LOCAL,
    NUMBERED_COUNTERS,
    UNNUMBERED_COUNTERS,
    UNNUMBERED_DROP_REASONS,
    PEER_TRANSITIONS,
    PROBE_INTERVAL,
    PROBE_REPEATS,
    PROBING,
    REMOVED,
    TRUSTED,
    UNTRUSTED,
    DROP_REASONS,
    PeerStateError,
    TeredoTunnel,
    peerState,
)
from teredonode.wire.address import GLOBAL_PREFIX, TeredoAddress
from teredonode.peers import VALID_FOR
from teredonode.wire.ipv6 import EchoReply, bubble, build_ipv6, icmpv6_packet
from teredonode.wire.teredo import classify

SERVER = ("203.0.113.10", 3544)


def teredo(client: str, port: int) -> bytes:
    return TeredoAddress(GLOBAL_PREFIX, SERVER[0], 0, port, client).to_bytes()


OWN = teredo("198.51.100.1", 5000)
PEER = teredo("192.0.2.45", 40000)
PEER_MAPPING = ("192.0.2.45", 40000)
NATIVE = bytes.fromhex("20010db8" + "00" * 11 + "30")
RELAY = ("203.0.113.20", 3544)
#: The nonce of every echo test: the stand-in randbytes gives ones.
NONCE = b"\x01" * 8
BUBBLE_SOURCE = bytes.fromhex("fe80" + "00" * 13 + "01")


class RecordingTunnelCase(SynchronousTestCase):
    """
    The tunnel alone, with recording stand-ins for its owner: a C{send} that records
    datagrams, a C{deliver} that records what reaches the host, a Clock.  Numbered (a
    client's policy, our address L{OWN}) unless a subclass sets C{unnumbered}.  It counts
    into the names its role declares, so that a name the role's status lacks fails here.
    """

    unnumbered = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.sent: list[tuple[bytes, Any]] = []
        self.delivered: list[bytes] = []
        self.peers = PeerList(self.clock.seconds)
        if self.unnumbered:
            policy, serves = relay.RELAY_POLICY, (lambda a: a == NATIVE)
            self.counters, self.drops = CounterSet(relay.COUNTERS), CounterSet(relay.DROP_REASONS)
        else:
            policy, serves = CLIENT_POLICY, None
            self.counters, self.drops = CounterSet(client.COUNTERS), CounterSet(client.DROP_REASONS)
        self.tunnel = TeredoTunnel(
            self.clock, policy, self.peers, lambda d, a: self.sent.append((d, a)),
            self.delivered.append, lambda n: b"\x01" * n, serves=serves,
            counters=self.counters, drops=self.drops,
        )
        if self.unnumbered:
            self.tunnel.setUnnumbered(BUBBLE_SOURCE)
        else:
            self.tunnel.setIdentity(OWN, SERVER)

    def fromHost(self, dst: bytes) -> None:
        self.tunnel.fromHost(build_ipv6(OWN, dst, 17, b"payload!"))

    def state(self, address: bytes) -> str:
        peer = self.peers.get(address)
        return REMOVED if peer is None else peerState(peer)


class PeerStateTests(RecordingTunnelCase):
    def test_ownersCounters(self) -> None:
        """
        The tunnel counts into the counters it was given, and owns its peer list's removals.
        Without any, it counts under every name it declares, from zero, and refuses others.
        """
        self.assertIs(self.tunnel.counters, self.counters)
        self.assertIs(self.tunnel.drops, self.drops)
        self.fromHost(PEER)
        self.assertEqual(self.counters["bubbles-direct"], 1)
        # The tunnel owns the list's removals: removing the probing entry counts its queued
        # packet and cancels its retry.
        self.assertEqual(self.state(PEER), PROBING)
        self.assertEqual(self.drops["evicted"], 0)
        self.peers.remove(PEER)
        self.assertEqual(self.drops["evicted"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        plain = TeredoTunnel(self.clock, CLIENT_POLICY, PeerList(self.clock.seconds), print, print, bytes)
        self.assertEqual(plain.counters, dict.fromkeys(COUNTERS + NUMBERED_COUNTERS + UNNUMBERED_COUNTERS, 0))
        self.assertEqual(plain.drops, dict.fromkeys(DROP_REASONS + UNNUMBERED_DROP_REASONS, 0))
        with self.assertRaises(KeyError):
            plain.counters["undeclared"] += 1

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
        self.assertRaises(PeerStateError, self.tunnel.setState, fresh, UNTRUSTED)
        # Allowed by the table, but without a retry timer the entry would not be probing.
        self.assertIn((UNTRUSTED, PROBING), PEER_TRANSITIONS)
        self.assertRaises(PeerStateError, self.tunnel.setState, fresh, PROBING)
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


class NumberedCoreTests(RecordingTunnelCase):
    """
    What the roles' tests exercise only through a whole role, on the core alone.
    """

    def test_queueDrainsInOrder(self) -> None:
        """
        Section 5.2.3 "de-queue": the packets queued while a peer was probed leave in the
        order the host sent them, once its mapping is proven, and are counted as released.
        """
        packets = [build_ipv6(OWN, PEER, 17, b"packet-%d" % i) for i in range(3)]
        for packet in packets:
            self.tunnel.fromHost(packet)
        self.assertEqual(self.counters["queued"], 3)
        self.assertTrue(all(classify(d).is_bubble for d, _ in self.sent))
        del self.sent[:]
        self.tunnel.fromPeer(classify(bubble(PEER, OWN)), PEER_MAPPING)
        self.assertEqual(self.sent, [(p, PEER_MAPPING) for p in packets])
        self.assertEqual(self.counters["released"], 3)
        self.assertEqual(self.counters["sent"], 3)

    def test_echoNonceMismatch(self) -> None:
        """
        Section 5.2.9 (CL-TX-02): an echo reply from a native peer proves its relay only if
        it carries the test's nonce; any other is dropped, the test goes on, and nothing
        reaches that sender or the host until the right reply comes.
        """
        self.tunnel.fromHost(build_ipv6(OWN, NATIVE, 17, b"payload!"))
        [(request, to)] = self.sent
        self.assertEqual(to, SERVER)
        self.assertEqual(request[48:], NONCE)
        self.assertEqual(self.state(NATIVE), PROBING)
        self.tunnel.fromPeer(classify(icmpv6_packet(NATIVE, OWN, EchoReply(1, 0, b"\x02" * 8), 64)), RELAY)
        self.assertEqual(self.drops["echo-nonce-mismatch"], 1)
        self.assertEqual(self.state(NATIVE), PROBING)
        self.assertEqual([a for _, a in self.sent], [SERVER])
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.counters["echo-tests-ok"], 0)
        self.tunnel.fromPeer(classify(icmpv6_packet(NATIVE, OWN, EchoReply(1, 0, NONCE), 64)), RELAY)
        self.assertEqual(self.state(NATIVE), TRUSTED)
        self.assertEqual(self.sent[-1], (build_ipv6(OWN, NATIVE, 17, b"payload!"), RELAY))
        self.assertEqual(self.counters["echo-tests-ok"], 1)
        known = self.peers.get(NATIVE)
        assert known is not None
        self.assertEqual(known.mapping, RELAY)

    def test_trustedPeerExpires(self) -> None:
        """
        Section 5.2.4 (CL-TX-00): a trusted peer not heard from for 30 s is no longer sent to
        at once: the packet is queued and the peer bubbled again, then released when it
        answers; and an entry left alone is swept by the tunnel's expiry timer.  (RFC 4380
        alone: RFC 6081 Server Load Reduction, which solicits an idle path directly, is
        tests/protocol/test_slr.py's.)
        """
        self.tunnel.serverLoadReduction = False
        self.tunnel.fromPeer(classify(bubble(PEER, OWN)), PEER_MAPPING)
        packet = build_ipv6(OWN, PEER, 17, b"payload!")
        self.tunnel.fromHost(packet)
        self.assertEqual(self.sent, [(packet, PEER_MAPPING)])
        self.clock.advance(VALID_FOR)
        del self.sent[:]
        self.tunnel.fromHost(packet)
        self.assertEqual(self.counters["queued"], 1)
        self.assertEqual([(classify(d).is_bubble, a) for d, a in self.sent], [(True, PEER_MAPPING), (True, SERVER)])
        self.tunnel.fromPeer(classify(bubble(PEER, OWN)), PEER_MAPPING)
        self.assertEqual(self.sent[-1], (packet, PEER_MAPPING))
        self.assertEqual(self.state(PEER), TRUSTED)
        self.tunnel.start()
        self.addCleanup(self.tunnel.stop)
        self.assertEqual(self.peers.expire(), 0)
        for _ in range(int((VALID_FOR + 2 * EXPIRY_INTERVAL) / EXPIRY_INTERVAL)):
            self.clock.advance(EXPIRY_INTERVAL)
        self.assertEqual(self.state(PEER), REMOVED)


class UnnumberedCoreTests(RecordingTunnelCase):
    """
    The unnumbered tunnel (the relays' policy: it serves L{NATIVE}) alone.
    """

    unnumbered = True

    def test_unreachableAfterRetries(self) -> None:
        """
        RL-TX-05/06/07: toward a silent client, a direct and an indirect bubble at once and
        after each of L{PROBE_REPEATS} intervals; then the entry goes with its queue and the
        host hears address unreachable (from the client's address) for each queued packet.
        """
        for i in range(2):
            self.tunnel.fromHost(build_ipv6(NATIVE, PEER, 17, b"%d" % i))
        for _ in range(PROBE_REPEATS):
            self.clock.advance(PROBE_INTERVAL)
            self.assertIn(PEER, self.peers)
        self.clock.advance(PROBE_INTERVAL)
        self.assertNotIn(PEER, self.peers)
        destinations = [a for _, a in self.sent]
        self.assertEqual(destinations.count(PEER_MAPPING), PROBE_REPEATS + 1)
        self.assertEqual(destinations.count(SERVER), PROBE_REPEATS + 1)
        self.assertEqual(self.drops["peer-unreachable"], 2)
        self.assertEqual(len(self.delivered), 2)
        for error in self.delivered:
            self.assertEqual((error[8:24], error[24:40], error[40], error[41]), (PEER, NATIVE, 1, 3))

    def test_statelessForwarding(self) -> None:
        """
        RL-RX-03/04: from a client never sent to, a packet whose source embeds the sender's
        endpoint is delivered without an entry; from any other endpoint it is dropped.
        """
        packet = build_ipv6(PEER, NATIVE, 17, b"payload!")
        self.tunnel.fromPeer(classify(packet), PEER_MAPPING)
        self.assertEqual(self.delivered, [packet])
        self.assertEqual(self.counters["delivered-stateless"], 1)
        self.tunnel.fromPeer(classify(packet), ("192.0.2.66", 5555))
        self.assertEqual(self.drops["mapping-mismatch"], 1)
        self.assertEqual(self.delivered, [packet])
        self.assertEqual(len(self.peers), 0)
        self.assertEqual(self.sent, [])


class CounterNamesTests(SynchronousTestCase):
    def test_declaredOnce(self) -> None:
        """
        Every counter the tunnel (or its random-port and port-guessing extensions, which
        count in the tunnel's counters) increments is in exactly one of its three lists, which the
        relay's status is built from (the relay keeps no copy of its own).
        """
        roles = Path(teredonode.roles.tunnel.__file__).parent
        source = "".join((roles / name).read_text() for name in ("tunnel.py", "randomport.py", "portguessing.py"))
        incremented = set(re.findall(r'counters\["([a-z0-9-]+)"\]\s*\+=', source))
        incremented |= set(re.findall(r'"([a-z]+-suppressed)"\)', source))  # through _suppress
        declared = COUNTERS + NUMBERED_COUNTERS + UNNUMBERED_COUNTERS
        self.assertEqual(len(declared), len(set(declared)))
        self.assertEqual(incremented, set(declared))
        self.assertEqual(relay.COUNTERS, relay.RELAY_COUNTERS + COUNTERS + UNNUMBERED_COUNTERS)
