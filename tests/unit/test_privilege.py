"""
Tests for L{teredonode.privilege}: the plan against a recording fake process, the node's
order of steps, the twistd plugin's choice of account, and (as root) a real drop in a
separate process inside a throw-away network namespace, never in the test process.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode import tap
from teredonode.config import parse_config
from teredonode.errors import ConfigError, TeredoError
from teredonode.privilege import (
    CAP_NET_ADMIN,
    CAP_SETGID,
    CAP_SETUID,
    ROLE_CAPABILITIES,
    Account,
    Privileges,
    capabilitiesFor,
    capabilityMask,
    maskNames,
    resolveAccount,
)
from teredonode.service import TeredoNode
from tests.unit.test_netconfig import rootSkipReason, runIsolated
from tests.unit.test_tap import tempdir

NOBODY = Account(uid=65534, gid=65534, name="nobody")
SWITCHING = capabilityMask({CAP_SETUID, CAP_SETGID})
ADMIN = capabilityMask({CAP_NET_ADMIN})


class FakeSystem:
    """
    A process that records what L{Privileges} asks of it.
    """

    def __init__(self, euid: int = 0) -> None:
        self.euid = euid
        self.calls: list[tuple[Any, ...]] = []
        self.caps = (0x1FFFFFFFFFF, 0x1FFFFFFFFFF, 0)

    def geteuid(self) -> int:
        return self.euid

    def getCapabilities(self) -> tuple[int, int, int]:
        return self.caps

    def setCapabilities(self, effective: int, permitted: int, inheritable: int) -> None:
        self.calls.append(("capset", effective, permitted, inheritable))
        self.caps = (effective, permitted, inheritable)

    def setKeepCaps(self, keep: bool) -> None:
        self.calls.append(("keepcaps", keep))

    def clearAmbient(self) -> None:
        self.calls.append(("ambient-clear",))

    def limitBounding(self, keep: int) -> None:
        self.calls.append(("bounding", keep))

    def switchUser(self, account: Account) -> None:
        self.calls.append(("switch", account.uid, account.gid))
        self.euid = account.uid
        # What the kernel does on setuid from 0 with PR_SET_KEEPCAPS: effective cleared.
        self.caps = (0, self.caps[1], self.caps[2])

    def chown(self, path: str, uid: int, gid: int) -> None:
        self.calls.append(("chown", path, uid, gid))


class CapabilityTests(SynchronousTestCase):
    def test_roles(self) -> None:
        """
        Only the client keeps anything: CAP_NET_ADMIN, to re-address its interface.
        """
        self.assertEqual(capabilitiesFor(["server", "relay", "host-relay"]), frozenset())
        self.assertEqual(capabilitiesFor(["server", "client"]), {CAP_NET_ADMIN})
        self.assertEqual(set(ROLE_CAPABILITIES), {"server", "relay", "host-relay", "client"})

    def test_relayHealthRoute(self) -> None:
        """
        A relay that keeps a health route alive keeps CAP_NET_ADMIN; without one, nothing.
        """
        self.assertEqual(capabilitiesFor({"relay": SimpleNamespace(health_table=100)}), {CAP_NET_ADMIN})
        self.assertEqual(capabilitiesFor({"relay": SimpleNamespace(health_table=0)}), frozenset())

    def test_masks(self) -> None:
        """
        Masks are as /proc/<pid>/status prints them: CAP_NET_ADMIN is 0x1000.
        """
        self.assertEqual(capabilityMask({CAP_NET_ADMIN}), 0x1000)
        self.assertEqual(maskNames(0x10C0), ["CAP_SETGID", "CAP_SETUID", "CAP_NET_ADMIN"])
        self.assertEqual(maskNames(1 << 40), ["40"])


class AccountTests(SynchronousTestCase):
    def setUp(self) -> None:
        users = {"teredo": SimpleNamespace(pw_uid=990, pw_gid=980, pw_name="teredo")}
        self.lookups = dict(
            getpwnam=lambda name: users[name],
            getpwuid=lambda uid: {990: users["teredo"]}[uid],
            getgrnam=lambda name: {"netdev": SimpleNamespace(gr_gid=107)}[name],
        )

    def test_nameAndPrimaryGroup(self) -> None:
        self.assertEqual(resolveAccount("teredo", "", **self.lookups), Account(990, 980, "teredo"))
        self.assertEqual(resolveAccount("990", None, **self.lookups), Account(990, 980, "teredo"))
        self.assertEqual(resolveAccount(990, "netdev", **self.lookups), Account(990, 107, "teredo"))
        self.assertEqual(resolveAccount("4000", "12", **self.lookups), Account(4000, 12, "4000"))

    def test_none(self) -> None:
        self.assertIsNone(resolveAccount("", "", **self.lookups))
        self.assertIsNone(resolveAccount(None, None, **self.lookups))

    def test_errorsAreOneLine(self) -> None:
        for user, group, message in [
            ("nosuch", "", "[node] user: no user 'nosuch' on this host"),
            ("teredo", "nogrp", "[node] group: no group 'nogrp' on this host"),
            ("", "netdev", "[node] group: 'netdev' is set without [node] user"),
            ("4000", "", "[node] group: user '4000' has no entry; name a group"),
        ]:
            exc = self.assertRaises(ConfigError, resolveAccount, user, group, **self.lookups)
            self.assertEqual(str(exc), message)

    def test_rootRefused(self) -> None:
        exc = self.assertRaises(ConfigError, resolveAccount, 0, 0, **self.lookups)
        self.assertIn("root is not an unprivileged user", str(exc))


class PlanTests(SynchronousTestCase):
    def test_nothingWithoutAccountOrWhenNotRoot(self) -> None:
        """
        Without a user, or started unprivileged, the plan touches nothing.
        """
        for account, euid in [(None, 0), (NOBODY, 1000)]:
            system = FakeSystem(euid)
            plan = Privileges(account, frozenset({CAP_NET_ADMIN}), directories=["/x"], system=system)
            plan.beforeStart()
            plan.giveFile("/")
            plan.afterOpen()
            plan.complete()
            self.assertEqual(system.calls, [])

    def test_selfSwitch(self) -> None:
        """
        With [node] user: narrow to kept + setuid/setgid, keep them across the switch,
        switch, then keep only the role's set (the switching capabilities go).
        """
        system = FakeSystem()
        plan = Privileges(NOBODY, frozenset({CAP_NET_ADMIN}), system=system)
        plan.afterOpen()
        self.assertEqual(
            system.calls,
            [
                ("ambient-clear",),
                ("bounding", ADMIN),
                ("capset", ADMIN | SWITCHING, ADMIN | SWITCHING, 0),
                ("keepcaps", True),
                ("switch", 65534, 65534),
            ],
        )
        del system.calls[:]
        line = plan.complete()
        self.assertEqual(system.calls, [("keepcaps", False), ("capset", ADMIN, ADMIN, 0)])
        self.assertEqual(line, "running as nobody (uid 65534, gid 65534), capabilities kept: CAP_NET_ADMIN")
        self.assertIsNone(plan.complete())
        self.assertEqual(system.caps, (ADMIN, ADMIN, 0))

    def test_twistdSwitches(self) -> None:
        """
        With twistd --uid the plan prepares but leaves the switch to twistd.
        """
        system = FakeSystem()
        plan = Privileges(NOBODY, frozenset(), switchedByTwistd=True, system=system)
        plan.afterOpen()
        self.assertNotIn("switch", [c[0] for c in system.calls])
        system.switchUser(NOBODY)  # twistd's shedPrivileges
        del system.calls[:]
        plan.complete()
        self.assertEqual(system.calls, [("keepcaps", False), ("capset", 0, 0, 0)])

    def test_stillRootRefused(self) -> None:
        """
        If the switch did not happen (twistd did not switch after all), the node stops
        rather than run as root believing otherwise.
        """
        system = FakeSystem()
        plan = Privileges(NOBODY, frozenset(), switchedByTwistd=True, system=system)
        plan.afterOpen()
        exc = self.assertRaises(TeredoError, plan.complete)
        self.assertIn("still running as root", str(exc))

    def test_capsetNotTakenRefused(self) -> None:
        system = FakeSystem()
        system.setCapabilities = lambda effective, permitted, inheritable: None  # type: ignore[method-assign]  # capset "succeeds" without effect
        plan = Privileges(NOBODY, frozenset(), system=system)
        plan.afterOpen()
        exc = self.assertRaises(TeredoError, plan.complete)
        self.assertIn("wanted none", str(exc))

    def test_startedUnprivilegedNarrows(self) -> None:
        """
        Started as a user with ambient CAP_NET_ADMIN (systemd), a node whose roles keep
        nothing drops it once open; a client keeps it; a test-built plan touches nothing.
        """
        for keep, wanted in [(frozenset(), 0), (frozenset({CAP_NET_ADMIN}), ADMIN)]:
            system = FakeSystem(euid=990)
            system.caps = (ADMIN, ADMIN, ADMIN)
            plan = Privileges(None, keep, narrow=True, system=system)
            plan.afterOpen()
            line = plan.complete()
            self.assertEqual(system.caps, (wanted, wanted, 0))
            self.assertEqual(system.calls, [("ambient-clear",), ("capset", wanted, wanted, 0)])
            self.assertIn("started unprivileged (uid 990)", line)
        system = FakeSystem(euid=990)
        self.assertIsNone(Privileges(None, frozenset(), system=system).complete())
        self.assertEqual(system.calls, [])

    def test_directories(self) -> None:
        """
        Missing directories are created for the account; existing ones are left alone.
        """
        base = tempdir(self)
        missing = os.path.join(base, "run", "teredonode")
        system = FakeSystem()
        plan = Privileges(NOBODY, frozenset(), directories=[base, missing], system=system)
        plan.beforeStart()
        self.assertTrue(os.path.isdir(missing))
        self.assertEqual(system.calls, [("chown", missing, 65534, 65534)])
        plan.giveFile(os.path.join(base, "absent.sock"))
        plan.giveFile(missing)
        self.assertEqual(system.calls[-1], ("chown", missing, 65534, 65534))
        self.assertEqual(len(system.calls), 2)


class Recording(Service):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def privilegedStartService(self) -> None:
        self.log.append("open")
        Service.privilegedStartService(self)

    def startService(self) -> None:
        self.log.append("start")
        Service.startService(self)


class RecordingPlan:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def beforeStart(self) -> None:
        self.log.append("beforeStart")

    def giveFile(self, path: str) -> None:
        self.log.append("giveFile " + os.path.basename(path))

    def afterOpen(self) -> None:
        self.log.append("afterOpen")

    def complete(self) -> None:
        self.log.append("complete")
        return None


class NodeOrderTests(SynchronousTestCase):
    def test_order(self) -> None:
        """
        twistd's order: privilegedStartService (directories, roles open, status socket
        handed over, keep-caps and switch), [twistd's own switch], startService (narrow to
        the kept set, then roles start).
        """
        log: list[str] = []
        path = os.path.join(tempdir(self), "status.sock")
        config = parse_config(
            '[server]\nenabled = true\nprimary = "192.0.2.1"\n', "x.toml",
            overrides={"status-socket": path},
        )
        node = TeredoNode(config, Clock(), {"server": "tests.unit.test_tap"}, privileges=RecordingPlan(log))  # type: ignore[arg-type]  # records the calls, duck-typed
        node.removeService(node.statusService)
        Recording(log).setServiceParent(node)
        node.privilegedStartService()
        node.startService()
        self.assertEqual(
            log,
            ["beforeStart", "open", "giveFile status.sock", "afterOpen", "complete", "start"],
        )


class TapTests(SynchronousTestCase):
    def config(self, text: str = "") -> Any:
        return parse_config(
            '[node]\n' + text + '[client]\nenabled = true\nserver = "192.0.2.1"\n'
            '[server]\nenabled = true\nprimary = "192.0.2.1"\n',
            "x.toml",
        )

    def test_nodeUser(self) -> None:
        plan = tap.privilegesFor(self.config('user = "nobody"\n'), {"uid": None, "gid": None})
        assert plan.account is not None
        self.assertEqual(plan.account.uid, pwd.getpwnam("nobody").pw_uid)
        self.assertFalse(plan.switchedByTwistd)
        self.assertEqual(plan.keep, {CAP_NET_ADMIN})
        self.assertEqual(plan.directories, ("/run/teredonode", "/var/lib/teredonode"))

    def test_twistdUidWins(self) -> None:
        plan = tap.privilegesFor(self.config('user = "root"\n'), {"uid": 65534, "gid": 4})
        assert plan.account is not None
        self.assertEqual((plan.account.uid, plan.account.gid), (65534, 4))
        self.assertTrue(plan.switchedByTwistd)

    def test_noUser(self) -> None:
        self.assertIsNone(tap.privilegesFor(self.config(), None).account)

    def test_unknownUserIsOneLine(self) -> None:
        path = os.path.join(tempdir(self), "t.toml")
        Path(path).write_text('[node]\nuser = "no-such-user-here"\n[server]\nenabled = true\nprimary = "192.0.2.1"\n')
        options = tap.Options()
        exc = self.assertRaises(tap.ConfigExit, options.parseOptions, ["--config", path])
        self.assertEqual(str(exc), "twistd teredo: [node] user: no user 'no-such-user-here' on this host")

    def test_badNameRefusedByConfig(self) -> None:
        self.assertRaises(ConfigError, self.config, 'user = "a b"\n')


_DROP_SCRIPT = r"""
import json, os, sys
from teredonode.netconfig import NetlinkConfigurator
from teredonode.privilege import Account, Privileges, CAP_NET_ADMIN
from teredonode.tun import TunDevice
from teredonode.errors import NetConfigError

