# -*- test-case-name: tests.protocol.test_client -*-
"""
Local client discovery (RFC 4380 section 5.2.8; requirements CL-LD-01..06, W-BUB-4/5).

Two Teredo clients behind the same NAT can only reach each other through their public
mappings if the NAT hairpins, and many do not.  Section 5.2.8 lets them find each other on
the LAN instead: each one announces its Teredo address in a I{discovery bubble} sent to the
IPv4 link-local group 224.0.0.253, UDP port 3544, and listens there.  A peer heard that way
becomes a I{local} entry of the peer list whose LAN endpoint is where packets go, so the
traffic between two clients of one LAN never leaves it.

This module is the I/O and the acceptance checks; the peer-table side (section 5.2.3 cases 4
and 5, section 5.2.4 case 3) lives in L{teredonode.roles.tunnel}:

  - B{the group socket}: UDP 3544 bound to the group address itself, so that (as on Linux)
    it never receives unicast: "discovery bubbles received over a unicast address" (CL-LD-03)
    cannot reach it; those arriving on the service port are dropped by the client;
  - B{announcements} (CL-LD-02, W-BUB-4): from the service port, so that receivers learn the
    endpoint to answer and to send to; IPv6 source = our global Teredo address, destination
    ff02::1, hop limit 1; the socket's multicast TTL is 1 and its loopback is off (our own
    bubble is no news to us); one at qualification (and at every address change), then every
    uniform [200, 300] s while qualified;
  - B{acceptance} (CL-LD-04): a bubble to ff02::1 whose source is a well-formed global
    Teredo address carrying our own mapped IPv4 (the MAY of section 5.2.8: only a peer behind
    our NAT is worth reaching over the LAN, and it stops a LAN host from planting entries for
    strangers), from an IPv4 source on the local subnet (the configured one; without one, any
    private address, Miredo's rule).  Everything else is dropped and counted.

Nothing logs per packet.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

from twisted.internet.error import CannotListenError
from teredonode.logs import Logger

from teredonode.interfaces import Endpoint, IDiscoveryHost, ILocalPeers
from teredonode.udp import ServicePort
from teredonode.wire import ipv4
from teredonode.wire.address import GLOBAL_PREFIX, TEREDO_PORT, is_global_teredo, mapping_of
from teredonode.wire.errors import ParseError
from teredonode.wire.ipv6 import ALL_NODES, bubble
from teredonode.wire.teredo import classify

__all__ = [
    "LocalDiscovery",
    "DISCOVERY_GROUP",
    "DISCOVERY_PERIOD",
    "DISCOVERY_COUNTERS",
    "DISCOVERY_DROPS",
    "discovery_bubble",
]

#: RFC 4380 section 2.17: the Teredo IPv4 Discovery Address.
DISCOVERY_GROUP = "224.0.0.253"
#: Section 5.2.8: announcements "at random intervals, uniformly distributed between 200 and
#: 300 seconds".
DISCOVERY_PERIOD = (200.0, 300.0)
#: Announcements sent on demand (section 5.2.4 case 3) are at most one per this many seconds,
#: whatever the number of local peers being probed: a multicast reaches every LAN host.
ANNOUNCE_MIN_INTERVAL = 2.0

#: What local discovery counts (in the client's counters).
DISCOVERY_COUNTERS = (
    "discovery-sent",  # announcements to 224.0.0.253
    "discovery-suppressed",  # on-demand announcements held back (ANNOUNCE_MIN_INTERVAL)
    "discovery-received",  # valid discovery bubbles from a local peer
)

#: The drop reasons of discovery bubbles (in the client's drops).
DISCOVERY_DROPS = (
    "discovery-unicast",  # CL-LD-03: a discovery bubble that came over unicast
    "discovery-invalid",  # on the group socket, but not a bubble to ff02::1
    "discovery-not-teredo",  # CL-LD-04 MUST: source not a well-formed global Teredo address
    "discovery-off-subnet",  # CL-LD-04 MUST: IPv4 source not on the local subnet
    "discovery-foreign-mapping",  # CL-LD-04 MAY: not behind our NAT (other mapped IPv4)
    "discovery-self",  # our own announcement looped back
)

#: Never a LAN host's source, even without a configured subnet.
_NOT_LAN = tuple(
    ipaddress.IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4")
)


def discovery_bubble(address: bytes) -> bytes:
    """
    W-BUB-4: a bubble from our global Teredo address to all nodes, hop limit 1.
    """
    return bubble(address, ALL_NODES, 1)


class LocalDiscovery:
    """
    The client's local discovery: group socket, announcement timer, acceptance checks.

    @param reactor: C{IReactorMulticast} and C{IReactorTime} (a
        L{teredonode.testing.FakeHost} in tests).
    @param host: the client (qualified?  our mapping?  send from the service port).
    @param tunnel: the client's tunnel core: accepted bubbles go to its C{fromLocalPeer}; it
        asks for on-demand announcements through L{announceNow}, which the client hands it.
    @param uniform: C{(a, b) -> float} for the announcement period (a seeded
        C{random.Random.uniform} in tests).
    @param address: the LAN interface setting, C{""} or C{"a.b.c.d[/len]"}.
    @param bind: the service port's bind address (the default LAN interface).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        host: IDiscoveryHost,
        tunnel: ILocalPeers,
        uniform: Callable[[float, float], float],
        counters: dict[str, int],
        drops: dict[str, int],
        address: str = "",
        bind: str = "0.0.0.0",
        prefix: bytes = GLOBAL_PREFIX,
    ) -> None:
        self._reactor = reactor
        self._host = host
        self._tunnel = tunnel
        self._uniform = uniform
        self.counters = counters
        self.drops = drops
        self._prefix = prefix
        lan, _, length = address.partition("/")
        if not lan and bind != "0.0.0.0":
            lan = bind
        #: The LAN interface's address, C{""} for the kernel's choice.
        self.lanAddress = lan
        self.subnet = ipaddress.IPv4Network(address, strict=False) if length else None
        self.state = "off"
        self._port: Any = None
        self._timer: Any = None
        self._lastAnnounce: float | None = None

    # -- life cycle --------------------------------------------------------------------------

    def configureSender(self, servicePort: Any) -> None:
        """
        W-BUB-4 / [IMPL]: what the service port sends to the group stays on the link (TTL 1),
        is not looped back to us, and leaves through the LAN interface when one is known.
        """
        servicePort.setTTL(1)
        servicePort.setLoopbackMode(0)
        if self.lanAddress:
            servicePort.setOutgoingInterface(self.lanAddress).addErrback(self._failed, "set the outgoing interface")

    def listen(self) -> None:
        """
        Bind 224.0.0.253:3544 (shared with other Teredo clients of this host) and join the
        group on the LAN interface.  A failure disables discovery, never the client.
        """
        try:
            self._port = self._reactor.listenMulticast(
                TEREDO_PORT, ServicePort(self.datagramReceived), interface=DISCOVERY_GROUP, listenMultiple=True
            )
        except CannotListenError as e:
            self._failed(e, "listen on 224.0.0.253:3544")
            return
        self.state = "listening"
        self._port.joinGroup(DISCOVERY_GROUP, self.lanAddress).addErrback(self._failed, "join 224.0.0.253")

    def _failed(self, reason: Any, what: str) -> None:
        error = getattr(reason, "value", reason)
        self.state = "failed"
        self.log.warn("Local discovery disabled: cannot {what}: {error}", what=what, error=str(error))
        self.stop()

    def start(self) -> None:
        """
        Qualified, or a new address: announce it now, then every [200, 300] s.
        """
        self.stop()
        if self.state == "listening":
            self._announce()

    def stop(self) -> None:
        """
        Offline: no announcements (our address is gone).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def close(self) -> Any:
        self.stop()
        port, self._port = self._port, None
        if self.state == "listening":
            self.state = "off"
        if port is not None:
            return port.stopListening()
        return None

    # -- announcements -------------------------------------------------------------------------

    def _announce(self) -> None:
        """
        The periodic announcement (CL-LD-02), rescheduled at a fresh uniform [200, 300] s.
        """
        self._timer = None
        self._sendAnnouncement()
        self._timer = self._reactor.callLater(self._uniform(*DISCOVERY_PERIOD), self._announce)

    def announceNow(self) -> None:
        """
        An on-demand announcement, for the tunnel: probing a local peer (section 5.2.4
        case 3) or greeting a newcomer.  Paced to one per L{ANNOUNCE_MIN_INTERVAL} because
        a multicast reaches every host of the LAN; the periodic ones do not count.
        """
        now = self._reactor.seconds()
        if self._lastAnnounce is not None and now - self._lastAnnounce < ANNOUNCE_MIN_INTERVAL:
            self.counters["discovery-suppressed"] += 1
            return
        if self._sendAnnouncement():
            self._lastAnnounce = now

    def _sendAnnouncement(self) -> bool:
        address = self._tunnel.address
        if self.state != "listening" or address is None:
            return False
        self._host.sendDatagram(discovery_bubble(address), (DISCOVERY_GROUP, TEREDO_PORT))
        self.counters["discovery-sent"] += 1
        return True

    # -- reception -------------------------------------------------------------------------------

    def datagramReceived(self, data: bytes, addr: Endpoint) -> None:
        """
        A datagram on the group socket: CL-RX-07 / CL-LD-04, then the tunnel's case 4.
        """
        drops = self.drops
        try:
            packet = classify(data)
        except ParseError:
            drops["malformed"] += 1
            return
        if not self._host.isQualified():
            drops["not-qualified"] += 1
            return
        header = packet.header
        if header.dst != ALL_NODES or not packet.is_bubble or packet.auth or packet.origin:
            drops["discovery-invalid"] += 1
            return
        src = header.src
        if src == self._tunnel.address:
            drops["discovery-self"] += 1
            return
        if not is_global_teredo(src, self._prefix):
            drops["discovery-not-teredo"] += 1
            return
        if not self._onSubnet(addr[0]) or addr[1] == 0:
            drops["discovery-off-subnet"] += 1
            return
        if mapping_of(src)[0] != self._host.mappedAddress():
            drops["discovery-foreign-mapping"] += 1
            return
        self.counters["discovery-received"] += 1
        self._tunnel.fromLocalPeer(src, addr)

    def _onSubnet(self, ip: str) -> bool:
        """
        CL-LD-04: the configured subnet when there is one; otherwise a non-global address
        that can be a LAN host's (Miredo: "private").
        """
        address = ipaddress.IPv4Address(ip)
        if self.subnet is not None:
            return address in self.subnet
        if ipv4.is_global_unicast(ip):
            return False
        return not any(address in net for net in _NOT_LAN)

    # -- status ------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "interface": self.lanAddress or "default",
            "subnet": str(self.subnet) if self.subnet is not None else None,
            "local-peers": sum(1 for p in self._tunnel.peers if p.local),
        }
