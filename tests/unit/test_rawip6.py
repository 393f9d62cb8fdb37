"""
L{teredonode.rawip6}: the raw IPv6 send path the server's echo tests leave through.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from teredonode.rawip6 import RawIPv6Sender, RawSocketError
from teredonode.wire import ipv6

SRC = bytes.fromhex("20010000cb00710a0000f5ff3fffbdd2")
DST = bytes.fromhex("20010db8000000000000000000000099")


class FakeRawSocket:
    def __init__(self, *args: int, fail: OSError | None = None) -> None:
        self.args = args
        self.sent: list[tuple[bytes, tuple[Any, ...]]] = []
        self.fail = fail
        self.closed = False
        self.blocking = True

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> int:
        if self.fail is not None:
            raise self.fail
        self.sent.append((data, addr))
        return len(data)

    def close(self) -> None:
        self.closed = True


class RawIPv6SenderTests(SynchronousTestCase):
    def test_sends_to_the_packet_destination(self) -> None:
        socks: list[FakeRawSocket] = []

        def make(*a: int) -> FakeRawSocket:
            socks.append(FakeRawSocket(*a))
            return socks[-1]

        sender = RawIPv6Sender(make)
        sender.open()
        [sock] = socks
        self.assertEqual(sock.args, (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW))
        self.assertFalse(sock.blocking)
        packet = ipv6.icmpv6_packet(SRC, DST, ipv6.EchoRequest(1, 2, b"x"))
        sender.write(packet)
        self.assertEqual(sock.sent, [(packet, ("2001:db8::99", 0))])
        self.assertEqual(sender.sent, 1)
        sender.close()
        self.assertTrue(sock.closed)

    def test_errors_are_counted_not_raised(self) -> None:
        sock = FakeRawSocket(fail=OSError(errno.ENETUNREACH, "Network is unreachable"))
        sender = RawIPv6Sender(lambda *a: sock)
        sender.write(b"\x60" + bytes(39))  # not open yet
        sender.open()
        sender.write(b"\x60")  # shorter than a header
        sender.write(ipv6.icmpv6_packet(SRC, DST, ipv6.EchoRequest(1, 2)))
        self.assertEqual(dict(sender.drops), {"not-open": 1, "short": 1, "enetunreach": 1})
        self.assertEqual(sender.sent, 0)

    def test_open_failure_is_one_line(self) -> None:
        def refuse(*a: int) -> FakeRawSocket:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        error = self.assertRaises(RawSocketError, RawIPv6Sender(refuse).open)
        self.assertIn("CAP_NET_RAW", str(error))
        self.assertNotIn("\n", str(error))


class RealRawSocketTests(TestCase):
    def test_opens_as_root(self) -> None:
        if os.geteuid() != 0:
            raise __import__("unittest").SkipTest("a raw socket needs root")
        sender = RawIPv6Sender()
        sender.open()
        self.addCleanup(sender.close)
        self.assertEqual(sender.drops, {})
