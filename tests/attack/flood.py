"""
Helpers of the attack tests: send many datagrams from a lab host, count tcpdump lines.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from teredonode.lab.lab import Lab

#: Runs in a lab namespace: one UDP datagram to every IPv6 address read from stdin.
_UDP_SENDER = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
    "for a in sys.stdin.read().split():\n"
    "    s.sendto(b'x',(a,9))\n"
)
#: Runs in a lab namespace: every hex line from stdin sent as a raw IPv6 packet (any source).
_RAW_SENDER = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET6,socket.SOCK_RAW,socket.IPPROTO_RAW)\n"
    "for line in sys.stdin.read().split():\n"
    "    p=bytes.fromhex(line)\n"
    "    s.sendto(p,(socket.inet_ntop(socket.AF_INET6,p[24:40]),0))\n"
)


def _run(lab: Lab, host: str, script: str, data: str, timeout: float) -> None:
    proc = lab.popen(
        host, [sys.executable, "-c", script],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _, err = proc.communicate(data, timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise AssertionError(f"sender on {host} failed: {err}")


def send_udp6(lab: Lab, host: str, addresses: list[str], timeout: float = 60.0) -> None:
    """
    One small UDP datagram from C{host} to each of C{addresses} (bounded in time).
    """
    _run(lab, host, _UDP_SENDER, "\n".join(addresses), timeout)


def send_raw6(lab: Lab, host: str, packets: list[bytes], timeout: float = 60.0) -> None:
    """
    Each of C{packets} (whole IPv6 packets, sources spoofed at will) sent from C{host}.
    """
    _run(lab, host, _RAW_SENDER, "\n".join(p.hex() for p in packets), timeout)


def count_lines(proc: subprocess.Popen[Any], timeout: float) -> int:
    """
    Packets a L{Lab.capture} saw, once it ended (its own C{seconds} bound it).
    """
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return sum(1 for line in out.splitlines() if " IP " in line)
