"""
IPv4 address predicates (pure).

RFC 4380 section 5.2.4 defines which IPv4 addresses are "in the format of a global unicast
address"; servers and relays check outer sources and embedded mappings against it
(SV-IN-3, SV-FW-4, SV-RA-07, RL-TX-01).  The RFC's list dates from 2006, so
L{HARDENING_RANGES} adds the ranges assigned since that can never be a real client's public
mapping.  Both are documented in C{docs/wire.md}.

The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are deliberately
*accepted*: the project's lab uses them as its public Internet, as Miredo does.
"""

from __future__ import annotations

import socket
import struct

from teredonode.wire.errors import ParseError

__all__ = [
    "RFC4380_NON_GLOBAL",
    "HARDENING_RANGES",
    "is_global_unicast",
    "pack",
    "unpack",
]

_U32 = struct.Struct("!I")


def _net(text: str) -> tuple[int, int, str]:
    """
    C{"10.0.0.0/8"} -> C{(network, mask, text)} as integers, for fast membership tests.
    """
    base, length = text.split("/")
    mask = (0xFFFFFFFF << (32 - int(length))) & 0xFFFFFFFF
    return _U32.unpack(socket.inet_aton(base))[0] & mask, mask, text


#: The ranges RFC 4380 section 5.2.4 lists as not global unicast, verbatim.  (Directed
#: broadcast addresses of attached subnets are never a valid source because no socket of
#: ours sets SO_BROADCAST.)
RFC4380_NON_GLOBAL: tuple[tuple[int, int, str], ...] = tuple(
    _net(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "192.88.99.0/24",
        "224.0.0.0/4",
        "255.255.255.255/32",
    )
)

#: Ranges assigned after RFC 4380 that no real client mapping can come from: shared address
#: space (RFC 6598), IETF protocol assignments (RFC 6890), benchmarking (RFC 2544), and the
#: reserved 240/4 block.  Applied by default ("hardened"), switchable off per role.
HARDENING_RANGES: tuple[tuple[int, int, str], ...] = tuple(
    _net(n)
    for n in (
        "100.64.0.0/10",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "240.0.0.0/4",
    )
)

def _by_first_octet(ranges: tuple[tuple[int, int, str], ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """
    For each first octet, the ranges that can contain an address starting with it: a global
    address then usually needs no range test at all.
    """
    table = []
    for octet in range(256):
        low, high = octet << 24, (octet << 24) | 0xFFFFFF
        table.append(
            tuple((net, mask) for net, mask, _ in ranges if net <= high and (net | (~mask & 0xFFFFFFFF)) >= low)
        )
    return tuple(table)


_STRICT = _by_first_octet(RFC4380_NON_GLOBAL + HARDENING_RANGES)
_RFC = _by_first_octet(RFC4380_NON_GLOBAL)


def pack(ip: str) -> bytes:
    """
    Dotted quad -> 4 bytes, strictly: C{inet_aton} alone would accept C{"1"}, C{"0x7f.1"} or
    leading zeros, so the result must print back as the very same text.  Two C calls, cheap
    enough for the data path.
    """
    try:
        raw = socket.inet_aton(ip)
    except (OSError, TypeError, ValueError):
        raise ParseError("bad ipv4 address") from None
    if socket.inet_ntoa(raw) != ip:
        raise ParseError("bad ipv4 address")
    return raw


def unpack(raw: bytes) -> str:
    """
    4 bytes -> dotted quad.
    """
    if len(raw) != 4:
        raise ParseError("bad ipv4 length")
    return socket.inet_ntoa(raw)


def is_global_unicast(ip: str | bytes | int, hardened: bool = True) -> bool:
    """
    Is C{ip} in the format of a global unicast address (RFC 4380 section 5.2.4)?

    @param ip: dotted quad, 4 raw bytes, or the address as an integer.
    @param hardened: also reject L{HARDENING_RANGES}.
    """
    if isinstance(ip, str):
        value = _U32.unpack(pack(ip))[0]
    elif isinstance(ip, bytes):
        if len(ip) != 4:
            return False
        value = _U32.unpack(ip)[0]
    else:
        value = ip
    for network, mask in (_STRICT if hardened else _RFC)[value >> 24]:
        if value & mask == network:
            return False
    return True


def following(ip: str) -> str | None:
    """
    The IPv4 address after C{ip}: a Teredo server's conventional secondary address (SA-04,
    "primary + 1"); C{None} after 255.255.255.255.
    """
    value = _U32.unpack(pack(ip))[0]
    return unpack(_U32.pack(value + 1)) if value < 0xFFFFFFFF else None
