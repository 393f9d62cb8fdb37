"""
Sending whole IPv6 packets as this host's own output, through a raw C{IPPROTO_RAW} socket.

Why: the server hands a client's echo test (source: the client's Teredo address) to native
IPv6.  Written into a TUN, the packet is I{received} by the kernel on that interface and only
leaves again if the host forwards IPv6 (C{net.ipv6.conf.all.forwarding=1}); on a host that is
not a router the kernel drops it silently.  Sent through a raw socket with the header
included, the packet is local output: the kernel routes it by destination and sends it
unchanged, whatever the forwarding setting.  This is how a Teredo server is expected to reach
native IPv6 (Miredo's server does the same), so a server needs no router role.

Opening the socket needs root or C{CAP_NET_RAW}, so L{RawIPv6Sender.open} is called from
C{privilegedStartService}.  Send errors (no route, a full buffer) are counted by errno name,
never raised and never logged per packet.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

from teredonode.errors import TeredoError
from teredonode.udp import errnoReason
from teredonode.wire.ipv6 import ipv6_text

__all__ = ["RawIPv6Sender", "RawSocketError"]


class RawSocketError(TeredoError):
    """
    The raw IPv6 socket could not be opened (one line, for the operator).
    """


class RawIPv6Sender:
    """
    Writes complete IPv6 packets (header included) as local output.

    @ivar drops: send failures by errno name (C{"enetunreach"}, ...).
    @ivar sent: packets handed to the kernel.
    """

    name = "raw-ipv6"

    def __init__(self, socketFactory: Any = socket.socket) -> None:
        self._factory = socketFactory
        self._sock: Any = None
        self.sent = 0
        self.drops: Counter[str] = Counter()

    def open(self) -> None:
        """
        Open the socket; a L{RawSocketError} naming what is missing when it cannot be.
        """
        try:
            sock = self._factory(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except OSError as e:
            raise RawSocketError(
                "server: cannot open a raw IPv6 socket for clients' echo tests "
                f"({e.strerror or e}); run as root or with CAP_NET_RAW"
            ) from None
        sock.setblocking(False)
        self._sock = sock

    def write(self, packet: bytes) -> None:
        """
        Send one IPv6 packet as is; the kernel routes it by its destination address.
        """
        sock = self._sock
        if sock is None or len(packet) < 40:
            self.drops["not-open" if sock is None else "short"] += 1
            return
        try:
            sock.sendto(packet, (ipv6_text(packet[24:40]), 0))
        except OSError as e:
            self.drops[errnoReason(e)] += 1
            return
        self.sent += 1

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
