"""
Malformed and fuzzed datagrams against every role, on real sockets in the lab.

Each test builds the lab's C{default} scenario with our server, relay, two clients and
host-specific relay, sends L{SAMPLE} datagrams (random bytes and structure-aware mutations
of every message kind, L{teredonode.lab.fuzz}) to one role from a fuzzer host, and asserts:

  - the node is alive;
  - its RSS grew by less than 50 MiB;
  - every datagram is accounted for: UDP received + TUN reads == drops by reason + answers,
    deliveries, sends and packets still queued (L{teredonode.lab.fuzz.account});
  - a fresh legitimate client qualifies and every path of the lab pings afterwards.

C{benchmarks/fuzz.py} runs the same harness with a million datagrams per role.
"""

from __future__ import annotations

from twisted.trial import unittest

from teredonode.lab.fuzz import NODES, RSS_GROWTH_LIMIT, FuzzReport, fuzz_role, start_nodes
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
