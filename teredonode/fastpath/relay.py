"""
The Teredo relay's kernel fast path: two BPF programs (C{bpf/teredo_relay.bpf.c}) carry the
packets of trusted peers, and this module is their control plane.

  - C{teredo_relay_rx} (XDP, on the interfaces holding the relay's IPv4 addresses and those
    holding its global IPv6 addresses, its native side) decapsulates a trusted peer's
    datagrams and forwards them toward the native side, and encapsulates native packets
    to a trusted peer as they arrive, where the kernel would forward them into the TUN;
  - C{teredo_relay_tx} (TC egress, on the relay's TUN) encapsulates what the kernel routes
    into the TUN for a trusted peer and sends it to the peer's mapping.

The C source's opening comment argues the placement and lists the checks.  The Python
relay stays the whole relay: it decides every peer state (L{teredonode.roles.tunnel}), sees
every packet the programs pass on, and is the complete fallback.  This module:

  - loads the object (one loader, L{teredonode.fastpath.libbpf}; one build path,
    L{teredonode.fastpath.program.object_path}), with the peer map sized by C{max-peers},
    before the relay opens anything (L{load}), and attaches it once the socket and the TUN
    exist (L{RelayFastPath.start});
  - fills the config map from L{teredonode.config.RelaySettings} and the host (the TUN,
    the relay's addresses and port, the served networks as the Python relay decides them,
    L{teredonode.roles.relay.servedTables});
  - is the tunnel's L{IPeerObserver}: an entry that becomes trusted (no exchange running,
    a proven IPv4 mapping) is written to the peer map once the tunnel has finished with
    the packet that proved it (so the packets it queued leave first, in order); any other
    change removes it at once;
  - before each expiry sweep, folds the times the programs last heard from and sent to each
    peer back into the peer list, so entries the fast path keeps busy are neither packed
    nor expired;
  - reads the per-CPU counters under the relay's own names (L{COUNTERS}).

Setting C{[relay] fast-path}: C{"auto"} uses it when it loads and attaches, else the Python
path; C{"on"} refuses to start without it; C{"off"} never tries.  Either way the relay logs
one line saying which.

Limits (docs/performance.md): the programs run before netfilter's input chain (rx) and
after its forward chain (tx), and the XDP program forwards without the forward chain, both
ways; with a
wildcard C{bind} and several IPv4 addresses, encapsulated datagrams leave from the address
of the interface of the default route (set C{bind} on such a host).
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from typing import Any, Callable, TypeVar, cast

from zope.interface import implementer

from teredonode.fastpath import attach_generic, is_veth, netlink
from teredonode.fastpath.libbpf import BPFError, BpfObject, load_libbpf, per_cpu_counts
from teredonode.fastpath.program import FastPathUnavailable, object_path
from teredonode.fastpath.offloads import Offloads
from teredonode.interfaces import IPeerObserver
from teredonode.logs import Logger
from teredonode.peers import Peer, PeerList

__all__ = ["COUNTERS", "SOURCE_NAME", "RelayFastPath", "load", "load_as", "start", "pack_config", "PEER"]

SOURCE_NAME = "teredo_relay.bpf.c"
RX, TX = "teredo_relay_rx", "teredo_relay_tx"
#: Sweeps (10 s each) between quiet tries of an interface that refused the XDP program.
RETRY_SWEEPS = 6

#: The programs' counter indices (their C enum, in order): the first three are the relay's
#: own counters; then the datagrams to the relay's port and the TUN packets handed on to
#: the Python relay.
COUNTERS = ("received", "delivered", "sent", "passed-udp", "passed-tun", "super-packets", "from-native")
#: Which of L{COUNTERS} the relay's C{counters} include.
MERGED = ("received", "delivered", "sent")

_MAX_LOCALS = 8
_MAX_LONGER = 8
#: struct relay_config: enabled, tun_ifindex, out_ifindex, source, port, prefix; valid_ns;
#: n_locals, n_longer; locals; first_byte; (mask, net) pairs as two 64-bit halves each;
#: segments, native.
CONFIG = struct.Struct(f"=I I I 4s 2s2x 4s Q I I {4 * _MAX_LOCALS}s 256s {32 * _MAX_LONGER}s I I")
#: struct peer: ip, port (network order), pad; last_rx, last_tx, synced (ns, CLOCK_MONOTONIC).
PEER = struct.Struct("=4s2s2xQQQ")
_KEY_SIZE = 16

log = Logger()


def _halves(value: int) -> bytes:
    """
    A 128-bit address or mask as the program compares it: the two 64-bit halves as they
    lie in memory (the packet's byte order).
    """
    return value.to_bytes(16, "big")


def pack_config(
    settings: Any,
    tunIndex: int,
    outIndex: int,
    source: str,
    port: int,
    locals_: list[str],
    enabled: bool = True,
    segments: bool = False,
    native: bool = False,
) -> bytes:
    """
    The config map's value.  C{segments}: the outgoing interface completes the inner
    checksums of what it sends as a UDP tunnel packet, a packet's partial one and those of
    the segments it cuts from a super-packet
    (L{teredonode.fastpath.offloads.Offloads.completesSegments}).  C{native}: the XDP
    program may encapsulate native packets as they arrive (the TUN forwards IPv4 for its
    route lookups, L{forwardOnTun}).  Raises
    L{FastPathUnavailable} for what the program cannot express (more served networks or
    local addresses than it has room for).
    """
    from teredonode.roles.relay import servedTables

    table, longer = servedTables(settings.serve)
    if len(longer) > _MAX_LONGER:
        raise FastPathUnavailable(f"more than {_MAX_LONGER} served networks longer than /8")
    if len(locals_) > _MAX_LOCALS:
        raise FastPathUnavailable(f"more than {_MAX_LOCALS} local IPv4 addresses (set bind)")
    pairs = b"".join(_halves(mask) + _halves(net) for mask, net in longer)
    return CONFIG.pack(
        1 if enabled else 0,
        tunIndex,
        outIndex,
        socket.inet_aton(source),
        port.to_bytes(2, "big"),
        settings.prefix_bytes,
        int(30 * 1e9),
        len(locals_),
        len(longer),
        b"".join(socket.inet_aton(a) for a in locals_),
        bytes(table),
        pairs,
        1 if segments else 0,
        1 if native else 0,
    )


def _installable(peer: Peer, state: str, queued: bool = False) -> bool:
    """
    What the fast path may carry: a trusted entry with no exchange running (nothing
    queued, unless C{queued}: the tunnel is about to release it; nothing being re-proven),
    proven at an IPv4 mapping, not a local peer.
    """
    mapping = peer.mapping
    return (
        state == "trusted"
        and peer.timer is None
        and not peer.local
        and (queued or not peer.queue)
        and mapping is not None
        and mapping[0].count(".") == 3
    )


@implementer(IPeerObserver)
class RelayFastPath:
    """
    A loaded (and, once L{attach}ed, running) fast path for one relay, and the observer of
    its tunnel's peer states.

    @param clock: the relay's reactor (C{seconds()} is the peer list's clock; C{callLater}
        defers installs to the end of the current packet's handling).
    @param peers: the tunnel's peer list.
    """

    #: The config map's value size this control plane writes.
    configSize = CONFIG.size
    #: The programs' counter names, in their C enum's order.
    counterNames: tuple[str, ...] = COUNTERS
    #: The XDP program reads its interfaces' MAC addresses from an C{ifaces} map.
    hasInterfaces = True

    def __init__(self, obj: Any, clock: Any, peers: PeerList, prefix: bytes) -> None:
        """
        Take over C{obj}, the loaded programs (a L{BpfObject}, or a stand-in with its map
        calls in tests; L{load} makes one from the compiled object), with the maps checked
        against what this control plane writes.
        """
        self._config_fd = obj.map_fd("config")
        self._counters_fd = obj.map_fd("counters")
        self._peers_fd = obj.map_fd("peers")
        self._ifaces_fd = obj.map_fd("ifaces") if self.hasInterfaces else -1
        for name, want in (("config", self.configSize), ("peers", PEER.size)):
            size = obj.value_size(name)
            if size != want:
                raise FastPathUnavailable(
                    f"the program's {name} value is {size} bytes, this control plane writes {want}"
                )
        self._cpus = obj.possible_cpus()
        self.obj = obj
        self._clock = clock
        self._peers = peers
        self._prefix = prefix
        self._pending: set[bytes] = set()
        self._flush: Any = None
        self.interfaces: list[str] = []
        #: Reads interface offloads (L{Offloads}; replaced in tests).
        self.offloads: Any = Offloads()
        #: Reads an interface's MAC address (L{hardwareAddress}; replaced in tests).
        self.macOf: Callable[[str], bytes] = hardwareAddress
        #: What the config map was last packed from (pack_config's arguments but C{enabled}
        #: and C{segments}, in order; L{start}).
        self._outgoing: tuple[Any, int, int, str, int, list[str], bool] | None = None
        #: The config's C{segments}: the outgoing interface completes inner checksums.
        self.segments = False
        #: The native side's interfaces now (L{_native_interfaces}; replaced in tests), and
        #: whether to attach in generic mode: for L{followNatives}.  The TUN's name once
        #: the TC program is on it.
        self._natives: Callable[[str], list[tuple[str, int]]] | None = None
        self._tunName = ""
        self._generic: Callable[[int], bool] = is_veth
        #: The interfaces carrying the XDP program, by ifindex: name and MAC address (as in
        #: the C{ifaces} map); and the native ones that refused it, by ifindex: the sweeps
        #: left until the next (quiet) try.
        self._xdp: dict[int, tuple[str, bytes]] = {}
        self._refused: dict[int, int] = {}
        #: An interface's name by ifindex, C{None} once it is gone (replaced in tests).
        self.nameOf: Callable[[int], str | None] = _nameOf
        #: The last failure of a sweep's follow-up that was logged (each logged once).
        self._followFailure = ""

    @classmethod
    def load(cls, settings: Any, clock: Any, peers: PeerList, path: Path | None = None) -> RelayFastPath:
        """The programs loaded from the compiled object (closed again if anything fails)."""
        obj = BpfObject(
            load_libbpf(), str(path or object_path(source_name=SOURCE_NAME)), {"peers": settings.max_peers}
        )
        try:
            return cls(obj, clock, peers, settings.prefix_bytes)
        except BaseException:
            obj.close()
            raise

    # -- set-up --------------------------------------------------------------------------------

    #: C{fast-path} as loaded: C{"on"} makes a failure to attach fatal.
    mode = "auto"

    def start(
        self,
        settings: Any,
        tun: str,
        port: int,
        plan: Callable[[str], Any] | None = None,
        natives: Callable[[str], list[tuple[str, int]]] | None = None,
        forward: Callable[[str], None] | None = None,
    ) -> bool:
        """
        Configure and attach to the host: XDP where the relay's IPv4 addresses are and on its
        native side (C{natives}: the interfaces holding global IPv6 addresses), TC on C{tun}
        (open and routed), the relay's socket bound to C{port}.  Native packets are
        encapsulated in XDP only once C{forward} turned IPv4 forwarding on for the TUN
        (L{forwardOnTun}).  Logs the one line saying which path carries trusted peers.
        C{False} (and closed) when it cannot run under C{"auto"}.

        @raise FastPathUnavailable: it cannot run under C{"on"}.
        """
        early = ""
        try:
            locals_, rx, source, outIndex = (plan or _plan)(settings.bind)
            tunIndex = socket.if_nametoindex(tun)
            xdp = rx + [i for i in (natives or _native_interfaces)(tun) if i not in rx]
            try:
                (forward or forwardOnTun)(tun)
                native = True
            except OSError as e:
                native, early = False, f"; native packets through the TUN (IPv4 forwarding on {tun}: {e.strerror or e})"
            self._outgoing = (settings, tunIndex, outIndex, source, port, locals_, native)
            self.segments = self.offloads.completesSegments(outIndex)
            self._natives = natives or _native_interfaces
            self._generic = attach_generic(settings.xdp_mode)
            self.configure(self._packed())
            self.attach(xdp, (tun, tunIndex), self._generic)
        except (FastPathUnavailable, BPFError, OSError, ImportError) as e:
            self.close()
            if self.mode == "on":
                raise FastPathUnavailable(str(e)) from None
            log.info("Trusted peers: Python path (kernel fast path unavailable: {reason})", reason=str(e))
            return False
        log.info(
            "Trusted peers: kernel fast path (XDP on {rx}, TC on {tun}{early}), the rest on the Python path",
            rx=", ".join(name for name, _ in xdp),
            tun=tun,
            early=early,
        )
        return True

    @property
    def native(self) -> bool:
        """The config's C{native}: the XDP program encapsulates native packets."""
        return bool(self._outgoing and self._outgoing[6])

    def _packed(self) -> bytes:
        """The config map's value from L{_outgoing} and L{segments}."""
        assert self._outgoing is not None
        settings, tunIndex, outIndex, source, port, locals_, native = self._outgoing
        return pack_config(
            settings, tunIndex, outIndex, source, port, locals_, segments=self.segments, native=native
        )

    def configure(self, config: bytes) -> None:
        self.obj.update(self._config_fd, (0).to_bytes(4, "little"), config)

    def attach(
        self, rx: list[tuple[str, int]], tun: tuple[str, int], generic: Callable[[int], bool] = is_veth
    ) -> None:
        """
        XDP on each of C{rx} (its MAC address in the C{ifaces} map first), TC egress on
        C{tun}.
        """
        for name, index in rx:
            self._attachXdp(name, index, generic)
        self.obj.attach_tcx(TX, tun[1], egress=True)
        self._tunName = tun[0]
        self._relist()

    def _attachXdp(self, name: str, index: int, generic: Callable[[int], bool]) -> None:
        """
        XDP on one interface, then its MAC address in the C{ifaces} map: until the entry is
        there the program passes the interface's frames, and no other interface's
        program redirects to it (so never to an interface without the program).
        """
        mac = self.macOf(name) if self.hasInterfaces else b""
        self.obj.attach_xdp(RX, index, generic(index))
        try:
            if self.hasInterfaces:
                self.obj.update(self._ifaces_fd, _ifaceKey(index), mac.ljust(8, b"\x00"))
        except BaseException:
            self.obj.detach_xdp(index)
            raise
        self._xdp[index] = (name, mac)
        self._relist()

    def _detachXdp(self, index: int) -> None:
        """The program off C{index} (gone, renamed or re-numbered), its map entry first."""
        self._xdp.pop(index)
        if self.hasInterfaces:
            self.obj.delete(self._ifaces_fd, _ifaceKey(index))
        self.obj.detach_xdp(index)
        self._relist()

    def _relist(self) -> None:
        """C{interfaces} (the status's): the XDP ones, then the TUN once TC is on it."""
        self.interfaces = [name for name, _ in self._xdp.values()] + ([self._tunName] if self._tunName else [])

    def close(self) -> None:
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self._pending.clear()
        self.obj.close()
        self.interfaces = []
        self._xdp.clear()
        self._refused.clear()
        self._tunName = ""
        self._natives = None

    # -- time ----------------------------------------------------------------------------------

    def _offset(self) -> float:
        """
        Peer-list time minus the programs' (C{CLOCK_MONOTONIC}) time, in seconds.
        """
        return float(self._clock.seconds()) - time.monotonic()

    # -- IPeerObserver ---------------------------------------------------------------------------

    #: Only Teredo peers are carried (a relay's native side is the kernel's own routing).
    teredoOnly = True

    def peerChanged(self, peer: Peer, state: str) -> None:
        address = peer.address
        if self.teredoOnly and address[:4] != self._prefix:
            return
        self._pending.discard(address)
        self._remove(peer, state != "removed")
        if self.installable(peer, state, queued=True):
            self._pending.add(address)
            if self._flush is None:
                self._flush = self._clock.callLater(0, self._install)

    def installable(self, peer: Peer, state: str, queued: bool = False) -> bool:
        """
        May the programs carry C{peer}'s packets (C{queued}: the tunnel is about to release
        its queue)?  A role's fast path adds what its own Python path does differently.
        """
        return _installable(peer, state, queued)

    def _remove(self, peer: Peer, fold: bool) -> None:
        """
        Take C{peer} out of the map, first folding the times the programs kept into it.
        """
        key = peer.address
        if fold:
            raw = self.obj.lookup(self._peers_fd, key, PEER.size)
            if raw is None:
                return
            _, _, rx, tx, _ = PEER.unpack(raw)
            self._fold(peer, rx, tx, self._offset())
        self.obj.delete(self._peers_fd, key)

    @staticmethod
    def _fold(peer: Peer, rx: int, tx: int, offset: float) -> None:
        heard, sent = rx / 1e9 + offset, tx / 1e9 + offset
        if rx and heard > peer.last_rx:
            peer.heard(heard)
        if tx and sent > peer.last_tx:
            peer.last_tx = sent

    def _install(self) -> None:
        """
        Write the entries that became trusted during the reactor turn that just ended.
        """
        from teredonode.roles.tunnel import peerState

        self._flush = None
        pending, self._pending = self._pending, set()
        self.installing()
        offset = self._offset()
        for address in pending:
            peer = self._peers.get(address)
            if peer is None or not self.installable(peer, peerState(peer)):
                continue
            mapping = peer.mapping
            assert mapping is not None
            rx = max(0, int((peer.last_rx - offset) * 1e9))
            tx = max(0, int((peer.last_tx - offset) * 1e9))
            value = PEER.pack(socket.inet_aton(mapping[0]), mapping[1].to_bytes(2, "big"), rx, tx, max(rx, tx))
            try:
                self.obj.update(self._peers_fd, address, value)
            except BPFError:
                pass  # the map is full: this peer stays on the Python path

    def installing(self) -> None:
        """
        Called before entries are written: a role whose configuration follows its state (a
        client's address) brings the config map up to date here.
        """

    def sweeping(self) -> None:
        """
        Fold what the programs heard and sent since the last sweep into the peer list (only
        entries whose times moved are touched); entries the list no longer holds go.  The
        outgoing interface's offloads and the native side's interfaces are read again first
        (L{followOffloads}, L{followNatives}).
        """
        for follow in (self.followOffloads, self.followNatives):
            try:
                follow()
            except Exception as e:  # the sweep (and peers' expiry) must go on whatever it is
                if repr(e) != self._followFailure:
                    self._followFailure = repr(e)
                    log.warn(
                        "Fast path: reading the host failed ({error}); the programs keep their last settings",
                        error=repr(e),
                    )
        offset = self._offset()
        peers = self._peers
        for key, raw in self.obj.items(self._peers_fd, _KEY_SIZE, PEER.size):
            ip, port, rx, tx, synced = PEER.unpack(raw)
            latest = max(rx, tx)
            if latest <= synced:
                continue
            peer = peers.get(key)
            if peer is None:
                self.obj.delete(self._peers_fd, key)
                continue
            self._fold(peer, rx, tx, offset)
            try:
                self.obj.update(self._peers_fd, key, PEER.pack(ip, port, rx, tx, latest))
            except BPFError:
                pass

    def followOffloads(self) -> None:
        """
        Bring the config's C{segments} up to the outgoing interface's offloads: what the
        programs may send as UDP tunnel packets depends on them (L{Offloads}), and an operator
        may switch them while the relay runs (C{ethtool -K IF tx off}).  Read at every sweep:
        one ioctl and one C{stat}.
        """
        if self._outgoing is None:
            return
        outIndex = self._outgoing[2]
        segments = self.offloads.completesSegments(outIndex)
        if segments != self.segments:
            self.segments = segments
            self.configure(self._packed())
            offloadsChanged(outIndex, segments)

    def followNatives(self) -> None:
        """
        Attach the XDP program to native-side interfaces that appeared since start (an IPv6
        address configured after the daemon started, by SLAAC, DHCPv6 or an operator, or an
        interface brought up later), and let go of the ones that are gone (or renamed, or
        whose index now names another).  Without it their native packets would take the TUN
        for as long as the relay runs: correct, only slower.  One log line per change; an
        interface that refuses the program is logged once and tried again, quietly, every
        L{RETRY_SWEEPS} sweeps while it holds its address.  A changed MAC address is
        written to the map.  Read at every sweep: one netlink query, and per interface one
        name lookup and one sysfs read.
        """
        if self._natives is None:
            return
        for index, (name, mac) in list(self._xdp.items()):
            if self.nameOf(index) != name:
                self._detachXdp(index)
                log.info("Fast path: {name} is gone; XDP no longer on it", name=name)
                continue
            if self.hasInterfaces:
                try:
                    now = self.macOf(name)
                except OSError:
                    continue
                if now != mac:
                    self.obj.update(self._ifaces_fd, _ifaceKey(index), now.ljust(8, b"\x00"))
                    self._xdp[index] = (name, now)
        found = self._natives(self._tunName)
        present = {index for _, index in found}
        for index in [i for i in self._refused if i not in present]:
            del self._refused[index]
        for name, index in found:
            if index in self._xdp:
                continue
            wait = self._refused.get(index)
            if wait is not None and wait > 0:
                self._refused[index] = wait - 1
                continue
            try:
                self._attachXdp(name, index, self._generic)
            except (BPFError, OSError) as e:
                if wait is None:
                    log.info(
                        "Fast path: XDP not attached to {name} ({reason}); its native packets take the TUN",
                        name=name,
                        reason=e.strerror or str(e),
                    )
                self._refused[index] = RETRY_SWEEPS
                continue
            self._refused.pop(index, None)
            log.info("Fast path: XDP now also on {name} (a native-side interface)", name=name)

    # -- status ----------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """
        Each of L{counterNames}, summed over CPUs.
        """
        return per_cpu_counts(self.obj, self._counters_fd, self.counterNames, self._cpus)


def offloadsChanged(index: int, segments: bool) -> None:
    """
    The one log line saying that the outgoing interface C{index} changed what the programs
    may encapsulate (L{RelayFastPath.followOffloads}).
    """
    try:
        name = socket.if_indextoname(index)
    except OSError:
        name = f"interface {index}"
    log.info(
        "Fast path: {name}'s checksum offload changed; packets with partial checksums and TCP "
        "super-packets now {where}",
        name=name,
        where="carried by the kernel fast path" if segments else "handed to the Python path",
    )


def forwardOnTun(tun: str, root: str = "/proc/sys") -> None:
    """
    Turn IPv4 forwarding on for the relay's TUN alone (C{net.ipv4.conf.TUN.forwarding}):
    the XDP program's route lookup toward a peer's mapping is made as for a packet from the
    TUN, and the kernel answers it only where forwarding is on.  The TUN never carries
    IPv4 (it holds IPv6 only, and the relay writes only IPv6 to it), so nothing is forwarded
    because of it; it goes with the TUN.  Raises C{OSError}.
    """
    with open(f"{root}/net/ipv4/conf/{tun}/forwarding", "w") as f:
        f.write("1")


def hardwareAddress(name: str) -> bytes:
    """The six bytes of interface C{name}'s MAC address (sysfs).  Raises C{OSError}."""
    with open(f"/sys/class/net/{name}/address") as f:
        text = f.read().strip()
    try:
        mac = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        mac = b""
    if len(mac) != 6:
        raise OSError(f"{name} has no Ethernet address ({text!r})")
    return mac


def _nameOf(index: int) -> str | None:
    """Interface C{index}'s name, C{None} if there is none."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def _ifaceKey(index: int) -> bytes:
    """The C{ifaces} map's key for interface C{index} (a C{__u32}, host order)."""
    return index.to_bytes(4, "little")


def isEthernet(index: int) -> bool:
    """
    Is interface C{index} an Ethernet one (C{ARPHRD_ETHER})?  The XDP program reads an
    Ethernet header; on an L3 device (a tunnel, WireGuard, PPP) generic XDP hands it the
    packet itself, which it must never take for one.
    """
    try:
        with open(f"/sys/class/net/{socket.if_indextoname(index)}/type") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _native_interfaces(tun: str) -> list[tuple[str, int]]:
    """
    The relay's native side: every Ethernet interface holding a global IPv6 address but the
    TUN (name, index).
    """
    out = set()
    for msg in netlink(lambda ipr: ipr.get_addr(family=socket.AF_INET6)):
        index = msg["index"]
        if msg["scope"] == 0 and isEthernet(index):  # RT_SCOPE_UNIVERSE: global
            name = socket.if_indextoname(index)
            if name != tun:
                out.add((name, index))
    return sorted(out)


def _host_addresses() -> list[tuple[str, int, str]]:
    """
    Every IPv4 address of the host but loopback's: (address, ifindex, interface name).
    """
    out = []
    for msg in netlink(lambda ipr: ipr.get_addr(family=socket.AF_INET)):
        address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if address and not address.startswith("127."):
            index = msg["index"]
            out.append((address, index, socket.if_indextoname(index)))
    return out


def _default_interface() -> int | None:
    """
    The interface of the IPv4 default route, if there is one.
    """
    for route in netlink(lambda ipr: ipr.get_default_routes(family=socket.AF_INET)):
        index = route.get_attr("RTA_OIF")
        if index:
            return int(index)
    return None


def _plan(bind: str) -> tuple[list[str], list[tuple[str, int]], str, int]:
    """
    From the host: the addresses the relay's socket receives on, the Ethernet interfaces
    holding them (name, index; the XDP program's, L{isEthernet}), and the source address and
    interface of encapsulated datagrams.
    """
    held = _host_addresses()
    if bind not in ("", "0.0.0.0"):
        held = [h for h in held if h[0] == bind]
        if not held:
            raise FastPathUnavailable(f"no interface holds {bind}")
    if not held:
        raise FastPathUnavailable("the host has no IPv4 address")
    locals_ = sorted({h[0] for h in held})
    rx = sorted({(h[2], h[1]) for h in held if isEthernet(h[1])})
    default = _default_interface() if bind in ("", "0.0.0.0") else None
    source = next((h for h in held if h[1] == default), held[0])
    return locals_, rx, source[0], source[1]


_Kind = TypeVar("_Kind", bound="RelayFastPath")


def load_as(kind: type[_Kind], settings: Any, clock: Any, peers: PeerList) -> _Kind | None:
    """
    Load C{kind}'s programs as C{settings.fast_path} asks (the relay's, or a role's built on
    them), logging the one line when the Python path runs (C{"off"}, or C{"auto"} and the
    programs cannot load).

    @raise FastPathUnavailable: C{fast-path = "on"} and they cannot load.
    """
    mode = settings.fast_path
    if mode == "off":
        log.info("Trusted peers: Python path (fast-path = \"off\")")
        return None
    try:
        fast = cast(_Kind, kind.load(settings, clock, peers))
    except (FastPathUnavailable, BPFError, OSError) as e:
        if mode == "on":
            raise FastPathUnavailable(str(e)) from None
        log.info("Trusted peers: Python path (kernel fast path unavailable: {reason})", reason=str(e))
        return None
    fast.mode = mode
    return fast


def load(settings: Any, clock: Any, peers: PeerList) -> RelayFastPath | None:
    """
    L{load_as} for the relay, before it opens anything: the object's verification takes a
    while, and a relay whose TUN is already routed would meanwhile let the host's packets
    pile up unread (and overflow the peer queues of the first peers it bubbles).
    L{RelayFastPath.start} then attaches them, once the TUN and the socket exist.

    @raise FastPathUnavailable: C{fast-path = "on"} and they cannot load.
    """
    return load_as(RelayFastPath, settings, clock, peers)


def start(settings: Any, clock: Any, peers: PeerList, tun: str, port: int) -> RelayFastPath | None:
    """
    L{load}, then L{RelayFastPath.start}: the fast path running, or L{None}.
    """
    fast = load(settings, clock, peers)
    if fast is not None and not fast.start(settings, tun, port):
        return None
    return fast
