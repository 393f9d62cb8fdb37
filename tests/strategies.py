"""
Hypothesis strategies for wire values, shared by the unit tests.
"""

from hypothesis import strategies as st

from teredonode.wire import ipv6, teredo
from teredonode.wire.address import TeredoAddress

ipv4_text = st.integers(0, 2**32 - 1).map(lambda n: ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0)))
port = st.integers(0, 65535)
addr16 = st.binary(min_size=16, max_size=16)

teredo_address = st.builds(
    TeredoAddress,
    prefix=st.binary(min_size=4, max_size=4),
    server=ipv4_text,
    flags=st.integers(0, 0xFFFF),
    port=port,
    client=ipv4_text,
)

origin = st.builds(teredo.OriginIndication, ip=ipv4_text, port=port)
auth = st.builds(
    teredo.AuthIndicator,
    nonce=st.binary(min_size=8, max_size=8),
    client_id=st.binary(max_size=255),
    auth_value=st.binary(max_size=255),
    confirmation=st.integers(0, 255),
)

nonce_trailer = st.builds(teredo.NonceTrailer, st.binary(min_size=4, max_size=4))
#: X-TRL-12: an entry's address is unicast (not 0/8, 127/8 or 224/3), as the decoder insists.
alt_trailer = st.builds(
    teredo.AlternateAddressTrailer,
    st.lists(
        st.tuples(ipv4_text.filter(lambda ip: int(ip.split(".")[0]) not in (0, 127) and int(ip.split(".")[0]) < 224), st.integers(1, 65535)),
        min_size=1,
        max_size=4,
    ).map(tuple),
)
nd_trailer = st.builds(teredo.NeighborDiscoveryTrailer, st.sampled_from([0, 1]))
random_port_trailer = st.builds(
    teredo.RandomPortTrailer, port, st.sampled_from([teredo.TRAILER_RANDOM_PORT, teredo.TRAILER_RANDOM_PORT_RFC])
)
# Unknown types that may be skipped: top bits 00, 10 or 11, and not a known code point.
unknown_trailer = st.builds(
    teredo.UnknownTrailer,
    st.integers(0, 255).filter(lambda t: t & 0xC0 != 0x40 and t not in (1, 2, 3, 4, 5, teredo.TRAILER_PORT_GUESS)),
    st.binary(max_size=40),
)
port_guess_trailer = st.builds(
    teredo.PortGuessTrailer,
    st.integers(1, teredo.PORT_GUESS_MAX_SOCKETS),
    st.integers(0, teredo.PORT_GUESS_MAX_OPENING),
)
trailer = st.one_of(nonce_trailer, alt_trailer, nd_trailer, random_port_trailer, port_guess_trailer, unknown_trailer)

ipv6_header = st.builds(
    ipv6.IPv6Header,
    src=addr16,
    dst=addr16,
    next_header=st.integers(0, 255),
    payload_length=st.just(0),
    hop_limit=st.integers(0, 255),
    traffic_class=st.integers(0, 255),
    flow_label=st.integers(0, 0xFFFFF),
)


@st.composite
def ipv6_packet(draw):
    """
    A valid IPv6 packet: any header fields, a payload whose length matches.
    """
    header = draw(ipv6_header)
    payload = draw(st.binary(max_size=200))
    return header._replace(payload_length=len(payload)).to_bytes() + payload


echo = st.builds(ipv6.EchoRequest, st.integers(0, 65535), st.integers(0, 65535), st.binary(max_size=64)) | st.builds(
    ipv6.EchoReply, st.integers(0, 65535), st.integers(0, 65535), st.binary(max_size=64)
)
nd_option = st.builds(
    ipv6.NDOption,
    st.integers(1, 255).filter(lambda t: t not in (3, 5)),
    st.integers(0, 3).flatmap(lambda n: st.binary(min_size=8 * n + 6, max_size=8 * n + 6)),
)
prefix_info = st.builds(
    ipv6.PrefixInformation,
    addr16,
    st.integers(0, 128),
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
router_advertisement = st.builds(
    ipv6.RouterAdvertisement,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.lists(prefix_info, max_size=3).map(tuple),
    st.none() | st.integers(0, 2**32 - 1),
    st.lists(nd_option, max_size=2).map(tuple),
)
router_solicitation = st.builds(ipv6.RouterSolicitation, st.lists(nd_option, max_size=3).map(tuple))
icmp_error = st.builds(ipv6.DestinationUnreachable, st.integers(0, 255), st.binary(max_size=100)) | st.builds(
    ipv6.PacketTooBig, st.integers(0, 2**32 - 1), st.binary(max_size=100)
)
icmpv6_message = st.one_of(echo, router_advertisement, router_solicitation, icmp_error)


# --- hostile input: raw trailers and datagrams that are mostly, but not quite, valid --------

#: One raw trailer: any type, a length that may or may not match the value that follows.
raw_trailer = st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40)).map(
    lambda t: bytes((t[0], t[1])) + t[2]
)
#: Bytes shaped like a trailer area: raw trailers, valid ones, and a possibly cut-off end.
trailer_bytes = st.tuples(
    st.lists(raw_trailer | st.lists(trailer, min_size=1, max_size=2).map(teredo.encode_trailers), max_size=4),
    st.binary(max_size=3),
).map(lambda t: b"".join(t[0]) + t[1])
#: Trailers that never ask for the packet to be discarded (no unknown type with top bits 01).
skippable_trailers = st.lists(trailer, max_size=5)


@st.composite
def teredo_datagram(draw):
    """
    A received UDP payload as an attacker would shape it: a valid envelope (optional
    authentication and origin indication, an IPv6 packet, trailers) then, most of the time,
    one structure-aware mutation (a byte overwritten, cut short, garbage appended, the
    payload length rewritten) -- or plain random bytes.
    """
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    data = bytearray(
        teredo.encode_payload(
            draw(ipv6_packet()),
            draw(st.none() | auth),
            draw(st.none() | origin),
            draw(trailer_bytes),
        )
    )
    action = draw(st.integers(0, 4))
    if action == 1:
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif action == 2:
        del data[draw(st.integers(0, len(data))) :]
    elif action == 3:
        data += draw(st.binary(min_size=1, max_size=40))
    elif action == 4:
        start = data.find(0x60)
        if 0 <= start <= len(data) - 6:
            data[start + 4 : start + 6] = draw(st.integers(0, 65535)).to_bytes(2, "big")
    return bytes(data)
