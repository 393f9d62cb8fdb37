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

import ipaddress
import random
import secrets
from collections import Counter
from typing import Any, Callable

from twisted.application.service import Service
from teredonode.logs import Logger
from teredonode.metrics import observe
from zope.interface import implementer

from teredonode.errors import NetConfigError
from teredonode.interfaces import Endpoint, INetworkConfigurator, ITeredoRole, ITunDevice
from teredonode.peers import PeerList
from teredonode.roles.discovery import DISCOVERY_DROPS, LocalDiscovery
from teredonode.roles.tunnel import CLIENT_POLICY, DROP_REASONS as TUNNEL_DROPS, ProbeBudget, TeredoTunnel
from teredonode.security import auth_matches, teredo_auth_value
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
    ALL_ROUTERS,
    NH_ICMPV6,
    RouterAdvertisement,
    RouterSolicitation,
    decode_icmpv6,
    icmpv6_packet,
    is_link_local,
)
from teredonode.wire.teredo import AuthIndicator, TeredoPacket, classify

__all__ = [
    "TeredoClient",
    "makeRole",
    "hostHasOtherIPv6",
    "DROP_REASONS",
    "QUALIFICATION_TIMEOUT",
    "QUALIFICATION_ATTEMPTS",
    "RESTART_DELAYS",
]

#: Section 5.2.1: T = 4 s, N = 3 attempts per phase (D7).
QUALIFICATION_TIMEOUT = 4.0
QUALIFICATION_ATTEMPTS = 3
#: Offline -> next attempt after these many seconds (x [0.75, 1] jitter), the last one
#: repeating forever.  RFC 4380 says nothing (CL-Q-10 [GAP]); Miredo waits 100 s.
RESTART_DELAYS = (10.0, 20.0, 40.0, 80.0, 160.0, 300.0)
#: The default route's metric: above every usual one, so any other IPv6 route wins.
DEFAULT_ROUTE_METRIC = 2048
DEFAULT_MTU = 1280

_ICMP_RA = 134

#: The client's own drop reasons; the tunnel's follow in the status.
CLIENT_DROPS = (
    "malformed",  # CL-RX-01: not a Teredo payload
    "not-qualified",  # CL-Q-01: nothing is accepted or sent before qualification
    "ra-unexpected",  # an RA while no RS is outstanding
    "ra-bad-nonce",  # CL-SQ-03: no auth indicator, or not our current nonce
    "ra-no-origin",  # CL-Q-05 (a)
    "ra-invalid",  # CL-Q-05 (b)(c): RFC 4861 validity, destination, checksum
    "ra-prefix",  # CL-Q-05 (d)(e): not exactly one /64 PIO in our server's Teredo prefix
    "ra-auth-rejected",  # secure qualification: the server does not know our identifier
    "ra-auth-failed",  # CL-SQ-05: wrong authentication value
    "ra-non-global-mapping",  # the mapping could not make a global Teredo address (G-10)
)
DROP_REASONS = CLIENT_DROPS + TUNNEL_DROPS + DISCOVERY_DROPS

_COUNTERS = (
    "received",
    "rs-sent",
    "ra-accepted",
    "qualifications",
    "address-changes",
    "server-lost",
    "netconfig-errors",
    "sent",
    "delivered",
    "queued",
    "released",
    "bubbles-direct",
    "bubbles-indirect",
    "bubbles-answered",
    "bubbles-received",
    "bubbles-suppressed",
    "bubbles-local",
    "discovery-sent",
    "discovery-suppressed",
    "discovery-received",
    "echo-tests",
    "echo-tests-ok",
    "echo-suppressed",
    "relay-rechecks",
    "probes-failed",
    "icmp-errors",
    "icmp-errors-limited",
    "log-suppressed",
)


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


