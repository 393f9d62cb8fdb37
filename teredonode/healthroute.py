# -*- test-case-name: tests.unit.test_healthroute -*-
"""
The relay's health route: one IPv6 route in a kernel table that the relay keeps alive.

A BGP daemon on the relay host announces the Teredo prefix only while this route exists
(docs/anycast.md: BIRD's kernel protocol learns the table, BGP exports what it learns).
The route carries a lifetime (C{expires}); the relay replaces it every C{health-interval}
seconds from its event loop, and only while its TUN and UDP socket are up.  So the route,
and with it the announcement, disappears by itself when the process dies (the TUN goes and
takes the route with it at once), hangs (the lifetime runs out: the kernel's IPv6 route
garbage collector removes it within C{net.ipv6.route.gc_interval}, which relay hosts set to
1 s), or is stopped (the relay deletes it first, see drain).  No new daemon, no polling
script: the kernel is the health checker's only source.

Talks rtnetlink directly (a few fixed-layout messages) rather than running C{ip} every
second: a fork per refresh would stall the data path it reports on.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from typing import Any, Callable

from twisted.internet.task import LoopingCall
from teredonode.logs import Logger

__all__ = ["HealthAnnouncer", "HealthRoute", "RouteError", "encodeRoute", "parseRoutes"]

# <linux/netlink.h>, <linux/rtnetlink.h>
NETLINK_ROUTE = 0
NETLINK_GET_STRICT_CHK = 12
SOL_NETLINK = 270
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTA_DST = 1
RTA_OIF = 4
RTA_PRIORITY = 6
RTA_CACHEINFO = 12
RTA_TABLE = 15
RTA_EXPIRES = 23
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
#: C{proto static}: learned by BIRD's C{learn} (it skips only C{proto kernel} routes).
RTPROT_STATIC = 4
#: Clock ticks per second of C{rta_cacheinfo.rta_expires} (USER_HZ).
USER_HZ = 100

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")


class RouteError(Exception):
    """
    The kernel refused a route operation; the message is one line.
    """


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\x00" * ((4 - length % 4) % 4)


def encodeRoute(
    kind: int, flags: int, seq: int, network: ipaddress.IPv6Network, table: int,
    ifindex: int | None = None, metric: int | None = None, expires: int | None = None,
) -> bytes:
    """
    One rtnetlink route message (C{RTM_NEWROUTE}, C{RTM_DELROUTE} or C{RTM_GETROUTE}).
    """
    if kind == RTM_GETROUTE:
        # A strictly checked dump takes the header's non-zero fields as filters: only the
        # table (the rest is matched by the caller).
        rtm = _RTMSG.pack(socket.AF_INET6, 0, 0, 0, min(table, 255), 0, 0, 0, 0)
    else:
        rtm = _RTMSG.pack(
            socket.AF_INET6, network.prefixlen, 0, 0, min(table, 255), RTPROT_STATIC,
            RT_SCOPE_UNIVERSE, RTN_UNICAST, 0,
        )
    attrs = _attr(RTA_TABLE, struct.pack("=I", table))
    if kind != RTM_GETROUTE:
        attrs += _attr(RTA_DST, network.network_address.packed)
    if ifindex is not None:
        attrs += _attr(RTA_OIF, struct.pack("=i", ifindex))
    if metric is not None:
        attrs += _attr(RTA_PRIORITY, struct.pack("=I", metric))
    if expires is not None:
        attrs += _attr(RTA_EXPIRES, struct.pack("=I", expires))
    body = rtm + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def parseRoutes(data: bytes) -> tuple[list[dict[str, Any]], int | None, bool]:
    """
    The routes in a buffer of rtnetlink messages, the errno of an error message (0 for an
    acknowledgement, None if none), and whether the dump is done.
    """
    routes: list[dict[str, Any]] = []
    error: int | None = None
    done = False
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        body = data[offset + _NLMSGHDR.size : offset + length]
        if kind == NLMSG_ERROR and len(body) >= 4:
            error = -struct.unpack_from("=i", body)[0]
        elif kind == NLMSG_DONE:
            done = True
        elif kind == RTM_NEWROUTE and len(body) >= _RTMSG.size:
            family, dstLen, _s, _t, table, _p, _sc, _ty, _f = _RTMSG.unpack_from(body)
            route: dict[str, Any] = {"family": family, "prefixlen": dstLen, "table": table}
            pos = _RTMSG.size
            while pos + _RTATTR.size <= len(body):
                alen, akind = _RTATTR.unpack_from(body, pos)
                if alen < _RTATTR.size:
                    break
                value = body[pos + _RTATTR.size : pos + alen]
                if akind == RTA_DST:
                    route["dst"] = value
                elif akind == RTA_TABLE and len(value) >= 4:
                    route["table"] = struct.unpack_from("=I", value)[0]
                elif akind == RTA_OIF and len(value) >= 4:
                    route["oif"] = struct.unpack_from("=i", value)[0]
                elif akind == RTA_CACHEINFO and len(value) >= 12:
                    route["expires"] = struct.unpack_from("=i", value, 8)[0] / USER_HZ
                pos += (alen + 3) & ~3
            routes.append(route)
        offset += (length + 3) & ~3
    return routes, error, done


class HealthRoute:
    """
    The route C{prefix dev ifname table table metric metric}, refreshed with a lifetime.

    @param prefix: the announced prefix (the relay's Teredo prefix).
    @param table: the kernel table the BGP daemon learns (1..4294967295, not main/local).
    @param lifetime: seconds the route lives without a refresh.
    """

    def __init__(self, prefix: str, table: int, lifetime: int, metric: int = 1024) -> None:
        self.network = ipaddress.IPv6Network(prefix)
        self.table = table
        self.lifetime = lifetime
        self.metric = metric
        self._sock: socket.socket | None = None
        self._seq = 0

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            try:
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            except OSError:
                pass  # older kernels: the dump is filtered here instead
            sock.settimeout(1.0)
            sock.bind((0, 0))
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _request(self, kind: int, flags: int, **fields: Any) -> list[dict[str, Any]]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        message = encodeRoute(kind, flags, self._seq, self.network, self.table, **fields)
        sock = self._socket()
        try:
            sock.send(message)
            routes: list[dict[str, Any]] = []
            while True:
                found, error, done = parseRoutes(sock.recv(65536))
                routes += found
                if error:
                    raise RouteError(os.strerror(error))
                if error == 0 or done:
                    return routes
        except OSError as e:
            self.close()  # a fresh socket next time: no stale replies left to misread
            raise RouteError(e.strerror or str(e)) from None

    def refresh(self, ifname: str) -> None:
        """
        Add or replace the route through C{ifname}, living C{lifetime} seconds from now.
        """
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            raise RouteError(f"no interface {ifname}") from None
        self._request(
            RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            ifindex=ifindex, metric=self.metric, expires=self.lifetime,
        )

    def withdraw(self) -> None:
        """
        Delete the route now (the BGP daemon withdraws the prefix); absent is fine.
        """
        try:
            self._request(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, metric=self.metric)
        except RouteError as e:
            if str(e) not in (os.strerror(errno.ESRCH), os.strerror(errno.ENOENT)):
                raise

    def lookup(self) -> dict[str, Any] | None:
        """
        The route as the kernel (and so the BGP daemon) sees it: C{{"expires": seconds
        left, "oif": ifindex}}, or None when it is not there.
        """
        for route in self._request(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP):
            if (
                route.get("table") == self.table
                and route.get("prefixlen") == self.network.prefixlen
                and route.get("dst") == self.network.network_address.packed
            ):
                return route
        return None


class HealthAnnouncer:
    """
    Keeps a health route (L{HealthRoute}, or a test's fake with C{refresh(ifname)},
    C{withdraw()}, C{lookup()}, C{close()}) alive from the event loop: replaced every
    C{interval} seconds while C{healthy()}, withdrawn otherwise.  A failure is logged once
    per change, shown in L{status} and retried at the next interval.

    @param clock: C{IReactorTime}.
    @param ifname: the relay's TUN name, asked at each refresh.
    @param table: the kernel table, for status and logs.
    """

    log = Logger()

    def __init__(
        self, clock: Any, route: Any, healthy: Callable[[], bool], ifname: Callable[[], str],
        interval: float, table: int,
    ) -> None:
        self._clock = clock
        self._route = route
        self._healthy = healthy
        self._ifname = ifname
        self._interval = interval
        self._table = table
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock
        self.state = "withdrawn"
        self.error: str | None = None
        self._refreshed: float | None = None

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self._interval, now=True)

    def _check(self) -> None:
        if not self._healthy():
            self.withdraw(stopping=False)
            return
        try:
            self._route.refresh(self._ifname())
        except Exception as e:
            self._set("withdrawn", str(e))
            return
        self._refreshed = self._clock.seconds()
        self._set("announced", None)

    def withdraw(self, stopping: bool = True) -> None:
        """
        Delete the route now (and, when C{stopping}, refresh it no more).
        """
        if stopping and self._loop.running:
            self._loop.stop()
        try:
            self._route.withdraw()
        except Exception as e:  # the route goes with the TUN anyway
            self._set("withdrawn", str(e))
            return
        self._set("withdrawn", None)

    def close(self) -> None:
        self._route.close()

    def _set(self, state: str, error: str | None) -> None:
        if error is not None and error != self.error:
            self.log.warn("health route: {error}", error=error)
        elif state != self.state:
            self.log.info("health route {state} (table {table})", state=state, table=self._table)
        self.state = state
        self.error = error

    def status(self) -> dict[str, Any]:
        """
        The route as the BGP daemon sees it, read back from the kernel, next to what we
        last did with it.
        """
        try:
            found = self._route.lookup()
            kernel: Any = {"present": found is not None, "expires": found.get("expires") if found else None}
        except Exception as e:
            kernel = {"present": None, "error": str(e)}
        refreshed = self._refreshed
        return {
            "state": self.state,
            "table": self._table,
            "kernel-route": kernel,
            "last-refresh": round(self._clock.seconds() - refreshed, 3) if refreshed is not None else None,
            "error": self.error,
        }
