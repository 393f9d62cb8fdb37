"""
NAT behaviours, each built from nftables rules inside a NAT router's namespace.

Why each mode is built the way it is (measured on Linux, see docs/lab.md):

  - C{masquerade}: plain Linux masquerade, as most home routers run it.  It keeps the source
    port, but an unsolicited inbound UDP packet (e.g. a peer's direct bubble that arrives
    before we sent anything to that peer) is answered locally and its conntrack entry gets
    confirmed; our own later packet to that peer then clashes with that entry and leaves with
    a *different* port.  Hole punching breaks in a way no RFC NAT type describes, so it is a
    mode of its own.
  - C{port-restricted}: masquerade plus a prerouting filter that drops new (unsolicited)
    inbound UDP after conntrack has looked it up (priority -200) but before NAT and long before
    the entry is confirmed, so the dropped packet leaves no state behind: the classic
    port-restricted cone.  (A filter below -200 cannot work: there conntrack has not run yet
    and every packet looks "invalid".)
  - C{cone}: masquerade plus a static mapping of every inbound UDP port on the WAN to the
    (single) client behind the NAT: since masquerade keeps ports, the mapping is
    endpoint-independent for both outbound mapping and inbound filtering (a full cone).
  - C{symmetric}: masquerade with C{fully-random} ports, so each destination sees another
    port, plus the port-restricted inbound filter.
  - C{none}: no NAT router at all; the topology puts the client on the Internet directly.
"""

from __future__ import annotations

from teredonode.errors import LabError
from teredonode.lab._proc import in_ns, run

NAT_MODES: tuple[str, ...] = ("none", "cone", "port-restricted", "masquerade", "symmetric")

TABLE = "labnat"

# Between conntrack's lookup (-200) and destination NAT (-100): see the module docstring.
INBOUND_FILTER_PRIORITY = -150


def ruleset(mode: str, *, wan: str, client_ip: str) -> str:
    """
    The nft script that (re)defines table C{ip labnat} for C{mode}.

    The script first creates then deletes the table, so applying it is idempotent and switching
    modes never leaves rules of the previous mode behind.
    """
    if mode not in NAT_MODES or mode == "none":
        raise LabError(f"no NAT rule set for mode {mode!r} (NAT modes: {', '.join(NAT_MODES[1:])})")
    masquerade = "masquerade fully-random" if mode == "symmetric" else "masquerade"
    lines = [
        f"table ip {TABLE}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    oifname "{wan}" {masquerade}',
        "  }",
    ]
    if mode == "cone":
        lines += [
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            f'    iifname "{wan}" meta l4proto udp dnat to {client_ip}',
            "  }",
        ]
    if mode in ("port-restricted", "symmetric"):
        lines += [
            "  chain inbound_filter {",
            f"    type filter hook prerouting priority {INBOUND_FILTER_PRIORITY}; policy accept;",
            f'    iifname "{wan}" meta l4proto udp ct state new drop',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def apply(ns: str, mode: str, *, wan: str, client_ip: str) -> None:
    """
    Make the NAT in namespace C{ns} behave as C{mode}, then flush its conntrack table so that
    mappings made under the previous mode cannot leak into the new one.
    """
    script = ruleset(mode, wan=wan, client_ip=client_ip)
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
