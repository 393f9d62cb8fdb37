# -*- test-case-name: tests.unit.test_tun -*-
"""
The production L{ITunDevice}: Twisted's C{TuntapPort} in TUN mode behind our interface.

C{TuntapPort} does the right thing (non-blocking fd, C{IFF_NO_PI}, batched reads under the
reactor) but has an awkward protocol API and lets C{os.write} errors escape into the
caller.  This adapter hides the first and counts the second: a write fails with C{EIO}
while the link is down and C{EINVAL} for a packet that is not IP, and neither may unwind
the UDP receive path that is writing.

The device is created in L{TunDevice.open}, meant for C{privilegedStartService}, and reading
only begins with L{TunDevice.startReading}, so packets routed into the tunnel before the
role is ready wait in the kernel's queue rather than being dropped here.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.pair.raw import IRawPacketProtocol
from twisted.pair.tuntap import TuntapPort
from zope.interface import implementer

from teredonode.interfaces import ITunDevice

__all__ = ["TunDevice"]


@implementer(IRawPacketProtocol)
class _PacketPump(AbstractDatagramProtocol):
    """
    The protocol C{TuntapPort} wants; declaring C{IRawPacketProtocol} is what makes the
    port open the device in TUN (not TAP) mode.
    """

    def __init__(self, deliver: Callable[[bytes], None] | None = None) -> None:
        self.deliver = deliver

    def addProto(self, num: int, proto: Any) -> None:
        raise NotImplementedError("teredonode reads whole IPv6 packets; no demultiplexing")

    def datagramReceived(self, datagram: bytes, partial: int = 0) -> None:  # type: ignore[override]
        if self.deliver is not None:
            self.deliver(datagram)


@implementer(ITunDevice)
class TunDevice:
    """
    A TUN device carrying raw IPv6 packets.

    @ivar name: the requested name until L{open}, then the name the kernel chose (a
        C{"%d"} in the requested name is replaced by a number).
    @ivar port: the underlying C{TuntapPort} once open, else L{None}.
    @ivar drops: writes that did not reach the kernel, by reason: lower-case errno names
        (C{"eio"}, C{"einval"}, C{"eagain"}, C{"enobufs"}, ...) or C{"closed"}.
    """

    def __init__(
        self,
        name: str = "teredo",
        reactor: Any = None,
        system: Any = None,
        maxPacketSize: int = 8192,
    ) -> None:
        """
        @param name: the interface name to create or attach to (at most 15 bytes).
        @param reactor: the reactor to read under (the global one by default).
        @param system: an I/O system for C{TuntapPort}, such as
            C{twisted.pair.testing.MemoryIOSystem} in tests; the real OS by default.
        @param maxPacketSize: read buffer size; a larger packet would be truncated.
        """
        self.name = name
        self.port: TuntapPort | None = None
        self.drops: dict[str, int] = {}
        self._reactor = reactor
        self._system = system
        self._maxPacketSize = maxPacketSize
        self._pump = _PacketPump()

    def open(self) -> None:
        """
        Create (or attach to) the device.  Needs C{CAP_NET_ADMIN} unless the device was
        pre-created for this user.

        @raise OSError: with a message naming the device when the kernel refuses.
        """
        if self.port is not None:
            return
        port = TuntapPort(
            self.name.encode("ascii"),
            self._pump,
            maxPacketSize=self._maxPacketSize,
            reactor=self._reactor,
            system=self._system,
        )
        try:
            port.startListening()
        except CannotListenError as e:
            cause = e.socketError
            code = getattr(cause, "errno", None) or errno.EIO
            reason = getattr(cause, "strerror", None) or str(cause)
            raise OSError(code, f"cannot open TUN device {self.name}: {reason}") from None
        # Packets wait in the kernel until the role asks for them.
        port.stopReading()
        self.port = port
        self.name = port.interface.split(b"\0", 1)[0].decode("ascii")

    def startReading(self, deliver: Callable[[bytes], None]) -> None:
        """
        Hand every packet read from the device to C{deliver}, from now on.
        """
        if self.port is None:
            raise RuntimeError(f"TUN device {self.name} is not open")
        self._pump.deliver = deliver
        self.port.startReading()

    def write(self, packet: bytes) -> None:
        """
        Give one IPv6 packet to the kernel; failures are counted in L{drops}.
        """
        port = self.port
        if port is None:
            self._count("closed")
            return
        try:
            port.write(packet)
        except OSError as exc:
            self._count(errno.errorcode.get(exc.errno or 0, "oserror").lower())

    def close(self) -> None:
        """
        Stop reading and close the file descriptor now (a non-persistent device vanishes).

        Closing synchronously, rather than through C{stopListening}'s next-turn Deferred,
        means the device is gone when C{stopService} returns.  Safe after the reactor has
        already disconnected the port at shutdown.
        """
        port, self.port = self.port, None
        if port is not None and port.connected:
            port.stopReading()
            port.connectionLost(None)
        self._pump.deliver = None

    def _count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
