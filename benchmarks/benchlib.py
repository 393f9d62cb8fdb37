"""
What the benchmarks share: running tools, stopping processes, counting a process tree's CPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

__all__ = ["TICK", "BenchError", "run", "tool", "stop", "process_tree", "cpu_seconds", "rate_grid", "napi_threads"]


class BenchError(Exception):
    """
    A setup or run failure worth one line to the user.
    """


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise BenchError(f"{name} not found")
    return path


def stop(popen: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """
    SIGTERM, then SIGKILL after C{timeout}; always reaped.
    """
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def process_tree(pid: int) -> list[int]:
    """
    C{pid} and its descendants (miredo-server forks; CPU is counted over all of them).
    """
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, ()))
    return out


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """
    utime + stime of C{pids} (all their threads), in seconds.
    """
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / TICK


def rate_grid(start: float, factor: float, top: float) -> list[float]:
    rates, r = [], start
    while r <= top:
        rates.append(float(round(r, -2)))
        r *= factor
    return rates


def napi_threads(dev: str) -> list[int]:
    """
    The NAPI kernel threads of interface C{dev} (threaded NAPI: C{napi/<dev>-<id>}, the
    name cut to 15 characters).
    """
    prefix = f"napi/{dev}"[:15]
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip().startswith(prefix):
                        found.append(int(entry))
            except OSError:
                continue
    return found
