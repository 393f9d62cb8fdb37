#!/usr/bin/env python3
"""
Relay throughput: our Teredo relay against Miredo's, in one run, on the same lab topology.

    sudo python3 benchmarks/relay.py            # 5 s per measurement, about 3 minutes
    sudo python3 benchmarks/relay.py --quick    # 2 s per measurement, about 1.5 minutes

Why it is built this way (docs/performance.md, section "Relay", has the figures):

  - The topology is the lab's default scenario (teredonode.lab: network namespaces with
    documentation addresses only, created here and always torn down).  Everything but the
    relay is fixed and C: miredo-server on "server", a Miredo client on "client1" behind the
    port-restricted NAT, v6host on the native side.  Only the relay on "relay" changes:
    ours on the Python path (twistd, fast-path "off"), ours with the kernel fast path
    ("on"), then Miredo's (RelayType cone), and again with C{--rounds 2}.  Same addresses,
    same port (3544), same path.  The router sends the relay complete UDP checksums, as a
    NIC delivers them (see L{_complete_checksums}).
  - Each relay is measured in both directions with iperf3: 64-byte UDP datagrams sent as fast
    as iperf3 can (C{-u -l 64 -b 0}), reporting datagrams per second *received* (sent minus
    lost), and TCP (default window) in Mbit/s received.  "up" is client1 -> v6host (the relay
    decapsulates), "down" is v6host -> client1 (the relay encapsulates).
  - Before measuring, v6host pings the client, then the client pings v6host, so the relay
    under test holds a trusted entry for the client (a relay creates no state from what
    clients send, so a freshly started relay would otherwise drop the client's first packets).
  - The relays are not pinned: the lab's namespaces share the machine's CPUs with the client,
    the NAT and iperf3, exactly as in the system tests, so throughput is often limited by
    the Miredo client or the machine, not by the relay.  The relay's own CPU (utime + stime
    of its process tree, from /proc, before and after each run) is therefore printed too:
    CPU per UDP datagram received is the figure that compares the relays' data paths.  The
    fast path's share is its programs' run time (kernel.bpf_stats_enabled=1, run_time_ns),
    added to the process's; the machine's softirq time per datagram is printed beside it and
    in the all-in figure, for every relay alike.  Only same-run ratios are meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from teredonode.lab.lab import Lab, preflight  # noqa: E402

IPERF_PORT = 5201
TESTS = (
    ("udp64", "up"),
    ("udp64", "down"),
    ("tcp", "up"),
    ("tcp", "down"),
)


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"relay benchmark: {what} within {timeout} s")
        time.sleep(0.1)


def _ping(lab: Lab, src: str, dst: str, count: int = 3) -> int:
    out = lab.exec(src, ["ping", "-6", "-n", "-c", str(count), "-i", "0.3", "-W", "2", dst], timeout=30).stdout
    for line in out.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def _tree(pid: int) -> list[int]:
    """
    C{pid} and its descendants (miredo forks a privileged helper and the relay).
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu(pids: list[int]) -> float:
    """
    CPU seconds (user + system) used so far by C{pids}.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def _softirq() -> float:
    """
    Machine-wide softirq CPU seconds so far (/proc/stat): the kernel's share of every
    packet, whoever's CPU it ran on.  It covers the whole lab (client, NAT, router, iperf3),
    the same for every relay, so it is printed beside the relay's own figures, not added.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[7]) / os.sysconf("SC_CLK_TCK")


def _bpf_seconds(names: tuple[str, ...] = ("teredo_relay_rx", "teredo_relay_tx")) -> float:
    """
    Run time of the relay's BPF programs so far (kernel.bpf_stats_enabled=1), in seconds.
    """
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=False).stdout
    try:
        progs = json.loads(out or "[]")
    except ValueError:
        return 0.0
    total: int = sum(int(p.get("run_time_ns", 0)) for p in progs if p.get("name") in names)
    return total / 1e9


