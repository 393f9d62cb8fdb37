"""
The port mappers on the in-memory network: a client host and a fake router on the LAN of a
L{FakeNAT}, the router answering PCP and NAT-PMP on port 5351 and SSDP on the multicast
group, its HTTP side a fake IGD.  Everything runs on a Clock: retries, time-outs and the
order the combinator tries the protocols in are observed, never waited for.

The fakes decode requests by hand from the RFC layouts, independently of the client's
codecs, so a codec bug cannot hide behind a fake that shares it.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from teredonode.interfaces import IPortMapper
from teredonode.portmap import Mapping, PortMapError, igd
from teredonode.portmap.mappers import ATTEMPTS, AutoMapper, NatPmpMapper, PcpMapper, UpnpMapper
from teredonode.testing import FakeInternet
from teredonode.portmap.igd import parse_xml

CLIENT = "192.168.1.2"
GATEWAY = "192.168.1.1"
EXTERNAL = "198.51.100.7"
LOCAL_PORT = 40000
V4MAPPED = b"\0" * 10 + b"\xff\xff"


class FakeGateway(DatagramProtocol):
    """
    A router's port 5351: PCP (RFC 6887) and/or NAT-PMP (RFC 6886).

    @ivar ignore: requests to drop silently before answering (loss).
    @ivar result: the result code of every answer (0: grant).
    @ivar forgeFirst: answer the first PCP request with a wrong nonce first.
    """

    def __init__(self, pcp: bool = True, natpmp: bool = True) -> None:
        self.pcp = pcp
        self.natpmp = natpmp
        self.ignore = 0
        self.result = 0
        self.forgeFirst = False
        self.requests: list[tuple[bytes, tuple[str, int], float]] = []
        self.nonces: dict[int, bytes] = {}
        self.clock: Clock | None = None

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None and self.clock is not None
        self.requests.append((data, addr, self.clock.seconds()))
        if self.ignore:
            self.ignore -= 1
            return
        if data[0] == 2 and self.pcp:
            self.transport.write(self.answerPcp(data, addr), addr)
        elif data[0] == 2 and self.natpmp:  # RFC 6887 section 9: a NAT-PMP server's answer
            self.transport.write(struct.pack("!BBHI", 0, 128 + (data[1] & 0x7F), 1, 50), addr)
        elif data[0] == 0 and self.natpmp:
            self.transport.write(self.answerNatPmp(data), addr)

    def answerPcp(self, data: bytes, addr: tuple[str, int]) -> bytes:
        lifetime, client = struct.unpack("!I16s", data[4:24])
        nonce, protocol, internal, suggested = struct.unpack("!12sB3xHH", data[24:44])
        result = self.result
        if client != V4MAPPED + socket.inet_aton(addr[0]):
            result = 12  # ADDRESS_MISMATCH
        elif lifetime == 0 and self.nonces.get(internal, nonce) != nonce:
            result = 2  # NOT_AUTHORIZED: a delete with another nonce
        elif lifetime and not result:
            self.nonces[internal] = nonce
        external = suggested + 1 if lifetime else 0
        granted = min(lifetime, 7200)
        answer = struct.pack("!BBBBII12x", 2, 0x81, 0, result, granted, 100)
        answer += struct.pack("!12sB3xHH16s", nonce, protocol, internal, external, V4MAPPED + socket.inet_aton(EXTERNAL))
        if self.forgeFirst:
            self.forgeFirst = False
            forged = answer[:24] + bytes(12) + answer[36:]
            return forged
        return answer

    def answerNatPmp(self, data: bytes) -> bytes:
        if data[1] == 0:
            return struct.pack("!BBHI4s", 0, 128, self.result, 100, socket.inet_aton(EXTERNAL))
        internal, suggested, lifetime = struct.unpack("!HHI", data[4:12])
        external = suggested + 1 if lifetime else 0
        return struct.pack("!BBHIHHI", 0, 128 + data[1], self.result, 100, internal, external, min(lifetime, 7200))


class Network:
    """
    The client and its router behind one NAT, on a Clock.
    """

    def __init__(self, pcp: bool = True, natpmp: bool = True, gatewayListens: bool = True) -> None:
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        nat = self.net.nat("port-restricted", EXTERNAL)
        self.client = nat.host(CLIENT)
        self.router = nat.host(GATEWAY)
        self.gateway = FakeGateway(pcp, natpmp)
        self.gateway.clock = self.clock
        if gatewayListens:
            self.router.listenUDP(5351, self.gateway)

    def outcome(self, d: Deferred[Any], seconds: float = 60.0) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        self.net.run(seconds)
        assert results, "the Deferred never fired"
        return results[0]


class NatPmpTests(SynchronousTestCase):
    """
    L{NatPmpMapper}: RFC 6886 sections 3.1-3.5.
    """

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IPortMapper, NatPmpMapper(Clock(), GATEWAY)))

    def test_mapping(self) -> None:
        """
        The external address request, then the UDP mapping request with the local port
        suggested; the mapping is what the gateway granted.
        """
        n = Network()
        mapping = n.outcome(NatPmpMapper(n.client, GATEWAY).addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertEqual(mapping, Mapping(EXTERNAL, LOCAL_PORT + 1, 3600, "natpmp"))
        self.assertEqual(
            [data for data, _, _ in n.gateway.requests],
            [b"\x00\x00", struct.pack("!BBHHHI", 0, 1, 0, LOCAL_PORT, LOCAL_PORT, 3600)],
        )
        self.assertEqual({addr[0] for _, addr, _ in n.gateway.requests}, {CLIENT})
        self.assertEqual(n.clock.getDelayedCalls(), [], "no timer left behind")

    def test_retransmission(self) -> None:
        """
        Unanswered requests are resent after 0.25 s, then 0.5 s (section 3.1's doubling).
        """
        n = Network()
        n.gateway.ignore = 2
        mapping = n.outcome(NatPmpMapper(n.client, GATEWAY).addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertEqual(mapping.protocol, "natpmp")
        self.assertEqual([t for _, _, t in n.gateway.requests], [0.0, 0.25, 0.75, 0.75])

    def test_noAnswer(self) -> None:
        """
        A silent gateway: a bounded number of tries, then one line naming it.
        """
        n = Network()
        n.gateway.ignore = 100
        failure = n.outcome(NatPmpMapper(n.client, GATEWAY).addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertIsInstance(failure, Failure)
        failure.trap(PortMapError)
        self.assertEqual(str(failure.value), f"natpmp: gateway {GATEWAY}: no answer after {ATTEMPTS} tries")
        self.assertEqual(len(n.gateway.requests), ATTEMPTS)
        self.assertEqual(n.clock.seconds(), 60.0)
        self.assertEqual(n.clock.getDelayedCalls(), [])

    def test_refused(self) -> None:
        """
        A non-zero result code ends the attempt at once, with its meaning.
        """
        n = Network()
        n.gateway.result = 2
        failure = n.outcome(NatPmpMapper(n.client, GATEWAY).addMapping(CLIENT, LOCAL_PORT, 3600))
        failure.trap(PortMapError)
        self.assertIn("refused the address request: 2 not authorized", str(failure.value))
        self.assertEqual(len(n.gateway.requests), 1)

    def test_otherSourceIgnored(self) -> None:
        """
        An answer from anyone but the gateway's port 5351 is not taken (section 3.1): a LAN
        host forging a mapping gets nowhere, and the gateway's own answer still counts.
        """
        n = Network()
        n.gateway.ignore = 1
        forger = n.router.nat.host("192.168.1.66")  # type: ignore[union-attr]
        forgerPort = forger.listenUDP(5351, DatagramProtocol())
        d = NatPmpMapper(n.client, GATEWAY).addMapping(CLIENT, LOCAL_PORT, 3600)
        n.net.flush()
        clientPort = n.gateway.requests[0][1]
        forgerPort.write(struct.pack("!BBHI4s", 0, 128, 0, 100, socket.inet_aton("203.0.113.66")), clientPort)
        mapping = n.outcome(d)
        self.assertEqual(mapping.externalAddress, EXTERNAL)

    def test_delete(self) -> None:
        """
        Deletion is a mapping request with lifetime 0 and external port 0 (section 3.4).
        """
        n = Network()
        self.assertIsNone(n.outcome(NatPmpMapper(n.client, GATEWAY).deleteMapping(CLIENT, LOCAL_PORT)))
        self.assertEqual(n.gateway.requests[0][0], struct.pack("!BBHHHI", 0, 1, 0, LOCAL_PORT, 0, 0))

    def test_cancel(self) -> None:
        """
        Cancelling stops the retries and closes the socket.
        """
        n = Network()
        n.gateway.ignore = 100
        d = NatPmpMapper(n.client, GATEWAY).addMapping(CLIENT, LOCAL_PORT, 3600)
        n.net.run(0.3)
        d.cancel()
        self.failureResultOf(d)
        n.net.run(10)
        self.assertEqual(len(n.gateway.requests), 2)
        self.assertEqual(n.clock.getDelayedCalls(), [])
        self.assertEqual(n.client.ports, {})


class PcpTests(SynchronousTestCase):
    """
    L{PcpMapper}: RFC 6887 MAP.
    """

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IPortMapper, PcpMapper(Clock(), GATEWAY)))

    def test_mapping(self) -> None:
        """
        One MAP request carrying our address (IPv4-mapped), the nonce, UDP, the local port
        suggested as the external one; the nonce is kept and used by the deletion.
        """
        n = Network()
        nonces = iter([bytes(range(1, 13)), bytes(12)])
        mapper = PcpMapper(n.client, GATEWAY, randbytes=lambda size: next(nonces))
        mapping = n.outcome(mapper.addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertEqual(mapping, Mapping(EXTERNAL, LOCAL_PORT + 1, 3600, "pcp"))
        request = n.gateway.requests[0][0]
        self.assertEqual(len(request), 60)
        self.assertEqual(request[:4], b"\x02\x01\x00\x00")
        self.assertEqual(request[24:36], bytes(range(1, 13)))
        self.assertEqual(mapper.nonceFor(CLIENT, LOCAL_PORT), bytes(range(1, 13)))
        self.assertIsNone(n.outcome(mapper.deleteMapping(CLIENT, LOCAL_PORT)))
        self.assertEqual(n.gateway.requests[1][0][24:36], bytes(range(1, 13)), "section 15: the same nonce")
        self.assertIsNone(mapper.nonceFor(CLIENT, LOCAL_PORT))

    def test_deleteWithoutNonceRefused(self) -> None:
        """
        A mapper that did not make the mapping sends a fresh nonce, which the server refuses;
        given the nonce, it deletes.
        """
        n = Network()
        first = PcpMapper(n.client, GATEWAY)
        n.outcome(first.addMapping(CLIENT, LOCAL_PORT, 3600))
        other = PcpMapper(n.client, GATEWAY)
        failure = n.outcome(other.deleteMapping(CLIENT, LOCAL_PORT))
        failure.trap(PortMapError)
        self.assertEqual(str(failure.value), f"pcp: gateway {GATEWAY} refused the deletion: 2 not authorized")
        nonce = first.nonceFor(CLIENT, LOCAL_PORT)
        assert nonce is not None
        other.setNonce(CLIENT, LOCAL_PORT, nonce)
        self.assertIsNone(n.outcome(other.deleteMapping(CLIENT, LOCAL_PORT)))

    def test_wrongNonceIgnored(self) -> None:
        """
        An answer that does not echo our nonce is not ours; the real one still counts.
        """
        n = Network()
        n.gateway.forgeFirst = True
        mapping = n.outcome(PcpMapper(n.client, GATEWAY).addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertEqual(mapping.protocol, "pcp")
        self.assertEqual(len(n.gateway.requests), 2, "the forged answer was ignored, the request resent")

    def test_natpmpOnlyGateway(self) -> None:
        """
        A NAT-PMP gateway answers "unsupported version" at once: no retries, one line.
        """
        n = Network(pcp=False)
        failure = n.outcome(PcpMapper(n.client, GATEWAY).addMapping(CLIENT, LOCAL_PORT, 3600))
        failure.trap(PortMapError)
        self.assertEqual(str(failure.value), f"pcp: gateway {GATEWAY} speaks only version 0 (NAT-PMP), not PCP")
        self.assertEqual(len(n.gateway.requests), 1)

    def test_refusal(self) -> None:
        n = Network()
        n.gateway.result = 8
        failure = n.outcome(PcpMapper(n.client, GATEWAY).addMapping(CLIENT, LOCAL_PORT, 3600))
        failure.trap(PortMapError)
        self.assertEqual(str(failure.value), f"pcp: gateway {GATEWAY} refused the mapping: 8 no resources")


# --- UPnP ---------------------------------------------------------------------------------

LOCATION = f"http://{GATEWAY}:5000/rootDesc.xml"
CONTROL = f"http://{GATEWAY}:5000/ctl/IPConn"

DESCRIPTION = f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL>
</service></serviceList></device></deviceList></device></deviceList></device></root>
""".encode()


def soapAnswer(action: str, **values: str) -> bytes:
    args = "".join(f"<{k}>{v}</{k}>" for k, v in values.items())
    return (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        f'<u:{action}Response xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">{args}'
        f"</u:{action}Response></s:Body></s:Envelope>"
    ).encode()


def soapFault(code: int, description: str) -> bytes:
    return (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
        '<UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
        f"<errorCode>{code}</errorCode><errorDescription>{description}</errorDescription>"
        "</UPnPError></detail></s:Fault></s:Body></s:Envelope>"
    ).encode()


class FakeSsdp(DatagramProtocol):
    """
    The router's SSDP responder: answers M-SEARCHes for a WANIPConnection:1 with C{location}.
    """

    def __init__(self, locations: list[str]) -> None:
        self.locations = locations
        self.searches: list[bytes] = []

    def startProtocol(self) -> None:
        self.transport.joinGroup(igd.SSDP_GROUP)  # type: ignore[union-attr]

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.searches.append(data)
        if b"ST: urn:schemas-upnp-org:service:WANIPConnection:1\r\n" not in data:
            return
        for location in self.locations:
            answer = (
                "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
                "ST: urn:schemas-upnp-org:service:WANIPConnection:1\r\n"
                f"LOCATION: {location}\r\nSERVER: fake/1 UPnP/1.1 fake/1\r\n\r\n"
            )
            self.transport.write(answer.encode(), addr)  # type: ignore[union-attr]


class FakeIgd:
    """
    The router's HTTP side: the description, and SOAP answers by action.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str, dict[str, str], bytes | None]] = []
        self.answers: dict[str, tuple[int, bytes]] = {
            "AddPortMapping": (200, soapAnswer("AddPortMapping")),
            "GetExternalIPAddress": (200, soapAnswer("GetExternalIPAddress", NewExternalIPAddress=EXTERNAL)),
            "DeletePortMapping": (200, soapAnswer("DeletePortMapping")),
        }

    def __call__(self, method: bytes, url: str, headers: dict[str, str], body: bytes | None) -> Deferred[tuple[int, bytes]]:
        self.calls.append((method, url, headers, body))
        if method == b"GET" and url == LOCATION:
            return succeed((200, DESCRIPTION))
        if method == b"POST" and url == CONTROL:
            action = headers["SOAPAction"].strip('"').rpartition("#")[2]
            return succeed(self.answers[action])
        return succeed((404, b"not found"))

    def actions(self) -> list[tuple[str, dict[str, str]]]:
        """
        The SOAP calls made, each as (action, arguments in order), parsed back from the body.
        """
        made = []
        for method, _, _, body in self.calls:
            if method == b"POST" and body is not None:
                call = parse_xml(body, 65536).find("Body")[0]  # type: ignore[index]
                made.append((call.tag, {child.tag: child.text or "" for child in call}))
        return made


class UpnpTests(SynchronousTestCase):
    """
    L{UpnpMapper}: SSDP, description, the SOAP calls of RFC 6081 section 5.3.3.
    """

    def setUp(self) -> None:
        self.n = Network()
        self.ssdp = FakeSsdp([LOCATION])
        self.n.router.listenMulticast(igd.SSDP_PORT, self.ssdp)
        self.igd = FakeIgd()
        self.mapper = UpnpMapper(self.n.client, http=self.igd)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IPortMapper, self.mapper))

    def test_mapping(self) -> None:
        """
        X-UPNP-04: AddPortMapping with exactly the RFC's arguments; X-UPNP-07a: then
        GetExternalIPAddress; the mapping is the local port on that address, lease 0.
        """
        mapping = self.n.outcome(self.mapper.addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertEqual(mapping, Mapping(EXTERNAL, LOCAL_PORT, 0, "upnp"))
        self.assertEqual(len(self.ssdp.searches), 3, "one M-SEARCH per service type")
        self.assertEqual(
            self.igd.actions(),
            [
                (
                    "AddPortMapping",
                    {
                        "NewRemoteHost": "",
                        "NewExternalPort": str(LOCAL_PORT),
                        "NewProtocol": "UDP",
                        "NewInternalPort": str(LOCAL_PORT),
                        "NewInternalClient": CLIENT,
                        "NewEnabled": "1",
                        "NewPortMappingDescription": "TEREDO",
                        "NewLeaseDuration": "0",
                    },
                ),
                ("GetExternalIPAddress", {}),
            ],
        )
        self.assertEqual(self.igd.calls[1][2]["SOAPAction"], '"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"')
        self.assertEqual(self.n.clock.getDelayedCalls(), [])

    def test_delete(self) -> None:
        """
        X-UPNP-13b: DeletePortMapping("", port, UDP); the service found is reused.
        """
        self.n.outcome(self.mapper.addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertIsNone(self.n.outcome(self.mapper.deleteMapping(CLIENT, LOCAL_PORT)))
        self.assertEqual(
            self.igd.actions()[-1],
            ("DeletePortMapping", {"NewRemoteHost": "", "NewExternalPort": str(LOCAL_PORT), "NewProtocol": "UDP"}),
        )
        self.assertEqual(len(self.ssdp.searches), 3, "no second search")

    def test_deleteAbsent(self) -> None:
        """
        714 NoSuchEntryInArray: already gone, which is what deletion wanted.
        """
        self.igd.answers["DeletePortMapping"] = (500, soapFault(714, "NoSuchEntryInArray"))
        self.assertIsNone(self.n.outcome(self.mapper.deleteMapping(CLIENT, LOCAL_PORT)))

    def test_addRefused(self) -> None:
        """
        X-UPNP-05a: a refused AddPortMapping is one line with the device's code.
        """
        self.igd.answers["AddPortMapping"] = (500, soapFault(718, "ConflictInMappingEntry"))
        failure = self.n.outcome(self.mapper.addMapping(CLIENT, LOCAL_PORT, 3600))
        failure.trap(PortMapError)
        self.assertEqual(str(failure.value), "upnp: AddPortMapping refused: 718 ConflictInMappingEntry")

    def test_externalAddressFails(self) -> None:
        """
        X-UPNP-07b: GetExternalIPAddress failing (here: not an address) deletes the mapping.
        """
        self.igd.answers["GetExternalIPAddress"] = (200, soapAnswer("GetExternalIPAddress", NewExternalIPAddress="<b>x"))
        failure = self.n.outcome(self.mapper.addMapping(CLIENT, LOCAL_PORT, 3600))
        failure.trap(PortMapError)
        self.assertTrue(str(failure.value).startswith("upnp: GetExternalIPAddress failed, mapping removed"))
        self.assertEqual([a for a, _ in self.igd.actions()], ["AddPortMapping", "GetExternalIPAddress", "DeletePortMapping"])

    def test_hostileLocationIgnored(self) -> None:
        """
        An SSDP answer pointing anywhere but the answering host is not followed.
        """
        self.ssdp.locations[:] = ["http://203.0.113.9/evil.xml", "file:///etc/passwd"]
        failure = self.n.outcome(self.mapper.addMapping(CLIENT, LOCAL_PORT, 3600))
        failure.trap(PortMapError)
        self.assertEqual(str(failure.value), "upnp: ssdp search: no answer after 3 tries")
        self.assertEqual(self.igd.calls, [])
        self.assertEqual(self.n.clock.getDelayedCalls(), [])

    def test_hostileDescription(self) -> None:
        """
        A description with an entity bomb: one line, nothing expanded.
        """
        bomb = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><root>&b;</root>'

        def http(method: bytes, url: str, headers: dict[str, str], body: bytes | None) -> Deferred[tuple[int, bytes]]:
            return succeed((200, bomb))

        mapper = UpnpMapper(self.n.client, http=http)
        failure = self.n.outcome(mapper.addMapping(CLIENT, LOCAL_PORT, 3600))
        failure.trap(PortMapError)
        self.assertEqual(str(failure.value), f"upnp: description {LOCATION}: xml with a document type or entity")

    def test_httpError(self) -> None:
        """
        A failing HTTP client (refused connection, time-out) is one line too.
        """

        def http(method: bytes, url: str, headers: dict[str, str], body: bytes | None) -> Deferred[tuple[int, bytes]]:
            d: Deferred[tuple[int, bytes]] = Deferred()
            d.errback(ConnectionRefusedError("Connection refused"))
            return d

        failure = self.n.outcome(UpnpMapper(self.n.client, http=http).addMapping(CLIENT, LOCAL_PORT, 3600))
        failure.trap(PortMapError)
        self.assertEqual(str(failure.value), f"upnp: description {LOCATION}: ConnectionRefusedError: Connection refused")


class AutoMapperTests(SynchronousTestCase):
    """
    L{AutoMapper}: PCP, then NAT-PMP, then UPnP; the first that maps is kept.
    """

    def mappers(self, n: Network, igdHttp: FakeIgd | None = None) -> AutoMapper:
        return AutoMapper(
            [PcpMapper(n.client, GATEWAY), NatPmpMapper(n.client, GATEWAY), UpnpMapper(n.client, http=igdHttp or FakeIgd())]
        )

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IPortMapper, self.mappers(Network())))

    def test_pcpFirst(self) -> None:
        n = Network()
        auto = self.mappers(n)
        mapping = n.outcome(auto.addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertEqual(mapping.protocol, "pcp")
        self.assertIs(auto.active, auto.mappers[0])
        self.assertEqual(len(n.gateway.requests), 1)

    def test_natpmpSecond(self) -> None:
        """
        A NAT-PMP-only gateway: PCP fails at once, NAT-PMP maps; deletion goes to NAT-PMP.
        """
        n = Network(pcp=False)
        auto = self.mappers(n)
        mapping = n.outcome(auto.addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertEqual(mapping.protocol, "natpmp")
        self.assertEqual([data[0] for data, _, _ in n.gateway.requests], [2, 0, 0])
        self.assertIsNone(n.outcome(auto.deleteMapping(CLIENT, LOCAL_PORT)))
        self.assertEqual(n.gateway.requests[-1][0][:2], b"\x00\x01")

    def test_upnpLast(self) -> None:
        """
        No PCP or NAT-PMP (nothing on port 5351): UPnP maps.
        """
        n = Network(gatewayListens=False)
        n.router.listenMulticast(igd.SSDP_PORT, FakeSsdp([LOCATION]))
        auto = self.mappers(n)
        mapping = n.outcome(auto.addMapping(CLIENT, LOCAL_PORT, 3600))
        self.assertEqual(mapping.protocol, "upnp")

    def test_nothingWorks(self) -> None:
        """
        One line naming every protocol's reason, in the order tried.
        """
        n = Network(gatewayListens=False)
        failure = n.outcome(self.mappers(n).addMapping(CLIENT, LOCAL_PORT, 3600))
        failure.trap(PortMapError)
        text = str(failure.value)
        self.assertNotIn("\n", text)
        self.assertTrue(text.startswith("no port mapping: pcp: "), text)
        self.assertLess(text.index("pcp:"), text.index("natpmp:"))
        self.assertLess(text.index("natpmp:"), text.index("upnp:"))
        self.assertEqual(n.clock.getDelayedCalls(), [])
