"""
The Teredo UDP payload (RFC 4380 section 5.1.1, RFC 6081 section 4), pure.

    Simple:          [ IPv6 packet ][ trailers ]
    Origin:          [ origin indication (8) ][ IPv6 packet ][ trailers ]
    Authentication:  [ auth (13 + ID-len + AU-len) ][ origin (8) ]? [ IPv6 packet ][ trailers ]

L{classify} is the one entry point for a received datagram: it splits the envelope, checks
the IPv6 packet's validity (version 6; "consistent" length, i.e. C{40 + PL <= remaining},
RFC 6081 section 4) and decodes RFC 6081 trailers with the unknown-type rules of RFC 6081
sections 4.1 and 5.1.2.  It returns a L{TeredoPacket} or raises L{ParseError}; nothing else.

Random Port trailer type: RFC 6081 section 4.5 says 0x05, its IANA section 9 registers 0x02
(defect D1 of the requirements digest).  Both are accepted on receipt.  We send
L{RANDOM_PORT_SEND_TYPE} = 0x02, the value in the IANA registry, because the registry is what
assigns code points and is what a new implementation will look up; both values have the top
bits 00 ("skip if unknown"), so a peer that reads the other value merely ignores ours.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple, Union

from teredonode.wire import ipv4
from teredonode.wire.address import mapping_of, obfuscated_mapping
from teredonode.wire.errors import ParseError
from teredonode.wire.ipv6 import IPv6Header, is_bubble, parse_ipv6

__all__ = [
    "AuthIndicator",
    "OriginIndication",
    "origin_indication",
    "NonceTrailer",
    "AlternateAddressTrailer",
    "NeighborDiscoveryTrailer",
    "RandomPortTrailer",
    "PortGuessTrailer",
    "UnknownTrailer",
    "Trailer",
    "TeredoPacket",
    "classify",
    "encode_payload",
    "encode_trailers",
    "decode_trailers",
    "scan_trailers",
    "TrailerScan",
    "KNOWN_TRAILERS",
    "forwardable_trailers",
    "alternate_entry_ok",
    "MAX_FORWARDED_TRAILERS",
    "TRAILER_NONCE",
    "TRAILER_RANDOM_PORT",
    "TRAILER_RANDOM_PORT_RFC",
    "TRAILER_ALTERNATE_ADDRESS",
    "TRAILER_NEIGHBOR_DISCOVERY",
    "TRAILER_PORT_GUESS",
    "PORT_GUESS_MAX_SOCKETS",
    "PORT_GUESS_MAX_OPENING",
    "RANDOM_PORT_SEND_TYPE",
    "DISCOVERY_SOLICITATION",
    "DISCOVERY_ADVERTISEMENT",
]

TRAILER_NONCE = 0x01
TRAILER_RANDOM_PORT = 0x02  # RFC 6081 section 9 (IANA)
TRAILER_ALTERNATE_ADDRESS = 0x03
TRAILER_NEIGHBOR_DISCOVERY = 0x04
TRAILER_RANDOM_PORT_RFC = 0x05  # RFC 6081 section 4.5
RANDOM_PORT_SEND_TYPE = TRAILER_RANDOM_PORT
#: Port guessing (beyond RFC 6081, L{teredonode.roles.portguess}): not registered; its top
#: bits 11 make every other implementation skip it (RFC 6081 section 5.1.2).
TRAILER_PORT_GUESS = 0xFE
#: The bounds a Port Guess trailer's value must respect (L{teredonode.roles.portguess}'s
#: C{GuessLimits}: at most 1024 sockets; an opening time of at most 600 s, in 10 ms units).
PORT_GUESS_MAX_SOCKETS = 1024
PORT_GUESS_MAX_OPENING = 60000

DISCOVERY_SOLICITATION = 0x00
DISCOVERY_ADVERTISEMENT = 0x01

_AUTH_HEAD = struct.Struct("!HBB")
_NONCE_LEN = 8


class AuthIndicator(NamedTuple):
    """
    The authentication encapsulation (RFC 4380 section 5.1.1).

    @ivar client_id: the client identifier (ID-len bytes, empty without secure qualification).
    @ivar auth_value: the authentication value (AU-len bytes).
    @ivar nonce: 8 bytes, echoed by the server.
    @ivar confirmation: 0 from the client; from the server, non-zero asks for a new key.
    """

    nonce: bytes
    client_id: bytes = b""
    auth_value: bytes = b""
    confirmation: int = 0

    def to_bytes(self) -> bytes:
        if len(self.nonce) != _NONCE_LEN:
            raise ParseError("auth nonce must be 8 bytes")
        if len(self.client_id) > 255 or len(self.auth_value) > 255:
            raise ParseError("auth field too long")
        if not 0 <= self.confirmation <= 255:
            raise ParseError("auth confirmation out of range")
        return (
            _AUTH_HEAD.pack(0x0001, len(self.client_id), len(self.auth_value))
            + self.client_id
            + self.auth_value
            + self.nonce
            + bytes((self.confirmation,))
        )


class OriginIndication(NamedTuple):
    """
    The origin indication (RFC 4380 section 5.1.1): the IPv4 endpoint a server received a
    packet from, carried obfuscated.  C{ip} is a dotted quad.
    """

    ip: str
    port: int

    def to_bytes(self) -> bytes:
        ipv4.pack(self.ip)  # strict: the text may come from anywhere
        return origin_indication(self.ip, self.port)


def origin_indication(ip: str, port: int) -> bytes:
    """
    The 8 bytes of an origin indication for the endpoint C{(ip, port)}: two zero bytes, then
    the port and the address obfuscated.  Without building an L{OriginIndication} (a third
    of the cost) because a server adds one to every RA and every packet it forwards to one
    of its clients; C{ip} as the socket layer gives it (L{OriginIndication.to_bytes} checks
    text from elsewhere first).
    """
    return b"\x00\x00" + obfuscated_mapping(ip, port)


class NonceTrailer(NamedTuple):
    """
    RFC 6081 section 4.2: a 4-byte nonce.
    """

    nonce: bytes


class AlternateAddressTrailer(NamedTuple):
    """
    RFC 6081 section 4.3: up to four C{(ip, port)} entries a client can also be reached at.
    """

    addresses: tuple[tuple[str, int], ...]


class NeighborDiscoveryTrailer(NamedTuple):
    """
    RFC 6081 section 4.4: L{DISCOVERY_SOLICITATION} or L{DISCOVERY_ADVERTISEMENT}.
    """

    discovery_type: int


class RandomPortTrailer(NamedTuple):
    """
    RFC 6081 section 4.5: the external port the sender predicts for this peer.  C{type}
    records which code point carried it (0x02 or 0x05, see the module docstring).
    """

    port: int
    type: int = RANDOM_PORT_SEND_TYPE


class PortGuessTrailer(NamedTuple):
    """
    Beyond RFC 6081 (type L{TRAILER_PORT_GUESS}, length 4): the sender, behind a random
    port-symmetric NAT, asks the peer for a birthday-paradox port search
    (L{teredonode.roles.portguess}).  C{sockets}: how many mappings it opens toward the
    peer (1..L{PORT_GUESS_MAX_SOCKETS}); C{opening}: how long that takes, in 10 ms units
    (0..L{PORT_GUESS_MAX_OPENING}), so that the peer's probes find them open.
    """

    sockets: int
    opening: int

    @property
    def openingSeconds(self) -> float:
        return self.opening / 100.0


def _port_guess_valid(sockets: int, opening: int) -> bool:
    return 1 <= sockets <= PORT_GUESS_MAX_SOCKETS and 0 <= opening <= PORT_GUESS_MAX_OPENING


class UnknownTrailer(NamedTuple):
    """
    A trailer of a type we do not know and may skip (top bits not C{01}).
    """

    type: int
    value: bytes


Trailer = Union[
    NonceTrailer,
    AlternateAddressTrailer,
    NeighborDiscoveryTrailer,
    RandomPortTrailer,
    PortGuessTrailer,
    UnknownTrailer,
]


def encode_trailers(trailers: tuple[Trailer, ...] | list[Trailer]) -> bytes:
    """
    Encode RFC 6081 trailers in order.
    """
    out = []
    for t in trailers:
        if isinstance(t, NonceTrailer):
            if len(t.nonce) != 4:
                raise ParseError("nonce trailer must carry 4 bytes")
            out.append(bytes((TRAILER_NONCE, 4)) + t.nonce)
        elif isinstance(t, AlternateAddressTrailer):
            if not 1 <= len(t.addresses) <= 4:
                raise ParseError("alternate address trailer needs 1 to 4 entries")
            body = b"".join(
                ipv4.pack(ip) + (port.to_bytes(2, "big") if 0 < port < 65536 else _bad_port())
                for ip, port in t.addresses
            )
            out.append(bytes((TRAILER_ALTERNATE_ADDRESS, 2 + len(body))) + b"\x00\x00" + body)
        elif isinstance(t, NeighborDiscoveryTrailer):
            if t.discovery_type not in (DISCOVERY_SOLICITATION, DISCOVERY_ADVERTISEMENT):
                raise ParseError("bad discovery type")
            out.append(bytes((TRAILER_NEIGHBOR_DISCOVERY, 4, t.discovery_type, 0, 0, 0)))
        elif isinstance(t, RandomPortTrailer):
            if t.type not in (TRAILER_RANDOM_PORT, TRAILER_RANDOM_PORT_RFC):
                raise ParseError("bad random port trailer type")
            out.append(bytes((t.type, 2)) + t.port.to_bytes(2, "big"))
        elif isinstance(t, PortGuessTrailer):
            if not _port_guess_valid(t.sockets, t.opening):
                raise ParseError("port guess trailer out of range")
            out.append(bytes((TRAILER_PORT_GUESS, 4)) + struct.pack("!HH", t.sockets, t.opening))
        elif isinstance(t, UnknownTrailer):
            if len(t.value) > 255 or not 0 <= t.type <= 255:
                raise ParseError("trailer too long")
            out.append(bytes((t.type, len(t.value))) + t.value)
        else:
            raise TypeError(f"not a trailer: {t!r}")
    return b"".join(out)


def _bad_port() -> bytes:
    raise ParseError("alternate address port must not be 0")


#: The trailer types this codec knows (decodes into their own class, or reports malformed).
KNOWN_TRAILERS = frozenset(
    {
        TRAILER_NONCE,
        TRAILER_RANDOM_PORT,
        TRAILER_RANDOM_PORT_RFC,
        TRAILER_ALTERNATE_ADDRESS,
        TRAILER_NEIGHBOR_DISCOVERY,
        TRAILER_PORT_GUESS,
    }
)


class TrailerScan(NamedTuple):
    """
    What a trailer area holds (L{scan_trailers}).

    @ivar trailers: the well-formed trailers, in order (what L{decode_trailers} returns).
    @ivar malformed: the types of the known trailers that were there but not well formed,
        in order: ignored by the decoding (W-TRL-4), and reported because some rules act on
        their mere presence (a malformed Alternate Address trailer drops the bubble,
        X-HP-06a).  A known trailer cut short by the end of the data is one of them.
    """

    trailers: tuple[Trailer, ...]
    malformed: tuple[int, ...]


def _decode_known(ttype: int, value: bytes) -> Trailer | None:
    """
    The known trailer C{ttype} with C{value}, or C{None} when it is not well formed.
    """
    tlen = len(value)
    if ttype == TRAILER_NONCE:
        return NonceTrailer(value) if tlen == 4 else None
    if ttype in (TRAILER_RANDOM_PORT, TRAILER_RANDOM_PORT_RFC):
        return RandomPortTrailer(int.from_bytes(value, "big"), ttype) if tlen == 2 else None
    if ttype == TRAILER_ALTERNATE_ADDRESS:
        # X-TRL-08, -11..13: 8..26 bytes, six per entry, each a unicast address and a port.
        if not 8 <= tlen <= 26 or (tlen - 2) % 6:
            return None
        raw = [value[i : i + 6] for i in range(2, tlen, 6)]
        if not all(alternate_entry_ok(entry) for entry in raw):
            return None
        return AlternateAddressTrailer(
            tuple((socket.inet_ntoa(entry[:4]), int.from_bytes(entry[4:], "big")) for entry in raw)
        )
    if ttype == TRAILER_NEIGHBOR_DISCOVERY:  # X-TRL-14, -15
        if tlen == 4 and value[0] in (DISCOVERY_SOLICITATION, DISCOVERY_ADVERTISEMENT):
            return NeighborDiscoveryTrailer(value[0])
        return None
    if ttype == TRAILER_PORT_GUESS and tlen == 4:
        sockets, opening = struct.unpack("!HH", value)
        return PortGuessTrailer(sockets, opening) if _port_guess_valid(sockets, opening) else None
    return None


def scan_trailers(data: bytes) -> TrailerScan:
    """
    Decode RFC 6081 trailers (section 5.1.2), in order, and say which known ones were
    malformed:
      - processing stops at the first trailer that does not fit (fewer than 2 bytes, or
        fewer than 2 + Length bytes remain); what was decoded before it is kept (W-TRL-3),
        and if its type is a known one it is reported malformed;
      - an unknown type whose top two bits are C{01} discards the whole packet: raises
        L{ParseError} (W-TRL-2); other unknown types are kept as L{UnknownTrailer};
      - a known type with a wrong length, or an invalid value, is ignored (W-TRL-4,
        documented in docs/wire.md) and reported in C{malformed}.
    """
    out: list[Trailer] = []
    malformed: list[int] = []
    off, end = 0, len(data)
    while end - off >= 2:
        ttype, tlen = data[off], data[off + 1]
        if end - off - 2 < tlen:
            if ttype in KNOWN_TRAILERS:
                malformed.append(ttype)
            break
        value = data[off + 2 : off + 2 + tlen]
        off += 2 + tlen
        if ttype in KNOWN_TRAILERS:
            trailer = _decode_known(ttype, value)
            if trailer is None:
                malformed.append(ttype)
            else:
                out.append(trailer)
        elif ttype & 0xC0 == 0x40:
            raise ParseError("unknown trailer requires discard")
        else:
            out.append(UnknownTrailer(ttype, value))
    return TrailerScan(tuple(out), tuple(malformed))


def decode_trailers(data: bytes) -> tuple[Trailer, ...]:
    """
    The well-formed RFC 6081 trailers in C{data}, by the rules of L{scan_trailers}.
    """
    return scan_trailers(data).trailers


#: The longest value each known trailer kind may carry when a server forwards it (RFC 6081
#: sections 4.2-4.5), keyed by kind; both Random Port code points are one kind (D1).
_FORWARD_KINDS = {
    TRAILER_NONCE: ("nonce", 4, 4),
    TRAILER_RANDOM_PORT: ("random-port", 2, 2),
    TRAILER_RANDOM_PORT_RFC: ("random-port", 2, 2),
    TRAILER_ALTERNATE_ADDRESS: ("alternate-address", 8, 26),
    TRAILER_NEIGHBOR_DISCOVERY: ("neighbor-discovery", 4, 4),
    TRAILER_PORT_GUESS: ("port-guess", 4, 4),
}

#: The most trailer bytes a server ever forwards: one of each kind at its maximum length
#: (6 + 4 + 28 + 6 + 6 = 50).
MAX_FORWARDED_TRAILERS = 50


def alternate_entry_ok(entry: bytes) -> bool:
    """
    X-TRL-12, X-TRL-13: a 6-byte Alternate Address entry (IPv4 address, port) names a
    unicast IPv4 address and a port that is not 0.  The one check for the server's
    forwarding and the client's Hairpinning alike.
    """
    return len(entry) == 6 and _unicast_entry(entry[:4]) and entry[4:6] != b"\x00\x00"


def _unicast_entry(raw: bytes) -> bool:
    """
    X-TRL-12: an Alternate Address entry is a unicast IPv4 address.  Private addresses are
    the point of the trailer (hairpinning behind one NAT), so only "this network" (0/8),
    loopback (127/8), multicast, reserved and broadcast (224/3) are refused.
    """
    first = raw[0]
    return first not in (0, 127) and first < 224


def forwardable_trailers(raw: bytes) -> bytes | None:
    """
    The trailer bytes a server may forward on a bubble (SV-FW-7, defect D12 corrected), or
    C{None} when C{raw} is not entirely well-formed known trailers.

    Forwarding bytes "unchanged" would make the server an open UDP relay: whatever follows
    the IPv6 packet would reach any IPv4:port embedded in a Teredo destination.  So C{raw}
    must parse whole, with no byte left over, as the RFC 6081 types a client uses in
    bubbles: Nonce (0x01, length 4), Random Port (0x02 or 0x05, length 2), Alternate Address
    (0x03, length 8..26 in steps of 6, every entry a unicast IPv4 address and a non-zero
    port, X-TRL-08/11..13), Neighbor Discovery Option (0x04, length 4, type 0 or 1,
    X-TRL-14/15) and our Port Guess (0xFE, length 4, values in range: a fixed-size request
    that carries no free bytes, so it relays nothing); at most one of each kind, so the result is never longer than
    L{MAX_FORWARDED_TRAILERS}.  Other unknown types, even skippable ones, are refused: the server
    cannot know they are harmless.  Empty input gives C{b""}.

    @raise ParseError: never (kept as the only exception a caller need expect).
    """
    seen: set[str] = set()
    off, end = 0, len(raw)
    if end > MAX_FORWARDED_TRAILERS:
        return None
    while off < end:
        if end - off < 2:
            return None
        ttype, tlen = raw[off], raw[off + 1]
        kind = _FORWARD_KINDS.get(ttype)
        if kind is None or kind[0] in seen:
            return None
        name, shortest, longest = kind
        if not shortest <= tlen <= longest or end - off - 2 < tlen:
            return None
        value = raw[off + 2 : off + 2 + tlen]
        if ttype == TRAILER_ALTERNATE_ADDRESS:
            if (tlen - 2) % 6:
                return None
            for i in range(2, tlen, 6):
                if not alternate_entry_ok(value[i : i + 6]):
                    return None
        elif ttype == TRAILER_NEIGHBOR_DISCOVERY:
            if value[0] not in (DISCOVERY_SOLICITATION, DISCOVERY_ADVERTISEMENT):
                return None
        elif ttype == TRAILER_PORT_GUESS:
            if not _port_guess_valid(*struct.unpack("!HH", value)):
                return None
        seen.add(name)
        off += 2 + tlen
    return bytes(raw)


class TeredoPacket(NamedTuple):
    """
    A classified Teredo UDP payload.

    @ivar header: the encapsulated packet's fixed IPv6 header.
    @ivar ipv6: the encapsulated IPv6 packet, exactly C{40 + payload_length} bytes.
    @ivar auth: the authentication indicator, if any.
    @ivar origin: the origin indication, if any.
    @ivar trailer_bytes: the raw bytes after the IPv6 packet (a server forwards them only
        on bubbles and only as L{forwardable_trailers} allows, requirement SV-FW-7).
    @ivar trailers: L{trailer_bytes} decoded: the well-formed trailers.
    @ivar malformed_trailers: the types of the known trailers in L{trailer_bytes} that were
        not well formed (L{scan_trailers}), so that no caller re-walks the bytes.
    """

    header: IPv6Header
    ipv6: bytes
    auth: AuthIndicator | None = None
    origin: OriginIndication | None = None
    trailer_bytes: bytes = b""
    trailers: tuple[Trailer, ...] = ()
    malformed_trailers: tuple[int, ...] = ()

    @property
    def is_bubble(self) -> bool:
        """
        Next header 59 and payload length 0 (RFC 4380 section 2.8): L{is_bubble}.
        """
        return is_bubble(self.header)

    def to_bytes(self) -> bytes:
        """
        Re-encode; C{classify(p.to_bytes()) == p} for every valid packet.
        """
        return encode_payload(self.ipv6, self.auth, self.origin, self.trailer_bytes)


def encode_payload(
    ipv6: bytes,
    auth: AuthIndicator | None = None,
    origin: OriginIndication | None = None,
    trailers: bytes | tuple[Trailer, ...] | list[Trailer] = b"",
) -> bytes:
    """
    Build a UDP payload: authentication first when present (section 5.1.1 MUST), then the
    origin indication, the IPv6 packet and any trailers.
    """
    parts = []
    if auth is not None:
        parts.append(auth.to_bytes())
    if origin is not None:
        parts.append(origin.to_bytes())
    parts.append(ipv6)
    parts.append(trailers if isinstance(trailers, bytes) else encode_trailers(trailers))
    return b"".join(parts)


def _parse_auth(data: bytes) -> tuple[AuthIndicator, int]:
    if len(data) < 4:
        raise ParseError("truncated auth indicator")
    idlen, aulen = data[2], data[3]
    end = 4 + idlen + aulen + _NONCE_LEN + 1
    if len(data) < end:
        raise ParseError("truncated auth indicator")
    idend = 4 + idlen
    auend = idend + aulen
    return (
        AuthIndicator(
            nonce=data[auend : auend + _NONCE_LEN],
            client_id=data[4:idend],
            auth_value=data[idend:auend],
            confirmation=data[end - 1],
        ),
        end,
    )


def classify(data: bytes) -> TeredoPacket:
    """
    Classify one received UDP payload (requirements digest section 2.13).

    The first byte picks the envelope: C{0x6?} an IPv6 packet, C{0x00} then C{0x01} an
    authentication indicator, C{0x00} then C{0x00} an origin indication; anything else is
    invalid.  An origin indication may follow an authentication indicator, never precede
    it (W-ENC-2/3).
    """
    off = 0
    auth = origin = None
    if len(data) < 2:
        raise ParseError("truncated datagram")
    if data[0] == 0:
        if data[1] == 1:
            auth, off = _parse_auth(data)
            if len(data) - off >= 2 and data[off] == 0 and data[off + 1] == 0:
                pass
            elif len(data) - off >= 1 and data[off] == 0:
                raise ParseError("invalid teredo envelope")
        if len(data) - off >= 2 and data[off] == 0 and data[off + 1] == 0:
            if len(data) - off < 8:
                raise ParseError("truncated origin indication")
            origin = OriginIndication(*mapping_of(data, off + 2))
            off += 8
        elif off == 0:
            raise ParseError("invalid teredo envelope")
    header, end = parse_ipv6(data, off)
    if end == len(data):
        return TeredoPacket(header, data[off:] if off else data, auth, origin)
    tail = data[end:]
    scan = scan_trailers(tail)
    return TeredoPacket(header, data[off:end], auth, origin, tail, scan.trailers, scan.malformed)
