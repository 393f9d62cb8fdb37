#!/usr/bin/env python3
"""
Relay throughput: our Teredo relay against Miredo's, in one run, on the same lab topology.

    sudo python3 benchmarks/relay.py            # 5 s per measurement, about 3 minutes
    sudo python3 benchmarks/relay.py --quick    # 2 s per measurement, about 1.5 minutes
    sudo python3 benchmarks/relay.py --impls '' --scaling ours-fast \
        --udp-rates 0,40000,50000,60000,80000   # the fast path on one CPU against both

Why it is built this way (docs/performance.md, section "Relay", has the figures):

  - The topology is the lab's default scenario (teredonode.lab: network namespaces with
    documentation addresses only, created here and always torn down).  Everything but the
    relay is fixed and C: miredo-server on "server", a Miredo client on "client1" behind the
    port-restricted NAT, v6host on the native side.  Only the relay on "relay" changes:
    ours on the Python path (twistd, fast-path "off"), ours with the kernel fast path
    ("on"), then Miredo's (RelayType cone), and again with C{--rounds 2}.  Same addresses,
    same port (3544), same path.  The router sends the relay complete UDP checksums, as a
    NIC delivers them (see L{_complete_checksums}).
  - The relay's link receives in a NAPI kernel thread of its own (threaded NAPI, GRO on;
    L{_relay_napi}), as a NIC's interrupt would have it, for every relay alike.  Without it
    (C{--napi off}) a veth receives on the sending CPU, and everything the fast path does
    runs inside the sender's system call, serialised with it.
  - Each relay is measured in both directions with iperf3: 64-byte UDP datagrams sent as fast
    as iperf3 can (C{-u -l 64 -b 0}, or at the offered rates of C{--udp-rates}), reporting
    datagrams per second *received* (sent minus lost), and TCP (default window) in Mbit/s
    received.  "up" is client1 -> v6host (the relay decapsulates), "down" is v6host ->
    client1 (the relay encapsulates).  For each udp64 run the benchmark prints each CPU's
    user/system/softirq/idle shares (/proc/stat), the CPU the whole lab used, and every
    drop counter of the lab that moved (socket buffers, interface queues): which stage
    was the limit.
  - Before measuring, v6host pings the client, then the client pings v6host, so the relay
    under test holds a trusted entry for the client (a relay creates no state from what
    clients send, so a freshly started relay would otherwise drop the client's first packets).
  - The relays are not pinned: the lab's namespaces share the machine's CPUs with the client,
    the NAT and iperf3, exactly as in the system tests, so throughput is often limited by
    the Miredo client or the machine, not by the relay.  The relay's own CPU is therefore
    printed too: its process tree (utime + stime from /proc) plus its link's NAPI thread
    (or, with C{--napi off}, its BPF programs' run time, kernel.bpf_stats_enabled=1); per
    UDP datagram received it is the figure that compares the relays' data paths.  The
    machine's softirq time per datagram is printed beside it.  Only same-run ratios are
    meaningful.
  - C{--scaling IMPLS} measures udp64 with the whole lab pinned to CPU 0 (every thread of
    every process in its namespaces, the relay link's NAPI thread, the iperf3 client by
    taskset), then to every CPU, and prints the ratio with the CPU the lab got each time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
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


def _prog_ids(pids: list[int]) -> set[int]:
    """
    The BPF programs C{pids} hold (their program and link descriptors' C{prog_id}): this
    relay's, not those of any other relay running on the machine.
    """
    ids = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
    return ids


def _bpf_seconds(ids: set[int]) -> float:
    """
    Run time of the BPF programs C{ids} so far (kernel.bpf_stats_enabled=1), in seconds.
    """
    if not ids:
        return 0.0
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=False).stdout
    try:
        progs = json.loads(out or "[]")
    except ValueError:
        return 0.0
    total: int = sum(int(p.get("run_time_ns", 0)) for p in progs if p.get("id") in ids)
    return total / 1e9


def _cpu_lines() -> dict[str, list[int]]:
    """
    Per-CPU jiffies from /proc/stat (C{cpu0}, C{cpu1}, ...): user nice system idle iowait
    irq softirq steal.
    """
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            out[name] = [int(f) for f in fields[:8]]
    return out


def _per_cpu(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """
    Each CPU's share (percent of the interval) in user, system, softirq and idle between two
    L{_cpu_lines} snapshots: where the kernel's packet work ran, machine-wide.
    """
    shares = {}
    for cpu, a in after.items():
        d = [x - y for x, y in zip(a, before.get(cpu, a))]
        total = sum(d) or 1
        shares[cpu] = {
            "usr": 100.0 * (d[0] + d[1]) / total,
            "sys": 100.0 * d[2] / total,
            "soft": 100.0 * d[6] / total,
            "idle": 100.0 * (d[3] + d[4]) / total,
        }
    return shares


def _drops(lab: Lab) -> dict[str, int]:
    """
    Every place in the lab a datagram can be dropped, by host: UDP receive-buffer overflows
    (IPv4 and IPv6) and each interface's rx/tx drops.  Printed as differences per run, they
    say which stage is the bottleneck (a full socket is a slow reader; a full TUN queue a
    slow Teredo client).
    """
    out: dict[str, int] = {}
    script = ("cat /proc/net/snmp /proc/net/snmp6; ip -s -j link")
    for name in lab.plan.hosts:
        text = lab.exec(name, ["sh", "-c", script], timeout=10).stdout
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Udp:") and i + 1 < len(lines) and lines[i + 1].startswith("Udp:"):
                keys, values = line.split()[1:], lines[i + 1].split()[1:]
                out[f"{name} udp4 rcvbuf"] = int(dict(zip(keys, values)).get("RcvbufErrors", 0))
            elif line.startswith("Udp6RcvbufErrors"):
                out[f"{name} udp6 rcvbuf"] = int(line.split()[1])
        start = text.find("[{")
        if start >= 0:
            try:
                links = json.loads(text[start:])
            except ValueError:
                continue
            for link in links:
                st = link.get("stats64", {})
                for way in ("rx", "tx"):
                    out[f"{name} {link['ifname']} {way}-drop"] = int(st.get(way, {}).get("dropped", 0))
    return out


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _napi_threads() -> set[int]:
    """
    Every NAPI kernel thread on the machine (C{napi/DEV-ID}), of any namespace.
    """
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().startswith("napi/"):
                    found.add(int(entry))
            except OSError:
                continue
    return found


def _relay_napi(lab: Lab) -> list[int]:
    """
    Threaded NAPI, with GRO, on the relay's link (its C{eth0}), and the NAPI threads that
    creates (found as the ones that were not there before).

    Why: over a veth without NAPI, a datagram is received by C{netif_rx} on the sending
    CPU, so the relay's receive work (its XDP program, forwarding, the TUN and the TC
    program, the router and the NAT after it) runs in the *sender's* softirq, serialised
    with it.  A NIC raises an interrupt and the relay's host receives in its own NAPI poll,
    on a CPU of its own; threaded NAPI gives the veth the same: a kernel thread the
    scheduler places like any task.  GRO is what gives a veth NAPI at all (without an XDP
    program in native mode).  Applied to the same device for every relay.
    """
    from teredonode.lab.nodes import tree_env
    from teredonode.lab.proc import in_ns, run

    before = _napi_threads()
    run(in_ns(lab.ns("relay"), [sys.executable, "-m", "teredonode.lab.offload", "--gro", "on", "eth0"]),
        env=tree_env(), timeout=10, check=True)
    lab.exec("relay", ["sh", "-c", "echo 1 > /sys/class/net/eth0/threaded"], timeout=10, check=True)
    new = sorted(_napi_threads() - before)
    if not new:
        raise SystemExit("relay benchmark: no NAPI thread on the relay's link (threaded NAPI unavailable?)")
    return new


def _lab_processes(lab: Lab) -> list[int]:
    """
    Every process in the lab's namespaces.
    """
    from teredonode.lab.topology import namespace_pids

    return [pid for name in lab.plan.hosts for pid in namespace_pids(lab.ns(name))]


def _children_cpu() -> float:
    """
    CPU seconds of this process's waited-for children (the iperf3 client is one).
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _lab_tasks(lab: Lab, extra: list[int]) -> list[int]:
    """
    Every thread of every process in the lab's namespaces, and C{extra} (kernel threads).
    """
    from teredonode.lab.topology import namespace_pids

    tasks = list(extra)
    for name in lab.plan.hosts:
        for pid in namespace_pids(lab.ns(name)):
            tasks.extend(_threads(pid))
    return tasks


