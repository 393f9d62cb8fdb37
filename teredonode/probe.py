"""
C{teredo probe}: qualify against Teredo servers without configuring anything, and say what
the NAT in front of this host is, in RFC 6081 terms (section 2; Figure 1's rows), as far as
Teredo servers and the LAN can show it.

Only UDP sockets are used (no TUN, no root).  Per server, in this order, each step an RS with a
fresh nonce, retried C{attempts} times C{timeout} seconds apart (RFC 4380 section 5.2.1 and
RFC 5991 section 3.2 for what the server does with it):

  1. from socket A, an RS to the primary: the mapped address (origin indication) and the
     RS->RA round trip;
  2. from A, an RS to the secondary: does it answer, and is the mapping the same as toward the
     primary?  A different one means the mapping depends on the destination (symmetric); a
     different I{address} means an address-symmetric NAT (the secondary is another address);
  3. symmetric only: from a fresh socket B, RSs to the primary and the secondary.  A and B's
     four mappings, in the order they were made, tell the port allocation: B's first mapping
     keeping B's port again means port-preserving, ports growing by one constant 1 or 2 mean
     sequential (RFC 6081 section 2), anything else random;
  4. not symmetric: the cone test from a fresh socket B: an RS with the cone flag to the
     primary.  The server answers from its I{secondary} address, which reaches us only
     through a NAT that lets in anything once a mapping exists (full cone:
     endpoint-independent filtering).  A fresh socket, because A's filter already knows the
     secondary, and because Linux masquerade, refusing that unsolicited answer, would leave a
     conntrack entry that changes A's later mappings;
  5. only for a restricted NAT (cone test unanswered), from B: one empty datagram to the
     secondary's port 3545, then the cone test again.  An answer from the secondary's port
     3544 passes an address-restricted NAT (the address was contacted) but not a
     port-restricted one (that port was not).  Unanswered again, a plain RS from B checks the
     server still answers at all before the filter is blamed.

At most C{5 * attempts + 1} datagrams per server (A's two RSs, B's two cone tests and check,
step 5's empty datagram; step 3's two RSs replace steps 4 and 5), and one SSDP M-SEARCH on the
LAN (UPnP Device Architecture 1.1 section 1.3.2) for an Internet Gateway Device: a reply makes
the NAT UPnP-enabled in RFC 6081's terms.  The report counts what was sent and received.

A server rate-limits RSs per source address (ours: C{rs-initial} 4 for a new source, then
C{rs-rate} 0.5/s), and an RS it drops would read as a filtered answer.  So the RSs to each
server are paced to stay inside the default budget of a source the server has not seen
(L{PACE_INITIAL}, L{PACE_RATE}): four at once, then one every 2 s or so.  Other hosts behind
the same NAT address, or a probe repeated at once, spend the same budget: the cone tests may
then fail for that reason alone (probe again a little later).

The verdict is L{classify_nat}, a pure function of these observations.  What no probe of a
Teredo server can tell (a server answers on port 3544 only, from two addresses): whether a
symmetric NAT's mapping depends on the destination port too (RFC 4787 address-dependent vs
address-and-port-dependent mapping); how a symmetric NAT filters; hairpinning; a UPnP gateway
that does not answer SSDP or is not the NAT in front (nested NATs); and Linux masquerade's
habit of changing the port after an unsolicited packet from a peer (it reads as
port-restricted).

The servers are ranked: answering first, then a secondary that answers (needed for the NAT
tests), then the shorter RS->RA round trip.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol

from teredonode.config import ServerSettings
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

__all__ = [
    "Prober", "probe", "format_probe", "nat_verdict", "classify_nat", "local_address", "secondary_of",
    "DEFAULT_TIMEOUT", "DEFAULT_ATTEMPTS", "KINDS", "FIGURE1",
]

#: Seconds to wait for each RA (RFC 4380's qualification time-out is 4 s; a probe is shorter).
DEFAULT_TIMEOUT = 2.0
#: RSs sent per step before the step counts as unanswered.
DEFAULT_ATTEMPTS = 2
#: The largest port step between consecutive new mappings still called sequential.
SEQUENTIAL_MAX_DELTA = 2
#: Where the address-restricted test's empty datagram goes: any port but 3544.
FILTER_TEST_PORT = 3545
_SERVER_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ServerSettings)}
#: The RS budget a server gives a new source: our server's defaults (C{rs-initial},
#: C{rs-rate}), the rate a tenth under, for the two clocks' drift and the round trip.
PACE_INITIAL = int(_SERVER_DEFAULTS["rs_initial"])
PACE_RATE = 0.9 * float(_SERVER_DEFAULTS["rs_rate"])
#: SSDP's multicast group and port (UPnP Device Architecture 1.1 section 1.3.2).
SSDP_GROUP = ("239.255.255.250", 1900)
#: The device type an UPnP-enabled NAT announces (UPnP IGD; RFC 6081 section 2 "UPnP-enabled NAT").
IGD_TYPE = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"

#: The kinds L{classify_nat} reports, with what each means (RFC 6081 section 2).
KINDS: dict[str, str] = {
    "none": "no NAT: the mapped address is this host's own",
    "cone": "endpoint-independent mapping and filtering",
    "address-restricted": "endpoint-independent mapping, address-dependent filtering",
    "port-restricted": "endpoint-independent mapping, address-and-port-dependent filtering",
    "restricted": "endpoint-independent mapping; the filtering test got no answer",
    "port-preserving-symmetric": "port-preserving symmetric: a mapping per destination, a socket's first keeps its port",
    "sequential-symmetric": "sequential port-symmetric: a mapping per destination, one external address, ports in sequence",
    "port-symmetric": "a mapping per destination, one external address, ports at random",
    "address-symmetric": "a mapping per destination, each with another external address",
    "unknown": "",
}

#: RFC 6081 Figure 1's row for a kind, without and with an UPnP gateway answering on the LAN.
FIGURE1: dict[str, tuple[str, str]] = {
    "cone": ("Cone", "Cone"),
    "address-restricted": ("Address restricted", "Address restricted"),
    "port-restricted": ("Port restricted", "UPnP Port-restricted"),
    "port-preserving-symmetric": ("Port-preserving Port-symmetric", "UPnP Port symmetric"),
    "sequential-symmetric": ("Sequential Port-symmetric", "UPnP Port symmetric"),
    "port-symmetric": ("Port-symmetric", "UPnP Port symmetric"),
    "address-symmetric": ("Address-symmetric", "Address-symmetric"),
}

#: The coarse class RFC 4380 clients act on (the report's C{nat} field), per kind.
_CLASS = {
    "none": "none", "cone": "cone", "address-restricted": "restricted", "restricted": "restricted",
    "port-restricted": "port-restricted", "port-preserving-symmetric": "symmetric",
    "sequential-symmetric": "symmetric", "port-symmetric": "symmetric", "address-symmetric": "symmetric",
    "unknown": "unknown",
}


class _Socket(DatagramProtocol):
    """
    One UDP socket; RAs are matched to the RS that asked by nonce.
    """

    def __init__(self, counts: dict[str, int]) -> None:
        self.waiting: dict[bytes, Callable[[Any], None]] = {}
        self.counts = counts

    def datagramReceived(self, data: bytes, addr: Endpoint) -> None:
        self.counts["received"] += 1
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


class _Ssdp(DatagramProtocol):
    """
    Collects the first SSDP answer that names an Internet Gateway Device.
    """

    def __init__(self, counts: dict[str, int], found: Callable[[str], None]) -> None:
        self.counts = counts
        self.found = found

    def datagramReceived(self, data: bytes, addr: Endpoint) -> None:
        self.counts["received"] += 1
        if ssdp_names_gateway(data):
            self.found(addr[0])


def ssdp_search() -> bytes:
    """
    The M-SEARCH for an Internet Gateway Device (MX 1: answers come within a second).
    """
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {SSDP_GROUP[0]}:{SSDP_GROUP[1]}\r\n"
        'MAN: "ssdp:discover"\r\n'
        "MX: 1\r\n"
        f"ST: {IGD_TYPE}\r\n\r\n"
    ).encode("ascii")


def ssdp_names_gateway(data: bytes) -> bool:
    """
    Whether C{data} is an SSDP answer (HTTP 200) whose ST is an Internet Gateway Device.
    """
    lines = data.decode("latin-1").split("\r\n")
    if not lines[0].upper().startswith("HTTP/1.1 200"):
        return False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().upper() == "ST" and value.strip().lower().startswith(
            "urn:schemas-upnp-org:device:internetgatewaydevice:"
        ):
            return True
    return False


class Prober:
    """
    Runs the probe of one or more servers on C{reactor} (IReactorUDP and IReactorTime: the
    real reactor, or a L{teredonode.testing.FakeHost}).

    @param localAddress: the IPv4 address this host would send from toward a given server,
        to recognise "no NAT" (L{local_address} in production).
    @param upnp: send the SSDP search for an UPnP gateway (else the report says "not checked").
    """

    def __init__(
        self,
        reactor: Any,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        randbytes: Callable[[int], bytes] = os.urandom,
        localAddress: Callable[[str], str | None] = lambda server: None,
        upnp: bool = False,
    ) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._attempts = attempts
        self._randbytes = randbytes
        self._localAddress = localAddress
        self._upnp = upnp
        self._counts = {"sent": 0, "received": 0}
        self._budgets: dict[str, list[float]] = {}  # server -> [tokens, as of]

    def _spend(self, server: str) -> float:
        """
        Take one RS from C{server}'s budget: the seconds to wait before sending it.
        """
        now = self._reactor.seconds()
        budget = self._budgets.setdefault(server, [float(PACE_INITIAL), now])
        tokens = min(float(PACE_INITIAL), budget[0] + (now - budget[1]) * PACE_RATE)
        if tokens >= 1.0:
            budget[:] = [tokens - 1.0, now]
            return 0.0
        delay = float((1.0 - tokens) / PACE_RATE)
        budget[:] = [0.0, now + delay]
        return delay

    def _listen(self) -> tuple[_Socket, Any]:
        proto = _Socket(self._counts)
        port = self._reactor.listenUDP(0, proto)
        return proto, port

    def _write(self, port: Any, data: bytes, to: Endpoint) -> None:
        self._counts["sent"] += 1
        port.write(data, to)

    def _solicit(self, sock: tuple[_Socket, Any], target: str, cone: bool, server: str) -> "Deferred[Any]":
        """
        Send an RS to C{target}:3544 until an RA answers it; fires with
        C{(mapped, source, rtt)} or C{None} after C{attempts} time-outs.  Each RS is paced
        by C{server}'s budget (L{_spend}).
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
            delay = self._spend(server)
            if delay > 0:
                state["timer"] = self._reactor.callLater(delay, transmit)
            else:
                transmit()

        def transmit() -> None:
            nonce = self._randbytes(8)
            state["nonce"], state["sent"] = nonce, self._reactor.seconds()
            proto.waiting[nonce] = answered
            self._write(port, AuthIndicator(nonce).to_bytes() + rs, (target, TEREDO_PORT))
            state["timer"] = self._reactor.callLater(self._timeout, send)

        send()
        return result

    def _searchGateway(self) -> "Deferred[Any]":
        """
        One SSDP M-SEARCH on the LAN; fires with the answering gateway's address, C{""} when
        none answered within C{timeout}, or C{None} when the search could not be sent.
        """
        result: "Deferred[Any]" = Deferred()
        state: dict[str, Any] = {}

        def finish(value: str | None) -> None:
            if result.called:
                return
            if state.get("timer") is not None and state["timer"].active():
                state["timer"].cancel()
            port.stopListening()
            result.callback(value)

        port = self._reactor.listenUDP(0, _Ssdp(self._counts, finish))
        try:
            self._write(port, ssdp_search(), SSDP_GROUP)
        except OSError:
            finish(None)  # no route to the group: no LAN to ask
            return result
        state["timer"] = self._reactor.callLater(self._timeout, finish, "")
        return result

    @inlineCallbacks
    def server(self, primary: str, secondary: str) -> Generator["Deferred[Any]", Any, dict[str, Any]]:
        """
        Probe one server; the per-server observations (see L{format_probe} for the fields).
        """
        mappings: list[list[Any]] = []  # [local port, "address:port", destination] as made

        def seen(local: int, answer: Any, destination: str) -> None:
            if answer is not None:
                mappings.append([local, _ep(answer[0]), destination])

        sock = self._listen()
        local_port = sock[1].getHost().port
        try:
            plain = yield self._solicit(sock, primary, False, primary)
            seen(local_port, plain, primary)
            second = yield self._solicit(sock, secondary, False, primary)
            seen(local_port, second, secondary)
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
            "mappings": mappings,
            "cone-test": None,
            "mapping-per-destination": None,
            "filtering": None,
        }
        if plain is None:
            return result
        local = self._localAddress(primary)
        if local is not None and plain[0] == (local, local_port):
            result["filtering"] = "none"
            result["mapping-per-destination"] = False
            return result
        if second is None:
            return result  # the mapping and filtering tests need the secondary's answers
        result["mapping-per-destination"] = second[0] != plain[0]
        if result["mapping-per-destination"]:
            # Symmetric: filtering is address(-and-port)-dependent by definition; more
            # mappings, from a fresh socket, for the port allocation.
            sock = self._listen()
            other = sock[1].getHost().port
            try:
                seen(other, (yield self._solicit(sock, primary, False, primary)), primary)
                seen(other, (yield self._solicit(sock, secondary, False, primary)), secondary)
            finally:
                yield sock[1].stopListening()
            return result
        result["cone-test"], result["filtering"] = yield self._filtering(primary, secondary, seen)
        return result

    @inlineCallbacks
    def _filtering(
        self, primary: str, secondary: str, seen: Callable[[int, Any, str], None]
    ) -> Generator["Deferred[Any]", Any, tuple[bool | None, str | None]]:
        """
        Steps 4 and 5 from a fresh socket (a new mapping the filter knows nothing of, and no
        conntrack entry a refused datagram could leave behind on socket A): does the answer
        from the secondary address get in, before and after the secondary's address (not its
        port 3544) was contacted?  C{(cone test, filtering)}; the filtering is C{None} when
        the server stopped answering altogether (inconclusive).
        """
        sock = self._listen()
        local = sock[1].getHost().port
        try:
            answer = yield self._solicit(sock, primary, True, primary)
            if answer is not None:
                seen(local, answer, primary)
                return True, "endpoint-independent"
            self._write(sock[1], b"", (secondary, FILTER_TEST_PORT))
            answer = yield self._solicit(sock, primary, True, primary)
            if answer is not None:
                seen(local, answer, primary)
                return False, "address-dependent"
            # The cone RSs themselves may have been lost: check the server still answers
            # this socket before blaming the filter.
            check = yield self._solicit(sock, primary, False, primary)
            seen(local, check, primary)
            return False, None if check is None else "address-and-port-dependent"
        finally:
            yield sock[1].stopListening()

    @inlineCallbacks
    def run(self, servers: list[tuple[str, str]]) -> Generator["Deferred[Any]", Any, dict[str, Any]]:
        """
        Probe every C{(primary, secondary)} in turn, the SSDP search running meanwhile; the
        whole report.
        """
        gateway: "Deferred[Any] | None" = self._searchGateway() if self._upnp else None
        results = []
        for primary, secondary in servers:
            results.append((yield self.server(primary, secondary)))
        found = (yield gateway) if gateway is not None else None
        upnp = None if found is None else bool(found)
        report = nat_verdict(results, upnp)
        report["upnp-gateway"] = found or None
        report["packets"] = dict(self._counts)
        return report


