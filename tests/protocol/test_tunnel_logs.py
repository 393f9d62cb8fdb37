"""
The tunnel core's log lines for peer state changes an operator asks about ("which relay
carries this host?", "why can't I reach that peer?"): one line each, never per packet, and
limited so that a flood of doomed destinations cannot flood the log.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import ILogObserver, Logger, formatEvent

from teredonode.roles.tunnel import LOG_BURST
from tests.protocol.test_client import echo, raw
from tests.protocol.test_relay import PRIMARY, RELAY_IP, V6HOST, RelayTestCase, fakeTun, teredo


class TunnelLogTests(RelayTestCase):
    def capture(self, tunnel: Any) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        tunnel.log = Logger(observer=cast(ILogObserver, events.append))
        return events

    def test_relayChosenLoggedOnce(self) -> None:
        """
        The client's echo test finds the relay of a native host: one line naming it; the
        packets after it log nothing.
        """
        client = self.makeClient()
        events = self.capture(client.tunnel)
        caddr = raw(client.address)
        fakeTun(client).inject(echo(caddr, V6HOST, b"hello"))
        self.advance(1)
        for i in range(20):
            fakeTun(client).inject(echo(caddr, V6HOST, bytes([i])))
        self.advance(1)
        lines = [formatEvent(e) for e in events]
        self.assertEqual(lines, [f"relay for 2001:db8::30: {RELAY_IP}:3544"])

    def test_unreachablePeersLoggedWithinLimit(self) -> None:
        """
        15 Teredo destinations that never answer: each is reported unreachable once its
        probes run out, the first LOG_BURST in the log, the rest only counted.
        """
        events = self.capture(self.relay.tunnel)
        self.net.addDropFilter(lambda d: d.src == (RELAY_IP, 3544))
        for i in range(15):
            self.tun.inject(echo(V6HOST, teredo(PRIMARY, f"198.51.100.{i + 1}", 4000), b"x"))
        self.advance(10)
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len(lines), LOG_BURST)
        self.assertTrue(all(" unreachable: 4 probes unanswered" in line for line in lines), lines)
        self.assertEqual(self.relay.status()["counters"]["log-suppressed"], 15 - LOG_BURST)
