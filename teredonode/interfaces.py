"""
The seams between teredonode's components.

Roles never open sockets, TUN devices or run C{ip} themselves: they are handed providers of
these interfaces.  Production wiring (L{teredonode.service}) hands them real ones; tests hand
them the fakes of L{teredonode.testing}.  Declaring the seams as zope interfaces lets
C{verifyObject} prove that a fake and the real thing offer the same methods, which is the
only way a fake stays honest.

Conventions used across every interface:
  - an IPv4 endpoint is C{(host, port)} with C{host} a dotted-quad C{str}, exactly what
    Twisted's C{DatagramProtocol.datagramReceived} passes and what C{socket.sendto} takes;
  - an IPv6 address on the data path is its raw 16-byte C{bytes} (hashable, no parsing cost);
    text forms appear only at the edges (config, logs, status).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from zope.interface import Attribute, Interface, implementer

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from teredonode.portmap.base import Mapping

Endpoint = tuple[str, int]


class IDatagramSender(Interface):
    """
    Sends UDP datagrams from one bound local address.

    The production implementation calls the socket's C{sendto} directly (Twisted's
    C{Port.write} re-validates the address string on every call, which costs more than the
    rest of the per-packet work), drops and counts on C{ENOBUFS}/C{EAGAIN}, and never raises
    for a transient error: one unlucky datagram must not unwind the data path.
    """

    local = Attribute("The bound local endpoint, C{(host, port)}.")

    def sendto(data: bytes, addr: Endpoint) -> None:
        """
        Send C{data} to C{addr}; transient errors are counted, never raised.
        """


class ITunDevice(Interface):
    """
    A TUN interface carrying raw IPv6 packets (no packet-information header).
    """

    name = Attribute("The kernel's name for the interface (C{str}).")

    def open() -> None:
        """
        Create/attach the device.  Called from C{privilegedStartService} so twistd can
        drop root afterwards.  Raises L{OSError} with a readable message on failure.
        """

    def startReading(deliver: Callable[[bytes], None]) -> None:
        """
        Start delivering every packet read from the device to C{deliver}.
        """

    def write(packet: bytes) -> None:
        """
        Inject one IPv6 packet toward the host's stack.  Errors are counted, not raised.
        """

    def close() -> None:
        """
        Stop reading and release the device.
        """


class INetworkConfigurator(Interface):
    """
    One-time interface setup: link state, MTU, addresses, routes, sysctls.

    Production runs iproute2 (C{ip}); tests use a recording fake whose final state can be
    asserted on.  Every method raises L{teredonode.errors.NetConfigError} with a one-line
    message on failure.
    """

    def linkUp(name: str, mtu: int) -> None:
        """
        Disable the kernel's own link-local address generation, set C{mtu}, bring it up.
        """

    def addAddress(name: str, address: str, prefixlen: int) -> None:
        """
        Add an IPv6 address (no DAD) to interface C{name}.
        """

    def removeAddress(name: str, address: str, prefixlen: int) -> None:
        """
        Remove an IPv6 address from interface C{name}; absent is not an error.
        """

    def addRoute(name: str, prefix: str, metric: int) -> None:
        """
        Route IPv6 C{prefix} (e.g. C{"2001::/32"}) to interface C{name}.
        """

    def removeRoute(name: str, prefix: str) -> None:
        """
        Remove a route added by L{addRoute}; absent is not an error.
        """

    def setForwarding(enabled: bool) -> None:
        """
        Turn IPv6 forwarding on or off for the host (relay role).
        """


class IStatusSource(Interface):
    """
    Anything that reports a JSON-serialisable status mapping: roles, the node.
    """

    def status() -> dict[str, Any]:
        """
        Return the current status: C{state}, addresses, counters (drops by reason).
        Must be cheap and must not mutate anything.
        """


class ITeredoRole(IStatusSource):
    """
    One Teredo role (client, server, relay, host-relay), also an
    L{twisted.application.service.IService}.
    """

    roleName = Attribute("The role's name as used in config and on the command line.")


class IDiscoveryHost(Interface):
    """
    What local client discovery (RFC 4380 section 5.2.8) needs from the client it serves.
    """

    def isQualified() -> bool:
        """Is the client qualified now?  Nothing is sent or accepted before (CL-Q-01)."""

    def mappedAddress() -> str | None:
        """Our mapping's IPv4 address, or C{None} while there is none."""

    def sendDatagram(data: bytes, endpoint: Endpoint) -> None:
        """Send from the client's service port (discovery bubbles must come from it)."""


class ILocalPeers(Interface):
    """
    What local client discovery needs from the tunnel core: our address, the peer entries
    (to count local ones), and where an accepted discovery bubble goes.
    """

    address = Attribute("Our Teredo address (16 bytes), or None while unqualified.")
    peers = Attribute("The peer entries; each has a boolean 'local'.")

    def fromLocalPeer(src: bytes, addr: Endpoint) -> None:
        """A discovery bubble from C{src}, a Teredo client on our LAN at C{addr}, passed."""


