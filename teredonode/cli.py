# -*- test-case-name: tests.unit.test_cli -*-
"""
The C{teredo} command: operator tools that do not run a node.

    teredo status [--socket PATH] [--json]   what a running node reports
    teredo decode ADDR [--prefix P] [--json]  what a Teredo address holds
    teredo probe [SERVER ...] [--json]        the NAT kind, mapping and servers' answers
    teredo portmap [--protocol P] [--port N]  ask the router for a port mapping (or --delete)
    teredo lab ...                            the network lab (teredonode.lab.cli)

Every failure is one line on stderr and a non-zero exit status, never a traceback: the
command is used in scripts and by people reading a terminal, neither of which wants a stack.
Exit statuses: 0 success, 1 the thing asked about is unavailable (no node, no lab), 2 bad input
(a non-Teredo address, bad arguments, as argparse does).  C{TEREDO_DEBUG=1} in the environment
re-raises unexpected errors, for the developer chasing one.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import os
import sys
from typing import Any, Callable, Sequence, TextIO

import teredonode
from teredonode.config import DEFAULT_STATUS_SOCKET, ClientSettings
from teredonode.errors import TeredoError
from teredonode.status import StatusUnavailable, read_status
from teredonode.wire import ipv4
from teredonode.wire.address import (
    FLAG_G,
    FLAG_U,
    FLAG_Z,
    GLOBAL_PREFIX,
    TeredoAddress,
    prefix_from_text,
)
from teredonode.wire.errors import ParseError

__all__ = ["main", "decode_fields", "format_decode", "format_status"]

PROG = "teredo"


# --- decode -------------------------------------------------------------------------------


def decode_fields(address: TeredoAddress) -> dict[str, Any]:
    """
    Everything a Teredo address says, as plain JSON-able values (the C{--json} output).
    Numbers stay numbers (C{flags}, C{random-bits}); the text output shows them in hex.
    C{mapped-global} applies the RFC 4380 section 5.2.4 test with the hardening ranges, as
    relays do by default: "no" means relays will refuse to talk to this address.
    """
    flags = address.flags
    return {
        "address": str(address),
        "prefix": _prefix_text(address.prefix),
        "server": address.server,
        "flags": flags,
        "cone": address.cone,
        "random-bits": address.random_bits,
        "z": bool(flags & FLAG_Z),
        "u": bool(flags & FLAG_U),
        "g": bool(flags & FLAG_G),
        "mapped-ipv4": address.client,
        "mapped-port": address.port,
        "mapped-global": ipv4.is_global_unicast(address.client),
    }


def _prefix_text(prefix: bytes) -> str:
    """
    4 prefix bytes -> C{"2001::/32"}.
    """
    return str(ipaddress.IPv6Network((prefix + bytes(12), 32)))


def format_decode(fields: dict[str, Any]) -> str:
    """
    The human-readable C{teredo decode} output: aligned "Key : value" lines.
    """
    yes = {True: "yes", False: "no"}
    rows = [
        ("Teredo address", fields["address"]),
        ("Prefix", fields["prefix"]),
        ("Server IPv4", fields["server"]),
        ("Flags", f"0x{fields['flags']:04x}"),
        ("  Cone (C)", yes[fields["cone"]]),
        ("  Random bits (RFC 5991)", f"0x{fields['random-bits']:03x}"),
        ("  z / U / G", " / ".join(str(int(fields[k])) for k in ("z", "u", "g"))),
        ("Mapped IPv4", fields["mapped-ipv4"]),
        ("Mapped port", str(fields["mapped-port"])),
        ("Mapped IPv4 is global", yes[fields["mapped-global"]]),
    ]
    return _aligned(rows)


def _aligned(rows: Sequence[tuple[str, str]], indent: str = "") -> str:
    width = max((len(key) for key, _ in rows), default=0)
    return "\n".join(f"{indent}{key:<{width}} : {value}" for key, value in rows)


def _emit(out: TextIO, args: argparse.Namespace, document: dict[str, Any], text: Callable[[dict[str, Any]], str]) -> None:
    """
    A subcommand's result: C{document} as indented JSON with C{--json}, else C{text(document)}.
    """
    out.write((json.dumps(document, indent=2) if args.json else text(document)) + "\n")


def _decode(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        prefix = prefix_from_text(args.prefix) if args.prefix else GLOBAL_PREFIX
    except ParseError as e:
        return _fail(err, f"decode: --prefix {args.prefix}: {e.reason}", 2)
    try:
        address = TeredoAddress.parse(args.address, prefix=prefix)
    except ParseError as e:
        if e.reason == "not a teredo address":
            shown = _prefix_text(prefix)
            return _fail(err, f"decode: {args.address} is not a Teredo address (not in {shown})", 2)
        return _fail(err, f"decode: {args.address!r} is not an IPv6 address", 2)
    fields = decode_fields(address)
    _emit(out, args, fields, format_decode)
    return 0


# --- status -------------------------------------------------------------------------------


def _title(key: str) -> str:
    """
    C{"packets-in"} -> C{"Packets in"}: JSON keys to netsh-style labels.
    """
    words = key.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else key


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h {minutes:02d}m {secs:02d}s" if hours or days else f"{minutes}m {secs:02d}s"
    return f"{days}d {text}" if days else text


#: Sub-tables with a better heading than their key.
_HEADINGS = {"drops": "Drops by reason", "counters": "Counters"}


def _section(mapping: dict[str, Any], indent: str) -> list[str]:
    """
    One table: scalars and lists of scalars as aligned lines first, then nested tables as
    indented blocks under a heading, the way C{netsh ... show state} groups things.
    """
    rows: list[tuple[str, str]] = []
    nested: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)
        ):
            nested.append((key, value))
        elif isinstance(value, list):
            rows.append((_title(key), ", ".join(_scalar(v) for v in value) or "-"))
        elif key == "uptime" and isinstance(value, (int, float)):
            rows.append((_title(key), _duration(value)))
        else:
            rows.append((_title(key), _scalar(value)))
    lines = [_aligned(rows, indent)] if rows else []
    for key, value in nested:
        lines.append(f"{indent}{_HEADINGS.get(key, _title(key))}:")
        if isinstance(value, dict):
            lines.extend(_section(value, indent + "  ") if value else [f"{indent}  (none)"])
        else:
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    lines.append(f"{indent}  [{index}]")
                    lines.extend(_section(item, indent + "    "))
                else:
                    lines.append(f"{indent}  {_scalar(item)}")
    return lines


def format_status(document: dict[str, Any]) -> str:
    """
    The human-readable C{teredo status} output: one block per section (C{node} first).
    """
    order = ["node"] + [key for key in document if key != "node"]
    blocks = []
    for key in order:
        if key not in document:
            continue
        value = document[key]
        heading = "Teredo node" if key == "node" else f"Role {key}"
        if isinstance(value, dict):
            body = _section(value, "  ")
        else:
            body = [f"  {_scalar(value)}"]
        blocks.append("\n".join([heading] + body))
    return "\n\n".join(blocks)


def _status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        document = read_status(args.socket, timeout=args.timeout)
    except StatusUnavailable as e:
        return _fail(err, f"status: {e}", 1)
    _emit(out, args, document, format_status)
    return 0


# --- probe --------------------------------------------------------------------------------


def _probe_targets(args: argparse.Namespace) -> list[tuple[str, str]]:
    """
    C{SERVER} arguments (C{name} or C{primary,secondary}) -> resolved address pairs; with
    none, the C{[client] server} of C{--config}.
    """
    import socket

    from teredonode.config import load_config
    from teredonode.probe import secondary_of

    servers = list(args.servers)
    if not servers:
        try:
            config = load_config(args.config, roles="client")
        except TeredoError as e:
            raise TeredoError(f"probe: name a server, or fix the configuration: {e}") from None
        client = config.roles["client"]
        assert isinstance(client, ClientSettings)
        servers = [client.server + (f",{client.secondary}" if client.secondary else "")]
    targets = []
    for text in servers:
        names = text.split(",")
        if len(names) > 2 or not all(names):
            raise TeredoError(f"probe: {text!r}: expected SERVER or PRIMARY,SECONDARY")
        resolved = []
        for name in names:
            try:
                resolved.append(socket.gethostbyname(name))
            except (OSError, UnicodeError) as e:
                raise TeredoError(f"probe: cannot resolve {name!r}: {getattr(e, 'strerror', None) or e}") from None
        targets.append((resolved[0], resolved[1] if len(resolved) > 1 else secondary_of(resolved[0])))
    return targets


def _run_probe(targets: list[tuple[str, str]], timeout: float, attempts: int, upnp: bool) -> dict[str, Any]:
    """
    Run the probe on the global reactor (the command is a short-lived process).
    """
    from twisted.internet import reactor

    from teredonode.probe import probe

    report: dict[str, Any] = _runUntilFired(reactor, probe(reactor, targets, timeout, attempts, upnp))
    return report


def probe_command(args: argparse.Namespace, out: TextIO, err: TextIO, runner: Any = None) -> int:
    from teredonode.probe import format_probe

    if not args.timeout > 0 or not 1 <= args.attempts <= 10:
        return _fail(err, "probe: --timeout must be > 0 and --attempts 1..10", 2)
    targets = _probe_targets(args)
    try:
        report = (runner or _run_probe)(targets, args.timeout, args.attempts, not args.no_upnp)
    except OSError as e:
        return _fail(err, f"probe: {e.strerror or e}", 1)
    _emit(out, args, report, format_probe)
    return 0 if report["best"] is not None else 1


# --- portmap ------------------------------------------------------------------------------


def _runUntilFired(reactor: Any, d: Any) -> Any:
    """
    Run the global reactor until C{d} fires; its result, or its failure raised.
    """
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    d.addBoth(lambda _: reactor.stop())
    if not outcome:
        reactor.run(installSignalHandlers=False)
    result = outcome[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def _run_portmap(args: argparse.Namespace) -> Any:
    """
    Ask (or delete) the mapping on the global reactor: a Mapping (None after a deletion) and
    the PCP nonce it was made with, in hexadecimal, when PCP made it.
    """
    from twisted.internet import reactor

    from teredonode.portmap.base import default_gateway
    from teredonode.portmap.igd import SSDP_GROUP
    from teredonode.portmap.mappers import AutoMapper, PcpMapper, makeMapper
    from teredonode.probe import local_address

    gateway = args.gateway
    if gateway is None:
        try:
            with open("/proc/net/route", encoding="ascii", errors="replace") as table:
                gateway = default_gateway(table.read(65536))
        except OSError:
            gateway = None
    local = args.local or local_address(gateway or SSDP_GROUP)
    if local is None:
        raise TeredoError("portmap: no local IPv4 address (no route); give --local")
    mapper = makeMapper(reactor, args.protocol, gateway, bindAddress=local)
    pcps = [m for m in (mapper.mappers if isinstance(mapper, AutoMapper) else [mapper]) if isinstance(m, PcpMapper)]
    if args.delete:
        if args.nonce is not None:
            try:
                nonce = bytes.fromhex(args.nonce)
            except ValueError:
                raise TeredoError("portmap: --nonce is 24 hexadecimal digits") from None
            for pcp in pcps:
                pcp.setNonce(local, args.port, nonce)
        d = mapper.deleteMapping(local, args.port)
    else:
        d = mapper.addMapping(local, args.port, args.lifetime)
    result = _runUntilFired(reactor, d)
    nonces = [n for n in (pcp.nonceFor(local, args.port) for pcp in pcps) if n is not None]
    return result, (nonces[0].hex() if nonces else None)


def portmap_command(args: argparse.Namespace, out: TextIO, err: TextIO, runner: Any = None) -> int:
    """
    C{teredo portmap}: what the router grants, for an operator checking it before enabling
    RFC 6081's UPnP extension (docs/portmap.md).
    """
    from teredonode.portmap.base import PortMapError

    if not 0 < args.port <= 65535 or not 0 <= args.lifetime <= 0xFFFFFFFF:
        return _fail(err, "portmap: --port must be 1..65535 and --lifetime 0..4294967295", 2)
    try:
        mapping, nonce = (runner or _run_portmap)(args)
    except PortMapError as e:
        return _fail(err, f"portmap: {e}", 1)
    except OSError as e:
        return _fail(err, f"portmap: {e.strerror or e}", 1)
    if args.delete:
        fields = {"deleted": True, "port": args.port, "protocol": args.protocol}
        text = f"deleted the mapping of port {args.port} ({args.protocol})"
    else:
        fields = {
            "protocol": mapping.protocol,
            "external-address": mapping.externalAddress,
            "external-port": mapping.externalPort,
            "lifetime": mapping.lifetime,
        }
        life = f"{mapping.lifetime} s" if mapping.lifetime else "until deleted"
        text = f"{mapping.protocol}: {mapping.externalAddress}:{mapping.externalPort} -> port {args.port} ({life})"
        if nonce is not None:  # PCP deletes only with the mapping's nonce (RFC 6887 section 15)
            fields["pcp-nonce"] = nonce
            text += f"; delete with --delete --nonce {nonce}"
    _emit(out, args, fields, lambda _: text)
    return 0


# --- lab ----------------------------------------------------------------------------------


def _lab(argv: list[str], err: TextIO) -> int:
    """
    Hand over to C{teredonode.lab.cli.main}, imported only now: the lab pulls in tools an
    operator's install may not have, and must never slow down or break the other commands.
    """
    try:
        module = importlib.import_module("teredonode.lab.cli")
    except ModuleNotFoundError as e:
        if e.name in ("teredonode.lab", "teredonode.lab.cli"):
            return _fail(err, "lab: the network lab is not available in this installation", 1)
        raise
    try:
        result = module.main(argv)
    except SystemExit as e:  # the lab's own argparse, --help
        return e.code if isinstance(e.code, int) else (0 if e.code is None else _fail(err, f"lab: {e.code}", 1))
    return int(result or 0)


# --- main ---------------------------------------------------------------------------------


def _fail(err: TextIO, message: str, code: int) -> int:
    err.write(f"{PROG} {message}\n")
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Teredo (RFC 4380) node tools."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {teredonode.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    status = commands.add_parser("status", help="show what a running node reports")
    status.add_argument(
        "--socket",
        default=os.environ.get("TEREDO_STATUS_SOCKET", DEFAULT_STATUS_SOCKET),
        help="the node's status socket ([node] status-socket; default %(default)s)",
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON document")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")

    decode = commands.add_parser("decode", help="show what a Teredo address holds")
    decode.add_argument("address", metavar="ADDR", help="an IPv6 address in the Teredo prefix")
    decode.add_argument("--prefix", help="the Teredo prefix, if not 2001::/32")
    decode.add_argument("--json", action="store_true", help="print JSON")

    probe = commands.add_parser(
        "probe", help="qualify against Teredo servers (no interface configured) and report the NAT"
    )
    probe.add_argument(
        "servers", nargs="*", metavar="SERVER",
        help="a server name or address, or PRIMARY,SECONDARY (default: [client] server of --config)",
    )
    probe.add_argument("--config", default="/etc/teredonode/teredo.toml", help="for the default server")
    probe.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each answer (default 2)")
    probe.add_argument("--attempts", type=int, default=2, help="solicitations per step (default 2)")
    probe.add_argument("--no-upnp", action="store_true", help="do not send the SSDP search for an UPnP gateway on the LAN")
    probe.add_argument("--json", action="store_true", help="print JSON")

    portmap = commands.add_parser("portmap", help="ask the router for a UDP port mapping (PCP, NAT-PMP, UPnP)")
    portmap.add_argument(
        "--protocol", choices=("auto", "pcp", "natpmp", "upnp"), default="auto",
        help="which protocol (default auto: PCP, then NAT-PMP, then UPnP)",
    )
    portmap.add_argument("--port", type=int, default=3544, help="the local UDP port to map (default 3544)")
    portmap.add_argument("--lifetime", type=int, default=3600, help="seconds asked of PCP/NAT-PMP (default 3600)")
    portmap.add_argument("--delete", action="store_true", help="delete the mapping instead")
    portmap.add_argument("--nonce", help="with --delete: the PCP nonce the mapping was made with (printed then)")
    portmap.add_argument("--gateway", help="the router (default: the default route's gateway)")
    portmap.add_argument("--local", help="the local IPv4 address to map (default: the one toward the router)")
    portmap.add_argument("--json", action="store_true", help="print JSON")

    commands.add_parser("lab", help="build and drive the network lab (teredo lab --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """
    Run the C{teredo} command; returns the exit status.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        if args_list and args_list[0] == "lab":
            # Everything after "lab" is the lab's own command line, options included.
            return _lab(args_list[1:], err)
        parser = build_parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit as e:  # argparse: --help, --version, or a usage error
            return int(e.code) if isinstance(e.code, int) else 2
        if args.command == "status":
            return _status(args, out, err)
        if args.command == "probe":
            return probe_command(args, out, err)
        if args.command == "portmap":
            return portmap_command(args, out, err)
        return _decode(args, out, err)
    except TeredoError as e:
        return _fail(err, str(e), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:
        if os.environ.get("TEREDO_DEBUG"):
            raise
        return _fail(err, f"internal error: {type(e).__name__}: {e} (TEREDO_DEBUG=1 shows details)", 1)


def run() -> None:
    """
    C{python -m teredonode.cli}.
    """
    sys.exit(main())


if __name__ == "__main__":
    run()
