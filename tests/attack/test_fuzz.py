"""
Malformed and fuzzed datagrams against every role, on real sockets in the lab.

Each test builds the lab's C{default} scenario with our server, relay, two clients and
host-specific relay, sends L{SAMPLE} datagrams (random bytes and structure-aware mutations
of every message kind, L{teredonode.lab.fuzz}) to one role from a fuzzer host, and asserts
(the checks are L{teredonode.lab.fuzzrun}'s):

  - the node is alive;
  - its RSS grew by less than 50 MiB;
  - every datagram is accounted for: UDP received + TUN reads == drops by reason + answers,
    deliveries, sends and packets still queued (L{teredonode.lab.fuzzrun.account});
  - a fresh legitimate client qualifies and every path of the lab pings afterwards;
  - the node's log holds no traceback (an exception anywhere, timers included).

C{benchmarks/fuzz.py} runs the same harness with a million datagrams per role.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase

from teredonode.lab.fuzzrun import NODES, RSS_GROWTH_LIMIT, FuzzReport, account, fuzz_role, log_tracebacks, start_nodes
from tests.system.lab_fixture import use_lab

#: Datagrams per role: enough for every mutation of the pool several times over.
SAMPLE = 100_000
#: Sending is bounded in time too (at the default rate it takes about 13 s).
MAX_SECONDS = 45.0


class FuzzTests(unittest.TestCase):
    def fuzz(self, role: str, seed: int) -> FuzzReport:
        lab = use_lab(self, "default")
        start_nodes(lab)
        report = fuzz_role(lab, role, SAMPLE, seed=seed, max_seconds=MAX_SECONDS)
        figures = "\n".join(report.lines())
        log = lab.nodes[NODES[role][0]].log_tail(15)
        self.assertTrue(report.alive, f"{role} died\n{figures}\nlog {log}")
        self.assertGreater(report.sent, SAMPLE // 2, figures)
        # Every datagram sent reached the node or was dropped by the kernel for a full
        # receive buffer (which the node cannot see); the node also saw legitimate traffic.
        self.assertGreaterEqual(report.received + report.kernel_rcvbuf_drops, report.sent, figures)
        self.assertLess(report.rss_growth, RSS_GROWTH_LIMIT, figures)
        self.assertTrue(report.accounting.balanced, f"{role}: unaccounted datagrams\n{figures}\nlog {log}")
        self.assertEqual(report.log_errors, [], f"{role}: exceptions in the node's log\n{figures}")
        self.assertTrue(report.legit_ok, f"{role}: legitimate traffic failed after fuzzing\n{figures}")
        return report

    def test_server(self) -> None:
        """
        The server: RSs with and without auth, cone flag, bubbles, echo, garbage.
        """
        report = self.fuzz("server", 11)
        self.assertGreater(report.drops["malformed"], 0)

    def test_relay(self) -> None:
        """
        The relay: bubbles and data from spoofed, unknown and link-local sources.
        """
        report = self.fuzz("relay", 12)
        self.assertGreater(report.drops["malformed"], 0)

    def test_client(self) -> None:
        """
        A qualified client behind a cone NAT: forged RAs, bubbles, trailers, data; a quarter
        of the datagrams spoofed from its server's address (RAs, origin indications).
        """
        report = self.fuzz("client", 13)
        self.assertGreater(report.drops["malformed"], 0)
        self.assertGreater(report.spoofed, SAMPLE // 8)
        self.assertGreater(report.drops["ra-unexpected"] + report.drops["ra-bad-nonce"], 0)

    def test_host_relay(self) -> None:
        """
        The host-specific relay on dualhost.
        """
        report = self.fuzz("host-relay", 14)
        self.assertGreater(report.drops["malformed"], 0)


class CheckTests(SynchronousTestCase):
    """
    The checks themselves can fail (no root needed).
    """

    def status(self, received: int) -> dict[str, Any]:
        return {
            "relay": {
                "counters": {"received": received, "delivered": 2, "sent": 1, "bubbles-received": 1},
                "drops": {"malformed": 3, "unreachable-peer": 5},
                "peers": {"queued-packets": 1},
            }
        }

    def test_account(self) -> None:
        """
        received 7 + 1 TUN read == 3 dropped + 2 delivered + 1 sent + 1 bubble + 1 queued;
        one datagram more and the books do not balance.  Peer entries do not count.
        """
        self.assertTrue(account("relay", self.status(7), 1).balanced)
        unbalanced = account("relay", self.status(8), 1)
        self.assertFalse(unbalanced.balanced)
        self.assertEqual((unbalanced.taken_in, unbalanced.accounted), (9, 8))
        self.assertNotIn("drop:unreachable-peer", unbalanced.outcomes)

    def test_accountFastPath(self) -> None:
        """
        A relay's kernel fast path sends packets it took from the TUN before the node could
        read them, and native packets it took before they reached the TUN: its C{from-tun}
        and C{from-native} are input too (the relay's C{sent} counts both).
        """
        status = self.status(7)
        status["relay"]["counters"]["sent"] += 6
        self.assertFalse(account("relay", status, 1).balanced)
        status["relay"]["fast-path"] = {"carried": 6, "from-tun": 4, "passed-to-python": 0}
        self.assertFalse(account("relay", status, 1).balanced)
        status["relay"]["fast-path"]["from-native"] = 2
        self.assertTrue(account("relay", status, 1).balanced)

    def test_log_tracebacks(self) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
            f.write("2026 [-] fine\n2026 [-] Unhandled Error\nTraceback (most recent call last):\n  boom\n")
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(log_tracebacks(f.name), ["boom"])
        self.assertEqual(log_tracebacks(f.name + ".missing"), [])
