"""
The receiving side of tests/system/test_udp_gro.py, run in its receiver namespace: a
L{ServicePort} on a batching port (as the relay opens its own), which records every
datagram it is handed.

    python3 _gro_receiver.py PORT COUNT  ->  "ready" line, then JSON
        {"batching": reason or null, "reads": n, "datagrams": n, "received": [[hex, host, port], ...]}

It stops after COUNT datagrams, or after a second without any.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor

from teredonode.udp import ServicePort
from teredonode.udpbatch import listenBatching


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    received: list[list[Any]] = []
    idle: list[Any] = []

    def done() -> None:
        if reactor.running:
            reactor.stop()

    def receive(data: bytes, addr: tuple[str, int]) -> None:
        received.append([data.hex(), addr[0], addr[1]])
        idle[0].reset(1.0)
        if len(received) >= count:
            done()

    listening = listenBatching(reactor, port, ServicePort(receive))
    reason = listening.enableBatching()
    idle.append(reactor.callLater(10.0, done))
    print("ready", flush=True)
    reactor.run()
    json.dump(
        {"batching": reason, "reads": listening.reads, "datagrams": listening.datagrams, "received": received},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
