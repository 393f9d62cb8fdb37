"""
The anycast scenario in action: background pings timed against events (a relay killed,
stopped, brought back), shared by C{teredo lab demo --scenario anycast} and
C{tests/system/test_anycast.py}.

A L{Pinger} runs C{ping -D} (each reply stamped with the wall clock) in the background; a
L{PingRun} answers "when was the first reply after this event?", "what was the longest
silence?" and "which packets were never answered?".
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from typing import TextIO

from teredonode.lab.lab import Lab

#: Ping interval (s) in both directions.
INTERVAL = 0.1
#: Our relays in the anycast scenario, their drain time in the demo.
DRAIN_TIME = 2

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
        """
        The longest time between two consecutive replies.
        """
        times = sorted(self.replies.values())
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def lost(self, tail: float = 1.5) -> list[int]:
        """
        Sequence numbers never answered (leaving out the last C{tail} s, still in flight).
        """
        return [s for s in range(1, self.sent - int(tail / INTERVAL)) if s not in self.replies]

    def lost_after(self, when: float, tail: float = 1.5) -> list[int]:
        """
        Sequence numbers sent after the first reply following C{when} (and more than
        C{tail} s before the run ended) that were never answered.
        """
        first = self.first_after(when)
        if first is None:
            return [-1]
        start = min(s for s, t in self.replies.items() if t >= first)
        end = self.sent - int(tail / INTERVAL)
        return [s for s in range(start, end) if s not in self.replies]


class Pinger:
    """
    C{ping -D} from C{host} to C{target} in the background for about C{seconds}.
    """

    def __init__(self, lab: Lab, host: str, target: str, seconds: float) -> None:
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


def relay_sent(lab: Lab) -> dict[str, int]:
    """
    Packets each of our relays has sent to clients so far.
    """
    return {r: lab.node_status(r)["relay"]["counters"]["sent"] for r in lab.plan.relays}


def busiest_relay(lab: Lab, seconds: float = 1.0) -> str:
    """
    The relay that sent the most to clients over the next C{seconds}.
    """
    before = relay_sent(lab)
    time.sleep(seconds)
    after = relay_sent(lab)
    return max(after, key=lambda r: after[r] - before[r])


def ping_both_ways(lab: Lab, addresses: dict[str, str], seconds: float) -> dict[str, Pinger]:
    """
    Every client pings v6host and v6host pings every client, in the background.
    """
    v6host = lab.ipv6("v6host")
    pingers = {}
    for client, address in addresses.items():
        pingers[f"{client} -> v6host"] = Pinger(lab, client, v6host, seconds)
        pingers[f"v6host -> {client}"] = Pinger(lab, "v6host", address, seconds)
    return pingers


def disruption_under_pings(lab: Lab, addresses: dict[str, str], seconds: float) -> tuple[dict[str, Pinger], str]:
    """
    Pings both ways for C{seconds} (L{ping_both_ways}) and the relay to disrupt, the one
    carrying the most of them (L{busiest_relay}), once they have flowed for a second more.
    """
    pingers = ping_both_ways(lab, addresses, seconds)
    victim = busiest_relay(lab)
    time.sleep(1)
    return pingers, victim


def start_relay(lab: Lab, relay: str, timeout: float = 15.0) -> bool:
    """
    Start our relay on host C{relay} (node of the same name); True once it relays.
    """
    lab.start_teredonode(relay, relay, "relay", settings={"drain-time": DRAIN_TIME})
    _, ok = lab.wait_node_status(relay, lambda s: s["relay"]["state"] == "relaying", timeout)
    return ok


def run_anycast_demo(lab: Lab, out: TextIO) -> bool:
    """
    Server, both relays, both clients; pings both ways; then kill -9 the busiest relay,
    bring it back, and stop one gracefully, under continuous pings; print what happened.
    """
    ok = True

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    lab.start_teredonode("server", "server", "server")
    lab.wait_udp_listening("server", 3544, 10)
    for relay in lab.plan.relays:
        if not start_relay(lab, relay):
            say(f"  {relay}: did not start: {lab.nodes[relay].log_tail(3)}")
            return False
    t0 = time.monotonic()
    hops, routed = lab.wait_bgp_route(lambda h: len(h) == len(lab.plan.relays), 20)
    say(f"  router: 2001::/32 via {', '.join(hops) or 'nothing'} (BGP, ECMP) after {time.monotonic() - t0:.2f}s")
    if not routed:
        return False
    addresses = {}
    for client in (c.name for c in lab.plan.clients()):
        lab.start_teredonode(client, client, "client")
    for client in (c.name for c in lab.plan.clients()):
        address = lab.wait_teredo_address(client, 20)
        say(f"  {client}: {address or 'not qualified'}")
        if address is None:
            return False
        addresses[client] = address
    for client, address in addresses.items():
        for src, dst in ((client, lab.ipv6("v6host")), ("v6host", address)):
            received, _ = lab.ping6(src, dst, 5, 0.2)
            ok &= received >= 4
            say(f"  ping {src} -> {'v6host' if src == client else client}: {received}/5")

    say("\nkill -9 of the busiest relay under pings both ways (10/s each):")
    pingers, victim = disruption_under_pings(lab, addresses, 10)
    killed = time.time()
    lab.kill_node(victim)
    hops, _ = lab.wait_bgp_route(lambda h: len(h) == len(lab.plan.relays) - 1, 10)
    say(f"  {victim} killed; router withdrew it after {(time.time() - killed) * 1000:.0f} ms (now via {', '.join(hops)})")
    time.sleep(1)
    lab.stop_node(victim)
    back = time.time()
    start_relay(lab, victim)
    hops, rejoined = lab.wait_bgp_route(lambda h: len(h) == len(lab.plan.relays), 20)
    say(f"  {victim} restarted; rejoined the ECMP set after {time.time() - back:.2f}s")
    ok &= rejoined
    for name, pinger in pingers.items():
        run = pinger.result()
        lost = run.lost_after(killed)
        ok &= not lost and run.largest_gap() < 3.0
        say(f"  {name:<20} longest silence {run.largest_gap():.2f}s, lost after recovery: {len(lost)}")

    say("\ngraceful stop (SIGTERM: withdraw, drain for 2 s, exit) of the busiest relay:")
    pingers, victim = disruption_under_pings(lab, addresses, 8)
    stopped = time.time()
    lab.stop_node(victim)
    say(f"  {victim} exited {time.time() - stopped:.2f}s after SIGTERM")
    for name, pinger in pingers.items():
        run = pinger.result()
        ok &= not run.lost()
        say(f"  {name:<20} lost {len(run.lost())} of {run.sent}")
    start_relay(lab, victim)
    return ok
