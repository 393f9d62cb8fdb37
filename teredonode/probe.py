"""
C{teredo probe}: qualify against Teredo servers without configuring anything, and say what
the NAT in front of this host is, in RFC 6081 terms, as far as a Teredo server can show it.

Only UDP sockets are used (no TUN, no root).  Per server, in this order, each step an RS with a
fresh nonce, retried C{attempts} times C{timeout} seconds apart (RFC 4380 section 5.2.1 and
RFC 5991 section 3.2 for what the server does with it):

  1. an RS to the primary: the mapped address (origin indication) and the RS->RA round trip;
  2. an RS to the secondary: does it answer, and is the mapping the same as toward the
     primary?  A different one means the mapping depends on the destination (symmetric);
  3. unless symmetric, the cone test from a fresh socket: an RS with the cone flag to the
     primary.  The server answers from its I{secondary} address, which reaches us only
     through a NAT that lets in anything once a mapping exists (full cone:
     endpoint-independent filtering).  A fresh socket, because the filter of the first one
     already knows the secondary, and because Linux masquerade, refusing that unsolicited
     answer, would leave a conntrack entry that changes the first socket's later mappings;
  4. only for a restricted NAT (cone test unanswered), from another fresh socket: one empty
     datagram to the secondary's port 3545, then the cone test again.  An answer from the
     secondary's port 3544 passes an address-restricted NAT (the address was contacted) but
     not a port-restricted one (that port was not).

Port preservation is the mapped port equal to our local port; a sequential port-symmetric NAT
shows as consecutive new mappings whose ports grow by a small constant (1 or 2, RFC 6081
section 2), the servers' mappings taken in the order they were made.

The servers are ranked: answering first, then a secondary that answers (needed for the NAT
tests), then the shorter RS->RA round trip.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol

from teredonode.interfaces import Endpoint
from teredonode.wire.address import (
    CLIENT_LINK_LOCAL_CONE,
    CLIENT_LINK_LOCAL_RESTRICTED,
    TEREDO_PORT,
)
from teredonode.wire import ipv4
from teredonode.wire.errors import ParseError
from teredonode.wire.ipv6 import (
    ALL_ROUTERS,
    RouterAdvertisement,
    RouterSolicitation,
    decode_icmpv6,
    icmpv6_packet,
)
from teredonode.wire.teredo import AuthIndicator, classify

__all__ = ["Prober", "probe", "format_probe", "nat_verdict", "local_address", "DEFAULT_TIMEOUT", "DEFAULT_ATTEMPTS"]

#: Seconds to wait for each RA (RFC 4380's qualification time-out is 4 s; a probe is shorter).
DEFAULT_TIMEOUT = 2.0
#: RSs sent per step before the step counts as unanswered.
DEFAULT_ATTEMPTS = 2
#: The largest port step between consecutive new mappings still called sequential.
SEQUENTIAL_MAX_DELTA = 2
#: Where the address-restricted test's empty datagram goes: any port but 3544.
FILTER_TEST_PORT = 3545



class _Socket(DatagramProtocol):
    """
    One UDP socket; RAs are matched to the RS that asked by nonce.
    """

    def __init__(self) -> None:
        self.waiting: dict[bytes, Callable[[Any], None]] = {}

    def datagramReceived(self, data: bytes, addr: Endpoint) -> None:
        try:
            packet = classify(data)
        except ParseError:
            return
        auth, origin = packet.auth, packet.origin
        if auth is None or origin is None:
            return
        deliver = self.waiting.get(auth.nonce)
        if deliver is None:
            return
        header = packet.header
        try:
            ra = decode_icmpv6(packet.ipv6[40:], header.src, header.dst)
        except ParseError:
            return
        if not isinstance(ra, RouterAdvertisement) or header.hop_limit != 255:
            return
        deliver(((origin.ip, origin.port), addr))


class Prober:
    """
    Runs the probe of one or more servers on C{reactor} (IReactorUDP and IReactorTime: the
    real reactor, or a L{teredonode.testing.FakeHost}).

    @param localAddress: the IPv4 address this host would send from toward a given server,
        to recognise "no NAT" (L{local_address} in production).
    """

    def __init__(
        self,
        reactor: Any,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        randbytes: Callable[[int], bytes] = os.urandom,
        localAddress: Callable[[str], str | None] = lambda server: None,
    ) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._attempts = attempts
        self._randbytes = randbytes
        self._localAddress = localAddress
        self._mappings: list[int] = []  # ports of the new mappings, in the order made

    def _listen(self) -> tuple[_Socket, Any]:
        proto = _Socket()
        port = self._reactor.listenUDP(0, proto)
        return proto, port

    def _solicit(self, sock: tuple[_Socket, Any], target: str, cone: bool) -> "Deferred[Any]":
        """
        Send an RS to C{target}:3544 until an RA answers it; fires with
        C{(mapped, source, rtt)} or C{None} after C{attempts} time-outs.
        """
        proto, port = sock
        result: "Deferred[Any]" = Deferred()
        source = CLIENT_LINK_LOCAL_CONE if cone else CLIENT_LINK_LOCAL_RESTRICTED
        rs = icmpv6_packet(source, ALL_ROUTERS, RouterSolicitation(), 255)
        state: dict[str, Any] = {"tries": 0, "timer": None, "nonce": b"", "sent": 0.0}

        def answered(value: tuple[Endpoint, Endpoint]) -> None:
            proto.waiting.pop(state["nonce"], None)
            state["timer"].cancel()
            result.callback((value[0], value[1], self._reactor.seconds() - state["sent"]))

        def send() -> None:
            if state["tries"] >= self._attempts:
                proto.waiting.pop(state["nonce"], None)
                result.callback(None)
                return
            state["tries"] += 1
            proto.waiting.pop(state["nonce"], None)
            nonce = self._randbytes(8)
            state["nonce"], state["sent"] = nonce, self._reactor.seconds()
            proto.waiting[nonce] = answered
            port.write(AuthIndicator(nonce).to_bytes() + rs, (target, TEREDO_PORT))
            state["timer"] = self._reactor.callLater(self._timeout, send)

        send()
        return result

    def _mapped(self, mapped: Endpoint) -> None:
        if not self._mappings or self._mappings[-1] != mapped[1]:
            self._mappings.append(mapped[1])

    @inlineCallbacks
    def server(self, primary: str, secondary: str) -> Generator["Deferred[Any]", Any, dict[str, Any]]:
        """
        Probe one server; the per-server result (see L{format_probe} for the fields).
        """
        sock = self._listen()
        local_port = sock[1].getHost().port
        try:
            plain = yield self._solicit(sock, primary, cone=False)
            second = yield self._solicit(sock, secondary, cone=False)
        finally:
            yield sock[1].stopListening()
        result: dict[str, Any] = {
            "server": primary,
            "secondary": secondary,
            "answers": plain is not None,
            "secondary-answers": second is not None,
            "rtt-ms": _ms(plain[2]) if plain else None,
            "secondary-rtt-ms": _ms(second[2]) if second else None,
            "local-port": local_port,
            "mapped": _ep(plain[0]) if plain else None,
            "mapped-secondary": _ep(second[0]) if second else None,
            "cone-test": None,
            "mapping-per-destination": None,
            "filtering": None,
        }
        if plain is None:
            return result
        self._mapped(plain[0])
        local = self._localAddress(primary)
        if local is not None and plain[0] == (local, local_port):
            result["filtering"] = "none"
            result["mapping-per-destination"] = False
            return result
        if second is None:
            return result  # the filtering tests need the secondary's answers
        self._mapped(second[0])
        result["mapping-per-destination"] = second[0] != plain[0]
        if result["mapping-per-destination"]:
            return result  # symmetric: filtering is address-and-port-dependent by definition
        cone = yield self._coneTest(primary, secondary, contactSecondary=False)
        result["cone-test"] = cone
        if cone:
            result["filtering"] = "endpoint-independent"
        elif cone is False:
            restricted = yield self._coneTest(primary, secondary, contactSecondary=True)
            if restricted is not None:
                result["filtering"] = "address-dependent" if restricted else "address-and-port-dependent"
        return result

    @inlineCallbacks
    def _coneTest(self, primary: str, secondary: str, contactSecondary: bool) -> Generator["Deferred[Any]", Any, bool | None]:
        """
        Steps 1 and 4, each from a fresh socket (a new mapping the filter knows nothing of,
        and no conntrack entry a refused datagram could leave behind on the main one): does
        the answer from the secondary address get in?  C{None} when the server stopped
        answering altogether (inconclusive).
        """
        sock = self._listen()
        try:
            if contactSecondary:
                sock[1].write(b"", (secondary, FILTER_TEST_PORT))
            answer = yield self._solicit(sock, primary, cone=True)
            if answer is not None:
                return True
            # The cone RS itself may have been lost: check the server still answers this
            # socket before blaming the filter.
            check = yield self._solicit(sock, primary, cone=False)
            return None if check is None else False
        finally:
            yield sock[1].stopListening()

    @inlineCallbacks
    def run(self, servers: list[tuple[str, str]]) -> Generator["Deferred[Any]", Any, dict[str, Any]]:
        """
        Probe every C{(primary, secondary)} in turn; the whole report.
        """
        results = []
        for primary, secondary in servers:
            results.append((yield self.server(primary, secondary)))
        return nat_verdict(results, list(self._mappings))


def nat_verdict(results: list[dict[str, Any]], mappings: list[int]) -> dict[str, Any]:
    """
    The NAT kind from every server's findings, and the servers ranked.
    """
    ranked = sorted(
        results,
        key=lambda r: (not r["answers"], not r["secondary-answers"], r["rtt-ms"] if r["rtt-ms"] is not None else 1e9),
    )
    answering = [r for r in ranked if r["answers"]]
    report: dict[str, Any] = {
        "nat": "unknown",
        "detail": "",
        "mapped": answering[0]["mapped"] if answering else None,
        "port-preserving": None,
        "sequential": None,
        "port-delta": None,
        "servers": ranked,
        "best": answering[0]["server"] if answering else None,
    }
    if not answering:
        report["detail"] = "no server answered (UDP 3544 blocked, or no server there)"
        return report
    first = answering[0]
    report["port-preserving"] = int(first["mapped"].rsplit(":", 1)[1]) == first["local-port"]
    if any(r["filtering"] == "none" for r in answering):
        report["nat"], report["detail"] = "none", "the mapped address is this host's own"
        return report
    if any(r["mapping-per-destination"] for r in answering):
        report["nat"] = "symmetric"
        deltas = [b - a for a, b in zip(mappings, mappings[1:])]
        if deltas:
            report["port-delta"] = deltas[0]
            report["sequential"] = all(d == deltas[0] for d in deltas) and 1 <= deltas[0] <= SEQUENTIAL_MAX_DELTA
        kind = "sequential port-symmetric" if report["sequential"] else "port-symmetric"
        if report["port-preserving"]:
            kind = "port-preserving symmetric"
        report["detail"] = f"{kind}: the mapping changes with the destination (Teredo peers behind restricted NATs are unreachable)"
        return report
    if any(r["filtering"] == "endpoint-independent" for r in answering):
        report["nat"], report["detail"] = "cone", "endpoint-independent mapping and filtering"
    elif any(r["filtering"] == "address-dependent" for r in answering):
        report["nat"], report["detail"] = "restricted", "address-restricted: endpoint-independent mapping, address-dependent filtering"
    elif any(r["filtering"] == "address-and-port-dependent" for r in answering):
        report["nat"], report["detail"] = "port-restricted", "endpoint-independent mapping, address-and-port-dependent filtering"
    elif any(r["mapping-per-destination"] is False for r in answering):
        report["nat"], report["detail"] = "restricted", "restricted (the filtering test got no answer)"
    else:
        report["detail"] = "no secondary address answered: the mapping per destination is unknown"
    return report


def local_address(server: str) -> str | None:
    """
    The source address the kernel picks toward C{server} (a connected UDP socket sends
    nothing), or C{None}.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((server, TEREDO_PORT))
            return str(s.getsockname()[0])
    except OSError:
        return None


