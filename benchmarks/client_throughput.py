#!/usr/bin/env python3
"""
Client throughput: our Teredo client (Python path and kernel fast path) against Miredo's,
on the same path in the same run.

    sudo python3 benchmarks/client_throughput.py           # 2 rounds, about 3 minutes
    sudo python3 benchmarks/client_throughput.py --quick   # 1 round, about 1.5 minutes

The path (docs/performance.md has the method and the figures):

    client1 (10.1.0.2) -- nat1 (port-restricted NAT) -- inet -- relay (Miredo's, or ours) -- v6host
                                                          \\-- server (miredo-server)

  - Everything runs in a teredonode lab (C{teredonode.lab.lab.Lab}, scenario "default"): its
    own network namespaces, documentation addresses, no route out; always torn down.
  - The clients take turns on the same host, client1, behind the same NAT: ours on the
    Python path (C{fast-path = "off"}), ours with the kernel fast path (C{"on"}), Miredo,
    and again...  Each turn starts the client, waits for its Teredo address, warms the path
    up (pings both ways, so the echo test and the relay's bubbles are done), runs the
    measurements, and stops the client.  Server and relay are Miredo's, so only the client
    differs.
  - Measurements (iperf3 from Debian, server on v6host): TCP for C{--seconds} each way (client
    -> v6host "up", v6host -> client "down"), then UDP with 64-byte payloads offered at
    C{--udp-rate} packets/s each way, counted by the receiver.  The client's CPU time
    (utime + stime of its process tree, from /proc) is read around each measurement, plus
    the run time of the fast path's BPF programs (kernel.bpf_stats_enabled=1): what the
    client costs wherever it runs.  The machine's softirq time (/proc/stat) is read too and
    shown per packet beside it, and in an all-in figure (client + programs + softirq): the
    kernel's share of each packet, which the fast path moves work into, and which also
    covers the lab's NAT, router, relay and iperf3, the same for every client.
  - client1's interface toward the NAT computes transmit checksums in software (ethtool
    C{tx off}), for every client alike, as a NIC without checksum offload does.  Over veth
    a locally sent TCP segment otherwise leaves with a checksum nobody ever completes once
    it is inside a UDP datagram, so the fast path hands such segments to Python there
    (docs/performance.md, "Client kernel fast path").
  - nat1 receives in NAPI threads (C{--napi on}, the default; L{nat_napi}), for every client
    alike, so that the NAT keeps each TCP flow in order as a NIC's queue would.
  - C{--relay ours-fast} puts our relay, with its kernel fast path, in place of Miredo's:
    TCP through our client and our relay.
  - The native reference (C{--reference on}, the default; TCP only): plain IPv4 TCP between
    client1 and v6host over the Teredo path's hops (client1 - nat1 - inet - relay, routing
    IPv4 for it - inet's bridge - v6host), four ways:
      - C{native-packets}: packets no larger than a Teredo datagram (1 308 bytes, a route
        MTU) and nat1's GRO off, so that every packet crosses every hop alone, as every
        Teredo datagram does (the kernel merges forwarded UDP only when it carries a
        checksum, and a segment of a BPF-marked UDP tunnel packet has none): the lab's
        ceiling for a datagram at a time, whatever the tunnel;
      - C{native-gro}: the same packets with nat1's GRO on, as the lab is: the NAT merges
        the TCP segments again and carries super-packets from there on;
      - C{native-1500}: Ethernet-sized packets, GRO on: the lab's plain native path;
      - C{native-offloads}: the same with transmit checksum offload on at client1 and on
        inet's ports, so that nothing on the way segments: super-packets end to end.
    The ratio ours-fast / native-packets says how much of the first the Teredo path reaches.
  - Figures are the best over the rounds (a shared machine only ever slows a run down), and
    the ratios ours / Miredo and ours-fast / Miredo are of those.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from teredonode.lab.topology import inet_port  # noqa: E402  (after the path)
from teredonode.roles.relay import RELAY_MTU  # noqa: E402

HOST = "client1"
HOST_NAT = "nat1"
IPERF_PORT = 5201
UDP_PAYLOAD = 64
QUALIFY_TIMEOUT = 20.0
TESTS = (("tcp", "up"), ("tcp", "down"), ("udp", "up"), ("udp", "down"))
#: Our client on the Python path, with the kernel fast path, and Miredo's.
IMPLS = ("ours", "ours-fast", "miredo")
#: The native reference's addresses (TEST-NET-1, inside the lab only): v6host's and the
#: relay's on their link, and the largest Teredo datagram (IPv4 20 + UDP 8 + IPv6 1 280),
#: the reference's route MTU.
REF_V6HOST = "192.0.2.30"
REF_RELAY = "192.0.2.20"
REF_NET = "192.0.2.0/24"
DATAGRAM = 20 + 8 + RELAY_MTU
#: The native reference's variants, by name: nat1's GRO, the route MTU, and whether the
#: path's checksum offloads are on: a packet at a time; merged again at the NAT, as the lab
#: is; in Ethernet-sized packets, merged; and with nothing on the way segmenting.
REFERENCES: tuple[tuple[str, str, int, bool], ...] = (
    ("native-packets", "off", DATAGRAM, False),
    ("native-gro", "on", DATAGRAM, False),
    ("native-1500", "on", 1500, False),
    ("native-offloads", "on", 1500, True),
)
#: The public hosts whose ports on inet are on the reference's path (the lab completes
#: checksums there: tx off).
INET_HOSTS = (HOST_NAT, "relay", "v6host")
PROGRAMS = ("teredo_client_rx", "teredo_client_tx")

if TYPE_CHECKING:
    from teredonode.lab.lab import Lab


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ process CPU


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree_cpu(pid: int) -> float:
    """
    utime + stime (seconds) of C{pid} and its descendants (Miredo forks a privileged helper).
    """
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        todo += _children(p)
    return total / tick


def software_checksums(lab: Lab) -> None:
    """client1's side of its link to the NAT completes transmit checksums itself."""
    lab.exec(HOST, ["ethtool", "-K", "eth0", "tx", "off"], timeout=10, check=True)


