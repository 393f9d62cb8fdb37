"""
The Teredo server (RFC 4380 section 5.3, RFC 5991 section 3.2).

Stateless, as the RFC says: it answers Router Solicitations with Router Advertisements that
carry the client's mapped address (origin indication), forwards bubbles and ICMPv6 echo
between its clients and their peers, and hands clients' echo tests to native IPv6 through an
optional TUN device.  The only memory it keeps is the per-source rate limiter (bounded) and
its counters.

Every received datagram takes one pass (L{TeredoServer.datagramReceived}): the validity
checks of section 5.3.1 in the RFC's order (SV-IN-1..8 in the requirements digest), each
drop counted under a named reason, then destination processing (SV-FW-1..7, SV-RA-01..11).
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from teredonode.logs import Logger
from zope.interface import implementer

from teredonode.counters import CounterSet
from teredonode.interfaces import INetworkConfigurator, ITeredoRole, ITunDevice
from teredonode.security import (
    OVER_GLOBAL,
    PASS,
    RateLimiter,
    TokenBucket,
    auth_matches,
    source_key,
    teredo_auth_value,
)
from teredonode.udp import ServicePort
from teredonode.wire import ipv4
from teredonode.wire.address import (
    FLAG_CONE,
    TEREDO_PORT,
    mapping_is_global,
    mapping_of,
    obfuscated_mapping,
    server_link_local,
)
from teredonode.wire.errors import ParseError
from teredonode.wire.ipv6 import (
    ALL_ROUTERS,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_RS,
    NH_ICMPV6,
    EchoReply,
    EchoRequest,
    PrefixInformation,
    RouterAdvertisement,
    decode_icmpv6,
    icmpv6_packet,
    ipv6_text,
    is_bubble,
    is_global_unicast6,
    is_link_local,
    parse_ipv6,
)
from teredonode.wire.teredo import (
    AuthIndicator,
    NonceTrailer,
    TeredoPacket,
    classify,
    forwardable_trailers,
    origin_indication,
)

__all__ = ["TeredoServer", "makeRole", "COUNTERS", "DROP_REASONS", "STRIP_REASONS"]

#: What the server counts (status C{counters}, in this order).
COUNTERS = (
    "received",  # datagrams on either address
    "rs",  # valid Router Solicitations accepted for an answer
    "ra",  # Router Advertisements sent
    "forwarded",  # packets forwarded to a Teredo client of ours
    "forwarded-ipv6",  # packets forwarded to a native IPv6 host
    "echo-replies",  # echo requests to the server's link-local address answered
    "relaxed-bubbles",  # D11: indirect bubbles relayed from another mapping (RFC 6081)
)

#: Every reason a datagram can be dropped for, so the status always lists them all (an
#: operator reads a zero as "checked and never happened", not "not counted").
DROP_REASONS = (
    "own-address",  # SV-IN-8: loop prevention, from our own address and port 3544
    "malformed",  # SV-IN-1
    "not-bubble-or-icmpv6",  # SV-IN-2
    "non-global-source",  # SV-IN-3
    "source-mismatch",  # SV-IN-5..7: IPv6 source is not the sender's
    "bad-router-solicitation",  # SV-IN-4: RS that fails RFC 4861 validity
    "auth-required",  # SV-IN-4: secure qualification and no client identifier
    "auth-failed",  # SV-IN-4: secure qualification, unknown identifier or wrong value
    "oversized",  # SV-IN-8: non-bubble payload above max-payload (no open relay)
    "icmpv6-not-relayed",  # SV-03: only echo request/reply are relayed
    "non-global-destination",  # SV-FW-2
    "non-global-mapping",  # SV-FW-4 / SV-RA-07
    "own-destination",  # the destination embeds one of the server's own addresses
    "zero-port-destination",  # the destination embeds UDP port 0
    "no-ipv6-side",  # native destination but no IPv6 side configured
    "rate-limited-rs",  # the source's (or its /24's) RS bucket is empty
    "rate-limited-ra-budget",  # the global RA budget (ra-rate, ra-burst) is empty
    "rate-limited-forward",  # forward-rate, also charged by echo requests to the server
)

#: Why trailers were removed from a forwarded packet (SV-FW-7, D12 corrected).  The packet
#: itself is still forwarded, without them.
STRIP_REASONS = (
    "non-bubble",  # trailers only ever travel on bubbles
    "invalid",  # not entirely well-formed known trailers (forwardable_trailers said None)
)


def _rs_cone(src: bytes) -> bool:
    """
    The cone bit of an RS's link-local source (flags at bytes 8-9).
    """
    return bool(src[8] & (FLAG_CONE >> 8))


@implementer(ITeredoRole)
class TeredoServer(Service):
    """
    A Teredo server on two consecutive public IPv4 addresses, UDP 3544.

    @param settings: the validated C{[server]} table (L{teredonode.config.ServerSettings}).
    @param reactor: provides C{IReactorTime} and C{IReactorUDP} (the in-memory network's
        host object in tests).
    @param tun: the IPv6 side for clients' echo tests to native hosts, or C{None}.
    @param netconfig: configures C{tun} (address-less; a route for the server's /64).
    @param native: where echo tests to native hosts are sent (a L{RawIPv6Sender}, so the
        host need not forward IPv6); C{tun} when C{None}.
    @param fastpath: starts the kernel fast path for plain Router Solicitations once the
        sockets are bound (L{teredonode.fastpath.start}: settings and the RA this server
        sends in, a running fast path or C{None} out); C{None}: the Python path only.
    """

    roleName = "server"
    log = Logger()

    def __init__(
        self,
        settings: Any,
        reactor: Any,
        tun: ITunDevice | None = None,
        netconfig: INetworkConfigurator | None = None,
        native: Any = None,
        fastpath: Callable[[Any, bytes], Any] | None = None,
    ) -> None:
        self.settings = settings
        self._reactor = reactor
        self._tun = tun
        self._netconfig = netconfig
        self._native = native if native is not None else tun
        self.primary: str = settings.primary
        self.secondary: str = settings.secondary
        self._prefix: bytes = settings.prefix_bytes
        self._server_raw = ipv4.pack(self.primary)
        self._own = {(self.primary, TEREDO_PORT), (self.secondary, TEREDO_PORT)}
        self._hardened: bool = settings.hardened
        #: D11: relay RFC 6081 indirect bubbles from a mapping other than their source's.
        self._relaxBubbles: bool = settings.relax_bubble_source
        self._max_payload: int = settings.max_payload
        self._link_local = server_link_local(self.primary)
        self._advertised = self._prefix + self._server_raw + b"\x00" * 8
        self._rs_prefix: int = settings.rs_limit_prefix
        self._rs_limit, self._fw_limit = _limiters(settings, reactor)
        self._secure: bool = settings.secure
        self._accept_unknown: bool = settings.accept_unknown_clients
        self._secrets = {cid.encode(): (secret.encode(), expires) for cid, secret, expires in settings.clients}
        self._raCache: dict[bytes, bytes] = {}
        self._sockets = [ServicePort(partial(self.datagramReceived, index=i)) for i in (0, 1)]
        self._ports: list[Any] = []
        self.counters = CounterSet(COUNTERS)
        self.drops = CounterSet(DROP_REASONS)
        self.stripped = CounterSet(STRIP_REASONS)
        self._rates: dict[str, float] = {}
        self._last: dict[str, int] = {}
        self._rateLoop = LoopingCall(self._sampleRates)
        self._rateLoop.clock = reactor
        self._started: float | None = None
        self._fastPathStarter = fastpath
        self._fastPath: Any = None

    # -- service ---------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """
        Bind both sockets and open the TUN while still root.
        """
        for sock, ip in zip(self._sockets, (self.primary, self.secondary)):
            self._ports.append(self._reactor.listenUDP(TEREDO_PORT, sock, interface=ip))
        if self._tun is not None:
            self._tun.open()
            if self._netconfig is not None:
                prefix = ipv6_text(self._advertised) + "/64"
                self._netconfig.linkUp(self._tun.name, self.settings.mtu)
                self._netconfig.addRoute(self._tun.name, prefix, 1024)
            self._tun.startReading(self.ipv6Received)
        if self._native is not None and self._native is not self._tun:
            self._native.open()
        if self._fastPathStarter is not None:
            from teredonode.fastpath import FastPathUnavailable

            try:
                self._fastPath = self._fastPathStarter(self.settings, self._raFor(bytes(16)))
            except FastPathUnavailable as e:
                raise SystemExit(f"teredo: fast-path = \"on\" but {e}") from None
        Service.privilegedStartService(self)

    def startService(self) -> None:
        Service.startService(self)
        self._started = self._reactor.seconds()
        self._rateLoop.start(1.0, now=False)
        self.log.info(
            "Teredo server on {primary}:3544 and {secondary}:3544, prefix {prefix}/64",
            primary=self.primary,
            secondary=self.secondary,
            prefix=ipv6_text(self._advertised),
        )

    def stopService(self) -> Any:
        Service.stopService(self)
        if self._rateLoop.running:
            self._rateLoop.stop()
        if self._fastPath is not None:
            self._fastPath.close()
            self._fastPath = None
        if self._tun is not None:
            self._tun.close()
        if self._native is not None and self._native is not self._tun:
            self._native.close()
        ports, self._ports = self._ports, []
        from twisted.internet.defer import gatherResults, maybeDeferred

        return gatherResults([maybeDeferred(p.stopListening) for p in ports])

    # -- data path -------------------------------------------------------------------------

    def datagramReceived(self, data: bytes, addr: tuple[str, int], index: int) -> None:
        """
        One datagram arrived on socket C{index} (0 primary, 1 secondary) from C{addr}.
        """
        self.counters["received"] += 1
        drops = self.drops
        if addr in self._own:
            drops["own-address"] += 1
            return
        try:
            packet = classify(data)
        except ParseError:
            drops["malformed"] += 1
            return
        header = packet.header
        bubble = is_bubble(header)
        if not bubble and header.next_header != NH_ICMPV6:
            drops["not-bubble-or-icmpv6"] += 1
            return
        src_ip, src_port = addr
        if not ipv4.is_global_unicast(src_ip, self._hardened):
            drops["non-global-source"] += 1
            return
        src, dst = header.src, header.dst
        if not bubble:
            body = packet.ipv6[40:]
            icmp_type = body[0] if body else -1
            if dst == ALL_ROUTERS and is_link_local(src):
                if icmp_type == ICMP_RS:
                    self._routerSolicitation(packet, addr, index)
                    return
                drops["source-mismatch"] += 1
                return
        # SV-IN-5: a Teredo source must carry the sender's own mapping.
        if src[:4] == self._prefix:
            if src[10:16] != obfuscated_mapping(src_ip, src_port):
                if not (self._relaxBubbles and bubble and self._snsIndirect(packet, dst)):
                    drops["source-mismatch"] += 1
                    return
                self.counters["relaxed-bubbles"] += 1
        # SV-IN-6: a native source may only reach one of our own clients.
        elif not (dst[:4] == self._prefix and dst[4:8] == self._server_raw):
            drops["source-mismatch"] += 1
            return
        if dst == self._link_local:
            self._localEcho(packet, addr, index)
            return
        if not bubble:
            if header.payload_length > self._max_payload:
                drops["oversized"] += 1
                return
            if icmp_type not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
                drops["icmpv6-not-relayed"] += 1
                return
        if not is_global_unicast6(dst):
            drops["non-global-destination"] += 1
            return
        if not self._fw_limit.allow(source_key(src_ip)):
            drops["rate-limited-forward"] += 1
            return
        trailers = packet.trailer_bytes
        if trailers:
            # SV-FW-7 (D12 corrected): never an open relay for bytes after the packet.
            if not bubble:
                self.stripped["non-bubble"] += 1
                trailers = b""
            else:
                kept = forwardable_trailers(trailers)
                if kept is None:
                    self.stripped["invalid"] += 1
                    trailers = b""
                else:
                    trailers = kept
        if dst[:4] == self._prefix:
            self._forwardToTeredo(packet.ipv6, trailers, dst, addr)
        elif self._native is not None:
            self._native.write(packet.ipv6)
            self.counters["forwarded-ipv6"] += 1
        else:
            drops["no-ipv6-side"] += 1

    def _forwardToTeredo(
        self, ipv6: bytes, trailers: bytes, dst: bytes, origin: tuple[str, int] | None
    ) -> None:
        """
        SV-FW-4..7: UDP from the primary address to the destination's embedded mapping,
        with an origin indication when the destination is one of our clients, and the
        trailers the caller vetted.  Never toward a non-global IPv4 address, one of our own
        addresses (any port: a loop or a reflection off ourselves) or port 0.
        """
        if not mapping_is_global(dst, self._hardened):
            self.drops["non-global-mapping"] += 1
            return
        mapped = mapping_of(dst)
        if mapped[0] == self.primary or mapped[0] == self.secondary:
            self.drops["own-destination"] += 1
            return
        if mapped[1] == 0:
            self.drops["zero-port-destination"] += 1
            return
        if origin is not None and dst[4:8] == self._server_raw:
            payload = origin_indication(origin[0], origin[1]) + ipv6 + trailers
        else:
            payload = ipv6 + trailers
        self._sockets[0].sendto(payload, mapped)
        self.counters["forwarded"] += 1

    def ipv6Received(self, packet: bytes) -> None:
        """
        A packet from the IPv6 side (echo replies routed to our clients' /64).
        """
        try:
            header, end = parse_ipv6(packet)
        except ParseError:
            self.drops["malformed"] += 1
            return
        dst = header.dst
        if dst[:4] != self._prefix or dst[4:8] != self._server_raw:
            self.drops["source-mismatch"] += 1
            return
        if header.next_header != NH_ICMPV6 or end < 41 or packet[40] not in (
            ICMP_ECHO_REQUEST,
            ICMP_ECHO_REPLY,
        ):
            self.drops["icmpv6-not-relayed"] += 1
            return
        if header.payload_length > self._max_payload:
            self.drops["oversized"] += 1
            return
        self._forwardToTeredo(packet[:end], b"", dst, None)

    def _routerSolicitation(self, packet: Any, addr: tuple[str, int], index: int) -> None:
        """
        SV-IN-4 and SV-RA-01..11.
        """
        header = packet.header
        try:
            decode_icmpv6(packet.ipv6[40:], header.src, header.dst)
        except ParseError:
            self.drops["bad-router-solicitation"] += 1
            return
        if header.hop_limit != 255:
            self.drops["bad-router-solicitation"] += 1
            return
        verdict = self._rs_limit.check(source_key(addr[0], self._rs_prefix))
        if verdict != PASS:
            self.drops["rate-limited-ra-budget" if verdict == OVER_GLOBAL else "rate-limited-rs"] += 1
            return
        auth = packet.auth
        secret = None
        confirmation = 0
        if self._secure:
            if auth is None or not auth.client_id:
                self.drops["auth-required"] += 1
                return
            entry = self._secrets.get(auth.client_id)
            if entry is None:
                if not self._accept_unknown:
                    # An unknown identifier proves nothing: answering it would hand every
                    # stranger a prefix (and a reflected RA) on a "secure" server.
                    self.drops["auth-failed"] += 1
                    return
                confirmation = 1  # RFC 4380 section 5.3.2: "get a new key"
            else:
                secret, expires = entry
                if not auth_matches(secret, auth.auth_value, auth.nonce, auth.confirmation, b"", packet.ipv6):
                    self.drops["auth-failed"] += 1
                    return
                if expires is not None and self._reactor.seconds() >= expires:
                    confirmation = 1
        self.counters["rs"] += 1
        ipv6 = self._raFor(header.src)
        origin = origin_indication(addr[0], addr[1])
        prefix = b""
        if auth is not None:
            # SV-RA-08/09: the same identifier and nonce; an authentication value when the
            # identifier is known.
            value = b"" if secret is None else teredo_auth_value(secret, auth.nonce, confirmation, origin, ipv6)
            prefix = AuthIndicator(auth.nonce, auth.client_id, value, confirmation).to_bytes()
        # SV-RA-06: cone bit set -> answer from the other address, else the same one.
        out = 1 - index if _rs_cone(header.src) else index
        self._sockets[out].sendto(prefix + origin + ipv6, addr)
        self.counters["ra"] += 1

    @property
    def raCached(self) -> int:
        """
        How many encoded RAs L{_raFor} holds: bounded (64) whatever sources attackers pick.
        """
        return len(self._raCache)

    def _raFor(self, destination: bytes) -> bytes:
        """
        The RA packet answering an RS from C{destination}.  It depends on nothing else, and
        clients use a handful of link-local sources (Miredo's and Windows' are fixed), so the
        encoded packet, checksum included, is cached; the cache is bounded because an attacker
        chooses the source.
        """
        cache = self._raCache
        packet = cache.get(destination)
        if packet is None:
            ra = RouterAdvertisement(
                retrans_timer=2000,
                prefixes=(PrefixInformation(self._advertised, 64),),
                mtu=self.settings.mtu,
            )
            packet = icmpv6_packet(self._link_local, destination, ra, 255)
            if len(cache) >= 64:
                cache.clear()
            cache[destination] = packet
        return packet

    def _snsIndirect(self, packet: TeredoPacket, dst: bytes) -> bool:
        """
        D11: is this what RFC 6081 section 5.2.4.1 has a client behind a symmetric NAT send
        (an indirect bubble with a Nonce trailer) to one of our own clients?  Only then does
        C{relax-bubble-source} let a source that is not the sender's through.
        """
        return (
            dst[:4] == self._prefix
            and dst[4:8] == self._server_raw
            and any(isinstance(t, NonceTrailer) for t in packet.trailers)
        )

    def _localEcho(self, packet: Any, addr: tuple[str, int], index: int) -> None:
        """
        SV-FW-1: an echo request to the server's own link-local address is answered, but
        the source is unverified (anyone can spoof an address and build the matching Teredo
        source), so: the reply is never larger than the request (the same ICMPv6 body, no
        origin indication, no trailers), the request's payload is capped by C{max-payload}
        and it is charged to the source's C{forward-rate} bucket.
        """
        header = packet.header
        if header.payload_length > self._max_payload:
            self.drops["oversized"] += 1
            return
        try:
            msg = decode_icmpv6(packet.ipv6[40:], header.src, header.dst)
        except ParseError:
            self.drops["malformed"] += 1
            return
        if not isinstance(msg, EchoRequest):
            self.drops["icmpv6-not-relayed"] += 1
            return
        if not self._fw_limit.allow(source_key(addr[0])):
            self.drops["rate-limited-forward"] += 1
            return
        reply = icmpv6_packet(self._link_local, header.src, EchoReply(*msg), 64)
        self._sockets[index].sendto(reply, addr)
        self.counters["echo-replies"] += 1

    # -- reload ----------------------------------------------------------------------------

    #: The settings L{reconfigure} applies while serving (the others need a restart).
    liveSettings = frozenset(
        {
            "rs_rate",
            "rs_burst",
            "rs_initial",
            "rs_limit_prefix",
            "ra_rate",
            "ra_burst",
            "forward_rate",
            "forward_burst",
            "max_sources",
            "relax_bubble_source",
            "secure",
            "clients",
            "accept_unknown_clients",
            "max_payload",
            "hardened",
        }
    )

    def reconfigure(self, settings: Any) -> None:
        """
        Apply a reloaded C{[server]} table: rate limits (fresh buckets: a source may get one
        new burst), secure-qualification keys, payload limit, hardening.  The sockets, the
        prefix and the addresses are untouched, so clients stay qualified.
        """
        old, self.settings = self.settings, settings
        if _limit_settings(old) != _limit_settings(settings):
            self._rs_limit, self._fw_limit = _limiters(settings, self._reactor)
            self._rs_prefix = settings.rs_limit_prefix
        self._secure = settings.secure
        self._accept_unknown = settings.accept_unknown_clients
        self._secrets = {cid.encode(): (secret.encode(), expires) for cid, secret, expires in settings.clients}
        self._max_payload = settings.max_payload
        self._hardened = settings.hardened
        self._relaxBubbles = settings.relax_bubble_source
        if self._fastPath is not None:
            self._fastPath.configure(settings, self._raFor(bytes(16)))

    # -- status ----------------------------------------------------------------------------

    def _merged(self) -> tuple[CounterSet, CounterSet, dict[str, int]]:
        """
        Counters and drops of both paths (the fast path's per-CPU counters added under the
        same names), and the fast path's own counts.
        """
        if self._fastPath is None:
            return self.counters, self.drops, {}
        from teredonode.fastpath import DROPS

        fast = self._fastPath.counts()
        counters, drops = self.counters.copy(), self.drops.copy()
        for name, value in fast.items():
            if name in DROPS:
                drops[name] += value
            elif name in ("received", "rs", "ra"):
                counters[name] += value
        return counters, drops, fast

    def _sampleRates(self) -> None:
        counters, drops, _ = self._merged()
        for key in ("received", "rs", "ra", "forwarded", "forwarded-ipv6"):
            value = counters[key]
            self._rates[key] = float(value - self._last.get(key, 0))
            self._last[key] = value
        dropped = sum(drops.values())
        self._rates["dropped"] = float(dropped - self._last.get("dropped", 0))
        self._last["dropped"] = dropped

    def status(self) -> dict[str, Any]:
        send_drops: Counter[str] = Counter()
        for sock in self._sockets:
            if sock.sender is not None:
                send_drops.update(getattr(sock.sender, "drops", {}))
        if self._native is not None and self._native is not self._tun:
            send_drops.update(getattr(self._native, "drops", {}))
        counters, drops, fast = self._merged()
        return {
            "state": "serving" if self.running else "stopped",
            "primary": self.primary,
            "secondary": self.secondary,
            "prefix": ipv6_text(self._advertised) + "/64",
            "ipv6-side": self._tun.name if self._tun is not None else None,
            "counters": counters.snapshot(),
            "drops": drops.snapshot(),
            "fast-path": (
                {"interfaces": self._fastPath.interfaces, "answered": fast["ra"], "passed-to-python": fast["passed"]}
                if self._fastPath is not None
                else None
            ),
            "trailers-stripped": self.stripped.snapshot(),
            "send-errors": dict(send_drops),
            "rates-per-second": dict(self._rates),
            "rate-limited-sources": len(self._rs_limit) + len(self._fw_limit),
        }


def _limit_settings(settings: Any) -> tuple[Any, ...]:
    """
    The settings the rate limiters are built from.
    """
    return (
        settings.rs_rate,
        settings.rs_burst,
        settings.rs_initial,
        settings.rs_limit_prefix,
        settings.ra_rate,
        settings.ra_burst,
        settings.forward_rate,
        settings.forward_burst,
        settings.max_sources,
    )


def _limiters(settings: Any, clock: Any) -> tuple[RateLimiter, RateLimiter]:
    """
    The RS limiter (per source address or /24, C{rs-initial} tokens for a new source, the
    global RA budget behind it) and the forward limiter (per source address).
    """
    rs = RateLimiter(
        clock,
        settings.rs_rate,
        settings.rs_burst,
        settings.max_sources,
        initial=settings.rs_initial,
        budget=TokenBucket(clock, settings.ra_rate, settings.ra_burst),
    )
    forward = RateLimiter(clock, settings.forward_rate, settings.forward_burst, settings.max_sources)
    return rs, forward


def makeRole(settings: Any, reactor: Any) -> TeredoServer:
    """
    The production server: real sockets, and an IPv6 side when the C{[server] interface}
    setting names one: echo tests leave through a raw IPv6 socket (no IPv6 forwarding needed
    on the host), replies to the server's /64 come back through the TUN.
    """
    interface = getattr(settings, "interface", "") or ""
    tun = netconfig = native = None
    if interface:
        from teredonode.errors import TeredoError
        from teredonode.netconfig import NetlinkConfigurator
        from teredonode.rawip6 import RawIPv6Sender
        from teredonode.tun import TunDevice

        tun = TunDevice(interface, reactor=reactor)
        netconfig = NetlinkConfigurator()
        native = RawIPv6Sender()
        try:  # refuse now, with one line, rather than at start with a traceback
            native.open()
        except TeredoError as e:
            raise SystemExit(f"teredo: {e}") from None
        native.close()
    from teredonode.fastpath import start

    return TeredoServer(settings, reactor, tun=tun, netconfig=netconfig, native=native, fastpath=start)
