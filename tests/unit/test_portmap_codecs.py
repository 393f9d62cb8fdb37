"""
The NAT-PMP (RFC 6886) and PCP (RFC 6887) codecs against byte layouts written out from the
RFCs' packet figures, field by field, and the default gateway from /proc/net/route.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from teredonode.portmap import natpmp, pcp
from teredonode.portmap.base import default_gateway
from teredonode.wire.errors import ParseError

NONCE = bytes.fromhex("0102030405060708090a0b0c")


class NatPmpVectorTests(SynchronousTestCase):
    """
    RFC 6886 sections 3.2 (external address), 3.3 (mapping), 3.4 (deletion), 3.5 (results).
    """

    def test_externalAddressRequest(self) -> None:
        # Vers = 0 | OP = 0
        self.assertEqual(natpmp.external_address_request(), bytes.fromhex("0000"))

    def test_mapRequest(self) -> None:
        # Vers 0 | OP 1 (UDP) | Reserved 0 | Internal Port | Suggested External Port | Lifetime
        self.assertEqual(
            natpmp.map_request(40000, 40000, 7200),
            bytes.fromhex("00 01 0000 9c40 9c40 00001c20"),
        )

    def test_deleteRequest(self) -> None:
        # Section 3.4: lifetime 0 and suggested external port 0.
        self.assertEqual(natpmp.map_request(40000, 0, 0), bytes.fromhex("00 01 0000 9c40 0000 00000000"))

    def test_badRequestValues(self) -> None:
        for args in ((0, 1, 1), (70000, 1, 1), (1, -1, 1), (1, 1, 2**32)):
            self.assertRaises(ValueError, natpmp.map_request, *args)
        self.assertRaises(ValueError, natpmp.map_request, 1, 1, 1, opcode=0)

    def test_externalAddressResponse(self) -> None:
        # Vers 0 | OP 128 | Result 0 | Seconds Since Start of Epoch | External IPv4 Address
        answer = natpmp.decode_response(bytes.fromhex("00 80 0000 0000012c c6336407"))
        self.assertEqual(answer, natpmp.ExternalAddressResponse(0, 300, "198.51.100.7"))

    def test_mapResponse(self) -> None:
        # Vers 0 | OP 129 | Result | Epoch | Internal Port | Mapped External Port | Lifetime
        answer = natpmp.decode_response(bytes.fromhex("00 81 0000 0000012c 9c40 9c41 00000e10"))
        self.assertEqual(answer, natpmp.MapResponse(1, 0, 300, 40000, 40001, 3600))

    def test_errorResponseShort(self) -> None:
        """
        Section 3.5: other fields are undefined on an error, so 8 bytes are enough.
        """
        answer = natpmp.decode_response(bytes.fromhex("00 81 0002 00000005"))
        self.assertEqual(answer, natpmp.MapResponse(1, 2, 5, 0, 0, 0))
        self.assertEqual(natpmp.result_text(2), "2 not authorized")
        self.assertEqual(natpmp.result_text(99), "99 unknown result")

    def test_malformed(self) -> None:
        cases = {
            "truncated nat-pmp response": "00 80 0000",
            "nat-pmp version not 0": "01 80 0000 00000000 c6336407",
            "nat-pmp request, not a response": "00 00 0000 00000000 c6336407",
            "truncated nat-pmp external address response": "00 80 0000 00000000 c633",
            "truncated nat-pmp map response": "00 81 0000 0000012c 9c40 9c41",
            "unknown nat-pmp opcode": "00 85 0000 0000012c",
        }
        for reason, hexa in cases.items():
            with self.assertRaises(ParseError) as caught:
                natpmp.decode_response(bytes.fromhex(hexa))
            self.assertEqual(caught.exception.reason, reason)


MAP_REQUEST = bytes.fromhex(
    # Version 2 | R=0, Opcode 1 | Reserved | Requested Lifetime 7200
    "02 01 0000 00001c20"
    # PCP Client's IP Address: ::ffff:192.168.1.2
    "00000000000000000000ffff c0a80102"
    # Mapping Nonce (96 bits) | Protocol 17 | Reserved (24 bits)
    "0102030405060708090a0b0c 11 000000"
    # Internal Port | Suggested External Port | Suggested External IP Address ::ffff:0.0.0.0
    "9c40 9c40 00000000000000000000ffff 00000000"
)

MAP_RESPONSE = bytes.fromhex(
    # Version 2 | R=1, Opcode 1 | Reserved | Result Code 0 | Lifetime 3600 | Epoch 300 | Reserved (96)
    "02 81 00 00 00000e10 0000012c 000000000000000000000000"
    # Nonce | Protocol | Reserved | Internal Port | Assigned External Port | Assigned External IP
    "0102030405060708090a0b0c 11 000000 9c40 9c41 00000000000000000000ffff c6336407"
)


class PcpVectorTests(SynchronousTestCase):
    """
    RFC 6887 sections 7.1, 7.2, 7.3, 8.3, 9 and 11.1.
    """

    def test_mapRequest(self) -> None:
        request = pcp.map_request(NONCE, "192.168.1.2", 40000, 7200, external_port=40000)
        self.assertEqual(request, MAP_REQUEST)
        self.assertEqual(len(request), 60)

    def test_badRequestValues(self) -> None:
        self.assertRaises(ValueError, pcp.map_request, b"short", "192.168.1.2", 1, 1)
        self.assertRaises(ValueError, pcp.map_request, NONCE, "192.168.1.2", 0, 1)
        self.assertRaises(ValueError, pcp.map_request, NONCE, "192.168.1.2", 1, 2**32)

    def test_mapResponse(self) -> None:
        self.assertEqual(
            pcp.decode_response(MAP_RESPONSE),
            pcp.MapResponse(0, 3600, 300, NONCE, 17, 40000, 40001, "198.51.100.7"),
        )

    def test_optionsWalked(self) -> None:
        """
        Options after the MAP data (code, reserved, length, padded data) are accepted when
        they tile the message, refused when one overruns it.
        """
        option = bytes.fromhex("03 00 0004 00000000")  # an option of 4 bytes
        self.assertEqual(pcp.decode_response(MAP_RESPONSE + option).external_port, 40001)  # type: ignore[union-attr]
        with self.assertRaises(ParseError) as caught:
            pcp.decode_response(MAP_RESPONSE + bytes.fromhex("03 00 0010 00000000"))
        self.assertEqual(caught.exception.reason, "pcp option overruns the message")

    def test_errorWithoutMapData(self) -> None:
        """
        Section 7.2: an error may come as the bare 24-byte header; its lifetime says how long.
        """
        answer = pcp.decode_response(bytes.fromhex("02 81 00 02 0000001e 0000012c") + bytes(12))
        self.assertEqual(answer, pcp.MapResponse(2, 30, 300, b"", 0, 0, 0, "0.0.0.0"))
        self.assertEqual(pcp.result_text(12), "12 address mismatch")

    def test_natpmpUnsupportedVersion(self) -> None:
        """
        Section 9: a NAT-PMP server answers version 0, opcode 128 + 1, result 1.
        """
        self.assertEqual(pcp.decode_response(bytes.fromhex("00 81 0001 0000012c")), pcp.UnsupportedVersion(0))

    def test_malformed(self) -> None:
        """
        Section 8.3's checks, and the MAP fields.
        """
        cases = {
            "truncated pcp response": MAP_RESPONSE[:20],
            "pcp response size not a multiple of 4 up to 1100": MAP_RESPONSE + b"\0",
            "pcp version not 2": b"\x03" + MAP_RESPONSE[1:],
            "pcp request, not a response": MAP_RESPONSE[:1] + b"\x01" + MAP_RESPONSE[2:],
            "pcp opcode not map": MAP_RESPONSE[:1] + b"\x82" + MAP_RESPONSE[2:],
            "truncated pcp map response": MAP_RESPONSE[:40],
            "pcp external address not ipv4": MAP_RESPONSE[:44] + bytes(16),
        }
        for reason, data in cases.items():
            with self.assertRaises(ParseError) as caught:
                pcp.decode_response(data)
            self.assertEqual(caught.exception.reason, reason)
        too_long = MAP_RESPONSE + bytes.fromhex("03 00 0414") + bytes(1044)
        self.assertEqual(len(too_long), 1108)
        self.assertRaises(ParseError, pcp.decode_response, too_long)


ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth1\t00000000\t0102A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
"""


class GatewayTests(SynchronousTestCase):
    def test_first_default_route(self) -> None:
        self.assertEqual(default_gateway(ROUTES), "192.168.1.1")

    def test_none(self) -> None:
        self.assertIsNone(default_gateway(ROUTES.splitlines()[0] + "\n" + ROUTES.splitlines()[1]))
        self.assertIsNone(default_gateway(""))
        # A default route that is down (flags 0x2) or has no gateway (0x1) does not count.
        self.assertIsNone(default_gateway("h\neth0\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\n"))
        self.assertIsNone(default_gateway("h\neth0\t00000000\tzz\t0003\t0\t0\t0\t00000000\n"))