keep = frozenset({CAP_NET_ADMIN}) if sys.argv[1] == "client" else frozenset()
tun = TunDevice("pv0")
tun.open()
cfg = NetlinkConfigurator()
cfg.linkUp("pv0", 1280)
cfg.addRoute("pv0", "2001::/32", 1029)
plan = Privileges(Account(65534, 65534, "nobody"), keep)
plan.afterOpen()
plan.complete()
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
result = {
    "uid": status["Uid"].split(),
    "gid": status["Gid"].split(),
    "groups": status["Groups"].split(),
    "CapEff": status["CapEff"].strip(),
    "CapPrm": status["CapPrm"].strip(),
    "CapInh": status["CapInh"].strip(),
    "CapBnd": status["CapBnd"].strip(),
}
try:
    cfg.addAddress("pv0", "2001:0:c000:201::1", 32)
    cfg.linkUp("pv0", 1400)
    cfg.removeAddress("pv0", "2001:0:c000:201::1", 32)
    result["readdress"] = "ok"
except NetConfigError as e:
    result["readdress"] = str(e)
cfg.removeRoute("pv0", "2001::/32")
try:
    os.setuid(0)
    result["regain"] = "root again"
except PermissionError:
    result["regain"] = "refused"
tun.write(b"\x60" + bytes(39))
result["tunWrite"] = tun.drops
print(json.dumps(result))
"""


class RealDropTests(SynchronousTestCase):
    """
    The real thing, in a child process in its own network namespace.
    """

    skip = rootSkipReason(needTun=True)

    def drop(self, role: str) -> dict[str, Any]:
        return runIsolated(_DROP_SCRIPT.replace("sys.argv[1]", repr(role)))

    def test_clientKeepsNetAdmin(self) -> None:
        """
        A client-like process ends as nobody with CAP_NET_ADMIN alone, can still
        re-address and re-MTU its interface over netlink, and cannot become root again.
        """
        result = self.drop("client")
        self.assertEqual(result["uid"], ["65534"] * 4)
        self.assertEqual(result["gid"], ["65534"] * 4)
        self.assertEqual(result["groups"], ["65534"])
        self.assertEqual(int(result["CapEff"], 16), ADMIN)
        self.assertEqual(int(result["CapPrm"], 16), ADMIN)
        self.assertEqual(int(result["CapInh"], 16), 0)
        self.assertEqual(int(result["CapBnd"], 16), ADMIN)
        self.assertEqual(result["readdress"], "ok")
        self.assertEqual(result["regain"], "refused")

    def test_othersKeepNothing(self) -> None:
        """
        A server/relay-like process keeps no capability: reconfiguring the interface is
        refused, removing its route is not an error, its open TUN still works.
        """
        result = self.drop("relay")
        self.assertEqual(result["uid"], ["65534"] * 4)
        self.assertEqual(int(result["CapEff"], 16), 0)
        self.assertEqual(int(result["CapPrm"], 16), 0)
        self.assertEqual(int(result["CapBnd"], 16), 0)
        self.assertIn("Operation not permitted", result["readdress"])
        self.assertEqual(result["regain"], "refused")
        self.assertEqual(result["tunWrite"], {})


#: The roles whose unit grants what loading their kernel fast path needs.
FAST_PATH_ROLES = ("server", "relay", "client")
REPO = Path(__file__).resolve().parents[2]


def unitSettings(role: str) -> dict[str, list[str]]:
    """
    The [Service] settings of C{etc/systemd/teredo-<role>.service}, each key's values in order.
    """
    settings: dict[str, list[str]] = {}
    section = None
    for line in (REPO / "etc" / "systemd" / f"teredo-{role}.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


class DeploymentTests(SynchronousTestCase):
    """
    The systemd units and docs/least-privilege.md say what the code keeps.
    """

    def test_unitsPerRole(self) -> None:
        for role in ROLE_CAPABILITIES:
            unit = unitSettings(role)
            self.assertIn(f"--role {role} ", unit["ExecStart"][0])
            self.assertEqual(unit["DynamicUser"], ["yes"], role)
            # Opening needs CAP_NET_ADMIN (the server's raw IPv6 socket CAP_NET_RAW too).
            opening = "CAP_NET_ADMIN CAP_NET_RAW" if role == "server" else "CAP_NET_ADMIN"
            # Loading a kernel fast path needs CAP_BPF and CAP_PERFMON
            # (tests/system/test_fastpath_capabilities.py).
            if role in FAST_PATH_ROLES:
                opening += " CAP_BPF CAP_PERFMON"
            self.assertEqual(unit["AmbientCapabilities"], [opening], role)
            self.assertEqual(unit["CapabilityBoundingSet"], [opening], role)
            for key, value in [
                ("NoNewPrivileges", "yes"),
                ("ProtectSystem", "strict"),
                ("ProtectHome", "yes"),
                ("PrivateTmp", "yes"),
                ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"),
                ("DeviceAllow", "/dev/net/tun rw"),
            ]:
                self.assertEqual(unit[key], [value], f"{role}: {key}")
            self.assertEqual(unit["SystemCallFilter"][0], "@system-service")

    def test_docsTable(self) -> None:
        """
        The table in docs/least-privilege.md lists each role with exactly what it keeps.
        """
        text = (REPO / "docs" / "least-privilege.md").read_text()
        for role, caps in ROLE_CAPABILITIES.items():
            row = next(line for line in text.splitlines() if line.startswith(f"| {role} |"))
            kept = row.split("|")[2].strip()
            wanted = ", ".join(f"`{n}`" for n in maskNames(capabilityMask(caps))) or "none"
            self.assertEqual(kept.split(" (")[0], wanted, role)


_TWISTD_SCRIPT = r"""
import ctypes, json, os, shutil, subprocess, sys, tempfile, time
from teredonode.status import StatusUnavailable, read_status

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
libc = ctypes.CDLL(None, use_errno=True)
# What systemd's MemoryDenyWriteExecute=yes asks for, here as PR_SET_MDWE (inherited).
mdwe = libc.prctl(65, 1, 0, 0, 0)
base = tempfile.mkdtemp(prefix="teredo-priv-")
os.chmod(base, 0o755)
config = os.path.join(base, "teredo.toml")
with open(config, "w") as f:
    f.write(
        '[node]\nuser = "nobody"\n'
        f'status-socket = "{base}/run/status.sock"\nstate-dir = "{base}/state"\n'
        '[client]\nenabled = true\nserver = "192.0.2.1"\n'
    )