def _pin(tasks: list[int], cpus: set[int]) -> int:
    """
    Restrict C{tasks} to C{cpus}; returns how many were pinned (tasks gone meanwhile skipped).
    """
    done = 0
    for tid in tasks:
        try:
            os.sched_setaffinity(tid, cpus)
            done += 1
        except OSError:
            continue
    return done


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


def _iperf(lab: Lab, target: str, kind: str, direction: str, seconds: int,
           cpus: str | None = None, rate: int = 0) -> tuple[float, float]:
    """
    One iperf3 run from client1 to v6host; returns datagrams/s (udp64) or Mbit/s (tcp)
    received at the far end, and (udp64) datagrams/s sent: when the sender's rate is not far
    above the received one, the load generator, not the path, is the limit.  C{cpus}: the
    client's CPU list (taskset), when the lab is pinned.
    """
    argv = (["taskset", "-c", cpus] if cpus else []) + ["iperf3", "-6", "-c", target, "-p", str(IPERF_PORT), "-t", str(seconds), "-J", "--connect-timeout", "5000"]
    if kind == "udp64":
        argv += ["-u", "-l", "64", "-b", str(rate * 64 * 8)]
    if direction == "down":
        argv.append("-R")
    out = lab.exec("client1", argv, timeout=seconds + 40)
    try:
        end = json.loads(out.stdout)["end"]
    except (ValueError, KeyError):
        raise SystemExit(f"relay benchmark: iperf3 {kind} {direction}: {out.stdout[-500:]} {out.stderr[-300:]}")
    if kind == "tcp":
        return float(end["sum_received"]["bits_per_second"]) / 1e6, 0.0
    total = end["sum"]
    received = int(total["packets"]) - int(total["lost_packets"])
    return received / float(total["seconds"]), int(total["packets"]) / float(total["seconds"])


