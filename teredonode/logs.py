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
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)
from twisted.logger import Logger as _TwistedLogger

__all__ = ["Logger", "logFilter", "logObserver", "setLogLevel"]

#: The level filter for teredonode's messages; the node sets it from C{[node] log-level}.
logFilter = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
#: The observer teredonode's loggers publish to: L{logFilter}, then the global publisher.
logObserver = FilteringLogObserver(globalLogPublisher, [logFilter])


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
