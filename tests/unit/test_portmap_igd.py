"""
UPnP IGD messages: the SSDP search and its answers, the device description, SOAP envelopes
built (X-UPNP-04, -07, -13: RFC 6081 section 5.3.3's arguments) and parsed, and the hostile
XML every parser must turn into one L{ParseError}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from teredonode.portmap import igd
from teredonode.portmap.base import PortMapError
from teredonode.portmap.mappers import BoundedBody
from teredonode.wire.errors import ParseError

LIMIT = 65536
LOCATION = "http://192.168.1.1:5000/rootDesc.xml"


def reason(function, *args) -> str:
    try:
        function(*args)
    except ParseError as e:
        return e.reason
    raise AssertionError("no ParseError")


class SsdpTests(SynchronousTestCase):
    def test_msearch(self) -> None:
        self.assertEqual(
            igd.msearch("urn:schemas-upnp-org:service:WANIPConnection:1"),
            b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\n'
            b"ST: urn:schemas-upnp-org:service:WANIPConnection:1\r\n\r\n",
        )

    def test_answer(self) -> None:
        """
        The header name is case-insensitive; the value is the description URL.
        """
        answer = b"HTTP/1.1 200 OK\r\nST: x\r\nLocation:  http://192.168.1.1:5000/rootDesc.xml \r\n\r\n"
        self.assertEqual(igd.parse_search_response(answer, "192.168.1.1"), LOCATION)

    def test_refused(self) -> None:
        ok = "HTTP/1.1 200 OK\r\nLOCATION: {}\r\n\r\n"
        cases = {
            "url not on the answering host": ok.format("http://203.0.113.9:5000/d.xml").encode(),
            "url not plain http": ok.format("https://192.168.1.1/d.xml").encode(),
            "malformed url": ok.format("http://192.168.1.1:99999/d.xml").encode(),
            "ssdp answer without location": b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n",
            "ssdp answer not HTTP 200": b"NOTIFY * HTTP/1.1\r\nLOCATION: http://192.168.1.1/\r\n\r\n",
            "ssdp answer not ascii": b"HTTP/1.1 200 OK\r\n\xff\r\n",
            "ssdp answer too large": b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 1000,
        }
        for expected, data in cases.items():
            self.assertEqual(reason(igd.parse_search_response, data, "192.168.1.1"), expected)
        userinfo = ok.format("http://user:pw@192.168.1.1/d.xml").encode()
        self.assertEqual(reason(igd.parse_search_response, userinfo, "192.168.1.1"), "url not plain http")


def description(services: str, urlbase: str = "") -> bytes:
    return (
        '<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0">'
        f"{urlbase}<device><deviceList><device><serviceList>{services}</serviceList></device></deviceList>"
        "</device></root>"
    ).encode()


def service(kind: str, control: str) -> str:
    return f"<service><serviceType>urn:schemas-upnp-org:service:{kind}</serviceType><controlURL>{control}</controlURL></service>"


class DescriptionTests(SynchronousTestCase):
    def test_preferred_service(self) -> None:
        """
        WANIPConnection:2, then :1, then WANPPPConnection:1, wherever they are listed.
        """
        data = description(service("WANPPPConnection:1", "/ppp") + service("WANIPConnection:1", "/ip1"))
        self.assertEqual(
            igd.parse_description(data, LOCATION, LIMIT),
            igd.Service("urn:schemas-upnp-org:service:WANIPConnection:1", "http://192.168.1.1:5000/ip1"),
        )
        data = description(service("WANPPPConnection:1", "/ppp"))
        self.assertEqual(igd.parse_description(data, LOCATION, LIMIT).control_url, "http://192.168.1.1:5000/ppp")
        data = description(service("WANIPConnection:1", "/ip1") + service("WANIPConnection:2", "/ip2"))
        self.assertEqual(igd.parse_description(data, LOCATION, LIMIT).control_url, "http://192.168.1.1:5000/ip2")

    def test_urlbase(self) -> None:
        data = description(service("WANIPConnection:1", "ctl"), "<URLBase>http://192.168.1.1:49000/igd/</URLBase>")
        self.assertEqual(igd.parse_description(data, LOCATION, LIMIT).control_url, "http://192.168.1.1:49000/igd/ctl")

    def test_refused(self) -> None:
        cases = {
            "no wan connection service": description(service("Layer3Forwarding:1", "/l3f")),
            "url not on the answering host": description(service("WANIPConnection:1", "http://203.0.113.9/ctl")),
            "not a upnp device description": b"<html><body/></html>",
            "url not plain http": description(service("WANIPConnection:1", "ftp://192.168.1.1/ctl")),
        }
        for expected, data in cases.items():
            self.assertEqual(reason(igd.parse_description, data, LOCATION, LIMIT), expected)


class HostileXmlTests(SynchronousTestCase):
    """
    Whatever the document, one ParseError and nothing expanded, fetched or recursed.
    """

    def test_cases(self) -> None:
        entity = b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><root>&b;</root>'
        cases = {
            "xml with a document type or entity": [
                entity,
                b'<!DOCTYPE r SYSTEM "http://203.0.113.9/x.dtd"><root/>',
                b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><root>&x;</root>',
                b"<!DOCTYPE r><root/>",
            ],
            "malformed xml": [
                b"",
                b"<root>",
                b"<root>&undefined;</root>",
                b"\xff\xfe<\x00r\x00",
                b'<?xml version="1.0" encoding="x-unknown"?><root/>',
                b"<a></b>",
            ],
            "xml too deep or too many elements": [
                b"<a>" * 40 + b"</a>" * 40,
                b"<r>" + b"<e/>" * 5000 + b"</r>",
            ],
            "xml too large": [b"<r>" + b" " * LIMIT + b"</r>"],
        }
        for expected, documents in cases.items():
            for data in documents:
                self.assertEqual(reason(igd.parse_xml, data, LIMIT), expected, data[:60])

    def test_namespaces_dropped(self) -> None:
        root = igd.parse_xml(b'<s:E xmlns:s="urn:x"><s:B>t</s:B></s:E>', LIMIT)
        self.assertEqual((root.tag, root[0].tag, root[0].text), ("E", "B", "t"))


ENVELOPE = (
    '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>{}</s:Body></s:Envelope>'
)


class SoapTests(SynchronousTestCase):
    def test_addPortMapping(self) -> None:
        """
        X-UPNP-04, in the WANIPConnection:1 section 2.4.16 argument order.
        """
        headers, body = igd.soap_request(igd.SERVICE_TYPES[1], *igd.add_port_mapping("192.168.1.2", 40000))
        self.assertEqual(
            headers,
            {
                "Content-Type": 'text/xml; charset="utf-8"',
                "SOAPAction": '"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"',
            },
        )
        call = (
            '<u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
            "<NewRemoteHost></NewRemoteHost><NewExternalPort>40000</NewExternalPort>"
            "<NewProtocol>UDP</NewProtocol><NewInternalPort>40000</NewInternalPort>"
            "<NewInternalClient>192.168.1.2</NewInternalClient><NewEnabled>1</NewEnabled>"
            "<NewPortMappingDescription>TEREDO</NewPortMappingDescription>"
            "<NewLeaseDuration>0</NewLeaseDuration></u:AddPortMapping>"
        )
        self.assertEqual(body, (ENVELOPE.format(call) + "\r\n").encode())

    def test_deleteAndExternal(self) -> None:
        """
        X-UPNP-13b and X-UPNP-07a.
        """
        self.assertEqual(
            igd.delete_port_mapping(40000),
            ("DeletePortMapping", [("NewRemoteHost", ""), ("NewExternalPort", "40000"), ("NewProtocol", "UDP")]),
        )
        _, body = igd.soap_request(igd.SERVICE_TYPES[0], *igd.get_external_ip_address())
        self.assertIn(b'<u:GetExternalIPAddress xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"></u:GetExternalIPAddress>', body)

    def test_escaped(self) -> None:
        _, body = igd.soap_request('a"b', "X", [("V", "<&>")])
        self.assertIn(b'xmlns:u="a&quot;b"><V>&lt;&amp;&gt;</V>', body)

    def test_response(self) -> None:
        data = ENVELOPE.format(
            '<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
            "<NewExternalIPAddress> 198.51.100.7 </NewExternalIPAddress></u:GetExternalIPAddressResponse>"
        ).encode()
        answer = igd.parse_soap_response(data, "GetExternalIPAddress", LIMIT)
        self.assertEqual(answer, {"NewExternalIPAddress": "198.51.100.7"})
        self.assertEqual(igd.ipv4_text("198.51.100.7"), "198.51.100.7")
        self.assertEqual(reason(igd.ipv4_text, "198.51.100.777"), "not an ipv4 address")

    def test_fault(self) -> None:
        data = ENVELOPE.format(
            "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
            '<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode>'
            "<errorDescription>Conflict\nInMappingEntry\u200b</errorDescription></UPnPError></detail></s:Fault>"
        ).encode()
        fault = igd.parse_soap_response(data, "AddPortMapping", LIMIT)
        self.assertEqual(fault, igd.Fault(718, "Conflict?InMappingEntry?"))
        self.assertEqual(str(fault), "718 Conflict?InMappingEntry?")

    def test_malformed(self) -> None:
        cases = {
            "not a soap envelope": b"<root><Body/></root>",
            "soap response without the action's answer": ENVELOPE.format("<OtherResponse/>").encode(),
            "soap fault without a upnp error code": ENVELOPE.format(
                "<s:Fault><detail><UPnPError><errorCode>x</errorCode></UPnPError></detail></s:Fault>"
            ).encode(),
            "xml with a document type or entity": b"<!DOCTYPE x []>" + ENVELOPE.format("").encode(),
        }
        for expected, data in cases.items():
            self.assertEqual(reason(igd.parse_soap_response, data, "AddPortMapping", LIMIT), expected)


class _Transport:
    stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class BoundedBodyTests(SynchronousTestCase):
    """
    The HTTP body reader of the production client: what is over the limit is cut off.
    """

    def test_within(self) -> None:
        done: Deferred[bytes] = Deferred()
        body = BoundedBody(10, done)
        body.makeConnection(_Transport())
        body.dataReceived(b"12345")
        body.dataReceived(b"67890")
        body.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.successResultOf(done), b"1234567890")

    def test_over(self) -> None:
        done: Deferred[bytes] = Deferred()
        transport = _Transport()
        body = BoundedBody(10, done)
        body.makeConnection(transport)
        body.dataReceived(b"12345678901")
        self.assertTrue(transport.stopped)
        body.connectionLost(Failure(ResponseDone()))
        self.assertEqual(str(self.failureResultOf(done, PortMapError).value), "upnp: HTTP body over 10 bytes")
