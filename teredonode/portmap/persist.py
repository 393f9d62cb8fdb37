# -*- test-case-name: tests.protocol.test_portmap_persist -*-
"""
RFC 6081's Persisted UPnP-Mapped Port (section 5.3.1, X-UPNP-02): the port mapping the
client made, kept in a small file so that a client that died without deleting it (a crash,
a power cut, C{kill -9}) deletes it at its next start before mapping again (section 5.3.3,
X-UPNP-03).  A UPnP mapping has lease 0 and lives until deleted, so without this a crash
leaves a port forwarded to this host for good.

The same record serves PCP and NAT-PMP mappings (the client's one code path,
L{teredonode.portmap.client.GatewayPortMapping}): their mappings expire on their own, but an
early delete frees the port at once, and PCP's delete needs the mapping's nonce (RFC 6887
section 15), which is kept here for that.

The file is one small JSON object, written atomically (a temporary file renamed over it), mode
0600.  Its content is trusted no more than a packet: anything that is not exactly the layout
below is one log line and counts as "no persisted port" (zero, the RFC's default) — it can
never stop the client, and the worst a forged file can do is make the client ask its own
router to delete one UDP mapping of this host.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from teredonode.logs import Logger
from teredonode.portmap.base import PROTOCOLS

__all__ = ["PersistedMapping", "PortMapState", "decode", "encode"]

#: The largest file read: a record is under 200 bytes.
MAX_SIZE = 4096


@dataclass(frozen=True)
class PersistedMapping:
    """
    What deleting a mapping made by an earlier process needs.

    @ivar protocol: C{"pcp"}, C{"natpmp"} or C{"upnp"}: the deletion goes to that mapper.
    @ivar port: the mapped (external) port: the RFC's Persisted UPnP-Mapped Port.  With UPnP
        it is the local port (X-UPNP-06); PCP and NAT-PMP may have chosen another.
    @ivar localPort: the internal port, which PCP and NAT-PMP deletions name.
    @ivar nonce: the PCP mapping's nonce (12 bytes), C{b""} for the other protocols.
    """

    protocol: str
    port: int
    localPort: int
    nonce: bytes = b""


def encode(record: PersistedMapping) -> bytes:
    """
    The file's bytes for C{record}.
    """
    value: dict[str, object] = {
        "protocol": record.protocol,
        "port": record.port,
        "local-port": record.localPort,
    }
    if record.nonce:
        value["nonce"] = record.nonce.hex()
    return json.dumps(value, sort_keys=True).encode("ascii") + b"\n"


def _port(value: object) -> int:
    if type(value) is not int or not 0 < value < 65536:
        raise ValueError("a port is an integer 1..65535")
    return value


def decode(data: bytes) -> PersistedMapping:
    """
    The record in C{data}.

    @raise ValueError: anything but a well-formed record (a one-line reason).
    """
    if len(data) > MAX_SIZE:
        raise ValueError(f"over {MAX_SIZE} bytes")
    try:
        value = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("not a JSON document") from None
    if not isinstance(value, dict) or set(value) - {"protocol", "port", "local-port", "nonce"}:
        raise ValueError("not a port mapping record")
    protocol = value.get("protocol")
    if protocol not in PROTOCOLS:
        raise ValueError("unknown protocol")
    nonce = value.get("nonce", "")
    if not isinstance(nonce, str) or len(nonce) not in (0, 24):
        raise ValueError("a nonce is 24 hexadecimal digits")
    try:
        raw = bytes.fromhex(nonce)
    except ValueError:
        raise ValueError("a nonce is 24 hexadecimal digits") from None
    return PersistedMapping(str(protocol), _port(value.get("port")), _port(value.get("local-port")), raw)


class PortMapState:
    """
    The state file: read once at start, written when a mapping is made, removed once it is
    deleted.

    Whoever the node runs as must be able to replace and remove the file: it lives in
    C{[node] state-dir}, which the node creates for its user (systemd's C{StateDirectory=}
    in the shipped unit), and it is written after the privilege drop (mappings are made in
    C{startService}).  Replacing and removing need only the directory's write permission,
    so even a file left by an earlier run as root is replaced; only reading it may fail,
    which is the "unreadable" case: one line, zero.

    @param path: the file; C{None} or C{""}: the Persisted UPnP-Mapped Port is not
        supported (the RFC's "if supported"), every method does nothing.
    """

    log = Logger()

    def __init__(self, path: str | None) -> None:
        self.path = path or None

    def load(self) -> PersistedMapping | None:
        """
        The persisted mapping, or C{None} for zero: no file, persistence off, or a file that
        cannot be read or decoded (logged once, here).
        """
        if self.path is None:
            return None
        try:
            # Bytes: a text-mode open would look a codec up, an import an unprivileged node
            # may no longer be able to make.
            with open(self.path, "rb") as f:
                data = f.read(MAX_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            self.log.warn(
                "Persisted port mapping {path} unreadable ({error}); taken as none",
                path=self.path, error=e.strerror or type(e).__name__,
            )
            return None
        try:
            return decode(data)
        except ValueError as e:
            self.log.warn("Persisted port mapping {path} ignored: {reason}", path=self.path, reason=str(e))
            return None

    def save(self, record: PersistedMapping) -> None:
        """
        Persist C{record} (X-UPNP-06: "and Persisted UPnP-Mapped Port").  A failure is one
        log line: the mapping itself is fine, only a crash would then leave it behind.
        """
        if self.path is None:
            return
        temporary = f"{self.path}.new"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, encode(record))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as e:
            self.log.warn(
                "Port mapping not persisted to {path}: {error}",
                path=self.path, error=e.strerror or type(e).__name__,
            )

    def clear(self) -> None:
        """
        Zero the persisted port (the mapping is deleted): the file goes.
        """
        if self.path is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log.warn(
                "Persisted port mapping {path} not removed: {error}",
                path=self.path, error=e.strerror or type(e).__name__,
            )
