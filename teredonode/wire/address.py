"""
Teredo IPv6 addresses (RFC 4380 section 4, flags as updated by RFC 5991 section 3.1).

    bytes 0..3    4..7         8..9   10..11        12..15
          prefix  server IPv4  flags  ~mapped port  ~mapped IPv4

The mapped port and IPv4 address are stored obfuscated (XOR all ones) so that NATs that
rewrite addresses found in payloads leave them alone; the origin indication (RFC 4380
section 5.1.1) carries an endpoint the same way.  L{obfuscate_port}, L{obfuscate_ipv4} and
L{obfuscated_mapping} are that XOR, the one place it is written (it is its own inverse, so
they de-obfuscate too).  L{TeredoAddress} holds the fields de-obfuscated; the module-level
helpers (L{mapping_of}, L{server_of}, L{is_teredo}, L{mapping_is_global},
L{is_global_teredo}) read raw 16-byte addresses without building a value, for the data path.

Flags, RFC 5991 layout (bit 0 is the most significant bit of byte 8)::

    |C|z|Random1|U|G|    Random2    |
     0 1 2....5  6 7 8 ........... 15
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
from dataclasses import dataclass
from typing import Callable

from teredonode.wire import ipv4
from teredonode.wire.errors import ParseError
from teredonode.wire.ipv6 import ipv6_text

__all__ = [
    "TEREDO_PORT",
    "GLOBAL_PREFIX",
    "FLAG_CONE",
    "FLAG_Z",
    "FLAG_U",
    "FLAG_G",
    "RANDOM_MASK",
    "TeredoAddress",
    "make_address",
    "random_flags",
    "is_teredo",
    "is_global_teredo",
    "mapping_of",
    "mapping_is_global",
    "obfuscate_port",
    "obfuscate_ipv4",
    "obfuscated_mapping",
    "server_of",
    "link_local",
    "server_link_local",
    "CLIENT_LINK_LOCAL_CONE",
    "CLIENT_LINK_LOCAL_RESTRICTED",
    "prefix_from_text",
]

#: The Teredo UDP port (RFC 4380 section 2.7), on which servers listen.
TEREDO_PORT = 3544
#: The global Teredo service prefix 2001:0::/32, as its first four bytes.
GLOBAL_PREFIX = b"\x20\x01\x00\x00"

FLAG_CONE = 0x8000
FLAG_Z = 0x4000
FLAG_U = 0x0200
FLAG_G = 0x0100
#: RFC 5991 random bits: Random1 (0x3C00) and Random2 (0x00FF), twelve in all.
RANDOM_MASK = 0x3CFF

_LAYOUT = struct.Struct("!4s4sHH4s")
_TAIL = struct.Struct("!H4s")
_OBFUSCATED = struct.Struct("!HI")


def obfuscate_port(port: int) -> int:
    """
    A UDP port as a Teredo address or an origin indication carries it: every bit inverted
    (RFC 4380 sections 4 and 5.1.1).  Its own inverse: it de-obfuscates too.
    """
    return port ^ 0xFFFF


def obfuscate_ipv4(raw: bytes) -> bytes:
    """
    A 4-byte IPv4 address with every bit inverted, as a Teredo address or an origin
    indication carries it (RFC 4380 sections 4 and 5.1.1).  Its own inverse.
    """
    return (int.from_bytes(raw, "big") ^ 0xFFFFFFFF).to_bytes(4, "big")


def obfuscated_mapping(ip: str, port: int) -> bytes:
    """
    The six bytes that embed the endpoint C{(ip, port)}, obfuscated: bytes 10..15 of a
    Teredo address, and what follows the two zero bytes of an origin indication.  Built in
    one C{struct} call because a server builds it for every datagram whose source it checks
    (RFC 4380 section 5.3.1) and every origin indication it sends; C{ip} is a dotted quad as the socket layer gives
    it (not re-checked: L{ipv4.pack} is for text from elsewhere).  The XOR is written out
    here and in L{mapping_of} and L{mapping_is_global} rather than calling the two helpers
    above: these three run per packet, where a call costs more than the XOR.
    """
    return _OBFUSCATED.pack(port ^ 0xFFFF, int.from_bytes(socket.inet_aton(ip), "big") ^ 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class TeredoAddress:
    """
    A Teredo address, fields decoded.

    @ivar prefix: the 4-byte service prefix (C{GLOBAL_PREFIX} normally).
    @ivar server: the Teredo server's IPv4 address, dotted quad.
    @ivar flags: the 16-bit flags field as on the wire.
    @ivar port: the client's mapped UDP port (de-obfuscated).
    @ivar client: the client's mapped IPv4 address (de-obfuscated), dotted quad.
    """

    prefix: bytes
    server: str
    flags: int
    port: int
    client: str

    def __post_init__(self) -> None:
        if len(self.prefix) != 4:
            raise ParseError("teredo prefix must be 4 bytes")
        if not 0 <= self.flags <= 0xFFFF:
            raise ParseError("teredo flags out of range")
        if not 0 <= self.port <= 0xFFFF:
            raise ParseError("teredo port out of range")
        ipv4.pack(self.server)
        ipv4.pack(self.client)

    @classmethod
    def from_bytes(cls, raw: bytes) -> TeredoAddress:
        """
        Decode 16 raw bytes.  Any 16 bytes decode; whether the prefix is one we serve is the
        caller's question (L{is_teredo}).
        """
        if len(raw) != 16:
            raise ParseError("ipv6 address must be 16 bytes")
        prefix, server, flags, oport, oip = _LAYOUT.unpack(raw)
        return cls(
            prefix=prefix,
            server=socket.inet_ntoa(server),
            flags=flags,
            port=obfuscate_port(oport),
            client=socket.inet_ntoa(obfuscate_ipv4(oip)),
        )

    @classmethod
    def parse(cls, text: str, prefix: bytes | None = GLOBAL_PREFIX) -> TeredoAddress:
        """
        Decode the text form, checking the service prefix unless C{prefix} is C{None}.
        """
        try:
            raw = ipaddress.IPv6Address(text.strip()).packed
        except ValueError:
            raise ParseError("not an ipv6 address") from None
        if prefix is not None and raw[:4] != prefix:
            raise ParseError("not a teredo address")
        return cls.from_bytes(raw)

    def to_bytes(self) -> bytes:
        """
        Encode to the 16 raw bytes.
        """
        return _LAYOUT.pack(
            self.prefix,
            ipv4.pack(self.server),
            self.flags,
            obfuscate_port(self.port),
            obfuscate_ipv4(ipv4.pack(self.client)),
        )

    def __str__(self) -> str:
        return ipv6_text(self.to_bytes())

    @property
    def cone(self) -> bool:
        """
        The cone bit (RFC 4380); deprecated for clients and relays by RFC 5991.
        """
        return bool(self.flags & FLAG_CONE)

    @property
    def random_bits(self) -> int:
        """
        The twelve RFC 5991 random bits as one number, Random1 high, Random2 low.
        """
        return ((self.flags & 0x3C00) >> 2) | (self.flags & 0x00FF)

    @property
    def mapping(self) -> tuple[str, int]:
        """
        The client's mapped endpoint, C{(ip, port)}.
        """
        return (self.client, self.port)


def random_flags(cone: bool = False, randbits: Callable[[int], int] = secrets.randbits) -> int:
    """
    Fresh flags per RFC 5991 section 3.1: twelve random bits, z/U/G zero, C as asked.
    """
    r = randbits(12)
    flags = ((r & 0xF00) << 2) | (r & 0x0FF)
    return flags | (FLAG_CONE if cone else 0)


def make_address(
    server: str,
    client: str,
    port: int,
    prefix: bytes = GLOBAL_PREFIX,
    cone: bool = False,
    randbits: Callable[[int], int] = secrets.randbits,
) -> TeredoAddress:
    """
    Build a client's Teredo address from its qualified mapping, with fresh random bits.
    """
    return TeredoAddress(prefix, server, random_flags(cone, randbits), port, client)


def is_teredo(raw: bytes, prefix: bytes = GLOBAL_PREFIX) -> bool:
    """
    Does the 16-byte address start with the Teredo service prefix?
    """
    return raw[:4] == prefix


def server_of(raw: bytes) -> str:
    """
    The server IPv4 embedded in a raw Teredo address (bits 32..63), dotted quad.
    """
    return socket.inet_ntoa(raw[4:8])


def mapping_of(raw: bytes, offset: int = 10) -> tuple[str, int]:
    """
    The mapped C{(ip, port)} embedded in a raw 16-byte Teredo address.  Cheap: data path.

    @param offset: where the six obfuscated bytes start: 10 in an address, 2 past the start
        of an origin indication (L{teredonode.wire.teredo.classify} reads those with it).
    """
    oport, oip = _TAIL.unpack_from(raw, offset)
    return socket.inet_ntoa(obfuscate_ipv4(oip)), oport ^ 0xFFFF


def mapping_is_global(raw: bytes, hardened: bool = True) -> bool:
    """
    Is the mapped IPv4 address embedded in the raw Teredo address C{raw} global unicast
    (RFC 4380 section 5.2.4)?  Neither a server nor a relay sends toward one that is not
    (sections 5.3.1 and 5.4.1).  Tested as an integer, without building the dotted quad: a server
    asks for every packet it forwards.
    """
    return ipv4.is_global_unicast(int.from_bytes(raw[12:16], "big") ^ 0xFFFFFFFF, hardened)


def is_global_teredo(raw: bytes, prefix: bytes = GLOBAL_PREFIX, hardened: bool = True) -> bool:
    """
    Is C{raw} a Teredo address (C{prefix}) whose embedded server and mapped IPv4 address
    are both global unicast?  What a packet toward a Teredo peer needs before any bubble
    goes to either (RFC 4380 sections 5.2.4 and 5.4.1), and what a discovery bubble's
    source must be (section 5.2.8).
    """
    return (
        raw[:4] == prefix
        and ipv4.is_global_unicast(raw[4:8], hardened)
        and mapping_is_global(raw, hardened)
    )


def link_local(flags: int, port: int, ip: str) -> bytes:
    """
    A Teredo link-local address: fe80::/64 and the same identifier layout as a Teredo
    address (RFC 4380 section 4).
    """
    return (
        b"\xfe\x80" + b"\x00" * 6 + struct.pack("!HH", flags, obfuscate_port(port)) + obfuscate_ipv4(ipv4.pack(ip))
    )


def server_link_local(server: str) -> bytes:
    """
    The server's link-local address, RA source (RFC 4380 section 5.3.2): cone bit set,
    obfuscated port 3544 (C{f227}), obfuscated server IPv4: C{fe80::8000:f227:<~server>}.
    """
    return link_local(FLAG_CONE, TEREDO_PORT, server)


#: The link-local source of a qualification RS.  RFC 4380 leaves the identifier open; these
#: are the values Miredo sends (and checks for in the RA's destination), so a server of ours
#: answering them and a client of ours using them interoperate both ways.
CLIENT_LINK_LOCAL_CONE = bytes.fromhex("fe80000000000000800054455245444f")
CLIENT_LINK_LOCAL_RESTRICTED = bytes.fromhex("fe800000000000000000ffffffffffff")


def prefix_from_text(text: str) -> bytes:
    """
    C{"2001::/32"} -> the 4 prefix bytes.  Teredo service prefixes are exactly /32.
    """
    try:
        net = ipaddress.IPv6Network(text.strip(), strict=True)
    except ValueError:
        raise ParseError("not an ipv6 prefix") from None
    if net.prefixlen != 32:
        raise ParseError("teredo prefix must be a /32")
    return net.network_address.packed[:4]
