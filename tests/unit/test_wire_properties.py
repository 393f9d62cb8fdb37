"""
Properties of the wire parsers under hostile input (the unit side of fuzzing; the lab side is
tests/attack/test_fuzz.py): any bytes give a value or L{ParseError}, never another exception;
what is accepted re-encodes to the very bytes received where the codec promises it, or to
bytes that parse to the same value; trailers re-parse.
"""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from teredonode.lab.fuzz import FuzzTarget, build_pool, seed_messages
from teredonode.wire import ipv6, teredo
from teredonode.wire.errors import ParseError
from teredonode.wire.ipv6 import decode_icmpv6, encode_icmpv6, parse_ipv6
from teredonode.wire.teredo import classify, decode_trailers, encode_trailers

from tests import strategies

#: Discard-on-unknown trailer types: top bits 01 (RFC 6081 section 5.1.2).
DISCARD = 0x40


def _value_or_parse_error(function, *args):
    """
    C{function(*args)}, or C{None} when it raised L{ParseError}; any other exception fails
    the test by propagating.
    """
    try:
        return function(*args)
    except ParseError:
        return None


class TrailerPropertyTests(SynchronousTestCase):
    """
    C{decode_trailers} (W-TRL-1..4).
    """

    @given(strategies.trailer_bytes)
    def test_any_bytes(self, data: bytes) -> None:
        """
        Any trailer area decodes to a tuple of trailers or raises ParseError.
        """
        trailers = _value_or_parse_error(decode_trailers, data)
        if trailers is not None:
            self.assertIsInstance(trailers, tuple)

    @given(strategies.trailer_bytes)
    def test_decoded_reparse(self, data: bytes) -> None:
        """
        What was decoded re-encodes, and the encoding decodes to the same trailers.
        """
        trailers = _value_or_parse_error(decode_trailers, data)
        if trailers is None:
            return
        self.assertEqual(decode_trailers(encode_trailers(trailers)), trailers)

    @given(strategies.skippable_trailers)
    def test_encoding_is_canonical(self, trailers) -> None:
        """
        Valid trailers: decode(encode(x)) == x and encode(decode(b)) == b.
        """
        data = encode_trailers(trailers)
        self.assertEqual(decode_trailers(data), tuple(trailers))
        self.assertEqual(encode_trailers(decode_trailers(data)), data)

    @given(strategies.skippable_trailers, st.integers(0, 2000))
    def test_truncated_keeps_a_prefix(self, trailers, cut: int) -> None:
        """
        W-TRL-3: a trailer area cut anywhere decodes to a prefix of the trailers (processing
        stops at the first malformed one, what came before is kept).
        """
        data = encode_trailers(trailers)
        got = decode_trailers(data[: cut % (len(data) + 1)])
        self.assertEqual(got, tuple(trailers)[: len(got)])

    @given(strategies.skippable_trailers, st.integers(0x40, 0x7F), st.binary(max_size=20), strategies.skippable_trailers)
    def test_discard_type_discards(self, before, ttype: int, value: bytes, after) -> None:
        """
        W-TRL-2: a complete unknown trailer with top bits 01 discards the whole packet,
        wherever it is.
        """
        data = encode_trailers(before) + bytes((ttype, len(value))) + value + encode_trailers(after)
        with self.assertRaises(ParseError):
            decode_trailers(data)


