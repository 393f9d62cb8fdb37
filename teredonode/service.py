# -*- test-case-name: tests.unit.test_tap -*-
"""
Putting a node together: the enabled roles and the status server under one L{MultiService}.

This is the only place that turns a L{NodeConfig} into running things.  Role modules are
imported here, lazily and by name (L{teredonode.roles.ROLE_MODULES}), so that a node running
only a server never imports the client, and so that a role that does not exist yet in this
version is a one-line configuration error rather than an C{ImportError} traceback.

Log level: C{[node] log-level} applies to every message teredonode emits, through the
filter in L{teredonode.logs} (whose L{Logger} every module uses).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import threading
from types import ModuleType
from types import MappingProxyType
from typing import Any, Collection, Mapping

from twisted.application.service import IService, MultiService
from zope.interface import implementer

import teredonode
from teredonode.config import NO_FILE, NodeConfig, load_config
from teredonode.errors import ConfigError, TeredoError
from teredonode.interfaces import IStatusSource
from teredonode.logs import Logger, logFilter, logObserver, setLogLevel
from teredonode.privilege import Privileges
import teredonode.roles as _roles
from teredonode.status import StatusService

__all__ = [
    "TeredoNode",
    "makeNode",
    "loadRoleModule",
    "checkRoles",
    "logFilter",
    "logObserver",
]

def loadRoleModule(name: str, registry: Mapping[str, str] | None = None) -> ModuleType:
    """
    Import the module implementing role C{name}.

    @param registry: role name -> module name; L{teredonode.roles.ROLE_MODULES} (looked up at
        call time, so tests can substitute it) when C{None}.

    A module that is simply absent means "not in this version": a L{ConfigError}.  An
    C{ImportError} raised from inside an existing module is a bug and propagates as is.
    """
    if registry is None:
        registry = _roles.ROLE_MODULES
    modname = registry.get(name)
    if modname is None:
        raise ConfigError(f"role {name!r} is unknown (known: {', '.join(registry)})")
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name is not None and (modname == e.name or modname.startswith(e.name + ".")):
            raise ConfigError(f"role {name!r} is not implemented in this version") from None
        raise
    if not callable(getattr(module, "makeRole", None)):
        raise ConfigError(
            f"role {name!r} is not implemented in this version ({modname} has no makeRole)"
        )
    return module


def checkRoles(config: NodeConfig, registry: Mapping[str, str] | None = None) -> None:
    """
    Fail early, at option parsing, if a configured role cannot be loaded.
    """
    for name in config.roles:
        loadRoleModule(name, registry)


@implementer(IStatusSource)
class TeredoNode(MultiService):
    """
    The whole node: one child service per running role, plus the status server.

    @ivar roles: the role objects by name, in start order.
    @ivar statusService: the L{StatusService} serving L{status}.
    """

    log = Logger()

    def __init__(
        self,
        config: NodeConfig,
        reactor: Any,
        registry: Mapping[str, str] | None = None,
        loader: Any = None,
        privileges: Privileges | None = None,
    ) -> None:
        MultiService.__init__(self)
        self.config = config
        #: Whom the node runs as once open, and what it keeps (see L{teredonode.privilege}).
        self.privileges = privileges if privileges is not None else Privileges(None, frozenset())
        self._reactor = reactor
        #: Reads the configuration again for L{reload} (the file with the same roles).
        self.loader = loader if loader is not None else self._readAgain
        self._previousHup: Any = None
        self._startedAt: float | None = None
        setLogLevel(config.node.log_level)

        # The status server comes first so it is up while roles start, and goes last.
        self.statusService = StatusService(
            config.node.status_socket, self, reactor, mode=config.node.status_mode
        )
        self.statusService.setName("status")  # type: ignore[no-untyped-call]
        self.statusService.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.metricsService: Any = None
        if config.node.metrics:
            from teredonode.metrics import MetricsService

            self.metricsService = MetricsService(config.node.metrics, self, reactor)
            self.metricsService.setName("metrics")
            self.metricsService.setServiceParent(self)

        self.roles: dict[str, Any] = {}
        for name, settings in config.roles.items():
            module = loadRoleModule(name, registry)
            role = module.makeRole(settings, reactor)
            service = IService(role)
            service.setName(name)
            service.setServiceParent(self)
            self.roles[name] = role

    def privilegedStartService(self) -> None:
        self.privileges.beforeStart()
        MultiService.privilegedStartService(self)
        self.privileges.giveFile(self.statusService.path)
        self.privileges.afterOpen()

    def startService(self) -> None:
        dropped = self.privileges.complete()
        if dropped is not None:
            self.log.info("{dropped}", dropped=dropped)
        self._startedAt = self._reactor.seconds()
        MultiService.startService(self)
        self._installReload()
        self.log.info(
            "teredonode {version} running {roles}",
            version=teredonode.__version__,
            roles=", ".join(self.roles),
        )

    def stopService(self) -> Any:
        if self._previousHup is not None:
            signal.signal(signal.SIGHUP, self._previousHup)
            self._previousHup = None
        return MultiService.stopService(self)

    # -- reload (SIGHUP) ---------------------------------------------------------------------

    def _installReload(self) -> None:
        """
        SIGHUP re-reads the configuration, on a real reactor in the main thread only.
        """
        call = getattr(self._reactor, "callFromThread", None)
        if call is None or not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
            return
        self._previousHup = signal.signal(signal.SIGHUP, lambda *_: call(self.reload))

    def _readAgain(self) -> NodeConfig:
        if self.config.source == NO_FILE:
            raise ConfigError("there is no configuration file to read again")
        return load_config(self.config.source, roles=list(self.config.roles))

    def reload(self) -> tuple[list[str], list[str]]:
        """
        Read the configuration again and apply what can change while running, without
        stopping a role (peers, qualification and sockets are kept): C{[node] log-level} and
        C{metrics}, and each role's C{liveSettings} (its C{reconfigure}).  What needs a
        restart keeps its running value and is named in one log line.  A configuration that
        does not load changes nothing.

        @return: the settings applied and the settings that need a restart, as
            C{"[table] key"}.
        """
        try:
            new = self.loader()
        except TeredoError as e:
            self.log.error("reload: {error}; the running configuration stays", error=str(e))
            return [], []
        applied: list[str] = []
        restart: list[str] = []
        node = self._reloadNode(new.node, applied, restart)
        roles = dict(self.config.roles)
        if set(new.roles) != set(roles):
            restart.append("enabled roles")
        for name in roles.keys() & new.roles.keys():
            old, wanted = roles[name], new.roles[name]
            changed = _changed(old, wanted)
            if not changed:
                continue
            role = self.roles[name]
            live: Collection[str] = getattr(role, "liveSettings", ())
            keep = {key: getattr(old, key) for key in changed if key not in live}
            merged = dataclasses.replace(wanted, **keep)
            if len(keep) < len(changed):
                try:
                    role.reconfigure(merged)
                except Exception:
                    # A bug, but the role keeps running on what it had: say so, go on.
                    self.log.failure("reload: [{role}] could not apply its settings", role=name)
                    restart += [f"[{name}] {_key(k)}" for k in changed]
                    continue
            roles[name] = merged
            applied += [f"[{name}] {_key(k)}" for k in changed if k in live]
            restart += [f"[{name}] {_key(k)}" for k in changed if k not in live]
        self.config = dataclasses.replace(self.config, node=node, roles=MappingProxyType(roles))
        # A warning when the file now says something that is not in effect.
        (self.log.warn if restart else self.log.info)(
            "reload: applied {applied}; needs a restart to change: {restart}",
            applied=", ".join(applied) or "nothing",
            restart=", ".join(restart) or "nothing",
        )
        return applied, restart

    def _reloadNode(self, wanted: Any, applied: list[str], restart: list[str]) -> Any:
        old = self.config.node
        keep: dict[str, Any] = {}
        for key in _changed(old, wanted):
            if key == "log_level":
                setLogLevel(wanted.log_level)
            elif key == "metrics":
                self._replaceMetrics(wanted.metrics)
            else:
                keep[key] = getattr(old, key)
                restart.append(f"[node] {_key(key)}")
                continue
            applied.append(f"[node] {_key(key)}")
        return dataclasses.replace(wanted, **keep)

    def _replaceMetrics(self, address: str) -> None:
        if self.metricsService is not None:
            self.removeService(self.metricsService)  # type: ignore[no-untyped-call]
            self.metricsService = None
        if address:
            from teredonode.metrics import MetricsService

            self.metricsService = MetricsService(address, self, self._reactor)
            self.metricsService.setName("metrics")
            self.metricsService.setServiceParent(self)

    def status(self) -> dict[str, Any]:
        """
        The combined status document: C{node} first, then each role under its own name.
        A role whose C{status()} fails is reported as such; the others still are.
        """
        uptime = 0.0 if self._startedAt is None else self._reactor.seconds() - self._startedAt
        document: dict[str, Any] = {
            "node": {
                "version": teredonode.__version__,
                "pid": os.getpid(),
                "config": self.config.source,
                "roles": list(self.roles),
                "uptime": round(max(uptime, 0.0), 3),
                "running": bool(self.running),
                "log-level": self.config.node.log_level,
            }
        }
        for name, role in self.roles.items():
            try:
                document[name] = role.status()
            except Exception as e:
                self.log.failure("status of role {role} failed", role=name)
                document[name] = {"state": "error", "error": f"{type(e).__name__}: {e}"}
        return document


def _changed(old: Any, new: Any) -> list[str]:
    """
    The settings (dataclass field names) whose values differ.
    """
    return [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def _key(field: str) -> str:
    return field.replace("_", "-")


def makeNode(
    config: NodeConfig,
    reactor: Any = None,
    registry: Mapping[str, str] | None = None,
    loader: Any = None,
    privileges: Privileges | None = None,
) -> TeredoNode:
    """
    Build the node for C{config}; C{reactor} defaults to the global one.  C{loader} reads
    the configuration again on SIGHUP (the same file, roles and command-line overrides).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    return TeredoNode(config, reactor, registry, loader, privileges)
