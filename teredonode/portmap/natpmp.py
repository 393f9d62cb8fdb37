"""
NAT-PMP (RFC 6886) messages: bytes <-> values, nothing else.

Only what a Teredo client needs: the external address request (opcode 0, section 3.2) and
the UDP mapping request (opcode 1, section 3.3), whose lifetime 0 deletes (section 3.4).
Every decoder takes any bytes and returns a value or raises L{ParseError}.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from teredonode.wire.errors import ParseError

__all__ = [
    "PORT",
    "VERSION",
    "OP_EXTERNAL_ADDRESS",
    "OP_MAP_UDP",
    "RESULT_CODES",
    "ExternalAddressResponse",
    "MapResponse",
    "external_address_request",
    "map_request",
    "decode_response",
]

#: The gateway's NAT-PMP port (RFC 6886 section 3).
PORT = 5351
VERSION = 0
OP_EXTERNAL_ADDRESS = 0
OP_MAP_UDP = 1
OP_MAP_TCP = 2
#: Added to the request's opcode in its response (section 3.2, 3.3).
RESPONSE_BIT = 128

#: Result codes (RFC 6886 section 3.5); unknown ones are shown by number.
RESULT_CODES = {
    0: "success",
    1: "unsupported version",
    2: "not authorized",
    3: "network failure",
    4: "out of resources",
    5: "unsupported opcode",
}

_EXTERNAL = struct.Struct("!BBHI4s")  # version, opcode, result, epoch, address: 12 bytes
_MAP = struct.Struct("!BBHIHHI")  # version, opcode, result, epoch, internal, external, lifetime: 16
_HEAD = struct.Struct("!BBHI")  # what every response starts with: 8 bytes


@dataclass(frozen=True)
class ExternalAddressResponse:
    """
    Answer to opcode 0 (section 3.2).  C{address} is meaningful only when C{result} is 0.
    """

    result: int
    epoch: int
    address: str


@dataclass(frozen=True)
class MapResponse:
    """
    Answer to a mapping request (section 3.3).  Ports and lifetime only when C{result} is 0.
    """

    opcode: int
    result: int
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int


def external_address_request() -> bytes:
    """
    The 2-byte external address request (section 3.2).
    """
    return bytes((VERSION, OP_EXTERNAL_ADDRESS))


def map_request(internal_port: int, external_port: int, lifetime: int, opcode: int = OP_MAP_UDP) -> bytes:
    """
    A 12-byte mapping request (section 3.3): C{external_port} is only a suggestion; a
    C{lifetime} of 0 with C{external_port} 0 deletes the mapping of C{internal_port}
    (section 3.4).
    """
    if opcode not in (OP_MAP_UDP, OP_MAP_TCP):
        raise ValueError(f"not a mapping opcode: {opcode}")
    if not (0 < internal_port <= 0xFFFF and 0 <= external_port <= 0xFFFF and 0 <= lifetime <= 0xFFFFFFFF):
        raise ValueError("port or lifetime out of range")
    return struct.pack("!BBHHHI", VERSION, opcode, 0, internal_port, external_port, lifetime)


def decode_response(data: bytes) -> ExternalAddressResponse | MapResponse:
    """
    One response from the gateway.  A non-zero result code may come in a short packet (the
    rest of the fields are undefined then, section 3.5), so only the 8-byte common header is
    required for it; a success must carry its whole layout.
    """
    if len(data) < _HEAD.size:
        raise ParseError("truncated nat-pmp response")
    version, opcode, result, epoch = _HEAD.unpack_from(data)
    if version != VERSION:
        raise ParseError("nat-pmp version not 0")
    if not opcode & RESPONSE_BIT:
        raise ParseError("nat-pmp request, not a response")
    request = opcode - RESPONSE_BIT
    if request == OP_EXTERNAL_ADDRESS:
        if result != 0:
            return ExternalAddressResponse(result, epoch, "0.0.0.0")
        if len(data) < _EXTERNAL.size:
            raise ParseError("truncated nat-pmp external address response")
        address = _EXTERNAL.unpack_from(data)[4]
        return ExternalAddressResponse(result, epoch, socket.inet_ntoa(address))
    if request in (OP_MAP_UDP, OP_MAP_TCP):
        if result != 0:
            return MapResponse(request, result, epoch, 0, 0, 0)
        if len(data) < _MAP.size:
            raise ParseError("truncated nat-pmp map response")
        _, _, _, _, internal, external, lifetime = _MAP.unpack_from(data)
        return MapResponse(request, result, epoch, internal, external, lifetime)
    raise ParseError("unknown nat-pmp opcode")


def result_text(result: int) -> str:
    """
    C{"2 not authorized"}: a result code for a one-line error.
    """
    return f"{result} {RESULT_CODES.get(result, 'unknown result')}"
