# -*- test-case-name: tests.unit.test_netconfig -*-
"""
The production L{INetworkConfigurator}: iproute2's C{ip} command plus a few sysctls.

Teredo configures an interface a handful of times (at start, and when a client
requalifies), so a synchronous subprocess is simpler than a netlink library and leaves
greppable command lines in the logs.  Every failure becomes one L{NetConfigError} line: the
command and the first line of what C{ip} said.

Two kernel behaviours shape L{IPRoute2Configurator.linkUp}: with default sysctls the kernel
gives a new link its own link-local address and sends a Router Solicitation into the
tunnel, and it runs duplicate address detection on every address.  A Teredo interface
wants neither, so C{addr_gen_mode} and C{accept_dad} are written before the link comes up
and addresses are added with C{nodad}.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from typing import Callable, Sequence

from zope.interface import implementer

from teredonode.errors import NetConfigError
from teredonode.interfaces import INetworkConfigurator

__all__ = ["IPRoute2Configurator", "Runner"]

#: Runs an argv and returns its outcome (C{returncode} and text C{stderr} are used).
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]

# What ip prints when the thing to remove is not there (new and old kernels), or the whole
# device has gone (a non-persistent TUN closed before teardown).
_ABSENT = (
    "address not found",
    "Cannot assign requested address",
    "No such process",
    "Cannot find device",
)

# Kernel interface names: 1-15 bytes, no slash or whitespace.  Checked because a name
# becomes part of a /proc/sys path.
_IFNAME = re.compile(r"[^/\s\x00]{1,15}")

_IPV6_MIN_MTU = 1280


def _runSubprocess(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


def _writeFile(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value + "\n")


@implementer(INetworkConfigurator)
class IPRoute2Configurator:
    """
    Configures interfaces by running C{ip} and writing C{/proc/sys}.
    """

    def __init__(
        self,
        ip: str = "ip",
        runner: Runner | None = None,
        sysctlRoot: str = "/proc/sys",
        writeFile: Callable[[str, str], None] | None = None,
    ) -> None:
        """
        @param ip: the C{ip} executable.
        @param runner: runs one command; injected by tests.
        @param sysctlRoot: where the sysctl tree is mounted.
        @param writeFile: writes one sysctl value to a path; injected by tests.
        """
        self._ipPath = ip
        self._run = runner if runner is not None else _runSubprocess
        self._sysctlRoot = sysctlRoot
        self._write = writeFile if writeFile is not None else _writeFile

    def linkUp(self, name: str, mtu: int) -> None:
        _checkName(name)
        if not isinstance(mtu, int) or not _IPV6_MIN_MTU <= mtu <= 65535:
            raise NetConfigError(f"mtu {mtu!r} for {name}: IPv6 needs 1280..65535")
        self._sysctl(f"net/ipv6/conf/{name}/addr_gen_mode", "1")
        self._sysctl(f"net/ipv6/conf/{name}/accept_dad", "0")
        self._ip("link", "set", "dev", name, "mtu", str(mtu), "up")

    def addAddress(self, name: str, address: str, prefixlen: int) -> None:
        _checkName(name)
        self._ip("-6", "addr", "add", _cidr(address, prefixlen), "dev", name, "nodad")

    def removeAddress(self, name: str, address: str, prefixlen: int) -> None:
        _checkName(name)
        self._ip("-6", "addr", "del", _cidr(address, prefixlen), "dev", name, absentOk=True)

    def addRoute(self, name: str, prefix: str, metric: int) -> None:
        _checkName(name)
        if not isinstance(metric, int) or not 0 <= metric <= 0xFFFFFFFF:
            raise NetConfigError(f"route metric {metric!r}: must be 0..4294967295")
        self._ip("-6", "route", "add", _prefix(prefix), "dev", name, "metric", str(metric))

    def removeRoute(self, name: str, prefix: str) -> None:
        _checkName(name)
        self._ip("-6", "route", "del", _prefix(prefix), "dev", name, absentOk=True)

    def setForwarding(self, enabled: bool) -> None:
        self._sysctl("net/ipv6/conf/all/forwarding", "1" if enabled else "0")

    def _ip(self, *args: str, absentOk: bool = False) -> None:
        argv = [self._ipPath, *args]
        command = " ".join(argv)
        try:
            result = self._run(argv)
        except FileNotFoundError:
            raise NetConfigError(f"{command}: {self._ipPath} not found (install iproute2)") from None
        except subprocess.TimeoutExpired:
            raise NetConfigError(f"{command}: timed out") from None
        except OSError as e:
            raise NetConfigError(f"{command}: {e.strerror or e}") from None
        if result.returncode == 0:
            return
        stderr = result.stderr or ""
        if absentOk and any(marker in stderr for marker in _ABSENT):
            return
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        reason = lines[0] if lines else f"exit status {result.returncode}"
        raise NetConfigError(f"{command}: {reason}")

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
