"""
The server's native IPv6 side with a separate sender (the raw IPv6 socket in production):
echo tests leave through the sender, replies still come back through the TUN.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import ServerSettings
from teredonode.roles.server import TeredoServer
from teredonode.testing import FakeInternet, FakeTunDevice
from teredonode.wire import ipv6
from tests.protocol.test_server import PRIMARY, SECONDARY, V6HOST, Peer, teredo


class RecordingSender:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.opened = self.closed = False
        self.drops: Counter[str] = Counter({"enetunreach": 2})

    def open(self) -> None:
        self.opened = True

    def write(self, packet: bytes) -> None:
        self.written.append(packet)

    def close(self) -> None:
        self.closed = True


class NativeSenderTests(SynchronousTestCase):
    def test_echo_test_through_sender_reply_through_tun(self) -> None:
        clock = Clock()
        net = FakeInternet(clock)
        host = net.host(PRIMARY, SECONDARY)
        tun, sender = FakeTunDevice("teredo-srv"), RecordingSender()
        server = TeredoServer(ServerSettings(primary=PRIMARY, secondary=SECONDARY), host, tun=tun, native=sender)
        server.privilegedStartService()
        server.startService()
        self.assertTrue(sender.opened)
        alice = Peer()
        net.host("192.0.2.45").listenUDP(40000, alice)
        a = teredo(("192.0.2.45", 40000))
        request = ipv6.icmpv6_packet(a, V6HOST, ipv6.EchoRequest(7, 1, b"12345678"))
        alice.send(request)
        net.flush()
        self.assertEqual((sender.written, tun.written), ([request], []))
        reply = ipv6.icmpv6_packet(V6HOST, a, ipv6.EchoReply(7, 1, b"12345678"))
        tun.inject(reply)
        net.flush()
        self.assertEqual(alice.received, [(reply, (PRIMARY, 3544))])
        status = server.status()
        self.assertEqual(status["counters"]["forwarded-ipv6"], 1)
        self.assertEqual(status["send-errors"]["enetunreach"], 2)
        server.stopService()
        self.assertTrue(sender.closed)
