#!/usr/bin/env python3
"""
Measure port guessing (beyond RFC 6081, docs/nat-traversal.md) in the lab: our client behind
the lab's port-restricted NAT and our client behind its port-symmetric NAT ping each other,
each way, from fresh clients and NATs per trial, with C{port-guessing} on (or off).

`teredo lab matrix --port-guessing` tries every cell once; this repeats one pair many times,
with the search's sizes and rate as options.  This prints one JSON line per trial
(received replies, time to the first, the clients' C{pg-*} counters) and a summary.

    python3 tools/portguess_lab.py --trials 6 [--off] [--sockets 256 --probes 256 --rate 50]

Needs root (network namespaces); the lab is removed at the end, also on errors.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from teredonode.lab import matrix  # noqa: E402
from teredonode.lab.demo import parse_ping  # noqa: E402
from teredonode.lab.lab import Lab  # noqa: E402
from teredonode.lab.scenario import CUSTOM_PREFIX  # noqa: E402

ROW, COLUMN = "port-restricted", "port-symmetric"
INTERVAL = 0.5


def _pg(doc: Any) -> dict[str, int] | None:
    """The C{pg-*} counters of a status document (wherever the client's table is)."""
    if isinstance(doc, dict):
        counters = doc.get("counters")
        if isinstance(counters, dict) and any(k.startswith("pg-") for k in counters):
            return {k: v for k, v in counters.items() if k.startswith("pg-") and v}
        for value in doc.values():
            found = _pg(value)
            if found is not None:
                return found
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6, help="trials each way")
    parser.add_argument("--off", action="store_true", help="port-guessing = false (the baseline)")
    parser.add_argument("--sockets", type=int, default=256)
    parser.add_argument("--probes", type=int, default=256)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--pings", type=int, default=20, help=f"echo requests per trial, {INTERVAL} s apart")
    args = parser.parse_args()
    settings: dict[str, object] = {
        "port-guessing": not args.off,
        "port-guessing-sockets": args.sockets,
        "port-guessing-probes": args.probes,
        "port-guessing-rate": args.rate,
    }
    results: list[dict[str, Any]] = []
    lab = Lab.up(CUSTOM_PREFIX + f"{ROW},{COLUMN}")
    try:
        matrix.start_infra(lab, {"server": "teredonode", "relay": "teredonode"})
        for trial in range(args.trials):
            for src, dst in (("client1", "client2"), ("client2", "client1")):
                for host in ("client1", "client2"):
                    lab.stop_node(host)
                lab.set_nat_mode("nat1", ROW)
                lab.set_nat_mode("nat2", COLUMN)
                for host in ("client1", "client2"):
                    lab.start_teredonode(host, host, "client", settings)
                addresses = matrix.wait_addresses(lab, ("client1", "client2"))
                record: dict[str, Any] = {"trial": trial, "from": ROW if src == "client1" else COLUMN}
                srcAddr, dstAddr = addresses[src], addresses[dst]
                if srcAddr is None or dstAddr is None:
                    record["note"] = "not qualified"
                else:
                    ping = parse_ping(
                        lab.exec(
                            src,
                            ["ping", "-6", "-n", "-c", str(args.pings), "-i", f"{INTERVAL:g}", "-W", "2",
                             "-I", srcAddr, dstAddr],
                            timeout=args.pings * INTERVAL + 30,
                        ).stdout,
                        args.pings,
                    )
                    record["received"] = ping.received
                    if ping.rtts:
                        seq = min(ping.rtts)
                        record["first"] = round((seq - 1) * INTERVAL + ping.rtts[seq] / 1000.0, 3)
                    for host in ("client1", "client2"):
                        try:
                            record[host] = _pg(lab.node_status(host))
                        except Exception as e:  # a status that cannot be read spoils no trial
                            record[host] = str(e)
                print(json.dumps(record), flush=True)
                results.append(record)
    finally:
        for host in ("client1", "client2"):
            try:
                lab.stop_node(host)
            except Exception:
                pass
        lab.down()
    reached = [r for r in results if r.get("received")]
    firsts = [r["first"] for r in reached if "first" in r]
    summary = f"reached {len(reached)}/{len(results)}"
    if firsts:
        summary += f"; first reply median {statistics.median(firsts):.1f} s ({min(firsts):.1f}-{max(firsts):.1f} s)"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
