# -*- test-case-name: tests.unit.test_config -*-
"""
The configuration file: TOML in, validated, typed, immutable settings out.

One table per role (C{[server]}, C{[client]}, C{[relay]}, C{[host-relay]}) plus C{[node]} for
what the roles share.  Everything an operator can get wrong is checked here, once, before a
single socket is opened, and reported as a L{ConfigError} whose message is one line naming the
file, the table and the key::

    etc/x.toml: [server] primary: "1.2.3" is not an IPv4 address

That message is what C{twistd -n teredo} prints, so it has to stand on its own.

The schema is declarative (a tuple of L{_Key} per table) so that validation, defaults, the
sample file C{etc/teredo.toml} and C{docs/config.md} can be checked against one list: a test
asserts the sample mentions every key.

Precedence, lowest first: built-in defaults, the file, command-line overrides.  A role runs when
its table says C{enabled = true}, unless an explicit role list (C{--role a,b}) is given, which
replaces the file's choice entirely.  Tables of roles that do not run are still type-checked
(a typo should not wait for the day the role is switched on) but their required keys are not.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

from teredonode.errors import ConfigError
from teredonode.roles import ROLE_MODULES
from teredonode.wire import ipv4
from teredonode.wire.address import prefix_from_text
from teredonode.wire.errors import ParseError

__all__ = [
    "ROLE_NAMES",
    "LOG_LEVELS",
    "DEFAULT_STATUS_SOCKET",
    "NodeSettings",
    "ServerSettings",
    "ClientSettings",
    "RelaySettings",
    "HostRelaySettings",
    "NodeConfig",
    "SCHEMA",
    "OVERRIDES",
    "load_config",
    "parse_config",
    "parse_roles",
]

#: Role names, as in config table names and C{--role}, in the order the node starts them.
ROLE_NAMES: tuple[str, ...] = tuple(ROLE_MODULES)
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error", "critical")
DEFAULT_STATUS_SOCKET = "/run/teredonode/status.sock"
DEFAULT_STATE_DIR = "/var/lib/teredonode"
#: Where "no --config" errors say they come from.
NO_FILE = "(no config file)"


class _Invalid(Exception):
    """
    Raised by a validator: the message describes the value, the caller adds the location.
    """


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a key that an enabled role must set.
REQUIRED: Any = _Required()


# --- validators: (value) -> converted value, or _Invalid -------------------------------


def _show(value: Any) -> str:
    """
    How a bad value is quoted in a message: TOML-ish, and never more than one line.
    """
    if isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = "an array"
    else:
        text = repr(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= 80 else text[:77] + "..."


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"{_show(value)} is not a boolean (true or false)")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{_show(value)} is not a string")
    if not value or "\x00" in value or "\n" in value:
        raise _Invalid(f"{_show(value)} is not a usable string (empty, or has NUL or newline)")
    return value


def _path(value: Any) -> str:
    text = _string(value)
    if not text.startswith("/"):
        raise _Invalid(f"{_show(value)} is not an absolute path")
    return text


def _account(kind: str) -> Callable[[Any], str]:
    """
    A user or group name (or number) to run as; empty means "do not switch".  Whether it
    exists is checked when the node starts, on the host it runs on.
    """

    def check(value: Any) -> str:
        if value == "":
            return ""
        text = _string(value)
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?", text):
            raise _Invalid(f"{_show(value)} is not a {kind} name or number")
        return text

    return check


def _socket_path(value: Any) -> str:
    text = _path(value)
    # sun_path is 108 bytes on Linux, including the terminating NUL.
    if len(text.encode("utf-8")) > 107:
        raise _Invalid(f"{_show(value)} is too long for a UNIX socket path (107 bytes at most)")
    return text


def _listen_address(value: Any) -> str:
    """
    C{"host:port"} (C{"[v6]:port"} for IPv6) to listen on, or C{""} for off.
    """
    if value == "":
        return ""
    text = _string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
        raise _Invalid(f"{_show(value)} is not host:port (e.g. \"127.0.0.1:9544\")")
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        raise _Invalid(f"{_show(value)}: {_show(host)} is not an IP address") from None
    return text


def _integer(low: int, high: int, what: str = "") -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"{_show(value)} is not an integer")
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range ({what or 'allowed'}: {low}..{high})")
        return value

    return check


_port = _integer(0, 65535, "port")


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"{_show(value)} is not a number")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise _Invalid(f"{_show(value)} is not a positive rate")
    return number


def _ipv4(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{_show(value)} is not an IPv4 address (a string such as \"192.0.2.1\")")
    try:
        raw = ipv4.pack(value)
    except ParseError:
        raise _Invalid(f"{_show(value)} is not an IPv4 address") from None
    return ipv4.unpack(raw)  # canonical: no leading zeros


def _unicast_ipv4(value: Any) -> str:
    """
    A Teredo server's own address must be a global unicast one (RFC 4380 section 5.3):
    clients embed it in their addresses and relays send to it.
    """
    text = _ipv4(value)
    if not ipv4.is_global_unicast(text):
        raise _Invalid(f"{_show(value)} is not a global unicast IPv4 address (RFC 4380 5.2.4)")
    return text


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _host(value: Any) -> str:
    """
    An IPv4 address or a DNS name (RFC 1123 host name syntax, resolved when the role starts).
    Something that looks numeric but is not a valid dotted quad ("1.2.3") is an address typo,
    not a name: a top-level label is never all digits.
    """
    if not isinstance(value, str):
        raise _Invalid(f"{_show(value)} is not an IPv4 address or DNS name")
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if labels and labels[-1].isdigit():
        return _ipv4(value)
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _Invalid(f"{_show(value)} is not an IPv4 address or DNS name")
    return name.lower()


def _prefix(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{_show(value)} is not an IPv6 prefix (a string such as \"2001::/32\")")
    try:
        prefix_from_text(value)
    except ParseError as e:
        raise _Invalid(f"{_show(value)} is not a Teredo prefix ({e.reason})") from None
    return str(ipaddress.IPv6Network(value.strip()))


_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _networks(value: Any) -> tuple[str, ...]:
    """
    A non-empty array of IPv6 prefixes (any length), canonical text out.
    """
    if not isinstance(value, list) or not value:
        raise _Invalid(f"{_show(value)} is not a non-empty array of IPv6 prefixes")
    out = []
    for item in value:
        try:
            if not isinstance(item, str):
                raise ValueError
            out.append(str(ipaddress.IPv6Network(item.strip())))
        except ValueError:
            raise _Invalid(f"{_show(item)} is not an IPv6 prefix (such as \"2000::/3\")") from None
    return tuple(out)


def _ifname(value: Any) -> str:
    """
    Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no slash or blank.
    """
    if not isinstance(value, str) or not _IFNAME.match(value) or value in (".", ".."):
        raise _Invalid(f"{_show(value)} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")
    return value


def _optional_ifname(value: Any) -> str:
    """
    An interface name, or the empty string for "none".
    """
    if value == "":
        return ""
    return _ifname(value)


def _lan_address(value: Any) -> str:
    """
    The LAN interface for local client discovery (RFC 4380 section 5.2.8): its IPv4 address,
    optionally with the subnet's prefix length ("192.168.1.10/24"), or "" to let the
    client choose (the C{bind} address, else the kernel's default interface).  With a
    prefix length the subnet check on discovery bubbles is exact; without one it falls
    back to "private source address".
    """
    if value == "":
        return ""
    if not isinstance(value, str):
        raise _Invalid(f"{_show(value)} is not an IPv4 address (optionally /prefix-length) or \"\"")
    address, slash, length = value.partition("/")
    text = _ipv4(address)
    if text == "0.0.0.0" or ipaddress.IPv4Address(text).is_multicast:
        raise _Invalid(f"{_show(value)} is not a unicast interface address")
    if not slash:
        return text
    if not length.isdigit() or not 1 <= int(length) <= 32:
        raise _Invalid(f"{_show(value)} has a bad prefix length (1..32)")
    return f"{text}/{int(length)}"


def _default_route(value: Any) -> str | bool:
    """
    C{"auto"} (a default route only when the host has no other IPv6, RFC 4380 section 5.5),
    or a boolean forcing it on or off.
    """
    if isinstance(value, bool):
        return value
    if value == "auto":
        return "auto"
    raise _Invalid(f"{_show(value)} is not \"auto\", true or false")


def _fast_path(value: Any) -> str:
    """
    The server's XDP fast path (teredonode.fastpath): C{"auto"}, C{"on"} or C{"off"}.
    """
    if value in ("auto", "on", "off"):
        return str(value)
    raise _Invalid(f"{_show(value)} is not \"auto\", \"on\" or \"off\"")


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise _Invalid(f"{_show(value)} is not a log level ({', '.join(LOG_LEVELS)})")
    return value.lower()


def _mode(value: Any) -> int:
    """
    A file mode, written as a string of octal digits ("0660"): TOML has octal integers
    (0o660) too, and both are accepted, but a decimal 660 is almost surely a mistake.
    """
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        return int(value, 8)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    raise _Invalid(f"{_show(value)} is not a file mode (a string of octal digits such as \"0660\")")


def _secret(value: Any) -> str:
    """
    The shared secret of secure qualification (RFC 4380 section 5.2.1 / Authentication): any
    non-empty string, used as UTF-8 bytes, at most 255 bytes (the AU-len field is one byte).
    Messages never quote it: error lines end up in logs.
    """
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _Invalid("must be a non-empty string (value not shown)")
    if len(value.encode("utf-8")) > 255:
        raise _Invalid("is longer than 255 bytes (value not shown)")
    return value


def _client_id(value: Any) -> str:
    """
    The client identifier sent in the authentication indicator: at most 255 bytes (ID-len).
    """
    text = _string(value)
    if len(text.encode("utf-8")) > 255:
        raise _Invalid(f"{_show(value)} is longer than 255 bytes")
    return text


def _client_secrets(value: Any) -> tuple[tuple[str, str, float | None], ...]:
    """
    The server's table of secure-qualification clients: C{id = "secret"} or
    C{id = { secret = "...", expires = 2027-01-01T00:00:00Z }}.  After C{expires} (a TOML
    date-time, UTC when it has no offset) the server still answers but sets the confirmation
    byte, telling the client to get a new key (RFC 4380 section 5.2.2).
    """
    if not isinstance(value, dict):
        raise _Invalid("must be a table of client-id = secret")
    out = []
    for cid, entry in value.items():
        _client_id(cid)
        expires: float | None = None
        if isinstance(entry, dict):
            unknown = set(entry) - {"secret", "expires"}
            if unknown or "secret" not in entry:
                raise _Invalid(f"client {_show(cid)}: needs secret and optionally expires")
            when = entry.get("expires")
            if when is not None:
                if not isinstance(when, datetime.datetime):
                    raise _Invalid(f"client {_show(cid)}: expires must be a TOML date-time")
                if when.tzinfo is None:
                    when = when.replace(tzinfo=datetime.timezone.utc)
                expires = when.timestamp()
            entry = entry["secret"]
        try:
            secret = _secret(entry)
        except _Invalid as e:
            raise _Invalid(f"client {_show(cid)}: secret {e}") from None
        out.append((cid, secret, expires))
    return tuple(out)


def _route_table(value: Any) -> int:
    """
    A kernel routing table number for the relay's health route, or 0 for none; never the
    tables the kernel itself uses (253 default, 254 main, 255 local).
    """
    table = _integer(0, 0xFFFFFFFF, "table")(value)
    if table in (253, 254, 255):
        raise _Invalid(f"{table} is a kernel table (default, main, local); use another number")
    return table


# --- the schema -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """
    One configuration key: its TOML name, the dataclass field it fills, how it is checked, its
    default (L{REQUIRED}, C{None} for "derived or unset", or a value), and its one-line doc.
    """

    name: str
    check: Callable[[Any], Any]
    default: Any
    doc: str

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


_ENABLED = _Key("enabled", _boolean, False, "Run this role (unless --role says otherwise).")

#: Every table and its keys, in documentation order.  A key's default of C{None} means the
#: setting is derived from others or simply absent; the docs say which.
SCHEMA: Mapping[str, tuple[_Key, ...]] = MappingProxyType(
    {
        "node": (
            _Key("state-dir", _path, DEFAULT_STATE_DIR, "Directory for state kept across restarts."),
            _Key("status-socket", _socket_path, DEFAULT_STATUS_SOCKET, "UNIX socket serving status JSON."),
            _Key("status-mode", _mode, 0o660, "Permissions of the status socket."),
            _Key("log-level", _log_level, "info", "Least severe level logged by teredonode."),
            _Key("user", _account("user"), "", "User to run as once sockets and TUN are open."),
            _Key("group", _account("group"), "", "Group to run as; default the user's group."),
            _Key("metrics", _listen_address, "", "Prometheus endpoint host:port; empty: off."),
        ),
        "server": (
            _ENABLED,
            _Key("primary", _unicast_ipv4, REQUIRED, "Primary IPv4 address (clients' server)."),
            _Key("secondary", _unicast_ipv4, None, "Secondary IPv4 address; default primary + 1."),
            _Key("prefix", _prefix, "2001::/32", "Teredo service prefix advertised (a /32)."),
            _Key("mtu", _integer(1280, 65535, "MTU"), 1280, "MTU option sent in Router Advertisements."),
            _Key("max-payload", _integer(0, 65535, "bytes"), 88, "Largest IPv6 payload relayed (non-bubbles)."),
            _Key("interface", _optional_ifname, "teredo-srv", "TUN to native IPv6 for echo tests; empty: none."),
            _Key("secure", _boolean, False, "Require secure qualification (RFC 4380 5.2.2)."),
            _Key("clients", _client_secrets, (), "Secure qualification: client id -> secret."),
            _Key("accept-unknown-clients", _boolean, False, "Secure mode: answer unknown client ids (RFC 4380 behaviour)."),
            _Key("rs-rate", _rate, 0.5, "Router Solicitations per second per source address."),
            _Key("rs-burst", _integer(1, 1_000_000), 10, "Router Solicitations a source may save up."),
            _Key("rs-initial", _integer(0, 1_000_000), 4, "Tokens of a source seen for the first time."),
            _Key("rs-limit-prefix", _integer(24, 32, "prefix length"), 32, "Source bits keying the RS limit: 32 or 24."),
            _Key("ra-rate", _rate, 10000.0, "Router Advertisements per second, all sources together."),
            _Key("ra-burst", _integer(1, 1_000_000), 2000, "Router Advertisements the global budget saves up."),
            _Key("forward-rate", _rate, 50.0, "Packets per second relayed per source address."),
            _Key("forward-burst", _integer(1, 1_000_000), 20, "Packets a source may save up for relaying."),
            _Key("max-sources", _integer(16, 10_000_000), 65536, "Sources tracked by each limiter."),
            _Key("hardened", _boolean, True, "Also refuse post-RFC 4380 non-global IPv4 ranges."),
            _Key("fast-path", _fast_path, "auto", "Answer plain RSs in the kernel (XDP): auto, on, off."),
        ),
        "client": (
            _ENABLED,
            _Key("server", _host, REQUIRED, "Teredo server: IPv4 address or DNS name."),
            _Key("secondary", _ipv4, None, "Server's secondary IPv4; default server + 1."),
            _Key("interface", _ifname, "teredo", "TUN interface name."),
            _Key("bind", _ipv4, "0.0.0.0", "Local IPv4 address of the service port."),
            _Key("port", _port, 0, "UDP service port; 0 picks a random one."),
            _Key("refresh", _integer(10, 3600, "seconds"), 30, "Seconds between maintenance RSs."),
            _Key("client-id", _client_id, None, "Secure qualification: client identifier."),
            _Key("secret", _secret, None, "Secure qualification: shared secret."),
            _Key("max-peers", _integer(1, 10_000_000), 1024, "Peer list entries kept."),
            _Key("peer-queue", _integer(0, 1024, "packets"), 8, "Packets queued per untrusted peer."),
            _Key("peer-queue-bytes", _integer(0, 1_048_576, "bytes"), 10240, "Bytes queued per untrusted peer."),
            _Key("default-route", _default_route, "auto", "Default IPv6 route via Teredo: auto, true, false."),
            _Key("allow-symmetric", _boolean, False, "Stay online behind a symmetric NAT (usually useless)."),
            _Key("local-discovery", _boolean, True, "Find Teredo peers behind the same NAT (224.0.0.253)."),
            _Key("local-discovery-address", _lan_address, "", "LAN interface address[/len] for discovery; \"\": auto."),
            _Key("inbound-probe-rate", _rate, 5.0, "Echo tests/answers per second that incoming traffic may trigger."),
            _Key("inbound-probe-burst", _integer(1, 1_000_000), 20, "Token bucket depth of inbound-probe-rate."),
        ),
        "relay": (
            _ENABLED,
            _Key("interface", _ifname, "teredo-relay", "TUN interface name."),
            _Key("bind", _ipv4, "0.0.0.0", "Local IPv4 address of the relay's UDP port."),
            _Key("port", _port, 3544, "UDP port; 0 picks a random one."),
            _Key("prefix", _prefix, "2001::/32", "Teredo prefix routed to the relay."),
            _Key("serve", _networks, ("2000::/3",), "Native IPv6 ranges served (others dropped)."),
            _Key("max-peers", _integer(1, 10_000_000), 1_048_576, "Peer list entries kept (LRU)."),
            _Key("peer-queue", _integer(0, 1024, "packets"), 8, "Packets queued per untrusted peer."),
            _Key("peer-queue-bytes", _integer(0, 1_048_576, "bytes"), 1280, "Bytes queued per untrusted peer."),
            _Key("icmp-rate", _rate, 10.0, "ICMPv6 errors sent per second."),
            _Key("hardened", _boolean, True, "Also refuse post-RFC 4380 non-global IPv4 ranges."),
            _Key("health-table", _route_table, 0, "Kernel table of the health route BGP announces; 0: off."),
            _Key("health-interval", _integer(1, 60, "seconds"), 1, "Seconds between health route refreshes."),
            _Key("health-lifetime", _integer(2, 600, "seconds"), 3, "Seconds the health route outlives a hung relay."),
            _Key("drain-time", _integer(0, 600, "seconds"), 5, "Seconds relaying on after withdrawing, when stopped."),
            _Key("direct-bubbles", _boolean, False, "Also bubble clients directly (only behind a non-cone NAT)."),
            _Key("bubble-rate-per-ipv4", _rate, 2.0, "Bubble rounds per second toward one embedded IPv4."),
            _Key("bubble-burst-per-ipv4", _integer(1, 1_000_000), 8, "Token bucket depth of bubble-rate-per-ipv4."),
            _Key("bubble-rate-per-server", _rate, 50.0, "Bubble rounds per second through one embedded server IPv4."),
            _Key("bubble-burst-per-server", _integer(1, 1_000_000), 100, "Token bucket depth of bubble-rate-per-server."),
            _Key("bubble-rate", _rate, 1000.0, "Bubble rounds per second in all."),
            _Key("bubble-burst", _integer(1, 10_000_000), 2000, "Token bucket depth of bubble-rate."),
        ),
        "host-relay": (
            _ENABLED,
            _Key("interface", _ifname, "teredo-hr", "TUN interface name."),
            _Key("bind", _ipv4, "0.0.0.0", "Local IPv4 address of the UDP port."),
            _Key("port", _port, 0, "UDP port; 0 picks a random one."),
            _Key("prefix", _prefix, "2001::/32", "Teredo prefix routed to the host-specific relay."),
            _Key("max-peers", _integer(1, 10_000_000), 1024, "Peer list entries kept (LRU)."),
            _Key("peer-queue", _integer(0, 1024, "packets"), 8, "Packets queued per untrusted peer."),
            _Key("peer-queue-bytes", _integer(0, 1_048_576, "bytes"), 10240, "Bytes queued per untrusted peer."),
            _Key("icmp-rate", _rate, 10.0, "ICMPv6 errors sent per second."),
            _Key("direct-bubbles", _boolean, True, "Also bubble clients directly (for a host behind a NAT)."),
            _Key("bubble-rate-per-ipv4", _rate, 2.0, "Bubble rounds per second toward one embedded IPv4."),
            _Key("bubble-burst-per-ipv4", _integer(1, 1_000_000), 8, "Token bucket depth of bubble-rate-per-ipv4."),
            _Key("bubble-rate-per-server", _rate, 10.0, "Bubble rounds per second through one embedded server IPv4."),
            _Key("bubble-burst-per-server", _integer(1, 1_000_000), 20, "Token bucket depth of bubble-rate-per-server."),
            _Key("bubble-rate", _rate, 50.0, "Bubble rounds per second in all."),
            _Key("bubble-burst", _integer(1, 10_000_000), 100, "Token bucket depth of bubble-rate."),
        ),
    }
)

#: Keys that no longer exist, and the one line that says what to use instead.
RENAMED: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        ("server", "burst"): "replaced by rs-burst (Router Solicitations) and forward-burst (relayed packets)",
    }
)

#: Command-line overrides: option name -> (table, key).  Applied on top of the file, then
#: validated like the file, so "--primary 1.2.3" fails exactly as "primary = '1.2.3'" would.
OVERRIDES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "status-socket": ("node", "status-socket"),
        "state-dir": ("node", "state-dir"),
        "log-level": ("node", "log-level"),
        "primary": ("server", "primary"),
        "secondary": ("server", "secondary"),
        "server": ("client", "server"),
        "client-port": ("client", "port"),
        "client-interface": ("client", "interface"),
        "relay-port": ("relay", "port"),
        "relay-bind": ("relay", "bind"),
        "relay-interface": ("relay", "interface"),
        "host-relay-port": ("host-relay", "port"),
        "host-relay-interface": ("host-relay", "interface"),
    }
)

#: The roles that own a TUN interface; C{--interface} names the interface of the one running.
TUNNEL_ROLES: tuple[str, ...] = ("client", "relay", "host-relay")


# --- the settings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """
    The C{[node]} table: what every role shares.
    """

    state_dir: str = DEFAULT_STATE_DIR
    status_socket: str = DEFAULT_STATUS_SOCKET
    status_mode: int = 0o660
    log_level: str = "info"
    user: str = ""
    group: str = ""
    metrics: str = ""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """
    The C{[server]} table.  C{secondary} is always filled in (primary + 1 by default).
    """

    primary: str
    secondary: str
    prefix: str = "2001::/32"
    mtu: int = 1280
    max_payload: int = 88
    interface: str = "teredo-srv"
    secure: bool = False
    clients: tuple[tuple[str, str, float | None], ...] = ()
    accept_unknown_clients: bool = False
    rs_rate: float = 0.5
    rs_burst: int = 10
    rs_initial: int = 4
    rs_limit_prefix: int = 32
    ra_rate: float = 10000.0
    ra_burst: int = 2000
    forward_rate: float = 50.0
    forward_burst: int = 20
    max_sources: int = 65536
    hardened: bool = True
    fast_path: str = "auto"
    enabled: bool = True
    name = "server"

    @property
    def prefix_bytes(self) -> bytes:
        """
        The prefix as the 4 bytes the wire codec compares against.
        """
        return prefix_from_text(self.prefix)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """
    The C{[client]} table.  C{server} may be a DNS name, resolved by the role when it starts;
    C{secondary} is C{None} when it must be derived from the resolved server address.
    C{client_id} and C{secret} are both set (secure qualification) or both C{None}.
    """

    server: str
    secondary: str | None = None
    interface: str = "teredo"
    bind: str = "0.0.0.0"
    port: int = 0
    refresh: int = 30
    client_id: str | None = None
    secret: str | None = None
    max_peers: int = 1024
    peer_queue: int = 8
    peer_queue_bytes: int = 10240
    default_route: str | bool = "auto"
    allow_symmetric: bool = False
    local_discovery: bool = True
    local_discovery_address: str = ""
    inbound_probe_rate: float = 5.0
    inbound_probe_burst: int = 20
    enabled: bool = True
    name = "client"


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """
    The C{[relay]} table.
    """

    interface: str = "teredo-relay"
    bind: str = "0.0.0.0"
    port: int = 3544
    prefix: str = "2001::/32"
    serve: tuple[str, ...] = ("2000::/3",)
    max_peers: int = 1_048_576
    peer_queue: int = 8
    peer_queue_bytes: int = 1280
    icmp_rate: float = 10.0
    hardened: bool = True
    health_table: int = 0
    health_interval: int = 1
    health_lifetime: int = 3
    drain_time: int = 5
    direct_bubbles: bool = False
    bubble_rate_per_ipv4: float = 2.0
    bubble_burst_per_ipv4: int = 8
    bubble_rate_per_server: float = 50.0
    bubble_burst_per_server: int = 100
    bubble_rate: float = 1000.0
    bubble_burst: int = 2000
    enabled: bool = True
    name = "relay"

    @property
    def prefix_bytes(self) -> bytes:
        return prefix_from_text(self.prefix)


@dataclass(frozen=True, slots=True)
class HostRelaySettings:
    """
    The C{[host-relay]} table.
    """

    interface: str = "teredo-hr"
    bind: str = "0.0.0.0"
    port: int = 0
    prefix: str = "2001::/32"
    max_peers: int = 1024
    peer_queue: int = 8
    peer_queue_bytes: int = 10240
    icmp_rate: float = 10.0
    direct_bubbles: bool = True
    bubble_rate_per_ipv4: float = 2.0
    bubble_burst_per_ipv4: int = 8
    bubble_rate_per_server: float = 10.0
    bubble_burst_per_server: int = 20
    bubble_rate: float = 50.0
    bubble_burst: int = 100
    enabled: bool = True
    name = "host-relay"

    @property
    def prefix_bytes(self) -> bytes:
        return prefix_from_text(self.prefix)


RoleSettings = ServerSettings | ClientSettings | RelaySettings | HostRelaySettings

_CLASSES: Mapping[str, type] = MappingProxyType(
    {
        "server": ServerSettings,
        "client": ClientSettings,
        "relay": RelaySettings,
        "host-relay": HostRelaySettings,
    }
)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """
    A whole, validated configuration.

    @ivar source: the file it came from (or L{NO_FILE}); error messages and status use it.
    @ivar node: the C{[node]} table.
    @ivar roles: the settings of every role that runs, keyed by role name, in start order.
    """

    source: str
    node: NodeSettings
    roles: Mapping[str, RoleSettings] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def enabled(self) -> tuple[str, ...]:
        """
        The names of the roles that run, in start order.
        """
        return tuple(self.roles)


# --- loading ------------------------------------------------------------------------------


def parse_roles(text: str | Iterable[str], source: str = "--role") -> tuple[str, ...]:
    """
    C{"server,client"} (or a sequence of names) -> role names in start order, duplicates
    removed.  An unknown or empty name is a L{ConfigError}.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    wanted = []
    for raw in names:
        name = raw.strip().lower()
        if name not in ROLE_NAMES:
            raise ConfigError(
                f"{source}: unknown role {_show(raw.strip())} (known: {', '.join(ROLE_NAMES)})"
            )
        wanted.append(name)
    return tuple(name for name in ROLE_NAMES if name in wanted)


def load_config(
    path: str | None,
    roles: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """
    Read, validate and freeze the configuration.

    @param path: the TOML file, or C{None} to run on defaults and overrides alone.
    @param roles: an explicit role list (C{"a,b"} or names) replacing the file's C{enabled}.
    @param overrides: L{OVERRIDES} option name (C{"primary"}, or C{"interface"}: the one
        tunnel role's interface) -> value; C{None} values are ignored.
    @raise ConfigError: with a one-line message naming file, table and key.
    """
    if path is None:
        return parse_config("", NO_FILE, roles, overrides)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return parse_config(text, path, roles, overrides)


def parse_config(
    text: str,
    source: str = "<string>",
    roles: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """
    Like L{load_config}, from TOML text; C{source} names it in error messages.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's messages are already one line: "Invalid value (at line 3, column 9)".
        raise ConfigError(f"{source}: TOML syntax error: {e}") from None

    for table, value in document.items():
        if table not in SCHEMA:
            raise ConfigError(
                f"{source}: [{table}]: unknown table (known: {', '.join(SCHEMA)})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {table}: must be a table ([{table}]), not a value")
    tables: dict[str, dict[str, Any]] = {name: dict(document.get(name, {})) for name in SCHEMA}
    origin: dict[tuple[str, str], str] = {}
    for table, values in tables.items():
        known = {key.name for key in SCHEMA[table]}
        for key in values:
            if key not in known and (table, key) in RENAMED:
                raise ConfigError(f"{source}: [{table}] {key}: {RENAMED[(table, key)]}")
            if key not in known:
                raise ConfigError(
                    f"{source}: [{table}] {key}: unknown key (known: {', '.join(sorted(known))})"
                )

    wanted = parse_roles(roles) if roles is not None else None
    running = wanted if wanted is not None else _enabled_in_file(source, tables)
    _apply_overrides(source, tables, origin, running, overrides or {})

    checked = {table: _check_table(source, table, tables[table], origin) for table in SCHEMA}
    node = NodeSettings(**{k.replace("-", "_"): v for k, v in checked["node"].items()})  # defaults fill the rest
    built: dict[str, RoleSettings] = {}
    for name in running:
        built[name] = _build_role(source, name, checked[name], origin)
    if not built:
        raise ConfigError(
            f"{source}: no role is enabled (set \"enabled = true\" in a role table, or use --role)"
        )
    return NodeConfig(source=source, node=node, roles=MappingProxyType(built))


def _where(source: str, table: str, key: str, origin: Mapping[tuple[str, str], str]) -> str:
    via = origin.get((table, key))
    return f"{source}: [{table}] {key}" + (f" (from --{via})" if via else "")


def _enabled_in_file(source: str, tables: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    running = []
    for name in ROLE_NAMES:
        value = tables[name].get("enabled", False)
        try:
            enabled = _boolean(value)
        except _Invalid as e:
            raise ConfigError(f"{source}: [{name}] enabled: {e}") from None
        if enabled:
            running.append(name)
    return tuple(running)


def _apply_overrides(
    source: str,
    tables: dict[str, dict[str, Any]],
    origin: dict[tuple[str, str], str],
    running: Sequence[str],
    overrides: Mapping[str, Any],
) -> None:
    for option, value in overrides.items():
        if value is None:
            continue
        if option == "interface":
            tunnels = [name for name in running if name in TUNNEL_ROLES]
            if len(tunnels) != 1:
                raise ConfigError(
                    f"{source}: --interface needs exactly one of the roles "
                    f"{', '.join(TUNNEL_ROLES)} to run (running: {', '.join(running) or 'none'}); "
                    f"use --client-interface, --relay-interface or --host-relay-interface"
                )
            table, key = tunnels[0], "interface"
        elif option in OVERRIDES:
            table, key = OVERRIDES[option]
        else:
            raise ConfigError(f"{source}: --{option}: unknown override")
        tables[table][key] = value
        origin[(table, key)] = option


def _check_table(
    source: str,
    table: str,
    values: Mapping[str, Any],
    origin: Mapping[tuple[str, str], str],
) -> dict[str, Any]:
    """
    Validate every key present in C{values}; missing keys are left for L{_build_role}.
    """
    checked = {}
    for key in SCHEMA[table]:
        if key.name in values:
            try:
                checked[key.name] = key.check(values[key.name])
            except _Invalid as e:
                raise ConfigError(f"{_where(source, table, key.name, origin)}: {e}") from None
    return checked


def _build_role(
    source: str,
    name: str,
    values: Mapping[str, Any],
    origin: Mapping[tuple[str, str], str],
) -> RoleSettings:
    """
    Fill defaults, insist on required keys and check keys that depend on each other.
    """
    filled: dict[str, Any] = {}
    for key in SCHEMA[name]:
        if key.name in values:
            filled[key.attr] = values[key.name]
        elif key.default is REQUIRED:
            raise ConfigError(
                f"{_where(source, name, key.name, origin)}: required when the {name} role runs"
            )
        else:
            filled[key.attr] = key.default
    filled["enabled"] = True

    if name == "server":
        if filled["secondary"] is None:
            following = _next_address(filled["primary"])
            if following is None or not ipv4.is_global_unicast(following):
                raise ConfigError(
                    f"{_where(source, name, 'secondary', origin)}: primary + 1 ({following}) is "
                    f"not a global unicast address; set secondary explicitly"
                )
            filled["secondary"] = str(following)
        if filled["rs_initial"] > filled["rs_burst"]:
            raise ConfigError(
                f"{_where(source, name, 'rs-initial', origin)}: {filled['rs_initial']} is more "
                f"than rs-burst ({filled['rs_burst']})"
            )
        if filled["rs_limit_prefix"] not in (24, 32):
            raise ConfigError(
                f"{_where(source, name, 'rs-limit-prefix', origin)}: must be 32 (one address) "
                f"or 24 (its /24)"
            )
        if filled["secondary"] == filled["primary"]:
            raise ConfigError(
                f"{_where(source, name, 'secondary', origin)}: must differ from primary "
                f"(the cone test needs two addresses)"
            )
    elif name == "client":
        if (filled["client_id"] is None) != (filled["secret"] is None):
            missing = "secret" if filled["secret"] is None else "client-id"
            raise ConfigError(
                f"{_where(source, name, missing, origin)}: required with "
                f"{'client-id' if missing == 'secret' else 'secret'} (secure qualification "
                f"needs both)"
            )
        server = filled["server"]
        if filled["secondary"] is None and _is_dotted_quad(server):
            # Derive now when we can, so status shows it; a DNS name is derived after lookup.
            filled["secondary"] = _next_address(server)
        if filled["secondary"] is not None and filled["secondary"] == server:
            raise ConfigError(
                f"{_where(source, name, 'secondary', origin)}: must differ from server"
            )
    elif name == "relay" and filled["health_lifetime"] <= filled["health_interval"]:
        raise ConfigError(
            f"{_where(source, name, 'health-lifetime', origin)}: must exceed health-interval "
            f"({filled['health_interval']}), or the route lapses between refreshes"
        )
    settings: RoleSettings = _CLASSES[name](**filled)
    return settings


def _next_address(ip: str) -> str | None:
    """
    The IPv4 address after C{ip}, the conventional secondary server address; C{None} after
    255.255.255.255.
    """
    value = int(ipaddress.IPv4Address(ip))
    return str(ipaddress.IPv4Address(value + 1)) if value < 0xFFFFFFFF else None


def _is_dotted_quad(text: str) -> bool:
    try:
        ipv4.pack(text)
    except ParseError:
        return False
    return True
