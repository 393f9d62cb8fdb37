# -*- test-case-name: tests.protocol.test_hostrelay -*-
"""
The host-specific relay (RFC 4380 sections 3.4, 5.4, 5.5; requirements digest 3.4: HR-01..08).

A dual-stack host that runs one talks to Teredo clients directly over UDP/IPv4 instead of
through somebody's relay: its traffic to 2001::/32 goes into this role's TUN, and the role
carries it to the client's mapped endpoint exactly as a relay would (section 5.4.1).  It is
the relay (L{teredonode.roles.relay.TeredoRelay}) with a smaller world:

  - HR-01: no Teredo address (the interface is unnumbered), and never a client;
  - HR-02: 2001::/32 is routed to the TUN, and IPv6 forwarding is left alone, so only the
    host's own traffic uses that route; nothing is advertised;
  - HR-04/05: the addresses it stands for are the host's own native IPv6 addresses: packets
    from the host must come from one of them, packets from clients must go to one of them
    (anything else is dropped), with the relay's anti-spoofing check in full;
  - HR-06: a client's direct connectivity test reaches the host over native IPv6 through the
    client's server, but the host's echo reply is routed into this TUN, so the client hears
    it from the host's own IPv4 endpoint and talks to the host directly from then on;
  - G-03/G-05: a host without native IPv6 cannot be one: the role refuses to start.

The host's addresses are read again every L{ADDRESS_REFRESH} seconds, so an address added
after start is served without a restart.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable

from twisted.internet.task import LoopingCall

from teredonode.errors import TeredoError
from teredonode.interfaces import INetworkConfigurator, ITunDevice
from teredonode.roles.relay import RELAY_POLICY, TeredoRelay
from teredonode.wire.address import GLOBAL_PREFIX
from teredonode.wire.ipv6 import ipv6_text

__all__ = [
    "HOST_RELAY_POLICY",
    "HostSpecificRelay",
    "NoNativeIPv6",
    "nativeAddresses",
    "makeRole",
    "ADDRESS_REFRESH",
]

#: The relay's policy under the host-specific relay's name: the differences are in what it
#: serves and in not forwarding, not in the peer logic (and in dropping packets from clients
#: it never sent to: its few peers re-learn it through their own echo tests).
HOST_RELAY_POLICY = replace(RELAY_POLICY, name="host-relay", forward_stateless=False)

#: Seconds between two readings of the host's addresses.
ADDRESS_REFRESH = 5.0

_IFA_F_DADFAILED = 0x08


class NoNativeIPv6(TeredoError):
    """
    The host has no native IPv6 address, so it cannot be a host-specific relay.
    """


def nativeAddresses(
    exclude: str, path: str = "/proc/net/if_inet6", prefix: bytes = GLOBAL_PREFIX
) -> frozenset[bytes]:
    """
    The host's global-scope IPv6 addresses outside the Teredo prefix, on any interface but
    C{exclude} (our own TUN), read from the kernel's C{if_inet6} table.  Addresses whose
    duplicate address detection failed are not the host's.
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return frozenset()
    found = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[5] == exclude:
            continue
        try:
            raw = bytes.fromhex(fields[0])
            scope, flags = int(fields[3], 16), int(fields[4], 16)
        except ValueError:
            continue
        if len(raw) != 16 or scope != 0 or flags & _IFA_F_DADFAILED or raw[:4] == prefix:
            continue
        found.add(raw)
    return frozenset(found)


class HostSpecificRelay(TeredoRelay):
    """
    A host-specific relay.

    @param settings: the validated C{[host-relay]} table.
    @param reactor: C{IReactorTime} and C{IReactorUDP}.
    @param tun: the interface 2001::/32 is routed to.
    @param netconfig: brings it up and routes the prefix to it (no forwarding).
    @param ownAddresses: the host's native IPv6 addresses (16-byte values); read at start,
        then every L{ADDRESS_REFRESH} seconds.  Injected so that tests choose the host.
    @param randbytes: the bubble source's interface identifier.
    """

    roleName = "host-relay"
    policy = HOST_RELAY_POLICY
    #: The relay's live settings that a C{[host-relay]} table has (no drain: no health route).
    liveSettings = TeredoRelay.liveSettings - {"drain_time"}

    def __init__(
        self,
        settings: Any,
        reactor: Any,
        tun: ITunDevice,
        netconfig: INetworkConfigurator,
        ownAddresses: Callable[[], Iterable[bytes]],
        randbytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self._ownAddresses = ownAddresses
        self.own: frozenset[bytes] = frozenset()
        TeredoRelay.__init__(self, settings, reactor, tun, netconfig, randbytes)
        self._refresher = LoopingCall(self.refreshAddresses)
        self._refresher.clock = reactor

    def _makeServes(self) -> Callable[[bytes], bool]:
        """
        HR-04/05: exactly the host's own native addresses (the current set).
        """
        relay = self

        def serves(address: bytes) -> bool:
            return address in relay.own

        return serves

    def refreshAddresses(self) -> None:
        """
        Read the host's native addresses again.
        """
        self.own = frozenset(self._ownAddresses())

    def _checkHost(self) -> None:
        """
        G-03/G-05: refuse to start without native IPv6.
        """
        self.refreshAddresses()
        if not self.own:
            raise NoNativeIPv6(
                "host-relay: this host has no native IPv6 address; a host-specific relay "
                "serves the host's own IPv6 addresses (RFC 4380 section 5.5)"
            )

    def _configureHost(self) -> None:
        """
        HR-02: the route is for this host's own traffic only, so forwarding is not touched.
        """

    def startService(self) -> None:
        TeredoRelay.startService(self)
        if not self._refresher.running:
            self._refresher.start(ADDRESS_REFRESH, now=False)

    def stopService(self) -> Any:
        if self._refresher.running:
            self._refresher.stop()
        return TeredoRelay.stopService(self)

    def _statusExtra(self) -> dict[str, Any]:
        return {"addresses": sorted(ipv6_text(a) for a in self.own)}


def makeRole(settings: Any, reactor: Any) -> HostSpecificRelay:
    """
    The production host-specific relay: a real TUN, C{ip}, the kernel's address table.
    On a host without native IPv6 it stops twistd with one line (a C{SystemExit} carrying
    the message, which twistd prints as is).
    """
    from teredonode.netconfig import NetlinkConfigurator
    from teredonode.tun import TunDevice

    interface = settings.interface
    prefix = settings.prefix_bytes

    def own() -> frozenset[bytes]:
        return nativeAddresses(interface, prefix=prefix)

    if not own():
        raise SystemExit(
            "teredo: host-relay: this host has no native IPv6 address; a host-specific relay "
            "needs one (RFC 4380 section 5.5)"
        )
    return HostSpecificRelay(
        settings, reactor, TunDevice(interface, reactor=reactor), NetlinkConfigurator(), own
    )