@implementer(ITeredoRole)
class TeredoClient(Service):
    """
    A Teredo client.

    @param settings: the validated C{[client]} table (L{teredonode.config.ClientSettings}).
    @param reactor: C{IReactorTime} and C{IReactorUDP} (a L{teredonode.testing.FakeHost}
        in tests).
    @param tun: the Teredo interface.
    @param netconfig: configures it (addresses, MTU, routes).
    @param hasOtherIPv6: for C{default-route = "auto"}: does the host have IPv6 otherwise?
    @param rng: jitter and the address's random flag bits (a seeded C{random.Random} in
        tests; C{random.SystemRandom} in production).
    @param randbytes: nonces (C{secrets.token_bytes} in production).
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
    ) -> None:
        self.settings = settings
        self._reactor = reactor
        self._tun = tun
        self._netconfig = netconfig
        self._hasOtherIPv6 = hasOtherIPv6
        self._rng = rng if rng is not None else random.SystemRandom()
        self._randbytes = randbytes if randbytes is not None else secrets.token_bytes
        self.server: str = settings.server
        self.secondary: str | None = settings.secondary
        self._secret = settings.secret.encode() if settings.secret else None
        self._clientId = settings.client_id.encode() if settings.client_id else b""
        self._socket = ServicePort(self.datagramReceived)
        self._port: Any = None
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        peers = PeerList(
            reactor.seconds,
            max_peers=settings.max_peers,
            queue_packets=settings.peer_queue,
            queue_bytes=getattr(settings, "peer_queue_bytes", 10240),
        )
        self.tunnel = TeredoTunnel(
            reactor, CLIENT_POLICY, peers, self._socket.sendto, self._toHost, self._randbytes,
            symmetricNat=settings.symmetric_nat_support,
            inboundBudget=ProbeBudget(  # SEC-19
                reactor,
                settings.inbound_probe_rate,
                settings.inbound_probe_burst,
            ),
        )
        self.tunnel.counters = self.counters
        self.tunnel.drops = self.drops
        # Qualification state.
        self.state = "offline"
        self.nat = "unknown"
        self.offlineReason: str | None = "not started"
        self.keyExpired = False
        self.mapping: Endpoint | None = None
        self.address: TeredoAddress | None = None
        self.linkLocal: bytes | None = None
        self.mtu = DEFAULT_MTU
        self.defaultRoute = False
        self._phase: str | None = None
        self._attempts = 0
        self._nonce: bytes | None = None
        self._rsSentAt = 0.0  # for the RS->RA latency metric
        self._qualifyingSince: float | None = None  # for the qualification-time metric
        self._timer: Any = None
        self._failures = 0
        self._primary: tuple[Endpoint, bytes, int] | None = None
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
                    self.tunnel,
                    self._socket.sendto,
                    lambda: self.state == "qualified",
                    lambda: self.mapping[0] if self.mapping is not None else None,
                    self._rng.uniform,
                    self.counters,
                    self.drops,
                    address=settings.local_discovery_address,
                    bind=settings.bind,
                )

    # -- service ---------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """
        Bind the service port and bring the TUN up (no address yet) while still root.
        """
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
        Service.privilegedStartService(self)

    def startService(self) -> None:
        Service.startService(self)
        if self._port is None:
            self.privilegedStartService()
        self.tunnel.start()
        self._start()

    def stopService(self) -> Any:
        Service.stopService(self)
        self._cancel()
        self._unconfigure()
        self.tunnel.stop()
        self._tun.close()
        port, self._port = self._port, None
        self.state = "offline"
        self.offlineReason = "stopped"
        if self.discovery is not None:
            self.discovery.close()
        if port is not None:
            return port.stopListening()
        return None

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
        self.counters["received"] += 1
        try:
            packet = classify(data)
        except ParseError:
            self.drops["malformed"] += 1
            return
        if addr[1] == TEREDO_PORT and (addr[0] == self.server or addr[0] == self.secondary):
            self._lastServerRx = self._reactor.seconds()
            header = packet.header
            if (
                header.next_header == NH_ICMPV6
                and is_link_local(header.src)
                and len(packet.ipv6) > 40
                and packet.ipv6[40] == _ICMP_RA
            ):
                self._routerAdvertisement(packet, addr)
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

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _start(self) -> None:
        """
        Resolve the server when it is a name (again at every attempt, as the address behind
        a name may move), then qualify.
        """
        self._timer = None
        name = self.settings.server
        try:
            ipv4.pack(name)
        except ParseError:
            pass
        else:
            self._resolved(name)
            return
        self.state = "probing"
        d = self._reactor.resolve(name)
        d.addCallbacks(self._resolved, lambda f: self._offline(f"cannot resolve {name}"))

    def _resolved(self, address: str) -> None:
        if not self.running:
            return
        self.server = address
        if self.settings.secondary is None:
            following = int(ipaddress.IPv4Address(address)) + 1
            self.secondary = str(ipaddress.IPv4Address(following & 0xFFFFFFFF))
        self._qualify()

    def _qualify(self) -> None:
        """
        CL-Q-02, RFC 5991: start in the restricted phase against the primary address.
        """
        self._cancel()
        if self.state != "qualified":
            self.state = "probing"
            if self._qualifyingSince is None:
                self._qualifyingSince = self._reactor.seconds()
        self._phase = "primary"
        self._attempts = 0
        self._primary = None
        self._solicit()

    def _solicit(self) -> None:
        """
        Send one RS for the current phase with a fresh nonce, and arm its time-out.
        """
        target = self.secondary if self._phase == "secondary" else self.server
        assert target is not None
        nonce = self._randbytes(8)
        self._nonce = nonce
        rs = icmpv6_packet(CLIENT_LINK_LOCAL_RESTRICTED, ALL_ROUTERS, RouterSolicitation(), 255)
        value = b""
        if self._secret is not None:
            value = teredo_auth_value(self._secret, nonce, 0, b"", rs)
        auth = AuthIndicator(nonce, self._clientId, value).to_bytes()
        self._socket.sendto(auth + rs, (target, TEREDO_PORT))
        self.counters["rs-sent"] += 1
        self._rsSentAt = self._reactor.seconds()
        self._timer = self._reactor.callLater(QUALIFICATION_TIMEOUT, self._timedOut)

    def _timedOut(self) -> None:
        self._timer = None
        self._attempts += 1
        if self._attempts < QUALIFICATION_ATTEMPTS:
            self._solicit()
            return
        phase, self._phase, self._nonce = self._phase, None, None
        if phase == "secondary":
            # The RFC calls the service unusable; a silent secondary address is far more
            # often a firewall than a symmetric NAT, so we qualify and say we do not know.
            assert self._primary is not None
            self.log.warn(
                "Teredo server's secondary address {secondary} does not answer: "
                "NAT type unknown (symmetric NATs go undetected)",
                secondary=self.secondary,
            )
            self.nat = "unknown"
            self._qualified(*self._primary)
        elif phase == "refresh":
            self.counters["server-lost"] += 1
            self.log.warn("Lost Teredo server {server}: qualifying again", server=self.server)
            self._unconfigure()
            self.state = "probing"
            self._qualify()
        else:
            self._offline(f"no answer from server {self.server}")

    def _offline(self, reason: str) -> None:
        """
        CL-Q-10: offline, address removed, TUN kept up; retry later with backoff.
        """
        self._cancel()
        self._unconfigure()
        self.state = "offline"
        self.offlineReason = reason
        self._phase = None
        delay = RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS) - 1)]
        delay *= self._rng.uniform(0.75, 1.0)
        self._failures += 1
        self.log.warn("Teredo client offline ({reason}); retrying in {delay:.0f} s", reason=reason, delay=delay)
        self._timer = self._reactor.callLater(delay, self._start)

    def _routerAdvertisement(self, packet: TeredoPacket, addr: Endpoint) -> None:
        """
        CL-Q-05 / CL-M-04 / CL-SQ-03..07: validate, then act for the current phase.
        """
        drops = self.drops
        auth = packet.auth
        if self._phase is None or self._nonce is None:
            drops["ra-unexpected"] += 1
            return
        if auth is None or auth.nonce != self._nonce:
            drops["ra-bad-nonce"] += 1
            return
        origin = packet.origin
        if origin is None:
            drops["ra-no-origin"] += 1
            return
        header = packet.header
        if header.hop_limit != 255 or header.dst != CLIENT_LINK_LOCAL_RESTRICTED:
            drops["ra-invalid"] += 1
            return
        try:
            ra = decode_icmpv6(packet.ipv6[40:], header.src, header.dst)
        except ParseError:
            drops["ra-invalid"] += 1
            return
        if not isinstance(ra, RouterAdvertisement):
            drops["ra-invalid"] += 1
            return
        if self._secret is not None:
            if auth.confirmation and not auth.auth_value:
                drops["ra-auth-rejected"] += 1
                return
            if not auth_matches(
                self._secret, auth.auth_value, auth.nonce, auth.confirmation,
                origin.to_bytes(), packet.ipv6,
            ):
                drops["ra-auth-failed"] += 1
                return
        if len(ra.prefixes) != 1:
            drops["ra-prefix"] += 1
            return
        pio = ra.prefixes[0]
        if (
            pio.prefix_length != 64
            or pio.prefix[:4] != GLOBAL_PREFIX
            or pio.prefix[4:8] != ipv4.pack(self.server)
        ):
            drops["ra-prefix"] += 1
            return
        if not ipv4.is_global_unicast(origin.ip):
            drops["ra-non-global-mapping"] += 1
            return
        if self._secret is not None and auth.confirmation and not self.keyExpired:
            self.keyExpired = True
            self.log.warn("Teredo server says our secure-qualification key has expired")
        mtu = ra.mtu if ra.mtu is not None and 1280 <= ra.mtu <= 65535 else DEFAULT_MTU
        result = ((origin.ip, origin.port), pio.prefix[:8], mtu)
        self.counters["ra-accepted"] += 1
        observe("rs-ra", self._reactor.seconds() - self._rsSentAt)
        self._cancel()
        phase, self._nonce = self._phase, None
        if phase == "primary":
            self._primary = result
            self._phase = "secondary"
            self._attempts = 0
            self._solicit()
        elif phase == "secondary":
            assert self._primary is not None
            self._phase = None
            if result[0] != self._primary[0]:
                self.nat = "symmetric"
                self.log.warn(
                    "Symmetric NAT: server {server} sees {a}, {secondary} sees {b}; Teredo "
                    "peers cannot reach this host",
                    server=self.server, a=_ep(self._primary[0]), secondary=self.secondary,
                    b=_ep(result[0]),
                )
                if not self.settings.allow_symmetric:
                    self._offline("symmetric NAT (set allow-symmetric to go online anyway)")
                    return
            else:
                self.nat = "restricted-or-cone"
            self._qualified(*self._primary)
        else:
            self._phase = None
            self._qualified(*result)

    def _qualified(self, mapping: Endpoint, prefix: bytes, mtu: int) -> None:
        """
        Qualified (or refreshed): configure the address when it is new or changed
        (CL-M-05), then schedule the next refresh (CL-M-06).
        """
        first = self.state != "qualified"
        self.state = "qualified"
        self.offlineReason = None
        self._failures = 0
        if first:
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
            self._netcall(self._netconfig.addAddress, name, _text(self.linkLocal), 64)
            self.tunnel.setIdentity(
                self.address.to_bytes(), (self.server, TEREDO_PORT), self.linkLocal
            )
            self.log.info(
                "Teredo address {address} (mapping {mapping}, NAT {nat}, server {server})",
                address=str(self.address), mapping=_ep(mapping), nat=self.nat, server=self.server,
            )
            if self.discovery is not None:
                self.discovery.start()
        self._updateDefaultRoute()
        delay = self.settings.refresh * self._rng.uniform(0.75, 1.0)
        self._timer = self._reactor.callLater(delay, self._refresh)

    def _refresh(self) -> None:
        """
        CL-M-02/03: a maintenance RS to the primary address.
        """
        self._timer = None
        self._phase = "refresh"
        self._attempts = 0
        self._solicit()

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
            self._netcall(self._netconfig.removeAddress, name, _text(self.linkLocal), 64)
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
        if self.discovery is not None:
            self.discovery.stop()

    # -- reload ------------------------------------------------------------------------------

    #: The settings L{reconfigure} applies while running (the others need a restart).
    liveSettings = ("inbound_probe_rate", "inbound_probe_burst")

    def reconfigure(self, settings: Any) -> None:
        """
        Apply a reloaded C{[client]} table: the budget of probes that incoming traffic may
        make us send (SEC-19; the bucket starts afresh, full).  Qualification, address and
        peers are kept.
        """
        self.settings = settings
        budget = self.tunnel._inboundBudget
        if budget is not None:
            budget.setRates(settings.inbound_probe_rate, settings.inbound_probe_burst)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self._reactor.seconds()
        return {
            "state": self.state,
            "offline-reason": self.offlineReason if self.state == "offline" else None,
            "nat": self.nat,
            "server": self.server,
            "secondary": self.secondary,
            "mapping": _ep(self.mapping) if self.mapping else None,
            "address": str(self.address) if self.address else None,
            "link-local": _text(self.linkLocal) if self.linkLocal else None,
            "interface": self._tun.name,
            "mtu": self.mtu,
            "default-route": self.defaultRoute,
            "secure": self._secret is not None,
            "key-expired": self.keyExpired,
            "last-server-contact": None if self._lastServerRx is None else round(now - self._lastServerRx, 3),
            "peers": self.tunnel.status(),
            "local-discovery": (
                self.discovery.status() if self.discovery is not None else {"state": "off"}
            ),
            "counters": {k: self.counters[k] for k in _COUNTERS},
            "drops": {reason: self.drops[reason] for reason in DROP_REASONS},
        }


def _ep(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


def _text(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


def makeRole(settings: Any, node: Any, reactor: Any) -> TeredoClient:
    """
    The production client: a real TUN, C{ip} for configuration, the kernel's routing table
    for the "other IPv6" check, system randomness.
    """
    from teredonode.netconfig import NetlinkConfigurator
    from teredonode.tun import TunDevice

    interface = settings.interface
    return TeredoClient(
        settings,
        reactor,
        TunDevice(interface, reactor=reactor),
        NetlinkConfigurator(),
        hasOtherIPv6=lambda: hostHasOtherIPv6(interface),
    )
