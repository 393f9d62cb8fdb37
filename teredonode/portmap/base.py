"""
What every port-mapping protocol shares: the result, the one error, the gateway.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from teredonode.errors import TeredoError

__all__ = ["Mapping", "PortMapError", "PROTOCOLS", "default_gateway"]

#: The protocols, in the order the combinator tries them (argued in L{mappers.AutoMapper}).
PROTOCOLS = ("pcp", "natpmp", "upnp")


@dataclass(frozen=True)
class Mapping:
    """
    A UDP port mapping the NAT granted.

    @ivar externalAddress: the NAT's external IPv4 address (dotted quad): RFC 6081's
        UPnP-Mapped Address (X-UPNP-07).
    @ivar externalPort: the external port; with UPnP always the local port (X-UPNP-04, -06),
        with PCP and NAT-PMP the port the NAT chose (the local port is only suggested).
    @ivar lifetime: seconds the mapping lasts; 0 means until deleted (UPnP's lease 0).
    @ivar protocol: which protocol obtained it: C{"pcp"}, C{"natpmp"} or C{"upnp"}.
    """

    externalAddress: str
    externalPort: int
    lifetime: int
    protocol: str


class PortMapError(TeredoError):
    """
    A mapping could not be obtained or deleted.  The message is one line and starts with the
    protocol's name (C{"natpmp: gateway 192.168.1.1 refused: 2 not authorized"}).
    """


def default_gateway(route_table: str) -> str | None:
    """
    The IPv4 default gateway from the text of C{/proc/net/route}, or C{None}.

    NAT-PMP and PCP requests go to the default gateway (RFC 6886 section 3, RFC 6887
    section 8.1); the kernel's table is the one place that says which it is.  Fields are
    hexadecimal in host (little-endian) byte order; the first default route that is up
    (flag RTF_UP) and has a gateway (RTF_GATEWAY) wins, in the kernel's order.
    """
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination, gateway, flags, mask = (int(fields[i], 16) for i in (1, 2, 3, 7))
        except ValueError:
            continue
        if destination == 0 and mask == 0 and flags & 0x3 == 0x3 and 0 < gateway <= 0xFFFFFFFF:
            return str(ipaddress.IPv4Address(gateway.to_bytes(4, "little")))
    return None