def classify_nat(results: list[dict[str, Any]]) -> dict[str, Any]:
    """
    The NAT kind (a key of L{KINDS}) from servers' observations (L{Prober.server}'s
    results, answering or not), with the facts it rests on: C{port-preserving},
    C{sequential}, C{port-delta}.  Pure: the unit tests feed it observations.

      - none: a server saw this host's own address and port;
      - symmetric (RFC 6081 section 2) when any server's two addresses saw two mappings:
        address-symmetric when the mappings use more than one external address; else
        port-preserving when every socket's first mapping kept its local port; else
        sequential when the ports, in the order each server's mappings were made, grow by
        one constant delta of 1 or 2 (two deltas at least: three mappings); else
        port-symmetric;
      - otherwise the filtering the cone tests found: cone, address-restricted,
        port-restricted, or restricted when they were inconclusive.
    """
    answering = [r for r in results if r["answers"]]
    verdict: dict[str, Any] = {"kind": "unknown", "port-preserving": None, "sequential": None, "port-delta": None}
    if not answering:
        return verdict
    firsts: dict[tuple[int, int], str] = {}  # (server, local port) -> first mapping
    for i, r in enumerate(answering):
        for local, mapped, _ in r.get("mappings") or [[r["local-port"], r["mapped"], r["server"]]]:
            firsts.setdefault((i, local), mapped)
    verdict["port-preserving"] = all(_port(mapped) == key[1] for key, mapped in firsts.items())
    if any(r["filtering"] == "none" for r in answering):
        verdict["kind"] = "none"
        return verdict
    symmetric = [r.get("mappings") or [] for r in answering if r["mapping-per-destination"]]
    if symmetric:
        if len({m[1].rsplit(":", 1)[0] for ms in symmetric for m in ms}) > 1:
            verdict["kind"] = "address-symmetric"
            verdict["port-preserving"] = None
            return verdict
        # Deltas within each server's run of mappings: whatever else used the NAT between
        # two servers' runs does not count against a sequential allocation.
        runs = [[_port(m[1]) for m in ms] for ms in symmetric]
        deltas = [after - before for ports in runs for before, after in zip(ports, ports[1:])]
        if deltas:
            verdict["port-delta"] = deltas[0]
        if len(deltas) >= 2:
            verdict["sequential"] = len(set(deltas)) == 1 and 1 <= deltas[0] <= SEQUENTIAL_MAX_DELTA
        if verdict["port-preserving"]:
            verdict["kind"] = "port-preserving-symmetric"
        elif verdict["sequential"]:
            verdict["kind"] = "sequential-symmetric"
        else:
            verdict["kind"] = "port-symmetric"
        return verdict
    filtering = {r["filtering"] for r in answering}
    if "endpoint-independent" in filtering:
        verdict["kind"] = "cone"
    elif "address-dependent" in filtering:
        verdict["kind"] = "address-restricted"
    elif "address-and-port-dependent" in filtering:
        verdict["kind"] = "port-restricted"
    elif any(r["mapping-per-destination"] is False for r in answering):
        verdict["kind"] = "restricted"
    return verdict


