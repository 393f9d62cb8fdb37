# -*- test-case-name: tests.protocol.test_client -*-
"""
The Teredo client (RFC 4380 section 5.2, RFC 5991, requirements digest section 3.1).

Three things happen here; the peer logic itself is L{teredonode.roles.tunnel}:

  - B{qualification} (CL-Q-*): a Router Solicitation to the server, with an authentication
    indicator carrying a fresh 8-byte nonce (and, when configured, the client identifier
    and HMAC-SHA1 value of secure qualification, CL-SQ-*), 4 s apart, 3 attempts (D7).  No
    cone probe (RFC 5991 section 3.2): the RS always comes from the restricted link-local
    address.  Then the same to the server's secondary address: a different mapping there
    means a symmetric NAT, which is reported and keeps the client offline unless
    C{allow-symmetric} says otherwise;
  - B{the address} (CL-Q-09): the RA's /64 prefix, fresh RFC 5991 random flag bits, the
    obfuscated mapping, put on the TUN with prefix length 32 (so 2001::/32 is on-link),
    with a Teredo link-local address beside it, the RA's MTU, and a default route only
    when the host has no other IPv6 (RFC 4380 section 5.5) or the setting forces one;
  - B{maintenance} (CL-M-*): an RS every C{refresh} x [0.75, 1] seconds; a changed mapping
    swaps the address in place; three unanswered RSs mean the server is lost and the
    client qualifies again from scratch; failing that it is offline and retries with an
    exponential backoff, forever.  The TUN stays up, without an address, while offline.

With C{local-discovery} on (the default), L{teredonode.roles.discovery} also finds the
Teredo clients behind the same NAT through 224.0.0.253 (section 5.2.8), so that traffic
between them stays on the LAN; the service port is then a multicast-capable socket (TTL 1,
loopback off) because discovery bubbles must come from it.

Every random choice (nonces, flags, jitter) comes from injected sources so that the
protocol tests replay exactly.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import gatherResults
from twisted.internet.error import CannotListenError
from teredonode.logs import Logger
from teredonode.metrics import observe
from zope.interface import implementer

from teredonode.counters import CounterSet
from teredonode.errors import NetConfigError
from teredonode.interfaces import (
    Endpoint,
    IDiscoveryHost,
    IPortMapping,
    INetworkConfigurator,
    IGuessSockets,
    IRandomPort,
    IRandomPorts,
    ITeredoRole,
    ITunDevice,
)
from teredonode.peers import PeerList
from teredonode.roles.portguess import GuessLimits
from teredonode.roles.discovery import DISCOVERY_COUNTERS, DISCOVERY_DROPS, LocalDiscovery
from teredonode.roles.tunnel import (
    CLIENT_POLICY,
    COUNTERS as TUNNEL_COUNTERS,
    DROP_REASONS as TUNNEL_DROPS,
    NUMBERED_COUNTERS,
    ProbeBudget,
    TeredoTunnel,
)
from teredonode.security import auth_matches, teredo_auth_value
from teredonode.roles.tunnelrole import TunnelRole
from teredonode.udp import ServicePort
from teredonode.wire import ipv4
from teredonode.wire.address import (
    CLIENT_LINK_LOCAL_RESTRICTED,
    GLOBAL_PREFIX,
    TEREDO_PORT,
    TeredoAddress,
    link_local,
    random_flags,
)
from teredonode.wire.errors import ParseError
from teredonode.wire.ipv6 import (
    ALL_NODES,
    bubble,
    ALL_ROUTERS,
    ICMP_RA,
    NH_ICMPV6,
    RouterSolicitation,
    icmpv6_packet,
    ipv6_text,
    is_link_local,
)
from teredonode.wire.teredo import AuthIndicator, TeredoPacket, classify
from teredonode.roles import interval
from teredonode.roles.qualification import (
    Accepted,
    RequestPortMapping,
    validate_ra,
    DEFAULT_MTU,
    QUALIFICATION_ATTEMPTS,
    QUALIFICATION_TIMEOUT,
    RA_DROPS,
    RESTART_DELAYS,
    Backoff,
    Configure,
    Dormant,
    Drop,
    Effect,
    JitteredBackoff,
    KeyExpired,
    Offline,
    Policy,
    Qualification,
    Qualified,
    Refreshing,
    Resolve,
    SecondarySilent,
    SendSolicitation,
    ServerLost,
    SolicitingPrimary,
    SolicitingSecondary,
    State,
    Stopped,
    SymmetricNat,
    Unconfigure,
    WentDormant,
    WentOffline,
)

__all__ = [
    "TeredoClient",
    "makeRole",
    "hostHasOtherIPv6",
    "COUNTERS",
    "DROP_REASONS",
    "QUALIFICATION_TIMEOUT",
    "QUALIFICATION_ATTEMPTS",
    "RESTART_DELAYS",
]

#: RFC 6081 extensions this client runs, in Figure 1's names (``teredo lab matrix`` holds the
#: cells that need them to working): Symmetric NAT Support, UPnP-Enabled Symmetric NAT (its
#: port mapping, ``port-mapping``, and bubble rules X-UPNP-10..12), Port-Preserving Symmetric
#: NAT and Sequential Port-Symmetric NAT ("SS" in the figure), each on by default
#: (``symmetric-nat-support``, ``port-preserving``, ``sequential-port``), and Hairpinning
#: ("HP", not in Figure 1: it is about two clients behind one NAT).
RFC6081_EXTENSIONS: frozenset[str] = frozenset({"SNS", "UPnP", "PP", "SS", "HP"})

#: The default route's metric: above every usual one, so any other IPv6 route wins.
DEFAULT_ROUTE_METRIC = 2048

#: The states that know their (resolved) server.
_SERVED = (SolicitingPrimary, SolicitingSecondary, Qualified, Refreshing)

#: The client's own drop reasons (the RA checks are the qualification module's); the
#: tunnel's follow in the status.
CLIENT_DROPS = (
    "malformed",  # CL-RX-01: not a Teredo payload
    "not-qualified",  # CL-Q-01: nothing is accepted or sent before qualification
) + RA_DROPS
DROP_REASONS = CLIENT_DROPS + TUNNEL_DROPS + DISCOVERY_DROPS

#: The client's own counters; the tunnel's and local discovery's follow in the status.
CLIENT_COUNTERS = (
    "received",  # datagrams on the client's port
    "rs-sent",  # Router Solicitations, qualification and maintenance
    "ra-accepted",  # Router Advertisements that passed every check
    "qualifications",  # times the client became qualified
    "address-changes",  # a maintenance RA showed another mapping
    "server-lost",  # maintenance RSs unanswered: qualification starts over
    "netconfig-errors",  # the address or routes could not be set
    "interval-probes",  # probes of the refresh-interval measurement
    "port-mappings",  # mappings obtained from the NAT (UPnP, NAT-PMP, PCP)
)
COUNTERS = CLIENT_COUNTERS + TUNNEL_COUNTERS + NUMBERED_COUNTERS + DISCOVERY_COUNTERS


def hostHasOtherIPv6(exclude: str, routes: str = "/proc/net/ipv6_route") -> bool:
    """
    Does the host have a usable IPv6 default route through another interface than
    C{exclude}?  This is the "IPv6 connectivity through any other means" of RFC 4380
    section 5.5 that makes Teredo step aside.  Reads the kernel's routing table; the
    kernel's own C{unreachable} default on C{lo} (flag RTF_REJECT) does not count.
    """
    try:
        with open(routes) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) < 10:
            continue
        dest, plen, flags, dev = fields[0], fields[1], int(fields[8], 16), fields[9]
        if dest == "0" * 32 and plen == "00" and not flags & 0x0200 and dev not in ("lo", exclude):
            return True
    return False


@implementer(IRandomPort)
class _RandomPort:
    """
    One random port the client opened for the tunnel (RFC 6081 section 5.4).
    """

    def __init__(self, port: int, listening: Any, protocol: ServicePort) -> None:
        self.port = port
        self._listening: Any = listening
        self._protocol = protocol

    def sendto(self, data: bytes, addr: Endpoint) -> None:
        if self._listening is not None:
            self._protocol.sendto(data, addr)

    def close(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.stopListening()


@implementer(ITeredoRole, IDiscoveryHost, IRandomPorts, IGuessSockets)
class TeredoClient(TunnelRole):
    """
    A Teredo client.

    @param settings: the validated C{[client]} table (L{teredonode.config.ClientSettings}).
    @param reactor: C{IReactorTime} and C{IReactorUDP} (a L{teredonode.testing.FakeHost}
        in tests).
    @param tun: the Teredo interface.
    @param netconfig: configures it (addresses, MTU, routes).
    @param hasOtherIPv6: does the host have IPv6 otherwise?  Makes the client dormant
        (G-03, C{dormant-with-native}) and, with C{default-route = "auto"}, routeless.
    @param rng: jitter and the address's random flag bits (a seeded C{random.Random} in
        tests; C{random.SystemRandom} in production).
    @param randbytes: nonces (C{secrets.token_bytes} in production).
    @param backoff: the wait after failed qualifications (L{JitteredBackoff} by default).
    @param portMapping: asks the NAT for a mapping of the service port before qualifying
        (C{port-mapping}, X-UPNP); C{None}: never.
    @param localAddress: C{server -> the local IPv4 address toward it} (the kernel's choice,
        L{teredonode.probe.local_address}, in production), for the Alternate Address trailer
        of Hairpinning (X-HP-05b) when the service port is bound to every address; L{None}:
        only a C{bind} address is advertised.
    @param fastpath: loads the kernel fast path for trusted peers
        (L{teredonode.fastpath.client.load}); C{None}: the Python path only.
    """

    roleName = "client"
    log = Logger()

    def __init__(
        self,
        settings: Any,
        reactor: Any,
        tun: ITunDevice,
        netconfig: INetworkConfigurator,
        hasOtherIPv6: Callable[[], bool] = lambda: False,
        rng: random.Random | None = None,
        randbytes: Callable[[int], bytes] | None = None,
        backoff: Backoff | None = None,
        portMapping: IPortMapping | None = None,
        localAddress: Callable[[str], str | None] | None = None,
        fastpath: Callable[[Any, Any, PeerList], Any] | None = None,
    ) -> None:
        TunnelRole.__init__(self, settings, reactor, tun, netconfig, randbytes)
        self._fastPathLoader = fastpath
        self._fastPath: Any = None
        self._localAddress = localAddress
        self._portMapping = portMapping if settings.port_mapping else None
        #: The refresh interval RFC 4380 section 5.2.7 measured, once it exceeds the setting.
        self._measuredRefresh: float | None = None
        #: The NAT's mapping of our service port (X-UPNP-06/07), or None.
        self.portMapped: Any = None
        self._portMapError: str | None = None
        self._portMapTimer: Any = None
        self._hasOtherIPv6 = hasOtherIPv6
        self._rng = rng if rng is not None else random.SystemRandom()
        self._secret = settings.secret.encode() if settings.secret else None
        self._clientId = settings.client_id.encode() if settings.client_id else b""
        self.counters = CounterSet(COUNTERS)
        self.drops = CounterSet(DROP_REASONS)
        peers = self._peerList()
        self._inboundBudget = ProbeBudget(  # SEC-19
            reactor, settings.inbound_probe_rate, settings.inbound_probe_burst
        )
        self.tunnel = TeredoTunnel(
            reactor, CLIENT_POLICY, peers, self._socket.sendto, self._toHost, self._randbytes,
            inboundBudget=self._inboundBudget,
            counters=self.counters,
            drops=self.drops,
            symmetricNat=settings.symmetric_nat_support,
            serverLoadReduction=settings.server_load_reduction,
            hairpinning=settings.hairpinning,
            randomPorts=self if settings.port_preserving else None,
            maxRandomPorts=settings.random_ports,
            randomPortType=settings.random_port_type,
            sequentialPort=settings.sequential_port,
            echoTestRate=settings.echo_test_rate,
            guessSockets=self if settings.port_guessing else None,
            guessLimits=GuessLimits(
                sockets=settings.port_guessing_sockets,
                probes=settings.port_guessing_probes,
                rate=settings.port_guessing_rate,
            ),
            guessRng=self._rng,
        )
        # Qualification and maintenance: the machine decides, this role acts.
        self._machine = Qualification(
            self._policy(settings),
            nonce=lambda: self._randbytes(8),
            uniform=self._rng.uniform,
            backoff=backoff if backoff is not None else JitteredBackoff(self._rng.uniform),
            now=reactor.seconds,
            native_ipv6=hasOtherIPv6,
            local_port=self.localPort,
        )
        self._timer: Any = None
        self._started = False
        self._lastServer: str = settings.server
        self._lastSecondary: str | None = settings.secondary
        self._lastNat = "unknown"
        #: X-PP-06: the NAT kept our local port in the mapping.
        self.portPreserving = False
        #: RFC 4380 section 5.2.7 (refresh-determination): the procedure, its port, timer.
        self._interval: interval.IntervalProbe | None = None
        self._intervalSocket = ServicePort(self._secondaryReceived)
        self._intervalPort: Any = None
        self._intervalTimer: Any = None
        self.keyExpired = False
        self.mapping: Endpoint | None = None
        self.address: TeredoAddress | None = None
        self.linkLocal: bytes | None = None
        self.mtu = DEFAULT_MTU
        self.defaultRoute = False
        self._rsSentAt = 0.0  # for the RS->RA latency metric
        self._qualifyingSince: float | None = None  # for the qualification-time metric
        self._lastServerRx: float | None = None
        self.discovery: LocalDiscovery | None = None
        if settings.local_discovery:
            if settings.port == TEREDO_PORT:
                # The group socket binds 3544 too; a shared port could not tell unicast from
                # multicast.  RFC 4380 section 5.2 advises against this port for clients.
                self.log.warn("Local discovery disabled: the service port must not be 3544")
            else:
                self.discovery = LocalDiscovery(
                    reactor,
                    self,
                    self.tunnel,
                    self._rng.uniform,
                    self.counters,
                    self.drops,
                    address=settings.local_discovery_address,
                    bind=settings.bind,
                )
                self.tunnel.setLocalAnnouncer(self.discovery.announceNow)

    # -- service ---------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """
        Bind the service port and bring the TUN up (no address yet) while still root.
        """
        from teredonode.fastpath.client import loadFor, startFor

        fast = loadFor(self, self._fastPathLoader, self._reactor)  # before anything opens
        discovery = self.discovery
        if discovery is None:
            self._port = self._reactor.listenUDP(
                self.settings.port, self._socket, interface=self.settings.bind
            )
        else:
            self._port = self._reactor.listenMulticast(
                self.settings.port, self._socket, interface=self.settings.bind
            )
            discovery.configureSender(self._port)
            discovery.listen()
        self._tun.open()
        self._netconfig.linkUp(self._tun.name, DEFAULT_MTU)
        self._tun.startReading(self.packetFromHost)
        self._fastPath = startFor(self, fast, self._tun.name)
        Service.privilegedStartService(self)

    def startService(self) -> None:
        TunnelRole.startService(self)
        self._started = True
        self._start()

    def stopService(self) -> Any:
        Service.stopService(self)
        self._cancel()
        self._feed(self._machine.stop(), self._machine.state)
        if self._portMapTimer is not None and self._portMapTimer.active():
            self._portMapTimer.cancel()
        self._portMapTimer = None
        unmapped: Any = None
        if self._portMapping is not None and self.portMapped is not None:
            self.portMapped = None
            unmapped = self._portMapping.unmap()  # X-UPNP-13
        fast, self._fastPath = self._fastPath, None
        if fast is not None:
            fast.stopFor(self)
        self.tunnel.stop()
        self._tun.close()
        port, self._port = self._port, None
        if self.discovery is not None:
            self.discovery.close()
        waits = [d for d in (port.stopListening() if port is not None else None, unmapped) if d is not None]
        # twistd waits for the mapping's deletion (X-UPNP-13) before the reactor stops.
        return gatherResults(waits) if waits else None

    def _randomPortsStatus(self) -> dict[str, Any]:
        """RFC 6081 section 5.4: the random ports open now, and the limit."""
        pp = self.tunnel.portPreserving
        if pp is None:
            return {"state": "off"}
        return {"state": "on", "open": pp.openPorts(), "max": pp.maxPorts}

    def _intervalStatus(self) -> dict[str, Any]:
        probe = self._interval
        if probe is None:
            return {"state": "off" if not self.settings.refresh_determination else "waiting"}
        state = probe.state
        if isinstance(state, interval.Done):
            return {"state": "done", "reason": state.reason, "refresh": state.refresh}
        search = state.search
        return {
            "state": type(state).__name__.lower(),
            "refresh": search.refresh,
            "candidate": search.candidate,
            "maximum": search.maximum,
        }

    def localPort(self) -> int:
        """
        The UDP port the client's socket is bound to (0 before it is), which its NAT maps:
        what hairpinning and local discovery advertise and tests compare mappings with.
        """
        port = self._port
        return int(port.getHost().port) if port is not None else 0

    # -- IDiscoveryHost ----------------------------------------------------------------------

    def isQualified(self) -> bool:
        return self.state == "qualified"

    def mappedAddress(self) -> str | None:
        return self.mapping[0] if self.mapping is not None else None

    def sendDatagram(self, data: bytes, endpoint: Endpoint) -> None:
        self._socket.sendto(data, endpoint)

    # -- IRandomPorts (RFC 6081 section 5.4) ---------------------------------------------------

    def openRandomPort(self, port: int, receive: Callable[[Any, Endpoint], None]) -> IRandomPort | None:
        """
        X-PP-08: listen on UDP C{port} of the service port's address for the tunnel; what
        arrives passes the service port's checks (a Teredo payload, qualified) first.
        """
        protocol = ServicePort(lambda data, addr: self._randomPortReceived(data, addr, receive))
        try:
            listening = self._reactor.listenUDP(port, protocol, interface=self.settings.bind)
        except (OSError, CannotListenError):
            return None
        return _RandomPort(port, listening, protocol)

    def openGuessSockets(
        self, count: int, receive: Callable[[int, Any, Endpoint], None]
    ) -> list[IRandomPort | None]:
        """
        Port guessing's opener: C{count} sockets on ephemeral ports of the service port's
        address; what arrives passes the service port's checks first.
        """
        handles: list[IRandomPort | None] = []
        for index in range(count):
            protocol = ServicePort(
                lambda data, addr, i=index: self._randomPortReceived(  # type: ignore[misc]
                    data, addr, lambda packet, source: receive(i, packet, source)
                )
            )
            try:
                listening = self._reactor.listenUDP(0, protocol, interface=self.settings.bind)
            except (OSError, CannotListenError):
                handles.append(None)
                continue
            handles.append(_RandomPort(int(listening.getHost().port), listening, protocol))
        return handles

    def echoSolicitation(self, nonce: bytes) -> bytes:
        """X-SEQ-06: the Echo Test's RSs are the qualification's, with their own nonces."""
        return self._routerSolicitation(nonce)

    def _randomPortReceived(
        self, data: bytes, addr: Endpoint, receive: Callable[[Any, Endpoint], None]
    ) -> None:
        self.counters["received"] += 1
        try:
            packet = classify(data)
        except ParseError:
            self.drops["malformed"] += 1
            return
        if self.state != "qualified":
            self.drops["not-qualified"] += 1
            return
        receive(packet, addr)

    # -- I/O glue ----------------------------------------------------------------------------

    def _toHost(self, packet: bytes) -> None:
        self._tun.write(packet)

    def packetFromHost(self, packet: bytes) -> None:
        """
        A packet from the TUN: nothing leaves before qualification (CL-Q-01).
        """
        if self.state != "qualified":
            self.drops["not-qualified"] += 1
            return
        self.tunnel.fromHost(packet)

    def datagramReceived(self, data: bytes, addr: Endpoint) -> None:
        """
        One datagram on the service port.
        """
        packet = self._classified(data)
        if packet is None:
            return
        if addr[1] == TEREDO_PORT and (addr[0] == self.server or addr[0] == self.secondary):
            self._lastServerRx = self._reactor.seconds()
            self._machine.heard_from_server()  # CL-M-02
            header = packet.header
            if (
                header.next_header == NH_ICMPV6
                and is_link_local(header.src)
                and len(packet.ipv6) > 40
                and packet.ipv6[40] == ICMP_RA
            ):
                self._routerAdvertisement(packet)
                return
            if self.state != "qualified":
                self.drops["not-qualified"] += 1
                return
            self.tunnel.fromServer(packet, addr)
            return
        if self.state != "qualified":
            self.drops["not-qualified"] += 1
            return
        if packet.header.dst == ALL_NODES and packet.is_bubble:
            # CL-LD-03: discovery bubbles count only when they come to the group.
            self.drops["discovery-unicast"] += 1
            return
        self.tunnel.fromPeer(packet, addr)

    # -- qualification and maintenance ------------------------------------------------------
    #
    # The decisions are L{teredonode.roles.qualification}'s; this part carries out its
    # effects (packets, timers, interface changes, log lines, counters).

    @property
    def state(self) -> str:
        """offline, dormant, probing or qualified (what C{teredo status} shows)."""
        return self._machine.state.shown

    @property
    def nat(self) -> str:
        state = self._machine.state
        if isinstance(state, (Qualified, Refreshing)):
            return state.nat
        return self._lastNat

    @property
    def offlineReason(self) -> str | None:
        state = self._machine.state
        if isinstance(state, Offline):
            return state.reason
        if isinstance(state, Stopped):
            return "stopped" if self._started else "not started"
        if isinstance(state, Dormant):
            return "native IPv6"
        return None

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _feed(self, effects: list[Effect], before: State) -> None:
        """
        Carry out C{effects}, then give the new state its own timer (a state that did not
        change keeps the one it has).
        """
        for effect in effects:
            self._do(effect)
        state = self._machine.state
        if state is before:
            return
        self._cancel()
        if isinstance(state, (SolicitingPrimary, SolicitingSecondary)) and self._qualifyingSince is None:
            self._qualifyingSince = self._reactor.seconds()
        if state.timeout is not None and self.running:
            self._timer = self._reactor.callLater(state.timeout, self._timerFired)

    def _timerFired(self) -> None:
        self._timer = None
        before = self._machine.state
        self._feed(self._machine.timer(), before)

    def _start(self) -> None:
        before = self._machine.state
        self._feed(self._machine.start(), before)

    def _resolved(self, address: str) -> None:
        if not self.running:
            return
        before = self._machine.state
        self._feed(self._machine.resolved(address), before)

    def _resolveFailed(self, failure: Any) -> None:
        if not self.running:
            return
        before = self._machine.state
        self._feed(self._machine.resolve_failed(), before)

    def _routerAdvertisement(self, packet: TeredoPacket) -> None:
        before = self._machine.state
        effects = self._machine.router_advertisement(packet)
        if not any(isinstance(effect, Drop) for effect in effects):
            self.counters["ra-accepted"] += 1
            observe("rs-ra", self._reactor.seconds() - self._rsSentAt)
        self._feed(effects, before)

    def _do(self, effect: Effect) -> None:
        if isinstance(effect, SendSolicitation):
            self._solicit(effect.target, effect.nonce)
        elif isinstance(effect, RequestPortMapping):
            self._requestPortMapping()
        elif isinstance(effect, Configure):
            self._configure(effect)
        elif isinstance(effect, Drop):
            self.drops[effect.reason] += 1
        elif isinstance(effect, Resolve):
            d = self._reactor.resolve(effect.name)
            d.addCallbacks(self._resolved, self._resolveFailed)
        elif isinstance(effect, Unconfigure):
            self._unconfigure()
        elif isinstance(effect, WentOffline):
            self.log.warn(
                "Teredo client offline ({reason}); retrying in {delay:.0f} s",
                reason=effect.reason, delay=effect.retry_in,
            )
        elif isinstance(effect, ServerLost):
            self.counters["server-lost"] += 1
            self.log.warn("Lost Teredo server {server}: qualifying again", server=effect.server)
        elif isinstance(effect, SymmetricNat):
            self._lastNat = "symmetric"
            self.log.warn(
                "Symmetric NAT: server {server} sees {a}, {secondary} sees {b}; Teredo "
                "peers cannot reach this host",
                server=self.server, a=_ep(effect.primary), secondary=self.secondary,
                b=_ep(effect.secondary),
            )
        elif isinstance(effect, SecondarySilent):
            self._lastNat = "unknown"
            self.log.warn(
                "Teredo server's secondary address {secondary} does not answer: "
                "NAT type unknown (symmetric NATs go undetected)",
                secondary=effect.secondary,
            )
        elif isinstance(effect, WentDormant):
            self.log.info("Native IPv6 present: Teredo client dormant (RFC 4380 section 5.5)")
        elif isinstance(effect, KeyExpired):
            if not self.keyExpired:
                self.keyExpired = True
                self.log.warn("Teredo server says our secure-qualification key has expired")

    @property
    def server(self) -> str:
        """The primary server: its address once resolved, else the configured name."""
        state = self._machine.state
        if isinstance(state, _SERVED):
            return state.server
        return self._lastServer

    @property
    def secondary(self) -> str | None:
        state = self._machine.state
        if isinstance(state, _SERVED):
            return state.secondary
        return self._lastSecondary

    def _solicit(self, target: str, nonce: bytes) -> None:
        """
        CL-Q-02, RFC 5991: one RS from the restricted link-local address, with the nonce
        (and, for secure qualification, the client identifier and HMAC) in front.
        """
        state = self._machine.state
        if isinstance(state, _SERVED):
            self._lastServer, self._lastSecondary = state.server, state.secondary
        self._socket.sendto(self._routerSolicitation(nonce), (target, TEREDO_PORT))
        self.counters["rs-sent"] += 1
        self._rsSentAt = self._reactor.seconds()

    def _routerSolicitation(self, nonce: bytes) -> bytes:
        """The RS with its authentication indicator (nonce; HMAC for secure qualification)."""
        rs = icmpv6_packet(CLIENT_LINK_LOCAL_RESTRICTED, ALL_ROUTERS, RouterSolicitation(), 255)
        value = b""
        if self._secret is not None:
            value = teredo_auth_value(self._secret, nonce, 0, b"", rs)
        return AuthIndicator(nonce, self._clientId, value).to_bytes() + rs

    def _configure(self, effect: Configure) -> None:
        """
        Qualified (or refreshed): configure the address when it is new or changed
        (CL-M-05).
        """
        answer = effect.answer
        mapping, prefix, mtu = answer.mapping, answer.prefix, answer.mtu
        self._lastNat = effect.nat
        self.portPreserving = effect.port_preserving
        if self.tunnel.portPreserving is not None:
            # X-PP-06 and the secondary server's verdict: the flags section 5.4 reads.
            secondary = self.secondary
            self.tunnel.portPreserving.setNat(
                effect.nat == "symmetric",
                effect.port_preserving,
                (secondary, TEREDO_PORT) if secondary else None,
            )
        if self.tunnel.portGuessing is not None:
            nat = {"symmetric": True, "restricted-or-cone": False}.get(effect.nat)
            self.tunnel.portGuessing.setNat(nat, effect.port_preserving)
        if effect.first:
            self.counters["qualifications"] += 1
            if self._qualifyingSince is not None:
                observe("qualification", self._reactor.seconds() - self._qualifyingSince)
        self._qualifyingSince = None
        changed = self.address is None or mapping != self.mapping or prefix != self._prefix64()
        if mtu != self.mtu:
            self.mtu = mtu
            self._netcall(self._netconfig.linkUp, self._tun.name, mtu)
        if changed:
            if self.address is not None:
                self.counters["address-changes"] += 1
                # Every peer knew us by the old address and mapping: trust must be earned
                # again (a relay drops packets from a mapping it does not know -- Miredo's
                # does -- so a peer kept trusted would be sent to straight into a drop).
                self.tunnel.reset()
            self._removeAddresses()
            server = ipv4.unpack(prefix[4:8])
            flags = random_flags(False, self._rng.getrandbits)
            self.address = TeredoAddress(prefix[:4], server, flags, mapping[1], mapping[0])
            self.mapping = mapping
            self.linkLocal = link_local(flags, mapping[1], mapping[0])
            name = self._tun.name
            self._netcall(self._netconfig.addAddress, name, str(self.address), 32)
            self._netcall(self._netconfig.addAddress, name, ipv6_text(self.linkLocal), 64)
            self.tunnel.setIdentity(
                self.address.to_bytes(), (effect.server, TEREDO_PORT), self.linkLocal
            )
            self.log.info(
                "Teredo address {address} (mapping {mapping}, NAT {nat}, server {server})",
                address=str(self.address), mapping=_ep(mapping), nat=effect.nat, server=effect.server,
            )
            if self.discovery is not None:
                self.discovery.start()
        self._updateDefaultRoute()
        self._updateNatFacts()
        if effect.first and self.settings.refresh_determination and self._interval is None:
            self._startIntervalDetermination()

    def _prefix64(self) -> bytes | None:
        if self.address is None:
            return None
        return self.address.to_bytes()[:8]

    # -- interface configuration -----------------------------------------------------------

    def _netcall(self, method: Callable[..., None], *args: Any) -> None:
        """
        Configuration errors are logged and counted, never raised into the data path.
        """
        try:
            method(*args)
        except NetConfigError as e:
            self.counters["netconfig-errors"] += 1
            self.log.error("{error}", error=str(e))

    def _wantDefaultRoute(self) -> bool:
        setting = self.settings.default_route
        if setting == "auto":
            return not self._hasOtherIPv6()
        return bool(setting)

    def _updateDefaultRoute(self) -> None:
        want = self._wantDefaultRoute()
        if want and not self.defaultRoute:
            self._netcall(self._netconfig.addRoute, self._tun.name, "::/0", DEFAULT_ROUTE_METRIC)
            self.defaultRoute = True
        elif not want and self.defaultRoute:
            self._netcall(self._netconfig.removeRoute, self._tun.name, "::/0")
            self.defaultRoute = False

    def _removeAddresses(self) -> None:
        name = self._tun.name
        if self.address is not None:
            self._netcall(self._netconfig.removeAddress, name, str(self.address), 32)
        if self.linkLocal is not None:
            self._netcall(self._netconfig.removeAddress, name, ipv6_text(self.linkLocal), 64)
        self.address = None
        self.linkLocal = None

    def _unconfigure(self) -> None:
        """
        Back to an address-less, route-less, still-up interface; peers forgotten.
        """
        if self.defaultRoute:
            self._netcall(self._netconfig.removeRoute, self._tun.name, "::/0")
            self.defaultRoute = False
        self._removeAddresses()
        self.mapping = None
        self.tunnel.setIdentity(None, None)
        self._updateNatFacts()
        if self.discovery is not None:
            self.discovery.stop()
        if self._interval is not None:
            self._intervalFeed(self._interval.stop())

    # -- port mapping (RFC 6081 X-UPNP-03..07, -13; X-HP-03) --------------------------------------

    def _requestPortMapping(self) -> None:
        mapper = self._portMapping
        if mapper is None:
            self._portMapDone()
            return
        d = mapper.map(self.localPort())
        d.addCallbacks(self._portMappedOk, self._portMapFailed)

    def _portMappedOk(self, mapping: Any) -> None:
        self.portMapped = mapping
        self._portMapError = None
        self.counters["port-mappings"] += 1
        self._updateNatFacts()
        self.log.info(
            "Port mapping by {protocol}: {address}:{port} for {lifetime} s",
            protocol=mapping.protocol, address=mapping.externalAddress, port=mapping.externalPort,
            lifetime=mapping.lifetime,
        )
        if mapping.lifetime and self.running:
            # PCP and NAT-PMP mappings expire: renew at half their lifetime.
            self._portMapTimer = self._reactor.callLater(mapping.lifetime / 2, self._renewPortMapping)
        self._portMapDone()

    def _portMapFailed(self, failure: Any) -> None:
        self._portMapError = failure.getErrorMessage()
        self.log.info("No port mapping ({error}); qualifying without", error=self._portMapError)
        self._portMapDone()

    def _portMapDone(self) -> None:
        if self.running:
            before = self._machine.state
            self._feed(self._machine.port_mapped(), before)

    def _renewPortMapping(self) -> None:
        self._portMapTimer = None
        if self._portMapping is not None and self.running:
            d = self._portMapping.map(self.localPort())
            d.addCallbacks(self._portMappedOk, self._portMapFailed)

    # -- RFC 6081 Hairpinning (X-HP-03..05) and UPnP bubble rules (X-UPNP-09, -11, -12) --------

    def _upnpMapping(self) -> Endpoint | None:
        """
        The UPnP-Mapped Address/Port as RFC 6081 keeps it: the router's mapping, zeroed
        (L{None}) once qualification saw that very mapping, i.e. behind a single NAT
        (X-UPNP-09, X-HP-04).
        """
        mapping = self.portMapped
        if mapping is None:
            return None
        external = (mapping.externalAddress, mapping.externalPort)
        return None if self.mapping is not None and external == self.mapping else external

    def _localEndpoint(self) -> Endpoint | None:
        """
        X-HP-05b: our local address and port: the bind address, else the kernel's source
        address toward the server.
        """
        port = self.localPort()
        address: str | None = self.settings.bind
        if address in ("", "0.0.0.0"):
            address = self._localAddress(self.server) if self._localAddress is not None else None
        return (address, port) if address and port else None

    def _updateNatFacts(self) -> None:
        """
        After qualification (and when the router's mapping changes), tell the tunnel what
        RFC 6081 needs of the NAT: the alternate addresses our indirect bubbles advertise
        (X-HP-05), and whether we sit behind a single UPnP-enabled symmetric NAT (Symmetric
        NAT flag, UPnP-Enabled NAT flag, zeroed UPnP mapping: X-UPNP-11, X-UPNP-12).
        """
        tunnel = self.tunnel
        if self.mapping is None:
            tunnel.setAlternates(None, None)
            tunnel.upnpSymmetric = False
            return
        upnp = self._upnpMapping()
        if tunnel.hairpinning:
            tunnel.setAlternates(self._localEndpoint(), upnp)
        tunnel.upnpSymmetric = self.nat == "symmetric" and self.portMapped is not None and upnp is None

    def _hairpinningStatus(self) -> dict[str, Any]:
        tunnel = self.tunnel
        return {
            "state": "on" if tunnel.hairpinning else "off",
            "alternates": [_ep(e) for e in tunnel.ownAlternates],
            "upnp-symmetric": tunnel.upnpSymmetric,
        }

    def _portMappingStatus(self) -> dict[str, Any]:
        mapping = self.portMapped
        if self._portMapping is None:
            return {"state": "off"}
        if mapping is None:
            return {"state": "none", "error": self._portMapError}
        external = (mapping.externalAddress, mapping.externalPort)
        return {
            "state": "mapped",
            "protocol": mapping.protocol,
            "external": _ep(external),
            "lifetime": mapping.lifetime,
            # X-UPNP-09: the server sees this very mapping (a single NAT).
            "same-as-server": self.mapping == external if self.mapping is not None else None,
        }

    # -- refresh interval determination (RFC 4380 section 5.2.7, CL-I-*) -------------------------

    def _startIntervalDetermination(self) -> None:
        """
        CL-I-02: right after the service port qualified, a secondary port (used for nothing
        else, CL-I-05) qualifies and the search begins.
        """
        self._interval = interval.IntervalProbe(float(self.settings.refresh), lambda: self._randbytes(8))
        try:
            self._intervalPort = self._reactor.listenUDP(
                0, self._intervalSocket, interface=self.settings.bind
            )
        except OSError as e:
            self.log.warn("Refresh interval determination off: {error}", error=str(e))
            self._interval = None
            return
        self._intervalFeed(self._interval.start())

    def _intervalFeed(self, effects: list[interval.Effect]) -> None:
        probe = self._interval
        assert probe is not None
        for effect in effects:
            if isinstance(effect, interval.SolicitSecondary):
                self._intervalSocket.sendto(self._routerSolicitation(effect.nonce), (self.server, TEREDO_PORT))
                self.counters["interval-probes"] += 1
            elif isinstance(effect, interval.SendBubble):
                self._intervalBubble(effect.prefix, effect.mapping)
                self.counters["interval-probes"] += 1
            elif isinstance(effect, interval.UseRefresh):
                self._useRefresh(effect.refresh)
            elif isinstance(effect, interval.Conclude):
                self._useRefresh(effect.refresh)
                self.log.info(
                    "Refresh interval {refresh:.0f} s (determination {reason})",
                    refresh=effect.refresh, reason=effect.reason,
                )
                port, self._intervalPort = self._intervalPort, None
                if port is not None:
                    port.stopListening()
        if self._intervalTimer is not None and self._intervalTimer.active():
            self._intervalTimer.cancel()
        self._intervalTimer = None
        timeout = probe.state.timeout
        if timeout is not None and self.running:
            self._intervalTimer = self._reactor.callLater(timeout, self._intervalTimerFired)

    def _intervalTimerFired(self) -> None:
        self._intervalTimer = None
        if self._interval is not None:
            self._intervalFeed(self._interval.timer())

    def _useRefresh(self, refresh: float) -> None:
        if refresh > self.settings.refresh:
            self._measuredRefresh = refresh
            self._machine.policy = self._policy(self.settings)

    def _intervalBubble(self, prefix: bytes, mapping: Endpoint) -> None:
        """CL-I-04 (2): an indirect bubble, through the server, to the secondary address."""
        if self.address is None:
            return
        target = TeredoAddress(prefix[:4], ipv4.unpack(prefix[4:8]), 0, mapping[1], mapping[0])
        self._socket.sendto(bubble(self.address.to_bytes(), target.to_bytes()), (self.server, TEREDO_PORT))

    def _secondaryReceived(self, data: bytes, addr: Endpoint) -> None:
        """
        The secondary port hears only the server: its RA, or the bubble it relayed to us.
        """
        probe = self._interval
        if probe is None or addr != (self.server, TEREDO_PORT):
            return
        try:
            packet = classify(data)
        except ParseError:
            return
        state = probe.state
        if isinstance(state, interval.Qualifying):
            verdict = validate_ra(packet, state.nonce, self.server, self._secret)
            if isinstance(verdict, Accepted):
                answer = verdict.answer
                self._intervalFeed(probe.answer(state.nonce, answer.mapping, answer.prefix))
        elif isinstance(state, interval.Listening) and packet.is_bubble:
            if self.address is not None and packet.header.src == self.address.to_bytes():
                self._intervalFeed(probe.bubble())

    # -- reload ------------------------------------------------------------------------------

    #: The settings L{reconfigure} applies while running (the others need a restart).
    liveSettings = (
        "inbound_probe_rate",
        "inbound_probe_burst",
        "allow_symmetric",
        "strict_secondary",
        "refresh",
        "dormant_with_native",
    )

    def _policy(self, settings: Any) -> Policy:
        measured = self._measuredRefresh
        return Policy(
            server=settings.server,
            secondary=settings.secondary,
            allow_symmetric=settings.allow_symmetric,
            symmetric_nat_support=settings.symmetric_nat_support,
            strict_secondary=settings.strict_secondary,
            refresh=max(float(settings.refresh), measured or 0.0),
            dormant_with_native=settings.dormant_with_native,
            secret=self._secret,
            port_mapping=self._portMapping is not None,
        )

    def reconfigure(self, settings: Any) -> None:
        """
        Apply a reloaded C{[client]} table: the budget of probes that incoming traffic may
        make us send (SEC-19; the bucket starts afresh, full) and the qualification policy
        (used from the next transition on).  Qualification, address and peers are kept.
        """
        self.settings = settings
        self._inboundBudget.setRates(settings.inbound_probe_rate, settings.inbound_probe_burst)
        self._machine.policy = self._policy(settings)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        from teredonode.fastpath.client import merged

        now = self._reactor.seconds()
        counters, fast = merged(self._fastPath, self.counters.snapshot())
        return {
            "state": self.state,
            "offline-reason": self.offlineReason if self.state == "offline" else None,
            "nat": self.nat,
            "port-mapping": self._portMappingStatus(),
            "hairpinning": self._hairpinningStatus(),
            "refresh-interval": self._machine.policy.refresh,
            "refresh-determination": self._intervalStatus(),
            "nat-flags": {  # RFC 6081 section 5: what qualification learnt of the NAT
                "symmetric": {"symmetric": True, "restricted-or-cone": False}.get(self.nat),
                "port-preserving": self.portPreserving if self.state == "qualified" else None,
            },
            "server": self.server,
            "secondary": self.secondary,
            "mapping": _ep(self.mapping) if self.mapping else None,
            "address": str(self.address) if self.address else None,
            "link-local": ipv6_text(self.linkLocal) if self.linkLocal else None,
            "interface": self._tun.name,
            "mtu": self.mtu,
            "default-route": self.defaultRoute,
            "secure": self._secret is not None,
            "key-expired": self.keyExpired,
            "last-server-contact": None if self._lastServerRx is None else round(now - self._lastServerRx, 3),
            "peers": self.tunnel.status(),
            "random-ports": self._randomPortsStatus(),
            "port-guessing": (
                self.tunnel.portGuessing.status() if self.tunnel.portGuessing is not None else {"state": "off"}
            ),
            "local-discovery": (
                self.discovery.status() if self.discovery is not None else {"state": "off"}
            ),
            "counters": counters,
            "fast-path": fast,
            "drops": self.drops.snapshot(),
        }


def _ep(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


def makeRole(settings: Any, reactor: Any) -> TeredoClient:
    """
    The production client: a real TUN, C{ip} for configuration, the kernel's routing table
    for the "other IPv6" check, system randomness, the router's port mapping protocols.
    """
    from teredonode.fastpath.client import load
    from teredonode.netconfig import NetlinkConfigurator
    from teredonode.portmap.client import GatewayPortMapping
    from teredonode.probe import local_address
    from teredonode.tun import TunDevice

    interface = settings.interface
    return TeredoClient(
        settings,
        reactor,
        TunDevice(interface, reactor=reactor),
        NetlinkConfigurator(),
        hasOtherIPv6=lambda: hostHasOtherIPv6(interface),
        portMapping=GatewayPortMapping(
            reactor, bind=settings.bind, state=settings.port_mapping_state or None  # X-UPNP-02
        ),
        localAddress=local_address,
        fastpath=load,
    )
