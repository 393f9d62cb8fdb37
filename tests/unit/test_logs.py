"""
L{teredonode.logs}: C{[node] log-level} filters every message teredonode emits, the roles'
own included (their loggers once published to the global publisher directly).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any, cast

from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.logger import Logger as TwistedLogger
from twisted.trial.unittest import SynchronousTestCase

import teredonode
from teredonode.config import NodeConfig, NodeSettings
from teredonode.logs import Logger, logFilter, logObserver, setLogLevel
from teredonode.roles import ROLE_MODULES


def _modules() -> list[ModuleType]:
    """
    Every teredonode module except the lab (a test tool with its own output).
    """
    names = [m.name for m in pkgutil.walk_packages(teredonode.__path__, "teredonode.")]
    return [importlib.import_module(n) for n in names if not n.startswith("teredonode.lab")]


class LogLevelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.addCleanup(setLogLevel, "info")

    def loggers(self) -> dict[str, TwistedLogger]:
        found = {}
        for module in _modules():
            for name, value in vars(module).items():
                if isinstance(value, TwistedLogger):
                    found[f"{module.__name__}.{name}"] = value
                elif isinstance(value, type) and value.__module__ == module.__name__:
                    log = getattr(value, "log", None)
                    if isinstance(log, TwistedLogger):
                        found[f"{module.__name__}.{name}.log"] = log
        return found

    def test_every_logger_goes_through_the_filter(self) -> None:
        found = self.loggers()
        for role in ROLE_MODULES.values():
            self.assertTrue(any(k.startswith(role + ".") for k in found), f"no logger found in {role}")
        for where, log in found.items():
            self.assertIsInstance(log, Logger, where)
            self.assertIs(log.observer, logObserver, where)

    def test_error_level_silences_a_role_warning(self) -> None:
        from teredonode.roles.client import TeredoClient

        setLogLevel("error")
        TeredoClient.log.warn("a client warning")
        TeredoClient.log.error("a client error")
        self.assertEqual([e["log_format"] for e in self.events], ["a client error"])
        setLogLevel("info")
        TeredoClient.log.warn("a client warning")
        self.assertEqual(self.events[-1]["log_level"], LogLevel.warn)

    def test_node_applies_config_level(self) -> None:
        from twisted.internet.task import Clock

        from teredonode.service import TeredoNode

        config = NodeConfig(source="t.toml", node=NodeSettings(log_level="error"))
        TeredoNode(config, Clock(), registry={})
        self.assertEqual(logFilter.logLevelForNamespace("teredonode.roles.server.TeredoServer"), LogLevel.error)

    def test_namespace_is_the_callers_module(self) -> None:
        self.assertEqual(Logger().namespace, __name__)
