"""
Teredo addresses (requirements digest section 2.1, W-ADDR-1..6) and the IPv4 predicate
(section 2.12).
"""

import ipaddress

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from teredonode.wire import address, ipv4
from teredonode.wire.address import TeredoAddress
from teredonode.wire.errors import ParseError
from teredonode.wire.teredo import OriginIndication, origin_indication

from tests import strategies


class RFCVectorTests(SynchronousTestCase):
    def test_rfc4380_section4_example(self) -> None:
        """
        RFC 4380 section 4: server 65.54.227.120, cone, mapped 192.0.2.45:40000.
        """
        a = TeredoAddress.parse("2001:0:4136:e378:8000:63bf:3fff:fdd2")
        self.assertEqual(a.prefix, address.GLOBAL_PREFIX)
        self.assertEqual(a.server, "65.54.227.120")
        self.assertTrue(a.cone)
        self.assertEqual(a.flags, 0x8000)
        self.assertEqual(a.mapping, ("192.0.2.45", 40000))
        self.assertEqual(str(a), "2001:0:4136:e378:8000:63bf:3fff:fdd2")

    def test_rfc6081_examples(self) -> None:
        """
        The addresses of the RFC 6081 examples, recomputed in the digest (section 2.1).
        """
        cases = [
            ("203.0.113.120", "192.0.2.1", 4096, "2001:0:cb00:7178:0:efff:3fff:fdfe"),
            ("198.51.100.118", "192.0.2.10", 8192, "2001:0:c633:6476:0:dfff:3fff:fdf5"),
        ]
        for server, client, port, text in cases:
            built = TeredoAddress(address.GLOBAL_PREFIX, server, 0, port, client)
            self.assertEqual(str(built), text)
            self.assertEqual(TeredoAddress.parse(text), built)
        fig3 = TeredoAddress.parse("2001:0:cb00:7178:0:f000:39cc:9b89")
        self.assertEqual(fig3.mapping, ("198.51.100.118", 4095))
        self.assertEqual(fig3.server, "203.0.113.120")

    def test_server_link_local(self) -> None:
        """
        RFC 4380 section 5.3.2: fe80::8000:f227:<~server>; digest example for 203.0.113.120.
        """
        ll = address.server_link_local("203.0.113.120")
        self.assertEqual(str(ipaddress.IPv6Address(ll)), "fe80::8000:f227:34ff:8e87")

    def test_client_link_locals(self) -> None:
        """
        The RS sources Miredo uses (and checks in the RA's destination).
        """
        self.assertEqual(
            str(ipaddress.IPv6Address(address.CLIENT_LINK_LOCAL_CONE)), "fe80::8000:5445:5245:444f"
        )
        self.assertEqual(
            str(ipaddress.IPv6Address(address.CLIENT_LINK_LOCAL_RESTRICTED)), "fe80::ffff:ffff:ffff"
        )

    def test_link_local_layout(self) -> None:
        ll = address.link_local(0, 40000, "192.0.2.45")
        self.assertEqual(str(ipaddress.IPv6Address(ll)), "fe80::63bf:3fff:fdd2")


class BuildTests(SynchronousTestCase):
    def test_random_bits_rfc5991(self) -> None:
        """
        RFC 5991 section 3.1: twelve random bits in 0x3CFF; z, U, G zero; cone as asked.
        """
        a = address.make_address("203.0.113.1", "198.51.100.7", 5000, randbits=lambda n: 0xFFF)
        self.assertEqual(a.flags, 0x3CFF)
        self.assertEqual(a.random_bits, 0xFFF)
        self.assertFalse(a.cone)
        self.assertEqual(a.flags & (address.FLAG_Z | address.FLAG_U | address.FLAG_G), 0)
        b = address.make_address("203.0.113.1", "198.51.100.7", 5000, cone=True, randbits=lambda n: 0xA5A)
        self.assertEqual(b.flags, 0x8000 | 0x2800 | 0x5A)
        self.assertEqual(b.random_bits, 0xA5A)

    def test_fresh_bits_differ(self) -> None:
        """
        Addresses built from the same mapping differ (with overwhelming probability).
        """
        seen = {address.make_address("203.0.113.1", "198.51.100.7", 5000).flags for _ in range(50)}
        self.assertGreater(len(seen), 40)

    @given(strategies.teredo_address)
    def test_roundtrip(self, a: TeredoAddress) -> None:
        raw = a.to_bytes()
        self.assertEqual(len(raw), 16)
        self.assertEqual(TeredoAddress.from_bytes(raw), a)
        self.assertEqual(address.mapping_of(raw), a.mapping)
        self.assertEqual(address.server_of(raw), a.server)

    @given(strategies.addr16)
    def test_any_16_bytes_decode(self, raw: bytes) -> None:
        self.assertEqual(TeredoAddress.from_bytes(raw).to_bytes(), raw)

    def test_errors(self) -> None:
        for text in ["", "hello", "2001:db8::1", "1.2.3.4", "2001:0:1:2:3:4:5:6:7"]:
            self.assertRaises(ParseError, TeredoAddress.parse, text)
        self.assertRaises(ParseError, TeredoAddress.from_bytes, b"\x20\x01")
        self.assertEqual(address.prefix_from_text("2001::/32"), b"\x20\x01\x00\x00")
        self.assertEqual(address.prefix_from_text("3ffe:831f::/32"), bytes.fromhex("3ffe831f"))
        for bad in ["2001::/48", "2001::1/32", "x"]:
            self.assertRaises(ParseError, address.prefix_from_text, bad)