log = open(os.path.join(base, "log"), "w+")
node = subprocess.Popen(
    [shutil.which("twistd"), "-n", "--pidfile=", "teredo", "--config", config],
    stdout=log, stderr=subprocess.STDOUT,
)
document = None
deadline = time.monotonic() + 20
while document is None and time.monotonic() < deadline and node.poll() is None:
    try:
        document = read_status(f"{base}/run/status.sock", timeout=2)
    except StatusUnavailable:
        time.sleep(0.1)
status = dict(line.split(":\t", 1) for line in open(f"/proc/{node.pid}/status").read().splitlines() if ":\t" in line)
node.terminate()
node.wait(timeout=10)
log.seek(0)
print(json.dumps({
    "mdwe": mdwe,
    "uid": status.get("Uid", "").split(),
    "CapEff": status.get("CapEff", "").strip(),
    "state": (document or {}).get("client", {}).get("state"),
    "log": log.read(),
    "exit": node.returncode,
    "socketLeft": os.path.exists(f"{base}/run/status.sock"),
}))
shutil.rmtree(base)
"""


class RealTwistdTests(SynchronousTestCase):
    """
    The plugin under the real twistd with C{[node] user}, in a private network namespace
    and under C{PR_SET_MDWE} (what the units' C{MemoryDenyWriteExecute=yes} asks).
    """

    skip = rootSkipReason(needTun=True)

    def test_clientAsNobody(self) -> None:
        result = runIsolated(_TWISTD_SCRIPT, timeout=60)
        self.assertEqual(result["mdwe"], 0, "PR_SET_MDWE refused")
        self.assertEqual(result["uid"], [str(NOBODY.uid)] * 4, result["log"])
        self.assertEqual(int(result["CapEff"], 16), ADMIN, result["log"])
        self.assertIsNotNone(result["state"], result["log"])
        self.assertIn("running as nobody (uid 65534, gid 65534), capabilities kept: CAP_NET_ADMIN", result["log"])
        self.assertNotIn("Traceback", result["log"])
        self.assertFalse(result["socketLeft"], "the node, as nobody, removes its status socket")
