"""
The few libbpf (libbpf.so.1) calls the fast path needs, through ctypes.

Why ctypes and not bpftool or a compiled extension: the package stays pure Python (it
installs and runs without a compiler), the library is the distribution's own, and every map
read or write is one bpf() system call on a file descriptor we hold, never a process per
update.  Only the stable libbpf 1.x API is used: open/load an object, find its programs and
maps, attach XDP through a BPF link (detached by the kernel when our descriptor closes, so a
crashed server never leaves a stale fast path behind), element lookup/update, and
C{bpf_prog_test_run_opts} for the differential test.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from typing import Any, Sequence

__all__ = ["LibBPF", "BPFError", "load_libbpf", "BpfObject", "XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX"]

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = 0, 1, 2, 3

_BPF_ANY = 0
_BPF_XDP = 37  # enum bpf_attach_type
_BPF_TCX_INGRESS, _BPF_TCX_EGRESS = 46, 47  # Linux 6.6; the build host's headers may predate them
_XDP_FLAGS_SKB_MODE = 1 << 1
_BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


class BPFError(OSError):
    """
    A libbpf call failed; C{errno} and C{strerror} say why.
    """


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class _XdpMd(ctypes.Structure):
    # struct xdp_md: the context a live test run starts from.
    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


class _LinkCreateOpts(ctypes.Structure):
    # The leading fields of struct bpf_link_create_opts; libbpf reads the rest as zero.
    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32)]


class LibBPF:
    """
    libbpf.so.1 with argument and result types declared.
    """

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path, use_errno=True)
        vp, ci, cu, cs = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
        for name, res, args in (
            ("bpf_object__open_file", vp, [cs, vp]),
            ("bpf_object__load", ci, [vp]),
            ("bpf_object__close", None, [vp]),
            ("bpf_object__find_program_by_name", vp, [vp, cs]),
            ("bpf_object__find_map_by_name", vp, [vp, cs]),
            ("bpf_program__fd", ci, [vp]),
            ("bpf_program__attach_xdp", vp, [vp, ci]),
            ("bpf_link__destroy", ci, [vp]),
            ("bpf_link_create", ci, [ci, ci, ci, ctypes.POINTER(_LinkCreateOpts)]),
            ("bpf_map__fd", ci, [vp]),
            ("bpf_map__set_max_entries", ci, [vp, cu]),
            ("bpf_map__value_size", cu, [vp]),
            ("bpf_map_update_elem", ci, [ci, vp, vp, ctypes.c_uint64]),
            ("bpf_map_lookup_elem", ci, [ci, vp, vp]),
            ("bpf_map_delete_elem", ci, [ci, vp]),
            ("bpf_map_lookup_batch", ci, [ci, vp, vp, vp, vp, ctypes.POINTER(cu), vp]),
            ("bpf_prog_test_run_opts", ci, [ci, ctypes.POINTER(_TestRunOpts)]),
            ("libbpf_num_possible_cpus", ci, []),
            ("libbpf_set_print", vp, [vp]),
        ):
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        self.lib = lib
        # libbpf's own messages would go to stderr, once per failed probe: the caller turns
        # a failure into one log line instead.
        lib.libbpf_set_print(None)

    def check(self, result: int, what: str) -> int:
        """
        libbpf 1.x returns a negative errno (and sets errno) on failure.
        """
        if result < 0:
            err = -result if result != -1 else ctypes.get_errno()
            raise BPFError(err, f"{what}: {os.strerror(err)}")
        return result

    def pointer(self, result: int | None, what: str) -> int:
        if not result:
            err = ctypes.get_errno() or 22
            raise BPFError(err, f"{what}: {os.strerror(err)}")
        return result


def load_libbpf() -> LibBPF:
    """
    The system's libbpf 1.x, or L{BPFError} (ENOENT) when it is not installed.
    """
    candidates = ["libbpf.so.1"]
    found = ctypes.util.find_library("bpf")
    if found:
        candidates.append(found)
    for name in candidates:
        try:
            return LibBPF(name)
        except (OSError, AttributeError):
            continue
    raise BPFError(2, "libbpf.so.1 not found (install libbpf1)")


class BpfObject:
    """
    One loaded BPF object file: its programs and maps by name, element access on the maps.
    """

    def __init__(self, libbpf: LibBPF, path: str, max_entries: dict[str, int] | None = None) -> None:
        self._b = libbpf
        lib = libbpf.lib
        self._obj = libbpf.pointer(lib.bpf_object__open_file(path.encode(), None), f"opening {path}")
        self._links: list[int] = []
        self._link_fds: list[int] = []
        #: The XDP links by ifindex (a libbpf link, or a link descriptor): L{detach_xdp}.
        self._xdp: dict[int, tuple[bool, int]] = {}
        try:
            for name, entries in (max_entries or {}).items():
                libbpf.check(lib.bpf_map__set_max_entries(self._map(name), entries), f"sizing map {name}")
            libbpf.check(lib.bpf_object__load(self._obj), f"loading {os.path.basename(path)}")
        except BaseException:
            lib.bpf_object__close(self._obj)
            raise

    def _map(self, name: str) -> int:
        return self._b.pointer(self._b.lib.bpf_object__find_map_by_name(self._obj, name.encode()), f"map {name}")

    def _program(self, name: str) -> int:
        return self._b.pointer(
            self._b.lib.bpf_object__find_program_by_name(self._obj, name.encode()), f"program {name}"
        )

    def program_fd(self, name: str) -> int:
        return self._b.check(self._b.lib.bpf_program__fd(self._program(name)), f"program {name}")

    def map_fd(self, name: str) -> int:
        return self._b.check(self._b.lib.bpf_map__fd(self._map(name)), f"map {name}")

    def value_size(self, name: str) -> int:
        return int(self._b.lib.bpf_map__value_size(self._map(name)))

    def attach_xdp(self, program: str, ifindex: int, generic: bool = False) -> None:
        """
        Attach through a BPF link: native XDP where the driver has it (generic otherwise),
        or generic XDP when asked; the kernel detaches it when the link's descriptor
        closes, whatever ends the process.
        """
        what = f"attaching XDP to ifindex {ifindex}"
        if generic:
            opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), flags=_XDP_FLAGS_SKB_MODE)
            fd = self._b.check(
                self._b.lib.bpf_link_create(self.program_fd(program), ifindex, _BPF_XDP, ctypes.byref(opts)), what
            )
            self._link_fds.append(fd)
            self._xdp[ifindex] = (False, fd)
            return
        link = self._b.pointer(self._b.lib.bpf_program__attach_xdp(self._program(program), ifindex), what)
        self._links.append(link)
        self._xdp[ifindex] = (True, link)

    def detach_xdp(self, ifindex: int) -> None:
        """
        Release the XDP link on C{ifindex} (an interface that is gone: the kernel detached
        the program with it, the link's descriptor is all that is left).
        """
        held = self._xdp.pop(ifindex, None)
        if held is None:
            return
        isLink, handle = held
        if isLink:
            self._links.remove(handle)
            self._b.lib.bpf_link__destroy(handle)
        else:
            self._link_fds.remove(handle)
            os.close(handle)

    def attach_tcx(self, program: str, ifindex: int, egress: bool) -> None:
        """
        Attach a TC program to C{ifindex} (ingress or egress) through a tcx BPF link: no
        qdisc to create, no netlink, and, as for XDP, the kernel detaches it when the
        link's descriptor closes.
        """
        opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), flags=0)
        kind = _BPF_TCX_EGRESS if egress else _BPF_TCX_INGRESS
        fd = self._b.check(
            self._b.lib.bpf_link_create(self.program_fd(program), ifindex, kind, ctypes.byref(opts)),
            f"attaching TC to ifindex {ifindex}",
        )
        self._link_fds.append(fd)

    def delete(self, fd: int, key: bytes) -> bool:
        """
        Remove C{key}; whether it was there.
        """
        k = ctypes.create_string_buffer(key, len(key))
        return bool(self._b.lib.bpf_map_delete_elem(fd, k) == 0)

    def items(self, fd: int, key_size: int, value_size: int, batch: int = 4096) -> list[tuple[bytes, bytes]]:
        """
        Every (key, value) of a hash map, C{batch} entries per system call
        (BPF_MAP_LOOKUP_BATCH).
        """
        out: list[tuple[bytes, bytes]] = []
        keys = ctypes.create_string_buffer(key_size * batch)
        values = ctypes.create_string_buffer(value_size * batch)
        token_in = ctypes.create_string_buffer(max(8, key_size))
        token_out = ctypes.create_string_buffer(max(8, key_size))
        first = True
        while True:
            count = ctypes.c_uint32(batch)
            result = self._b.lib.bpf_map_lookup_batch(
                fd, None if first else token_in, token_out, keys, values, ctypes.byref(count), None
            )
            err = -result if result < 0 else 0  # libbpf 1.x: a negative errno
            if err and err != errno.ENOENT:
                raise BPFError(err, f"map batch lookup: {os.strerror(err)}")
            raw_k, raw_v = keys.raw, values.raw
            for i in range(count.value):
                out.append(
                    (raw_k[i * key_size : (i + 1) * key_size], raw_v[i * value_size : (i + 1) * value_size])
                )
            if err == errno.ENOENT or count.value == 0:
                return out
            ctypes.memmove(token_in, token_out, len(token_out))
            first = False

    def update(self, fd: int, key: bytes, value: bytes) -> None:
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
        self._b.check(self._b.lib.bpf_map_update_elem(fd, k, v, _BPF_ANY), "map update")

    def lookup(self, fd: int, key: bytes, size: int) -> bytes | None:
        """
        The value under C{key} (C{size} bytes), or C{None} when absent.
        """
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(size)
        result = self._b.lib.bpf_map_lookup_elem(fd, k, v)
        if result < 0:
            return None
        return v.raw

    def possible_cpus(self) -> int:
        return self._b.check(self._b.lib.libbpf_num_possible_cpus(), "counting CPUs")

    def transmit(self, program: str, frame: bytes, ifindex: int, count: int, batch: int = 64) -> None:
        """
        Run the XDP C{program} C{count} times on copies of C{frame} as live frames
        (BPF_PROG_TEST_RUN with C{BPF_F_TEST_XDP_LIVE_FRAMES}, Linux 5.18): what it returns
        C{XDP_TX} for leaves through interface C{ifindex} as if received there and sent
        back, without a socket or a socket buffer.  The benchmarks' load generator: the
        kernel sends C{count} frames in one system call, in batches of C{batch}.
        """
        data_in = ctypes.create_string_buffer(frame, len(frame))
        ctx = _XdpMd(data_end=len(frame), ingress_ifindex=ifindex)  # data_end must be the size
        opts = _TestRunOpts(
            sz=ctypes.sizeof(_TestRunOpts),
            data_in=ctypes.cast(data_in, ctypes.c_void_p),
            data_size_in=len(frame),
            ctx_in=ctypes.cast(ctypes.byref(ctx), ctypes.c_void_p),
            ctx_size_in=ctypes.sizeof(_XdpMd),
            repeat=count,
            flags=_BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size=batch,
        )
        self._b.check(self._b.lib.bpf_prog_test_run_opts(self.program_fd(program), ctypes.byref(opts)), "live test run")

    def test_run(self, program: str, frame: bytes, ctx: bytes | None = None) -> tuple[int, bytes]:
        """
        Run C{program} once on C{frame} (BPF_PROG_TEST_RUN): its verdict and the frame it
        leaves.
        """
        data_in = ctypes.create_string_buffer(frame, len(frame))
        data_out = ctypes.create_string_buffer(4096)
        opts = _TestRunOpts(
            sz=ctypes.sizeof(_TestRunOpts),
            data_in=ctypes.cast(data_in, ctypes.c_void_p),
            data_out=ctypes.cast(data_out, ctypes.c_void_p),
            data_size_in=len(frame),
            data_size_out=len(data_out),
            repeat=1,
        )
        if ctx is not None:
            ctx_in = ctypes.create_string_buffer(ctx, len(ctx))
            opts.ctx_in = ctypes.cast(ctx_in, ctypes.c_void_p)
            opts.ctx_size_in = len(ctx)
        self._b.check(self._b.lib.bpf_prog_test_run_opts(self.program_fd(program), ctypes.byref(opts)), "test run")
        return int(opts.retval), data_out.raw[: opts.data_size_out]

    def close(self) -> None:
        """
        Detach every link and free the object (maps and programs go with their last
        reference).
        """
        self._xdp.clear()
        links, self._links = self._links, []
        for link in links:
            self._b.lib.bpf_link__destroy(link)
        fds, self._link_fds = self._link_fds, []
        for fd in fds:
            os.close(fd)
        if self._obj:
            self._b.lib.bpf_object__close(self._obj)
            self._obj = 0

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def per_cpu_counts(obj: Any, fd: int, names: Sequence[str], cpus: int) -> dict[str, int]:
    """
    A per-CPU array of u64 counters (one slot per name, in order), each summed over the
    C{cpus} possible CPUs: what the programs counted, for status.
    """
    out = {}
    for index, name in enumerate(names):
        raw = obj.lookup(fd, index.to_bytes(4, "little"), 8 * cpus)
        total = 0
        if raw is not None:
            for cpu in range(cpus):
                total += int.from_bytes(raw[8 * cpu : 8 * cpu + 8], "little")
        out[name] = total
    return out
