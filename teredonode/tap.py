# -*- test-case-name: tests.unit.test_tap -*-
"""
The C{teredo} twistd plugin: options and C{makeService}.

    twistd -n teredo --config /etc/teredonode/teredo.toml [--role server,relay] [overrides]

The configuration is loaded and every configured role module imported in L{Options.postOptions},
not in L{makeService}, so that by the time L{makeService} runs the configuration is known to be
good: anything raised from C{makeService} onwards reaches the operator as a traceback.

A configuration error ends the process with L{ConfigExit}, a L{SystemExit} carrying the one-line
message, rather than with L{usage.UsageError}.  Tried with Twisted 26.10: twistd answers a
C{UsageError} from C{postOptions} by printing its whole C{--help} text (about 40 lines, on
stdout) before the message, which buries a one-line "[server] primary: ..." under the usage of
options that were typed correctly.  A C{SystemExit} with a string passes through twistd
untouched; Python prints the string on stderr and exits with status 1.  Mistyped options
(unknown option, non-integer port) are still C{UsageError}s, where the usage text helps.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from teredonode.config import OVERRIDES, NodeConfig, load_config
from teredonode.errors import ConfigError
from teredonode.privilege import Privileges, capabilitiesFor, resolveAccount
from teredonode.service import checkRoles, makeNode

__all__ = ["ConfigExit", "Options", "makeService"]


class ConfigExit(SystemExit):
    """
    Ends twistd on a configuration error: one line on stderr, exit status 1, no traceback.

    @ivar error: the L{ConfigError} that caused it.
    """

    def __init__(self, error: ConfigError) -> None:
        SystemExit.__init__(self, f"twistd teredo: {error}")
        self.error = error


def _port(text: str) -> int:
    """
    Coerce a port option; range checking is left to the config, which names the key.
    """
    return int(text)


# No "coerceDoc": usage would append it to the help text after a stray period.
_port.coerceDoc = ""  # type: ignore[attr-defined]

#: Help text of each override option; the option -> (table, key) map is config.OVERRIDES.
_OVERRIDE_HELP: dict[str, str] = {
    "status-socket": "[node] status-socket: UNIX socket serving status JSON.",
    "state-dir": "[node] state-dir: directory for state kept across restarts.",
    "log-level": "[node] log-level: debug, info, warn, error or critical.",
    "primary": "[server] primary: the server's primary IPv4 address.",
    "secondary": "[server] secondary: the server's secondary IPv4 address.",
    "server": "[client] server: the Teredo server (IPv4 address or DNS name).",
    "client-port": "[client] port: the client's UDP service port (0 = random).",
    "client-interface": "[client] interface: the client's TUN interface name.",
    "relay-port": "[relay] port: the relay's UDP port.",
    "relay-bind": "[relay] bind: the IPv4 address the relay binds.",
    "relay-interface": "[relay] interface: the relay's TUN interface name.",
    "host-relay-port": "[host-relay] port: the host-specific relay's UDP port.",
    "host-relay-interface": "[host-relay] interface: the host-specific relay's TUN name.",
}
_PORT_OPTIONS = {"client-port", "relay-port", "host-relay-port"}
assert set(_OVERRIDE_HELP) == set(OVERRIDES), "every override needs help text"


class Options(usage.Options):
    """
    C{twistd teredo} options.  Each override replaces one key of the file (see
    C{docs/config.md}); C{--role} replaces the file's choice of roles.
    """

    synopsis = "[--config FILE] [--role ROLE[,ROLE...]] [overrides]"
    longdesc = (
        "Run a Teredo node: server, client, relay and/or host-specific relay "
        "(roles: server, client, relay, host-relay). Settings come from the TOML file; "
        "the options below override single keys."
    )

    optParameters: list[list[Any]] = [
        ["config", "c", None, "TOML configuration file (see etc/teredo.toml)."],
        [
            "role",
            "r",
            None,
            "Comma-separated roles to run, replacing the file's 'enabled' keys: "
            "server, client, relay, host-relay.",
        ],
        ["interface", None, None, "TUN interface name of the one tunnel role running."],
    ] + [
        [option, None, None, _OVERRIDE_HELP[option], _port if option in _PORT_OPTIONS else None]
        for option in OVERRIDES
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self.config: NodeConfig | None = None
        self.privileges: Privileges | None = None

    def overrides(self) -> dict[str, Any]:
        """
        The override options given on the command line, by option name.
        """
        names = ["interface", *OVERRIDES]
        return {name: self[name] for name in names if self[name] is not None}

    def loadConfig(self) -> NodeConfig:
        """
        Load the configuration the options name and check its roles can be loaded.

        @raise ConfigError: one line naming file, table and key.
        """
        config = load_config(self["config"], self["role"], self.overrides())
        checkRoles(config)
        return config

    def postOptions(self) -> None:
        """
        Load and check the configuration now, so errors end twistd with one line.
        """
        try:
            self.config = self.loadConfig()
            # twistd's own options (--uid, --gid) are parsed before ours, into our parent.
            self.privileges = privilegesFor(self.config, getattr(self, "parent", None))
        except ConfigError as e:
            raise ConfigExit(e) from None


def privilegesFor(config: NodeConfig, twistdOptions: Any = None) -> Privileges:
    """
    The node's privilege plan: twistd's C{--uid}/C{--gid} when given (twistd then switches,
    after C{privilegedStartService}), else C{[node] user}/C{group} (the node switches itself).
    Either way the roles' capabilities (L{teredonode.privilege.ROLE_CAPABILITIES}) are kept.

    @raise ConfigError: the user or group does not exist.
    """
    uid = gid = None
    if twistdOptions is not None:
        try:
            uid, gid = twistdOptions["uid"], twistdOptions["gid"]
        except KeyError:
            pass
    node = config.node
    if uid is not None:
        account = resolveAccount(uid, gid)
    else:
        account = resolveAccount(node.user, node.group)
    directories = [os.path.dirname(node.status_socket), node.state_dir]
    return Privileges(
        account,
        capabilitiesFor(config.roles),
        switchedByTwistd=uid is not None,
        directories=directories,
        narrow=True,
    )


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    The node for the parsed C{options}: a L{MultiService} of the roles and the status server.
    """
    config = options.config if options.config is not None else options.loadConfig()
    privileges = options.privileges
    if privileges is None:
        privileges = privilegesFor(config, getattr(options, "parent", None))
    # SIGHUP reads the same again
    return makeNode(config, reactor, loader=options.loadConfig, privileges=privileges)
