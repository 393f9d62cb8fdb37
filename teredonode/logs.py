"""
The level filter every teredonode message goes through, and the L{Logger} that uses it.

twistd installs its own log observer and has no level option, so C{[node] log-level} is
applied here: teredonode's loggers publish to L{logObserver}, which drops events below
L{logFilter}'s level before passing the rest to the global publisher.  A module gets that by
importing this module's L{Logger} instead of Twisted's (same class, same use)::

    from teredonode.logs import Logger

    class Thing:
        log = Logger()

A plain C{twisted.logger.Logger} would publish to the global publisher directly and bypass
the level, which is why every module of teredonode takes its logger from here.

Syslog and journald: C{twistd --syslog} hands events to Twisted's legacy C{SyslogObserver},
which knows nothing of levels: every line would go out as C{user.info} (errors as
C{user.alert}) under the system C{[-]}.  So each teredonode event also carries its level the
way that observer reads it: C{syslogPriority} (warn is C{LOG_WARNING}, error C{LOG_ERR}, ...)
and C{system} (C{"teredonode.roles.server#warn"}, as in twistd's log file).  Under systemd,
C{/dev/log} is journald's, which keeps the priority (C{journalctl -p warning}) and the
C{--prefix} as C{SYSLOG_IDENTIFIER}.  Twisted's own lines keep Twisted's defaults.
"""

from __future__ import annotations

import sys
import syslog
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)
from twisted.logger import Logger as _TwistedLogger
from zope.interface import implementer

__all__ = ["Logger", "logFilter", "logObserver", "setLogLevel", "SYSLOG_PRIORITIES"]

#: The syslog priority of each level (C{twistd --syslog}, journald).
SYSLOG_PRIORITIES = {
    LogLevel.debug: syslog.LOG_DEBUG,
    LogLevel.info: syslog.LOG_INFO,
    LogLevel.warn: syslog.LOG_WARNING,
    LogLevel.error: syslog.LOG_ERR,
    LogLevel.critical: syslog.LOG_CRIT,
}


@implementer(ILogObserver)
class _Labelled:
    """
    Adds the level in the keys Twisted's syslog observer reads, then publishes globally.
    """

    def __call__(self, event: dict[str, Any]) -> None:
        level: LogLevel | None = event.get("log_level")
        if level is not None and level in SYSLOG_PRIORITIES:
            event.setdefault("syslogPriority", SYSLOG_PRIORITIES[level])
            event.setdefault("system", f"{event.get('log_namespace', '-')}#{level.name}")
        globalLogPublisher(event)


#: The level filter for teredonode's messages; the node sets it from C{[node] log-level}.
logFilter = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
#: The observer teredonode's loggers publish to: L{logFilter}, then the level labels, then
#: the global publisher.
logObserver = FilteringLogObserver(_Labelled(), [logFilter])


def setLogLevel(name: str) -> None:
    """
    Apply a C{[node] log-level} value (C{"debug"} .. C{"critical"}) to every teredonode
    message, at start and on reload.
    """
    logFilter.setLogLevelForNamespace("", LogLevel.levelWithName(name))


class Logger(_TwistedLogger):
    """
    A Twisted L{Logger} whose default observer is L{logObserver} (the level filter).
    """

    def __init__(
        self,
        namespace: str | None = None,
        source: object | None = None,
        observer: ILogObserver | None = None,
    ) -> None:
        if namespace is None:
            namespace = sys._getframe(1).f_globals.get("__name__", "<unknown>")
        _TwistedLogger.__init__(self, namespace, source, logObserver if observer is None else observer)
