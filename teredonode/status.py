# -*- test-case-name: tests.unit.test_cli -*-
"""
The node's status, served as one JSON document per connection on a local UNIX socket.

Why a UNIX socket and not HTTP or a signal: it needs no port, file permissions decide who may
read it (mode 0660 by default, so the group of the node can), and C{teredo status} can read it
with nothing but the standard library.  The protocol is the simplest that can work: connect,
read until EOF, parse.  There is no request, so nothing a client sends can reach the node.

The document is C{{"node": {...}, "<role>": {...}, ...}}: the node's own mapping (version,
uptime, roles) followed by each role's L{IStatusSource.status}.  Roles are encouraged to use
the same shape so C{teredo status} renders them alike::

    {"state": "qualified", "address": "2001:0:...", "counters": {"packets-in": 12},
     "drops": {"bad checksum": 3}}
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from collections.abc import Mapping
from typing import Any

from teredonode.listening import ListeningService
from twisted.internet.interfaces import IListeningPort, IReactorUNIX
from twisted.internet.protocol import Factory, Protocol
from teredonode.logs import Logger
from zope.interface import implementer

from teredonode.errors import TeredoError, os_error_line
from teredonode.interfaces import IStatusSource

__all__ = [
    "StatusUnavailable",
    "StatusProtocol",
    "StatusFactory",
    "StatusService",
    "render_status",
    "read_status",
    "prepare_socket_path",
    "StaticStatus",
]

_log = Logger()

#: A status document bigger than this is not one we produced; stop reading.
MAX_DOCUMENT = 4 * 1024 * 1024


class StatusUnavailable(TeredoError):
    """
    The status socket could not be read: absent, refused, not ours, or the reply is not JSON.
    """


def render_status(source: IStatusSource) -> bytes:
    """
    One status document as UTF-8 JSON bytes with a trailing newline.

    A failing C{status()} must not take the node down nor leave the reader hanging, so the
    failure is logged and reported in the document instead.
    """
    try:
        document = source.status()
        return json.dumps(document, sort_keys=False, default=str).encode("utf-8") + b"\n"
    except Exception as e:
        _log.failure("status source failed")
        return json.dumps({"error": f"status unavailable: {type(e).__name__}: {e}"}).encode() + b"\n"


class StatusProtocol(Protocol):
    """
    Writes the status document as soon as a reader connects, then closes.
    """

    log = Logger()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(render_status(self.factory.source))
        self.transport.loseConnection()


class StatusFactory(Factory):
    """
    Builds L{StatusProtocol}s reporting C{source}.
    """

    protocol = StatusProtocol

    def __init__(self, source: IStatusSource) -> None:
        self.source = source


def prepare_socket_path(path: str) -> None:
    """
    Make C{path} bindable: create its parent directory and remove a stale socket.

    A socket file left by a node that died is removed; one that still answers belongs to a
    running node and is left alone, as is anything that is not a socket, because deleting an
    operator's file by mistake is worse than refusing to start.

    @raise TeredoError: a one-line reason when C{path} cannot be used.
    """
    parent = os.path.dirname(path) or "."
    try:
        os.makedirs(parent, mode=0o755, exist_ok=True)
    except OSError as e:
        raise TeredoError(f"status socket {path}: cannot create {parent}: {e.strerror}") from None
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise TeredoError(f"status socket {path}: exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise TeredoError(f"status socket {path}: {e.strerror}") from None
    else:
        raise TeredoError(f"status socket {path}: another node is serving status there")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class StatusService(ListeningService):
    """
    Listens on the status socket while running.

    The socket is bound in C{privilegedStartService}, like Twisted's own servers, so it can
    live in a root-owned C{/run/teredonode} even when twistd drops privileges afterwards.
    """

    log = Logger()

    def __init__(
        self, path: str, source: IStatusSource, reactor: IReactorUNIX, mode: int = 0o660
    ) -> None:
        self.path = path
        self.source = source
        self.mode = mode
        self._reactor = reactor

    def listen(self) -> IListeningPort:
        prepare_socket_path(self.path)
        port: IListeningPort = self._reactor.listenUNIX(self.path, StatusFactory(self.source), mode=self.mode)
        # listenUNIX applies the mode after bind(); make sure, since umask can only narrow it.
        os.chmod(self.path, self.mode)
        self.log.info("status on {path}", path=self.path)
        return port


@implementer(IStatusSource)
class StaticStatus:
    """
    A fixed status document: for tests and tools that want to serve a snapshot.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def status(self) -> dict[str, Any]:
        return self.document


#: What a failed connect to the status socket means, by error class.
_CONNECT_ERRORS: Mapping[type[OSError], str] = {
    FileNotFoundError: "no status socket (is the node running?)",
    ConnectionRefusedError: "connection refused (stale socket; node not running?)",
    PermissionError: "permission denied (need to be in the node's group?)",
}
#: ... and a failed read of its document.
_RECEIVE_ERRORS: Mapping[type[OSError], str] = {TimeoutError: "timed out waiting for status"}


def read_status(path: str, timeout: float = 5.0) -> dict[str, Any]:
    """
    Connect to the status socket at C{path} and return the document it sends.

    Blocking on purpose: the C{teredo} command runs without a reactor.

    @raise StatusUnavailable: one-line reason (no such socket, refused, timeout, bad JSON).
    """
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    chunks: list[bytes] = []
    size = 0
    try:
        try:
            client.connect(path)
        except OSError as e:
            raise StatusUnavailable(f"{path}: {os_error_line(e, _CONNECT_ERRORS)}") from None
        while True:
            try:
                chunk = client.recv(65536)
            except OSError as e:
                raise StatusUnavailable(f"{path}: {os_error_line(e, _RECEIVE_ERRORS)}") from None
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_DOCUMENT:
                raise StatusUnavailable(f"{path}: status document too large")
            chunks.append(chunk)
    finally:
        client.close()
    try:
        document = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise StatusUnavailable(f"{path}: the reply is not a JSON status document") from None
    if not isinstance(document, dict):
        raise StatusUnavailable(f"{path}: the reply is not a JSON status document")
    return document
