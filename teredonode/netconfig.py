# -*- test-case-name: tests.unit.test_netconfig -*-
"""
The production L{INetworkConfigurator}: rtnetlink through pyroute2, plus a few sysctls.

Netlink, not a shell-out to iproute2's C{ip}: after start a node runs as an unprivileged
user keeping C{CAP_NET_ADMIN} only in its own threads' effective set (see
L{teredonode.privilege}); a program it executed would not inherit it.  The kernel checks
C{CAP_NET_ADMIN} on each netlink request, so the client can re-address its interface when
its mapping changes while unprivileged.  Every failure becomes one L{NetConfigError} line:
the operation, in C{ip}'s words, and the kernel's reason.

Two kernel behaviours shape L{NetlinkConfigurator.linkUp}: with default sysctls the kernel
gives a new link its own link-local address and sends a Router Solicitation into the
tunnel, and it runs duplicate address detection on every address.  A Teredo interface
wants neither, so C{addr_gen_mode} and C{accept_dad} are written before the link comes up
and addresses are added with C{IFA_F_NODAD}.  Network sysctls are writable with
C{CAP_NET_ADMIN} in the namespace, so this works unprivileged too.

Removing an address or route that is absent, or whose device has gone, is not an error; nor
is being refused (C{EPERM}) a removal by a process that kept no C{CAP_NET_ADMIN}: the routes
of the roles that keep nothing are on their own TUN device and go with it when it closes.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from typing import Any, Callable

from zope.interface import implementer

from teredonode.errors import NetConfigError
from teredonode.interfaces import INetworkConfigurator

__all__ = ["NetlinkConfigurator", "NetlinkFactory"]

#: Opens one rtnetlink session: a context manager with pyroute2 C{IPRoute}'s C{link_lookup},
#: C{link}, C{addr} and C{route} methods.
NetlinkFactory = Callable[[], Any]

#: Kernel answers to a removal that mean "already gone": no such route (ESRCH), no such
#: address (EADDRNOTAVAIL), no such device (ENODEV).  EPERM: see the module docstring.
_ABSENT = frozenset({errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENODEV, errno.EPERM})

# IFA_F_NODAD from linux/if_addr.h.
_IFA_F_NODAD = 0x02

# Kernel interface names: 1-15 bytes, no slash or whitespace.  Checked because a name
# becomes part of a /proc/sys path.
_IFNAME = re.compile(r"[^/\s\x00]{1,15}")

_IPV6_MIN_MTU = 1280


def _pyroute2() -> Any:
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise NetConfigError("pyroute2 is not installed (pip install pyroute2)") from None
    return IPRoute()


def _writeFile(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value + "\n")


class _Absent(Exception):
    """
    The device to configure does not exist.
    """


@implementer(INetworkConfigurator)
class NetlinkConfigurator:
    """
    Configures interfaces over rtnetlink and by writing C{/proc/sys}.
    """

    def __init__(
        self,
        netlink: NetlinkFactory | None = None,
        sysctlRoot: str = "/proc/sys",
        writeFile: Callable[[str, str], None] | None = None,
    ) -> None:
        """
        @param netlink: opens a netlink session; pyroute2's C{IPRoute} by default, a fake
            in tests.
        @param sysctlRoot: where the sysctl tree is mounted.
        @param writeFile: writes one sysctl value to a path; injected by tests.
        """
        self._netlink = netlink if netlink is not None else _pyroute2
        self._sysctlRoot = sysctlRoot
        self._write = writeFile if writeFile is not None else _writeFile

    def linkUp(self, name: str, mtu: int) -> None:
        _checkName(name)
        if not isinstance(mtu, int) or not _IPV6_MIN_MTU <= mtu <= 65535:
            raise NetConfigError(f"mtu {mtu!r} for {name}: IPv6 needs 1280..65535")
        self._sysctl(f"net/ipv6/conf/{name}/addr_gen_mode", "1")
        self._sysctl(f"net/ipv6/conf/{name}/accept_dad", "0")
        self._request(
            f"ip link set dev {name} mtu {mtu} up",
            name,
            lambda nl, index: nl.link("set", index=index, mtu=mtu, state="up"),
        )

    def addAddress(self, name: str, address: str, prefixlen: int) -> None:
        self._address("add", name, address, prefixlen, {"flags": _IFA_F_NODAD})

    def removeAddress(self, name: str, address: str, prefixlen: int) -> None:
        self._address("del", name, address, prefixlen, {})

    def _address(
        self, verb: str, name: str, address: str, prefixlen: int, extra: dict[str, int]
    ) -> None:
        _checkName(name)
        cidr = _cidr(address, prefixlen)
        self._request(
            f"ip -6 addr {verb} {cidr} dev {name}" + (" nodad" if extra else ""),
            name,
            lambda nl, index: nl.addr(
                verb, index=index, address=cidr.split("/")[0], prefixlen=prefixlen,
                family=socket.AF_INET6, **extra,
            ),
            absentOk=verb == "del",
        )

    def addRoute(self, name: str, prefix: str, metric: int) -> None:
        _checkName(name)
        if not isinstance(metric, int) or not 0 <= metric <= 0xFFFFFFFF:
            raise NetConfigError(f"route metric {metric!r}: must be 0..4294967295")
        dst = _prefix(prefix)
        self._request(
            f"ip -6 route add {dst} dev {name} metric {metric}",
            name,
            lambda nl, index: nl.route(
                "add", dst=dst, oif=index, priority=metric, family=socket.AF_INET6
            ),
        )

    def removeRoute(self, name: str, prefix: str) -> None:
        _checkName(name)
        dst = _prefix(prefix)
        self._request(
            f"ip -6 route del {dst} dev {name}",
            name,
            lambda nl, index: nl.route("del", dst=dst, oif=index, family=socket.AF_INET6),
            absentOk=True,
        )

    def setForwarding(self, enabled: bool) -> None:
        self._sysctl("net/ipv6/conf/all/forwarding", "1" if enabled else "0")

    def _request(
        self,
        command: str,
        name: str,
        call: Callable[[Any, int], Any],
        absentOk: bool = False,
    ) -> None:
        """
        Run C{call(session, ifindex)} for device C{name}; C{command} names it in errors.
        """
        try:
            with self._netlink() as nl:
                found = nl.link_lookup(ifname=name)
                if not found:
                    raise _Absent()
                call(nl, found[0])
        except NetConfigError:
            raise
        except _Absent:
            if absentOk:
                return
            raise NetConfigError(f'{command}: Cannot find device "{name}"') from None
        except Exception as e:
            # The kernel's refusal: pyroute2's NetlinkError carries the errno as C{code}, a
            # socket failure is an OSError.  Anything else is a bug and propagates.
            code = getattr(e, "code", None) if not isinstance(e, OSError) else e.errno
            if not isinstance(code, int):
                raise
            if absentOk and code in _ABSENT:
                return
            raise NetConfigError(f"{command}: {os.strerror(code)}") from None

    def _sysctl(self, key: str, value: str) -> None:
        path = os.path.join(self._sysctlRoot, key)
        try:
            self._write(path, value)
        except OSError as e:
            raise NetConfigError(f"cannot write {value} to {path}: {e.strerror or e}") from None


def _checkName(name: str) -> None:
    if not isinstance(name, str) or not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise NetConfigError(f"bad interface name {name!r}")


def _cidr(address: str, prefixlen: int) -> str:
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        raise NetConfigError(f"not an IPv6 address: {address!r}") from None
    if not isinstance(prefixlen, int) or not 0 <= prefixlen <= 128:
        raise NetConfigError(f"bad prefix length {prefixlen!r} for {address}")
    return f"{parsed.compressed}/{prefixlen}"


def _prefix(prefix: str) -> str:
    try:
        return ipaddress.IPv6Network(prefix, strict=False).compressed
    except ValueError:
        raise NetConfigError(f"not an IPv6 prefix: {prefix!r}") from None
