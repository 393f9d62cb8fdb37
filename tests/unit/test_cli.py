"""
Tests for the C{teredo} command (L{teredonode.cli}) and the status socket it reads
(L{teredonode.status}), the latter over a real UNIX socket in a temporary directory.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import socket
import stat
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorUNIX
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from teredonode import cli
from teredonode.errors import TeredoError
from teredonode.interfaces import IStatusSource
from teredonode.status import (
    StaticStatus,
    StatusFactory,
    StatusService,
    StatusUnavailable,
    prepare_socket_path,
    read_status,
)

RFC_VECTOR = "2001:0:4136:e378:8000:63bf:3fff:fdd2"

DOCUMENT: dict[str, Any] = {
    "node": {"version": "0.1.0", "uptime": 3723.5, "roles": ["server"], "running": True},
    "server": {
        "state": "serving",
        "primary": "192.0.2.1",
        "counters": {"rs-received": 12, "ra-sent": 11},
        "drops": {"rate limited": 1, "bad checksum": 0},
    },
}


def run(*argv: str) -> tuple[int, str, str]:
    """
    Run C{teredo argv...} in-process; return (status, stdout, stderr).
    """
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def tempdir(case: SynchronousTestCase) -> str:
    """
    A short private directory (UNIX socket paths are limited to 107 bytes), removed after.
    """
    path = tempfile.mkdtemp(prefix="teredo-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


class DecodeTests(SynchronousTestCase):
    def test_rfcVector(self) -> None:
        """
        The RFC 4380 section 4 example decodes to its documented fields.
        """
        code, out, err = run("decode", RFC_VECTOR)
        self.assertEqual((code, err), (0, ""))
        lines = dict(
            (key.strip(), value.strip())
            for key, value in (line.split(" : ", 1) for line in out.splitlines())
        )
        self.assertEqual(lines["Server IPv4"], "65.54.227.120")
        self.assertEqual(lines["Cone (C)"], "yes")
        self.assertEqual(lines["Flags"], "0x8000")
        self.assertEqual(lines["Random bits (RFC 5991)"], "0x000")
        self.assertEqual(lines["z / U / G"], "0 / 0 / 0")
        self.assertEqual(lines["Mapped IPv4"], "192.0.2.45")
        self.assertEqual(lines["Mapped port"], "40000")
        self.assertEqual(lines["Prefix"], "2001::/32")

    def test_linesAligned(self) -> None:
        _, out, _ = run("decode", RFC_VECTOR)
        columns = {line.index(" : ") for line in out.splitlines()}
        self.assertEqual(len(columns), 1)

    def test_json(self) -> None:
        code, out, _ = run("decode", RFC_VECTOR, "--json")
        self.assertEqual(code, 0)
        fields = json.loads(out)
        self.assertEqual(fields["server"], "65.54.227.120")
        self.assertIs(fields["cone"], True)
        self.assertEqual(fields["flags"], 0x8000)
        self.assertEqual(fields["random-bits"], 0)
        self.assertEqual((fields["z"], fields["u"], fields["g"]), (False, False, False))
        self.assertEqual((fields["mapped-ipv4"], fields["mapped-port"]), ("192.0.2.45", 40000))

    def test_randomBitsAndUG(self) -> None:
        """
        RFC 5991 flags: Random1 (0x3C00) and Random2 (0x00FF) join into twelve bits; U, G, z
        are reported separately.
        """
        code, out, _ = run("decode", "2001:0:4136:e378:3f2a:63bf:3fff:fdd2", "--json")
        fields = json.loads(out)
        # 0x3f2a = 0011 1111 0010 1010: C=0 z=0 Random1=1111 U=1 G=1 Random2=0x2a
        self.assertEqual(fields["flags"], 0x3F2A)
        self.assertIs(fields["cone"], False)
        self.assertEqual(fields["random-bits"], 0xF2A)
        self.assertEqual((fields["z"], fields["u"], fields["g"]), (False, True, True))
        code, out, _ = run("decode", "2001:0:4136:e378:3f2a:63bf:3fff:fdd2")
        self.assertIn("0xf2a", out)
        self.assertIn("0 / 1 / 1", out)

    def test_notTeredo(self) -> None:
        code, out, err = run("decode", "2001:db8::1")
        self.assertEqual(code, 2)
        self.assertEqual(out, "")
        self.assertEqual(err, "teredo decode: 2001:db8::1 is not a Teredo address (not in 2001::/32)\n")

    def test_invalidAddress(self) -> None:
        for bad in ("zz", "192.0.2.1", "2001::1::2"):
            code, out, err = run("decode", bad)
            self.assertEqual((code, out), (2, ""))
            self.assertEqual(err.count("\n"), 1, err)
            self.assertIn("not an IPv6 address", err)

    def test_otherPrefix(self) -> None:
        address = "3ffe:831f:4136:e378:8000:63bf:3fff:fdd2"
        self.assertEqual(run("decode", address)[0], 2)
        code, out, _ = run("decode", address, "--prefix", "3ffe:831f::/32", "--json")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out)["prefix"], "3ffe:831f::/32")

    def test_badPrefixOption(self) -> None:
        code, _, err = run("decode", RFC_VECTOR, "--prefix", "2001::/48")
        self.assertEqual(code, 2)
        self.assertEqual(err.count("\n"), 1)

    def test_nonGlobalMapping(self) -> None:
        # mapped 10.0.0.1: ~ = f5ff:fffe
        _, out, _ = run("decode", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "--json")
        self.assertEqual(json.loads(out)["mapped-ipv4"], "10.0.0.1")
        self.assertIs(json.loads(out)["mapped-global"], False)


class UsageTests(SynchronousTestCase):
    def test_noCommand(self) -> None:
        self.assertEqual(cli.main([], out=io.StringIO(), err=io.StringIO()), 2)

    def test_unexpectedErrorIsOneLine(self) -> None:
        """
        A bug shows as one line, not a traceback (TEREDO_DEBUG=1 would re-raise).
        """

        def boom(*a: object) -> None:
            raise RuntimeError("kaboom")

        self.patch(cli, "_decode", boom)
        self.patch(os, "environ", {})
        code, _, err = run("decode", RFC_VECTOR)
        self.assertEqual(code, 1)
        self.assertEqual(err, "teredo internal error: RuntimeError: kaboom (TEREDO_DEBUG=1 shows details)\n")

    def test_teredoErrorIsOneLine(self) -> None:
        def fail(*a: object) -> None:
            raise TeredoError("it broke")

        self.patch(cli, "_status", fail)
        code, _, err = run("status")
        self.assertEqual((code, err), (1, "teredo it broke\n"))


class LabTests(SynchronousTestCase):
    def test_delegates(self) -> None:
        """
        Everything after "lab" goes, unparsed, to teredonode.lab.cli.main.
        """
        seen = []

        class FakeLab:
            @staticmethod
            def main(argv: list[str]) -> int:
                seen.append(argv)
                return 7

        self.patch(importlib, "import_module", lambda name: FakeLab if name == "teredonode.lab.cli" else None)
        self.assertEqual(run("lab", "up", "--json", "-x")[0], 7)
        self.assertEqual(seen, [["up", "--json", "-x"]])

    def test_labAbsent(self) -> None:
        def missing(name: str) -> None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        self.patch(importlib, "import_module", missing)
        code, out, err = run("lab", "up")
        self.assertEqual(code, 1)
        self.assertEqual(err, "teredo lab: the network lab is not available in this installation\n")

    def test_labSystemExit(self) -> None:
        class FakeLab:
            @staticmethod
            def main(argv: list[str]) -> int:
                raise SystemExit(2)

        self.patch(importlib, "import_module", lambda name: FakeLab)
        self.assertEqual(run("lab", "--bogus")[0], 2)


class FormatStatusTests(SynchronousTestCase):
    def test_humanReadable(self) -> None:
        text = cli.format_status(DOCUMENT)
        lines = text.splitlines()
        self.assertEqual(lines[0], "Teredo node")
        self.assertIn("  Uptime  : 1h 02m 03s", lines)
        self.assertIn("  Roles   : server", lines)
        self.assertIn("  Running : yes", lines)
        self.assertIn("Role server", lines)
        self.assertIn("  State   : serving", lines)
        self.assertIn("  Counters:", lines)
        self.assertIn("    Rs received : 12", lines)
        self.assertIn("  Drops by reason:", lines)
        self.assertIn("    Rate limited : 1", lines)
        self.assertLess(lines.index("Teredo node"), lines.index("Role server"))

    def test_emptyAndNested(self) -> None:
        text = cli.format_status({"node": {"roles": []}, "relay": {"peers": [{"ip": "192.0.2.9"}], "drops": {}}})
        self.assertIn("  Roles : -", text)
        self.assertIn("  Drops by reason:\n    (none)", text)
        self.assertIn("    Ip : 192.0.2.9", text)


class StatusProtocolTests(SynchronousTestCase):
    def test_writesDocumentAndCloses(self) -> None:
        factory = StatusFactory(StaticStatus(DOCUMENT))
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(json.loads(transport.value()), DOCUMENT)
        self.assertTrue(transport.disconnecting)

    def test_failingSourceReported(self) -> None:
        @implementer(IStatusSource)
        class Broken:
            def status(self) -> dict[str, Any]:
                raise ValueError("no")

        protocol = StatusFactory(Broken()).buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIn("ValueError: no", json.loads(transport.value())["error"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_staticProvidesInterface(self) -> None:
        self.assertTrue(verifyObject(IStatusSource, StaticStatus({})))


class SocketPathTests(SynchronousTestCase):
    def test_createsParent(self) -> None:
        path = os.path.join(tempdir(self), "a", "b", "s.sock")
        prepare_socket_path(path)
        self.assertTrue(os.path.isdir(os.path.dirname(path)))

    def test_removesStaleSocket(self) -> None:
        path = os.path.join(tempdir(self), "s.sock")
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()  # the file stays, nobody listens: a node that died
        prepare_socket_path(path)
        self.assertFalse(os.path.exists(path))

    def test_refusesLiveSocket(self) -> None:
        path = os.path.join(tempdir(self), "s.sock")
        live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(live.close)
        live.bind(path)
        live.listen(1)
        exc = self.assertRaises(TeredoError, prepare_socket_path, path)
        self.assertIn("another node", str(exc))
        self.assertTrue(os.path.exists(path))

    def test_refusesNonSocket(self) -> None:
        path = os.path.join(tempdir(self), "s.sock")
        with open(path, "w") as f:
            f.write("precious")
        exc = self.assertRaises(TeredoError, prepare_socket_path, path)
        self.assertIn("not a socket", str(exc))
        with open(path) as f:
            self.assertEqual(f.read(), "precious")


class ReadStatusErrorTests(SynchronousTestCase):
    def test_missingSocket(self) -> None:
        path = os.path.join(tempdir(self), "none.sock")
        self.assertRaises(StatusUnavailable, read_status, path)
        code, out, err = run("status", "--socket", path)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, f"teredo status: {path}: no status socket (is the node running?)\n")

    def test_refusedSocket(self) -> None:
        path = os.path.join(tempdir(self), "s.sock")
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()
        code, out, err = run("status", "--socket", path, "--json")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("connection refused", err)


class StatusOverSocketTests(TestCase):
    """
    A real L{StatusService} on the real reactor; the blocking client runs in a thread, as the
    C{teredo} command would in its own process.
    """

    def setUp(self) -> None:
        self.path = os.path.join(tempdir(self), "run", "status.sock")
        self.service = StatusService(self.path, StaticStatus(DOCUMENT), IReactorUNIX(reactor), mode=0o660)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_socketModeAndType(self) -> None:
        info = os.stat(self.path)
        self.assertTrue(stat.S_ISSOCK(info.st_mode))
        self.assertEqual(stat.S_IMODE(info.st_mode), 0o660)

    @inlineCallbacks
    def test_readStatus(self):
        document = yield deferToThread(read_status, self.path)
        self.assertEqual(document, DOCUMENT)

    @inlineCallbacks
    def test_cliJson(self):
        code, out, err = yield deferToThread(run, "status", "--socket", self.path, "--json")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(json.loads(out), DOCUMENT)

    @inlineCallbacks
    def test_cliHuman(self):
        code, out, err = yield deferToThread(run, "status", "--socket", self.path)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, cli.format_status(DOCUMENT) + "\n")
        self.assertIn("Drops by reason:", out)

    @inlineCallbacks
    def test_stopRemovesSocket(self):
        yield self.service.stopService()
        self.assertFalse(os.path.exists(self.path))
        code, _, err = yield deferToThread(run, "status", "--socket", self.path)
        self.assertEqual(code, 1)
        self.assertIn("no status socket", err)
