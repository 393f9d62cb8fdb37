# -*- test-case-name: tests.protocol.test_hairpin -*-
"""
The pure parts of RFC 6081's Hairpinning Extension (section 5.6; requirements digest
X-HP-01..07, SEC-17): which alternate addresses a client advertises, and which of those a
peer advertises it may send bubbles to.

Why a module of its own: the Alternate Address trailer is the one RFC 6081 trailer that
names destinations, and its entries are private addresses by design (two clients behind one
NAT that does not hairpin reach each other on the inside), so the global-unicast check of
RFC 4380 section 5.2.4 cannot guard them.  Every rule that bounds what a peer can make us
send lives here, free of I/O, so that it can be read and tested in one place:

  - a trailer that is not well formed (length not 8, 14, 20 or 26; an entry that is not a
    unicast address or has port 0) makes the whole bubble dropped (X-HP-06a, SEC-17): the
    codec ignores such a trailer (W-TRL-4) but reports its type
    (L{teredonode.wire.teredo.TeredoPacket.malformed_trailers}), which is how the rule
    knows it was there;
  - at most L{MAX_ALTERNATES} entries are used per bubble, whatever number of trailers it
    carries (the format's own bound, 6081 section 4.3 and section 7);
  - our own endpoints (we would bubble ourselves) and duplicates are refused;
  - entries are used only from a peer whose Teredo address embeds our own public IPv4
    address: the peer is behind the same NAT, the only case the extension is for (6081
    section 3.5), and the server's RFC 4380 section 5.3.1 check on the indirect bubble's
    source vouches for that address.

The pacing and budget of the bubbles themselves are the tunnel's (L{teredonode.roles.tunnel}).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from teredonode.interfaces import Endpoint
from teredonode.wire import ipv4
from teredonode.wire.errors import ParseError
from teredonode.wire.teredo import TRAILER_ALTERNATE_ADDRESS, AlternateAddressTrailer, Trailer, alternate_entry_ok

__all__ = [
    "MAX_ALTERNATES",
    "Alternates",
    "is_valid_entry",
    "read_alternates",
    "choose_alternates",
    "advertised",
]

#: 6081 section 4.3: Length 8..26, six bytes an entry: four entries at most.
MAX_ALTERNATES = 4


class Alternates(NamedTuple):
    """
    What a received bubble's trailers say about alternate addresses.

    @ivar entries: every entry of every well-formed Alternate Address trailer, in order.
    @ivar malformed: an Alternate Address trailer was there but not well formed (X-HP-06a).
    """

    entries: tuple[Endpoint, ...] = ()
    malformed: bool = False


def is_valid_entry(ip: str, port: int) -> bool:
    """
    X-TRL-12, X-TRL-13: a valid unicast IPv4 address and a port that is not 0.  Private
    addresses are the point of the trailer; "this network" (0/8), loopback (127/8),
    multicast, reserved and the limited broadcast (224/3) are not unicast destinations.
    """
    if not 0 < port < 65536:
        return False
    try:
        return alternate_entry_ok(ipv4.pack(ip) + port.to_bytes(2, "big"))
    except ParseError:
        return False


def read_alternates(trailers: Iterable[Trailer], malformed: Iterable[int] = ()) -> Alternates:
    """
    The alternate addresses a received bubble advertises, from what the codec made of its
    trailers (L{teredonode.wire.teredo.scan_trailers}): every entry of every well-formed
    Alternate Address trailer, in order, and whether one was there but malformed.
    """
    entries = tuple(
        entry for trailer in trailers if isinstance(trailer, AlternateAddressTrailer) for entry in trailer.addresses
    )
    return Alternates(entries, TRAILER_ALTERNATE_ADDRESS in tuple(malformed))


def choose_alternates(
    entries: Iterable[Endpoint], own: Iterable[Endpoint], embedded: Endpoint
) -> tuple[tuple[Endpoint, ...], int]:
    """
    The entries a direct bubble goes to (X-HP-06c), and how many were refused: duplicates,
    the peer's embedded mapping (it gets its bubble anyway), our own endpoints, and any
    beyond L{MAX_ALTERNATES}.
    """
    skip = set(own)
    skip.add(embedded)
    chosen: list[Endpoint] = []
    refused = 0
    for entry in entries:
        if entry in skip or len(chosen) >= MAX_ALTERNATES:
            refused += 1
            continue
        skip.add(entry)
        chosen.append(entry)
    return tuple(chosen), refused


def advertised(local: Endpoint | None, upnp: Endpoint | None) -> AlternateAddressTrailer | None:
    """
    X-HP-05b/c: our Alternate Address trailer: the local address and port, then the UPnP
    mapping when it is not zero (X-HP-04 zeroes it when it equals the server's mapping);
    entries that are not valid are left out, and no trailer at all when none is.  Two
    entries at most, so the Length is at most 14 (X-TRL-09).
    """
    entries = tuple(e for e in (local, upnp) if e is not None and is_valid_entry(*e))
    if not entries:
        return None
    return AlternateAddressTrailer(tuple(dict.fromkeys(entries)))
