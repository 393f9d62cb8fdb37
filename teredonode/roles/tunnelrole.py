"""
What the roles built on the tunnel core share: the client (L{teredonode.roles.client}), the
relay (L{teredonode.roles.relay}) and, through it, the host-specific relay.

Each gets the same collaborators through its constructor (the reactor, the TUN device, the
network configurator, the bubble sources' random bytes), holds them the same way, owns one
service port, and starts the same way: bind if C{privilegedStartService} did not run, then
start the tunnel core.  Declared here once so that the roles differ only where they really
do; each role's constructor still lists its parameters, typed, as its public API.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Callable

from twisted.application.service import Service

from teredonode.counters import CounterSet
from teredonode.interfaces import Endpoint, INetworkConfigurator, ITunDevice
from teredonode.peers import PeerList
from teredonode.udp import ServicePort
from teredonode.wire.errors import ParseError
from teredonode.wire.teredo import TeredoPacket, classify

if TYPE_CHECKING:
    from teredonode.roles.tunnel import TeredoTunnel


class TunnelRole(Service):
    """
    A role that relays between a TUN device and Teredo's UDP port through a L{TeredoTunnel}.

    Subclasses build C{self.tunnel} in their constructor and bind C{self._port} in
    C{privilegedStartService}; they handle datagrams in L{datagramReceived}.
    """

    tunnel: TeredoTunnel
    counters: CounterSet
    drops: CounterSet

    def __init__(
        self,
        settings: Any,
        reactor: Any,
        tun: ITunDevice,
        netconfig: INetworkConfigurator,
        randbytes: Callable[[int], bytes] | None,
    ) -> None:
        """
        @param randbytes: the bubble source's interface identifier (C{secrets.token_bytes}
            when L{None}: production).
        """
        self.settings = settings
        self._reactor = reactor
        self._tun = tun
        self._netconfig = netconfig
        self._randbytes = randbytes if randbytes is not None else secrets.token_bytes
        self._socket = ServicePort(self.datagramReceived)
        #: The bound UDP port, once C{privilegedStartService} ran.
        self._port: Any = None

    def _peerList(self) -> PeerList:
        """
        A peer list on the reactor's clock, bounded as the settings say (C{max-peers},
        C{peer-queue}, C{peer-queue-bytes}), for the role's L{TeredoTunnel}.
        """
        settings = self.settings
        return PeerList(
            self._reactor.seconds,
            max_peers=settings.max_peers,
            queue_packets=settings.peer_queue,
            queue_bytes=settings.peer_queue_bytes,
        )

    def _classified(self, data: bytes) -> TeredoPacket | None:
        """
        A datagram from the service port, counted (C{received}) and parsed; L{None}, counted
        as C{malformed}, when it is not a Teredo packet.
        """
        self.counters["received"] += 1
        try:
            return classify(data)
        except ParseError:
            self.drops["malformed"] += 1
            return None

    def privilegedStartService(self) -> None:
        """
        Open the TUN device and bind the service port (each role its own way).
        """
        raise NotImplementedError

    def datagramReceived(self, data: bytes, addr: Endpoint) -> None:
        """
        A datagram on the service port (each role its own way).
        """
        raise NotImplementedError

    def startService(self) -> None:
        """
        Bind now if C{privilegedStartService} was not called (tests, unprivileged runs),
        then start the tunnel core's timers.
        """
        Service.startService(self)
        if self._port is None:
            self.privilegedStartService()
        self.tunnel.start()
