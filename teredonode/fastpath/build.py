"""
Compiling the BPF program: standard library only, so setup.py can load this file by path
while building a wheel (when neither teredonode nor its dependencies are importable) and
the control plane can use it at run time: one clang command line for both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

__all__ = ["CompileError", "compile_object"]


class CompileError(Exception):
    """
    No clang, or clang failed; the message is one line.
    """


def compile_object(source: Path, output: Path) -> None:
    """
    C{clang -O2 -g -target bpf}; the multiarch include directory supplies C{asm/types.h}
    on Debian-style systems.  Written to a temporary name then renamed, so a concurrent or
    interrupted build never leaves half an object.
    """
    clang = shutil.which("clang")
    if clang is None:
        raise CompileError("clang is not installed, so the BPF program cannot be built")
    cmd = [clang, "-O2", "-g", "-target", "bpf", "-Wall"]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch and Path("/usr/include", multiarch).is_dir():
        cmd.append(f"-I/usr/include/{multiarch}")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + f".{os.getpid()}.tmp")
    result = subprocess.run(cmd + ["-c", str(source), "-o", str(tmp)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise CompileError(f"compiling {source.name} failed: {first}")
    os.replace(tmp, output)