class PayloadPropertyTests(SynchronousTestCase):
    """
    C{classify}, C{parse_ipv6} and C{decode_icmpv6}.
    """

    @settings(max_examples=300)
    @given(strategies.teredo_datagram())
    def test_classify_hostile(self, data: bytes) -> None:
        """
        Any datagram -> TeredoPacket or ParseError; an accepted one re-encodes to exactly
        the bytes received (the envelope has one encoding), and its trailers re-parse.
        """
        packet = _value_or_parse_error(classify, data)
        if packet is None:
            return
        self.assertEqual(packet.to_bytes(), data)
        self.assertEqual(classify(packet.to_bytes()), packet)
        self.assertEqual(len(packet.ipv6), 40 + packet.header.payload_length)
        self.assertEqual(decode_trailers(encode_trailers(packet.trailers)), packet.trailers)

    @given(st.binary(max_size=120), st.integers(0, 60))
    def test_parse_ipv6_any_bytes(self, data: bytes, offset: int) -> None:
        """
        parse_ipv6 at any offset: a header whose encoding is the 40 bytes read, an end
        within the data, or ParseError.
        """
        result = _value_or_parse_error(parse_ipv6, data, offset)
        if result is None:
            return
        header, end = result
        self.assertEqual(header.to_bytes(), data[offset : offset + 40])
        self.assertLessEqual(end, len(data))
        self.assertEqual(end, offset + 40 + header.payload_length)

    @given(st.binary(max_size=200), strategies.addr16, strategies.addr16)
    def test_icmpv6_value_roundtrip(self, body: bytes, src: bytes, dst: bytes) -> None:
        """
        Any ICMPv6 body (checksum not verified): a message or ParseError; a decoded message
        encodes to a body that decodes to the same message with a valid checksum.
        """
        msg = _value_or_parse_error(decode_icmpv6, body, src, dst, False)
        if msg is None:
            return
        again = encode_icmpv6(msg, src, dst)
        self.assertEqual(decode_icmpv6(again, src, dst), msg)

    @given(strategies.icmpv6_message, strategies.addr16, strategies.addr16, st.integers(0, 400), st.integers(0, 255))
    def test_icmpv6_mutated(self, msg, src: bytes, dst: bytes, pos: int, value: int) -> None:
        """
        A valid ICMPv6 packet with one byte overwritten: checked decoding gives a message or
        ParseError.
        """
        packet = bytearray(ipv6.icmpv6_packet(src, dst, msg))
        packet[pos % len(packet)] = value
        parsed = _value_or_parse_error(parse_ipv6, bytes(packet))
        if parsed is None:
            return
        header, end = parsed
        _value_or_parse_error(decode_icmpv6, bytes(packet[40:end]), header.src, header.dst)


class FuzzCorpusTests(SynchronousTestCase):
    """
    The lab fuzzer's corpus (L{teredonode.lab.fuzz}) through the parsers: the valid seeds
    really are valid, and no mutation escapes as another exception.
    """

    target = FuzzTarget(
        "client",
        ("203.0.113.40", 41000),
        "203.0.113.10",
        (bytes.fromhex("20010000cb00710a0000ffffffffffff"),),
        (bytes.fromhex("20010db8000000000000000000000030"),),
    )

    def test_seeds_cover_every_kind(self) -> None:
        """
        The seeds include accepted RSs (with and without auth), RAs, bubbles, origin
        indications, echo and trailers of every known type.
        """
        seeds = seed_messages(self.target, random.Random(3))
        kinds: set[str] = set()
        trailer_types: set[str] = set()
        for data in seeds:
            p = _value_or_parse_error(classify, data)
            if p is None:
                continue
            body = p.ipv6[40:]
            if p.is_bubble:
                kinds.add("bubble")
            elif p.header.next_header == ipv6.NH_ICMPV6 and body:
                kinds.add(f"icmpv6-{body[0]}")
            kinds.add("auth" if p.auth else "no-auth")
            if p.origin:
                kinds.add("origin")
            trailer_types.update(type(t).__name__ for t in p.trailers)
        self.assertTrue({"bubble", "icmpv6-128", "icmpv6-129", "icmpv6-133", "icmpv6-134", "auth", "origin"} <= kinds, kinds)
        self.assertEqual(
            trailer_types,
            {"NonceTrailer", "RandomPortTrailer", "AlternateAddressTrailer", "NeighborDiscoveryTrailer", "UnknownTrailer"},
        )
        self.assertIn(b"", seeds)

    def test_pool_never_escapes(self) -> None:
        """
        Every pool entry (seeds and mutations): classify, then the ICMPv6 decoder, give a
        value or ParseError.
        """
        accepted = 0
        for data in build_pool(self.target, 5, size=5000):
            p = _value_or_parse_error(classify, data)
            if p is None:
                continue
            accepted += 1
            self.assertEqual(p.to_bytes(), data)
            if p.header.next_header == ipv6.NH_ICMPV6:
                _value_or_parse_error(decode_icmpv6, p.ipv6[40:], p.header.src, p.header.dst)
        self.assertGreater(accepted, 500)
