"""
A load generator that is not the bottleneck: frames made by the kernel, answers counted in it.

Python cannot send much more than 200 000 datagrams/s while also receiving the answers, and
Miredo's server alone answers more than that, so a benchmark driven from Python measures its
generator.  This one builds one template frame (Ethernet header included) in Python and asks
the kernel to transmit copies of it with C{BPF_PROG_TEST_RUN} in live-frames mode (Linux
5.18): C{xdpgen_tx} (C{benchmarks/xdpgen.bpf.c}) stamps each copy with the step's tag, a
sequence number and, optionally, a varied source port, fixes the checksum, and returns
C{XDP_TX}, which sends it out of the generator's veth.  No socket, no socket buffer, one
system call per C{CHUNK} frames.  The answers are counted and dropped by C{xdpgen_sink},
attached to the same veth; one answer per step is kept as a sample for the benchmark to
decode.  It is a benchmark tool only: it ships with C{benchmarks/}, not with the package.

Pacing is by schedule, as the Python generator's: frame C{i} is due at C{t0 + i / rate};
the loop sends what is due, at most C{CHUNK} frames per call, so a burst never exceeds what
a receive ring holds.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from teredonode.fastpath.build import compile_object
from teredonode.fastpath.libbpf import BpfObject, load_libbpf, per_cpu_counts

__all__ = ["XdpGenerator", "ethernet", "mac_of", "SOURCE", "ETH_IPV4", "ETH_IPV6"]

SOURCE = Path(__file__).resolve().parent / "xdpgen.bpf.c"
#: Frames per system call at most: a veth's 256-frame ring.  A call costs about 30 us
#: plus under 1 us per frame, so this reaches well over 1 000 000 frames/s.
CHUNK = 256
#: The time a burst covers, and the shortest sleep worth asking for.  Short bursts: a veth's
#: receive ring holds 256 frames, and a real network's arrivals are smooth, not lumped.  But
#: each call creates a page pool whose frames may still be in flight when it returns; the
#: kernel then frees it a second later, and more than 65 534 pending pools make the next
#: call fail (ENOSPC), so calls are also kept under MAX_CALLS a second.
BURST_SECONDS = 0.0002
MAX_CALLS = 4000
SLEEP_GRAIN = 0.00005
GEN_CONFIG = struct.Struct("=4sHHHHHHHH")
SINK_CONFIG = struct.Struct("=2s2sHH4sI")
SAMPLE = struct.Struct("=II256s")
TEMPLATE = 256
COUNTS = ("sequence", "answered", "stale", "passed")
ETH_IPV4, ETH_IPV6 = b"\x08\x00", b"\x86\xdd"


def ethernet(dst_mac: bytes, src_mac: bytes, ethertype: bytes, payload: bytes) -> bytes:
    return dst_mac + src_mac + ethertype + payload


def mac_of(ifname: str) -> bytes:
    with open(f"/sys/class/net/{ifname}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


class XdpGenerator:
    """
    The generator and the sink on one interface of this network namespace.
    """

    def __init__(self, ifname: str) -> None:
        self.ifindex = socket.if_nametoindex(ifname)
        with tempfile.TemporaryDirectory(prefix="xdpgen-") as work:
            obj_path = Path(work) / "xdpgen.bpf.o"
            compile_object(SOURCE, obj_path)
            self.obj = BpfObject(load_libbpf(), str(obj_path))
        self.cpus = self.obj.possible_cpus()
        self._gen = self.obj.map_fd("gen_config")
        self._sink = self.obj.map_fd("sink_config")
        self._counts = self.obj.map_fd("counts")
        self._sample = self.obj.map_fd("sample")
        self.obj.attach_xdp("xdpgen_sink", self.ifindex)
        self.park = _park(self.obj)
        self.frame = b""
        self.gen_values: dict[str, int] = {}
        self.sink_values: dict[str, Any] = {}

    def configure(self, frame: bytes, *, tag_offset: int = 0, seq_offset: int = 0, vary_offset: int = 0,
                  vary_base: int = 0, vary_span: int = 0, csum_offset: int = 0, csum_udp: bool = False,
                  answer_ethertype: bytes = ETH_IPV4, answer_sport: int = 0, answer_tag_offset: int = 0,
                  answer_proto_offset: int = 0, answer_proto: int = 0) -> None:
        """
        The template frame and where the generator stamps it; what the sink counts as an
        answer (the EtherType, for IPv4 the UDP source port, a byte such as a next header)
        and where an answer carries the tag.  Frames of that kind too short to carry a tag
        and frames of any other kind go to the stack.
        """
        self.frame = frame
        self.gen_values = dict(tag_offset=tag_offset, seq_offset=seq_offset, vary_offset=vary_offset,
                               vary_base=vary_base, vary_span=vary_span, csum_offset=csum_offset,
                               csum_udp=int(csum_udp))
        self.sink_values = dict(ethertype=answer_ethertype, sport=answer_sport, tag_offset=answer_tag_offset,
                                proto_offset=answer_proto_offset, proto=answer_proto)
        self.new_tag()

    def new_tag(self) -> bytes:
        """
        A fresh tag for the next step: answers carrying an older one count as stale.
        """
        tag = secrets.token_bytes(4)
        self.set_tag(tag)
        return tag

    def set_tag(self, tag: bytes) -> None:
        """
        The tag the generator stamps and the sink expects from now on (where two
        generators answer each other, both are given the same one), and no sample yet.
        """
        g = self.gen_values
        self.obj.update(self._gen, bytes(4), GEN_CONFIG.pack(
            tag, g["tag_offset"], g["seq_offset"], g["vary_offset"], g["vary_base"], g["vary_span"],
            g["csum_offset"], g["csum_udp"], g.get("restore", 0)))
        s = self.sink_values
        self.obj.update(self._sink, bytes(4), SINK_CONFIG.pack(
            s["ethertype"], struct.pack("!H", s["sport"]), s["tag_offset"], s["proto_offset"], tag, s["proto"]))
        self.obj.update(self._sample, bytes(4), bytes(SAMPLE.size))

    def counts(self) -> dict[str, int]:
        return per_cpu_counts(self.obj, self._counts, COUNTS, self.cpus)

    def restore(self, frames: dict[int, bytes] | None = None) -> None:
        """
        From now on the generator rewrites every frame from its CPU's template before
        stamping it: C{frames} by CPU, the configured frame on any CPU not given, each the
        length of the frame the test run is given.  For long runs whose answers come back
        to the run's page pool while it goes on (the receiver's NAPI on the same CPU),
        rewritten by the program under test (an RA in place of the RS).  Starts a new tag.
        """
        slot = (4 + TEMPLATE + 7) // 8 * 8
        value = bytearray(slot * self.cpus)
        for cpu in range(self.cpus):
            frame = (frames or {}).get(cpu, self.frame)
            if len(frame) > TEMPLATE:
                raise ValueError(f"a {len(frame)}-byte template is over {TEMPLATE} bytes")
            value[slot * cpu : slot * cpu + 4 + len(frame)] = len(frame).to_bytes(4, "little") + frame
        self.obj.update(self.obj.map_fd("template"), bytes(4), bytes(value))
        self.gen_values["restore"] = 1
        self.new_tag()

    def counts_by_cpu(self) -> dict[str, list[int]]:
        """
        Each of L{COUNTS} per possible CPU, not summed: on which CPU the generator sent and
        the sink counted (C{benchmarks/fastpath_scaling.py} checks where the work ran).
        """
        fd = self.obj.map_fd("counts")
        out = {}
        for index, name in enumerate(COUNTS):
            raw = self.obj.lookup(fd, index.to_bytes(4, "little"), 8 * self.cpus) or bytes(8 * self.cpus)
            out[name] = [int.from_bytes(raw[8 * cpu : 8 * cpu + 8], "little") for cpu in range(self.cpus)]
        return out

    def sample(self) -> bytes | None:
        """
        One answer of the current tag (its first 256 bytes, Ethernet header included), or
        C{None} when none arrived.
        """
        raw = self.obj.lookup(self._sample, bytes(4), SAMPLE.size)
        if raw is None:
            return None
        length, taken, data = SAMPLE.unpack(raw)
        return data[:length] if taken else None

    def send(self, count: int) -> None:
        self.obj.transmit("xdpgen_tx", self.frame, self.ifindex, count, min(count, 64))

    def step(self, rate: float, seconds: float, grace: float) -> dict[str, Any]:
        """
        Offer C{rate} frames/s for C{seconds}, then wait up to C{grace} for answers.
        """
        self.new_tag()
        before = self.counts()
        sent, elapsed = self.offer(rate, seconds)
        deadline = time.perf_counter() + grace
        while time.perf_counter() < deadline:
            if self.counts()["answered"] - before["answered"] >= sent:
                break
            time.sleep(0.02)
        after = self.counts()
        return {
            "rate": rate,
            "sent": sent,
            "answered": after["answered"] - before["answered"],
            "stale": after["stale"] - before["stale"],
            "elapsed": elapsed,
        }

    def offer(self, rate: float, seconds: float) -> tuple[int, float]:
        """
        Send C{rate} frames/s for C{seconds}: how many were sent, in how long.
        """
        sent = 0
        perf = time.perf_counter
        t0 = perf()
        end = t0 + seconds
        target = int(rate * seconds)
        # Send in bursts of BURST_SECONDS' frames (at most CHUNK), and sleep in between when
        # there is time: the sink's NAPI thread shares this CPU.
        burst = max(1, min(CHUNK, max(int(rate * BURST_SECONDS), int(rate / MAX_CALLS))))
        while sent < target:
            now = perf()
            if now >= end:
                break
            due = min(int((now - t0) * rate) + 1, target)
            if due - sent >= burst or (due > sent and due == target):
                n = min(due - sent, CHUNK)
                self.send(n)
                sent += n
            else:
                wait = t0 + (sent + burst) / rate - now
                if wait > SLEEP_GRAIN:
                    time.sleep(wait)
        return sent, min(perf(), end) - t0

    def close(self) -> None:
        self.obj.close()
        _unpark(self.park)


def _park(obj: BpfObject) -> str:
    """
    Attach C{xdpgen_tx} (generic XDP) to an idle veth pair made for it, and return the
    pair's name.  Why: a test run that repeats an XDP program more than once adds it to the
    kernel's XDP dispatcher and removes it afterwards, and each change rewrites the
    dispatcher's code and waits for RCU (about 25 ms per call here).  A program already
    attached somewhere stays in the dispatcher, so a run only takes a reference.
    """
    from pyroute2 import IPRoute

    name = f"xgpark{os.getpid() % 100000}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=name + "p")
        obj.attach_xdp("xdpgen_tx", socket.if_nametoindex(name), generic=True)
    return name


def _unpark(name: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            ipr.link("del", index=found[0])
