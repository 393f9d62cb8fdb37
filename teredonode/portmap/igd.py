"""
UPnP Internet Gateway Device messages: SSDP search, the device description, SOAP envelopes.
Bytes and XML <-> values, nothing else.

Everything here is read from whatever answers on the LAN, so every parser is written for
hostile input: sizes are bounded by the caller's limits and here, XML is parsed by
L{parse_xml} (expat with document type declarations, entities and external references
refused, depth and element count bounded), URLs must point back at the host that answered,
and the only exception a parser raises is L{ParseError}.

The SOAP calls are those RFC 6081 section 5.3.3 names (X-UPNP-04, -07, -13): AddPortMapping,
GetExternalIPAddress and DeletePortMapping of WANIPConnection:1 (sections 2.4.16-2.4.18),
which WANIPConnection:2 and WANPPPConnection:1 offer with the same arguments.
"""

from __future__ import annotations

import ipaddress
import xml.parsers.expat
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element, TreeBuilder
from xml.sax.saxutils import escape

from teredonode.wire.errors import ParseError

__all__ = [
    "SSDP_GROUP",
    "SSDP_PORT",
    "SERVICE_TYPES",
    "TEREDO_DESCRIPTION",
    "Fault",
    "Service",
    "msearch",
    "parse_search_response",
    "parse_description",
    "parse_xml",
    "soap_request",
    "add_port_mapping",
    "delete_port_mapping",
    "get_external_ip_address",
    "parse_soap_response",
]

SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900

#: The services that can map a port, the newest first: a device offering several is asked
#: through the first of these it lists.
SERVICE_TYPES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)

#: NewPortMappingDescription of the Teredo mapping (X-UPNP-04).
TEREDO_DESCRIPTION = "TEREDO"

#: Bounds on a parsed XML document (its size is bounded by the caller's body limit).
MAX_XML_DEPTH = 32
MAX_XML_ELEMENTS = 4096
#: The largest SSDP answer considered (one datagram; real ones are ~300 bytes).
MAX_SSDP_SIZE = 2048

_ENVELOPE_NS = "http://schemas.xmlsoap.org/soap/envelope/"
_ENCODING_NS = "http://schemas.xmlsoap.org/soap/encoding/"
_QUOTE = {'"': "&quot;"}


# --- SSDP ---------------------------------------------------------------------------------


def msearch(search_target: str, mx: int = 1) -> bytes:
    """
    An SSDP M-SEARCH for C{search_target} (UPnP Device Architecture 1.0 section 1.2.2); the
    devices answer within C{mx} seconds.
    """
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {SSDP_GROUP}:{SSDP_PORT}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {mx}\r\n"
        f"ST: {search_target}\r\n"
        "\r\n"
    ).encode("ascii")


def parse_search_response(data: bytes, source: str) -> str:
    """
    The description URL (LOCATION) of a unicast answer to an M-SEARCH that came from
    C{source}.  The URL must be plain HTTP on C{source} itself: a device describes itself,
    and a LAN host must not make us fetch from anywhere else.
    """
    if len(data) > MAX_SSDP_SIZE:
        raise ParseError("ssdp answer too large")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ParseError("ssdp answer not ascii") from None
    lines = text.split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
        raise ParseError("ssdp answer not HTTP 200")
    location = None
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "location":
            location = value.strip()
    if not location:
        raise ParseError("ssdp answer without location")
    _same_host(location, source)
    return location


