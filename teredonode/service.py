# -*- test-case-name: tests.unit.test_tap -*-
"""
Putting a node together: the enabled roles and the status server under one L{MultiService}.

This is the only place that turns a L{NodeConfig} into running things.  Role modules are
imported here, lazily and by name (L{teredonode.roles.ROLE_MODULES}), so that a node running
only a server never imports the client, and so that a role that does not exist yet in this
version is a one-line configuration error rather than an C{ImportError} traceback.

Log level: twistd installs its own log observer and has no level option, so C{[node]
log-level} is applied to the messages teredonode itself emits.  Modules log through
L{logObserver}::

    log = Logger(observer=teredonode.service.logObserver)

which filters on L{logFilter} before passing events on to the global publisher.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Mapping

from twisted.application.service import IService, MultiService
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogPublisher,
)
from zope.interface import implementer

import teredonode
from teredonode.config import NodeConfig
from teredonode.errors import ConfigError
from teredonode.interfaces import IStatusSource
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

#: The level filter for teredonode's own messages; L{TeredoNode} sets it from C{[node]}.
logFilter = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
#: The observer teredonode's loggers publish to: L{logFilter}, then the global publisher.
logObserver = FilteringLogObserver(globalLogPublisher, [logFilter])


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

    log = Logger(observer=logObserver)

    def __init__(
        self,
        config: NodeConfig,
        reactor: Any,
        registry: Mapping[str, str] | None = None,
        privileges: Privileges | None = None,
    ) -> None:
        MultiService.__init__(self)
        self.config = config
        #: Whom the node runs as once open, and what it keeps (see L{teredonode.privilege}).
        self.privileges = privileges if privileges is not None else Privileges(None, frozenset())
        self._reactor = reactor
        self._startedAt: float | None = None
        logFilter.setLogLevelForNamespace("", LogLevel.levelWithName(config.node.log_level))

        # The status server comes first so it is up while roles start, and goes last.
        self.statusService = StatusService(
            config.node.status_socket, self, reactor, mode=config.node.status_mode
        )
        self.statusService.setName("status")
        self.statusService.setServiceParent(self)

        self.roles: dict[str, Any] = {}
        for name, settings in config.roles.items():
            module = loadRoleModule(name, registry)
            role = module.makeRole(settings, config.node, reactor)
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
        self.log.info(
            "teredonode {version} running {roles}",
            version=teredonode.__version__,
            roles=", ".join(self.roles),
        )

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


def makeNode(
    config: NodeConfig,
    reactor: Any = None,
    registry: Mapping[str, str] | None = None,
    privileges: Privileges | None = None,
) -> TeredoNode:
    """
    Build the node for C{config}; C{reactor} defaults to the global one.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    return TeredoNode(config, reactor, registry, privileges)
