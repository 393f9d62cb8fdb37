"""
The Teredo client's kernel fast path: two BPF programs (C{bpf/teredo_client.bpf.c}) carry
the packets of trusted peers, and this module is their control plane.

  - C{teredo_client_rx} (TC ingress, on the interfaces holding the client's IPv4
    addresses) decapsulates a trusted peer's datagrams and hands the IPv6 packet to the
    input of the client's TUN, as the Python client's TUN write does;
  - C{teredo_client_tx} (TC egress, on the client's TUN) encapsulates what the host sends a
    trusted peer and sends it to the peer's mapping from the client's address and port.

The C source's opening comment argues the placement and lists the checks.  The Python
client stays the whole client: it qualifies, decides every peer state
(L{teredonode.roles.tunnel}), sees every packet the programs pass on, and is the complete
fallback.  The peer-state bookkeeping is the relay's (L{RelayFastPath}: installs deferred to
the end of the packet that proved a peer, removals at once, the programs' times folded back
before each sweep); this module adds what a client does differently:

  - the config map follows the client's identity: before entries are written it holds the
    client's current Teredo address, its service port, and the source address and
    interface of the route toward its server (every address change resets the peer list,
    so no entry outlives the address it was trusted for);
  - native peers (reached through a relay) are carried too, until the relay silence after
    which the Python client re-checks their relay;
  - an entry the client sends to differently is left to Python: a peer reached from a
    random port (RFC 6081 section 5.4) or a port-guessing socket, a symmetric peer sent to
    at its embedded mapping (X-UPNP-12), a local peer, one whose mapping is the server's.

Setting C{[client] fast-path}: C{"auto"} uses it when it loads and attaches, else the
Python path; C{"on"} refuses to start without it; C{"off"} never tries.  Either way the
client logs one line saying which.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any, Callable

from teredonode.fastpath.libbpf import BPFError, BpfObject, load_libbpf
from teredonode.fastpath.program import FastPathUnavailable, object_path
from teredonode.fastpath.relay import RelayFastPath, load_as, offloadsChanged
from teredonode.logs import Logger
from teredonode.peers import VALID_FOR, Peer, PeerList
from teredonode.wire.address import GLOBAL_PREFIX, TEREDO_PORT

__all__ = [
    "COUNTERS",
    "MERGED",
    "SOURCE_NAME",
    "CONFIG",
    "ClientFastPath",
    "load",
    "loadFor",
    "startFor",
    "pack_config",
    "merged",
]

SOURCE_NAME = "teredo_client.bpf.c"
RX, TX = "teredo_client_rx", "teredo_client_tx"

#: The programs' counter indices (their C enum, in order), as the relay's.
COUNTERS = ("received", "delivered", "sent", "passed-udp", "passed-tun", "super-packets")
#: Which of L{COUNTERS} the client's C{counters} include.
MERGED = ("received", "delivered", "sent")

_MAX_LOCALS = 8
_MAX_MTU = 1500
#: struct client_config: enabled, tun_ifindex, out_ifindex, source, port, prefix, ttl, mtu;
#: valid_ns, native_ns; address; n_locals; locals; segments.
CONFIG = struct.Struct(f"=I I I 4s 2s2x 4s I I Q Q 16s I {4 * _MAX_LOCALS}s I")

log = Logger()


def pack_config(
    tunIndex: int,
    outIndex: int,
    source: str,
    port: int,
    address: bytes | None,
    locals_: list[str],
    ttl: int = 64,
    prefix: bytes = GLOBAL_PREFIX,
    relaySilence: float | None = None,
    segments: bool = False,
) -> bytes:
    """
    The config map's value; disabled while the client has no address.  C{segments}: the
    outgoing interface completes the inner checksums of what it sends encapsulated, a
    packet's partial one and those of the segments it cuts from a super-packet
    (L{teredonode.fastpath.offloads.Offloads.completesSegments}; the C source says why it matters).  Raises
    L{FastPathUnavailable} for what the program cannot express.
    """
    from teredonode.roles.tunnel import RELAY_SILENCE

    if len(locals_) > _MAX_LOCALS:
        raise FastPathUnavailable(f"more than {_MAX_LOCALS} local IPv4 addresses (set bind)")
    silence = RELAY_SILENCE if relaySilence is None else relaySilence
    return CONFIG.pack(
        1 if address is not None else 0,
        tunIndex,
        outIndex,
        socket.inet_aton(source),
        port.to_bytes(2, "big"),
        prefix,
        ttl,
        _MAX_MTU,
        int(VALID_FOR * 1e9),
        int(min(VALID_FOR, silence) * 1e9),
        address or bytes(16),
        len(locals_),
        b"".join(socket.inet_aton(a) for a in locals_).ljust(4 * _MAX_LOCALS, b"\x00"),
        1 if segments else 0,
    )


class ClientFastPath(RelayFastPath):
    """
    A loaded (and, once started, running) fast path for one client, and the observer of its
    tunnel's peer states.

    @param clock: the client's reactor.
    @param peers: the tunnel's peer list.
    """

    teredoOnly = False

    configSize = CONFIG.size
    counterNames: tuple[str, ...] = COUNTERS
    hasInterfaces = False

    def __init__(self, obj: Any, clock: Any, peers: PeerList, prefix: bytes = GLOBAL_PREFIX) -> None:
        RelayFastPath.__init__(self, obj, clock, peers, prefix)
        self._client: Any = None
        self._tun: tuple[str, int] = ("", 0)
        self._written: bytes | None = None
        self._planned: tuple[Any, ...] = ()
        self._plan: Callable[[str, str | None], tuple[list[str], str, int]] = _plan
        self._ttl = 64
        self._outIndex = 0

    @classmethod
    def load(cls, settings: Any, clock: Any, peers: PeerList, path: Path | None = None) -> ClientFastPath:
        """The programs loaded from the compiled object (closed again if anything fails)."""
        obj = BpfObject(
            load_libbpf(), str(path or object_path(source_name=SOURCE_NAME)), {"peers": settings.max_peers}
        )
        try:
            return cls(obj, clock, peers)
        except BaseException:
            obj.close()
            raise

    # -- set-up --------------------------------------------------------------------------------

    def startClient(
        self,
        client: Any,
        tun: str,
        plan: Callable[[str, str | None], tuple[list[str], str, int]] | None = None,
        rxInterfaces: Callable[[str], list[tuple[str, int]]] | None = None,
    ) -> bool:
        """
        Attach to the host: TC ingress where the client's IPv4 addresses are, TC egress on
        C{tun} (open).  C{client} (a L{teredonode.roles.client.TeredoClient}) is read for
        its address, server, port and tunnel whenever entries are written.  Logs the one
        line saying which path carries trusted peers.  C{False} (and closed) when it cannot
        run under C{"auto"}.

        @raise FastPathUnavailable: it cannot run under C{"on"}.
        """
        if plan is not None:
            self._plan = plan
        try:
            self._client = client
            self._tun = (tun, socket.if_nametoindex(tun))
            self._ttl = _default_ttl()
            rx = (rxInterfaces or _rx_interfaces)(client.settings.bind)
            if not rx:
                raise FastPathUnavailable("no Ethernet interface holds the client's IPv4 address")
            self.configure(bytes(CONFIG.size))
            for name, index in rx:
                self.obj.attach_tcx(RX, index, egress=False)
                self.interfaces.append(name)
            self.obj.attach_tcx(TX, self._tun[1], egress=True)
            self.interfaces.append(tun)
        except (FastPathUnavailable, BPFError, OSError, ImportError) as e:
            self.close()
            if self.mode == "on":
                raise FastPathUnavailable(str(e)) from None
            log.info("Trusted peers: Python path (kernel fast path unavailable: {reason})", reason=str(e))
            return False
        log.info(
            "Trusted peers: kernel fast path (TC on {rx}, TC on {tun}), the rest on the Python path",
            rx=", ".join(self.interfaces[:-1]),
            tun=tun,
        )
        return True

    def stopFor(self, client: Any) -> None:
        """
        Detach from C{client}'s tunnel and the host, before the tunnel forgets its peers.
        """
        from teredonode.interfaces import NoPeerObserver

        client.tunnel.peerObserver = NoPeerObserver()
        self.close()

    def close(self) -> None:
        RelayFastPath.close(self)
        self._client = None
        self._written = None
        self._planned = ()

    # -- the client's identity -----------------------------------------------------------------

    def installing(self) -> None:
        """
        Bring the config map up to the client's address, port and route before entries are
        written (nothing is written when the route cannot be found: the peers stay on the
        Python path).
        """
        client = self._client
        if client is None:
            return
        tunnel = client.tunnel
        address = tunnel.address
        server = client.server
        key = (address, server, tunnel.prefix, client.localPort())
        if key == self._planned:
            return
        self._planned = key
        try:
            locals_, source, outIndex = self._plan(client.settings.bind, server if address else None)
            self._outIndex = outIndex
            self.segments = self.offloads.completesSegments(outIndex)
            config = pack_config(
                self._tun[1], outIndex, source, client.localPort(), address, locals_, self._ttl,
                tunnel.prefix, segments=self.segments,
            )
        except (FastPathUnavailable, OSError, ImportError) as e:
            self._outIndex = 0  # nothing planned: nothing to follow
            config = bytes(CONFIG.size)
            if self._written != config:
                log.info("Trusted peers: Python path for now ({reason})", reason=str(e))
        if config != self._written:
            self.configure(config)
            self._written = config

    def followOffloads(self) -> None:
        """
        As the relay's (L{RelayFastPath.followOffloads}), for the interface of the route
        toward the server the config was last planned with.
        """
        if self._client is None or not self._outIndex:
            return
        outIndex = self._outIndex
        segments = self.offloads.completesSegments(outIndex)
        if segments != self.segments:
            self.segments = segments
            self._planned = ()
            self.installing()
            offloadsChanged(outIndex, segments)

    def installable(self, peer: Peer, state: str, queued: bool = False) -> bool:
        """
        The relay's rule, and nothing the client sends to differently (see the module
        docstring).
        """
        if not RelayFastPath.installable(self, peer, state, queued) or peer.nonce is not None:
            return False
        client = self._client
        if client is None:
            return True
        mapping = peer.mapping
        assert mapping is not None
        if mapping[1] == TEREDO_PORT and mapping[0] in (client.server, client.secondary):
            return False
        if peer.random_port or peer.direct_rx_random:
            return False
        tunnel = client.tunnel
        if tunnel.portGuessing is not None and tunnel.portGuessing.searchFor(peer.address) is not None:
            return False
        return not (tunnel.upnpSymmetric and peer.symmetric_peer)

    # -- status ----------------------------------------------------------------------------------

    def status(self, counts: dict[str, int]) -> dict[str, Any]:
        return {
            "interfaces": list(self.interfaces),
            "carried": counts["delivered"] + counts["sent"],
            # Taken from the TUN by the TC program: never read by the client.
            "from-tun": counts["sent"],
            "passed-to-python": counts["passed-udp"] + counts["passed-tun"],
            # TCP super-packets it encapsulated whole (their segments are in "from-tun").
            "super-packets": counts["super-packets"],
            # Packets with partial checksums and super-packets carried (the outgoing
            # interface completes inner checksums), or handed to Python.
            "tunnel-offload": self.segments,
        }


def merged(fast: ClientFastPath | None, counters: dict[str, int]) -> tuple[dict[str, int], dict[str, Any] | None]:
    """
    The client's counters with the fast path's added under the same names, and the fast
    path's own status (C{None} without one).
    """
    if fast is None:
        return counters, None
    counts = fast.counts()
    for name in MERGED:
        counters[name] += counts[name]
    return counters, fast.status(counts)


def _default_ttl() -> int:
    """The TTL the client's socket sends with: the host's default (it sets none)."""
    try:
        with open("/proc/sys/net/ipv4/ip_default_ttl") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 64


def _host_addresses() -> list[tuple[str, int, str, bool]]:
    """
    Every IPv4 address of the host but loopback's: (address, ifindex, name, Ethernet?).
    """
    from pyroute2 import IPRoute, NetlinkError

    out = []
    try:
        with IPRoute() as ipr:
            kinds = {link["index"]: link["ifi_type"] for link in ipr.get_links()}
            for msg in ipr.get_addr(family=socket.AF_INET):
                address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                if address and not address.startswith("127."):
                    index = msg["index"]
                    out.append((address, index, socket.if_indextoname(index), kinds.get(index) == 1))
    except NetlinkError as e:
        raise FastPathUnavailable(f"cannot list the host's addresses: {e}") from None
    return out


def _rx_interfaces(bind: str) -> list[tuple[str, int]]:
    """
    The Ethernet interfaces holding the address the client's socket receives on (any, for
    a wildcard C{bind}): a datagram for it arrives there.
    """
    held = [h for h in _host_addresses() if h[3]]
    if bind not in ("", "0.0.0.0"):
        held = [h for h in held if h[0] == bind]
    return sorted({(h[2], h[1]) for h in held})


def _plan(bind: str, server: str | None) -> tuple[list[str], str, int]:
    """
    The addresses the client's socket receives on, and the source address and interface
    of its datagrams: those of the route toward the server (the socket's, for a peer
    reached the same way; a host that routes peers elsewhere should set C{bind}).
    """
    from pyroute2 import IPRoute, NetlinkError

    held = _host_addresses()
    if bind not in ("", "0.0.0.0"):
        held = [h for h in held if h[0] == bind]
        if not held:
            raise FastPathUnavailable(f"no interface holds {bind}")
    locals_ = sorted({h[0] for h in held})
    if server is None:
        return locals_, "0.0.0.0", 0
    try:
        with IPRoute() as ipr:
            routes = ipr.route("get", dst=server)
    except NetlinkError as e:
        raise FastPathUnavailable(f"no route toward the server {server}: {e}") from None
    if not routes:
        raise FastPathUnavailable(f"no route toward the server {server}")
    route = routes[0]
    index = route.get_attr("RTA_OIF")
    source = route.get_attr("RTA_PREFSRC")
    if bind not in ("", "0.0.0.0"):
        source = bind
    if not index or not source:
        raise FastPathUnavailable(f"the route toward {server} has no interface or source")
    return locals_, str(source), int(index)


def load(settings: Any, clock: Any, peers: PeerList) -> ClientFastPath | None:
    """
    The relay's L{teredonode.fastpath.relay.load_as} for the client, before it opens
    anything (the same one log line when the Python path runs); L{ClientFastPath.startClient}
    logs the other.

    @raise FastPathUnavailable: C{fast-path = "on"} and they cannot load.
    """
    return load_as(ClientFastPath, settings, clock, peers)


def loadFor(client: Any, loader: Callable[[Any, Any, PeerList], Any] | None, reactor: Any) -> Any:
    """
    The client's fast path loaded by C{loader} (L{load} in production; C{None}: none), before
    the client opens anything.  A fast path that must run and cannot stops the client with
    one line.
    """
    if loader is None:
        return None
    try:
        return loader(client.settings, reactor, client.tunnel.peers)
    except FastPathUnavailable as e:
        raise SystemExit(f"teredo: client: fast-path = \"on\" but {e}") from None


def startFor(client: Any, fast: Any, tun: str) -> Any:
    """
    Attach the loaded C{fast} (or nothing) once C{client}'s socket is bound and its TUN
    C{tun} is open; the tunnel then tells it of every peer state change.  The running fast
    path, or C{None}.
    """
    if fast is None:
        return None
    try:
        running = fast.startClient(client, tun)
    except FastPathUnavailable as e:
        raise SystemExit(f"teredo: client: fast-path = \"on\" but {e}") from None
    if not running:
        return None
    client.tunnel.peerObserver = fast
    return fast