def _same_host(url: str, host: str) -> tuple[str, int]:
    """
    Check that C{url} is C{http://host[:port]/...}; return its host and port.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        raise ParseError("malformed url") from None
    if parts.scheme != "http" or parts.username or parts.password:
        raise ParseError("url not plain http")
    if parts.hostname != host:
        raise ParseError("url not on the answering host")
    return host, port


# --- XML ----------------------------------------------------------------------------------


class _Refused(Exception):
    """
    Raised from inside expat's callbacks to stop the parse.
    """


def parse_xml(data: bytes, limit: int) -> Element:
    """
    Parse an XML document of at most C{limit} bytes into an element tree whose tags are
    local names (namespaces dropped: UPnP documents are told apart by their content).

    Refused, as L{ParseError}: a document type declaration (so no entity can be declared,
    and with it every entity-expansion attack), any external reference, more than
    L{MAX_XML_DEPTH} nested elements or L{MAX_XML_ELEMENTS} elements.
    """
    if len(data) > limit:
        raise ParseError("xml too large")
    builder = TreeBuilder()
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    state = {"depth": 0, "count": 0}

    def refuse(*_: Any) -> None:
        raise _Refused("xml with a document type or entity")

    def refuse_external(*_: Any) -> int:
        raise _Refused("xml with an external reference")

    def start(name: str, attributes: dict[str, str]) -> None:
        state["depth"] += 1
        state["count"] += 1
        if state["depth"] > MAX_XML_DEPTH or state["count"] > MAX_XML_ELEMENTS:
            raise _Refused("xml too deep or too many elements")
        builder.start(name.rpartition(" ")[2], {})

    def end(name: str) -> None:
        state["depth"] -= 1
        builder.end(name.rpartition(" ")[2])

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.NotationDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse_external
    parser.SkippedEntityHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        root = builder.close()
    except _Refused as e:
        raise ParseError(str(e)) from None
    except (xml.parsers.expat.ExpatError, ValueError, LookupError, AssertionError, RecursionError):
        raise ParseError("malformed xml") from None
    return root


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


# --- description --------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """
    Where to send the SOAP calls: the service's type (its actions' namespace) and control URL.
    """

    service_type: str
    control_url: str


def parse_description(data: bytes, location: str, limit: int) -> Service:
    """
    The port-mapping service of the device described by C{data}, fetched from C{location}:
    the first of L{SERVICE_TYPES} it offers, anywhere in its tree of embedded devices.  The
    control URL is resolved against C{URLBase} when present (UDA 1.0), else the location,
    and must stay on the location's host.
    """
    root = parse_xml(data, limit)
    if root.tag != "root":
        raise ParseError("not a upnp device description")
    host = urlsplit(location).hostname or ""
    base = _text(root.find("URLBase")) or location
    offered: dict[str, str] = {}
    for service in root.iter("service"):
        kind = _text(service.find("serviceType"))
        control = _text(service.find("controlURL"))
        if kind in SERVICE_TYPES and control and kind not in offered:
            offered[kind] = control
    for kind in SERVICE_TYPES:
        if kind in offered:
            url = urljoin(base, offered[kind])
            _same_host(url, host)
            return Service(kind, url)
    raise ParseError("no wan connection service")


# --- SOAP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """
    A SOAP fault: the action was refused (UPnP error code, e.g. 718 ConflictInMappingEntry).
    """

    code: int
    description: str

    def __str__(self) -> str:
        return f"{self.code} {self.description}".strip()


def soap_request(service_type: str, action: str, arguments: Sequence[tuple[str, str]]) -> tuple[dict[str, str], bytes]:
    """
    The headers and body of a SOAP call of C{action} (UDA 1.0 section 3.2.1); argument
    values are escaped, in the order given (the service description's order, which some
    devices require).
    """
    args = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in arguments)
    body = (
        '<?xml version="1.0"?>\r\n'
        f'<s:Envelope xmlns:s="{_ENVELOPE_NS}" s:encodingStyle="{_ENCODING_NS}">'
        f'<s:Body><u:{action} xmlns:u="{escape(service_type, _QUOTE)}">{args}</u:{action}></s:Body>'
        "</s:Envelope>\r\n"
    ).encode("utf-8")
    headers = {
        "Content-Type": 'text/xml; charset="utf-8"',
        "SOAPAction": f'"{service_type}#{action}"',
    }
    return headers, body


def add_port_mapping(local_address: str, local_port: int) -> tuple[str, list[tuple[str, str]]]:
    """
    AddPortMapping exactly as X-UPNP-04 (RFC 6081 section 5.3.3) gives it: any remote host,
    external port = internal port = the local port, UDP, to the local address, enabled,
    described "TEREDO", lease 0 (until deleted).
    """
    return "AddPortMapping", [
        ("NewRemoteHost", ""),
        ("NewExternalPort", str(local_port)),
        ("NewProtocol", "UDP"),
        ("NewInternalPort", str(local_port)),
        ("NewInternalClient", local_address),
        ("NewEnabled", "1"),
        ("NewPortMappingDescription", TEREDO_DESCRIPTION),
        ("NewLeaseDuration", "0"),
    ]


def delete_port_mapping(external_port: int) -> tuple[str, list[tuple[str, str]]]:
    """
    DeletePortMapping as X-UPNP-13 (section 5.3.5.1) gives it: "", the mapped port, UDP.
    """
    return "DeletePortMapping", [
        ("NewRemoteHost", ""),
        ("NewExternalPort", str(external_port)),
        ("NewProtocol", "UDP"),
    ]


def get_external_ip_address() -> tuple[str, list[tuple[str, str]]]:
    """
    GetExternalIPAddress (X-UPNP-07): no arguments, one result, NewExternalIPAddress.
    """
    return "GetExternalIPAddress", []


def parse_soap_response(data: bytes, action: str, limit: int) -> dict[str, str] | Fault:
    """
    The output arguments of C{action}'s response (name -> text), or the L{Fault} the device
    answered instead.
    """
    root = parse_xml(data, limit)
    body = root.find("Body") if root.tag == "Envelope" else None
    if body is None:
        raise ParseError("not a soap envelope")
    answer = body.find(f"{action}Response")
    if answer is not None:
        return {child.tag: _text(child) for child in answer}
    fault = body.find("Fault")
    if fault is not None:
        error = fault.find("detail/UPnPError")
        code = _text(error.find("errorCode")) if error is not None else ""
        text = _text(error.find("errorDescription")) if error is not None else _text(fault.find("faultstring"))
        if not code.isdigit() or len(code) > 6:
            raise ParseError("soap fault without a upnp error code")
        return Fault(int(code), _printable(text))
    raise ParseError("soap response without the action's answer")


def _printable(text: str, limit: int = 80) -> str:
    """
    A device's text, safe for one line of a log or terminal.
    """
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def ipv4_text(text: str) -> str:
    """
    A dotted-quad IPv4 address as a device returned it, or L{ParseError}.
    """
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ParseError("not an ipv4 address") from None
