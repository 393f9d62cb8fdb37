"""
Properties of the port-mapping parsers under hostile input, in the style of
tests/unit/test_wire_properties.py: any bytes give a value or L{ParseError}, never another
exception; well-formed responses built from any field values decode to those values.
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from teredonode.portmap import igd, natpmp, pcp
from teredonode.portmap.base import default_gateway
from teredonode.wire.errors import ParseError

from tests import strategies

LIMIT = 65536
LOCATION = "http://192.168.1.1:5000/rootDesc.xml"


def _value_or_parse_error(function, *args):
    """
    C{function(*args)}, or C{None} when it raised L{ParseError}; any other exception fails
    the test by propagating.
    """
    try:
        return function(*args)
    except ParseError:
        return None


#: Bytes that look like XML often enough to get past the first character.
xml_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [b"<", b">", b"/", b"root", b"Envelope", b"Body", b"Fault", b"service", b"controlURL", b"&",
             b";", b"<!DOCTYPE", b"<!ENTITY", b'"', b"=", b" ", b"xmlns:s", b"s:", b"<?xml", b"?>",
             b"[", b"]", b"SYSTEM", b"&#", b"x", b"\xff", b"\0"]
        ),
        max_size=60,
    ).map(b"".join),
)


class NatPmpPropertyTests(SynchronousTestCase):
    @given(st.binary(max_size=64))
    def test_any_bytes(self, data: bytes) -> None:
        answer = _value_or_parse_error(natpmp.decode_response, data)
        if answer is not None:
            self.assertIsInstance(answer, (natpmp.ExternalAddressResponse, natpmp.MapResponse))

    @given(st.integers(0, 0xFFFFFFFF), strategies.port, strategies.port, st.integers(0, 0xFFFFFFFF))
    def test_map_response(self, epoch: int, internal: int, external: int, lifetime: int) -> None:
        data = struct.pack("!BBHIHHI", 0, 129, 0, epoch, internal, external, lifetime)
        self.assertEqual(natpmp.decode_response(data), natpmp.MapResponse(1, 0, epoch, internal, external, lifetime))


class PcpPropertyTests(SynchronousTestCase):
    @given(st.binary(max_size=1200))
    def test_any_bytes(self, data: bytes) -> None:
        answer = _value_or_parse_error(pcp.decode_response, data)
        if answer is not None:
            self.assertIsInstance(answer, (pcp.MapResponse, pcp.UnsupportedVersion))

    @given(st.binary(min_size=0, max_size=200))
    def test_after_a_valid_header(self, tail: bytes) -> None:
        """
        A response header that passes the first checks, then anything.
        """
        data = struct.pack("!BBBBII12x", 2, 0x81, 0, 0, 60, 1) + tail
        _value_or_parse_error(pcp.decode_response, data)

    @given(
        st.integers(0, 255),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.binary(min_size=12, max_size=12),
        strategies.port,
        strategies.port,
        strategies.ipv4_text,
    )
    def test_map_response(self, result: int, lifetime: int, epoch: int, nonce: bytes, internal: int, external: int, address: str) -> None:
        data = struct.pack("!BBBBII12x", 2, 0x81, 0, result, lifetime, epoch)
        data += struct.pack("!12sB3xHH16s", nonce, 17, internal, external, b"\0" * 10 + b"\xff\xff" + ipaddress.IPv4Address(address).packed)
        self.assertEqual(
            pcp.decode_response(data), pcp.MapResponse(result, lifetime, epoch, nonce, 17, internal, external, address)
        )

    @given(st.binary(min_size=12, max_size=12), strategies.ipv4_text, st.integers(1, 65535), st.integers(0, 0xFFFFFFFF))
    def test_request_layout(self, nonce: bytes, client: str, port: int, lifetime: int) -> None:
        request = pcp.map_request(nonce, client, port, lifetime)
        self.assertEqual(len(request), 60)
        self.assertEqual(struct.unpack("!I", request[4:8])[0], lifetime)
        self.assertEqual(request[20:24], ipaddress.IPv4Address(client).packed)
        self.assertEqual(request[24:36], nonce)


class IgdPropertyTests(SynchronousTestCase):
    @given(st.binary(max_size=3000), strategies.ipv4_text)
    def test_ssdp_any_bytes(self, data: bytes, source: str) -> None:
        location = _value_or_parse_error(igd.parse_search_response, data, source)
        if location is not None:
            self.assertTrue(location.startswith("http://"))

    @given(st.text(max_size=200))
    def test_ssdp_any_location(self, location: str) -> None:
        data = f"HTTP/1.1 200 OK\r\nLOCATION: {location}\r\n\r\n".encode("utf-8")
        _value_or_parse_error(igd.parse_search_response, data, "192.168.1.1")

    @given(xml_bytes)
    def test_xml_any_bytes(self, data: bytes) -> None:
        _value_or_parse_error(igd.parse_xml, data, LIMIT)
        _value_or_parse_error(igd.parse_description, data, LOCATION, LIMIT)
        answer = _value_or_parse_error(igd.parse_soap_response, data, "AddPortMapping", LIMIT)
        if answer is not None:
            self.assertIsInstance(answer, (dict, igd.Fault))

    @given(st.text(max_size=100), st.text(max_size=100))
    def test_description_any_fields(self, kind: str, control: str) -> None:
        """
        Any service type and control URL text, escaped into a well-formed description.
        """
        from xml.sax.saxutils import escape

        data = (
            f"<root><device><serviceList><service><serviceType>{escape(kind)}</serviceType>"
            f"<controlURL>{escape(control)}</controlURL></service></serviceList></device></root>"
        ).encode("utf-8", "surrogatepass")
        found = _value_or_parse_error(igd.parse_description, data, LOCATION, LIMIT)
        if found is not None:
            self.assertTrue(found.control_url.startswith("http://192.168.1.1"), found)

    @given(st.text(max_size=300))
    def test_route_table_any_text(self, text: str) -> None:
        gateway = default_gateway(text)
        if gateway is not None:
            ipaddress.IPv4Address(gateway)
