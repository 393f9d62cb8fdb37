"""
The Teredo server's kernel fast path: an XDP program (C{bpf/teredo_server.bpf.c}) answers
plain qualification Router Solicitations at the network driver; this package is its control
plane.

The Python server stays the whole server: it binds its sockets, handles every datagram the
program passes on (secure qualification, bubbles, echo, anything unusual or malformed), and
remains the complete fallback when the program cannot load.  This package only:

  - finds (or compiles) and loads the object, with C{rs_buckets} sized by C{max-sources};
  - fills the config map from L{teredonode.config.ServerSettings} and the RA the server
    itself encodes (one encoder for both paths), and the global RA budget, full;
  - attaches the program to every interface holding the primary or secondary address,
    through BPF links (a crashed server leaves nothing behind);
  - reads the per-CPU counters, under the server's own counter and drop names
    (L{COUNTERS}), so C{teredo status} shows one truth.

Setting C{[server] fast-path}: C{"auto"} uses it when it loads and attaches, else runs the
Python path; C{"on"} refuses to start without it; C{"off"} never tries.  Either way the
server logs one line saying which path serves Router Solicitations and why.

Limits of the split (docs/performance.md): the program and the Python server keep separate
rate-limit buckets and separate global budgets, so an RS the program answers and one only
the Python server handles (secure, unusual) are charged apart; and XDP runs before
netfilter, so a firewall rule dropping Teredo on the server's addresses does not stop the
program (detach it, or set C{fast-path = "off"}).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable

from teredonode.fastpath.libbpf import BPFError, BpfObject, load_libbpf, per_cpu_counts
from teredonode.fastpath.program import (
    CONFIG,
    PROGRAM,
    FastPathUnavailable,
    object_path,
    pack_budget,
    pack_config,
)
from teredonode.logs import Logger

__all__ = ["COUNTERS", "MODES", "FastPath", "FastPathUnavailable", "start"]

#: The program's counter indices (its C enum, in order; a unit test compares them): the
#: first three are server counters, the next two server drop reasons, the last is how many
#: datagrams to port 3544 of ours the program handed on to the Python server.
COUNTERS = ("received", "rs", "ra", "rate-limited-rs", "rate-limited-ra-budget", "passed")
#: Which of L{COUNTERS} are drop reasons of L{teredonode.roles.server.DROP_REASONS}.
DROPS = frozenset({"rate-limited-rs", "rate-limited-ra-budget"})

MODES = ("auto", "on", "off")

_ZERO = (0).to_bytes(4, "little")

log = Logger()


def _interfaces(addresses: tuple[str, ...]) -> list[tuple[str, int]]:
    """
    The interfaces (name, index) holding any of C{addresses}.
    """
    from pyroute2 import IPRoute

    found: dict[int, str] = {}
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET):
            if msg.get_attr("IFA_LOCAL") in addresses or msg.get_attr("IFA_ADDRESS") in addresses:
                index = msg["index"]
                found[index] = socket.if_indextoname(index)
    return sorted((name, index) for index, name in found.items())


def netlink(query: Callable[[Any], Any]) -> list[Any]:
    """
    The messages of one pyroute2 query (C{query(ipr)}), its failure raised as the
    C{OSError} the callers handle.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            return list(query(ipr))
    except NetlinkError as e:
        raise OSError(getattr(e, "code", 0) or 0, f"netlink: {e}") from None


def is_veth(index: int) -> bool:
    """
    Native XDP on a veth hands XDP_TX frames to its peer only when the peer runs an XDP
    program too (otherwise they wait in the peer's ring, unanswered); generic XDP transmits
    them as ordinary packets.  So on veth (containers, namespaces, the lab) the program is
    attached in generic mode.
    """
    links = netlink(lambda ipr: ipr.get_links(index))
    info = links[0].get_attr("IFLA_LINKINFO") if links else None
    return info is not None and info.get_attr("IFLA_INFO_KIND") == "veth"


