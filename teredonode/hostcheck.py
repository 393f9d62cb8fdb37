"""
What a role needs from its host, checked at start so a missing piece is one line at start
rather than traffic dropped silently later.

Read from C{/proc} (the kernel's own view), only in the roles' production C{makeRole}.
"""

from __future__ import annotations

import ipaddress
import os

__all__ = ["nativeRoutes", "forwardingSettable"]


def nativeRoutes(exclude: str, path: str = "/proc/net/ipv6_route") -> list[str]:
    """
    The host's IPv6 routes toward global unicast destinations (C{2000::/3} or a default
    route) that do not go through C{exclude} (the role's own TUN) or the loopback: where
    packets to native hosts can leave.  Empty when the table cannot be read.
    """
    routes: list[str] = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return routes
    globalUnicast = ipaddress.IPv6Network("2000::/3")
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[9] in ("lo", exclude):
            continue
        try:
            network = ipaddress.IPv6Network((int(fields[0], 16), int(fields[1], 16)))
        except ValueError:
            continue
        flags = int(fields[8], 16)
        if flags & 0x0200:  # RTF_REJECT: an unreachable route leads nowhere
            continue
        if network.prefixlen == 0 or network.overlaps(globalUnicast):
            routes.append(f"{network} dev {fields[9]}")
    return routes


def forwardingSettable(root: str = "/proc/sys") -> bool:
    """
    Is C{net.ipv6.conf.all.forwarding} on already, or can this process turn it on?  (Not
    in a container whose C{/proc/sys} is read-only, nor without the privilege.)
    """
    path = os.path.join(root, "net/ipv6/conf/all/forwarding")
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return True
    except OSError:
        return False
    return os.access(path, os.W_OK)
