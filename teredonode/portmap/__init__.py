"""
Port mappings from the NAT in front of this host, for RFC 6081's UPnP-enabled Symmetric NAT
extension (X-UPNP-*) and Hairpinning extension (X-HP-03): one mapping of the client's local
UDP port on the NAT's external address, asked by PCP (RFC 6887), NAT-PMP (RFC 6886) or UPnP
IGD (WANIPConnection / WANPPPConnection).

Layout, as for the rest of the wire code: pure codecs (L{natpmp}, L{pcp}, L{igd}: bytes and
XML <-> values, nothing else), then thin Twisted-facing mappers (L{mappers}) that send, wait
on the injected reactor's clock, retry a bounded number of times and fail with one line.
"""

from teredonode.portmap.base import Mapping, PortMapError

__all__ = ["Mapping", "PortMapError"]