def attach_generic(mode: str) -> Callable[[int], bool]:
    """
    Whether to attach in generic mode, per interface, as the C{xdp-mode} setting says.
    """
    if mode == "native":
        return lambda index: False
    if mode == "generic":
        return lambda index: True
    return is_veth


class FastPath:
    """
    A loaded (and, once L{attach}ed, running) fast path for one server.
    """

    def __init__(self, settings: Any, ra_packet: bytes, path: Path | None = None) -> None:
        obj = BpfObject(load_libbpf(), str(path or object_path()), {"rs_buckets": settings.max_sources})
        try:
            self._config_fd = obj.map_fd("config")
            self._counters_fd = obj.map_fd("counters")
            self._budget_fd = obj.map_fd("ra_budget")
            size = obj.value_size("config")
            value = pack_config(settings, ra_packet)
            if size != len(value):
                raise FastPathUnavailable(f"the program's config is {size} bytes, this control plane writes {len(value)}")
            self._cpus = obj.possible_cpus()
        except BaseException:
            obj.close()
            raise
        self.obj = obj
        self.interfaces: list[str] = []
        self.configure(settings, ra_packet)

    def configure(self, settings: Any, ra_packet: bytes) -> None:
        """
        Write the config map and refill the global budget (a reload starts it full, as the
        Python server's fresh limiter does).  Settings the program cannot express (a rate
        below its resolution) switch it to passing everything to the Python server, with one
        log line.  C{max-sources} keeps the size it had at start (the map is sized on load).
        """
        try:
            config = pack_config(settings, ra_packet)
        except FastPathUnavailable as e:
            log.info("Router Solicitations: Python path (XDP fast path disabled: {reason})", reason=str(e))
            config = bytes(CONFIG.size)
        self.obj.update(self._budget_fd, _ZERO, pack_budget(settings, time.monotonic_ns()))
        self.obj.update(self._config_fd, _ZERO, config)

    def attach(self, interfaces: list[tuple[str, int]], generic: Callable[[int], bool] = is_veth) -> None:
        for name, index in interfaces:
            self.obj.attach_xdp(PROGRAM, index, generic(index))
            self.interfaces.append(name)

    def counts(self) -> dict[str, int]:
        """
        Each of L{COUNTERS}, summed over CPUs.
        """
        return per_cpu_counts(self.obj, self._counters_fd, COUNTERS, self._cpus)

    def close(self) -> None:
        """
        Detach from every interface and free the program and maps.
        """
        self.obj.close()
        self.interfaces = []


def start(
    settings: Any,
    ra_packet: bytes,
    interfaces: Callable[[tuple[str, ...]], list[tuple[str, int]]] = _interfaces,
) -> FastPath | None:
    """
    Start the fast path as C{settings.fast_path} asks, logging one line on which path
    answers Router Solicitations and why.

    @param ra_packet: the RA the Python server sends (any destination).
    @param interfaces: finds the interfaces holding the given addresses (injected in tests).
    @raise FastPathUnavailable: C{fast-path = "on"} and it cannot run.
    """
    mode = settings.fast_path
    if mode == "off":
        log.info("Router Solicitations: Python path (fast-path = \"off\")")
        return None
    fast: FastPath | None = None
    try:
        found = interfaces((settings.primary, settings.secondary))
        if not found:
            raise FastPathUnavailable(
                f"no interface holds {settings.primary} or {settings.secondary}"
            )
        fast = FastPath(settings, ra_packet)
        fast.attach(found, attach_generic(settings.xdp_mode))
    except (FastPathUnavailable, BPFError, OSError, ImportError) as e:
        if fast is not None:
            fast.close()
        reason = str(e)
        if mode == "on":
            raise FastPathUnavailable(reason) from None
        log.info("Router Solicitations: Python path (XDP fast path unavailable: {reason})", reason=reason)
        return None
    log.info(
        "Router Solicitations: XDP fast path on {interfaces}, the rest on the Python path",
        interfaces=", ".join(fast.interfaces),
    )
    return fast
