"""
The Teredo UDP payload: origin indication, authentication indicator, RFC 6081 trailers and
the classifier (digest sections 2.3-2.7, 2.11, 2.13).
"""

import ipaddress

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from teredonode.wire import ipv6, teredo
from teredonode.wire.errors import ParseError
from teredonode.wire.teredo import (
    AlternateAddressTrailer,
    AuthIndicator,
    NeighborDiscoveryTrailer,
    NonceTrailer,
    OriginIndication,
    RandomPortTrailer,
    UnknownTrailer,
    classify,
    decode_trailers,
    encode_payload,
    encode_trailers,
)

from tests import strategies


def a(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


BUBBLE = ipv6.bubble(a("2001:0:cb00:7178:0:efff:3fff:fdfe"), a("2001:0:c633:6476:0:dfff:3fff:fdf5"))


class VectorTests(SynchronousTestCase):
    def test_origin_indication_vector(self) -> None:
        """
        RFC 4380 section 5.1.1: 1.2.3.4 port 337 -> 00 00 fe ae fe fd fc fb.
        """
        self.assertEqual(OriginIndication("1.2.3.4", 337).to_bytes(), bytes.fromhex("0000feaefefdfcfb"))
        p = classify(bytes.fromhex("0000feaefefdfcfb") + BUBBLE)
        self.assertEqual(p.origin, OriginIndication("1.2.3.4", 337))
        self.assertTrue(p.is_bubble)

    def test_auth_layout(self) -> None:
        """
        00 01 ID-len AU-len, ID, AU, nonce(8), confirmation (section 2.5): 13 + ID + AU bytes.
        """
        auth = AuthIndicator(b"NONCE123", b"id", b"hmac", 1)
        raw = auth.to_bytes()
        self.assertEqual(raw, b"\x00\x01\x02\x04" + b"id" + b"hmac" + b"NONCE123" + b"\x01")
        self.assertEqual(len(AuthIndicator(b"\x00" * 8).to_bytes()), 13)

    def test_auth_then_origin(self) -> None:
        """
        Authentication first, then origin (W-ENC-2); the reverse is invalid (W-ENC-3).
        """
        auth = AuthIndicator(b"abcdefgh")
        origin = OriginIndication("192.0.2.45", 40000)
        p = classify(encode_payload(BUBBLE, auth, origin))
        self.assertEqual((p.auth, p.origin, p.ipv6), (auth, origin, BUBBLE))
        with self.assertRaises(ParseError):
            classify(origin.to_bytes() + auth.to_bytes() + BUBBLE)

    def test_trailer_vectors(self) -> None:
        """
        Each RFC 6081 trailer's bytes (sections 4.2-4.5).
        """
        self.assertEqual(encode_trailers([NonceTrailer(b"\x01\x02\x03\x04")]), bytes.fromhex("010401020304"))
        self.assertEqual(
            encode_trailers([AlternateAddressTrailer((("192.0.2.1", 4096),))]),
            bytes.fromhex("03080000c00002011000"),
        )
        self.assertEqual(encode_trailers([NeighborDiscoveryTrailer(1)]), bytes.fromhex("040401000000"))
        self.assertEqual(encode_trailers([RandomPortTrailer(1201)]), bytes.fromhex("020204b1"))
        self.assertEqual(encode_trailers([RandomPortTrailer(1201, 0x05)]), bytes.fromhex("050204b1"))

    def test_random_port_both_codes(self) -> None:
        """
        Defect D1: 0x05 (section 4.5) and 0x02 (IANA, section 9) both decode; we send 0x02.
        """
        self.assertEqual(decode_trailers(bytes.fromhex("050204b1")), (RandomPortTrailer(1201, 5),))
        self.assertEqual(decode_trailers(bytes.fromhex("020204b1")), (RandomPortTrailer(1201, 2),))
        self.assertEqual(teredo.RANDOM_PORT_SEND_TYPE, 0x02)


class TrailerRuleTests(SynchronousTestCase):
    """
    RFC 6081 sections 4.1 and 5.1.2: W-TRL-1..4.
    """

    def test_order_kept(self) -> None:
        ts = (NonceTrailer(b"abcd"), RandomPortTrailer(7), NeighborDiscoveryTrailer(0))
        self.assertEqual(decode_trailers(encode_trailers(ts)), ts)

    def test_unknown_skip_types(self) -> None:
        for t in (0x06, 0x3F, 0x80, 0xBF, 0xC0, 0xFF):
            got = decode_trailers(bytes((t, 1, 9)) + encode_trailers([NonceTrailer(b"abcd")]))
            self.assertEqual(got, (UnknownTrailer(t, b"\x09"), NonceTrailer(b"abcd")), hex(t))

    def test_unknown_discard_types(self) -> None:
        for t in (0x40, 0x55, 0x7F):
            with self.assertRaises(ParseError) as cm:
                classify(BUBBLE + encode_trailers([NonceTrailer(b"abcd")]) + bytes((t, 0)))
            self.assertEqual(cm.exception.reason, "unknown trailer requires discard")

    def test_malformed_stops(self) -> None:
        """
        Processing stops at a malformed trailer; the packet itself is kept.
        """
        good = encode_trailers([NonceTrailer(b"abcd")])
        for tail in (b"\x01", b"\x01\x04\x00", b"\x40\x09\x00"):
            p = classify(BUBBLE + good + tail)
            self.assertEqual(p.trailers, (NonceTrailer(b"abcd"),))
            self.assertEqual(p.trailer_bytes, good + tail)

    def test_known_type_wrong_length_ignored(self) -> None:
        self.assertEqual(decode_trailers(bytes.fromhex("0103aabbcc") + bytes.fromhex("04050100000000")), ())
        self.assertEqual(decode_trailers(bytes.fromhex("03080000c00002010000")), ())  # port 0

    def test_malformed_known_reported(self) -> None:
        """
        W-TRL-4: a malformed known trailer is ignored by the decoding, and its type is
        reported (so that X-HP-06a can drop on it without re-walking the bytes): X-TRL-08
        (an Alternate Address Length not 8..26 in steps of 6), X-TRL-12 (an entry that is
        not unicast), X-TRL-13 (an entry with port 0), X-TRL-14 (a Neighbor Discovery Option
        trailer whose Length is not 4) and X-TRL-15 (its type not 0 or 1) included.  Unknown
        types and what follows are unaffected; a known type cut short at the end counts, a
        lone byte or an unknown type cut short does not.
        """
        nonce = encode_trailers([NonceTrailer(b"abcd")])
        cases = {
            "0103aabbcc": (1,),
            "04050100000000": (4,),
            "040407000000": (4,),  # discovery type 7
            "0203000000": (2,),
            "0501ff": (5,),
            "03080000c00002010000": (3,),  # port 0
            "03087f00000110000000": (3,),  # X-TRL-12: loopback entry
            "0309" + "00" * 9: (3,),  # X-TRL-08: not 8/14/20/26
            "fe0400000000": (0xFE,),  # port guess: no socket
            "0314000000": (3,),  # truncated
            "800100": (),
        }
        for raw, malformed in cases.items():
            scan = teredo.scan_trailers(bytes.fromhex(raw) + nonce)
            self.assertEqual(scan.malformed, malformed, raw)
            packet = classify(BUBBLE + bytes.fromhex(raw) + nonce)
            self.assertEqual((packet.trailers, packet.malformed_trailers), scan, raw)
            self.assertEqual(decode_trailers(bytes.fromhex(raw) + nonce), scan.trailers, raw)
        self.assertEqual(teredo.scan_trailers(nonce + bytes.fromhex("0314000000")), ((NonceTrailer(b"abcd"),), (3,)))
        self.assertEqual(teredo.scan_trailers(nonce + b"\x03"), ((NonceTrailer(b"abcd"),), ()))
        # X-TRL-14: type 0x04 with Length 4 is the one well-formed Neighbor Discovery Option.
        self.assertEqual(teredo.scan_trailers(bytes.fromhex("040401000000")), ((NeighborDiscoveryTrailer(1),), ()))
        self.assertEqual(teredo.scan_trailers(nonce + bytes.fromhex("800900")), ((NonceTrailer(b"abcd"),), ()))
        self.assertEqual(classify(BUBBLE + nonce).malformed_trailers, ())
        self.assertEqual(classify(BUBBLE).malformed_trailers, ())
        with self.assertRaises(ParseError):
            teredo.scan_trailers(bytes.fromhex("0103aabbcc") + bytes((0x40, 0)))

    def test_encode_errors(self) -> None:
        for bad in [
            [NonceTrailer(b"abc")],
            [AlternateAddressTrailer(())],
            [AlternateAddressTrailer((("192.0.2.1", 0),))],
            [NeighborDiscoveryTrailer(7)],
            [RandomPortTrailer(1, 9)],
        ]:
            self.assertRaises(ParseError, encode_trailers, bad)


class ClassifierTests(SynchronousTestCase):
    def test_simple(self) -> None:
        p = classify(BUBBLE)
        self.assertIsNone(p.auth)
        self.assertIsNone(p.origin)
        self.assertEqual(p.ipv6, BUBBLE)
        self.assertEqual(p.trailer_bytes, b"")
        self.assertTrue(p.is_bubble)

    def test_not_bubble(self) -> None:
        echo = ipv6.icmpv6_packet(BUBBLE[8:24], BUBBLE[24:40], ipv6.EchoRequest(1, 2, b"x" * 8))
        p = classify(echo)
        self.assertFalse(p.is_bubble)
        self.assertEqual(p.header.next_header, ipv6.NH_ICMPV6)

    def test_invalid(self) -> None:
        reasons = {
            b"": "truncated datagram",
            b"\x60": "truncated datagram",
            b"\x00\x02" + BUBBLE: "invalid teredo envelope",
            b"\x00\x00\x01": "truncated origin indication",
            b"\x00\x01\x05\x05": "truncated auth indicator",
            b"\x50" + BUBBLE[1:]: "not ipv6",
            BUBBLE[:30]: "truncated ipv6 header",
            BUBBLE[:5] + b"\x10" + BUBBLE[6:]: "ipv6 payload length exceeds datagram",
            AuthIndicator(b"12345678").to_bytes() + b"\x00\x05" + BUBBLE: "invalid teredo envelope",
        }
        for data, reason in reasons.items():
            with self.assertRaises(ParseError) as cm:
                classify(data)
            self.assertEqual(cm.exception.reason, reason, data.hex())

    @given(
        st.none() | strategies.auth,
        st.none() | strategies.origin,
        strategies.ipv6_packet(),
        st.lists(strategies.trailer, max_size=4),
    )
    def test_roundtrip(self, auth, origin, packet, trailers) -> None:
        data = encode_payload(packet, auth, origin, trailers)
        p = classify(data)
        self.assertEqual(p.auth, auth)
        self.assertEqual(p.origin, origin)
        self.assertEqual(p.ipv6, packet)
        self.assertEqual(p.trailers, tuple(trailers))
        self.assertEqual(p.to_bytes(), data)

    @given(st.binary(max_size=300))
    def test_any_bytes(self, data: bytes) -> None:
        """
        Any bytes -> a TeredoPacket or ParseError, never anything else.
        """
        try:
            p = classify(data)
        except ParseError:
            return
        self.assertIsInstance(p, teredo.TeredoPacket)
        self.assertEqual(len(p.ipv6), 40 + p.header.payload_length)

    @given(strategies.ipv6_packet(), st.binary(max_size=60), st.integers(0, 400), st.integers(0, 255))
    def test_mutated(self, packet: bytes, tail: bytes, pos: int, value: int) -> None:
        """
        Mutations of valid payloads (a byte flipped, trailers of garbage) never escape.
        """
        data = bytearray(encode_payload(packet, AuthIndicator(b"12345678"), OriginIndication("1.2.3.4", 5)) + tail)
        data[pos % len(data)] = value
        try:
            classify(bytes(data))
        except ParseError:
            pass


_NONCE = bytes((teredo.TRAILER_NONCE, 4)) + b"abcd"
_PORT = bytes((teredo.TRAILER_RANDOM_PORT, 2)) + b"\x04\xb1"
_PORT_RFC = bytes((teredo.TRAILER_RANDOM_PORT_RFC, 2)) + b"\x04\xb1"
_ALT2 = bytes((teredo.TRAILER_ALTERNATE_ADDRESS, 14, 0, 0)) + bytes((10, 1, 0, 2, 0x13, 0x88)) + bytes(
    (192, 0, 2, 7, 0x13, 0x89)
)
_ND = bytes((teredo.TRAILER_NEIGHBOR_DISCOVERY, 4, 1, 0, 0, 0))
_GUESS = bytes((teredo.TRAILER_PORT_GUESS, 4, 1, 0, 2, 0))  # 256 sockets, 5.12 s


class PortGuessTrailerTests(SynchronousTestCase):
    """
    The Port Guess trailer (beyond RFC 6081, L{teredonode.roles.portguess}): type 0xFE,
    whose top bits 11 make other implementations skip it (RFC 6081 section 5.1.2).
    """

    def test_round_trip(self) -> None:
        trailer = teredo.PortGuessTrailer(256, 512)
        raw = encode_trailers((trailer,))
        self.assertEqual(raw, _GUESS)
        self.assertEqual(decode_trailers(raw), (trailer,))
        self.assertEqual(trailer.openingSeconds, 5.12)

    def test_skippable_by_others(self) -> None:
        self.assertEqual(teredo.TRAILER_PORT_GUESS & 0xC0, 0xC0)

    def test_invalid_ignored(self) -> None:
        """A wrong length or values out of range: ignored (W-TRL-4), the rest kept."""
        for raw in (
            bytes((0xFE, 3, 1, 0, 0)),
            bytes((0xFE, 5, 1, 0, 0, 0, 0)),
            bytes((0xFE, 4, 0, 0, 0, 1)),  # no socket
            bytes((0xFE, 4, 0x04, 0x01, 0, 1)),  # 1025 sockets
            bytes((0xFE, 4, 0, 1, 0xEA, 0x61)),  # 600.01 s
            bytes((0xFE, 4, 0xFF, 0xFF, 0xFF, 0xFF)),
        ):
            self.assertEqual(decode_trailers(raw + _NONCE), (teredo.NonceTrailer(b"abcd"),), raw.hex())

    def test_encode_refuses_out_of_range(self) -> None:
        for sockets, opening in ((0, 1), (1025, 1), (1, 60001), (1, -1)):
            self.assertRaises(ParseError, encode_trailers, (teredo.PortGuessTrailer(sockets, opening),))

    def test_forwarded(self) -> None:
        self.assertEqual(teredo.forwardable_trailers(_NONCE + _GUESS), _NONCE + _GUESS)

    def test_forward_refused(self) -> None:
        for name, raw in {
            "twice": _GUESS + _GUESS,
            "wrong length": bytes((0xFE, 5, 1, 0, 0, 0, 0)),
            "no socket": bytes((0xFE, 4, 0, 0, 0, 1)),
            "absurd count": bytes((0xFE, 4, 0xFF, 0xFF, 0, 1)),
            "absurd opening": bytes((0xFE, 4, 0, 1, 0xFF, 0xFF)),
            "other 11 type": bytes((0xFD, 4, 1, 0, 2, 0)),
        }.items():
            self.assertIsNone(teredo.forwardable_trailers(raw), name)


class ForwardableTrailersTests(SynchronousTestCase):
    """
    SV-FW-7 (D12 corrected): what a server may forward after a bubble.
    """

    def test_known_trailers_kept(self) -> None:
        for raw in (b"", _NONCE, _NONCE + _PORT, _PORT_RFC + _NONCE, _ALT2 + _ND + _NONCE + _PORT):
            self.assertEqual(teredo.forwardable_trailers(raw), raw)

    def test_longest_accepted(self) -> None:
        alt4 = bytes((teredo.TRAILER_ALTERNATE_ADDRESS, 26, 0, 0)) + bytes((10, 1, 0, 2, 0x13, 0x88)) * 4
        raw = _NONCE + _PORT + alt4 + _ND + _GUESS
        self.assertEqual(len(raw), teredo.MAX_FORWARDED_TRAILERS)
        self.assertEqual(teredo.forwardable_trailers(raw), raw)

    def test_refused(self) -> None:
        cases = {
            "junk": b"\xaa" * 1000,
            "trailing byte": _NONCE + b"\x00",
            "truncated": _NONCE[:-1],
            "duplicate": _NONCE + _NONCE,
            "random port twice (0x02 and 0x05)": _PORT + _PORT_RFC,
            "unknown skippable type": b"\x80\x02ab",
            "unknown discard type": b"\x40\x00",
            "nonce wrong length": bytes((1, 5)) + b"abcde",
            "alternate address not 6n+2": bytes((3, 9, 0, 0)) + b"\x0a\x01\x00\x02\x13\x88\x00",
            "alternate address too long": bytes((3, 32, 0, 0)) + bytes((10, 1, 0, 2, 0x13, 0x88)) * 5,
            "alternate address port 0": bytes((3, 8, 0, 0, 10, 1, 0, 2, 0, 0)),
            "alternate address multicast": bytes((3, 8, 0, 0, 224, 0, 0, 1, 0x13, 0x88)),
            "alternate address loopback": bytes((3, 8, 0, 0, 127, 0, 0, 1, 0x13, 0x88)),
            "alternate address 0/8": bytes((3, 8, 0, 0, 0, 1, 2, 3, 0x13, 0x88)),
            "discovery type 2": bytes((4, 4, 2, 0, 0, 0)),
            "padding": b"\x00\x00",
        }
        for name, raw in cases.items():
            self.assertIsNone(teredo.forwardable_trailers(raw), name)

    @given(st.binary(max_size=120))
    def test_any_bytes(self, raw: bytes) -> None:
        """
        Any bytes -> bytes that decode as known trailers only (at most one of each kind,
        never longer than the bound), or None; never an exception other than ParseError.
        """
        try:
            kept = teredo.forwardable_trailers(raw)
        except ParseError:
            return
        if kept is None:
            return
        self.assertLessEqual(len(kept), teredo.MAX_FORWARDED_TRAILERS)
        decoded = decode_trailers(kept)
        self.assertFalse(any(isinstance(t, UnknownTrailer) for t in decoded))
        kinds = [RandomPortTrailer if isinstance(t, RandomPortTrailer) else type(t) for t in decoded]
        self.assertEqual(len(kinds), len(set(kinds)))
        # Every byte is accounted for by a decoded trailer (reserved fields may differ).
        self.assertEqual(len(encode_trailers(decoded)), len(kept))

    @given(
        st.permutations([_NONCE, _PORT, _ALT2, _ND, _GUESS]).flatmap(
            lambda parts: st.integers(0, 5).map(lambda n: b"".join(parts[:n]))
        )
    )
    def test_valid_combinations(self, raw: bytes) -> None:
        """
        Every ordered subset of the known trailers is forwarded as is.
        """
        self.assertEqual(teredo.forwardable_trailers(raw), raw)
