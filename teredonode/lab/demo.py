"""
C{teredo lab demo}: build the lab, start every role, ping every path, print a table, tear down.

Exit status 0 only when every applicable path works.  Roles that do not exist yet are detected
the only honest way -- start the node and see whether it stays up -- and reported per row
("role not built yet") rather than as an obscure failure.  C{--with-miredo server,relay,client}
puts Miredo in those roles; Miredo has no host-specific relay, so with Miredo the dualhost row
runs only if our host-specific relay exists, and is marked "n/a" otherwise.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from teredonode.errors import LabError
from teredonode.lab.lab import Lab
from teredonode.lab.nodes import Node

MIREDO_ROLES = ("server", "relay", "client")
STAY_UP_SECONDS = 3.0
QUALIFY_TIMEOUT = 20.0
PING_COUNT = 5
RELAY_TUN = "teredo-relay"
HOST_RELAY_TUN = "teredo-hr"
NOT_BUILT_MARKERS = ("not implemented", "Unknown command: teredo", "No module named")


@dataclass
class DemoNode:
    """
    One node of the demo and what became of it.
    """

    name: str
    host: str
    role: str
    impl: str  # "teredonode" or "miredo"
    node: Node | None = None
    status: str = "not started"  # "up", "role not built yet", "failed: ...", "not qualified"
    address: str | None = None  # a client's Teredo address
    qualified_after: float | None = None  # seconds from start to Teredo address

    @property
    def up(self) -> bool:
        return self.status == "up"


@dataclass
class Row:
    path: str
    src: str
    dst: str  # host name; its address is resolved at run time
    needs: tuple[str, ...]
    result: str = ""
    ok: bool | None = None  # None: not applicable (does not count)
    first: str = "-"
    median: str = "-"
    via: str = "-"
    counts: bool = True
    #: What carries this path: "RFC 4380", an RFC 6081 extension ("SNS", "HP"), or "-"
    #: where RFC 6081 Figure 1 says there is no connectivity.
    carried: str = "RFC 4380"
    #: Counted only when every node it needs is ours (paths through symmetric NATs: what
    #: Miredo does there is shown, not held against it).
    ours_only: bool = False


@dataclass
class PingResult:
    sent: int
    rtts: dict[int, float] = field(default_factory=dict)  # icmp_seq -> ms

    @property
    def received(self) -> int:
        return len(self.rtts)


def parse_ping(output: str, sent: int) -> PingResult:
    """
    The per-sequence RTTs of iputils C{ping} output.
    """
    result = PingResult(sent)
    for line in output.splitlines():
        if "icmp_seq=" in line and "time=" in line:
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            try:
                result.rtts[int(fields["icmp_seq"])] = float(fields["time"])
            except (KeyError, ValueError):
                continue
    return result


def _status_of(node: Node) -> str:
    if node.exit_code() is None:
        return "up"
    tail = node.log_tail(20)
    if any(marker in line for line in tail for marker in NOT_BUILT_MARKERS):
        return "role not built yet"
    last = tail[-1] if tail else f"exit status {node.exit_code()}"
    return f"failed: {last.strip()[:80]}"


def plan_nodes(lab: Lab, miredo_roles: Sequence[str]) -> list[DemoNode]:
    """
    Which node runs where, and whether it is ours or Miredo's.
    """
    for role in miredo_roles:
        if role == "host-relay":
            raise LabError("Miredo has no host-specific relay (it can play server, relay, client)")
        if role not in MIREDO_ROLES:
            raise LabError(f"--with-miredo: unknown role {role!r} (Miredo can play server, relay, client)")

    def impl(role: str) -> str:
        return "miredo" if role in miredo_roles else "teredonode"

    plan = [DemoNode("server", "server", "server", impl("server")), DemoNode("relay", "relay", "relay", impl("relay"))]
    for client in lab.plan.clients():
        plan.append(DemoNode(client.name, client.name, "client", impl("client")))
    plan.append(DemoNode("host-relay", "dualhost", "host-relay", "teredonode"))
    return plan


def plan_rows(lab: Lab) -> list[Row]:
    clients = [c.name for c in lab.plan.clients()]
    rows: list[Row] = []
    for c in clients[:2]:
        rows.append(Row(f"{c} -> v6host", c, "v6host", ("server", "relay", c)))
        rows.append(Row(f"v6host -> {c}", "v6host", c, ("server", "relay", c)))
    if len(clients) >= 2:
        a, b = clients[:2]
        rows.append(Row(f"{a} -> {b} (across both NATs)", a, b, ("server", a, b)))
        rows.append(Row(f"{b} -> {a} (across both NATs)", b, a, ("server", a, b)))
    if clients:
        rows.append(Row(f"dualhost -> {clients[0]} (host-specific relay)", "dualhost", clients[0], ("server", clients[0], "host-relay")))
    rows += _symmetric_rows(lab)
    rows += _hairpin_rows(lab)
    return rows


def _hairpin_rows(lab: Lab) -> list[Row]:
    """
    Two clients behind one NAT that does not hairpin, on two subnets (local discovery does
    not cross): carried by RFC 6081 Hairpinning, which only our client runs.
    """
    hosts = lab.plan.clients()
    for inner in hosts:
        if inner.gateway is None:
            continue
        first = next((h for h in hosts if h.behind == inner.behind and h.gateway is None), None)
        if first is None:
            continue
        a, b = first.name, inner.name
        what = "two clients behind one non-hairpinning NAT"
        return [
            Row(f"{a} -> {b} ({what})", a, b, ("server", a, b), carried="HP", ours_only=True),
            Row(f"{b} -> {a} ({what})", b, a, ("server", a, b), carried="HP", ours_only=True),
        ]
    return []


def _symmetric_rows(lab: Lab) -> list[Row]:
    """
    Paths of a client behind a symmetric NAT (RFC 6081 Figure 1): to and from v6host through
    the relay and to and from a client behind a cone NAT, both carried by Symmetric NAT
    Support; to and from a port-restricted one, where the RFC says no.
    """
    kinds = {c.name: (c.nat_mode or "none") for c in lab.plan.clients()}
    symmetric = [name for name, kind in kinds.items() if "symmetric" in kind]
    if not symmetric:
        return []
    s = symmetric[0]
    rows = [
        Row(f"{s} -> v6host (symmetric NAT)", s, "v6host", ("server", "relay", s), carried="SNS", ours_only=True),
        Row(f"v6host -> {s} (symmetric NAT)", "v6host", s, ("server", "relay", s), carried="SNS", ours_only=True),
    ]
    cone = next((n for n, k in kinds.items() if k in ("cone", "none")), None)
    if cone is not None:
        rows.append(Row(f"{s} -> {cone} (symmetric -> {kinds[cone]})", s, cone, ("server", s, cone), carried="SNS", ours_only=True))
        rows.append(Row(f"{cone} -> {s} ({kinds[cone]} -> symmetric)", cone, s, ("server", s, cone), carried="SNS", ours_only=True))
    restricted = next((n for n, k in kinds.items() if k == "port-restricted"), None)
    if restricted is not None:
        rows.append(Row(f"{s} -> {restricted} (symmetric -> port-restricted)", s, restricted, ("server", s, restricted), carried="-", ours_only=True))
    return rows


def _tun_packets(lab: Lab, host: str, interface: str) -> int:
    """
    Packets through a tunnel interface (0 when it does not exist): tells relay from direct.
    """
    out = lab.exec(
        host,
        ["cat", f"/sys/class/net/{interface}/statistics/rx_packets", f"/sys/class/net/{interface}/statistics/tx_packets"],
        timeout=10,
    )
    if out.returncode != 0:
        return 0
    return sum(int(x) for x in out.stdout.split())


def _fmt_ms(ms: float) -> str:
    return f"{ms:.2f} ms"


def run_row(lab: Lab, row: Row, nodes: dict[str, DemoNode], with_miredo: bool) -> None:
    """
    Ping along one path (unless a node it needs is missing) and fill in the row.
    """
    if row.needs and "host-relay" in row.needs and with_miredo and not nodes["host-relay"].up:
        row.result, row.ok, row.counts = (
            f"n/a with Miredo: Miredo has no host-specific relay (ours: {nodes['host-relay'].status})",
            None,
            False,
        )
        return
    if row.carried == "-":
        row.counts = False  # RFC 6081 Figure 1: no connectivity; shown for what it is
    elif row.ours_only and any(nodes[n].impl != "teredonode" for n in row.needs if n in nodes):
        row.counts = False
    missing = [n for n in row.needs if not nodes[n].up]
    if missing:
        reasons = sorted({f"{nodes[n].role}: {nodes[n].status}" for n in missing})
        row.result, row.ok = "; ".join(reasons), False
        return
    dst = nodes[row.dst].address if row.dst in nodes else lab.ipv6(row.dst)
    assert dst is not None
    relay_before = _tun_packets(lab, "relay", RELAY_TUN)
    hr_before = _tun_packets(lab, "dualhost", HOST_RELAY_TUN)
    ping = lab.exec(
        row.src,
        ["ping", "-6", "-n", "-c", str(PING_COUNT), "-i", "0.2", "-W", "2", "-w", "8", dst],
        timeout=20,
    )
    result = parse_ping(ping.stdout, PING_COUNT)
    relay_used = _tun_packets(lab, "relay", RELAY_TUN) > relay_before
    hr_used = _tun_packets(lab, "dualhost", HOST_RELAY_TUN) > hr_before
    if result.received:
        row.via = (
            f"relay {lab.ipv4('relay')}" if relay_used else "direct (host-specific relay)" if hr_used else "direct"
        )
    # Teredo may legitimately lose the very first packet (queued behind bubbles); more is failure.
    row.ok = result.received >= PING_COUNT - 1
    verdict = "ok" if row.ok else "no" if row.carried == "-" else "FAIL"
    # With -w, ping keeps sending until PING_COUNT replies came: say how many it sent.
    sent = max(PING_COUNT, max(result.rtts, default=0))
    row.result = f"{verdict} {result.received}/{sent}"
    if result.rtts:
        first_seq = min(result.rtts)
        row.first = _fmt_ms(result.rtts[first_seq]) + ("" if first_seq == 1 else f" (seq {first_seq})")
        row.median = _fmt_ms(statistics.median(result.rtts.values()))


def _start(lab: Lab, n: DemoNode) -> None:
    if n.impl == "miredo":
        n.node = lab.start_miredo(n.name, n.host, n.role)
    else:
        n.node = lab.start_teredonode(n.name, n.host, n.role)


def _wait_started(nodes: list[DemoNode], since: float) -> None:
    """
    Give every node until C{since + STAY_UP_SECONDS} to fail; those still running are "up".
    """
    deadline = since + STAY_UP_SECONDS
    while time.monotonic() < deadline and any(n.node and n.node.exit_code() is None for n in nodes):
        time.sleep(0.1)
    for n in nodes:
        if n.node is not None:
            n.status = _status_of(n.node)


def _wait_qualified(lab: Lab, clients: list[DemoNode], since: float) -> None:
    """
    Poll running clients for their Teredo address, up to L{QUALIFY_TIMEOUT}; record how long
    each took since C{since} (when the clients were started).
    """
    deadline = since + QUALIFY_TIMEOUT
    waiting = [c for c in clients if c.node is not None]
    while waiting and time.monotonic() < deadline:
        for c in list(waiting):
            c.address = lab.teredo_address(c.host)
            if c.address:
                c.qualified_after = time.monotonic() - since
                waiting.remove(c)
            elif c.node is not None and c.node.exit_code() is not None:
                waiting.remove(c)
        if waiting:
            time.sleep(0.1)


def print_table(rows: list[Row], out: TextIO) -> None:
    headers = ("path", "result", "first RTT", "median RTT", "via", "carried by")
    cells = [
        (r.path, r.result + ("" if r.counts else " (not counted)"), r.first, r.median, r.via, r.carried)
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)), file=out)


def run_demo(
    scenario: str = "default", miredo_roles: Sequence[str] = (), keep: bool = False, out: TextIO = sys.stdout
) -> int:
    """
    The whole demo on a lab of its own; returns the exit status (0: every applicable path works).
    """
    started = time.monotonic()
    lab = Lab.up(scenario)
    try:
        print(f"lab {lab.prefix} up in {time.monotonic() - started:.2f}s (scenario {scenario})", file=out)
        if lab.plan.anycast:
            if miredo_roles:
                raise LabError("the anycast demo runs our relays (their health route feeds BGP): no --with-miredo")
            from teredonode.lab.anycast import run_anycast_demo

            ok = run_anycast_demo(lab, out)
            print("\nevery step works" if ok else "\nsome steps failed", file=out)
        else:
            ok, _ = demo_on(lab, miredo_roles, out)
        print(f"logs in {lab.state.path / 'logs'}" + ("" if keep else " (removed with the lab)"), file=out)
        return 0 if ok else 1
    finally:
        if keep:
            print(f"lab left up: teredo lab down --lab {lab.prefix}", file=out)
        else:
            t1 = time.monotonic()
            lab.down()
            print(f"lab torn down in {time.monotonic() - t1:.2f}s", file=out)


def demo_on(lab: Lab, miredo_roles: Sequence[str] = (), out: TextIO = sys.stdout) -> tuple[bool, list[Row]]:
    """
    Start the nodes on an existing C{lab}, ping every path, print the table.

    Returns (every applicable path works, the rows); the caller owns the lab's teardown.
    """
    nodes = plan_nodes(lab, miredo_roles)
    by_name = {n.name: n for n in nodes}
    infra = [n for n in nodes if n.role in ("server", "relay")]
    others = [n for n in nodes if n not in infra]
    t_infra = time.monotonic()
    for n in infra:
        _start(lab, n)
    lab.wait_udp_listening("server", 3544, STAY_UP_SECONDS)
    t0 = time.monotonic()
    for n in others:
        _start(lab, n)
    clients = [n for n in nodes if n.role == "client"]
    _wait_qualified(lab, clients, t0)
    _wait_started(infra, t_infra)
    _wait_started(others, t0)
    for c in clients:
        if c.up and not c.address:
            c.status = f"not qualified within {QUALIFY_TIMEOUT:g}s"
    for n in nodes:
        where = f"{n.host} ({lab.ns(n.host)})"
        extra = f"  address {n.address} (qualified in {n.qualified_after:.2f}s)" if n.address and n.qualified_after is not None else ""
        print(f"  {n.role:<10} {n.impl:<10} on {where:<28} {n.status}{extra}", file=out)
    rows = plan_rows(lab)
    for row in rows:
        run_row(lab, row, by_name, bool(miredo_roles))
    print(file=out)
    print_table(rows, out)
    counted = [r for r in rows if r.counts]
    ok = bool(counted) and all(r.ok for r in counted)
    print(file=out)
    for line in fast_path_lines(lab, nodes):
        print(line, file=out)
    print("every path works" if ok else "some paths do not work (yet)", file=out)
    return ok, rows


def fast_path_summary(role: str, block: dict[str, Any] | None) -> str:
    """
    One line on which path carried a node's packets, from the C{fast-path} block of its
    status (C{None}: the Python path alone).
    """
    if block is None:
        return f"{role}: Python path"
    where = ", ".join(str(i) for i in block.get("interfaces") or []) or "no interface"
    handled = block.get("answered", block.get("carried", 0))
    what = "RAs answered" if "answered" in block else "packets carried"
    return f"{role}: kernel fast path on {where}: {handled} {what} in the kernel, {block.get('passed-to-python', 0)} passed to Python"


def fast_path_lines(lab: Lab, nodes: Sequence[DemoNode]) -> list[str]:
    """
    Which path our server, relay and clients ran on, read from their status once the rows have run
    (so an operator sees the demo's traffic in the kernel's counts, or why it was not).
    """
    from teredonode.status import StatusUnavailable

    lines = []
    for n in nodes:
        if n.impl != "teredonode" or n.role not in ("server", "relay", "client") or not n.up:
            continue
        try:
            block = lab.node_status(n.name).get(n.role, {}).get("fast-path")
        except StatusUnavailable as e:
            lines.append(f"{n.role}: status unavailable ({e})")
            continue
        lines.append(fast_path_summary(n.role if n.role != "client" else n.name, block))
    return lines