def probe(reactor: Any, servers: list[tuple[str, str]], timeout: float, attempts: int) -> "Deferred[Any]":
    """
    The production probe: real sockets, the kernel's source address choice.
    """
    return Prober(reactor, timeout, attempts, localAddress=local_address).run(servers)


def secondary_of(primary: str) -> str:
    """
    The default secondary address: primary + 1 (RFC 4380 section 5.3, two consecutive).
    """
    return ipv4.following(primary) or primary


def format_probe(report: dict[str, Any]) -> str:
    """
    The text output of C{teredo probe}.
    """
    lines = [f"NAT: {report['nat']} ({report['detail']})"]
    if report["mapped"]:
        lines.append(f"mapped address: {report['mapped']}")
    flags = []
    if report["port-preserving"] is not None:
        flags.append(f"port-preserving: {'yes' if report['port-preserving'] else 'no'}")
    if report["sequential"] is not None:
        flags.append(f"sequential: {'yes' if report['sequential'] else 'no'} (port delta {report['port-delta']})")
    if flags:
        lines.append(", ".join(flags))
    lines.append("")
    lines.append("rank  server            answers  RS->RA    secondary           mapped (primary / secondary)")
    for rank, r in enumerate(report["servers"], 1):
        rtt = f"{r['rtt-ms']:.1f} ms" if r["rtt-ms"] is not None else "-"
        second = f"{r['secondary']} {'yes' if r['secondary-answers'] else 'no'}"
        mapped = f"{r['mapped'] or '-'} / {r['mapped-secondary'] or '-'}"
        lines.append(f"{rank:<5} {r['server']:<17} {'yes' if r['answers'] else 'no':<8} {rtt:<9} {second:<19} {mapped}")
    return "\n".join(lines)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _ep(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"
