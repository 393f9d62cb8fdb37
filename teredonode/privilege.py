# -*- test-case-name: tests.unit.test_privilege -*-
"""
Least privilege: a node opens its TUN devices and sockets as root, then runs as an
unprivileged user keeping only the capabilities its roles still use.

The order follows twistd (C{twisted/scripts/_twistd_unix.py}, C{startApplication}):

    1. C{privilegedStartService}: every role binds its sockets and opens its TUN;
    2. C{shedPrivileges}: twistd switches to C{--uid}/C{--gid} if given;
    3. C{startService}.

L{Privileges.beforeStart} (top of step 1) creates the status socket's and the state
directory for the target user.  L{Privileges.afterOpen} (end of step 1) sets
C{PR_SET_KEEPCAPS} and narrows the permitted set to what is kept plus C{CAP_SETUID} and
C{CAP_SETGID}; then, if twistd is not going to switch (no C{--uid}), it switches to C{[node]
user}/C{group} itself.  L{Privileges.complete} (top of step 3) makes the kept set the whole
effective and permitted set: C{CAP_SETUID}/C{CAP_SETGID} go, so the process cannot become root
again.  A uid switch clears the effective set even with C{PR_SET_KEEPCAPS}, which is why the
last step raises it again from the permitted set.

A node started unprivileged with capabilities to open its devices (systemd's
C{AmbientCapabilities=CAP_NET_ADMIN} with C{User=} or C{DynamicUser=}) narrows them to the
kept set at the same point (L{Privileges.complete}).

Capabilities are per thread on Linux; all of this runs before the reactor starts, in the
main thread, and threads started later inherit the main thread's sets.

What each role keeps (L{ROLE_CAPABILITIES}, and C{docs/least-privilege.md}):

  - client: C{CAP_NET_ADMIN}, because it re-addresses its interface and moves its default
    route whenever its mapping changes (RFC 4380 5.2.1, CL rules), and sets the MTU a
    Router Advertisement announces;
  - server, relay, host-relay: nothing; their routes are added while root and vanish with
    their TUN, the server's raw IPv6 socket is opened while root, and the host-specific
    relay reads C{/proc/net/if_inet6}, which anyone may;
  - a relay with a health route (C{[relay] health-table}): C{CAP_NET_ADMIN}, to keep
    replacing that route.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol

from teredonode.errors import ConfigError, TeredoError

__all__ = [
    "CAP_NET_ADMIN",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAPABILITY_NAMES",
    "ROLE_CAPABILITIES",
    "Account",
    "Privileges",
    "LinuxCapabilities",
    "capabilitiesFor",
    "capabilityMask",
    "maskNames",
    "resolveAccount",
]

CAP_SETGID = 6
CAP_SETUID = 7
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
#: Loading the kernel fast path's programs at start (with C{CAP_NET_ADMIN} to attach them;
#: the verifier refuses their packet-pointer arithmetic without C{CAP_PERFMON}).  Neither
#: is kept: the maps are updated through descriptors opened at start.
CAP_PERFMON = 38
CAP_BPF = 39

#: Names of the capabilities this module speaks of, as systemd and C{capsh} spell them.
CAPABILITY_NAMES: dict[int, str] = {
    CAP_SETGID: "CAP_SETGID",
    CAP_SETUID: "CAP_SETUID",
    CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE",
    CAP_NET_ADMIN: "CAP_NET_ADMIN",
    CAP_NET_RAW: "CAP_NET_RAW",
    CAP_PERFMON: "CAP_PERFMON",
    CAP_BPF: "CAP_BPF",
}

#: What each role still needs once its sockets and TUN are open.
ROLE_CAPABILITIES: dict[str, frozenset[int]] = {
    "server": frozenset(),
    "relay": frozenset(),
    "host-relay": frozenset(),
    "client": frozenset({CAP_NET_ADMIN}),
}

# prctl(2) options and the capget/capset ABI (linux/capability.h, version 3: two 32-bit words).
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522


def capabilitiesFor(roles: Iterable[str] | Mapping[str, Any]) -> frozenset[int]:
    """
    The union of what the given roles keep; an unknown role keeps nothing.  Given the
    roles' settings by name, a relay with a health route (C{[relay] health-table}) also
    keeps C{CAP_NET_ADMIN}: it replaces that route over rtnetlink every few seconds.
    """
    kept: frozenset[int] = frozenset()
    for role in roles:
        kept |= ROLE_CAPABILITIES.get(role, frozenset())
    if isinstance(roles, Mapping) and getattr(roles.get("relay"), "health_table", None):
        kept |= {CAP_NET_ADMIN}
    return kept


def capabilityMask(caps: Iterable[int]) -> int:
    """
    The 64-bit mask of C{caps}, as C{/proc/<pid>/status} prints it (C{CapEff:} in hex).
    """
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


def maskNames(mask: int) -> list[str]:
    """
    The names of the capabilities in C{mask} (numbers for those this module does not name).
    """
    return [CAPABILITY_NAMES.get(bit, str(bit)) for bit in range(64) if mask >> bit & 1]


@dataclass(frozen=True)
class Account:
    """
    The user and group a node runs as after start.
    """

    uid: int
    gid: int
    name: str


def resolveAccount(
    user: str | int | None,
    group: str | int | None = None,
    getpwnam: Callable[[str], Any] = pwd.getpwnam,
    getpwuid: Callable[[int], Any] = pwd.getpwuid,
    getgrnam: Callable[[str], Any] = grp.getgrnam,
) -> Account | None:
    """
    The L{Account} for a user name or number and an optional group name or number (the
    user's primary group by default); L{None} when no user is given.

    @raise ConfigError: one line, when the user or group does not exist.
    """
    if user is None or user == "":
        if group not in (None, ""):
            raise ConfigError(f"[node] group: {group!r} is set without [node] user")
        return None
    try:
        if isinstance(user, int) or str(user).isdigit():
            uid = int(user)
            try:
                entry = getpwuid(uid)
                name, primary = entry.pw_name, entry.pw_gid
            except KeyError:
                name, primary = str(uid), None
        else:
            entry = getpwnam(str(user))
            uid, name, primary = entry.pw_uid, entry.pw_name, entry.pw_gid
    except KeyError:
        raise ConfigError(f"[node] user: no user {user!r} on this host") from None
    if group is None or group == "":
        if primary is None:
            raise ConfigError(f"[node] group: user {user!r} has no entry; name a group")
        gid = primary
    elif isinstance(group, int) or str(group).isdigit():
        gid = int(group)
    else:
        try:
            gid = getgrnam(str(group)).gr_gid
        except KeyError:
            raise ConfigError(f"[node] group: no group {group!r} on this host") from None
    if uid == 0:
        raise ConfigError("[node] user: root is not an unprivileged user")
    return Account(uid=uid, gid=gid, name=name)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class System(Protocol):
    """
    The process operations L{Privileges} uses; L{LinuxCapabilities} is the real one.
    """

    def geteuid(self) -> int: ...
    def getCapabilities(self) -> tuple[int, int, int]: ...
    def setCapabilities(self, effective: int, permitted: int, inheritable: int) -> None: ...
    def setKeepCaps(self, keep: bool) -> None: ...
    def clearAmbient(self) -> None: ...
    def limitBounding(self, keep: int) -> None: ...
    def switchUser(self, account: Account) -> None: ...
    def chown(self, path: str, uid: int, gid: int) -> None: ...


class LinuxCapabilities:
    """
    The real process: C{capget}/C{capset}/C{prctl} through libc, C{setgroups}/C{setgid}/
    C{setuid} through L{os}.
    """

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")

    def geteuid(self) -> int:
        return os.geteuid()

    def getCapabilities(self) -> tuple[int, int, int]:
        header = _CapHeader(_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        self._check(self._libc.capget(ctypes.byref(header), data), "capget")

        def join(field: str) -> int:
            return int(getattr(data[0], field)) | int(getattr(data[1], field)) << 32

        return join("effective"), join("permitted"), join("inheritable")

    def setCapabilities(self, effective: int, permitted: int, inheritable: int) -> None:
        header = _CapHeader(_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for word in (0, 1):
            shift = 32 * word
            data[word].effective = effective >> shift & 0xFFFFFFFF
            data[word].permitted = permitted >> shift & 0xFFFFFFFF
            data[word].inheritable = inheritable >> shift & 0xFFFFFFFF
        self._check(self._libc.capset(ctypes.byref(header), data), "capset")

    def setKeepCaps(self, keep: bool) -> None:
        self._check(self._libc.prctl(PR_SET_KEEPCAPS, int(keep), 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")

    def clearAmbient(self) -> None:
        # Kernels before 4.3 have no ambient set: EINVAL means there is nothing to clear.
        if self._libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
            if ctypes.get_errno() != 22:
                self._check(-1, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")

    def limitBounding(self, keep: int) -> None:
        # The bounding set caps what any program the node might execute could gain, a
        # set-uid-root one included.  Dropping needs CAP_SETPCAP, so this runs while root.
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
        for cap in range(last + 1):
            if not keep >> cap & 1:
                self._check(self._libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "prctl(PR_CAPBSET_DROP)")

    def switchUser(self, account: Account) -> None:
        os.setgroups([account.gid])
        os.setgid(account.gid)
        os.setuid(account.uid)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid)


class Privileges:
    """
    The privilege plan of one node: whom it runs as, what it keeps, and the three steps
    that get it there (see the module docstring).

    @ivar account: the target account, or L{None} to stay as started.
    @ivar keep: the capabilities kept after start.
    @ivar switchedByTwistd: twistd's C{--uid}/C{--gid} will do the switch, not us.
    """

    def __init__(
        self,
        account: Account | None,
        keep: frozenset[int],
        *,
        switchedByTwistd: bool = False,
        directories: Iterable[str] = (),
        narrow: bool = False,
        system: System | None = None,
    ) -> None:
        """
        @param narrow: when started unprivileged with capabilities to open (systemd's
            C{AmbientCapabilities=}), narrow them to C{keep} once open.  Off for nodes
            built in tests, so a test process never loses its own capabilities.
        @param directories: directories the running node writes in (the status socket's
            and the state directory); created if missing and, when missing, given to
            C{account}.  An existing directory is left as the operator made it.
        """
        self.account = account
        self.keep = frozenset(keep)
        self.switchedByTwistd = switchedByTwistd
        self.directories = tuple(directories)
        self.narrow = narrow
        self._system = system
        self._prepared = False

    @property
    def system(self) -> System:
        if self._system is None:
            self._system = LinuxCapabilities()
        return self._system

    @property
    def active(self) -> bool:
        """
        Whether anything is to be done: a target account and a root process to leave.
        """
        return self.account is not None and self.system.geteuid() == 0

    def beforeStart(self) -> None:
        """
        Create the directories the node writes in, owned by the target account.
        """
        if not self.active:
            return
        assert self.account is not None
        for path in self.directories:
            if os.path.isdir(path):
                continue
            try:
                os.makedirs(path, mode=0o750, exist_ok=True)
                self.system.chown(path, self.account.uid, self.account.gid)
            except OSError as e:
                raise TeredoError(f"cannot create {path} for {self.account.name}: {e.strerror}") from None

    def giveFile(self, path: str) -> None:
        """
        Hand a file created while root (the status socket) to the target account, so the
        node can remove it at stop and the account's group can read status.
        """
        if self.active and os.path.lexists(path):
            assert self.account is not None
            self.system.chown(path, self.account.uid, self.account.gid)

    def afterOpen(self) -> None:
        """
        Everything is open: keep capabilities across the uid switch, narrowed to what is
        kept plus what the switch needs; switch now unless twistd will.
        """
        if not self.active:
            return
        assert self.account is not None
        system = self.system
        keep = capabilityMask(self.keep)
        switching = capabilityMask({CAP_SETUID, CAP_SETGID})
        system.clearAmbient()
        system.limitBounding(keep)
        system.setCapabilities(keep | switching, keep | switching, 0)
        system.setKeepCaps(True)
        self._prepared = True
        if not self.switchedByTwistd:
            system.switchUser(self.account)

    def complete(self) -> str | None:
        """
        After the switch: the kept set becomes the whole of effective and permitted.

        @return: one line for the log saying whom the node runs as and what it kept, or
            L{None} when nothing was done.
        """
        if not self._prepared:
            return self._narrowUnprivileged()
        self._prepared = False
        system = self.system
        if system.geteuid() == 0:
            raise TeredoError("still running as root after the user switch; refusing to go on")
        keep = capabilityMask(self.keep)
        system.setKeepCaps(False)
        system.setCapabilities(keep, keep, 0)
        effective, permitted, _ = system.getCapabilities()
        if effective != keep or permitted != keep:
            raise TeredoError(
                f"capabilities are {', '.join(maskNames(permitted)) or 'none'}, "
                f"wanted {', '.join(maskNames(keep)) or 'none'}"
            )
        assert self.account is not None
        return (
            f"running as {self.account.name} (uid {self.account.uid}, gid {self.account.gid}), "
            f"capabilities kept: {', '.join(maskNames(keep)) or 'none'}"
        )

    def _narrowUnprivileged(self) -> str | None:
        """
        Started as a user other than root, perhaps with ambient capabilities to open the
        TUN: drop every capability the roles do not keep.
        """
        system = self.system
        if not self.narrow or system.geteuid() == 0:
            return None
        effective, permitted, inheritable = system.getCapabilities()
        keep = capabilityMask(self.keep) & permitted
        if (effective, permitted, inheritable) != (keep, keep, 0):
            system.clearAmbient()
            system.setCapabilities(keep, keep, 0)
        return f"started unprivileged (uid {system.geteuid()}), capabilities kept: {', '.join(maskNames(keep)) or 'none'}"