def nat_napi(lab: Lab) -> None:
    """
    nat1 receives on both links in a NAPI kernel thread (GRO on, threaded NAPI), as from a
    NIC's queue.  Without it a veth hands each packet to the backlog of whichever CPU sent
    it, so a TCP flow sent from both CPUs (the sender's own writes and the transmissions its
    ACKs trigger) is forwarded on both at once and arrives reordered: the sender then takes
    the reordering for loss and slows down, whatever the client.
    """
    devices = ("lan", "wan")
    lab.exec(HOST_NAT, [sys.executable, "-m", "teredonode.lab.offload", "--gro", "on", *devices], timeout=10, check=True)
    for dev in devices:
        lab.exec(HOST_NAT, ["sh", "-c", f"echo 1 > /sys/class/net/{dev}/threaded"], timeout=10, check=True)


def reference_path(lab: Lab, on: bool, mtu: int = DATAGRAM) -> None:
    """
    Route plain IPv4 between client1 and v6host through the relay (C{on}), with route MTU
    C{mtu}, or take the routes away again: the native reference's path (see the module
    docstring).
    """
    verb = "add" if on else "del"
    wan = lab.ipv4(HOST_NAT)
    lan_gw = lab.host(HOST_NAT).lan_ipv4
    lab.exec("v6host", ["ip", "addr", verb, f"{REF_V6HOST}/24", "dev", "eth0"], check=on)
    lab.exec("relay", ["ip", "addr", verb, f"{REF_RELAY}/24", "dev", "eth0"], check=on)
    lab.exec("relay", ["sysctl", "-qw", f"net.ipv4.conf.eth0.forwarding={int(on)}"], check=True)
    lab.exec("inet", ["ip", "route", verb, REF_NET, "via", lab.ipv4("relay")], check=on)
    metric = ["mtu", str(mtu)] if on else []  # a route is removed by its destination and gateway
    lab.exec(HOST, ["ip", "route", verb, REF_NET, "via", str(lan_gw), *metric], check=on)
    lab.exec("v6host", ["ip", "route", verb, f"{wan}/32", "via", REF_RELAY, *metric], check=on)