class IPeerObserver(Interface):
    """
    Told of every peer state change the tunnel core makes (L{teredonode.roles.tunnel}'s
    C{_setState}, the one place states change), and of each expiry sweep before it runs.

    Why: a kernel fast path (L{teredonode.fastpath.relay}) carries trusted peers' packets
    and must learn which peers are trusted exactly when the tunnel decides, from the one
    place that decides; and its packets never reach Python, so the times it last heard
    from and sent to each peer are folded back before the sweep judges them.
    """

    def peerChanged(peer: Any, state: str) -> None:
        """C{peer} (a L{teredonode.peers.Peer}) is now in C{state} (C{"removed"}: gone)."""

    def sweeping() -> None:
        """The peer list is about to be swept for expired entries."""


@implementer(IPeerObserver)
class NoPeerObserver:
    """
    The observer of a tunnel without a fast path: does nothing.
    """

    def peerChanged(self, peer: Any, state: str) -> None:
        pass

    def sweeping(self) -> None:
        pass


class IPortMapper(Interface):
    """
    Asks the NAT in front of this host for a UDP port mapping, by one protocol (PCP, NAT-PMP,
    UPnP IGD) or by trying several (L{teredonode.portmap.mappers.AutoMapper}).

    RFC 6081's UPnP-enabled Symmetric NAT and Hairpinning extensions need one mapping of the
    client's local port before qualification and its removal at shutdown (X-UPNP-04, -13,
    X-HP-03); the client is handed a provider of this interface so the protocol, and in tests
    a fake, stay out of the role.  Every failure is a
    L{teredonode.portmap.base.PortMapError} with a one-line message; every wait is bounded
    on the injected reactor's clock.
    """

    name = Attribute("The protocol's name: C{pcp}, C{natpmp}, C{upnp}, or C{auto}.")

    def addMapping(localAddress: str, localPort: int, lifetime: int) -> Deferred[Mapping]:
        """
        Map C{localAddress:localPort} (UDP) on the NAT's external address for C{lifetime}
        seconds (UPnP always asks lease 0, until deleted, as X-UPNP-04 requires).
        """

    def deleteMapping(localAddress: str, localPort: int) -> Deferred[None]:
        """
        Remove the mapping of C{localAddress:localPort}; one already absent is not an error.
        """


class IPortMapping(Interface):
    """
    The client's one UDP port mapping on the NAT in front of it (RFC 6081 UPnP-enabled
    Symmetric NAT, X-UPNP-03..07 and -13; Hairpinning, X-HP-03): asked before qualification,
    renewed while it lasts, deleted at shutdown.
    """

    def map(localPort: int) -> Any:
        """
        Ask for a mapping of C{localPort}; a Deferred firing with a
        L{teredonode.portmap.base.Mapping}, or failing with
        L{teredonode.portmap.base.PortMapError} (one line).
        """

    def unmap() -> Any:
        """Delete the mapping made last, if any; a Deferred that never fails."""


class IRandomPort(Interface):
    """
    One extra UDP port a client opened for one peer (RFC 6081 section 5.4, the "random
    port" of the Port-Preserving Symmetric NAT Extension).
    """

    port = Attribute("The local UDP port number it is bound to.")

    def sendto(data: bytes, addr: Endpoint) -> None:
        """Send C{data} from this port to C{addr}; errors are counted, never raised."""

    def close() -> None:
        """Stop listening; later sends are dropped.  Closing twice is harmless."""


class IRandomPorts(Interface):
    """
    What the tunnel core needs to run the Port-Preserving Symmetric NAT Extension: the
    client opens extra UDP ports for it, so that the core never touches a socket.

    Every datagram a random port receives reaches the C{receive} callable given at its
    opening as a parsed Teredo packet (the client checks what it checks on its service
    port: a Teredo payload, a qualified client) with its source endpoint.
    """

    def openRandomPort(port: int, receive: Callable[[Any, Endpoint], None]) -> IRandomPort | None:
        """
        Listen on the local UDP C{port} (on the service port's address); the open port, or
        C{None} when it cannot be bound (in use, not allowed).
        """

    def echoSolicitation(nonce: bytes) -> bytes:
        """
        The UDP payload of a Router Solicitation carrying C{nonce} in its authentication
        encapsulation, as the client sends for qualification (RFC 6081 section 5.5.4.1.1,
        the Echo Test of the Sequential Port-Symmetric NAT Extension).
        """


class IGuessSockets(Interface):
    """
    What the tunnel core needs to run port guessing's opener (beyond RFC 6081,
    L{teredonode.roles.portguessing}): a batch of UDP sockets on fresh local ports, which the
    client opens so that the core never touches a socket.

    Every datagram one of them receives reaches C{receive(index, packet, source)} as a parsed
    Teredo packet, after the client's service-port checks (a Teredo payload, qualified).
    """

    def openGuessSockets(count: int, receive: Callable[[int, Any, Endpoint], None]) -> list[IRandomPort | None]:
        """
        Open C{count} sockets on ephemeral ports (on the service port's address): a list of
        C{count}, each an open L{IRandomPort} or C{None} where one could not be bound.
        """
