"""
NAT behaviours, each built from nftables rules inside a NAT router's namespace, plus the
processes some of them need (a userspace NAT, miniupnpd and its STUN responder).

The kinds cover every row and column of RFC 6081 Figure 1 (L{FIGURE1}), so that each cell of
its connectivity matrix can be tried in the lab.  Why each kind is built the way it is
(measured on Linux, see docs/lab.md; RFC 4787 terms: EIM = endpoint-independent mapping,
ADM/APDM = address-(and port-)dependent mapping, EIF/ADF/APDF likewise for filtering):

  - C{masquerade}: plain Linux masquerade, as most home routers run it.  It keeps the source
    port, but an unsolicited inbound UDP packet (e.g. a peer's direct bubble that arrives
    before we sent anything to that peer) is answered locally and its conntrack entry gets
    confirmed; our own later packet to that peer then clashes with that entry and leaves with
    a *different* port.  Hole punching breaks in a way no RFC NAT type describes, so it is a
    mode of its own.
  - C{port-restricted} (EIM, APDF): masquerade plus a prerouting filter that drops new
    (unsolicited) inbound UDP after conntrack has looked it up (priority -200) but before NAT
    and long before the entry is confirmed, so the dropped packet leaves no state behind: the
    classic port-restricted cone.  (A filter below -200 cannot work: there conntrack has not
    run yet and every packet looks "invalid".)
  - C{cone} (EIM, EIF): masquerade plus a static mapping of every inbound UDP port on the WAN
    to the (single) client behind the NAT: since masquerade keeps ports, the mapping is
    endpoint-independent for both outbound mapping and inbound filtering (a full cone).
  - C{address-restricted} (EIM, ADF): masquerade; every outbound UDP packet records
    (destination address, external port) in a timed set, after source NAT so that the port is
    the external one; new inbound UDP from a recorded address to that port is sent on to the
    client (any source port), anything else is dropped at -150 like C{port-restricted}.
  - C{port-symmetric} (APDM, APDF; C{symmetric} is the older name of the same rules):
    masquerade with C{fully-random} ports, so each destination sees another random port, plus
    the port-restricted inbound filter.
  - C{port-preserving-symmetric} (APDM, APDF): the first mapping of an inside address and
    port keeps the port (plain masquerade); while that inside endpoint has a mapping (a timed
    set, refreshed by every outbound packet after NAT), further destinations get random ports
    from L{PP_OTHER_PORTS}, so a port below it is never handed out again by chance (RFC 6081
    section 2, "Port-Preserving NAT", and section 3.3).
  - C{sequential-symmetric} (APDM, APDF): source NAT to the WAN address and a port taken from
    an incrementing counter (C{numgen inc}) through a map onto L{SEQUENTIAL_PORTS}: every new
    (inside endpoint, destination) pair gets the previous port + 1 (RFC 6081 section 2,
    delta 1).  The map is needed because C{numgen} yields a host-order number and NAT reads
    the port in network order (without it the ports step by 256).
  - C{address-symmetric} (ADM with several external addresses, APDF): userspace, see
    L{teredonode.lab.usernat}: conntrack maps per 5-tuple, so it cannot give one mapping to
    every port of a destination host and another (address and port) to the next host.  UDP
    from the LAN is dropped at the raw hook (after the userspace NAT's packet socket has seen
    it); other protocols still use the kernel's masquerade.  The external addresses are
    L{address_pool}.
  - C{upnp-port-restricted}, C{upnp-port-symmetric}: the C{port-restricted} or
    C{port-symmetric} rules plus miniupnpd (UPnP IGD, NAT-PMP, PCP) listening on the LAN, its
    rules in table C{inet labupnp}.  The inbound filter then sits *after* destination NAT
    (priority -90) and lets through new packets that miniupnpd's mappings translated
    (C{ct status dnat}).  miniupnpd refuses to forward ports when its WAN address is reserved
    (198.51.100.0/24 is), unless STUN says the address is public: a STUN responder on the
    router's own WAN address (L{teredonode.lab.upnp}) tells it so, truthfully.
  - C{upnp-port-symmetric}, further: RFC 6081 section 3.2 describes a UPnP-enabled symmetric
    NAT whose server "reflects back the reserved mapped address/port" during qualification,
    yet which "continues to function as a symmetric NAT" for the local port's other flows.
    So one outbound flow, the one toward the Teredo server, leaves with the reserved port,
    and every other flow with a random one.  nftables cannot say "the first flow of a port
    miniupnpd reserved" (miniupnpd's mappings are rules in its own chain, not a set a rule
    could look up, and the NAT cannot tell which flow is first in any useful sense), so the
    kind names the flow: UDP toward the lab server's primary address, port 3544
    (C{server_ip}), is masqueraded without C{fully-random}, which keeps the source port; the
    client asks for external port = local port (6081 section 5.3.3), so that port is the
    reserved one.  Everything else, the server's secondary address included (qualification
    then still finds a symmetric NAT), gets C{fully-random}.  The price of naming the flow:
    a client that reserved nothing also sees its local port kept toward the server (RFC
    6081 section 5.4.3 would then call the NAT port-preserving), and a reservation on another
    external port than the local one would not be what the server sees.
  - C{none}: no NAT router at all; the topology puts the client on the Internet directly.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable

from teredonode.errors import LabError
from teredonode.lab import nodes
from teredonode.lab.proc import in_ns, run
from teredonode.lab.state import LabState

NAT_MODES: tuple[str, ...] = (
    "none",
    "cone",
    "port-restricted",
    "masquerade",
    "symmetric",
    "address-restricted",
    "port-symmetric",
    "port-preserving-symmetric",
    "sequential-symmetric",
    "address-symmetric",
    "upnp-port-restricted",
    "upnp-port-symmetric",
)

#: RFC 6081 Figure 1's rows (and columns), each with the lab kind that plays it.
FIGURE1: tuple[tuple[str, str], ...] = (
    ("Cone", "cone"),
    ("Address restricted", "address-restricted"),
    ("Port restricted", "port-restricted"),
    ("UPnP Port-restricted", "upnp-port-restricted"),
    ("UPnP Port symmetric", "upnp-port-symmetric"),
    ("Port-preserving Port-symmetric", "port-preserving-symmetric"),
    ("Sequential Port-symmetric", "sequential-symmetric"),
    ("Port-symmetric", "port-symmetric"),
    ("Address-symmetric", "address-symmetric"),
)

UPNP_MODES = frozenset({"upnp-port-restricted", "upnp-port-symmetric"})
USERSPACE_MODES = frozenset({"address-symmetric"})

TABLE = "labnat"
UPNP_TABLE = "labupnp"

# Between conntrack's lookup (-200) and destination NAT (-100): see the module docstring.
INBOUND_FILTER_PRIORITY = -150
# After destination NAT, for the UPnP kinds: miniupnpd's mappings must have been applied.
UPNP_FILTER_PRIORITY = -90

#: How long a recorded mapping (address-restricted contacts, port-preserving use) lives
#: without outbound traffic: conntrack's timeout for a UDP flow that saw replies.
MAPPING_TIMEOUT = 120

#: Ports the sequential kind hands out, in order, wrapping around.
SEQUENTIAL_PORTS = range(20000, 21000)
#: Ports the port-preserving kind gives a second and later destination.
PP_OTHER_PORTS = (49152, 65535)

#: The Teredo server port toward which C{upnp-port-symmetric} keeps the source port.
TEREDO_PORT = 3544

#: The STUN port miniupnpd asks (the responder runs on the router's own WAN address).
STUN_PORT = 3478
NATPMP_PORT = 5351


def address_pool(primary: str) -> tuple[str, ...]:
    """
    The external addresses of an address-symmetric NAT whose WAN address is C{primary}
    (198.51.100.(10+N) for router natN): C{primary} and three more, 198.51.100.(160+3(N-1)+k)
    for k = 0, 1, 2, clear of the plan's other 198.51.100.x addresses for N <= 31.
    """
    prefix, last = primary.rsplit(".", 1)
    n = int(last) - 10
    if not 1 <= n <= 31:
        raise LabError(f"no address pool for a NAT with WAN address {primary}")
    return (primary, *(f"{prefix}.{160 + 3 * (n - 1) + k}" for k in range(3)))


def ruleset(
    mode: str, *, wan: str, client_ip: str, wan_ips: tuple[str, ...] = (), server_ip: str | None = None
) -> str:
    """
    The nft script that (re)defines table C{ip labnat} (and C{inet labupnp}) for C{mode}.

    The script first creates then deletes both tables, so applying it is idempotent and
    switching modes never leaves rules of the previous mode behind.  C{wan_ips}: the router's
    WAN addresses, primary first (needed by the sequential and address-symmetric kinds).
    C{server_ip}: the Teredo server's primary address (needed by C{upnp-port-symmetric}: the
    one flow that keeps its port, see the module docstring).
    """
    if mode not in NAT_MODES or mode == "none":
        raise LabError(f"no NAT rule set for mode {mode!r} (NAT modes: {', '.join(NAT_MODES[1:])})")
    if mode in ("sequential-symmetric", "address-symmetric") and not wan_ips:
        raise LabError(f"NAT mode {mode} needs the router's WAN addresses")
    if mode == "upnp-port-symmetric" and not server_ip:
        raise LabError(f"NAT mode {mode} needs the Teredo server's address")
    udp_in = f'iifname "{wan}" meta l4proto udp'
    udp_out = f'oifname "{wan}" meta l4proto udp'
    sets: list[str] = []
    postrouting: list[str] = []
    track: list[str] = []  # filter chain after source NAT: sees external ports
    prerouting: list[str] = []  # destination NAT
    inbound: list[str] = []
    inbound_priority = INBOUND_FILTER_PRIORITY
    raw: list[str] = []

    if mode == "upnp-port-symmetric":
        # The qualification flow keeps the (reserved) port; the rest is port-symmetric.
        postrouting.append(f"{udp_out} ip daddr {server_ip} udp dport {TEREDO_PORT} masquerade")
    if mode in ("symmetric", "port-symmetric", "upnp-port-symmetric"):
        postrouting.append(f'oifname "{wan}" masquerade fully-random')
    elif mode == "port-preserving-symmetric":
        sets.append(_timed_set("pp_used", "ipv4_addr . inet_service"))
        low, high = PP_OTHER_PORTS
        postrouting.append(f"{udp_out} ip saddr . udp sport @pp_used masquerade to :{low}-{high} fully-random")
        postrouting.append(f'oifname "{wan}" masquerade')
        track.append(f"{udp_out} update @pp_used {{ ct original ip saddr . ct original proto-src }}")
    elif mode == "sequential-symmetric":
        ports = ", ".join(f"{k} : {port}" for k, port in enumerate(SEQUENTIAL_PORTS))
        postrouting.append(
            f"{udp_out} ip saddr != {_set_of(wan_ips)} snat to {wan_ips[0]} : "
            f"numgen inc mod {len(SEQUENTIAL_PORTS)} map {{ {ports} }}"
        )
        postrouting.append(f'oifname "{wan}" masquerade')
    elif mode == "address-symmetric":
        # UDP is the userspace NAT's; its own packets leave from the pool and stay as they are.
        postrouting.append(f'oifname "{wan}" ip saddr != {_set_of(wan_ips)} masquerade')
        raw.append(f'iifname != "{wan}" meta l4proto udp fib daddr type != local drop')
    else:
        postrouting.append(f'oifname "{wan}" masquerade')

    if mode == "cone":
        prerouting.append(f"{udp_in} dnat to {client_ip}")
    elif mode == "address-restricted":
        sets.append(_timed_set("contacted", "ipv4_addr . inet_service"))
        track.append(f"{udp_out} update @contacted {{ ip daddr . udp sport }}")
        inbound.append(f"{udp_in} ct state new ip saddr . udp dport != @contacted drop")
        prerouting.append(f"{udp_in} ip saddr . udp dport @contacted dnat to {client_ip}")
    elif mode in UPNP_MODES:
        inbound_priority = UPNP_FILTER_PRIORITY
        inbound.append(f"{udp_in} ct state new ct status dnat accept")
        inbound.append(f"{udp_in} ct state new drop")
    elif mode in ("port-restricted", "symmetric", "port-symmetric", "port-preserving-symmetric", "sequential-symmetric"):
        inbound.append(f"{udp_in} ct state new drop")

    lines = [
        f"table ip {TABLE}",
        f"delete table ip {TABLE}",
        f"table inet {UPNP_TABLE}",
        f"delete table inet {UPNP_TABLE}",
        f"table ip {TABLE} {{",
        *sets,
        *_chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", postrouting),
        *_chain("track", "type filter hook postrouting priority srcnat + 10; policy accept;", track),
        *_chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", prerouting),
        *_chain("inbound_filter", f"type filter hook prerouting priority {inbound_priority}; policy accept;", inbound),
        *_chain("lan_udp", "type filter hook prerouting priority raw; policy accept;", raw),
        "}",
    ]
    if mode in UPNP_MODES:
        lines += upnp_tables()
    return "\n".join(lines) + "\n"


def upnp_tables() -> list[str]:
    """
    The table miniupnpd fills (its chain names are in its config, L{upnp.miniupnpd_conf}):
    base chains that jump to its own, policy accept (the lab's filtering is C{labnat}'s).
    """
    lines = [f"table inet {UPNP_TABLE} {{"]
    for hook, chain, spec in (
        ("forward", "forward_upnp", "type filter hook forward priority filter; policy accept;"),
        ("prerouting", "prerouting_upnp", "type nat hook prerouting priority dstnat; policy accept;"),
        ("postrouting", "postrouting_upnp", "type nat hook postrouting priority srcnat; policy accept;"),
    ):
        lines += [f"  chain {hook} {{", f"    {spec}", f"    jump {chain}", "  }", f"  chain {chain} {{", "  }"]
    lines.append("}")
    return lines


def _timed_set(name: str, type_: str) -> str:
    return f"  set {name} {{ type {type_}; flags dynamic,timeout; timeout {MAPPING_TIMEOUT}s; }}"


def _set_of(addresses: tuple[str, ...]) -> str:
    return "{ " + ", ".join(addresses) + " }"


def _chain(name: str, spec: str, rules: list[str]) -> list[str]:
    if not rules:
        return []
    return [f"  chain {name} {{", f"    {spec}", *(f"    {r}" for r in rules), "  }"]


def apply(
    ns: str, mode: str, *, wan: str, client_ip: str, wan_ips: tuple[str, ...] = (), server_ip: str | None = None
) -> None:
    """
    Make the NAT in namespace C{ns} behave as C{mode}, then flush its conntrack table so that
    mappings made under the previous mode cannot leak into the new one.  (The processes some
    modes need are L{start_daemons}'s.)
    """
    script = ruleset(mode, wan=wan, client_ip=client_ip, wan_ips=wan_ips, server_ip=server_ip)
    run(in_ns(ns, ["nft", "-f", "-"]), input=script)
    flush_conntrack(ns)


def flush_conntrack(ns: str) -> None:
    """
    Forget every connection the NAT in C{ns} tracks.
    """
    run(in_ns(ns, ["conntrack", "-F"]), check=False)


def current_rules(ns: str) -> str:
    """
    The NAT router's rules as C{nft list ruleset} prints them, for status and debugging.
    """
    return run(in_ns(ns, ["nft", "list", "ruleset"])).stdout


# ---------------------------------------------------------------- processes


def daemon_names(router: str) -> tuple[str, ...]:
    """
    The lab node names of every process a NAT kind may run on C{router}.
    """
    return (f"{router}-usernat", f"{router}-stun", f"{router}-upnpd")


def start_daemons(
    state: LabState, router: str, ns: str, mode: str, *, wan_ips: tuple[str, ...], lan_net: str
) -> dict[str, nodes.Node]:
    """
    Start the processes C{mode} needs on router C{router} (namespace C{ns}), once its rules
    are in place, and return them by node name (none for the kernel-only kinds).  Returns
    only when they serve: the userspace NAT has its packet socket, miniupnpd listens.
    """
    started: dict[str, nodes.Node] = {}
    env = nodes.tree_env()
    python = sys.executable
    if mode in USERSPACE_MODES:
        name = f"{router}-usernat"
        pidfile = state.path / "run" / f"{name}.pid"
        argv = [python, "-m", "teredonode.lab.usernat", "--lan-net", lan_net, "--pool", ",".join(wan_ips),
                "--timeout", str(MAPPING_TIMEOUT)]
        node = nodes.start(state, name, ns, argv, pidfile=pidfile, env=env)
        started[name] = node
        _wait(node, lambda: "ready" in "".join(node.log_tail(3)), f"{name} did not start")
    if mode in UPNP_MODES:
        from teredonode.lab import upnp

        name = f"{router}-stun"
        argv = [python, "-m", "teredonode.lab.upnp", "stun", "--address", wan_ips[0], "--port", str(STUN_PORT)]
        node = nodes.start(state, name, ns, argv, pidfile=state.path / "run" / f"{name}.pid", env=env)
        started[name] = node
        _wait(node, lambda: _udp_listening(ns, STUN_PORT), f"{name} did not start")
        name = f"{router}-upnpd"
        conf = state.path / "conf" / f"{name}.conf"
        conf.write_text(upnp.miniupnpd_conf(wan_ips[0], lan_net, STUN_PORT, str(uuid.uuid4())))
        pidfile = state.path / "run" / f"{name}.pid"
        program = nodes.require_tool("miniupnpd")
        node = nodes.start(state, name, ns, [program, "-d", "-f", str(conf), "-P", str(pidfile)], pidfile=pidfile)
        started[name] = node
        _wait(node, lambda: _udp_listening(ns, NATPMP_PORT), f"{name} did not start")
    return started


def _udp_listening(ns: str, port: int) -> bool:
    return bool(run(in_ns(ns, ["ss", "-Hnlu", "sport", "=", f":{port}"]), check=False, timeout=10).stdout.strip())


def _wait(node: nodes.Node, ready: Callable[[], bool], failure: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if node.exit_code() is not None or time.monotonic() > deadline:
            raise LabError(f"{failure}: {' | '.join(node.log_tail(3)) or 'no output'}")
        time.sleep(0.05)
