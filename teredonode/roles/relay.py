# -*- test-case-name: tests.protocol.test_relay -*-
"""
The Teredo relay (RFC 4380 section 5.4, RFC 5991 section 3.2; requirements digest 3.3).

A relay is an IPv6 router whose Teredo side is an unnumbered interface: the IPv6 network
routes the Teredo prefix (2001::/32) to its TUN, and the relay carries those packets over
UDP to the clients' mapped endpoints; what clients send back over UDP it writes to the TUN
for the kernel to forward.  The peer logic is the client's (L{teredonode.roles.tunnel}),
with the relay's answers to the policy questions:

  - only Teredo destinations go over UDP (RL-TX-01), after the global-unicast check on the
    embedded server and mapping (RL-TX-02);
  - a trusted, valid entry is sent to at once (RL-TX-03); otherwise the packet waits in a
    bounded queue while an indirect bubble (through the client's server) and a direct one
    go out, 2 s apart, 3 repetitions at most, after which the entry and its queue are
    removed (RL-TX-05..08; the cone bit is ignored, RFC 5991);
  - what arrives must be valid IPv6 from a Teredo source that embeds the very endpoint it
    came from (RL-RX-02/03), from a peer the relay itself created (RL-RX-04: no state from
    unsolicited traffic), to a destination the relay serves (RL-RX-05); bubbles refresh the
    entry and are never forwarded (RL-RX-06).  A packet from a client without an entry whose
    source embeds the very endpoint it came from is forwarded all the same, creating nothing
    (C{delivered-stateless}): after a restart, or on another relay of an anycast group, a
    client's traffic flows at once instead of waiting ~30 s for its entry to expire.

Clients find the relay through their direct IPv6 connectivity test: the native host's echo
reply is routed here, queued, and released once the client answers the relay's bubble, so
the reply arrives from the relay's endpoint and the client adopts it.

Bounds: the peer list (LRU), packets and bytes queued per peer, ICMPv6 errors per second.
The data path parses each packet once, logs nothing, and sends through
L{teredonode.udp.DatagramSender}, which skips Twisted's per-call address validation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet.task import deferLater
from zope.interface import implementer

from teredonode.counters import CounterSet
from teredonode.healthroute import HealthAnnouncer, HealthRoute
from teredonode.logs import Logger
from teredonode.interfaces import Endpoint, INetworkConfigurator, ITeredoRole, ITunDevice, NoPeerObserver
from teredonode.peers import PeerList
from teredonode.roles.tunnel import (
    COUNTERS as TUNNEL_COUNTERS,
    DROP_REASONS as TUNNEL_DROPS,
    UNNUMBERED_COUNTERS,
    UNNUMBERED_DROP_REASONS,
    ProbeBudget,
    TeredoTunnel,
    TunnelPolicy,
)
from teredonode.roles.tunnelrole import TunnelRole
from teredonode.udp import ServicePort, raiseBufferSizes
from teredonode.udpbatch import listenBatching
from teredonode.wire.ipv6 import ipv6_text

__all__ = [
    "RELAY_POLICY",
    "TeredoRelay",
    "servedBy",
    "servedTables",
    "makeRole",
    "COUNTERS",
    "DROP_REASONS",
    "RELAY_MTU",
    "ROUTE_METRIC",
]

#: The relay's side of the shared core: no echo tests, no native sources over Teredo, no
#: entries from unsolicited traffic, direct bubbles too (RL-TX-07/08), unanswered entries
#: removed (RL-TX-05).
RELAY_POLICY = TunnelPolicy(
    name="relay",
    native_destinations=False,
    native_sources=False,
    learn_unsolicited=False,
    direct_bubbles=True,
    forget_unreachable=True,
    forward_stateless=True,
)

#: Section 5.1.2: the Teredo link MTU; larger packets get Packet Too Big from the kernel.
RELAY_MTU = 1280
#: Metric of the route for the Teredo prefix on the TUN.
ROUTE_METRIC = 1024
#: Socket buffers asked for (the kernel caps them at net.core.[rw]mem_max).
SOCKET_BUFFER = 4 * 1024 * 1024

#: The relay's own drop reasons, then the shared core's (status order).
RELAY_DROPS = ("malformed",)  # RL-RX-02: not a Teredo payload (valid IPv6, maybe origin/auth)
DROP_REASONS = RELAY_DROPS + TUNNEL_DROPS + UNNUMBERED_DROP_REASONS

#: The relay's own counter, then the shared core's (status order).
RELAY_COUNTERS = ("received",)  # datagrams on the relay's port
COUNTERS = RELAY_COUNTERS + TUNNEL_COUNTERS + UNNUMBERED_COUNTERS


def servedTables(networks: Iterable[str]) -> tuple[tuple[bool, ...], list[tuple[int, int]]]:
    """
    RL-RX-05: C{networks} as L{servedBy} and the kernel fast path both decide them: a
    256-entry table on the first byte for networks of at most 8 bits (never C{fe}, C{ff}),
    and (mask, network) integer pairs for the longer ones.
    """
    firstByte = [False] * 256
    longer: list[tuple[int, int]] = []
    for text in networks:
        net = ipaddress.IPv6Network(text)
        if net.prefixlen <= 8:
            base = net.network_address.packed[0]
            for b in range(base, base + (1 << (8 - net.prefixlen))):
                firstByte[b] = True
        else:
            longer.append((int(net.netmask), int(net.network_address)))
    for b in (0xFE, 0xFF):
        firstByte[b] = False
    return tuple(firstByte), longer


def servedBy(networks: Iterable[str], teredoPrefix: bytes) -> Callable[[bytes], bool]:
    """
    The predicate "does the relay serve this IPv6 address?" for C{networks}: inside one of
    them, never in the Teredo prefix (that would loop Teredo traffic through the relay),
    never multicast or link-local.

    Networks of at most 8 bits (the default 2000::/3) are decided by a 256-entry table on
    the first byte, the rest by integer masks: this runs once per packet in each direction.
    """
    table, longer = servedTables(networks)
    prefix = bytes(teredoPrefix)

    if not longer:

        def serves(address: bytes) -> bool:
            return table[address[0]] and address[:4] != prefix

        return serves

    masks = tuple(longer)

    def servesLonger(address: bytes) -> bool:
        if address[:4] == prefix or address[0] >= 0xFE:
            return False
        if table[address[0]]:
            return True
        value = int.from_bytes(address, "big")
        return any(value & mask == base for mask, base in masks)

    return servesLonger


def bubbleSourceFrom(randbytes: Callable[[int], bytes]) -> bytes:
    """
    The "local IPv6 address" our bubbles come from (section 5.4.1 case 3): a link-local
    address with a random interface identifier (universal/local and group bits clear), as
    Miredo's relay does.  Clients answer it with a direct bubble; servers forward it (a
    non-Teredo source to one of their clients).
    """
    iid = bytearray(randbytes(8))
    iid[0] &= 0xFC
    return b"\xfe\x80" + b"\x00" * 6 + bytes(iid)


@implementer(ITeredoRole)
class TeredoRelay(TunnelRole):
    """
    A Teredo relay.

    @param settings: the validated C{[relay]} table (L{teredonode.config.RelaySettings}).
    @param reactor: C{IReactorTime} and C{IReactorUDP} (a L{teredonode.testing.FakeHost}
        in tests).
    @param tun: the interface the Teredo prefix is routed to.
    @param netconfig: brings it up, routes the prefix to it, turns forwarding on.
    @param randbytes: the bubble source's interface identifier (C{secrets.token_bytes} in
        production).
    @param fastpath: loads the kernel fast path for trusted peers before anything is opened
        (L{teredonode.fastpath.relay.load}: settings, reactor and peer list in, a loaded
        fast path or C{None} out), which is then started once the socket is bound and the
        TUN routed (its C{start(settings, tun, port)}, C{False} when it cannot run);
        C{None}: the Python path only.
    """

    roleName = "relay"
    policy = RELAY_POLICY
    log = Logger()

    def __init__(
        self,
        settings: Any,
        reactor: Any,
        tun: ITunDevice,
        netconfig: INetworkConfigurator,
        randbytes: Callable[[int], bytes] | None = None,
        healthRoute: Any = None,
        fastpath: Callable[[Any, Any, PeerList], Any] | None = None,
    ) -> None:
        TunnelRole.__init__(self, settings, reactor, tun, netconfig, randbytes)
        self._fastPathStarter = fastpath
        self._fastPath: Any = None
        #: The listening port while it batches its reads (its C{reads} and C{datagrams}
        #: show in the status), else None and why not in C{_batchingOff}.
        self._batching: Any = None
        self._batchingOff = "not started"
        self._routed = False
        self.state = "stopped"
        self.counters = CounterSet(COUNTERS)
        self.drops = CounterSet(DROP_REASONS)
        #: Does the relay stand for this IPv6 address (16 bytes)?
        self.serves = self._makeServes()
        #: RL-RX-07, SEC-19: what traffic from the IPv6 side may make the relay bubble.
        self.bubbleBudget = ProbeBudget(
            reactor,
            settings.bubble_rate,
            settings.bubble_burst,
            settings.bubble_rate_per_ipv4,
            settings.bubble_burst_per_ipv4,
            perServerRate=settings.bubble_rate_per_server,
            perServerBurst=settings.bubble_burst_per_server,
        )
        peers = self._peerList()
        self.tunnel = TeredoTunnel(
            reactor,
            replace(
                self.policy,
                hardened=getattr(settings, "hardened", True),
                direct_bubbles=settings.direct_bubbles,
            ),
            peers,
            self._socket.sendto,
            tun.write,
            self._randbytes,
            prefix=settings.prefix_bytes,
            serves=self.serves,
            icmpRate=settings.icmp_rate,
            bubbleBudget=self.bubbleBudget,
            counters=self.counters,
            drops=self.drops,
        )
        self.tunnel.setUnnumbered(bubbleSourceFrom(self._randbytes))
        #: Keeps the health route a BGP daemon announces from, or None (no health-table).
        self._health = (
            None
            if healthRoute is None
            else HealthAnnouncer(
                reactor, healthRoute, self._healthy, lambda: self._tun.name,
                settings.health_interval, settings.health_table,
            )
        )

    # -- what the relay stands for ----------------------------------------------------------

    def _makeServes(self) -> Callable[[bytes], bool]:
        """
        RL-RX-05: the predicate for the native addresses this relay forwards for (the
        C{serve} ranges), used by the core as host sources and as peer destinations.
        """
        return servedBy(self.settings.serve, self.settings.prefix_bytes)

    # -- service ---------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """
        While still root: bind the UDP port, open the TUN, route the prefix to it, and
        let the kernel forward.
        """
        self._checkHost()
        self._loadFastPath()
        self._port = listenBatching(
            self._reactor, self.settings.port, self._socket, interface=self.settings.bind
        )
        if getattr(self._port, "socket", None) is not None:
            raiseBufferSizes(self._port, SOCKET_BUFFER, SOCKET_BUFFER)
        self._tun.open()
        name = self._tun.name
        self._netconfig.linkUp(name, RELAY_MTU)
        self._netconfig.addRoute(name, self.settings.prefix, ROUTE_METRIC)
        self._routed = True
        self._configureHost()
        self._tun.startReading(self.tunnel.fromHost)
        self._startFastPath()
        self._startBatching()
        Service.privilegedStartService(self)

    def _loadFastPath(self) -> None:
        """
        Load the kernel fast path's programs, as C{fast-path} asks, before the socket and
        the TUN exist: verifying them takes a while, during which nothing may pile up.
        """
        if self._fastPathStarter is None:
            return
        from teredonode.fastpath.program import FastPathUnavailable

        try:
            self._fastPath = self._fastPathStarter(self.settings, self._reactor, self.tunnel.peers)
        except FastPathUnavailable as e:
            raise SystemExit(f"teredo: relay: fast-path = \"on\" but {e}") from None

    def _startFastPath(self) -> None:
        """
        Attach the loaded fast path: the tunnel then tells it of every peer state change
        (its L{teredonode.interfaces.IPeerObserver}).
        """
        fast = self._fastPath
        if fast is None:
            return
        from teredonode.fastpath.program import FastPathUnavailable

        try:
            running = fast.start(self.settings, self._tun.name, self._port.getHost().port)
        except FastPathUnavailable as e:
            self._fastPath = None
            raise SystemExit(f"teredo: relay: fast-path = \"on\" but {e}") from None
        if not running:
            self._fastPath = None
            return
        self.tunnel.peerObserver = fast

    def _startBatching(self) -> None:
        """
        Batch the Python path's reads (L{teredonode.udpbatch}) unless the kernel fast path
        runs: in generic XDP mode it sits after GRO, where batching would hand it one
        coalesced packet instead of the datagrams it checks one by one.
        """
        self._batching = None
        enable = getattr(self._port, "enableBatching", None)
        if enable is None:
            self._batchingOff = "this port cannot batch"
            return
        if self._fastPath is not None:
            self._batchingOff = "the kernel fast path reads first"
            self.log.info("Receive batching (UDP GRO): off (the kernel fast path reads first)")
            return
        reason = enable()
        if reason is None:
            self._batching = self._port
            self.log.info("Receive batching (UDP GRO): on")
        else:
            self._batchingOff = reason
            self.log.info("Receive batching (UDP GRO): off ({reason})", reason=reason)

    def _checkHost(self) -> None:
        """
        Refuse to start on a host that cannot play this role (nothing to check here).
        """

    def _configureHost(self) -> None:
        """
        RL-01: a relay is a router: the kernel forwards between the IPv6 network and us.
        """
        self._netconfig.setForwarding(True)

    def startService(self) -> None:
        TunnelRole.startService(self)
        self.state = "relaying"
        if self._health is not None:
            self._health.start()
        host = self._port.getHost()
        self.log.info(
            "Teredo {role} on {host}:{port}, {prefix} routed to {tun}",
            role=self.roleName, host=host.host, port=host.port,
            prefix=self.settings.prefix, tun=self._tun.name,
        )

    # -- health and drain (docs/anycast.md) --------------------------------------------------

    def _healthy(self) -> bool:
        """
        What the health route stands for: relaying, with the UDP socket bound and the TUN
        open.  That this runs at all shows the event loop is alive.
        """
        return self.state == "relaying" and self._port is not None and self._routed

    def _drain(self) -> Any:
        """
        Graceful stop with a health route: withdraw it first (the BGP daemon withdraws the
        prefix, routers move the traffic to the other relays), keep relaying for
        C{drain-time} seconds while they do, then stop.  Returns what stop waits for.
        """
        assert self._health is not None
        self._health.withdraw()
        self.state = "draining"
        self.log.info("draining for {seconds} s", seconds=self.settings.drain_time)
        return deferLater(self._reactor, self.settings.drain_time, self._stop)

    def stopService(self) -> Any:
        Service.stopService(self)
        if self._health is not None and self.state == "relaying" and self.settings.drain_time > 0:
            return self._drain()
        return self._stop()

    def _stop(self) -> Any:
        if self._health is not None:
            self._health.withdraw()
            self._health.close()
        self.state = "stopped"
        fast, self._fastPath = self._fastPath, None
        if fast is not None:
            self.tunnel.peerObserver = NoPeerObserver()
            fast.close()
        self.tunnel.stop()
        if self._routed:
            self._routed = False
            try:
                self._netconfig.removeRoute(self._tun.name, self.settings.prefix)
            except Exception as e:  # the TUN may already be gone; stopping must go on
                self.log.warn("{error}", error=str(e))
        self._tun.close()
        port, self._port = self._port, None
        self._batching, self._batchingOff = None, "stopped"
        if port is not None:
            return port.stopListening()
        return None

    # -- data path -------------------------------------------------------------------------

    def datagramReceived(self, data: bytes, addr: Endpoint) -> None:
        """
        One datagram on the relay's port: RL-RX-02 here, the rest in the shared core.
        """
        packet = self._classified(data)
        if packet is not None:
            self.tunnel.fromPeer(packet, addr)

    # -- reload ----------------------------------------------------------------------------

    #: The settings L{reconfigure} applies while relaying (the others need a restart).
    liveSettings = frozenset(
        {
            "bubble_rate",
            "bubble_burst",
            "bubble_rate_per_ipv4",
            "bubble_burst_per_ipv4",
            "bubble_rate_per_server",
            "bubble_burst_per_server",
            "direct_bubbles",
            "peer_queue",
            "peer_queue_bytes",
            "drain_time",
        }
    )

    def reconfigure(self, settings: Any) -> None:
        """
        Apply a reloaded table: the bubble budgets (RL-RX-07, SEC-19; a bucket whose rate or
        burst changed starts afresh, full), direct bubbles (RL-TX-07/08), the per-peer
        queue bounds (queues already longer drain or expire as usual) and the drain time.
        The peer list, its trusted entries and queues, the socket and the TUN are kept.
        """
        self.settings = settings
        self.bubbleBudget.setRates(
            settings.bubble_rate,
            settings.bubble_burst,
            settings.bubble_rate_per_ipv4,
            settings.bubble_burst_per_ipv4,
            settings.bubble_rate_per_server,
            settings.bubble_burst_per_server,
        )
        tunnel = self.tunnel
        if tunnel.policy.direct_bubbles != settings.direct_bubbles:
            tunnel.policy = replace(tunnel.policy, direct_bubbles=settings.direct_bubbles)
        tunnel.peers.queue_packets = settings.peer_queue
        tunnel.peers.queue_bytes = settings.peer_queue_bytes

    # -- status ----------------------------------------------------------------------------

    def _merged(self) -> tuple[dict[str, int], dict[str, Any] | None]:
        """
        The counters of both paths (the fast path's per-CPU counters added under the same
        names), and the fast path's own status.
        """
        counters = self.counters.snapshot()
        fast = self._fastPath
        if fast is None:
            return counters, None
        from teredonode.fastpath.relay import MERGED

        counts = fast.counts()
        for name in MERGED:
            counters[name] += counts[name]
        return counters, {
            "interfaces": list(fast.interfaces),
            "carried": counts["delivered"] + counts["sent"],
            # Taken from the TUN by the TC program: input that never reaches the relay's
            # TUN reads (the fuzz test's accounting adds it to the TUN's tx_packets).
            "from-tun": counts["sent"] - counts["from-native"],
            # Encapsulated by the XDP program as they arrived, never forwarded to the TUN.
            "from-native": counts["from-native"],
            "passed-to-python": counts["passed-udp"] + counts["passed-tun"],
            # TCP super-packets it encapsulated whole (their segments are in "from-tun").
            "super-packets": counts["super-packets"],
            # Packets with partial checksums and super-packets carried (the outgoing
            # interface completes inner checksums), or handed to Python.
            "tunnel-offload": fast.segments,
            # Native packets encapsulated by the XDP program (IPv4 forwarding on the TUN).
            "native-xdp": fast.native,
        }

    def status(self) -> dict[str, Any]:
        sender = self._socket.sender
        local = sender.local if sender is not None else None
        counters, fast = self._merged()
        return {
            "state": self.state,
            "interface": self._tun.name,
            "local": f"{local[0]}:{local[1]}" if local else None,
            "prefix": self.settings.prefix,
            "bubble-source": ipv6_text(self.tunnel.bubbleSource or bytes(16)),
            **self._statusExtra(),
            "peers": self.tunnel.status(),
            "counters": counters,
            "fast-path": fast,
            "receive-batching": self._batchingStatus(),
            "drops": self.drops.snapshot(),
            "send-drops": dict(sender.drops) if sender is not None else {},
            "tun-drops": dict(getattr(self._tun, "drops", {})),
        }

    def _batchingStatus(self) -> dict[str, Any]:
        """
        Whether the Python path's reads are batched (UDP GRO), why not when off, and the
        reads and datagrams of the batching port: datagrams per read is what batching saves
        in system calls.
        """
        port = self._batching
        if port is None:
            return {"on": False, "reason": self._batchingOff, "reads": 0, "datagrams": 0}
        return {"on": True, "reason": None, "reads": port.reads, "datagrams": port.datagrams}

    def _statusExtra(self) -> dict[str, Any]:
        health = self._health.status() if self._health is not None else {"state": "off"}
        return {"serve": list(self.settings.serve), "health": health}


def makeRole(settings: Any, reactor: Any) -> TeredoRelay:
    """
    The production relay: a real TUN, C{ip} and sysctls for configuration.  A host with no
    IPv6 route toward native hosts (other than the relay's own TUN) would drop every packet
    a client sends, and so would one where IPv6 forwarding is off and cannot be turned on
    (a read-only C{/proc/sys}): the relay refuses to start with one line instead.
    """
    from teredonode.hostcheck import forwardingSettable, nativeRoutes
    from teredonode.netconfig import NetlinkConfigurator
    from teredonode.tun import TunDevice

    if not nativeRoutes(settings.interface):
        raise SystemExit(
            "teredo: relay: this host has no IPv6 route to native hosts (no default route and "
            "no 2000::/3 route outside the relay's TUN); add one, e.g. ip -6 route add default "
            "via <router>"
        )
    if not forwardingSettable():
        raise SystemExit(
            "teredo: relay: IPv6 forwarding is off and cannot be turned on from here; set "
            "net.ipv6.conf.all.forwarding=1 on the host (a relay forwards between its TUN and "
            "native IPv6)"
        )

    health = None
    if settings.health_table:
        health = HealthRoute(settings.prefix, settings.health_table, settings.health_lifetime, ROUTE_METRIC)
    from teredonode.fastpath.relay import load

    return TeredoRelay(
        settings, reactor, TunDevice(settings.interface, reactor=reactor), NetlinkConfigurator(),
        healthRoute=health, fastpath=load,
    )
