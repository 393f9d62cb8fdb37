"""
A tiny UDP agent for observing NAT behaviour from inside the lab, and its driver.

Run on a lab host (C{python -m teredonode.lab.probe agent --port P}), it reads one JSON command
per line on stdin and answers one JSON line on stdout:

    {"cmd": "send", "to": ["203.0.113.20", 5000], "data": "ping"}  -> {"ok": true}
    {"cmd": "recv", "timeout": 2.0}  -> {"from": [ip, port], "data": "..."} | {"timeout": true}

Every datagram starting with "ping" is answered with "pong <ip>:<port>", the source address the
agent saw: that is how a host behind a NAT learns the mapping the NAT gave it.  Using one
socket per agent is the point: a NAT's mapping is a property of the (inside address, port).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections import deque

from teredonode.errors import LabError


def agent(port: int, lifetime: float, address: str = "0.0.0.0") -> int:
    """
    Serve commands until stdin closes or C{lifetime} seconds pass (never outlive a test).
    C{address}: bind to one address of a host that has several (answers then leave from it).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    inbox: deque[tuple[tuple[str, int], str]] = deque()
    deadline = time.monotonic() + lifetime
    stdin = sys.stdin.buffer
    pending = b""

    def receive_one() -> None:
        data, src = sock.recvfrom(2048)
        text = data.decode(errors="replace")
        if text.startswith("ping"):
            sock.sendto(f"pong {src[0]}:{src[1]}".encode(), src)
        inbox.append((src, text))

    def reply(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while time.monotonic() < deadline:
        ready, _, _ = select.select([stdin, sock], [], [], max(0.0, deadline - time.monotonic()))
        if sock in ready:
            receive_one()
        if stdin not in ready:
            continue
        chunk = os.read(stdin.fileno(), 4096)
        if not chunk:
            return 0
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            command = json.loads(line)
            if command["cmd"] == "send":
                ip, to_port = command["to"]
                sock.sendto(command.get("data", "ping").encode(), (ip, int(to_port)))
                reply({"ok": True})
            elif command["cmd"] == "recv":
                until = time.monotonic() + float(command.get("timeout", 2.0))
                while not inbox and time.monotonic() < until:
                    if select.select([sock], [], [], until - time.monotonic())[0]:
                        receive_one()
                if inbox:
                    src, text = inbox.popleft()
                    reply({"from": list(src), "data": text})
                else:
                    reply({"timeout": True})
            else:
                reply({"error": f"unknown command {command['cmd']!r}"})
    return 0


class Agent:
    """
    Drives an agent running on a lab host; always call L{close} (or use C{with}).
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )

    def _call(self, command: dict[str, object], timeout: float) -> dict[str, object]:
        assert self._proc.stdin and self._proc.stdout
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise LabError(f"probe agent did not answer {command['cmd']} within {timeout:g}s")
        line = self._proc.stdout.readline()
        if not line:
            raise LabError("probe agent exited")
        answer: dict[str, object] = json.loads(line)
        return answer

    def send(self, ip: str, port: int, data: str = "ping") -> None:
        self._call({"cmd": "send", "to": [ip, port], "data": data}, timeout=5.0)

    def recv(self, timeout: float = 2.0) -> tuple[tuple[str, int], str] | None:
        """
        The next datagram received (source, text), or None after C{timeout} seconds.
        """
        answer = self._call({"cmd": "recv", "timeout": timeout}, timeout=timeout + 5.0)
        if answer.get("timeout"):
            return None
        source = answer["from"]
        assert isinstance(source, list)
        ip, port = source
        return (str(ip), int(port)), str(answer["data"])

    def mapping_seen_by(self, ip: str, port: int, timeout: float = 2.0) -> tuple[str, int] | None:
        """
        Ping an agent at C{ip:port}; the source address it saw (our NAT mapping toward it).
        """
        self.send(ip, port, "ping")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.recv(max(0.05, deadline - time.monotonic()))
            if got is None:
                return None
            (src_ip, src_port), text = got
            if text.startswith("pong ") and (src_ip, src_port) == (ip, port):
                seen_ip, seen_port = text[5:].rsplit(":", 1)
                return seen_ip, int(seen_port)
        return None

    def close(self) -> None:
        if self._proc.stdin:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        if self._proc.stdout:
            self._proc.stdout.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m teredonode.lab.probe")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("agent")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--lifetime", type=float, default=120.0)
    a.add_argument("--address", default="0.0.0.0")
    args = parser.parse_args(argv)
    return agent(args.port, args.lifetime, args.address)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
