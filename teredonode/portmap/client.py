"""
The client's port mapping (L{teredonode.interfaces.IPortMapping}): finds the router and the
local address toward it, asks L{teredonode.portmap.mappers.AutoMapper} (PCP, NAT-PMP, UPnP
IGD), and remembers what to delete at shutdown (X-UPNP-13).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from teredonode.interfaces import IPortMapping
from teredonode.portmap.base import Mapping, PortMapError, default_gateway

# Imported now, not when the mapping is asked: by then the node runs unprivileged and may not
# be allowed to read the interpreter's library any more (a root-only pyenv, for one).
from teredonode.portmap.igd import SSDP_GROUP
from teredonode.portmap.mappers import makeMapper
from teredonode.probe import local_address

__all__ = ["GatewayPortMapping", "MAPPING_LIFETIME"]

#: Seconds asked of PCP and NAT-PMP; the client renews at half of what it gets.
MAPPING_LIFETIME = 3600


@implementer(IPortMapping)
class GatewayPortMapping:
    """
    @param reactor: for the mappers' sockets and time-outs.
    @param bind: the client's bind address; C{0.0.0.0} means "the address toward the router".
    @param routes: the kernel's IPv4 routing table (for the default gateway).
    """

    def __init__(self, reactor: Any, bind: str = "0.0.0.0", routes: str = "/proc/net/route") -> None:
        self._reactor = reactor
        self._bind = bind
        self._routes = routes
        self._mapper: Any = None
        self._local: tuple[str, int] | None = None

    def _gateway(self) -> str | None:
        try:
            # Bytes, decoded here: a text-mode open would look its codec up, an import an
            # unprivileged node may no longer be able to make.
            with open(self._routes, "rb") as table:
                return default_gateway(table.read(65536).decode("ascii", "replace"))
        except OSError:
            return None

    def map(self, localPort: int) -> "Deferred[Mapping]":
        gateway = self._gateway()
        local = self._bind if self._bind != "0.0.0.0" else local_address(gateway or SSDP_GROUP)
        if local is None:
            return fail(PortMapError("no local IPv4 address toward a router"))
        self._mapper = makeMapper(self._reactor, "auto", gateway, bindAddress=local)
        self._local = (local, localPort)
        d: Deferred[Mapping] = self._mapper.addMapping(local, localPort, MAPPING_LIFETIME)
        return d

    def unmap(self) -> "Deferred[None]":
        mapper, local = self._mapper, self._local
        self._mapper = self._local = None
        if mapper is None or local is None:
            return succeed(None)
        d: Deferred[None] = mapper.deleteMapping(*local)
        d.addErrback(lambda _: None)
        return d
