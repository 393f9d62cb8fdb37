# -*- test-case-name: tests.unit.test_udpbatch -*-
"""
Receive batching with UDP GRO: fewer system calls per datagram on a busy role socket.

Twisted's C{udp.Port} makes one C{recvfrom} per datagram.  With the Linux C{UDP_GRO} socket
option set, the kernel's receive offload coalesces consecutive datagrams of one flow (same
source, same destination, same size; the last may be shorter) into one buffer, and
C{recvmsg} reports the segment size in a C{UDP_GRO} control message.  L{BatchingPort}
reads such buffers and hands their datagrams one by one, in order and with the same sender,
to the protocol's C{datagramReceived}: a role sees exactly what one C{recvfrom} per datagram
would have shown it.

Where the option cannot be set (an older kernel, another platform) the port reads as
Twisted's does.  The option also changes what runs after GRO sees the flow: a kernel fast
path attached where coalesced packets reach it (generic XDP, TC ingress) would see one
large packet instead of many, so a role turns batching on only while no fast path reads
its traffic (L{BatchingPort.enableBatching} is its caller's decision).
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IReactorFDSet
from twisted.python import log as twistedLog

__all__ = ["BatchingPort", "listenBatching", "segments", "segmentSize", "SOL_UDP", "UDP_GRO"]

#: C{<netinet/in.h>} and C{<linux/udp.h>}: the UDP socket option level and the option that
#: asks for coalesced reads (Python's socket module exports neither everywhere).
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_GRO = getattr(socket, "UDP_GRO", 104)

#: One coalesced read: the kernel caps a GRO packet at 64 KiB (and 64 segments).
BATCH_BUFFER = 65536

#: Room for the one control message the kernel adds (an C{int} segment size).
ANCILLARY_SPACE = socket.CMSG_SPACE(4)

_INT = struct.Struct("=i")
_RETRY = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR))


def segmentSize(ancdata: list[tuple[int, int, bytes]]) -> int:
    """
    The segment size the kernel reported in C{ancdata} (C{recvmsg}'s third item), or 0 when
    it reported none (the buffer holds one datagram).  A control message too short to hold
    an C{int} counts as none.
    """
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= _INT.size:
            return int(_INT.unpack_from(data)[0])
    return 0


def segments(data: bytes, size: int, limit: int, truncated: bool = False) -> list[bytes]:
    """
    The datagrams of one coalesced buffer: C{data} cut every C{size} bytes.

    A C{size} that cannot describe several segments (zero, negative, or at least the
    buffer's length) means one datagram: the buffer itself.  Every datagram is cut to
    C{limit} bytes, as a C{recvfrom(limit)} per datagram would have cut it.  When the kernel
    truncated the buffer (C{MSG_TRUNC}), a short last segment is a part of a datagram, not a
    datagram, and is dropped.  Never loops on any input, and returns no empty datagram
    unless C{data} itself is empty (an empty UDP datagram is a datagram).
    """
    length = len(data)
    if size <= 0 or size >= length:
        return [data[:limit]] if length > limit else [data]
    if truncated:
        length -= length % size
    take = size if size <= limit else limit
    return [data[start : start + take] for start in range(0, length, size)]


class BatchingPort(udp.Port):
    """
    A Twisted UDP port that, once L{enableBatching} succeeded, reads coalesced buffers with
    C{recvmsg} and delivers their datagrams one by one.

    Reads stop, as Twisted's do, after C{maxThroughput} bytes per readiness, so one busy
    flow cannot hold the reactor: the same datagrams per turn with fewer system calls.

    @ivar batching: whether reads are batched (C{UDP_GRO} set on the socket).
    @ivar reads: C{recvmsg} calls made while batching, and C{datagrams} the datagrams they
        delivered: their ratio is the batching obtained.
    """

    batching = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        udp.Port.__init__(self, *args, **kwargs)
        self.reads = 0
        self.datagrams = 0

    def enableBatching(self) -> str | None:
        """
        Ask the kernel for coalesced reads on this (listening) port.

        @return: L{None} once on, else why not (the port then reads as before).
        """
        try:
            self.socket.setsockopt(SOL_UDP, UDP_GRO, 1)
        except OSError as e:
            return e.strerror or str(e)
        self.batching = True
        return None

    def doRead(self) -> None:
        """
        Called when the socket is readable: up to C{maxThroughput} bytes of datagrams.
        """
        if not self.batching:
            udp.Port.doRead(self)
            return
        sock = self.socket
        limit = self.maxPacketSize
        budget = self.maxThroughput
        trim = self.addressFamily == socket.AF_INET6
        receive = self.protocol.datagramReceived
        read = 0
        while read < budget:
            try:
                data, ancdata, flags, addr = sock.recvmsg(BATCH_BUFFER, ANCILLARY_SPACE)
            except OSError as e:
                if e.errno in _RETRY:
                    return
                if e.errno == errno.ECONNREFUSED:
                    if self._connectedAddr:
                        self.protocol.connectionRefused()
                    return
                raise
            self.reads += 1
            read += len(data)
            if trim:
                addr = addr[:2]
            # No UDP_GRO message: one datagram (segments() takes size 0 as the whole buffer).
            size = segmentSize(ancdata) if ancdata else 0
            batch = segments(data, size, limit, bool(flags & socket.MSG_TRUNC))
            self.datagrams += len(batch)
            for datagram in batch:
                try:
                    receive(datagram, addr)
                except BaseException:
                    twistedLog.err()


def listenBatching(reactor: Any, port: int, protocol: Any, interface: str = "") -> Any:
    """
    Listen like C{reactor.listenUDP}, with a L{BatchingPort} where the reactor is a real
    one (it watches file descriptors); the in-memory fakes of L{teredonode.testing} get
    their own C{listenUDP}.
    """
    if not IReactorFDSet.providedBy(reactor):
        return reactor.listenUDP(port, protocol, interface=interface)
    listening = BatchingPort(port, protocol, interface, reactor=reactor)
    listening.startListening()  # type: ignore[no-untyped-call]
    return listening
