"""
Tests for L{teredonode.config}: defaults, overrides, role selection, and that every error is a
single line naming file, table and key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import (
    DEFAULT_STATUS_SOCKET,
    NO_FILE,
    REQUIRED,
    ROLE_NAMES,
    SCHEMA,
    setting,
    ClientSettings,
    HostRelaySettings,
    NodeConfig,
    NodeSettings,
    RelaySettings,
    ServerSettings,
    load_config,
    parse_config,
    parse_roles,
)
from teredonode.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "etc" / "teredo.toml"
DOCS = REPO / "docs" / "config.md"

SERVER = '[server]\nenabled = true\nprimary = "192.0.2.1"\n'

_R = TypeVar("_R", ServerSettings, ClientSettings, RelaySettings, HostRelaySettings)


def role(config: NodeConfig, name: str, kind: type[_R]) -> _R:
    """
    The settings of role C{name} in C{config}, which must be a C{kind}.
    """
    settings = config.roles[name]
    assert isinstance(settings, kind), settings
    return settings


# The type checker sees the TestCase this mixin is always combined with.
if TYPE_CHECKING:
    _AssertionsBase = SynchronousTestCase
else:
    _AssertionsBase = object


class ErrorAssertions(_AssertionsBase):
    """
    Mixin: assert a config error is one line, starts with the file, names table and key.
    """

    def assertConfigError(self, text, *fragments, source="etc/x.toml", **kw):
        with self.assertRaises(ConfigError) as caught:
            parse_config(text, source, **kw)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(source + ": "), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class DefaultsTests(SynchronousTestCase):
    def test_serverDefaults(self) -> None:
        """
        A server needs only its primary address; the secondary is primary + 1.
        """
        config = parse_config(SERVER, "etc/x.toml")
        self.assertEqual(config.enabled, ("server",))
        self.assertEqual(config.source, "etc/x.toml")
        server = role(config, "server", ServerSettings)
        self.assertEqual(server.primary, "192.0.2.1")
        self.assertEqual(server.secondary, "192.0.2.2")
        self.assertEqual(server.prefix, "2001::/32")
        self.assertEqual(server.prefix_bytes, b"\x20\x01\x00\x00")
        self.assertEqual(server.max_payload, 88)
        self.assertEqual(server.mtu, 1280)
        self.assertEqual(server.interface, "teredo-srv")
        self.assertTrue(server.hardened)

    def test_nodeDefaults(self) -> None:
        config = parse_config(SERVER)
        self.assertEqual(config.node, NodeSettings())
        self.assertEqual(config.node.status_socket, DEFAULT_STATUS_SOCKET)
        self.assertEqual(config.node.status_socket, "/run/teredonode/status.sock")
        self.assertEqual(config.node.status_mode, 0o660)
        self.assertEqual(config.node.log_level, "info")

    def test_clientDefaults(self) -> None:
        config = parse_config('[client]\nenabled = true\nserver = "teredo.example.net"\n')
        client = role(config, "client", ClientSettings)
        self.assertEqual(client.server, "teredo.example.net")
        self.assertIsNone(client.secondary, "a DNS name's secondary is derived after lookup")
        self.assertEqual((client.interface, client.port, client.refresh), ("teredo", 0, 30))
        self.assertIsNone(client.client_id)
        self.assertIsNone(client.secret)

    def test_clientSecondaryDerivedFromAddress(self) -> None:
        config = parse_config('[client]\nenabled = true\nserver = "198.51.100.9"\n')
        self.assertEqual(role(config, "client", ClientSettings).secondary, "198.51.100.10")

    def test_relayAndHostRelayDefaults(self) -> None:
        config = parse_config("[relay]\nenabled = true\n[host-relay]\nenabled = true\n")
        self.assertEqual(config.enabled, ("relay", "host-relay"))
        relay, hr = role(config, "relay", RelaySettings), role(config, "host-relay", HostRelaySettings)
        self.assertEqual((relay.interface, relay.port, relay.prefix, relay.bind),
                         ("teredo-relay", 3544, "2001::/32", "0.0.0.0"))
        self.assertEqual((hr.interface, hr.port), ("teredo-hr", 0))

    def test_settingsAreImmutable(self) -> None:
        config = parse_config(SERVER)
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, config.roles["server"], "primary", "x")
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, config, "source", "x")
        with self.assertRaises(TypeError):
            config.roles["relay"] = None  # type: ignore[index]  # read-only is the point

    def test_startOrderIsCanonical(self) -> None:
        """
        Roles run in registry order whatever order the file lists them in.
        """
        config = parse_config(
            '[client]\nenabled = true\nserver = "192.0.2.9"\n' + SERVER
        )
        self.assertEqual(config.enabled, ("server", "client"))

    def test_disabledRoleNotBuilt(self) -> None:
        config = parse_config(SERVER + "[relay]\nenabled = false\nport = 3545\n")
        self.assertEqual(config.enabled, ("server",))

    def test_normalisation(self) -> None:
        config = parse_config(
            '[server]\nenabled = true\nprimary = "192.0.2.1"\nprefix = "3FFE:831F:0::/32"\n'
            '[node]\nlog-level = "DEBUG"\nstatus-mode = "0640"\n'
        )
        self.assertEqual(role(config, "server", ServerSettings).prefix, "3ffe:831f::/32")
        self.assertEqual(config.node.log_level, "debug")
        self.assertEqual(config.node.status_mode, 0o640)

    def test_secureQualificationPair(self) -> None:
        config = parse_config(
            '[client]\nenabled = true\nserver = "192.0.2.9"\nclient-id = "me"\nsecret = "s3cret"\n'
        )
        self.assertEqual((role(config, "client", ClientSettings).client_id, role(config, "client", ClientSettings).secret), ("me", "s3cret"))


class RoleSelectionTests(ErrorAssertions, SynchronousTestCase):
    def test_roleListOverridesFile(self) -> None:
        """
        --role replaces the file's "enabled" choice both ways.
        """
        text = SERVER + "[relay]\nenabled = false\n"
        config = parse_config(text, roles="relay")
        self.assertEqual(config.enabled, ("relay",))
        config = parse_config(text, roles=["relay", "server"])
        self.assertEqual(config.enabled, ("server", "relay"))

    def test_parseRoles(self) -> None:
        self.assertEqual(parse_roles(" client ,server,client"), ("server", "client"))
        self.assertEqual(parse_roles("HOST-RELAY"), ("host-relay",))

    def test_unknownRole(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config(SERVER, "etc/x.toml", roles="server,relayy")
        self.assertEqual(
            str(caught.exception),
            '--role: unknown role "relayy" (known: server, client, relay, host-relay)',
        )

    def test_emptyRole(self) -> None:
        self.assertRaises(ConfigError, parse_roles, "server,")

    def test_roleEnabledByFlagNeedsRequiredKeys(self) -> None:
        self.assertConfigError("", "[client] server: required", roles="client")

    def test_noRoleEnabled(self) -> None:
        self.assertConfigError("[relay]\nport = 1\n", "no role is enabled")

    def test_disabledTablesStillTypeChecked(self) -> None:
        """
        A typo in a role that is off is reported now, not the day it is switched on.
        """
        self.assertConfigError(SERVER + "[relay]\nport = \"x\"\n", "[relay] port:")

    def test_disabledRoleMayLackRequiredKeys(self) -> None:
        config = parse_config(SERVER + "[client]\nenabled = false\n")
        self.assertEqual(config.enabled, ("server",))


class OverrideTests(ErrorAssertions, SynchronousTestCase):
    def test_overridesWinOverFile(self) -> None:
        config = parse_config(
            SERVER,
            overrides={"primary": "198.51.100.7", "status-socket": "/tmp/t/s.sock", "log-level": None},
        )
        self.assertEqual(role(config, "server", ServerSettings).primary, "198.51.100.7")
        self.assertEqual(role(config, "server", ServerSettings).secondary, "198.51.100.8")
        self.assertEqual(config.node.status_socket, "/tmp/t/s.sock")
        self.assertEqual(config.node.log_level, "info", "None means 'not given'")

    def test_overrideCanSupplyRequiredKey(self) -> None:
        config = parse_config("", roles="client", overrides={"server": "192.0.2.77", "client-port": 4000})
        self.assertEqual(role(config, "client", ClientSettings).server, "192.0.2.77")
        self.assertEqual(role(config, "client", ClientSettings).port, 4000)

    def test_badOverrideNamesOption(self) -> None:
        message = self.assertConfigError(SERVER, overrides={"primary": "1.2.3"})
        self.assertEqual(
            message, 'etc/x.toml: [server] primary (from --primary): "1.2.3" is not an IPv4 address'
        )

    def test_interfaceGoesToTheOneTunnelRole(self) -> None:
        config = parse_config(SERVER, roles="server,relay", overrides={"interface": "tr0"})
        self.assertEqual(role(config, "relay", RelaySettings).interface, "tr0")

    def test_interfaceAmbiguous(self) -> None:
        self.assertConfigError(
            "", "--interface", "client-interface", roles="relay,host-relay", overrides={"interface": "x"}
        )

    def test_unknownOverride(self) -> None:
        self.assertConfigError(SERVER, "--colour", overrides={"colour": "blue"})


class ErrorTests(ErrorAssertions, SynchronousTestCase):
    """
    One test per kind of mistake; each message is one line with file, table and key.
    """

    def mktemp(self) -> str:
        """
        A fresh path in a private temporary directory (trial's own mktemp writes under the
        current directory, which under pytest is the repository).
        """
        base = tempfile.mkdtemp(prefix="teredo-test-")
        self.addCleanup(shutil.rmtree, base, True)
        return os.path.join(base, "x")

    def test_fileNotFound(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            load_config("/nonexistent/teredo.toml")
        self.assertEqual(str(caught.exception), "/nonexistent/teredo.toml: no such file")

    def test_directory(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        with self.assertRaises(ConfigError) as caught:
            load_config(path)
        self.assertIn("is a directory", str(caught.exception))

    def test_loadFromFile(self) -> None:
        path = self.mktemp()
        Path(path).write_text(SERVER)
        self.assertEqual(load_config(path).source, path)

    def test_notUtf8(self) -> None:
        path = self.mktemp()
        Path(path).write_bytes(b"[server]\nprimary = \"\xff\"\n")
        with self.assertRaises(ConfigError) as caught:
            load_config(path)
        self.assertIn("not UTF-8", str(caught.exception))

    def test_tomlSyntax(self) -> None:
        message = self.assertConfigError("[server]\nprimary = 1.2.3\n", "TOML syntax error", "line 2")
        self.assertNotIn("\n", message)

    def test_unknownTable(self) -> None:
        self.assertEqual(
            self.assertConfigError("[servr]\n"),
            "etc/x.toml: [servr]: unknown table (known: node, server, client, relay, host-relay)",
        )

    def test_valueWhereTableExpected(self) -> None:
        self.assertConfigError('server = "192.0.2.1"\n', "server", "must be a table")

    def test_unknownKey(self) -> None:
        self.assertConfigError(SERVER + "primry = 1\n", "[server] primry: unknown key")

    def test_wrongType(self) -> None:
        self.assertEqual(
            self.assertConfigError('[relay]\nenabled = "yes"\n'),
            'etc/x.toml: [relay] enabled: "yes" is not a boolean (true or false)',
        )
        self.assertConfigError(SERVER + "rs-burst = 1.5\n", "[server] rs-burst: 1.5 is not an integer")
        self.assertConfigError(SERVER + "forward-burst = true\n", "[server] forward-burst: true is not an integer")
        self.assertConfigError(SERVER + "rs-rate = \"fast\"\n", "[server] rs-rate:", "not a number")
        self.assertConfigError(SERVER + "rs-rate = 0\n", "[server] rs-rate:", "positive")

    def test_serverLimits(self) -> None:
        """
        The RS limiter settings: defaults, the old burst key named with its replacements,
        rs-initial within rs-burst, rs-limit-prefix 32 or 24.
        """
        server = role(parse_config(SERVER, "etc/x.toml"), "server", ServerSettings)
        self.assertEqual(
            (server.rs_rate, server.rs_burst, server.rs_initial, server.rs_limit_prefix),
            (0.5, 10, 4, 32),
        )
        self.assertEqual((server.ra_rate, server.ra_burst, server.forward_burst), (10000.0, 2000, 20))
        self.assertFalse(server.accept_unknown_clients)
        self.assertEqual(
            self.assertConfigError(SERVER + "burst = 20\n"),
            "etc/x.toml: [server] burst: replaced by rs-burst (Router Solicitations) and "
            "forward-burst (relayed packets)",
        )
        self.assertConfigError(SERVER + "rs-initial = 11\n", "[server] rs-initial:", "more than rs-burst")
        self.assertConfigError(SERVER + "rs-limit-prefix = 28\n", "[server] rs-limit-prefix:", "32", "24")
        self.assertEqual(role(parse_config(SERVER + "rs-limit-prefix = 24\n"), "server", ServerSettings).rs_limit_prefix, 24)

    def test_badIPv4(self) -> None:
        self.assertEqual(
            self.assertConfigError('[server]\nenabled = true\nprimary = "1.2.3"\n'),
            'etc/x.toml: [server] primary: "1.2.3" is not an IPv4 address',
        )
        self.assertConfigError('[relay]\nbind = "::1"\n', '[relay] bind: "::1" is not an IPv4')
        self.assertConfigError('[relay]\nbind = 3\n', "[relay] bind: 3 is not an IPv4")

    def test_serverAddressMustBeGlobal(self) -> None:
        self.assertConfigError(
            '[server]\nenabled = true\nprimary = "10.1.2.3"\n', "[server] primary:", "global unicast"
        )

    def test_serverSecondaryDerivationFails(self) -> None:
        self.assertConfigError(
            '[server]\nenabled = true\nprimary = "192.88.98.255"\n', "[server] secondary:", "set secondary"
        )

    def test_serverSecondaryEqualsPrimary(self) -> None:
        self.assertConfigError(SERVER + 'secondary = "192.0.2.1"\n', "[server] secondary:", "differ")

    def test_badClientServer(self) -> None:
        self.assertConfigError('[client]\nenabled = true\nserver = "a..b"\n', "[client] server:")
        self.assertConfigError('[client]\nenabled = true\nserver = "1.2.3"\n', "[client] server:", "IPv4")
        self.assertConfigError('[client]\nenabled = true\nserver = "-x.net"\n', "[client] server:")

    def test_badPrefix(self) -> None:
        self.assertConfigError('[relay]\nprefix = "2001::/48"\n', "[relay] prefix:", "/32")
        self.assertConfigError('[relay]\nprefix = "192.0.2.0/24"\n', "[relay] prefix:")
        self.assertConfigError('[server]\nprefix = "2001::1/32"\n', "[server] prefix:")

    def test_portOutOfRange(self) -> None:
        self.assertEqual(
            self.assertConfigError("[relay]\nport = 70000\n"),
            "etc/x.toml: [relay] port: 70000 is out of range (port: 0..65535)",
        )
        self.assertConfigError("[client]\nport = -1\n", "[client] port:", "out of range")

    def test_requiredKey(self) -> None:
        self.assertEqual(
            self.assertConfigError("[server]\nenabled = true\n"),
            "etc/x.toml: [server] primary: required when the server role runs",
        )
        self.assertConfigError("[client]\nenabled = true\n", "[client] server: required")

    def test_secretWithoutClientId(self) -> None:
        self.assertConfigError(
            '[client]\nenabled = true\nserver = "192.0.2.9"\nsecret = "s"\n', "[client] client-id:"
        )

    def test_badInterfaceName(self) -> None:
        self.assertConfigError('[relay]\ninterface = "a/b"\n', "[relay] interface:")
        self.assertConfigError('[relay]\ninterface = "0123456789abcdef"\n', "[relay] interface:")

    def test_badNodeKeys(self) -> None:
        self.assertConfigError(SERVER + '[node]\nstatus-socket = "rel/s.sock"\n', "[node] status-socket:", "absolute")
        self.assertConfigError(SERVER + '[node]\nstatus-socket = "/' + "x" * 120 + '"\n', "[node] status-socket:", "too long")
        self.assertConfigError(SERVER + '[node]\nlog-level = "loud"\n', "[node] log-level:")
        self.assertConfigError(SERVER + "[node]\nstatus-mode = 660\n", "[node] status-mode:")

    def test_multilineValueQuotedOnOneLine(self) -> None:
        self.assertConfigError('[client]\nenabled = true\nserver = """a\nb"""\n', "[client] server:", "\\n")


class SampleTests(SynchronousTestCase):
    def test_sampleParses(self) -> None:
        """
        etc/teredo.toml is valid as shipped, and with every role switched on by --role.
        """
        config = load_config(str(SAMPLE))
        self.assertTrue(config.enabled)
        everything = load_config(str(SAMPLE), roles="server,client,relay,host-relay")
        self.assertEqual(everything.enabled, ("server", "client", "relay", "host-relay"))

    def test_sampleAndDocsMentionEveryKey(self) -> None:
        sample = SAMPLE.read_text()
        docs = DOCS.read_text()
        for table, keys in SCHEMA.items():
            self.assertIn(f"[{table}]", sample)
            self.assertIn(f"[{table}]", docs)
            for key in keys:
                self.assertTrue(
                    re.search(rf"^#?\s*{re.escape(key.name)}\s*=", sample, re.M),
                    f"etc/teredo.toml lacks [{table}] {key.name}",
                )
                self.assertIn(f"`{key.name}`", docs, f"docs/config.md lacks [{table}] {key.name}")

    def test_noFileRunsOnOverrides(self) -> None:
        config = load_config(None, roles="server", overrides={"primary": "192.0.2.1"})
        self.assertEqual(config.source, NO_FILE)


class SecureClientsTests(ErrorAssertions, SynchronousTestCase):
    """
    C{[server] clients}: the secure-qualification table.
    """

    def test_parsed(self) -> None:
        text = SERVER + 'secure = true\nclients = { alice = "s1", bob = { secret = "s2", expires = 2027-01-01T00:00:00Z } }\n'
        server = role(parse_config(text, "x.toml"), "server", ServerSettings)
        self.assertTrue(server.secure)
        self.assertEqual(server.clients, (("alice", "s1", None), ("bob", "s2", 1798761600.0)))

    def test_errors_never_quote_secrets(self) -> None:
        for bad in [
            'clients = "alice"',
            'clients = { alice = "" }',
            'clients = { alice = { secret = "hunter2", when = 1 } }',
            'clients = { alice = { secret = "hunter2", expires = "soon" } }',
            'clients = { alice = 7 }',
        ]:
            with self.assertRaises(ConfigError) as cm:
                parse_config(SERVER + bad + "\n", "x.toml")
            message = str(cm.exception)
            self.assertTrue(message.startswith("x.toml: [server] clients: "), message)
            self.assertNotIn("hunter2", message)
            self.assertEqual(len(message.splitlines()), 1)


class DeclarationTests(SynchronousTestCase):
    """
    Each key is declared once, as a field of its settings class; the schema, the defaults and
    the docs are derived from it and so agree.
    """

    CLASSES = {
        "node": NodeSettings,
        "server": ServerSettings,
        "client": ClientSettings,
        "relay": RelaySettings,
        "host-relay": HostRelaySettings,
    }

    def test_tablesInOrder(self) -> None:
        self.assertEqual(tuple(SCHEMA), ("node",) + ROLE_NAMES)

    def test_schemaIsTheSettingsFields(self) -> None:
        """
        Every settings attribute but C{enabled} is a key and every key but C{enabled} an
        attribute; a field default is the key's default, and keys without one (required or
        derived) have no field default.
        """
        for table, cls in self.CLASSES.items():
            keys = {key.attr: key for key in SCHEMA[table] if key.name != "enabled"}
            attrs = {f.name: f for f in dataclasses.fields(cls) if f.name != "enabled"}
            self.assertEqual(list(keys), list(attrs), table)
            for attr, key in keys.items():
                self.assertEqual(key.name, attr.replace("_", "-"))
                default = attrs[attr].default
                if default is dataclasses.MISSING:
                    # required, or derived by _build_role (which the docs say how)
                    self.assertTrue(key.default is REQUIRED or key.shown, f"[{table}] {key.name}")
                else:
                    self.assertEqual(default, key.default, f"[{table}] {key.name}")
        self.assertEqual([key.name for key in SCHEMA["server"][:3]], ["enabled", "primary", "secondary"])
        self.assertIs(SCHEMA["server"][1].default, REQUIRED)

    def test_everyKeyDocumented(self) -> None:
        for table, keys in SCHEMA.items():
            for key in keys:
                where = f"[{table}] {key.name}"
                self.assertTrue(key.doc.endswith(".") and "\n" not in key.doc, where)
                self.assertTrue(key.kind or key.check.kind, where)

    def test_requiredAndDerivedHaveNoDefault(self) -> None:
        with self.assertRaises(TypeError):
            ServerSettings(secondary="192.0.2.2")  # type: ignore[call-arg]  # primary missing on purpose
        with self.assertRaises(TypeError):
            ServerSettings(primary="192.0.2.1")  # type: ignore[call-arg]  # secondary missing on purpose
        self.assertIsNone(ClientSettings(server="192.0.2.9").secondary)

    def test_settingsAreKeywordOnly(self) -> None:
        with self.assertRaises(TypeError):
            RelaySettings("tr0")  # type: ignore[arg-type, call-arg]  # deliberately positional: refused at run time

    def test_checkMustDescribeItself(self) -> None:
        """
        A declaration's check is a L{Check}, which names its kind for the docs.
        """
        self.assertRaises(TypeError, setting, check=lambda value: value, default=1, doc="X.")
        kinds = {key.name: key.check.kind for key in SCHEMA["client"]}
        self.assertEqual(kinds["refresh"], "integer 10..3600 (seconds)")
        self.assertEqual(kinds["port"], "integer 0..65535 (port)")


class SampleDefaultsTests(SynchronousTestCase):
    def test_sampleShowsTheDefaults(self) -> None:
        """
        etc/teredo.toml says it shows every key with its default: each key it sets (other than
        C{enabled} and the required ones, which need an example) is set to the declared default.
        """
        document = tomllib.loads(SAMPLE.read_text())
        for table, values in document.items():
            keys = {key.name: key for key in SCHEMA[table]}
            for name, value in values.items():
                key = keys[name]
                if name == "enabled" or key.default in (REQUIRED, None):
                    continue
                self.assertEqual(
                    key.check(value), key.default,
                    f"etc/teredo.toml: [{table}] {name} is not the default declared in teredonode/config.py",
                )
