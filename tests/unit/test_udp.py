"""
Tests for L{teredonode.udp}, on real sockets bound to 127.0.0.1 where it matters.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet import defer, reactor, udp
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from teredonode.interfaces import IDatagramSender
from teredonode.testing import FakeInternet
from teredonode.udp import DatagramSender, ServicePort, raiseBufferSizes


def loopbackPort(protocol: DatagramProtocol) -> udp.Port:
    """
    Twisted's real C{udp.Port} for C{protocol} on 127.0.0.1, an ephemeral port.
    """
    port = IReactorUDP(reactor).listenUDP(0, protocol, interface="127.0.0.1", maxPacketSize=8192)
    assert isinstance(port, udp.Port)
    return port


class Receiver(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.waiting: defer.Deferred[None] | None = None

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))
        if self.waiting is not None:
            d, self.waiting = self.waiting, None
            d.callback(None)

    def next(self) -> defer.Deferred[None]:
        self.waiting = defer.Deferred()
        return self.waiting


class RealSocketTests(TestCase):
    """
    The sender on Twisted's real C{udp.Port}, loopback only.
    """

    def setUp(self):
        self.receiver = Receiver()
        self.rport = loopbackPort(self.receiver)
        self.addCleanup(self.rport.stopListening)
        self.sport = loopbackPort(DatagramProtocol())
        self.addCleanup(self.sport.stopListening)
        self.sender = DatagramSender(self.sport)
        self.dst = ("127.0.0.1", self.rport.getHost().port)

    def test_provides(self):
        self.assertTrue(verifyObject(IDatagramSender, self.sender))
        self.assertEqual(self.sender.local, ("127.0.0.1", self.sport.getHost().port))

    @defer.inlineCallbacks
    def test_sendsThroughSocketNotWrite(self):
        """
        Datagrams go out through the socket's C{sendto}: C{Port.write} is never called.
        """

        def forbidden(*args):
            raise AssertionError("Port.write used on the hot path")

        self.patch(self.sport, "write", forbidden)
        sender = DatagramSender(self.sport)
        arrived = self.receiver.next()
        sender.sendto(b"teredo", self.dst)
        yield arrived
        self.assertEqual(self.receiver.received, [(b"teredo", self.sender.local)])
        self.assertEqual(sender.drops, {})

    def test_tooBigIsCounted(self):
        self.sender.sendto(b"x" * 70000, self.dst)
        self.assertEqual(self.sender.drops, {"emsgsize": 1})

    def test_invalidDestinationIsCounted(self):
        self.sender.sendto(b"x", ("127.0.0.1", 70000))
        self.sender.sendto(b"x", (None, 1))  # type: ignore[arg-type]  # a bad address is counted, not raised
        self.assertEqual(self.sender.drops, {"invalid": 2})

    @defer.inlineCallbacks
    def test_afterStopIsCounted(self):
        """
        Sending after the port closed counts EBADF instead of raising.
        """
        yield self.sport.stopListening()
        self.sender.sendto(b"x", self.dst)
        self.assertEqual(self.sender.drops, {"ebadf": 1})

    def test_raiseBufferSizes(self):
        """
        The buffers grow to at least what was asked (Linux reports double), and a smaller
        request never shrinks them.
        """
        before = raiseBufferSizes(self.sport)
        rcv, snd = raiseBufferSizes(self.sport, receive=before[0] + 65536, send=before[1] + 65536)
        self.assertGreater(rcv, before[0])
        self.assertGreater(snd, before[1])
        self.assertEqual(raiseBufferSizes(self.sport.socket, receive=1024, send=1024), (rcv, snd))


class StubSocket:
    """
    A socket whose C{sendto} fails with a chosen error, for errors loopback cannot produce.
    """

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def sendto(self, data, addr):
        raise self.exc


class StubPort:
    def __init__(self, sock):
        self.socket = sock

    def getHost(self):
        from twisted.internet.address import IPv4Address

        return IPv4Address("UDP", "192.0.2.1", 3544)


class ErrorCountingTests(SynchronousTestCase):
    def test_transientErrors(self):
        for exc, reason in [
            (BlockingIOError(errno.EAGAIN, "again"), "eagain"),
            (OSError(errno.ENOBUFS, "no buffers"), "enobufs"),
            (OSError(errno.EMSGSIZE, "too long"), "emsgsize"),
            (OSError(errno.EPERM, "netfilter"), "eperm"),
            (OSError("no errno"), "oserror"),
        ]:
            sender = DatagramSender(StubPort(StubSocket(exc)))
            sender.sendto(b"x", ("192.0.2.2", 1))
            sender.sendto(b"x", ("192.0.2.2", 1))
            self.assertEqual(sender.drops, {reason: 2}, exc)

    def test_otherExceptionsPropagate(self):
        """
        Only send failures are swallowed; a programming error elsewhere is not hidden.
        """
        sender = DatagramSender(StubPort(StubSocket(ZeroDivisionError())))
        self.assertRaises(ZeroDivisionError, sender.sendto, b"x", ("192.0.2.2", 1))


class FallbackTests(SynchronousTestCase):
    """
    Without a C{socket} attribute (the fakes), the sender uses C{transport.write}.
    """

    def test_fakeTransport(self):
        net = FakeInternet(Clock())
        receiver = Receiver()
        net.host("203.0.113.5").listenUDP(3544, receiver)
        port = net.host("192.0.2.1").listenUDP(0, DatagramProtocol())
        sender = DatagramSender(port)
        self.assertEqual(sender.local, ("0.0.0.0", 32768))
        sender.sendto(b"hello", ("203.0.113.5", 3544))
        sender.sendto(b"x", ("teredo.example", 3544))
        sender.sendto(b"x" * 70000, ("203.0.113.5", 3544))
        net.flush()
        self.assertEqual(receiver.received, [(b"hello", ("192.0.2.1", 32768))])
        self.assertEqual(sender.drops, {"invalid": 1, "emsgsize": 1})


class SocketHelperTests(SynchronousTestCase):
    def test_plainSocketKernelGrant(self):
        """
        Linux grants min(request, rmem_max) and reports it doubled.
        """
        with open("/proc/sys/net/core/rmem_max") as f:
            rmemMax = int(f.read())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        rcv, _ = raiseBufferSizes(sock, receive=300_000)
        self.assertEqual(rcv, 2 * min(300_000, rmemMax))


class ServicePortTests(SynchronousTestCase):
    """
    The one protocol class behind every role's UDP socket.
    """

    def test_delivers_to_the_role_and_offers_a_sender(self) -> None:
        net = FakeInternet(Clock())
        got: list[tuple[bytes, tuple[str, int]]] = []
        port = ServicePort(lambda data, addr: got.append((data, addr)))
        self.assertIsNone(port.sender)
        net.host("192.0.2.1").listenUDP(3544, port, interface="192.0.2.1")
        other = ServicePort(lambda data, addr: None)
        other.sendto(b"too early", ("192.0.2.1", 3544))  # not listening: not sent, no error
        net.host("192.0.2.2").listenUDP(4000, other, interface="192.0.2.2")
        assert other.sender is not None
        other.sender.sendto(b"hello", ("192.0.2.1", 3544))
        other.sendto(b"again", ("192.0.2.1", 3544))
        net.flush()
        self.assertEqual(got, [(b"hello", ("192.0.2.2", 4000)), (b"again", ("192.0.2.2", 4000))])


class DontFragmentTests(TestCase):
    """
    G-07 / SEC-25: no role's UDP datagram carries the DF bit.
    """

    def test_optionSetOnRealPort(self) -> None:
        from teredonode.udp import IP_MTU_DISCOVER, IP_PMTUDISC_DONT

        port = loopbackPort(ServicePort(lambda data, addr: None))
        self.addCleanup(port.stopListening)
        self.assertEqual(port.socket.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER), IP_PMTUDISC_DONT)

    def test_fakesLeftAlone(self) -> None:
        from teredonode.udp import clearDontFragment

        self.assertFalse(clearDontFragment(object()))

    @defer.inlineCallbacks
    def test_datagramLeavesWithoutDF(self):
        """
        A datagram sent through a L{ServicePort} over loopback, seen by a raw socket with its
        IPv4 header: the DF flag (0x4000 of the fragment field) is clear.  Linux's default
        for UDP sockets sets it, which this test shows on a plain socket first.
        """
        import os
        import struct

        if os.geteuid() != 0:
            raise SkipTest("a raw socket needs root")
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self.addCleanup(raw.close)
        raw.settimeout(2)
        receiver = loopbackPort(DatagramProtocol())
        self.addCleanup(receiver.stopListening)
        dport = receiver.getHost().port

        def flagsOf(payload: bytes) -> int:
            while True:
                packet = raw.recv(65535)
                ihl = (packet[0] & 0x0F) * 4
                if struct.unpack("!H", packet[ihl + 2:ihl + 4])[0] == dport and packet[ihl + 8:] == payload:
                    ident: int = struct.unpack("!H", packet[6:8])[0]
                    return ident

        plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(plain.close)
        plain.sendto(b"plain", ("127.0.0.1", dport))
        self.assertTrue(flagsOf(b"plain") & 0x4000, "the kernel default no longer sets DF")
        service = ServicePort(lambda data, addr: None)
        port = loopbackPort(service)
        self.addCleanup(port.stopListening)
        service.sendto(b"teredo", ("127.0.0.1", dport))
        self.assertFalse(flagsOf(b"teredo") & 0x4000)
        yield defer.succeed(None)