def _complete_checksums(lab: Lab) -> None:
    """
    Have the router send the relay complete UDP checksums, as a real NIC delivers them.

    Over veth a datagram keeps the partial checksum of its sender's offload all the way to
    the relay; the kernel takes that as valid, but the XDP program, which sees bytes only,
    cannot tell it from a corrupt one and leaves such datagrams to the Python path.  With
    transmit checksumming off on the router's side of the relay's link, the router's kernel
    completes each checksum (in software, on the router's CPU) for every relay alike.
    """
    out = lab.exec("relay", ["ip", "-o", "link", "show", "eth0"], timeout=10).stdout
    match = re.search(r"eth0@if(\d+)", out)
    if match is None:
        raise SystemExit(f"relay benchmark: cannot find the relay's link: {out}")
    for line in lab.exec("inet", ["ip", "-o", "link"], timeout=10).stdout.splitlines():
        index, name = line.split(":")[:2]
        if int(index) == int(match.group(1)):
            lab.exec("inet", ["ethtool", "-K", name.strip().split("@")[0], "tx", "off"], timeout=10, check=True)
            return
    raise SystemExit("relay benchmark: the router's side of the relay's link not found")


def _iperf(lab: Lab, target: str, kind: str, direction: str, seconds: int) -> float:
    """
    One iperf3 run from client1 to v6host; returns datagrams/s (udp64) or Mbit/s (tcp)
    received at the far end.
    """
    argv = ["iperf3", "-6", "-c", target, "-p", str(IPERF_PORT), "-t", str(seconds), "-J", "--connect-timeout", "5000"]
    if kind == "udp64":
        argv += ["-u", "-l", "64", "-b", "0"]
    if direction == "down":
        argv.append("-R")
    out = lab.exec("client1", argv, timeout=seconds + 40)
    try:
        end = json.loads(out.stdout)["end"]
    except (ValueError, KeyError):
        raise SystemExit(f"relay benchmark: iperf3 {kind} {direction}: {out.stdout[-500:]} {out.stderr[-300:]}")
    if kind == "tcp":
        return float(end["sum_received"]["bits_per_second"]) / 1e6
    total = end["sum"]
    received = int(total["packets"]) - int(total["lost_packets"])
    return received / float(total["seconds"])


#: Our relay on the Python path, our relay with the kernel fast path, Miredo's.
IMPLS = ("ours", "ours-fast", "miredo")


