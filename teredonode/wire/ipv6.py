"""
IPv6 header, the ICMPv6 messages Teredo uses, checksums, bubbles (pure).

Teredo needs only a small part of IPv6: the fixed header (to read addresses, next header and
length of every packet), ICMPv6 Echo (direct connectivity test, server echo relaying), Router
Solicitation/Advertisement with the Prefix Information and MTU options (qualification), and
the two errors a tunnel endpoint sends (Destination Unreachable, Packet Too Big).

Values are C{NamedTuple}s: immutable, typed, and the cheapest Python object to build, which
matters because L{IPv6Header} is built once per forwarded packet.  Addresses are raw 16-byte
C{bytes}.

Checksums use a property of one's complement arithmetic: because 2**16 = 1 (mod 0xFFFF), the
one's complement sum of a buffer's 16-bit words is the buffer read as one big integer modulo
0xFFFF (with 0xFFFF standing for a non-zero multiple).  C{int.from_bytes(...) % 0xFFFF} runs in
C and beats summing an unpacked tuple.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple, Union

from teredonode.wire.errors import ParseError

__all__ = [
    "ipv6_text",
    "NH_ICMPV6",
    "NH_NONE",
    "ICMP_DEST_UNREACH",
    "ICMP_PACKET_TOO_BIG",
    "ICMP_ECHO_REQUEST",
    "ICMP_ECHO_REPLY",
    "ICMP_RS",
    "ICMP_RA",
    "ICMP_ERROR_MAX",
    "ALL_NODES",
    "ALL_ROUTERS",
    "IPv6Header",
    "parse_ipv6",
    "build_ipv6",
    "bubble",
    "is_bubble",
    "checksum",
    "EchoRequest",
    "EchoReply",
    "RouterSolicitation",
    "RouterAdvertisement",
    "PrefixInformation",
    "NDOption",
    "DestinationUnreachable",
    "PacketTooBig",
    "UnknownICMPv6",
    "ICMPv6Message",
    "encode_icmpv6",
    "decode_icmpv6",
    "icmpv6_packet",
    "is_link_local",
    "is_multicast",
    "is_global_unicast6",
    "PIO_FLAG_ONLINK",
    "PIO_FLAG_AUTONOMOUS",
]

NH_ICMPV6 = 58
NH_NONE = 59

ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")

ICMP_DEST_UNREACH = 1
ICMP_PACKET_TOO_BIG = 2
ICMP_ECHO_REQUEST = 128
ICMP_ECHO_REPLY = 129
ICMP_RS = 133
ICMP_RA = 134
#: ICMPv6 types 0..127 are errors, 128..255 informational (RFC 4443 section 2.1): an error
#: is never sent about an error (section 2.4 e).
ICMP_ERROR_MAX = 127

OPT_PREFIX_INFORMATION = 3
OPT_MTU = 5

PIO_FLAG_ONLINK = 0x80
PIO_FLAG_AUTONOMOUS = 0x40

_HEADER = struct.Struct("!IHBB16s16s")
_PSEUDO = struct.Struct("!16s16sIxxxB")
_ICMP_HEAD = struct.Struct("!BBH")
_ECHO = struct.Struct("!BBHHH")
_RA = struct.Struct("!BBHBBHII")
_PIO = struct.Struct("!BBBBIII16s")
_MTU = struct.Struct("!BBHI")
_ERR = struct.Struct("!BBHI")


class IPv6Header(NamedTuple):
    """
    The fixed IPv6 header (RFC 8200 section 3).  C{src} and C{dst} are 16 raw bytes.
    """

    src: bytes
    dst: bytes
    next_header: int
    payload_length: int
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0

    def to_bytes(self) -> bytes:
        return _HEADER.pack(
            0x60000000 | (self.traffic_class << 20) | self.flow_label,
            self.payload_length,
            self.next_header,
            self.hop_limit,
            self.src,
            self.dst,
        )


def parse_ipv6(data: bytes, offset: int = 0) -> tuple[IPv6Header, int]:
    """
    Read the fixed header at C{offset}; check the version and that the payload fits.

    @return: the header and the offset just past the packet (C{offset + 40 + PL}); bytes
        beyond it are not part of the packet (RFC 6081 trailers, for Teredo).
    """
    if len(data) - offset < 40:
        raise ParseError("truncated ipv6 header")
    vtf, plen, nh, hlim, src, dst = _HEADER.unpack_from(data, offset)
    if vtf >> 28 != 6:
        raise ParseError("not ipv6")
    end = offset + 40 + plen
    if end > len(data):
        raise ParseError("ipv6 payload length exceeds datagram")
    return IPv6Header(src, dst, nh, plen, hlim, (vtf >> 20) & 0xFF, vtf & 0xFFFFF), end


def build_ipv6(
    src: bytes, dst: bytes, next_header: int, payload: bytes, hop_limit: int = 64
) -> bytes:
    """
    One IPv6 packet: fixed header (traffic class and flow label zero) and C{payload}.
    """
    return _HEADER.pack(0x60000000, len(payload), next_header, hop_limit, src, dst) + payload


def bubble(src: bytes, dst: bytes, hop_limit: int = 0) -> bytes:
    """
    A Teredo bubble (RFC 4380 section 2.8): a bare header, next header 59, no payload.

    The hop limit is unspecified by the RFC; 0 is the default because a bubble is never to
    be forwarded (Miredo sends 0 too).  Local discovery bubbles use 1 (section 5.2.8).
    """
    return _HEADER.pack(0x60000000, 0, NH_NONE, hop_limit, src, dst)


def is_bubble(header: IPv6Header) -> bool:
    """
    Next header 59 and payload length 0.
    """
    return header.next_header == NH_NONE and header.payload_length == 0


def _fold(data: bytes) -> int:
    """
    One's complement sum of C{data} (padded to even length), in [1, 0xFFFF] or 0 if all zero.
    """
    if len(data) & 1:
        data += b"\x00"
    value = int.from_bytes(data, "big")
    if value == 0:
        return 0
    rem = value % 0xFFFF
    return rem or 0xFFFF


def checksum(src: bytes, dst: bytes, next_header: int, body: bytes) -> int:
    """
    The upper-layer checksum with the IPv6 pseudo-header (RFC 8200 section 8.1), computed
    over C{body} as given (its checksum field should be zero when computing).
    """
    s = _fold(_PSEUDO.pack(src, dst, len(body), next_header) + body)
    return ~s & 0xFFFF


def _checksum_ok(src: bytes, dst: bytes, next_header: int, body: bytes) -> bool:
    return _fold(_PSEUDO.pack(src, dst, len(body), next_header) + body) == 0xFFFF


# --- ICMPv6 messages --------------------------------------------------------------------


class EchoRequest(NamedTuple):
    """
    ICMPv6 Echo Request (RFC 4443 section 4.1).
    """

    identifier: int
    sequence: int
    data: bytes = b""


class EchoReply(NamedTuple):
    """
    ICMPv6 Echo Reply (RFC 4443 section 4.2).
    """

    identifier: int
    sequence: int
    data: bytes = b""


class NDOption(NamedTuple):
    """
    A Neighbor Discovery option we do not interpret (RFC 4861 section 4.6): C{data} is what
    follows the type and length octets, a multiple of 8 bytes minus 2.
    """

    type: int
    data: bytes


class PrefixInformation(NamedTuple):
    """
    The Prefix Information option (RFC 4861 section 4.6.2).
    """

    prefix: bytes
    prefix_length: int = 64
    flags: int = PIO_FLAG_AUTONOMOUS
    valid_lifetime: int = 0xFFFFFFFF
    preferred_lifetime: int = 0xFFFFFFFF


class RouterSolicitation(NamedTuple):
    """
    Router Solicitation (RFC 4861 section 4.1).  A Teredo RS carries no option.
    """

    options: tuple[NDOption, ...] = ()


class RouterAdvertisement(NamedTuple):
    """
    Router Advertisement (RFC 4861 section 4.2) with its options split out: every Prefix
    Information option in order, the MTU option's value if present, others untouched.
    """

    cur_hop_limit: int = 0
    flags: int = 0
    router_lifetime: int = 0
    reachable_time: int = 0
    retrans_timer: int = 0
    prefixes: tuple[PrefixInformation, ...] = ()
    mtu: int | None = None
    options: tuple[NDOption, ...] = ()


class DestinationUnreachable(NamedTuple):
    """
    Destination Unreachable (RFC 4443 section 3.1); C{invoking} is as much of the offending
    packet as fits.
    """

    code: int
    invoking: bytes


class PacketTooBig(NamedTuple):
    """
    Packet Too Big (RFC 4443 section 3.2).
    """

    mtu: int
    invoking: bytes


class UnknownICMPv6(NamedTuple):
    """
    Any other ICMPv6 message: type, code and the bytes after the checksum.
    """

    type: int
    code: int
    body: bytes


ICMPv6Message = Union[
    EchoRequest,
    EchoReply,
    RouterSolicitation,
    RouterAdvertisement,
    DestinationUnreachable,
    PacketTooBig,
    UnknownICMPv6,
]


def _encode_options(options: tuple[NDOption, ...]) -> bytes:
    out = []
    for opt in options:
        total = len(opt.data) + 2
        if total % 8 or not 0 < opt.type < 256 or total > 255 * 8:
            raise ParseError("bad nd option length")
        out.append(bytes((opt.type, total // 8)) + opt.data)
    return b"".join(out)


def _encode_body(msg: ICMPv6Message) -> bytes:
    """
    The ICMPv6 message with a zero checksum.
    """
    if isinstance(msg, (EchoRequest, EchoReply)):
        kind = ICMP_ECHO_REQUEST if isinstance(msg, EchoRequest) else ICMP_ECHO_REPLY
        return _ECHO.pack(kind, 0, 0, msg.identifier, msg.sequence) + msg.data
    if isinstance(msg, RouterSolicitation):
        return _ICMP_HEAD.pack(ICMP_RS, 0, 0) + b"\x00" * 4 + _encode_options(msg.options)
    if isinstance(msg, RouterAdvertisement):
        parts = [
            _RA.pack(
                ICMP_RA,
                0,
                0,
                msg.cur_hop_limit,
                msg.flags,
                msg.router_lifetime,
                msg.reachable_time,
                msg.retrans_timer,
            )
        ]
        for p in msg.prefixes:
            if len(p.prefix) != 16:
                raise ParseError("prefix must be 16 bytes")
            parts.append(
                _PIO.pack(
                    OPT_PREFIX_INFORMATION,
                    4,
                    p.prefix_length,
                    p.flags,
                    p.valid_lifetime,
                    p.preferred_lifetime,
                    0,
                    p.prefix,
                )
            )
        if msg.mtu is not None:
            parts.append(_MTU.pack(OPT_MTU, 1, 0, msg.mtu))
        parts.append(_encode_options(msg.options))
        return b"".join(parts)
    if isinstance(msg, DestinationUnreachable):
        return _ERR.pack(ICMP_DEST_UNREACH, msg.code, 0, 0) + msg.invoking
    if isinstance(msg, PacketTooBig):
        return _ERR.pack(ICMP_PACKET_TOO_BIG, 0, 0, msg.mtu) + msg.invoking
    if isinstance(msg, UnknownICMPv6):
        return _ICMP_HEAD.pack(msg.type, msg.code, 0) + msg.body
    raise TypeError(f"not an ICMPv6 message: {msg!r}")


def encode_icmpv6(msg: ICMPv6Message, src: bytes, dst: bytes) -> bytes:
    """
    The ICMPv6 message bytes, checksum filled in for the given IPv6 source and destination.
    """
    body = _encode_body(msg)
    csum = checksum(src, dst, NH_ICMPV6, body)
    return body[:2] + csum.to_bytes(2, "big") + body[4:]


def icmpv6_packet(src: bytes, dst: bytes, msg: ICMPv6Message, hop_limit: int = 64) -> bytes:
    """
    A whole IPv6 packet carrying C{msg}.
    """
    return build_ipv6(src, dst, NH_ICMPV6, encode_icmpv6(msg, src, dst), hop_limit)


def _decode_options(data: bytes, offset: int) -> list[tuple[int, bytes]]:
    """
    Split ND options; a zero length is invalid (RFC 4861 sections 4.6 and 6.1).
    """
    out = []
    end = len(data)
    while offset < end:
        if end - offset < 2:
            raise ParseError("truncated nd option")
        otype, olen = data[offset], data[offset + 1]
        if olen == 0:
            raise ParseError("nd option with zero length")
        nxt = offset + olen * 8
        if nxt > end:
            raise ParseError("truncated nd option")
        out.append((otype, data[offset:nxt]))
        offset = nxt
    return out


def decode_icmpv6(body: bytes, src: bytes, dst: bytes, verify: bool = True) -> ICMPv6Message:
    """
    Decode the ICMPv6 message C{body} (the IPv6 payload) sent from C{src} to C{dst}.

    @param verify: check the checksum (the default; RFC 4861 section 6.1 requires it for ND).
    """
    if len(body) < 4:
        raise ParseError("truncated icmpv6")
    if verify and not _checksum_ok(src, dst, NH_ICMPV6, body):
        raise ParseError("bad icmpv6 checksum")
    kind, code = body[0], body[1]
    if kind in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
        if len(body) < 8:
            raise ParseError("truncated icmpv6 echo")
        _, _, _, ident, seq = _ECHO.unpack_from(body)
        cls = EchoRequest if kind == ICMP_ECHO_REQUEST else EchoReply
        return cls(ident, seq, body[8:])
    if kind == ICMP_RS:
        if code != 0 or len(body) < 8:
            raise ParseError("invalid router solicitation")
        return RouterSolicitation(
            tuple(NDOption(t, raw[2:]) for t, raw in _decode_options(body, 8))
        )
    if kind == ICMP_RA:
        if code != 0 or len(body) < 16:
            raise ParseError("invalid router advertisement")
        _, _, _, hop, flags, lifetime, reachable, retrans = _RA.unpack_from(body)
        prefixes: list[PrefixInformation] = []
        mtu: int | None = None
        others: list[NDOption] = []
        for otype, raw in _decode_options(body, 16):
            if otype == OPT_PREFIX_INFORMATION:
                if len(raw) != 32:
                    raise ParseError("bad prefix information length")
                _, _, plen, pflags, valid, preferred, _, prefix = _PIO.unpack(raw)
                prefixes.append(PrefixInformation(prefix, plen, pflags, valid, preferred))
            elif otype == OPT_MTU:
                if len(raw) != 8:
                    raise ParseError("bad mtu option length")
                mtu = _MTU.unpack(raw)[3]
            else:
                others.append(NDOption(otype, raw[2:]))
        return RouterAdvertisement(
            hop, flags, lifetime, reachable, retrans, tuple(prefixes), mtu, tuple(others)
        )
    if kind in (ICMP_DEST_UNREACH, ICMP_PACKET_TOO_BIG):
        if len(body) < 8:
            raise ParseError("truncated icmpv6 error")
        _, _, _, word = _ERR.unpack_from(body)
        if kind == ICMP_DEST_UNREACH:
            return DestinationUnreachable(code, body[8:])
        return PacketTooBig(word, body[8:])
    return UnknownICMPv6(kind, code, body[4:])


# --- address classes ----------------------------------------------------------------------


def is_link_local(addr: bytes) -> bool:
    """
    fe80::/10.
    """
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80


def is_multicast(addr: bytes) -> bool:
    """
    ff00::/8.
    """
    return addr[0] == 0xFF


def is_global_unicast6(addr: bytes) -> bool:
    """
    Global scope unicast for forwarding decisions (SV-FW-2): not unspecified, loopback,
    link-local, site-local, unique-local or multicast, and not an IPv4-mapped address.
    """
    first = addr[0]
    if first == 0xFF or first & 0xFE == 0xFC:
        return False
    if first == 0xFE and addr[1] & 0x80:
        return False
    if addr[:10] == b"\x00" * 10:
        return False
    return True


def ipv6_text(raw: bytes) -> str:
    """
    The text form (RFC 5952) of a 16-byte IPv6 address, for logs and status.
    """
    return socket.inet_ntop(socket.AF_INET6, raw)
