"""
C{teredo lab ...}: the lab's command line.

    teredo lab up [--scenario NAME | --nat KIND,...]
    teredo lab down [--lab NAME | --all]
    teredo lab status [--lab NAME]
    teredo lab exec [--lab NAME] HOST -- CMD ...
    teredo lab demo [--with-miredo ROLE,...] [--scenario NAME | --nat KIND,...]
    teredo lab matrix [--quick] [--kinds KIND,...] [--with-miredo ROLE,...] [--json] [--write-doc PATH] [--from-json PATH] [--port-guessing]

C{--nat KIND,...} builds one client behind each NAT kind given (scenario C{nat:KIND,...}).

The top-level C{teredo} command calls L{main} with the arguments after C{lab}; for development
C{python -m teredonode.lab.cli ...} does the same.  Errors are one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from teredonode.errors import LabError
from teredonode.lab.proc import in_ns
from teredonode.lab.lab import Lab, destroy, find_lab, preflight
from teredonode.lab.nat import NAT_MODES
from teredonode.lab.scenario import CUSTOM_PREFIX, SCENARIOS
from teredonode.lab.state import recorded_labs, state_dir
from teredonode.lab.topology import existing_namespaces


_NAT_HELP = f"one client behind each NAT kind given, instead of a scenario; kinds: {', '.join(NAT_MODES)}"


def scenario_of(args: argparse.Namespace) -> str:
    """
    The scenario name C{up} and C{demo} build: C{--nat} wins over C{--scenario}.
    """
    if args.nat:
        return CUSTOM_PREFIX + str(args.nat)
    return str(args.scenario)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teredo lab", description="Teredo network lab (root only)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab and leave it running")
    up.add_argument("--scenario", default="default", help=f"one of: {', '.join(SCENARIOS)}")
    up.add_argument("--nat", metavar="KIND,...", help=_NAT_HELP)
    down = sub.add_parser("down", help="remove a lab (default: the newest one)")
    down.add_argument("--lab", help="lab name (prefix), as printed by 'up'")
    down.add_argument("--all", action="store_true", help="remove every recorded lab")
    status = sub.add_parser("status", help="show recorded labs, hosts and nodes")
    status.add_argument("--lab", help="lab name (prefix)")
    ex = sub.add_parser("exec", help="run a command on a lab host")
    ex.add_argument("--lab", help="lab name (prefix)")
    ex.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    demo = sub.add_parser("demo", help="build, start every role, ping every path, tear down")
    demo.add_argument("--with-miredo", default="", metavar="ROLE,...", help="use Miredo for these roles (server, relay, client)")
    demo.add_argument("--scenario", default="default")
    demo.add_argument("--nat", metavar="KIND,...", help=_NAT_HELP)
    demo.add_argument("--keep", action="store_true", help="leave the lab up afterwards (debugging)")
    matrix = sub.add_parser("matrix", help="RFC 6081 Figure 1 measured: every source NAT kind x destination kind")
    matrix.add_argument("--quick", action="store_true", help="only cone, port-restricted, port-preserving symmetric, port-symmetric (CI)")
    matrix.add_argument("--kinds", metavar="KIND,...", help="the Figure 1 kinds to measure (default: all nine)")
    matrix.add_argument("--with-miredo", default="", metavar="ROLE,...", help="client: measure Miredo clients too; server, relay: Miredo plays them")
    matrix.add_argument("--json", action="store_true", help="the result as JSON on stdout (progress on stderr)")
    matrix.add_argument("--write-doc", metavar="PATH", help="put the measured tables between the matrix markers of PATH")
    matrix.add_argument("--max-seconds", type=float, help="start no measurement after this long (default 240 with --quick, else 1800)")
    matrix.add_argument("--from-json", metavar="PATH", help="measure nothing: render (and --write-doc) a result saved with --json")
    matrix.add_argument(
        "--port-guessing", action="store_true",
        help="measure the cells our clients did not reach once more with port-guessing = true (beyond RFC 6081; reported apart, never a failure)",
    )
    return parser


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """
    Make SIGTERM behave like Ctrl-C while we build or demo, so the same cleanup runs.
    """
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_up(args: argparse.Namespace) -> int:
    with _sigterm_as_interrupt():
        lab = Lab.up(scenario_of(args))
    print(f"lab {lab.prefix} is up (scenario {scenario_of(args)}); state in {lab.state.path}")
    _print_hosts(lab)
    print(f"remove it with: teredo lab down --lab {lab.prefix}")
    return 0


def _print_hosts(lab: Lab) -> None:
    for name, host in lab.plan.hosts.items():
        addrs = ", ".join((*host.ipv4, *host.ipv6)) or "-"
        extra = f"  [NAT {host.nat_mode}]" if host.kind == "nat" else ""
        if host.behind:
            extra = f"  [behind {host.behind}]"
        print(f"  {name:<9} {lab.ns(name):<16} {addrs}{extra}")


def _cmd_down(args: argparse.Namespace) -> int:
    preflight_root()
    targets = recorded_labs() if args.all else [find_lab(args.lab)]
    for state in targets:
        destroy(state)
        print(f"lab {state.prefix} removed")
    if args.all and not targets:
        print("no lab recorded")
    return 0


def preflight_root() -> None:
    """
    Commands that touch namespaces need root; C{status} only reads files and does not.
    """
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nftables, TUN devices)")


def _cmd_status(args: argparse.Namespace) -> int:
    labs = [find_lab(args.lab)] if args.lab else recorded_labs()
    if not labs:
        print(f"no lab recorded under {state_dir()}")
        return 0
    present = existing_namespaces()
    for state in labs:
        lab = Lab.attach(state)
        alive = sum(ns in present for ns in state.namespaces)
        print(f"lab {state.prefix}: scenario {state.scenario}, {alive}/{len(state.namespaces)} namespaces present, state {state.path}")
        _print_hosts(lab)
        for name, record in state.processes.items():
            running = _pid_alive(record.pid)
            print(f"  node {name:<10} on {record.ns:<16} pid {record.pid:<7} {'running' if running else 'exited'}  log {record.log}")
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _cmd_exec(args: argparse.Namespace) -> int:
    preflight_root()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("exec: no command given (teredo lab exec HOST -- CMD ...)")
    lab = Lab.attach(find_lab(args.lab))
    try:
        return subprocess.run(in_ns(lab.ns(args.host), cmd), timeout=args.timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        raise LabError(f"exec: timed out after {args.timeout:g}s") from None
    except FileNotFoundError:
        raise LabError("exec: ip not found") from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from teredonode.lab.demo import run_demo

    roles = [r.strip() for r in args.with_miredo.split(",") if r.strip()]
    with _sigterm_as_interrupt():
        return run_demo(scenario=scenario_of(args), miredo_roles=roles, keep=args.keep)


def _cmd_matrix(args: argparse.Namespace) -> int:
    from teredonode.lab.matrix import run_cli

    roles = [r.strip() for r in args.with_miredo.split(",") if r.strip()]
    with _sigterm_as_interrupt():
        return run_cli(
            quick=args.quick,
            kinds_text=args.kinds,
            miredo_roles=roles,
            as_json=args.json,
            doc=args.write_doc,
            max_seconds=args.max_seconds,
            from_json=args.from_json,
            port_guessing=args.port_guessing,
        )


COMMANDS = {
    "up": _cmd_up, "down": _cmd_down, "status": _cmd_status, "exec": _cmd_exec, "demo": _cmd_demo, "matrix": _cmd_matrix,
}


def main(argv: list[str]) -> int:
    """
    Run C{teredo lab <argv>}; return the exit status.
    """
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LabError as e:
        print(f"teredo lab: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Output piped into e.g. "head": not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("teredo lab: interrupted (everything the lab made was removed)", file=sys.stderr)
        return 130


__all__ = ["main", "preflight"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
