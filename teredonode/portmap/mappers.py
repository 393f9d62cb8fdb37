# -*- test-case-name: tests.protocol.test_portmap -*-
"""
The port mappers: thin Twisted protocols around the pure codecs of L{natpmp}, L{pcp} and
L{igd}, each an L{IPortMapper}.

Everything they need from the world is injected: the reactor (C{IReactorUDP},
C{IReactorMulticast} and C{IReactorTime}: the real one, or a L{teredonode.testing.FakeHost}),
the gateway's address, and for UPnP the HTTP client.  Every wait is a timer on that
reactor, every retry count is bounded, every failure is one L{PortMapError} line that starts
with the protocol's name; whatever a datagram or an HTTP body holds, the worst it can do is
be ignored (datagrams: the real answer may still come) or end the attempt with that line.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from io import BytesIO
from typing import Any

from twisted.web.client import Agent
from twisted.web.client import FileBodyProducer
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.internet.defer import CancelledError, Deferred, fail, inlineCallbacks
from twisted.internet.error import TimeoutError as TwistedTimeoutError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from teredonode.interfaces import Endpoint, IPortMapper
from teredonode.portmap import igd, natpmp, pcp
from teredonode.portmap.base import Mapping, PortMapError
from teredonode.wire.errors import ParseError

__all__ = [
    "NatPmpMapper",
    "PcpMapper",
    "UpnpMapper",
    "AutoMapper",
    "AgentHttp",
    "HttpRequest",
    "makeMapper",
]

#: NAT-PMP's first retransmission time-out, doubled on each retry (RFC 6886 section 3.1);
#: PCP uses the same schedule (see L{PcpMapper}).
INITIAL_TIMEOUT = 0.25
#: Requests sent before giving up: 0.25 + 0.5 + 1 + 2 = 3.75 s of waiting in all.
ATTEMPTS = 4
#: SSDP: seconds to wait for an answer to each round of M-SEARCHes (their MX is 1), rounds.
SEARCH_TIMEOUT = 1.5
SEARCH_ATTEMPTS = 3
#: Seconds for one HTTP exchange with the IGD (connect, send, the whole body).
HTTP_TIMEOUT = 5.0
#: The largest description or SOAP body read (miniupnpd's description is ~4 KiB).
BODY_LIMIT = 64 * 1024
#: PCP nonces remembered for deletion (section 15: a delete must carry the mapping's nonce).
MAX_NONCES = 64

#: C{(method, url, headers, body) -> Deferred[(status, body)]}: the HTTP seam of UPnP.
HttpRequest = Callable[[bytes, str, "dict[str, str]", "bytes | None"], "Deferred[tuple[int, bytes]]"]


def _oneLine(failure: Failure | BaseException) -> str:
    """
    A failure as a short phrase for a one-line error: never a traceback, never a newline.
    """
    error = failure.value if isinstance(failure, Failure) else failure
    if isinstance(error, (TwistedTimeoutError, CancelledError)):
        return "timed out"
    text = str(error).splitlines()[0] if str(error) else ""
    text = text[:120]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Exchange(DatagramProtocol):
    """
    Send C{requests} (each C{(data, destination)}) and resend them on a doubling timer until
    C{accept} returns a value for a datagram, C{attempts} rounds have gone unanswered, or the
    destination is unreachable (ICMP, seen on the connected socket).

    C{accept(data, source)} returns the result, C{None} to keep waiting (not ours, or not
    parseable: a forged or garbled datagram must not end a good exchange), or raises
    L{PortMapError} to end it (a refusal).  With C{peer}, the socket is connected to it, so
    only its datagrams arrive, and the source is checked again here (RFC 6886 section 3.1:
    the client "MUST check the source IP address").
    """

    def __init__(
        self,
        reactor: Any,
        requests: Sequence[tuple[bytes, Endpoint]],
        accept: Callable[[bytes, Endpoint], object | None],
        timeout: float,
        attempts: int,
        what: str,
        peer: Endpoint | None,
        backoff: float = 2.0,
    ) -> None:
        self._reactor = reactor
        self._requests = requests
        self._accept = accept
        self._timeout = timeout
        self._attempts = attempts
        self._what = what
        self._peer = peer
        self._backoff = backoff
        self._tries = 0
        self._done = False
        self._timer: IDelayedCall | None = None
        self._port: Any = None
        self.result: Deferred[Any] = Deferred(lambda _: self._finish(None))

    def run(self, bindAddress: str, multicast: bool = False) -> Deferred[Any]:
        try:
            if multicast:
                self._port = self._reactor.listenMulticast(0, self, interface=bindAddress)
            else:
                self._port = self._reactor.listenUDP(0, self, interface=bindAddress)
        except Exception as e:
            self.result.errback(PortMapError(f"{self._what}: cannot open a socket: {_oneLine(e)}"))
        return self.result

    def startProtocol(self) -> None:
        assert self.transport is not None
        if self._peer is not None:
            self.transport.connect(*self._peer)
        else:
            self.transport.setTTL(2)  # type: ignore[attr-defined]  # UDA 1.1 section 1.3.2
        self._reactor.callLater(0, self._send)

    def _send(self) -> None:
        self._timer = None
        if self._done or self.transport is None:
            return
        if self._tries >= self._attempts:
            self._finish(PortMapError(f"{self._what}: no answer after {self._attempts} tries"))
            return
        delay = self._timeout * self._backoff**self._tries
        self._tries += 1
        assert self.transport is not None
        try:
            for data, destination in self._requests:
                self.transport.write(data, None if self._peer is not None else destination)
        except Exception as e:
            self._finish(PortMapError(f"{self._what}: cannot send: {_oneLine(e)}"))
            return
        if self._done:  # the write saw ICMP port unreachable (connectionRefused)
            return
        self._timer = self._reactor.callLater(delay, self._send)

    def datagramReceived(self, data: bytes, addr: Endpoint) -> None:
        if self._done or (self._peer is not None and tuple(addr) != self._peer):
            return
        try:
            value = self._accept(data, addr)
        except ParseError:
            return
        except PortMapError as e:
            self._finish(e)
            return
        if value is not None:
            self._finish(value)

    def connectionRefused(self) -> None:
        self._finish(PortMapError(f"{self._what}: {self._unreachable()}"))

    def stopProtocol(self) -> None:
        """
        The socket closed under us: with epoll, an ICMP port unreachable on a connected UDP
        socket can show as an error event that closes the port rather than as
        C{connectionRefused}.
        """
        if not self._done:
            self._port = None
            self._finish(PortMapError(f"{self._what}: {self._unreachable()}"))

    def _unreachable(self) -> str:
        return f"port {self._peer[1]} unreachable" if self._peer is not None else "socket closed"

    def _finish(self, outcome: object) -> None:
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._port is not None:
            port, self._port = self._port, None
            port.stopListening()
        if self.result.called:
            return
        if isinstance(outcome, BaseException):
            self.result.errback(outcome)
        elif outcome is not None:  # None: cancelled, the Deferred errbacks by itself
            self.result.callback(outcome)


class _GatewayMapper:
    """
    What NAT-PMP and PCP share: one UDP request/response with the gateway's port 5351.
    """

    name = ""

    def __init__(
        self,
        reactor: Any,
        gateway: str,
        initialTimeout: float = INITIAL_TIMEOUT,
        attempts: int = ATTEMPTS,
        port: int = natpmp.PORT,
    ) -> None:
        if not 1 <= attempts <= 10:
            raise ValueError("attempts must be 1..10")
        self._reactor = reactor
        self.gateway = gateway
        self._port = port
        self._initialTimeout = initialTimeout
        self._attempts = attempts

    def _ask(self, request: bytes, accept: Callable[[bytes, Endpoint], object | None], bindAddress: str) -> Deferred[Any]:
        exchange = _Exchange(
            self._reactor,
            [(request, (self.gateway, self._port))],
            accept,
            self._initialTimeout,
            self._attempts,
            f"{self.name}: gateway {self.gateway}",
            (self.gateway, self._port),
        )
        return exchange.run(bindAddress)


@implementer(IPortMapper)
class NatPmpMapper(_GatewayMapper):
    """
    NAT-PMP (RFC 6886): the external address (opcode 0), then the UDP mapping (opcode 1)
    with the local port suggested as the external one.  The socket is bound to the local
    address, since NAT-PMP maps the request's source address (section 3.3).
    """

    name = "natpmp"

    @inlineCallbacks
    def addMapping(self, localAddress: str, localPort: int, lifetime: int) -> Generator[Deferred[Any], Any, Mapping]:
        address = yield self._ask(natpmp.external_address_request(), self._acceptAddress, localAddress)
        mapped = yield self._ask(
            natpmp.map_request(localPort, localPort, lifetime), self._acceptMap(localPort, "mapping"), localAddress
        )
        return Mapping(address, mapped.external_port, mapped.lifetime, self.name)

    @inlineCallbacks
    def deleteMapping(self, localAddress: str, localPort: int) -> Generator[Deferred[Any], Any, None]:
        yield self._ask(natpmp.map_request(localPort, 0, 0), self._acceptMap(localPort, "deletion"), localAddress)

    def _acceptAddress(self, data: bytes, source: Endpoint) -> str | None:
        answer = natpmp.decode_response(data)
        if not isinstance(answer, natpmp.ExternalAddressResponse):
            return None
        if answer.result:
            raise PortMapError(f"natpmp: gateway {self.gateway} refused the address request: {natpmp.result_text(answer.result)}")
        if answer.address == "0.0.0.0":  # section 3.2: the gateway has no address yet
            raise PortMapError(f"natpmp: gateway {self.gateway} has no external address")
        return answer.address

    def _acceptMap(self, localPort: int, what: str) -> Callable[[bytes, Endpoint], object | None]:
        def accept(data: bytes, source: Endpoint) -> object | None:
            answer = natpmp.decode_response(data)
            if not isinstance(answer, natpmp.MapResponse) or answer.opcode != natpmp.OP_MAP_UDP:
                return None
            if answer.result:
                raise PortMapError(f"natpmp: gateway {self.gateway} refused the {what}: {natpmp.result_text(answer.result)}")
            if answer.internal_port != localPort:
                return None
            return answer

        return accept


@implementer(IPortMapper)
class PcpMapper(_GatewayMapper):
    """
    PCP (RFC 6887) MAP requests, each with a fresh random nonce (section 11.1) that the
    response must echo, which is what makes a forged response unlikely to be accepted
    (NAT-PMP has no such check).  The nonce is kept for the deletion, which section 15
    requires to carry it; a process that did not make the mapping must be given it
    (L{setNonce}), or the server refuses (miniupnpd answers "not authorized").

    Retransmission: section 8.1.1 starts at 3 s and never gives up; a client that must
    qualify soon, and an operator's check, need a bounded wait, so PCP here uses NAT-PMP's
    schedule (0.25 s, doubling, L{ATTEMPTS} tries).  A NAT-PMP-only gateway answers at once
    with "unsupported version" (section 9), which ends the attempt without waiting.
    """

    name = "pcp"

    def __init__(self, reactor: Any, gateway: str, *args: Any, randbytes: Callable[[int], bytes] = os.urandom, **kw: Any) -> None:
        super().__init__(reactor, gateway, *args, **kw)
        self._randbytes = randbytes
        self._nonces: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    @inlineCallbacks
    def addMapping(self, localAddress: str, localPort: int, lifetime: int) -> Generator[Deferred[Any], Any, Mapping]:
        nonce = self._randbytes(pcp.NONCE_SIZE)
        request = pcp.map_request(nonce, localAddress, localPort, lifetime, external_port=localPort)
        answer = yield self._ask(request, self._accept(nonce, localPort, "mapping"), localAddress)
        self._nonces[(localAddress, localPort)] = nonce
        self._nonces.move_to_end((localAddress, localPort))
        while len(self._nonces) > MAX_NONCES:
            self._nonces.popitem(last=False)
        return Mapping(answer.external_address, answer.external_port, answer.lifetime, self.name)

    @inlineCallbacks
    def deleteMapping(self, localAddress: str, localPort: int) -> Generator[Deferred[Any], Any, None]:
        nonce = self._nonces.get((localAddress, localPort)) or self._randbytes(pcp.NONCE_SIZE)
        request = pcp.map_request(nonce, localAddress, localPort, 0)
        yield self._ask(request, self._accept(nonce, localPort, "deletion"), localAddress)
        self._nonces.pop((localAddress, localPort), None)

    def nonceFor(self, localAddress: str, localPort: int) -> bytes | None:
        """
        The nonce of the mapping made for C{localAddress:localPort}, if this mapper made it.
        """
        return self._nonces.get((localAddress, localPort))

    def setNonce(self, localAddress: str, localPort: int, nonce: bytes) -> None:
        """
        Use C{nonce} to delete the mapping of C{localAddress:localPort}: the mapping was made
        by another process (the command line's C{--nonce}), which printed it.
        """
        if len(nonce) != pcp.NONCE_SIZE:
            raise PortMapError(f"pcp: a nonce is {pcp.NONCE_SIZE} bytes")
        self._nonces[(localAddress, localPort)] = nonce

    def _accept(self, nonce: bytes, localPort: int, what: str) -> Callable[[bytes, Endpoint], object | None]:
        def accept(data: bytes, source: Endpoint) -> object | None:
            answer = pcp.decode_response(data)
            if isinstance(answer, pcp.UnsupportedVersion):
                raise PortMapError(f"pcp: gateway {self.gateway} speaks only version {answer.version} (NAT-PMP), not PCP")
            if answer.nonce and answer.nonce != nonce:
                return None
            if answer.result:
                raise PortMapError(f"pcp: gateway {self.gateway} refused the {what}: {pcp.result_text(answer.result)}")
            if answer.protocol != pcp.PROTO_UDP or answer.internal_port != localPort or not answer.nonce:
                return None
            return answer

        return accept


@implementer(IPortMapper)
class UpnpMapper:
    """
    UPnP IGD: SSDP discovery of a WANIPConnection:2/1 or WANPPPConnection:1 service, its
    description over HTTP, then the SOAP calls of RFC 6081 section 5.3.3: AddPortMapping with
    exactly X-UPNP-04's arguments, GetExternalIPAddress (X-UPNP-07a), and when that fails the
    mapping is deleted again (X-UPNP-07b, SHOULD); DeletePortMapping at the end (X-UPNP-13b).

    The mapped port is always the local port and the lease 0 (X-UPNP-04, -06): the
    C{lifetime} asked is not used.  The service found is remembered for later calls.

    @param http: the HTTP client (L{AgentHttp} by default); tests give a fake IGD.
    @ivar added: called with the mapped port as soon as AddPortMapping succeeded, before
        GetExternalIPAddress, which is when RFC 6081 section 5.3.3 sets the Persisted
        UPnP-Mapped Port (X-UPNP-06): a process that dies in between still leaves a record
        of the mapping for its successor to delete (X-UPNP-03).  Must not raise.
    """

    name = "upnp"

    def __init__(
        self,
        reactor: Any,
        http: HttpRequest | None = None,
        searchTimeout: float = SEARCH_TIMEOUT,
        searchAttempts: int = SEARCH_ATTEMPTS,
        bodyLimit: int = BODY_LIMIT,
        bindAddress: str = "",
    ) -> None:
        self._reactor = reactor
        self._http: HttpRequest = http if http is not None else AgentHttp(reactor, bodyLimit)
        self._searchTimeout = searchTimeout
        self._searchAttempts = searchAttempts
        self._bodyLimit = bodyLimit
        self._bindAddress = bindAddress
        self.service: igd.Service | None = None
        self.added: Callable[[int], None] | None = None

    def addMapping(self, localAddress: str, localPort: int, lifetime: int) -> Deferred[Mapping]:
        return self._oneError(self._add(localAddress, localPort))

    def deleteMapping(self, localAddress: str, localPort: int) -> Deferred[None]:
        return self._oneError(self._delete(localPort))

    @inlineCallbacks
    def _add(self, localAddress: str, localPort: int) -> Generator[Deferred[Any], Any, Mapping]:
        service = yield self._discover()
        yield self._call(service, *igd.add_port_mapping(localAddress, localPort))
        if self.added is not None:
            self.added(localPort)  # X-UPNP-06: the persisted copy, before GetExternalIPAddress
        try:
            answer = yield self._call(service, *igd.get_external_ip_address())
            address = igd.ipv4_text(answer.get("NewExternalIPAddress", ""))
        except (PortMapError, ParseError) as e:
            try:
                yield self._call(service, *igd.delete_port_mapping(localPort))
            except PortMapError:
                pass
            reason = e.reason if isinstance(e, ParseError) else str(e)
            raise PortMapError(f"upnp: GetExternalIPAddress failed, mapping removed: {reason}") from None
        return Mapping(address, localPort, 0, self.name)

    @inlineCallbacks
    def _delete(self, localPort: int) -> Generator[Deferred[Any], Any, None]:
        service = yield self._discover()
        try:
            yield self._call(service, *igd.delete_port_mapping(localPort))
        except _Refused as e:
            if e.fault.code != 714:  # NoSuchEntryInArray: already gone
                raise

    def _oneError(self, d: Deferred[Any]) -> Deferred[Any]:
        def convert(failure: Failure) -> Failure:
            if failure.check(PortMapError):
                return failure
            if isinstance(failure.value, ParseError):
                return Failure(PortMapError(f"upnp: {failure.value.reason}"))
            return Failure(PortMapError(f"upnp: {_oneLine(failure)}"))

        return d.addErrback(convert)

    @inlineCallbacks
    def _discover(self) -> Generator[Deferred[Any], Any, igd.Service]:
        if self.service is not None:
            return self.service
        requests = [(igd.msearch(kind), (igd.SSDP_GROUP, igd.SSDP_PORT)) for kind in igd.SERVICE_TYPES]
        exchange = _Exchange(
            self._reactor,
            requests,
            lambda data, source: igd.parse_search_response(data, source[0]),
            self._searchTimeout,
            self._searchAttempts,
            "upnp: ssdp search",
            None,
            backoff=1.0,
        )
        location = yield exchange.run(self._bindAddress, multicast=True)
        status, body = yield self._fetch(b"GET", location, {}, None, "description")
        if status != 200:
            raise PortMapError(f"upnp: description {location}: HTTP {status}")
        try:
            service = igd.parse_description(body, location, self._bodyLimit)
        except ParseError as e:
            raise PortMapError(f"upnp: description {location}: {e.reason}") from None
        self.service = service
        return service

    def _fetch(self, method: bytes, url: str, headers: dict[str, str], body: bytes | None, what: str) -> Deferred[tuple[int, bytes]]:
        def failed(failure: Failure) -> Failure:
            if failure.check(PortMapError):
                return failure
            return Failure(PortMapError(f"upnp: {what} {url}: {_oneLine(failure)}"))

        try:
            d = self._http(method, url, headers, body)
        except Exception as e:
            return fail(PortMapError(f"upnp: {what} {url}: {_oneLine(e)}"))
        return d.addErrback(failed)

    @inlineCallbacks
    def _call(self, service: igd.Service, action: str, arguments: list[tuple[str, str]]) -> Generator[Deferred[Any], Any, dict[str, str]]:
        headers, body = igd.soap_request(service.service_type, action, arguments)
        status, answer = yield self._fetch(b"POST", service.control_url, headers, body, action)
        if status not in (200, 500):
            raise PortMapError(f"upnp: {action}: HTTP {status}")
        try:
            result = igd.parse_soap_response(answer, action, self._bodyLimit)
        except ParseError as e:
            raise PortMapError(f"upnp: {action}: {e.reason}") from None
        if isinstance(result, igd.Fault):
            raise _Refused(action, result)
        if status != 200:
            raise PortMapError(f"upnp: {action}: HTTP {status}")
        return result


class _Refused(PortMapError):
    """
    The IGD answered a SOAP call with a fault.
    """

    def __init__(self, action: str, fault: igd.Fault) -> None:
        super().__init__(f"upnp: {action} refused: {fault}")
        self.fault = fault


@implementer(IPortMapper)
class AutoMapper:
    """
    Tries its mappers in order and keeps the first that maps; the mapping's C{protocol}
    says which one it was, and deletions go to it.

    The default order, PCP, then NAT-PMP, then UPnP IGD:
      - PCP first: the IETF's current protocol (RFC 6887 obsoletes NAT-PMP's role), the
        only one whose answers are bound to the request by a 96-bit nonce, and cheap to try:
        a NAT-PMP-only gateway answers a PCP request at once with "unsupported version"
        (RFC 6887 section 9), a gateway with neither usually with ICMP port unreachable;
      - NAT-PMP second: the same port and the same single datagram exchange, spoken by many
        routers that predate PCP;
      - UPnP last, although RFC 6081 names it: it is the slowest (a multicast search, then
        HTTP and SOAP) and parses the most from the network (XML from any LAN host that
        answers the search), so it is worth its risk only when nothing simpler answered.
    All three give the same thing for RFC 6081's purpose: a UDP mapping of the local port
    on the NAT's external address (X-UPNP-06, -07c; X-HP-03).
    """

    name = "auto"

    def __init__(self, mappers: Sequence[Any]) -> None:
        if not mappers:
            raise ValueError("AutoMapper needs at least one mapper")
        self.mappers = list(mappers)
        self.active: Any = None

    @inlineCallbacks
    def addMapping(self, localAddress: str, localPort: int, lifetime: int) -> Generator[Deferred[Any], Any, Mapping]:
        errors = []
        for mapper in self.mappers:
            try:
                mapping = yield mapper.addMapping(localAddress, localPort, lifetime)
            except PortMapError as e:
                errors.append(str(e))
                continue
            self.active = mapper
            return mapping  # type: ignore[no-any-return]
        raise PortMapError("no port mapping: " + "; ".join(errors))

    @inlineCallbacks
    def deleteMapping(self, localAddress: str, localPort: int) -> Generator[Deferred[Any], Any, None]:
        """
        Delete through the mapper that mapped; without one (a fresh process), through every
        mapper, succeeding if any did.
        """
        mappers = [self.active] if self.active is not None else self.mappers
        errors = []
        for mapper in mappers:
            try:
                yield mapper.deleteMapping(localAddress, localPort)
            except PortMapError as e:
                errors.append(str(e))
        if len(errors) == len(mappers):
            raise PortMapError("no mapping deleted: " + "; ".join(errors))
        self.active = None


# --- HTTP ---------------------------------------------------------------------------------


class BoundedBody(Protocol):
    """
    Collects a response body of at most C{limit} bytes; more aborts the connection.
    """

    def __init__(self, limit: int, done: Deferred[bytes]) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            if not self.done.called:
                self.done.errback(PortMapError(f"upnp: HTTP body over {self._limit} bytes"))
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]

        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(reason)


class AgentHttp:
    """
    The production L{HttpRequest}: C{twisted.web.client.Agent}, the whole exchange bounded
    by C{timeout} seconds on the reactor and the body by C{limit} bytes (a declared
    Content-Length over it is refused before reading).
    """

    def __init__(self, reactor: Any, limit: int = BODY_LIMIT, timeout: float = HTTP_TIMEOUT) -> None:

        self._reactor = reactor
        self._limit = limit
        self._timeout = timeout
        self._agent = Agent(reactor, connectTimeout=timeout)

    def __call__(self, method: bytes, url: str, headers: dict[str, str], body: bytes | None) -> Deferred[tuple[int, bytes]]:

        fields = Headers({name.encode("ascii"): [value.encode("ascii")] for name, value in headers.items()})
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        d: Deferred[Any] = self._agent.request(method, url.encode("ascii"), fields, producer)
        d.addCallback(self._read)
        d.addTimeout(self._timeout, self._reactor)
        return d

    def _read(self, response: Any) -> Deferred[tuple[int, bytes]]:

        if response.length is not UNKNOWN_LENGTH and response.length > self._limit:
            discarded: Deferred[bytes] = Deferred()
            discarded.addErrback(lambda _: None)  # the refusal below is the error reported
            response.deliverBody(BoundedBody(0, discarded))
            raise PortMapError(f"upnp: HTTP body of {response.length} bytes, over {self._limit}")
        box: list[BoundedBody] = []

        def cancel(_: Deferred[bytes]) -> None:
            if box and box[0].transport is not None:
                box[0].transport.stopProducing()  # type: ignore[attr-defined]

        done: Deferred[bytes] = Deferred(cancel)
        box.append(BoundedBody(self._limit, done))
        response.deliverBody(box[0])
        code: int = response.code
        return done.addCallback(lambda data: (code, data))


def makeMapper(reactor: Any, protocol: str, gateway: str | None, bindAddress: str = "") -> Any:
    """
    The mapper for C{protocol} (C{pcp}, C{natpmp}, C{upnp} or C{auto}, the three in the
    L{AutoMapper} order); PCP and NAT-PMP need the C{gateway}, and are left out of C{auto}
    without one.
    """
    upnp = UpnpMapper(reactor, bindAddress=bindAddress)
    if protocol == "upnp":
        return upnp
    if protocol in ("pcp", "natpmp") and gateway is None:
        raise PortMapError(f"{protocol}: no default gateway found (give one)")
    if protocol == "pcp" and gateway is not None:
        return PcpMapper(reactor, gateway)
    if protocol == "natpmp" and gateway is not None:
        return NatPmpMapper(reactor, gateway)
    if protocol != "auto":
        raise ValueError(f"unknown port mapping protocol {protocol!r}")
    if gateway is None:
        return AutoMapper([upnp])
    return AutoMapper([PcpMapper(reactor, gateway), NatPmpMapper(reactor, gateway), upnp])
