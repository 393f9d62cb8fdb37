"""
Logging to syslog and journald: C{twistd --syslog --prefix=teredotest -n teredo} running a
real server role, its C{/dev/log} replaced (in a private mount namespace) by

  - a datagram socket this test reads: one datagram per event, C{<priority>} matching the
    event's level (C{user.info} for info, C{user.warning} for warn), the text
    C{[teredonode.<module>.<Class>#<level>] <message>}; and
  - a C{systemd-journald} of the test's own (no systemd as PID 1 needed): the journal has
    one entry per event with C{PRIORITY} and C{SYSLOG_IDENTIFIER}, which is what the units
    in C{etc/systemd/} get from journald's C{/dev/log} on a real host.

Both check that C{[node] log-level} still applies: after a reload to C{error}, the reload's
own warning is not logged, while Twisted's later lines (not filtered) are.

The node runs in its own network namespace too (the server's two addresses on its loopback
interface), so nothing leaves it.  Every wait is a poll with a deadline; the processes are
stopped by PID.  How to check the same on a real host: docs/operations.md, "Logs".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import syslog
import tempfile
import time
from typing import Any, Callable

from twisted.logger import LogLevel
from twisted.python.syslog import SyslogObserver
from twisted.trial import unittest

import teredonode
from teredonode.logs import Logger, setLogLevel

PRIMARY, SECONDARY = "203.0.113.10", "203.0.113.11"
PREFIX = "teredotest"
JOURNALD = "/lib/systemd/systemd-journald"
USER = syslog.LOG_USER
#: The tree under test: twistd must import this teredonode and its plugin.
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(teredonode.__file__)))

CONFIG = """\
[node]
status-socket = "{dir}/status.sock"
state-dir = "{dir}/state"
log-level = "{level}"
[server]
enabled = true
primary = "{primary}"
interface = ""
mtu = {mtu}
"""

#: Runs in the new mount and network namespaces, then becomes twistd.  The server's
#: addresses go on the namespace's loopback; /dev becomes a tmpfs with the few devices
#: Python needs and a /dev/log bound to the socket the test names.
NAMESPACE = """\
set -e
mount --make-rprivate /
ip link set lo up
ip addr add {primary}/32 dev lo
ip addr add {secondary}/32 dev lo
mkdir -p {dir}/realdev
mount --bind /dev {dir}/realdev
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero full random urandom; do touch /dev/$n; mount --bind {dir}/realdev/$n /dev/$n; done
umount -l {dir}/realdev
touch /dev/log
{devlog}
exec env PYTHONPATH={source} {python} -c 'from twisted.scripts.twistd import run; run()' \\
    --syslog --prefix={prefix} --pidfile= --nodaemon teredo --config {dir}/teredo.toml
