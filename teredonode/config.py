# -*- test-case-name: tests.unit.test_config -*-
"""
The configuration file: TOML in, validated, typed, immutable settings out.

One table per role (C{[server]}, C{[client]}, C{[relay]}, C{[host-relay]}) plus C{[node]} for
what the roles share.  Everything an operator can get wrong is checked here, once, before a
single socket is opened, and reported as a L{ConfigError} whose message is one line naming the
file, the table and the key::

    etc/x.toml: [server] primary: "1.2.3" is not an IPv4 address

That message is what C{twistd -n teredo} prints, so it has to stand on its own.

Each key is declared once, as a field of its table's settings class (L{NodeSettings},
L{ServerSettings}, ...): its type, check, default and doc.  Validation (L{SCHEMA}), the
settings' defaults and the tables of C{docs/config.md} (C{tools/configdoc.py}) are derived from
those fields, and tests check the sample file C{etc/teredo.toml} against them.

Precedence, lowest first: built-in defaults, the file, command-line overrides.  A role runs when
its table says C{enabled = true}, unless an explicit role list (C{--role a,b}) is given, which
replaces the file's choice entirely.  Tables of roles that do not run are still type-checked
(a typo should not wait for the day the role is switched on) but their required keys are not.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Callable, Generic, Iterable, Mapping, Sequence, TypeVar, dataclass_transform

from teredonode.errors import ConfigError, os_error_line
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
    "REQUIRED",
    "Check",
    "setting",
    "required",
    "derived",
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
#: The client's persisted port mapping (RFC 6081 X-UPNP-02), a file in C{[node] state-dir}.
PORT_MAPPING_STATE = "client-port-mapping.json"
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


# --- checks: (value) -> converted value, or _Invalid -----------------------------------

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class Check(Generic[_T_co]):
    """
    How one kind of value is checked and converted, and how docs/config.md names that kind.

    @ivar kind: the "type" column of the settings reference (Markdown), e.g. C{"IPv4"}.
    @ivar show: how a default of this kind is written in TOML, when C{repr}-like text is not
        it (a file mode is the string C{"0660"}, not the integer 432).
    """

    __slots__ = ("kind", "show", "_convert")

    def __init__(
        self, kind: str, convert: Callable[[Any], _T_co], show: Callable[[Any], str] | None = None
    ) -> None:
        self.kind = kind
        self.show = show
        self._convert = convert

    def __call__(self, value: Any) -> _T_co:
        return self._convert(value)

    def __repr__(self) -> str:
        return f"<Check {self.kind}>"


def _checks(
    kind: str, show: Callable[[Any], str] | None = None
) -> Callable[[Callable[[Any], _T]], Check[_T]]:
    """
    Decorator: the function below checks values of C{kind}.
    """

    def wrap(convert: Callable[[Any], _T]) -> Check[_T]:
        return Check(kind, convert, show)

    return wrap



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


@_checks("boolean")
def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"{_show(value)} is not a boolean (true or false)")
    return value


@_checks("string")
def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{_show(value)} is not a string")
    if not value or "\x00" in value or "\n" in value:
        raise _Invalid(f"{_show(value)} is not a usable string (empty, or has NUL or newline)")
    return value


@_checks("absolute path")
def _path(value: Any) -> str:
    text = _string(value)
    if not text.startswith("/"):
        raise _Invalid(f"{_show(value)} is not an absolute path")
    return text


def _account(kind: str) -> Check[str]:
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

    return Check(f'{kind} name or number; `""`', check)


@_checks('absolute path, file name in `[node] state-dir`, or `""`')
def _state_file(value: Any) -> str:
    """
    A file of state kept across restarts: an absolute path, a plain file name (in C{[node]
    state-dir}, joined by L{_build_role}), or C{""} for "not kept".
    """
    if value == "":
        return ""
    text = _string(value)
    if not text.startswith("/") and ("/" in text or text in (".", "..")):
        raise _Invalid(f"{_show(value)} is neither an absolute path nor a file name")
    return text


@_checks("absolute path, ≤ 107 bytes")
def _socket_path(value: Any) -> str:
    text = _path(value)
    # sun_path is 108 bytes on Linux, including the terminating NUL.
    if len(text.encode("utf-8")) > 107:
        raise _Invalid(f"{_show(value)} is too long for a UNIX socket path (107 bytes at most)")
    return text


@_checks('`"host:port"` (`"[::1]:9544"` for IPv6) or `""`')
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


def _integer(low: int, high: int, what: str = "") -> Check[int]:
    """
    An integer in C{low..high}; C{what} (a unit, or what the number is) is named in the
    message and the docs.
    """

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"{_show(value)} is not an integer")
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range ({what or 'allowed'}: {low}..{high})")
        return value

    return Check(f"integer {low}..{high}" + (f" ({what})" if what else ""), check)


_port = _integer(0, 65535, "port")


@_checks("2 or 5")
def _random_port_type(value: Any) -> int:
    if isinstance(value, bool) or value not in (2, 5):
        raise _Invalid(f"{_show(value)} is not 2 or 5")
    return int(value)


@_checks("positive number (per second)")
def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"{_show(value)} is not a number")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise _Invalid(f"{_show(value)} is not a positive rate")
    return number


@_checks("number in (0, 1000] (per second)")
def _guess_rate(value: Any) -> float:
    number = _rate(value)
    if number > 1000:
        raise _Invalid(f"{_show(value)} is above 1000 per second")
    return number


@_checks("IPv4")
def _ipv4(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{_show(value)} is not an IPv4 address (a string such as \"192.0.2.1\")")
    try:
        raw = ipv4.pack(value)
    except ParseError:
        raise _Invalid(f"{_show(value)} is not an IPv4 address") from None
    return ipv4.unpack(raw)  # canonical: no leading zeros


@_checks("IPv4, global unicast")
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


@_checks("IPv4 or DNS name")
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


@_checks("IPv6 /32")
def _prefix(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{_show(value)} is not an IPv6 prefix (a string such as \"2001::/32\")")
    try:
        prefix_from_text(value)
    except ParseError as e:
        raise _Invalid(f"{_show(value)} is not a Teredo prefix ({e.reason})") from None
    return str(ipaddress.IPv6Network(value.strip()))


_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


@_checks("array of IPv6 prefixes")
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


@_checks("interface name (1–15 of `A-Z a-z 0-9 _ . -`)")
def _ifname(value: Any) -> str:
    """
    Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no slash or blank.
    """
    if not isinstance(value, str) or not _IFNAME.match(value) or value in (".", ".."):
        raise _Invalid(f"{_show(value)} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")
    return value


@_checks('interface name or `""`')
def _optional_ifname(value: Any) -> str:
    """
    An interface name, or the empty string for "none".
    """
    if value == "":
        return ""
    return _ifname(value)


@_checks('`""` or IPv4 address, optionally `/prefix-length`')
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


@_checks('`"auto"`, `"native"` or `"generic"`')
def _xdp_mode(value: Any) -> str:
    """
    How an XDP program is attached: C{"auto"} (generic on veth, native elsewhere),
    C{"native"} or C{"generic"}.
    """
    if value in ("auto", "native", "generic"):
        return str(value)
    raise _Invalid(f"{_show(value)} is not \"auto\", \"native\" or \"generic\"")


@_checks('`"auto"`, `"on"` or `"off"`')
def _fast_path(value: Any) -> str:
    """
    A role's kernel fast path (teredonode.fastpath: the server's XDP program, the relay's
    XDP and TC programs, the client's TC programs): C{"auto"}, C{"on"} or C{"off"}.
    """
    if value in ("auto", "on", "off"):
        return str(value)
    raise _Invalid(f"{_show(value)} is not \"auto\", \"on\" or \"off\"")


@_checks('`"auto"`, `true` or `false`')
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


@_checks(", ".join(f'`"{level}"`' for level in LOG_LEVELS) + " (any case)")
def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise _Invalid(f"{_show(value)} is not a log level ({', '.join(LOG_LEVELS)})")
    return value.lower()


@_checks(
    'octal string (`"0660"`) or TOML octal integer (`0o660`)', show=lambda mode: f'"{mode:04o}"'
)
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


@_checks("string, ≤ 255 bytes")
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


@_checks("string, ≤ 255 bytes")
def _client_id(value: Any) -> str:
    """
    The client identifier sent in the authentication indicator: at most 255 bytes (ID-len).
    """
    text = _string(value)
    if len(text.encode("utf-8")) > 255:
        raise _Invalid(f"{_show(value)} is longer than 255 bytes")
    return text


@_checks("table", show=lambda clients: "{}")
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


@_checks("integer 0..4294967295, not 253-255")
def _route_table(value: Any) -> int:
    """
    A kernel routing table number for the relay's health route, or 0 for none; never the
    tables the kernel itself uses (253 default, 254 main, 255 local).
    """
    table = _integer(0, 0xFFFFFFFF, "table")(value)
    if table in (253, 254, 255):
        raise _Invalid(f"{table} is a kernel table (default, main, local); use another number")
    return table


# --- how a setting is declared --------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """
    One configuration key: its TOML name, how it is checked, its default (L{REQUIRED}, C{None}
    for "derived from other keys or simply unset", or a value) and its documentation.

    Built from the settings classes below (L{SCHEMA}), never written by hand, except
    L{_ENABLED}.

    @ivar doc: one line, the start of the key's row in docs/config.md.
    @ivar more: optional further sentences of that row (why the default, what it costs).
    @ivar kind: the row's "type" text, when the check's own L{Check.kind} is not precise
        enough (a limit that depends on another key).
    @ivar shown: the row's "default" text, for a default derived from other keys.
    """

    name: str
    check: Check[Any]
    default: Any
    doc: str
    more: str = ""
    kind: str = ""
    shown: str = ""

    @property
    def attr(self) -> str:
        """
        The settings attribute: the key with C{-} replaced by C{_}.
        """
        return self.name.replace("-", "_")


#: Where a settings field keeps its L{_Key} (in C{dataclasses.Field.metadata}).
_KEY = "teredonode.config.key"


def _declare(spec: _Key, default: Any = MISSING) -> Any:
    """
    The C{dataclasses.field} carrying C{spec}; to mypy, L{setting} and its kin return the
    value itself, which is what the settings objects hold.
    """
    if not isinstance(spec.check, Check):
        raise TypeError(f"{spec.doc!r}: check must be a Check, not {spec.check!r}")
    return field(default=default, metadata={_KEY: spec})


def setting(
    *, check: Check[_T], default: _T, doc: str, more: str = "", kind: str = "", shown: str = ""
) -> _T:
    """
    Declare a key with a default: C{name: type = setting(check=..., default=..., doc=...)} in
    a settings class.  The key is the attribute with C{_} replaced by C{-}; mypy checks that
    the type, the check's result and the default agree.
    """
    declared: _T = _declare(_Key("", check, default, doc, more, kind, shown), default)
    return declared


def required(*, check: Check[_T], doc: str, more: str = "", kind: str = "") -> _T:
    """
    Declare a key that a role must set when it runs (the settings class has no default).
    """
    declared: _T = _declare(_Key("", check, REQUIRED, doc, more, kind))
    return declared


def derived(*, check: Check[_T], doc: str, shown: str, more: str = "", kind: str = "") -> _T:
    """
    Declare a key whose default is computed from other keys by L{_build_role} (C{shown} says
    how, for the docs); the settings always carry the computed value.
    """
    declared: _T = _declare(_Key("", check, None, doc, more, kind, shown))
    return declared


_C = TypeVar("_C")


@dataclass_transform(
    frozen_default=True, kw_only_default=True, field_specifiers=(setting, required, derived)
)
def _table(cls: type[_C]) -> type[_C]:
    """
    Decorator: a settings class, a frozen dataclass taking keyword arguments only (so that
    keys may be declared in documentation order, required ones included).
    """
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)


def _declared(cls: type) -> tuple[_Key, ...]:
    """
    The keys declared in a settings class, in declaration order, named.
    """
    keys = []
    for f in fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is not None:
            keys.append(replace(spec, name=f.name.replace("_", "-")))
    return tuple(keys)


# --- the settings: every key, once --------------------------------------------------------
#
# Each key of the file is one field of a class below: its attribute (the key with - as _),
# its type, its check, its default and its doc.  Validation (SCHEMA), the defaults of the settings
# objects and the tables of docs/config.md (tools/configdoc.py) all come from here.  Checks
# that involve two keys are in _build_role.


@_table
class NodeSettings:
    """
    The C{[node]} table: what every role shares.
    """

    #: The table's name in the file (a role's name, for the role tables).
    name = "node"

    state_dir: str = setting(
        check=_path, default=DEFAULT_STATE_DIR, doc="Directory for state kept across restarts."
    )
    status_socket: str = setting(
        check=_socket_path,
        default=DEFAULT_STATUS_SOCKET,
        doc="UNIX socket serving status JSON.",
        more="One JSON document per connection; `teredo status` reads it. The parent directory "
        "is created; a stale socket left by a dead node is removed; a live one, or a file that "
        "is not a socket, stops the start.",
    )
    status_mode: int = setting(
        check=_mode,
        default=0o660,
        doc="Permissions of the status socket.",
        more="They decide who may run `teredo status`. A decimal `660` is refused as a likely "
        "mistake.",
    )
    log_level: str = setting(
        check=_log_level,
        default="info",
        doc="Least severe level logged by teredonode.",
        more="It applies to every teredonode message, the roles' included (twistd's and "
        "Twisted's own are not filtered).",
    )
    user: str = setting(
        check=_account("user"),
        default="",
        doc="User to run as once sockets and TUN are open.",
        more="Only the capabilities the roles need are kept (see "
        "[least-privilege.md](least-privilege.md)). The status socket's directory and the state "
        "directory are created for this user when missing. `\"\"`: stay as started. twistd's "
        "`--uid`/`--gid` take precedence. An unknown user stops the start with one line.",
    )
    group: str = setting(
        check=_account("group"), default="", doc="Group to run as; default the user's group."
    )
    metrics: str = setting(
        check=_listen_address,
        default="",
        doc="Prometheus endpoint host:port; empty: off.",
        more="Metrics are served over HTTP at `GET /metrics`, e.g. on `\"127.0.0.1:9544\"`: "
        "every status counter, drop reason and gauge, plus latency histograms (see "
        "[metrics.md](metrics.md)). No authentication: bind to loopback or a management network.",
    )


#: The C{enabled} key of every role table.  It selects the roles (L{_enabled_in_file}); the
#: settings of a role exist only when it runs, so their C{enabled} attribute is always true.
_ENABLED = _Key("enabled", _boolean, False, "Run this role (unless `--role` says otherwise).")


@_table
class _RoleSettings:
    """
    What the settings of every role have.
    """

    #: Not a key: always true (see L{_ENABLED}).
    enabled: bool = True


@_table
class ServerSettings(_RoleSettings):
    """
    The C{[server]} table.  C{secondary} is always filled in (primary + 1 by default).
    """

    name = "server"

    primary: str = required(
        check=_unicast_ipv4,
        doc="Primary IPv4 address (clients' server).",
        more="Clients are configured with it and embed it in their Teredo addresses. It must "
        "pass RFC 4380 §5.2.4 with the hardening ranges (no 10/8, 127/8, 100.64/10 …; the "
        "documentation ranges are accepted for labs).",
    )
    secondary: str = derived(
        check=_unicast_ipv4,
        shown="primary + 1",
        doc="Secondary IPv4 address; default primary + 1.",
        more="It answers the cone test, so it must differ from `primary`. If primary + 1 is not "
        "a global unicast address (e.g. primary is `x.x.x.255` before a reserved range), set it "
        "explicitly.",
    )
    prefix: str = setting(
        check=_prefix, default="2001::/32", doc="Teredo service prefix advertised (a /32)."
    )
    mtu: int = setting(
        check=_integer(1280, 65535, "MTU"),
        default=1280,
        doc="MTU option sent in Router Advertisements.",
    )
    max_payload: int = setting(
        check=_integer(0, 65535, "bytes"),
        default=88,
        doc="Largest IPv6 payload relayed (non-bubbles).",
        more="The payload is what follows the 40-byte header; bigger packets are dropped and "
        "counted (`oversized`). The server relays only bubbles and ICMPv6 echo anyway (RFC 4380 "
        "§5.3); 88 leaves room for every echo test and keeps it from being an open relay, as "
        "Miredo's and Windows' servers do. `0` relays bubbles only.",
    )
    interface: str = setting(
        check=_optional_ifname,
        default="teredo-srv",
        doc="TUN to native IPv6 for echo tests; empty: none.",
        more="When set, clients' echo requests to native hosts leave through a raw IPv6 socket "
        "(no IPv6 forwarding needed, needs CAP_NET_RAW) and echo replies routed to "
        "`2001:0:<primary>::/64` come back through it. `\"\"` disables the IPv6 side (native "
        "echo tests are then dropped as `no-ipv6-side`). Needs root or CAP_NET_ADMIN.",
    )
    secure: bool = setting(
        check=_boolean,
        default=False,
        doc="Require secure qualification (RFC 4380 5.2.2).",
        more="A Router Solicitation must then carry an authentication indicator whose client "
        "identifier is in `clients` and whose authentication value is HMAC-SHA1(secret, nonce ‖ "
        "confirmation ‖ IPv6 packet); others are dropped (`auth-required`, `auth-failed`). An "
        "unknown identifier is dropped too (`auth-failed`) unless `accept-unknown-clients = "
        "true`. When `false`, the nonce and identifier of an RS are still echoed.",
    )
    clients: tuple[tuple[str, str, float | None], ...] = setting(
        check=_client_secrets,
        default=(),
        doc="Secure qualification: client id -> secret.",
        more="Each is `id = \"secret\"` or `id = { secret = \"...\", expires = <TOML "
        "date-time> }`. After `expires` RAs still authenticate but carry a non-zero "
        "confirmation byte, telling the client to get a new key. Secrets are never printed in "
        "errors or logs.",
    )
    accept_unknown_clients: bool = setting(
        check=_boolean,
        default=False,
        doc="Secure mode: answer unknown client ids (RFC 4380 behaviour).",
        more="With `secure = true`, an RS whose client identifier is not in `clients` is "
        "dropped (`auth-failed`); `true` restores RFC 4380 §5.3.2's behaviour, an RA with a "
        "non-zero confirmation byte and no authentication value — which hands a prefix (and a "
        "reflected RA) to anyone.",
    )
    rs_rate: float = setting(
        check=_rate,
        default=0.5,
        doc="Router Solicitations per second per source address.",
        more="Per *address* (or its /24, see `rs-limit-prefix`), never per port: spoofing a "
        "victim's address with many ports gains nothing. A client refreshes every 30 s, so "
        "0.5/s serves 15 clients sharing a NAT address (raise it for a carrier-grade NAT). It "
        "is also what keeps the global budget for real clients under a spoofed flood: 10 000 "
        "spoofed addresses demand at most 10 000 × `rs-rate` RAs per second, well under "
        "`ra-rate`.",
    )
    rs_burst: int = setting(
        check=_integer(1, 1_000_000),
        default=10,
        doc="Router Solicitations a source may save up.",
        more="Clients behind one NAT qualifying together spend them.",
    )
    rs_initial: int = setting(
        check=_integer(0, 1_000_000),
        kind="integer 0..`rs-burst`",
        default=4,
        doc="Tokens of a source seen for the first time.",
        more="Not a full bucket: enough for two clients behind one NAT address qualifying at the "
        "same moment, each with an RS to the primary and one to the secondary (cone test); a "
        "third retries 4 s later and finds 2 more. It bounds what each spoofed address "
        "reflects.",
    )
    rs_limit_prefix: int = setting(
        check=_integer(24, 32, "prefix length"),
        kind="32 or 24",
        default=32,
        doc="Source bits keying the RS limit: 32 or 24.",
        more="32: each address has its own bucket; 24: a whole /24 shares one (bounds "
        "reflection sprayed across a victim's network, at the cost of clients behind "
        "neighbouring NATs sharing a bucket).",
    )
    ra_rate: float = setting(
        check=_rate,
        default=10000.0,
        doc="Router Advertisements per second, all sources together.",
        more="An RS that passed its source's bucket also needs one token of this global budget; "
        "a source over its own limit takes none. It caps the server's total reflection at "
        "10 000 RAs/s (≈ 1.2 MB/s) and serves about 300 000 clients refreshing every 30 s; keep "
        "it above (sources you expect under attack) × `rs-rate`.",
    )
    ra_burst: int = setting(
        check=_integer(1, 1_000_000),
        default=2000,
        doc="Router Advertisements the global budget saves up.",
        more="The budget starts full.",
    )
    forward_rate: float = setting(
        check=_rate,
        default=50.0,
        doc="Packets per second relayed per source address.",
        more="Echo requests to the server's own address are charged here too.",
    )
    forward_burst: int = setting(
        check=_integer(1, 1_000_000),
        default=20,
        doc="Packets a source may save up for relaying.",
        more="A new source starts with a full bucket.",
    )
    max_sources: int = setting(
        check=_integer(16, 10_000_000),
        default=65536,
        doc="Sources tracked by each limiter.",
        more="About 150 bytes each; the least recently seen are forgotten first.",
    )
    hardened: bool = setting(
        check=_boolean,
        default=True,
        doc="Also refuse post-RFC 4380 non-global IPv4 ranges.",
        more="That is 100.64.0.0/10, 192.0.0.0/24, 198.18.0.0/15 and 240.0.0.0/4 as client "
        "mappings; see `teredonode.wire.ipv4`.",
    )
    relax_bubble_source: bool = setting(
        check=_boolean,
        default=False,
        doc="Relay RFC 6081 indirect bubbles whose Teredo source is not the sender's mapping.",
        more="RFC 6081's Symmetric NAT Support has a client behind a symmetric NAT send its "
        "indirect bubble through the peer's server, which sees another port than the one the "
        "client's address embeds, and RFC 4380 section 5.3.1 (rules 5 and 7) discards it. "
        "`true` relays such a packet when it is a bubble carrying a Nonce trailer and going "
        "to one of this server's own clients (counted as `relaxed-bubbles`). Off by default, "
        "as RFC 4380 says (digest D11): it lets a sender name any Teredo source on a bubble.",
    )
    fast_path: str = setting(
        check=_fast_path,
        default="auto",
        doc="Answer plain RSs in the kernel (XDP): auto, on, off.",
        more="Plain (non-secure) Router Solicitations are answered by an XDP program on the "
        "interfaces holding `primary`/`secondary`; everything else still reaches the Python "
        "server. `auto`: when the program builds (clang), loads and attaches, else the Python "
        "path; `on`: refuse to start without it; `off`: never. One log line at start says which "
        "path and why. See [performance.md](performance.md#kernel-fast-path-xdp).",
    )
    xdp_mode: str = setting(
        check=_xdp_mode,
        default="auto",
        doc="How the fast path's XDP program is attached: auto, native, generic.",
        more="`native` runs it in the driver, before a socket buffer exists; `generic` runs it "
        "on socket buffers and works on any interface. `auto` picks generic on veth and native "
        "elsewhere: native XDP on a veth hands its answers to the peer promptly only when the "
        "peer runs an XDP program (GRO alone leaves them waiting in the peer's ring); with "
        "such a peer `native` is the faster choice. See "
        "[performance.md](performance.md#kernel-fast-path-xdp).",
    )

    @property
    def prefix_bytes(self) -> bytes:
        """
        The prefix as the 4 bytes the wire codec compares against.
        """
        return prefix_from_text(self.prefix)


@_table
class ClientSettings(_RoleSettings):
    """
    The C{[client]} table.  C{server} may be a DNS name, resolved by the role when it starts;
    C{secondary} is C{None} when it must be derived from the resolved server address.
    C{client_id} and C{secret} are both set (secure qualification) or both C{None}.
    """

    name = "client"

    server: str = required(
        check=_host,
        doc="Teredo server: IPv4 address or DNS name.",
        more="A name must follow host-name syntax (RFC 1123) and is resolved when the client "
        "starts; something numeric that is not a dotted quad (`\"1.2.3\"`) is reported as a bad "
        "address.",
    )
    secondary: str | None = setting(
        check=_ipv4,
        default=None,
        shown="server + 1",
        doc="Server's secondary IPv4; default server + 1.",
        more="Derived at load time when `server` is an address, after resolution when it is a "
        "name. It must differ from `server`.",
    )
    interface: str = setting(check=_ifname, default="teredo", doc="TUN interface name.")
    bind: str = setting(
        check=_ipv4, default="0.0.0.0", doc="Local IPv4 address of the service port."
    )
    port: int = setting(
        check=_port,
        default=0,
        doc="UDP service port; 0 picks a random one.",
        more="A new one at each start (RFC 4380 recommends not using 3544).",
    )
    refresh: int = setting(
        check=_integer(10, 3600, "seconds"),
        default=30,
        doc="Seconds between maintenance RSs (RFC 4380 §5.2.7).",
    )
    client_id: str | None = setting(
        check=_client_id,
        default=None,
        doc="Secure qualification: client identifier.",
        more="Sent in the authentication indicator; set together with `secret`.",
    )
    secret: str | None = setting(
        check=_secret,
        default=None,
        doc="Secure qualification: shared secret.",
        more="Set together with `client-id`. Never shown in errors or status.",
    )
    max_peers: int = setting(
        check=_integer(1, 10_000_000),
        default=1024,
        doc="Peer list entries kept.",
        more="The least recently used go first (RFC 4380 §5.2.2).",
    )
    peer_queue: int = setting(
        check=_integer(0, 1024, "packets"),
        default=8,
        doc="Packets queued per untrusted peer.",
        more="While direct connectivity is being tested (bubbles, echo test).",
    )
    peer_queue_bytes: int = setting(
        check=_integer(0, 1_048_576, "bytes"),
        default=10240,
        doc="Bytes queued per untrusted peer.",
        more="A packet that would exceed either bound is dropped and counted (`queue-full`).",
    )
    default_route: str | bool = setting(
        check=_default_route,
        default="auto",
        doc="Default IPv6 route via Teredo: auto, true, false.",
        more="The route (`::/0`, metric 2048) is put on the interface once qualified. "
        "`\"auto\"`: only when the host has no other IPv6 default route (RFC 4380 §5.5, Teredo "
        "is the last resort); checked at each qualification. `2001::/32` is always on-link "
        "through the address's /32.",
    )
    allow_symmetric: bool = setting(
        check=_boolean,
        default=False,
        doc="Stay online behind a symmetric NAT (usually useless).",
        more="Behind a symmetric NAT (the primary and secondary server addresses see different "
        "mappings) the client reports `nat: symmetric` and stays offline, because no Teredo "
        "peer could reach it; `true` brings it online anyway (native IPv6 hosts through relays "
        "may still work).",
    )
    port_mapping: bool = setting(
        check=_boolean,
        default=True,
        doc="Ask the NAT for a mapping of the service port (PCP, NAT-PMP, UPnP) before qualifying.",
        more="RFC 6081's UPnP-enabled Symmetric NAT extension (X-UPNP-04): before qualifying, "
        "the client asks the router for a UDP mapping of its service port, by PCP, then "
        "NAT-PMP, then UPnP IGD (see `docs/portmap.md`), waits at most 10 s, renews it at "
        "half its lifetime and deletes it at shutdown. A router that maps the port usually "
        "makes the NAT behave like a cone for it. Status shows it under `port-mapping`.",
    )
    port_mapping_state: str | None = setting(
        check=_state_file,
        default=None,
        shown="`client-port-mapping.json` in `[node] state-dir`",
        doc="File keeping the port mapping across restarts, to delete one a crash left.",
        more="RFC 6081's Persisted UPnP-Mapped Port (X-UPNP-02): written when the router maps "
        "the port, removed once the mapping is deleted at shutdown. At start, a mapping it "
        "still names (the last run crashed) is deleted before mapping again and qualifying "
        "(X-UPNP-03). A file name is in `[node] state-dir`, which the node creates for the user "
        "it runs as (the file is written after the privilege drop). An unreadable or corrupt "
        "file is one log line and ignored. `\"\"`: not kept. Used with `port-mapping`.",
    )
    strict_secondary: bool = setting(
        check=_boolean,
        default=False,
        doc="A silent secondary server address means offline (RFC 4380 5.2.1).",
        more="RFC 4380 calls the service unusable when the server's secondary address does not "
        "answer (CL-Q-08). By default the client qualifies anyway and reports `nat: unknown`, "
        "because a silent secondary address is far more often a firewall than a symmetric NAT; "
        "`true` keeps the RFC's reading and stays offline.",
    )
    refresh_determination: bool = setting(
        check=_boolean,
        default=False,
        doc="Measure the NAT's mapping lifetime and stretch the refresh, up to 120 s (RFC 4380 5.2.7).",
        more="After qualifying, the client qualifies a second UDP port, leaves it idle for a "
        "candidate interval and has the server send a bubble to it: if it arrives, the NAT "
        "keeps idle mappings at least that long. A binary search between `refresh` and 120 s "
        "ends when the interval is within 75 % of the first failing one; the Router "
        "Solicitations to the server then come that much less often. Status shows the "
        "search under `refresh-determination`.",
    )
    dormant_with_native: bool = setting(
        check=_boolean,
        default=True,
        doc="No Teredo while the host has native IPv6 (RFC 4380 5.5).",
        more="A Teredo client MUST NOT run while the host has IPv6 connectivity by other means "
        "(G-03): with a default IPv6 route through another interface the client stays `dormant` "
        "(no address, no Router Solicitation), looks again every 60 s, and qualifies when that "
        "route goes away. `false` runs Teredo beside native IPv6 (then `default-route = "
        "\"auto\"` adds no default route).",
    )
    symmetric_nat_support: bool = setting(
        check=_boolean,
        default=True,
        doc="RFC 6081 Symmetric NAT Support: nonces in bubbles.",
        more="Indirect bubbles carry a random nonce, direct bubbles echo the peer's, and a "
        "peer's direct bubble from a mapping its address does not embed (a symmetric NAT gives "
        "one per destination) is accepted only with our last nonce, its source becoming the "
        "peer's mapping (RFC 6081 §5.2). `false`: plain RFC 4380 bubbles. See "
        "[nat-traversal.md](nat-traversal.md).",
    )
    server_load_reduction: bool = setting(
        check=_boolean,
        default=True,
        doc="RFC 6081 Server Load Reduction: refresh idle peers directly.",
        more="A packet for a peer proven before but silent both ways for 30 s is preceded by "
        "direct bubbles to its known mapping asking for an answer, every 2 s; the peer's "
        "answer proves the path again without our server. Three unanswered: the indirect "
        "bubble through the server as RFC 4380 says. Such requests from peers are answered, "
        "within the bubble limits (RFC 6081 §5.7). `false`: neither, RFC 4380 alone.",
    )
    hairpinning: bool = setting(
        check=_boolean,
        default=True,
        doc="RFC 6081 Hairpinning: reach peers behind our own NAT when it does not hairpin.",
        more="Indirect bubbles to a peer not reached yet carry our local address and port (and "
        "a UPnP mapping that differs from the server's: nested NATs) in an Alternate Address "
        "trailer; a peer behind our own public IPv4 address that advertises such addresses "
        "gets a direct bubble at each (at most 4), with its nonce, and is trusted where its "
        "answer proves our nonce (RFC 6081 §5.6). Needs `symmetric-nat-support`. `false`: "
        "no trailer sent, advertised addresses ignored. See [nat-traversal.md](nat-traversal.md).",
    )
    port_preserving: bool = setting(
        check=_boolean,
        default=True,
        doc="RFC 6081 Port-Preserving Symmetric NAT: a random port per peer.",
        more="Behind a symmetric NAT that keeps local port numbers (qualification reports "
        "`port-preserving`), the client opens a random local port for a peer it cannot reach, "
        "advertises it in its indirect bubbles (Random Port trailer) and sends a second direct "
        "bubble to the peer's random port, so that two such NATs, or one and a port-restricted "
        "NAT, open toward each other (RFC 6081 §5.4). Needs `symmetric-nat-support`. `false`: "
        "neither, and advertised ports are ignored. See [nat-traversal.md](nat-traversal.md).",
    )
    sequential_port: bool = setting(
        check=_boolean,
        default=True,
        doc="RFC 6081 Sequential Port-Symmetric NAT: the Echo Test predicts our port.",
        more="Behind a symmetric NAT that does not keep port numbers, the client assumes it hands "
        "them out in sequence: from a random local port it sends an RS to the server, a bubble "
        "to the peer and an RS to the server's secondary address, and advertises the port "
        "midway between the two the server saw (RFC 6081 §5.5). Needs `port-preserving`. "
        "`false`: such a client is tried with Symmetric NAT Support alone.",
    )
    echo_test_rate: float = setting(
        check=_rate,
        default=0.2,
        doc="Echo Tests (sequential-port) started per second, at most (burst 2).",
        more="Each Echo Test sends two Router Solicitations to the server from our NAT address, "
        "which the server counts in the same per-address budget as our maintenance ones "
        "(`rs-rate`, 0.5/s by default); and peers' indirect bubbles can start tests. Beyond "
        "this rate the indirect bubble goes without a predicted port (`seq-echo-limited`).",
    )
    random_ports: int = setting(
        check=_integer(1, 256, "ports"),
        default=8,
        doc="Random ports (port-preserving) open at once, at most.",
        more="One UDP socket per peer being reached through a port-preserving symmetric NAT, "
        "closed when the peer is reached on the service port, changes its port, or leaves the "
        "peer list. Past the limit a new peer gets none (`pp-ports-refused`) and is tried with "
        "Symmetric NAT Support alone.",
    )
    port_guessing: bool = setting(
        check=_boolean,
        default=False,
        doc="Beyond RFC 6081: birthday-paradox port guessing between two clients that both set it.",
        more="Reaches the cells RFC 6081 Figure 1 marks \"No\" (port-restricted <-> random "
        "port-symmetric): behind a symmetric NAT that neither preserves nor sequences ports, "
        "the client opens `port-guessing-sockets` sockets toward an unreached peer's mapping "
        "and asks it (Port Guess trailer, type 0xFE, skipped by other implementations) to "
        "probe; behind a NAT that is not symmetric, such a request from a peer (through our "
        "server, with its nonce) starts `port-guessing-probes` bubbles to random ports of the "
        "peer's IPv4 address. One search at a time, one started a minute on average, each "
        "ending within 30 s; the peer found is trusted only by RFC 4380's mapping rule or the "
        "Symmetric NAT Support nonce. Needs `symmetric-nat-support`. Far beyond RFC 4380's "
        "bubble rate toward one peer: off by default. See [nat-traversal.md](nat-traversal.md).",
    )
    port_guessing_sockets: int = setting(
        check=_integer(1, 1024, "sockets"),
        default=256,
        doc="Sockets a port-guessing search opens (behind a random port-symmetric NAT).",
        more="Each sends one bubble to the peer's mapping, at `port-guessing-rate`, and lives "
        "until the search ends (30 s at most). The chance of a hit with n sockets and m probes "
        "is about 1 - (1 - n/64512)^m: 63 % for 256 and 256.",
    )
    port_guessing_probes: int = setting(
        check=_integer(1, 4096, "bubbles"),
        default=256,
        doc="Bubbles a port-guessing search sends to random ports of the peer (not symmetric).",
    )
    port_guessing_rate: float = setting(
        check=_guess_rate,
        default=50.0,
        doc="Bubbles per second a port-guessing search sends, at most (either side).",
    )
    random_port_type: int = setting(
        check=_random_port_type,
        default=2,
        doc="Random Port trailer type sent: 2 (IANA) or 5 (RFC 6081 §4.5).",
        more="RFC 6081 prints 0x05 in §4.5 and registers 0x02 in §9 (requirements defect D1); "
        "both are accepted on receipt. A peer that knows only the other value skips ours.",
    )
    local_discovery: bool = setting(
        check=_boolean,
        default=True,
        doc="Find Teredo peers behind the same NAT (224.0.0.253).",
        more="Local client discovery (RFC 4380 §5.2.8): join 224.0.0.253 on UDP 3544 of the LAN "
        "interface, announce our Teredo address there every 200–300 s, and talk to Teredo "
        "clients behind the same NAT over the LAN. See [client.md](client.md#local-discovery).",
    )
    local_discovery_address: str = setting(
        check=_lan_address,
        default="",
        doc="LAN interface address[/len] for discovery; \"\": auto.",
        more="With a prefix length (`\"192.168.1.10/24\"`) discovery bubbles whose IPv4 source "
        "is outside that subnet are dropped (`discovery-off-subnet`); without one, or with "
        "`\"\"`, only private (non-global) sources are accepted. `\"\"` joins on the `bind` "
        "address when set, else on the kernel's default interface.",
    )
    inbound_probe_rate: float = setting(
        check=_rate,
        default=5.0,
        doc="Echo tests/answers per second that incoming traffic may trigger.",
        more="In all: echo tests toward native sources (RFC 4380 §5.2.3 case 6, every request "
        "of a test) and answers to indirect bubbles (CVE-2006-6266). Beyond it the packet is "
        "dropped (`budget-global`) and the probe counted in `probes-suppressed`. See "
        "[client.md](client.md#probe-budget).",
    )
    inbound_probe_burst: int = setting(
        check=_integer(1, 1_000_000),
        default=20,
        doc="Token bucket depth of inbound-probe-rate.",
        more="That many native sources may start a test at once.",
    )
    fast_path: str = setting(
        check=_fast_path,
        default="auto",
        doc="Carry trusted peers' packets in the kernel (TC): auto, on, off.",
        more="Datagrams from peers the client trusts are decapsulated by a TC program on the "
        "interfaces holding the client's IPv4 address and handed to the TUN's input; packets "
        "the host sends them are encapsulated by a TC program on `interface`. Everything else "
        "(qualification, bubbles, untrusted peers, echo tests, queues, ICMPv6 errors, anything "
        "malformed) still reaches the Python client, which decides which peers are trusted. "
        "`auto`: when the programs build (clang), load and attach, else the Python path; `on`: "
        "refuse to start without them; `off`: never. One log line at start says which path and "
        "why. See [performance.md](performance.md#client-kernel-fast-path).",
    )


@_table
class RelaySettings(_RoleSettings):
    """
    The C{[relay]} table.
    """

    name = "relay"

    interface: str = setting(
        check=_ifname,
        default="teredo-relay",
        doc="TUN interface name.",
        more="The Teredo prefix is routed to it.",
    )
    bind: str = setting(
        check=_ipv4, default="0.0.0.0", doc="Local IPv4 address of the relay's UDP port."
    )
    port: int = setting(check=_port, default=3544, doc="UDP port; 0 picks a random one.")
    prefix: str = setting(
        check=_prefix,
        default="2001::/32",
        doc="Teredo prefix routed to the relay.",
        more="A route for it is put on `interface`.",
    )
    serve: tuple[str, ...] = setting(
        check=_networks,
        default=("2000::/3",),
        doc="Native IPv6 ranges served (others dropped).",
        more="RFC 4380 §5.4.2: packets from Teredo clients to other destinations, and packets "
        "from the IPv6 side with other sources, are dropped (`wrong-destination`, "
        "`host-foreign-source`). The Teredo prefix itself is never served.",
    )
    max_peers: int = setting(
        check=_integer(1, 10_000_000),
        default=1_048_576,
        doc="Peer list entries kept (LRU).",
        more="Each entry costs about 0.5 KB of memory (450 bytes measured), so the default "
        "bounds the table near 500 MB.",
    )
    peer_queue: int = setting(
        check=_integer(0, 1024, "packets"),
        default=8,
        doc="Packets queued per untrusted peer.",
        more="While it is being reached.",
    )
    peer_queue_bytes: int = setting(
        check=_integer(0, 1_048_576, "bytes"),
        default=1280,
        doc="Bytes queued per untrusted peer.",
        more="Miredo's bound; beyond either bound packets are dropped (`queue-full`).",
    )
    icmp_rate: float = setting(
        check=_rate,
        default=10.0,
        doc="ICMPv6 errors sent per second.",
        more="Destination unreachable, at most that many.",
    )
    hardened: bool = setting(
        check=_boolean,
        default=True,
        doc="Also refuse post-RFC 4380 non-global IPv4 ranges.",
        more="As for `[server]`, as client mappings.",
    )
    health_table: int = setting(
        check=_route_table,
        default=0,
        doc="Kernel table of the health route BGP announces; 0: off.",
        more="For anycast relays ([anycast.md](anycast.md)): the relay keeps its health route "
        "(`prefix dev interface`, `proto static`) in this routing table, where the host's BGP "
        "daemon learns it.",
    )
    health_interval: int = setting(
        check=_integer(1, 60, "seconds"),
        default=1,
        doc="Seconds between health route refreshes.",
        more="Only while the relay's TUN and UDP socket are up.",
    )
    health_lifetime: int = setting(
        check=_integer(2, 600, "seconds"),
        kind="integer 2..600 (seconds), more than `health-interval`",
        default=3,
        doc="Seconds the health route outlives a hung relay.",
        more="It is the route's `expires`, counted from its last refresh (plus up to "
        "`net.ipv6.route.gc_interval`, which relay hosts set to 1).",
    )
    drain_time: int = setting(
        check=_integer(0, 600, "seconds"),
        default=5,
        doc="Seconds relaying on after withdrawing, when stopped.",
        more="With a health route, on stop (SIGTERM) the relay withdraws the route first and "
        "keeps relaying this long while routers move the traffic elsewhere, then exits.",
    )
    direct_bubbles: bool = setting(
        check=_boolean,
        default=False,
        doc="Also bubble clients directly (only behind a non-cone NAT).",
        more="That is, to the client's mapped endpoint as well as through its server. RFC 4380 "
        "§5.4.1 asks for it only from a relay behind a non-cone NAT (to open the path for the "
        "client's answer); a relay on a public address does not need it. See "
        "[relay.md](relay.md#bubble-budgets).",
    )
    bubble_rate_per_ipv4: float = setting(
        check=_rate,
        default=2.0,
        doc="Bubble rounds per second toward one embedded IPv4.",
        more="A round is the indirect bubble, plus the direct one if any; the IPv4 address is "
        "the one embedded in Teredo destinations, whatever their flags, server and port. A new "
        "peer is created only if its first round may go, otherwise the packet is dropped "
        "(`budget-ipv4`).",
    )
    bubble_burst_per_ipv4: int = setting(
        check=_integer(1, 1_000_000), default=8, doc="Token bucket depth of bubble-rate-per-ipv4."
    )
    bubble_rate_per_server: float = setting(
        check=_rate,
        default=50.0,
        doc="Bubble rounds per second through one embedded server IPv4.",
        more="The server field of the destination, which the sender also chooses: this bounds "
        "what a victim named as a server receives (`budget-server` beyond). Looser than the "
        "per-client budget because a real server stands for all its clients.",
    )
    bubble_burst_per_server: int = setting(
        check=_integer(1, 1_000_000),
        default=100,
        doc="Token bucket depth of bubble-rate-per-server.",
    )
    bubble_rate: float = setting(
        check=_rate,
        default=1000.0,
        doc="Bubble rounds per second in all.",
        more="Beyond it: `budget-global`.",
    )
    bubble_burst: int = setting(
        check=_integer(1, 10_000_000), default=2000, doc="Token bucket depth of bubble-rate."
    )
    fast_path: str = setting(
        check=_fast_path,
        default="auto",
        doc="Carry trusted peers' packets in the kernel (XDP, TC): auto, on, off.",
        more="Packets from and to peers the relay trusts are decapsulated by an XDP program on "
        "the interfaces holding the relay's IPv4 address and encapsulated by a TC program on "
        "`interface`; everything else (bubbles, untrusted peers, queues, ICMPv6 errors, "
        "anything malformed) still reaches the Python relay, which decides which peers are "
        "trusted. `auto`: when the programs build (clang), load and attach, else the Python "
        "path; `on`: refuse to start without them; `off`: never. One log line at start says "
        "which path and why. See [performance.md](performance.md#relay-kernel-fast-path).",
    )
    xdp_mode: str = setting(
        check=_xdp_mode,
        default="auto",
        doc="How the fast path's XDP program is attached: auto, native, generic.",
        more="As the server's `xdp-mode`: `native` runs the decapsulating program in the "
        "driver, `generic` on socket buffers; `auto` picks generic on veth (a veth's native "
        "XDP frames reach its peer promptly only when the peer runs an XDP program) and "
        "native elsewhere. See [performance.md](performance.md#relay-kernel-fast-path).",
    )

    @property
    def prefix_bytes(self) -> bytes:
        return prefix_from_text(self.prefix)


@_table
class HostRelaySettings(_RoleSettings):
    """
    The C{[host-relay]} table.  Its keys mean what the C{[relay]} keys of the same name mean;
    the defaults suit one host rather than a relay serving many.
    """

    name = "host-relay"

    interface: str = setting(
        check=_ifname,
        default="teredo-hr",
        doc="TUN interface name.",
        more="The Teredo prefix is routed to it.",
    )
    bind: str = setting(check=_ipv4, default="0.0.0.0", doc="Local IPv4 address of the UDP port.")
    port: int = setting(check=_port, default=0, doc="UDP port; 0 picks a random one.")
    prefix: str = setting(
        check=_prefix, default="2001::/32", doc="Teredo prefix routed to the host-specific relay."
    )
    max_peers: int = setting(
        check=_integer(1, 10_000_000), default=1024, doc="Peer list entries kept (LRU)."
    )
    peer_queue: int = setting(
        check=_integer(0, 1024, "packets"),
        default=8,
        doc="Packets queued per untrusted peer.",
    )
    peer_queue_bytes: int = setting(
        check=_integer(0, 1_048_576, "bytes"),
        default=10240,
        doc="Bytes queued per untrusted peer.",
    )
    icmp_rate: float = setting(
        check=_rate,
        default=10.0,
        doc="ICMPv6 errors sent per second.",
        more="Destination unreachable errors handed to the host, at most that many.",
    )
    direct_bubbles: bool = setting(
        check=_boolean,
        default=True,
        doc="Also bubble clients directly (for a host behind a NAT).",
        more="As for `[relay]`; on by default because a host is often behind a NAT, which the "
        "direct bubble opens.",
    )
    bubble_rate_per_ipv4: float = setting(
        check=_rate, default=2.0, doc="Bubble rounds per second toward one embedded IPv4."
    )
    bubble_burst_per_ipv4: int = setting(
        check=_integer(1, 1_000_000), default=8, doc="Token bucket depth of bubble-rate-per-ipv4."
    )
    bubble_rate_per_server: float = setting(
        check=_rate, default=10.0, doc="Bubble rounds per second through one embedded server IPv4."
    )
    bubble_burst_per_server: int = setting(
        check=_integer(1, 1_000_000),
        default=20,
        doc="Token bucket depth of bubble-rate-per-server.",
    )
    bubble_rate: float = setting(check=_rate, default=50.0, doc="Bubble rounds per second in all.")
    bubble_burst: int = setting(
        check=_integer(1, 10_000_000), default=100, doc="Token bucket depth of bubble-rate."
    )

    @property
    def prefix_bytes(self) -> bytes:
        return prefix_from_text(self.prefix)


RoleSettings = ServerSettings | ClientSettings | RelaySettings | HostRelaySettings

#: The settings class of every table, in documentation order (roles in start order).
_CLASSES: Mapping[str, type] = MappingProxyType(
    {
        cls.name: cls
        for cls in (NodeSettings, ServerSettings, ClientSettings, RelaySettings, HostRelaySettings)
    }
)

#: Every table and its keys, in documentation order, derived from the settings classes: what
#: validation, the docs and the sample file are checked against.
SCHEMA: Mapping[str, tuple[_Key, ...]] = MappingProxyType(
    {
        table: ((_ENABLED,) if table in ROLE_NAMES else ()) + _declared(cls)
        for table, cls in _CLASSES.items()
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


#: What a failed read of the configuration file means, by error class.
_READ_ERRORS: Mapping[type[OSError], str] = {
    FileNotFoundError: "no such file",
    IsADirectoryError: "is a directory, not a configuration file",
}


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
    except OSError as e:
        raise ConfigError(f"{path}: {os_error_line(e, _READ_ERRORS, 'cannot read: ')}") from None
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
        built[name] = _build_role(source, name, checked[name], origin, node)
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
    node: NodeSettings | None = None,
) -> RoleSettings:
    """
    Fill defaults, insist on required keys and check keys that depend on each other (a file
    name of a role's state joins C{node}'s C{state-dir}).
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
            following = ipv4.following(filled["primary"])
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
            filled["secondary"] = ipv4.following(server)
        state = filled["port_mapping_state"]
        if state is None:
            state = filled["port_mapping_state"] = PORT_MAPPING_STATE
        if state and not state.startswith("/"):
            filled["port_mapping_state"] = os.path.join(
                node.state_dir if node is not None else DEFAULT_STATE_DIR, state
            )
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


def _is_dotted_quad(text: str) -> bool:
    try:
        ipv4.pack(text)
    except ParseError:
        return False
    return True
