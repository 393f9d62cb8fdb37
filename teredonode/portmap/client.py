"""
The client's port mapping (L{teredonode.interfaces.IPortMapping}): finds the router and the
local address toward it, asks L{teredonode.portmap.mappers.AutoMapper} (PCP, NAT-PMP, UPnP
IGD), and remembers what to delete at shutdown (X-UPNP-13) — in this process, and in the
state file of L{teredonode.portmap.persist} for the next one (X-UPNP-02, -03).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from zope.interface import implementer

from teredonode.interfaces import IPortMapping
from teredonode.logs import Logger
from teredonode.portmap.base import Mapping, PortMapError, default_gateway

# Imported now, not when the mapping is asked: by then the node runs unprivileged and may not
# be allowed to read the interpreter's library any more (a root-only pyenv, for one).
from teredonode.portmap.igd import SSDP_GROUP
from teredonode.portmap.mappers import makeMapper
from teredonode.portmap.persist import PersistedMapping, PortMapState
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
    @param state: the Persisted UPnP-Mapped Port's file (RFC 6081 section 5.3.1); C{None}:
        not persisted.
    @param mappers: C{(reactor, protocol, gateway, bindAddress=...) -> IPortMapper};
        L{makeMapper} in production, the fakes' mappers in tests.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        bind: str = "0.0.0.0",
        routes: str = "/proc/net/route",
        state: str | None = None,
        mappers: Callable[..., Any] = makeMapper,
    ) -> None:
        self._reactor = reactor
        self._bind = bind
        self._routes = routes
        self._makeMapper = mappers
        self._mapper: Any = None
        self._local: tuple[str, int] | None = None
        self.state = PortMapState(state)
        #: The persisted file is read once, at the first mapping of this process.
        self._stateRead = False
        #: What this process wrote there last (None: nothing, or it was cleared since).
        self._persisted: PersistedMapping | None = None

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
        try:
            mapper = self._makeMapper(self._reactor, "auto", gateway, bindAddress=local)
        except PortMapError as e:
            return fail(e)
        self._mapper = mapper
        self._local = (local, localPort)
        d: Deferred[Mapping] = self._map(mapper, local, localPort)
        return d

    @inlineCallbacks
    def _map(self, mapper: Any, local: str, localPort: int) -> Generator[Deferred[Any], Any, Mapping]:
        """
        X-UPNP-03: a mapping persisted by an earlier process is deleted first, then the
        mapping is made (X-UPNP-04) and persisted (X-UPNP-06: "and Persisted UPnP-Mapped
        Port").
        """
        if not self._stateRead:
            self._stateRead = True
            stale = self.state.load()
            if stale is not None:
                yield self._deleteStale(mapper, local, stale)
        for candidate in getattr(mapper, "mappers", (mapper,)):
            if getattr(candidate, "name", None) == "upnp" and hasattr(candidate, "added"):
                # A lease-0 mapping lives until deleted: on record from AddPortMapping on.
                candidate.added = self._upnpAdded
        mapping: Mapping = yield mapper.addMapping(local, localPort, MAPPING_LIFETIME)
        self._persist(PersistedMapping(mapping.protocol, mapping.externalPort, localPort, _nonce(mapper, local, localPort)))
        return mapping

    def _persist(self, record: PersistedMapping) -> None:
        """Write C{record} unless it is what this process wrote last."""
        if record != self._persisted:
            self._persisted = record
            self.state.save(record)

    def _upnpAdded(self, port: int) -> None:
        """
        X-UPNP-06: AddPortMapping succeeded: the Persisted UPnP-Mapped Port is the local
        port from now on, even if the process dies before GetExternalIPAddress answers.  If
        that then fails, the mapper deletes the mapping (X-UPNP-07b) and the record stays,
        to be deleted once more at the next start (harmless: "no such entry" is success).
        """
        self._persist(PersistedMapping("upnp", port, port))

    @inlineCallbacks
    def _deleteStale(self, mapper: Any, local: str, stale: PersistedMapping) -> Generator[Deferred[Any], Any, None]:
        """
        RFC 6081 section 5.3.5.1 for a mapping an earlier process made: through the mapper
        of the protocol that made it (with its PCP nonce), from today's local address.  The
        file goes once the router confirmed; a failure leaves it for the next start and
        mapping goes on (X-UPNP-05 keeps qualification independent of the router).
        """
        target = mapper
        for candidate in getattr(mapper, "mappers", ()):
            if candidate.name == stale.protocol:
                target = candidate
        if stale.nonce and callable(getattr(target, "setNonce", None)):
            target.setNonce(local, stale.localPort, stale.nonce)
        try:
            yield target.deleteMapping(local, stale.localPort)
        except PortMapError as e:
            self.log.info(
                "Port mapping left by an earlier run ({protocol} port {port}) not deleted: {error}",
                protocol=stale.protocol, port=stale.port, error=str(e),
            )
            return
        self.state.clear()
        self.log.info(
            "Deleted the port mapping left by an earlier run ({protocol} port {port})",
            protocol=stale.protocol, port=stale.port,
        )

    def unmap(self) -> "Deferred[None]":
        """
        X-UPNP-13; the persisted port is zeroed once the router confirmed the deletion, and
        kept otherwise, so that the next start tries again (X-UPNP-03).
        """
        mapper, local = self._mapper, self._local
        self._mapper = self._local = None
        if mapper is None or local is None:
            return succeed(None)
        d: Deferred[None] = mapper.deleteMapping(*local)

        def deleted(_: object) -> None:
            self._persisted = None
            self.state.clear()

        def failed(failure: Any) -> None:
            self.log.info("Port mapping not deleted ({error}); kept for the next start", error=failure.getErrorMessage())

        d.addCallbacks(deleted, failed)
        return d


def _nonce(mapper: Any, local: str, localPort: int) -> bytes:
    """
    The PCP nonce of the mapping C{mapper} just made, or C{b""}: a later process must present
    it to delete the mapping (RFC 6887 section 15).
    """
    active = getattr(mapper, "active", None) or mapper
    nonceFor = getattr(active, "nonceFor", None)
    nonce = nonceFor(local, localPort) if callable(nonceFor) else None
    return nonce if isinstance(nonce, bytes) else b""
