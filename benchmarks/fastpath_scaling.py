#!/usr/bin/env python3
"""
How the kernel fast path's rate scales from one CPU to two: the server's RS -> RA program and
the relay's up direction (decapsulation), each driven on CPU 0 alone, CPU 1 alone, then both.

    sudo python3 benchmarks/fastpath_scaling.py            # 3 repetitions of 5 s, about 100 s (under 3 minutes)
    sudo python3 benchmarks/fastpath_scaling.py --quick    # 1 repetition of 2 s, about 20 s
    sudo python3 benchmarks/fastpath_scaling.py --json     # also the figures as one JSON line

Why it is built this way (docs/performance.md has the method and the figures):

  - A separate load generator would need a CPU of its own, and this machine has two.  So
    each CPU runs a whole pipeline of its own: generator, the program under test and the
    sink, all in softirq context on that CPU.  A live-frames test run (C{benchmarks/xdpgen.py})
    started by a thread pinned to CPU k (C{os.sched_setaffinity}; the kernel also disables
    migration for the run) hands its XDP_TX frames to the veth's C{ndo_xdp_xmit}, which
    queues them on the peer's receive queue C{k % queues} and schedules that queue's NAPI on
    CPU k; the softirq runs when the test run re-enables bottom halves after each batch of
    64.  There the program under test (native XDP) answers or forwards, and its XDP_TX or
    redirect queues the result on the sink's veth, again on queue k and CPU k.  The veths
    get one receive and transmit queue per CPU (C{numrxqueues}/C{numtxqueues}) and threaded
    NAPI stays off, so no kernel thread carries the work elsewhere.  The run checks it: the
    sink's and the program's per-CPU counters, C{/proc/softirqs} and C{/proc/stat}.  With
    one queue (C{--queues 1}) both CPUs feed one NAPI instance, which runs on one CPU at a
    time: the ring overflows and two CPUs gain little.
  - Each call's frames come back to the test run's page pool within the call (the answers
    are dropped by the sink on the same CPU), rewritten by the program under test, and
    would be sent again as they are: the generator restores each frame from its CPU's
    template (C{XdpGenerator.restore}).  Calls are long (C{--repeat} frames), a few dozen
    a second, far from the page-pool limit short calls run into (C{xdpgen.MAX_CALLS}).
  - Unpaced: each generator thread repeats calls of C{--repeat} frames for the measured time,
    so a CPU is busy with its pipeline throughout.  The generator's own cost (the test run,
    the stamping program, the veth hand-over, the sink) is on the same CPU as the program's
    in every configuration, so what scales is the whole pipeline; the program's own share
    is reported from the kernel's BPF run-time statistics (C{bpf_enable_stats}, held only
    for the run).
  - The server gets rate limits far above what it answers (rs- and ra- rates 10^8/s), so
    its limiter still runs (a per-source LRU bucket, the global budget under its spin lock)
    but never refuses.  By default each CPU's generator sends from its own source address
    (two clients), as real RSs come from many; C{--one-source} sends every RS from one
    address, so both CPUs write one bucket.
  - The relay: C{benchmarks/relay_rate.py}'s topology (its namespaces, agents and trust
    exchange), with multi-queue veths and no threaded NAPI; the client's encapsulated
    datagrams (one trusted peer) go up through C{teredo_relay_rx} to the native side's sink.
  - Configurations alternate within each repetition ({0}, {1}, {0,1}), so a neighbour's
    load falls on all of them alike; the ratio is taken per repetition and shown as a range.
    A neighbour taking part of a CPU shows as time the generator threads waited
    (C{/proc/<tid>/schedstat}); the report gives the ratio over the quiet repetitions and
    one taken per CPU-second the pipelines had (their threads, which run the softirqs on
    top of them, and ksoftirqd), which a neighbour's share of the CPUs does not move.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchlib import (  # noqa: E402  (this directory is on sys.path when run as a script)
    Agents,
    BenchError,
    cpu_seconds,
    process_tree,
    remove_namespaces,
    run,
    serve_commands,
    stop,
    tool,
)

SERVER_PRIMARY, SERVER_SECONDARY = "203.0.113.10", "203.0.113.11"
#: Generator thread k sends from LOAD_PREFIX + (2 + k).
LOAD_PREFIX = "198.51.100."
TEREDO_PORT = 3544
SOURCE_PORTS = 16
#: Frames per live test run call: about 30-60 ms of work, so a few dozen calls a second per
#: CPU, far under xdpgen's page-pool limit (MAX_CALLS), and a short overrun past the end.
REPEAT = 65536
#: Frames per batch inside a call: the softirq runs between batches.
BATCH = 64
#: After the generators stop, how long the last answers may take to be counted.
SETTLE = 0.1
#: The server's per-source and global rates and bursts: never refusing at these rates.
LIMIT_RATE, LIMIT_BURST = 100_000_000, 1_000_000
BPF_STATS_RUN_TIME = 0
#: A repetition is quiet when other tasks kept the generators waiting under this fraction of
#: their time in each of its configurations.
QUIET = 0.03


# ============================================================================ measuring


def cpu_ticks() -> dict[int, list[int]]:
    """
    Per CPU, from C{/proc/stat}: busy (user, nice, system, irq, softirq), softirq, steal, all.
    """
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *rest = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in rest[:8]]
                out[int(name[3:])] = [v[0] + v[1] + v[2] + v[5] + v[6], v[6], v[7], sum(v)]
    return out


def softirqs(kind: str = "NET_RX") -> list[int]:
    """
    Softirqs of C{kind} handled per CPU so far (C{/proc/softirqs}).
    """
    with open("/proc/softirqs") as f:
        for line in f:
            name, *counts = line.split()
            if name == f"{kind}:":
                return [int(c) for c in counts]
    return []


def xdp_prog_id(ns: str, dev: str) -> int:
    """
    The id of the XDP program attached to C{dev} in namespace C{ns}.
    """
    shown = json.loads(run([tool("ip"), "-n", ns, "-d", "-j", "link", "show", "dev", dev]).stdout)[0]
    xdp = shown.get("xdp", {})
    prog = xdp.get("prog") or (xdp.get("attached") or [{}])[0].get("prog", {})
    if not prog.get("id"):
        raise BenchError(f"no XDP program on {dev} in {ns}: {xdp}")
    return int(prog["id"])


def veth_stats(ns: str, dev: str) -> dict[str, int]:
    """
    A veth's own counters (C{ethtool -S}: per queue XDP packets, drops, transmits, errors).
    """
    shown = run([tool("ip"), "netns", "exec", ns, tool("ethtool"), "-S", dev], check=False)
    out = {}
    for line in shown.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if value.isdigit():
            out[key] = int(value)
    return out


def schedstat(path: str = "/proc/thread-self/schedstat") -> tuple[int, int]:
    """
    A task's time on a CPU and time waiting for one (ns, C{/proc/<pid>/schedstat}).
    """
    try:
        with open(path) as f:
            run_ns, wait_ns = f.read().split()[:2]
    except (OSError, ValueError):
        return 0, 0
    return int(run_ns), int(wait_ns)


def ksoftirqd(cpu: int) -> str:
    """
    The schedstat path of CPU C{cpu}'s softirq thread: softirq work it takes over is
    accounted to it, not to the softirq column of C{/proc/stat}.
    """
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == f"ksoftirqd/{cpu}":
                        return f"/proc/{entry}/schedstat"
            except OSError:
                continue
    return "/nonexistent"


def prog_info(prog_id: int) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(run([tool("bpftool"), "-j", "prog", "show", "id", str(prog_id)]).stdout)
    return info


def prog_run(prog_id: int) -> tuple[int, int]:
    """
    The program's run time (ns) and run count so far (BPF statistics must be enabled).
    """
    info = prog_info(prog_id)
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))


def named_map(prog_id: int, name: str) -> int:
    for map_id in prog_info(prog_id).get("map_ids", []):
        shown = json.loads(run([tool("bpftool"), "-j", "map", "show", "id", str(map_id)]).stdout)
        if shown.get("name") == name:
            return int(map_id)
    raise BenchError(f"program {prog_id} has no map {name}")


def per_cpu_slot(map_id: int, index: int) -> list[int]:
    """
    Slot C{index} of a per-CPU array of u64, per CPU.
    """
    key = [f"0x{b:02x}" for b in index.to_bytes(4, "little")]
    dumped = json.loads(run([tool("bpftool"), "-j", "map", "lookup", "id", str(map_id), "key", *key]).stdout)
    out = []
    for entry in dumped.get("values", []):
        value = entry.get("value")
        if isinstance(value, list):  # raw bytes, no BTF
            value = int.from_bytes(bytes(int(b, 16) for b in value), "little")
        out.append(int(value))
    return out


class BpfStats:
    """
    The kernel's BPF run-time statistics, on while this object holds its descriptor (the
    kernel turns them off again when the last holder closes, even if this process dies).
    They cost every BPF program on the machine a clock read per run while on.
    """

    def __init__(self) -> None:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        lib.bpf_enable_stats.restype = ctypes.c_int
        lib.bpf_enable_stats.argtypes = [ctypes.c_int]
        fd = lib.bpf_enable_stats(BPF_STATS_RUN_TIME)
        if fd < 0:
            raise BenchError(f"bpf_enable_stats: {os.strerror(ctypes.get_errno())}")
        self.fd: int | None = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ============================================================================ agents


def blast(transmit: Callable[[bytes, int], None], frames: dict[int, bytes], seconds: float,
          repeat: int) -> dict[str, Any]:
    """
    One thread per CPU in C{frames}, pinned to it, repeating live test runs of C{repeat}
    copies of that CPU's frame for C{seconds}: per CPU, frames sent and the thread's start
    and end (C{time.perf_counter}); the CPUs' C{/proc/stat} and NET_RX softirqs around it.
    """
    cpus = sorted(frames)
    barrier = threading.Barrier(len(cpus) + 1)
    result: dict[int, dict[str, Any]] = {}

    def worker(cpu: int) -> None:
        sent, error = 0, ""
        try:
            os.sched_setaffinity(0, {cpu})  # this thread only
        except OSError as exc:
            error = f"pinning to CPU {cpu}: {exc}"
        soft = ksoftirqd(cpu)
        barrier.wait()
        run0, soft0 = schedstat(), schedstat(soft)
        start = time.perf_counter()
        end = start + seconds
        try:
            while not error and time.perf_counter() < end:
                transmit(frames[cpu], repeat)
                sent += repeat
        except OSError as exc:
            error = str(exc)
        finish = time.perf_counter()
        run1, soft1 = schedstat(), schedstat(soft)
        result[cpu] = {"sent": sent, "start": start, "end": finish, "error": error,
                       "ran_on": os.sched_getaffinity(0) == {cpu},
                       # This thread's time on its CPU (the test runs and the softirqs run
                       # when they re-enable bottom halves), its time kept waiting by other
                       # tasks, and the CPU's ksoftirqd's time (softirq work it took over).
                       "thread_s": (run1[0] - run0[0]) / 1e9, "waited_s": (run1[1] - run0[1]) / 1e9,
                       "ksoftirqd_s": (soft1[0] - soft0[0]) / 1e9}

    threads = [threading.Thread(target=worker, args=(cpu,), daemon=True) for cpu in cpus]
    for t in threads:
        t.start()
    ticks, irqs = cpu_ticks(), softirqs()
    barrier.wait()
    for t in threads:
        t.join()
    ticks_after, irqs_after = cpu_ticks(), softirqs()
    return {
        "threads": {str(cpu): r for cpu, r in result.items()},
        "ticks": {str(cpu): [b - a for a, b in zip(ticks[cpu], ticks_after[cpu])] for cpu in ticks},
        "net_rx": [b - a for a, b in zip(irqs, irqs_after)],
    }


def prog_ids(gen: Any) -> dict[str, int]:
    """
    The kernel ids of the generator's two programs (from this process's fdinfo).
    """
    out = {}
    for name in ("xdpgen_tx", "xdpgen_sink"):
        with open(f"/proc/self/fdinfo/{gen.obj.program_fd(name)}") as f:
            for line in f:
                if line.startswith("prog_id:"):
                    out[name] = int(line.split()[1])
    return out


class ServerAgent:
    """
    The load namespace of the server pipeline: the kernel generator sending RSs (one source
    address per CPU unless told otherwise) and the sink counting RAs.
    """

    def __init__(self, ifname: str, server_mac: str, one_source: bool) -> None:
        from server_rs import XdpLoad

        self.load = XdpLoad(SERVER_PRIMARY, LOAD_PREFIX + "2", SOURCE_PORTS, ifname, server_mac)
        self.gen = self.load.gen
        self.one_source = one_source
        # The RAs come back to the test run's page pool while the run goes on: restore the
        # RS in each recycled frame.
        self.gen.restore({cpu: self.frame(cpu) for cpu in range(self.gen.cpus)})

    def frame(self, cpu: int) -> bytes:
        """
        The RS template for CPU C{cpu}'s generator: the configured one with, unless
        C{one_source}, its own source address (checksums recomputed by rebuilding it).
        """
        if self.one_source or cpu == 0:
            return self.gen.frame
        from teredonode.lab.usernat import udp_packet

        frame = self.gen.frame
        source = LOAD_PREFIX + str(2 + cpu)
        udp_len = int.from_bytes(frame[38:40], "big")
        payload = frame[42 : 34 + udp_len]
        return frame[:14] + udp_packet((source, self.load.base_port), (SERVER_PRIMARY, TEREDO_PORT), payload)

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "probe":
            # On CPU 0, whose RSs come from the source the check expects.
            mask = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {0})
            try:
                return self.load.probe(cmd["timeout"])
            finally:
                os.sched_setaffinity(0, mask)
        if cmd["cmd"] == "ids":
            return prog_ids(self.gen)
        if cmd["cmd"] == "tag":
            self.gen.new_tag()
            return {"counts": self.gen.counts_by_cpu()}
        if cmd["cmd"] == "counts":
            return {"counts": self.gen.counts_by_cpu()}
        if cmd["cmd"] == "blast":
            frames = {cpu: self.frame(cpu) for cpu in cmd["cpus"]}
            return blast(self.transmit, frames, cmd["seconds"], cmd["repeat"])
        return {"error": f"unknown command {cmd['cmd']!r}"}

    def transmit(self, frame: bytes, count: int) -> None:
        self.gen.obj.transmit("xdpgen_tx", frame, self.gen.ifindex, count, BATCH)


class RelayAgent:
    """
    One side of the relay pipeline: C{relay_rate.Agent} (its generator, sink and responder,
    so C{relay_rate}'s trust exchange works unchanged) plus the pinned, unpaced blast.
    """

    def __init__(self, side: str, ifname: str, relay_mac: str) -> None:
        from relay_rate import Agent

        self.agent = Agent(side, ifname, relay_mac)
        self.gen = self.agent.gen
        # The relay decapsulates in place, and the frame comes back to the test run's page
        # pool while the run goes on: restore the datagram in each recycled frame.
        self.gen.restore()

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "ids":
            return prog_ids(self.gen)
        if cmd["cmd"] == "counts_by_cpu":
            return {"counts": self.gen.counts_by_cpu()}
        if cmd["cmd"] == "blast":
            frames = {cpu: self.gen.frame for cpu in cmd["cpus"]}
            return blast(self.transmit, frames, cmd["seconds"], cmd["repeat"])
        return self.agent.handle(cmd)

    def transmit(self, frame: bytes, count: int) -> None:
        self.gen.obj.transmit("xdpgen_tx", frame, self.gen.ifindex, count, BATCH)


# ============================================================================ orchestration


def agent_argv(ns: str, args: list[str]) -> list[str]:
    """This script run as an agent (C{args}) inside namespace C{ns}."""
    return [tool("ip"), "netns", "exec", ns, sys.executable, "-u", str(Path(__file__).resolve())] + args


def multiqueue_veth(ns: str, a: str, b: str, peer_ns: str, queues: int) -> None:
    """
    A veth pair C{a} (in C{ns}) - C{b} (in C{peer_ns}), C{queues} receive and transmit queues
    on each end, threaded NAPI off on both (the softirq runs on the CPU that queued).
    """
    q = str(queues)
    run([tool("ip"), "-n", ns, "link", "add", a, "numtxqueues", q, "numrxqueues", q, "type", "veth",
         "peer", "name", b, "numtxqueues", q, "numrxqueues", q, "netns", peer_ns])
    for n, dev in ((ns, a), (peer_ns, b)):
        # Off unless something turned it on (writing 0 where it is already off can fail).
        run([tool("ip"), "netns", "exec", n, "sh", "-c",
             f"grep -qx 0 /sys/class/net/{dev}/threaded || echo 0 > /sys/class/net/{dev}/threaded"])


@dataclass
class Sample:
    """
    One configuration's measurement.
    """

    pipeline: str
    rep: int
    cpus: list[int]
    seconds: float
    sent: int
    answered: int
    answered_by_cpu: list[int]
    program_by_cpu: list[int]
    busy: dict[str, float]
    softirq: dict[str, float]
    steal: dict[str, float]
    net_rx: list[int]
    program_ns: float
    generator_ns: float
    sink_ns: float
    daemon_cpu: float
    pinned: bool
    errors: list[str] = field(default_factory=list)
    veth_counters: dict[str, int] = field(default_factory=dict)
    own_cpu: dict[str, float] = field(default_factory=dict)
    waited: dict[str, float] = field(default_factory=dict)

    @property
    def quiet(self) -> bool:
        """
        Other tasks kept the generator threads waiting under L{QUIET} of the time.
        """
        return sum(self.waited.values()) < QUIET * self.seconds * len(self.cpus)

    @property
    def per_cpu_second(self) -> float:
        """
        Answers per second of CPU the pipelines had (their threads, softirq, ksoftirqd):
        what a neighbour's share of the CPUs does not change.
        """
        own = sum(self.own_cpu.values())
        return self.answered / own if own else 0.0

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


class Pipeline:
    """
    What both pipelines share: the blast of one configuration, measured.
    """

    name = ""
    gen_agent = ""
    sink_agent = ""
    answered_slot = 0  # the program's per-CPU counter slot that counts its answers

    def __init__(self, args: argparse.Namespace, cpus: list[int]) -> None:
        self.args = args
        self.cpus = cpus
        self.agents = Agents()
        self.created: list[str] = []
        self.daemon: subprocess.Popen[Any] | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="teredonode-scaling-"))
        self.tmp.chmod(0o755)
        self.prog_id = 0
        self.counters_map = 0
        self.gen_ids: dict[str, int] = {}
        self.sink_ids: dict[str, int] = {}
        self.veths: list[tuple[str, str]] = []

    def namespace(self, suffix: str, role: str) -> str:
        ns = f"tnscale-{suffix}-{role}"
        run([tool("ip"), "netns", "add", ns])
        self.created.append(ns)
        run([tool("ip"), "-n", ns, "link", "set", "lo", "up"])
        return ns

    def set_tag(self) -> list[int]:
        raise NotImplementedError

    def sink_counts(self) -> list[int]:
        return [int(x) for x in self.agents.ask(self.sink_agent, cmd="counts_by_cpu")["counts"]["answered"]]

    def measure(self, rep: int, cpus: list[int]) -> Sample:
        before = self.set_tag()
        prog0, gen0, sink0 = prog_run(self.prog_id), prog_run(self.gen_ids["xdpgen_tx"]), \
            prog_run(self.sink_ids["xdpgen_sink"])
        counters0 = per_cpu_slot(self.counters_map, self.answered_slot)
        daemon_pids = process_tree(self.daemon.pid) if self.daemon is not None else []
        daemon0 = cpu_seconds(daemon_pids)
        veth0 = {f"{dev}:{k}": v for ns, dev in self.veths for k, v in veth_stats(ns, dev).items()}
        r = self.agents.ask(self.gen_agent, cmd="blast", cpus=cpus, seconds=self.args.seconds,
                            repeat=self.args.repeat)
        time.sleep(SETTLE)
        after = self.sink_counts()
        prog1, gen1, sink1 = prog_run(self.prog_id), prog_run(self.gen_ids["xdpgen_tx"]), \
            prog_run(self.sink_ids["xdpgen_sink"])
        counters1 = per_cpu_slot(self.counters_map, self.answered_slot)
        veth1 = {f"{dev}:{k}": v for ns, dev in self.veths for k, v in veth_stats(ns, dev).items()}
        threads = r["threads"]
        start = min(t["start"] for t in threads.values())
        end = max(t["end"] for t in threads.values())
        ticks = r["ticks"]

        def share(column: int) -> dict[str, float]:
            return {cpu: t[column] / t[3] if t[3] else 0.0 for cpu, t in ticks.items()}

        def per_run(a: tuple[int, int], b: tuple[int, int]) -> float:
            return (b[0] - a[0]) / (b[1] - a[1]) if b[1] > a[1] else float("nan")

        return Sample(
            pipeline=self.name, rep=rep, cpus=cpus, seconds=end - start,
            sent=sum(int(t["sent"]) for t in threads.values()),
            answered=sum(after) - sum(before),
            answered_by_cpu=[b - a for a, b in zip(before, after)],
            program_by_cpu=[b - a for a, b in zip(counters0, counters1)],
            busy=share(0), softirq=share(1), steal=share(2), net_rx=r["net_rx"],
            program_ns=per_run(prog0, prog1), generator_ns=per_run(gen0, gen1), sink_ns=per_run(sink0, sink1),
            daemon_cpu=cpu_seconds(daemon_pids) - daemon0,
            pinned=all(t["ran_on"] for t in threads.values()),
            errors=[t["error"] for t in threads.values() if t["error"]],
            veth_counters={k: v - veth0.get(k, 0) for k, v in veth1.items() if v != veth0.get(k, 0)},
            # The thread's run time includes the softirqs run on top of it (this kernel does
            # not take interrupt time out of a task's); the rest ran in ksoftirqd.
            own_cpu={c: t["thread_s"] + t["ksoftirqd_s"] for c, t in threads.items()},
            waited={c: t["waited_s"] for c, t in threads.items()},
        )

    def close(self) -> None:
        self.agents.close()
        if self.daemon is not None:
            stop(self.daemon)
            self.daemon = None
        remove_namespaces(reversed(self.created))
        self.created.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


class ServerPipeline(Pipeline):
    """
    Load namespace (generator + sink) -- veth -- server namespace (our server, fast path on,
    native XDP).
    """

    name = "server"
    gen_agent = sink_agent = "load"
    answered_slot = 2  # C_RA

    def open(self) -> None:
        suffix = secrets.token_hex(3)
        srv, load = self.namespace(suffix, "srv"), self.namespace(suffix, "load")
        vs, vl = f"tns{suffix}s", f"tns{suffix}l"
        multiqueue_veth(srv, vs, vl, load, self.args.queues or len(self.cpus))
        self.veths = [(srv, vs), (load, vl)]
        ip = tool("ip")
        for ns, dev, addrs, other in ((srv, vs, (SERVER_PRIMARY, SERVER_SECONDARY), "198.51.100.0/24"),
                                      (load, vl, tuple(LOAD_PREFIX + str(2 + c) for c in self.cpus),
                                       "203.0.113.0/24")):
            for addr in addrs:
                run([ip, "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
            run([ip, "-n", ns, "link", "set", dev, "up"])
        log = self.tmp / "server.log"
        conf = self.tmp / "server.toml"
        conf.write_text(
            "# generated by benchmarks/fastpath_scaling.py\n"
            "[node]\n"
            f'status-socket = "{self.tmp}/server.status"\n'
            f'state-dir = "{self.tmp}/state"\n'
            "[server]\n"
            "enabled = true\n"
            f'primary = "{SERVER_PRIMARY}"\n'
            f'secondary = "{SERVER_SECONDARY}"\n'
            'interface = ""\n'
            f"rs-rate = {LIMIT_RATE}\nrs-burst = {LIMIT_BURST}\nrs-initial = {LIMIT_BURST}\n"
            f"ra-rate = {LIMIT_RATE}\nra-burst = {LIMIT_BURST}\n"
            'fast-path = "on"\n'
            'xdp-mode = "native"\n'
        )
        with open(log, "ab") as out:
            self.daemon = subprocess.Popen(
                [ip, "netns", "exec", srv, tool("twistd"), "-n", f"--pidfile={self.tmp}/server.pid", "teredo",
                 "--config", str(conf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=str(self.tmp),
                env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), start_new_session=True)
        mac = json.loads(run([ip, "-n", srv, "-j", "link", "show", "dev", vs]).stdout)[0]["address"]
        self.agents.start("load", agent_argv(load, ["--server-agent", vl, mac] + (["--one-source"] if self.args.one_source else [])))
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "Router Solicitations:" in text or self.daemon.poll() is not None:
                break
            time.sleep(0.1)
        if "XDP fast path on" not in text:
            raise BenchError(f"the server's fast path did not start: {text.strip().splitlines()[-3:]}")
        probe = self.agents.ask("load", cmd="probe", timeout=10.0)
        if not probe["ok"]:
            raise BenchError(f"the server does not answer: {probe['problem']}")
        self.prog_id = xdp_prog_id(srv, vs)
        self.counters_map = named_map(self.prog_id, "counters")
        self.gen_ids = self.sink_ids = self.agents.ask("load", cmd="ids")

    def set_tag(self) -> list[int]:
        return [int(x) for x in self.agents.ask("load", cmd="tag")["counts"]["answered"]]

    def sink_counts(self) -> list[int]:
        return [int(x) for x in self.agents.ask("load", cmd="counts")["counts"]["answered"]]


class RelayPipeline(Pipeline):
    """
    C{relay_rate.py}'s three namespaces, multi-queue veths: the client's generator in "v4",
    our relay (fast path on, native XDP) in "relay", the native host's sink in "v6".
    """

    name = "relay up"
    gen_agent, sink_agent = "v4", "v6"
    answered_slot = -1  # found by name below

    def open(self) -> None:
        import relay_rate as rr

        suffix = secrets.token_hex(3)
        v4, relay, v6 = self.namespace(suffix, "v4"), self.namespace(suffix, "relay"), self.namespace(suffix, "v6")
        r4, g4, r6, g6 = f"tnr{suffix}4", f"tng{suffix}4", f"tnr{suffix}6", f"tng{suffix}6"
        multiqueue_veth(relay, r4, g4, v4, self.args.queues or len(self.cpus))
        multiqueue_veth(relay, r6, g6, v6, self.args.queues or len(self.cpus))
        self.veths = [(v4, g4), (relay, r4), (relay, r6), (v6, g6)]
        ip = tool("ip")
        batches = {
            relay: [f"addr add {rr.RELAY_V4}/24 dev {r4}", f"addr add {rr.RELAY_V6}/64 dev {r6} nodad",
                    f"link set {r4} up", f"link set {r6} up"],
            v4: [f"addr add {rr.CLIENT_V4}/24 dev {g4}", f"addr add {rr.SERVER_V4}/24 dev {g4}", f"link set {g4} up"],
            v6: [f"addr add {rr.HOST_V6}/64 dev {g6} nodad", f"link set {g6} up",
                 f"-6 route add 2001::/32 via {rr.RELAY_V6} dev {g6}"],
        }
        for ns, cmds in batches.items():
            for c in cmds:
                run([ip, "-n", ns] + c.split())
        run([ip, "netns", "exec", relay, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        for ns, dev in ((relay, r4), (relay, r6), (v4, g4), (v6, g6)):
            # relay_rate's offloads: software checksums on send, GRO on.
            run([ip, "netns", "exec", ns, sys.executable, str(Path(rr.__file__).resolve()), "--offloads", dev])

        def mac(ns: str, dev: str) -> str:
            return str(json.loads(run([ip, "-n", ns, "-j", "link", "show", "dev", dev]).stdout)[0]["address"])

        for side, ns, dev, peer in (("v4", v4, g4, r4), ("v6", v6, g6, r6)):
            self.agents.start(side, agent_argv(ns, ["--relay-agent", side, dev, mac(relay, peer)]))
        log = self.tmp / "relay.log"
        conf = self.tmp / "relay.toml"
        conf.write_text(
            "# generated by benchmarks/fastpath_scaling.py\n"
            "[node]\n"
            f'status-socket = "{self.tmp}/relay.status"\n'
            f'state-dir = "{self.tmp}/state"\n'
            "[relay]\n"
            "enabled = true\n"
            'interface = "teredo-relay"\n'
            "port = 3544\n"
            'prefix = "2001::/32"\n'
            'fast-path = "on"\n'
            'xdp-mode = "native"\n'
        )
        with open(log, "ab") as out:
            self.daemon = subprocess.Popen(
                [ip, "netns", "exec", relay, tool("twistd"), "-n", f"--pidfile={self.tmp}/relay.pid", "teredo",
                 "--config", str(conf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=str(self.tmp),
                env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), start_new_session=True)
        self.trust(log, relay)
        self.prog_id = xdp_prog_id(relay, r4)
        self.counters_map = named_map(self.prog_id, "counters")
        self.answered_slot = relay_slot("delivered")
        self.gen_ids = self.agents.ask("v4", cmd="ids")
        self.sink_ids = self.agents.ask("v6", cmd="ids")

    def step(self, direction: str, rate: float, seconds: float) -> int:
        gen, sink = ("v4", "v6") if direction == "up" else ("v6", "v4")
        tag = secrets.token_hex(4)
        self.agents.ask(gen, cmd="tag", tag=tag)
        before = self.agents.ask(sink, cmd="tag", tag=tag)["counts"]["answered"]
        self.agents.ask(gen, cmd="offer", rate=rate, seconds=seconds)
        time.sleep(0.1)
        return int(self.agents.ask(sink, cmd="counts")["counts"]["answered"]) - int(before)

    def trust(self, log: Path, relay: str) -> None:
        """
        As C{relay_rate}: the route, the fast path's line, then the host's datagrams to the
        client until the relay delivers both ways (its bubble exchange made it trust the
        client).
        """
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            routes = run([tool("ip"), "-n", relay, "-6", "route", "show", "2001::/32"], check=False).stdout
            if "dev teredo-relay" in routes and "Trusted peers:" in log.read_text(errors="replace"):
                break
            time.sleep(0.2)
        while time.monotonic() < deadline:
            if self.step("down", 20.0, 0.25) and self.step("up", 20.0, 0.25):
                lines = [x for x in log.read_text(errors="replace").splitlines() if "Trusted peers:" in x]
                if not lines or "kernel fast path (" not in lines[-1]:
                    raise BenchError(f"the relay's fast path is not carrying trusted peers: {lines[-1:]}")
                return
        raise BenchError(f"the relay never delivered; log: {log.read_text(errors='replace').splitlines()[-3:]}")

    def set_tag(self) -> list[int]:
        tag = secrets.token_hex(4)
        self.agents.ask("v4", cmd="tag", tag=tag)
        self.agents.ask("v6", cmd="tag", tag=tag)
        return self.sink_counts()


def relay_slot(name: str) -> int:
    """
    The index of the relay program's counter C{name} (teredonode.fastpath.relay's order).
    """
    from teredonode.fastpath import relay

    return list(relay.COUNTERS).index(name)


# ============================================================================ report


def summarize(samples: list[Sample], cpus: list[int]) -> dict[str, Any]:
    """
    Per pipeline and configuration, over the repetitions: the answered rates, the answers
    per CPU-second the pipelines had, the program's ns per run; per repetition the ratio
    both CPUs / one CPU (each alone), raw and with each configuration's rate taken at the
    CPU time it had (answers per CPU-second x CPUs: what a neighbour's share does not move).
    """
    out: dict[str, Any] = {}
    both = ",".join(map(str, cpus))
    for pipeline in dict.fromkeys(s.pipeline for s in samples):
        mine = [s for s in samples if s.pipeline == pipeline]
        by: dict[str, list[Sample]] = {}
        for s in mine:
            by.setdefault(",".join(map(str, s.cpus)), []).append(s)
        ratios: dict[str, list[float]] = {}
        for rep in dict.fromkeys(s.rep for s in mine):
            got = {",".join(map(str, s.cpus)): s for s in mine if s.rep == rep}
            two = got.get(both)
            for single in cpus:
                one = got.get(str(single))
                if two and one and one.rate and one.per_cpu_second:
                    ratios.setdefault(f"both/{single}", []).append(two.rate / one.rate)
                    if two.program_ns > 0 and one.program_ns > 0:
                        ratios.setdefault(f"both/{single} program only", []).append(
                            len(cpus) * one.program_ns / two.program_ns)
                    if two.quiet and one.quiet:
                        ratios.setdefault(f"both/{single} quiet", []).append(two.rate / one.rate)
                    ratios.setdefault(f"both/{single} per CPU-second", []).append(
                        len(cpus) * two.per_cpu_second / one.per_cpu_second)
        out[pipeline] = {
            "rates": {k: [s.rate for s in v] for k, v in by.items()},
            "per_cpu_second": {k: [s.per_cpu_second for s in v] for k, v in by.items()},
            "program_ns": {k: [s.program_ns for s in v] for k, v in by.items()},
            "generator_ns": {k: [s.generator_ns for s in v] for k, v in by.items()},
            "sink_ns": {k: [s.sink_ns for s in v] for k, v in by.items()},
            "ratios": ratios,
        }
    return out


def span(values: list[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "n/a"
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def show(s: Sample, verbose: bool) -> None:
    per_cpu = "  ".join(
        f"cpu{c}: answered {s.answered_by_cpu[c] / s.seconds:>9,.0f}/s program {s.program_by_cpu[c]:>9,}"
        f" busy {s.busy.get(str(c), 0) * 100:3.0f}% (softirq {s.softirq.get(str(c), 0) * 100:2.0f}%)"
        f" ours {s.own_cpu.get(str(c), 0):4.2f} s, waited {s.waited.get(str(c), 0):4.2f} s"
        f" NET_RX {s.net_rx[c]:>7,}"
        for c in range(min(len(s.answered_by_cpu), len(s.net_rx))))
    print(f"  {s.pipeline:>8} r{s.rep} cpus {{{','.join(map(str, s.cpus))}}}: {s.rate:>10,.0f}/s"
          f" (sent {s.sent / s.seconds:>10,.0f}/s, lost {max(s.sent - s.answered, 0):,}) in {s.seconds:.2f} s,"
          f" {s.per_cpu_second:>10,.0f} per CPU-second;"
          f"  BPF ns/run: program {s.program_ns:4.0f}, generator {s.generator_ns:4.0f}, sink {s.sink_ns:4.0f};"
          f"  daemon CPU {s.daemon_cpu:.2f} s" + ("" if s.pinned else "  NOT PINNED")
          + (f"  ERRORS {s.errors}" if s.errors else ""), flush=True)
    print(f"           {per_cpu}", flush=True)
    if verbose:
        print(f"           veth counters: {s.veth_counters}", flush=True)


def report(summary: dict[str, Any], cpus: list[int]) -> None:
    both = ",".join(map(str, cpus))
    c0, c1 = str(cpus[0]), str(cpus[1])
    print()
    print("result (answered RAs / forwarded datagrams per second; ranges over repetitions, ratios per repetition):")
    print(f"  {'':>8}  {'CPU ' + c0:>21}  {'CPU ' + c1:>21}  {'both':>21}  {'both/CPU ' + c0:>13}"
          f"  {'both/CPU ' + c1:>13}  {'quiet reps':>10}  {'per CPU-second':>14}  {'program only':>12}"
          f"  program ns/run (1 CPU; both)")
    for name, sm in summary.items():
        rates, ns, r = sm["rates"], sm["program_ns"], sm["ratios"]
        norm = r.get(f"both/{c0} per CPU-second", []) + r.get(f"both/{c1} per CPU-second", [])
        quiet = r.get(f"both/{c0} quiet", []) + r.get(f"both/{c1} quiet", [])
        alone = r.get(f"both/{c0} program only", []) + r.get(f"both/{c1} program only", [])
        print(f"  {name:>8}  {span(rates[c0]):>19}/s  {span(rates[c1]):>19}/s  {span(rates[both]):>19}/s"
              f"  {span(r.get(f'both/{c0}', []), '{:.2f}'):>13}  {span(r.get(f'both/{c1}', []), '{:.2f}'):>13}"
              f"  {span(quiet, '{:.2f}'):>10}  {span(norm, '{:.2f}'):>14}  {span(alone, '{:.2f}'):>12}"
              f"  {span(ns[c0] + ns[c1], '{:.0f}')}; {span(ns[both], '{:.0f}')}")
    print(f"  (quiet reps: the raw ratio where other tasks kept the generators waiting under {QUIET:.0%} of the"
          f" time in both configurations; per CPU-second: answers per second of CPU the pipelines had,"
          f" both over one, times {len(cpus)}; program only: the same from the program's BPF run time"
          f" per run, as if it were all a CPU did)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repetition of 2 s per configuration")
    parser.add_argument("--json", action="store_true", help="also print every sample and the summary as JSON")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per configuration (default 5, --quick 2)")
    parser.add_argument("--repeat", type=int, default=REPEAT, help=f"frames per test run call (default {REPEAT})")
    parser.add_argument("--pipelines", default="server,relay", help="server, relay or both (default)")
    parser.add_argument("--one-source", action="store_true",
                        help="the server's RSs all from one source address (default: one per CPU)")
    parser.add_argument("--queues", type=int, default=0,
                        help="receive and transmit queues per veth (default: one per CPU; 1 shows what a "
                        "single queue does: one NAPI instance, run on one CPU at a time)")
    parser.add_argument("--verbose", action="store_true", help="also print the veths' counters that moved")
    parser.add_argument("--server-agent", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--relay-agent", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.server_agent:
        ifname, mac = args.server_agent
        serve_commands(ServerAgent(ifname, mac, args.one_source).handle, sys.stdin, sys.stdout)
        return 0
    if args.relay_agent:
        serve_commands(RelayAgent(*args.relay_agent).handle, sys.stdin, sys.stdout)
        return 0
    if os.geteuid() != 0:
        print("fastpath_scaling.py: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    args.reps = args.reps or (1 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        print("fastpath_scaling.py: needs two CPUs", file=sys.stderr)
        return 2
    configs = [[cpus[0]], [cpus[1]], cpus]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    samples: list[Sample] = []
    stats: BpfStats | None = None
    pipeline: Pipeline | None = None
    try:
        for name in ("ip", "twistd", "bpftool", "ethtool", "clang"):
            tool(name)
        chosen = [p for p in args.pipelines.split(",") if p]
        if not chosen or set(chosen) - {"server", "relay"}:
            raise BenchError(f"--pipelines: server, relay or both, not {args.pipelines!r}")
        stats = BpfStats()
        print(f"fastpath_scaling: per-CPU pipelines (generator, program, sink in softirq on the generator "
              f"thread's CPU); CPUs {cpus}; {args.reps} x {args.seconds:g} s per configuration; "
              f"{args.repeat} frames per call, batches of {BATCH}; server RSs from "
              f"{'one source' if args.one_source else 'one source per CPU'}", flush=True)
        for which in chosen:
            pipeline = ServerPipeline(args, cpus) if which == "server" else RelayPipeline(args, cpus)
            pipeline.open()
            for rep in range(1, args.reps + 1):
                for config in configs:
                    s = pipeline.measure(rep, config)
                    samples.append(s)
                    show(s, args.verbose)
            pipeline.close()
            pipeline = None
        summary = summarize(samples, cpus)
        report(summary, cpus)
        print(f"  (elapsed {time.monotonic() - started:.0f} s; the generator and the sink share each CPU "
              f"with the program in every configuration)")
        if args.json:
            print(json.dumps({"samples": [asdict(s) | {"rate": s.rate, "per_cpu_second": s.per_cpu_second}
                                          for s in samples], "summary": summary}))
        return 0
    except BenchError as exc:
        print(f"fastpath_scaling.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastpath_scaling.py: interrupted; namespaces removed", file=sys.stderr)
        return 130
    finally:
        if pipeline is not None:
            pipeline.close()
        if stats is not None:
            stats.close()


if __name__ == "__main__":
    sys.exit(main())
