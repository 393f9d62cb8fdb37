#!/usr/bin/env python3
"""
Fuzz every role of teredonode on real sockets in the lab, and check it survives.

    sudo python3 benchmarks/fuzz.py                       # 1 000 000 datagrams per role
    sudo python3 benchmarks/fuzz.py --count 100000 --roles server,client
    sudo python3 benchmarks/fuzz.py --rate 5000           # offered datagrams per second

One lab (the C{default} scenario: our server, relay, two clients, host-specific relay), then
for each role a fuzzer host sends random bytes and structure-aware mutations of every
message kind (L{teredonode.lab.fuzz}; the run and checks: L{teredonode.lab.fuzzrun}),
paced at C{--rate} and bounded by C{--count} and C{--max-seconds}.  After each role it
prints: datagrams sent, rate, datagrams the node received and the kernel's receive-buffer
drops, RSS before and after, drops by reason, the accounting (inputs == drops + other
outcomes), what the node sent in answer, and whether a fresh legitimate client qualifies and
every lab path still pings.  Exit status 0 only when every role passes: alive with no
traceback in its log, RSS growth < 50 MiB, every datagram accounted for, legitimate traffic
works.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from teredonode.lab.fuzz import DEFAULT_RATE  # noqa: E402
from teredonode.lab.fuzzrun import ROLES, fuzz_role, start_nodes  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="datagrams per role")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="datagrams per second offered")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="sending time limit per role")
    parser.add_argument("--roles", default=",".join(ROLES), help="comma-separated, from " + ", ".join(ROLES))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        print(f"fuzz: unknown role {unknown[0]!r} (roles: {', '.join(ROLES)})", file=sys.stderr)
        return 2

    from teredonode.errors import LabError
    from teredonode.lab.lab import Lab

    try:
        lab = Lab.up("default")
    except LabError as e:
        print(f"fuzz: {e}", file=sys.stderr)
        return 1
    ok = True
    t0 = time.monotonic()
    try:
        start_nodes(lab)
        print(f"lab {lab.prefix} up, nodes ready in {time.monotonic() - t0:.1f} s; "
              f"{args.count} datagrams per role at {args.rate:g}/s")
        for i, role in enumerate(roles):
            report = fuzz_role(lab, role, args.count, args.rate, seed=args.seed + i, max_seconds=args.max_seconds)
            print("\n".join(report.lines()), flush=True)
            ok = ok and report.ok
    finally:
        lab.down()
    print(f"total {time.monotonic() - t0:.0f} s: {'every role passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
