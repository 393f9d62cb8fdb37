"""
Tests for L{teredonode.udpbatch}: the splitting on any input, the read loop on scripted and
hostile C{recvmsg} results, and real coalesced reads on 127.0.0.1 (a sender's C{UDP_SEGMENT}
send reaches a C{UDP_GRO} socket as one buffer, no namespace needed).
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from teredonode.testing import FakeInternet
from teredonode.udp import ServicePort
from teredonode.udpbatch import (
    SOL_UDP,
    UDP_GRO,
    BatchingPort,
    listenBatching,
    segments,
    segmentSize,
)

#: C{<linux/udp.h>}: send one buffer as datagrams of this size (the sender's side of GRO).
UDP_SEGMENT = 103


def gro(size: int) -> list[tuple[int, int, bytes]]:
    return [(SOL_UDP, UDP_GRO, struct.pack("=i", size))]


class SegmentsTests(SynchronousTestCase):
    @given(st.binary(max_size=3000), st.integers(min_value=-5, max_value=4000))
    @settings(max_examples=300)
    def test_concatenateBack(self, data: bytes, size: int) -> None:
        """
        Any buffer and any segment size: the datagrams put together are the buffer, each
        at most C{size} long when C{size} splits it, and only the last may be shorter.
        """
        out = segments(data, size, 65536)
        self.assertEqual(b"".join(out), data)
        if 0 < size < len(data):
            self.assertTrue(all(len(d) == size for d in out[:-1]))
            self.assertTrue(0 < len(out[-1]) <= size)
        else:
            self.assertEqual(out, [data])

    @given(st.binary(max_size=3000), st.integers(min_value=1, max_value=4000))
    def test_truncatedDropsPartialTail(self, data: bytes, size: int) -> None:
        """
        A truncated buffer yields only whole segments: a prefix of the buffer.
        """
        out = segments(data, size, 65536, truncated=True)
        joined = b"".join(out)
        self.assertTrue(data.startswith(joined))
        if size < len(data):
            self.assertTrue(all(len(d) == size for d in out))
            self.assertEqual(len(data) - len(joined), len(data) % size)

    @given(st.binary(max_size=3000), st.integers(min_value=-5, max_value=4000),
           st.integers(min_value=1, max_value=500))
    def test_limit(self, data: bytes, size: int, limit: int) -> None:
        """
        Every datagram is cut to C{limit}, as C{recvfrom(limit)} per datagram cuts it.
        """
        whole = segments(data, size, 65536)
        cut = segments(data, size, limit)
        self.assertEqual(cut, [d[:limit] for d in whole])

    def test_emptyDatagram(self) -> None:
        """
        An empty datagram stays one empty datagram.
        """
        self.assertEqual(segments(b"", 0, 8192), [b""])
        self.assertEqual(segments(b"", 100, 8192), [b""])

    def test_segmentSize(self) -> None:
        """
        Only a C{UDP_GRO} message at C{SOL_UDP} with a whole C{int} counts; anything else
        means one datagram (0).
        """
        self.assertEqual(segmentSize([]), 0)
        self.assertEqual(segmentSize(gro(1400)), 1400)
        self.assertEqual(segmentSize(gro(-3)), -3)
        self.assertEqual(segmentSize([(SOL_UDP, UDP_GRO, b"\x01\x02")]), 0)
        self.assertEqual(segmentSize([(socket.SOL_SOCKET, UDP_GRO, struct.pack("=i", 9))]), 0)
        self.assertEqual(segmentSize([(SOL_UDP, 1, struct.pack("=i", 9)), *gro(7)]), 7)


class ScriptedSocket:
    """
    A socket whose C{recvmsg} returns scripted results, then raises C{EAGAIN}.
    """

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.calls = 0

    def recvmsg(self, bufsize: int, ancbufsize: int) -> Any:
        self.calls += 1
        if not self.results:
            raise OSError(errno.EAGAIN, "again")
        result = self.results.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result

    def setsockopt(self, *args: Any) -> None:
        pass


class ScriptedPort(BatchingPort):
    """
    A L{BatchingPort} reading from a L{ScriptedSocket}, never bound.
    """

    def __init__(self, results: list[Any], receive: Any) -> None:
        BatchingPort.__init__(self, 0, ServicePort(receive), "127.0.0.1", reactor=reactor)
        self.socket = ScriptedSocket(results)  # type: ignore[assignment]


class DoReadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def port(self, results: list[Any]) -> ScriptedPort:
        port = ScriptedPort(results, lambda data, addr: self.received.append((data, addr)))
        self.assertIsNone(port.enableBatching())
        return port

    def test_bogusSizes(self) -> None:
        """
        A segment size of zero, negative, one equal to or larger than the buffer delivers
        the buffer as one datagram; a normal one splits it; nothing loops.
        """
        src = ("192.0.2.1", 3544)
        data = bytes(range(250))
        script = [(data, gro(s), 0, src) for s in (0, -1, 250, 10**9, -(2**31))]
        script.append((data, gro(100), 0, src))
        script.append((data, [(SOL_UDP, UDP_GRO, b"")], 0, src))
        port = self.port(script)
        port.doRead()
        self.assertEqual(
            [d for d, _ in self.received], [data] * 5 + [data[:100], data[100:200], data[200:]] + [data]
        )
        self.assertEqual({a for _, a in self.received}, {src})
        self.assertEqual((port.reads, port.datagrams), (7, 9))

    def test_truncatedTail(self) -> None:
        """
        With C{MSG_TRUNC}, the partial last segment is dropped.
        """
        src = ("192.0.2.1", 3544)
        self.port([(b"a" * 100 + b"b" * 100 + b"c" * 30, gro(100), socket.MSG_TRUNC, src)]).doRead()
        self.assertEqual(self.received, [(b"a" * 100, src), (b"b" * 100, src)])

    def test_oneDatagramCutToMaxPacketSize(self) -> None:
        """
        Without a segment size, a datagram longer than C{maxPacketSize} is cut to it, as
        Twisted's C{recvfrom(maxPacketSize)} cuts it.
        """
        src = ("192.0.2.1", 3544)
        self.port([(b"x" * 9000, [], 0, src)]).doRead()
        self.assertEqual(self.received, [(b"x" * 8192, src)])

    def test_budget(self) -> None:
        """
        One readiness reads at most C{maxThroughput} bytes (then the reactor runs others).
        """
        src = ("192.0.2.1", 3544)
        buffer = b"z" * 60000
        port = self.port([(buffer, gro(1000), 0, src)] * 10)
        port.doRead()
        self.assertEqual(port.reads, 5)  # 5 * 60000 >= 256 KiB
        self.assertEqual(len(self.received), 300)

    def test_receiverErrorKeepsBatch(self) -> None:
        """
        A receiver raising on one datagram does not lose the others of its buffer.
        """
        got: list[bytes] = []

        def receive(data: bytes, addr: Any) -> None:
            got.append(data)
            if data == b"2":
                raise ValueError("boom")

        port = ScriptedPort([(b"123", gro(1), 0, ("192.0.2.1", 1))], receive)
        port.enableBatching()
        port.doRead()
        self.assertEqual(got, [b"1", b"2", b"3"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_errors(self) -> None:
        """
        C{EINTR} and C{ECONNREFUSED} end the turn quietly; another error is raised, as
        Twisted's port raises it (the reactor then closes the port).
        """
        for code in (errno.EINTR, errno.ECONNREFUSED):
            self.port([OSError(code, "x")]).doRead()
        self.assertRaises(OSError, self.port([OSError(errno.EBADF, "x")]).doRead)
        self.assertEqual(self.received, [])

    def test_notBatching(self) -> None:
        """
        Before L{BatchingPort.enableBatching}, reads are Twisted's own C{recvfrom}.
        """
        port = ScriptedPort([], lambda data, addr: None)
        self.assertFalse(port.batching)
        self.assertRaises(AttributeError, port.doRead)  # the scripted socket has no recvfrom

    def test_enableFails(self) -> None:
        """
        A socket refusing the option leaves the port reading as before, with the reason.
        """
        port = ScriptedPort([], lambda data, addr: None)

        def refuse(*args: Any) -> None:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

        port.socket.setsockopt = refuse  # type: ignore[method-assign]
        self.assertEqual(port.enableBatching(), "Protocol not available")
        self.assertFalse(port.batching)

    def test_fakeReactor(self) -> None:
        """
        On the in-memory network, L{listenBatching} is the host's own C{listenUDP}.
        """
        host = FakeInternet(Clock()).host("192.0.2.7")
        listening = listenBatching(host, 3544, ServicePort(lambda d, a: None), interface="192.0.2.7")
        self.assertNotIsInstance(listening, BatchingPort)
        self.assertEqual(listening.getHost().port, 3544)


class LoopbackTests(TestCase):
    """
    Real coalesced reads: 127.0.0.1 hands a C{UDP_SEGMENT} send to a C{UDP_GRO} socket whole.
    """

    def setUp(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.listening = listenBatching(
            reactor, 0, ServicePort(lambda d, a: self.received.append((d, a))), interface="127.0.0.1"
        )
        self.addCleanup(self.listening.stopListening)
        reason = self.listening.enableBatching()
        if reason is not None:
            raise SkipTest(f"UDP_GRO: {reason}")
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sender.close)
        self.sender.bind(("127.0.0.1", 0))
        self.target = ("127.0.0.1", self.listening.getHost().port)

    async def waitFor(self, count: int) -> None:
        for _ in range(200):
            if len(self.received) >= count:
                return
            await deferLater(reactor, 0.01, lambda: None)

    @defer.inlineCallbacks
    def test_segmentedSend(self) -> Any:
        """
        Three segmented sends (64 + 64 + 7 datagrams, the last of each shorter) and plain
        ones of other sizes arrive whole, in order, from the sender, in fewer reads than
        datagrams.
        """
        try:
            self.sender.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        except OSError as e:
            raise SkipTest(f"UDP_SEGMENT: {e.strerror}")
        expected: list[bytes] = []
        n = 0
        for count in (64, 64, 7):
            batch = []
            for i in range(count):
                size = 100 if i < count - 1 else 37
                batch.append(n.to_bytes(4, "big") * (size // 4) + b"\xee" * (size % 4))
                n += 1
            self.sender.sendmsg(
                [b"".join(batch)], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", 100))], 0, self.target
            )
            expected.extend(batch)
        for size in (1, 0, 1400, 100):
            self.sender.sendto(b"p" * size, self.target)
            expected.append(b"p" * size)
        yield defer.Deferred.fromCoroutine(self.waitFor(len(expected)))
        source = self.sender.getsockname()
        self.assertEqual([d for d, _ in self.received], expected)
        self.assertEqual({a for _, a in self.received}, {source})
        self.assertEqual(self.listening.datagrams, len(expected))
        self.assertLessEqual(self.listening.reads, 3 + 4)
