"""
Attacks on our relay over real sockets in the lab (RL-RX-07, RFC 4380 section 5.4.1).

An attacker on the IPv6 side sends one packet to each of N Teredo addresses that all embed
one victim IPv4 address, varying the flags, the server field and the port.  Without
budgets every packet creates an entry and up to 8 bubbles (4 rounds, direct and indirect)
toward endpoints the attacker chose.  With them the victim receives at most the per-IPv4
budget (burst + rate x time), and all bubbles together stay within the global budget.
"""

from __future__ import annotations

import json
import time

from twisted.trial import unittest

from teredonode.wire.address import GLOBAL_PREFIX, TeredoAddress
from tests.attack.flood import count_lines, send_udp6
from tests.system.lab_fixture import LabAssertions, use_lab

VICTIM = "192.0.2.99"
#: Attacker-chosen server fields (global, routed off the relay's link).
SERVERS = ("192.0.2.1", "192.0.2.2", "198.51.100.200", "192.0.2.250")
FLOOD = 2000
#: Seconds the capture runs from just before the flood: the flood plus every retry.
WINDOW = 10


def victim_addresses(count: int) -> list[str]:
    """
    C{count} distinct Teredo addresses embedding L{VICTIM}: flags, server, port vary.
    """
    return [
        str(TeredoAddress(GLOBAL_PREFIX, SERVERS[i % len(SERVERS)], (i * 0x0101) & 0x3CFF, 1024 + i, VICTIM))
        for i in range(count)
    ]


def victim_as_server_addresses(count: int) -> list[str]:
    """
    C{count} Teredo addresses of C{count} different clients, all naming L{VICTIM} as their
    server: the indirect bubbles go to the victim.
    """
    return [
        str(TeredoAddress(GLOBAL_PREFIX, VICTIM, 0, 4000, f"11.1.{i // 250}.{i % 250 + 1}"))
        for i in range(count)
    ]


def spread_addresses(count: int) -> list[str]:
    """
    C{count} Teredo addresses each embedding a different IPv4 address.
    """
    return [
        str(TeredoAddress(GLOBAL_PREFIX, "192.0.2.1", 0, 4000, f"11.0.{i // 250}.{i % 250 + 1}"))
        for i in range(count)
    ]


class RelayBubbleAmplificationTests(LabAssertions, unittest.TestCase):
    def setUp(self) -> None:
        self.lab = use_lab(self, "default")

    def startRelay(self, settings: dict[str, object]) -> None:
        self.lab.start_teredonode("our-relay", "relay", "relay", settings=settings)
        self.waitStatus("our-relay", lambda s: s["relay"]["state"] == "relaying", 15, "relaying")

    def floodAndCount(self, addresses: list[str], expression: list[str]) -> tuple[int, float]:
        """
        Capture on the relay, send one packet from v6host to each address; the capture's
        packet count and how long it ran.
        """
        cap = self.lab.capture("relay", expression, seconds=WINDOW, count=1_000_000)
        start = time.monotonic()
        send_udp6(self.lab, "v6host", addresses)
        seen = count_lines(cap, WINDOW + 10)
        return seen, time.monotonic() - start

    def tunPacketsToRelay(self) -> int:
        """
        Packets the relay's TUN has handed to the relay so far (its transmit count: the
        kernel transmits toward the program).
        """
        out = self.lab.exec("relay", ["ip", "-s", "-j", "link", "show", "dev", "teredo-relay"], check=True).stdout
        return int(json.loads(out)[0]["stats64"]["tx"]["packets"])

    def test_bubblesTowardOneVictimBounded(self) -> None:
        """
        2000 destinations embedding one victim, direct bubbles on (the worst case): the
        victim receives at most bubble-burst-per-ipv4 (8) + bubble-rate-per-ipv4 (2/s) x
        the window, instead of one bubble per destination and retry.
        """
        self.startRelay({"direct-bubbles": True})
        before = self.tunPacketsToRelay()
        seen, elapsed = self.floodAndCount(
            victim_addresses(FLOOD), ["udp", "and", "src", "port", "3544", "and", "dst", "host", VICTIM]
        )
        self.assertGreaterEqual(seen, 1)
        self.assertLessEqual(seen, 8 + 2 * elapsed)
        # Every flood packet the relay read beyond the budget was refused and counted; on a
        # loaded machine some never reach it (the TUN's queue overflows first), as in
        # test_totalBubblesBoundedByGlobalBudget.
        read = self.tunPacketsToRelay() - before
        self.assertGreater(read, FLOOD // 2)
        status = self.lab.node_status("our-relay")["relay"]
        self.assertGreaterEqual(status["drops"]["budget-ipv4"], min(FLOOD, read) - 8 - 2 * elapsed)
        self.assertLessEqual(status["peers"]["peers"], 8 + 2 * elapsed)
        self.assertGreater(status["peers"]["probes-suppressed"]["ipv4-budget"], 0)

    def test_totalBubblesBoundedByGlobalBudget(self) -> None:
        """
        2000 destinations embedding 2000 different IPv4 addresses, global budget 50 + 20/s:
        every bubble the relay sends, to any address, stays within it.
        """
        self.startRelay({
            "bubble-rate": 20, "bubble-burst": 50,
            # All these destinations name one server: take its budget out of the way.
            "bubble-rate-per-server": 100_000, "bubble-burst-per-server": 100_000,
        })
        before = self.tunPacketsToRelay()
        seen, elapsed = self.floodAndCount(spread_addresses(FLOOD), ["udp", "and", "src", "port", "3544"])
        self.assertGreaterEqual(seen, 1)
        self.assertLessEqual(seen, 50 + 20 * elapsed)
        # Every flood packet the relay read beyond the budget was refused and counted.  On a
        # loaded machine some never reach it (the TUN's queue overflows first): only what
        # the TUN handed to the relay is owed a refusal.
        read = self.tunPacketsToRelay() - before
        self.assertGreater(read, FLOOD // 2)
        status = self.lab.node_status("our-relay")["relay"]
        self.assertGreaterEqual(status["drops"]["budget-global"], min(FLOOD, read) - 50 - 20 * elapsed)
        self.assertEqual(status["counters"]["bubbles-direct"], 0)

    def test_victimNamedAsServerBounded(self) -> None:
        """
        2000 destinations of 2000 different clients naming the victim as their server: the
        victim receives at most bubble-burst-per-server (100) + bubble-rate-per-server
        (50/s) x the window, not 4 bubbles per destination.
        """
        self.startRelay({})
        seen, elapsed = self.floodAndCount(
            victim_as_server_addresses(FLOOD), ["udp", "and", "src", "port", "3544", "and", "dst", "host", VICTIM]
        )
        self.assertGreaterEqual(seen, 1)
        self.assertLessEqual(seen, 100 + 50 * elapsed)
        status = self.lab.node_status("our-relay")["relay"]
        self.assertGreater(status["drops"]["budget-server"], 0)
