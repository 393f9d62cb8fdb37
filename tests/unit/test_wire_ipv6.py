"""
IPv6 header, ICMPv6 messages and checksums, checked against scapy as an independent oracle
(same fields -> identical bytes and checksums), plus hypothesis round-trips.
"""

import ipaddress
from typing import Any

from hypothesis import given, strategies as st
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6PacketTooBig,
    IPv6,
)
from twisted.trial.unittest import SynchronousTestCase

from teredonode.wire import address, ipv6
from teredonode.wire.errors import ParseError

from tests import strategies


def a(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


CLIENT = "2001:0:cb00:7178:0:efff:3fff:fdfe"
PEER = "2001:db8::5"


class ScapyOracleTests(SynchronousTestCase):
    """
    Our bytes equal scapy's for the same fields (W-RS, W-RA, W-ECHO in the digest).
    """

    def test_router_solicitation(self) -> None:
        ours = ipv6.icmpv6_packet(address.CLIENT_LINK_LOCAL_RESTRICTED, ipv6.ALL_ROUTERS, ipv6.RouterSolicitation(), 255)
        theirs = bytes(IPv6(src="fe80::ffff:ffff:ffff", dst="ff02::2", hlim=255) / ICMPv6ND_RS())
        self.assertEqual(ours, theirs)

    def test_router_advertisement(self) -> None:
        """
        The RA a server sends (section 2.9): one PIO for 2001:0:<server>::/64, MTU 1280.
        """
        src = address.server_link_local("203.0.113.120")
        prefix = a("2001:0:cb00:7178::")
        msg = ipv6.RouterAdvertisement(
            retrans_timer=2000,
            prefixes=(ipv6.PrefixInformation(prefix, 64, ipv6.PIO_FLAG_AUTONOMOUS, 0xFFFFFFFF, 0xFFFFFFFF),),
            mtu=1280,
        )
        ours = ipv6.icmpv6_packet(src, address.CLIENT_LINK_LOCAL_RESTRICTED, msg, 255)
        theirs = bytes(
            IPv6(src="fe80::8000:f227:34ff:8e87", dst="fe80::ffff:ffff:ffff", hlim=255)
            / ICMPv6ND_RA(chlim=0, M=0, O=0, routerlifetime=0, reachabletime=0, retranstimer=2000, prf=0)
            / ICMPv6NDOptPrefixInfo(
                prefixlen=64, L=0, A=1, validlifetime=0xFFFFFFFF, preferredlifetime=0xFFFFFFFF,
                prefix="2001:0:cb00:7178::",
            )
            / ICMPv6NDOptMTU(mtu=1280)
        )
        self.assertEqual(ours, theirs)
        header, end = ipv6.parse_ipv6(ours)
        self.assertEqual(end, len(ours))
        self.assertEqual(ipv6.decode_icmpv6(ours[40:], header.src, header.dst), msg)

    def test_echo(self) -> None:
        cases: list[tuple[type[ipv6.EchoRequest | ipv6.EchoReply], Any]] = [
            (ipv6.EchoRequest, ICMPv6EchoRequest), (ipv6.EchoReply, ICMPv6EchoReply)
        ]
        for ours_cls, scapy_cls in cases:
            msg = ours_cls(0x1234, 7, b"\x01\x02\x03\x04\x05\x06\x07\x08")
            ours = ipv6.icmpv6_packet(a(CLIENT), a(PEER), msg, 64)
            theirs = bytes(
                IPv6(src=CLIENT, dst=PEER, hlim=64) / scapy_cls(id=0x1234, seq=7, data=msg.data)
            )
            self.assertEqual(ours, theirs)

    def test_errors(self) -> None:
        invoking = ipv6.bubble(a(CLIENT), a(PEER))
        ours = ipv6.icmpv6_packet(a(PEER), a(CLIENT), ipv6.DestinationUnreachable(3, invoking))
        theirs = bytes(IPv6(src=PEER, dst=CLIENT, hlim=64) / ICMPv6DestUnreach(code=3) / invoking)
        self.assertEqual(ours, theirs)
        ours = ipv6.icmpv6_packet(a(PEER), a(CLIENT), ipv6.PacketTooBig(1280, invoking))
        theirs = bytes(IPv6(src=PEER, dst=CLIENT, hlim=64) / ICMPv6PacketTooBig(mtu=1280) / invoking)
        self.assertEqual(ours, theirs)

    def test_bubble(self) -> None:
        """
        A bubble: next header 59, payload length 0 (W-BUB-1).
        """
        ours = ipv6.bubble(a(CLIENT), a(PEER))
        self.assertEqual(ours, bytes(IPv6(src=CLIENT, dst=PEER, nh=59, hlim=0, plen=0)))
        header, _ = ipv6.parse_ipv6(ours)
        self.assertTrue(ipv6.is_bubble(header))

    @given(st.binary(max_size=300), strategies.addr16, strategies.addr16)
    def test_checksum_matches_scapy(self, data: bytes, src: bytes, dst: bytes) -> None:
        from scapy.layers.inet6 import in6_chksum

        ref = in6_chksum(58, IPv6(src=str(ipaddress.IPv6Address(src)), dst=str(ipaddress.IPv6Address(dst))), data)
        ours = ipv6.checksum(src, dst, 58, data)
        # scapy returns 0xFFFF where one's complement arithmetic gives 0 (UDP convention).
        self.assertEqual(ours or 0xFFFF, ref or 0xFFFF)


class RoundTripTests(SynchronousTestCase):
    @given(strategies.icmpv6_message, strategies.addr16, strategies.addr16)
    def test_icmpv6_roundtrip(self, msg, src: bytes, dst: bytes) -> None:
        body = ipv6.encode_icmpv6(msg, src, dst)
        self.assertEqual(ipv6.decode_icmpv6(body, src, dst), msg)

    @given(strategies.ipv6_packet())
    def test_header_roundtrip(self, packet: bytes) -> None:
        header, end = ipv6.parse_ipv6(packet)
        self.assertEqual(end, len(packet))
        self.assertEqual(header.to_bytes() + packet[40:], packet)

    @given(st.binary(max_size=200), strategies.addr16, strategies.addr16)
    def test_decode_any_bytes(self, body: bytes, src: bytes, dst: bytes) -> None:
        """
        Any bytes decode to a message or raise ParseError; nothing else escapes.
        """
        for verify in (True, False):
            try:
                ipv6.decode_icmpv6(body, src, dst, verify=verify)
            except ParseError:
                pass


class ValidityTests(SynchronousTestCase):
    def test_bad_checksum(self) -> None:
        pkt = bytearray(ipv6.icmpv6_packet(a(CLIENT), a(PEER), ipv6.EchoRequest(1, 1, b"x")))
        pkt[-1] ^= 1
        self.assertRaises(ParseError, ipv6.decode_icmpv6, bytes(pkt[40:]), a(CLIENT), a(PEER))

    def test_zero_length_option(self) -> None:
        """
        RFC 4861 section 6.1: an option of length zero invalidates the message.
        """
        body = bytes([134, 0, 0, 0]) + bytes(12) + bytes([5, 0]) + bytes(6)
        csum = ipv6.checksum(a("fe80::1"), a("fe80::2"), 58, body)
        body = body[:2] + csum.to_bytes(2, "big") + body[4:]
        with self.assertRaises(ParseError) as cm:
            ipv6.decode_icmpv6(body, a("fe80::1"), a("fe80::2"))
        self.assertEqual(cm.exception.reason, "nd option with zero length")

    def test_header_errors(self) -> None:
        good = ipv6.bubble(a(CLIENT), a(PEER))
        self.assertRaises(ParseError, ipv6.parse_ipv6, good[:39])
        self.assertRaises(ParseError, ipv6.parse_ipv6, b"\x40" + good[1:])
        longer = good[:4] + b"\x00\x01" + good[6:]
        self.assertRaises(ParseError, ipv6.parse_ipv6, longer)

    def test_address_classes(self) -> None:
        self.assertTrue(ipv6.is_link_local(a("fe80::1")))
        self.assertFalse(ipv6.is_link_local(a("fec0::1")))
        self.assertTrue(ipv6.is_multicast(a("ff02::2")))
        for g in [CLIENT, PEER, "2a00::1"]:
            self.assertTrue(ipv6.is_global_unicast6(a(g)), g)
        for n in ["::", "::1", "fe80::1", "fec0::1", "fd00::1", "ff0e::1", "::ffff:1.2.3.4"]:
            self.assertFalse(ipv6.is_global_unicast6(a(n)), n)
