#!/usr/bin/env python3
"""
Router Solicitation -> Router Advertisement throughput: our Teredo server (Python path, and
with its XDP fast path) against miredo-server, in one run, on this machine.

    sudo python3 benchmarks/server_rs.py            # two rounds, 4-12 minutes (bounded at 12)
    sudo python3 benchmarks/server_rs.py --quick    # about 1 minute

Why it is built this way (docs/performance.md has the method and the figures):

  - All traffic stays inside two network namespaces this script creates (random suffix) and
    always deletes, joined by one veth pair: the server namespace holds 203.0.113.10 and
    203.0.113.11, the load namespace 198.51.100.2 (documentation ranges).  Nothing touches
    the host's network or the lab's namespaces.
  - The server under test and the load generator are pinned to different CPUs (taskset), so
    the generator's own cost does not steal from the server; server CPU is read from
    C{/proc/<pid>/stat} (utime + stime, summed over the server's process tree, because
    miredo-server forks) before and after each step.  CPU-seconds per RS is the robust
    figure on a shared machine; RS/s drifts with the neighbours, so the servers alternate
    (ours, Miredo, ours, Miredo) and only same-run ratios are reported.
  - The generator is a Python process (this file, C{--generator}) that paces RSs at an
    offered rate, each with a 13-byte authentication header carrying a unique nonce, from
    several source ports, and receives the RAs concurrently, matching them by nonce.  If it
    cannot reach the offered rate it says so ("generator-limited"): the server's figure is
    then a lower bound, not its capacity.
  - Three servers take turns: C{ours} (C{fast-path = "off"}: every RS in Python), C{fast}
    (C{fast-path = "on"}: the XDP program answers the RSs, docs/performance.md) and Miredo.
  - Kernel receive work is counted as the server's: both veths use NAPI (GRO on), in
    threaded mode; the server veth's NAPI threads are pinned to the server CPU and added to
    the server's CPU figure (there the RSs go through IP and UDP, or, for the fast path,
    which runs generic XDP on a veth, through the program and its transmit), the load
    veth's to the generator's CPU.  The load veth computes UDP checksums in software (tx
    checksum offload off), as frames from a wire carry them: the fast path verifies them
    and leaves a datagram with a merely partial checksum to the stack.
  - Our server rate-limits RSs per source address and globally.  The benchmark measures the
    data path, not the limiter's refusals, so it configures C{rs-rate}, C{rs-burst},
    C{rs-initial}, C{ra-rate} and C{ra-burst} to 1 000 000; the limiter still runs its
    per-packet bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchlib import (  # noqa: E402  (this directory is on sys.path when run as a script)
    Agents,
    TICK,
    BenchError,
    cpu_seconds,
    napi_threads,
    process_tree,
    rate_grid,
    remove_namespaces,
    run,
    serve_commands,
    stop,
    tool,
)

SERVER_PRIMARY = "203.0.113.10"
SERVER_SECONDARY = "203.0.113.11"
LOAD_ADDRESS = "198.51.100.2"
TEREDO_PORT = 3544
SOURCE_PORTS = 16
#: The generator agent's name (L{Agents}).
GENERATOR = "generator"

#: A step fails when more than this fraction of its RSs go unanswered.
LOSS_LIMIT = 0.01
#: The generator "offered" a rate when it sent at least this fraction of it.
OFFER_TOLERANCE = 0.95
#: After a step, how long to keep collecting RAs still in flight.
GRACE_SECONDS = 0.5
#: Sends between two looks at the receive sockets: small enough that replies never pile up
#: past the receive buffers, big enough that the epoll call is amortised.
SEND_BATCH = 32
RCVBUF = 4 << 20
SERVERS = ("ours", "fast", "miredo")


def _fast_path_missing() -> str | None:
    """
    Why the fast path cannot run here (no clang or libbpf), or C{None}.
    """
    try:
        from teredonode.fastpath.libbpf import load_libbpf
        from teredonode.fastpath.program import object_path

        load_libbpf()
        object_path()
    except Exception as exc:  # FastPathUnavailable, BPFError, ImportError
        return str(exc)
    return None


# ============================================================================ load generator


class Generator:
    """
    The load side: paced RSs out, RAs in, matched by nonce.  Runs inside the load namespace,
    driven by one JSON command per line on stdin, one JSON answer per line on stdout.
    """

    def __init__(self, server: str, source: str, ports: int) -> None:
        from teredonode.wire.address import CLIENT_LINK_LOCAL_RESTRICTED
        from teredonode.wire.ipv6 import ALL_ROUTERS, RouterSolicitation, icmpv6_packet
        from teredonode.wire.teredo import AuthIndicator, encode_payload

        self.dst = (server, TEREDO_PORT)
        # The restricted (cone bit 0) link-local source: the server answers from the address
        # the RS went to, so every RA comes back to the socket that sent its RS.
        self.ipv6 = icmpv6_packet(CLIENT_LINK_LOCAL_RESTRICTED, ALL_ROUTERS, RouterSolicitation(), 255)
        # Per RS only the nonce changes, and the ICMPv6 checksum does not cover the Teredo
        # envelope, so each datagram is head + nonce + tail: no encoding in the send loop.
        # The template is checked once against the codec so it cannot drift from it.
        self.head = b"\x00\x01\x00\x00"
        self.tail = b"\x00" + self.ipv6
        sample = secrets.token_bytes(8)
        if encode_payload(self.ipv6, AuthIndicator(sample)) != self.head + sample + self.tail:
            raise SystemExit("generator: RS template disagrees with teredonode.wire.teredo")
        self.socks: list[socket.socket] = []
        self.epoll = select.epoll()
        for _ in range(ports):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)
            s.bind((source, 0))
            s.setblocking(False)
            self.epoll.register(s.fileno(), select.EPOLLIN)
            self.socks.append(s)
        self.by_fd = {s.fileno(): s for s in self.socks}

    def validate(self, data: bytes, sock: socket.socket, nonce: bytes) -> str | None:
        """
        Why C{data} is not the RA the RFC wants for an RS with C{nonce} sent from C{sock},
        or C{None}.  Done on the first reply of each step only: a full decode per reply
        would make the generator, not the server, the bottleneck.
        """
        from teredonode.wire.errors import ParseError
        from teredonode.wire.ipv6 import RouterAdvertisement, decode_icmpv6
        from teredonode.wire.teredo import classify

        try:
            packet = classify(data)
            msg = decode_icmpv6(packet.ipv6[40:], packet.header.src, packet.header.dst)
        except ParseError as exc:
            return f"unparsable reply: {exc}"
        if packet.auth is None or packet.auth.nonce != nonce:
            return "nonce not echoed"
        if packet.origin is None or tuple(packet.origin) != sock.getsockname():
            return f"origin indication {packet.origin} is not {sock.getsockname()}"
        if not isinstance(msg, RouterAdvertisement) or not msg.prefixes:
            return "not a router advertisement with a prefix"
        return None

    def probe(self, timeout: float) -> dict[str, Any]:
        """
        Send one RS every 50 ms until one is answered: the server is up and serving.
        """
        sock = self.socks[0]
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            nonce = secrets.token_bytes(8)
            sock.sendto(self.head + nonce + self.tail, self.dst)
            wait_until = min(deadline, time.monotonic() + 0.05)
            while (left := wait_until - time.monotonic()) > 0:
                for fd, _ in self.epoll.poll(left):
                    for data in _drain(self.by_fd[fd]):
                        if data[4:12] == nonce:
                            problem = self.validate(data, sock, nonce)
                            return {"ok": problem is None, "problem": problem,
                                    "after": time.monotonic() - start}
        return {"ok": False, "problem": f"no answer within {timeout:g} s", "after": timeout}

    def step(self, rate: float, seconds: float) -> dict[str, Any]:
        """
        Offer C{rate} RS/s for C{seconds}, then collect late RAs for up to L{GRACE_SECONDS}.

        Pacing is by schedule, not by sleeping: RS number C{i} is due at C{t0 + i / rate};
        the loop sends whatever is due (at most L{SEND_BATCH} at a time), then polls the
        sockets for replies with a timeout reaching to the next due RS.  When the generator
        falls behind it sends as fast as it can, and the shortfall shows in C{sent}.
        """
        socks = self.socks
        nsock = len(socks)
        sendtos = [s.sendto for s in socks]
        by_fd = self.by_fd
        poll = self.epoll.poll
        dst = self.dst
        tag = secrets.token_bytes(4)  # first half of every nonce of this step
        head = self.head + tag
        tail = self.tail
        answered = bytearray(int(rate * seconds) + SEND_BATCH + 1)
        limit = len(answered)
        sent = send_failed = got = dup = stale = 0
        problem: str | None = None
        checked = False
        perf = time.perf_counter
        t0 = perf()
        end = t0 + seconds
        collect_until = 0.0
        while True:
            now = perf()
            if now >= end and not collect_until:
                collect_until = now + GRACE_SECONDS
            if collect_until:
                if now >= collect_until or got + send_failed >= sent:
                    break
                timeout = collect_until - now
            else:
                due = min(int((now - t0) * rate) + 1, limit)
                if due > sent:
                    stop = min(due, sent + SEND_BATCH)
                    for seq in range(sent, stop):
                        try:
                            sendtos[seq % nsock](head + seq.to_bytes(4, "big") + tail, dst)
                        except OSError:
                            send_failed += 1
                            answered[seq] = 2  # never offered: neither answered nor lost
                    sent = stop
                    timeout = 0.0
                else:
                    timeout = max(0.0, min(end, t0 + sent / rate) - now)
            for fd, _ in poll(timeout):
                sock = by_fd[fd]
                recv = sock.recv
                for _ in range(64):
                    try:
                        data = recv(2048)
                    except BlockingIOError:
                        break
                    if data[4:8] != tag:
                        stale += 1  # a late reply to an earlier step
                        continue
                    seq = int.from_bytes(data[8:12], "big")
                    if seq >= sent or answered[seq]:
                        dup += 1
                        continue
                    answered[seq] = 1
                    got += 1
                    if not checked:
                        checked = True
                        problem = self.validate(data, sock, data[4:12])
        elapsed = min(perf(), end) - t0
        return {
            "rate": rate,
            "sent": sent - send_failed,
            "send_failed": send_failed,
            "answered": got,
            "duplicates": dup,
            "stale": stale,
            "elapsed": elapsed,
            "problem": problem,
        }



class XdpLoad:
    """
    The same commands as L{Generator}, answered by the kernel generator of
    C{benchmarks/xdpgen.py}: RSs built once and transmitted by an XDP program in
    live-frames mode, RAs counted and dropped by the sink on the same veth.  It reaches
    millions of frames/s on one CPU, so the server, not the generator, is what fails first.
    """

    def __init__(self, server: str, source: str, ports: int, ifname: str, server_mac: str) -> None:
        from xdpgen import ETH_IPV4, XdpGenerator, ethernet, mac_of

        from teredonode.lab.usernat import udp_packet

        from teredonode.wire.address import CLIENT_LINK_LOCAL_RESTRICTED
        from teredonode.wire.ipv6 import ALL_ROUTERS, RouterSolicitation, icmpv6_packet
        from teredonode.wire.teredo import AuthIndicator, encode_payload

        ipv6 = icmpv6_packet(CLIENT_LINK_LOCAL_RESTRICTED, ALL_ROUTERS, RouterSolicitation(), 255)
        payload = encode_payload(ipv6, AuthIndicator(bytes(8)))
        self.base_port = 40000
        frame = ethernet(bytes.fromhex(server_mac.replace(":", "")), mac_of(ifname), ETH_IPV4,
                         udp_packet((source, self.base_port), (server, TEREDO_PORT), payload))
        # Ethernet 14 + IPv4 20 + UDP 8 + the indicator's 4 bytes: the nonce, in the RS and
        # in the RA alike (the RA echoes the indicator first).  Its first half is the step's
        # tag, its second the sequence number; the source port runs over `ports` values.
        nonce = 14 + 20 + 8 + 4
        self.gen = XdpGenerator(ifname)
        self.gen.configure(frame, tag_offset=nonce, seq_offset=nonce + 4, vary_offset=14 + 20,
                           vary_base=self.base_port, vary_span=ports, csum_offset=14 + 20 + 6,
                           csum_udp=True, answer_ethertype=ETH_IPV4,
                           answer_sport=TEREDO_PORT, answer_tag_offset=nonce)
        self.source = source
        self.ports = ports

    def validate(self) -> str | None:
        """
        Why the step's sample answer is not the RA the RFC wants, or C{None}.
        """
        from teredonode.wire.errors import ParseError
        from teredonode.wire.ipv6 import RouterAdvertisement, decode_icmpv6
        from teredonode.wire.teredo import classify

        frame = self.gen.sample()
        if frame is None:
            return "no sample answer"
        dport = int.from_bytes(frame[36:38], "big")
        try:
            packet = classify(frame[42:])
            msg = decode_icmpv6(packet.ipv6[40:], packet.header.src, packet.header.dst)
        except ParseError as exc:
            return f"unparsable reply: {exc}"
        if packet.auth is None or packet.auth.nonce[:4] != frame[46:50]:
            return "nonce not echoed"
        if not self.base_port <= dport < self.base_port + self.ports:
            return f"answer to port {dport}, not one of ours"
        if packet.origin is None or tuple(packet.origin) != (self.source, dport):
            return f"origin indication {packet.origin} is not {(self.source, dport)}"
        if not isinstance(msg, RouterAdvertisement) or not msg.prefixes:
            return "not a router advertisement with a prefix"
        return None

    def probe(self, timeout: float) -> dict[str, Any]:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            r = self.gen.step(20.0, 0.05, 0.05)
            if r["answered"]:
                problem = self.validate()
                return {"ok": problem is None, "problem": problem, "after": time.monotonic() - start}
        return {"ok": False, "problem": f"no answer within {timeout:g} s", "after": timeout}

    def step(self, rate: float, seconds: float) -> dict[str, Any]:
        r = self.gen.step(rate, seconds, GRACE_SECONDS)
        r.update(send_failed=0, duplicates=0,
                 problem=self.validate() if r["answered"] else None)
        return r



def serve(load: Generator | XdpLoad, commands: TextIO, answers: TextIO) -> None:
    """
    Answer the orchestrator's C{probe} and C{step} commands.
    """

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "probe":
            return load.probe(cmd["timeout"])
        if cmd["cmd"] == "step":
            return load.step(cmd["rate"], cmd["seconds"])
        return {"error": f"unknown command {cmd['cmd']!r}"}

    serve_commands(handle, commands, answers)


def _drain(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            yield sock.recv(2048)
        except BlockingIOError:
            return


# ============================================================================ orchestration


class Namespaces:
    """
    The two namespaces and the veth pair; L{close} removes them and every process still in
    them (a process keeps a deleted namespace alive, so both must go).
    """

    def __init__(self) -> None:
        suffix = secrets.token_hex(3)
        self.server = f"tnbench-{suffix}-srv"
        self.load = f"tnbench-{suffix}-load"
        self._veth = (f"tnb{suffix}s", f"tnb{suffix}l")
        self._created: list[str] = []

    def open(self) -> None:
        ip = tool("ip")
        for ns in (self.server, self.load):
            run([ip, "netns", "add", ns])
            self._created.append(ns)
        vs, vl = self._veth
        run([ip, "-n", self.server, "link", "add", vs, "type", "veth", "peer", "name", vl,
              "netns", self.load])
        for ns, dev, addrs, other in (
            (self.server, vs, (SERVER_PRIMARY, SERVER_SECONDARY), "198.51.100.0/24"),
            (self.load, vl, (LOAD_ADDRESS,), "203.0.113.0/24"),
        ):
            for addr in addrs:
                run([ip, "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
            run([ip, "-n", ns, "link", "set", "lo", "up"])
            run([ip, "-n", ns, "link", "set", dev, "up"])
            run([ip, "-n", ns, "route", "add", other, "dev", dev])
        for ns, dev, tx_checksum in ((self.server, vs, 1), (self.load, vl, 0)):
            run([ip, "netns", "exec", ns, sys.executable, str(Path(__file__).resolve()),
                  "--ethtool", dev, str(tx_checksum)])
            run([ip, "netns", "exec", ns, "sh", "-c", f"echo 1 > /sys/class/net/{dev}/threaded"])

    def _veth_stats(self, which: str) -> dict[str, Any]:
        ns = self.server if which == "server" else self.load
        out = run([tool("ip"), "-n", ns, "-s", "-j", "link", "show", "dev", self.veth(which)]).stdout
        return json.loads(out)[0]["stats64"]  # type: ignore[no-any-return]

    def rx_dropped(self, which: str) -> int:
        """
        Datagrams lost on their way into the server's or the load's veth: refused by its
        full receive ring (counted as the peer's tx drops) or dropped on receive.  A ring
        fills when its NAPI thread does not run soon enough (the server veth's thread is on
        the server CPU, the load veth's shares the generator's).
        """
        peer = "load" if which == "server" else "server"
        # A refused frame shows on both ends: the larger count, not the sum.
        return max(int(self._veth_stats(which)["rx"]["dropped"]), int(self._veth_stats(peer)["tx"]["dropped"]))

    def mac(self, which: str) -> str:
        ns = self.server if which == "server" else self.load
        out = run([tool("ip"), "-n", ns, "-j", "link", "show", "dev", self.veth(which)]).stdout
        return str(json.loads(out)[0]["address"])

    def veth(self, which: str) -> str:
        return self._veth[0 if which == "server" else 1]

    def napi_threads(self, which: str) -> list[int]:
        """
        The NAPI kernel threads of the server's (C{"server"}) or the load's veth.
        """
        return napi_threads(self.veth(which))

    def close(self) -> None:
        remove_namespaces(reversed(self._created))
        self._created.clear()


def _ethtool(dev: str, tx_checksum: int) -> None:
    """
    GRO on (the veth then receives through NAPI) and tx checksum offload as given; run
    inside the namespace (L{teredonode.lab.offload}, no ethtool binary needed).
    """
    from teredonode.lab.offload import set_offloads

    set_offloads([dev], tx_checksum=bool(tx_checksum), gro=True)


def _udp_rcvbuf_errors(pid: int) -> int:
    """
    The UDP receive-buffer overflows (C{RcvbufErrors}) of C{pid}'s network namespace: where
    an unanswered RS was lost, on the server's sockets or on the generator's.
    """
    try:
        with open(f"/proc/{pid}/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return 0
    return int(rows[1][rows[0].index("RcvbufErrors")])


def _backlog_drops() -> int:
    """
    Packets the kernel dropped because a CPU's input backlog was full (veth delivers through
    it; machine-wide, C{/proc/net/softnet_stat} column 2).
    """
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f)


def _cpu_line(cpu: int) -> tuple[int, int]:
    """
    Busy and stolen ticks of CPU C{cpu} (C{/proc/stat}): busy minus the server's own time is
    what something else (a neighbour, the veth softirq of the other direction) took from it,
    steal is what the hypervisor took.  Either explains a loss the server's CPU cannot.
    """
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:9]]
                return v[0] + v[1] + v[2] + v[5] + v[6], v[7]
    return 0, 0


@dataclass
class Step:
    rate: float
    sent: int
    answered: int
    elapsed: float
    cpu: float
    problem: str | None
    server_drops: int = 0
    generator_drops: int = 0
    backlog_drops: int = 0
    other: float = 0.0
    steal: float = 0.0
    veth_drops: int = 0
    server_veth_drops: int = 0

    @property
    def loss(self) -> float:
        return 1.0 - self.answered / self.sent if self.sent else 1.0

    @property
    def achieved(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0

    @property
    def offered_ok(self) -> bool:
        return self.achieved >= OFFER_TOLERANCE * self.rate

    @property
    def generator_lost(self) -> bool:
        """
        Most of the loss was RAs overflowing the generator's own receive buffers, or the
        load veth's receive ring (its NAPI thread shares the generator's CPU): the
        generator side, not the server, could not keep up.
        """
        return self.generator_drops + self.veth_drops > (self.sent - self.answered) / 2

    @property
    def passed(self) -> bool:
        return self.loss < LOSS_LIMIT and self.offered_ok and self.problem is None

    @property
    def us_per_rs(self) -> float:
        return self.cpu / self.answered * 1e6 if self.answered else float("nan")


@dataclass
class RunResult:
    server: str
    round: int
    steps: list[Step] = field(default_factory=list)
    stopped_by: str = ""

    @property
    def best(self) -> Step | None:
        """
        The highest passing step: below the first failure, or, past it (C{--peak}), any
        higher step that passed too (a ring overflowing once on a shared machine is not the
        server's limit when a higher rate passes).
        """
        passing = [s for s in self.steps if s.passed]
        return max(passing, key=lambda s: s.rate) if passing else None


class Bench:
    """
    One invocation: namespaces, the generator, then each server in turn.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ns = Namespaces()
        self.tmp = Path(tempfile.mkdtemp(prefix="teredonode-bench-"))
        # miredo-server drops to its own user and must still read its config.
        self.tmp.chmod(0o755)
        self.agents = Agents()
        self.server: subprocess.Popen[Any] | None = None
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise BenchError("needs at least two CPUs (generator and server on different ones)")
        self.gen_cpu, self.server_cpu = cpus[0], cpus[1]
        self.servers: tuple[str, ...] = SERVERS

    # -- processes ---------------------------------------------------------------------

    def start_generator(self) -> None:
        argv = ["taskset", "-c", str(self.gen_cpu), tool("ip"), "netns", "exec", self.ns.load,
                sys.executable, "-u", str(Path(__file__).resolve()), "--generator",
                "--server-ip", SERVER_PRIMARY, "--source-ip", LOAD_ADDRESS,
                "--ports", str(SOURCE_PORTS)]
        if self.args.load == "xdp":
            argv += ["--xdp-load", self.ns.veth("load"), self.ns.mac("server")]
        self.agents.start(GENERATOR, argv)

    def start_server(self, which: str) -> tuple[subprocess.Popen[Any], Path]:
        log = self.tmp / f"{which}.log"
        pin = ["taskset", "-c", str(self.server_cpu), tool("ip"), "netns", "exec", self.ns.server]
        env = dict(os.environ)
        if which in ("ours", "fast"):
            conf = self.tmp / f"{which}.toml"
            conf.write_text(
                "# generated by benchmarks/server_rs.py\n"
                "[node]\n"
                f'status-socket = "{self.tmp}/{which}.status"\n'
                f'state-dir = "{self.tmp}/state"\n'
                "[server]\n"
                "enabled = true\n"
                f'primary = "{SERVER_PRIMARY}"\n'
                f'secondary = "{SERVER_SECONDARY}"\n'
                'interface = ""\n'
                "# The benchmark measures the data path, not the per-source limiter's refusals.\n"
                "rs-rate = 1000000\n"
                "rs-burst = 1000000\n"
                "rs-initial = 1000000\n"
                "ra-rate = 1000000\n"
                "ra-burst = 1000000\n"
                f'fast-path = "{"on" if which == "fast" else "off"}"\n'
                f'xdp-mode = "{self.args.server_xdp_mode}"\n'
            )
            env["PYTHONPATH"] = str(REPO_ROOT)
            argv = [tool("twistd"), "-n", f"--pidfile={self.tmp}/{which}.pid", "teredo",
                    "--config", str(conf)]
        else:
            conf = self.tmp / "miredo-server.conf"
            conf.write_text(
                "# generated by benchmarks/server_rs.py\n"
                f"ServerBindAddress {SERVER_PRIMARY}\n"
                f"ServerBindAddress2 {SERVER_SECONDARY}\n"
            )
            conf.chmod(0o644)
            argv = [tool("miredo-server"), "-f", "-p", f"{self.tmp}/miredo.pid", "-c", str(conf)]
        with open(log, "ab") as out:
            popen = subprocess.Popen(pin + argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=env, cwd=str(self.tmp),
                                     start_new_session=True)
        return popen, log

    # -- one run -----------------------------------------------------------------------

    def run_server(self, which: str, round_: int, rates: list[float], deadline: float) -> RunResult:
        result = RunResult(which, round_)
        popen, log = self.start_server(which)
        self.server = popen
        try:
            probe = self.agents.ask(GENERATOR, cmd="probe", timeout=20.0)
            if not probe["ok"]:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise BenchError(f"{which} server not serving: {probe['problem']}; log: {tail}")
            if which == "fast":
                # Python's sockets are bound (and answer the probe) before the program is
                # attached: wait for the server's line saying which path serves RSs.
                for _ in range(100):
                    text = log.read_text(errors="replace")
                    if "Router Solicitations:" in text:
                        break
                    time.sleep(0.1)
                if "XDP fast path on" not in text:
                    tail = [line for line in text.splitlines() if "Router Solicitations" in line][-1:]
                    raise BenchError(f"the fast path did not start: {tail or text.splitlines()[-3:]}")
            napi = self.ns.napi_threads("server")
            if not napi:
                raise BenchError("no NAPI thread on the server veth (threaded NAPI unavailable?)")
            pids = process_tree(popen.pid) + napi
            if self.args.verbose:
                print(f"  {which} processes: {pids}", flush=True)
            retried = past_loss = False
            peak_seen, flat = 0.0, 0
            queue = list(rates)
            while queue:
                rate = queue.pop(0)
                if time.monotonic() + self.args.step_seconds + GRACE_SECONDS > deadline:
                    result.stopped_by = "time budget"
                    break
                generator = self.agents.procs[GENERATOR].pid
                drops = (_udp_rcvbuf_errors(popen.pid), _udp_rcvbuf_errors(generator),
                         _backlog_drops(), self.ns.rx_dropped("load"), self.ns.rx_dropped("server"))
                line = _cpu_line(self.server_cpu)
                before = cpu_seconds(pids)
                r = self.agents.ask(GENERATOR, cmd="step", rate=rate, seconds=self.args.step_seconds)
                cpu = cpu_seconds(pids) - before
                line_after = _cpu_line(self.server_cpu)
                other = (line_after[0] - line[0]) / TICK - cpu
                steal = (line_after[1] - line[1]) / TICK
                srv, gen, backlog = (
                    _udp_rcvbuf_errors(popen.pid) - drops[0],
                    _udp_rcvbuf_errors(generator) - drops[1],
                    _backlog_drops() - drops[2],
                )
                ring = self.ns.rx_dropped("load") - drops[3]
                server_ring = self.ns.rx_dropped("server") - drops[4]
                step = Step(rate, r["sent"], r["answered"], r["elapsed"], cpu, r["problem"],
                            srv, gen, backlog, other, steal, ring, server_ring)
                result.steps.append(step)
                print(f"  {which:>6} r{round_} offered {rate:>9,.0f}/s  sent {step.sent:>8,}"
                      f" ({step.achieved:>9,.0f}/s)  answered {step.answered:>8,}"
                      f"  loss {step.loss * 100:6.2f} %  server CPU {cpu:5.2f} s"
                      f"  {step.us_per_rs:6.1f} us/RS"
                      + (f"  dropped at server {srv:,} / generator {gen:,} / backlog {backlog:,}"
                         f" / server veth {server_ring:,} / load veth {ring:,}"
                         f"; server CPU also ran other work {max(other, 0):.2f} s, stolen {steal:.2f} s"
                         if step.answered < step.sent else "")
                      + (f"  PROBLEM: {step.problem}" if step.problem else ""),
                      flush=True)
                if popen.poll() is not None:
                    raise BenchError(f"{which} server exited during the run (status {popen.returncode})")
                if step.problem:
                    result.stopped_by = f"invalid reply: {step.problem}"
                    break
                if past_loss:
                    # Beyond the sustained rate: climb while the answered rate still grows,
                    # to find the server's peak whatever its loss.
                    answered_rate = step.answered / step.elapsed if step.elapsed else 0.0
                    if answered_rate >= 1.05 * peak_seen:
                        peak_seen, flat = answered_rate, 0
                    else:
                        flat += 1
                    if flat >= 2 or step.loss > 0.5 or not step.offered_ok:
                        break
                    continue
                if step.loss >= LOSS_LIMIT:
                    if step.generator_lost:
                        result.stopped_by = "generator-limited"
                        break
                    if not retried:
                        # One retry per run: a neighbour holding the server's CPU for a few
                        # ms overflows the default 208 KiB receive buffer at these rates.
                        retried = True
                        queue.insert(0, rate)
                        continue
                    result.stopped_by = "loss"
                    if not self.args.peak:
                        break
                    past_loss, flat = True, 0
                    peak_seen = max(s.answered / s.elapsed for s in result.steps if s.elapsed)
                    continue
                if not step.offered_ok:
                    result.stopped_by = "generator-limited"
                    break
            if not result.stopped_by:
                result.stopped_by = "top of the rate grid"
        finally:
            stop(popen)
            self.server = None
        return result

    def close(self) -> None:
        if self.server is not None:
            stop(self.server, 2.0)
        self.agents.close()
        self.ns.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _fmt_rate(run_results: list[RunResult]) -> tuple[float, bool, str]:
    """
    The sustained rate over the rounds (the best: a shared machine only ever slows a run),
    whether it is a lower bound (generator-limited), and a description.
    """
    best_rate, bound = 0.0, False
    for rr in run_results:
        b = rr.best
        if b is not None and b.rate >= best_rate:
            best_rate = b.rate
            bound = rr.stopped_by in ("generator-limited", "time budget", "top of the rate grid")
    return best_rate, bound, ("≥ " if bound else "") + f"{best_rate:,.0f} RS/s"


def _peak(run_results: list[RunResult]) -> float:
    """
    The most RAs per second a server answered in any step, whatever its loss: its capacity
    when losses are tolerated.  With the kernel generator the RSs reach a server as page-sized
    buffers (as from most NICs), so a socket's default 208 KiB receive buffer holds about 45
    of them, and a server that never raises it (Miredo) loses RSs to scheduling jitter at
    rates it could otherwise serve; its peak shows what it can answer regardless.
    """
    return max((s.answered / s.elapsed for rr in run_results for s in rr.steps if s.elapsed), default=0.0)


def _cpu_per_rs(run_results: list[RunResult], rate: float | None = None) -> float:
    """
    Mean server CPU per RS over the rounds: at each round's highest sustained step, or, given
    C{rate}, over every passing step at that offered rate.

    The comparison uses one common rate (the highest both servers sustained) because CPU per
    packet falls as the load rises: more datagrams per wakeup, for Miredo's blocking reads
    and for Twisted's epoll loop alike.  Comparing each at its own best would flatter the
    faster server.
    """
    if rate is None:
        values = [rr.best.us_per_rs for rr in run_results if rr.best is not None]
    else:
        values = [s.us_per_rs for rr in run_results for s in rr.steps if s.passed and s.rate == rate]
    return sum(values) / len(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one to two minutes instead of up to six")
    parser.add_argument("--verbose", action="store_true", help="show the server's process ids")
    parser.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server-ip", default=SERVER_PRIMARY, help=argparse.SUPPRESS)
    parser.add_argument("--source-ip", default=LOAD_ADDRESS, help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, default=SOURCE_PORTS, help=argparse.SUPPRESS)
    parser.add_argument("--load", choices=("xdp", "python"), default="xdp",
                        help="the load generator: the kernel's (xdp, default; needs clang and "
                        "libbpf) or a Python process (python, about 200 000 RS/s at most)")
    parser.add_argument("--server-xdp-mode", choices=("native", "generic", "auto"), default="native",
                        help="the fast-path server's xdp-mode (default native: the load veth "
                        "runs the sink's XDP program, so native XDP_TX reaches it)")
    parser.add_argument("--peak", action=argparse.BooleanOptionalAction, default=None,
                        help="after a server fails on loss, keep climbing while its answered rate "
                        "grows, to report its peak at any loss (default: with the xdp load)")
    parser.add_argument("--xdp-load", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--ethtool", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.ethtool:
        _ethtool(args.ethtool[0], int(args.ethtool[1]))
        return 0
    if args.generator:
        if args.xdp_load:
            ifname, mac = args.xdp_load
            serve(XdpLoad(args.server_ip, args.source_ip, args.ports, ifname, mac), sys.stdin, sys.stdout)
        else:
            serve(Generator(args.server_ip, args.source_ip, args.ports), sys.stdin, sys.stdout)
        return 0
    if os.geteuid() != 0:
        print("server_rs.py: needs root (it creates network namespaces); run it with sudo",
              file=sys.stderr)
        return 2

    if args.quick:
        args.step_seconds, factor, budget, back = 1.0, 1.6, 100.0, 1
    else:
        args.step_seconds, factor, budget, back = 3.0, 1.35, 340.0, 2
    # Without clang and libbpf there is neither a fast path nor the kernel generator: the
    # load, and with it the grid, the budget and --peak, are settled before anything else.
    missing = _fast_path_missing()
    if missing and args.load == "xdp":
        print("server_rs: the Python load generator instead of the kernel's", flush=True)
        args.load = "python"
    rates = rate_grid(4000, factor, 4_000_000 if args.load == "xdp" else 1_000_000)
    if args.load == "xdp":
        # The kernel generator's grid reaches ten times higher: the same step count per
        # decade needs more time, and past the first loss the climb goes on (--peak).
        budget *= 2
    if args.peak is None:
        args.peak = args.load == "xdp"
    rounds = 2

    # Ctrl-C arrives as KeyboardInterrupt; make SIGTERM unwind through the same finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    bench: Bench | None = None
    try:
        for name in ("ip", "taskset", "twistd", "miredo-server"):
            tool(name)
        bench = Bench(args)
        if missing:
            print(f"server_rs: no fast path run ({missing})", flush=True)
            bench.servers = tuple(w for w in SERVERS if w != "fast")
        servers = bench.servers
        bench.ns.open()
        for which, cpu in (("server", bench.server_cpu), ("load", bench.gen_cpu)):
            for pid in bench.ns.napi_threads(which):
                os.sched_setaffinity(pid, {cpu})
                if args.load == "xdp":
                    # Real-time priority, as receive work runs in softirq behind a NIC,
                    # ahead of any task: the server veth's for every server alike (a wakeup
                    # queued behind a neighbour lets a 256-frame veth ring overflow), the
                    # load veth's because the sink is the measuring instrument.
                    os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(10))
        bench.start_generator()
        print(f"server_rs: server on CPU {bench.server_cpu}, generator on CPU {bench.gen_cpu}; "
              f"{args.step_seconds:g} s per step, {SOURCE_PORTS} source ports, loss limit "
              f"{LOSS_LIMIT:.0%}; our server runs with rs- and ra- rates and bursts "
              f"= 1000000 (limiters not refusing); server CPU includes the server veth's "
              f"NAPI thread (kernel receive, and the XDP program for the fast path)", flush=True)
        results: dict[str, list[RunResult]] = {w: [] for w in servers}
        order = [(r, w) for r in range(1, rounds + 1) for w in servers]
        for i, (round_, which) in enumerate(order):
            grid = rates
            last = results[which][-1].best if results[which] else None
            if round_ > 1 and last is not None:
                # Round 2 climbs the same grid but skips what round 1 showed to be easy.
                k = rates.index(last.rate)
                grid = rates[max(0, k - back):]
            share = (started + budget - time.monotonic()) / (len(order) - i)
            results[which].append(bench.run_server(which, round_, grid, time.monotonic() + share))
            print(f"  {which:>6} r{round_}: stopped by {results[which][-1].stopped_by}", flush=True)

        print()
        print("result (highest offered rate with < 1 % loss; CPU per RS at that step):")
        sustained = {w: _fmt_rate(results[w]) for w in servers}
        common = min(rate for rate, _, _ in sustained.values())
        at_common = {w: _cpu_per_rs(results[w], common) for w in servers}
        own = {w: _cpu_per_rs(results[w]) for w in servers}
        for name, runs in results.items():
            per_round = ", ".join(
                f"r{rr.round}: {rr.best.rate:,.0f} RS/s at {rr.best.us_per_rs:.1f} us/RS"
                f" (then {rr.stopped_by})" if rr.best else f"r{rr.round}: none ({rr.stopped_by})"
                for rr in runs
            )
            print(f"  {name:>6}: {per_round}")
        print("  sustained RS/s   " + "   ".join(f"{w} {sustained[w][2]:>16}" for w in servers))
        print("  server CPU/RS    " + "   ".join(f"{w} {at_common[w]:>10.2f} us" for w in servers)
              + f"   (all at {common:,.0f} RS/s)")
        print("  (each at its own highest sustained rate: "
              + ", ".join(f"{w} {own[w]:.2f} us" for w in servers) + " per RS)")
        peak = {w: _peak(results[w]) for w in servers}
        print("  peak answered/s  " + "   ".join(f"{w} {peak[w]:>14,.0f}/s" for w in servers)
              + "   (any loss)")
        for a, b in (("ours", "miredo"), ("fast", "miredo"), ("fast", "ours")):
            if a not in servers:
                continue
            ra, rb = sustained[a][0], sustained[b][0]
            bound = "≤ " if sustained[b][1] and not sustained[a][1] else ("≥ " if sustained[a][1] and not sustained[b][1] else "")
            print(f"  {a}/{b}: RS/s " + (f"{bound}{ra / rb:.2f}" if rb else "n/a")
                  + f", CPU per RS {at_common[a] / at_common[b]:.2f} (at {common:,.0f} RS/s)"
                  + (f"; {a}'s sustained / {b}'s peak {ra / peak[b]:.2f}" if peak[b] else ""))
        print(f"  (elapsed {time.monotonic() - started:.0f} s; absolute figures drift on a shared "
              f"machine, compare only ratios from one run)")
        return 0
    except BenchError as exc:
        print(f"server_rs.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("server_rs.py: interrupted; namespaces removed", file=sys.stderr)
        return 130
    finally:
        if bench is not None:
            bench.close()


if __name__ == "__main__":
    sys.exit(main())
