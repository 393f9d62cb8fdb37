"""
What the benchmarks share: running tools, stopping processes, counting a process tree's CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

__all__ = [
    "TICK", "BenchError", "run", "tool", "stop", "process_tree", "cpu_seconds", "rate_grid", "napi_threads",
    "remove_namespaces", "serve_commands", "Agents",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


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


def remove_namespaces(names: Iterable[str]) -> None:
    """
    Kill every process left in each namespace (a process keeps a deleted namespace alive),
    then delete it: the lab's own helpers, so a benchmark cleans up as the lab does.
    """
    from teredonode.lab.topology import delete_namespace, namespace_pids

    for ns in names:
        for pid in namespace_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        delete_namespace(ns)


def serve_commands(handle: Callable[[dict[str, Any]], dict[str, Any]], commands: TextIO, answers: TextIO) -> None:
    """
    A benchmark's helper process inside a namespace: say it is ready, then answer one JSON
    command per line with one JSON line, until end of input (the orchestrator is done or died).
    """
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    for line in commands:
        answers.write(json.dumps(handle(json.loads(line))) + "\n")
        answers.flush()


class Agents:
    """
    The orchestrator's side of L{serve_commands}: helper processes (usually inside
    namespaces), by name, one JSON command per line each way.
    """

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, argv: list[str]) -> None:
        """Start C{argv} (with this repository importable) and wait for it to say it is ready."""
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            env=env, start_new_session=True)
        if not self.answer(name).get("ready"):
            raise BenchError(f"the {name} agent did not start")

    def ask(self, name: str, **cmd: Any) -> dict[str, Any]:
        proc = self.procs[name]
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(cmd) + "\n")
        proc.stdin.flush()
        return self.answer(name)

    def answer(self, name: str) -> dict[str, Any]:
        proc = self.procs[name]
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise BenchError(f"the {name} agent exited (status {proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        if "error" in result:
            raise BenchError(f"the {name} agent: {result['error']}")
        return result

    def close(self) -> None:
        """End every agent's input (an agent exits at end of input), then stop it."""
        for proc in self.procs.values():
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            stop(proc, 2.0)
        self.procs.clear()