#: The figures kept with each measurement's best (from the same run as it).
EXTRAS = ("cpu%", "lab-cpus", "offered", "sent", "us/pkt", "bpf-us/pkt", "napi-us/pkt", "softirq-us/pkt")

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


def measure(lab: Lab, impl: str, seconds: int, client: str, tests: tuple[tuple[str, str], ...] = TESTS,
            napi: list[int] | None = None, cpus: set[int] | None = None,
            rates: tuple[int, ...] = (0,)) -> dict[str, float]:
    """
    Measure C{impl} on C{tests}.  C{napi}: the relay link's NAPI threads (its kernel receive
    work, counted with the relay's CPU).  C{cpus}: pin the whole lab (every thread in its
    namespaces, the NAPI threads, the iperf3 client) to these CPUs for the measurement.
    C{rates}: the udp64 offered rates to try, in datagrams/s (0: unlimited); the best kept.
    """
    napi = napi or []
    node = _start_relay(lab, impl)
    try:
        v6host = lab.ipv6("v6host")
        # Give the relay an entry for the client (see the module docstring), then prove both ways.
        # Three tries each way: on a loaded machine the first exchange can outlast ping's wait.
        if not any(_ping(lab, "v6host", client) >= 2 for _ in range(3)) or not any(
            _ping(lab, "client1", v6host) >= 2 for _ in range(3)
        ):
            raise SystemExit(f"relay benchmark: {impl} relay does not carry pings: {lab.nodes[node].log_tail(10)}")
        results: dict[str, float] = {}
        pids = _tree(lab.nodes[node].record.pid)
        taskset = None
        if cpus is not None:
            _pin(_lab_tasks(lab, napi), cpus)
            taskset = ",".join(str(c) for c in sorted(cpus))
        for kind, direction in tests:
            for rate in rates if kind == "udp64" else (0,):
                one = _one(lab, impl, v6host, kind, direction, seconds, taskset, pids, napi, rate)
                if one[f"{kind} {direction}"] > results.get(f"{kind} {direction}", -1.0):
                    results.update(one)
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
        if cpus is not None:
            _pin(_lab_tasks(lab, napi), set(range(os.cpu_count() or 1)))
        lab.stop_node(node)
        time.sleep(0.5)


