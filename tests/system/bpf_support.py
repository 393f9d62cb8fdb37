"""
Whether this machine can run the kernel fast paths' system tests: one answer for every
fast-path test module (they differ only in the tools they drive).
"""

from __future__ import annotations

import os
import shutil


def fast_path_skip_reason(*tools: str) -> str | None:
    """
    Why the tests cannot load and attach a BPF program here (root, clang, libbpf and
    C{tools} are needed), or C{None}.
    """
    if os.geteuid() != 0:
        return "needs root (namespaces, loading BPF: CAP_BPF, CAP_NET_ADMIN)"
    for tool in ("clang", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        from teredonode.fastpath.libbpf import load_libbpf

        load_libbpf()
    except OSError as e:
        return f"libbpf is not usable: {e}"
    return None
