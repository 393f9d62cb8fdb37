# -*- test-case-name: tests.protocol.test_testing -*-
"""
Public in-memory fakes of everything teredonode touches outside its own process.

Teredo exists because of NATs, so its roles can only be tested honestly against NATs that
map and filter the way real ones do.  L{FakeInternet} is a deterministic IPv4/UDP world
driven by a L{twisted.internet.task.Clock}: public hosts, NAT boxes of every RFC 4787 kind
with hosts behind them, a capture of every datagram on the "Internet", loss and spoofing
hooks.  The other fakes (L{FakeTunDevice}, L{FakeNetworkConfigurator},
L{FakeDatagramSender}) stand in for the seams of L{teredonode.interfaces}; each one passes
C{verifyObject} against the interface the production class implements.

Typical use::

    clock = Clock()
    net = FakeInternet(clock)
    server = net.host("203.0.113.5", "203.0.113.6")      # one host, two addresses
    nat = net.nat("port-restricted", public="198.51.100.1")
    client = nat.host("10.0.0.2")
    client.listenUDP(0, clientProtocol)                  # like reactor.listenUDP
    server.listenUDP(3544, serverProtocol, interface="203.0.113.5")
    ...
    net.flush()          # deliver everything due now (latency 0)
    net.run(30)          # or: advance simulated time, running timers and deliveries in order

Nothing is delivered synchronously inside C{write}: every datagram is scheduled on the
Clock, so a test decides when the world moves, and re-entrancy bugs (a protocol answering
from inside C{datagramReceived}) behave as they would on a reactor.

IPv4 multicast exists only inside a LAN: a datagram sent to a 224.0.0.0/4 group reaches the
sockets of the hosts behind the same NAT that joined the group (L{FakeHost.listenMulticast}),
never the Internet, whatever its TTL; that is all Teredo's local client discovery needs
(RFC 4380 section 5.2.8, 224.0.0.253 with TTL 1).

Exceptions raised by a protocol's C{datagramReceived} propagate out of C{flush}/C{run}
instead of being logged and swallowed as a reactor would: in a test, a crash in the data
path should fail loudly at the line that caused it.
"""

from __future__ import annotations

import errno
import ipaddress
import random
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

from twisted.internet import defer, error
from twisted.internet.abstract import isIPAddress
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IMulticastTransport,
    IReactorMulticast,
    IReactorTime,
    IReactorUDP,
    IUDPTransport,
)
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.internet.task import Clock
from zope.interface import implementer

from teredonode.errors import NetConfigError
from teredonode.interfaces import (
    Endpoint,
    IDatagramSender,
    INetworkConfigurator,
    IRandomPort,
    IRandomPorts,
    ITunDevice,
)

__all__ = [
    "NAT_KINDS",
    "Datagram",
    "Mapping",
    "FakeInternet",
    "FakeHost",
    "FakeNAT",
    "FakeUDPPort",
    "FakeMulticastPort",
    "FakeTunDevice",
    "FakeLink",
    "FakeNetworkConfigurator",
    "FakeDatagramSender",
    "FakeIPv6Network",
    "FakeRandomPorts",
    "FakeRandomPort",
]

#: The largest UDP payload an IPv4 socket accepts; larger writes fail with EMSGSIZE.
MAX_UDP_PAYLOAD = 65507

#: First port handed out for C{listenUDP(0, ...)} (Linux's default ephemeral range start).
EPHEMERAL_FIRST = 32768


class Datagram(NamedTuple):
    """
    One UDP datagram as seen on the public Internet: C{(src, dst, data)}.
    """

    src: Endpoint
    dst: Endpoint
    data: bytes


# Mapping behaviour, filtering behaviour, external port allocation (RFC 4787 sections 4.1,
# 5, 4.2.1).  "preserve" and "sequential" are the two symmetric NATs RFC 6081 section 2
# singles out because a Teredo client can still predict their ports.
_EIM, _APDM = "endpoint-independent", "address-and-port-dependent"
_EIF, _ADF, _APDF = "endpoint-independent", "address-dependent", "address-and-port-dependent"
_KINDS: dict[str, tuple[str, str, str]] = {
    "full-cone": (_EIM, _EIF, "random"),
    "address-restricted": (_EIM, _ADF, "random"),
    "port-restricted": (_EIM, _APDF, "random"),
    "symmetric": (_APDM, _APDF, "random"),
    "symmetric-port-preserving": (_APDM, _APDF, "preserve"),
    "symmetric-sequential": (_APDM, _APDF, "sequential"),
}

#: Every kind L{FakeInternet.nat} accepts.
NAT_KINDS: tuple[str, ...] = ("none", *_KINDS)

_PORT_ALLOCATIONS = ("random", "preserve", "sequential")


def _isMulticast(address: str) -> bool:
    """
    Is C{address} (a dotted quad) in 224.0.0.0/4?
    """
    first = address.split(".", 1)[0]
    return first.isdigit() and 224 <= int(first) <= 239


def _checkIPv4(address: str) -> str:
    if not isinstance(address, str) or not isIPAddress(address):
        raise ValueError(f"not a dotted-quad IPv4 address: {address!r}")
    return address


