"""
Where the fast path's BPF object comes from, and the values its config map holds.

The object is compiled from C{bpf/teredo_server.bpf.c} with clang.  Two ways, tried in
order:

  1. a wheel built where clang was present carries C{teredo_server.bpf.o} next to this
     module (setup.py's build_py step compiles it; it never fails the build);
  2. otherwise the source (shipped beside this module in a wheel, or C{bpf/} of a source
     tree or editable install) is compiled on first use into a cache directory, under a
     name carrying the source's hash, so an upgraded source is rebuilt and nothing stale
     is loaded.

Why compile on first use at all: an editable install (the project's own set-up) runs no
build step, and a host that gains clang after installing should not need a reinstall.  A
host without clang and without a prebuilt object simply runs the Python path
(L{FastPathUnavailable} says why, in one line).

L{pack_config} mirrors C{struct fp_config} of the C source field by field; the loader
checks the map's value size against it before writing, so a mismatch is refused, never
misread.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any

from teredonode.fastpath.build import CompileError, compile_object
from teredonode.wire import ipv4

__all__ = [
    "FastPathUnavailable",
    "OBJECT_NAME",
    "SOURCE_NAME",
    "PROGRAM",
    "CONFIG",
    "BUDGET",
    "object_path",
    "source_path",
    "pack_config",
    "pack_budget",
    "NANO",
]

SOURCE_NAME = "teredo_server.bpf.c"
OBJECT_NAME = "teredo_server.bpf.o"
PROGRAM = "teredo_server"

#: One token in the program's fixed-point unit (nano-tokens); rates are milli-tokens/s.
NANO = 1_000_000_000
_MILLI = 1000
_MAX_RANGES = 16
_RA_LEN = 96

#: struct fp_config: enabled, primary, secondary, rs_mask; rs_rate, rs_burst, rs_initial,
#: rs_fill, ra_rate, ra_burst, ra_fill; ra_pseudo_sum, ra_packet_sum, n_ranges, secure;
#: 16 (net, mask); the RA template.
CONFIG = struct.Struct(f"=I4s4sI7QIIII{2 * _MAX_RANGES}I{_RA_LEN}s")
#: struct locked_bucket: lock, pad, tokens, stamp.
BUDGET = struct.Struct("=IIQQ")


class FastPathUnavailable(Exception):
    """
    The fast path cannot run here; the message is the one-line reason.
    """


def source_path(name: str = SOURCE_NAME) -> Path | None:
    """
    The C source C{name}: beside this module (installed wheel) or in the tree's C{bpf/}.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parents[1] / "bpf" / name):
        if candidate.is_file():
            return candidate
    return None


def default_cache_dir() -> Path:
    """
    Where a compiled object is kept: the directory systemd made for the unit
    (C{CacheDirectory=} sets C{$CACHE_DIRECTORY}; under C{ProtectSystem=strict} nothing else
    is writable), else C{/var/cache/teredonode} for root, else the user's cache.
    """
    given = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if given:
        return Path(given)
    if os.geteuid() == 0:
        return Path("/var/cache/teredonode")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "teredonode"


def object_path(cache_dir: Path | None = None, source_name: str = SOURCE_NAME) -> Path:
    """
    The object to load (the server's, or the one built from C{source_name}): the prebuilt
    one, else one compiled now (or earlier) from the source.
    """
    object_name = source_name[: -len(".c")] + ".o"
    prebuilt = Path(__file__).resolve().parent / object_name
    if prebuilt.is_file():
        return prebuilt
    source = source_path(source_name)
    if source is None:
        raise FastPathUnavailable(f"neither {object_name} nor {source_name} is installed")
    # The headers beside it (teredo_common.h) are part of what is compiled: a changed one
    # must not load an object built before it.
    hashed = hashlib.sha256(source.read_bytes())
    for header in sorted(source.parent.glob("*.h")):
        hashed.update(header.read_bytes())
    digest = hashed.hexdigest()[:16]
    stem = source_name[: -len(".bpf.c")]
    target = (cache_dir or default_cache_dir()) / f"{stem}-{digest}.bpf.o"
    if not target.is_file():
        try:
            compile_object(source, target)
        except CompileError as e:
            raise FastPathUnavailable(str(e)) from None
    return target


def _sum16(data: bytes) -> int:
    """
    The plain sum of big-endian 16-bit words (data of even length), not folded: the program
    adds its per-packet words and folds.
    """
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _fixed(rate: float, burst: int, initial: int) -> tuple[int, int, int, int]:
    """
    A token bucket in the program's units: rate in milli-tokens per second, burst and
    initial in nano-tokens, and the nanoseconds an empty bucket takes to fill (idle longer
    means full, which also keeps the refill product inside 64 bits).
    """
    rate_milli = round(rate * _MILLI)
    if rate_milli < 1:
        raise FastPathUnavailable(f"a rate of {rate}/s is below what the fast path counts (0.001/s)")
    burst_nano = burst * NANO
    fill = burst_nano * _MILLI // rate_milli + 1
    return rate_milli, burst_nano, initial * NANO, fill


def pack_config(settings: Any, ra_packet: bytes, enabled: bool = True) -> bytes:
    """
    The config map's value for C{settings} (a L{teredonode.config.ServerSettings}) and the
    RA the Python server sends (C{ra_packet}, built by it for any destination: the program
    replaces the destination and the checksum).
    """
    if len(ra_packet) != _RA_LEN:
        raise FastPathUnavailable(f"the server's RA is {len(ra_packet)} bytes, the program builds {_RA_LEN}")
    template = bytearray(ra_packet)
    template[24:40] = bytes(16)
    template[42:44] = b"\x00\x00"
    body = bytes(template[40:])
    pseudo = bytes(template[8:24]) + struct.pack("!IxxxB", len(body), template[6])
    rs = _fixed(settings.rs_rate, settings.rs_burst, settings.rs_initial)
    ra = _fixed(settings.ra_rate, settings.ra_burst, settings.ra_burst)
    ranges = ipv4.RFC4380_NON_GLOBAL + (ipv4.HARDENING_RANGES if settings.hardened else ())
    if len(ranges) > _MAX_RANGES:
        raise FastPathUnavailable("too many non-global ranges for the program")
    flat: list[int] = []
    for net, mask, _ in ranges:
        flat += [net, mask]
    flat += [0] * (2 * _MAX_RANGES - len(flat))
    mask = (0xFFFFFFFF << (32 - settings.rs_limit_prefix)) & 0xFFFFFFFF
    return CONFIG.pack(
        1 if enabled else 0,
        ipv4.pack(settings.primary),
        ipv4.pack(settings.secondary),
        mask,
        rs[0],
        rs[1],
        rs[2],
        rs[3],
        ra[0],
        ra[1],
        ra[3],
        _sum16(pseudo + body),
        _sum16(bytes(template)),
        len(ranges),
        1 if settings.secure else 0,
        *flat,
        bytes(template),
    )


def pack_budget(settings: Any, now_ns: int) -> bytes:
    """
    The global RA budget, full (as L{teredonode.security.TokenBucket} starts), stamped with
    the program's clock (C{CLOCK_MONOTONIC}, which is C{bpf_ktime_get_ns}).
    """
    return BUDGET.pack(0, 0, settings.ra_burst * NANO, now_ns)
