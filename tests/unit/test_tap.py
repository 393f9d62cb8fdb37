"""
Tests for the twistd plugin: L{teredonode.tap} options, L{teredonode.service} node assembly,
and a real C{twistd -n teredo} process given a bad configuration.

This module doubles as a stand-in role module (it has a module-level L{makeRole}), so the node
can be assembled before the real roles exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import teredonode
import teredonode.roles
from teredonode import tap
from teredonode.config import RelaySettings, ServerSettings, parse_config
from teredonode.errors import ConfigError
from teredonode.interfaces import IStatusSource, ITeredoRole
from teredonode.service import TeredoNode, checkRoles, loadRoleModule, makeNode
from teredonode.status import StatusService, read_status

REPO = Path(__file__).resolve().parents[2]
SERVER = '[server]\nenabled = true\nprimary = "192.0.2.1"\n'


@implementer(ITeredoRole)
class FakeRole(Service):
    """
    What a role module's C{makeRole} returns: a service with a status.
    """

    roleName = "server"

    def __init__(self, settings: Any, reactor: Any) -> None:
        self.settings, self.reactor = settings, reactor

    def status(self) -> dict[str, Any]:
        return {"state": "serving", "primary": self.settings.primary, "drops": {"rate limited": 2}}


def makeRole(settings: Any, reactor: Any) -> FakeRole:
    return FakeRole(settings, reactor)


def tempdir(case: SynchronousTestCase) -> str:
    path = tempfile.mkdtemp(prefix="teredo-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def useFakeRoles(case: SynchronousTestCase) -> None:
    """
    Make every role name resolve to this module for the duration of the test.
    """
    case.patch(teredonode.roles, "ROLE_MODULES", {name: __name__ for name in teredonode.roles.ROLE_MODULES})


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        useFakeRoles(self)
        self.dir = tempdir(self)
        self.configPath = os.path.join(self.dir, "teredo.toml")
        Path(self.configPath).write_text(SERVER + "[relay]\nenabled = false\n")

    def test_configAndRole(self) -> None:
        options = tap.Options()
        options.parseOptions(["--config", self.configPath, "--role", "relay,server"])
        assert options.config is not None
        self.assertEqual(options.config.enabled, ("server", "relay"))
        self.assertEqual(options.config.source, self.configPath)

    def test_shortOptions(self) -> None:
        options = tap.Options()
        options.parseOptions(["-c", self.configPath, "-r", "server"])
        assert options.config is not None
        self.assertEqual(options.config.enabled, ("server",))

    def test_overrides(self) -> None:
        socketPath = os.path.join(self.dir, "s.sock")
        options = tap.Options()
        options.parseOptions(
            [
                "-c", self.configPath,
                "--status-socket", socketPath,
                "--primary", "198.51.100.1",
                "--role", "server,relay",
                "--relay-port", "4000",
                "--interface", "tr9",
            ]
        )
        assert options.config is not None
        server, relay = options.config.roles["server"], options.config.roles["relay"]
        assert isinstance(server, ServerSettings) and isinstance(relay, RelaySettings)
        self.assertEqual(options.config.node.status_socket, socketPath)
        self.assertEqual(server.primary, "198.51.100.1")
        self.assertEqual(relay.port, 4000)
        self.assertEqual(relay.interface, "tr9")

    def test_badConfigExitsWithOneLine(self) -> None:
        bad = os.path.join(self.dir, "bad.toml")
        Path(bad).write_text('[server]\nenabled = true\nprimary = "1.2.3"\n')
        options = tap.Options()
        exc = self.assertRaises(tap.ConfigExit, options.parseOptions, ["--config", bad])
        self.assertIsInstance(exc, SystemExit)
        self.assertEqual(exc.code, f'twistd teredo: {bad}: [server] primary: "1.2.3" is not an IPv4 address')
        self.assertIsInstance(exc.error, ConfigError)

    def test_unknownRoleExits(self) -> None:
        exc = self.assertRaises(tap.ConfigExit, tap.Options().parseOptions, ["--role", "bogus"])
        self.assertIn('unknown role "bogus"', exc.code)

    def test_helpListsOptions(self) -> None:
        text = str(tap.Options())
        for option in ("--role", "-r", "--config", "-c", "--status-socket", "--primary",
                       "--server", "--interface", "--relay-port", "--client-interface"):
            self.assertIn(option, text)

    def test_makeService(self) -> None:
        options = tap.Options()
        options.parseOptions(["-c", self.configPath, "--status-socket", os.path.join(self.dir, "s.sock")])
        node = tap.makeService(options, Clock())
        self.assertIsInstance(node, MultiService)
        status = node.getServiceNamed("status")
        self.assertIsInstance(status, StatusService)
        self.assertEqual(status.path, os.path.join(self.dir, "s.sock"))
        self.assertIsInstance(node.getServiceNamed("server"), FakeRole)
        self.assertEqual([s.name for s in node], ["status", "server"])


class RoleLoadingTests(SynchronousTestCase):
    def test_absentRoleModule(self) -> None:
        """
        A role whose module does not exist yet is a one-line ConfigError, not an ImportError.
        """
        exc = self.assertRaises(
            ConfigError, loadRoleModule, "relay", {"relay": "teredonode.roles.nosuchmodule"}
        )
        self.assertEqual(str(exc), "role 'relay' is not implemented in this version")

    def test_moduleWithoutMakeRole(self) -> None:
        exc = self.assertRaises(ConfigError, loadRoleModule, "relay", {"relay": "teredonode.errors"})
        self.assertIn("not implemented", str(exc))

    def test_brokenImportInsideModulePropagates(self) -> None:
        """
        An ImportError raised by an existing module is a bug and must not be disguised.
        """
        path = tempdir(self)
        Path(path, "teredo_broken_role.py").write_text("import teredo_missing_dependency\n")
        self.patch(sys, "path", [path] + sys.path)
        self.addCleanup(sys.modules.pop, "teredo_broken_role", None)
        exc = self.assertRaises(
            ModuleNotFoundError, loadRoleModule, "relay", {"relay": "teredo_broken_role"}
        )
        self.assertEqual(exc.name, "teredo_missing_dependency")

    def test_checkRolesThroughOptions(self) -> None:
        self.patch(teredonode.roles, "ROLE_MODULES", dict(teredonode.roles.ROLE_MODULES, relay="teredonode.roles.nosuch"))
        exc = self.assertRaises(tap.ConfigExit, tap.Options().parseOptions, ["--role", "relay"])
        self.assertEqual(exc.code, "twistd teredo: role 'relay' is not implemented in this version")

    def test_checkRolesPasses(self) -> None:
        config = parse_config(SERVER)
        checkRoles(config, {"server": __name__})


class _ClockListeningOnUnix(Clock):
    """
    A Clock for timing whose status socket is a real one (the node listens on it at start).
    """

    def listenUNIX(self, *args: Any, **kwargs: Any) -> Any:
        return reactor.listenUNIX(*args, **kwargs)  # type: ignore[attr-defined]


class NodeTests(TestCase):
    def setUp(self) -> None:
        self.dir = tempdir(self)
        self.socketPath = os.path.join(self.dir, "run", "status.sock")
        self.config = parse_config(SERVER, "x.toml", overrides={"status-socket": self.socketPath})

    def test_rolesGetSettingsAndReactor(self) -> None:
        clock = Clock()
        node = makeNode(self.config, clock, {"server": __name__})
        role = node.roles["server"]
        self.assertIsInstance(role.settings, ServerSettings)
        self.assertIs(role.reactor, clock)
        self.assertTrue(verifyObject(IStatusSource, node))
        self.assertIs(IService(role).parent, node)

    def test_statusDocument(self) -> None:
        clock = _ClockListeningOnUnix()
        clock.advance(100)
        node = TeredoNode(self.config, clock, {"server": __name__})
        node.startService()
        self.addCleanup(node.stopService)
        clock.advance(42.5)
        document = node.status()
        self.assertEqual(list(document), ["node", "server"])
        self.assertEqual(document["node"]["version"], teredonode.__version__)
        self.assertEqual(document["node"]["uptime"], 42.5)
        self.assertEqual(document["node"]["roles"], ["server"])
        self.assertEqual(document["node"]["config"], "x.toml")
        self.assertEqual(document["server"]["primary"], "192.0.2.1")

    def test_failingRoleStatusIsolated(self) -> None:
        node = TeredoNode(self.config, Clock(), {"server": __name__})

        def broken() -> dict[str, Any]:
            raise KeyError("x")

        node.roles["server"].status = broken
        document = node.status()
        self.assertEqual(document["server"]["state"], "error")
        self.assertIn("version", document["node"])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    @inlineCallbacks
    def test_runningNodeServesStatus(self):
        """
        Started for real, the node serves node + role status on its socket.
        """
        node = makeNode(self.config, reactor, {"server": __name__})
        node.privilegedStartService()
        node.startService()
        self.addCleanup(node.stopService)
        document = yield deferToThread(read_status, self.socketPath)
        self.assertEqual(document["node"]["roles"], ["server"])
        self.assertIs(document["node"]["running"], True)
        self.assertEqual(document["server"]["drops"], {"rate limited": 2})
        yield node.stopService()
        self.assertFalse(os.path.exists(self.socketPath))


class TwistdTests(SynchronousTestCase):
    """
    The real C{twistd} in a subprocess: what an operator sees.
    """

    def twistd(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        # Find the dropin in this checkout whatever way the package is installed.
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        return subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *args],
            cwd=tempdir(self),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_helpListsOptions(self) -> None:
        result = self.twistd("teredo", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in ("--role", "--config", "--status-socket", "--primary", "--server"):
            self.assertIn(option, result.stdout)

    def test_missingConfig(self) -> None:
        result = self.twistd("-n", "--pidfile=", "teredo", "--config", "/nonexistent/teredo.toml")
        self.assertNotEqual(result.returncode, 0)
        output = result.stdout + result.stderr
        self.assertNotIn("Traceback", output)
        self.assertEqual(result.stdout, "")
        self.assertEqual(result.stderr, "twistd teredo: /nonexistent/teredo.toml: no such file\n")

    def test_badValue(self) -> None:
        bad = os.path.join(tempdir(self), "bad.toml")
        Path(bad).write_text('[relay]\nenabled = true\nport = 70000\n')
        result = self.twistd("-n", "--pidfile=", "teredo", "-c", bad)
        self.assertEqual(result.returncode, 1)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr.splitlines(), [f"twistd teredo: {bad}: [relay] port: 70000 is out of range (port: 0..65535)"]
        )