def nat_verdict(results: list[dict[str, Any]], upnp: bool | None = None) -> dict[str, Any]:
    """
    The whole report from every server's observations and the SSDP search's outcome
    (C{None}: not checked): the kind from all servers together and from each alone (a
    server that disagrees shows), RFC 6081 Figure 1's row, and the servers ranked.
    """
    ranked = sorted(
        results,
        key=lambda r: (not r["answers"], not r["secondary-answers"], r["rtt-ms"] if r["rtt-ms"] is not None else 1e9),
    )
    for r in ranked:
        r["kind"] = classify_nat([r])["kind"]
    answering = [r for r in ranked if r["answers"]]
    verdict = classify_nat(results)  # in probe order: mappings in the order made
    kind = verdict["kind"]
    report: dict[str, Any] = {
        "nat": _CLASS[kind],
        "kind": kind,
        "figure1": FIGURE1[kind][1 if upnp else 0] if kind in FIGURE1 else None,
        "upnp": upnp,
        "detail": KINDS[kind],
        "mapped": answering[0]["mapped"] if answering else None,
        "port-preserving": verdict["port-preserving"],
        "sequential": verdict["sequential"],
        "port-delta": verdict["port-delta"],
        "servers": ranked,
        "best": answering[0]["server"] if answering else None,
    }
    if not answering:
        report["detail"] = "no server answered (UDP 3544 blocked, or no server there)"
    elif kind == "unknown":
        report["detail"] = "no secondary address answered: the mapping per destination is unknown"
    elif kind == "port-symmetric" and verdict["sequential"] is None:
        report["detail"] += " (too few mappings to tell sequential allocation)"
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