class ObfuscationTests(SynchronousTestCase):
    """
    The one XOR of RFC 4380 sections 4 and 5.1.1, and the raw-address helpers built on it.
    """

    def test_rfc4380_vector(self) -> None:
        """
        Section 4's example: 192.0.2.45:40000 is carried as 3fff:fdd2 and 63bf.
        """
        self.assertEqual(address.obfuscate_port(40000), 0x63BF)
        self.assertEqual(address.obfuscate_ipv4(ipv4.pack("192.0.2.45")), bytes.fromhex("3ffffdd2"))
        self.assertEqual(address.obfuscated_mapping("192.0.2.45", 40000), bytes.fromhex("63bf3ffffdd2"))

    @given(strategies.teredo_address)
    def test_self_inverse_and_layout(self, a: TeredoAddress) -> None:
        """
        Obfuscating twice gives the value back; the six mapping bytes are bytes 10..15 of
        the address and, after two zero bytes, the origin indication.
        """
        raw = a.to_bytes()
        self.assertEqual(address.obfuscate_port(address.obfuscate_port(a.port)), a.port)
        packed = ipv4.pack(a.client)
        self.assertEqual(address.obfuscate_ipv4(address.obfuscate_ipv4(packed)), packed)
        self.assertEqual(address.obfuscated_mapping(a.client, a.port), raw[10:16])
        origin = OriginIndication(a.client, a.port).to_bytes()
        self.assertEqual(origin, b"\x00\x00" + raw[10:16])
        self.assertEqual(origin_indication(a.client, a.port), origin)
        self.assertEqual(address.mapping_of(origin, 2), a.mapping)

    def test_global_teredo(self) -> None:
        """
        Prefix, embedded server and embedded mapping all count; hardening is the caller's.
        """
        def raw(server: str, client: str, prefix: bytes = address.GLOBAL_PREFIX) -> bytes:
            return TeredoAddress(prefix, server, 0, 40000, client).to_bytes()

        self.assertTrue(address.is_global_teredo(raw("203.0.113.1", "192.0.2.45")))
        self.assertTrue(address.mapping_is_global(raw("203.0.113.1", "192.0.2.45")))
        self.assertFalse(address.is_global_teredo(raw("203.0.113.1", "192.0.2.45", b"\x3f\xfe\x83\x1f")))
        self.assertTrue(
            address.is_global_teredo(raw("203.0.113.1", "192.0.2.45", b"\x3f\xfe\x83\x1f"), b"\x3f\xfe\x83\x1f")
        )
        self.assertFalse(address.is_global_teredo(raw("10.0.0.1", "192.0.2.45")))
        self.assertFalse(address.is_global_teredo(raw("203.0.113.1", "192.168.1.2")))
        self.assertFalse(address.mapping_is_global(raw("203.0.113.1", "192.168.1.2")))
        shared = raw("203.0.113.1", "100.64.0.1")
        self.assertFalse(address.is_global_teredo(shared))
        self.assertTrue(address.is_global_teredo(shared, hardened=False))
        self.assertFalse(address.mapping_is_global(shared))
        self.assertTrue(address.mapping_is_global(shared, hardened=False))


class GlobalUnicastTests(SynchronousTestCase):
    """
    RFC 4380 section 5.2.4, plus the documented hardening ranges.
    """

    def test_rfc_list(self) -> None:
        for ip in [
            "0.1.2.3", "10.0.0.1", "127.0.0.1", "169.254.1.1", "172.16.0.1", "172.31.255.255",
            "192.168.1.1", "192.88.99.1", "224.0.0.253", "239.255.255.255", "255.255.255.255",
        ]:
            self.assertFalse(ipv4.is_global_unicast(ip, hardened=False), ip)
            self.assertFalse(ipv4.is_global_unicast(ip), ip)

    def test_global(self) -> None:
        for ip in ["8.8.8.8", "65.54.227.120", "172.32.0.1", "192.0.2.45", "198.51.100.1", "203.0.113.9"]:
            self.assertTrue(ipv4.is_global_unicast(ip), ip)
            self.assertTrue(ipv4.is_global_unicast(ipv4.pack(ip)), ip)

    def test_hardening(self) -> None:
        for ip in ["100.64.0.1", "192.0.0.8", "198.18.0.1", "240.0.0.1"]:
            self.assertTrue(ipv4.is_global_unicast(ip, hardened=False), ip)
            self.assertFalse(ipv4.is_global_unicast(ip), ip)

    @given(st.integers(0, 2**32 - 1), st.booleans())
    def test_matches_reference(self, value: int, hardened: bool) -> None:
        """
        The first-octet lookup agrees with plain network membership, for every address.
        """
        ranges = ipv4.RFC4380_NON_GLOBAL + (ipv4.HARDENING_RANGES if hardened else ())
        expected = not any(ipaddress.IPv4Address(value) in ipaddress.IPv4Network(r[2]) for r in ranges)
        self.assertEqual(ipv4.is_global_unicast(value, hardened), expected)
        self.assertEqual(ipv4.is_global_unicast(ipv4.unpack(value.to_bytes(4, "big")), hardened), expected)

    def test_bad_input(self) -> None:
        self.assertFalse(ipv4.is_global_unicast(b"\x01\x02"))
        for bad in ["1", "1.2.3", "256.1.1.1", "a.b.c.d", "1.2.3.4.5", "", "01.2.3.4", "0x7f.0.0.1", "1.2.3.4 x", " 1.2.3.4"]:
            self.assertRaises(ParseError, ipv4.pack, bad)
