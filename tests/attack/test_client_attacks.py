"""
Attacks on our client over real sockets in the lab (SEC-19, CVE-2006-6266; RFC 4380
section 5.2.3 case 6).

Every packet from a native IPv6 source makes a Teredo client run a direct IPv6 connectivity
test: echo requests through its server toward that source.  An attacker spoofing many
native sources, sending through a relay the client already talks to, turns the client
into a reflector.  With the client's global budget (inbound-probe-rate 5/s, burst 20) the
echo tests seen at the server stay within burst + rate x time, whatever the flood.
"""

from __future__ import annotations

import ipaddress
import time

from twisted.trial import unittest

from teredonode.wire import ipv6
from teredonode.wire.address import TeredoAddress
from tests.attack.flood import count_lines, send_raw6
from tests.system.lab_fixture import LabAssertions, use_lab

FLOOD = 2000
WINDOW = 10
QUALIFY_TIMEOUT = 20.0


class ClientEchoTestAbuseTests(LabAssertions, unittest.TestCase):
    def setUp(self) -> None:
        self.lab = use_lab(self, "default")
        self.lab.exec("server", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.lab.start_teredonode("our-server", "server", "server")
        if not self.lab.wait_udp_listening("server", 3544, 15):
            self.fail(f"our-server does not listen: {self.lab.nodes['our-server'].log_tail(10)}")
        self.lab.start_teredonode("our-relay", "relay", "relay")
        self.waitStatus("our-relay", lambda s: s["relay"]["state"] == "relaying", 15, "relaying")

    def test_spoofedNativeSourcesBoundedEchoTests(self) -> None:
        """
        v6host, once it reaches the client through our relay, sends 2000 echo requests from
        2000 spoofed native sources: the echo requests the client sends through its server
        (captured at the server) stay within 20 + 5/s x the window.
        """
        self.lab.start_teredonode("ours-client1", "client1", "client")
        text = self.lab.wait_teredo_address("client1", QUALIFY_TIMEOUT)
        assert text is not None, f"client did not qualify: {self.lab.nodes['ours-client1'].log_tail(10)}"
        address = str(TeredoAddress.parse(text))
        # A legitimate exchange first: the relay and the client now trust each other.
        self.assertPings("v6host", address, count=3, logs=("our-relay", "ours-client1"))
        me = ipaddress.IPv6Address(address).packed
        packets = [
            ipv6.icmpv6_packet(
                ipaddress.IPv6Address(f"2001:db8:bad::{i + 1:x}").packed, me,
                ipv6.EchoRequest(7, 1, b"x" * 8), 64,
            )
            for i in range(FLOOD)
        ]
        nat = self.lab.public_ipv4("client1")
        # UDP payload: IPv6 next header 58 (ICMPv6) and ICMPv6 type 128 (echo request).
        expression = ["udp", "dst", "port", "3544", "and", "src", "host", nat,
                      "and", "udp[14] = 58", "and", "udp[48] = 128"]
        cap = self.lab.capture("server", expression, seconds=WINDOW, count=1_000_000)
        start = time.monotonic()
        send_raw6(self.lab, "v6host", packets)
        seen = count_lines(cap, WINDOW + 10)
        elapsed = time.monotonic() - start
        status = self.lab.node_status("ours-client1")["client"]
        self.assertGreaterEqual(seen, 1)
        self.assertLessEqual(seen, 20 + 5 * elapsed)
        self.assertLessEqual(status["counters"]["echo-tests"], 20 + 5 * elapsed + 4)
        self.assertGreater(status["drops"]["budget-global"], 0)
