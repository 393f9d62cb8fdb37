#!/usr/bin/env python3
"""
Relay 64-byte datagram rate with kernel load generators: ours (Python path), ours with the
kernel fast path, and Miredo's relay, in one run, each direction to its peak.

    sudo python3 benchmarks/relay_rate.py            # two rounds, about 4-8 minutes
    sudo python3 benchmarks/relay_rate.py --quick    # one round, 1 s steps, about 2 minutes

Why it exists beside C{benchmarks/relay.py}: that one drives the relay with a Miredo client and
iperf3, which cap the rate at 50 000-65 000 datagrams/s whatever the relay, so it cannot show
a relay's own limit.  Here the relay is the only program in the path:

  - Three namespaces made here (random suffix) and always deleted: "v4" (the IPv4 Internet:
    a Teredo client's mapping 203.0.113.50:40000 and its server 203.0.113.10), "relay"
    (203.0.113.20 and 2001:db8::20, IPv6 forwarding on) and "v6" (a native host,
    2001:db8::30, routing 2001::/32 to the relay).  Two veth pairs, GRO on and threaded NAPI
    on the relay's ends, as behind a NIC; documentation addresses only.
  - In "v4" and "v6" a kernel generator (C{benchmarks/xdpgen.py}) builds frames and an XDP
    sink counts what the relay forwards: "up" is the client's encapsulated 64-byte UDP
    datagrams to the native host (the relay decapsulates), "down" the host's datagrams to the
    client's Teredo address (the relay encapsulates).  Every frame carries a step tag and a
    sequence number under a correct checksum, so the count is of this step's datagrams only.
  - Before measuring, the relay is made to trust the client the RFC's way: the native host
    sends to the client, the relay queues the packet and sends its bubble to the client's
    server, and a responder in "v4" (playing server and client) answers with the client's
    direct bubble.  The relay under test then holds a trusted peer, for every relay alike.
    While it is measured, the responder sends the client's bubble to the relay every
    C{KEEPALIVE} seconds, as a client with any traffic of its own is heard: a relay carries
    a peer's downstream packets only while it heard from it within 30 s (RFC 4380 section
    5.4.2), and after a down climb's first 30 s every relay would otherwise be measured
    re-checking the client instead of forwarding.
  - The relay and its veths' NAPI threads run on one CPU, the generators and sinks on the
    other.  Every NAPI thread runs at real-time priority, as receive work runs in softirq
    behind a NIC, ahead of any task (for every relay alike; the sinks' are the instrument).
    The relay's CPU is its process tree's plus its NAPI threads' (the kernel's receive work,
    the fast path's programs, the forwarding): everything a datagram costs on the relay host.
  - Steps climb a rate grid; a step passes below 1 % loss, and the first failure is retried
    once.  After it the climb goes on while the delivered rate still grows, to find each
    relay's peak at any loss; the sustained rate is the highest step that passed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchlib import (  # noqa: E402  (this directory is on sys.path when run as a script)
    Agents,
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

SERVER_V4 = "203.0.113.10"
CLIENT_V4, CLIENT_PORT = "203.0.113.50", 40000
RELAY_V4 = "203.0.113.20"
RELAY_V6, HOST_V6 = "2001:db8::20", "2001:db8::30"
TEREDO_PORT = 3544
PAYLOAD = 64
LOSS_LIMIT = 0.01
OFFER_TOLERANCE = 0.95
GRACE_SECONDS = 0.3
IMPLS = ("ours", "ours-fast", "miredo")
DIRECTIONS = ("up", "down")

# Frame layouts: where the tag and the sequence number sit, where the checksum covering them
# is.  Up: Ethernet 14, IPv4 20, UDP 8, IPv6 40, UDP 8, payload.  Down (as sent by the host):
# Ethernet 14, IPv6 40, UDP 8, payload; as forwarded by the relay: Ethernet, IPv4, UDP, IPv6,
# UDP, payload again.
UP_INNER = 14 + 20 + 8
DOWN_INNER = 14


def _teredo_client() -> bytes:
    from teredonode.wire.address import TeredoAddress

    return TeredoAddress(b"\x20\x01\x00\x00", SERVER_V4, 0, CLIENT_PORT, CLIENT_V4).to_bytes()


def _udp6(src: bytes, dst: bytes, payload: bytes) -> bytes:
    """
    An IPv6/UDP datagram with its (mandatory) checksum.
    """
    import struct

    from teredonode.wire.ipv6 import build_ipv6, checksum

    header = struct.pack("!HHHH", 50000, 9, 8 + len(payload), 0)
    csum = checksum(src, dst, 17, header + payload) or 0xFFFF
    return build_ipv6(src, dst, 17, header[:6] + csum.to_bytes(2, "big") + payload)


# ============================================================================ agents


class Agent:
    """
    One side of the relay ("v4" or "v6"): its generator's frames, its sink's answers, and on
    "v4" the responder that completes the relay's bubble exchange.  Driven by one JSON command
    per line on stdin.
    """

    def __init__(self, side: str, ifname: str, relay_mac: str, up_checksum: bool = False) -> None:
        from xdpgen import ETH_IPV4, ETH_IPV6, XdpGenerator, ethernet, mac_of

        from teredonode.lab.usernat import udp_packet

        self.side = side
        client = _teredo_client()
        host = socket.inet_pton(socket.AF_INET6, HOST_V6)
        payload = bytes(PAYLOAD)
        self.gen = XdpGenerator(ifname)
        dst_mac, src_mac = bytes.fromhex(relay_mac.replace(":", "")), mac_of(ifname)
        if side == "v4":
            # Up: the client's datagram to the host, in UDP from the client's mapping with no
            # outer checksum (zero: allowed over IPv4), so the stamps change only the inner one.
            # With --up-checksum the outer checksum stays, and stays right: the stamps keep
            # the inner datagram's one's-complement sum (its checksum compensates), which is
            # all the outer checksum covers of it.  The kernel's UDP GRO needs it (it never
            # coalesces datagrams without a checksum).
            inner = _udp6(client, host, payload)
            outer = bytearray(udp_packet((CLIENT_V4, CLIENT_PORT), (RELAY_V4, TEREDO_PORT), inner))
            if not up_checksum:
                outer[26:28] = b"\x00\x00"
            frame = ethernet(dst_mac, src_mac, ETH_IPV4, bytes(outer))
            data = UP_INNER + 40 + 8
            # It counts the relay's encapsulated down datagrams: from port 3544, carrying
            # IPv6/UDP (a bubble carries next header 59 and goes to the responder).
            self.gen.configure(frame, tag_offset=data, seq_offset=data + 4, csum_offset=UP_INNER + 40 + 6,
                               csum_udp=True, answer_ethertype=ETH_IPV4, answer_sport=TEREDO_PORT,
                               answer_tag_offset=UP_INNER + 40 + 8, answer_proto_offset=UP_INNER + 6,
                               answer_proto=17)
            self.responder = Responder(client)
            threading.Thread(target=self.responder.serve, daemon=True).start()
        else:
            frame = ethernet(dst_mac, src_mac, ETH_IPV6, _udp6(host, client, payload))
            data = DOWN_INNER + 40 + 8
            # It counts the relay's decapsulated up datagrams: IPv6/UDP (not ND).
            self.gen.configure(frame, tag_offset=data, seq_offset=data + 4, csum_offset=DOWN_INNER + 40 + 6,
                               csum_udp=True, answer_ethertype=ETH_IPV6, answer_tag_offset=DOWN_INNER + 40 + 8,
                               answer_proto_offset=DOWN_INNER + 6, answer_proto=17)

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "tag":
            self.gen.set_tag(bytes.fromhex(cmd["tag"]))
            return {"counts": self.gen.counts()}
        if cmd["cmd"] == "offer":
            sent, elapsed = self.gen.offer(cmd["rate"], cmd["seconds"])
            return {"sent": sent, "elapsed": elapsed}
        if cmd["cmd"] == "counts":
            return {"counts": self.gen.counts(), "sample": (self.gen.sample() or b"").hex()}
        if cmd["cmd"] == "bubbles":
            return {"answered": self.responder.answered if self.side == "v4" else 0}
        if cmd["cmd"] == "keepalive":
            if self.side == "v4":
                self.responder.keepalive = bool(cmd["on"])
            return {}
        return {"error": f"unknown command {cmd['cmd']!r}"}


#: Seconds between the client's keep-alive bubbles to the relay while a relay is measured.
KEEPALIVE = 5.0


class Responder:
    """
    The client and its server, as far as the relay's bubble exchange needs them: a bubble the
    relay sends to the server (for the client) or to the client is answered by the client's
    direct bubble to the relay, which makes the relay trust the client (RFC 4380 5.4.2).
    With C{keepalive} set, the client also sends the relay a bubble every L{KEEPALIVE}
    seconds, so that the relay keeps hearing from it.
    """

    def __init__(self, client: bytes) -> None:
        self.client = client
        self.answered = 0
        self.keepalive = False
        self.server_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server_sock.bind((SERVER_V4, TEREDO_PORT))
        self.client_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client_sock.bind((CLIENT_V4, CLIENT_PORT))

    def serve(self) -> None:
        import select

        from teredonode.wire.errors import ParseError
        from teredonode.wire.ipv6 import bubble
        from teredonode.wire.teredo import classify

        host = socket.inet_pton(socket.AF_INET6, HOST_V6)
        last = time.monotonic()
        while True:
            ready, _, _ = select.select([self.server_sock, self.client_sock], [], [], 1.0)
            if self.keepalive and time.monotonic() - last >= KEEPALIVE:
                self.client_sock.sendto(bubble(self.client, host), (RELAY_V4, TEREDO_PORT))
                last = time.monotonic()
            for sock in ready:
                data, sender = sock.recvfrom(2048)
                try:
                    packet = classify(data)
                except ParseError:
                    continue
                if packet.header.next_header != 59:
                    continue
                # The relay's endpoint: the origin indication the server would forward, or
                # the sender when the bubble came to the client directly.
                to = (RELAY_V4, TEREDO_PORT) if sock is self.server_sock else sender
                self.client_sock.sendto(bubble(self.client, packet.header.src), to)
                self.answered += 1


# ============================================================================ orchestration


@dataclass
class Step:
    rate: float
    sent: int
    delivered: int
    elapsed: float
    cpu: float

    @property
    def loss(self) -> float:
        return 1.0 - self.delivered / self.sent if self.sent else 1.0

    @property
    def passed(self) -> bool:
        return self.loss < LOSS_LIMIT and self.sent >= OFFER_TOLERANCE * self.rate * self.elapsed

    @property
    def delivered_rate(self) -> float:
        return self.delivered / self.elapsed if self.elapsed else 0.0

    @property
    def us_per_datagram(self) -> float:
        return self.cpu / self.delivered * 1e6 if self.delivered else float("nan")


@dataclass
class Climb:
    impl: str
    direction: str
    round: int
    steps: list[Step] = field(default_factory=list)

    @property
    def best(self) -> Step | None:
        """
        The highest offered rate delivered with < 1 % loss.  Not only below the first
        failure: a 256-frame veth ring overflows now and then on a shared machine, and a
        higher step passing shows the relay carries that rate.
        """
        passing = [s for s in self.steps if s.passed]
        return max(passing, key=lambda s: s.rate) if passing else None

    @property
    def peak(self) -> float:
        return max((s.delivered_rate for s in self.steps), default=0.0)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        suffix = secrets.token_hex(3)
        self.ns = {side: f"tnrate-{suffix}-{side}" for side in ("v4", "relay", "v6")}
        self.veth = {"v4": (f"trr{suffix}4", f"trg{suffix}4"), "v6": (f"trr{suffix}6", f"trg{suffix}6")}
        self.created: list[str] = []
        self.agents = Agents()
        self.relay: subprocess.Popen[Any] | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="teredonode-relayrate-"))
        self.tmp.chmod(0o755)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise BenchError("needs at least two CPUs (generators and relay on different ones)")
        self.gen_cpu, self.relay_cpu = cpus[0], cpus[1]

    # -- topology ------------------------------------------------------------------------

    def open(self) -> None:
        ip = tool("ip")
        for ns in self.ns.values():
            run([ip, "netns", "add", ns])
            self.created.append(ns)
        relay = self.ns["relay"]
        for side in ("v4", "v6"):
            r, g = self.veth[side]
            run([ip, "-n", relay, "link", "add", r, "type", "veth", "peer", "name", g, "netns", self.ns[side]])
        r4, g4 = self.veth["v4"]
        r6, g6 = self.veth["v6"]
        batches = {
            relay: [f"addr add {RELAY_V4}/24 dev {r4}", f"addr add {RELAY_V6}/64 dev {r6} nodad",
                    f"link set {r4} up", f"link set {r6} up", "link set lo up"],
            self.ns["v4"]: [f"addr add {CLIENT_V4}/24 dev {g4}", f"addr add {SERVER_V4}/24 dev {g4}",
                            f"link set {g4} up", "link set lo up"],
            self.ns["v6"]: [f"addr add {HOST_V6}/64 dev {g6} nodad", f"link set {g6} up", "link set lo up",
                            f"-6 route add 2001::/32 via {RELAY_V6} dev {g6}"],
        }
        for ns, cmds in batches.items():
            for c in cmds:
                run([ip, "-n", ns] + c.split())
        run([ip, "netns", "exec", relay, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        for ns, dev in ((relay, r4), (relay, r6), (self.ns["v4"], g4), (self.ns["v6"], g6)):
            run([ip, "netns", "exec", ns, sys.executable, str(Path(__file__).resolve()), "--offloads", dev])
            run([ip, "netns", "exec", ns, "sh", "-c", f"echo 1 > /sys/class/net/{dev}/threaded"])
        # Every NAPI thread runs at real-time priority, as receive work runs in softirq
        # behind a NIC, ahead of any task: the relay's (for every relay alike) so that a
        # wakeup is not queued behind a neighbour while a 256-frame veth ring fills, the
        # sinks' because they are the measuring instrument.
        for dev, cpu in ((r4, self.relay_cpu), (r6, self.relay_cpu), (g4, self.gen_cpu), (g6, self.gen_cpu)):
            for pid in napi_threads(dev):
                os.sched_setaffinity(pid, {cpu})
                os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(10))

    def mac(self, ns: str, dev: str) -> str:
        out = run([tool("ip"), "-n", ns, "-j", "link", "show", "dev", dev]).stdout
        return str(json.loads(out)[0]["address"])

    def drops(self) -> dict[str, int]:
        """
        Datagrams lost entering each veth end (a full receive ring): the relay's two ends,
        the sinks' two.
        """
        stats: dict[str, dict[str, Any]] = {}
        for side in ("v4", "v6"):
            for ns, dev in ((self.ns["relay"], self.veth[side][0]), (self.ns[side], self.veth[side][1])):
                shown = run([tool("ip"), "-n", ns, "-s", "-j", "link", "show", "dev", dev]).stdout
                stats[dev] = json.loads(shown)[0]["stats64"]
        out: dict[str, int] = {}
        for side in ("v4", "v6"):
            r, g = self.veth[side]
            # A veth counts a frame its full ring refused on both ends (the receiver's rx and
            # the sender's tx drops): the larger of the two, not their sum.
            out[f"relay {side}"] = max(int(stats[r]["rx"]["dropped"]), int(stats[g]["tx"]["dropped"]))
            out[f"sink {side}"] = max(int(stats[g]["rx"]["dropped"]), int(stats[r]["tx"]["dropped"]))
            if self.args.xdp_stats:
                for ns, dev, who in ((self.ns["relay"], r, f"relay {side}"), (self.ns[side], g, f"sink {side}")):
                    for key, value in _xdp_errors(ns, dev).items():
                        out[f"{who} {key}"] = value
        return out

    def relay_napi(self) -> list[int]:
        return napi_threads(self.veth["v4"][0]) + napi_threads(self.veth["v6"][0])

    # -- agents --------------------------------------------------------------------------

    def start_agents(self) -> None:
        for side in ("v4", "v6"):
            r, g = self.veth[side]
            argv = ["taskset", "-c", str(self.gen_cpu), tool("ip"), "netns", "exec", self.ns[side],
                    sys.executable, "-u", str(Path(__file__).resolve()), "--agent", side, g,
                    self.mac(self.ns["relay"], r)] + (["--up-checksum"] if self.args.up_checksum else [])
            self.agents.start(side, argv)

    def step(self, direction: str, rate: float, seconds: float) -> tuple[int, int, float]:
        """
        Offer C{rate} datagrams/s in C{direction}: (sent, delivered, elapsed).
        """
        gen, sink = ("v4", "v6") if direction == "up" else ("v6", "v4")
        tag = secrets.token_hex(4)
        self.agents.ask(gen, cmd="tag", tag=tag)
        before = self.agents.ask(sink, cmd="tag", tag=tag)["counts"]["answered"]
        offered = self.agents.ask(gen, cmd="offer", rate=rate, seconds=seconds)
        deadline = time.monotonic() + GRACE_SECONDS
        while True:
            delivered = self.agents.ask(sink, cmd="counts")["counts"]["answered"] - before
            if delivered >= offered["sent"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return offered["sent"], delivered, offered["elapsed"]

    # -- relays --------------------------------------------------------------------------

    def start_relay(self, impl: str) -> tuple[subprocess.Popen[Any], Path]:
        log = self.tmp / f"{impl}.log"
        pin = ["taskset", "-c", str(self.relay_cpu), tool("ip"), "netns", "exec", self.ns["relay"]]
        env = dict(os.environ)
        if impl.startswith("ours"):
            conf = self.tmp / f"{impl}.toml"
            conf.write_text(
                "# generated by benchmarks/relay_rate.py\n"
                "[node]\n"
                f'status-socket = "{self.tmp}/{impl}.status"\n'
                f'state-dir = "{self.tmp}/state"\n'
                "[relay]\n"
                "enabled = true\n"
                'interface = "teredo-relay"\n'
                "port = 3544\n"
                'prefix = "2001::/32"\n'
                f'fast-path = "{"on" if impl == "ours-fast" else "off"}"\n'
                f'xdp-mode = "{self.args.relay_xdp_mode}"\n'
            )
            env["PYTHONPATH"] = str(REPO_ROOT)
            argv = [tool("twistd"), "-n", f"--pidfile={self.tmp}/{impl}.pid", "teredo", "--config", str(conf)]
        else:
            from teredonode.lab.nodes import miredo_relay_conf

            conf = self.tmp / "miredo-relay.conf"
            conf.write_text(miredo_relay_conf())
            conf.chmod(0o644)
            argv = [tool("miredo"), "-f", "-p", f"{self.tmp}/miredo.pid", "-c", str(conf)]
        with open(log, "ab") as out:
            popen = subprocess.Popen(pin + argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, cwd=str(self.tmp), start_new_session=True)
        return popen, log

    def trust(self, impl: str, log: Path) -> None:
        """
        Wait for the relay's route, then have the host send to the client until the relay
        delivers: its bubble exchange with the responder made it trust the client.
        """
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            routes = run([tool("ip"), "-n", self.ns["relay"], "-6", "route", "show", "2001::/32"], check=False).stdout
            if "dev teredo-relay" in routes:
                break
            time.sleep(0.2)
        else:
            raise BenchError(f"{impl}: no route to 2001::/32 via its interface; log: {_tail(log)}")
        if impl == "ours-fast":
            while "Trusted peers:" not in log.read_text(errors="replace") and time.monotonic() < deadline:
                time.sleep(0.2)
        while time.monotonic() < deadline:
            sent, delivered, _ = self.step("down", 20.0, 0.25)
            if delivered and self.step("up", 20.0, 0.25)[1]:
                return
        raise BenchError(f"{impl}: the relay never delivered (bubbles answered "
                         f"{self.agents.ask('v4', cmd='bubbles')['answered']}); log: {_tail(log)}")

    def climb(self, impl: str, direction: str, round_: int, rates: list[float], pids: list[int]) -> Climb:
        result = Climb(impl, direction, round_)
        peak_seen, flat, past, retried = 0.0, 0, False, False
        queue = list(rates)
        while queue:
            rate = queue.pop(0)
            before, drops = cpu_seconds(pids), self.drops()
            sent, delivered, elapsed = self.step(direction, rate, self.args.step_seconds)
            step = Step(rate, sent, delivered, elapsed, cpu_seconds(pids) - before)
            moved = {k: v - drops[k] for k, v in self.drops().items() if v != drops[k]}
            result.steps.append(step)
            print(f"  {impl:>9} {direction:>4} r{round_} offered {rate:>10,.0f}/s  sent {sent / elapsed:>10,.0f}/s"
                  f"  delivered {step.delivered_rate:>10,.0f}/s  loss {step.loss * 100:6.2f} %"
                  f"  relay CPU {step.cpu:5.2f} s  {step.us_per_datagram:6.2f} us/datagram"
                  + (f"  dropped entering: {', '.join(f'{k} {v:,}' for k, v in moved.items())}" if moved else ""),
                  flush=True)
            if not step.passed and not past:
                if not retried:
                    retried = True  # once: a neighbour's burst, not the relay's limit
                    queue.insert(0, rate)
                    continue
                past = True
                peak_seen = max(s.delivered_rate for s in result.steps)
                continue
            if past:
                if step.delivered_rate >= 1.05 * peak_seen:
                    peak_seen, flat = step.delivered_rate, 0
                else:
                    flat += 1
                if flat >= 2 or step.loss > 0.5 or sent < OFFER_TOLERANCE * rate * elapsed:
                    break
        return result

    def run_impl(self, impl: str, round_: int, rates: list[float]) -> list[Climb]:
        popen, log = self.start_relay(impl)
        self.relay = popen
        try:
            self.trust(impl, log)
            self.agents.ask("v4", cmd="keepalive", on=True)
            if impl == "ours-fast" and not _fast_line(log).startswith("kernel fast path ("):
                raise BenchError(f"ours-fast: the fast path is not carrying trusted peers: {_fast_line(log)}")
            pids = process_tree(popen.pid) + self.relay_napi()
            climbs = [self.climb(impl, d, round_, rates, pids) for d in DIRECTIONS]
            if popen.poll() is not None:
                raise BenchError(f"{impl} exited during the run; log: {_tail(log)}")
            return climbs
        finally:
            try:
                self.agents.ask("v4", cmd="keepalive", on=False)
            except BenchError:
                pass  # the agent is gone: the run is over anyway
            stop(popen)
            self.relay = None

    def close(self) -> None:
        if self.relay is not None:
            stop(self.relay, 2.0)
        self.agents.close()
        remove_namespaces(reversed(self.created))
        self.created.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _xdp_errors(ns: str, dev: str) -> dict[str, int]:
    """
    A veth's XDP drop and error counters (C{ethtool -S}): frames a full ring refused to an
    XDP sender (C{xdp_xmit_errors}), frames its own XDP program dropped or failed to send.
    """
    shown = run([tool("ip"), "netns", "exec", ns, tool("ethtool"), "-S", dev], check=False)
    out = {}
    for line in shown.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if value.isdigit() and ("err" in key or "drops" in key):
            out[key] = int(value)
    return out


def _tail(log: Path) -> list[str]:
    return log.read_text(errors="replace").strip().splitlines()[-3:]


def _fast_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if "Trusted peers:" in line]
    return lines[-1].split("Trusted peers:", 1)[1].strip() if lines else "(no log line)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round of 1 s steps")
    parser.add_argument("--impls", default=",".join(IMPLS), help="relays to measure (default: all three)")
    parser.add_argument("--relay-xdp-mode", choices=("native", "generic", "auto"), default="native",
                        help="our fast path's xdp-mode (default native: the generator's veth runs XDP)")
    parser.add_argument("--up-checksum", action="store_true",
                        help="up datagrams carry an outer UDP checksum (default zero), as the kernel's UDP GRO needs")
    parser.add_argument("--xdp-stats", action="store_true",
                        help="also print the veths' XDP error counters that move (needs ethtool)")
    parser.add_argument("--agent", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--offloads", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.offloads:
        from teredonode.lab.offload import set_offloads

        set_offloads([args.offloads], tx_checksum=False, gro=True)
        return 0
    if args.agent:
        side, ifname, mac = args.agent
        serve_commands(Agent(side, ifname, mac, args.up_checksum).handle, sys.stdin, sys.stdout)
        return 0
    if os.geteuid() != 0:
        print("relay_rate.py: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    impls = [i for i in args.impls.split(",") if i]
    if args.quick:
        args.step_seconds, factor, rounds = 1.0, 1.6, 1
    else:
        args.step_seconds, factor, rounds = 2.0, 1.35, 2
    rates = rate_grid(10_000, factor, 3_000_000)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    bench: Bench | None = None
    try:
        for name in ("ip", "taskset", "twistd", "miredo", "clang"):
            tool(name)
        bench = Bench(args)
        bench.open()
        bench.start_agents()
        print(f"relay_rate: relay and its NAPI threads on CPU {bench.relay_cpu}, generators and sinks on "
              f"CPU {bench.gen_cpu}; {args.step_seconds:g} s steps, {PAYLOAD}-byte UDP payloads, loss limit "
              f"{LOSS_LIMIT:.0%}; relay CPU = its processes + its veths' NAPI threads", flush=True)
        results: dict[tuple[str, str], list[Climb]] = {}
        for round_ in range(1, rounds + 1):
            for impl in impls:
                for climb in bench.run_impl(impl, round_, rates):
                    results.setdefault((impl, climb.direction), []).append(climb)
        print()
        print("result (sustained: highest offered rate with < 1 % loss; peak: most delivered/s at any loss):")
        summary: dict[tuple[str, str], tuple[float, float, float]] = {}
        for (impl, direction), climbs in results.items():
            bests = [c.best for c in climbs if c.best is not None]
            sustained = max((b.rate for b in bests), default=0.0)
            cpu = min((b.us_per_datagram for b in bests), default=float("nan"))
            peak = max(c.peak for c in climbs)
            summary[impl, direction] = (sustained, peak, cpu)
            print(f"  {impl:>9} {direction:>4}: sustained {sustained:>10,.0f}/s  peak {peak:>10,.0f}/s"
                  f"  relay CPU {cpu:6.2f} us/datagram at its sustained rate")
        for a, b in (("ours-fast", "miredo"), ("ours", "miredo"), ("ours-fast", "ours")):
            for d in DIRECTIONS:
                if (a, d) in summary and (b, d) in summary and summary[b, d][1]:
                    sa, pa, ca = summary[a, d]
                    sb, pb, cb = summary[b, d]
                    print(f"  {a}/{b} {d}: sustained {sa / sb if sb else float('nan'):.2f}, peak {pa / pb:.2f},"
                          f" {a}'s sustained / {b}'s peak {sa / pb:.2f}, CPU per datagram {ca / cb:.2f}")
        print(f"  (elapsed {time.monotonic() - started:.0f} s; compare only ratios from one run)")
        return 0
    except BenchError as exc:
        print(f"relay_rate.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("relay_rate.py: interrupted; namespaces removed", file=sys.stderr)
        return 130
    finally:
        if bench is not None:
            bench.close()


if __name__ == "__main__":
    sys.exit(main())