def path_offloads(lab: Lab, on: bool) -> None:
    """
    Transmit checksum offload on client1's link and inet's ports on the path C{on}, or off
    again as the benchmark and the lab keep them (L{software_checksums}): with them on,
    nothing on the way segments a TCP super-packet.
    """
    state = "on" if on else "off"
    lab.exec(HOST, ["ethtool", "-K", "eth0", "tx", state], timeout=10, check=True)
    ports = [inet_port(host) for host in INET_HOSTS]
    lab.exec("inet", [sys.executable, "-m", "teredonode.lab.offload", "--tx", state, *ports], timeout=10, check=True)


def nat_gro(lab: Lab, on: bool) -> None:
    """nat1's GRO on both links on or off (its NAPI threads stay as L{nat_napi} left them)."""
    lab.exec(HOST_NAT, [sys.executable, "-m", "teredonode.lab.offload", "--gro", "on" if on else "off", "lan", "wan"],
             timeout=10, check=True)


def run_reference(lab: Lab, name: str, gro: str, turn: int, args: argparse.Namespace) -> dict[str, Any]:
    """
    The native reference C{name}: TCP each way over plain IPv4 with nat1's GRO C{gro}.
    """
    port = IPERF_PORT + turn
    server = lab.popen("v6host", ["iperf3", "-s", "-p", str(port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, Any] = {}
    try:
        if not _tcp_listening(lab, "v6host", port, 10):
            raise RuntimeError("iperf3 server on v6host did not start")
        nat_gro(lab, gro == "on")
        for proto, direction in args.tests:
            if proto != "tcp":
                continue
            soft0, t0 = softirq(), time.monotonic()
            figures = iperf(lab, REF_V6HOST, port, proto, direction, args.seconds, args.udp_rate, family="-4")
            figures["softirq"] = (softirq() - soft0) / (time.monotonic() - t0)
            results[f"{proto}-{direction}"] = figures
            log(f"  {name:14} {proto} {direction:4} {fmt(proto, figures)}, softirq {figures['softirq']:.0%}")
        return results
    finally:
        nat_gro(lab, args.napi == "on")
        server.kill()
        server.wait(10)


def softirq() -> float:
    """Machine-wide softirq CPU seconds so far (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[7]) / os.sysconf("SC_CLK_TCK")


def bpf_seconds() -> float:
    """Run time of the client's BPF programs so far (kernel.bpf_stats_enabled=1), seconds."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=False).stdout
    try:
        progs = json.loads(out or "[]")
    except ValueError:
        return 0.0
    return sum(int(p.get("run_time_ns", 0)) for p in progs if p.get("name") in PROGRAMS) / 1e9


# ------------------------------------------------------------------------ measurements


def iperf(
    lab: Lab, v6host: str, port: int, proto: str, direction: str, seconds: float, udp_rate: int, family: str = "-6"
) -> dict[str, Any]:
    """
    One iperf3 run from client1 to v6host; returns the receiver's figures.
    """
    argv = ["iperf3", family, "-c", v6host, "-p", str(port), "-t", str(seconds), "-J",
            "--connect-timeout", "5000"]
    if direction == "down":
        argv.append("-R")
    if proto == "udp":
        argv += ["-u", "-l", str(UDP_PAYLOAD), "-b", str(udp_rate * UDP_PAYLOAD * 8)]
    result = lab.exec(HOST, argv, timeout=seconds + 30)
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return {"error": (result.stderr or result.stdout).strip()[-200:] or f"exit {result.returncode}"}
    if "error" in data:
        return {"error": data["error"]}
    end = data["end"]
    if proto == "tcp":
        received = end["sum_received"]
        return {
            "mbit": received["bits_per_second"] / 1e6,
            "seconds": received["seconds"],
            "retransmits": end.get("sum_sent", {}).get("retransmits"),
        }
    s = end["sum"]
    got = s["packets"] - s["lost_packets"]
    return {
        "pps": got / s["seconds"],
        "sent-pps": s["packets"] / s["seconds"],
        "loss": s["lost_percent"],
    }


def ping_ok(lab: Lab, src: str, dst: str) -> bool:
    r = lab.exec(src, ["ping", "-6", "-n", "-c", "3", "-i", "0.3", "-W", "2", dst], timeout=20)
    return r.returncode == 0


def run_turn(lab: Lab, impl: str, turn: int, args: argparse.Namespace, v6host: str) -> dict[str, Any]:
    """
    Start C{impl}'s client on client1, measure, stop it.
    """
    node = f"{impl}-client-{turn}"
    # A server of its own for each turn: one whose last test the stopped client left
    # unfinished would answer "busy" to the next turn for minutes.
    port = IPERF_PORT + turn
    server = lab.popen("v6host", ["iperf3", "-s", "-p", str(port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not _tcp_listening(lab, "v6host", port, 10):
        server.kill()
        raise RuntimeError("iperf3 server on v6host did not start")
    if impl.startswith("ours"):
        fast = "on" if impl == "ours-fast" else "off"
        handle = lab.start_teredonode(node, HOST, "client", {"fast-path": fast})
    else:
        handle = lab.start_miredo(node, HOST, "client")
    try:
        address = lab.wait_teredo_address(HOST, QUALIFY_TIMEOUT)
        if address is None:
            raise RuntimeError(f"{impl} client did not qualify: {handle.log_tail(5)}")
        if not (ping_ok(lab, HOST, v6host) and ping_ok(lab, "v6host", address)):
            raise RuntimeError(f"{impl} client: no path to v6host: {handle.log_tail(5)}")
        pid = handle.record.pid
        results = {}

        def fastCounts() -> dict[str, int]:
            if impl != "ours-fast":
                return {}
            from teredonode.status import read_status

            status = read_status(str(lab.state.path / "run" / node / "status.sock"), timeout=5)["client"]
            block = status.get("fast-path") or {}
            return {k: int(block.get(k, 0)) for k in ("carried", "passed-to-python")}

        for proto, direction in args.tests:
            fast0 = fastCounts()
            cpu0, bpf0, soft0, t0 = tree_cpu(pid), bpf_seconds(), softirq(), time.monotonic()
            figures = iperf(lab, v6host, port, proto, direction, args.seconds, args.udp_rate)
            elapsed = time.monotonic() - t0
            bpf = bpf_seconds() - bpf0
            figures["cpu"] = (tree_cpu(pid) - cpu0 + bpf) / elapsed  # fraction of one CPU
            figures["bpf"] = bpf / elapsed
            figures["softirq"] = (softirq() - soft0) / elapsed
            results[f"{proto}-{direction}"] = figures
            fast1 = fastCounts()
            carried = {k: fast1[k] - fast0[k] for k in fast1}
            log(f"  {impl:9} {proto} {direction:4} {fmt(proto, figures)}  client CPU {figures['cpu']:.0%}"
                f" (BPF {figures['bpf']:.0%}), softirq {figures['softirq']:.0%}"
                + (f"; fast path carried {carried['carried']}, passed {carried['passed-to-python']}" if carried else ""))
        return results
    finally:
        server.kill()
        server.wait(10)
        lab.stop_node(node)
        deadline = time.monotonic() + 10
        while lab.teredo_address(HOST) is not None and time.monotonic() < deadline:
            time.sleep(0.1)


def fmt(proto: str, f: dict[str, Any]) -> str:
    if "error" in f:
        return f"error: {f['error']}"
    if proto == "tcp":
        return f"{f['mbit']:8.1f} Mbit/s ({f['retransmits']} retransmits)"
    return f"{f['pps']:8.0f} pkt/s received ({f['sent-pps']:.0f} sent, {f['loss']:.1f} % lost)"


def best(turns: list[dict[str, Any]], key: str, metric: str) -> dict[str, Any] | None:
    ok = [t[key] for t in turns if key in t and metric in t[key]]
    return max(ok, key=lambda f: f[metric]) if ok else None


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [
        f"Client throughput to v6host via {'a Miredo relay' if args.relay == 'miredo' else 'our relay (fast path)'}"
        f" (miredo-server; client behind a "
        f"port-restricted NAT; {args.seconds:g} s per measurement, best of {args.rounds} round(s))",
        "",
        f"{'measurement':30} {'ours':>14} {'ours-fast':>14} {'Miredo':>14} {'ours/Miredo':>12} {'fast/Miredo':>12}",
    ]

    def row(label: str, values: list[float | None], fmt: str) -> None:
        cells = [format(v, fmt) if v is not None else "error" for v in values]
        ratios = [
            f"{values[i] / values[2]:.2f}" if values[i] is not None and values[2] else "-"  # type: ignore[operator]
            for i in (0, 1)
        ]
        lines.append(f"{label:30} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14} {ratios[0]:>12} {ratios[1]:>12}")

    for proto, direction in args.tests:
        key = f"{proto}-{direction}"
        metric = "mbit" if proto == "tcp" else "pps"
        label = f"{'TCP Mbit/s' if proto == 'tcp' else 'UDP 64 B pkt/s'} {'up' if direction == 'up' else 'down'}"
        bests = [best(results[impl], key, metric) for impl in IMPLS]
        row(label, [b[metric] if b else None for b in bests], ".1f" if proto == "tcp" else ".0f")
        row("  client CPU (of one CPU)", [b["cpu"] if b else None for b in bests], ".2f")
        if proto == "tcp":
            # CPU per unit of traffic: steadier than rates on a shared machine.
            row("  client CPU s per Gbit", [1000 * b["cpu"] / b["mbit"] if b and b["mbit"] else None for b in bests], ".2f")
        else:
            row("  client+BPF CPU us/packet",
                [1e6 * b["cpu"] / b["pps"] if b and b["pps"] else None for b in bests], ".1f")
            row("  softirq us/packet (machine)",
                [1e6 * b["softirq"] / b["pps"] if b and b["pps"] else None for b in bests], ".1f")
            row("  all-in us/packet",
                [1e6 * (b["cpu"] + b["softirq"]) / b["pps"] if b and b["pps"] else None for b in bests], ".1f")
    if any(results.get(name) for name, _, _, _ in REFERENCES):
        lines += [
            "",
            "Native reference: plain IPv4 TCP, client1 - nat1 - inet - relay - v6host",
            f"{'measurement':30} {'per packet':>14} {'GRO at nat1':>14} {'1500 B, GRO':>14} {'offloads on':>14}"
            f" {'ours-fast':>14} {'fast/packet':>12}",
            f"{'':30} {f'{DATAGRAM} B':>14} {f'{DATAGRAM} B':>14} {'':>14} {'1500 B, GRO':>14}",
        ]
        for proto, direction in args.tests:
            if proto != "tcp":
                continue
            key = f"{proto}-{direction}"
            refs = [best(results.get(name, []), key, "mbit") for name, _, _, _ in REFERENCES]
            fast = best(results["ours-fast"], key, "mbit")
            values = [b["mbit"] if b else None for b in (*refs, fast)]
            cells = [format(v, ".1f") if v is not None else "-" for v in values]
            ratio = f"{values[4] / values[0]:.2f}" if values[0] and values[4] is not None else "-"
            lines.append(f"{'TCP Mbit/s ' + direction:30} " + " ".join(f"{c:>14}" for c in cells) + f" {ratio:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="one round of 3 s measurements (about 1 minute)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per measurement (default 5, --quick 3)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 2, --quick 1)")
    parser.add_argument("--udp-rate", type=int, default=400_000, help="offered UDP packets/s (default 400000: more than either client forwards here)")
    parser.add_argument("--relay", choices=("miredo", "ours-fast"), default="miredo",
                        help="the relay on the path: Miredo's (default, so that only the client differs) "
                             "or ours with its kernel fast path (TCP through our client and our relay)")
    parser.add_argument("--napi", choices=("on", "off"), default="on",
                        help="nat1 receives in NAPI threads, as from a NIC (default on; see nat_napi)")
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help=f"clients to measure, comma-separated (default {','.join(IMPLS)})")
    parser.add_argument("--tests", default=",".join(f"{p}-{d}" for p, d in TESTS),
                        help="measurements, comma-separated (default all: tcp-up,tcp-down,udp-up,udp-down)")
    parser.add_argument("--reference", choices=("on", "off"), default="on",
                        help="measure the native reference too (default on; TCP only; see the module docstring)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON as well")
    args = parser.parse_args(argv)
    args.impls = tuple(i for i in args.impls.split(",") if i)
    args.tests = tuple(tuple(t.split("-", 1)) for t in args.tests.split(",") if t)
    if not args.impls or any(i not in IMPLS for i in args.impls):
        parser.error(f"--impls: choose among {', '.join(IMPLS)}")
    if not args.tests or any(t not in TESTS for t in args.tests):
        parser.error("--tests: choose among tcp-up, tcp-down, udp-up, udp-down")
    args.seconds = args.seconds or (3.0 if args.quick else 5.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if not 1 <= args.seconds <= 10 or not 1 <= args.rounds <= 3:
        parser.error("--seconds must be 1..10 and --rounds 1..3 (the run is bounded to 4 minutes)")

    if os.geteuid() != 0:
        print("client_throughput.py: needs root (it builds a network lab); run it with sudo", file=sys.stderr)
        return 2
    for tool in ("iperf3", "miredo", "miredo-server", "twistd", "bpftool", "ethtool"):
        if shutil.which(tool) is None:
            print(f"client_throughput.py: {tool} not found (apt-get install iperf3 miredo miredo-server)", file=sys.stderr)
            return 2

    from teredonode.errors import LabError
    from teredonode.lab.lab import Lab

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    base = Path(tempfile.mkdtemp(prefix="teredo-bench-client-"))
    os.chmod(base, 0o755)  # Miredo drops privileges and must still read its config
    lab = None
    started = time.monotonic()
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    statsBefore = stats.read_text().strip()
    stats.write_text("1")  # BPF run time, counted in the client's CPU
    try:
        lab = Lab.up("default", base=base)
        software_checksums(lab)
        if args.napi == "on":
            nat_napi(lab)
        lab.start_miredo("miredo-server", "server", "server")
        if args.relay == "miredo":
            lab.exec("relay", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
            lab.start_miredo("miredo-relay", "relay", "relay")
        else:
            lab.start_teredonode("bench-relay", "relay", "relay", {"fast-path": "on"})
        for host in ("server", "relay"):
            if not lab.wait_udp_listening(host, 3544, 15):
                raise LabError(f"the {host} does not listen")
        v6host = lab.ipv6("v6host")
        results: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLS}
        references: tuple[tuple[str, str, int, bool], ...] = REFERENCES if args.reference == "on" and any(p == "tcp" for p, _ in args.tests) else ()
        turn = 0
        for rnd in range(args.rounds):
            log(f"round {rnd + 1}/{args.rounds}")
            for impl in args.impls:
                turn += 1
                results[impl].append(run_turn(lab, impl, turn, args, v6host))
            if references:
                for name, gro, mtu, offloads in references:
                    turn += 1
                    try:
                        reference_path(lab, True, mtu)
                        path_offloads(lab, offloads)
                        results.setdefault(name, []).append(run_reference(lab, name, gro, turn, args))
                    finally:
                        path_offloads(lab, False)
                        reference_path(lab, False)
        print(report(results, args))
        if args.json:
            print(json.dumps(results, indent=1))
        log(f"total {time.monotonic() - started:.0f} s")
        return 0
    except (LabError, RuntimeError) as e:
        print(f"client_throughput.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("client_throughput.py: interrupted", file=sys.stderr)
        return 130
    finally:
        stats.write_text(statsBefore)
        if lab is not None:
            lab.down()
        shutil.rmtree(base, ignore_errors=True)


def _tcp_listening(lab: Lab, host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.exec(host, ["ss", "-Hnlt", "sport", "=", f":{port}"], timeout=10).stdout.strip():
            return True
        time.sleep(0.1)
    return False


if __name__ == "__main__":
    sys.exit(main())