def probe(
    reactor: Any, servers: list[tuple[str, str]], timeout: float, attempts: int, upnp: bool = True
) -> "Deferred[Any]":
    """
    The production probe: real sockets, the kernel's source address choice.
    """
    return Prober(reactor, timeout, attempts, localAddress=local_address, upnp=upnp).run(servers)


def secondary_of(primary: str) -> str:
    """
    The default secondary address: primary + 1 (RFC 4380 section 5.3, two consecutive).
    """
    return ipv4.following(primary) or primary


def format_probe(report: dict[str, Any]) -> str:
    """
    The text output of C{teredo probe}.
    """
    lines = [f"NAT: {report['kind']} ({report['detail']})"]
    if report["figure1"]:
        lines.append(f"RFC 6081 Figure 1: {report['figure1']}")
    if report["upnp"] is None:
        lines.append("UPnP: not checked")
    elif report["upnp"]:
        lines.append(f"UPnP: an Internet Gateway Device answered ({report.get('upnp-gateway') or '?'})")
    else:
        lines.append("UPnP: no gateway answered the SSDP search")
    if report["mapped"]:
        lines.append(f"mapped address: {report['mapped']}")
    flags = []
    if report["port-preserving"] is not None:
        flags.append(f"port-preserving: {'yes' if report['port-preserving'] else 'no'}")
    if report["sequential"] is not None:
        flags.append(f"sequential: {'yes' if report['sequential'] else 'no'} (port delta {report['port-delta']})")
    if flags:
        lines.append(", ".join(flags))
    packets = report.get("packets")
    if packets:
        lines.append(f"datagrams: {packets['sent']} sent, {packets['received']} received")
    lines.append("")
    lines.append("rank  server            answers  RS->RA    secondary           kind                       mapped (primary / secondary)")
    for rank, r in enumerate(report["servers"], 1):
        rtt = f"{r['rtt-ms']:.1f} ms" if r["rtt-ms"] is not None else "-"
        second = f"{r['secondary']} {'yes' if r['secondary-answers'] else 'no'}"
        mapped = f"{r['mapped'] or '-'} / {r['mapped-secondary'] or '-'}"
        lines.append(
            f"{rank:<5} {r['server']:<17} {'yes' if r['answers'] else 'no':<8} {rtt:<9} {second:<19} {r['kind']:<26} {mapped}"
        )
    return "\n".join(lines)


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _ep(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"
