#!/usr/bin/env python3
"""
Memory per idle peer entry of a relay's peer list, against a bare Python dict.

    python3 benchmarks/peer_memory.py                       # 200 000 and 1 000 000 peers
    python3 benchmarks/peer_memory.py --peers 200000        # one size, about 30 s
    python3 benchmarks/peer_memory.py --compare 42f209b     # also peers.py of that commit

Why it is built this way (docs/performance.md, section "Memory per idle peer", has figures):

  - The relay's default bound is 1 048 576 entries, so the bytes an entry costs decide how
    much memory a relay may end up holding.  "Idle" is the state a relay's entry spends most
    of its life in: trusted, nothing queued, no probe running.
  - Each entry is made exactly as a relay makes it (L{teredonode.roles.relay.RELAY_POLICY} on
    L{teredonode.roles.tunnel.TeredoTunnel}, sends stubbed out): the host sends a packet to
    a new Teredo address (entry created, packet queued, bubbles sent, retry timer set), then
    the peer's bubble arrives from the mapping its address embeds (entry trusted, queue
    released, timer cancelled).  Every object the entry keeps is made fresh, as it would be
    in the daemon: the address from parsing the packet, the endpoint C{(str, int)} as a
    socket read returns it, the times from a clock that returns a new float per call.
    Distinct mapped IPv4 addresses and ports, so nothing is shared by accident.
  - Two phases: "fresh", right after the last entry is trusted, and "idle", where the table
    is swept (L{teredonode.peers.PeerList.expire}, which the tunnel runs every 10 s) after
    every twentieth of the entries and twice at the end, so that every entry has been idle
    through a whole sweep interval (and none expired).
  - Two measurements, each in a fresh process: C{tracemalloc} (bytes the Python allocators
    were asked for, exact but blind to allocator rounding and fragmentation) and the growth
    of the resident set (C{/proc/self/statm}; what the machine pays, pages included).  Both
    are divided by the number of entries, after a C{gc.collect()}; the tracemalloc peak
    too.  The time of one sweep over the full table is printed for the idle phase.
  - The baseline is the least any Python table can hold per peer: a C{dict} from the
    16-byte address to the C{(host, port)} endpoint, built from the same fresh objects.
  - C{--compare REV} measures the C{teredonode/peers.py} of commit REV too, in the same run
    (loaded in place of the current module before the tunnel is imported), so that a change
    is judged by a same-run ratio.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

#: The relay's default peer limit (teredonode.config).
MAX_PEERS = 1_048_576
#: Embedded server and first mapped IPv4 address: global unicast, so the relay bubbles.
SERVER_IP = 0x1E000001  # 30.0.0.1
FIRST_CLIENT_IP = 0x28000000  # 40.0.0.0
NATIVE_HOST = bytes.fromhex("20010db8000000000000000000000001")
_TEREDO = struct.Struct("!4s4sHH4s")


def teredo_address(i: int) -> tuple[bytes, int, int]:
    """
    The raw Teredo address of the i-th peer, with its mapped IPv4 address and port.
    """
    ip = FIRST_CLIENT_IP + i
    port = 1024 + i % 64000
    raw = _TEREDO.pack(
        b"\x20\x01\x00\x00", SERVER_IP.to_bytes(4, "big"), 0, port ^ 0xFFFF,
        (ip ^ 0xFFFFFFFF).to_bytes(4, "big"),
    )
    return raw, ip, port


def endpoint(ip: int, port: int) -> tuple[str, int]:
    """
    A fresh C{(host, port)}, as a socket read returns it.
    """
    return socket.inet_ntoa(ip.to_bytes(4, "big")), port + 0


def load_peers_from(rev: str) -> None:
    """
    Import C{teredonode/peers.py} of commit C{rev} as C{teredonode.peers}.
    """
    source = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "show", f"{rev}:teredonode/peers.py"],
        check=True, capture_output=True,
    ).stdout
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("teredonode.peers", f.name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["teredonode.peers"] = module
    spec.loader.exec_module(module)
    os.unlink(f.name)


def relay_filler(count: int, sweeps: bool) -> tuple[Callable[[], None], Callable[[], Any]]:
    """
    A function that makes C{count} idle trusted entries the relay's way, and one that
    checks them (called after measuring).  With C{sweeps}, the table is swept (as the
    tunnel does every 10 s) after every twentieth of the entries and twice at the end, so
    that every entry has been idle through a whole sweep interval; the clock moves 5 s in
    all, so none expires.
    """
    from twisted.internet.task import Clock

    from teredonode.peers import PeerList
    from teredonode.roles.relay import RELAY_POLICY
    from teredonode.roles.tunnel import TeredoTunnel
    from teredonode.wire.ipv6 import NH_NONE, build_ipv6, bubble
    from teredonode.wire.teredo import classify

    class FreshClock(Clock):
        # time.time() returns a new float per call; so does this.
        def seconds(self) -> float:
            return self.rightNow + 0.0

    clock = FreshClock()
    clock.advance(1_000_000)
    peers = PeerList(clock.seconds, max_peers=MAX_PEERS, queue_packets=8, queue_bytes=10240)
    tunnel = TeredoTunnel(
        clock, RELAY_POLICY, peers, lambda data, addr: None, lambda packet: None, os.urandom,
        serves=lambda address: True,
    )
    tunnel.setUnnumbered(NATIVE_HOST)

    chunk = max(1, count // 20)

    def fill() -> None:
        for i in range(count):
            raw, ip, port = teredo_address(i)
            tunnel.fromHost(build_ipv6(NATIVE_HOST, raw, NH_NONE, b""))
            clock.advance(0.000001)
            tunnel.fromPeer(classify(bubble(raw, NATIVE_HOST)), endpoint(ip, port))
            if sweeps and i % chunk == chunk - 1:
                clock.advance(0.1)
                peers.expire()
        if sweeps:
            for _ in range(2):
                clock.advance(0.1)
                peers.expire()

    def sweep() -> float:
        started = time.process_time()
        assert peers.expire() == 0
        return time.process_time() - started

    def check() -> Any:
        status = tunnel.status()
        assert status["peers"] == count == status["trusted-peers"], status
        assert status["queued-packets"] == 0 and not clock.getDelayedCalls(), status
        return peers

    fill.sweep = sweep  # type: ignore[attr-defined]
    return fill, check


def dict_filler(count: int, sweeps: bool) -> tuple[Callable[[], None], Callable[[], Any]]:
    """
    The baseline: address -> endpoint in a plain dict, from the same fresh objects.
    """
    table: dict[bytes, tuple[str, int]] = {}

    def fill() -> None:
        for i in range(count):
            raw, ip, port = teredo_address(i)
            table[bytes(raw)] = endpoint(ip, port)

    def check() -> Any:
        assert len(table) == count
        return table

    return fill, check


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(variant: str, count: int, method: str, phase: str) -> None:
    """
    One measurement in this (fresh) process; prints a JSON line.
    """
    if variant.startswith("rev:"):
        load_peers_from(variant[4:])
    filler = dict_filler if variant == "dict" else relay_filler
    fill, check = filler(count, phase == "idle")
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss()
    started = time.process_time()
    fill()
    seconds = time.process_time() - started
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else rss()
    peak = tracemalloc.get_traced_memory()[1] if method == "tracemalloc" else after
    keep = check()
    sweep = getattr(fill, "sweep", None)
    result = {
        "bytes": (after - before) / count,
        "peak": (peak - before) / count,
        "seconds": seconds,
        "sweep": sweep() if sweep is not None and method == "rss" else 0.0,
    }
    print(json.dumps(result))
    del keep


def measure(variant: str, count: int, method: str, phase: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, str(count), method, phase],
        check=True, capture_output=True, text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="200000,1000000", help="entry counts, comma-separated")
    parser.add_argument("--compare", metavar="REV", help="also measure peers.py of this commit")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, count, method, phase = args.child
        child(variant, int(count), method, phase)
        return
    variants = ["current"]
    if args.compare:
        variants.append(f"rev:{args.compare}")
    variants.append("dict")
    names = {"current": "peers.py (this tree)", "dict": "dict baseline"}
    names.update({v: f"peers.py at {v[4:]}" for v in variants if v.startswith("rev:")})
    print("fresh: just trusted, no sweep yet; idle: after a sweep interval without traffic")
    print("B/entry: tracemalloc now (peak) / resident set growth; sweep: one expire() pass\n")
    print(f"{'table':<24} {'phase':<6} {'entries':>9} {'tracemalloc B/entry':>20} "
          f"{'RSS B/entry':>12} {'fill s':>7} {'sweep s':>8}")
    for count in (int(n) for n in args.peers.split(",")):
        results = {}
        for variant in variants:
            for phase in ("fresh", "idle") if variant != "dict" else ("fresh",):
                traced = measure(variant, count, "tracemalloc", phase)
                resident = measure(variant, count, "rss", phase)
                results[variant, phase] = (traced["bytes"], resident["bytes"])
                sweep = f"{resident['sweep']:>8.2f}" if phase == "idle" else f"{'':>8}"
                memory = f"{traced['bytes']:.0f} ({traced['peak']:.0f})"
                print(f"{names[variant]:<24} {phase:<6} {count:>9} {memory:>20} "
                      f"{resident['bytes']:>12.0f} {resident['seconds']:>7.1f} {sweep}",
                      flush=True)
        base = results["dict", "fresh"]
        for (variant, phase), figures in results.items():
            if variant != "dict":
                print(f"  {names[variant]}, {phase} / dict: tracemalloc "
                      f"{figures[0] / base[0]:.2f}, RSS {figures[1] / base[1]:.2f}")
        if args.compare:
            for phase in ("fresh", "idle"):
                now, then = results["current", phase], results[f"rev:{args.compare}", phase]
                print(f"  {phase}: this tree / {args.compare}: tracemalloc "
                      f"{now[0] / then[0]:.2f}, RSS {now[1] / then[1]:.2f}")


if __name__ == "__main__":
    main()
