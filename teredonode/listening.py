"""
One shape for the node's listening services (the status socket, the metrics endpoint).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort

__all__ = ["ListeningService"]


class ListeningService(Service):
    """
    A service that listens while running, bound in C{privilegedStartService} like Twisted's
    own servers: the socket can then be one only root may open (a root-owned directory, a
    port below 1024) although twistd drops privileges afterwards.  Started without the
    privileged phase (tests, tools), it binds in C{startService}.

    Subclasses implement L{listen}.
    """

    port: IListeningPort | None = None

    def listen(self) -> IListeningPort:
        """Open the listening socket (once)."""
        raise NotImplementedError

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self._bind()

    def startService(self) -> None:
        Service.startService(self)
        self._bind()

    def _bind(self) -> None:
        if self.port is None:
            self.port = self.listen()

    def stopService(self) -> Any:
        Service.stopService(self)
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None
