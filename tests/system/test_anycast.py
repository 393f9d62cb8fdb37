"""
Relays that come and go under live traffic (docs/anycast.md).

  - RestartTests (default scenario, one relay, no BGP): our client behind a port-restricted
    NAT pings v6host and v6host pings it, 10 a second each way; our relay is restarted on
    the same address; both directions are answered again within RECOVERY_BOUND of the new
    relay serving, and nothing is lost after that.

Every ping runs in the background with its own count and deadline; each reply's receive time
(ping -D) is compared with the wall clock of the events the test causes.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from dataclasses import dataclass

from twisted.trial import unittest

from teredonode.wire.address import TeredoAddress
from tests.system.lab_fixture import LabAssertions, use_lab

QUALIFY_TIMEOUT = 20.0
#: Ping interval (s) in both directions.
INTERVAL = 0.1
#: How fast a restarted relay must carry traffic again, both ways, from the moment it reports
#: "relaying".  The relay forwards a known client's packets at once (delivered-stateless) and
#: v6host's first packet costs one bubble exchange through the server (milliseconds here);
#: the client answers indirect bubbles at most once per 2 s per relay endpoint, so the worst
#: case is one relay bubble retry: 2 s.  Measured: see docs/anycast.md.
RECOVERY_BOUND = 3.0

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)")


@dataclass
class PingRun:
    """
    What a background ping saw: receive time of each answered sequence number, and how
    many were sent.
    """

    replies: dict[int, float]
    sent: int

    def first_after(self, when: float) -> float | None:
        """
        Receive time of the first reply after C{when}.
        """
        later = [t for t in self.replies.values() if t > when]
        return min(later) if later else None

    def largest_gap(self) -> float:
        times = sorted(self.replies.values())
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def lost_after(self, when: float, tail: float = 1.5) -> list[int]:
        """
        Sequence numbers sent after the first reply following C{when} (and more than
        C{tail} s before the run ended) that were never answered.
        """
        first = self.first_after(when)
        if first is None:
            return [-1]
        seqs = sorted(s for s, t in self.replies.items() if t >= first)
        start = seqs[0]
        end = self.sent - int(tail / INTERVAL)
        return [s for s in range(start, end) if s not in self.replies]


class Pinger:
    """
    C{ping -D} from C{host} to C{target} in the background for C{seconds}.
    """

    def __init__(self, lab, host: str, target: str, seconds: float) -> None:
        self.seconds = seconds
        self.proc = lab.popen(
            host,
            # -c, not -w: with a deadline ping ends at the first ICMPv6 error (a routing
            # loop's "time exceeded" while a relay is down).
            ["ping", "-6", "-n", "-D", "-i", str(INTERVAL), "-W", "2", "-c", str(int(seconds / INTERVAL)), target],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def result(self) -> PingRun:
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        replies: dict[int, float] = {}
        for line in out.splitlines():
            match = _REPLY.match(line)
            if match:
                replies.setdefault(int(match.group(2)), float(match.group(1)))
        sent = re.search(r"(\d+) packets transmitted", out)
        return PingRun(replies, int(sent.group(1)) if sent else 0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


class AnycastLabCase(LabAssertions, unittest.TestCase):
    scenario = "default"

    def startServer(self) -> None:
        self.lab.start_teredonode("our-server", "server", "server")
        if not self.lab.wait_udp_listening("server", 3544, 15):
            self.fail(f"our-server does not listen: {self.lab.nodes['our-server'].log_tail(10)}")

    def startRelay(self, node: str, host: str, settings: dict | None = None) -> float:
        """
        Start our relay C{node} on C{host}; the wall clock time it reported "relaying".
        """
        self.lab.start_teredonode(node, host, "relay", settings=settings)
        self.waitStatus(node, lambda s: s["relay"]["state"] == "relaying", 15, "relaying")
        return time.time()

    def startClient(self, host: str) -> str:
        node = f"ours-{host}"
        self.lab.start_teredonode(node, host, "client")
        text = self.lab.wait_teredo_address(host, QUALIFY_TIMEOUT)
        self.assertIsNotNone(text, f"{node} did not qualify: {self.lab.nodes[node].log_tail(10)}")
        return str(TeredoAddress.parse(text))

    def bothWays(self, host: str, address: str, seconds: float) -> tuple[Pinger, Pinger]:
        up = Pinger(self.lab, host, self.lab.ipv6("v6host"), seconds)
        down = Pinger(self.lab, "v6host", address, seconds)
        self.addCleanup(up.kill)
        self.addCleanup(down.kill)
        return up, down


class RestartTests(AnycastLabCase):
    """
    One relay, restarted under traffic in both directions.
    """

    def setUp(self) -> None:
        self.lab = use_lab(self, "default")
        self.startServer()
        self.startRelay("our-relay", "relay")
        self.address = self.startClient("client1")
        self.assertPings("client1", self.lab.ipv6("v6host"), logs=("our-relay",))

    def test_restart_recovers_both_ways(self) -> None:
        """
        Stop the relay, start it again at once: client -> v6host and v6host -> client are
        answered again within RECOVERY_BOUND of the new relay serving; nothing is lost after.
        """
        up, down = self.bothWays("client1", self.address, 14)
        time.sleep(3)
        self.lab.stop_node("our-relay")
        serving = self.startRelay("our-relay", "relay")
        ups, downs = up.result(), down.result()
        recovered = {}
        for name, run in (("client->v6host", ups), ("v6host->client", downs)):
            first = run.first_after(serving)
            self.assertIsNotNone(first, f"{name}: no reply after the restart")
            recovered[name] = first - serving  # type: ignore[operator]
            self.assertLessEqual(recovered[name], RECOVERY_BOUND, (name, recovered))
            self.assertEqual(run.lost_after(serving), [], name)
        status = self.lab.node_status("our-relay")["relay"]
        self.assertEqual(status["drops"]["unknown-peer"], 0, status)
        print(f"\nrelay restart: recovery after serving {recovered}")
