# -*- test-case-name: tests.unit.test_udp -*-
"""
The production L{IDatagramSender}: UDP sends that skip Twisted's per-call checks.

C{udp.Port.write} re-validates the destination string on every call (about 3.7 us, more
than the rest of the per-packet work) and re-raises C{EAGAIN}/C{ENOBUFS} into the caller.
A relay forwarding tens of thousands of datagrams a second wants neither: the addresses it
sends to come from parsed packets, and a full socket buffer should cost one datagram, not
unwind the data path.  So L{DatagramSender} calls the socket's C{sendto} directly and turns
every error into a counter.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Callable

from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from teredonode.interfaces import Endpoint, IDatagramSender

__all__ = ["DatagramSender", "ServicePort", "raiseBufferSizes", "clearDontFragment"]

#: C{<linux/in.h>}: the socket option choosing path MTU discovery, and its value "never set
#: DF" (Python's socket module exports neither).
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = 0


def errnoReason(exc: OSError) -> str:
    """
    A stable counter name for C{exc}: the lower-case errno name (C{"eagain"}, C{"enobufs"},
    C{"emsgsize"}, ...), or C{"oserror"} when there is no errno.
    """
    if exc.errno is None:
        return "oserror"
    return errno.errorcode.get(exc.errno, "oserror").lower()


@implementer(IDatagramSender)
class DatagramSender:
    """
    Sends from one listening UDP port, counting failures instead of raising them.

    @ivar local: the port's bound endpoint, captured at construction (a stopped port can no
        longer tell).
    @ivar drops: datagrams not sent, by reason: lower-case errno names for socket errors
        (C{"eagain"}, C{"enobufs"}, C{"emsgsize"}, C{"ebadf"} once the port is closed, ...)
        and C{"invalid"} for an unusable destination (bad port number, non-IP host).  A
        reason appears only once it has happened.
    """

    def __init__(self, port: Any) -> None:
        """
        @param port: a listening Twisted C{udp.Port}, or any C{IUDPTransport} (the fakes of
            L{teredonode.testing}); without a C{socket} attribute sends go through
            C{port.write}.
        """
        host = port.getHost()
        self.local: Endpoint = (host.host, host.port)
        self.drops: dict[str, int] = {}
        sock = getattr(port, "socket", None)
        self._send: Callable[[bytes, Endpoint], Any] = (
            sock.sendto if sock is not None else port.write
        )

    def sendto(self, data: bytes, addr: Endpoint) -> None:
        """
        Send C{data} to C{addr}; failures are counted in L{drops}, never raised.
        """
        try:
            self._send(data, addr)
        except OSError as exc:
            self._count(errnoReason(exc))
        except MessageLengthError:
            self._count("emsgsize")
        except (OverflowError, TypeError, ValueError):
            # A destination no socket can take; counted rather than raised so that one
            # malformed packet cannot take the data path down.
            self._count("invalid")

    def _count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1


def raiseBufferSizes(
    portOrSocket: Any, receive: int | None = None, send: int | None = None
) -> tuple[int, int]:
    """
    Raise the socket's C{SO_RCVBUF}/C{SO_SNDBUF} to at least the given sizes, never lower.

    A busy relay or server socket drops bursts when its receive buffer fills while the
    reactor is busy elsewhere; the kernel's default (about 208 KiB) holds only some 150
    full-size Teredo packets.  Linux caps the request at C{net.core.rmem_max}/C{wmem_max}
    and reports back twice what it grants, so the returned values show what was obtained.

    @param portOrSocket: a Twisted C{udp.Port} (its C{socket} is used) or a socket.
    @return: the effective C{(receive, send)} sizes read back from the kernel.
    """
    sock: socket.socket = getattr(portOrSocket, "socket", portOrSocket)
    for option, wanted in ((socket.SO_RCVBUF, receive), (socket.SO_SNDBUF, send)):
        if wanted is not None and sock.getsockopt(socket.SOL_SOCKET, option) < wanted:
            sock.setsockopt(socket.SOL_SOCKET, option, wanted)
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
    )


def clearDontFragment(portOrSocket: Any) -> bool:
    """
    G-07 / SEC-25 (RFC 4380 section 5.1.2: the DF bit SHOULD NOT be set on the outer IPv4
    header).  Linux sets DF on UDP by default (C{IP_PMTUDISC_WANT}); a Teredo datagram that
    meets a smaller IPv4 MTU on the way must be fragmented rather than dropped, because the
    IPv6 sender inside cannot learn that MTU from an ICMPv4 error.

    @param portOrSocket: a Twisted C{udp.Port} (its C{socket} is used) or a socket; anything
        without a socket (the in-memory fakes) is left alone.
    @return: whether the option was set.
    """
    sock = getattr(portOrSocket, "socket", portOrSocket)
    if not isinstance(sock, socket.socket) or sock.family != socket.AF_INET:
        return False
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    return True


class ServicePort(DatagramProtocol):
    """
    A role's UDP socket: every datagram goes to C{receive(data, addr)}; once listening it
    offers L{sender}, the fast send path.  One class for all the roles' sockets, so a role
    holds only its logic.

    C{receive} is stored over the C{datagramReceived} method itself, so the reactor calls
    the role directly: no extra Python frame per datagram.
    """

    def __init__(self, receive: Callable[[bytes, Endpoint], None]) -> None:
        self.datagramReceived = receive  # type: ignore[method-assign,assignment]
        self.sender: DatagramSender | None = None

    def startProtocol(self) -> None:
        clearDontFragment(self.transport)
        self.sender = DatagramSender(self.transport)

    def sendto(self, data: bytes, addr: Endpoint) -> None:
        """
        Send through L{sender}.  A role only sends in answer to traffic or after binding, so
        the port is always listening by then; before that the datagram is simply not sent.
        """
        sender = self.sender
        if sender is not None:
            sender.sendto(data, addr)