def _one(lab: Lab, impl: str, v6host: str, kind: str, direction: str, seconds: int, taskset: str | None,
         pids: list[int], napi: list[int], rate: int) -> dict[str, float]:
    """
    One iperf3 run and the CPU it cost; prints where the CPUs went and what was dropped where.
    """
    progs = _prog_ids(pids)
    before, bpfBefore, softBefore = _cpu(pids), _bpf_seconds(progs), _softirq()
    dropsBefore = _drops(lab) if kind == "udp64" else {}
    labPids = _lab_processes(lab)
    labBefore = _cpu(labPids) + _cpu(napi) + _children_cpu()
    napiBefore, linesBefore, wall = _cpu(napi), _cpu_lines(), time.monotonic()
    value, sent = _iperf(lab, v6host, kind, direction, seconds, taskset, rate)
    linesAfter, wall = _cpu_lines(), time.monotonic() - wall
    # The whole lab's CPU (its processes, the relay link's NAPI thread, the iperf3 client),
    # in CPUs: on a shared machine, how much of it the lab got.  Tick accounting charges
    # softirq work to the task it interrupted, mostly the lab's own senders.
    labCpus = (_cpu(labPids) + _cpu(napi) + _children_cpu() - labBefore) / wall
    used = _cpu(pids) - before
    bpf = _bpf_seconds(progs) - bpfBefore
    soft = _softirq() - softBefore
    kernel = _cpu(napi) - napiBefore
    # The relay's CPU: its process tree, and either its link's NAPI thread (which runs its
    # receive work: its XDP program, forwarding, the TUN and its TC program, and whatever the
    # packets it sends cost the next namespaces -- as a relay process's system time holds
    # the same for its sends) or, without threaded NAPI, its programs' run time (which ran
    # in other tasks' softirq).  With NAPI the programs' run time is inside the thread's.
    relay = used + (kernel if napi else bpf)
    key = f"{kind} {direction}"
    results = {key: value, f"{key} cpu%": 100.0 * relay / seconds, f"{key} lab-cpus": labCpus}
    if kind != "udp64":
        return results
    count = max(1.0, value * seconds)
    results.update({
        f"{key} offered": float(rate),
        f"{key} sent": sent,
        f"{key} us/pkt": 1e6 * relay / count,
        f"{key} bpf-us/pkt": 1e6 * bpf / count,
        f"{key} napi-us/pkt": 1e6 * kernel / count,
        # The machine's softirq per datagram (the lab's kernel work, for every relay alike,
        # and any other tenant's), beside the relay's own.
        f"{key} softirq-us/pkt": 1e6 * soft / count,
    })
    shares = _per_cpu(linesBefore, linesAfter)
    print(f"  {impl} {key} offered {rate or 'unlimited'}: sent {sent:,.0f}/s received {value:,.0f}/s; per CPU "
          + "  ".join(f"{c}: usr {v['usr']:.0f}% sys {v['sys']:.0f}% soft {v['soft']:.0f}% "
                      f"idle {v['idle']:.0f}%" for c, v in sorted(shares.items()))
          + (f"; relay NAPI thread {100.0 * kernel / seconds:.0f}%" if napi else "")
          + f"; relay process {100.0 * used / seconds:.0f}%; lab {labCpus:.2f} CPUs", flush=True)
    dropsAfter = _drops(lab)
    lost = {k: v - dropsBefore.get(k, 0) for k, v in dropsAfter.items() if v - dropsBefore.get(k, 0) > 0}
    print("    dropped per s: " + (", ".join(f"{k} {v / seconds:,.0f}" for k, v in
                                            sorted(lost.items(), key=lambda kv: -kv[1])) or "none"), flush=True)
    return results