def _start_relay(lab: Lab, impl: str) -> str:
    node = f"bench-relay-{impl}-{int(time.monotonic() * 1000) % 100000}"
    if impl.startswith("ours"):
        fast = "on" if impl == "ours-fast" else "off"
        lab.start_teredonode(node, "relay", "relay", {"fast-path": fast})
    else:
        lab.exec("relay", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        lab.start_miredo(node, "relay", "relay")
    _wait(lambda: lab.wait_udp_listening("relay", 3544, 0.5), 15, f"{impl} relay listening")
    return node


def measure(lab: Lab, impl: str, seconds: int, client: str) -> dict[str, float]:
    node = _start_relay(lab, impl)
    try:
        v6host = lab.ipv6("v6host")
        # Give the relay an entry for the client (see the module docstring), then prove both ways.
        # Three tries each way: on a loaded machine the first exchange can outlast ping's wait.
        if not any(_ping(lab, "v6host", client) >= 2 for _ in range(3)) or not any(
            _ping(lab, "client1", v6host) >= 2 for _ in range(3)
        ):
            raise SystemExit(f"relay benchmark: {impl} relay does not carry pings: {lab.nodes[node].log_tail(10)}")
        results = {}
        pids = _tree(lab.nodes[node].record.pid)
        for kind, direction in TESTS:
            before, bpfBefore, softBefore = _cpu(pids), _bpf_seconds(), _softirq()
            value = _iperf(lab, v6host, kind, direction, seconds)
            used = _cpu(pids) - before
            bpf = _bpf_seconds() - bpfBefore
            soft = _softirq() - softBefore
            results[f"{kind} {direction}"] = value
            results[f"{kind} {direction} cpu%"] = 100.0 * (used + bpf) / seconds
            if kind == "udp64":
                # The relay's process plus its BPF programs' run time, per datagram received;
                # the machine-wide softirq per datagram beside it.
                count = max(1.0, value * seconds)
                results[f"{kind} {direction} us/pkt"] = 1e6 * (used + bpf) / count
                results[f"{kind} {direction} bpf-us/pkt"] = 1e6 * bpf / count
                results[f"{kind} {direction} softirq-us/pkt"] = 1e6 * soft / count
                # Everything a datagram costs: the relay's process, its programs, and the
                # machine's softirq share (the lab's kernel work, for every relay alike).
                results[f"{kind} {direction} all-us/pkt"] = 1e6 * (used + bpf + soft) / count
            _ping(lab, "v6host", client, 1)  # keep the entry fresh between runs
        if impl.startswith("ours"):
            from teredonode.status import read_status

            status = read_status(str(lab.state.path / "run" / node / "status.sock"), timeout=5)["relay"]
            counters = status["counters"]
            print(f"  our relay ({impl}): sent {counters['sent']:,} delivered {counters['delivered']:,} "
                  f"drops {sum(status['drops'].values()):,} send-drops {status['send-drops']} "
                  f"fast-path {status.get('fast-path')}", flush=True)
        return results
    finally:
        lab.stop_node(node)
        time.sleep(0.5)


def _fmt(kind: str, value: float) -> str:
    if kind.endswith("cpu%"):
        return f"{value:.0f} %"
    if kind.endswith("us/pkt"):
        return f"{value:.2f} us"
    return f"{value:,.0f} pkt/s" if kind.startswith("udp") else f"{value:,.1f} Mbit/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="2 s per measurement")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="ours/Miredo rounds (best kept)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"relays to run, of {', '.join(IMPLS)}")
    args = parser.parse_args(argv)
    impls = tuple(i for i in args.impls.split(",") if i)
    if not impls or any(i not in IMPLS for i in impls):
        raise SystemExit(f"relay benchmark: --impls takes {', '.join(IMPLS)}")
    seconds = args.seconds or (2 if args.quick else 5)
    for tool in ("iperf3", "miredo", "miredo-server", "twistd", "bpftool", "ethtool"):
        if shutil.which(tool) is None:
            raise SystemExit(f"relay benchmark: {tool} not installed")
    preflight()
    base = Path(tempfile.mkdtemp(prefix="teredo-bench-relay-"))
    os.chmod(base, 0o755)  # Miredo drops to its own user and must read its config
    lab = None
    best: dict[str, dict[str, float]] = {impl: {} for impl in impls}
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    statsBefore = stats.read_text().strip()
    stats.write_text("1")  # BPF run time, counted for the CPU figures
    try:
        lab = Lab.up("default", base=base)
        _complete_checksums(lab)
        lab.start_miredo("bench-server", "server", "server")
        _wait(lambda: lab.wait_udp_listening("server", 3544, 0.5), 15, "miredo-server listening")
        lab.start_miredo("bench-client", "client1", "client")
        client = lab.wait_teredo_address("client1", 20)
        if not client:
            raise SystemExit("relay benchmark: the Miredo client did not qualify")
        iperf = lab.popen("v6host", ["iperf3", "-s", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: bool(lab.exec("v6host", ["ss", "-Hntl", "sport", "=", f":{IPERF_PORT}"], timeout=10).stdout.strip()),
                  10, "iperf3 server listening")
            for round_ in range(args.rounds):
                for impl in impls:
                    results = measure(lab, impl, seconds, client)
                    print(f"round {round_ + 1} {impl:6s} " + "  ".join(f"{k}: {_fmt(k, v)}" for k, v in results.items()), flush=True)
                    for key, value in results.items():
                        if " " in key and key.count(" ") == 1:
                            if value > best[impl].get(key, 0.0):
                                best[impl][key] = value
                                for extra in ("cpu%", "us/pkt", "bpf-us/pkt", "softirq-us/pkt", "all-us/pkt"):
                                    if f"{key} {extra}" in results:
                                        best[impl][f"{key} {extra}"] = results[f"{key} {extra}"]
        finally:
            iperf.kill()
            iperf.wait(timeout=5)
    finally:
        stats.write_text(statsBefore)
        if lab is not None:
            lab.down()
        shutil.rmtree(base, ignore_errors=True)

    print()
    pairs = [(a, b) for a, b in (("ours-fast", "miredo"), ("ours", "miredo"), ("ours-fast", "ours")) if a in best and b in best]
    header = "".join(f"{impl:>16s}" for impl in impls) + "".join(f"{a + '/' + b:>20s}" for a, b in pairs)
    print(f"{'measurement (relay)':28s}{header}")
    for kind, direction in TESTS:
        for suffix in ("", " cpu%", " us/pkt", " bpf-us/pkt", " softirq-us/pkt", " all-us/pkt"):
            key = f"{kind} {direction}{suffix}"
            if not all(key in best[impl] for impl in impls):
                continue
            row = "".join(f"{_fmt(key, best[impl][key]):>16s}" for impl in impls)
            for a, b in pairs:
                row += f"{best[a][key] / best[b][key] if best[b][key] else float('nan'):20.2f}"
            print(f"{key:28s}{row}")
    if args.json:
        print(json.dumps({"seconds": seconds, "rounds": args.rounds, "best": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