"""

#: /dev/log is the test's datagram socket.
TO_SOCKET = "mount --bind {dir}/log.sock /dev/log"

#: /dev/log is journald's, as under systemd; journald started here, its journal in the test's
#: directory, its PID in journald.pid.
TO_JOURNALD = """\
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
mount --bind {dir}/journal /run/log/journal
{journald} &
echo $! > {dir}/journald.pid
i=0
while [ ! -S /run/systemd/journal/dev-log ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mount --bind /run/systemd/journal/dev-log /dev/log
"""


def missing() -> str | None:
    """
    Why the namespace tests cannot run here, or None.
    """
    if os.geteuid() != 0:
        return "needs root (mount and network namespaces)"
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


def poll(check: Callable[[], Any], deadline: float, what: str) -> Any:
    """
    C{check()} until it returns something true, for at most C{deadline} seconds.
    """
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def stopPid(pid: int, deadline: float = 10.0) -> None:
    """
    SIGTERM C{pid} (not our child) and wait for it to go, SIGKILL after C{deadline}.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + deadline
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < end:
        time.sleep(0.1)
    if os.path.exists(f"/proc/{pid}"):
        os.kill(pid, signal.SIGKILL)


class LevelLabelTests(unittest.TestCase):
    """
    In process: what Twisted's syslog observer makes of a teredonode event.
    """

    def test_warning_goes_to_syslog_as_warning(self) -> None:
        sent: list[tuple[int, str]] = []

        class Observer(SyslogObserver):
            openlog = staticmethod(lambda *args: None)
            syslog = staticmethod(lambda priority, text: sent.append((priority, text)))

        from twisted.python import log

        observer = Observer(PREFIX)
        log.addObserver(observer.emit)
        self.addCleanup(log.removeObserver, observer.emit)
        self.addCleanup(setLogLevel, "info")
        setLogLevel("info")
        logger = Logger("teredonode.roles.relay")
        logger.warn("peer {peer} unreachable", peer="2001::1")
        logger.debug("filtered out")
        ours = [s for s in sent if "teredonode" in s[1]]
        self.assertEqual(ours, [(syslog.LOG_WARNING, "[teredonode.roles.relay#warn] peer 2001::1 unreachable")])
        self.assertEqual(LogLevel.levelWithName("warn"), LogLevel.warn)


class NamespaceTestCase(unittest.TestCase):
    """
    A twistd server role in its own mount and network namespaces, logging with --syslog.
    """

    def setUp(self) -> None:
        reason = missing()
        if reason is not None:
            raise unittest.SkipTest(reason)
        self.dir = tempfile.mkdtemp(prefix="teredolog-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.node: subprocess.Popen[bytes] | None = None

    def writeConfig(self, level: str = "info", mtu: int = 1280) -> None:
        with open(os.path.join(self.dir, "teredo.toml"), "w") as f:
            f.write(CONFIG.format(dir=self.dir, level=level, primary=PRIMARY, mtu=mtu))

    def start(self, devlog: str) -> subprocess.Popen[bytes]:
        self.writeConfig()
        script = NAMESPACE.format(
            dir=self.dir, primary=PRIMARY, secondary=SECONDARY, devlog=devlog, source=SOURCE,
            python=sys.executable, prefix=PREFIX,
        )
        self.output = open(os.path.join(self.dir, "output"), "wb")
        self.addCleanup(self.output.close)
        node = subprocess.Popen(
            ["unshare", "--mount", "--net", "sh", "-c", script], stdout=self.output, stderr=subprocess.STDOUT
        )
        self.node = node
        self.addCleanup(self.stopNode)
        return node

    def stopNode(self) -> int | None:
        node = self.node
        if node is None:
            return None
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(10)
        self.node = None
        return node.returncode

    def outputText(self) -> str:
        with open(os.path.join(self.dir, "output"), "rb") as f:
            return f.read().decode(errors="replace")

    def reloadTo(self, level: str, mtu: int) -> None:
        """
        Edit the file (a new level, and an MTU that needs a restart) and send SIGHUP.
        """
        assert self.node is not None
        self.writeConfig(level, mtu)
        self.node.send_signal(signal.SIGHUP)


class SyslogTests(NamespaceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(os.path.join(self.dir, "log.sock"))
        self.sock.settimeout(0.1)
        self.lines: list[str] = []

    def receive(self, text: str, deadline: float = 15.0) -> str:
        """
        The first datagram containing C{text}, read already or read now.
        """
        seen = next((line for line in self.lines if text in line), None)
        if seen is not None:
            return seen

        def check() -> str | None:
            try:
                line = self.sock.recv(65536).decode()
            except socket.timeout:
                if self.node is not None and self.node.poll() is not None:
                    raise AssertionError(f"twistd exited: {self.outputText()}")
                return None
            self.lines.append(line)
            return line if text in line else None

        try:
            return str(poll(check, deadline, repr(text)))
        except AssertionError as e:
            raise AssertionError(f"{e}; received {self.lines}; output {self.outputText()}") from None

    def test_syslog_lines_carry_level_and_follow_log_level(self) -> None:
        """
        Each teredonode event is one datagram, with its level as syslog priority and in the
        text; a reload to log-level error silences the reload's own warning.
        """
        self.start(TO_SOCKET.format(dir=self.dir))
        running = self.receive("running server")
        self.assertRegex(
            running,
            rf"^<{USER | syslog.LOG_INFO}>\w{{3}} [ \d]\d \d\d:\d\d:\d\d {PREFIX}: "
            r"\[teredonode\.service\.TeredoNode#info\] teredonode \S+ running server$",
        )
        self.assertIn(
            f"<{USER | syslog.LOG_INFO}>", self.receive(f"Teredo server on {PRIMARY}:3544")
        )

        self.reloadTo("warn", 1400)
        line = self.receive("reload:")
        self.assertTrue(line.startswith(f"<{USER | syslog.LOG_WARNING}>"), line)
        self.assertTrue(
            line.endswith(
                "[teredonode.service.TeredoNode#warn] reload: applied [node] log-level; "
                "needs a restart to change: [server] mtu"
            ),
            line,
        )

        self.reloadTo("error", 1300)  # the reload's warning is below error: not logged
        assert self.node is not None
        self.node.send_signal(signal.SIGTERM)
        self.receive("Server Shut Down.")
        self.assertEqual(self.stopNode(), -signal.SIGTERM)  # twistd exits by the signal it got
        reloads = [l for l in self.lines if "reload:" in l]
        self.assertEqual(len(reloads), 1, reloads)
        ours = [l for l in self.lines if "[teredonode." in l]
        self.assertGreaterEqual(len(ours), 3)
        # One line per event: no continuation lines (tab-indented), no line breaks.
        self.assertEqual([l for l in self.lines if "\n" in l or ": \t" in l], [])


class JournaldTests(NamespaceTestCase):
    def setUp(self) -> None:
        super().setUp()
        if not os.access(JOURNALD, os.X_OK) or shutil.which("journalctl") is None:
            raise unittest.SkipTest(
                f"{JOURNALD} or journalctl not installed (apt-get install systemd); on a host "
                "running systemd, see docs/operations.md for the same check by hand"
            )
        os.mkdir(os.path.join(self.dir, "journal"))
        self.addCleanup(self.stopJournald)

    def stopJournald(self) -> None:
        path = os.path.join(self.dir, "journald.pid")
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                stopPid(int(text))

    def entries(self) -> list[dict[str, Any]]:
        result = subprocess.run(
            ["journalctl", "--directory", os.path.join(self.dir, "journal"), "--no-pager",
             "--output", "json", "--identifier", PREFIX],
            capture_output=True, check=False,
        )
        return [json.loads(line) for line in result.stdout.decode().splitlines() if line.startswith("{")]

    def waitEntry(self, text: str, deadline: float = 15.0, exited: bool = False) -> dict[str, Any]:
        """
        The journal entry holding C{text}, once journald has it; unless C{exited}, twistd
        ending before it shows is a failure.
        """
        def check() -> dict[str, Any] | None:
            found = next((e for e in self.entries() if text in str(e.get("MESSAGE", ""))), None)
            if found is None and not exited and self.node is not None and self.node.poll() is not None:
                raise AssertionError(f"twistd exited: {self.outputText()}")
            return found

        try:
            found: dict[str, Any] = poll(check, deadline, repr(text))
        except AssertionError as e:
            messages = [x.get("MESSAGE") for x in self.entries()]
            raise AssertionError(f"{e}; journal {messages}; output {self.outputText()}") from None
        return found

    def test_journal_has_priority_and_identifier(self) -> None:
        """
        Through journald's /dev/log: PRIORITY 6 for info, 4 for warn, the prefix as
        SYSLOG_IDENTIFIER, one entry per event; log-level error silences the reload warning.
        """
        self.start(TO_JOURNALD.format(dir=self.dir, journald=JOURNALD))
        running = self.waitEntry("running server")
        self.assertEqual((running["PRIORITY"], running["SYSLOG_IDENTIFIER"]), ("6", PREFIX))
        self.assertRegex(running["MESSAGE"], r"^\[teredonode\.service\.TeredoNode#info\] teredonode \S+ running server$")
        self.assertEqual(int(running["_PID"]), self.node.pid if self.node else -1)

        self.reloadTo("warn", 1400)
        reload = self.waitEntry("reload:")
        self.assertEqual(reload["PRIORITY"], "4")
        self.assertTrue(reload["MESSAGE"].startswith("[teredonode.service.TeredoNode#warn] reload: "), reload)

        self.reloadTo("error", 1300)
        assert self.node is not None
        self.node.send_signal(signal.SIGTERM)
        self.assertEqual(self.stopNode(), -signal.SIGTERM)  # twistd exits by the signal it got
        # journald may store the last lines after twistd is gone.
        self.waitEntry("Server Shut Down.", exited=True)
        messages = [str(e.get("MESSAGE")) for e in self.entries()]
        self.assertEqual(len([m for m in messages if "reload:" in m]), 1, messages)
        self.assertEqual([m for m in messages if "\n" in m or m.startswith("\t")], [])