def _fmt(kind: str, value: float) -> str:
    if kind.endswith("offered"):
        return f"{value:,.0f} pkt/s" if value else "unlimited"
    if kind.endswith("lab-cpus"):
        return f"{value:.2f} CPUs"
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
    parser.add_argument("--napi", choices=("on", "off"), default="on",
                        help="threaded NAPI (and GRO) on the relay's link (default on; off: the "
                             "relay's receive work runs in the sender's softirq)")
    parser.add_argument("--udp-rates", default="0", metavar="PPS,...",
                        help="udp64 offered rates to try, datagrams/s (0: unlimited, the default); "
                             "the best received is kept")
    parser.add_argument("--scaling", default="", metavar="IMPLS",
                        help="also measure udp64 of these relays (e.g. ours-fast) with the whole lab "
                             "pinned to CPU 0, then to every CPU, --rounds times, and print the ratio")
    args = parser.parse_args(argv)
    impls = tuple(i for i in args.impls.split(",") if i)
    scaling = tuple(i for i in args.scaling.split(",") if i)
    rates = tuple(int(float(r)) for r in args.udp_rates.split(",") if r)
    if any(i not in IMPLS for i in impls + scaling) or not (impls or scaling):
        raise SystemExit(f"relay benchmark: --impls and --scaling take {', '.join(IMPLS)}")
    seconds = args.seconds or (2 if args.quick else 5)
    for tool in ("iperf3", "miredo", "miredo-server", "twistd", "bpftool", "ethtool", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"relay benchmark: {tool} not installed")
    preflight()
    base = Path(tempfile.mkdtemp(prefix="teredo-bench-relay-"))
    os.chmod(base, 0o755)  # Miredo drops to its own user and must read its config
    lab = None
    best: dict[str, dict[str, float]] = {impl: {} for impl in impls}
    scaled: dict[str, float] = {}
    allCpus = set(range(os.cpu_count() or 1))
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    statsBefore = stats.read_text().strip()
    stats.write_text("1")  # BPF run time, counted for the CPU figures
    try:
        lab = Lab.up("default", base=base)
        _complete_checksums(lab)
        napi = _relay_napi(lab) if args.napi == "on" else []
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
                    results = measure(lab, impl, seconds, client, napi=napi, rates=rates)
                    print(f"round {round_ + 1} {impl:6s} " + "  ".join(f"{k}: {_fmt(k, v)}" for k, v in results.items()
                                                                         if k.count(" ") == 1), flush=True)
                    for key, value in results.items():
                        if " " in key and key.count(" ") == 1:
                            if value > best[impl].get(key, 0.0):
                                best[impl][key] = value
                                for extra in EXTRAS:
                                    if f"{key} {extra}" in results:
                                        best[impl][f"{key} {extra}"] = results[f"{key} {extra}"]
            udp = tuple(t for t in TESTS if t[0] == "udp64")
            for round_ in range(args.rounds if scaling else 0):
                for impl in scaling:
                    for label, cpus in (("1cpu", {0}), (f"{len(allCpus)}cpu", allCpus)):
                        results = measure(lab, impl, seconds, client, udp, napi=napi, cpus=cpus, rates=rates)
                        print(f"round {round_ + 1} {impl} pinned to CPUs {sorted(cpus)}: "
                              + "  ".join(f"{k}: {_fmt(k, results[k])}" for k, _ in
                                          ((f"{a} {b}", 0) for a, b in udp)), flush=True)
                        for kind, direction in udp:
                            key = f"{impl} {kind} {direction} {label}"
                            if results[f"{kind} {direction}"] > scaled.get(key, 0.0):
                                scaled[key] = results[f"{kind} {direction}"]
                                scaled[f"{key} lab-cpus"] = results[f"{kind} {direction} lab-cpus"]
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
    for kind, direction in TESTS if impls else ():
        for suffix in ("",) + tuple(" " + e for e in EXTRAS):
            key = f"{kind} {direction}{suffix}"
            if not all(key in best[impl] for impl in impls):
                continue
            row = "".join(f"{_fmt(key, best[impl][key]):>16s}" for impl in impls)
            for a, b in pairs:
                row += f"{best[a][key] / best[b][key] if best[b][key] else float('nan'):20.2f}"
            print(f"{key:28s}{row}")
    for impl in scaling:
        for kind, direction in (t for t in TESTS if t[0] == "udp64"):
            one = scaled.get(f"{impl} {kind} {direction} 1cpu", 0.0)
            every = scaled.get(f"{impl} {kind} {direction} {len(allCpus)}cpu", 0.0)
            oneCpus = scaled.get(f"{impl} {kind} {direction} 1cpu lab-cpus", 0.0)
            everyCpus = scaled.get(f"{impl} {kind} {direction} {len(allCpus)}cpu lab-cpus", 0.0)
            print(f"scaling {impl} {kind} {direction}: CPU 0 only {one:,.0f} pkt/s (lab used {oneCpus:.2f} CPUs), "
                  f"CPUs {sorted(allCpus)} {every:,.0f} pkt/s (lab used {everyCpus:.2f} CPUs), "
                  f"ratio {every / one if one else float('nan'):.2f}")
    if args.json:
        print(json.dumps({"seconds": seconds, "rounds": args.rounds, "napi": args.napi, "best": best,
                          "scaling": scaled}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
