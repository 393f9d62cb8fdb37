"""
PCP (RFC 6887) messages for the MAP opcode: bytes <-> values, nothing else.

A request is the 24-byte common header (section 7.1) and the 36-byte MAP data (section
11.1); a response the 24-byte response header (section 7.2) and the same 36 bytes, then
options, which are walked for well-formedness and otherwise ignored (none is requested).
IPv4 addresses travel as IPv4-mapped IPv6 addresses (section 5).  Every decoder takes any
bytes and returns a value or raises L{ParseError}; section 8.3's checks (size 24..1100, a
multiple of 4, the R bit) are the decoder's.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from teredonode.wire.errors import ParseError

__all__ = [
    "PORT",
    "VERSION",
    "OP_MAP",
    "PROTO_UDP",
    "NONCE_SIZE",
    "RESULT_CODES",
    "MapResponse",
    "UnsupportedVersion",
    "map_request",
    "decode_response",
    "result_text",
]

PORT = 5351
VERSION = 2
OP_MAP = 1
#: IANA protocol number of UDP, the MAP "Protocol" field (section 11.1).
PROTO_UDP = 17
NONCE_SIZE = 12
#: Largest PCP message (section 7).
MAX_SIZE = 1100
RESPONSE_BIT = 0x80

#: Result codes (RFC 6887 section 7.4).
RESULT_CODES = {
    0: "success",
    1: "unsupported version",
    2: "not authorized",
    3: "malformed request",
    4: "unsupported opcode",
    5: "unsupported option",
    6: "malformed option",
    7: "network failure",
    8: "no resources",
    9: "unsupported protocol",
    10: "user exceeded quota",
    11: "cannot provide external",
    12: "address mismatch",
    13: "excessive remote peers",
}

_REQUEST = struct.Struct("!BBHI16s")  # version, R|opcode, reserved, lifetime, client address
_RESPONSE = struct.Struct("!BBBBII12x")  # version, R|opcode, reserved, result, lifetime, epoch
_MAP = struct.Struct("!12sB3xHH16s")  # nonce, protocol, reserved, internal, external, address


@dataclass(frozen=True)
class MapResponse:
    """
    A MAP response (sections 7.2, 11.1).  On an error, C{lifetime} is how long the error
    is expected to last (section 7.4); the MAP fields echo the request.
    """

    result: int
    lifetime: int
    epoch: int
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_address: str


@dataclass(frozen=True)
class UnsupportedVersion:
    """
    The server speaks only an older version: a NAT-PMP gateway answers a PCP request with a
    version 0 "unsupported version" (section 9), the fast way to learn PCP is absent.
    """

    version: int


def _mapped(address: str) -> bytes:
    """
    An IPv4 text address as the 16-byte IPv4-mapped IPv6 address (section 5).
    """
    return b"\0" * 10 + b"\xff\xff" + ipaddress.IPv4Address(address).packed


def map_request(
    nonce: bytes,
    client_address: str,
    internal_port: int,
    lifetime: int,
    external_port: int = 0,
    external_address: str = "0.0.0.0",
    protocol: int = PROTO_UDP,
) -> bytes:
    """
    A 60-byte MAP request.  C{external_port} and C{external_address} are suggestions (0 and
    C{0.0.0.0}, mapped: none, section 11.1); a C{lifetime} of 0 deletes the mapping made
    with the same nonce (section 15).
    """
    if len(nonce) != NONCE_SIZE:
        raise ValueError("the MAP nonce is 12 bytes")
    if not (0 < internal_port <= 0xFFFF and 0 <= external_port <= 0xFFFF and 0 <= lifetime <= 0xFFFFFFFF):
        raise ValueError("port or lifetime out of range")
    header = _REQUEST.pack(VERSION, OP_MAP, 0, lifetime, _mapped(client_address))
    body = _MAP.pack(nonce, protocol, internal_port, external_port, _mapped(external_address))
    return header + body


def decode_response(data: bytes) -> MapResponse | UnsupportedVersion:
    """
    One datagram from the server's PCP port.
    """
    if len(data) >= 4 and data[0] < VERSION and data[1] & RESPONSE_BIT and data[2:4] == b"\0\1":
        return UnsupportedVersion(data[0])
    if len(data) < _RESPONSE.size:
        raise ParseError("truncated pcp response")
    if len(data) > MAX_SIZE or len(data) % 4:
        raise ParseError("pcp response size not a multiple of 4 up to 1100")
    version, opcode, _, result, lifetime, epoch = _RESPONSE.unpack_from(data)
    if version != VERSION:
        if result == 1:
            return UnsupportedVersion(version)
        raise ParseError("pcp version not 2")
    if not opcode & RESPONSE_BIT:
        raise ParseError("pcp request, not a response")
    if opcode & 0x7F != OP_MAP:
        raise ParseError("pcp opcode not map")
    if len(data) < _RESPONSE.size + _MAP.size:
        if result != 0:  # errors may come without the opcode data (section 7.2)
            return MapResponse(result, lifetime, epoch, b"", 0, 0, 0, "0.0.0.0")
        raise ParseError("truncated pcp map response")
    nonce, protocol, internal, external, address = _MAP.unpack_from(data, _RESPONSE.size)
    _walk_options(data[_RESPONSE.size + _MAP.size :])
    if address[:12] != b"\0" * 10 + b"\xff\xff":
        if result == 0:
            raise ParseError("pcp external address not ipv4")
        text = "0.0.0.0"
    else:
        text = str(ipaddress.IPv4Address(address[12:]))
    return MapResponse(result, lifetime, epoch, nonce, protocol, internal, external, text)


def _walk_options(data: bytes) -> None:
    """
    Options (section 7.3): code, reserved, 16-bit length, data padded to 4 bytes; they
    must tile the rest of the message exactly.
    """
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise ParseError("truncated pcp option")
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        offset += 4 + (length + 3) // 4 * 4
        if offset > len(data):
            raise ParseError("pcp option overruns the message")


def result_text(result: int) -> str:
    """
    C{"2 not authorized"}: a result code for a one-line error.
    """
    return f"{result} {RESULT_CODES.get(result, 'unknown result')}"