class FakeInternet:
    """
    An in-memory IPv4 Internet carrying UDP, with NATs at its edges.

    Public addresses are owned either by a L{FakeHost} made with L{host} or by a L{FakeNAT}
    made with L{nat}.  Datagrams between public addresses are recorded in L{capture}, then
    offered to the drop filters, then delivered C{latency} seconds later by the Clock.

    @ivar clock: the Clock every delivery and every NAT timeout is measured on.
    @ivar latency: one-way delay, in seconds, of every datagram (Internet and LAN alike).
    @ivar capture: every datagram put on the public Internet, in order, including spoofed
        ones from L{inject} and ones later dropped by a filter.  Traffic inside a NAT's LAN
        and hairpinned traffic never crosses the Internet and is not captured.
    @ivar dropped: the datagrams a drop filter discarded.
    @ivar undeliverable: counts by reason: C{"no-route"} (nobody owns the destination
        address) and C{"port-unreachable"} (no socket bound to the destination port).
    @ivar multicasts: multicast copies handed to member sockets (LAN-local, not captured).
    """

    def __init__(self, clock: Clock, latency: float = 0.0, maxDeliveries: int = 100_000) -> None:
        """
        @param maxDeliveries: how many deliveries one L{flush} or L{run} may perform before it
            decides two protocols are ping-ponging forever and raises L{RuntimeError}.
        """
        self.clock = clock
        self.latency = latency
        self.capture: list[Datagram] = []
        self.dropped: list[Datagram] = []
        self.undeliverable: Counter[str] = Counter()
        self.multicasts = 0
        self._owners: dict[str, FakeHost | FakeNAT] = {}
        self._filters: list[Callable[[Datagram], bool]] = []
        self._maxDeliveries = maxDeliveries
        self._budget: int | None = None
        self._nextNatAddress = 1

    # -- building the world ------------------------------------------------------------

    def host(self, *addresses: str) -> FakeHost:
        """
        Add a host directly on the Internet owning every address in C{addresses}.

        A Teredo server needs two public addresses; give both to one host and bind one
        port per address, as the production server does.
        """
        if not addresses:
            raise ValueError("a host needs at least one address")
        for address in addresses:
            self._claim(address)
        host = FakeHost(self, addresses)
        for address in addresses:
            self._owners[address] = host
        return host

    def nat(
        self,
        kind: str,
        public: str | None = None,
        *,
        timeout: float = 120.0,
        hairpin: bool = False,
        rng: random.Random | None = None,
        firstPort: int = 20000,
        portAllocation: str | None = None,
    ) -> FakeNAT:
        """
        Add a NAT box of C{kind} (one of L{NAT_KINDS}) owning the public address C{public}.

        @param public: the NAT's public address; by default the next free one of
            198.51.100.1, 198.51.100.2, ...
        @param timeout: seconds after the last outbound datagram at which a mapping (and
            each filtering permission) expires.
        @param hairpin: whether a host behind the NAT can reach another one through the
            NAT's own public endpoints (RFC 4787 section 6).
        @param rng: the source of random external ports; C{random.Random(0)} by default so
            runs are reproducible.
        @param firstPort: the first external port of a C{"symmetric-sequential"} NAT.
        @param portAllocation: override the kind's external port policy: C{"random"},
            C{"preserve"} (keep the internal port when free) or C{"sequential"}.
        """
        if kind not in NAT_KINDS:
            raise ValueError(f"unknown NAT kind {kind!r}; expected one of {', '.join(NAT_KINDS)}")
        if kind == "none":
            return FakeNAT(self, kind, None, timeout, hairpin, rng, firstPort, portAllocation)
        if public is None:
            while f"198.51.100.{self._nextNatAddress}" in self._owners:
                self._nextNatAddress += 1
            public = f"198.51.100.{self._nextNatAddress}"
        self._claim(public)
        nat = FakeNAT(self, kind, public, timeout, hairpin, rng, firstPort, portAllocation)
        self._owners[public] = nat
        return nat

    def _claim(self, address: str) -> None:
        _checkIPv4(address)
        if address in self._owners:
            raise ValueError(f"{address} is already on the Internet")

    # -- tests' hooks ----------------------------------------------------------------

    def inject(self, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        """
        Put a datagram with an arbitrary (typically spoofed) source on the Internet.

        It is captured, filtered and delivered exactly like any other datagram, so it is
        subject to the destination NAT's mapping and filtering.
        """
        self.transmit((_checkIPv4(src[0]), src[1]), (_checkIPv4(dst[0]), dst[1]), bytes(data))

    def addDropFilter(self, predicate: Callable[[Datagram], bool]) -> Callable[[], None]:
        """
        Drop every Internet datagram for which C{predicate} returns true (loss, firewalls).

        @return: a function that removes the filter again.
        """
        self._filters.append(predicate)
        return lambda: self._filters.remove(predicate)

    def dropNext(self, count: int = 1, match: Callable[[Datagram], bool] | None = None) -> None:
        """
        Lose the next C{count} Internet datagrams (those for which C{match} is true, if
        given), then stop dropping.  Handy to exercise one retransmission.
        """
        remaining = [count]

        def predicate(datagram: Datagram) -> bool:
            if remaining[0] <= 0 or (match is not None and not match(datagram)):
                return False
            remaining[0] -= 1
            if remaining[0] == 0:
                self._filters.remove(predicate)
            return True

        if count > 0:
            self._filters.append(predicate)

    def flush(self) -> None:
        """
        Run everything due at the current simulated time, including datagrams sent by
        the deliveries themselves, without advancing the clock.

        With the default latency of zero this completes every exchange a test started;
        with a positive latency use L{run}.
        """
        with self._deliveryBudget():
            self.clock.advance(0)

    def run(self, seconds: float) -> None:
        """
        Advance the clock by C{seconds}, stopping at every scheduled call in between (timers
        of the roles as well as deliveries) so that everything happens in time order, and
        finish with a L{flush} at the end time.
        """
        end = self.clock.seconds() + seconds
        with self._deliveryBudget():
            self.clock.advance(0)
            while True:
                due = [call.getTime() for call in self.clock.getDelayedCalls()]
                nextTime = min(due, default=None)
                if nextTime is None or nextTime > end:
                    break
                self.clock.advance(max(0.0, nextTime - self.clock.seconds()))
            self.clock.advance(max(0.0, end - self.clock.seconds()))

    # -- plumbing --------------------------------------------------------------------

    @contextmanager
    def _deliveryBudget(self) -> Iterator[None]:
        """
        Bound the deliveries of one L{flush}/L{run} call (nested calls get their own).
        """
        saved, self._budget = self._budget, self._maxDeliveries
        try:
            yield
        finally:
            self._budget = saved

    def owner(self, address: str) -> FakeHost | FakeNAT | None:
        """
        The host or NAT owning the public C{address}, or L{None}.
        """
        return self._owners.get(address)

    def later(self, function: Callable[..., None], *args: Any) -> None:
        """
        Call C{function(*args)} one C{latency} from now, counted against the delivery budget:
        how the fake hosts and NATs schedule every hop.
        """
        self.clock.callLater(self.latency, self._perform, function, args)

    def _perform(self, function: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self._budget is not None:
            self._budget -= 1
            if self._budget < 0:
                raise RuntimeError(
                    f"more than {self._maxDeliveries} deliveries in one flush()/run(): "
                    "are two protocols answering each other forever?"
                )
        function(*args)

    def transmit(self, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        """
        Put a datagram on the Internet (captured, filtered, then delivered to the owner of
        C{dst}): what a public host or a NAT's public side sends.
        """
        datagram = Datagram(src, dst, data)
        self.capture.append(datagram)
        for predicate in list(self._filters):
            if predicate(datagram):
                self.dropped.append(datagram)
                return
        self.later(self._arrive, datagram)

    def _arrive(self, datagram: Datagram) -> None:
        owner = self._owners.get(datagram.dst[0])
        if owner is None:
            self.undeliverable["no-route"] += 1
        elif isinstance(owner, FakeNAT):
            owner.inbound(datagram.src, datagram.dst, datagram.data)
        else:
            owner.deliver(datagram.src, datagram.dst, datagram.data)


@implementer(IReactorUDP, IReactorMulticast, IReactorTime)
class FakeHost:
    """
    A machine on the fake network: a public host, or a host behind a L{FakeNAT}.

    It provides C{IReactorUDP} and C{IReactorMulticast} (and, delegating to the network's
    Clock, C{IReactorTime}), so a role can be handed the host as its reactor.

    @ivar addresses: the host's IPv4 addresses; the first is the source of datagrams sent
        from a socket bound to all addresses (C{interface=""}).
    @ivar nat: the NAT in front of the host, or L{None} for a public host.
    @ivar ports: the bound sockets by C{(interface, port)} (C{""}: every address); the
        sockets add and remove themselves, tests may look a socket up here.
    """

    def __init__(self, net: FakeInternet, addresses: Sequence[str], nat: FakeNAT | None = None):
        self.net = net
        self.addresses = tuple(addresses)
        self.nat = nat
        self.ports: dict[tuple[str, int], FakeUDPPort] = {}
        self._nextEphemeral = EPHEMERAL_FIRST

    def __repr__(self) -> str:
        where = f" behind {self.nat.public}" if self.nat is not None else ""
        return f"<FakeHost {', '.join(self.addresses)}{where}>"

    # IReactorUDP

    def listenUDP(
        self,
        port: int,
        protocol: AbstractDatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> FakeUDPPort:
        """
        Bind C{port} (0: an ephemeral one) on C{interface} (C{""}: every address of the
        host) and connect C{protocol} to it, like Twisted's C{reactor.listenUDP}.

        @raise CannotListenError: the address is not the host's, or the port is in use.
        """
        interface, port = self._bind(interface, port)
        udpPort = FakeUDPPort(self, interface, port, protocol, maxPacketSize)
        udpPort.startListening()
        return udpPort

    def _bind(self, interface: str, port: int, group: bool = False) -> tuple[str, int]:
        """
        Check a bind the way the kernel would, and pick an ephemeral port for port 0.
        C{group}: C{interface} is a multicast group address (only the port is checked).
        """
        if interface == "0.0.0.0":
            interface = ""
        if interface and not group and interface not in self.addresses:
            raise error.CannotListenError(
                interface, port, OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
            )
        if not 0 <= port <= 65535:
            raise error.CannotListenError(interface, port, OverflowError("port out of range"))
        if port == 0:
            return interface, self._ephemeral(interface)
        taken = (interface, port) in self.ports if group else not self._free(interface, port)
        if taken:
            raise error.CannotListenError(
                interface, port, OSError(errno.EADDRINUSE, "Address already in use")
            )
        return interface, port

    # IReactorMulticast

    def listenMulticast(
        self,
        port: int,
        protocol: AbstractDatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
        listenMultiple: bool = False,
    ) -> FakeMulticastPort:
        """
        Like L{listenUDP}, but the port can join groups and set multicast options, like
        Twisted's C{reactor.listenMulticast}.

        C{interface} may also be a multicast group address: as on Linux, the socket then
        receives only datagrams sent to that group (never unicast ones), once it has joined
        it.  C{listenMultiple} is accepted for signature compatibility; the fake does not
        let two sockets share one address and port.
        """
        interface, port = self._bind(interface, port, group=bool(interface) and _isMulticast(interface))
        mcastPort = FakeMulticastPort(self, interface, port, protocol, maxPacketSize)
        mcastPort.startListening()
        return mcastPort

    # IReactorTime, so that a host can be a role's whole reactor

    def seconds(self) -> float:
        return self.net.clock.seconds()

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall:
        return self.net.clock.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return self.net.clock.getDelayedCalls()

    # plumbing

    def _free(self, interface: str, port: int) -> bool:
        if interface:
            return (interface, port) not in self.ports and ("", port) not in self.ports
        return not any(
            bound == port and not _isMulticast(address) for address, bound in self.ports
        )

    def _ephemeral(self, interface: str) -> int:
        for _ in range(65536 - EPHEMERAL_FIRST):
            port = self._nextEphemeral
            self._nextEphemeral = port + 1 if port < 65535 else EPHEMERAL_FIRST
            if self._free(interface, port):
                return port
        raise error.CannotListenError(interface, 0, OSError(errno.EADDRINUSE, "no free port"))

    def send(self, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        """
        Route a datagram from one of this host's sockets: to itself, the Internet or its NAT.
        """
        if dst[0] in self.addresses:
            self.net.later(self.deliver, src, dst, data)
        elif self.nat is None:
            self.net.transmit(src, dst, data)
        else:
            self.nat.outbound(src, dst, data)

    def sendToGroup(self, sender: FakeUDPPort, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        """
        Deliver a datagram sent to a group: to every socket of the LAN's hosts (this host
        only if the sender's loopback mode is on) bound to the port, on the wildcard or the
        group address, that joined the group.  A TTL of 0 keeps it on this host.  It never
        reaches a NAT's public side or the Internet, so it is never captured.
        """
        if self.nat is None or self.nat.public is None or sender.getTTL() < 1:
            hosts: list[FakeHost] = [self]
        else:
            hosts = list(dict.fromkeys(self.nat.lan.values()))
        group, port = dst
        for host in hosts:
            if host is self and not sender.getLoopbackMode():
                continue
            for (address, bound), udpPort in list(host.ports.items()):
                if (
                    bound == port
                    and address in ("", group)
                    and group in getattr(udpPort, "groups", ())
                ):
                    self.net.later(udpPort.receive, data, src)
                    self.net.multicasts += 1

    def deliver(self, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        """
        A datagram for one of this host's addresses: to the socket bound to C{dst}.
        """
        udpPort = self.ports.get(dst) or self.ports.get(("", dst[1]))
        if udpPort is None:
            self.net.undeliverable["port-unreachable"] += 1
        else:
            udpPort.receive(data, src)


@implementer(IUDPTransport, IListeningPort)
class FakeUDPPort:
    """
    The fake of Twisted's C{udp.Port}: both the listening port and the transport.

    It deliberately has no C{socket} attribute, which is how L{teredonode.udp.DatagramSender}
    knows to fall back to L{write}.  Like the real port, L{write} rejects host names with
    C{InvalidAddressError} and over-long datagrams with C{MessageLengthError}.
    """

    def __init__(
        self,
        host: FakeHost,
        interface: str,
        port: int,
        protocol: AbstractDatagramProtocol,
        maxPacketSize: int,
    ) -> None:
        self.host = host
        self.interface = interface
        self.port = port
        self.protocol = protocol
        self.maxPacketSize = maxPacketSize
        self.listening = False
        self._connected: Endpoint | None = None
        self._broadcast = False
        # Linux's defaults for any UDP socket sending to a group.
        self._ttl = 1
        self._loopback = True
        self._outgoing: str | None = None

    def __repr__(self) -> str:
        return f"<FakeUDPPort {self.interface or '0.0.0.0'}:{self.port} on {self.host!r}>"

    def startListening(self) -> None:
        """
        Bind and connect the protocol (called by L{FakeHost.listenUDP}).
        """
        if self.listening:
            return
        self.host.ports[(self.interface, self.port)] = self
        self.listening = True
        self.protocol.makeConnection(self)

    def stopListening(self) -> defer.Deferred[None]:
        """
        Unbind at once and stop the protocol; the Deferred has already fired.
        """
        if self.listening:
            self.listening = False
            del self.host.ports[(self.interface, self.port)]
            self.protocol.doStop()
        return defer.succeed(None)

    loseConnection = stopListening

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def connect(self, host: str, port: int) -> None:
        """
        Only exchange datagrams with C{(host, port)} from now on, like a connected socket.
        """
        if not isIPAddress(host):
            raise error.InvalidAddressError(host, "not an IPv4 address")
        self._connected = (host, port)

    def setBroadcastAllowed(self, enabled: bool) -> None:
        self._broadcast = bool(enabled)

    def getBroadcastAllowed(self) -> bool:
        return self._broadcast

    def write(self, data: bytes, addr: Endpoint | None = None) -> None:
        """
        Send C{data} to C{addr}; it arrives C{latency} seconds later, if nothing drops it.
        """
        if not self.listening:
            raise RuntimeError(f"write() on {self!r}, which has stopped listening")
        if addr is None:
            if self._connected is None:
                raise ValueError("write() without an address on an unconnected port")
            addr = self._connected
        if not isinstance(addr[0], str) or not isIPAddress(addr[0]):
            raise error.InvalidAddressError(addr[0], "write() only accepts IPv4 addresses here")
        if not 0 <= addr[1] <= 65535:
            raise OverflowError("port must be 0-65535")
        if len(data) > MAX_UDP_PAYLOAD:
            raise error.MessageLengthError("message too long")
        if _isMulticast(addr[0]):
            local = self._outgoing or (
                self.interface
                if self.interface and not _isMulticast(self.interface)
                else self.host.addresses[0]
            )
            self.host.sendToGroup(self, (local, self.port), (addr[0], addr[1]), bytes(data))
            return
        if _isMulticast(self.interface):
            raise error.InvalidAddressError(self.interface, "a group-bound socket cannot send unicast")
        src = (self.interface or self.host.addresses[0], self.port)
        self.host.send(src, (addr[0], addr[1]), bytes(data))

    def getTTL(self) -> int:
        """
        The multicast TTL (Linux's default 1 until a L{FakeMulticastPort} sets it).
        """
        return self._ttl

    def getLoopbackMode(self) -> bool:
        """
        Whether this host's own member sockets get what this socket sends to a group.
        """
        return self._loopback

    def receive(self, data: bytes, src: Endpoint) -> None:
        """
        A datagram from C{src} reaching this socket (dropped when connected elsewhere).
        """
        if self._connected is not None and src != self._connected:
            return
        self.protocol.datagramReceived(data[: self.maxPacketSize], src)


@implementer(IMulticastTransport)
class FakeMulticastPort(FakeUDPPort):
    """
    The fake of Twisted's C{udp.MulticastPort}, from L{FakeHost.listenMulticast}.

    @ivar groups: the groups joined (dotted quads).
    @ivar joinInterfaces: the interface address each group was joined on (C{""}: the
        kernel's choice).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups: set[str] = set()
        self.joinInterfaces: dict[str, str] = {}

    def _checkInterface(self, interface: str) -> str:
        if interface in ("", "0.0.0.0", "INADDR_ANY"):
            return ""
        if interface not in self.host.addresses:
            raise error.MulticastJoinError(interface, "not an address of this host")
        return interface

    def joinGroup(self, addr: str, interface: str = "") -> defer.Deferred[None]:
        """
        Join C{addr} on C{interface}; fails (as a failed Deferred) for a non-multicast
        group or an address the host does not own.
        """
        try:
            if not isIPAddress(addr) or not _isMulticast(addr):
                raise error.MulticastJoinError(addr, "not an IPv4 multicast address")
            self.joinInterfaces[addr] = self._checkInterface(interface)
        except error.MulticastJoinError:
            return defer.fail()
        self.groups.add(addr)
        return defer.succeed(None)

    def leaveGroup(self, addr: str, interface: str = "") -> defer.Deferred[None]:
        self.groups.discard(addr)
        self.joinInterfaces.pop(addr, None)
        return defer.succeed(None)

    def getOutgoingInterface(self) -> str:
        return self._outgoing or "0.0.0.0"

    def setOutgoingInterface(self, addr: str | int) -> defer.Deferred[int]:
        """
        Send to groups from C{addr} (one of the host's addresses).
        """
        try:
            self._outgoing = self._checkInterface(str(addr)) or None
        except error.MulticastJoinError:
            return defer.fail()
        return defer.succeed(1)

    def setLoopbackMode(self, mode: int) -> None:
        """
        Whether this host's own member sockets get what this socket sends to a group.
        """
        self._loopback = bool(mode)

    def setTTL(self, ttl: int) -> None:
        """
        The multicast TTL: 0 keeps datagrams on this host; the fake never routes them
        beyond the LAN anyway.
        """
        if not 0 <= ttl <= 255:
            raise ValueError("TTL must be 0-255")
        self._ttl = ttl


@dataclass
class Mapping:
    """
    One NAT binding, exposed so tests can assert on what a NAT did.

    @ivar internal: the private endpoint the binding translates.
    @ivar external: the public endpoint it is translated to.
    @ivar remote: for address-and-port-dependent mapping, the one remote endpoint this
        binding serves; L{None} for endpoint-independent mapping.
    @ivar lastOutbound: Clock time of the last outbound datagram, which is what keeps it alive.
    @ivar permits: remote endpoints contacted through this binding and when (filtering state).
    """

    internal: Endpoint
    external: Endpoint
    remote: Endpoint | None
    lastOutbound: float
    permits: dict[Endpoint, float] = field(default_factory=dict)


class FakeNAT:
    """
    A NAT box: a LAN of hosts made with L{host}, one public address, RFC 4787 behaviour.

    Mapping and filtering by kind:

      - C{none}: no NAT at all; L{host} makes public hosts (so tests can loop over
        L{NAT_KINDS}).
      - C{full-cone}: endpoint-independent mapping and filtering.
      - C{address-restricted}: endpoint-independent mapping, address-dependent filtering.
      - C{port-restricted}: endpoint-independent mapping, address-and-port-dependent
        filtering.
      - C{symmetric}: address-and-port-dependent mapping (a new binding per remote
        endpoint) with random external ports, address-and-port-dependent filtering.
      - C{symmetric-port-preserving}: like C{symmetric}, but a new binding keeps the
        internal port as its external port when no live binding uses that port yet.  So the
        first destination a socket talks to sees its internal port, and a second
        destination (while the first binding lives) sees a random one, as does a second host
        using the same internal port.  Once the first binding expires the port is free again.
      - C{symmetric-sequential}: like C{symmetric}, but external ports are allocated
        consecutively, C{firstPort}, C{firstPort + 1}, ..., skipping ports in use.

    Port allocation never reuses a port held by a live binding.  Cone kinds allocate random
    ports, so a test cannot mistake an internal port for the mapped one.

    Bindings and filtering permissions expire C{timeout} seconds after the last outbound
    datagram that used them (inbound traffic does not refresh them, the conservative
    choice RFC 4787 REQ-6 allows).  Expiry is evaluated lazily on the Clock, so a NAT leaves
    no delayed calls behind.

    @ivar lan: the hosts (and nested NATs) on the LAN, by private address.
    @ivar ports: always empty: a nested NAT is a "host" on its outer LAN that owns no sockets.
    @ivar dropped: inbound datagrams dropped, by reason: C{"no-mapping"} (no live binding
        for the destination port), C{"filtered"} (binding exists, filter refuses the
        source), C{"hairpin"} (a LAN host addressed the NAT's public address while
        hairpinning is off).
    @ivar hairpinned: how many datagrams were hairpinned.
    @ivar expired: how many bindings timed out.
    @ivar outer: the NAT whose LAN this one's public address is on (L{nat}: nested NATs),
        or L{None} for a NAT on the Internet.
    """

    def __init__(
        self,
        net: FakeInternet,
        kind: str,
        public: str | None,
        timeout: float,
        hairpin: bool,
        rng: random.Random | None,
        firstPort: int,
        portAllocation: str | None,
    ) -> None:
        self.net = net
        self.kind = kind
        self.public = public
        self.timeout = timeout
        self.hairpin = hairpin
        self.rng = rng if rng is not None else random.Random(0)
        if kind == "none":
            self.mapping = self.filtering = "none"
            allocation = "none"
        else:
            self.mapping, self.filtering, allocation = _KINDS[kind]
        if portAllocation is not None:
            if portAllocation not in _PORT_ALLOCATIONS:
                raise ValueError(f"unknown port allocation {portAllocation!r}")
            allocation = portAllocation
        self.portAllocation = allocation
        self._nextPort = firstPort
        self.dropped: Counter[str] = Counter()
        self.hairpinned = 0
        self.expired = 0
        self.lan: dict[str, FakeHost] = {}
        self._byExternalPort: dict[int, Mapping] = {}
        self._byKey: dict[tuple[Endpoint, Endpoint | None], Mapping] = {}
        #: Static mappings (L{forward}): external port -> (internal endpoint, outbound too).
        self._forwards: dict[int, tuple[Endpoint, bool]] = {}
        self.outer: FakeNAT | None = None
        #: A nested NAT is itself a "host" on its outer NAT's LAN: it owns no sockets.
        self.ports: dict[tuple[str, int], FakeUDPPort] = {}

    def __repr__(self) -> str:
        return f"<FakeNAT {self.kind} {self.public}>"

    def host(self, *addresses: str) -> FakeHost:
        """
        Add a host behind this NAT owning the (private) C{addresses}.
        """
        if self.public is None:
            return self.net.host(*addresses)
        if not addresses:
            raise ValueError("a host needs at least one address")
        for address in addresses:
            _checkIPv4(address)
            if address in self.lan:
                raise ValueError(f"{address} is already on the LAN of {self!r}")
        host = FakeHost(self.net, addresses, self)
        for address in addresses:
            self.lan[address] = host
        return host

    def nat(self, kind: str, public: str, **options: Any) -> FakeNAT:
        """
        Add a NAT box of C{kind} whose public side is on this NAT's LAN at the (private)
        address C{public}: nested NATs, as behind a carrier-grade NAT or a home router
        behind another (RFC 6081 section 6.5).  C{options} as for L{FakeInternet.nat}.
        Datagrams it sends to addresses outside its own LAN go through this NAT.
        """
        if self.public is None:
            return self.net.nat(kind, public, **options)
        _checkIPv4(public)
        if public in self.lan:
            raise ValueError(f"{public} is already on the LAN of {self!r}")
        if kind not in NAT_KINDS or kind == "none":
            raise ValueError(f"unknown NAT kind {kind!r}")
        inner = FakeNAT(
            self.net,
            kind,
            public,
            options.get("timeout", 120.0),
            options.get("hairpin", False),
            options.get("rng"),
            options.get("firstPort", 20000),
            options.get("portAllocation"),
        )
        inner.outer = self
        self.lan[public] = inner  # type: ignore[assignment]
        return inner

    def forward(self, externalPort: int, internal: Endpoint, outbound: bool = True) -> None:
        """
        A static mapping, as UPnP IGD, NAT-PMP or PCP make one: datagrams to C{externalPort}
        reach C{internal} whatever their source.  C{outbound}: datagrams from C{internal}
        leave from C{externalPort} too (most NATs); otherwise they are mapped as the NAT's
        kind says, though a port-preserving one may still pick C{externalPort} for them (RFC
        6081 section 3.2's "UPnP-enabled symmetric NAT").
        """
        self._forwards[externalPort] = (internal, outbound)

    def mappings(self) -> list[Mapping]:
        """
        The live bindings, oldest first.
        """
        self._expire()
        return list(self._byExternalPort.values())

    def externalFor(self, internal: Endpoint, remote: Endpoint | None = None) -> Endpoint | None:
        """
        The public endpoint C{internal} currently appears as (toward C{remote}, for the
        address-and-port-dependent kinds), or L{None} if it has no live binding.
        """
        if self.public is None:
            return internal
        self._expire()
        key = (internal, remote if self.mapping == _APDM else None)
        binding = self._byKey.get(key)
        return binding.external if binding is not None else None

    # -- traffic -------------------------------------------------------------------

    def outbound(self, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        """
        A datagram from the LAN side: to another LAN host, or mapped and sent out.
        """
        lanHost = self.lan.get(dst[0])
        if lanHost is not None:
            self.net.later(lanHost.deliver, src, dst, data)
            return
        now = self.net.clock.seconds()
        self._expire()
        binding = self._bind(src, dst, now)
        binding.lastOutbound = now
        binding.permits[dst] = now
        if dst[0] == self.public:
            if not self.hairpin:
                self.dropped["hairpin"] += 1
                return
            self.hairpinned += 1
            self.net.later(self.inbound, binding.external, dst, data)
            return
        if self.outer is not None:
            self.outer.outbound(binding.external, dst, data)
            return
        self.net.transmit(binding.external, dst, data)

    def deliver(self, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        """
        A datagram for this NAT's public address arriving from its outer NAT's LAN.
        """
        self.inbound(src, dst, data)

    def inbound(self, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        """
        A datagram reaching the public address: forwarded to the LAN if a mapping lets it.
        """
        self._expire()
        forward = self._forwards.get(dst[1])
        if forward is not None:
            internal = forward[0]
            self.lan[internal[0]].deliver(src, internal, data)
            return
        binding = self._byExternalPort.get(dst[1])
        if binding is None:
            self.dropped["no-mapping"] += 1
        elif not self._permitted(binding, src):
            self.dropped["filtered"] += 1
        else:
            self.lan[binding.internal[0]].deliver(src, binding.internal, data)

    def _permitted(self, binding: Mapping, src: Endpoint) -> bool:
        if self.filtering == _EIF:
            return True
        if self.filtering == _ADF:
            return any(peer[0] == src[0] for peer in binding.permits)
        return src in binding.permits

    # -- bindings ------------------------------------------------------------------

    def _bind(self, internal: Endpoint, remote: Endpoint, now: float) -> Mapping:
        key = (internal, remote if self.mapping == _APDM else None)
        binding = self._byKey.get(key)
        if binding is None:
            assert self.public is not None
            static = next((p for p, (e, out) in self._forwards.items() if e == internal and out), None)
            port = static if static is not None else self._allocate(internal[1], internal)
            binding = Mapping(internal, (self.public, port), key[1], now)
            self._byKey[key] = binding
            if port not in self._byExternalPort:
                self._byExternalPort[port] = binding
        return binding

    def _allocate(self, internalPort: int, internal: Endpoint | None = None) -> int:
        inUse = self._byExternalPort
        forwards = self._forwards
        if len(inUse) >= 65536 - 1024:
            raise RuntimeError(f"{self!r} ran out of external ports")
        if (
            self.portAllocation == "preserve"
            and internalPort not in inUse
            and (internalPort not in forwards or forwards[internalPort][0] == internal)
        ):
            return internalPort
        if self.portAllocation == "sequential":
            port = self._nextPort
            while port in inUse or port in forwards:
                port = port + 1 if port < 65535 else 1024
            self._nextPort = port + 1 if port < 65535 else 1024
            return port
        while True:
            port = self.rng.randint(1024, 65535)
            if port not in inUse and port not in forwards:
                return port

    def _expire(self) -> None:
        now = self.net.clock.seconds()
        for key, binding in list(self._byKey.items()):
            if now - binding.lastOutbound >= self.timeout:
                del self._byKey[key]
                if self._byExternalPort.get(binding.external[1]) is binding:
                    del self._byExternalPort[binding.external[1]]
                self.expired += 1
                continue
            for peer, when in list(binding.permits.items()):
                if now - when >= self.timeout:
                    del binding.permits[peer]


@implementer(ITunDevice)
class FakeTunDevice:
    """
    An in-memory TUN device.

    Packets the "kernel" routes into the tunnel are handed in with L{inject}; packets the
    application writes toward the kernel accumulate in L{written}.  Injected packets wait
    in a queue until L{startReading}, as the kernel queues them on a real device.

    @ivar written: every packet written, in order.
    @ivar delivered: packets handed to the reader (injected, or queued until it reads).
    @ivar opened: L{open} succeeded.
    @ivar closed: L{close} was called.
    @ivar openError: if set, L{open} raises it (e.g. C{OSError(EPERM, ...)}).
    @ivar writeErrno: if set, writes fail with this errno and are counted in L{drops},
        as the production device counts EIO while the link is down.
    @ivar drops: writes that did not happen, by reason (lower-case errno name, or
        C{"closed"}), matching L{teredonode.tun.TunDevice.drops}.
    """

    def __init__(self, name: str = "teredo", openError: OSError | None = None) -> None:
        self.name = name
        self.openError = openError
        self.writeErrno: int | None = None
        self.opened = False
        self.closed = False
        self.written: list[bytes] = []
        self.drops: Counter[str] = Counter()
        self.delivered = 0
        self._deliver: Callable[[bytes], None] | None = None
        self._queue: deque[bytes] = deque()

    def open(self) -> None:
        if self.openError is not None:
            raise self.openError
        self.opened = True

    def startReading(self, deliver: Callable[[bytes], None]) -> None:
        if not self.opened or self.closed:
            raise RuntimeError(f"startReading() on TUN {self.name} that is not open")
        self._deliver = deliver
        while self._queue and self._deliver is not None:
            self.delivered += 1
            deliver(self._queue.popleft())

    def inject(self, packet: bytes) -> None:
        """
        Make C{packet} appear as if the kernel routed it into the tunnel.
        """
        if not self.opened or self.closed:
            raise RuntimeError(f"inject() into TUN {self.name} that is not open")
        if self._deliver is None:
            self._queue.append(bytes(packet))
        else:
            self.delivered += 1
            self._deliver(bytes(packet))

    def write(self, packet: bytes) -> None:
        if not self.opened or self.closed:
            self.drops["closed"] += 1
        elif self.writeErrno is not None:
            self.drops[errno.errorcode.get(self.writeErrno, "oserror").lower()] += 1
        else:
            self.written.append(bytes(packet))

    def close(self) -> None:
        self.closed = True
        self._deliver = None


@dataclass
class FakeLink:
    """
    What L{FakeNetworkConfigurator} knows about one interface.
    """

    mtu: int
    up: bool = True


@implementer(INetworkConfigurator)
class FakeNetworkConfigurator:
    """
    Records configuration calls and keeps the state they would leave, so a test can
    assert on the end result rather than on a call sequence.

    It is as strict as C{ip}, so ordering bugs show up in tests: adding an address or a
    route to a link that was not brought up with L{linkUp} fails, as does adding one that
    already exists; removing something absent succeeds.  Addresses and prefixes are stored
    in compressed canonical form.

    @ivar calls: C{(methodName, *args)} for every call, failed ones included.
    @ivar links: interface name to L{FakeLink}.
    @ivar addresses: interface name to a set of C{(address, prefixlen)}.
    @ivar routes: a set of C{(interface, prefix, metric)}.
    @ivar forwarding: the host-wide IPv6 forwarding flag.
    @ivar failures: method name to the L{NetConfigError} it raises on every call until
        removed; see also L{failNext}.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.links: dict[str, FakeLink] = {}
        self.addresses: dict[str, set[tuple[str, int]]] = {}
        self.routes: set[tuple[str, str, int]] = set()
        self.forwarding = False
        self.failures: dict[str, NetConfigError] = {}
        self._once: dict[str, NetConfigError] = {}

    def failNext(self, method: str, message: str = "injected failure") -> None:
        """
        Make the next call of C{method} raise L{NetConfigError}(C{message}).
        """
        self._once[method] = NetConfigError(message)

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        failure = self._once.pop(method, None) or self.failures.get(method)
        if failure is not None:
            raise failure

    def _link(self, name: str) -> FakeLink:
        link = self.links.get(name)
        if link is None or not link.up:
            raise NetConfigError(f'Cannot find device "{name}" (or it is down: call linkUp first)')
        return link

    def linkUp(self, name: str, mtu: int) -> None:
        self._call("linkUp", name, mtu)
        if mtu < 1280:
            raise NetConfigError(f"mtu {mtu} on {name}: IPv6 needs at least 1280")
        self.links[name] = FakeLink(mtu=mtu, up=True)
        self.addresses.setdefault(name, set())

    def addAddress(self, name: str, address: str, prefixlen: int) -> None:
        self._call("addAddress", name, address, prefixlen)
        self._link(name)
        entry = (_canonicalAddress(address, prefixlen), prefixlen)
        if entry in self.addresses[name]:
            raise NetConfigError(f"{address}/{prefixlen} on {name}: address already assigned")
        self.addresses[name].add(entry)

    def removeAddress(self, name: str, address: str, prefixlen: int) -> None:
        self._call("removeAddress", name, address, prefixlen)
        entry = (_canonicalAddress(address, prefixlen), prefixlen)
        self.addresses.get(name, set()).discard(entry)

    def addRoute(self, name: str, prefix: str, metric: int) -> None:
        self._call("addRoute", name, prefix, metric)
        self._link(name)
        entry = (name, _canonicalPrefix(prefix), metric)
        if entry in self.routes:
            raise NetConfigError(f"route {prefix} dev {name} metric {metric}: File exists")
        self.routes.add(entry)

    def removeRoute(self, name: str, prefix: str) -> None:
        self._call("removeRoute", name, prefix)
        canonical = _canonicalPrefix(prefix)
        self.routes = {r for r in self.routes if (r[0], r[1]) != (name, canonical)}

    def setForwarding(self, enabled: bool) -> None:
        self._call("setForwarding", enabled)
        self.forwarding = bool(enabled)


def _canonicalAddress(address: str, prefixlen: int) -> str:
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        raise NetConfigError(f"not an IPv6 address: {address!r}") from None
    if not 0 <= prefixlen <= 128:
        raise NetConfigError(f"bad prefix length {prefixlen} for {address}")
    return parsed.compressed


def _canonicalPrefix(prefix: str) -> str:
    try:
        return ipaddress.IPv6Network(prefix, strict=False).compressed
    except ValueError:
        raise NetConfigError(f"not an IPv6 prefix: {prefix!r}") from None


@implementer(IDatagramSender)
class FakeDatagramSender:
    """
    Records what a role sends, for tests that do not need a whole L{FakeInternet}.

    @ivar sent: C{(data, addr)} in order.
    @ivar drops: always empty unless a test fills it; mirrors the production counters.
    """

    def __init__(self, local: Endpoint = ("192.0.2.1", 3544)) -> None:
        self.local = local
        self.sent: list[tuple[bytes, Endpoint]] = []
        self.drops: dict[str, int] = {}

    def sendto(self, data: bytes, addr: Endpoint) -> None:
        self.sent.append((bytes(data), addr))


@implementer(IRandomPort)
class FakeRandomPort:
    """
    One port a L{FakeRandomPorts} opened: records what is sent from it; L{deliver} plays a
    datagram arriving on it.

    @ivar sent: C{(data, addr)} in order, while open.
    @ivar closed: whether L{close} was called.
    """

    def __init__(self, owner: FakeRandomPorts, port: int, receive: Callable[[Any, Endpoint], None]) -> None:
        self.port = port
        self._owner = owner
        self._receive = receive
        self.sent: list[tuple[bytes, Endpoint]] = []
        self.closed = False

    def sendto(self, data: bytes, addr: Endpoint) -> None:
        if not self.closed:
            self.sent.append((bytes(data), addr))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._owner.open.pop(self.port, None)

    def deliver(self, packet: Any, addr: Endpoint) -> None:
        """A parsed Teredo packet from C{addr} arriving on this port (ignored once closed)."""
        if not self.closed:
            self._receive(packet, addr)

    def deliverLate(self, packet: Any, addr: Endpoint) -> None:
        """
        A packet the kernel had queued before the port closed, handed over anyway (the
        reactor may still be reading it): the tunnel must ignore it for a peer gone.
        """
        self._receive(packet, addr)


@implementer(IRandomPorts)
class FakeRandomPorts:
    """
    The fake of the client's random-port opener (RFC 6081 section 5.4) for tests that drive
    a tunnel without a client: ports in C{busy} cannot be bound.

    @ivar open: the open ports by number.
    @ivar opened: every port ever opened, in order.
    """

    def __init__(self, busy: Sequence[int] = ()) -> None:
        self.busy = set(busy)
        self.open: dict[int, FakeRandomPort] = {}
        self.opened: list[FakeRandomPort] = []

    def echoSolicitation(self, nonce: bytes) -> bytes:
        """A recognisable stand-in: the nonce behind a marker (the tunnel never parses it)."""
        return b"RS" + nonce

    def openRandomPort(self, port: int, receive: Callable[[Any, Endpoint], None]) -> FakeRandomPort | None:
        if port in self.busy or port in self.open:
            return None
        handle = FakeRandomPort(self, port, receive)
        self.open[port] = handle
        self.opened.append(handle)
        return handle


class FakeIPv6Network:
    """
    The native IPv6 network behind some L{FakeTunDevice}s: what a role writes into its TUN
    is taken out by L{pump} and handed to L{route}, which a test overrides to say where each
    packet goes (another TUN's C{inject}, a list of what a native host received, ...).
    L{echoReply} answers a ping the way a native host would.
    """

    def __init__(self, *tuns: FakeTunDevice) -> None:
        self.tuns = tuns
        self._seen = {id(t): 0 for t in tuns}

    def pump(self) -> int:
        """
        Route every packet written into the TUNs since the last call; how many moved.
        """
        moved = 0
        for tun in self.tuns:
            while self._seen[id(tun)] < len(tun.written):
                packet = tun.written[self._seen[id(tun)]]
                self._seen[id(tun)] += 1
                moved += 1
                self.route(packet)
        return moved

    def route(self, packet: bytes) -> None:
        raise NotImplementedError("override route() to say where packets go")

    @staticmethod
    def echoReply(packet: bytes) -> bytes | None:
        """
        The echo reply to C{packet} if it is an ICMPv6 echo request, sent back from the
        address it was sent to; otherwise C{None}.
        """
        from teredonode.wire import ipv6

        if len(packet) < 48 or packet[6] != ipv6.NH_ICMPV6 or packet[40] != ipv6.ICMP_ECHO_REQUEST:
            return None
        src, dst = packet[8:24], packet[24:40]
        request = ipv6.decode_icmpv6(packet[40:], src, dst)
        if not isinstance(request, ipv6.EchoRequest):
            return None
        reply = ipv6.EchoReply(request.identifier, request.sequence, request.data)
        return ipv6.icmpv6_packet(dst, src, reply, 64)
